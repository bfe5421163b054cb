//! An in-memory view of every cluster's container instances and tasks, fed by the
//! store's watch.
//!
//! Placement plans against this view instead of reading every task of a cluster from
//! the store on each call, and agent channels learn from it which tasks to push. The
//! view may trail the store by a few revisions; that is safe because the applier's
//! compare-and-swap on each instance's revision refuses any plan made against stale
//! state, after which the caller waits for the view to catch up and plans again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use wharf_scheduler::ClusterSnapshot;
use wharf_store::{Revision, Store, StoreError, WatchEvent};

use super::instances::InstanceRecord;
use super::placement::instance_snapshot;
use super::tasks::TaskRecord;
use crate::records::Versioned;

/// Every ECS key starts with this prefix; the view watches all of them.
const ECS_PREFIX: &str = "ecs/";

/// One cluster's instances and tasks, with the scheduler's snapshot kept up to date
/// as they change, so that placement never has to build it.
#[derive(Default)]
pub(crate) struct ClusterState {
    /// What placement sees, one entry per instance, in registration order.
    pub snapshot: ClusterSnapshot,
    /// The stored instance records, parallel to `snapshot.instances`.
    pub instances: Vec<Versioned<InstanceRecord>>,
    positions: HashMap<String, usize>,
    /// Every task of the cluster by id, stopped ones included.
    pub tasks: HashMap<String, Versioned<TaskRecord>>,
    tasks_by_instance: HashMap<String, BTreeSet<String>>,
    /// Instances (by ARN) whose tasks changed since their snapshot was computed. Task
    /// events arrive far more often than placements read, so snapshots are recomputed
    /// when read rather than on every event.
    dirty: BTreeSet<String>,
}

