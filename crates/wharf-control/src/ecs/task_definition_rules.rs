//! The rules Amazon ECS applies to a `RegisterTaskDefinition` request, as one pure
//! function: [`validate_registration`] checks the request, fills the defaults ECS
//! fills, computes `compatibilities` and `requiresAttributes`, and extracts what
//! placement needs. It does no I/O and knows nothing of revisions, ARNs or clocks: the
//! caller adds `taskDefinitionArn`, `revision`, `status`, `registeredAt` and
//! `registeredBy`.
//!
//! Exception names and message texts are the ones real ECS returns where they could be
//! confirmed from published error reports; the others follow ECS's own phrasing
//! patterns (`Invalid '<member>' setting for container '<name>'.`). Wrong JSON types
//! answer `SerializationException`, as AWS JSON services do; the API layer normally
//! catches those first by checking the request against the botocore model.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};
use wharf_aws::AwsError;

/// A task definition that passed ECS's registration rules.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinitionSpec {
    /// The family (task definition name).
    pub family: String,
    /// The normalized `TaskDefinition` object in the botocore wire shape (camelCase),
    /// without `taskDefinitionArn`, `revision`, `status`, `registeredAt`,
    /// `registeredBy` and `deregisteredAt`, which the caller adds.
    pub wire: Value,
    /// What the scheduler needs to place a task of this definition.
    pub placement: TaskResources,
    /// The request's tags as `(key, value)` pairs, in request order.
    pub tags: Vec<(String, String)>,
}

/// The resources and constraints a task of a definition asks of a container instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskResources {
    /// CPU units: the task-level `cpu` when set, else the sum of the containers' `cpu`.
    pub cpu_units: i64,
    /// Memory in MiB: the task-level `memory` when set, else the sum over containers of
    /// `memoryReservation`, or `memory` where no reservation is given (the amount ECS
    /// subtracts from an instance's available memory).
    pub memory_mib: i64,
    /// TCP ports the task binds on the instance, sorted and without duplicates: static
    /// `hostPort`s in bridge mode, `containerPort`s in host and awsvpc mode.
    pub host_ports_tcp: Vec<u16>,
    /// UDP ports, as for TCP.
    pub host_ports_udp: Vec<u16>,
    /// Attributes an instance must carry: the computed `requiresAttributes`.
    pub requires_attributes: Vec<(String, Option<String>)>,
    /// Expressions of the definition's `memberOf` placement constraints.
    pub member_of: Vec<String>,
}

/// Most containers one task definition may have.
const MAX_CONTAINERS: usize = 10;
/// Longest family, container or volume name.
const MAX_NAME_LEN: usize = 255;
/// Least memory (MiB) a container may be given: Docker 20.10 reserves 6 MiB.
const MIN_CONTAINER_MEMORY_MIB: i64 = 6;
/// Task-level CPU range for EC2 and external instances (0.125 to 192 vCPUs).
const TASK_CPU_RANGE: std::ops::RangeInclusive<i64> = 128..=196_608;
/// Most placement constraints in a task definition.
const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
/// Most tags on one resource.
const MAX_TAGS: usize = 50;
/// Log drivers Fargate supports.
const FARGATE_LOG_DRIVERS: [&str; 3] = ["awslogs", "splunk", "awsfirelens"];

/// The members of the request that the `TaskDefinition` shape also has and that are
/// echoed unchanged (the ones ECS rewrites are handled separately).
const ECHOED_TASK_MEMBERS: [&str; 12] = [
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "requiresCompatibilities",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
    "enableFaultInjection",
    "trustedExecutionConfiguration",
];

/// Checks a `RegisterTaskDefinition` request as ECS does and returns the normalized
/// definition, or the error ECS answers with.
pub fn validate_registration(input: &Value) -> Result<TaskDefinitionSpec, AwsError> {
    let request = input
        .as_object()
        .ok_or_else(|| wrong_type("RegisterTaskDefinitionRequest", "structure"))?;

    let family = match opt_str(request, "family", "family")? {
        None | Some("") => return Err(client("Family can not be blank.")),
        Some(f) => f,
    };
    if family.len() > MAX_NAME_LEN || !is_name(family) {
        return Err(client("Family contains invalid characters."));
    }

    let containers_in = opt_array(request, "containerDefinitions", "containerDefinitions")?
        .filter(|list| !list.is_empty())
        .ok_or_else(|| client("Container list cannot be empty."))?;
    if containers_in.len() > MAX_CONTAINERS {
        return Err(client(format!(
            "Too many containers: a task definition can have at most {MAX_CONTAINERS} containers."
        )));
    }

    let mode = NetworkMode::parse(opt_str(request, "networkMode", "networkMode")?)?;
    let compat_requested = requested_compatibilities(request)?;
    let fargate_required = compat_requested.contains(&"FARGATE");

    let task_cpu = task_size(request, "cpu", parse_cpu)?;
    let task_memory = task_size(request, "memory", parse_memory)?;
    if let Some(cpu) = task_cpu {
        if !fargate_required && !TASK_CPU_RANGE.contains(&cpu) {
            return Err(client("Invalid 'cpu' setting for task."));
        }
    }

    let volumes = parse_volumes(request)?;

    // Containers: shape, names, images, memory and ports, one at a time.
    let mut containers = Vec::with_capacity(containers_in.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    for (index, raw) in containers_in.iter().enumerate() {
        let path = format!("containerDefinitions.{}", index + 1);
        let obj = raw
            .as_object()
            .ok_or_else(|| wrong_type(&path, "structure"))?;
        let container = Container::parse(obj, &path, mode, task_memory.is_some(), &volumes)?;
        if names.insert(container.name.clone(), index).is_some() {
            return Err(client(
                "Container names must be unique within a Task Definition.",
            ));
        }
        containers.push(container);
    }
    if !containers.iter().any(|c| c.essential) {
        return Err(client(
            "Task definition doesn't have any essential container.",
        ));
    }
    check_cross_container_rules(&containers, &names)?;
    check_host_ports(&containers)?;
    check_task_totals(&containers, task_cpu, task_memory)?;

    // Fargate's own rules apply when the caller asked for Fargate.
    let fargate_problem = fargate_problem(mode, task_cpu, task_memory, &containers, &volumes);
    if fargate_required {
        if let Some(err) = fargate_problem.clone() {
            return Err(err);
        }
    }

    let placement_constraints = parse_placement_constraints(request)?;
    let tags = parse_tags(request)?;

    let execution_role = opt_str(request, "executionRoleArn", "executionRoleArn")?
        .filter(|s| !s.is_empty())
        .is_some();
    let task_role = opt_str(request, "taskRoleArn", "taskRoleArn")?
        .filter(|s| !s.is_empty())
        .is_some();
    let attributes = required_attributes(&containers, mode, execution_role, task_role);

    let mut compatibilities = Vec::new();
    if mode != NetworkMode::Awsvpc {
        compatibilities.push("EXTERNAL");
    }
    compatibilities.push("EC2");
    if compat_requested.contains(&"MANAGED_INSTANCES") {
        compatibilities.push("MANAGED_INSTANCES");
    }
    if fargate_problem.is_none() {
        compatibilities.push("FARGATE");
    }

    // The wire object: what the client sent, normalized, plus what ECS computes.
    let mut wire = Map::new();
    wire.insert("family".into(), Value::String(family.to_string()));
    for member in ECHOED_TASK_MEMBERS {
        if let Some(value) = request.get(member).filter(|v| !v.is_null()) {
            wire.insert(member.into(), strip_nulls(value));
        }
    }
    wire.insert(
        "containerDefinitions".into(),
        Value::Array(containers.iter().map(|c| c.wire.clone()).collect()),
    );
    wire.insert(
        "volumes".into(),
        request
            .get("volumes")
            .filter(|v| !v.is_null())
            .map(strip_nulls)
            .unwrap_or_else(|| Value::Array(Vec::new())),
    );
    wire.insert(
        "placementConstraints".into(),
        Value::Array(
            placement_constraints
                .iter()
                .map(|(kind, expression)| {
                    let mut c = Map::new();
                    c.insert("type".into(), Value::String(kind.clone()));
                    if let Some(e) = expression {
                        c.insert("expression".into(), Value::String(e.clone()));
                    }
                    Value::Object(c)
                })
                .collect(),
        ),
    );
    wire.insert(
        "requiresAttributes".into(),
        Value::Array(
            attributes
                .iter()
                .map(|name| {
                    let mut a = Map::new();
                    a.insert("name".into(), Value::String(name.clone()));
                    Value::Object(a)
                })
                .collect(),
        ),
    );
    wire.insert(
        "compatibilities".into(),
        Value::Array(
            compatibilities
                .iter()
                .map(|c| Value::String((*c).to_string()))
                .collect(),
        ),
    );
    if let Some(cpu) = task_cpu {
        wire.insert("cpu".into(), Value::String(cpu.to_string()));
    }
    if let Some(memory) = task_memory {
        wire.insert("memory".into(), Value::String(memory.to_string()));
    }

    let placement = TaskResources {
        cpu_units: task_cpu.unwrap_or_else(|| containers.iter().map(|c| c.cpu).sum()),
        memory_mib: task_memory.unwrap_or_else(|| {
            containers
                .iter()
                .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0))
                .sum()
        }),
        host_ports_tcp: host_ports(&containers, Protocol::Tcp),
        host_ports_udp: host_ports(&containers, Protocol::Udp),
        requires_attributes: attributes.into_iter().map(|name| (name, None)).collect(),
        member_of: placement_constraints
            .into_iter()
            .filter_map(|(_, expression)| expression)
            .collect(),
    };

    Ok(TaskDefinitionSpec {
        family: family.to_string(),
        wire: Value::Object(wire),
        placement,
        tags,
    })
}

