//! An in-memory view of every cluster's container instances and tasks, fed by the
//! store's watch.
//!
//! Placement plans against this view instead of reading every task of a cluster from
//! the store on each call, and agent channels learn from it which tasks to push. The
//! view keeps each cluster's placement snapshot (with the scheduler's indexes) current
//! change by change: a task's change moves only its own share of its instance's load,
//! and each instance keeps a feed of its tasks in the order their desired status
//! changed, so an agent session reads only what is new. No change costs a pass over
//! every task of an instance, however many binpack put there.
//!
//! Placements in this process also reserve their planned tasks in the view before
//! those are committed ([`StateView::plan_and_reserve`]), so that the next placement
//! plans around them while the first one's commit is still being made durable;
//! reserved tasks count in the snapshot only, never in what agents or readers see.
//!
//! The view may trail the store by a few revisions; that is safe because the applier's
//! compare-and-swap on each instance refuses any plan made against stale state, after
//! which the caller waits for the view to catch up and plans again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use wharf_aws::AwsError;
use wharf_scheduler::{IndexedSnapshot, InstanceSnapshot, TaskOnInstance};
use wharf_store::{Revision, Store, StoreError, WatchEvent};

use super::instances::InstanceRecord;
use super::placement::{instance_snapshot, instance_snapshot_with, InstanceLoad, TaskShare};
use super::tasks::TaskRecord;
use crate::records::Versioned;

/// Every ECS key starts with this prefix; the view watches all of them.
const ECS_PREFIX: &str = "ecs/";
/// The most watch events applied under one hold of the view's lock, so that readers
/// are never kept waiting long.
const MAX_APPLY_BATCH: usize = 256;

/// One cluster's instances and tasks, with the scheduler's snapshot kept up to date
/// as they change, so that placement never has to build it.
///
/// Every change costs time in proportion to what changed, not to what an instance
/// holds: a task's share of its instance is added to or removed from that instance's
/// load and snapshot on its own (binpack fills an instance with hundreds of tasks).
#[derive(Default)]
pub(crate) struct ClusterState {
    /// What placement sees, one entry per instance, in registration order, with the
    /// scheduler's indexes over it.
    pub snapshot: IndexedSnapshot,
    /// The stored instance records, parallel to `snapshot.instances`.
    pub instances: Vec<Versioned<InstanceRecord>>,
    /// What the unstopped tasks of each instance take, parallel to `instances`.
    loads: Vec<InstanceLoad>,
    positions: HashMap<String, usize>,
    /// Every task of the cluster by id, stopped ones included.
    pub tasks: HashMap<String, Versioned<TaskRecord>>,
    tasks_by_instance: HashMap<String, BTreeSet<String>>,
    /// The store version of each instance's key, parallel to `instances`.
    instance_versions: Vec<i64>,
    /// Tasks that placements in this process have planned and queued but the view has
    /// not seen committed yet, by id: their shares are already in the loads and the
    /// snapshot, so that the next plan does not hand out the same capacity.
    reserved: HashMap<String, TaskRecord>,
    /// Per instance ARN, what the newest queued placement on it expects: the key
    /// version it leaves and one task key it writes.
    promised: HashMap<String, Promise>,
    /// The newest feed position of any task of this cluster.
    latest_feed_position: u64,
    /// Per instance ARN, its tasks by the feed position at which each was placed there
    /// or its desired status last changed: what an agent session has yet to be told.
    feeds: HashMap<String, BTreeMap<u64, String>>,
    /// Each task's position in its instance's feed.
    feed_positions: HashMap<String, u64>,
}

impl ClusterState {
    /// An instance by ARN (its last segment is the id that indexes `positions`).
    pub fn instance_by_arn(&self, instance_arn: &str) -> Option<&Versioned<InstanceRecord>> {
        self.position_of(instance_arn)
            .map(|position| &self.instances[position])
    }

    fn position_of(&self, instance_arn: &str) -> Option<usize> {
        let id = instance_arn.rsplit('/').next().unwrap_or(instance_arn);
        let position = *self.positions.get(id)?;
        (self.instances.get(position)?.value.arn == instance_arn).then_some(position)
    }

