//! Targets: RegisterTargets, DeregisterTargets, DescribeTargetHealth, and the sweeper
//! that removes drained targets.
//!
//! The free functions here are the control plane's own way in, used by the API
//! operations and by the ECS service controller alike: [`register_targets`] writes a
//! [`TargetRecord`] per target with the address the data plane connects to,
//! [`deregister_targets`] starts draining (the data plane sends a draining target no
//! new requests) and answers when draining ends, [`target_health`] says what
//! DescribeTargetHealth would, and [`sweep_drained_targets`] deletes targets whose
//! drain deadline has passed, together with their health.
//!
//! Registering and deregistering rewrite the target group record unchanged, so that
//! they are serialised with DeleteTargetGroup (which deletes every target of the
//! group): a registration can never slip in after the group's targets were listed for
//! deletion and leave an orphan behind.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{
    health_key, target_group_key, target_key, targets_prefix, TargetGroupRecord,
    TargetHealthRecord, TargetRecord,
};
use wharf_model::ContainerInstanceStatus;
use wharf_store::Txn;

use super::error::{validation, Elbv2Error};
use super::{resolve, Cx, Elbv2Service};
use crate::records::{encode, too_much_contention, Records, Versioned, MAX_CONFLICT_RETRIES};

/// ELBv2's quota of targets per target group.
pub(crate) const MAX_TARGETS_PER_GROUP: usize = 1000;

/// The instance attribute that gives the address the data plane reaches an instance
/// at; without it, instance targets are reached at 127.0.0.1.
pub(crate) const HOST_ADDRESS_ATTRIBUTE: &str = "wharf.host-address";

/// The default `deregistration_delay.timeout_seconds`.
pub(crate) const DEFAULT_DEREGISTRATION_DELAY_SECONDS: i64 = 300;

