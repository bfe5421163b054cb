//! A service's load balancer targets: which target a task is, registering it once it
//! runs, draining it before the task is asked to stop, and reading its health.
//!
//! The ELBv2 side (`crate::elbv2::targets`) owns the target records; this module only
//! decides what to register and when.

use std::collections::BTreeMap;

use serde_json::Value;
use wharf_aws::AwsError;

use super::{RegisteredTarget, ServiceLoadBalancer};
use crate::ecs::instances::InstanceRecord;
use crate::ecs::tasks::TaskRecord;
use crate::elbv2::targets;
use crate::records::Records;

/// The address attribute instances advertise for the load balancer.
const HOST_ADDRESS_ATTRIBUTE: &str = "wharf.host-address";

/// The host port a task's container port is published at, from the task's
/// `networkBindings`.
pub(crate) fn host_port(task: &TaskRecord, container: &str, container_port: u16) -> Option<u16> {
    task.containers
        .iter()
        .find(|c| c.name == container)?
        .network_bindings
        .iter()
        .find(|b| {
            b.get("containerPort").and_then(Value::as_i64) == Some(container_port as i64)
                && b.get("protocol")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p == "tcp")
        })
        .and_then(|b| b.get("hostPort").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// The target a task is in one target group: the instance's EC2 id for `instance`
/// target groups, the instance's host address for `ip` ones, with the host port.
pub(crate) fn target_of(
    task: &TaskRecord,
    instance: &InstanceRecord,
    lb: &ServiceLoadBalancer,
    target_type: &str,
) -> Option<RegisteredTarget> {
    let port = host_port(task, &lb.container_name, lb.container_port)?;
    let id = if target_type == "ip" {
        instance
            .attributes
            .iter()
            .find(|a| a.name == HOST_ADDRESS_ATTRIBUTE)
            .and_then(|a| a.value.clone())
            .unwrap_or_else(|| "127.0.0.1".to_owned())
    } else {
        instance.ec2_instance_id.clone()
    };
    Some(RegisteredTarget {
        target_group_arn: lb.target_group_arn.clone(),
        id,
        port,
    })
}

/// Registers targets of one target group.
pub(crate) async fn register(
    records: &Records,
    now: i64,
    region: &str,
    target_group_arn: &str,
    list: &[(String, u16)],
) -> Result<(), AwsError> {
    targets::register_targets(records, now, region, target_group_arn, list).await
}

/// Starts draining targets of one target group; answers when draining ends.
pub(crate) async fn deregister(
    records: &Records,
    now: i64,
    region: &str,
    target_group_arn: &str,
    list: &[(String, u16)],
) -> Result<i64, AwsError> {
    targets::deregister_targets(records, now, region, target_group_arn, list).await
}

/// The health state of each given target of one target group, by `(id, port)`.
pub(crate) async fn health(
    records: &Records,
    region: &str,
    target_group_arn: &str,
    list: &[(String, u16)],
) -> Result<BTreeMap<(String, u16), String>, AwsError> {
    if list.is_empty() {
        return Ok(BTreeMap::new());
    }
    let found = targets::target_health(records, region, target_group_arn, Some(list)).await?;
    Ok(found
        .into_iter()
        .map(|h| ((h.id, h.port), h.state))
        .collect())
}

/// Whether a target state lets a task count as healthy: `healthy`, or a state in which
/// the load balancer sends it nothing to judge (`unused`: no listener forwards to the
/// group; `unavailable`: health checks are off).
pub(crate) fn counts_as_healthy(state: &str) -> bool {
    matches!(state, "healthy" | "unused" | "unavailable")
}
