//! The container runtime boundary: everything the agent asks of the engine that runs
//! its containers, as one trait over typed values.
//!
//! [`docker::DockerRuntime`] is the real implementation (the Docker Engine API through
//! bollard); [`fake::RecordingRuntime`] keeps containers in memory, records every call
//! and lets a test script exits and health changes. The agent's supervision logic is
//! written against [`ContainerRuntime`] only, so it runs unchanged on either.
//!
//! The types here say what ECS needs of a container and nothing about how Docker spells
//! it: Docker's shapes stay in `docker.rs`, ECS's wire casing stays in the API layer.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;

pub mod docker;
pub mod fake;

/// What failed when the agent talked to its container runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be reached at all (no socket, connection refused or reset,
    /// a request that timed out). Worth retrying once the engine is back.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The container or image named in the request does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An image could not be pulled: unknown repository or tag, refused credentials, an
    /// unreachable registry.
    #[error("pulling image {image} failed: {reason}")]
    ImagePull {
        /// The image reference that was being pulled.
        image: String,
        /// What the engine or registry said.
        reason: String,
    },
    /// The request conflicts with the engine's state: a container name already in use,
    /// a removal already in progress.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The engine rejected the container specification (HTTP 400 from Docker: an
    /// unknown log driver, an invalid port, a bad ulimit name).
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// Anything else the engine answered with an error.
    #[error("container runtime error: {0}")]
    Engine(String),
}

impl RuntimeError {
    /// Whether the same request may succeed if it is simply retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

/// The engine's identity, for the instance's capability attributes and for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// The engine's own version, e.g. `20.10.24+dfsg1`.
    pub engine_version: String,
    /// The newest API version the engine speaks, e.g. `1.41`.
    pub api_version: String,
    /// The oldest API version the engine accepts, e.g. `1.12`.
    pub min_api_version: Option<String>,
    /// The API version this client negotiated and uses, e.g. `1.41`.
    pub negotiated_api_version: String,
    /// Operating system of the engine's host, e.g. `linux`.
    pub os: String,
    /// CPU architecture of the engine's host, e.g. `amd64`.
    pub arch: String,
    /// Kernel version of the engine's host.
    pub kernel_version: Option<String>,
}

/// Credentials for pulling from a private registry (ECR's `GetAuthorizationToken`
/// answer, or a task definition's `repositoryCredentials`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RegistryAuth {
    /// User name (`AWS` for ECR).
    pub username: String,
    /// Password or token.
    pub password: String,
    /// Registry host, e.g. `127.0.0.1:5000`.
    pub server_address: String,
}

impl fmt::Debug for RegistryAuth {
    // The password must never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server_address", &self.server_address)
            .finish()
    }
}