/// The task's Docker network mode; `bridge` when the request names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkMode {
    Bridge,
    Host,
    Awsvpc,
    None,
}

impl NetworkMode {
    fn parse(value: Option<&str>) -> Result<Self, AwsError> {
        match value {
            None | Some("bridge") => Ok(Self::Bridge),
            Some("host") => Ok(Self::Host),
            Some("awsvpc") => Ok(Self::Awsvpc),
            Some("none") => Ok(Self::None),
            Some(other) => Err(enum_violation(
                other,
                "networkMode",
                "[bridge, host, awsvpc, none]",
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge",
            Self::Host => "host",
            Self::Awsvpc => "awsvpc",
            Self::None => "none",
        }
    }

    /// In host and awsvpc mode a container port is bound as itself.
    fn binds_container_port(self) -> bool {
        matches!(self, Self::Host | Self::Awsvpc)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn upper(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// One port mapping after defaults: the ports a task binds.
#[derive(Debug, Clone)]
struct PortBinding {
    protocol: Protocol,
    /// Host ports bound statically (empty for a dynamic bridge mapping).
    host_ports: Vec<u16>,
}

/// What the rules need to know about one container, next to its normalized wire form.
#[derive(Debug, Clone)]
struct Container {
    name: String,
    essential: bool,
    cpu: i64,
    memory: Option<i64>,
    memory_reservation: Option<i64>,
    bindings: Vec<PortBinding>,
    depends_on: Vec<(String, String)>,
    has_health_check: bool,
    log_driver: Option<String>,
    image_from_ecr: bool,
    secret_sources: Vec<String>,
    privileged: bool,
    volumes_from: Vec<String>,
    wire: Value,
}

impl Container {
    fn parse(
        obj: &Map<String, Value>,
        path: &str,
        mode: NetworkMode,
        task_memory_set: bool,
        volumes: &Volumes,
    ) -> Result<Self, AwsError> {
        let name = match opt_str(obj, "name", &format!("{path}.name"))? {
            None | Some("") => return Err(client("Container.name should not be null or empty.")),
            Some(n) => n.to_string(),
        };
        if name.len() > MAX_NAME_LEN || !is_name(&name) {
            return Err(client("Container.name contains invalid characters."));
        }
        let image = match opt_str(obj, "image", &format!("{path}.image"))? {
            None => return Err(client("Container.image should not be null or empty.")),
            Some(i) if i.trim().is_empty() => {
                return Err(client("Container.image should not be null or empty."))
            }
            Some(i) => i,
        };
        if !image.chars().all(is_image_char) {
            return Err(client("Container.image contains invalid characters."));
        }

        let essential = opt_bool(obj, "essential", &format!("{path}.essential"))?.unwrap_or(true);
        let cpu = opt_int(obj, "cpu", &format!("{path}.cpu"))?.unwrap_or(0);
        if cpu < 0 {
            return Err(container_setting("cpu", &name));
        }
        let memory = opt_int(obj, "memory", &format!("{path}.memory"))?;
        let memory_reservation = opt_int(
            obj,
            "memoryReservation",
            &format!("{path}.memoryReservation"),
        )?;
        if memory.is_none() && memory_reservation.is_none() && !task_memory_set {
            return Err(client(format!(
                "Invalid setting for container '{name}'. At least one of 'memory' or 'memoryReservation' must be specified."
            )));
        }
        if memory.is_some_and(|m| m < MIN_CONTAINER_MEMORY_MIB) {
            return Err(container_setting("memory", &name));
        }
        if memory_reservation.is_some_and(|r| r < MIN_CONTAINER_MEMORY_MIB) {
            return Err(container_setting("memoryReservation", &name));
        }
        if let (Some(m), Some(r)) = (memory, memory_reservation) {
            if r > m {
                return Err(container_setting("memoryReservation", &name));
            }
        }

        let mut wire = match strip_nulls(&Value::Object(obj.clone())) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        wire.insert("essential".into(), Value::Bool(essential));
        wire.insert("cpu".into(), Value::from(cpu));
        for list in ["environment", "mountPoints", "volumesFrom"] {
            if !wire.contains_key(list) {
                wire.insert(list.into(), Value::Array(Vec::new()));
            }
        }

        let (mappings, bindings) = parse_port_mappings(obj, path, &name, mode)?;
        wire.insert("portMappings".into(), Value::Array(mappings));

        let links =
            opt_array(obj, "links", &format!("{path}.links"))?.is_some_and(|l| !l.is_empty());
        if links && mode != NetworkMode::Bridge {
            return Err(client(format!(
                "Links are not supported when networkMode={}.",
                mode.as_str()
            )));
        }

        let mut depends_on = Vec::new();
        for (i, dep) in opt_array(obj, "dependsOn", &format!("{path}.dependsOn"))?
            .unwrap_or(&Vec::new())
            .iter()
            .enumerate()
        {
            let dpath = format!("{path}.dependsOn.{}", i + 1);
            let dep = dep
                .as_object()
                .ok_or_else(|| wrong_type(&dpath, "structure"))?;
            let target = opt_str(dep, "containerName", &format!("{dpath}.containerName"))?
                .ok_or_else(|| missing(&format!("{dpath}.containerName")))?;
            let condition = opt_str(dep, "condition", &format!("{dpath}.condition"))?
                .ok_or_else(|| missing(&format!("{dpath}.condition")))?;
            if !["START", "COMPLETE", "SUCCESS", "HEALTHY"].contains(&condition) {
                return Err(enum_violation(
                    condition,
                    &format!("{dpath}.condition"),
                    "[START, COMPLETE, SUCCESS, HEALTHY]",
                ));
            }
            depends_on.push((target.to_string(), condition.to_string()));
        }

        let has_health_check = match obj.get("healthCheck").filter(|v| !v.is_null()) {
            None => false,
            Some(check) => {
                let normalized =
                    normalize_health_check(check, &format!("{path}.healthCheck"), &name)?;
                wire.insert("healthCheck".into(), normalized);
                true
            }
        };

        let log_driver = match obj.get("logConfiguration").filter(|v| !v.is_null()) {
            None => None,
            Some(log) => {
                let lpath = format!("{path}.logConfiguration");
                let log = log
                    .as_object()
                    .ok_or_else(|| wrong_type(&lpath, "structure"))?;
                let driver = opt_str(log, "logDriver", &format!("{lpath}.logDriver"))?
                    .ok_or_else(|| missing(&format!("{lpath}.logDriver")))?;
                const DRIVERS: [&str; 8] = [
                    "json-file",
                    "syslog",
                    "journald",
                    "gelf",
                    "fluentd",
                    "awslogs",
                    "splunk",
                    "awsfirelens",
                ];
                if !DRIVERS.contains(&driver) {
                    return Err(enum_violation(
                        driver,
                        &format!("{lpath}.logDriver"),
                        "[json-file, syslog, journald, gelf, fluentd, awslogs, splunk, awsfirelens]",
                    ));
                }
                Some(driver.to_string())
            }
        };

        for (i, mount) in opt_array(obj, "mountPoints", &format!("{path}.mountPoints"))?
            .unwrap_or(&Vec::new())
            .iter()
            .enumerate()
        {
            let mpath = format!("{path}.mountPoints.{}", i + 1);
            let mount = mount
                .as_object()
                .ok_or_else(|| wrong_type(&mpath, "structure"))?;
            let source = opt_str(mount, "sourceVolume", &format!("{mpath}.sourceVolume"))?;
            opt_str(mount, "containerPath", &format!("{mpath}.containerPath"))?;
            opt_bool(mount, "readOnly", &format!("{mpath}.readOnly"))?;
            let source = source.unwrap_or("null");
            if !volumes.names.contains(source) {
                return Err(client(format!("Unknown volume '{source}'.")));
            }
        }

        let mut volumes_from = Vec::new();
        for (i, from) in opt_array(obj, "volumesFrom", &format!("{path}.volumesFrom"))?
            .unwrap_or(&Vec::new())
            .iter()
            .enumerate()
        {
            let fpath = format!("{path}.volumesFrom.{}", i + 1);
            let from = from
                .as_object()
                .ok_or_else(|| wrong_type(&fpath, "structure"))?;
            let source = opt_str(from, "sourceContainer", &format!("{fpath}.sourceContainer"))?;
            opt_bool(from, "readOnly", &format!("{fpath}.readOnly"))?;
            volumes_from.push(source.unwrap_or("null").to_string());
        }

        let mut secret_sources = Vec::new();
        for (i, secret) in opt_array(obj, "secrets", &format!("{path}.secrets"))?
            .unwrap_or(&Vec::new())
            .iter()
            .enumerate()
        {
            let spath = format!("{path}.secrets.{}", i + 1);
            let secret = secret
                .as_object()
                .ok_or_else(|| wrong_type(&spath, "structure"))?;
            opt_str(secret, "name", &format!("{spath}.name"))?
                .ok_or_else(|| missing(&format!("{spath}.name")))?;
            let from = opt_str(secret, "valueFrom", &format!("{spath}.valueFrom"))?
                .ok_or_else(|| missing(&format!("{spath}.valueFrom")))?;
            secret_sources.push(from.to_string());
        }

        for member in ["startTimeout", "stopTimeout"] {
            if opt_int(obj, member, &format!("{path}.{member}"))?.is_some_and(|t| t < 0) {
                return Err(container_setting(member, &name));
            }
        }
        let privileged =
            opt_bool(obj, "privileged", &format!("{path}.privileged"))?.unwrap_or(false);

        Ok(Self {
            image_from_ecr: is_ecr_image(image),
            name,
            essential,
            cpu,
            memory,
            memory_reservation,
            bindings,
            depends_on,
            has_health_check,
            log_driver,
            secret_sources,
            privileged,
            volumes_from,
            wire: Value::Object(wire),
        })
    }
}

/// Validates a container's port mappings, fills `protocol` and `hostPort` as ECS does,
/// and returns the normalized mappings with the bindings they make.
fn parse_port_mappings(
    obj: &Map<String, Value>,
    path: &str,
    name: &str,
    mode: NetworkMode,
) -> Result<(Vec<Value>, Vec<PortBinding>), AwsError> {
    let Some(list) = opt_array(obj, "portMappings", &format!("{path}.portMappings"))? else {
        return Ok((Vec::new(), Vec::new()));
    };
    if !list.is_empty() && mode == NetworkMode::None {
        return Err(client(
            "Port mappings are not supported when networkMode=none.",
        ));
    }
    let mut mappings = Vec::with_capacity(list.len());
    let mut bindings = Vec::with_capacity(list.len());
    for (i, mapping) in list.iter().enumerate() {
        let ppath = format!("{path}.portMappings.{}", i + 1);
        let map = mapping
            .as_object()
            .ok_or_else(|| wrong_type(&ppath, "structure"))?;
        let mut out = match strip_nulls(mapping) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let protocol = match opt_str(map, "protocol", &format!("{ppath}.protocol"))? {
            None | Some("tcp") => Protocol::Tcp,
            Some("udp") => Protocol::Udp,
            Some(other) => {
                return Err(enum_violation(
                    other,
                    &format!("{ppath}.protocol"),
                    "[tcp, udp]",
                ))
            }
        };
        out.insert(
            "protocol".into(),
            Value::String(
                if protocol == Protocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                }
                .into(),
            ),
        );
        let container_port = opt_int(map, "containerPort", &format!("{ppath}.containerPort"))?;
        let host_port = opt_int(map, "hostPort", &format!("{ppath}.hostPort"))?;
        let range = opt_str(
            map,
            "containerPortRange",
            &format!("{ppath}.containerPortRange"),
        )?;

        let host_ports = match (container_port, range) {
            (None, Some(range)) => {
                let (first, last) = parse_port_range(range)
                    .ok_or_else(|| container_setting("containerPortRange", name))?;
                if host_port.is_some() {
                    return Err(container_setting("hostPort", name));
                }
                match mode {
                    NetworkMode::Awsvpc => (first..=last).collect(),
                    NetworkMode::Bridge => Vec::new(),
                    _ => return Err(container_setting("containerPortRange", name)),
                }
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(container_setting("containerPort", name));
            }
            (Some(container_port), None) => {
                let container_port = u16::try_from(container_port)
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| container_setting("containerPort", name))?;
                let host_port = match host_port {
                    None if mode.binds_container_port() => container_port,
                    None => 0,
                    Some(h) => u16::try_from(h).map_err(|_| container_setting("hostPort", name))?,
                };
                if mode.binds_container_port() && host_port != container_port {
                    return Err(client(format!(
                        "When networkMode={}, the host ports and container ports in port mappings must match.",
                        mode.as_str()
                    )));
                }
                out.insert("hostPort".into(), Value::from(host_port));
                if host_port == 0 {
                    Vec::new()
                } else {
                    vec![host_port]
                }
            }
        };
        mappings.push(Value::Object(out));
        bindings.push(PortBinding {
            protocol,
            host_ports,
        });
    }
    Ok((mappings, bindings))
}

/// Parses `"first-last"` with `1 <= first < last <= 65535`.
fn parse_port_range(range: &str) -> Option<(u16, u16)> {
    let (first, last) = range.split_once('-')?;
    let first: u16 = first.trim().parse().ok()?;
    let last: u16 = last.trim().parse().ok()?;
    (first >= 1 && first < last).then_some((first, last))
}

/// Checks a health check's bounds and fills ECS's defaults (interval 30, timeout 5,
/// retries 3; no start period).
fn normalize_health_check(check: &Value, path: &str, name: &str) -> Result<Value, AwsError> {
    let obj = check
        .as_object()
        .ok_or_else(|| wrong_type(path, "structure"))?;
    let command = opt_array(obj, "command", &format!("{path}.command"))?
        .ok_or_else(|| missing(&format!("{path}.command")))?;
    if command.is_empty() {
        return Err(container_setting("healthCheck.command", name));
    }
    for (i, part) in command.iter().enumerate() {
        if !part.is_string() {
            return Err(wrong_type(&format!("{path}.command.{}", i + 1), "string"));
        }
    }
    let mut out = match strip_nulls(check) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let bounds: [(&str, i64, i64, Option<i64>); 4] = [
        ("interval", 5, 300, Some(30)),
        ("timeout", 2, 60, Some(5)),
        ("retries", 1, 10, Some(3)),
        ("startPeriod", 0, 300, None),
    ];
    for (member, low, high, default) in bounds {
        match opt_int(obj, member, &format!("{path}.{member}"))? {
            Some(v) if v < low || v > high => {
                return Err(container_setting(&format!("healthCheck.{member}"), name))
            }
            Some(_) => {}
            None => {
                if let Some(d) = default {
                    out.insert(member.into(), Value::from(d));
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Task-level volumes, by name, with what Fargate needs to know about them.
#[derive(Debug, Default)]
struct Volumes {
    names: HashSet<String>,
    /// Whether any volume is a host bind mount (`host.sourcePath`) or a Docker volume,
    /// which Fargate does not offer.
    fargate_incompatible: bool,
}

fn parse_volumes(request: &Map<String, Value>) -> Result<Volumes, AwsError> {
    let mut volumes = Volumes::default();
    for (i, volume) in opt_array(request, "volumes", "volumes")?
        .unwrap_or(&Vec::new())
        .iter()
        .enumerate()
    {
        let path = format!("volumes.{}", i + 1);
        let obj = volume
            .as_object()
            .ok_or_else(|| wrong_type(&path, "structure"))?;
        let name = opt_str(obj, "name", &format!("{path}.name"))?.unwrap_or("");
        if name.is_empty() {
            return Err(client("Volume.name should not be null or empty."));
        }
        if name.len() > MAX_NAME_LEN || !is_name(name) {
            return Err(client("Volume.name contains invalid characters."));
        }
        if !volumes.names.insert(name.to_string()) {
            return Err(client(format!(
                "Volume names must be unique within a Task Definition: '{name}'."
            )));
        }
        if let Some(host) = obj.get("host").filter(|v| !v.is_null()) {
            let host = host
                .as_object()
                .ok_or_else(|| wrong_type(&format!("{path}.host"), "structure"))?;
            if opt_str(host, "sourcePath", &format!("{path}.host.sourcePath"))?.is_some() {
                volumes.fargate_incompatible = true;
            }
        }
        if obj
            .get("dockerVolumeConfiguration")
            .is_some_and(|v| !v.is_null())
        {
            volumes.fargate_incompatible = true;
        }
    }
    Ok(volumes)
}

/// Rules that look at several containers: dependencies and `volumesFrom`.
fn check_cross_container_rules(
    containers: &[Container],
    names: &HashMap<String, usize>,
) -> Result<(), AwsError> {
    for container in containers {
        for (target, condition) in &container.depends_on {
            let Some(&index) = names.get(target) else {
                return Err(client(format!(
                    "Cannot depend on container + '{target}' because it does not exist"
                )));
            };
            let dependency = &containers[index];
            match condition.as_str() {
                "SUCCESS" | "COMPLETE" if dependency.essential => {
                    return Err(client(
                        "A dependency container with SUCCESS or COMPLETE condition cannot be an essential container",
                    ))
                }
                "HEALTHY" if !dependency.has_health_check => {
                    return Err(client(format!(
                        "A dependency container with HEALTHY condition must have a health check: container '{target}' has none."
                    )))
                }
                _ => {}
            }
        }
        for source in &container.volumes_from {
            if !names.contains_key(source) {
                return Err(client(format!(
                    "Invalid 'volumesFrom' setting for container '{}': container '{source}' does not exist.",
                    container.name
                )));
            }
        }
    }
    // A dependency cycle would leave every container in it waiting forever.
    let mut state = vec![0u8; containers.len()];
    for start in 0..containers.len() {
        if has_cycle(start, containers, names, &mut state) {
            return Err(client(format!(
                "Container '{}' is part of a dependsOn cycle.",
                containers[start].name
            )));
        }
    }
    Ok(())
}

/// Depth-first search for a cycle in `dependsOn` (0 unvisited, 1 on stack, 2 done).
fn has_cycle(
    node: usize,
    containers: &[Container],
    names: &HashMap<String, usize>,
    state: &mut [u8],
) -> bool {
    match state[node] {
        1 => return true,
        2 => return false,
        _ => {}
    }
    state[node] = 1;
    for (target, _) in &containers[node].depends_on {
        if let Some(&next) = names.get(target) {
            if has_cycle(next, containers, names, state) {
                return true;
            }
        }
    }
    state[node] = 2;
    false
}

/// A host port may be bound once per protocol in a task.
fn check_host_ports(containers: &[Container]) -> Result<(), AwsError> {
    let mut seen: HashSet<(u8, u16)> = HashSet::new();
    for binding in containers.iter().flat_map(|c| &c.bindings) {
        for &port in &binding.host_ports {
            if !seen.insert((binding.protocol as u8, port)) {
                return Err(client(format!(
                    "{} host port '{port}' is mapped multiple times in task.",
                    binding.protocol.upper()
                )));
            }
        }
    }
    Ok(())
}

/// Containers must fit inside the task-level size when one is given.
fn check_task_totals(
    containers: &[Container],
    task_cpu: Option<i64>,
    task_memory: Option<i64>,
) -> Result<(), AwsError> {
    if let Some(task_memory) = task_memory {
        if let Some(c) = containers
            .iter()
            .find(|c| c.memory.is_some_and(|m| m > task_memory))
        {
            return Err(client(format!(
                "The 'memory' setting for container '{}' is greater than for the task.",
                c.name
            )));
        }
        let reserved: i64 = containers.iter().filter_map(|c| c.memory_reservation).sum();
        if reserved > task_memory {
            return Err(client(
                "The sum of all container 'memoryReservation' values cannot be greater than the value of the task 'memory'.",
            ));
        }
    }
    if let Some(task_cpu) = task_cpu {
        let sum: i64 = containers.iter().map(|c| c.cpu).sum();
        if sum > task_cpu {
            return Err(client(
                "The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'.",
            ));
        }
    }
    Ok(())
}

/// Why the definition cannot run on Fargate, as the error ECS gives when Fargate was
/// asked for; `None` when it can.
fn fargate_problem(
    mode: NetworkMode,
    task_cpu: Option<i64>,
    task_memory: Option<i64>,
    containers: &[Container],
    volumes: &Volumes,
) -> Option<AwsError> {
    if mode != NetworkMode::Awsvpc {
        return Some(client(
            "Fargate only supports network mode \u{2018}awsvpc\u{2019}.",
        ));
    }
    let Some(cpu) = task_cpu else {
        return Some(client(
            "Fargate requires that 'cpu' be defined at the task level.",
        ));
    };
    let Some(memory) = task_memory else {
        return Some(client(
            "Fargate requires that 'memory' be defined at the task level.",
        ));
    };
    if !is_fargate_size(cpu, memory) {
        return Some(client(format!(
            "No Fargate configuration exists for given values: {cpu} CPU, {memory} memory. See the Amazon ECS documentation for the valid values."
        )));
    }
    if let Some(driver) = containers
        .iter()
        .filter_map(|c| c.log_driver.as_deref())
        .find(|d| !FARGATE_LOG_DRIVERS.contains(d))
    {
        return Some(client(format!(
            "{driver} is not a valid log driver for Fargate. Must be one of [awslogs,splunk,awsfirelens]."
        )));
    }
    if let Some(c) = containers.iter().find(|c| c.privileged) {
        return Some(client(format!(
            "Invalid 'privileged' setting for container '{}'. Privileged containers are not supported on Fargate.",
            c.name
        )));
    }
    if volumes.fargate_incompatible {
        return Some(client(
            "Fargate does not support host path (sourcePath) or Docker volumes.",
        ));
    }
    None
}

/// The task-level CPU/memory pairs Fargate offers (CPU units, MiB).
pub fn is_fargate_size(cpu: i64, memory: i64) -> bool {
    const GIB: i64 = 1024;
    match cpu {
        256 => matches!(memory, 512 | 1024 | 2048),
        512 => (GIB..=4 * GIB).contains(&memory) && memory % GIB == 0,
        1024 => (2 * GIB..=8 * GIB).contains(&memory) && memory % GIB == 0,
        2048 => (4 * GIB..=16 * GIB).contains(&memory) && memory % GIB == 0,
        4096 => (8 * GIB..=30 * GIB).contains(&memory) && memory % GIB == 0,
        8192 => (16 * GIB..=60 * GIB).contains(&memory) && memory % (4 * GIB) == 0,
        16384 => (32 * GIB..=120 * GIB).contains(&memory) && memory % (8 * GIB) == 0,
        _ => false,
    }
}

/// The attributes ECS adds to `requiresAttributes` for the features a definition uses,
/// in the order ECS lists them; only those seen in real ECS responses.
fn required_attributes(
    containers: &[Container],
    mode: NetworkMode,
    execution_role: bool,
    task_role: bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    };
    for c in containers {
        if let Some(driver) = &c.log_driver {
            add(&format!(
                "com.amazonaws.ecs.capability.logging-driver.{driver}"
            ));
            if driver == "awslogs" && execution_role {
                add("ecs.capability.execution-role-awslogs");
            }
        }
        if c.image_from_ecr {
            add("com.amazonaws.ecs.capability.ecr-auth");
        }
        if c.log_driver.as_deref() == Some("awslogs") {
            add("com.amazonaws.ecs.capability.docker-remote-api.1.19");
        }
    }
    if task_role {
        add("com.amazonaws.ecs.capability.task-iam-role");
    }
    for c in containers {
        if !c.depends_on.is_empty() {
            add("ecs.capability.container-ordering");
        }
        if c.has_health_check {
            add("ecs.capability.container-health-check");
        }
        for source in &c.secret_sources {
            if source.contains(":secretsmanager:") {
                add("ecs.capability.secrets.asm.environment-variables");
            } else {
                add("ecs.capability.secrets.ssm.environment-variables");
            }
        }
    }
    if execution_role && containers.iter().any(|c| c.image_from_ecr) {
        add("ecs.capability.execution-role-ecr-pull");
    }
    if mode == NetworkMode::Awsvpc {
        add("com.amazonaws.ecs.capability.docker-remote-api.1.18");
        add("ecs.capability.task-eni");
    }
    out
}

fn host_ports(containers: &[Container], protocol: Protocol) -> Vec<u16> {
    containers
        .iter()
        .flat_map(|c| &c.bindings)
        .filter(|b| b.protocol == protocol)
        .flat_map(|b| b.host_ports.iter().copied())
        .collect::<BTreeSet<u16>>()
        .into_iter()
        .collect()
}

fn requested_compatibilities(request: &Map<String, Value>) -> Result<Vec<&str>, AwsError> {
    let mut out = Vec::new();
    for (i, value) in opt_array(
        request,
        "requiresCompatibilities",
        "requiresCompatibilities",
    )?
    .map(Vec::as_slice)
    .unwrap_or(&[])
    .iter()
    .enumerate()
    {
        let path = format!("requiresCompatibilities.{}", i + 1);
        let value = value.as_str().ok_or_else(|| wrong_type(&path, "string"))?;
        if !["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"].contains(&value) {
            return Err(enum_violation(
                value,
                &path,
                "[EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES]",
            ));
        }
        out.push(value);
    }
    Ok(out)
}

/// Reads task-level `cpu` or `memory`: a string (numbers are accepted too) that the
/// parser turns into units or MiB.
fn task_size(
    request: &Map<String, Value>,
    member: &str,
    parse: fn(&str) -> Option<i64>,
) -> Result<Option<i64>, AwsError> {
    let text = match request.get(member) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(wrong_type(member, "string")),
    };
    match parse(&text) {
        Some(v) if v > 0 => Ok(Some(v)),
        _ => Err(AwsError::client(
            "InvalidParameterException",
            format!("Invalid '{member}' setting for task."),
        )),
    }
}

/// `"1024"`, `"1 vCPU"`, `"0.25 vcpu"` → CPU units.
pub fn parse_cpu(text: &str) -> Option<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, scale) = match lower
        .strip_suffix("vcpus")
        .or_else(|| lower.strip_suffix("vcpu"))
    {
        Some(n) => (n.trim(), 1024.0),
        None => (lower.as_str(), 1.0),
    };
    scaled_integer(number, scale)
}

/// `"512"`, `"512 MiB"`, `"0.5 GB"`, `"2GiB"` → MiB.
pub fn parse_memory(text: &str) -> Option<i64> {
    let lower = text.trim().to_ascii_lowercase();
    const UNITS: [(&str, f64); 4] = [("gib", 1024.0), ("gb", 1024.0), ("mib", 1.0), ("mb", 1.0)];
    let (number, scale) = UNITS
        .iter()
        .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.trim(), *scale)))
        .unwrap_or((lower.as_str(), 1.0));
    scaled_integer(number, scale)
}

/// A plain decimal number times a scale, when the product is a whole number that fits
/// in an `i32` (the model's integer type).
fn scaled_integer(number: &str, scale: f64) -> Option<i64> {
    if number.is_empty()
        || !number.chars().all(|c| c.is_ascii_digit() || c == '.')
        || number.matches('.').count() > 1
        || number == "."
    {
        return None;
    }
    if scale == 1.0 {
        return number.parse::<i64>().ok().filter(|v| *v <= i32::MAX as i64);
    }
    let value = number.parse::<f64>().ok()? * scale;
    (value.is_finite() && value.fract() == 0.0 && value <= i32::MAX as f64).then_some(value as i64)
}

fn parse_placement_constraints(
    request: &Map<String, Value>,
) -> Result<Vec<(String, Option<String>)>, AwsError> {
    let list = opt_array(request, "placementConstraints", "placementConstraints")?
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if list.len() > MAX_PLACEMENT_CONSTRAINTS {
        return Err(AwsError::client(
            "InvalidParameterException",
            format!("A task definition can have at most {MAX_PLACEMENT_CONSTRAINTS} placement constraints."),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, constraint) in list.iter().enumerate() {
        let path = format!("placementConstraints.{}", i + 1);
        let obj = constraint
            .as_object()
            .ok_or_else(|| wrong_type(&path, "structure"))?;
        let kind = opt_str(obj, "type", &format!("{path}.type"))?;
        let expression = opt_str(obj, "expression", &format!("{path}.expression"))?;
        match kind {
            Some("memberOf") => {}
            Some(other) => {
                return Err(enum_violation(other, &format!("{path}.type"), "[memberOf]"))
            }
            None => return Err(missing(&format!("{path}.type"))),
        }
        let expression = expression.filter(|e| !e.trim().is_empty()).ok_or_else(|| {
            AwsError::client(
                "InvalidParameterException",
                "A memberOf placement constraint requires an expression.",
            )
        })?;
        out.push(("memberOf".to_string(), Some(expression.to_string())));
    }
    Ok(out)
}

fn parse_tags(request: &Map<String, Value>) -> Result<Vec<(String, String)>, AwsError> {
    let list = opt_array(request, "tags", "tags")?
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if list.len() > MAX_TAGS {
        return Err(AwsError::client(
            "InvalidParameterException",
            format!("Too many tags: a resource can have at most {MAX_TAGS} tags."),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut keys = HashSet::new();
    for (i, tag) in list.iter().enumerate() {
        let path = format!("tags.{}", i + 1);
        let obj = tag
            .as_object()
            .ok_or_else(|| wrong_type(&path, "structure"))?;
        let key = opt_str(obj, "key", &format!("{path}.key"))?.unwrap_or("");
        let value = opt_str(obj, "value", &format!("{path}.value"))?.unwrap_or("");
        let key_len = key.chars().count();
        if key_len == 0 || key_len > 128 {
            return Err(AwsError::client(
                "InvalidParameterException",
                format!("Tag keys must be between 1 and 128 characters: '{key}'."),
            ));
        }
        if value.chars().count() > 256 {
            return Err(AwsError::client(
                "InvalidParameterException",
                format!("Tag values must be at most 256 characters (key '{key}')."),
            ));
        }
        if !key.chars().all(is_tag_char) || !value.chars().all(is_tag_char) {
            return Err(AwsError::client(
                "InvalidParameterException",
                format!("Tag '{key}' contains invalid characters."),
            ));
        }
        if key.len() >= 4 && key[..4].eq_ignore_ascii_case("aws:") {
            return Err(AwsError::client(
                "InvalidParameterException",
                "Tag keys beginning with 'aws:' are reserved for AWS use.",
            ));
        }
        if !keys.insert(key.to_string()) {
            return Err(AwsError::client(
                "InvalidParameterException",
                format!("Duplicate tag key '{key}'."),
            ));
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Letters, numbers, hyphens and underscores: ECS's rule for family, container and
/// volume names.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Image references: letters, numbers, and `- _ : . / # @` (digests use `@` and `:`).
fn is_image_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '/' | '#' | '@')
}

/// The model's tag pattern: letters, separators, numbers and `_ . : / = + - @`.
fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric()
        || c.is_whitespace()
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

/// `<account>.dkr.ecr.<region>.amazonaws.com/<repo>` (and the `.com.cn` partition).
fn is_ecr_image(image: &str) -> bool {
    let registry = image.split('/').next().unwrap_or("");
    image.contains('/')
        && registry.contains(".dkr.ecr.")
        && (registry.ends_with(".amazonaws.com") || registry.ends_with(".amazonaws.com.cn"))
}

/// A copy of a value with `null` members of objects removed, recursively: ECS treats a
/// null member as absent and never echoes one.
fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, AwsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(path, "string")),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, AwsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(path, "boolean")),
    }
}

/// An integer member; the model's integers are 32-bit.
fn opt_int(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i64>, AwsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|v| i32::try_from(*v).is_ok())
            .map(Some)
            .ok_or_else(|| wrong_type(path, "integer")),
        Some(_) => Err(wrong_type(path, "integer")),
    }
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Vec<Value>>, AwsError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(wrong_type(path, "list")),
    }
}

