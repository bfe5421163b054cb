//! The service controller: keeps every ACTIVE service at its desired count and rolls
//! its deployments.
//!
//! One pass reads a service record and the service's tasks (from the watch-fed view),
//! then, in order:
//! 1. accounts for tasks that stopped since the last pass: a task that failed (could not
//!    start, an essential container exited with a non-zero or no exit code, or it was
//!    stopped for failing health checks) counts against its deployment's circuit
//!    breaker and the service's back-off;
//! 2. asks tasks whose load balancer draining is over to stop (targets leave the load
//!    balancer before their container gets SIGTERM);
//! 3. registers the targets of tasks that reached RUNNING;
//! 4. trips the circuit breaker (and rolls back) when the PRIMARY deployment failed too
//!    often;
//! 5. plans (see the `rollout` module) and applies: drains or stops tasks, starts new
//!    ones through the RunTask path;
//! 6. updates the deployments' counts, completes deployments, announces a steady state,
//!    and writes the record back with a compare-and-swap.
//!
//! `runningCount` (of the service and of each deployment) counts tasks whose last
//! status is RUNNING, whatever their desired status, as ECS does: a task asked to stop
//! keeps the service from being stable until its agent reports it stopped. The plan
//! only weighs live tasks (desired RUNNING, not draining), so a task on its way out is
//! replaced once and never holds back a scale-down; one stranded on a lost instance is
//! not counted at all.
//!
//! The loop in [`spawn_service_controller`] runs a pass over every service whenever the
//! store's watch reports a change under `ecs/` or `elbv2/`, and every `tick` for what
//! time alone changes (draining deadlines, back-off, grace periods). Tests call
//! [`ServiceController::reconcile_all`] directly with a manual clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use wharf_aws::AwsError;
use wharf_model::{ContainerInstanceStatus, DesiredTaskStatus, StopCode, TaskStatus};
use wharf_store::WatchEvent;

use super::balancing;
use super::rollout::{plan_replica, Doom, PlanLimits, PlanTask, StopWhy};
use super::{
    DeploymentStatus, RolloutState, SchedulingStrategy, ServiceRecord, ServiceStatus, TaskNote,
};
use crate::ecs::instances::InstanceRecord;
use crate::ecs::tags::Tag;
use crate::ecs::task_definitions::TaskDefinitionRecord;
use crate::ecs::tasks::{ecs_managed_tags, TaskRecord};
use crate::ecs::{Cx, EcsService};
use crate::records::Versioned;

/// How the controller paces itself.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// A pass runs at least this often, for what only time changes.
    pub tick: Duration,
    /// A task whose instance's agent has been disconnected this long is replaced.
    pub lost_agent_after: Duration,
    /// A task healthy this long resets the back-off and (by default) the circuit
    /// breaker's count: a container that crashes a moment after starting does not.
    pub healthy_settle: Duration,
    /// The first back-off after a failed task; it doubles with each further failure.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_cap: Duration,
    /// An event equal to the newest one is not repeated within this time.
    pub event_quiet: Duration,
    /// A task with neither container health checks nor a load balancer counts as
    /// healthy once it has been RUNNING this long, so that a revision whose containers
    /// crash right after starting never replaces a good task. (ECS waits 40 seconds.)
    pub unchecked_healthy_after: Duration,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            tick: Duration::from_secs(1),
            lost_agent_after: Duration::from_secs(120),
            healthy_settle: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            event_quiet: Duration::from_secs(300),
            unchecked_healthy_after: Duration::from_secs(5),
        }
    }
}

impl ControllerSettings {
    /// The back-off after `failures` failed tasks in a row.
    pub fn backoff_ms(&self, failures: u32) -> i64 {
        if failures == 0 {
            return 0;
        }
        let base = self.backoff_base.as_millis() as i64;
        let cap = self.backoff_cap.as_millis() as i64;
        let shift = (failures - 1).min(30);
        base.saturating_mul(1i64 << shift).min(cap)
    }
}

/// The controller's memory between passes (what is not worth storing).
pub struct ServiceController {
    settings: ControllerSettings,
    /// Since when each instance (by ARN) has been seen without its agent.
    disconnected_since: Mutex<HashMap<String, i64>>,
}

/// A live task as one pass sees it.
struct Live<'a> {
    task: &'a TaskRecord,
    healthy: bool,
    doom: Option<Doom>,
    new: bool,
    /// The unhealthy target, for the event.
    unhealthy_target: Option<(String, String, u16)>,
}

/// What a pass observed of one service's cluster.
struct Observed {
    tasks: Vec<TaskRecord>,
    instances: HashMap<String, InstanceRecord>,
}

impl ServiceController {
    /// A controller with the given pacing.
    pub fn new(settings: ControllerSettings) -> Self {
        ServiceController {
            settings,
            disconnected_since: Mutex::new(HashMap::new()),
        }
    }

    /// The keys of every service in the store.
    async fn discover(ecs: &EcsService) -> Result<Vec<String>, AwsError> {
        let (kvs, _) = ecs
            .records
            .store()
            .range("ecs/")
            .await
            .map_err(crate::records::store_failure)?;
        Ok(kvs
            .into_iter()
            .map(|kv| kv.key)
            .filter(|k| is_service_key(k))
            .collect())
    }

    /// One pass over every service; returns how many service records changed.
    pub async fn reconcile_all(&self, ecs: &EcsService) -> Result<usize, AwsError> {
        let keys = Self::discover(ecs).await?;
        self.reconcile_keys(ecs, &keys).await
    }

    async fn reconcile_keys(&self, ecs: &EcsService, keys: &[String]) -> Result<usize, AwsError> {
        let mut changed = 0;
        for key in keys {
            match self.reconcile(ecs, key).await {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(error) => tracing::warn!(service = %key, %error, "service pass failed"),
            }
        }
        Ok(changed)
    }

