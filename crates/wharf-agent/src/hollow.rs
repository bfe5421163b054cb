//! Hollow agents: simulated container instances for scale tests (`wharf sim`).
//!
//! Each hollow instance registers through the real ECS API, keeps a real channel
//! session (the same code as the real agent), and reports every task placed on it
//! RUNNING — and STOPPED when told — without starting containers. This is how Wharf
//! measures the control plane at thousands of instances, the way Kubernetes uses
//! hollow nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wharf_agent_channel::client::{ClientError, EcsClient};
use wharf_agent_channel::session::{run_session, SessionConfig, SessionEvent};
use wharf_agent_channel::TaskPayload;

/// What a fleet of hollow instances looks like.
#[derive(Debug, Clone)]
pub struct HollowFleetConfig {
    /// The cluster the instances join.
    pub cluster: String,
    /// How many instances.
    pub instances: usize,
    /// Availability zones, assigned round-robin as `ecs.availability-zone`.
    pub zones: Vec<String>,
    /// Extra attributes every instance carries.
    pub attributes: Vec<(String, String)>,
    /// CPU units each instance registers.
    pub cpu: i64,
    /// MiB of memory each instance registers.
    pub memory: i64,
    /// The channel's heartbeat interval.
    pub heartbeat: Duration,
    /// A prefix of the instances' EC2 ids, so that a restarted fleet re-registers the
    /// same instances.
    pub id_prefix: String,
}

/// Counters of what the fleet did.
#[derive(Debug, Default)]
pub struct HollowStats {
    /// Instances registered.
    pub registered: AtomicU64,
    /// Channel sessions up right now.
    pub connected: AtomicU64,
    /// RUNNING reports acknowledged by the control plane.
    pub running_reported: AtomicU64,
    /// STOPPED reports acknowledged by the control plane.
    pub stopped_reported: AtomicU64,
    /// Calls that failed for good.
    pub errors: AtomicU64,
}

/// A running fleet; dropping it leaves the tasks running, [`HollowFleet::stop`] ends it.
pub struct HollowFleet {
    shutdown: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    /// What the fleet has done so far.
    pub stats: Arc<HollowStats>,
}

impl HollowFleet {
    /// Ends every session and waits for the instances to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

fn registration(config: &HollowFleetConfig, index: usize) -> Value {
    let zone = if config.zones.is_empty() {
        "local".to_owned()
    } else {
        config.zones[index % config.zones.len()].clone()
    };
    let mut attributes = vec![
        json!({"name": "ecs.availability-zone", "value": zone}),
        json!({"name": "ecs.instance-type", "value": "hollow"}),
        json!({"name": "ecs.os-type", "value": "linux"}),
    ];
    for (name, value) in &config.attributes {
        attributes.push(json!({"name": name, "value": value}));
    }
    let document = json!({
        "instanceId": format!("i-{}{index:08}", config.id_prefix),
        "availabilityZone": zone,
        "instanceType": "hollow",
    });
    json!({
        "cluster": config.cluster,
        "instanceIdentityDocument": document.to_string(),
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": config.cpu},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": config.memory},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375", "2376", "51678", "51679"]},
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
        ],
        "versionInfo": {"agentVersion": "1.0.0", "agentHash": "hollow", "dockerVersion": "hollow"},
        "attributes": attributes,
    })
}

/// Reports a task's new status, with every container in the matching state.
async fn report(
    client: &EcsClient,
    cluster: &str,
    task: &TaskPayload,
    status: &str,
) -> Result<(), ClientError> {
    let containers: Vec<Value> = task
        .containers
        .iter()
        .map(|c| {
            let mut change = json!({"containerName": c.name, "status": status, "runtimeId": format!("hollow-{}", c.container_arn.rsplit('/').next().unwrap_or(""))});
            if status == "STOPPED" {
                change["exitCode"] = json!(0);
            }
            change
        })
        .collect();
    let mut input = json!({
        "cluster": cluster,
        "task": task.arn,
        "status": status,
        "containers": containers,
    });
    if status == "STOPPED" {
        input["reason"] = json!("Task stopped by the hollow agent");
    }
    client
        .call_with_retry("SubmitTaskStateChange", &input, Some(12))
        .await
        .map(|_| ())
}

