//! A node: registration, the channel session, the task engine and the task metadata
//! endpoint, wired together. `wharf agent` runs one, and so does `wharf up`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use wharf_agent_channel::client::{ClientError, EcsClient};
use wharf_agent_channel::session::{run_session, LogPiece, SessionConfig, TaskLogStream, TaskLogs};
use wharf_agent_channel::{LogsRequest, OutputStream};

use crate::config::AgentConfig;
use crate::engine::{EcsReporter, EngineConfig, TaskEngine, TaskView};
use crate::metadata::{
    metadata_router, MetadataContainer, MetadataHealth, MetadataNetwork, MetadataPort,
    MetadataSource, MetadataTask,
};
use crate::registration::{registration_request, HostFacts, RegistrationInput};
use crate::runtime::{ContainerRuntime, LogChunk, LogSource};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The container engine could not be asked for its version.
    #[error("the container engine is not usable: {0}")]
    Runtime(String),
    /// Registration was refused or never got through.
    #[error("registration failed: {0}")]
    Registration(#[from] ClientError),
    /// The data directory could not be read or written.
    #[error("agent data directory {path}: {reason}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The metadata endpoint could not listen.
    #[error("the task metadata endpoint cannot listen on {addr}: {reason}")]
    Metadata {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// How to run a node.
pub struct NodeOptions {
    /// The agent's configuration.
    pub config: AgentConfig,
    /// The ECS client (endpoint, region, credentials).
    pub client: EcsClient,
    /// Where the metadata endpoint listens; containers must be able to reach it.
    pub metadata_addr: Option<SocketAddr>,
    /// Create the cluster if it does not exist (what `wharf up` does for `default`).
    pub create_cluster: bool,
}

/// The registration kept in the data directory, so that a restarted agent is the same
/// container instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedRegistration {
    cluster: String,
    container_instance_arn: String,
}

const REGISTRATION_FILE: &str = "wharf-agent-registration.json";

fn load_registration(dir: &Path, cluster: &str) -> Option<SavedRegistration> {
    let text = std::fs::read_to_string(dir.join(REGISTRATION_FILE)).ok()?;
    let saved: SavedRegistration = serde_json::from_str(&text).ok()?;
    (saved.cluster == cluster).then_some(saved)
}

fn save_registration(dir: &Path, saved: &SavedRegistration) -> Result<(), NodeError> {
    let failed = |reason: std::io::Error| NodeError::DataDir {
        path: dir.to_owned(),
        reason: reason.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let tmp = dir.join(format!("{REGISTRATION_FILE}.tmp"));
    let text = serde_json::to_vec(saved).expect("registration is encodable");
    std::fs::write(&tmp, text).map_err(failed)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(failed)?;
    std::fs::rename(&tmp, dir.join(REGISTRATION_FILE)).map_err(failed)
}

/// Reads the host's CPUs, memory, architecture and name.
async fn host_facts(runtime: &dyn ContainerRuntime) -> Result<HostFacts, NodeError> {
    let version = runtime
        .version()
        .await
        .map_err(|e| NodeError::Runtime(e.to_string()))?;
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(0);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    Ok(HostFacts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib: memory_kib / 1024,
        arch: std::env::consts::ARCH.to_owned(),
        engine_version: version.engine_version,
        engine_api_version: version.api_version,
        hostname,
    })
}

/// Registers (or re-registers) the node and returns (cluster ARN, instance ARN).
async fn register(options: &NodeOptions, facts: &HostFacts) -> Result<(String, String), NodeError> {
    let config = &options.config;
    if options.create_cluster {
        options
            .client
            .call_with_retry(
                "CreateCluster",
                &json!({"clusterName": config.cluster}),
                None,
            )
            .await?;
    }
    let saved = load_registration(&config.data_dir, &config.cluster);
    let mut input = RegistrationInput {
        cluster: config.cluster.clone(),
        reserved_memory_mib: config.reserved_memory_mib,
        reserved_ports: config.reserved_ports.clone(),
        reserved_ports_udp: config.reserved_ports_udp.clone(),
        attributes: config.instance_attributes.clone(),
        tags: config.container_instance_tags.clone(),
        logging_drivers: config.available_logging_drivers.clone(),
        availability_zone: config
            .availability_zone
            .clone()
            .unwrap_or_else(|| format!("{}a", config.region)),
        instance_type: config
            .instance_type
            .clone()
            .unwrap_or_else(|| "wharf.node".to_owned()),
        container_instance_arn: saved.map(|s| s.container_instance_arn),
    };
    let answer = match options
        .client
        .call_with_retry(
            "RegisterContainerInstance",
            &registration_request(facts, &input),
            None,
        )
        .await
    {
        Ok(answer) => answer,
        // The saved instance was deregistered meanwhile: register as a new one.
        Err(ClientError::Service { .. }) if input.container_instance_arn.is_some() => {
            input.container_instance_arn = None;
            options
                .client
                .call_with_retry(
                    "RegisterContainerInstance",
                    &registration_request(facts, &input),
                    None,
                )
                .await?
        }
        Err(error) => return Err(error.into()),
    };
    let instance_arn = answer["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cluster_arn =
        wharf_agent_channel::cluster_arn_of_instance(&instance_arn).unwrap_or_default();
    save_registration(
        &config.data_dir,
        &SavedRegistration {
            cluster: config.cluster.clone(),
            container_instance_arn: instance_arn.clone(),
        },
    )?;
    Ok((cluster_arn, instance_arn))
}

/// ECR tokens for images in Wharf's own registry: GetAuthorizationToken with the
/// agent's own key, cached until an hour before the token expires.
struct EcrCredentials {
    client: EcsClient,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    /// The registry's `host:port`, from the token's `proxyEndpoint`.
    host: String,
    password: String,
    refresh_after: std::time::Instant,
}

impl EcrCredentials {
    async fn token(&self) -> Option<(String, String)> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref() {
            if std::time::Instant::now() < token.refresh_after {
                return Some((token.host.clone(), token.password.clone()));
            }
        }
        let answer = match self
            .client
            .call_ecr("GetAuthorizationToken", &json!({}))
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, "no registry token; pulling anonymously");
                return None;
            }
        };
        let data = &answer["authorizationData"][0];
        let decoded = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            data["authorizationToken"].as_str()?,
        )
        .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_, password) = decoded.split_once(':')?;
        let endpoint = data["proxyEndpoint"].as_str()?;
        let host = endpoint
            .split_once("://")
            .map_or(endpoint, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let now_secs = chrono::Utc::now().timestamp() as f64;
        let lifetime = data["expiresAt"].as_f64().map_or(0.0, |at| at - now_secs);
        let refresh_in = std::time::Duration::from_secs_f64((lifetime - 3600.0).max(60.0));
        *cached = Some(CachedToken {
            host: host.clone(),
            password: password.to_owned(),
            refresh_after: std::time::Instant::now() + refresh_in,
        });
        Some((host, password.to_owned()))
    }
}