    /// The tasks placed on an instance.
    pub fn tasks_on<'a>(
        &'a self,
        instance_arn: &str,
    ) -> impl Iterator<Item = &'a Versioned<TaskRecord>> + Clone + 'a {
        self.tasks_by_instance
            .get(instance_arn)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// The newest position of the cluster's feed: what a session that has read every
    /// change so far passes to [`ClusterState::tasks_changed_after`] next time.
    pub fn latest_feed_position(&self) -> u64 {
        self.latest_feed_position
    }

    /// The tasks of an instance that were placed there, or whose desired status
    /// changed, after feed position `after` (0: every task), oldest change first.
    pub fn tasks_changed_after<'a>(
        &'a self,
        instance_arn: &str,
        after: u64,
    ) -> impl Iterator<Item = &'a Versioned<TaskRecord>> + 'a {
        self.feeds
            .get(instance_arn)
            .into_iter()
            .flat_map(move |feed| feed.range(after.saturating_add(1)..))
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    fn put_instance(&mut self, id: &str, record: Versioned<InstanceRecord>, version: i64) {
        if self
            .promised
            .get(&record.value.arn)
            .is_some_and(|promise| promise.version <= version)
        {
            // Every queued placement on this instance has landed.
            self.promised.remove(&record.value.arn);
        }
        match self.positions.get(id) {
            Some(&position) => {
                self.instance_versions[position] = version;
                // The tasks' part of the snapshot stays; only what the record says is
                // rebuilt, against the load the tasks keep up to date.
                let load = &self.loads[position];
                self.snapshot.update_instance(position, |slot| {
                    let tasks = std::mem::take(&mut slot.tasks);
                    let group_counts = std::mem::take(&mut slot.group_counts);
                    *slot = instance_snapshot_with(&record.value, load, tasks, group_counts);
                });
                self.instances[position] = record;
            }
            None => {
                let tasks = self.tasks_on(&record.value.arn);
                let load = InstanceLoad::of(&record.value.arn, tasks.clone());
                let snapshot = instance_snapshot(&record.value, tasks);
                self.positions.insert(id.to_owned(), self.instances.len());
                self.instances.push(record);
                self.loads.push(load);
                self.instance_versions.push(version);
                self.snapshot.push_instance(snapshot);
            }
        }
    }

    fn delete_instance(&mut self, id: &str) {
        let Some(position) = self.positions.remove(id) else {
            return;
        };
        self.instances.swap_remove(position);
        self.loads.swap_remove(position);
        self.instance_versions.swap_remove(position);
        self.snapshot.swap_remove_instance(position);
        if let Some(moved) = self.instances.get(position) {
            self.positions.insert(moved.value.id.clone(), position);
        }
    }

    /// Adds a task's share to its instance.
    fn take_share(&mut self, share: &TaskShare<'_>) {
        let Some(position) = self.position_of(share.instance_arn) else {
            // Counted when the instance arrives: a new instance is built from its tasks.
            return;
        };
        self.loads[position].add(share);
        let load = &self.loads[position];
        let record = &self.instances[position].value;
        self.snapshot.update_instance(position, |snapshot| {
            snapshot.tasks.push(TaskOnInstance {
                group: share.group.to_owned(),
                family: share.family.to_owned(),
            });
            *snapshot
                .group_counts
                .entry(share.group.to_owned())
                .or_insert(0) += 1;
            refresh_resources(snapshot, load, record, share.has_ports());
        });
    }

    /// Gives a task's share back to its instance.
    fn release_share(&mut self, share: &TaskShare<'_>) {
        let Some(position) = self.position_of(share.instance_arn) else {
            return;
        };
        self.loads[position].remove(share);
        let load = &self.loads[position];
        let record = &self.instances[position].value;
        self.snapshot.update_instance(position, |snapshot| {
            if let Some(index) = snapshot
                .tasks
                .iter()
                .position(|t| t.group == share.group && t.family == share.family)
            {
                snapshot.tasks.swap_remove(index);
            }
            if let Some(count) = snapshot.group_counts.get_mut(share.group) {
                *count -= 1;
                if *count == 0 {
                    snapshot.group_counts.remove(share.group);
                }
            }
            refresh_resources(snapshot, load, record, share.has_ports());
        });
    }

    /// Moves the load from a task's old share to its new one.
    fn shift_share(&mut self, old: Option<TaskShare<'_>>, new: Option<TaskShare<'_>>) {
        match (old, new) {
            (Some(old), Some(new)) if old.same_place(&new) => {
                if old.running != new.running {
                    if let Some(position) = self.position_of(new.instance_arn) {
                        self.loads[position].set_running(old.running, new.running);
                        let running = self.loads[position].running();
                        self.snapshot.update_instance(position, |snapshot| {
                            snapshot.running_tasks_count = running
                        });
                    }
                }
            }
            (old, new) => {
                if let Some(old) = old {
                    self.release_share(&old);
                }
                if let Some(new) = new {
                    self.take_share(&new);
                }
            }
        }
    }

    /// Stores a task; returns the instance whose agent has something new to be told
    /// (the task was placed there, or its desired status changed).
    fn put_task(
        &mut self,
        id: &str,
        record: Versioned<TaskRecord>,
        feed_position: &mut u64,
    ) -> Option<String> {
        let old = self.tasks.remove(id);
        // A task this process reserved already holds its share.
        let reserved = self.reserved.remove(id);
        let old_share = match (&old, &reserved) {
            (Some(old), _) => TaskShare::of(&old.value),
            (None, Some(reserved)) => TaskShare::of(reserved),
            (None, None) => None,
        };
        self.shift_share(old_share, TaskShare::of(&record.value));
        let new_instance = record.value.container_instance_arn.clone();
        let old_instance = old
            .as_ref()
            .and_then(|o| o.value.container_instance_arn.clone());
        let desired_changed = old
            .as_ref()
            .is_none_or(|o| o.value.lifecycle.desired() != record.value.lifecycle.desired());
        self.tasks.insert(id.to_owned(), record);
        if old_instance != new_instance {
            if let Some(arn) = &old_instance {
                if let Some(set) = self.tasks_by_instance.get_mut(arn) {
                    set.remove(id);
                }
                self.leave_feed(arn, id);
            }
            if let Some(arn) = &new_instance {
                self.tasks_by_instance
                    .entry(arn.clone())
                    .or_default()
                    .insert(id.to_owned());
            }
        } else if !desired_changed {
            return None;
        }
        let arn = new_instance?;
        self.leave_feed(&arn, id);
        *feed_position += 1;
        self.latest_feed_position = *feed_position;
        self.feeds
            .entry(arn.clone())
            .or_default()
            .insert(*feed_position, id.to_owned());
        self.feed_positions.insert(id.to_owned(), *feed_position);
        Some(arn)
    }

    fn leave_feed(&mut self, instance_arn: &str, id: &str) {
        if let Some(position) = self.feed_positions.remove(id) {
            if let Some(feed) = self.feeds.get_mut(instance_arn) {
                feed.remove(&position);
                if feed.is_empty() {
                    self.feeds.remove(instance_arn);
                }
            }
        }
    }

    /// Takes the shares of tasks a placement queued for commit, and tells what the
    /// placement's transaction must compare and write for each instance it uses: the
    /// version the instance's key will have when the transaction applies, and, when
    /// that counts placements queued before it, a task key the newest of them writes
    /// (if that one failed, this one must fail too).
    fn reserve(&mut self, tasks: &[TaskRecord], task_key: &str) -> Vec<InstanceExpectation> {
        let mut expectations: Vec<InstanceExpectation> = Vec::new();
        for task in tasks {
            let Some(share) = TaskShare::of(task) else {
                continue;
            };
            let Some(position) = self.position_of(share.instance_arn) else {
                continue;
            };
            match expectations
                .iter_mut()
                .find(|e| e.instance_arn == share.instance_arn)
            {
                Some(expectation) => expectation.record_version += 1,
                None => {
                    let stored = self.instance_versions[position];
                    let record = &self.instances[position];
                    expectations.push(match self.promised.get(share.instance_arn) {
                        Some(promise) if promise.version > stored => InstanceExpectation {
                            instance_arn: share.instance_arn.to_owned(),
                            revision: record.revision,
                            version: promise.version,
                            after_task_key: Some(promise.task_key.clone()),
                            record_version: promise.record_version + 1,
                        },
                        _ => InstanceExpectation {
                            instance_arn: share.instance_arn.to_owned(),
                            revision: record.revision,
                            version: stored,
                            after_task_key: None,
                            record_version: record.value.version + 1,
                        },
                    });
                }
            }
            self.take_share(&share);
            self.reserved.insert(task.id.clone(), task.clone());
        }
        for expectation in &expectations {
            self.promised.insert(
                expectation.instance_arn.clone(),
                Promise {
                    version: expectation.version + 1,
                    task_key: task_key.to_owned(),
                    record_version: expectation.record_version,
                },
            );
        }
        expectations
    }

    /// Gives back the shares of reserved tasks whose transaction failed (or whose
    /// outcome nobody will learn), and forgets the promises on their instances.
    fn release(&mut self, task_ids: &[String]) {
        for id in task_ids {
            let Some(task) = self.reserved.remove(id) else {
                // Committed and seen by the view meanwhile: the share is the task's own.
                continue;
            };
            if let Some(share) = TaskShare::of(&task) {
                self.promised.remove(share.instance_arn);
                self.release_share(&share);
            }
        }
    }

    fn delete_task(&mut self, id: &str) {
        let Some(old) = self.tasks.remove(id) else {
            return;
        };
        self.shift_share(TaskShare::of(&old.value), None);
        let Some(arn) = old.value.container_instance_arn else {
            return;
        };
        if let Some(set) = self.tasks_by_instance.get_mut(&arn) {
            set.remove(id);
            if set.is_empty() {
                self.tasks_by_instance.remove(&arn);
            }
        }
        self.leave_feed(&arn, id);
    }
}