async fn run_instance(
    client: EcsClient,
    config: Arc<HollowFleetConfig>,
    index: usize,
    stats: Arc<HollowStats>,
    shutdown: watch::Receiver<bool>,
) {
    let registered = match client
        .call_with_retry(
            "RegisterContainerInstance",
            &registration(&config, index),
            Some(12),
        )
        .await
    {
        Ok(answer) => answer,
        Err(error) => {
            tracing::error!(index, %error, "hollow instance could not register");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    stats.registered.fetch_add(1, Ordering::Relaxed);
    let instance_arn = registered["containerInstance"]["containerInstanceArn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cluster_arn =
        wharf_agent_channel::cluster_arn_of_instance(&instance_arn).unwrap_or_default();
    let mut session = SessionConfig::new(&cluster_arn, &instance_arn);
    session.heartbeat = config.heartbeat;
    let (events_tx, mut events) = mpsc::channel(16);
    let session_task = tokio::spawn(run_session(
        client.clone(),
        session,
        events_tx,
        None,
        shutdown,
    ));
    // The status each task was last reported in (or is being reported in), so that
    // repeated payloads (every reconnection resends all live tasks) are not reported
    // twice.
    let mut reported: HashMap<String, &'static str> = HashMap::new();
    // Reports in flight. Like a real agent, whose every task moves on its own, an
    // instance reports its tasks concurrently rather than one after another: with
    // binpack, one instance receives most of a burst of placements.
    let mut reports = FuturesUnordered::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            Some((arn, want, result)) = reports.next(), if !reports.is_empty() => {
                match result {
                    Ok(()) => {
                        let counter = if want == "RUNNING" {
                            &stats.running_reported
                        } else {
                            &stats.stopped_reported
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        tracing::warn!(task = %arn, %error, "hollow report failed");
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        // Reported again if a later payload asks for it.
                        if reported.get(&arn) == Some(&want) {
                            reported.remove(&arn);
                        }
                    }
                }
                continue;
            }
        };
        let Some(event) = event else {
            break;
        };
        match event {
            SessionEvent::Connected => {
                stats.connected.fetch_add(1, Ordering::Relaxed);
            }
            SessionEvent::Disconnected => {
                stats.connected.fetch_sub(1, Ordering::Relaxed);
            }
            SessionEvent::Refused(error) => {
                tracing::warn!(index, code = %error.code, "hollow instance refused");
                break;
            }
            SessionEvent::Tasks(tasks) => {
                for task in tasks {
                    let want: &'static str = if task.desired_status == "STOPPED" {
                        "STOPPED"
                    } else {
                        "RUNNING"
                    };
                    if reported.get(&task.arn) == Some(&want)
                        || reported.get(&task.arn) == Some(&"STOPPED")
                    {
                        continue;
                    }
                    reported.insert(task.arn.clone(), want);
                    let client = &client;
                    let cluster = &config.cluster;
                    reports.push(async move {
                        let result = report(client, cluster, &task, want).await;
                        (task.arn, want, result)
                    });
                }
            }
        }
    }
    // Reports already made are finished before the instance goes away.
    while let Some((_, want, result)) = reports.next().await {
        if result.is_ok() {
            let counter = if want == "RUNNING" {
                &stats.running_reported
            } else {
                &stats.stopped_reported
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = session_task.await;
}

/// Registers and starts `config.instances` hollow instances against `client`'s endpoint.
pub fn start_fleet(client: EcsClient, config: HollowFleetConfig) -> HollowFleet {
    let (shutdown, receiver) = watch::channel(false);
    let stats = Arc::new(HollowStats::default());
    let config = Arc::new(config);
    let handles = (0..config.instances)
        .map(|index| {
            tokio::spawn(run_instance(
                client.clone(),
                config.clone(),
                index,
                stats.clone(),
                receiver.clone(),
            ))
        })
        .collect();
    HollowFleet {
        shutdown,
        handles,
        stats,
    }
}
