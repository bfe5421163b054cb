//! ECS services: the API (CreateService, UpdateService, DeleteService,
//! DescribeServices, ListServices) and the service controller that keeps each
//! service's tasks at its desired count.
//!
//! A service is one record under `ecs/<region>/service/<cluster>/<name>`. It holds what
//! the user asked for (desired count, task definition, deployment configuration, load
//! balancers, placement) and what the controller keeps: the `deployments[]` array, the
//! `events[]` (newest first, the last 100), and per-task notes (the load balancer
//! targets a task was registered as, when its draining ends, whether it was stopped for
//! failing health checks). The tasks themselves are ordinary task records with group
//! `service:<name>` and `startedBy` the id of the deployment that started them, so the
//! truth about what runs is always the task records; the service record only adds what
//! cannot be derived from them.
//!
//! - `api`: the operations, with ECS's validation and exception names.
//! - `rollout`: a pure function from a service's tasks to what to start and stop,
//!   honouring `minimumHealthyPercent` and `maximumPercent`.
//! - `balancing`: which load balancer target a task is (its instance, or the
//!   instance's `wharf.host-address`, at the host port its container port is published
//!   on), through the ELBv2 side's `register_targets`, `deregister_targets` and
//!   `target_health`.
//! - [`controller`]: the background loop (store watch plus a periodic tick) that reads
//!   every service, applies the plan, registers and drains load balancer targets, counts
//!   failures for the circuit breaker, backs off on tasks that keep failing, and writes
//!   the events ECS writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::epoch_seconds;
use super::tags::{wire_tags, Tag};

pub(crate) mod api;
mod balancing;
pub mod controller;
pub(crate) mod rollout;

pub use controller::{spawn_service_controller, ControllerSettings, ServiceController};

/// How many events a service keeps, as ECS.
pub(crate) const MAX_EVENTS: usize = 100;

/// A service's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ServiceStatus {
    /// Maintains its tasks.
    #[serde(rename = "ACTIVE")]
    Active,
    /// Deleted; its tasks are being stopped.
    #[serde(rename = "DRAINING")]
    Draining,
    /// Deleted, with no task left.
    #[serde(rename = "INACTIVE")]
    Inactive,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }

    /// ACTIVE → DRAINING → INACTIVE, never back.
    pub fn can_move_to(self, next: ServiceStatus) -> bool {
        matches!(
            (self, next),
            (ServiceStatus::Active, ServiceStatus::Draining)
                | (ServiceStatus::Draining, ServiceStatus::Inactive)
        )
    }
}

/// How a service places its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SchedulingStrategy {
    #[serde(rename = "REPLICA")]
    Replica,
    #[serde(rename = "DAEMON")]
    Daemon,
}

impl SchedulingStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulingStrategy::Replica => "REPLICA",
            SchedulingStrategy::Daemon => "DAEMON",
        }
    }
}

/// The circuit breaker's failure threshold (`thresholdConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThresholdConfiguration {
    /// `COUNT`, `BOUNDED_PERCENT` or `UNBOUNDED_PERCENT`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: i64,
}

/// `deploymentCircuitBreaker`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_on_healthy_task: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_configuration: Option<ThresholdConfiguration>,
}

impl CircuitBreaker {
    /// How many consecutive failures fail a deployment of `desired` tasks. ECS's
    /// published rule for the default (`BOUNDED_PERCENT` 50): half the desired count,
    /// rounded up, but at least 3 and at most 200.
    pub fn threshold(&self, desired: i64) -> i64 {
        let (kind, value) = match &self.threshold_configuration {
            Some(t) => (t.kind.as_str(), t.value),
            None => ("BOUNDED_PERCENT", 50),
        };
        let percent = |value: i64| (desired.max(0) * value + 99) / 100;
        match kind {
            "COUNT" => value.max(1),
            "UNBOUNDED_PERCENT" => percent(value).max(1),
            _ => percent(value).clamp(3, 200),
        }
    }

    /// Whether a task that became healthy resets the failure count (default true).
    pub fn resets_on_healthy_task(&self) -> bool {
        self.reset_on_healthy_task.unwrap_or(true)
    }
}

/// `deploymentConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeploymentConfiguration {
    pub maximum_percent: i64,
    pub minimum_healthy_percent: i64,
    pub circuit_breaker: CircuitBreaker,
}

