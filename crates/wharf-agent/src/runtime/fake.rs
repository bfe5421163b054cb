//! [`RecordingRuntime`]: an in-memory [`ContainerRuntime`] for the agent's unit tests.
//!
//! It keeps containers in memory with the same status rules as Docker (a name is
//! unique, an image must be present before a create, a stop of a stopped container is
//! fine), records every call in order, and lets a test play the engine's part: make a
//! container exit, change its health, write logs, fail the next call. Each such change
//! is announced to event subscribers exactly as Docker would announce it.
//!
//! Time is a logical clock that starts at 2024-01-01T00:00:00Z and moves one second
//! per state change, so tests see the same timestamps on every run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream;
use tokio::sync::mpsc;

use super::{
    image_reference_with_tag, labels_match, BoundPort, ContainerEvent, ContainerEventKind,
    ContainerRuntime, ContainerSpec, ContainerState, ContainerStats, ContainerStatus, EventStream,
    HealthStatus, LogChunk, LogSource, LogStream, NetworkAttachment, RegistryAuth, RuntimeError,
    RuntimeVersion,
};

/// The first host port handed out for dynamic port mappings (Linux's default
/// ephemeral range starts here).
const FIRST_DYNAMIC_HOST_PORT: u16 = 32768;

/// Exit code of a stopped container whose process dies of SIGTERM (128 + 15).
const EXIT_CODE_SIGTERM: i64 = 143;

/// Exit code of a killed container (128 + 9).
const EXIT_CODE_SIGKILL: i64 = 137;

/// One call the agent made, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCall {
    /// [`ContainerRuntime::version`].
    Version,
    /// [`ContainerRuntime::image_present`].
    ImagePresent(String),
    /// [`ContainerRuntime::pull_image`], and whether credentials came with it.
    PullImage {
        /// Image reference as passed.
        image: String,
        /// The credentials passed, if any.
        auth: Option<RegistryAuth>,
    },
    /// [`ContainerRuntime::create_container`].
    CreateContainer(Box<ContainerSpec>),
    /// [`ContainerRuntime::start_container`].
    StartContainer(String),
    /// [`ContainerRuntime::stop_container`].
    StopContainer {
        /// Container id.
        id: String,
        /// Grace period before SIGKILL.
        timeout: Duration,
    },
    /// [`ContainerRuntime::remove_container`].
    RemoveContainer(String),
    /// [`ContainerRuntime::inspect_container`].
    InspectContainer(String),
    /// [`ContainerRuntime::list_containers`].
    ListContainers(Vec<(String, String)>),
    /// [`ContainerRuntime::events`].
    Events(Vec<(String, String)>),
    /// [`ContainerRuntime::logs`].
    Logs {
        /// Container id.
        id: String,
        /// Whether the caller follows.
        follow: bool,
        /// How many chunks from the end.
        tail: Option<usize>,
    },
    /// [`ContainerRuntime::stats`].
    Stats(String),
}

/// Which operation an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeOperation {
    /// `version`.
    Version,
    /// `image_present`.
    ImagePresent,
    /// `pull_image`.
    PullImage,
    /// `create_container`.
    CreateContainer,
    /// `start_container`.
    StartContainer,
    /// `stop_container`.
    StopContainer,
    /// `remove_container`.
    RemoveContainer,
    /// `inspect_container`.
    InspectContainer,
    /// `list_containers`.
    ListContainers,
    /// `events`.
    Events,
    /// `logs`.
    Logs,
    /// `stats`.
    Stats,
}

#[derive(Debug)]
struct FakeContainer {
    spec: ContainerSpec,
    state: ContainerState,
    /// Exit code the process reports when it is stopped (it may trap SIGTERM).
    exit_code_on_stop: i64,
    logs: Vec<LogChunk>,
    log_followers: Vec<mpsc::UnboundedSender<Result<LogChunk, RuntimeError>>>,
    stats: Option<ContainerStats>,
}

struct Subscriber {
    labels: Vec<(String, String)>,
    sender: mpsc::UnboundedSender<Result<ContainerEvent, RuntimeError>>,
}

#[derive(Default)]
struct FakeEngine {
    containers: BTreeMap<String, FakeContainer>,
    images: BTreeSet<String>,
    unpullable_images: BTreeSet<String>,
    pull_anything: bool,
    calls: Vec<RuntimeCall>,
    failures: BTreeMap<RuntimeOperation, Vec<RuntimeError>>,
    subscribers: Vec<Subscriber>,
    next_container_number: u64,
    next_host_port: u16,
    clock_seconds: i64,
}

