//! Container instances and their attributes: RegisterContainerInstance,
//! DeregisterContainerInstance, DescribeContainerInstances, ListContainerInstances,
//! UpdateContainerInstancesState, PutAttributes, DeleteAttributes, ListAttributes.
//!
//! An instance's remaining resources are never stored: they are derived from its
//! registered resources and the unstopped tasks placed on it, so they cannot drift.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{ContainerInstanceStatus, ResourceKind, TaskStatus};

use super::tags::{check_tags, wire_tags, Tag, WireTag};
use super::tasks::TaskRecord;
use super::{epoch_seconds, invalid, keys, paging, Cx, EcsService};
use crate::records::{too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

/// An instance attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// A container instance, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    pub id: String,
    pub arn: String,
    pub cluster: String,
    pub ec2_instance_id: String,
    pub status: ContainerInstanceStatus,
    pub status_reason: Option<String>,
    pub agent_connected: bool,
    /// Bumped on every change, including every task placed on the instance, so that
    /// the placement applier's compare-and-swap notices a concurrent placement.
    pub version: i64,
    pub version_info: Value,
    pub cpu: i64,
    pub memory: i64,
    pub ports: Vec<u16>,
    pub ports_udp: Vec<u16>,
    pub attributes: Vec<Attribute>,
    pub registered_at: i64,
    pub tags: Vec<Tag>,
}

/// What the tasks on an instance use.
#[derive(Debug, Default, Clone)]
pub(crate) struct Usage {
    pub cpu: i64,
    pub memory: i64,
    pub ports: BTreeSet<u16>,
    pub ports_udp: BTreeSet<u16>,
    pub running: i64,
    pub pending: i64,
}

impl Usage {
    /// Sums the unstopped tasks placed on `instance_arn`.
    pub fn of<'a>(
        instance_arn: &str,
        tasks: impl IntoIterator<Item = &'a Versioned<TaskRecord>>,
    ) -> Usage {
        let mut usage = Usage::default();
        for task in tasks.into_iter().map(|t| &t.value) {
            if task.container_instance_arn.as_deref() != Some(instance_arn)
                || task.lifecycle.last() == TaskStatus::Stopped
            {
                continue;
            }
            usage.cpu += task.needs.cpu_units;
            usage.memory += task.needs.memory_mib;
            usage
                .ports
                .extend(task.needs.host_ports_tcp.iter().copied());
            usage
                .ports_udp
                .extend(task.needs.host_ports_udp.iter().copied());
            if task.lifecycle.last() == TaskStatus::Running {
                usage.running += 1;
            } else if task.lifecycle.last() < TaskStatus::Running {
                usage.pending += 1;
            }
        }
        usage
    }
}

fn integer_resource(name: &str, value: i64) -> Value {
    json!({"name": name, "type": "INTEGER", "doubleValue": 0.0, "longValue": 0, "integerValue": value})
}

fn ports_resource(name: &str, ports: impl IntoIterator<Item = u16>) -> Value {
    let ports: Vec<String> = ports.into_iter().map(|p| p.to_string()).collect();
    json!({"name": name, "type": "STRINGSET", "doubleValue": 0.0, "longValue": 0, "integerValue": 0, "stringSetValue": ports})
}

impl InstanceRecord {
    pub fn is_live(&self) -> bool {
        matches!(
            self.status,
            ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining
        )
    }