impl DeploymentConfiguration {
    pub fn to_wire(&self) -> Value {
        let mut breaker = json!({
            "enable": self.circuit_breaker.enable,
            "rollback": self.circuit_breaker.rollback,
        });
        if let Some(reset) = self.circuit_breaker.reset_on_healthy_task {
            breaker["resetOnHealthyTask"] = json!(reset);
        }
        if let Some(t) = &self.circuit_breaker.threshold_configuration {
            breaker["thresholdConfiguration"] = json!({"type": t.kind, "value": t.value});
        }
        json!({
            "deploymentCircuitBreaker": breaker,
            "maximumPercent": self.maximum_percent,
            "minimumHealthyPercent": self.minimum_healthy_percent,
        })
    }
}

/// One `loadBalancers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceLoadBalancer {
    pub target_group_arn: String,
    pub container_name: String,
    pub container_port: u16,
}

impl ServiceLoadBalancer {
    pub fn to_wire(&self) -> Value {
        json!({
            "targetGroupArn": self.target_group_arn,
            "containerName": self.container_name,
            "containerPort": self.container_port,
        })
    }
}

/// A deployment's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DeploymentStatus {
    /// The newest deployment: the one the service converges to.
    #[serde(rename = "PRIMARY")]
    Primary,
    /// An older deployment whose tasks are being replaced.
    #[serde(rename = "ACTIVE")]
    Active,
}

/// A deployment's `rolloutState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RolloutState {
    #[serde(rename = "IN_PROGRESS")]
    InProgress,
    #[serde(rename = "COMPLETED")]
    Completed,
    #[serde(rename = "FAILED")]
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "COMPLETED",
            RolloutState::Failed => "FAILED",
        }
    }
}

/// One entry of `deployments[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeploymentRecord {
    /// `ecs-svc/<19 digits>`; also the `startedBy` of the tasks it starts.
    pub id: String,
    pub status: DeploymentStatus,
    pub task_definition: String,
    pub desired_count: i64,
    pub pending_count: i64,
    pub running_count: i64,
    /// Consecutive failed tasks (reset when a task of the deployment becomes healthy,
    /// unless the circuit breaker says otherwise).
    pub failed_tasks: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub launch_type: String,
    pub rollout_state: RolloutState,
    pub rollout_state_reason: String,
}

impl DeploymentRecord {
    /// A new deployment of `task_definition`, in progress.
    pub fn new(task_definition: &str, desired: i64, launch_type: &str, now: i64) -> Self {
        let id = format!("ecs-svc/{}", deployment_number());
        DeploymentRecord {
            rollout_state_reason: format!("ECS deployment {id} in progress."),
            id,
            status: DeploymentStatus::Primary,
            task_definition: task_definition.to_owned(),
            desired_count: desired,
            pending_count: 0,
            running_count: 0,
            failed_tasks: 0,
            created_at: now,
            updated_at: now,
            launch_type: launch_type.to_owned(),
            rollout_state: RolloutState::InProgress,
        }
    }

    pub fn to_wire(&self) -> Value {
        json!({
            "id": self.id,
            "status": match self.status {
                DeploymentStatus::Primary => "PRIMARY",
                DeploymentStatus::Active => "ACTIVE",
            },
            "taskDefinition": self.task_definition,
            "desiredCount": self.desired_count,
            "pendingCount": self.pending_count,
            "runningCount": self.running_count,
            "failedTasks": self.failed_tasks,
            "createdAt": epoch_seconds(self.created_at),
            "updatedAt": epoch_seconds(self.updated_at),
            "launchType": self.launch_type,
            "rolloutState": self.rollout_state.as_str(),
            "rolloutStateReason": self.rollout_state_reason,
        })
    }
}

/// A deployment number as ECS writes them: 19 decimal digits.
fn deployment_number() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range(1_000_000_000_000_000_000..=9_223_372_036_854_775_807)
}

/// One entry of `events[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceEventRecord {
    pub id: String,
    pub created_at: i64,
    pub message: String,
}

/// A load balancer target a task was registered as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegisteredTarget {
    pub target_group_arn: String,
    pub id: String,
    pub port: u16,
}

/// What the controller remembers about one task of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskNote {
    /// Targets registered for the task.
    #[serde(default)]
    pub targets: Vec<RegisteredTarget>,
    /// Set when the controller decided to stop the task: its targets drain until then,
    /// and only afterwards is the task asked to stop.
    #[serde(default)]
    pub drain_until: Option<i64>,
    /// Why the controller is stopping the task (its `stoppedReason`).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Whether the stop is a failure (failed health checks, a lost instance).
    #[serde(default)]
    pub stop_is_failure: bool,
    /// When the task was first seen healthy.
    #[serde(default)]
    pub healthy_since: Option<i64>,
    /// Whether a healthy spell of this task already reset the failure counts.
    #[serde(default)]
    pub settled: bool,
    /// Whether its end (a failure or not) was counted.
    #[serde(default)]
    pub accounted: bool,
}

