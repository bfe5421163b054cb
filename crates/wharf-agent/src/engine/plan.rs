//! From a task payload to a typed plan: what each container of the task is, how it is
//! created, and what it waits for. Pure functions over the payload's JSON; nothing here
//! talks to the engine.
//!
//! The task definition arrives in ECS's wire shape (`containerDefinitions`,
//! `networkMode`, ...) with RunTask's `overrides` beside it; both are parsed here once,
//! and the rest of the engine works on [`TaskPlan`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use wharf_agent_channel::TaskPayload;

use crate::runtime::{
    BindMount, ContainerSpec, HealthCheckSpec, HostEntry, NetworkMode, PortBinding, Protocol,
    Ulimit,
};

/// Label: the cluster ARN of the task.
pub const LABEL_CLUSTER: &str = "com.amazonaws.ecs.cluster";
/// Label: the task ARN.
pub const LABEL_TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
/// Label: the container's name in the task definition.
pub const LABEL_CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
/// Label: the task definition family.
pub const LABEL_FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
/// Label: the task definition revision.
pub const LABEL_REVISION: &str = "com.amazonaws.ecs.task-definition-version";
/// Label: the container instance whose agent created the container; re-adoption after
/// a restart only considers containers carrying this instance's ARN.
pub const LABEL_INSTANCE_ARN: &str = "wharf.container-instance-arn";
/// Label: the id under which the container reaches the task metadata endpoint
/// (`…/v4/<id>`); a label so that it survives an agent restart.
pub const LABEL_METADATA_ID: &str = "wharf.metadata-id";

/// Why a task definition cannot be run on this instance. Its `Display` is the task's
/// stopped reason, worded as ECS words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskPlanError {
    /// The definition is malformed or asks for something this agent cannot do.
    #[error("CannotCreateContainerError: {0}")]
    Unsupported(String),
}

/// A `dependsOn` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has exited, with any code.
    Complete,
    /// The dependency has exited with code 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

impl DependencyCondition {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "START" => Some(DependencyCondition::Start),
            "COMPLETE" => Some(DependencyCondition::Complete),
            "SUCCESS" => Some(DependencyCondition::Success),
            "HEALTHY" => Some(DependencyCondition::Healthy),
            _ => None,
        }
    }

    /// ECS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::Start => "START",
            DependencyCondition::Complete => "COMPLETE",
            DependencyCondition::Success => "SUCCESS",
            DependencyCondition::Healthy => "HEALTHY",
        }
    }
}

/// One `dependsOn` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The container waited for.
    pub container: String,
    /// What it must have done.
    pub condition: DependencyCondition,
}

/// One container of a task, ready to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    /// Name in the task definition.
    pub name: String,
    /// Container ARN the control plane assigned, when the payload has one.
    pub container_arn: Option<String>,
    /// Whether the task stops when this container exits.
    pub essential: bool,
    /// What must hold before it starts.
    pub depends_on: Vec<Dependency>,
    /// SIGTERM → SIGKILL grace period when the agent stops it.
    pub stop_timeout: Duration,
    /// `portMappings` as defined, in every network mode (in `host` mode they are not
    /// published, but the container still listens on them).
    pub port_mappings: Vec<PortBinding>,
    /// The container's engine spec, without the per-instance parts the engine adds at
    /// creation (name suffix, metadata id).
    pub spec: ContainerSpec,
}

/// A task, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlan {
    /// Task ARN.
    pub arn: String,
    /// Family.
    pub family: String,
    /// Revision.
    pub revision: u32,
    /// Task-level CPU units (`cpu`, after overrides), when set.
    pub cpu_units: Option<u32>,
    /// Task-level memory in MiB (`memory`, after overrides), when set.
    pub memory_mib: Option<u64>,
    /// Network mode as the engine runs it (`awsvpc` runs as `bridge`).
    pub network_mode: NetworkMode,
    /// Containers in definition order.
    pub containers: Vec<ContainerPlan>,
}

/// What the plan needs to know of this agent.
#[derive(Debug, Clone)]
pub struct PlanContext<'a> {
    /// Cluster ARN (a label).
    pub cluster_arn: &'a str,
    /// Instance ARN (a label).
    pub instance_arn: &'a str,
    /// Default stop timeout, for containers without `stopTimeout`.
    pub default_stop_timeout: Duration,
    /// Logging drivers this instance accepts.
    pub logging_drivers: &'a [String],
}