impl FakeEngine {
    fn tick(&mut self) -> DateTime<Utc> {
        self.clock_seconds += 1;
        // 2024-01-01T00:00:00Z plus one second per state change.
        DateTime::from_timestamp(1_704_067_200 + self.clock_seconds, 0)
            .expect("the logical clock stays in chrono's range")
    }

    fn take_failure(&mut self, operation: RuntimeOperation) -> Result<(), RuntimeError> {
        match self.failures.get_mut(&operation) {
            Some(queue) if !queue.is_empty() => Err(queue.remove(0)),
            _ => Ok(()),
        }
    }

    fn container(&mut self, id: &str) -> Result<&mut FakeContainer, RuntimeError> {
        // Docker accepts a name as well as an id; so does the fake.
        let key = if self.containers.contains_key(id) {
            id.to_string()
        } else {
            self.containers
                .iter()
                .find(|(_, c)| c.state.name == id)
                .map(|(key, _)| key.clone())
                .ok_or_else(|| RuntimeError::NotFound(format!("No such container: {id}")))?
        };
        Ok(self.containers.get_mut(&key).expect("key was just found"))
    }

    fn emit(&mut self, id: &str, kind: ContainerEventKind, time: DateTime<Utc>) {
        let Some(container) = self.containers.get(id) else {
            return;
        };
        let event = ContainerEvent {
            id: id.to_string(),
            kind,
            labels: container.state.labels.clone(),
            time: Some(time),
        };
        self.subscribers.retain(|subscriber| {
            if !labels_match(&event.labels, &subscriber.labels) {
                return !subscriber.sender.is_closed();
            }
            subscriber.sender.send(Ok(event.clone())).is_ok()
        });
    }

    /// The container's process exits: status, timestamps, the `die` event, and the end
    /// of every log follower's stream.
    fn exit(&mut self, id: &str, exit_code: i64) {
        let time = self.tick();
        let Some(container) = self.containers.get_mut(id) else {
            return;
        };
        container.state.status = ContainerStatus::Exited;
        container.state.exit_code = Some(exit_code);
        container.state.finished_at = Some(time);
        container.log_followers.clear();
        self.emit(
            id,
            ContainerEventKind::Died {
                exit_code: Some(exit_code),
            },
            time,
        );
    }

    fn resolve_id(&mut self, id: &str) -> Result<String, RuntimeError> {
        Ok(self.container(id)?.state.id.clone())
    }
}

/// An in-memory container engine that records every call. Cheap to clone; clones share
/// the same engine.
#[derive(Clone, Default)]
pub struct RecordingRuntime {
    engine: Arc<Mutex<FakeEngine>>,
}

impl std::fmt::Debug for RecordingRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = self.lock();
        f.debug_struct("RecordingRuntime")
            .field("containers", &engine.containers.len())
            .field("images", &engine.images)
            .field("calls", &engine.calls.len())
            .finish()
    }
}

impl RecordingRuntime {
    /// An engine with no images and no containers, where every pull succeeds.
    pub fn new() -> Self {
        let runtime = RecordingRuntime::default();
        runtime.lock().pull_anything = true;
        runtime
    }

