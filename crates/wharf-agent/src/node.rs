//! A node: registration, the channel session, the task engine and the task metadata
//! endpoint, wired together. `wharf agent` runs one, and so does `wharf up`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use wharf_agent_channel::client::{ClientError, EcsClient};
use wharf_agent_channel::session::{run_session, SessionConfig};

use crate::config::AgentConfig;
use crate::engine::{EcsReporter, EngineConfig, TaskEngine, TaskView};
use crate::metadata::{
    metadata_router, MetadataContainer, MetadataHealth, MetadataNetwork, MetadataPort,
    MetadataSource, MetadataTask,
};
use crate::registration::{registration_request, HostFacts, RegistrationInput};
use crate::runtime::ContainerRuntime;

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

/// Calls an operation until it succeeds or fails for a reason retrying cannot fix.
async fn call_with_retry(
    client: &EcsClient,
    operation: &str,
    input: &Value,
) -> Result<Value, ClientError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match client.call(operation, input).await {
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, operation, "control plane not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Registers (or re-registers) the node and returns (cluster ARN, instance ARN).
async fn register(options: &NodeOptions, facts: &HostFacts) -> Result<(String, String), NodeError> {
    let config = &options.config;
    if options.create_cluster {
        call_with_retry(
            &options.client,
            "CreateCluster",
            &json!({"clusterName": config.cluster}),
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
    let answer = match call_with_retry(
        &options.client,
        "RegisterContainerInstance",
        &registration_request(facts, &input),
    )
    .await
    {
        Ok(answer) => answer,
        // The saved instance was deregistered meanwhile: register as a new one.
        Err(ClientError::Service { .. }) if input.container_instance_arn.is_some() => {
            input.container_instance_arn = None;
            call_with_retry(
                &options.client,
                "RegisterContainerInstance",
                &registration_request(facts, &input),
            )
            .await?
        }
        Err(error) => return Err(error.into()),
    };
    let instance_arn = answer["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cluster_arn = instance_arn
        .split_once(":container-instance/")
        .map(|(prefix, rest)| format!("{prefix}:cluster/{}", rest.split('/').next().unwrap_or("")))
        .unwrap_or_default();
    save_registration(
        &config.data_dir,
        &SavedRegistration {
            cluster: config.cluster.clone(),
            container_instance_arn: instance_arn.clone(),
        },
    )?;
    Ok((cluster_arn, instance_arn))
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
        shutdown.clone(),
    ));
    engine.run(events, shutdown).await;
    let _ = session.await;
    Ok(())
}