fn unsupported(message: impl Into<String>) -> TaskPlanError {
    TaskPlanError::Unsupported(message.into())
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

fn name_values(value: &Value, name_key: &str, value_key: &str) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    Some((
                        item.get(name_key)?.as_str()?.to_owned(),
                        item.get(value_key)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

fn seconds(value: &Value) -> Duration {
    Duration::from_secs(int(value).unwrap_or(0).max(0) as u64)
}

/// Task-level `cpu`: units (`"256"`) or vCPUs (`"0.25 vcpu"`).
fn parse_task_cpu(value: &Value) -> Option<u32> {
    if let Some(n) = value.as_i64() {
        return u32::try_from(n).ok();
    }
    let text = value.as_str()?.trim().to_ascii_lowercase();
    if let Some(vcpu) = text.strip_suffix("vcpu") {
        let vcpu: f64 = vcpu.trim().parse().ok()?;
        return Some((vcpu * 1024.0).round() as u32);
    }
    text.parse().ok()
}

/// Task-level `memory`: MiB (`"512"`) or GB (`"1 GB"`).
fn parse_task_memory(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let text = value.as_str()?.trim().to_ascii_lowercase();
    if let Some(gb) = text.strip_suffix("gb") {
        let gb: f64 = gb.trim().parse().ok()?;
        return Some((gb * 1024.0).round() as u64);
    }
    text.parse().ok()
}

/// The revision: the definition's `revision`, else the number after the last `:` of
/// the task definition ARN.
fn revision(payload: &TaskPayload) -> u32 {
    payload
        .task_definition
        .get("revision")
        .and_then(int)
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| {
            payload
                .task_definition_arn
                .rsplit(':')
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Parses a payload into a plan. Fails when the definition asks for what this instance
/// cannot do (a logging driver it does not offer, an unknown dependency, a cycle).
pub fn plan_task(payload: &TaskPayload, cx: &PlanContext<'_>) -> Result<TaskPlan, TaskPlanError> {
    let definition = &payload.task_definition;
    let overrides = &payload.overrides;
    // `awsvpc` needs an ENI per task, which a self-hosted node does not have; the task
    // runs on the default bridge instead, with its ports published as in bridge mode.
    let network_mode = match definition.get("networkMode").and_then(Value::as_str) {
        None | Some("bridge") | Some("awsvpc") => NetworkMode::Bridge,
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        Some(other) => {
            return Err(unsupported(format!(
                "network mode {other} is not supported"
            )))
        }
    };
    let family = if payload.family.is_empty() {
        definition
            .get("family")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    } else {
        payload.family.clone()
    };
    let revision = revision(payload);
    let volumes: BTreeMap<String, Option<String>> = definition
        .get("volumes")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| {
                    let name = v.get("name")?.as_str()?.to_owned();
                    let source = v
                        .pointer("/host/sourcePath")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    Some((name, source))
                })
                .collect()
        })
        .unwrap_or_default();
    let container_overrides: BTreeMap<String, &Value> = overrides
        .get("containerOverrides")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|o| Some((o.get("name")?.as_str()?.to_owned(), o)))
                .collect()
        })
        .unwrap_or_default();
    let arns: BTreeMap<&str, &str> = payload
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.container_arn.as_str()))
        .collect();

    let definitions = definition
        .get("containerDefinitions")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| unsupported("the task definition has no containerDefinitions"))?;
    let mut containers = Vec::new();
    for def in definitions {
        let name = def
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| unsupported("a container definition has no name"))?
            .to_owned();
        let image = def
            .get("image")
            .and_then(Value::as_str)
            .ok_or_else(|| unsupported(format!("container {name} has no image")))?
            .to_owned();
        let empty = Value::Null;
        let over = container_overrides.get(&name).copied().unwrap_or(&empty);
        containers.push(plan_container(
            def,
            over,
            ContainerIdentity {
                name: &name,
                image: &image,
                family: &family,
                revision,
                task_arn: &payload.arn,
                container_arn: arns.get(name.as_str()).map(|s| s.to_string()),
            },
            &network_mode,
            &volumes,
            cx,
        )?);
    }
    check_dependencies(&containers)?;
    Ok(TaskPlan {
        arn: payload.arn.clone(),
        family,
        revision,
        cpu_units: overrides
            .get("cpu")
            .and_then(parse_task_cpu)
            .or_else(|| definition.get("cpu").and_then(parse_task_cpu)),
        memory_mib: overrides
            .get("memory")
            .and_then(parse_task_memory)
            .or_else(|| definition.get("memory").and_then(parse_task_memory)),
        network_mode,
        containers,
    })
}

struct ContainerIdentity<'a> {
    name: &'a str,
    image: &'a str,
    family: &'a str,
    revision: u32,
    task_arn: &'a str,
    container_arn: Option<String>,
}

