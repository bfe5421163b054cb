//! One task's supervisor: drives the task's containers toward the desired status and
//! reports each change. Everything here runs on the supervisor's own tokio task, so a
//! slow pull or stop of one task never holds up another.
//!
//! The supervisor alternates between [`TaskRun::step`], which makes every move that is
//! possible now (pull, create, start what its dependencies allow, stop), and waiting
//! for the next message (a payload, a container event). A move that waits on the
//! outside world — a dependency becoming healthy, a container exiting — is simply made
//! on a later step.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use wharf_agent_channel::TaskPayload;

use super::plan::{
    plan_task, ContainerPlan, DependencyCondition, PlanContext, TaskPlan, LABEL_CONTAINER_NAME,
    LABEL_FAMILY, LABEL_METADATA_ID, LABEL_REVISION,
};
use super::report::{
    ContainerStateChange, NetworkBinding, ReportedContainerStatus, ReportedTaskStatus,
    TaskStateChange,
};
use super::{
    ContainerKnownStatus, ContainerView, DesiredStatus, ImagePullBehavior, TaskEngine, TaskStatus,
    TaskView,
};
use crate::runtime::{
    ContainerEvent, ContainerEventKind, ContainerState, ContainerStatus, HealthStatus, NetworkMode,
    Protocol, RuntimeError,
};

/// The stopped reason of a task whose essential container exited, as ECS words it.
pub const ESSENTIAL_CONTAINER_EXITED: &str = "Essential container in task exited";

/// What a supervisor is told.
#[derive(Debug)]
pub(crate) enum TaskMessage {
    /// The control plane's latest word on the task.
    Payload(Box<TaskPayload>),
    /// A full-state payload did not list the task.
    AbsentFromControlPlane,
    /// Something happened to one of the task's containers.
    Container(ContainerEvent),
    /// The event stream broke: read every container's state again.
    Resync,
}

/// `bytes` random bytes as lowercase hex. Not cryptographic, but keyed by the
/// process's random hasher seed, so names and metadata ids cannot be predicted from
/// outside.
pub(crate) fn random_hex(bytes: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(bytes * 2);
    out
}

struct ContainerRun {
    name: String,
    plan: Option<ContainerPlan>,
    metadata_id: String,
    id: Option<String>,
    state: Option<ContainerState>,
    known: ContainerKnownStatus,
    exit_code: Option<i64>,
    health: Option<HealthStatus>,
    reason: Option<String>,
    /// The last status reported on its own (SubmitContainerStateChange).
    reported: Option<ReportedContainerStatus>,
}

impl ContainerRun {
    fn new(name: String) -> Self {
        ContainerRun {
            name,
            plan: None,
            metadata_id: random_hex(16),
            id: None,
            state: None,
            known: ContainerKnownStatus::None,
            exit_code: None,
            health: None,
            reason: None,
            reported: None,
        }
    }

    fn essential(&self) -> bool {
        self.plan.as_ref().is_none_or(|p| p.essential)
    }

    fn move_to(&mut self, next: ContainerKnownStatus) {
        if self.known.can_move_to(next) {
            self.known = next;
        }
    }

    /// Takes in what the engine says of the container.
    fn absorb(&mut self, state: ContainerState) {
        self.health = state.health;
        match state.status {
            ContainerStatus::Created => self.move_to(ContainerKnownStatus::Created),
            status if status.is_running() => self.move_to(ContainerKnownStatus::Running),
            _ => {
                self.move_to(ContainerKnownStatus::Stopped);
                self.exit_code = self.exit_code.or(state.exit_code);
            }
        }
        if state.oom_killed && self.reason.is_none() {
            self.reason = Some("OutOfMemoryError: Container killed due to memory usage".into());
        }
        self.state = Some(state);
    }

    fn started(&self) -> bool {
        self.known == ContainerKnownStatus::Running
            || self.state.as_ref().is_some_and(|s| s.started_at.is_some())
    }

    fn reported_status(&self) -> ReportedContainerStatus {
        match self.known {
            ContainerKnownStatus::None | ContainerKnownStatus::Created => {
                ReportedContainerStatus::Pending
            }
            ContainerKnownStatus::Running => ReportedContainerStatus::Running,
            ContainerKnownStatus::Stopped => ReportedContainerStatus::Stopped,
        }
    }