    /// Whether the agent of an instance has been gone longer than allowed.
    fn instance_lost(&self, instance: &InstanceRecord, now: i64) -> bool {
        let mut since = self
            .disconnected_since
            .lock()
            .expect("controller memory poisoned");
        if instance.agent_connected {
            since.remove(&instance.arn);
            return false;
        }
        let first = *since.entry(instance.arn.clone()).or_insert(now);
        now - first >= self.settings.lost_agent_after.as_millis() as i64
    }

    /// One pass over one service. Returns whether its record changed.
    pub(crate) async fn reconcile(&self, ecs: &EcsService, key: &str) -> Result<bool, AwsError> {
        let _queued = ecs.key_locks.lock(key).await;
        let Some(current) = ecs.records.get::<ServiceRecord>(key).await? else {
            return Ok(false);
        };
        if current.value.status == ServiceStatus::Inactive {
            return Ok(false);
        }
        let region = key.split('/').nth(1).unwrap_or_default().to_owned();
        let account = current
            .value
            .arn
            .split(':')
            .nth(4)
            .unwrap_or("000000000000")
            .to_owned();
        let cx = Cx {
            region: &region,
            account: &account,
            now_millis: ecs.clock.now_millis(),
        };
        let mut svc = current.value.clone();
        let view = ecs.fresh_view().await?;
        let group = svc.group();
        let observed = view.read_cluster_records(&region, &svc.cluster, |state| Observed {
            tasks: state
                .tasks
                .values()
                .map(|t| &t.value)
                .filter(|t| t.group == group && t.created_at >= svc.created_at)
                .cloned()
                .collect(),
            instances: state
                .instances
                .iter()
                .map(|i| (i.value.arn.clone(), i.value.clone()))
                .collect(),
        });
        let mut pass = Pass {
            controller: self,
            ecs,
            cx: &cx,
            definitions: HashMap::new(),
        };
        pass.run(&mut svc, &observed).await?;
        let changed = crate::records::encode(&svc) != crate::records::encode(&current.value);
        if changed && !ecs.records.put_if(key, &svc, current.revision).await? {
            tracing::debug!(service = %key, "service changed during a pass; the next pass redoes it");
            return Ok(false);
        }
        Ok(changed)
    }
}

fn is_service_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.len() == 5 && parts[0] == "ecs" && parts[2] == "service" && !parts[4].is_empty()
}

