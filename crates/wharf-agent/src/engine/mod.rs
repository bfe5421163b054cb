//! The task engine: runs the tasks the control plane places on this node, the way the
//! ECS agent does, and reports what happens to them.
//!
//! [`TaskEngine::run`] consumes the channel session's events. Each task gets its own
//! supervisor (a tokio task, see `task.rs`) that owns the task's containers: it pulls
//! images per [`ImagePullBehavior`], creates every container, starts them in
//! `dependsOn` order, follows the engine's container events (exits, health), stops the
//! task when an essential container exits or the control plane asks, reports every
//! change through a [`StateReporter`], and removes the containers after the cleanup
//! wait. The engine loop only routes: payloads by task ARN, container events by the
//! task-ARN label.
//!
//! On start the engine subscribes to the engine's events, then lists the containers
//! labelled with this instance's ARN and re-adopts them, task by task; an adopted task
//! waits for the control plane's word. The first payload after each `Connected` is the
//! full list of the instance's live tasks: a task absent from it is stopped. Nothing
//! else stops an adopted task.
//!
//! What the engine must not do: decide placement, or stop containers when the agent
//! itself stops (tasks outlive agent restarts).
//!
//! `awsvpc` tasks run on the default bridge: a self-hosted node has no ENI per task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use wharf_agent_channel::session::SessionEvent;

use crate::runtime::{
    BoundPort, ContainerRuntime, ContainerState, EventStream, HealthStatus, NetworkAttachment,
};

pub mod plan;
pub mod report;
mod task;
#[cfg(test)]
mod tests;

pub use report::{
    ContainerStateChange, EcsReporter, NetworkBinding, RecordingReporter, Report, ReportError,
    ReportedContainerStatus, ReportedTaskStatus, StateReporter, TaskStateChange,
};

use task::{TaskMessage, TaskRun};

/// `ECS_IMAGE_PULL_BEHAVIOR`, as the configuration parses it.
pub use crate::config::ImagePullBehavior;

/// What the engine needs to know of its node and its configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The cluster ARN (label `com.amazonaws.ecs.cluster`).
    pub cluster_arn: String,
    /// This container instance's ARN (label `wharf.container-instance-arn`).
    pub instance_arn: String,
    /// `ECS_CONTAINER_STOP_TIMEOUT`: grace period for containers without
    /// `stopTimeout`.
    pub stop_timeout: Duration,
    /// `ECS_CONTAINER_START_TIMEOUT`: how long a container start may take.
    pub start_timeout: Duration,
    /// `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`: how long a stopped task's containers
    /// are kept before they are removed.
    pub task_cleanup_wait: Duration,
    /// `ECS_IMAGE_PULL_BEHAVIOR`.
    pub image_pull_behavior: ImagePullBehavior,
    /// `ECS_AVAILABLE_LOGGING_DRIVERS`.
    pub logging_drivers: Vec<String>,
    /// Base URL of the task metadata endpoint as containers reach it (e.g.
    /// `http://172.17.0.1:51679`); when set, every container gets
    /// `ECS_CONTAINER_METADATA_URI_V4=<base>/v4/<metadata id>`.
    pub metadata_endpoint: Option<String>,
    /// Where registry credentials for image pulls come from (none: pull anonymously).
    pub registry_credentials: Option<RegistryCredentialSource>,
}

/// Registry credentials for an image, e.g. an ECR token for images in Wharf's own
/// registry.
#[async_trait::async_trait]
pub trait RegistryCredentials: Send + Sync + 'static {
    /// The credentials to pull `image` with, if its registry needs any this source has.
    async fn for_image(&self, image: &str) -> Option<crate::runtime::RegistryAuth>;
}

/// A shared [`RegistryCredentials`], as the engine's configuration holds it.
#[derive(Clone)]
pub struct RegistryCredentialSource(pub Arc<dyn RegistryCredentials>);

impl std::fmt::Debug for RegistryCredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCredentialSource")
    }
}

impl EngineConfig {
    /// The ECS agent's defaults for everything but the two ARNs.
    pub fn new(cluster_arn: impl Into<String>, instance_arn: impl Into<String>) -> Self {
        EngineConfig {
            cluster_arn: cluster_arn.into(),
            instance_arn: instance_arn.into(),
            stop_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(180),
            task_cleanup_wait: Duration::from_secs(3 * 3600),
            image_pull_behavior: ImagePullBehavior::Default,
            logging_drivers: vec!["json-file".into(), "none".into()],
            metadata_endpoint: None,
            registry_credentials: None,
        }
    }
}

/// A task's desired status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesiredStatus {
    /// Run it.
    Running,
    /// Stop it.
    Stopped,
}

impl DesiredStatus {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredStatus::Running => "RUNNING",
            DesiredStatus::Stopped => "STOPPED",
        }
    }
}

/// A task's status as this agent knows it. Only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskStatus {
    /// Known, nothing done yet (or adopted, waiting for the control plane's word).
    None,
    /// Images being pulled, containers created or starting.
    Pending,
    /// Every essential container runs.
    Running,
    /// Every container has exited.
    Stopped,
}