/// How one container is to be created: what an ECS container definition (plus the
/// agent's own labels and environment) turns into.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    /// Container name on the engine (must be unique on the host).
    pub name: String,
    /// Image reference; a reference without tag or digest means `:latest`.
    pub image: String,
    /// Labels: the agent's own (task ARN, container name, ...) and the definition's
    /// `dockerLabels`.
    pub labels: BTreeMap<String, String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Replaces the image's `CMD` (`command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's `ENTRYPOINT` (`entryPoint`).
    pub entrypoint: Option<Vec<String>>,
    /// `workingDirectory`.
    pub working_dir: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// ECS `cpu` units (1,024 per vCPU), 0 when the definition reserves none. Becomes
    /// Docker's `CpuShares`; values below 2 become 2, as the ECS agent does, because the
    /// kernel's minimum is 2 and Docker would read 0 as its default of 1,024.
    pub cpu_units: u32,
    /// Hard memory limit in bytes (`memory`, given in MiB by ECS).
    pub memory_bytes: Option<i64>,
    /// Soft memory limit in bytes (`memoryReservation`).
    pub memory_reservation_bytes: Option<i64>,
    /// Published ports (`portMappings`).
    pub port_bindings: Vec<PortBinding>,
    /// Network mode (`networkMode` of the task definition).
    pub network_mode: NetworkMode,
    /// `ulimits`.
    pub ulimits: Vec<Ulimit>,
    /// Run an init process as PID 1 (`linuxParameters.initProcessEnabled`).
    pub init: bool,
    /// `privileged`.
    pub privileged: bool,
    /// `readonlyRootFilesystem`.
    pub readonly_root_filesystem: bool,
    /// `healthCheck`.
    pub health_check: Option<HealthCheckSpec>,
    /// `logConfiguration.logDriver` (`json-file`, `none`, ...); `None` means the
    /// engine's default.
    pub log_driver: Option<String>,
    /// `logConfiguration.options`.
    pub log_options: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when the engine stops the container on its own
    /// (`stopTimeout`); whole seconds, rounded up.
    pub stop_timeout: Option<Duration>,
    /// `/etc/hosts` entries (`extraHosts`).
    pub extra_hosts: Vec<HostEntry>,
    /// `dnsServers`.
    pub dns_servers: Vec<String>,
    /// `dnsSearchDomains`.
    pub dns_search_domains: Vec<String>,
    /// `dockerSecurityOptions`.
    pub security_options: Vec<String>,
    /// `linuxParameters.capabilities.add`.
    pub capabilities_add: Vec<String>,
    /// `linuxParameters.capabilities.drop`.
    pub capabilities_drop: Vec<String>,
    /// `systemControls` (namespaced sysctls).
    pub sysctls: BTreeMap<String, String>,
    /// Host paths mounted into the container (`mountPoints` of host volumes).
    pub bind_mounts: Vec<BindMount>,
}

impl ContainerSpec {
    /// A spec with only a name and an image; everything else at its default.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            ..ContainerSpec::default()
        }
    }
}

/// One published port (`portMappings[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBinding {
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the host; `None` or `Some(0)` lets the engine choose one (ECS's dynamic
    /// port mapping). The chosen port is in [`ContainerState::ports`].
    pub host_port: Option<u16>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Host address to bind; `None` binds every interface.
    pub host_ip: Option<std::net::IpAddr>,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// TCP (the default in ECS).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lowercase name Docker and ECS use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A container's network mode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The engine's default bridge (ECS `bridge`, the default on Linux).
    #[default]
    Bridge,
    /// The host's network namespace (ECS `host`): ports are not published.
    Host,
    /// No networking beyond loopback (ECS `none`).
    None,
    /// Any other engine network mode, passed through: a named network or
    /// `container:<id>`.
    Other(String),
}

impl NetworkMode {
    /// The string Docker takes in `HostConfig.NetworkMode`.
    pub fn as_docker_str(&self) -> &str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::Other(mode) => mode,
        }
    }

    /// Whether ports can be published in this mode (not in `host` or `none`).
    pub fn publishes_ports(&self) -> bool {
        !matches!(self, NetworkMode::Host | NetworkMode::None)
    }
}

/// A resource limit (`ulimits[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// Limit name without the `RLIMIT_` prefix, lowercase: `nofile`, `nproc`, ...
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// A container health check (`healthCheck`). Zero durations and zero retries mean the
/// engine's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// `["CMD", exe, args...]`, `["CMD-SHELL", "command line"]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failures before the container is unhealthy.
    pub retries: u32,
    /// Grace period after start during which failures do not count.
    pub start_period: Duration,
}

/// One `/etc/hosts` entry (`extraHosts[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Host name.
    pub hostname: String,
    /// Address it resolves to.
    pub ip_address: String,
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Path on the host.
    pub source: String,
    /// Path inside the container.
    pub container_path: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// The engine's view of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Engine-assigned id (ECS `DockerId`).
    pub id: String,
    /// Container name, without Docker's leading `/` (ECS `DockerName`).
    pub name: String,
    /// Image reference the container was created from.
    pub image: String,
    /// Image id (`sha256:...`) it runs (ECS `ImageID`).
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle status.
    pub status: ContainerStatus,
    /// Exit code, once the container has run and exited.
    pub exit_code: Option<i64>,
    /// The engine's error message, e.g. why the container could not start.
    pub error: Option<String>,
    /// Whether the kernel's OOM killer ended the container.
    pub oom_killed: bool,
    /// When the container was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When the container last started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the container last exited.
    pub finished_at: Option<DateTime<Utc>>,
    /// Health, for containers that have a health check.
    pub health: Option<HealthStatus>,
    /// Published ports as actually bound, with the host ports the engine chose for
    /// dynamic mappings. One container port bound on several host addresses (IPv4 and
    /// IPv6) appears once per address.
    pub ports: Vec<BoundPort>,
    /// Networks the container is attached to, with its address on each.
    pub networks: Vec<NetworkAttachment>,
}

