//! What the agent registers its node as: resources, attributes and tags, in the shape
//! of RegisterContainerInstance.
//!
//! A pure function of the host's facts and the agent's configuration, so that what a
//! node advertises is tested without a host or a control plane.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Facts about the host, gathered once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory, MiB.
    pub memory_mib: i64,
    /// The machine architecture as `uname -m` spells it (`x86_64`, `aarch64`).
    pub arch: String,
    /// The container engine's version, e.g. `20.10.24`.
    pub engine_version: String,
    /// The newest Docker remote API version the engine speaks, e.g. `1.41`.
    pub engine_api_version: String,
    /// The host name, used as the EC2 instance id's stand-in.
    pub hostname: String,
}

/// The configuration that shapes the registration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistrationInput {
    /// The cluster to join.
    pub cluster: String,
    /// MiB kept back from tasks (`ECS_RESERVED_MEMORY`).
    pub reserved_memory_mib: i64,
    /// TCP ports tasks may not take (`ECS_RESERVED_PORTS`).
    pub reserved_ports: Vec<u16>,
    /// UDP ports tasks may not take (`ECS_RESERVED_PORTS_UDP`).
    pub reserved_ports_udp: Vec<u16>,
    /// Custom attributes (`ECS_INSTANCE_ATTRIBUTES`).
    pub attributes: BTreeMap<String, String>,
    /// Tags (`ECS_CONTAINER_INSTANCE_TAGS`).
    pub tags: BTreeMap<String, String>,
    /// Logging drivers tasks may use (`ECS_AVAILABLE_LOGGING_DRIVERS`).
    pub logging_drivers: Vec<String>,
    /// `ecs.availability-zone`.
    pub availability_zone: String,
    /// `ecs.instance-type`.
    pub instance_type: String,
    /// A registration to reuse (from the agent's data directory).
    pub container_instance_arn: Option<String>,
}

/// The agent's version, reported in `versionInfo`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The attribute that tells the load balancer where this node's published ports are
/// reached (`ECS_INSTANCE_ATTRIBUTES` may set it).
pub const HOST_ADDRESS_ATTRIBUTE: &str = "wharf.host-address";

/// The host address when the configuration names none: the load balancer of `wharf up`
/// runs on the same machine.
pub const DEFAULT_HOST_ADDRESS: &str = "127.0.0.1";

/// The oldest Docker remote API version ECS's capability attributes name.
const OLDEST_REMOTE_API_MINOR: u32 = 17;

/// ECS's name for the CPU architecture.
fn ecs_architecture(arch: &str) -> &str {
    match arch {
        "aarch64" | "arm64" => "arm64",
        "x86_64" | "amd64" => "x86_64",
        other => other,
    }
}

/// The capability attributes a task definition's `requiresAttributes` is matched
/// against.
pub fn capability_attributes(facts: &HostFacts, logging_drivers: &[String]) -> Vec<String> {
    let mut capabilities = Vec::new();
    let newest_minor = facts
        .engine_api_version
        .strip_prefix("1.")
        .and_then(|minor| minor.parse::<u32>().ok())
        .unwrap_or(OLDEST_REMOTE_API_MINOR);
    for minor in OLDEST_REMOTE_API_MINOR..=newest_minor {
        capabilities.push(format!(
            "com.amazonaws.ecs.capability.docker-remote-api.1.{minor}"
        ));
    }
    for driver in logging_drivers {
        capabilities.push(format!(
            "com.amazonaws.ecs.capability.logging-driver.{driver}"
        ));
    }
    capabilities.extend(
        [
            "com.amazonaws.ecs.capability.privileged-container",
            "ecs.capability.container-health-check",
            "ecs.capability.container-ordering",
            "ecs.capability.task-cpu-mem-limit",
        ]
        .map(str::to_owned),
    );
    capabilities
}