/// The registry host of an image reference (`host[:port]/repo:tag`), when it names one.
fn image_registry(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

#[async_trait]
impl crate::engine::RegistryCredentials for EcrCredentials {
    async fn for_image(&self, image: &str) -> Option<crate::runtime::RegistryAuth> {
        let registry = image_registry(image)?;
        let (host, password) = self.token().await?;
        (host == registry).then(|| crate::runtime::RegistryAuth {
            username: "AWS".to_owned(),
            password,
            server_address: host,
        })
    }
}

/// Serves the engine's tasks to the metadata endpoint.
struct EngineMetadata {
    engine: Arc<TaskEngine>,
    runtime: Arc<dyn ContainerRuntime>,
    availability_zone: String,
    instance_tags: BTreeMap<String, String>,
}

fn metadata_task(
    task: &TaskView,
    zone: &str,
    instance_tags: &BTreeMap<String, String>,
) -> MetadataTask {
    MetadataTask {
        cluster: task.cluster_arn.clone(),
        task_arn: task.arn.clone(),
        family: task.family.clone(),
        revision: i64::from(task.revision),
        desired_status: task.desired_status.as_str().to_owned(),
        known_status: task.known_status.as_str().to_owned(),
        cpu: task.cpu_units.map(|units| f64::from(units) / 1024.0),
        memory: task.memory_mib.map(|m| m as i64),
        pull_started_at: task.pull_started_at,
        pull_stopped_at: task.pull_stopped_at,
        availability_zone: Some(zone.to_owned()),
        launch_type: Some("EC2".to_owned()),
        task_tags: BTreeMap::new(),
        container_instance_tags: instance_tags.clone(),
        containers: task
            .containers
            .iter()
            .map(|c| MetadataContainer {
                docker_id: c.docker_id.clone().unwrap_or_default(),
                name: c.name.clone(),
                docker_name: c.docker_name.clone().unwrap_or_default(),
                image: c.image.clone(),
                image_id: c.image_id.clone().unwrap_or_default(),
                ports: c
                    .ports
                    .iter()
                    .map(|p| MetadataPort {
                        container_port: p.container_port,
                        host_port: Some(p.host_port),
                        protocol: format!("{:?}", p.protocol).to_lowercase(),
                        host_ip: p.host_ip.clone(),
                    })
                    .collect(),
                labels: c.labels.clone(),
                desired_status: c.desired_status.as_str().to_owned(),
                known_status: c.known_status.as_str().to_owned(),
                exit_code: c.exit_code,
                cpu: Some(f64::from(c.cpu_units)),
                memory: c.memory_mib.map(|m| m as i64),
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: c.finished_at,
                health: c.health.map(|h| MetadataHealth {
                    status: format!("{h:?}").to_uppercase(),
                    ..Default::default()
                }),
                networks: c
                    .networks
                    .iter()
                    .map(|n| MetadataNetwork {
                        mode: n.name.clone(),
                        ipv4: n
                            .ip_address
                            .iter()
                            .filter_map(|ip| ip.parse().ok())
                            .collect(),
                    })
                    .collect(),
                container_arn: c.container_arn.clone(),
                log_driver: None,
                log_options: BTreeMap::new(),
            })
            .collect(),
    }
}

#[async_trait]
impl MetadataSource for EngineMetadata {
    fn lookup(&self, token: &str) -> Option<(MetadataTask, String)> {
        let (task, index) = self.engine.container_by_metadata_id(token)?;
        let docker_id = task
            .containers
            .get(index)?
            .docker_id
            .clone()
            .unwrap_or_default();
        Some((
            metadata_task(&task, &self.availability_zone, &self.instance_tags),
            docker_id,
        ))
    }

    async fn stats(&self, docker_id: &str) -> Option<Value> {
        self.runtime.stats(docker_id).await.ok().map(|s| s.raw)
    }
}

/// Serves the control plane's logs requests from the engine's tasks and the runtime.
struct EngineLogs {
    engine: Arc<TaskEngine>,
    runtime: Arc<dyn ContainerRuntime>,
}

/// Prefixes every line of one container's output with its name, for the logs of a
/// task with several containers. The state is whether the next byte starts a line,
/// because the engine frames output by writes, not by lines.
struct LinePrefixer {
    prefix: Vec<u8>,
    at_line_start: bool,
}

impl LinePrefixer {
    fn new(name: &str) -> Self {
        LinePrefixer {
            prefix: format!("{name} | ").into_bytes(),
            at_line_start: true,
        }
    }

    fn apply(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + self.prefix.len());
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            if self.at_line_start {
                out.extend_from_slice(&self.prefix);
            }
            out.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        out
    }
}