fn client(message: impl Into<String>) -> AwsError {
    AwsError::client("ClientException", message)
}

/// ECS's message for a container member with an invalid value.
fn container_setting(member: &str, container: &str) -> AwsError {
    client(format!(
        "Invalid '{member}' setting for container '{container}'."
    ))
}

fn wrong_type(path: &str, expected: &str) -> AwsError {
    AwsError::client(
        "SerializationException",
        format!("Unexpected value type at '{path}': expected {expected}."),
    )
}

fn missing(path: &str) -> AwsError {
    AwsError::client(
        "InvalidParameterException",
        format!("1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null"),
    )
}

fn enum_violation(value: &str, path: &str, allowed: &str) -> AwsError {
    AwsError::client(
        "InvalidParameterException",
        format!("1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy enum value set: {allowed}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WEB_BRIDGE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/taskdefs/web-bridge.json"
    ));
    const API_FARGATE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/taskdefs/api-fargate.json"
    ));
    const APP_WITH_SIDECARS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/taskdefs/app-with-sidecars.json"
    ));

    fn load(text: &str) -> Value {
        serde_json::from_str(text).expect("test data is JSON")
    }

    /// A minimal valid EC2 definition to mutate.
    fn minimal() -> Value {
        json!({
            "family": "web",
            "containerDefinitions": [{"name": "app", "image": "nginx", "memory": 128}]
        })
    }

    fn attrs(spec: &TaskDefinitionSpec) -> Vec<&str> {
        spec.placement
            .requires_attributes
            .iter()
            .map(|(n, _)| n.as_str())
            .collect()
    }

    #[test]
    fn minimal_definition_gets_ecs_defaults() {
        let spec = validate_registration(&minimal()).unwrap();
        assert_eq!(spec.family, "web");
        let c = &spec.wire["containerDefinitions"][0];
        assert_eq!(c["essential"], json!(true));
        assert_eq!(c["cpu"], json!(0));
        for list in ["portMappings", "environment", "mountPoints", "volumesFrom"] {
            assert_eq!(c[list], json!([]), "{list}");
        }
        assert_eq!(spec.wire["volumes"], json!([]));
        assert_eq!(spec.wire["placementConstraints"], json!([]));
        assert_eq!(spec.wire["requiresAttributes"], json!([]));
        assert_eq!(spec.wire["compatibilities"], json!(["EXTERNAL", "EC2"]));
        // ECS does not echo a network mode the client did not send.
        assert!(spec.wire.get("networkMode").is_none());
        assert!(spec.wire.get("requiresCompatibilities").is_none());
        for absent in ["taskDefinitionArn", "revision", "status", "registeredAt"] {
            assert!(spec.wire.get(absent).is_none());
        }
        assert_eq!(spec.placement.cpu_units, 0);
        assert_eq!(spec.placement.memory_mib, 128);
        assert!(spec.tags.is_empty());
    }

    #[test]
    fn web_server_example_validates() {
        let spec = validate_registration(&load(WEB_BRIDGE)).unwrap();
        let c = &spec.wire["containerDefinitions"][0];
        assert_eq!(
            c["portMappings"],
            json!([
                {"containerPort": 80, "hostPort": 8080, "protocol": "tcp"},
                {"containerPort": 443, "hostPort": 0, "protocol": "tcp"},
                {"containerPort": 5353, "hostPort": 5353, "protocol": "udp"}
            ])
        );
        assert_eq!(c["healthCheck"]["interval"], json!(30));
        assert_eq!(c["healthCheck"]["timeout"], json!(5));
        assert_eq!(c["healthCheck"]["retries"], json!(3));
        assert_eq!(c["healthCheck"]["startPeriod"], json!(10));
        // Members Wharf does not interpret are echoed as given.
        assert_eq!(c["dockerLabels"], json!({"team": "web"}));
        assert_eq!(c["ulimits"][0]["softLimit"], json!(65536));
        assert_eq!(spec.placement.host_ports_tcp, vec![8080]);
        assert_eq!(spec.placement.host_ports_udp, vec![5353]);
        assert_eq!(spec.placement.cpu_units, 256);
        assert_eq!(spec.placement.memory_mib, 256);
        assert_eq!(
            spec.placement.member_of,
            vec!["attribute:ecs.os-type == linux".to_string()]
        );
        assert_eq!(spec.tags, vec![("team".to_string(), "web".to_string())]);
        assert_eq!(
            attrs(&spec),
            vec![
                "com.amazonaws.ecs.capability.logging-driver.json-file",
                "com.amazonaws.ecs.capability.task-iam-role",
                "ecs.capability.container-health-check",
            ]
        );
        assert_eq!(
            spec.wire["taskRoleArn"],
            json!("arn:aws:iam::000000000000:role/web-task")
        );
    }

    #[test]
    fn fargate_example_validates_and_normalizes_sizes() {
        let spec = validate_registration(&load(API_FARGATE)).unwrap();
        assert_eq!(spec.wire["cpu"], json!("512"));
        assert_eq!(spec.wire["memory"], json!("1024"));
        assert_eq!(spec.wire["networkMode"], json!("awsvpc"));
        assert_eq!(spec.wire["compatibilities"], json!(["EC2", "FARGATE"]));
        assert_eq!(spec.wire["requiresCompatibilities"], json!(["FARGATE"]));
        let mapping = &spec.wire["containerDefinitions"][0]["portMappings"][0];
        assert_eq!(mapping["hostPort"], json!(8080));
        assert_eq!(mapping["name"], json!("api-http"));
        assert_eq!(spec.placement.cpu_units, 512);
        assert_eq!(spec.placement.memory_mib, 1024);
        assert_eq!(spec.placement.host_ports_tcp, vec![8080]);
        assert_eq!(
            attrs(&spec),
            vec![
                "com.amazonaws.ecs.capability.logging-driver.awslogs",
                "ecs.capability.execution-role-awslogs",
                "com.amazonaws.ecs.capability.ecr-auth",
                "com.amazonaws.ecs.capability.docker-remote-api.1.19",
                "ecs.capability.secrets.ssm.environment-variables",
                "ecs.capability.execution-role-ecr-pull",
                "com.amazonaws.ecs.capability.docker-remote-api.1.18",
                "ecs.capability.task-eni",
            ]
        );
    }

    #[test]
    fn multi_container_example_validates() {
        let spec = validate_registration(&load(APP_WITH_SIDECARS)).unwrap();
        let containers = spec.wire["containerDefinitions"].as_array().unwrap();
        assert_eq!(containers.len(), 3);
        assert_eq!(containers[0]["essential"], json!(false));
        assert_eq!(containers[2]["portMappings"][0]["hostPort"], json!(0));
        assert_eq!(spec.wire["networkMode"], json!("bridge"));
        assert_eq!(spec.placement.memory_mib, 1024);
        assert_eq!(spec.placement.cpu_units, 640);
        assert!(spec.placement.host_ports_tcp.is_empty());
        assert_eq!(
            attrs(&spec),
            vec![
                "ecs.capability.container-health-check",
                "ecs.capability.container-ordering"
            ]
        );
        assert_eq!(spec.wire["compatibilities"], json!(["EXTERNAL", "EC2"]));
    }

    #[test]
    fn placement_sums_containers_without_task_size() {
        let input = json!({
            "family": "f",
            "containerDefinitions": [
                {"name": "a", "image": "x", "cpu": 100, "memory": 300, "memoryReservation": 200},
                {"name": "b", "image": "x", "cpu": 50, "memory": 100}
            ]
        });
        let spec = validate_registration(&input).unwrap();
        assert_eq!(spec.placement.cpu_units, 150);
        assert_eq!(spec.placement.memory_mib, 300);
    }

    #[test]
    fn host_and_awsvpc_modes_bind_container_ports() {
        for mode in ["host", "awsvpc"] {
            let input = json!({
                "family": "f", "networkMode": mode,
                "containerDefinitions": [{"name": "a", "image": "x", "memory": 64,
                    "portMappings": [{"containerPort": 9000}, {"containerPort": 53, "protocol": "udp"}]}]
            });
            let spec = validate_registration(&input).unwrap();
            assert_eq!(spec.placement.host_ports_tcp, vec![9000], "{mode}");
            assert_eq!(spec.placement.host_ports_udp, vec![53], "{mode}");
            assert_eq!(
                spec.wire["containerDefinitions"][0]["portMappings"][0]["hostPort"],
                json!(9000)
            );
        }
    }

    #[test]
    fn awsvpc_with_valid_size_is_fargate_compatible_without_asking() {
        let input = json!({
            "family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "a", "image": "x"}]
        });
        let spec = validate_registration(&input).unwrap();
        assert_eq!(spec.wire["compatibilities"], json!(["EC2", "FARGATE"]));
        let input = json!({
            "family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "4096",
            "containerDefinitions": [{"name": "a", "image": "x"}]
        });
        let spec = validate_registration(&input).unwrap();
        assert_eq!(spec.wire["compatibilities"], json!(["EC2"]));
    }

    #[test]
    fn task_size_strings_parse_like_ecs() {
        for (text, units) in [
            ("256", 256),
            ("1 vCPU", 1024),
            ("0.25 vcpu", 256),
            (".5 vCPU", 512),
            ("2vcpu", 2048),
        ] {
            assert_eq!(parse_cpu(text), Some(units), "{text}");
        }
        for (text, mib) in [
            ("512", 512),
            ("0.5 GB", 512),
            ("1GB", 1024),
            ("512 MiB", 512),
            ("2 GiB", 2048),
            ("3072 MB", 3072),
        ] {
            assert_eq!(parse_memory(text), Some(mib), "{text}");
        }
        for bad in [
            "",
            "abc",
            "1.5",
            "-1",
            "1 2",
            "0.1 vCPU",
            "1e3",
            "9999999999",
        ] {
            assert_eq!(parse_cpu(bad), None, "{bad}");
        }
        for bad in ["", "GB", "0.3 GB", "1.2.3", "1 TB"] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }

    /// Every Fargate pair the documentation lists, and nothing else.
    #[test]
    fn fargate_pairs_are_exactly_the_documented_table() {
        let mut expected: HashSet<(i64, i64)> = HashSet::new();
        for m in [512, 1024, 2048] {
            expected.insert((256, m));
        }
        for gb in 1..=4 {
            expected.insert((512, gb * 1024));
        }
        for gb in 2..=8 {
            expected.insert((1024, gb * 1024));
        }
        for gb in 4..=16 {
            expected.insert((2048, gb * 1024));
        }
        for gb in 8..=30 {
            expected.insert((4096, gb * 1024));
        }
        for gb in (16..=60).step_by(4) {
            expected.insert((8192, gb * 1024));
        }
        for gb in (32..=120).step_by(8) {
            expected.insert((16384, gb * 1024));
        }
        let cpus = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];
        for cpu in cpus {
            for memory in (0..=130 * 1024).step_by(256) {
                assert_eq!(
                    is_fargate_size(cpu, memory),
                    expected.contains(&(cpu, memory)),
                    "{cpu} CPU, {memory} MiB"
                );
            }
        }
        // And each listed pair registers as a Fargate task definition.
        for (cpu, memory) in &expected {
            let input = json!({
                "family": "f", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
                "cpu": cpu.to_string(), "memory": memory.to_string(),
                "containerDefinitions": [{"name": "a", "image": "x"}]
            });
            validate_registration(&input).unwrap_or_else(|e| panic!("{cpu}/{memory}: {e}"));
        }
    }

    /// Each invalid case: a mutation of a valid request, the exception, and a
    /// distinctive part of ECS's message.
    #[test]
    fn invalid_requests_get_ecs_errors() {
        type Mutation = fn(&mut Value);
        let cases: Vec<(&str, Mutation, &str, &str)> = vec![
            ("no family", |v| { v.as_object_mut().unwrap().remove("family"); }, "ClientException", "Family can not be blank."),
            ("family with a space", |v| v["family"] = json!("my app"), "ClientException", "Family contains invalid characters."),
            ("family too long", |v| v["family"] = json!("a".repeat(256)), "ClientException", "Family contains invalid characters."),
            ("no containers", |v| v["containerDefinitions"] = json!([]), "ClientException", "Container list cannot be empty."),
            ("eleven containers", |v| {
                v["containerDefinitions"] = Value::Array((0..11).map(|i| json!({"name": format!("c{i}"), "image": "x", "memory": 64})).collect());
            }, "ClientException", "at most 10 containers"),
            ("container without name", |v| { v["containerDefinitions"][0].as_object_mut().unwrap().remove("name"); }, "ClientException", "Container.name should not be null or empty."),
            ("container name with dot", |v| v["containerDefinitions"][0]["name"] = json!("a.b"), "ClientException", "Container.name contains invalid characters."),
            ("duplicate names", |v| { let c = v["containerDefinitions"][0].clone(); v["containerDefinitions"].as_array_mut().unwrap().push(c); }, "ClientException", "Container names must be unique within a Task Definition."),
            ("no image", |v| { v["containerDefinitions"][0].as_object_mut().unwrap().remove("image"); }, "ClientException", "Container.image should not be null or empty."),
            ("empty image", |v| v["containerDefinitions"][0]["image"] = json!(""), "ClientException", "Container.image should not be null or empty."),
            ("image with space", |v| v["containerDefinitions"][0]["image"] = json!("nginx latest"), "ClientException", "Container.image contains invalid characters."),
            ("nothing essential", |v| v["containerDefinitions"][0]["essential"] = json!(false), "ClientException", "Task definition doesn't have any essential container."),
            ("no memory anywhere", |v| { v["containerDefinitions"][0].as_object_mut().unwrap().remove("memory"); }, "ClientException", "Invalid setting for container 'app'. At least one of 'memory' or 'memoryReservation' must be specified."),
            ("memory below 6 MiB", |v| v["containerDefinitions"][0]["memory"] = json!(4), "ClientException", "Invalid 'memory' setting for container 'app'."),
            ("reservation above memory", |v| v["containerDefinitions"][0]["memoryReservation"] = json!(256), "ClientException", "Invalid 'memoryReservation' setting for container 'app'."),
            ("negative cpu", |v| v["containerDefinitions"][0]["cpu"] = json!(-1), "ClientException", "Invalid 'cpu' setting for container 'app'."),
            ("container memory above task", |v| v["memory"] = json!("64"), "ClientException", "The 'memory' setting for container 'app' is greater than for the task."),
            ("reservations above task", |v| {
                v["memory"] = json!("512");
                v["containerDefinitions"] = json!([
                    {"name": "a", "image": "x", "memoryReservation": 300},
                    {"name": "b", "image": "x", "memoryReservation": 300}]);
            }, "ClientException", "The sum of all container 'memoryReservation' values cannot be greater than the value of the task 'memory'."),
            ("container cpu above task", |v| { v["cpu"] = json!("128"); v["containerDefinitions"][0]["cpu"] = json!(256); }, "ClientException", "The sum of all container 'cpu' values"),
            ("unparseable task cpu", |v| v["cpu"] = json!("lots"), "InvalidParameterException", "Invalid 'cpu' setting for task."),
            ("empty task cpu", |v| v["cpu"] = json!(""), "InvalidParameterException", "Invalid 'cpu' setting for task."),
            ("task cpu below 128 on EC2", |v| v["cpu"] = json!("64"), "ClientException", "Invalid 'cpu' setting for task."),
            ("unparseable task memory", |v| v["memory"] = json!("1 TB"), "InvalidParameterException", "Invalid 'memory' setting for task."),
            ("bad network mode", |v| v["networkMode"] = json!("overlay"), "InvalidParameterException", "Member must satisfy enum value set: [bridge, host, awsvpc, none]"),
            ("bad compatibility", |v| v["requiresCompatibilities"] = json!(["LAMBDA"]), "InvalidParameterException", "enum value set: [EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES]"),
            ("fargate in bridge mode", |v| { v["requiresCompatibilities"] = json!(["FARGATE"]); v["cpu"] = json!("256"); v["memory"] = json!("512"); }, "ClientException", "Fargate only supports network mode \u{2018}awsvpc\u{2019}."),
            ("fargate without cpu", |v| { v["requiresCompatibilities"] = json!(["FARGATE"]); v["networkMode"] = json!("awsvpc"); v["memory"] = json!("512"); }, "ClientException", "Fargate requires that 'cpu' be defined at the task level."),
            ("fargate without memory", |v| { v["requiresCompatibilities"] = json!(["FARGATE"]); v["networkMode"] = json!("awsvpc"); v["cpu"] = json!("256"); }, "ClientException", "Fargate requires that 'memory' be defined at the task level."),
            ("fargate bad pair", |v| { v["requiresCompatibilities"] = json!(["FARGATE"]); v["networkMode"] = json!("awsvpc"); v["cpu"] = json!("1024"); v["memory"] = json!("1024"); v["containerDefinitions"][0]["memory"] = json!(512); }, "ClientException", "No Fargate configuration exists for given values: 1024 CPU, 1024 memory. See the Amazon ECS documentation for the valid values."),
            ("fargate json-file logs", |v| {
                v["requiresCompatibilities"] = json!(["FARGATE"]); v["networkMode"] = json!("awsvpc"); v["cpu"] = json!("256"); v["memory"] = json!("512");
                v["containerDefinitions"][0]["logConfiguration"] = json!({"logDriver": "json-file"});
            }, "ClientException", "json-file is not a valid log driver"),
            ("awsvpc host port differs", |v| { v["networkMode"] = json!("awsvpc"); v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 80, "hostPort": 8080}]); }, "ClientException", "When networkMode=awsvpc, the host ports and container ports in port mappings must match."),
            ("host mode host port differs", |v| { v["networkMode"] = json!("host"); v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 80, "hostPort": 81}]); }, "ClientException", "When networkMode=host, the host ports and container ports in port mappings must match."),
            ("container port zero", |v| v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 0}]), "ClientException", "Invalid 'containerPort' setting for container 'app'."),
            ("container port too big", |v| v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 70000}]), "ClientException", "Invalid 'containerPort' setting for container 'app'."),
            ("no container port", |v| v["containerDefinitions"][0]["portMappings"] = json!([{"hostPort": 80}]), "ClientException", "Invalid 'containerPort' setting for container 'app'."),
            ("host port too big", |v| v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 80, "hostPort": 65536}]), "ClientException", "Invalid 'hostPort' setting for container 'app'."),
            ("bad protocol", |v| v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 80, "protocol": "sctp"}]), "InvalidParameterException", "enum value set: [tcp, udp]"),
            ("duplicate host port", |v| {
                v["containerDefinitions"] = json!([
                    {"name": "a", "image": "x", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 3000}]},
                    {"name": "b", "image": "x", "memory": 64, "portMappings": [{"containerPort": 81, "hostPort": 3000}]}]);
            }, "ClientException", "TCP host port '3000' is mapped multiple times in task."),
            ("duplicate awsvpc udp port", |v| {
                v["networkMode"] = json!("awsvpc");
                v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 53, "protocol": "udp"}, {"containerPort": 53, "protocol": "udp"}]);
            }, "ClientException", "UDP host port '53' is mapped multiple times in task."),
            ("ports with network mode none", |v| { v["networkMode"] = json!("none"); v["containerDefinitions"][0]["portMappings"] = json!([{"containerPort": 80}]); }, "ClientException", "networkMode=none"),
            ("links in awsvpc", |v| { v["networkMode"] = json!("awsvpc"); v["containerDefinitions"][0]["links"] = json!(["db"]); }, "ClientException", "Links are not supported when networkMode=awsvpc."),
            ("depends on missing container", |v| v["containerDefinitions"][0]["dependsOn"] = json!([{"containerName": "db", "condition": "START"}]), "ClientException", "Cannot depend on container + 'db' because it does not exist"),
            ("bad dependency condition", |v| {
                v["containerDefinitions"] = json!([
                    {"name": "a", "image": "x", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "RUNNING"}]},
                    {"name": "b", "image": "x", "memory": 64}]);
            }, "InvalidParameterException", "enum value set: [START, COMPLETE, SUCCESS, HEALTHY]"),
            ("success on essential", |v| {
                v["containerDefinitions"] = json!([
                    {"name": "a", "image": "x", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "SUCCESS"}]},
                    {"name": "b", "image": "x", "memory": 64}]);
            }, "ClientException", "A dependency container with SUCCESS or COMPLETE condition cannot be an essential container"),
            ("healthy without health check", |v| {
                v["containerDefinitions"] = json!([
                    {"name": "a", "image": "x", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "HEALTHY"}]},
                    {"name": "b", "image": "x", "memory": 64}]);
            }, "ClientException", "HEALTHY condition must have a health check"),
            ("dependency cycle", |v| {
                v["containerDefinitions"] = json!([
                    {"name": "a", "image": "x", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "START"}]},
                    {"name": "b", "image": "x", "memory": 64, "dependsOn": [{"containerName": "a", "condition": "START"}]}]);
            }, "ClientException", "dependsOn cycle"),
            ("health interval too short", |v| v["containerDefinitions"][0]["healthCheck"] = json!({"command": ["CMD", "true"], "interval": 4}), "ClientException", "Invalid 'healthCheck.interval' setting for container 'app'."),
            ("health timeout too long", |v| v["containerDefinitions"][0]["healthCheck"] = json!({"command": ["CMD", "true"], "timeout": 61}), "ClientException", "Invalid 'healthCheck.timeout'"),
            ("health retries zero", |v| v["containerDefinitions"][0]["healthCheck"] = json!({"command": ["CMD", "true"], "retries": 0}), "ClientException", "Invalid 'healthCheck.retries'"),
            ("health start period too long", |v| v["containerDefinitions"][0]["healthCheck"] = json!({"command": ["CMD", "true"], "startPeriod": 301}), "ClientException", "Invalid 'healthCheck.startPeriod'"),
            ("health check without command", |v| v["containerDefinitions"][0]["healthCheck"] = json!({"interval": 30}), "InvalidParameterException", "healthCheck.command"),
            ("unknown volume", |v| v["containerDefinitions"][0]["mountPoints"] = json!([{"sourceVolume": "data", "containerPath": "/data"}]), "ClientException", "Unknown volume 'data'."),
            ("duplicate volume", |v| v["volumes"] = json!([{"name": "d"}, {"name": "d"}]), "ClientException", "Volume names must be unique"),
            ("volumesFrom missing container", |v| v["containerDefinitions"][0]["volumesFrom"] = json!([{"sourceContainer": "ghost"}]), "ClientException", "Invalid 'volumesFrom' setting for container 'app'"),
            ("distinctInstance constraint", |v| v["placementConstraints"] = json!([{"type": "distinctInstance"}]), "InvalidParameterException", "enum value set: [memberOf]"),
            ("memberOf without expression", |v| v["placementConstraints"] = json!([{"type": "memberOf"}]), "InvalidParameterException", "requires an expression"),
            ("eleven constraints", |v| v["placementConstraints"] = Value::Array(vec![json!({"type": "memberOf", "expression": "attribute:a == b"}); 11]), "InvalidParameterException", "at most 10 placement constraints"),
            ("fifty-one tags", |v| v["tags"] = Value::Array((0..51).map(|i| json!({"key": format!("k{i}"), "value": "v"})).collect()), "InvalidParameterException", "at most 50 tags"),
            ("empty tag key", |v| v["tags"] = json!([{"key": "", "value": "v"}]), "InvalidParameterException", "between 1 and 128"),
            ("long tag key", |v| v["tags"] = json!([{"key": "k".repeat(129)}]), "InvalidParameterException", "between 1 and 128"),
            ("long tag value", |v| v["tags"] = json!([{"key": "k", "value": "v".repeat(257)}]), "InvalidParameterException", "at most 256"),
            ("aws tag prefix", |v| v["tags"] = json!([{"key": "AWS:owner", "value": "me"}]), "InvalidParameterException", "reserved"),
            ("wrong type for memory", |v| v["containerDefinitions"][0]["memory"] = json!("128"), "SerializationException", "containerDefinitions.1.memory"),
            ("containers not a list", |v| v["containerDefinitions"] = json!({"name": "a"}), "SerializationException", "containerDefinitions"),
            ("request not an object", |v| *v = json!([1, 2]), "SerializationException", "structure"),
        ];
        for (label, mutate, code, message) in cases {
            let mut input = minimal();
            mutate(&mut input);
            match validate_registration(&input) {
                Ok(_) => panic!("{label}: accepted"),
                Err(err) => {
                    assert_eq!(err.code, code, "{label}: {}", err.message);
                    assert!(
                        err.message.contains(message),
                        "{label}: message {:?} lacks {message:?}",
                        err.message
                    );
                    assert_eq!(err.status, 400, "{label}");
                }
            }
        }
    }

    #[test]
    fn valid_variants_are_accepted() {
        let cases: Vec<Value> = vec![
            // Task-level memory replaces container memory.
            json!({"family": "f", "memory": "512", "containerDefinitions": [{"name": "a", "image": "x"}]}),
            // Only a reservation.
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "x", "memoryReservation": 64}]}),
            // Equal reservation and limit.
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64, "memoryReservation": 64}]}),
            // tcp and udp on the same port.
            json!({"family": "f", "networkMode": "host", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64,
                "portMappings": [{"containerPort": 53}, {"containerPort": 53, "protocol": "udp"}]}]}),
            // Dynamic bridge ports may repeat.
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64,
                "portMappings": [{"containerPort": 80, "hostPort": 0}, {"containerPort": 81}]}]}),
            // Digest image and explicit nulls.
            json!({"family": "F_1-x", "taskRoleArn": null, "containerDefinitions": [{"name": "a", "image": "repo/app@sha256:abc", "memory": 64, "links": null}]}),
            // A port range in awsvpc mode.
            json!({"family": "f", "networkMode": "awsvpc", "containerDefinitions": [{"name": "a", "image": "x", "memory": 64,
                "portMappings": [{"containerPortRange": "7000-7002"}]}]}),
            // EXTERNAL and MANAGED_INSTANCES.
            json!({"family": "f", "requiresCompatibilities": ["EXTERNAL", "EC2", "MANAGED_INSTANCES"], "containerDefinitions": [{"name": "a", "image": "x", "memory": 64}]}),
            // START/COMPLETE on a non-essential dependency, HEALTHY on a checked one.
            json!({"family": "f", "containerDefinitions": [
                {"name": "a", "image": "x", "memory": 64, "dependsOn": [
                    {"containerName": "b", "condition": "COMPLETE"}, {"containerName": "c", "condition": "HEALTHY"}]},
                {"name": "b", "image": "x", "memory": 64, "essential": false},
                {"name": "c", "image": "x", "memory": 64, "healthCheck": {"command": ["CMD", "true"]}}]}),
            // Ten containers.
            json!({"family": "f", "containerDefinitions": (0..10).map(|i| json!({"name": format!("c{i}"), "image": "x", "memory": 64})).collect::<Vec<_>>()}),
        ];
        for (i, input) in cases.iter().enumerate() {
            if let Err(e) = validate_registration(input) {
                panic!("case {i}: {e}");
            }
        }
        let spec = validate_registration(&cases[6]).unwrap();
        assert_eq!(spec.placement.host_ports_tcp, vec![7000, 7001, 7002]);
        let spec = validate_registration(&cases[7]).unwrap();
        assert_eq!(
            spec.wire["compatibilities"],
            json!(["EXTERNAL", "EC2", "MANAGED_INSTANCES"])
        );
        let spec = validate_registration(&cases[5]).unwrap();
        assert!(spec.wire.get("taskRoleArn").is_none());
        assert!(spec.wire["containerDefinitions"][0].get("links").is_none());
    }

    /// Deterministic pseudo-random JSON (a tiny xorshift generator), mixed with
    /// mutations of valid definitions: whatever arrives, the function answers.
    #[test]
    fn arbitrary_json_never_panics() {
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn below(&mut self, n: u64) -> u64 {
                self.next() % n
            }
        }
        const KEYS: [&str; 24] = [
            "family",
            "containerDefinitions",
            "name",
            "image",
            "memory",
            "memoryReservation",
            "cpu",
            "networkMode",
            "portMappings",
            "containerPort",
            "hostPort",
            "protocol",
            "dependsOn",
            "containerName",
            "condition",
            "healthCheck",
            "interval",
            "volumes",
            "mountPoints",
            "sourceVolume",
            "tags",
            "key",
            "requiresCompatibilities",
            "containerPortRange",
        ];
        const STRINGS: [&str; 12] = [
            "",
            "a",
            "app",
            "FARGATE",
            "awsvpc",
            "host",
            "udp",
            "HEALTHY",
            "1 vCPU",
            "0.5 GB",
            "7000-6000",
            "\u{1F600}",
        ];
        fn gen(rng: &mut Rng, depth: u32) -> Value {
            match rng.below(if depth == 0 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(rng.below(2) == 0),
                2 => json!(
                    [-1i64, 0, 1, 6, 80, 512, 65535, 65536, i64::MAX, i64::MIN]
                        [rng.below(10) as usize]
                ),
                3 => json!(STRINGS[rng.below(STRINGS.len() as u64) as usize]),
                4 => json!(rng.next() as f64 / 3.0),
                5 => Value::Array((0..rng.below(4)).map(|_| gen(rng, depth - 1)).collect()),
                _ => Value::Object(
                    (0..rng.below(6))
                        .map(|_| {
                            (
                                KEYS[rng.below(KEYS.len() as u64) as usize].to_string(),
                                gen(rng, depth - 1),
                            )
                        })
                        .collect(),
                ),
            }
        }
        let seeds = [
            load(WEB_BRIDGE),
            load(API_FARGATE),
            load(APP_WITH_SIDECARS),
            minimal(),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            let input = if round % 2 == 0 {
                gen(&mut rng, 4)
            } else {
                // Replace one member somewhere inside a valid definition.
                let mut v = seeds[rng.below(seeds.len() as u64) as usize].clone();
                let mut pointer = String::new();
                let mut cursor = &v;
                for _ in 0..rng.below(4) {
                    let next = match cursor {
                        Value::Object(m) if !m.is_empty() => {
                            let k = m.keys().nth(rng.below(m.len() as u64) as usize).unwrap();
                            pointer.push('/');
                            pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                            &m[k]
                        }
                        Value::Array(a) if !a.is_empty() => {
                            let i = rng.below(a.len() as u64) as usize;
                            pointer.push_str(&format!("/{i}"));
                            &a[i]
                        }
                        _ => break,
                    };
                    cursor = next;
                }
                let replacement = gen(&mut rng, 3);
                *v.pointer_mut(&pointer).unwrap() = replacement;
                v
            };
            let _ = validate_registration(&input);
        }
    }
}
