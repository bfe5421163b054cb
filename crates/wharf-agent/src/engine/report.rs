//! Telling the control plane what happened: [`StateReporter`], over the ECS agent
//! operations ([`EcsReporter`]) or in memory for tests ([`RecordingReporter`]).
//!
//! State changes are idempotent on the control plane (a report older than what it
//! knows is acknowledged and ignored), so a report that may or may not have arrived is
//! simply sent again.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;
use wharf_agent_channel::client::EcsClient;

use crate::runtime::Protocol;

/// A task status the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportedTaskStatus {
    /// Accepted by the agent, images being pulled or containers created.
    Pending,
    /// Every essential container runs.
    Running,
    /// Every container has exited.
    Stopped,
}

impl ReportedTaskStatus {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportedTaskStatus::Pending => "PENDING",
            ReportedTaskStatus::Running => "RUNNING",
            ReportedTaskStatus::Stopped => "STOPPED",
        }
    }
}

/// A container status the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportedContainerStatus {
    /// Not started yet.
    Pending,
    /// Started.
    Running,
    /// Exited (or never started, in a stopped task).
    Stopped,
}

impl ReportedContainerStatus {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportedContainerStatus::Pending => "PENDING",
            ReportedContainerStatus::Running => "RUNNING",
            ReportedContainerStatus::Stopped => "STOPPED",
        }
    }
}