/// A service, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceRecord {
    pub arn: String,
    pub name: String,
    pub cluster: String,
    pub cluster_arn: String,
    pub status: ServiceStatus,
    pub desired_count: i64,
    pub task_definition: String,
    pub launch_type: String,
    pub scheduling_strategy: SchedulingStrategy,
    pub deployment_configuration: DeploymentConfiguration,
    #[serde(default)]
    pub placement_constraints: Vec<Value>,
    #[serde(default)]
    pub placement_strategy: Vec<Value>,
    #[serde(default)]
    pub load_balancers: Vec<ServiceLoadBalancer>,
    pub health_check_grace_period_seconds: Option<i64>,
    pub network_configuration: Option<Value>,
    pub role_arn: Option<String>,
    pub propagate_tags: String,
    pub enable_ecs_managed_tags: bool,
    pub enable_execute_command: bool,
    pub created_at: i64,
    pub created_by: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The `clientToken` of the CreateService that made it, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// PRIMARY first.
    pub deployments: Vec<DeploymentRecord>,
    /// The deployment a circuit breaker rolls back to.
    pub last_completed: Option<DeploymentRecord>,
    /// Newest first.
    pub events: Vec<ServiceEventRecord>,
    /// Per task id.
    #[serde(default)]
    pub notes: BTreeMap<String, TaskNote>,
    /// Tasks of the service that failed in a row (any deployment), for the back-off.
    #[serde(default)]
    pub launch_failures: u32,
    /// No task is started before this (epoch milliseconds).
    #[serde(default)]
    pub next_launch_at: Option<i64>,
    /// Whether the current steady state was announced.
    #[serde(default)]
    pub steady: bool,
    /// DAEMON: instances the task could not be placed on at the last attempt.
    #[serde(default)]
    pub daemon_unplaceable: Vec<String>,
    /// The running and pending counts the controller last computed.
    #[serde(default)]
    pub running_count: i64,
    #[serde(default)]
    pub pending_count: i64,
}