impl ClusterState {
    /// An instance by ARN (its last segment is the id that indexes `positions`).
    pub fn instance_by_arn(&self, instance_arn: &str) -> Option<&Versioned<InstanceRecord>> {
        let id = instance_arn.rsplit('/').next().unwrap_or(instance_arn);
        let position = *self.positions.get(id)?;
        self.instances
            .get(position)
            .filter(|i| i.value.arn == instance_arn)
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

    fn refresh_instance(&mut self, instance_arn: &str) {
        // An instance ARN ends with the instance id, which indexes `positions`.
        let id = instance_arn.rsplit('/').next().unwrap_or(instance_arn);
        let Some(&position) = self.positions.get(id) else {
            return;
        };
        let snapshot =
            instance_snapshot(&self.instances[position].value, self.tasks_on(instance_arn));
        self.snapshot.instances[position] = snapshot;
    }

    fn put_instance(&mut self, id: &str, record: Versioned<InstanceRecord>) {
        self.dirty.remove(&record.value.arn);
        let snapshot = instance_snapshot(&record.value, self.tasks_on(&record.value.arn));
        match self.positions.get(id) {
            Some(&position) => {
                self.instances[position] = record;
                self.snapshot.instances[position] = snapshot;
            }
            None => {
                self.positions.insert(id.to_owned(), self.instances.len());
                self.instances.push(record);
                self.snapshot.instances.push(snapshot);
            }
        }
    }

    fn delete_instance(&mut self, id: &str) {
        let Some(position) = self.positions.remove(id) else {
            return;
        };
        self.instances.swap_remove(position);
        self.snapshot.instances.swap_remove(position);
        if let Some(moved) = self.instances.get(position) {
            self.positions.insert(moved.value.id.clone(), position);
        }
    }

    /// Stores a task and returns the instances whose view changed.
    fn put_task(&mut self, id: &str, record: Versioned<TaskRecord>) -> Vec<String> {
        let new_instance = record.value.container_instance_arn.clone();
        let old = self.tasks.insert(id.to_owned(), record);
        let old_instance = old.and_then(|o| o.value.container_instance_arn);
        let mut touched = Vec::new();
        if old_instance != new_instance {
            if let Some(arn) = &old_instance {
                if let Some(set) = self.tasks_by_instance.get_mut(arn) {
                    set.remove(id);
                }
                touched.push(arn.clone());
            }
        }
        if let Some(arn) = new_instance {
            self.tasks_by_instance
                .entry(arn.clone())
                .or_default()
                .insert(id.to_owned());
            touched.push(arn);
        }
        self.dirty.extend(touched.iter().cloned());
        touched
    }

    /// Recomputes the snapshots of the instances whose tasks changed.
    fn refresh_dirty(&mut self) {
        for arn in std::mem::take(&mut self.dirty) {
            self.refresh_instance(&arn);
        }
    }

    fn delete_task(&mut self, id: &str) -> Vec<String> {
        let Some(old) = self.tasks.remove(id) else {
            return Vec::new();
        };
        let Some(arn) = old.value.container_instance_arn else {
            return Vec::new();
        };
        if let Some(set) = self.tasks_by_instance.get_mut(&arn) {
            set.remove(id);
        }
        self.dirty.insert(arn.clone());
        vec![arn]
    }
}

#[derive(Default)]
struct ViewState {
    clusters: HashMap<(String, String), ClusterState>,
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
        let mut fresh = ViewState::default();
        for kv in &kvs {
            apply_put(&mut fresh, kv);
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

    fn apply(&self, event: &WatchEvent) {
        let touched = {
            let mut state = self.state.write().expect("view lock poisoned");
            let touched = match event {
                WatchEvent::Put(kv) => apply_put(&mut state, kv),
                WatchEvent::Delete { key, .. } => apply_delete(&mut state, key),
            };
            touched
                .into_iter()
                .filter_map(|arn| state.wakers.get(&arn).cloned())
                .collect::<Vec<_>>()
        };
        for waker in touched {
            waker.notify_one();
        }
        self.applied.send_replace(event.revision());
    }

    /// The store revision the view has applied.
    pub fn revision(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Waits until the view has applied `revision`, or a short deadline passes (the
    /// caller re-checks against the store either way).
    pub async fn wait_for(&self, revision: Revision) {
        let mut receiver = self.applied.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            receiver.wait_for(|applied| *applied >= revision),
        )
        .await;
    }

    /// Runs `read` on one cluster's state (an empty state if the view has none), with
    /// its placement snapshots brought up to date first.
    pub fn read_cluster<R>(
        &self,
        region: &str,
        cluster: &str,
        read: impl FnOnce(&ClusterState) -> R,
    ) -> R {
        let key = (region.to_owned(), cluster.to_owned());
        let stale = {
            let state = self.state.read().expect("view lock poisoned");
            state
                .clusters
                .get(&key)
                .is_some_and(|c| !c.dirty.is_empty())
        };
        if stale {
            let mut state = self.state.write().expect("view lock poisoned");
            if let Some(cluster) = state.clusters.get_mut(&key) {
                cluster.refresh_dirty();
            }
        }
        let state = self.state.read().expect("view lock poisoned");
        match state.clusters.get(&key) {
            Some(cluster) => read(cluster),
            None => read(&ClusterState::default()),
        }
    }

    /// Runs `read` on one cluster's state without bringing its placement snapshots up
    /// to date: for readers of records (tasks, instances), which are always current.
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

fn apply_put(state: &mut ViewState, kv: &wharf_store::KeyValue) -> Vec<String> {
    let Some(key) = parse_key(&kv.key) else {
        return Vec::new();
    };
    match key {
        ViewKey::Instance {
            region,
            cluster,
            id,
        } => {
            let Ok(record) = serde_json::from_slice::<InstanceRecord>(&kv.value) else {
                tracing::error!(key = %kv.key, "undecodable instance record in the view");
                return Vec::new();
            };
            let arn = record.arn.clone();
            state
                .clusters
                .entry((region.to_owned(), cluster.to_owned()))
                .or_default()
                .put_instance(
                    id,
                    Versioned {
                        value: record,
                        revision: kv.mod_revision,
                    },
                );
            vec![arn]
        }
        ViewKey::Task {
            region,
            cluster,
            id,
        } => {
            let Ok(record) = serde_json::from_slice::<TaskRecord>(&kv.value) else {
                tracing::error!(key = %kv.key, "undecodable task record in the view");
                return Vec::new();
            };
            state
                .clusters
                .entry((region.to_owned(), cluster.to_owned()))
                .or_default()
                .put_task(
                    id,
                    Versioned {
                        value: record,
                        revision: kv.mod_revision,
                    },
                )
        }
    }
}

fn apply_delete(state: &mut ViewState, key: &str) -> Vec<String> {
    match parse_key(key) {
        Some(ViewKey::Instance {
            region,
            cluster,
            id,
        }) => {
            if let Some(c) = state
                .clusters
                .get_mut(&(region.to_owned(), cluster.to_owned()))
            {
                c.delete_instance(id);
            }
            Vec::new()
        }
        Some(ViewKey::Task {
            region,
            cluster,
            id,
        }) => state
            .clusters
            .get_mut(&(region.to_owned(), cluster.to_owned()))
            .map(|c| c.delete_task(id))
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Follows the store until the view is dropped: watches from the last applied
/// revision, and on any interruption (a watcher that fell behind, a compacted log)
/// resumes or reloads.
async fn follow(view: std::sync::Weak<StateView>, store: Arc<dyn Store>) {
    loop {
        let Some(from) = view.upgrade().map(|v| v.revision() + 1) else {
            return;
        };
        match store.watch(ECS_PREFIX, from).await {
            Ok(mut events) => {
                while let Some(event) = events.recv().await {
                    let Some(view) = view.upgrade() else {
                        return;
                    };
                    match event {
                        Ok(event) => view.apply(&event),
                        Err(error) => {
                            tracing::warn!(%error, "view watch interrupted");
                            break;
                        }
                    }
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