fn log_piece(chunk: LogChunk) -> LogPiece {
    LogPiece {
        stream: match chunk.source {
            LogSource::Stdout => OutputStream::Stdout,
            LogSource::Stderr => OutputStream::Stderr,
        },
        data: chunk.bytes,
    }
}

impl EngineLogs {
    /// Opens one container's logs. A log driver that cannot be read back (`none`)
    /// fails on the first read, which a followed stream of a quiet container may never
    /// reach; an empty read first makes that failure an answer to the request.
    async fn open_container(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<crate::runtime::LogStream, crate::runtime::RuntimeError> {
        let mut probe = self.runtime.logs(id, false, Some(0)).await?;
        while let Some(item) = probe.next().await {
            item?;
        }
        self.runtime.logs(id, follow, tail).await
    }
}

#[async_trait]
impl TaskLogs for EngineLogs {
    async fn open(&self, request: &LogsRequest) -> Result<TaskLogStream, String> {
        let task = self
            .engine
            .task(&request.task_arn)
            .ok_or_else(|| format!("task {} is not on this instance", request.task_arn))?;
        let selected: Vec<_> = match &request.container {
            Some(name) => {
                let container = task
                    .containers
                    .iter()
                    .find(|c| &c.name == name)
                    .ok_or_else(|| format!("the task has no container named {name}"))?;
                if container.docker_id.is_none() {
                    return Err(format!("container {name} has not been created yet"));
                }
                vec![container]
            }
            None => task
                .containers
                .iter()
                .filter(|c| c.docker_id.is_some())
                .collect(),
        };
        if selected.is_empty() {
            return Err("no container of the task has been created yet".to_owned());
        }
        let tail = request
            .tail
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let prefixed = selected.len() > 1;
        let mut streams = Vec::with_capacity(selected.len());
        let mut unreadable = Vec::new();
        for container in selected {
            let id = container.docker_id.as_deref().unwrap_or_default();
            let logs = match self.open_container(id, request.follow, tail).await {
                Ok(logs) => logs,
                // Of all containers, those whose driver cannot be read are left out.
                Err(error) => {
                    unreadable.push(format!("{}: {error}", container.name));
                    continue;
                }
            };
            let name = container.name.clone();
            let mut prefixer = prefixed.then(|| LinePrefixer::new(&name));
            let stream = logs.map(move |item| match item {
                Ok(chunk) => {
                    let mut piece = log_piece(chunk);
                    if let Some(prefixer) = prefixer.as_mut() {
                        piece.data = prefixer.apply(&piece.data).into();
                    }
                    Ok(piece)
                }
                Err(error) => Err(format!("{name}: {error}")),
            });
            streams.push(stream.boxed());
        }
        if streams.is_empty() {
            return Err(unreadable.join("; "));
        }
        Ok(futures_util::stream::select_all(streams).boxed())
    }
}

/// Runs a node until `shutdown` turns true. Containers keep running when it returns:
/// a restarted agent adopts them.
pub async fn run_node(
    options: NodeOptions,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let facts = host_facts(runtime.as_ref()).await?;
    let (cluster_arn, instance_arn) = register(&options, &facts).await?;
    tracing::info!(%instance_arn, "registered");
    let config = &options.config;
    let mut metadata_base = None;
    let mut engine_config = EngineConfig::new(&cluster_arn, &instance_arn);
    engine_config.stop_timeout = config.container_stop_timeout;
    engine_config.start_timeout = config.container_start_timeout;
    engine_config.task_cleanup_wait = config.task_cleanup_wait;
    engine_config.image_pull_behavior = config.image_pull_behavior;
    engine_config.logging_drivers = config.available_logging_drivers.clone();
    let listener = match options.metadata_addr {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| NodeError::Metadata {
                        addr,
                        reason: e.to_string(),
                    })?;
            let bound = listener.local_addr().map_err(|e| NodeError::Metadata {
                addr,
                reason: e.to_string(),
            })?;
            metadata_base = Some(format!("http://{bound}"));
            Some(listener)
        }
        None => None,
    };
    engine_config.metadata_endpoint = metadata_base.clone();
    engine_config.registry_credentials = Some(crate::engine::RegistryCredentialSource(Arc::new(
        EcrCredentials {
            client: options.client.clone(),
            cached: tokio::sync::Mutex::new(None),
        },
    )));
    let reporter = Arc::new(EcsReporter::new(
        options.client.clone(),
        cluster_arn.clone(),
    ));
    let engine = TaskEngine::new(runtime.clone(), reporter, engine_config);
    if let Some(listener) = listener {
        let source = Arc::new(EngineMetadata {
            engine: engine.clone(),
            runtime: runtime.clone(),
            availability_zone: config
                .availability_zone
                .clone()
                .unwrap_or_else(|| format!("{}a", config.region)),
            instance_tags: config.container_instance_tags.clone(),
        });
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, metadata_router(source))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "task metadata endpoint failed");
            }
        });
        tracing::info!(endpoint = ?metadata_base, "task metadata endpoint listening");
    }
    let (events_tx, events) = mpsc::channel(64);
    let session = tokio::spawn(run_session(
        options.client.clone(),
        SessionConfig::new(&cluster_arn, &instance_arn),
        events_tx,
        Some(Arc::new(EngineLogs {
            engine: engine.clone(),
            runtime: runtime.clone(),
        }) as Arc<dyn TaskLogs>),
        shutdown.clone(),
    ));
    engine.run(events, shutdown).await;
    let _ = session.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_prefixes_follow_line_starts_across_chunks() {
        let mut prefixer = LinePrefixer::new("web");
        assert_eq!(
            prefixer.apply(b"one\ntwo"),
            b"web | one\nweb | two".to_vec()
        );
        assert_eq!(prefixer.apply(b" halves\n"), b" halves\n".to_vec());
        assert_eq!(prefixer.apply(b"\n"), b"web | \n".to_vec());
        assert_eq!(prefixer.apply(b""), b"".to_vec());
        assert_eq!(prefixer.apply(b"three\n"), b"web | three\n".to_vec());
    }

    #[test]
    fn the_registry_of_an_image_reference() {
        assert_eq!(
            image_registry("127.0.0.1:5000/team/web:1"),
            Some("127.0.0.1:5000")
        );
        assert_eq!(image_registry("localhost/x"), Some("localhost"));
        assert_eq!(
            image_registry("registry.example/app"),
            Some("registry.example")
        );
        assert_eq!(image_registry("team/web:1"), None);
        assert_eq!(image_registry("busybox"), None);
    }
}