    fn lock(&self) -> MutexGuard<'_, FakeEngine> {
        // A test that panicked while holding the lock has failed already; the state is
        // still worth reading for the next assertion.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes an image present, as if pulled earlier.
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image_reference_with_tag(image));
    }

    /// Makes pulls of `image` fail with [`RuntimeError::ImagePull`], as for an image the
    /// registry does not have.
    pub fn refuse_pulls_of(&self, image: &str) {
        self.lock()
            .unpullable_images
            .insert(image_reference_with_tag(image));
    }

    /// Makes the next call of `operation` fail with `error`; several queued failures
    /// are used in order.
    pub fn fail_next(&self, operation: RuntimeOperation, error: RuntimeError) {
        self.lock()
            .failures
            .entry(operation)
            .or_default()
            .push(error);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.lock().calls.clone()
    }

    /// Every call so far, in order, forgetting them.
    pub fn take_calls(&self) -> Vec<RuntimeCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The spec a container was created from.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().container(id).ok().map(|c| c.spec.clone())
    }

    /// The ids of all containers, in any status.
    pub fn container_ids(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }

    /// Sets the exit code the container's process reports when it is stopped (143 by
    /// default, as a process that dies of SIGTERM; 0 for one that traps it and exits
    /// cleanly).
    pub fn set_exit_code_on_stop(&self, id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        self.lock().container(id)?.exit_code_on_stop = exit_code;
        Ok(())
    }

    /// The container's process exits on its own with `exit_code`; emits `die`.
    pub fn set_exited(&self, id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        let mut engine = self.lock();
        let id = engine.resolve_id(id)?;
        if engine.containers[&id].state.status.is_running() {
            engine.exit(&id, exit_code);
        }
        Ok(())
    }

    /// The kernel's OOM killer ends the container: emits `oom`, then `die` with 137.
    pub fn set_oom_killed(&self, id: &str) -> Result<(), RuntimeError> {
        let mut engine = self.lock();
        let id = engine.resolve_id(id)?;
        if !engine.containers[&id].state.status.is_running() {
            return Ok(());
        }
        let time = engine.tick();
        engine.container(&id)?.state.oom_killed = true;
        engine.emit(&id, ContainerEventKind::OutOfMemory, time);
        engine.exit(&id, EXIT_CODE_SIGKILL);
        Ok(())
    }

    /// The container's health check reports `health`; emits `health_status` when it
    /// changed.
    pub fn set_health(&self, id: &str, health: HealthStatus) -> Result<(), RuntimeError> {
        let mut engine = self.lock();
        let id = engine.resolve_id(id)?;
        let time = engine.tick();
        let container = engine.container(&id)?;
        if container.state.health == Some(health) {
            return Ok(());
        }
        container.state.health = Some(health);
        engine.emit(&id, ContainerEventKind::HealthChanged(health), time);
        Ok(())
    }

    /// The container writes `bytes` to `source`; followers of its logs receive it.
    pub fn push_log(
        &self,
        id: &str,
        source: LogSource,
        bytes: impl Into<Bytes>,
    ) -> Result<(), RuntimeError> {
        let mut engine = self.lock();
        let container = engine.container(id)?;
        let chunk = LogChunk {
            source,
            bytes: bytes.into(),
        };
        container
            .log_followers
            .retain(|follower| follower.send(Ok(chunk.clone())).is_ok());
        container.logs.push(chunk);
        Ok(())
    }

    /// Sets what [`ContainerRuntime::stats`] answers for the container.
    pub fn set_stats(&self, id: &str, stats: ContainerStats) -> Result<(), RuntimeError> {
        self.lock().container(id)?.stats = Some(stats);
        Ok(())
    }

    /// Breaks every event subscription, as when the engine restarts: each stream yields
    /// [`RuntimeError::Unavailable`] and ends.
    pub fn break_event_streams(&self) {
        for subscriber in std::mem::take(&mut self.lock().subscribers) {
            let _ = subscriber.sender.send(Err(RuntimeError::Unavailable(
                "the engine closed the event stream".into(),
            )));
        }
    }

    fn begin(
        &self,
        operation: RuntimeOperation,
        call: RuntimeCall,
    ) -> Result<MutexGuard<'_, FakeEngine>, RuntimeError> {
        let mut engine = self.lock();
        engine.calls.push(call);
        engine.take_failure(operation)?;
        Ok(engine)
    }
}

fn receiver_stream<T: Send + 'static>(
    receiver: mpsc::UnboundedReceiver<Result<T, RuntimeError>>,
) -> impl futures_util::Stream<Item = Result<T, RuntimeError>> + Send {
    stream::unfold((receiver, false), |(mut receiver, failed)| async move {
        if failed {
            return None;
        }
        let item = receiver.recv().await?;
        let failed = item.is_err();
        Some((item, (receiver, failed)))
    })
}