    fn network_bindings(&self, network_mode: &NetworkMode) -> Vec<NetworkBinding> {
        let Some(plan) = &self.plan else {
            return Vec::new();
        };
        if self.known != ContainerKnownStatus::Running
            && self.known != ContainerKnownStatus::Stopped
        {
            return Vec::new();
        }
        if *network_mode == NetworkMode::Host {
            // Host networking publishes nothing: the container listens on the host's
            // own ports, which are the container ports.
            return plan
                .port_mappings
                .iter()
                .map(|m| NetworkBinding {
                    bind_ip: "0.0.0.0".into(),
                    container_port: m.container_port,
                    host_port: m.container_port,
                    protocol: m.protocol,
                })
                .collect();
        }
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let mut seen: BTreeSet<(u16, Protocol)> = BTreeSet::new();
        let mut bindings = Vec::new();
        for port in &state.ports {
            if !seen.insert((port.container_port, port.protocol)) {
                continue;
            }
            let host_port = state
                .host_port(port.container_port, port.protocol)
                .unwrap_or(port.host_port);
            let bind_ip = state
                .ports
                .iter()
                .find(|p| {
                    p.container_port == port.container_port
                        && p.protocol == port.protocol
                        && p.host_port == host_port
                })
                .and_then(|p| p.host_ip.clone())
                .unwrap_or_else(|| "0.0.0.0".into());
            bindings.push(NetworkBinding {
                bind_ip,
                container_port: port.container_port,
                host_port,
                protocol: port.protocol,
            });
        }
        bindings
    }
}

/// How a container's dependencies stand.
enum Readiness {
    Ready,
    Waiting,
    /// A dependency can never be satisfied, with why.
    Never(String),
}

pub(crate) struct TaskRun {
    engine: Arc<TaskEngine>,
    arn: String,
    family: String,
    revision: u32,
    plan: Option<TaskPlan>,
    containers: Vec<ContainerRun>,
    /// Engine containers of this task that duplicate another of the same name (left
    /// by a crash between two creations); stopped and removed with the task.
    orphans: Vec<String>,
    desired: DesiredStatus,
    known: TaskStatus,
    stop_reason: Option<String>,
    /// The status last reported to the control plane.
    reported: Option<ReportedTaskStatus>,
    pull_started_at: Option<DateTime<Utc>>,
    pull_stopped_at: Option<DateTime<Utc>>,
    execution_stopped_at: Option<DateTime<Utc>>,
}

impl TaskRun {
    pub(crate) fn new(engine: Arc<TaskEngine>, arn: String) -> Self {
        TaskRun {
            engine,
            arn,
            family: String::new(),
            revision: 0,
            plan: None,
            containers: Vec::new(),
            orphans: Vec::new(),
            desired: DesiredStatus::Running,
            known: TaskStatus::None,
            stop_reason: None,
            reported: None,
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: None,
        }
    }

    /// A task found on the engine at start-up, from its containers.
    pub(crate) fn adopted(
        engine: Arc<TaskEngine>,
        arn: String,
        mut containers: Vec<ContainerState>,
    ) -> Self {
        let mut run = TaskRun::new(engine, arn);
        // Running ones first, then the newest: the one kept for a name is the live one.
        containers.sort_by_key(|c| (!c.status.is_running(), std::cmp::Reverse(c.created_at)));
        for state in containers {
            run.family = state.labels.get(LABEL_FAMILY).cloned().unwrap_or_default();
            run.revision = state
                .labels
                .get(LABEL_REVISION)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let name = state
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_else(|| state.name.clone());
            if run.containers.iter().any(|c| c.name == name) {
                run.orphans.push(state.id.clone());
                continue;
            }
            let mut container = ContainerRun::new(name);
            if let Some(id) = state.labels.get(LABEL_METADATA_ID) {
                container.metadata_id = id.clone();
            }
            container.id = Some(state.id.clone());
            container.absorb(state);
            run.containers.push(container);
        }
        run.containers.sort_by(|a, b| a.name.cmp(&b.name));
        run.known = if run
            .containers
            .iter()
            .any(|c| c.known == ContainerKnownStatus::Running)
        {
            TaskStatus::Running
        } else {
            TaskStatus::Pending
        };
        run
    }