fn plan_container(
    def: &Value,
    over: &Value,
    id: ContainerIdentity<'_>,
    network_mode: &NetworkMode,
    volumes: &BTreeMap<String, Option<String>>,
    cx: &PlanContext<'_>,
) -> Result<ContainerPlan, TaskPlanError> {
    let name = id.name;
    let mut labels = BTreeMap::from([
        (LABEL_CLUSTER.to_owned(), cx.cluster_arn.to_owned()),
        (LABEL_TASK_ARN.to_owned(), id.task_arn.to_owned()),
        (LABEL_CONTAINER_NAME.to_owned(), name.to_owned()),
        (LABEL_FAMILY.to_owned(), id.family.to_owned()),
        (LABEL_REVISION.to_owned(), id.revision.to_string()),
        (LABEL_INSTANCE_ARN.to_owned(), cx.instance_arn.to_owned()),
    ]);
    if let Some(docker_labels) = def.get("dockerLabels").and_then(Value::as_object) {
        for (key, value) in docker_labels {
            // The agent's own labels identify the container; a definition may not
            // overwrite them, or re-adoption would lose it.
            if let Some(value) = value.as_str() {
                labels
                    .entry(key.clone())
                    .or_insert_with(|| value.to_owned());
            }
        }
    }

    // Environment: the definition's, then the override's, a later name replacing an
    // earlier one in place.
    let mut env: Vec<(String, String)> = Vec::new();
    for (key, value) in name_values(&def["environment"], "name", "value")
        .into_iter()
        .chain(name_values(&over["environment"], "name", "value"))
    {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key, value)),
        }
    }

    let mib = |v: &Value| int(v).filter(|n| *n > 0).map(|n| n * 1024 * 1024);
    let memory_bytes = over
        .get("memory")
        .and_then(mib)
        .or_else(|| def.get("memory").and_then(mib));
    let memory_reservation_bytes = over
        .get("memoryReservation")
        .and_then(mib)
        .or_else(|| def.get("memoryReservation").and_then(mib));
    let cpu_units = over
        .get("cpu")
        .and_then(int)
        .or_else(|| def.get("cpu").and_then(int))
        .unwrap_or(0)
        .clamp(0, i64::from(u32::MAX)) as u32;

    let mut port_mappings = Vec::new();
    {
        for mapping in def["portMappings"].as_array().into_iter().flatten() {
            let Some(container_port) = mapping
                .get("containerPort")
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok())
            else {
                return Err(unsupported(format!(
                    "container {name} has a port mapping without a valid containerPort"
                )));
            };
            let protocol = match mapping.get("protocol").and_then(Value::as_str) {
                None | Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(other) => {
                    return Err(unsupported(format!(
                        "container {name}: protocol {other} is not supported"
                    )))
                }
            };
            port_mappings.push(PortBinding {
                container_port,
                host_port: mapping
                    .get("hostPort")
                    .and_then(int)
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
                protocol,
                host_ip: None,
            });
        }
    }

    let (log_driver, log_options) = match def.get("logConfiguration") {
        Some(config) if config.is_object() => {
            let driver = config["logDriver"]
                .as_str()
                .unwrap_or("json-file")
                .to_owned();
            if !cx.logging_drivers.contains(&driver) {
                return Err(unsupported(format!(
                    "container {name}: logging driver {driver} is not available on this \
                     container instance (ECS_AVAILABLE_LOGGING_DRIVERS: {})",
                    cx.logging_drivers.join(", ")
                )));
            }
            let options = config["options"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            (Some(driver), options)
        }
        _ => (None, BTreeMap::new()),
    };

    let health_check = def
        .get("healthCheck")
        .filter(|h| h.is_object())
        .map(|h| HealthCheckSpec {
            test: strings(&h["command"]).unwrap_or_default(),
            interval: seconds(&h["interval"]),
            timeout: seconds(&h["timeout"]),
            retries: int(&h["retries"])
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            start_period: seconds(&h["startPeriod"]),
        });

    let stop_timeout = def
        .get("stopTimeout")
        .and_then(int)
        .filter(|s| *s > 0)
        .map_or(cx.default_stop_timeout, |s| Duration::from_secs(s as u64));

    let mut bind_mounts = Vec::new();
    for mount in def["mountPoints"].as_array().into_iter().flatten() {
        let volume = mount["sourceVolume"].as_str().unwrap_or_default();
        let source = match volumes.get(volume) {
            Some(Some(source)) => source.clone(),
            Some(None) => {
                return Err(unsupported(format!(
                    "container {name}: volume {volume} has no host.sourcePath; \
                     engine-managed task volumes are not supported"
                )))
            }
            None => {
                return Err(unsupported(format!(
                    "container {name}: mount point names unknown volume {volume}"
                )))
            }
        };
        bind_mounts.push(BindMount {
            source,
            container_path: mount["containerPath"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            read_only: mount["readOnly"].as_bool().unwrap_or(false),
        });
    }

    let port_bindings = if network_mode.publishes_ports() {
        port_mappings.clone()
    } else {
        Vec::new()
    };
    let linux = &def["linuxParameters"];
    let spec = ContainerSpec {
        name: String::new(),
        image: id.image.to_owned(),
        labels,
        env,
        command: strings(&over["command"]).or_else(|| strings(&def["command"])),
        entrypoint: strings(&def["entryPoint"]),
        working_dir: def["workingDirectory"].as_str().map(str::to_owned),
        user: def["user"].as_str().map(str::to_owned),
        hostname: def["hostname"].as_str().map(str::to_owned),
        cpu_units,
        memory_bytes,
        memory_reservation_bytes,
        port_bindings,
        network_mode: network_mode.clone(),
        ulimits: def["ulimits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| {
                Some(Ulimit {
                    name: u["name"].as_str()?.to_owned(),
                    soft: int(&u["softLimit"])?,
                    hard: int(&u["hardLimit"])?,
                })
            })
            .collect(),
        init: linux["initProcessEnabled"].as_bool().unwrap_or(false),
        privileged: def["privileged"].as_bool().unwrap_or(false),
        readonly_root_filesystem: def["readonlyRootFilesystem"].as_bool().unwrap_or(false),
        health_check,
        log_driver,
        log_options,
        stop_timeout: Some(stop_timeout),
        extra_hosts: def["extraHosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some(HostEntry {
                    hostname: h["hostname"].as_str()?.to_owned(),
                    ip_address: h["ipAddress"].as_str()?.to_owned(),
                })
            })
            .collect(),
        dns_servers: strings(&def["dnsServers"]).unwrap_or_default(),
        dns_search_domains: strings(&def["dnsSearchDomains"]).unwrap_or_default(),
        security_options: strings(&def["dockerSecurityOptions"]).unwrap_or_default(),
        capabilities_add: strings(&linux["capabilities"]["add"]).unwrap_or_default(),
        capabilities_drop: strings(&linux["capabilities"]["drop"]).unwrap_or_default(),
        sysctls: name_values(&def["systemControls"], "namespace", "value")
            .into_iter()
            .collect(),
        bind_mounts,
    };

    let mut depends_on = Vec::new();
    for dep in def["dependsOn"].as_array().into_iter().flatten() {
        let container = dep["containerName"].as_str().unwrap_or_default().to_owned();
        let condition_text = dep["condition"].as_str().unwrap_or_default();
        let condition = DependencyCondition::parse(condition_text).ok_or_else(|| {
            unsupported(format!(
                "container {name}: unknown dependency condition {condition_text:?}"
            ))
        })?;
        depends_on.push(Dependency {
            container,
            condition,
        });
    }

    Ok(ContainerPlan {
        name: name.to_owned(),
        container_arn: id.container_arn,
        essential: def["essential"].as_bool().unwrap_or(true),
        depends_on,
        stop_timeout,
        port_mappings,
        spec,
    })
}