/// The RegisterContainerInstance request for this node.
pub fn registration_request(facts: &HostFacts, input: &RegistrationInput) -> Value {
    let mut attributes = vec![
        json!({"name": "ecs.os-type", "value": "linux"}),
        json!({"name": "ecs.os-family", "value": "LINUX"}),
        json!({"name": "ecs.cpu-architecture", "value": ecs_architecture(&facts.arch)}),
        json!({"name": "ecs.availability-zone", "value": input.availability_zone}),
        json!({"name": "ecs.instance-type", "value": input.instance_type}),
    ];
    for capability in capability_attributes(facts, &input.logging_drivers) {
        attributes.push(json!({ "name": capability }));
    }
    // Where the load balancer reaches this node's published ports; a node that is not
    // the load balancer's own host sets it through ECS_INSTANCE_ATTRIBUTES.
    if !input.attributes.contains_key(HOST_ADDRESS_ATTRIBUTE) {
        attributes.push(json!({"name": HOST_ADDRESS_ATTRIBUTE, "value": DEFAULT_HOST_ADDRESS}));
    }
    for (name, value) in &input.attributes {
        attributes.push(json!({"name": name, "value": value}));
    }
    let ports = |ports: &[u16]| -> Vec<String> { ports.iter().map(u16::to_string).collect() };
    let document = json!({
        "instanceId": format!("i-{}", facts.hostname),
        "availabilityZone": input.availability_zone,
        "instanceType": input.instance_type,
        "architecture": ecs_architecture(&facts.arch),
    });
    let mut request = json!({
        "cluster": input.cluster,
        "instanceIdentityDocument": document.to_string(),
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": facts.cpus as i64 * 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": (facts.memory_mib - input.reserved_memory_mib).max(0)},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ports(&input.reserved_ports)},
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": ports(&input.reserved_ports_udp)},
        ],
        "versionInfo": {
            "agentVersion": AGENT_VERSION,
            "agentHash": "wharf",
            "dockerVersion": format!("DockerVersion: {}", facts.engine_version),
        },
        "attributes": attributes,
        "tags": input.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    });
    if let Some(arn) = &input.container_instance_arn {
        request["containerInstanceArn"] = json!(arn);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_mib: 24_000,
            arch: "x86_64".into(),
            engine_version: "20.10.24".into(),
            engine_api_version: "1.41".into(),
            hostname: "node1".into(),
        }
    }

    #[test]
    fn resources_are_cores_times_1024_and_memory_minus_reserved() {
        let input = RegistrationInput {
            cluster: "c".into(),
            reserved_memory_mib: 512,
            reserved_ports: vec![22, 2375],
            ..Default::default()
        };
        let request = registration_request(&facts(), &input);
        let resources = request["totalResources"].as_array().unwrap();
        assert_eq!(resources[0]["integerValue"], 2048);
        assert_eq!(resources[1]["integerValue"], 23_488);
        assert_eq!(resources[2]["stringSetValue"], json!(["22", "2375"]));
        assert!(request.get("containerInstanceArn").is_none());
    }

    #[test]
    fn capabilities_cover_every_remote_api_up_to_the_engine_and_each_driver() {
        let capabilities = capability_attributes(&facts(), &["json-file".into(), "none".into()]);
        assert!(capabilities
            .contains(&"com.amazonaws.ecs.capability.docker-remote-api.1.17".to_owned()));
        assert!(capabilities
            .contains(&"com.amazonaws.ecs.capability.docker-remote-api.1.41".to_owned()));
        assert!(!capabilities
            .contains(&"com.amazonaws.ecs.capability.docker-remote-api.1.42".to_owned()));
        assert!(
            capabilities.contains(&"com.amazonaws.ecs.capability.logging-driver.none".to_owned())
        );
        assert!(!capabilities
            .iter()
            .any(|c| c.ends_with("logging-driver.awslogs")));
    }

    #[test]
    fn custom_attributes_tags_and_reuse_are_carried() {
        let input = RegistrationInput {
            cluster: "c".into(),
            attributes: [("stack".to_owned(), "prod".to_owned())].into(),
            tags: [("team".to_owned(), "a".to_owned())].into(),
            container_instance_arn: Some("arn:aws:ecs:us-east-1:0:container-instance/c/x".into()),
            availability_zone: "us-east-1a".into(),
            ..Default::default()
        };
        let request = registration_request(&facts(), &input);
        let attributes = request["attributes"].as_array().unwrap();
        assert!(attributes.contains(&json!({"name": "stack", "value": "prod"})));
        assert!(
            attributes.contains(&json!({"name": "ecs.availability-zone", "value": "us-east-1a"}))
        );
        assert_eq!(request["tags"], json!([{"key": "team", "value": "a"}]));
        assert!(attributes.contains(&json!({"name": "wharf.host-address", "value": "127.0.0.1"})));
        assert_eq!(
            request["containerInstanceArn"],
            "arn:aws:ecs:us-east-1:0:container-instance/c/x"
        );
    }

    #[test]
    fn host_address_defaults_to_loopback_and_the_configuration_overrides_it() {
        let input = RegistrationInput {
            attributes: [("wharf.host-address".to_owned(), "10.0.0.7".to_owned())].into(),
            ..Default::default()
        };
        let request = registration_request(&facts(), &input);
        let named: Vec<&Value> = request["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"] == "wharf.host-address")
            .collect();
        assert_eq!(
            named,
            [&json!({"name": "wharf.host-address", "value": "10.0.0.7"})]
        );
    }
}