/// Brings an instance's remaining resources and running count in line with its load;
/// its port sets only when `ports` (rebuilding them is the costly part).
fn refresh_resources(
    snapshot: &mut InstanceSnapshot,
    load: &InstanceLoad,
    record: &InstanceRecord,
    ports: bool,
) {
    if ports {
        snapshot.remaining = load.remaining(record);
    } else {
        let (cpu, memory) = load.remaining_scalars(record);
        snapshot.remaining.cpu = cpu;
        snapshot.remaining.memory_mib = memory;
    }
    snapshot.running_tasks_count = load.running();
}

/// What the newest queued placement on an instance leaves behind.
struct Promise {
    /// The instance key's version once it applies.
    version: i64,
    /// One task key it writes.
    task_key: String,
    /// The `version` member of the instance record it writes.
    record_version: i64,
}

/// What a placement's transaction compares for one instance it uses.
pub(crate) struct InstanceExpectation {
    /// The instance.
    pub instance_arn: String,
    /// The instance record's revision in the view.
    pub revision: Revision,
    /// The version its key must have when the transaction applies.
    pub version: i64,
    /// When set, the expected version counts a placement queued earlier in this
    /// process, which writes this task key: the transaction must find it.
    pub after_task_key: Option<String>,
    /// The `version` member the transaction writes into the instance record: one
    /// more per task placed on it, counting the placements queued before.
    pub record_version: i64,
}