/// Refuses dependencies on unknown containers, on containers without a health check
/// (for `HEALTHY`), and cycles.
fn check_dependencies(containers: &[ContainerPlan]) -> Result<(), TaskPlanError> {
    let by_name: BTreeMap<&str, &ContainerPlan> =
        containers.iter().map(|c| (c.name.as_str(), c)).collect();
    for container in containers {
        for dep in &container.depends_on {
            let Some(target) = by_name.get(dep.container.as_str()) else {
                return Err(unsupported(format!(
                    "container {} depends on unknown container {}",
                    container.name, dep.container
                )));
            };
            if dep.condition == DependencyCondition::Healthy && target.spec.health_check.is_none() {
                return Err(unsupported(format!(
                    "container {} depends on {} being HEALTHY, which has no health check",
                    container.name, dep.container
                )));
            }
        }
    }
    // Kahn's algorithm: whatever cannot be ordered is on a cycle.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = containers
            .iter()
            .filter(|c| !done.contains(c.name.as_str()))
            .filter(|c| {
                c.depends_on
                    .iter()
                    .all(|d| done.contains(d.container.as_str()))
            })
            .map(|c| c.name.as_str())
            .collect();
        if ready.is_empty() {
            break;
        }
        done.extend(ready);
    }
    if done.len() < containers.len() {
        return Err(unsupported("the containers' dependsOn form a cycle"));
    }
    Ok(())
}