impl ServiceRecord {
    /// The PRIMARY deployment.
    pub fn primary(&self) -> Option<&DeploymentRecord> {
        self.deployments
            .iter()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    pub fn primary_mut(&mut self) -> Option<&mut DeploymentRecord> {
        self.deployments
            .iter_mut()
            .find(|d| d.status == DeploymentStatus::Primary)
    }

    /// The group of the service's tasks.
    pub fn group(&self) -> String {
        format!("service:{}", self.name)
    }

    /// Adds an event (newest first), keeping the last [`MAX_EVENTS`]. A message equal
    /// to the newest one within `quiet_ms` is not repeated, so that a condition that
    /// persists (no instance fits) is not reported on every pass.
    pub fn add_event(&mut self, now: i64, message: String, quiet_ms: i64) {
        if let Some(newest) = self.events.first() {
            if newest.message == message && now - newest.created_at < quiet_ms {
                return;
            }
        }
        self.events.insert(
            0,
            ServiceEventRecord {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: now,
                message,
            },
        );
        self.events.truncate(MAX_EVENTS);
    }

    /// `(service <name>)`, the prefix of every event message.
    pub fn who(&self) -> String {
        format!("(service {})", self.name)
    }

    /// The `Service` wire shape.
    pub fn to_wire(&self, with_tags: bool) -> Value {
        let mut wire = json!({
            "serviceArn": self.arn,
            "serviceName": self.name,
            "clusterArn": self.cluster_arn,
            "loadBalancers": self.load_balancers.iter().map(ServiceLoadBalancer::to_wire).collect::<Vec<_>>(),
            "serviceRegistries": [],
            "status": self.status.as_str(),
            "desiredCount": self.desired_count,
            "runningCount": self.running_count,
            "pendingCount": self.pending_count,
            "launchType": self.launch_type,
            "taskDefinition": self.task_definition,
            "deploymentConfiguration": self.deployment_configuration.to_wire(),
            "taskSets": [],
            "deployments": self.deployments.iter().map(DeploymentRecord::to_wire).collect::<Vec<_>>(),
            "events": self.events.iter().map(|e| json!({
                "id": e.id,
                "createdAt": epoch_seconds(e.created_at),
                "message": e.message,
            })).collect::<Vec<_>>(),
            "createdAt": epoch_seconds(self.created_at),
            "placementConstraints": self.placement_constraints,
            "placementStrategy": self.placement_strategy,
            "schedulingStrategy": self.scheduling_strategy.as_str(),
            "deploymentController": {"type": "ECS"},
            "createdBy": self.created_by,
            "enableECSManagedTags": self.enable_ecs_managed_tags,
            "propagateTags": self.propagate_tags,
            "enableExecuteCommand": self.enable_execute_command,
        });
        if let Some(grace) = self.health_check_grace_period_seconds {
            wire["healthCheckGracePeriodSeconds"] = json!(grace);
        }
        if let Some(network) = &self.network_configuration {
            wire["networkConfiguration"] = network.clone();
        }
        if let Some(role) = &self.role_arn {
            wire["roleArn"] = json!(role);
        }
        if let Some(primary) = self.primary() {
            wire["currentServiceDeployment"] = json!(primary.id);
        }
        if with_tags {
            wire["tags"] = wire_tags(&self.tags);
        }
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_breaker_threshold_follows_ecs_rule() {
        let breaker = CircuitBreaker {
            enable: true,
            rollback: true,
            ..Default::default()
        };
        // Half the desired count rounded up, between 3 and 200.
        for (desired, threshold) in [
            (0, 3),
            (1, 3),
            (5, 3),
            (6, 3),
            (7, 4),
            (10, 5),
            (25, 13),
            (399, 200),
            (1000, 200),
        ] {
            assert_eq!(breaker.threshold(desired), threshold, "desired {desired}");
        }
        let count = CircuitBreaker {
            threshold_configuration: Some(ThresholdConfiguration {
                kind: "COUNT".to_owned(),
                value: 1,
            }),
            ..breaker.clone()
        };
        assert_eq!(count.threshold(50), 1);
        let unbounded = CircuitBreaker {
            threshold_configuration: Some(ThresholdConfiguration {
                kind: "UNBOUNDED_PERCENT".to_owned(),
                value: 10,
            }),
            ..breaker
        };
        assert_eq!(unbounded.threshold(5000), 500);
        assert_eq!(unbounded.threshold(1), 1);
    }

    #[test]
    fn service_status_moves_one_way() {
        use ServiceStatus::*;
        assert!(Active.can_move_to(Draining));
        assert!(Draining.can_move_to(Inactive));
        assert!(!Inactive.can_move_to(Active));
        assert!(!Draining.can_move_to(Active));
        assert!(!Active.can_move_to(Inactive));
    }

    #[test]
    fn events_are_newest_first_capped_and_not_repeated() {
        let mut svc = test_record();
        for (message, at) in [("a", 0), ("a", 10), ("b", 20), ("a", 2000)] {
            svc.add_event(at, message.to_owned(), 1000);
        }
        let messages: Vec<&str> = svc.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["a", "b", "a"]);
        for i in 0..150 {
            svc.add_event(3000 + i, format!("m{i}"), 1000);
        }
        assert_eq!(svc.events.len(), MAX_EVENTS);
        assert_eq!(svc.events[0].message, "m149");
    }

    fn test_record() -> ServiceRecord {
        ServiceRecord {
            arn: "arn:aws:ecs:us-east-1:000000000000:service/c/web".to_owned(),
            name: "web".to_owned(),
            cluster: "c".to_owned(),
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/c".to_owned(),
            status: ServiceStatus::Active,
            desired_count: 1,
            task_definition: "td".to_owned(),
            launch_type: "EC2".to_owned(),
            scheduling_strategy: SchedulingStrategy::Replica,
            deployment_configuration: DeploymentConfiguration {
                maximum_percent: 200,
                minimum_healthy_percent: 100,
                circuit_breaker: CircuitBreaker::default(),
            },
            placement_constraints: vec![],
            placement_strategy: vec![],
            load_balancers: vec![],
            health_check_grace_period_seconds: None,
            network_configuration: None,
            role_arn: None,
            propagate_tags: "NONE".to_owned(),
            enable_ecs_managed_tags: false,
            enable_execute_command: false,
            created_at: 0,
            created_by: "x".to_owned(),
            tags: vec![],
            client_token: None,
            deployments: vec![],
            last_completed: None,
            events: vec![],
            notes: BTreeMap::new(),
            launch_failures: 0,
            next_launch_at: None,
            steady: false,
            daemon_unplaceable: vec![],
            running_count: 0,
            pending_count: 0,
        }
    }
}