#[derive(Default)]
struct ViewState {
    clusters: HashMap<(String, String), ClusterState>,
    /// The last position handed out in any instance's feed; it only grows, across
    /// reloads too, so that a session's last position stays meaningful.
    feed_position: u64,
    /// Woken when a task of that instance (by ARN) changes; agent channels wait on it.
    wakers: HashMap<String, Arc<Notify>>,
}

/// The watch-fed view of all clusters.
pub(crate) struct StateView {
    state: RwLock<ViewState>,
    applied: tokio::sync::watch::Sender<Revision>,
}

/// What a key names, for the keys the view keeps.
enum ViewKey<'a> {
    Instance {
        region: &'a str,
        cluster: &'a str,
        id: &'a str,
    },
    Task {
        region: &'a str,
        cluster: &'a str,
        id: &'a str,
    },
}

fn parse_key(key: &str) -> Option<ViewKey<'_>> {
    let rest = key.strip_prefix(ECS_PREFIX)?;
    let mut parts = rest.splitn(4, '/');
    let (region, kind, cluster, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    match kind {
        "instance" => Some(ViewKey::Instance {
            region,
            cluster,
            id,
        }),
        "task" => Some(ViewKey::Task {
            region,
            cluster,
            id,
        }),
        _ => None,
    }
}