impl ContainerState {
    /// The host port bound to a container port, preferring an IPv4 binding.
    pub fn host_port(&self, container_port: u16, protocol: Protocol) -> Option<u16> {
        let mut matching = self
            .ports
            .iter()
            .filter(|p| p.container_port == container_port && p.protocol == protocol);
        let first = matching.clone().next()?;
        Some(
            matching
                .find(|p| p.host_ip.as_deref().is_none_or(|ip| !ip.contains(':')))
                .unwrap_or(first)
                .host_port,
        )
    }
}

/// A container's lifecycle status as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by the engine's restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Ran and exited.
    Exited,
    /// Failed to stop or be removed; the engine gave up on it.
    Dead,
}

impl ContainerStatus {
    /// Whether the container's process is (or is about to be) alive.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
        )
    }

    /// Whether the container ran and will not run again without a new start.
    pub fn has_exited(self) -> bool {
        matches!(
            self,
            ContainerStatus::Exited | ContainerStatus::Dead | ContainerStatus::Removing
        )
    }
}

/// A container's health as its health check last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Within the start period, or no check has finished yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` consecutive checks failed.
    Unhealthy,
}

/// One published port as bound on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundPort {
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the host.
    pub host_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Host address bound (`0.0.0.0`, `::`, ...), when the engine says.
    pub host_ip: Option<String>,
}

/// A network the container is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    /// Network name (`bridge`, `host`, a user network).
    pub name: String,
    /// The container's IPv4 address on it, when it has one.
    pub ip_address: Option<String>,
}

/// Something that happened to a container, as the engine announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// Container id.
    pub id: String,
    /// What happened.
    pub kind: ContainerEventKind,
    /// The container's labels, as carried by the event.
    pub labels: BTreeMap<String, String>,
    /// When it happened, by the engine's clock.
    pub time: Option<DateTime<Utc>>,
}

/// The kinds of container events the agent acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// The container was created.
    Created,
    /// The container started.
    Started,
    /// The container's process exited (on its own, stopped, or killed).
    Died {
        /// Its exit code, when the engine reported one.
        exit_code: Option<i64>,
    },
    /// The kernel's OOM killer hit the container (a `Died` event follows).
    OutOfMemory,
    /// The container's health status changed.
    HealthChanged(HealthStatus),
    /// The container was removed.
    Destroyed,
}

/// Container events, in the order the engine sent them. An `Err` item means the
/// subscription broke (the engine went away); the stream ends after it, and the
/// subscriber should list containers again and resubscribe.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent, RuntimeError>> + Send>>;

/// Which output stream a piece of log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of a container's output: one write of the process as the engine framed it,
/// usually one line, not guaranteed to be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Stdout or stderr.
    pub source: LogSource,
    /// The bytes written.
    pub bytes: Bytes,
}

/// A container's output. With `follow`, the stream stays open until the container
/// stops; without, it ends after what was logged so far.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, RuntimeError>> + Send>>;

/// One sample of a container's resource usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStats {
    /// When the engine took the sample.
    pub read_at: Option<DateTime<Utc>>,
    /// CPU time the container used since it started, in nanoseconds.
    pub cpu_total_usage_ns: u64,
    /// CPU time the whole host used, in nanoseconds (the denominator of CPU percent).
    pub system_cpu_usage_ns: Option<u64>,
    /// CPUs online on the host.
    pub online_cpus: Option<u32>,
    /// Memory the container's cgroup uses, in bytes (including page cache).
    pub memory_usage_bytes: u64,
    /// The container's memory limit in bytes (the host's memory when unlimited).
    pub memory_limit_bytes: u64,
    /// Bytes received over all the container's interfaces.
    pub network_rx_bytes: u64,
    /// Bytes sent over all the container's interfaces.
    pub network_tx_bytes: u64,
    /// The engine's whole stats document (Docker's stats JSON, which is what the ECS
    /// task metadata `/stats` endpoints return).
    pub raw: serde_json::Value,
}