    /// The `ContainerInstance` wire shape.
    pub fn to_wire(&self, usage: &Usage, with_tags: bool) -> Value {
        let reserved: BTreeSet<u16> = self.ports.iter().copied().collect();
        let reserved_udp: BTreeSet<u16> = self.ports_udp.iter().copied().collect();
        let mut wire = json!({
            "containerInstanceArn": self.arn,
            "ec2InstanceId": self.ec2_instance_id,
            "version": self.version,
            "versionInfo": self.version_info,
            "registeredResources": [
                integer_resource("CPU", self.cpu),
                integer_resource("MEMORY", self.memory),
                ports_resource("PORTS", reserved.iter().copied()),
                ports_resource("PORTS_UDP", reserved_udp.iter().copied()),
            ],
            "remainingResources": [
                integer_resource("CPU", self.cpu - usage.cpu),
                integer_resource("MEMORY", self.memory - usage.memory),
                ports_resource("PORTS", reserved.union(&usage.ports).copied()),
                ports_resource("PORTS_UDP", reserved_udp.union(&usage.ports_udp).copied()),
            ],
            "status": self.status.as_str(),
            "agentConnected": self.agent_connected,
            "runningTasksCount": usage.running,
            "pendingTasksCount": usage.pending,
            "attributes": self.attributes.iter().map(|a| match &a.value {
                Some(v) => json!({"name": a.name, "value": v}),
                None => json!({"name": a.name}),
            }).collect::<Vec<_>>(),
            "registeredAt": epoch_seconds(self.registered_at),
            "attachments": [],
            "tags": [],
        });
        if let Some(reason) = &self.status_reason {
            wire["statusReason"] = json!(reason);
        }
        if with_tags {
            wire["tags"] = wire_tags(&self.tags);
        }
        wire
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireResource {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    integer_value: Option<i64>,
    long_value: Option<i64>,
    double_value: Option<f64>,
    #[serde(default)]
    string_set_value: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireAttribute {
    name: String,
    value: Option<String>,
    #[serde(rename = "targetType")]
    target_type: Option<String>,
    #[serde(rename = "targetId")]
    target_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegisterContainerInstanceRequest {
    cluster: Option<String>,
    instance_identity_document: Option<String>,
    #[serde(default)]
    total_resources: Vec<WireResource>,
    version_info: Option<Value>,
    container_instance_arn: Option<String>,
    #[serde(default)]
    attributes: Vec<WireAttribute>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeregisterContainerInstanceRequest {
    cluster: Option<String>,
    container_instance: String,
    force: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeContainerInstancesRequest {
    cluster: Option<String>,
    container_instances: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListContainerInstancesRequest {
    cluster: Option<String>,
    filter: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateContainerInstancesStateRequest {
    cluster: Option<String>,
    container_instances: Vec<String>,
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttributesRequest {
    cluster: Option<String>,
    attributes: Vec<WireAttribute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListAttributesRequest {
    cluster: Option<String>,
    target_type: String,
    attribute_name: Option<String>,
    attribute_value: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// Attribute names: up to 128 letters, numbers, hyphens, underscores, slashes,
/// backslashes and periods.
fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/\\.".contains(&b))
}

/// Attribute values: up to 128 letters, numbers, hyphens, underscores, periods, at
/// signs, slashes, backslashes, colons and spaces, not starting or ending with a space.
fn valid_attribute_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@/\\: ".contains(&b))
}

fn check_attribute(attribute: &WireAttribute) -> Result<Attribute, AwsError> {
    if !valid_attribute_name(&attribute.name) {
        return Err(invalid(format!(
            "Attribute name {:?} is invalid: up to 128 letters, numbers, hyphens, underscores, slashes, back slashes or periods.",
            attribute.name
        )));
    }
    if let Some(value) = &attribute.value {
        if !valid_attribute_value(value) {
            return Err(invalid(format!(
                "Attribute value {value:?} is invalid: up to 128 letters, numbers, hyphens, underscores, periods, at signs, slashes, back slashes, colons, or spaces, not starting or ending with a space."
            )));
        }
    }
    if let Some(kind) = &attribute.target_type {
        if kind != "container-instance" {
            return Err(invalid(format!("Invalid targetType: {kind}")));
        }
    }
    Ok(Attribute {
        name: attribute.name.clone(),
        value: attribute.value.clone(),
    })
}

/// Attributes whose names start with these prefixes are set by agents, not users, and
/// do not count against the custom-attribute limit.
fn is_builtin_attribute(name: &str) -> bool {
    name.starts_with("ecs.") || name.starts_with("com.amazonaws.ecs.") || name.starts_with("wharf.")
}

const MAX_CUSTOM_ATTRIBUTES: usize = 10;

fn parse_port_set(values: &[String], name: &str) -> Result<Vec<u16>, AwsError> {
    values
        .iter()
        .map(|v| {
            v.trim()
                .parse::<u16>()
                .map_err(|_| invalid(format!("Invalid port {v:?} in resource {name}")))
        })
        .collect()
}

/// A 17-hex-digit EC2-style instance id derived from the container instance id, for
/// instances that did not bring an identity document.
fn synthetic_ec2_id(id: &str) -> String {
    let hex: String = id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(17)
        .collect();
    format!("i-{hex:0<17}")
}

impl EcsService {
    /// Reads a container instance of a cluster by id or ARN.
    pub(crate) async fn find_instance(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        reference: &str,
    ) -> Result<Option<Versioned<InstanceRecord>>, AwsError> {
        let id = keys::resource_id(reference, ResourceKind::ContainerInstance)?;
        self.records
            .get(&keys::instance(cx.region, cluster, &id))
            .await
    }

    pub(crate) async fn register_container_instance(
        &self,
        cx: &Cx<'_>,
        req: RegisterContainerInstanceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let (mut cpu, mut memory, mut ports, mut ports_udp) = (0, 0, Vec::new(), Vec::new());
        for resource in &req.total_resources {
            let name = resource.name.as_deref().unwrap_or("");
            let number = resource
                .integer_value
                .or(resource.long_value)
                .or(resource.double_value.map(|d| d as i64))
                .unwrap_or(0);
            match (name, resource.kind.as_deref()) {
                ("CPU", _) => cpu = number,
                ("MEMORY", _) => memory = number,
                ("PORTS", _) => ports = parse_port_set(&resource.string_set_value, name)?,
                ("PORTS_UDP", _) => ports_udp = parse_port_set(&resource.string_set_value, name)?,
                _ => {}
            }
        }
        if cpu < 0 || memory < 0 {
            return Err(invalid("CPU and MEMORY resources cannot be negative."));
        }
        let mut attributes: Vec<Attribute> = Vec::new();
        for attribute in &req.attributes {
            let attribute = check_attribute(attribute)?;
            attributes.retain(|a| a.name != attribute.name);
            attributes.push(attribute);
        }
        let tags = check_tags(req.tags)?;
        let document: Option<Value> = req
            .instance_identity_document
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok());
        let doc_field = |name: &str| {
            document
                .as_ref()
                .and_then(|d| d.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        // Built-in attributes that come from the identity document, as ECS derives them.
        for (attribute, field) in [
            ("ecs.availability-zone", "availabilityZone"),
            ("ecs.instance-type", "instanceType"),
            ("ecs.ami-id", "imageId"),
        ] {
            if let Some(value) = doc_field(field) {
                if !attributes.iter().any(|a| a.name == attribute) {
                    attributes.push(Attribute {
                        name: attribute.to_owned(),
                        value: Some(value),
                    });
                }
            }
        }
        let existing = match (&req.container_instance_arn, doc_field("instanceId")) {
            (Some(arn), _) => self.find_instance(cx, &cluster.name, arn).await?,
            (None, Some(ec2_id)) => {
                let view = self.fresh_view().await?;
                view.read_cluster_records(cx.region, &cluster.name, |state| {
                    state
                        .instances
                        .iter()
                        .find(|i| i.value.ec2_instance_id == ec2_id && i.value.is_live())
                        .cloned()
                })
            }
            (None, None) => None,
        };
        let (id, expected, registered_at, version) = match &existing {
            Some(e) => (
                e.value.id.clone(),
                e.revision,
                e.value.registered_at,
                e.value.version + 1,
            ),
            None => (
                uuid::Uuid::new_v4().simple().to_string(),
                0,
                cx.now_millis,
                1,
            ),
        };
        let record = InstanceRecord {
            arn: cx.arn(
                ResourceKind::ContainerInstance,
                &format!("{}/{id}", cluster.name),
            ),
            ec2_instance_id: doc_field("instanceId").unwrap_or_else(|| synthetic_ec2_id(&id)),
            cluster: cluster.name.clone(),
            // A restarted agent taking its instance back does not undo a drain the
            // operator asked for: only UpdateContainerInstancesState does.
            status: match &existing {
                Some(e) if e.value.status == ContainerInstanceStatus::Draining => {
                    ContainerInstanceStatus::Draining
                }
                _ => ContainerInstanceStatus::Active,
            },
            status_reason: None,
            agent_connected: true,
            version,
            version_info: req.version_info.unwrap_or_else(|| json!({})),
            cpu,
            memory,
            ports,
            ports_udp,
            attributes,
            registered_at,
            tags,
            id,
        };
        let key = keys::instance(cx.region, &cluster.name, &record.id);
        if !self.records.put_if(&key, &record, expected).await? {
            return Err(too_much_contention());
        }
        let usage = self.instance_usage(cx, &cluster.name, &record.arn).await?;
        Ok(json!({"containerInstance": record.to_wire(&usage, true)}))
    }

    pub(crate) async fn deregister_container_instance(
        &self,
        cx: &Cx<'_>,
        req: DeregisterContainerInstanceRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self
                .find_instance(cx, &cluster.name, &req.container_instance)
                .await?
            else {
                return Err(invalid("The referenced container instance was not found."));
            };
            let usage = self
                .instance_usage(cx, &cluster.name, &current.value.arn)
                .await?;
            if usage.running + usage.pending > 0 && !req.force.unwrap_or(false) {
                return Err(invalid(
                    "Found running tasks on the instance. Use the force parameter to deregister the instance anyway.",
                ));
            }
            let mut record = current.value.clone();
            if record.status == ContainerInstanceStatus::Inactive {
                return Ok(json!({"containerInstance": record.to_wire(&usage, false)}));
            }
            record.status = ContainerInstanceStatus::Inactive;
            record.agent_connected = false;
            record.version += 1;
            let key = keys::instance(cx.region, &cluster.name, &record.id);
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(json!({"containerInstance": record.to_wire(&usage, false)}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_container_instances(
        &self,
        cx: &Cx<'_>,
        req: DescribeContainerInstancesRequest,
    ) -> Result<Value, AwsError> {
        if req.container_instances.len() > 100 {
            return Err(invalid("containerInstances can have at most 100 items."));
        }
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let with_tags = req.include.iter().any(|i| i == "TAGS");
        let mut found = Vec::new();
        let mut failures = Vec::new();
        for reference in &req.container_instances {
            match self.find_instance(cx, &cluster.name, reference).await {
                Ok(Some(instance)) => {
                    let usage = self
                        .instance_usage(cx, &cluster.name, &instance.value.arn)
                        .await?;
                    found.push(instance.value.to_wire(&usage, with_tags));
                }
                Ok(None) | Err(_) => failures.push(cx.missing(
                    ResourceKind::ContainerInstance,
                    reference,
                    &format!("{}/{reference}", cluster.name),
                )),
            }
        }
        Ok(json!({"containerInstances": found, "failures": failures}))
    }

    pub(crate) async fn list_container_instances(
        &self,
        cx: &Cx<'_>,
        req: ListContainerInstancesRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let status = req
            .status
            .as_deref()
            .map(|s| {
                ContainerInstanceStatus::parse(s)
                    .ok_or_else(|| invalid(format!("Invalid status: {s}")))
            })
            .transpose()?;
        let filter = req
            .filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(super::placement::parse_filter)
            .transpose()?;
        let instances = self
            .records
            .list::<InstanceRecord>(&keys::instances(cx.region, &cluster.name))
            .await?;
        let view = self.fresh_view().await?;
        let mut arns = Vec::new();
        for instance in &instances {
            let record = &instance.value;
            let status_ok = match status {
                Some(s) => record.status == s,
                // Without a status filter, ECS lists ACTIVE and DRAINING instances.
                None => record.is_live(),
            };
            if !status_ok {
                continue;
            }
            if let Some(filter) = &filter {
                let matches = view.read_cluster_records(cx.region, &cluster.name, |state| {
                    filter.matches(&super::placement::instance_snapshot(
                        record,
                        state.tasks_on(&record.arn),
                    ))
                });
                if !matches {
                    continue;
                }
            }
            arns.push(record.arn.clone());
        }
        let (arns, next) = paging::page(
            arns,
            String::clone,
            req.next_token.as_deref(),
            req.max_results,
            100,
        )?;
        Ok(json!({"containerInstanceArns": arns, "nextToken": next}))
    }

    pub(crate) async fn update_container_instances_state(
        &self,
        cx: &Cx<'_>,
        req: UpdateContainerInstancesStateRequest,
    ) -> Result<Value, AwsError> {
        let target = match req.status.as_str() {
            "ACTIVE" => ContainerInstanceStatus::Active,
            "DRAINING" => ContainerInstanceStatus::Draining,
            other => {
                return Err(invalid(format!(
                    "Container instances status should be one of [ACTIVE,DRAINING], got {other}"
                )))
            }
        };
        if req.container_instances.len() > 10 {
            return Err(invalid("containerInstances can have at most 10 items."));
        }
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let mut updated = Vec::new();
        let mut failures = Vec::new();
        'refs: for reference in &req.container_instances {
            for _ in 0..MAX_CONFLICT_RETRIES {
                let current = match self.find_instance(cx, &cluster.name, reference).await {
                    Ok(Some(current)) if current.value.is_live() => current,
                    _ => {
                        failures.push(json!({"arn": reference, "reason": "MISSING"}));
                        continue 'refs;
                    }
                };
                let mut record = current.value.clone();
                if record.status != target {
                    record.status = target;
                    record.version += 1;
                    let key = keys::instance(cx.region, &cluster.name, &record.id);
                    if !self.records.put_if(&key, &record, current.revision).await? {
                        continue;
                    }
                }
                let usage = self.instance_usage(cx, &cluster.name, &record.arn).await?;
                updated.push(record.to_wire(&usage, false));
                continue 'refs;
            }
            return Err(too_much_contention());
        }
        Ok(json!({"containerInstances": updated, "failures": failures}))
    }

    /// Applies `change` to the attributes of each targeted instance.
    async fn change_attributes(
        &self,
        cx: &Cx<'_>,
        req: AttributesRequest,
        adding: bool,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        if req.attributes.is_empty() {
            return Err(invalid("attributes must not be empty."));
        }
        let mut echoed = Vec::new();
        for wire in &req.attributes {
            let attribute = check_attribute(wire)?;
            let target = wire.target_id.as_deref().ok_or_else(|| {
                invalid("targetId is required for container-instance attributes.")
            })?;
            let mut done = false;
            for _ in 0..MAX_CONFLICT_RETRIES {
                let Some(current) = self.find_instance(cx, &cluster.name, target).await? else {
                    return Err(AwsError::client(
                        "TargetNotFoundException",
                        format!("Could not find {target}."),
                    ));
                };
                let mut record = current.value.clone();
                record.attributes.retain(|a| a.name != attribute.name);
                if adding {
                    record.attributes.push(attribute.clone());
                    let custom = record
                        .attributes
                        .iter()
                        .filter(|a| !is_builtin_attribute(&a.name))
                        .count();
                    if custom > MAX_CUSTOM_ATTRIBUTES {
                        return Err(AwsError::client(
                            "AttributeLimitExceededException",
                            "You can apply up to 10 custom attributes per resource.",
                        ));
                    }
                }
                record.version += 1;
                let key = keys::instance(cx.region, &cluster.name, &record.id);
                if self.records.put_if(&key, &record, current.revision).await? {
                    let mut out = json!({
                        "name": attribute.name,
                        "targetType": "container-instance",
                        "targetId": record.arn,
                    });
                    if let Some(value) = &attribute.value {
                        out["value"] = json!(value);
                    }
                    echoed.push(out);
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(too_much_contention());
            }
        }
        Ok(json!({"attributes": echoed}))
    }

    pub(crate) async fn put_attributes(
        &self,
        cx: &Cx<'_>,
        req: AttributesRequest,
    ) -> Result<Value, AwsError> {
        self.change_attributes(cx, req, true).await
    }

    pub(crate) async fn delete_attributes(
        &self,
        cx: &Cx<'_>,
        req: AttributesRequest,
    ) -> Result<Value, AwsError> {
        self.change_attributes(cx, req, false).await
    }

    pub(crate) async fn list_attributes(
        &self,
        cx: &Cx<'_>,
        req: ListAttributesRequest,
    ) -> Result<Value, AwsError> {
        if req.target_type != "container-instance" {
            return Err(invalid(format!("Invalid targetType: {}", req.target_type)));
        }
        if req.attribute_value.is_some() && req.attribute_name.is_none() {
            return Err(invalid(
                "attributeName must be specified when attributeValue is specified.",
            ));
        }
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let instances = self
            .records
            .list::<InstanceRecord>(&keys::instances(cx.region, &cluster.name))
            .await?;
        let mut out = Vec::new();
        for instance in instances.iter().filter(|i| i.value.is_live()) {
            for attribute in &instance.value.attributes {
                if req
                    .attribute_name
                    .as_ref()
                    .is_some_and(|n| *n != attribute.name)
                {
                    continue;
                }
                if req.attribute_value.is_some() && req.attribute_value != attribute.value {
                    continue;
                }
                out.push((instance.value.arn.clone(), attribute.clone()));
            }
        }
        out.sort_by(|(a_arn, a), (b_arn, b)| (a_arn, &a.name).cmp(&(b_arn, &b.name)));
        let (page, next) = paging::page(
            out,
            |(arn, a)| format!("{arn}\u{0}{}", a.name),
            req.next_token.as_deref(),
            req.max_results,
            100,
        )?;
        let attributes: Vec<Value> = page
            .into_iter()
            .map(|(arn, a)| {
                let mut wire =
                    json!({"name": a.name, "targetType": "container-instance", "targetId": arn});
                if let Some(v) = a.value {
                    wire["value"] = json!(v);
                }
                wire
            })
            .collect();
        Ok(json!({"attributes": attributes, "nextToken": next}))
    }
}
