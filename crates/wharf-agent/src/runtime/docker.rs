//! [`ContainerRuntime`] over the Docker Engine API, through bollard.
//!
//! Connects to the local engine (`DOCKER_HOST`, else `/var/run/docker.sock`) and
//! negotiates the API version down to what the engine speaks, so one agent binary works
//! from Docker 20.10 (API 1.41) on. The translation from [`ContainerSpec`] to Docker's
//! create body is [`container_create_body`], a pure function tested without an engine.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerStatsResponse, EventMessage, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, PortBinding as DockerPortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::{
    image_reference_with_tag, BoundPort, ContainerEvent, ContainerEventKind, ContainerRuntime,
    ContainerSpec, ContainerState, ContainerStats, ContainerStatus, EventStream, HealthStatus,
    LogChunk, LogSource, LogStream, NetworkAttachment, Protocol, RegistryAuth, RuntimeError,
    RuntimeVersion,
};

/// The smallest CPU share value the kernel accepts; ECS raises smaller values to it.
const MINIMUM_CPU_SHARES: i64 = 2;

/// Slack added to a stop's timeout for the HTTP request that waits on it, so that the
/// client does not give up while the engine is still waiting for the process.
const STOP_REQUEST_SLACK: Duration = Duration::from_secs(30);

/// The Docker engine as a [`ContainerRuntime`].
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST`, else the default Unix socket) and
    /// negotiates the API version. Fails with [`RuntimeError::Unavailable`] when no
    /// engine answers.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
        Self::negotiate(docker).await
    }

    /// Connects to the engine listening on the Unix socket at `path`.
    pub async fn connect_socket(path: &str) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_socket(path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(unavailable)?;
        Self::negotiate(docker).await
    }

    async fn negotiate(docker: Docker) -> Result<Self, RuntimeError> {
        // negotiate_version pings the engine: its failure is the first sign that there is
        // no engine, whatever bollard calls the error.
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        Ok(DockerRuntime { docker })
    }

    /// The bollard client, for callers (tests, diagnostics) that need an engine call the
    /// trait does not offer.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The gateway address of Docker's default `bridge` network: where containers on
    /// it reach the host (the agent's task metadata endpoint listens there).
    pub async fn bridge_gateway(&self) -> Option<std::net::IpAddr> {
        let network = self.docker.inspect_network("bridge", None).await.ok()?;
        network.ipam?.config?.into_iter().find_map(|config| {
            if let Some(gateway) = config.gateway.and_then(|g| g.parse().ok()) {
                return Some(gateway);
            }
            // Older engines leave the gateway out; Docker then gives the bridge the
            // first address of the subnet.
            first_host(config.subnet.as_deref()?)
        })
    }
}

/// The first host address of an IPv4 subnet such as `172.17.0.0/16`.
fn first_host(subnet: &str) -> Option<std::net::IpAddr> {
    let (network, prefix) = subnet.split_once('/')?;
    let network: std::net::Ipv4Addr = network.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 30)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let first = (u32::from(network) & mask) + 1;
    Some(std::net::IpAddr::V4(first.into()))
}

fn unavailable(error: BollardError) -> RuntimeError {
    RuntimeError::Unavailable(error.to_string())
}

/// Classifies a bollard error by what failed: the HTTP status for engine answers, the
/// transport for everything that never got one.
fn runtime_error(error: BollardError) -> RuntimeError {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => RuntimeError::NotFound(message),
            409 => RuntimeError::Conflict(message),
            400 => RuntimeError::InvalidSpec(message),
            _ => RuntimeError::Engine(format!("HTTP {status_code}: {message}")),
        },
        BollardError::SocketNotFoundError(_)
        | BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::RequestTimeoutError => RuntimeError::Unavailable(error.to_string()),
        other => RuntimeError::Engine(other.to_string()),
    }
}

fn labels_filter(labels: &[(String, String)]) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        let version = self.docker.version().await.map_err(runtime_error)?;
        Ok(RuntimeVersion {
            engine_version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            min_api_version: version.min_api_version,
            negotiated_api_version: self.docker.client_version().to_string(),
            os: version.os.unwrap_or_default(),
            arch: version.arch.unwrap_or_default(),
            kernel_version: version.kernel_version,
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self
            .docker
            .inspect_image(image)
            .await
            .map_err(runtime_error)
        {
            Ok(_) => Ok(true),
            Err(RuntimeError::NotFound(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        let reference = image_reference_with_tag(image);
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..Default::default()
        };
        let credentials = auth.map(|auth| DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.password.clone()),
            serveraddress: Some(auth.server_address.clone()),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        // The pull happens while the progress stream is read; an error can come as an
        // HTTP status (unknown repository) or in the middle of the stream (a layer that
        // failed), and both are the pull's failure.
        while let Some(item) = progress.next().await {
            if let Err(error) = item {
                return Err(match runtime_error(error) {
                    RuntimeError::Unavailable(reason) => RuntimeError::Unavailable(reason),
                    other => RuntimeError::ImagePull {
                        image: reference,
                        reason: error_reason(other),
                    },
                });
            }
        }
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let response = self
            .docker
            .create_container(Some(options), container_create_body(spec))
            .await
            .map_err(runtime_error)?;
        for warning in response.warnings {
            tracing::warn!(container = %spec.name, %warning, "docker create warning");
        }
        Ok(response.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(runtime_error)
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let seconds = whole_seconds_rounded_up(timeout);
        let options = StopContainerOptions {
            t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
            signal: None,
        };
        // The engine answers only once the container is gone, which may take the whole
        // timeout: the request's own timeout must outlast it.
        let client = self.docker.clone().with_timeout(
            Duration::from_secs(seconds)
                .saturating_add(STOP_REQUEST_SLACK)
                .max(self.docker.timeout()),
        );
        // Stopping a stopped container answers 304, which bollard treats as success.
        client
            .stop_container(id, Some(options))
            .await
            .map_err(runtime_error)
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(runtime_error)
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let response = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(runtime_error)?;
        Ok(container_state(response))
    }

    async fn list_containers(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerState>, RuntimeError> {
        let mut filters = HashMap::new();
        if !labels.is_empty() {
            filters.insert("label".to_string(), labels_filter(labels));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(runtime_error)?;
        // The list's summaries lack exit codes, health details and timestamps; the agent
        // needs the full state of each container it re-adopts.
        let mut states = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|summary| summary.id) {
            match self.inspect_container(&id).await {
                Ok(state) => states.push(state),
                // Removed between the list and the inspect: it is no longer there to adopt.
                Err(RuntimeError::NotFound(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(states)
    }

    async fn events(&self, labels: &[(String, String)]) -> Result<EventStream, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        // Without this filter every health check would also send exec_create,
        // exec_start and exec_die events.
        filters.insert(
            "event".to_string(),
            ["create", "start", "die", "oom", "health_status", "destroy"]
                .map(String::from)
                .to_vec(),
        );
        if !labels.is_empty() {
            filters.insert("label".to_string(), labels_filter(labels));
        }
        // bollard sends the request only when the stream is first polled, which may be
        // after the events this subscription must see. Asking for events since now makes
        // the engine replay what happened in between from its event buffer. The agent
        // talks to the engine on its own host, so the two clocks are the same clock.
        let now = Utc::now();
        let options = EventsOptions {
            since: Some(format!(
                "{}.{:09}",
                now.timestamp(),
                now.timestamp_subsec_nanos()
            )),
            filters: Some(filters),
            ..Default::default()
        };
        // Make sure the engine is there before handing out a stream, so that a missing
        // engine is an error of this call rather than of the first item.
        self.docker.ping().await.map_err(runtime_error)?;
        let stream = self
            .docker
            .events(Some(options))
            .filter_map(|item| async move {
                match item {
                    Ok(message) => container_event(message).map(Ok),
                    Err(error) => Some(Err(runtime_error(error))),
                }
            })
            .scan(false, |failed, item| {
                // End the stream after the first error: the subscription is broken.
                let done = *failed;
                *failed = item.is_err();
                async move { (!done).then_some(item) }
            });
        Ok(Box::pin(stream))
    }

    async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<LogStream, RuntimeError> {
        // Fail now for a container that does not exist, rather than in the stream.
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(runtime_error)?;
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let stream = self
            .docker
            .logs(id, Some(options))
            .filter_map(|item| async move {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message })
                    | Ok(bollard::container::LogOutput::Console { message }) => {
                        Some(Ok(LogChunk {
                            source: LogSource::Stdout,
                            bytes: message,
                        }))
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => Some(Ok(LogChunk {
                        source: LogSource::Stderr,
                        bytes: message,
                    })),
                    Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                    Err(error) => Some(Err(runtime_error(error))),
                }
            });
        Ok(Box::pin(stream))
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        // Not one-shot: the engine then samples twice a second apart and fills
        // `precpu_stats`, which a CPU percentage needs.
        let options = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut samples = self.docker.stats(id, Some(options));
        match samples.next().await {
            Some(Ok(sample)) => Ok(container_stats(sample)),
            Some(Err(error)) => Err(runtime_error(error)),
            None => Err(RuntimeError::Engine(format!(
                "the engine sent no stats for container {id}"
            ))),
        }
    }
}

fn error_reason(error: RuntimeError) -> String {
    match error {
        RuntimeError::Unavailable(reason)
        | RuntimeError::NotFound(reason)
        | RuntimeError::Conflict(reason)
        | RuntimeError::InvalidSpec(reason)
        | RuntimeError::Engine(reason) => reason,
        RuntimeError::ImagePull { reason, .. } => reason,
    }
}

fn whole_seconds_rounded_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn nanoseconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

fn port_key(container_port: u16, protocol: Protocol) -> String {
    format!("{container_port}/{}", protocol.as_str())
}

/// Docker's create body for a [`ContainerSpec`].
pub fn container_create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed_ports = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    if spec.network_mode.publishes_ports() {
        for binding in &spec.port_bindings {
            let key = port_key(binding.container_port, binding.protocol);
            if !exposed_ports.contains(&key) {
                exposed_ports.push(key.clone());
            }
            // An empty HostPort asks the engine for an ephemeral port.
            let host_port = match binding.host_port {
                None | Some(0) => String::new(),
                Some(port) => port.to_string(),
            };
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(DockerPortBinding {
                    host_ip: Some(binding.host_ip.map(|ip| ip.to_string()).unwrap_or_default()),
                    host_port: Some(host_port),
                });
        }
    }

    let healthcheck = spec.health_check.as_ref().map(|check| HealthConfig {
        test: Some(check.test.clone()),
        interval: Some(nanoseconds(check.interval)),
        timeout: Some(nanoseconds(check.timeout)),
        retries: Some(i64::from(check.retries)),
        start_period: Some(nanoseconds(check.start_period)),
        start_interval: None,
    });

    let log_config = spec.log_driver.as_ref().map(|driver| HostConfigLogConfig {
        typ: Some(driver.clone()),
        config: Some(
            spec.log_options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    });

    let host_config = HostConfig {
        cpu_shares: Some(i64::from(spec.cpu_units).max(MINIMUM_CPU_SHARES)),
        memory: spec.memory_bytes,
        memory_reservation: spec.memory_reservation_bytes,
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        network_mode: Some(spec.network_mode.as_docker_str().to_string()),
        ulimits: non_empty(
            spec.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        ),
        init: spec.init.then_some(true),
        privileged: Some(spec.privileged),
        readonly_rootfs: Some(spec.readonly_root_filesystem),
        log_config,
        extra_hosts: non_empty(
            spec.extra_hosts
                .iter()
                .map(|h| format!("{}:{}", h.hostname, h.ip_address))
                .collect(),
        ),
        dns: non_empty(spec.dns_servers.clone()),
        dns_search: non_empty(spec.dns_search_domains.clone()),
        security_opt: non_empty(spec.security_options.clone()),
        cap_add: non_empty(spec.capabilities_add.clone()),
        cap_drop: non_empty(spec.capabilities_drop.clone()),
        sysctls: (!spec.sysctls.is_empty()).then(|| {
            spec.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        binds: non_empty(
            spec.bind_mounts
                .iter()
                .map(|m| {
                    let mode = if m.read_only { ":ro" } else { "" };
                    format!("{}:{}{mode}", m.source, m.container_path)
                })
                .collect(),
        ),
        ..Default::default()
    };

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: spec.hostname.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        env: non_empty(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: non_empty(exposed_ports),
        healthcheck,
        stop_timeout: spec
            .stop_timeout
            .map(|t| i64::try_from(whole_seconds_rounded_up(t)).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// Docker writes timestamps in RFC 3339 with nanoseconds, and `0001-01-01T00:00:00Z`
/// for "never".
fn docker_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    let time = DateTime::parse_from_rfc3339(text?)
        .ok()?
        .with_timezone(&Utc);
    (time.timestamp() > 0).then_some(time)
}

fn container_status(status: Option<ContainerStateStatusEnum>) -> ContainerStatus {
    match status {
        // Engines newer than API 1.41 may say "stopping"; the process is still alive.
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            ContainerStatus::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerStatus::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerStatus::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerStatus::Dead,
        Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None => {
            ContainerStatus::Created
        }
    }
}

fn health_status(status: HealthStatusEnum) -> Option<HealthStatus> {
    match status {
        HealthStatusEnum::STARTING => Some(HealthStatus::Starting),
        HealthStatusEnum::HEALTHY => Some(HealthStatus::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(HealthStatus::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

fn container_state(response: ContainerInspectResponse) -> ContainerState {
    let state = response.state.unwrap_or_default();
    let config = response.config.unwrap_or_default();
    let network_settings = response.network_settings.unwrap_or_default();

    let mut ports: Vec<BoundPort> = network_settings
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, bindings)| Some((parse_port_key(&key)?, bindings?)))
        .flat_map(|((container_port, protocol), bindings)| {
            bindings.into_iter().filter_map(move |binding| {
                Some(BoundPort {
                    container_port,
                    protocol,
                    host_port: binding.host_port?.parse().ok()?,
                    host_ip: binding.host_ip.filter(|ip| !ip.is_empty()),
                })
            })
        })
        .collect();
    ports.sort();

    let mut networks: Vec<NetworkAttachment> = network_settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, endpoint)| NetworkAttachment {
            name,
            ip_address: endpoint.ip_address.filter(|ip| !ip.is_empty()),
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));

    let status = container_status(state.status);
    ContainerState {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .map(|name| name.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id: response.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        status,
        // Docker reports exit code 0 for containers that never ran; only a container
        // that started and exited has one.
        exit_code: if status.has_exited() {
            state.exit_code
        } else {
            None
        },
        error: state.error.filter(|e| !e.is_empty()),
        oom_killed: state.oom_killed.unwrap_or(false),
        created_at: docker_time(response.created.as_deref()),
        started_at: docker_time(state.started_at.as_deref()),
        finished_at: docker_time(state.finished_at.as_deref()),
        health: state
            .health
            .and_then(|health| health.status)
            .and_then(health_status),
        ports,
        networks,
    }
}

fn container_event(message: EventMessage) -> Option<ContainerEvent> {
    let action = message.action?;
    let actor = message.actor?;
    let mut attributes: BTreeMap<String, String> =
        actor.attributes.unwrap_or_default().into_iter().collect();
    let kind = match action.as_str() {
        "create" => ContainerEventKind::Created,
        "start" => ContainerEventKind::Started,
        "die" => ContainerEventKind::Died {
            exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "oom" => ContainerEventKind::OutOfMemory,
        "destroy" => ContainerEventKind::Destroyed,
        // "health_status: healthy" — the status follows the colon.
        other => {
            let status = other.strip_prefix("health_status")?;
            let status = status.trim_start_matches(':').trim();
            ContainerEventKind::HealthChanged(match status {
                "starting" => HealthStatus::Starting,
                "healthy" => HealthStatus::Healthy,
                "unhealthy" => HealthStatus::Unhealthy,
                _ => return None,
            })
        }
    };
    // The actor's attributes are the container's labels plus a few of Docker's own.
    for docker_attribute in ["exitCode", "image", "name", "signal"] {
        attributes.remove(docker_attribute);
    }
    let time = message
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| message.time.and_then(|t| DateTime::from_timestamp(t, 0)));
    Some(ContainerEvent {
        id: actor.id?,
        kind,
        labels: attributes,
        time,
    })
}

fn container_stats(sample: ContainerStatsResponse) -> ContainerStats {
    let raw = serde_json::to_value(&sample).unwrap_or(serde_json::Value::Null);
    let cpu = sample.cpu_stats.unwrap_or_default();
    let memory = sample.memory_stats.unwrap_or_default();
    let (network_rx_bytes, network_tx_bytes) =
        sample
            .networks
            .unwrap_or_default()
            .values()
            .fold((0, 0), |(rx, tx), network| {
                (
                    rx + network.rx_bytes.unwrap_or(0),
                    tx + network.tx_bytes.unwrap_or(0),
                )
            });
    ContainerStats {
        read_at: docker_time(sample.read.as_deref()),
        cpu_total_usage_ns: cpu
            .cpu_usage
            .and_then(|usage| usage.total_usage)
            .unwrap_or(0),
        system_cpu_usage_ns: cpu.system_cpu_usage,
        online_cpus: cpu.online_cpus,
        memory_usage_bytes: memory.usage.unwrap_or(0),
        memory_limit_bytes: memory.limit.unwrap_or(0),
        network_rx_bytes,
        network_tx_bytes,
        raw,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_first_host_of_a_subnet_is_the_bridge_gateway() {
        assert_eq!(
            super::first_host("172.17.0.0/16"),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(
            super::first_host("10.1.2.128/25"),
            Some("10.1.2.129".parse().unwrap())
        );
        assert_eq!(super::first_host("fd00::/64"), None);
        assert_eq!(super::first_host("10.0.0.0/31"), None);
        assert_eq!(super::first_host("garbage"), None);
    }

    use super::*;
    use crate::runtime::{BindMount, HealthCheckSpec, HostEntry, NetworkMode, PortBinding, Ulimit};

    fn spec() -> ContainerSpec {
        ContainerSpec::new("web", "wharf-test/busybox:latest")
    }

    fn host_config(body: &ContainerCreateBody) -> &HostConfig {
        body.host_config.as_ref().expect("host config")
    }

    #[test]
    fn cpu_units_become_shares_with_ecs_minimum_of_two() {
        for (units, shares) in [(0, 2), (1, 2), (2, 2), (256, 256), (1024, 1024)] {
            let body = container_create_body(&ContainerSpec {
                cpu_units: units,
                ..spec()
            });
            assert_eq!(host_config(&body).cpu_shares, Some(shares), "cpu {units}");
        }
    }

    #[test]
    fn memory_hard_and_soft_limits_map_to_memory_and_reservation() {
        let body = container_create_body(&ContainerSpec {
            memory_bytes: Some(128 << 20),
            memory_reservation_bytes: Some(64 << 20),
            ..spec()
        });
        assert_eq!(host_config(&body).memory, Some(128 << 20));
        assert_eq!(host_config(&body).memory_reservation, Some(64 << 20));

        let body = container_create_body(&spec());
        assert_eq!(host_config(&body).memory, None);
        assert_eq!(host_config(&body).memory_reservation, None);
    }

    #[test]
    fn ports_are_exposed_and_bound_with_dynamic_as_empty_host_port() {
        let body = container_create_body(&ContainerSpec {
            port_bindings: vec![
                PortBinding {
                    container_port: 8080,
                    host_port: None,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                },
                PortBinding {
                    container_port: 53,
                    host_port: Some(5353),
                    protocol: Protocol::Udp,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                },
                PortBinding {
                    container_port: 9090,
                    host_port: Some(0),
                    protocol: Protocol::Tcp,
                    host_ip: None,
                },
            ],
            ..spec()
        });
        let mut exposed = body.exposed_ports.clone().unwrap();
        exposed.sort();
        assert_eq!(exposed, ["53/udp", "8080/tcp", "9090/tcp"]);
        let bindings = host_config(&body).port_bindings.as_ref().unwrap();
        let only = |key: &str| bindings[key].as_ref().unwrap()[0].clone();
        assert_eq!(only("8080/tcp").host_port.as_deref(), Some(""));
        assert_eq!(only("8080/tcp").host_ip.as_deref(), Some(""));
        assert_eq!(only("9090/tcp").host_port.as_deref(), Some(""));
        assert_eq!(only("53/udp").host_port.as_deref(), Some("5353"));
        assert_eq!(only("53/udp").host_ip.as_deref(), Some("127.0.0.1"));

        // The wire form is Docker's map of port to empty object.
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["ExposedPorts"]["8080/tcp"], serde_json::json!({}));
        assert_eq!(
            json["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"],
            ""
        );
    }

    #[test]
    fn host_network_mode_publishes_no_ports() {
        let body = container_create_body(&ContainerSpec {
            network_mode: NetworkMode::Host,
            port_bindings: vec![PortBinding {
                container_port: 80,
                host_port: Some(80),
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            ..spec()
        });
        assert_eq!(host_config(&body).network_mode.as_deref(), Some("host"));
        assert_eq!(host_config(&body).port_bindings, None);
        assert_eq!(body.exposed_ports, None);
        let other = container_create_body(&ContainerSpec {
            network_mode: NetworkMode::Other("container:abc".into()),
            ..spec()
        });
        assert_eq!(
            host_config(&other).network_mode.as_deref(),
            Some("container:abc")
        );
    }

    #[test]
    fn health_check_durations_are_nanoseconds() {
        let body = container_create_body(&ContainerSpec {
            health_check: Some(HealthCheckSpec {
                test: vec!["CMD-SHELL".into(), "exit 1".into()],
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                retries: 2,
                start_period: Duration::ZERO,
            }),
            ..spec()
        });
        let check = body.healthcheck.unwrap();
        assert_eq!(check.test.unwrap(), ["CMD-SHELL", "exit 1"]);
        assert_eq!(check.interval, Some(1_000_000_000));
        assert_eq!(check.timeout, Some(500_000_000));
        assert_eq!(check.retries, Some(2));
        assert_eq!(check.start_period, Some(0));
    }

    #[test]
    fn the_rest_of_a_container_definition_maps_field_by_field() {
        let body = container_create_body(&ContainerSpec {
            labels: BTreeMap::from([("com.example.team".into(), "web".into())]),
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            command: Some(vec!["httpd".into(), "-f".into()]),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            working_dir: Some("/www".into()),
            user: Some("nobody".into()),
            hostname: Some("web-1".into()),
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 4096,
            }],
            init: true,
            privileged: true,
            readonly_root_filesystem: true,
            log_driver: Some("json-file".into()),
            log_options: BTreeMap::from([("max-size".into(), "10m".into())]),
            stop_timeout: Some(Duration::from_millis(2500)),
            extra_hosts: vec![HostEntry {
                hostname: "db".into(),
                ip_address: "10.0.0.5".into(),
            }],
            dns_servers: vec!["10.0.0.2".into()],
            dns_search_domains: vec!["example.internal".into()],
            security_options: vec!["no-new-privileges".into()],
            capabilities_add: vec!["NET_ADMIN".into()],
            capabilities_drop: vec!["MKNOD".into()],
            sysctls: BTreeMap::from([("net.core.somaxconn".into(), "1024".into())]),
            bind_mounts: vec![BindMount {
                source: "/srv/data".into(),
                container_path: "/data".into(),
                read_only: true,
            }],
            ..spec()
        });
        assert_eq!(body.image.as_deref(), Some("wharf-test/busybox:latest"));
        assert_eq!(body.labels.as_ref().unwrap()["com.example.team"], "web");
        assert_eq!(body.env.as_ref().unwrap(), &["A=1", "B=x=y"]);
        assert_eq!(body.cmd.as_ref().unwrap(), &["httpd", "-f"]);
        assert_eq!(body.entrypoint.as_ref().unwrap(), &["/bin/sh", "-c"]);
        assert_eq!(body.working_dir.as_deref(), Some("/www"));
        assert_eq!(body.user.as_deref(), Some("nobody"));
        assert_eq!(body.hostname.as_deref(), Some("web-1"));
        assert_eq!(body.stop_timeout, Some(3));
        let host = host_config(&body);
        let ulimit = &host.ulimits.as_ref().unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(1024), Some(4096))
        );
        assert_eq!(host.init, Some(true));
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.readonly_rootfs, Some(true));
        let log = host.log_config.as_ref().unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.as_ref().unwrap()["max-size"], "10m");
        assert_eq!(host.extra_hosts.as_ref().unwrap(), &["db:10.0.0.5"]);
        assert_eq!(host.dns.as_ref().unwrap(), &["10.0.0.2"]);
        assert_eq!(host.dns_search.as_ref().unwrap(), &["example.internal"]);
        assert_eq!(host.security_opt.as_ref().unwrap(), &["no-new-privileges"]);
        assert_eq!(host.cap_add.as_ref().unwrap(), &["NET_ADMIN"]);
        assert_eq!(host.cap_drop.as_ref().unwrap(), &["MKNOD"]);
        assert_eq!(host.sysctls.as_ref().unwrap()["net.core.somaxconn"], "1024");
        assert_eq!(host.binds.as_ref().unwrap(), &["/srv/data:/data:ro"]);
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
    }

    #[test]
    fn a_minimal_spec_leaves_engine_defaults_alone() {
        let body = container_create_body(&spec());
        assert_eq!(body.env, None);
        assert_eq!(body.cmd, None);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.healthcheck, None);
        assert_eq!(body.stop_timeout, None);
        let host = host_config(&body);
        assert_eq!(host.init, None);
        assert_eq!(host.log_config, None);
        assert_eq!(host.ulimits, None);
    }

    #[test]
    fn events_parse_into_typed_values() {
        let event = |action: &str, attributes: &[(&str, &str)]| EventMessage {
            action: Some(action.to_string()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            time_nano: Some(1_700_000_000_000_000_000),
            ..Default::default()
        };
        let died = container_event(event(
            "die",
            &[("exitCode", "3"), ("name", "web"), ("wharf.task", "t1")],
        ))
        .unwrap();
        assert_eq!(died.kind, ContainerEventKind::Died { exit_code: Some(3) });
        assert_eq!(
            died.labels,
            BTreeMap::from([("wharf.task".into(), "t1".into())])
        );
        assert_eq!(died.time.unwrap().timestamp(), 1_700_000_000);
        assert_eq!(
            container_event(event("health_status: unhealthy", &[]))
                .unwrap()
                .kind,
            ContainerEventKind::HealthChanged(HealthStatus::Unhealthy)
        );
        assert_eq!(
            container_event(event("start", &[])).unwrap().kind,
            ContainerEventKind::Started
        );
        assert_eq!(container_event(event("exec_start: sh", &[])), None);
    }

    #[test]
    fn docker_zero_time_means_never() {
        assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(
            docker_time(Some("2024-05-01T10:00:00.123456789Z"))
                .unwrap()
                .timestamp(),
            1_714_557_600
        );
        assert_eq!(docker_time(None), None);
    }

    #[test]
    fn engine_errors_are_classified_by_status() {
        let server = |status_code| BollardError::DockerResponseServerError {
            status_code,
            message: "m".into(),
        };
        assert!(matches!(
            runtime_error(server(404)),
            RuntimeError::NotFound(_)
        ));
        assert!(matches!(
            runtime_error(server(409)),
            RuntimeError::Conflict(_)
        ));
        assert!(matches!(
            runtime_error(server(400)),
            RuntimeError::InvalidSpec(_)
        ));
        assert!(matches!(
            runtime_error(server(500)),
            RuntimeError::Engine(_)
        ));
        assert!(runtime_error(BollardError::SocketNotFoundError("/x".into())).is_transient());
    }
}