impl StateView {
    /// Loads the current state and keeps following the store.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<StateView>, StoreError> {
        let (applied, _) = tokio::sync::watch::channel(0);
        let view = Arc::new(StateView {
            state: RwLock::new(ViewState::default()),
            applied,
        });
        view.reload(store.as_ref()).await?;
        let follower = Arc::downgrade(&view);
        tokio::spawn(async move { follow(follower, store).await });
        Ok(view)
    }

    /// Replaces the whole view with what the store holds now.
    async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let (kvs, revision) = store.range(ECS_PREFIX).await?;
        let feed_position = self.state.read().expect("view lock poisoned").feed_position;
        let mut fresh = ViewState {
            feed_position,
            ..ViewState::default()
        };
        for kv in kvs {
            apply_change(&mut fresh, decode(&WatchEvent::Put(kv)));
        }
        {
            let mut state = self.state.write().expect("view lock poisoned");
            fresh.wakers = std::mem::take(&mut state.wakers);
            for waker in fresh.wakers.values() {
                waker.notify_one();
            }
            *state = fresh;
        }
        self.applied.send_replace(revision);
        Ok(())
    }

    /// Applies a run of consecutive changes under one lock, then wakes the agent
    /// sessions that have something new to push. The records are decoded before the
    /// lock is taken, so that placements and readers wait only for the bookkeeping.
    fn apply(&self, events: &[WatchEvent]) {
        let Some(last) = events.last() else {
            return;
        };
        let changes: Vec<Change> = events
            .iter()
            .map(decode)
            .filter(|change| !matches!(change, Change::Ignored))
            .collect();
        if changes.is_empty() {
            // Writes outside the view (the registry's, the load balancer's) only move
            // the revision the view has caught up with.
            self.applied.send_replace(last.revision());
            return;
        }
        let touched = {
            let mut state = self.state.write().expect("view lock poisoned");
            let mut touched = Vec::new();
            for change in changes {
                let woken = apply_change(&mut state, change);
                if let Some(waker) = woken.and_then(|arn| state.wakers.get(&arn)) {
                    touched.push(Arc::clone(waker));
                }
            }
            touched
        };
        for waker in touched {
            waker.notify_one();
        }
        self.applied.send_replace(last.revision());
    }

    /// The store revision the view has applied.
    pub fn revision(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Waits until the view has applied `revision`, or a short deadline passes (the
    /// caller re-checks against the store either way).
    pub async fn wait_for(&self, revision: Revision) {
        if self.revision() >= revision {
            return;
        }
        let mut receiver = self.applied.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            receiver.wait_for(|applied| *applied >= revision),
        )
        .await;
    }

    /// Runs `read` on one cluster's state (an empty state if the view has none).
    pub fn read_cluster_records<R>(
        &self,
        region: &str,
        cluster: &str,
        read: impl FnOnce(&ClusterState) -> R,
    ) -> R {
        let state = self.state.read().expect("view lock poisoned");
        match state.clusters.get(&(region.to_owned(), cluster.to_owned())) {
            Some(cluster) => read(cluster),
            None => read(&ClusterState::default()),
        }
    }

    /// Plans a placement against one cluster and reserves what it takes, under one
    /// hold of the lock, so that the next plan sees this one's tasks before they are
    /// committed. `plan` returns its result and the tasks it would create; the
    /// answer adds what the placement's transaction must compare for each instance
    /// (see [`ClusterState::reserve`]). `task_key` names a task's store key.
    /// Whatever the outcome, the caller hands the task ids to
    /// [`StateView::release`] unless the transaction committed.
    pub fn plan_and_reserve<P>(
        &self,
        region: &str,
        cluster: &str,
        plan: impl FnOnce(&ClusterState) -> Result<(P, Vec<TaskRecord>), AwsError>,
        task_key: impl Fn(&TaskRecord) -> String,
    ) -> Result<(P, Vec<TaskRecord>, Vec<InstanceExpectation>), AwsError> {
        let mut state = self.state.write().expect("view lock poisoned");
        let cluster = cluster_entry(&mut state, region, cluster);
        let (planned, tasks) = plan(cluster)?;
        let expectations = match tasks.first() {
            Some(first) => cluster.reserve(&tasks, &task_key(first)),
            None => Vec::new(),
        };
        Ok((planned, tasks, expectations))
    }

    /// Releases reserved tasks (see [`StateView::plan_and_reserve`]).
    pub fn release(&self, region: &str, cluster: &str, task_ids: &[String]) {
        let mut state = self.state.write().expect("view lock poisoned");
        if let Some(cluster) = state
            .clusters
            .get_mut(&(region.to_owned(), cluster.to_owned()))
        {
            cluster.release(task_ids);
        }
    }

    /// Every task that stopped before `cutoff` (epoch milliseconds), as
    /// (region, cluster, task id, revision).
    pub fn tasks_stopped_before(&self, cutoff: i64) -> Vec<(String, String, String, Revision)> {
        let state = self.state.read().expect("view lock poisoned");
        state
            .clusters
            .iter()
            .flat_map(|((region, cluster), c)| {
                c.tasks
                    .iter()
                    .filter(|(_, t)| {
                        t.value.lifecycle.last() == wharf_model::TaskStatus::Stopped
                            && t.value.stopped_at.is_some_and(|at| at < cutoff)
                    })
                    .map(move |(id, t)| (region.clone(), cluster.clone(), id.clone(), t.revision))
            })
            .collect()
    }

    /// Every live instance whose record says its agent is connected, as
    /// (region, cluster, instance id, instance ARN).
    pub fn instances_claiming_agent(&self) -> Vec<(String, String, String, String)> {
        let state = self.state.read().expect("view lock poisoned");
        state
            .clusters
            .iter()
            .flat_map(|((region, cluster), c)| {
                c.instances
                    .iter()
                    .filter(|i| i.value.agent_connected && i.value.is_live())
                    .map(move |i| {
                        (
                            region.clone(),
                            cluster.clone(),
                            i.value.id.clone(),
                            i.value.arn.clone(),
                        )
                    })
            })
            .collect()
    }

    /// The notifier woken whenever a task of `instance_arn` changes.
    pub fn waker(&self, instance_arn: &str) -> Arc<Notify> {
        let mut state = self.state.write().expect("view lock poisoned");
        state
            .wakers
            .entry(instance_arn.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }
}

/// A watch event decoded into what the view keeps of it.
enum Change {
    Instance {
        cluster: (String, String),
        id: String,
        record: Box<Versioned<InstanceRecord>>,
        version: i64,
    },
    Task {
        cluster: (String, String),
        id: String,
        record: Box<Versioned<TaskRecord>>,
    },
    InstanceDeleted {
        cluster: (String, String),
        id: String,
    },
    TaskDeleted {
        cluster: (String, String),
        id: String,
    },
    /// A key the view does not keep, or a record it could not read.
    Ignored,
}

fn decode(event: &WatchEvent) -> Change {
    let Some(key) = parse_key(event.key()) else {
        return Change::Ignored;
    };
    match (key, event) {
        (
            ViewKey::Instance {
                region,
                cluster,
                id,
            },
            WatchEvent::Put(kv),
        ) => match serde_json::from_slice::<InstanceRecord>(&kv.value) {
            Ok(record) => Change::Instance {
                cluster: (region.to_owned(), cluster.to_owned()),
                id: id.to_owned(),
                record: Box::new(Versioned {
                    value: record,
                    revision: kv.mod_revision,
                }),
                version: kv.version,
            },
            Err(_) => {
                tracing::error!(key = %kv.key, "undecodable instance record in the view");
                Change::Ignored
            }
        },
        (
            ViewKey::Task {
                region,
                cluster,
                id,
            },
            WatchEvent::Put(kv),
        ) => match serde_json::from_slice::<TaskRecord>(&kv.value) {
            Ok(record) => Change::Task {
                cluster: (region.to_owned(), cluster.to_owned()),
                id: id.to_owned(),
                record: Box::new(Versioned {
                    value: record,
                    revision: kv.mod_revision,
                }),
            },
            Err(_) => {
                tracing::error!(key = %kv.key, "undecodable task record in the view");
                Change::Ignored
            }
        },
        (
            ViewKey::Instance {
                region,
                cluster,
                id,
            },
            WatchEvent::Delete { .. },
        ) => Change::InstanceDeleted {
            cluster: (region.to_owned(), cluster.to_owned()),
            id: id.to_owned(),
        },
        (
            ViewKey::Task {
                region,
                cluster,
                id,
            },
            WatchEvent::Delete { .. },
        ) => Change::TaskDeleted {
            cluster: (region.to_owned(), cluster.to_owned()),
            id: id.to_owned(),
        },
    }
}

/// Applies a decoded change; returns the instance whose agent session has something
/// new to push.
fn apply_change(state: &mut ViewState, change: Change) -> Option<String> {
    match change {
        Change::Instance {
            cluster,
            id,
            record,
            version,
        } => {
            state
                .clusters
                .entry(cluster)
                .or_default()
                .put_instance(&id, *record, version);
            None
        }
        Change::Task {
            cluster,
            id,
            record,
        } => {
            let mut feed_position = state.feed_position;
            let woken = state.clusters.entry(cluster).or_default().put_task(
                &id,
                *record,
                &mut feed_position,
            );
            state.feed_position = feed_position;
            woken
        }
        Change::InstanceDeleted { cluster, id } => {
            if let Some(c) = state.clusters.get_mut(&cluster) {
                c.delete_instance(&id);
            }
            None
        }
        Change::TaskDeleted { cluster, id } => {
            if let Some(c) = state.clusters.get_mut(&cluster) {
                c.delete_task(&id);
            }
            None
        }
        Change::Ignored => None,
    }
}

/// A cluster's state, created empty when the view has none yet.
fn cluster_entry<'a>(
    state: &'a mut ViewState,
    region: &str,
    cluster: &str,
) -> &'a mut ClusterState {
    let key = (region.to_owned(), cluster.to_owned());
    state.clusters.entry(key).or_default()
}