/// The health of a task by its essential containers, as ECS derives it.
fn container_health(task: &TaskRecord) -> &'static str {
    let essential: Vec<&str> = task
        .containers
        .iter()
        .filter(|c| c.essential)
        .map(|c| c.health_status.as_str())
        .collect();
    if essential.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if essential.contains(&"HEALTHY") && !essential.contains(&"UNKNOWN") {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

/// Whether an essential container of the definition has a health check.
fn has_health_checks(definition: &TaskDefinitionRecord) -> bool {
    definition
        .wire
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .is_some_and(|defs| {
            defs.iter().any(|d| {
                d.get("essential").and_then(Value::as_bool).unwrap_or(true)
                    && d.get("healthCheck").is_some_and(|h| !h.is_null())
            })
        })
}

/// Whether a stopped task failed, by how it stopped.
fn stopped_with_failure(task: &TaskRecord, note: &TaskNote) -> bool {
    if note.stop_reason.is_some() {
        return note.stop_is_failure;
    }
    match task.lifecycle.stop_code() {
        Some(StopCode::TaskFailedToStart) => true,
        Some(StopCode::EssentialContainerExited) => task
            .containers
            .iter()
            .filter(|c| c.essential)
            .any(|c| c.exit_code != Some(0)),
        Some(StopCode::UserInitiated)
        | Some(StopCode::ServiceSchedulerInitiated)
        | Some(StopCode::SpotInterruption)
        | Some(StopCode::TerminationNotice) => false,
        None => task.started_at.is_none(),
    }
}

fn task_short_id(task: &TaskRecord) -> &str {
    &task.id
}

fn task_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("(task {id})"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why no instance took a task, as ECS words it.
fn placement_failure_message(svc: &ServiceRecord, failures: &[(String, String)]) -> String {
    let who = svc.who();
    let Some((arn, reason)) = failures.first() else {
        return format!("{who} was unable to place a task.");
    };
    if reason == "MISSING" {
        return format!(
            "{who} was unable to place a task because no container instance met all of its requirements. Reason: No Container Instances were found in your cluster."
        );
    }
    let instance = arn.rsplit('/').next().unwrap_or(arn);
    let what = match reason.as_str() {
        "RESOURCE:MEMORY" => "has insufficient memory available",
        "RESOURCE:CPU" => "has insufficient CPU units available",
        "RESOURCE:PORTS" => "is already using a port required by your task",
        "ATTRIBUTE" => "is missing an attribute required by your task",
        "AGENT" => "has an agent that is not connected",
        _ => "does not satisfy the placement constraints",
    };
    format!(
        "{who} was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance {instance}) {what}. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide."
    )
}

/// One pass's working state.
struct Pass<'a> {
    controller: &'a ServiceController,
    ecs: &'a EcsService,
    cx: &'a Cx<'a>,
    definitions: HashMap<String, Option<TaskDefinitionRecord>>,
}

impl Pass<'_> {
    fn now(&self) -> i64 {
        self.cx.now_millis
    }

    fn quiet_ms(&self) -> i64 {
        self.controller.settings.event_quiet.as_millis() as i64
    }

    fn event(&self, svc: &mut ServiceRecord, message: String) {
        svc.add_event(self.now(), message, 0);
    }

    /// An event about a lasting condition: not repeated while it is the newest one.
    fn event_once(&self, svc: &mut ServiceRecord, message: String) {
        svc.add_event(self.now(), message, self.quiet_ms());
    }

    async fn definition(&mut self, arn: &str) -> Result<Option<TaskDefinitionRecord>, AwsError> {
        if let Some(found) = self.definitions.get(arn) {
            return Ok(found.clone());
        }
        let found = self
            .ecs
            .find_task_definition(self.cx, arn)
            .await?
            .map(|v: Versioned<TaskDefinitionRecord>| v.value);
        self.definitions.insert(arn.to_owned(), found.clone());
        Ok(found)
    }

    async fn run(&mut self, svc: &mut ServiceRecord, observed: &Observed) -> Result<(), AwsError> {
        let now = self.now();
        let present: BTreeSet<&str> = observed.tasks.iter().map(|t| t.id.as_str()).collect();
        svc.notes.retain(|id, _| present.contains(id.as_str()));

        self.account_stopped(svc, observed).await?;
        self.finish_draining(svc, observed).await?;
        let live = self.assess(svc, observed).await?;
        self.register_targets(svc, observed, &live).await?;
        self.circuit_breaker(svc);

        let primary_failed = svc
            .primary()
            .is_some_and(|p| p.rollout_state == RolloutState::Failed);
        let backing_off = svc.next_launch_at.is_some_and(|at| now < at);
        let draining_service = svc.status == ServiceStatus::Draining;
        let mut started = 0usize;
        match svc.scheduling_strategy {
            SchedulingStrategy::Replica => {
                let limits = PlanLimits {
                    desired: if draining_service {
                        0
                    } else {
                        svc.desired_count
                    },
                    maximum_percent: svc.deployment_configuration.maximum_percent,
                    minimum_healthy_percent: if draining_service {
                        0
                    } else {
                        svc.deployment_configuration.minimum_healthy_percent
                    },
                    hold_starts: primary_failed || backing_off || draining_service,
                    keep_old: primary_failed && !draining_service,
                };
                let tasks: Vec<PlanTask> = live
                    .iter()
                    .map(|l| PlanTask {
                        id: l.task.id.clone(),
                        new: l.new,
                        healthy: l.healthy,
                        doom: l.doom,
                        instance: l.task.container_instance_arn.clone().unwrap_or_default(),
                        created_at: l.task.created_at,
                    })
                    .collect();
                let plan = plan_replica(&limits, &tasks);
                self.apply_stops(svc, &live, &plan.stop).await?;
                if plan.start > 0 {
                    started = self.start(svc, plan.start, None).await?;
                }
            }
            SchedulingStrategy::Daemon => {
                started = self
                    .daemon(svc, observed, &live, primary_failed || backing_off)
                    .await?;
            }
        }
        self.bookkeeping(svc, observed, started);
        Ok(())
    }

    /// Counts the tasks that stopped since the last pass, and deregisters what they
    /// left in load balancers.
    async fn account_stopped(
        &mut self,
        svc: &mut ServiceRecord,
        observed: &Observed,
    ) -> Result<(), AwsError> {
        let now = self.now();
        for task in &observed.tasks {
            if task.lifecycle.last() != TaskStatus::Stopped {
                continue;
            }
            let note = svc.notes.entry(task.id.clone()).or_default().clone();
            if note.accounted {
                continue;
            }
            let failed = stopped_with_failure(task, &note);
            if !note.targets.is_empty() && note.drain_until.is_none() {
                self.drain_targets(svc, &note.targets).await;
            }
            if failed {
                if let Some(deployment) = svc
                    .deployments
                    .iter_mut()
                    .find(|d| Some(&d.id) == task.started_by.as_ref())
                {
                    deployment.failed_tasks += 1;
                    deployment.updated_at = now;
                }
                svc.launch_failures += 1;
                let delay = self.controller.settings.backoff_ms(svc.launch_failures);
                svc.next_launch_at = Some(now + delay);
                if svc.launch_failures == 3 {
                    let message = format!(
                        "{} is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.",
                        svc.who()
                    );
                    self.event(svc, message);
                }
            }
            let entry = svc.notes.entry(task.id.clone()).or_default();
            entry.accounted = true;
            entry.targets.clear();
        }
        Ok(())
    }

    /// Deregisters targets (draining starts); answers when the draining ends.
    async fn drain_targets(
        &self,
        svc: &mut ServiceRecord,
        targets: &[super::RegisteredTarget],
    ) -> i64 {
        let mut by_group: BTreeMap<&str, Vec<(String, u16)>> = BTreeMap::new();
        for target in targets {
            by_group
                .entry(target.target_group_arn.as_str())
                .or_default()
                .push((target.id.clone(), target.port));
        }
        let mut until = self.now();
        for (tg, list) in by_group {
            match balancing::deregister(&self.ecs.records, self.now(), self.cx.region, tg, &list)
                .await
            {
                Ok(deadline) => {
                    until = until.max(deadline);
                    let message = format!(
                        "{} deregistered {} targets in (target-group {tg})",
                        svc.who(),
                        list.len()
                    );
                    self.event(svc, message);
                }
                Err(error) => {
                    // A target group deleted meanwhile has no targets left to drain.
                    tracing::warn!(target_group = tg, %error, "deregistering targets failed");
                }
            }
        }
        until
    }

    /// Asks tasks whose draining is over to stop.
    async fn finish_draining(
        &mut self,
        svc: &mut ServiceRecord,
        observed: &Observed,
    ) -> Result<(), AwsError> {
        let now = self.now();
        let mut stopped = Vec::new();
        for task in &observed.tasks {
            let Some(note) = svc.notes.get(&task.id) else {
                continue;
            };
            let Some(until) = note.drain_until else {
                continue;
            };
            if now < until || task.lifecycle.desired() == DesiredTaskStatus::Stopped {
                continue;
            }
            let reason = note
                .stop_reason
                .clone()
                .unwrap_or_else(|| "Service scheduler stopped the task".to_owned());
            self.ecs
                .stop_service_task(self.cx, &svc.cluster, &task.id, &reason)
                .await?;
            stopped.push(task_short_id(task).to_owned());
        }
        if !stopped.is_empty() {
            let message = format!(
                "{} has stopped {} running tasks: {}.",
                svc.who(),
                stopped.len(),
                task_list(&stopped)
            );
            self.event(svc, message);
        }
        Ok(())
    }

    /// Classifies the live tasks (desired RUNNING, not draining).
    async fn assess<'o>(
        &mut self,
        svc: &mut ServiceRecord,
        observed: &'o Observed,
    ) -> Result<Vec<Live<'o>>, AwsError> {
        let now = self.now();
        let settle = self.controller.settings.healthy_settle.as_millis() as i64;
        let grace_ms = svc.health_check_grace_period_seconds.unwrap_or(0) * 1000;
        let unchecked_ms = self.controller.settings.unchecked_healthy_after.as_millis() as i64;
        let primary_id = svc.primary().map(|p| p.id.clone());
        // Target health, per target group, for the targets the service registered.
        let mut health: HashMap<String, BTreeMap<(String, u16), String>> = HashMap::new();
        for lb in &svc.load_balancers {
            let list: Vec<(String, u16)> = svc
                .notes
                .values()
                .flat_map(|n| n.targets.iter())
                .filter(|t| t.target_group_arn == lb.target_group_arn)
                .map(|t| (t.id.clone(), t.port))
                .collect();
            let states = balancing::health(
                &self.ecs.records,
                self.cx.region,
                &lb.target_group_arn,
                &list,
            )
            .await
            .unwrap_or_default();
            health.insert(lb.target_group_arn.clone(), states);
        }
        let mut live = Vec::new();
        for task in &observed.tasks {
            if task.lifecycle.desired() != DesiredTaskStatus::Running
                || task.lifecycle.last() == TaskStatus::Stopped
            {
                continue;
            }
            let note = svc.notes.get(&task.id).cloned().unwrap_or_default();
            if note.drain_until.is_some() {
                continue;
            }
            let instance = task
                .container_instance_arn
                .as_ref()
                .and_then(|arn| observed.instances.get(arn));
            let lost = match instance {
                None => true,
                Some(i) => {
                    !matches!(
                        i.status,
                        ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining
                    ) || self.controller.instance_lost(i, now)
                }
            };
            let on_draining_instance =
                instance.is_some_and(|i| i.status == ContainerInstanceStatus::Draining);
            let definition = self.definition(&task.task_definition_arn).await?;
            let checks = definition.as_ref().is_some_and(has_health_checks);
            let running = task.lifecycle.last() == TaskStatus::Running;
            let in_grace = task.started_at.is_none_or(|at| now < at + grace_ms);
            let container = container_health(task);
            let mut targets_ok = true;
            let mut unhealthy_target = None;
            for lb in &svc.load_balancers {
                let registered = note
                    .targets
                    .iter()
                    .find(|t| t.target_group_arn == lb.target_group_arn);
                match registered {
                    None => targets_ok = false,
                    Some(t) => {
                        let state = health
                            .get(&lb.target_group_arn)
                            .and_then(|h| h.get(&(t.id.clone(), t.port)))
                            .map(String::as_str)
                            .unwrap_or("initial");
                        if !balancing::counts_as_healthy(state) {
                            targets_ok = false;
                        }
                        if state == "unhealthy" {
                            unhealthy_target =
                                Some((lb.target_group_arn.clone(), t.id.clone(), t.port));
                        }
                    }
                }
            }
            let proven = checks
                || !svc.load_balancers.is_empty()
                || task.started_at.is_some_and(|at| now - at >= unchecked_ms);
            let healthy = running && proven && (!checks || container == "HEALTHY") && targets_ok;
            let doom = if lost {
                Some(Doom::InstanceLost)
            } else if running && container == "UNHEALTHY" && !in_grace {
                Some(Doom::ContainerUnhealthy)
            } else if running && unhealthy_target.is_some() && !in_grace {
                Some(Doom::TargetUnhealthy)
            } else {
                None
            };
            // Health that lasts resets the failure counts.
            let entry = svc.notes.entry(task.id.clone()).or_default();
            if healthy {
                let since = *entry.healthy_since.get_or_insert(now);
                if !entry.settled && now - since >= settle {
                    entry.settled = true;
                    svc.launch_failures = 0;
                    svc.next_launch_at = None;
                    if svc
                        .deployment_configuration
                        .circuit_breaker
                        .resets_on_healthy_task()
                    {
                        if let Some(d) = svc
                            .deployments
                            .iter_mut()
                            .find(|d| Some(&d.id) == task.started_by.as_ref())
                        {
                            d.failed_tasks = 0;
                        }
                    }
                }
            } else {
                entry.healthy_since = None;
            }
            live.push(Live {
                task,
                healthy: healthy && doom.is_none(),
                doom,
                new: task.started_by.is_some()
                    && task.started_by == primary_id
                    && !on_draining_instance,
                unhealthy_target,
            });
        }
        Ok(live)
    }

    /// Registers the targets of live RUNNING tasks that have none yet.
    async fn register_targets(
        &mut self,
        svc: &mut ServiceRecord,
        observed: &Observed,
        live: &[Live<'_>],
    ) -> Result<(), AwsError> {
        if svc.load_balancers.is_empty() {
            return Ok(());
        }
        let mut wanted: BTreeMap<String, Vec<(String, super::RegisteredTarget)>> = BTreeMap::new();
        for l in live {
            if l.task.lifecycle.last() != TaskStatus::Running || l.doom.is_some() {
                continue;
            }
            let Some(instance) = l
                .task
                .container_instance_arn
                .as_ref()
                .and_then(|a| observed.instances.get(a))
            else {
                continue;
            };
            let note = svc.notes.get(&l.task.id).cloned().unwrap_or_default();
            for lb in &svc.load_balancers {
                if note
                    .targets
                    .iter()
                    .any(|t| t.target_group_arn == lb.target_group_arn)
                {
                    continue;
                }
                let Some(tg) = self
                    .ecs
                    .target_group_record(self.cx, &lb.target_group_arn)
                    .await
                    .ok()
                    .flatten()
                else {
                    continue;
                };
                if let Some(target) = balancing::target_of(l.task, instance, lb, &tg.target_type) {
                    wanted
                        .entry(lb.target_group_arn.clone())
                        .or_default()
                        .push((l.task.id.clone(), target));
                }
            }
        }
        for (tg, entries) in wanted {
            let list: Vec<(String, u16)> = entries
                .iter()
                .map(|(_, t)| (t.id.clone(), t.port))
                .collect();
            match balancing::register(&self.ecs.records, self.now(), self.cx.region, &tg, &list)
                .await
            {
                Ok(()) => {
                    for (task_id, target) in entries {
                        svc.notes.entry(task_id).or_default().targets.push(target);
                    }
                    let message = format!(
                        "{} registered {} targets in (target-group {tg})",
                        svc.who(),
                        list.len()
                    );
                    self.event(svc, message);
                }
                Err(error) => {
                    tracing::warn!(target_group = %tg, %error, "registering targets failed")
                }
            }
        }
        Ok(())
    }

    /// Fails the PRIMARY deployment when its failures reach the breaker's threshold,
    /// and rolls back to the last completed deployment when asked to.
    fn circuit_breaker(&mut self, svc: &mut ServiceRecord) {
        let breaker = svc.deployment_configuration.circuit_breaker.clone();
        if !breaker.enable || svc.status != ServiceStatus::Active {
            return;
        }
        let now = self.now();
        let desired = svc.desired_count;
        let Some(primary) = svc.primary_mut() else {
            return;
        };
        if primary.rollout_state != RolloutState::InProgress
            || primary.failed_tasks < breaker.threshold(desired)
        {
            return;
        }
        primary.rollout_state = RolloutState::Failed;
        primary.rollout_state_reason =
            "ECS deployment circuit breaker: tasks failed to start.".to_owned();
        primary.updated_at = now;
        let failed_id = primary.id.clone();
        let message = format!(
            "{} (deployment {failed_id}) deployment failed: tasks failed to start.",
            svc.who()
        );
        self.event(svc, message);
        if !breaker.rollback {
            return;
        }
        let Some(target) = svc.last_completed.clone().filter(|d| d.id != failed_id) else {
            return;
        };
        let message = format!("{} rolling back to deployment {}.", svc.who(), target.id);
        self.event(svc, message);
        for deployment in &mut svc.deployments {
            deployment.status = DeploymentStatus::Active;
        }
        let mut back = svc
            .deployments
            .iter()
            .position(|d| d.id == target.id)
            .map(|i| svc.deployments.remove(i))
            .unwrap_or(target);
        back.status = DeploymentStatus::Primary;
        back.rollout_state = RolloutState::InProgress;
        back.rollout_state_reason = format!(
            "ECS deployment circuit breaker: rolling back to deploymentId {}.",
            back.id
        );
        back.desired_count = desired;
        back.failed_tasks = 0;
        back.updated_at = now;
        svc.task_definition = back.task_definition.clone();
        svc.deployments.insert(0, back);
        svc.launch_failures = 0;
        svc.next_launch_at = None;
        svc.steady = false;
    }

    /// Stops (or first drains) the tasks the plan let go.
    async fn apply_stops(
        &mut self,
        svc: &mut ServiceRecord,
        live: &[Live<'_>],
        stops: &[(String, StopWhy)],
    ) -> Result<(), AwsError> {
        let now = self.now();
        let primary_id = svc.primary().map(|p| p.id.clone()).unwrap_or_default();
        let mut stopped_now = Vec::new();
        let mut draining = 0usize;
        for (task_id, why) in stops {
            let Some(l) = live.iter().find(|l| &l.task.id == task_id) else {
                continue;
            };
            let (reason, failure) = match why {
                StopWhy::Doomed(Doom::ContainerUnhealthy) => {
                    let message = format!(
                        "{} (task {task_id}) failed container health checks.",
                        svc.who()
                    );
                    self.event(svc, message);
                    ("Task failed container health checks".to_owned(), true)
                }
                StopWhy::Doomed(Doom::TargetUnhealthy) => {
                    let (tg, id, port) = l.unhealthy_target.clone().unwrap_or_default();
                    let message = format!(
                        "{} (instance {id}) (port {port}) is unhealthy in (target-group {tg}) due to (reason Health checks failed).",
                        svc.who()
                    );
                    self.event(svc, message);
                    (
                        format!("Task failed ELB health checks in (target-group {tg})"),
                        true,
                    )
                }
                StopWhy::Doomed(Doom::InstanceLost) => (
                    "Task stopped because its container instance is no longer reachable".to_owned(),
                    false,
                ),
                StopWhy::ScaleDown | StopWhy::Replaced => (
                    format!("Scaling activity initiated by (deployment {primary_id})"),
                    false,
                ),
            };
            let note = svc.notes.entry(task_id.clone()).or_default();
            note.stop_reason = Some(reason.clone());
            note.stop_is_failure = failure;
            let targets = std::mem::take(&mut note.targets);
            // Targets leave the load balancer first; the task is asked to stop only
            // when their draining is over. A task on a lost instance serves nothing,
            // so it is not waited for.
            if !targets.is_empty() && *why != StopWhy::Doomed(Doom::InstanceLost) {
                let until = self.drain_targets(svc, &targets).await;
                if until > now {
                    svc.notes.entry(task_id.clone()).or_default().drain_until = Some(until);
                    draining += 1;
                    continue;
                }
            } else if !targets.is_empty() {
                self.drain_targets(svc, &targets).await;
            }
            self.ecs
                .stop_service_task(self.cx, &svc.cluster, task_id, &reason)
                .await?;
            stopped_now.push(task_id.clone());
        }
        if draining > 0 {
            let message = format!(
                "{} has begun draining connections on {draining} tasks.",
                svc.who()
            );
            self.event(svc, message);
        }
        if !stopped_now.is_empty() {
            let message = format!(
                "{} has stopped {} running tasks: {}.",
                svc.who(),
                stopped_now.len(),
                task_list(&stopped_now)
            );
            self.event(svc, message);
        }
        Ok(())
    }

    /// Starts `count` tasks of the PRIMARY deployment (or one on each of `only`).
    /// Returns how many started.
    async fn start(
        &mut self,
        svc: &mut ServiceRecord,
        count: usize,
        only: Option<&[String]>,
    ) -> Result<usize, AwsError> {
        let Some(primary) = svc.primary().cloned() else {
            return Ok(0);
        };
        let Some(definition) = self.definition(&primary.task_definition).await? else {
            let message = format!(
                "{} was unable to start tasks: its task definition {} no longer exists.",
                svc.who(),
                primary.task_definition
            );
            self.event_once(svc, message);
            return Ok(0);
        };
        let mut tags: Vec<Tag> = match svc.propagate_tags.as_str() {
            "SERVICE" => svc.tags.clone(),
            "TASK_DEFINITION" => definition.tags.clone(),
            _ => Vec::new(),
        };
        // Both flags are read as they are now, so an UpdateService that changes them
        // applies to the tasks started after it.
        if svc.enable_ecs_managed_tags {
            tags.extend(ecs_managed_tags(&svc.cluster, Some(&svc.name)));
        }
        // ECS's default for services: spread across zones, then across instances.
        let default_strategy = [
            serde_json::json!({"type": "spread", "field": "attribute:ecs.availability-zone"}),
            serde_json::json!({"type": "spread", "field": "instanceId"}),
        ];
        let strategies: &[Value] = if svc.placement_strategy.is_empty()
            && svc.scheduling_strategy == SchedulingStrategy::Replica
        {
            &default_strategy
        } else {
            &svc.placement_strategy
        };
        let constraints = svc.placement_constraints.clone();
        let mut started_ids = Vec::new();
        let mut failures: Vec<(String, String)> = Vec::new();
        let mut remaining = count;
        let mut only_rest: Option<Vec<String>> = only.map(<[String]>::to_vec);
        // Placement takes at most RunTask's ten tasks at a time.
        loop {
            let batch = remaining.min(10);
            let chunk: Option<Vec<String>> = only_rest.as_mut().map(|rest| {
                let take = rest.len().min(10);
                rest.drain(..take).collect()
            });
            if chunk.as_ref().is_some_and(Vec::is_empty) || (chunk.is_none() && batch == 0) {
                break;
            }
            let response = self
                .ecs
                .start_service_tasks(
                    self.cx,
                    &svc.cluster,
                    &definition,
                    batch,
                    &svc.group(),
                    &primary.id,
                    &constraints,
                    strategies,
                    chunk.as_deref(),
                    &svc.launch_type,
                    &tags,
                )
                .await?;
            let tasks = response["tasks"].as_array().cloned().unwrap_or_default();
            for task in &tasks {
                if let Some(arn) = task["taskArn"].as_str() {
                    let id = arn.rsplit('/').next().unwrap_or(arn).to_owned();
                    svc.notes.entry(id.clone()).or_default();
                    started_ids.push(id);
                }
            }
            for failure in response["failures"].as_array().into_iter().flatten() {
                failures.push((
                    failure["arn"].as_str().unwrap_or_default().to_owned(),
                    failure["reason"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            if chunk.is_none() {
                remaining -= batch;
                if tasks.len() < batch || remaining == 0 {
                    break;
                }
            }
        }
        if !started_ids.is_empty() {
            for ids in started_ids.chunks(10) {
                let message = format!(
                    "{} has started {} tasks: {}.",
                    svc.who(),
                    ids.len(),
                    task_list(ids)
                );
                self.event(svc, message);
            }
        }
        if svc.scheduling_strategy == SchedulingStrategy::Daemon {
            svc.daemon_unplaceable = failures.iter().map(|(arn, _)| arn.clone()).collect();
        } else if !failures.is_empty() && started_ids.len() < count {
            let message = placement_failure_message(svc, &failures);
            self.event_once(svc, message);
        }
        Ok(started_ids.len())
    }

    /// A DAEMON service: one task of the PRIMARY deployment on every ACTIVE instance
    /// it fits, none elsewhere. Returns how many tasks started.
    async fn daemon(
        &mut self,
        svc: &mut ServiceRecord,
        observed: &Observed,
        live: &[Live<'_>],
        hold_starts: bool,
    ) -> Result<usize, AwsError> {
        let now = self.now();
        let draining_service = svc.status == ServiceStatus::Draining;
        let eligible: Vec<&InstanceRecord> = observed
            .instances
            .values()
            .filter(|i| i.status == ContainerInstanceStatus::Active)
            .filter(|i| !self.controller.instance_lost(i, now))
            .collect();
        let eligible_arns: BTreeSet<&str> = eligible.iter().map(|i| i.arn.as_str()).collect();
        let mut stops: Vec<(String, StopWhy)> = Vec::new();
        let mut new_on: BTreeSet<String> = BTreeSet::new();
        let mut old_on: BTreeMap<String, Vec<&Live<'_>>> = BTreeMap::new();
        let mut healthy = 0i64;
        for l in live {
            let instance = l.task.container_instance_arn.clone().unwrap_or_default();
            if draining_service {
                stops.push((l.task.id.clone(), StopWhy::ScaleDown));
            } else if let Some(doom) = l.doom {
                stops.push((l.task.id.clone(), StopWhy::Doomed(doom)));
            } else if !eligible_arns.contains(instance.as_str()) {
                // The instance is draining or gone: a daemon follows instances.
                stops.push((l.task.id.clone(), StopWhy::ScaleDown));
            } else if l.new {
                if !new_on.insert(instance) {
                    stops.push((l.task.id.clone(), StopWhy::ScaleDown));
                } else if l.healthy {
                    healthy += 1;
                }
            } else {
                if l.healthy {
                    healthy += 1;
                }
                old_on.entry(instance).or_default().push(l);
            }
        }
        // Old tasks give way to the new revision instance by instance, as far as the
        // minimum healthy percent of the instances allows.
        let min_healthy =
            (eligible.len() as i64 * svc.deployment_configuration.minimum_healthy_percent + 99)
                / 100;
        let primary_failed = svc
            .primary()
            .is_some_and(|p| p.rollout_state == RolloutState::Failed);
        let mut blocked: BTreeSet<String> = BTreeSet::new();
        for (instance, olds) in &old_on {
            if primary_failed {
                blocked.insert(instance.clone());
                continue;
            }
            for l in olds {
                let replaced_by_healthy_new = new_on.contains(instance);
                if l.healthy && !replaced_by_healthy_new {
                    if healthy - 1 < min_healthy {
                        blocked.insert(instance.clone());
                        continue;
                    }
                    healthy -= 1;
                }
                stops.push((l.task.id.clone(), StopWhy::Replaced));
            }
        }
        self.apply_stops(svc, live, &stops).await?;
        if draining_service || hold_starts {
            return Ok(0);
        }
        // Start where the new revision has no task and no old task stays.
        let missing: Vec<String> = eligible
            .iter()
            .map(|i| i.arn.clone())
            .filter(|arn| !new_on.contains(arn) && !blocked.contains(arn))
            .filter(|arn| !old_on.contains_key(arn))
            .collect();
        if missing.is_empty() {
            svc.daemon_unplaceable.clear();
            return Ok(0);
        }
        self.start(svc, missing.len(), Some(&missing)).await
    }

    /// Updates counts, completes deployments, retires drained ones, and announces a
    /// steady state.
    fn bookkeeping(&mut self, svc: &mut ServiceRecord, observed: &Observed, started: usize) {
        let now = self.now();
        // Re-read nothing: count from the observation plus what this pass started.
        let mut running: HashMap<String, i64> = HashMap::new();
        let mut pending: HashMap<String, i64> = HashMap::new();
        let mut unstopped: HashMap<String, i64> = HashMap::new();
        // Tasks that are neither asked to stop nor draining: what a deployment that is
        // no longer PRIMARY still wants.
        let mut staying: HashMap<String, i64> = HashMap::new();
        let mut draining_tasks = 0;
        let mut healthy_primary = 0i64;
        let primary_id = svc.primary().map(|p| p.id.clone()).unwrap_or_default();
        for task in &observed.tasks {
            let by = task.started_by.clone().unwrap_or_default();
            if task.lifecycle.last() == TaskStatus::Stopped {
                continue;
            }
            // A task asked to stop on an instance whose agent is gone (or that is gone)
            // may never report STOPPED; it does not hold the service back.
            let stranded = task.lifecycle.desired() == DesiredTaskStatus::Stopped
                && task
                    .container_instance_arn
                    .as_ref()
                    .and_then(|arn| observed.instances.get(arn))
                    .is_none_or(|i| {
                        !matches!(
                            i.status,
                            ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining
                        ) || self.controller.instance_lost(i, now)
                    });
            if stranded {
                continue;
            }
            *unstopped.entry(by.clone()).or_default() += 1;
            let note = svc.notes.get(&task.id);
            let is_running = task.lifecycle.last() == TaskStatus::Running;
            // ECS counts `runningCount` by last status: a task asked to stop (or
            // draining) runs until its agent reports otherwise, so the service is not
            // stable before it has really stopped. The plan never sees these tasks (see
            // `assess`), so they are neither replaced twice nor stopped again.
            if is_running {
                *running.entry(by.clone()).or_default() += 1;
            }
            let leaving = task.lifecycle.desired() == DesiredTaskStatus::Stopped
                || note.is_some_and(|n| n.drain_until.is_some());
            if leaving {
                draining_tasks += 1;
                continue;
            }
            *staying.entry(by.clone()).or_default() += 1;
            if is_running {
                if by == primary_id && note.is_some_and(|n| n.healthy_since.is_some()) {
                    healthy_primary += 1;
                }
            } else {
                *pending.entry(by).or_default() += 1;
            }
        }
        *pending.entry(primary_id.clone()).or_default() += started as i64;
        *unstopped.entry(primary_id.clone()).or_default() += started as i64;

        let desired = match (svc.status, svc.scheduling_strategy) {
            (ServiceStatus::Draining, _) => 0,
            (_, SchedulingStrategy::Replica) => svc.desired_count,
            (_, SchedulingStrategy::Daemon) => {
                let eligible = observed
                    .instances
                    .values()
                    .filter(|i| i.status == ContainerInstanceStatus::Active)
                    .count() as i64;
                (eligible - svc.daemon_unplaceable.len() as i64).max(0)
            }
        };
        if svc.scheduling_strategy == SchedulingStrategy::Daemon {
            svc.desired_count = desired;
        }
        // Deployments other than the PRIMARY leave once they have no task left.
        svc.deployments.retain(|d| {
            d.status == DeploymentStatus::Primary || unstopped.get(&d.id).copied().unwrap_or(0) > 0
        });
        let mut total_running = 0;
        let mut total_pending = 0;
        for d in &mut svc.deployments {
            let r = running.get(&d.id).copied().unwrap_or(0);
            let p = pending.get(&d.id).copied().unwrap_or(0);
            total_running += r;
            total_pending += p;
            let desired_here = if d.status == DeploymentStatus::Primary {
                desired
            } else {
                staying.get(&d.id).copied().unwrap_or(0)
            };
            if (d.running_count, d.pending_count, d.desired_count) != (r, p, desired_here) {
                d.running_count = r;
                d.pending_count = p;
                d.desired_count = desired_here;
                d.updated_at = now;
            }
        }
        // Tasks of no known deployment (their deployment was retired) still count.
        for (by, r) in &running {
            if !svc.deployments.iter().any(|d| &d.id == by) {
                total_running += r;
            }
        }
        for (by, p) in &pending {
            if !svc.deployments.iter().any(|d| &d.id == by) {
                total_pending += p;
            }
        }
        svc.running_count = total_running;
        svc.pending_count = total_pending;

        let only_primary = svc.deployments.len() == 1;
        let settled = only_primary
            && total_running == desired
            && total_pending == 0
            && draining_tasks == 0
            && healthy_primary == desired;
        if svc.status == ServiceStatus::Draining {
            if unstopped.values().all(|n| *n == 0)
                && svc.status.can_move_to(ServiceStatus::Inactive)
            {
                svc.status = ServiceStatus::Inactive;
            }
            return;
        }
        let who = svc.who();
        if settled {
            if let Some(primary) = svc.primary_mut() {
                if primary.rollout_state == RolloutState::InProgress {
                    primary.rollout_state = RolloutState::Completed;
                    primary.rollout_state_reason =
                        format!("ECS deployment {} completed.", primary.id);
                    primary.updated_at = now;
                    let id = primary.id.clone();
                    svc.last_completed = svc.primary().cloned();
                    self.event(
                        svc,
                        format!("{who} (deployment {id}) deployment completed."),
                    );
                }
            }
        }
        let steady = settled
            && svc
                .primary()
                .is_some_and(|p| p.rollout_state == RolloutState::Completed);
        if steady && !svc.steady {
            self.event(svc, format!("{who} has reached a steady state."));
        }
        svc.steady = steady;
    }
}

/// Runs the controller while the ECS service lives: a pass after every change under
/// `ecs/` or `elbv2/` (coalesced) and at least every `settings.tick`.
pub fn spawn_service_controller(ecs: Arc<EcsService>, settings: ControllerSettings) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = ecs.records.store().clone();
    let ecs = Arc::downgrade(&ecs);
    runtime.spawn(async move {
        let tick = settings.tick;
        let controller = ServiceController::new(settings);
        loop {
            // Discover the services, then follow the store from that revision.
            let (kvs, revision) = match store.range("ecs/").await {
                Ok(found) => found,
                Err(error) => {
                    tracing::warn!(%error, "service controller could not read the store");
                    tokio::time::sleep(tick).await;
                    continue;
                }
            };
            let mut keys: BTreeSet<String> = kvs
                .into_iter()
                .map(|kv| kv.key)
                .filter(|k| is_service_key(k))
                .collect();
            let (Ok(mut ecs_events), Ok(mut lb_events)) = (
                store.watch("ecs/", revision + 1).await,
                store.watch("elbv2/", revision + 1).await,
            ) else {
                tokio::time::sleep(tick).await;
                continue;
            };
            'follow: loop {
                {
                    let Some(ecs) = ecs.upgrade() else {
                        return;
                    };
                    let list: Vec<String> = keys.iter().cloned().collect();
                    if let Err(error) = controller.reconcile_keys(&ecs, &list).await {
                        tracing::warn!(%error, "service controller pass failed");
                    }
                }
                // Wait for a change or the tick, then take whatever else is queued.
                let mut woke = false;
                tokio::select! {
                    event = ecs_events.recv() => match event {
                        Some(Ok(event)) => { note_key(&mut keys, &event); woke = true; }
                        _ => break 'follow,
                    },
                    event = lb_events.recv() => match event {
                        Some(Ok(_)) => woke = true,
                        _ => break 'follow,
                    },
                    _ = tokio::time::sleep(tick) => {}
                }
                if woke {
                    // Coalesce a burst of changes into one pass.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while let Ok(event) = ecs_events.try_recv() {
                        match event {
                            Ok(event) => note_key(&mut keys, &event),
                            Err(_) => break 'follow,
                        }
                    }
                    while lb_events.try_recv().is_ok() {}
                }
            }
        }
    });
}

fn note_key(keys: &mut BTreeSet<String>, event: &WatchEvent) {
    let key = event.key();
    if !is_service_key(key) {
        return;
    }
    match event {
        WatchEvent::Put(_) => {
            keys.insert(key.to_owned());
        }
        WatchEvent::Delete { .. } => {
            keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = ControllerSettings {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            ..ControllerSettings::default()
        };
        let delays: Vec<i64> = (0..8).map(|n| settings.backoff_ms(n)).collect();
        assert_eq!(delays, [0, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(settings.backoff_ms(u32::MAX), 30000);
    }

    #[test]
    fn service_keys_are_recognised() {
        assert!(is_service_key("ecs/us-east-1/service/c/web"));
        assert!(!is_service_key("ecs/us-east-1/task/c/abc"));
        assert!(!is_service_key("ecs/us-east-1/service/c/"));
        assert!(!is_service_key("elbv2/us-east-1/service/c/web"));
    }

    #[test]
    fn placement_failures_read_as_ecs_writes_them() {
        let who = "(service web)";
        let record = |failures: &[(&str, &str)]| -> Vec<(String, String)> {
            failures
                .iter()
                .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
                .collect()
        };
        let svc = minimal_service();
        let missing = placement_failure_message(&svc, &record(&[("arn:c", "MISSING")]));
        assert_eq!(
            missing,
            format!("{who} was unable to place a task because no container instance met all of its requirements. Reason: No Container Instances were found in your cluster.")
        );
        let memory = placement_failure_message(
            &svc,
            &record(&[(
                "arn:aws:ecs:us-east-1:0:container-instance/c/abc123",
                "RESOURCE:MEMORY",
            )]),
        );
        assert!(memory.contains(
            "The closest matching (container-instance abc123) has insufficient memory available."
        ));
    }

    fn minimal_service() -> ServiceRecord {
        serde_json::from_value(serde_json::json!({
            "arn": "arn:aws:ecs:us-east-1:000000000000:service/c/web",
            "name": "web", "cluster": "c",
            "clusterArn": "arn:aws:ecs:us-east-1:000000000000:cluster/c",
            "status": "ACTIVE", "desiredCount": 1, "taskDefinition": "td",
            "launchType": "EC2", "schedulingStrategy": "REPLICA",
            "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100,
                "circuitBreaker": {"enable": false, "rollback": false}},
            "healthCheckGracePeriodSeconds": null, "networkConfiguration": null,
            "roleArn": null, "propagateTags": "NONE", "enableEcsManagedTags": false,
            "enableExecuteCommand": false, "createdAt": 0, "createdBy": "x",
            "deployments": [], "lastCompleted": null, "events": [],
        }))
        .expect("a minimal service record decodes")
    }
}