/// One published port as the control plane records it (`networkBindings[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkBinding {
    /// Host address bound.
    pub bind_ip: String,
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the host (the engine's choice for dynamic mappings).
    pub host_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// A container's new state (`SubmitContainerStateChange`, or one of a task report's
/// `containers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStateChange {
    /// Task ARN.
    pub task_arn: String,
    /// Container name in the task definition.
    pub container_name: String,
    /// Engine id, once created.
    pub runtime_id: Option<String>,
    /// New status.
    pub status: ReportedContainerStatus,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Why it stopped or failed.
    pub reason: Option<String>,
    /// Published ports with their actual host ports.
    pub network_bindings: Vec<NetworkBinding>,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`, for containers with a health check.
    pub health_status: Option<&'static str>,
}

/// A task's new state (`SubmitTaskStateChange`), with its containers' states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStateChange {
    /// Task ARN.
    pub task_arn: String,
    /// New status.
    pub status: ReportedTaskStatus,
    /// Why the task stopped (only with `Stopped`).
    pub reason: Option<String>,
    /// Every container's state at the time of the report.
    pub containers: Vec<ContainerStateChange>,
    /// When the first image pull began.
    pub pull_started_at: Option<DateTime<Utc>>,
    /// When the last image pull ended.
    pub pull_stopped_at: Option<DateTime<Utc>>,
    /// When the last container exited (only with `Stopped`).
    pub execution_stopped_at: Option<DateTime<Utc>>,
}

/// Why a report did not reach the control plane.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The control plane refused it, and would refuse it again.
    #[error("the control plane refused the report: {0}")]
    Refused(String),
    /// It could not be delivered, even after retries.
    #[error("the control plane could not be reached: {0}")]
    Unreachable(String),
}

/// Where the engine sends state changes.
#[async_trait]
pub trait StateReporter: Send + Sync + 'static {
    /// Reports a task's status along with its containers'.
    async fn report_task(&self, change: &TaskStateChange) -> Result<(), ReportError>;
    /// Reports one container's status.
    async fn report_container(&self, change: &ContainerStateChange) -> Result<(), ReportError>;
}

fn epoch_seconds(time: Option<DateTime<Utc>>) -> Option<f64> {
    time.map(|t| t.timestamp_millis() as f64 / 1000.0)
}

fn container_json(change: &ContainerStateChange) -> Value {
    let mut wire = json!({
        "containerName": change.container_name,
        "status": change.status.as_str(),
        "networkBindings": change.network_bindings.iter().map(|b| json!({
            "bindIP": b.bind_ip,
            "containerPort": b.container_port,
            "hostPort": b.host_port,
            "protocol": b.protocol.as_str(),
        })).collect::<Vec<_>>(),
    });
    if let Some(id) = &change.runtime_id {
        wire["runtimeId"] = json!(id);
    }
    if let Some(code) = change.exit_code {
        wire["exitCode"] = json!(code);
    }
    if let Some(reason) = &change.reason {
        wire["reason"] = json!(reason);
    }
    // Not a member of ECS's ContainerStateChange: the ECS agent reports health over
    // its telemetry channel. Wharf's control plane reads this extra member; ECS's
    // model validation ignores members it does not know.
    if let Some(health) = change.health_status {
        wire["healthStatus"] = json!(health);
    }
    wire
}

/// The JSON input of `SubmitTaskStateChange`.
pub fn task_state_change_input(cluster: &str, change: &TaskStateChange) -> Value {
    let mut input = json!({
        "cluster": cluster,
        "task": change.task_arn,
        "status": change.status.as_str(),
        "containers": change.containers.iter().map(container_json).collect::<Vec<_>>(),
    });
    if let Some(reason) = &change.reason {
        input["reason"] = json!(reason);
    }
    for (key, time) in [
        ("pullStartedAt", change.pull_started_at),
        ("pullStoppedAt", change.pull_stopped_at),
        ("executionStoppedAt", change.execution_stopped_at),
    ] {
        if let Some(seconds) = epoch_seconds(time) {
            input[key] = json!(seconds);
        }
    }
    input
}

/// The JSON input of `SubmitContainerStateChange`.
pub fn container_state_change_input(cluster: &str, change: &ContainerStateChange) -> Value {
    let mut input = container_json(change);
    input["cluster"] = json!(cluster);
    input["task"] = json!(change.task_arn);
    input
}

/// Reports over the ECS agent operations, retrying what may succeed later.
#[derive(Clone)]
pub struct EcsReporter {
    client: EcsClient,
    cluster: String,
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl EcsReporter {
    /// A reporter for the instance's `cluster` (name or ARN). A report that may
    /// succeed later (the control plane is restarting, say) is retried until it is
    /// acknowledged, backing off from 100 ms to 10 s; state changes are idempotent, so
    /// a repeat is harmless.
    pub fn new(client: EcsClient, cluster: impl Into<String>) -> Self {
        EcsReporter {
            client,
            cluster: cluster.into(),
            attempts: u32::MAX,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    async fn call(&self, operation: &str, input: &Value) -> Result<(), ReportError> {
        let mut delay = self.first_backoff;
        let mut attempt = 1;
        loop {
            match self.client.call(operation, input).await {
                Ok(_) => return Ok(()),
                Err(error) if error.is_retryable() && attempt < self.attempts => {
                    tracing::debug!(operation, %error, attempt, "state change report failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_backoff);
                    attempt += 1;
                }
                Err(error) if error.is_retryable() => {
                    return Err(ReportError::Unreachable(error.to_string()))
                }
                Err(error) => return Err(ReportError::Refused(error.to_string())),
            }
        }
    }
}

#[async_trait]
impl StateReporter for EcsReporter {
    async fn report_task(&self, change: &TaskStateChange) -> Result<(), ReportError> {
        self.call(
            "SubmitTaskStateChange",
            &task_state_change_input(&self.cluster, change),
        )
        .await
    }

    async fn report_container(&self, change: &ContainerStateChange) -> Result<(), ReportError> {
        self.call(
            "SubmitContainerStateChange",
            &container_state_change_input(&self.cluster, change),
        )
        .await
    }
}

/// One report a [`RecordingReporter`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A task report.
    Task(TaskStateChange),
    /// A container report.
    Container(ContainerStateChange),
}

/// Keeps every report in memory, for tests, and lets a test wait for one.
#[derive(Debug)]
pub struct RecordingReporter {
    reports: Mutex<Vec<Report>>,
    count: watch::Sender<usize>,
}

impl Default for RecordingReporter {
    fn default() -> Self {
        RecordingReporter {
            reports: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        }
    }
}

impl RecordingReporter {
    /// A reporter with no reports.
    pub fn new() -> Self {
        RecordingReporter::default()
    }

    /// Every report so far, in order.
    pub fn reports(&self) -> Vec<Report> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The task reports about `task_arn`, in order.
    pub fn task_reports(&self, task_arn: &str) -> Vec<TaskStateChange> {
        self.reports()
            .into_iter()
            .filter_map(|r| match r {
                Report::Task(t) if t.task_arn == task_arn => Some(t),
                _ => None,
            })
            .collect()
    }

    /// The container reports about `task_arn`, in order.
    pub fn container_reports(&self, task_arn: &str) -> Vec<ContainerStateChange> {
        self.reports()
            .into_iter()
            .filter_map(|r| match r {
                Report::Container(c) if c.task_arn == task_arn => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Waits until some report satisfies `matches` and returns it; `None` after
    /// `deadline`.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        matches: impl Fn(&Report) -> bool,
    ) -> Option<Report> {
        let mut count = self.count.subscribe();
        let search = async {
            loop {
                if let Some(found) = self.reports().into_iter().find(|r| matches(r)) {
                    return found;
                }
                // The sender lives as long as `self`, so this only waits.
                let _ = count.changed().await;
            }
        };
        tokio::time::timeout(deadline, search).await.ok()
    }

    /// Waits for a task report of `task_arn` with `status`.
    pub async fn wait_for_task(
        &self,
        task_arn: &str,
        status: ReportedTaskStatus,
        deadline: Duration,
    ) -> Option<TaskStateChange> {
        match self
            .wait_for(
                deadline,
                |r| matches!(r, Report::Task(t) if t.task_arn == task_arn && t.status == status),
            )
            .await?
        {
            Report::Task(t) => Some(t),
            Report::Container(_) => None,
        }
    }

    fn push(&self, report: Report) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
        self.count.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl StateReporter for RecordingReporter {
    async fn report_task(&self, change: &TaskStateChange) -> Result<(), ReportError> {
        self.push(Report::Task(change.clone()));
        Ok(())
    }

    async fn report_container(&self, change: &ContainerStateChange) -> Result<(), ReportError> {
        self.push(Report::Container(change.clone()));
        Ok(())
    }
}