/// Follows the store until the view is dropped: watches from the last applied
/// revision, and on any interruption (a watcher that fell behind, a compacted log)
/// resumes or reloads.
async fn follow(view: std::sync::Weak<StateView>, store: Arc<dyn Store>) {
    loop {
        let Some(from) = view.upgrade().map(|v| v.revision() + 1) else {
            return;
        };
        // Every key, not only `ecs/`: callers wait for the store's global revision, so
        // the view must see (and skip) writes made elsewhere to keep up with it.
        match store.watch("", from).await {
            Ok(mut events) => {
                let mut batch = Vec::new();
                'watching: while let Some(first) = events.recv().await {
                    // Whatever else is already waiting is applied under the same lock.
                    let mut next = Some(first);
                    while let Some(event) = next {
                        match event {
                            Ok(event) => batch.push(event),
                            Err(error) => {
                                tracing::warn!(%error, "view watch interrupted");
                                if let Some(view) = view.upgrade() {
                                    view.apply(&batch);
                                }
                                break 'watching;
                            }
                        }
                        next = if batch.len() < MAX_APPLY_BATCH {
                            events.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    let Some(view) = view.upgrade() else {
                        return;
                    };
                    view.apply(&batch);
                    batch.clear();
                }
            }
            Err(StoreError::Compacted { .. }) => {
                let Some(view) = view.upgrade() else {
                    return;
                };
                if let Err(error) = view.reload(store.as_ref()).await {
                    tracing::error!(%error, "reloading the view failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(StoreError::Closed) => return,
            Err(error) => {
                tracing::error!(%error, "watching the store failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;
    use wharf_model::{ContainerInstanceStatus, TaskLifecycle, TaskStatus};

    use super::*;
    use crate::ecs::instances::Attribute;
    use crate::ecs::task_definitions::TaskResourceNeeds;

    const INSTANCES: usize = 3;

    fn instance_arn(index: usize) -> String {
        format!("arn:aws:ecs:r:0:container-instance/c/i{index}")
    }

    fn instance(index: usize, version: i64) -> InstanceRecord {
        InstanceRecord {
            id: format!("i{index}"),
            arn: instance_arn(index),
            cluster: "c".into(),
            ec2_instance_id: format!("ec2-{index}"),
            status: ContainerInstanceStatus::Active,
            status_reason: None,
            agent_connected: true,
            version,
            version_info: json!({"agentVersion": "1.0.0"}),
            cpu: 4096,
            memory: 8192,
            ports: vec![22],
            ports_udp: Vec::new(),
            attributes: vec![Attribute {
                name: "ecs.availability-zone".into(),
                value: Some(format!("z{index}")),
            }],
            registered_at: 0,
            tags: Vec::new(),
        }
    }

    /// A task as the generated steps describe it.
    #[derive(Debug, Clone)]
    struct TaskSpec {
        id: usize,
        instance: Option<usize>,
        /// 0 provisioning, 1 running, 2 asked to stop, 3 stopped.
        stage: u8,
        group: usize,
        port: Option<u16>,
    }

    fn task(spec: &TaskSpec) -> TaskRecord {
        let mut lifecycle = TaskLifecycle::placed();
        if spec.stage >= 1 {
            lifecycle.advance(TaskStatus::Running).unwrap();
        }
        if spec.stage >= 2 {
            lifecycle.request_stop(wharf_model::StopCode::UserInitiated, "test");
        }
        if spec.stage >= 3 {
            lifecycle.advance(TaskStatus::Stopped).unwrap();
        }
        let family = format!("f{}", spec.group % 2);
        let record = json!({
            "id": format!("t{}", spec.id),
            "arn": format!("arn:aws:ecs:r:0:task/c/t{}", spec.id),
            "cluster": "c",
            "cluster_arn": "arn:aws:ecs:r:0:cluster/c",
            "task_definition_arn": "arn:aws:ecs:r:0:task-definition/f:1",
            "family": family,
            "container_instance_arn": spec.instance.map(instance_arn),
            "lifecycle": lifecycle,
            "needs": TaskResourceNeeds {
                cpu_units: 10 + spec.id as i64,
                memory_mib: 32,
                host_ports_tcp: spec.port.into_iter().collect(),
                host_ports_udp: Vec::new(),
                requires_attributes: Vec::new(),
                member_of: Vec::new(),
            },
            "group": format!("g{}", spec.group),
            "started_by": null,
            "launch_type": "EC2",
            "overrides": {},
            "containers": [],
            "cpu": null,
            "memory": null,
            "availability_zone": null,
            "created_at": 0,
            "started_at": null,
            "stopping_at": null,
            "stopped_at": null,
            "pull_started_at": null,
            "pull_stopped_at": null,
            "execution_stopped_at": null,
            "version": 1,
            "tags": [],
        });
        serde_json::from_value(record).expect("a valid task record")
    }

    #[derive(Debug, Clone)]
    enum Step {
        PutTask(TaskSpec),
        DeleteTask(usize),
        PutInstance(usize),
        DeleteInstance(usize),
        /// A placement reserves a task, then either commits it or gives it back.
        Reserve(TaskSpec, bool),
    }

    fn task_spec() -> impl Strategy<Value = TaskSpec> {
        (
            0..8usize,
            proptest::option::weighted(0.9, 0..INSTANCES),
            0..4u8,
            0..3usize,
            proptest::option::weighted(0.2, prop_oneof![Just(22u16), Just(80), Just(81)]),
        )
            .prop_map(|(id, instance, stage, group, port)| TaskSpec {
                id,
                instance,
                stage,
                group,
                port,
            })
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => task_spec().prop_map(Step::PutTask),
            1 => (0..8usize).prop_map(Step::DeleteTask),
            1 => (0..INSTANCES).prop_map(Step::PutInstance),
            1 => (0..INSTANCES).prop_map(Step::DeleteInstance),
            2 => (task_spec(), any::<bool>()).prop_map(|(mut spec, commit)| {
                spec.stage = 0;
                spec.instance = Some(spec.instance.unwrap_or(0));
                Step::Reserve(spec, commit)
            }),
        ]
    }

    /// The snapshot of every instance must equal one computed from scratch from the
    /// instance's tasks, and each instance's feed must list exactly its tasks.
    fn assert_consistent(state: &ClusterState) {
        for (position, record) in state.instances.iter().enumerate() {
            let arn = &record.value.arn;
            let mut expected = instance_snapshot(&record.value, state.tasks_on(arn));
            let mut actual = state.snapshot.snapshot().instances[position].clone();
            for snapshot in [&mut expected, &mut actual] {
                snapshot
                    .tasks
                    .sort_by_key(|t| (t.group.clone(), t.family.clone()));
            }
            assert_eq!(actual, expected, "snapshot of {arn}");
            assert_eq!(
                state.loads[position],
                InstanceLoad::of(arn, state.tasks_on(arn))
            );
            let mut fed: Vec<&str> = state
                .tasks_changed_after(arn, 0)
                .map(|t| t.value.id.as_str())
                .collect();
            let mut on: Vec<&str> = state.tasks_on(arn).map(|t| t.value.id.as_str()).collect();
            fed.sort_unstable();
            on.sort_unstable();
            assert_eq!(fed, on, "feed of {arn}");
        }
    }

    proptest! {
        #[test]
        fn incremental_snapshots_match_a_full_recount(steps in proptest::collection::vec(step(), 1..60)) {
            let mut state = ClusterState::default();
            let mut feed = 0u64;
            let mut revision = 0;
            let mut versions = [1i64; INSTANCES];
            for index in 0..INSTANCES {
                revision += 1;
                state.put_instance(
                    &format!("i{index}"),
                    Versioned { value: instance(index, 1), revision },
                    1,
                );
            }
            for (index, step) in steps.into_iter().enumerate() {
                revision += 1;
                match step {
                    Step::PutTask(spec) => {
                        let record = task(&spec);
                        state.put_task(&record.id.clone(), Versioned { value: record, revision }, &mut feed);
                    }
                    Step::DeleteTask(id) => state.delete_task(&format!("t{id}")),
                    Step::PutInstance(index) => {
                        versions[index] += 1;
                        state.put_instance(
                            &format!("i{index}"),
                            Versioned { value: instance(index, versions[index]), revision },
                            versions[index],
                        );
                    }
                    Step::DeleteInstance(index) => {
                        state.delete_instance(&format!("i{index}"));
                        versions[index] = 0;
                    }
                    Step::Reserve(mut spec, commit) => {
                        // Placements make new tasks: their ids are fresh.
                        spec.id = 1000 + index;
                        let record = task(&spec);
                        let expectations = state.reserve(std::slice::from_ref(&record), "k");
                        if let Some(position) = state.position_of(&instance_arn(spec.instance.unwrap_or(0))) {
                            // The reserved share is counted before the task is stored.
                            prop_assert_eq!(expectations.len(), 1);
                            prop_assert!(state.loads[position].remaining_scalars(&state.instances[position].value).0
                                <= 4096 - record.needs.cpu_units);
                        }
                        if commit {
                            state.put_task(&record.id.clone(), Versioned { value: record, revision }, &mut feed);
                        } else {
                            state.release(std::slice::from_ref(&record.id));
                        }
                    }
                }
                assert_consistent(&state);
            }
        }
    }
}