impl TaskStatus {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::None => "NONE",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Stopped => "STOPPED",
        }
    }

    /// Whether a task in this status may move to `next` (forward only).
    pub fn can_move_to(self, next: TaskStatus) -> bool {
        next > self
    }
}

/// A container's status as this agent knows it. Only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContainerKnownStatus {
    /// Not created yet.
    None,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited, or will never run.
    Stopped,
}

impl ContainerKnownStatus {
    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKnownStatus::None => "NONE",
            ContainerKnownStatus::Created => "CREATED",
            ContainerKnownStatus::Running => "RUNNING",
            ContainerKnownStatus::Stopped => "STOPPED",
        }
    }

    /// Whether a container in this status may move to `next` (forward only).
    pub fn can_move_to(self, next: ContainerKnownStatus) -> bool {
        next > self
    }
}

/// One task as the metadata endpoint shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// Cluster ARN.
    pub cluster_arn: String,
    /// Task ARN.
    pub arn: String,
    /// Task definition family.
    pub family: String,
    /// Task definition revision.
    pub revision: u32,
    /// What the control plane wants.
    pub desired_status: DesiredStatus,
    /// What the agent knows.
    pub known_status: TaskStatus,
    /// Task-level CPU units, when the definition sets them.
    pub cpu_units: Option<u32>,
    /// Task-level memory in MiB, when the definition sets it.
    pub memory_mib: Option<u64>,
    /// When the first image pull began.
    pub pull_started_at: Option<DateTime<Utc>>,
    /// When the last image pull ended.
    pub pull_stopped_at: Option<DateTime<Utc>>,
    /// When the last container exited.
    pub execution_stopped_at: Option<DateTime<Utc>>,
    /// Why the task stopped, when the agent stopped it on its own.
    pub stopped_reason: Option<String>,
    /// Containers, in definition order (adopted containers in name order until the
    /// definition arrives).
    pub containers: Vec<ContainerView>,
}

/// One container of a [`TaskView`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Name in the task definition.
    pub name: String,
    /// Container ARN, when the control plane sent one.
    pub container_arn: Option<String>,
    /// The id under which it reaches the metadata endpoint (`…/v4/<id>`).
    pub metadata_id: String,
    /// Engine id, once created (ECS `DockerId`).
    pub docker_id: Option<String>,
    /// Engine name (ECS `DockerName`).
    pub docker_name: Option<String>,
    /// Image reference.
    pub image: String,
    /// Image id, once created.
    pub image_id: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// What the agent wants of it.
    pub desired_status: ContainerKnownStatus,
    /// What the agent knows of it.
    pub known_status: ContainerKnownStatus,
    /// Whether the task stops when it exits.
    pub essential: bool,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Why it stopped or never started.
    pub reason: Option<String>,
    /// CPU units (`cpu`).
    pub cpu_units: u32,
    /// Hard memory limit in MiB (`memory`).
    pub memory_mib: Option<u64>,
    /// When created.
    pub created_at: Option<DateTime<Utc>>,
    /// When started.
    pub started_at: Option<DateTime<Utc>>,
    /// When exited.
    pub finished_at: Option<DateTime<Utc>>,
    /// Health, for containers with a health check.
    pub health: Option<HealthStatus>,
    /// Published ports as bound.
    pub ports: Vec<BoundPort>,
    /// Networks with the container's address.
    pub networks: Vec<NetworkAttachment>,
}