    /// Supervises the task until it is stopped, reported and cleaned up; returns its
    /// ARN.
    pub(crate) async fn supervise(
        mut self,
        mut messages: mpsc::UnboundedReceiver<TaskMessage>,
    ) -> String {
        loop {
            self.step().await;
            self.publish();
            if self.known == TaskStatus::Stopped {
                break;
            }
            let Some(message) = messages.recv().await else {
                return self.arn;
            };
            self.handle(message).await;
            while let Ok(message) = messages.try_recv() {
                self.handle(message).await;
            }
        }
        // Keep the stopped task (for the metadata endpoint and `docker logs`) until the
        // cleanup wait is over; messages meanwhile change nothing.
        let wait = tokio::time::sleep(self.engine.config.task_cleanup_wait);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                message = messages.recv() => if message.is_none() { return self.arn },
            }
        }
        let ids: Vec<String> = self
            .containers
            .iter()
            .filter_map(|c| c.id.clone())
            .chain(self.orphans.iter().cloned())
            .collect();
        for id in ids {
            match self.engine.runtime.remove_container(&id).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(error) => {
                    tracing::warn!(task = %self.arn, %id, %error, "cannot remove container")
                }
            }
        }
        self.engine.forget(&self.arn);
        self.arn
    }

    async fn handle(&mut self, message: TaskMessage) {
        match message {
            TaskMessage::Payload(payload) => self.take_payload(&payload).await,
            TaskMessage::AbsentFromControlPlane => {
                if self.desired != DesiredStatus::Stopped {
                    tracing::info!(task = %self.arn, "task unknown to the control plane; stopping it");
                    self.desired = DesiredStatus::Stopped;
                }
            }
            TaskMessage::Container(event) => self.take_event(event).await,
            TaskMessage::Resync => {
                for index in 0..self.containers.len() {
                    self.inspect(index).await;
                }
            }
        }
    }

    async fn take_payload(&mut self, payload: &TaskPayload) {
        if payload.desired_status == "STOPPED" {
            self.desired = DesiredStatus::Stopped;
        }
        if self.plan.is_some() || self.known == TaskStatus::Stopped {
            return;
        }
        let config = &self.engine.config;
        let cx = PlanContext {
            cluster_arn: &config.cluster_arn,
            instance_arn: &config.instance_arn,
            default_stop_timeout: config.stop_timeout,
            logging_drivers: &config.logging_drivers,
        };
        let plan = match plan_task(payload, &cx) {
            Ok(plan) => plan,
            Err(error) => {
                tracing::warn!(task = %self.arn, %error, "task definition refused");
                self.family = payload.family.clone();
                self.stop_reason.get_or_insert(error.to_string());
                return;
            }
        };
        self.family = plan.family.clone();
        self.revision = plan.revision;
        let mut containers = Vec::new();
        for container_plan in &plan.containers {
            let mut container = match self
                .containers
                .iter()
                .position(|c| c.name == container_plan.name)
            {
                Some(index) => self.containers.remove(index),
                None => ContainerRun::new(container_plan.name.clone()),
            };
            container.plan = Some(container_plan.clone());
            containers.push(container);
        }
        // Adopted containers the definition does not name are not the task's any more.
        self.orphans
            .extend(self.containers.drain(..).filter_map(|c| c.id));
        self.containers = containers;
        self.plan = Some(plan);
        // Adopted containers: read their state now, ports included.
        for index in 0..self.containers.len() {
            if self.containers[index].id.is_some() {
                self.inspect(index).await;
            }
        }
    }

    async fn take_event(&mut self, event: ContainerEvent) {
        let Some(index) = self
            .containers
            .iter()
            .position(|c| c.id.as_deref() == Some(event.id.as_str()))
        else {
            return;
        };
        match event.kind {
            ContainerEventKind::HealthChanged(health) => {
                let changed = self.containers[index].health != Some(health);
                self.containers[index].health = Some(health);
                if let Some(state) = &mut self.containers[index].state {
                    state.health = Some(health);
                }
                // The control plane shows health in DescribeTasks, so a change is
                // reported once the container has been reported at all.
                if changed && self.containers[index].reported.is_some() {
                    self.report_container(index).await;
                }
            }
            ContainerEventKind::Died { exit_code } => {
                let container = &mut self.containers[index];
                container.exit_code = container.exit_code.or(exit_code);
                self.inspect(index).await;
                self.containers[index].move_to(ContainerKnownStatus::Stopped);
            }
            ContainerEventKind::OutOfMemory => {
                self.containers[index].reason.get_or_insert_with(|| {
                    "OutOfMemoryError: Container killed due to memory usage".into()
                });
            }
            ContainerEventKind::Destroyed => {
                let container = &mut self.containers[index];
                if container.known != ContainerKnownStatus::Stopped {
                    container.reason.get_or_insert_with(|| {
                        "The container was removed outside the agent".into()
                    });
                    container.move_to(ContainerKnownStatus::Stopped);
                }
            }
            ContainerEventKind::Started | ContainerEventKind::Created => {
                self.inspect(index).await;
            }
        }
    }

    async fn inspect(&mut self, index: usize) {
        let Some(id) = self.containers[index].id.clone() else {
            return;
        };
        match self.engine.runtime.inspect_container(&id).await {
            Ok(state) => self.containers[index].absorb(state),
            Err(RuntimeError::NotFound(_)) => {
                let container = &mut self.containers[index];
                if container.known != ContainerKnownStatus::Stopped {
                    container.reason.get_or_insert_with(|| {
                        "The container was removed outside the agent".into()
                    });
                    container.move_to(ContainerKnownStatus::Stopped);
                }
            }
            Err(error) => tracing::warn!(task = %self.arn, %id, %error, "inspect failed"),
        }
    }

    /// Makes every move possible now.
    async fn step(&mut self) {
        if self.known == TaskStatus::Stopped {
            return;
        }
        if self.plan.is_none() {
            // Adopted and not yet confirmed, or refused: only a stop can happen.
            if self.desired == DesiredStatus::Stopped || self.stop_reason.is_some() {
                self.stop_all().await;
            }
            return;
        }
        if self.desired == DesiredStatus::Running && self.stop_reason.is_none() {
            self.advance().await;
        }
        if self.stop_reason.is_none() {
            if let Some(exited) = self
                .containers
                .iter()
                .find(|c| c.essential() && c.known == ContainerKnownStatus::Stopped)
            {
                tracing::info!(task = %self.arn, container = %exited.name, code = ?exited.exit_code, "essential container exited");
                self.stop_reason = Some(ESSENTIAL_CONTAINER_EXITED.into());
            }
        }
        if self.desired == DesiredStatus::Stopped || self.stop_reason.is_some() {
            self.stop_all().await;
            return;
        }
        // Non-essential containers that exited are reported one by one.
        for index in 0..self.containers.len() {
            let container = &self.containers[index];
            if container.known == ContainerKnownStatus::Stopped
                && container.reported != Some(ReportedContainerStatus::Stopped)
            {
                self.report_container(index).await;
            }
        }
        let essentials_running = self
            .containers
            .iter()
            .filter(|c| c.essential())
            .all(|c| c.known == ContainerKnownStatus::Running);
        if essentials_running && self.known.can_move_to(TaskStatus::Running) {
            self.known = TaskStatus::Running;
        }
        if self.known == TaskStatus::Running && self.reported < Some(ReportedTaskStatus::Running) {
            self.report_task(ReportedTaskStatus::Running).await;
        }
    }

    /// Pulls, creates, and starts whatever the dependencies allow.
    async fn advance(&mut self) {
        if self.known.can_move_to(TaskStatus::Pending) {
            self.known = TaskStatus::Pending;
            if let Err(reason) = self.pull_images().await {
                self.fail(reason);
                return;
            }
            self.report_task(ReportedTaskStatus::Pending).await;
        }
        for index in 0..self.containers.len() {
            if self.containers[index].id.is_none()
                && self.containers[index].known == ContainerKnownStatus::None
            {
                if let Err(reason) = self.create(index).await {
                    self.containers[index].reason = Some(reason.clone());
                    self.fail(reason);
                    return;
                }
            }
        }
        loop {
            let mut progress = false;
            for index in 0..self.containers.len() {
                if self.containers[index].known != ContainerKnownStatus::Created {
                    continue;
                }
                match self.readiness(index) {
                    Readiness::Waiting => {}
                    Readiness::Ready => {
                        if let Err(reason) = self.start(index).await {
                            self.containers[index].reason = Some(reason.clone());
                            self.fail(reason);
                            return;
                        }
                        progress = true;
                    }
                    Readiness::Never(reason) => {
                        let container = &mut self.containers[index];
                        container.reason = Some(reason.clone());
                        container.move_to(ContainerKnownStatus::Stopped);
                        if container.essential() {
                            self.fail(reason);
                            return;
                        }
                        progress = true;
                    }
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::warn!(task = %self.arn, %reason, "task failed");
        self.stop_reason.get_or_insert(reason);
    }

    async fn pull_images(&mut self) -> Result<(), String> {
        let images: BTreeSet<String> = self
            .containers
            .iter()
            .filter(|c| c.id.is_none())
            .filter_map(|c| c.plan.as_ref().map(|p| p.spec.image.clone()))
            .collect();
        let runtime = self.engine.runtime.clone();
        let behavior = self.engine.config.image_pull_behavior;
        for image in images {
            let present = || async { runtime.image_present(&image).await.unwrap_or(false) };
            let pull = match behavior {
                ImagePullBehavior::Default | ImagePullBehavior::Always => true,
                ImagePullBehavior::PreferCached => !present().await,
                ImagePullBehavior::Once => {
                    let pulled = self
                        .engine
                        .pulled_images
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&image);
                    !(pulled && present().await)
                }
            };
            if !pull {
                continue;
            }
            self.pull_started_at.get_or_insert_with(Utc::now);
            let auth = match &self.engine.config.registry_credentials {
                Some(source) => source.0.for_image(&image).await,
                None => None,
            };
            let result = runtime.pull_image(&image, auth.as_ref()).await;
            self.pull_stopped_at = Some(Utc::now());
            match result {
                Ok(()) => {
                    self.engine
                        .pulled_images
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(image);
                }
                Err(error) if behavior == ImagePullBehavior::Default && present().await => {
                    tracing::warn!(task = %self.arn, %image, %error, "pull failed; using the cached image");
                }
                Err(error) => {
                    let reason = format!("CannotPullContainerError: {error}");
                    for container in &mut self.containers {
                        if container
                            .plan
                            .as_ref()
                            .is_some_and(|p| p.spec.image == image)
                        {
                            container.reason = Some(reason.clone());
                        }
                    }
                    return Err(reason);
                }
            }
        }
        Ok(())
    }

    async fn create(&mut self, index: usize) -> Result<(), String> {
        let container = &self.containers[index];
        let Some(plan) = &container.plan else {
            return Ok(());
        };
        let mut spec = plan.spec.clone();
        spec.name = format!(
            "ecs-{}-{}-{}-{}",
            self.family,
            self.revision,
            container.name,
            random_hex(10)
        );
        spec.labels
            .insert(LABEL_METADATA_ID.into(), container.metadata_id.clone());
        if let Some(base) = &self.engine.config.metadata_endpoint {
            spec.env.push((
                "ECS_CONTAINER_METADATA_URI_V4".into(),
                format!(
                    "{}/v4/{}",
                    base.trim_end_matches('/'),
                    container.metadata_id
                ),
            ));
        }
        let id = self
            .engine
            .runtime
            .create_container(&spec)
            .await
            .map_err(|e| format!("CannotCreateContainerError: {e}"))?;
        self.containers[index].id = Some(id);
        self.containers[index].move_to(ContainerKnownStatus::Created);
        self.inspect(index).await;
        Ok(())
    }

    async fn start(&mut self, index: usize) -> Result<(), String> {
        let Some(id) = self.containers[index].id.clone() else {
            return Ok(());
        };
        let timeout = self.engine.config.start_timeout;
        match tokio::time::timeout(timeout, self.engine.runtime.start_container(&id)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("CannotStartContainerError: {error}")),
            Err(_) => {
                return Err(format!(
                    "CannotStartContainerError: the container did not start within {}s",
                    timeout.as_secs()
                ))
            }
        }
        self.containers[index].move_to(ContainerKnownStatus::Running);
        self.inspect(index).await;
        self.report_container(index).await;
        Ok(())
    }

    fn readiness(&self, index: usize) -> Readiness {
        let Some(plan) = &self.containers[index].plan else {
            return Readiness::Ready;
        };
        let mut readiness = Readiness::Ready;
        for dep in &plan.depends_on {
            let Some(target) = self.containers.iter().find(|c| c.name == dep.container) else {
                continue;
            };
            let stopped = target.known == ContainerKnownStatus::Stopped;
            let never = |why: String| {
                Readiness::Never(format!(
                    "DependencyConditionNotSatisfied: container {} depends on {} ({}), {why}",
                    plan.name,
                    dep.container,
                    dep.condition.as_str()
                ))
            };
            let this = match dep.condition {
                DependencyCondition::Start if target.started() => Readiness::Ready,
                DependencyCondition::Start if stopped => never("which never started".into()),
                DependencyCondition::Complete if stopped => Readiness::Ready,
                DependencyCondition::Success if stopped => match target.exit_code {
                    Some(0) => Readiness::Ready,
                    code => never(format!(
                        "which exited with code {}",
                        code.map_or_else(|| "unknown".into(), |c| c.to_string())
                    )),
                },
                DependencyCondition::Healthy if target.health == Some(HealthStatus::Healthy) => {
                    Readiness::Ready
                }
                DependencyCondition::Healthy if stopped => {
                    never("which exited before it was healthy".into())
                }
                DependencyCondition::Healthy if target.health == Some(HealthStatus::Unhealthy) => {
                    never("which is unhealthy".into())
                }
                _ => Readiness::Waiting,
            };
            match this {
                Readiness::Never(_) => return this,
                Readiness::Waiting => readiness = Readiness::Waiting,
                Readiness::Ready => {}
            }
        }
        readiness
    }

    /// Stop order: dependents before what they depend on, the reverse of start order.
    fn stop_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = Vec::new();
        while order.len() < self.containers.len() {
            let before = order.len();
            for (index, container) in self.containers.iter().enumerate() {
                if order.contains(&index) {
                    continue;
                }
                let deps_placed = container.plan.as_ref().is_none_or(|p| {
                    p.depends_on.iter().all(|d| {
                        self.containers
                            .iter()
                            .position(|c| c.name == d.container)
                            .is_none_or(|i| order.contains(&i))
                    })
                });
                if deps_placed {
                    order.push(index);
                }
            }
            if order.len() == before {
                // A cycle cannot be planned; stop the rest in any order.
                let rest: Vec<usize> = (0..self.containers.len())
                    .filter(|i| !order.contains(i))
                    .collect();
                order.extend(rest);
            }
        }
        order.reverse();
        order
    }

    async fn stop_all(&mut self) {
        let default_timeout = self.engine.config.stop_timeout;
        for index in self.stop_order() {
            let container = &self.containers[index];
            let timeout = container
                .plan
                .as_ref()
                .map_or(default_timeout, |p| p.stop_timeout);
            if let (Some(id), ContainerKnownStatus::Running) = (&container.id, container.known) {
                let id = id.clone();
                self.stop_container(&id, timeout).await;
                self.inspect(index).await;
            }
            self.containers[index].move_to(ContainerKnownStatus::Stopped);
        }
        for id in self.orphans.clone() {
            self.stop_container(&id, default_timeout).await;
        }
        self.execution_stopped_at = self
            .containers
            .iter()
            .filter_map(|c| c.state.as_ref().and_then(|s| s.finished_at))
            .max()
            .or_else(|| Some(Utc::now()));
        self.known = TaskStatus::Stopped;
        self.report_task(ReportedTaskStatus::Stopped).await;
    }

    async fn stop_container(&self, id: &str, timeout: Duration) {
        for attempt in 1..=3u32 {
            match self.engine.runtime.stop_container(id, timeout).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => return,
                Err(error) => {
                    tracing::warn!(task = %self.arn, %id, %error, attempt, "stop failed");
                    tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                }
            }
        }
    }

    fn container_change(&self, index: usize) -> ContainerStateChange {
        let container = &self.containers[index];
        let network_mode = self
            .plan
            .as_ref()
            .map_or(NetworkMode::Bridge, |p| p.network_mode.clone());
        let status = container.reported_status();
        ContainerStateChange {
            task_arn: self.arn.clone(),
            container_name: container.name.clone(),
            runtime_id: container.id.clone(),
            status,
            exit_code: if status == ReportedContainerStatus::Stopped {
                container.exit_code
            } else {
                None
            },
            reason: container.reason.clone(),
            network_bindings: container.network_bindings(&network_mode),
            health_status: container.health.map(|health| match health {
                HealthStatus::Healthy => "HEALTHY",
                HealthStatus::Unhealthy => "UNHEALTHY",
                HealthStatus::Starting => "UNKNOWN",
            }),
        }
    }

    async fn report_container(&mut self, index: usize) {
        let change = self.container_change(index);
        let status = change.status;
        match self.engine.reporter.report_container(&change).await {
            Ok(()) => self.containers[index].reported = Some(status),
            Err(error) => tracing::warn!(task = %self.arn, %error, "container report failed"),
        }
    }

    async fn report_task(&mut self, status: ReportedTaskStatus) {
        let change = TaskStateChange {
            task_arn: self.arn.clone(),
            status,
            reason: if status == ReportedTaskStatus::Stopped {
                self.stop_reason.clone()
            } else {
                None
            },
            containers: (0..self.containers.len())
                .map(|i| self.container_change(i))
                .collect(),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            execution_stopped_at: if status == ReportedTaskStatus::Stopped {
                self.execution_stopped_at
            } else {
                None
            },
        };
        // Whether or not it arrived, it is not sent twice by the step loop: the
        // reporter retries what can be retried.
        if let Err(error) = self.engine.reporter.report_task(&change).await {
            tracing::warn!(task = %self.arn, %error, "task report failed");
        }
        self.reported = Some(status);
    }

    fn publish(&self) {
        let plan = self.plan.as_ref();
        let view = TaskView {
            cluster_arn: self.engine.config.cluster_arn.clone(),
            arn: self.arn.clone(),
            family: self.family.clone(),
            revision: self.revision,
            desired_status: self.desired,
            known_status: self.known,
            cpu_units: plan.and_then(|p| p.cpu_units),
            memory_mib: plan.and_then(|p| p.memory_mib),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            execution_stopped_at: self.execution_stopped_at,
            stopped_reason: self.stop_reason.clone(),
            containers: self
                .containers
                .iter()
                .map(|c| {
                    let state = c.state.as_ref();
                    let spec = c.plan.as_ref().map(|p| &p.spec);
                    ContainerView {
                        name: c.name.clone(),
                        container_arn: c.plan.as_ref().and_then(|p| p.container_arn.clone()),
                        metadata_id: c.metadata_id.clone(),
                        docker_id: c.id.clone(),
                        docker_name: state.map(|s| s.name.clone()),
                        image: spec
                            .map(|s| s.image.clone())
                            .or_else(|| state.map(|s| s.image.clone()))
                            .unwrap_or_default(),
                        image_id: state.map(|s| s.image_id.clone()),
                        labels: state
                            .map(|s| s.labels.clone())
                            .or_else(|| spec.map(|s| s.labels.clone()))
                            .unwrap_or_default(),
                        desired_status: if self.desired == DesiredStatus::Stopped
                            || self.stop_reason.is_some()
                        {
                            ContainerKnownStatus::Stopped
                        } else {
                            ContainerKnownStatus::Running
                        },
                        known_status: c.known,
                        essential: c.essential(),
                        exit_code: c.exit_code,
                        reason: c.reason.clone(),
                        cpu_units: spec.map_or(0, |s| s.cpu_units),
                        memory_mib: spec
                            .and_then(|s| s.memory_bytes)
                            .map(|b| (b / (1024 * 1024)) as u64),
                        created_at: state.and_then(|s| s.created_at),
                        started_at: state.and_then(|s| s.started_at),
                        finished_at: state.and_then(|s| s.finished_at),
                        health: c.health,
                        ports: state.map(|s| s.ports.clone()).unwrap_or_default(),
                        networks: state.map(|s| s.networks.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
        };
        self.engine.publish(view);
    }
}