/// A container engine, as the agent uses it.
///
/// Containers are identified by the id [`create_container`](Self::create_container)
/// returned (an engine may also accept the name). Methods on a container that does not
/// exist fail with [`RuntimeError::NotFound`].
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The engine's version and the API version in use.
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError>;

    /// Whether the image is present locally.
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;

    /// Pulls an image (`:latest` when the reference has no tag or digest). Fails with
    /// [`RuntimeError::ImagePull`] when the registry refuses or does not have it.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), RuntimeError>;

    /// Creates a container, without starting it, and returns its id. The image must be
    /// present ([`RuntimeError::NotFound`] otherwise); a name in use is a
    /// [`RuntimeError::Conflict`].
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;

    /// Starts a created (or exited) container.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// Sends SIGTERM (or the image's stop signal), waits up to `timeout`, then sends
    /// SIGKILL; returns once the container has exited. Stopping a container that is not
    /// running succeeds.
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// Removes a container and its anonymous volumes, killing it first if it still
    /// runs.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// The container's current state.
    async fn inspect_container(&self, id: &str) -> Result<ContainerState, RuntimeError>;

    /// Every container, in any status, that carries all the given labels: how the agent
    /// finds its containers again after a restart.
    async fn list_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerState>, RuntimeError>;

    /// Subscribes to events of containers that carry all the given labels, from now on.
    /// To miss nothing across a restart, subscribe first, then list.
    async fn events(&self, labels: &[(String, String)]) -> Result<EventStream, RuntimeError>;

    /// The container's output, the last `tail` chunks (all when `None`), and with
    /// `follow` everything it writes after, until it stops.
    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<LogStream, RuntimeError>;

    /// One sample of the container's resource usage.
    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError>;
}

/// `image` with `:latest` added when it names neither a tag nor a digest, because the
/// Docker API pulls every tag of a repository when asked for one without a tag.
pub fn image_reference_with_tag(image: &str) -> String {
    let last_component = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last_component.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Whether `labels` carries every `(key, value)` in `wanted`.
pub(crate) fn labels_match(labels: &BTreeMap<String, String>, wanted: &[(String, String)]) -> bool {
    wanted
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_without_tag_get_latest() {
        let cases = [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v2", "localhost:5000/app:v2"),
            ("repo/app@sha256:abcd", "repo/app@sha256:abcd"),
            ("a.b/c/d", "a.b/c/d:latest"),
        ];
        for (input, expected) in cases {
            assert_eq!(image_reference_with_tag(input), expected, "{input}");
        }
    }

    #[test]
    fn host_port_prefers_ipv4_binding() {
        let state = ContainerState {
            id: "c".into(),
            name: "c".into(),
            image: "i".into(),
            image_id: "sha256:i".into(),
            labels: BTreeMap::new(),
            status: ContainerStatus::Running,
            exit_code: None,
            error: None,
            oom_killed: false,
            created_at: None,
            started_at: None,
            finished_at: None,
            health: None,
            ports: vec![
                BoundPort {
                    container_port: 80,
                    host_port: 40001,
                    protocol: Protocol::Tcp,
                    host_ip: Some("::".into()),
                },
                BoundPort {
                    container_port: 80,
                    host_port: 40000,
                    protocol: Protocol::Tcp,
                    host_ip: Some("0.0.0.0".into()),
                },
            ],
            networks: vec![],
        };
        assert_eq!(state.host_port(80, Protocol::Tcp), Some(40000));
        assert_eq!(state.host_port(80, Protocol::Udp), None);
        assert_eq!(state.host_port(81, Protocol::Tcp), None);
    }

    #[test]
    fn registry_auth_debug_hides_password() {
        let auth = RegistryAuth {
            username: "AWS".into(),
            password: "s3cret".into(),
            server_address: "127.0.0.1:5000".into(),
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