/// Runs this node's tasks. See the module documentation.
pub struct TaskEngine {
    runtime: Arc<dyn ContainerRuntime>,
    reporter: Arc<dyn StateReporter>,
    config: EngineConfig,
    views: Mutex<BTreeMap<String, TaskView>>,
    /// Images this engine pulled, for [`ImagePullBehavior::Once`].
    pulled_images: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for TaskEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long to wait before asking a failing engine again.
const RUNTIME_RETRY: Duration = Duration::from_secs(1);

impl TaskEngine {
    /// An engine over `runtime`, reporting to `reporter`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        reporter: Arc<dyn StateReporter>,
        config: EngineConfig,
    ) -> Arc<Self> {
        Arc::new(TaskEngine {
            runtime,
            reporter,
            config,
            views: Mutex::new(BTreeMap::new()),
            pulled_images: Mutex::new(BTreeSet::new()),
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Every task the engine holds (running, stopping, or stopped and not yet cleaned
    /// up), by ARN order.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One task by ARN.
    pub fn task(&self, arn: &str) -> Option<TaskView> {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(arn)
            .cloned()
    }

    /// The task and container that reach the metadata endpoint as `metadata_id`.
    pub fn container_by_metadata_id(&self, metadata_id: &str) -> Option<(TaskView, usize)> {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.values().find_map(|task| {
            let index = task
                .containers
                .iter()
                .position(|c| c.metadata_id == metadata_id)?;
            Some((task.clone(), index))
        })
    }

    pub(crate) fn publish(&self, view: TaskView) {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(view.arn.clone(), view);
    }

    pub(crate) fn forget(&self, arn: &str) {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(arn);
    }

    fn instance_labels(&self) -> Vec<(String, String)> {
        vec![(
            plan::LABEL_INSTANCE_ARN.to_owned(),
            self.config.instance_arn.clone(),
        )]
    }

    /// Subscribes to this instance's container events, retrying until the engine
    /// answers; `None` when shutdown comes first.
    async fn subscribe(&self, shutdown: &mut watch::Receiver<bool>) -> Option<EventStream> {
        loop {
            match self.runtime.events(&self.instance_labels()).await {
                Ok(stream) => return Some(stream),
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe to container events; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RUNTIME_RETRY) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            }
        }
    }

    async fn list_own_containers(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Vec<ContainerState>> {
        loop {
            match self.runtime.list_containers(&self.instance_labels()).await {
                Ok(list) => return Some(list),
                Err(error) => {
                    tracing::warn!(%error, "cannot list this instance's containers; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RUNTIME_RETRY) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            }
        }
    }

    /// Runs the engine until `shutdown` turns true (or its sender is dropped). Task
    /// containers keep running after it returns; a new engine on the same instance
    /// re-adopts them.
    pub async fn run(
        self: Arc<Self>,
        mut events: mpsc::Receiver<SessionEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if *shutdown.borrow() {
            return;
        }
        // Subscribe before listing, so that nothing happening in between is missed.
        let Some(mut container_events) = self.subscribe(&mut shutdown).await else {
            return;
        };
        let Some(existing) = self.list_own_containers(&mut shutdown).await else {
            return;
        };
        let mut supervisors: JoinSet<String> = JoinSet::new();
        let mut tasks: HashMap<String, mpsc::UnboundedSender<TaskMessage>> = HashMap::new();
        // Tasks whose supervisor finished (stopped and cleaned up): a late or repeated
        // payload must not run them again.
        let mut finished: BTreeSet<String> = BTreeSet::new();

        let mut adopted: BTreeMap<String, Vec<ContainerState>> = BTreeMap::new();
        for container in existing {
            if let Some(arn) = container.labels.get(plan::LABEL_TASK_ARN) {
                adopted.entry(arn.clone()).or_default().push(container);
            }
        }
        for (arn, containers) in adopted {
            tracing::info!(task = %arn, containers = containers.len(), "re-adopting task");
            let run = TaskRun::adopted(self.clone(), arn.clone(), containers);
            let (sender, receiver) = mpsc::unbounded_channel();
            tasks.insert(arn, sender);
            supervisors.spawn(run.supervise(receiver));
        }

        let mut session_open = true;
        let mut expect_full_state = false;
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                event = events.recv(), if session_open => match event {
                    None => session_open = false,
                    Some(SessionEvent::Connected) => expect_full_state = true,
                    Some(SessionEvent::Disconnected) => expect_full_state = false,
                    Some(SessionEvent::Refused(error)) => {
                        tracing::warn!(code = %error.code, "the control plane refused the session");
                    }
                    Some(SessionEvent::Tasks(payloads)) => {
                        if std::mem::take(&mut expect_full_state) {
                            let listed: BTreeSet<&str> =
                                payloads.iter().map(|p| p.arn.as_str()).collect();
                            for (arn, sender) in &tasks {
                                if !listed.contains(arn.as_str()) {
                                    let _ = sender.send(TaskMessage::AbsentFromControlPlane);
                                }
                            }
                        }
                        for payload in payloads {
                            if finished.contains(&payload.arn) {
                                continue;
                            }
                            if let Some(sender) = tasks.get(&payload.arn) {
                                let _ = sender.send(TaskMessage::Payload(Box::new(payload)));
                                continue;
                            }
                            let arn = payload.arn.clone();
                            let run = TaskRun::new(self.clone(), arn.clone());
                            let (sender, receiver) = mpsc::unbounded_channel();
                            let _ = sender.send(TaskMessage::Payload(Box::new(payload)));
                            tasks.insert(arn, sender);
                            supervisors.spawn(run.supervise(receiver));
                        }
                    }
                },
                event = container_events.next() => match event {
                    Some(Ok(event)) => {
                        let arn = event.labels.get(plan::LABEL_TASK_ARN);
                        if let Some(sender) = arn.and_then(|arn| tasks.get(arn)) {
                            let _ = sender.send(TaskMessage::Container(event));
                        }
                    }
                    Some(Err(_)) | None => {
                        tracing::warn!("container event stream ended; resubscribing");
                        let Some(stream) = self.subscribe(&mut shutdown).await else {
                            break;
                        };
                        container_events = stream;
                        // Whatever happened while the stream was down is read back.
                        for sender in tasks.values() {
                            let _ = sender.send(TaskMessage::Resync);
                        }
                    }
                },
                Some(done) = supervisors.join_next() => {
                    if let Ok(arn) = done {
                        tasks.remove(&arn);
                        finished.insert(arn);
                    }
                }
            }
        }
        // Dropping the supervisors aborts them; the containers are left as they are.
        supervisors.abort_all();
    }
}