#[async_trait]
impl ContainerRuntime for RecordingRuntime {
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        let _engine = self.begin(RuntimeOperation::Version, RuntimeCall::Version)?;
        Ok(RuntimeVersion {
            engine_version: "20.10.24-fake".into(),
            api_version: "1.41".into(),
            min_api_version: Some("1.12".into()),
            negotiated_api_version: "1.41".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            kernel_version: None,
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let engine = self.begin(
            RuntimeOperation::ImagePresent,
            RuntimeCall::ImagePresent(image.to_string()),
        )?;
        Ok(engine.images.contains(&image_reference_with_tag(image)))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::PullImage,
            RuntimeCall::PullImage {
                image: image.to_string(),
                auth: auth.cloned(),
            },
        )?;
        let reference = image_reference_with_tag(image);
        if engine.unpullable_images.contains(&reference) || !engine.pull_anything {
            return Err(RuntimeError::ImagePull {
                image: reference,
                reason: "repository does not exist or may require 'docker login'".into(),
            });
        }
        engine.images.insert(reference);
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::CreateContainer,
            RuntimeCall::CreateContainer(Box::new(spec.clone())),
        )?;
        if !engine
            .images
            .contains(&image_reference_with_tag(&spec.image))
        {
            return Err(RuntimeError::NotFound(format!(
                "No such image: {}",
                spec.image
            )));
        }
        if engine
            .containers
            .values()
            .any(|c| c.state.name == spec.name)
        {
            return Err(RuntimeError::Conflict(format!(
                "The container name \"/{}\" is already in use",
                spec.name
            )));
        }
        engine.next_container_number += 1;
        let id = format!("{:064x}", engine.next_container_number);
        let time = engine.tick();
        let state = ContainerState {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: format!("sha256:{:064x}", engine.images.len()),
            labels: spec.labels.clone(),
            status: ContainerStatus::Created,
            exit_code: None,
            error: None,
            oom_killed: false,
            created_at: Some(time),
            started_at: None,
            finished_at: None,
            health: None,
            ports: Vec::new(),
            networks: Vec::new(),
        };
        engine.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                state,
                exit_code_on_stop: EXIT_CODE_SIGTERM,
                logs: Vec::new(),
                log_followers: Vec::new(),
                stats: None,
            },
        );
        engine.emit(&id, ContainerEventKind::Created, time);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::StartContainer,
            RuntimeCall::StartContainer(id.to_string()),
        )?;
        let id = engine.resolve_id(id)?;
        if engine.containers[&id].state.status.is_running() {
            // Docker answers 304 Not Modified: starting a running container is a no-op.
            return Ok(());
        }
        if engine.next_host_port == 0 {
            engine.next_host_port = FIRST_DYNAMIC_HOST_PORT;
        }
        let time = engine.tick();
        let spec = engine.containers[&id].spec.clone();
        let mut ports = Vec::new();
        if spec.network_mode.publishes_ports() {
            for binding in &spec.port_bindings {
                let host_port = match binding.host_port {
                    Some(port) if port != 0 => port,
                    _ => {
                        let port = engine.next_host_port;
                        engine.next_host_port = engine.next_host_port.wrapping_add(1);
                        port
                    }
                };
                ports.push(BoundPort {
                    container_port: binding.container_port,
                    host_port,
                    protocol: binding.protocol,
                    host_ip: Some(
                        binding
                            .host_ip
                            .map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string()),
                    ),
                });
            }
        }
        ports.sort();
        let network = spec.network_mode.as_docker_str().to_string();
        let container = engine.container(&id)?;
        container.state.status = ContainerStatus::Running;
        container.state.started_at = Some(time);
        container.state.finished_at = None;
        container.state.exit_code = None;
        container.state.oom_killed = false;
        container.state.health = spec.health_check.as_ref().map(|_| HealthStatus::Starting);
        container.state.ports = ports;
        container.state.networks = vec![NetworkAttachment {
            ip_address: (network == "bridge").then(|| "172.17.0.2".to_string()),
            name: network,
        }];
        engine.emit(&id, ContainerEventKind::Started, time);
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::StopContainer,
            RuntimeCall::StopContainer {
                id: id.to_string(),
                timeout,
            },
        )?;
        let id = engine.resolve_id(id)?;
        let container = &engine.containers[&id];
        if container.state.status.is_running() {
            let exit_code = container.exit_code_on_stop;
            engine.exit(&id, exit_code);
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::RemoveContainer,
            RuntimeCall::RemoveContainer(id.to_string()),
        )?;
        let id = engine.resolve_id(id)?;
        // Removal is forced, as in the Docker runtime: a running container is killed.
        if engine.containers[&id].state.status.is_running() {
            engine.exit(&id, EXIT_CODE_SIGKILL);
        }
        let time = engine.tick();
        engine.emit(&id, ContainerEventKind::Destroyed, time);
        engine.containers.remove(&id);
        Ok(())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::InspectContainer,
            RuntimeCall::InspectContainer(id.to_string()),
        )?;
        Ok(engine.container(id)?.state.clone())
    }

    async fn list_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerState>, RuntimeError> {
        let engine = self.begin(
            RuntimeOperation::ListContainers,
            RuntimeCall::ListContainers(labels.to_vec()),
        )?;
        Ok(engine
            .containers
            .values()
            .filter(|c| labels_match(&c.state.labels, labels))
            .map(|c| c.state.clone())
            .collect())
    }

    async fn events(&self, labels: &[(String, String)]) -> Result<EventStream, RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::Events,
            RuntimeCall::Events(labels.to_vec()),
        )?;
        let (sender, receiver) = mpsc::unbounded_channel();
        engine.subscribers.push(Subscriber {
            labels: labels.to_vec(),
            sender,
        });
        Ok(Box::pin(receiver_stream(receiver)))
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<LogStream, RuntimeError> {
        let mut engine = self.begin(
            RuntimeOperation::Logs,
            RuntimeCall::Logs {
                id: id.to_string(),
                follow,
                tail,
            },
        )?;
        let container = engine.container(id)?;
        let skip = tail.map_or(0, |n| container.logs.len().saturating_sub(n));
        let (sender, receiver) = mpsc::unbounded_channel();
        for chunk in container.logs.iter().skip(skip) {
            let _ = sender.send(Ok(chunk.clone()));
        }
        // A follower stays subscribed while the container runs; dropping the sender
        // ends the stream after the backlog.
        if follow && container.state.status.is_running() {
            container.log_followers.push(sender);
        }
        Ok(Box::pin(receiver_stream(receiver)))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let mut engine = self.begin(RuntimeOperation::Stats, RuntimeCall::Stats(id.to_string()))?;
        let container = engine.container(id)?;
        if let Some(stats) = &container.stats {
            return Ok(stats.clone());
        }
        let limit = container
            .spec
            .memory_bytes
            .and_then(|b| u64::try_from(b).ok())
            .unwrap_or(0);
        Ok(ContainerStats {
            read_at: None,
            cpu_total_usage_ns: 0,
            system_cpu_usage_ns: None,
            online_cpus: Some(1),
            memory_usage_bytes: 0,
            memory_limit_bytes: limit,
            network_rx_bytes: 0,
            network_tx_bytes: 0,
            raw: serde_json::Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::runtime::{HealthCheckSpec, PortBinding, Protocol};

    const IMAGE: &str = "app:1";

    fn labelled(name: &str) -> ContainerSpec {
        ContainerSpec {
            labels: BTreeMap::from([("wharf.task".to_string(), "t1".to_string())]),
            ..ContainerSpec::new(name, IMAGE)
        }
    }

    fn task_label() -> Vec<(String, String)> {
        vec![("wharf.task".to_string(), "t1".to_string())]
    }

    #[tokio::test]
    async fn create_needs_the_image_and_a_free_name() {
        let runtime = RecordingRuntime::new();
        let missing = runtime.create_container(&labelled("a")).await;
        assert!(matches!(missing, Err(RuntimeError::NotFound(_))));

        runtime.pull_image(IMAGE, None).await.unwrap();
        assert!(runtime.image_present(IMAGE).await.unwrap());
        runtime.create_container(&labelled("a")).await.unwrap();
        let duplicate = runtime.create_container(&labelled("a")).await;
        assert!(matches!(duplicate, Err(RuntimeError::Conflict(_))));
    }

    #[tokio::test]
    async fn refused_pulls_fail_with_image_pull() {
        let runtime = RecordingRuntime::new();
        runtime.refuse_pulls_of("nope/missing");
        let result = runtime.pull_image("nope/missing", None).await;
        assert!(matches!(result, Err(RuntimeError::ImagePull { .. })));
    }

    #[tokio::test]
    async fn lifecycle_is_recorded_and_announced() {
        let runtime = RecordingRuntime::new();
        runtime.add_image(IMAGE);
        let mut events = runtime.events(&task_label()).await.unwrap();
        let spec = ContainerSpec {
            port_bindings: vec![PortBinding {
                container_port: 8080,
                host_port: None,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            health_check: Some(HealthCheckSpec {
                test: vec!["CMD-SHELL".into(), "true".into()],
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                retries: 1,
                start_period: Duration::ZERO,
            }),
            ..labelled("web")
        };
        let id = runtime.create_container(&spec).await.unwrap();
        runtime.start_container(&id).await.unwrap();
        let state = runtime.inspect_container(&id).await.unwrap();
        assert_eq!(state.status, ContainerStatus::Running);
        assert_eq!(state.health, Some(HealthStatus::Starting));
        assert_eq!(
            state.host_port(8080, Protocol::Tcp),
            Some(FIRST_DYNAMIC_HOST_PORT)
        );

        runtime.set_health(&id, HealthStatus::Healthy).unwrap();
        runtime.set_exited(&id, 3).unwrap();
        let state = runtime.inspect_container(&id).await.unwrap();
        assert_eq!(state.status, ContainerStatus::Exited);
        assert_eq!(state.exit_code, Some(3));

        let kinds: Vec<_> = events
            .by_ref()
            .take(4)
            .map(|e| e.unwrap().kind)
            .collect()
            .await;
        assert_eq!(
            kinds,
            [
                ContainerEventKind::Created,
                ContainerEventKind::Started,
                ContainerEventKind::HealthChanged(HealthStatus::Healthy),
                ContainerEventKind::Died { exit_code: Some(3) },
            ]
        );
        assert_eq!(
            &runtime.calls()[..3],
            &[
                RuntimeCall::Events(task_label()),
                RuntimeCall::CreateContainer(Box::new(spec)),
                RuntimeCall::StartContainer(id.clone()),
            ]
        );
    }

    #[tokio::test]
    async fn stop_uses_the_scripted_exit_code_and_stopping_twice_is_fine() {
        let runtime = RecordingRuntime::new();
        runtime.add_image(IMAGE);
        let id = runtime.create_container(&labelled("a")).await.unwrap();
        runtime.start_container(&id).await.unwrap();
        runtime.set_exit_code_on_stop(&id, 0).unwrap();
        runtime
            .stop_container(&id, Duration::from_secs(1))
            .await
            .unwrap();
        runtime
            .stop_container(&id, Duration::from_secs(1))
            .await
            .unwrap();
        let state = runtime.inspect_container(&id).await.unwrap();
        assert_eq!(state.exit_code, Some(0));
        assert!(state.finished_at > state.started_at);
    }

    #[tokio::test]
    async fn list_finds_containers_by_label_and_remove_forgets_them() {
        let runtime = RecordingRuntime::new();
        runtime.add_image(IMAGE);
        let ours = runtime.create_container(&labelled("a")).await.unwrap();
        runtime
            .create_container(&ContainerSpec::new("b", IMAGE))
            .await
            .unwrap();
        let found = runtime.list_containers(&task_label()).await.unwrap();
        assert_eq!(
            found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            [ours.as_str()]
        );
        runtime.remove_container(&ours).await.unwrap();
        assert!(runtime
            .list_containers(&task_label())
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            runtime.inspect_container(&ours).await,
            Err(RuntimeError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn injected_failures_are_used_once_in_order() {
        let runtime = RecordingRuntime::new();
        runtime.fail_next(
            RuntimeOperation::Version,
            RuntimeError::Unavailable("down".into()),
        );
        assert!(runtime.version().await.unwrap_err().is_transient());
        assert!(runtime.version().await.is_ok());
    }

    #[tokio::test]
    async fn followed_logs_end_when_the_container_exits() {
        let runtime = RecordingRuntime::new();
        runtime.add_image(IMAGE);
        let id = runtime.create_container(&labelled("a")).await.unwrap();
        runtime.start_container(&id).await.unwrap();
        runtime.push_log(&id, LogSource::Stdout, "one\n").unwrap();
        let mut logs = runtime.logs(&id, true, None).await.unwrap();
        runtime.push_log(&id, LogSource::Stderr, "two\n").unwrap();
        runtime.set_exited(&id, 0).unwrap();
        let mut chunks = Vec::new();
        while let Some(chunk) = logs.next().await {
            chunks.push(chunk.unwrap());
        }
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].source, LogSource::Stderr);
        let tail: Vec<_> = runtime
            .logs(&id, false, Some(1))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(tail.len(), 1);
    }

    #[tokio::test]
    async fn a_broken_event_stream_yields_one_error_and_ends() {
        let runtime = RecordingRuntime::new();
        let mut events = runtime.events(&[]).await.unwrap();
        runtime.break_event_streams();
        assert!(matches!(
            events.next().await,
            Some(Err(RuntimeError::Unavailable(_)))
        ));
        assert!(events.next().await.is_none());
    }
}