/// One target's health, as DescribeTargetHealth reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetHealth {
    pub id: String,
    pub port: u16,
    pub availability_zone: Option<String>,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining` or `unavailable`.
    pub state: String,
    pub reason: Option<String>,
    pub description: Option<String>,
    /// The port health checks go to.
    pub health_check_port: String,
}

/// The parts of a stored ECS container instance that target resolution reads.
#[derive(Deserialize)]
struct InstanceView {
    ec2_instance_id: String,
    status: ContainerInstanceStatus,
    #[serde(default)]
    attributes: Vec<AttributeView>,
}

#[derive(Deserialize)]
struct AttributeView {
    name: String,
    value: Option<String>,
}

/// Where an instance target is reached, and its zone.
async fn instance_addresses(
    records: &Records,
    region: &str,
) -> Result<BTreeMap<String, (String, Option<String>)>, AwsError> {
    let instances = records
        .list::<InstanceView>(&format!("ecs/{region}/instance/"))
        .await?;
    let mut out = BTreeMap::new();
    for Versioned { value, .. } in instances {
        if !matches!(
            value.status,
            ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining
        ) {
            continue;
        }
        let attribute = |name: &str| {
            value
                .attributes
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.value.clone())
        };
        let host = attribute(HOST_ADDRESS_ATTRIBUTE).unwrap_or_else(|| "127.0.0.1".to_owned());
        let zone = attribute("ecs.availability-zone");
        out.insert(value.ec2_instance_id.clone(), (host, zone));
    }
    Ok(out)
}

/// `host:port`, with IPv6 literals in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn deregistration_delay_ms(tg: &TargetGroupRecord) -> i64 {
    tg.attributes
        .get("deregistration_delay.timeout_seconds")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(DEFAULT_DEREGISTRATION_DELAY_SECONDS)
        * 1000
}

/// Every record under a prefix with its key, in key order; records that do not decode
/// as `T` are skipped.
async fn list_with_keys<T: serde::de::DeserializeOwned>(
    records: &Records,
    prefix: &str,
) -> Result<Vec<(String, T)>, AwsError> {
    let (kvs, _) = records
        .store()
        .range(prefix)
        .await
        .map_err(crate::records::store_failure)?;
    Ok(kvs
        .into_iter()
        .filter_map(|kv| {
            serde_json::from_slice(&kv.value)
                .ok()
                .map(|value| (kv.key, value))
        })
        .collect())
}

fn tg_name(tg: &TargetGroupRecord) -> &str {
    &tg.name
}

/// Registers targets `(id, port)` with a target group. A target already registered
/// stays as it is; one that was draining is registered afresh (its health starts
/// over).
pub(crate) async fn register_targets(
    records: &Records,
    now_millis: i64,
    region: &str,
    target_group_arn: &str,
    targets: &[(String, u16)],
) -> Result<(), AwsError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let tg = resolve::target_group(records, region, target_group_arn).await?;
        let name = tg_name(&tg.value).to_owned();
        let existing: BTreeMap<String, Versioned<TargetRecord>> = records
            .list::<TargetRecord>(&targets_prefix(region, &name))
            .await?
            .into_iter()
            .map(|t| (format!("{}:{}", t.value.id, t.value.port), t))
            .collect();
        let instances = if tg.value.target_type == "instance" {
            Some(instance_addresses(records, region).await?)
        } else {
            None
        };
        let mut invalid = Vec::new();
        let mut txn = Txn::new()
            .when_mod_revision(target_group_key(region, &name), tg.revision)
            .put(target_group_key(region, &name), encode(&tg.value));
        let mut added = 0usize;
        let mut seen = std::collections::BTreeSet::new();
        for (id, port) in targets {
            if *port == 0 {
                return Err(validation(format!(
                    "Port for target '{id}' must be between 1 and 65535"
                )));
            }
            let (host, zone) = match &instances {
                Some(instances) => match instances.get(id) {
                    Some((host, zone)) => (host.clone(), zone.clone()),
                    None => {
                        invalid.push(id.clone());
                        continue;
                    }
                },
                None => match id.parse::<IpAddr>() {
                    Ok(ip) => (ip.to_string(), None),
                    Err(_) => {
                        invalid.push(id.clone());
                        continue;
                    }
                },
            };
            let slot = format!("{id}:{port}");
            if !seen.insert(slot.clone()) {
                continue;
            }
            let key = target_key(region, &name, id, *port);
            let record = TargetRecord {
                id: id.clone(),
                port: *port,
                address: join_host_port(&host, *port),
                availability_zone: zone,
                registered_ms: now_millis,
                drain_until_ms: None,
            };
            match existing.get(&slot) {
                Some(current) if current.value.drain_until_ms.is_none() => {}
                Some(current) => {
                    txn = txn
                        .when_mod_revision(&key, current.revision)
                        .put(&key, encode(&record))
                        .delete(health_key(region, &name, id, *port));
                }
                None => {
                    added += 1;
                    txn = txn.when_mod_revision(&key, 0).put(&key, encode(&record));
                }
            }
        }
        if !invalid.is_empty() {
            let what = if instances.is_some() {
                "instances"
            } else {
                "IP addresses"
            };
            return Err(Elbv2Error::InvalidTarget(format!(
                "The following targets are not valid {what}: '{}'",
                invalid.join("', '")
            ))
            .into());
        }
        if existing.len() + added > MAX_TARGETS_PER_GROUP {
            return Err(Elbv2Error::TooManyTargets(MAX_TARGETS_PER_GROUP).into());
        }
        if records.commit(txn).await? {
            return Ok(());
        }
    }
    Err(too_much_contention())
}

/// Starts draining targets `(id, port)`: the data plane sends them no new requests,
/// and the sweeper deletes them once the group's deregistration delay has passed (at
/// once when it is 0). Returns when draining ends, in epoch milliseconds: the latest
/// deadline of the given targets. Targets that are not registered are skipped when
/// `strict` is false and refused with `InvalidTarget` when it is true.
pub(crate) async fn deregister_targets_checked(
    records: &Records,
    now_millis: i64,
    region: &str,
    target_group_arn: &str,
    targets: &[(String, u16)],
    strict: bool,
) -> Result<i64, AwsError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        let tg = resolve::target_group(records, region, target_group_arn).await?;
        let name = tg_name(&tg.value).to_owned();
        let delay = deregistration_delay_ms(&tg.value);
        let mut deadline = now_millis + delay;
        let mut txn = Txn::new()
            .when_mod_revision(target_group_key(region, &name), tg.revision)
            .put(target_group_key(region, &name), encode(&tg.value));
        let mut missing = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (id, port) in targets {
            if !seen.insert((id.clone(), *port)) {
                continue;
            }
            let key = target_key(region, &name, id, *port);
            let Some(current) = records.get::<TargetRecord>(&key).await? else {
                missing.push(id.clone());
                continue;
            };
            if let Some(until) = current.value.drain_until_ms {
                deadline = deadline.max(until);
                continue;
            }
            txn = txn.when_mod_revision(&key, current.revision);
            if delay <= 0 {
                txn = txn
                    .delete(&key)
                    .delete(health_key(region, &name, id, *port));
            } else {
                let mut draining = current.value.clone();
                draining.drain_until_ms = Some(now_millis + delay);
                txn = txn.put(&key, encode(&draining));
            }
        }
        if strict && !missing.is_empty() {
            return Err(Elbv2Error::InvalidTarget(format!(
                "The following targets are not registered: '{}'",
                missing.join("', '")
            ))
            .into());
        }
        if records.commit(txn).await? {
            return Ok(deadline);
        }
    }
    Err(too_much_contention())
}

/// [`deregister_targets_checked`] for the control plane's own callers: targets that
/// are already gone are not an error.
pub(crate) async fn deregister_targets(
    records: &Records,
    now_millis: i64,
    region: &str,
    target_group_arn: &str,
    targets: &[(String, u16)],
) -> Result<i64, AwsError> {
    deregister_targets_checked(
        records,
        now_millis,
        region,
        target_group_arn,
        targets,
        false,
    )
    .await
}

/// The health of the given targets `(id, port)`, or of every registered target when
/// `targets` is `None`, following ELBv2's states: draining targets are `draining`
/// (`Target.DeregistrationInProgress`), targets of a group no listener or rule uses
/// are `unused` (`Target.NotInUse`), targets the data plane has not checked yet are
/// `initial` (`Elb.RegistrationInProgress`), and the rest have the health the data
/// plane recorded. A requested target that is not registered is `unused`
/// (`Target.NotRegistered`).
pub(crate) async fn target_health(
    records: &Records,
    region: &str,
    target_group_arn: &str,
    targets: Option<&[(String, u16)]>,
) -> Result<Vec<TargetHealth>, AwsError> {
    let tg = resolve::target_group(records, region, target_group_arn).await?;
    let tg = tg.value;
    let registered: BTreeMap<(String, u16), TargetRecord> = records
        .list::<TargetRecord>(&targets_prefix(region, &tg.name))
        .await?
        .into_iter()
        .map(|t| ((t.value.id.clone(), t.value.port), t.value))
        .collect();
    let health: BTreeMap<String, TargetHealthRecord> = list_with_keys::<TargetHealthRecord>(
        records,
        &format!("elbv2/{region}/health/{}/", tg.name),
    )
    .await?
    .into_iter()
    .collect();
    let wanted: Vec<(String, u16)> = match targets {
        Some(t) => t.to_vec(),
        None => registered.keys().cloned().collect(),
    };
    let in_use = !tg.load_balancer_arns.is_empty();
    let check_port = |port: u16| {
        if tg.health_check.port == "traffic-port" {
            port.to_string()
        } else {
            tg.health_check.port.clone()
        }
    };
    let mut out = Vec::with_capacity(wanted.len());
    for (id, port) in wanted {
        let entry =
            |state: &str, reason: &str, description: &str, zone: Option<String>| TargetHealth {
                id: id.clone(),
                port,
                availability_zone: zone,
                state: state.to_owned(),
                reason: Some(reason.to_owned()),
                description: Some(description.to_owned()),
                health_check_port: check_port(port),
            };
        let Some(target) = registered.get(&(id.clone(), port)) else {
            out.push(entry(
                "unused",
                "Target.NotRegistered",
                "Target is not registered to the target group",
                None,
            ));
            continue;
        };
        let zone = target.availability_zone.clone();
        if target.drain_until_ms.is_some() {
            out.push(entry(
                "draining",
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
                zone,
            ));
        } else if !in_use {
            out.push(entry(
                "unused",
                "Target.NotInUse",
                "Target group is not configured to receive traffic from the load balancer",
                zone,
            ));
        } else if let Some(h) = health.get(&health_key(region, &tg.name, &id, port)) {
            out.push(TargetHealth {
                id: id.clone(),
                port,
                availability_zone: zone,
                state: h.state.clone(),
                reason: h.reason.clone(),
                description: h.description.clone(),
                health_check_port: check_port(port),
            });
        } else if !tg.health_check.enabled {
            out.push(entry(
                "unavailable",
                "Target.HealthCheckDisabled",
                "Health checks are disabled",
                zone,
            ));
        } else {
            out.push(entry(
                "initial",
                "Elb.RegistrationInProgress",
                "Target registration is in progress",
                zone,
            ));
        }
    }
    Ok(out)
}

/// Deletes every target (and its health) whose drain deadline is at or before
/// `now_millis`, in every region, and every health record whose target is gone (the
/// data plane may write one just after its target was deleted); returns how many
/// targets went. A record changed meanwhile (a target re-registered, say) is left
/// alone: each delete is guarded by the revision read.
pub async fn sweep_drained_targets(records: &Records, now_millis: i64) -> Result<usize, AwsError> {
    // One range is one consistent snapshot: a health record whose target is absent
    // from it belongs to a target deleted before the snapshot.
    let (kvs, _) = records
        .store()
        .range("elbv2/")
        .await
        .map_err(crate::records::store_failure)?;
    let targets: std::collections::HashSet<String> = kvs
        .iter()
        .filter(|kv| kv.key.split('/').nth(2) == Some("target"))
        .map(|kv| kv.key.clone())
        .collect();
    let mut swept = 0;
    for kv in &kvs {
        let parts: Vec<&str> = kv.key.splitn(5, '/').collect();
        if parts.len() != 5 {
            continue;
        }
        match parts[2] {
            "target" => {
                let Ok(record) = serde_json::from_slice::<TargetRecord>(&kv.value) else {
                    continue;
                };
                match record.drain_until_ms {
                    Some(until) if until <= now_millis => {}
                    _ => continue,
                }
                let health = health_key(parts[1], parts[3], &record.id, record.port);
                let txn = Txn::new()
                    .when_mod_revision(&kv.key, kv.mod_revision)
                    .delete(&kv.key)
                    .delete(health);
                if records.commit(txn).await? {
                    swept += 1;
                }
            }
            "health" => {
                let target = format!("elbv2/{}/target/{}/{}", parts[1], parts[3], parts[4]);
                if !targets.contains(&target) {
                    let txn = Txn::new()
                        .when_mod_revision(&kv.key, kv.mod_revision)
                        .when_mod_revision(&target, 0)
                        .delete(&kv.key);
                    records.commit(txn).await?;
                }
            }
            _ => {}
        }
    }
    Ok(swept)
}

/// A target as the API names it: id and port (the group's port when not given).
fn wire_targets(targets: &[WireTarget], default_port: u16) -> Result<Vec<(String, u16)>, AwsError> {
    targets
        .iter()
        .map(|t| {
            let port = match t.port {
                None => default_port,
                Some(p) if (1..=65535).contains(&p) => p as u16,
                Some(p) => {
                    return Err(validation(format!(
                        "Port {p} of target '{}' must be between 1 and 65535",
                        t.id
                    )))
                }
            };
            if t.id.is_empty() {
                return Err(validation("Target Id must not be empty"));
            }
            Ok((t.id.clone(), port))
        })
        .collect()
}

/// `TargetDescription` on the wire.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireTarget {
    id: String,
    port: Option<i64>,
    #[allow(dead_code)] // Accepted for compatibility; Wharf serves every zone.
    availability_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TargetsRequest {
    target_group_arn: String,
    targets: Vec<WireTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeTargetHealthRequest {
    target_group_arn: String,
    #[serde(default)]
    targets: Option<Vec<WireTarget>>,
}

impl Elbv2Service {
    pub(crate) async fn register_targets_op(
        &self,
        cx: &Cx<'_>,
        req: TargetsRequest,
    ) -> Result<Value, AwsError> {
        let tg = resolve::target_group(&self.records, cx.region, &req.target_group_arn).await?;
        let targets = wire_targets(&req.targets, tg.value.port)?;
        register_targets(
            &self.records,
            cx.now_millis,
            cx.region,
            &req.target_group_arn,
            &targets,
        )
        .await?;
        Ok(json!({}))
    }

    pub(crate) async fn deregister_targets_op(
        &self,
        cx: &Cx<'_>,
        req: TargetsRequest,
    ) -> Result<Value, AwsError> {
        let tg = resolve::target_group(&self.records, cx.region, &req.target_group_arn).await?;
        let targets = wire_targets(&req.targets, tg.value.port)?;
        deregister_targets_checked(
            &self.records,
            cx.now_millis,
            cx.region,
            &req.target_group_arn,
            &targets,
            true,
        )
        .await?;
        Ok(json!({}))
    }

    pub(crate) async fn describe_target_health(
        &self,
        cx: &Cx<'_>,
        req: DescribeTargetHealthRequest,
    ) -> Result<Value, AwsError> {
        let tg = resolve::target_group(&self.records, cx.region, &req.target_group_arn).await?;
        let wanted = match &req.targets {
            Some(t) if !t.is_empty() => Some(wire_targets(t, tg.value.port)?),
            _ => None,
        };
        let health = target_health(
            &self.records,
            cx.region,
            &req.target_group_arn,
            wanted.as_deref(),
        )
        .await?;
        let descriptions: Vec<Value> = health
            .into_iter()
            .map(|h| {
                json!({
                    "Target": {
                        "Id": h.id,
                        "Port": h.port,
                        "AvailabilityZone": h.availability_zone,
                    },
                    "HealthCheckPort": h.health_check_port,
                    "TargetHealth": {
                        "State": h.state,
                        "Reason": h.reason,
                        "Description": h.description,
                    },
                })
            })
            .collect();
        Ok(json!({ "TargetHealthDescriptions": descriptions }))
    }
}
