//! The bridge between stored records and the scheduler: snapshots in, plans out.

use serde_json::Value;
use wharf_aws::AwsError;
use wharf_model::TaskStatus;
use wharf_scheduler::{
    parse_expression, place_tasks, rejection_reason, validate_placement, ClusterSnapshot,
    Expression, InstanceSnapshot, InstanceStatus, PlacementConstraint, PlacementRequest,
    RequiredAttribute, Resources, TaskOnInstance,
};

use super::instances::{InstanceRecord, Usage};
use super::invalid;
use super::task_definitions::TaskResourceNeeds;
use super::tasks::TaskRecord;
use super::view::ClusterState;
use crate::records::Versioned;

/// What one RunTask or StartTask call asks of placement.
pub(crate) struct PlacementInput<'a> {
    pub needs: &'a TaskResourceNeeds,
    pub count: usize,
    pub group: &'a str,
    /// The request's `placementConstraints` in wire shape.
    pub constraints: &'a [Value],
    /// The request's `placementStrategy` in wire shape.
    pub strategies: &'a [Value],
    /// StartTask: exactly these instances, one task each.
    pub only_instances: Option<&'a [String]>,
    /// Named by `MISSING` failures, which concern the cluster rather than an instance.
    pub cluster_arn: &'a str,
    pub seed: u64,
}

/// Which instances got a task, and why the others could not.
pub(crate) struct PlacementOutcome {
    /// One instance ARN per placed task.
    pub placed: Vec<String>,
    /// `(arn, reason)` pairs in ECS's `failures` form.
    pub failures: Vec<(String, String)>,
}

/// Parses a cluster query language expression, for ListContainerInstances' `filter`.
pub(crate) fn parse_filter(text: &str) -> Result<Expression, AwsError> {
    parse_expression(text).map_err(|e| invalid(format!("Invalid filter expression: {e}")))
}

/// How the scheduler sees one instance.
pub(crate) fn instance_snapshot<'a>(
    record: &InstanceRecord,
    tasks: impl IntoIterator<Item = &'a Versioned<TaskRecord>> + Clone,
) -> InstanceSnapshot {
    let usage = Usage::of(&record.arn, tasks.clone());
    let registered = Resources {
        cpu: record.cpu,
        memory_mib: record.memory,
        tcp_ports: record.ports.iter().copied().collect(),
        udp_ports: record.ports_udp.iter().copied().collect(),
    };
    let remaining = Resources {
        cpu: record.cpu - usage.cpu,
        memory_mib: record.memory - usage.memory,
        tcp_ports: registered.tcp_ports.union(&usage.ports).copied().collect(),
        udp_ports: registered
            .udp_ports
            .union(&usage.ports_udp)
            .copied()
            .collect(),
    };
    let mut snapshot = InstanceSnapshot {
        id: record.arn.clone(),
        ec2_instance_id: record.ec2_instance_id.clone(),
        status: InstanceStatus::from_wire(record.status.as_str()),
        agent_connected: record.agent_connected,
        agent_version: record
            .version_info
            .get("agentVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        registered_at_ms: record.registered_at,
        attributes: record
            .attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect(),
        registered,
        remaining,
        running_tasks_count: usage.running,
        tasks: tasks
            .into_iter()
            .map(|t| &t.value)
            .filter(|t| {
                t.container_instance_arn.as_deref() == Some(record.arn.as_str())
                    && t.lifecycle.last() != TaskStatus::Stopped
            })
            .map(|t| TaskOnInstance {
                group: t.group.clone(),
                family: t.family.clone(),
            })
            .collect(),
        group_counts: Default::default(),
    };
    // The view keeps snapshots between calls, so it indexes group counts once here
    // rather than placement scanning every task on every call.
    snapshot.index_groups();
    snapshot
}

fn wire_pairs<'a>(items: &'a [Value], field: &str) -> Vec<(&'a str, Option<&'a str>)> {
    items
        .iter()
        .map(|item| {
            (
                item.get("type").and_then(Value::as_str).unwrap_or(""),
                item.get(field).and_then(Value::as_str),
            )
        })
        .collect()
}

/// Plans a placement against the view of the cluster. Returns the outcome and the
/// records (with the revisions the plan relied on) of the instances that got tasks.
pub(crate) fn place(
    cluster: &ClusterState,
    input: &PlacementInput<'_>,
) -> Result<(PlacementOutcome, Vec<Versioned<InstanceRecord>>), AwsError> {
    let (mut constraints, strategies) = validate_placement(
        &wire_pairs(input.constraints, "expression"),
        &wire_pairs(input.strategies, "field"),
    )
    .map_err(|e| invalid(e.to_string()))?;
    // The task definition's own memberOf constraints apply on top of the call's.
    for expression in &input.needs.member_of {
        constraints.push(PlacementConstraint::MemberOf(
            parse_expression(expression).map_err(|e| invalid(e.to_string()))?,
        ));
    }
    let family = input
        .group
        .strip_prefix("family:")
        .unwrap_or(input.group)
        .to_owned();
    let request = PlacementRequest {
        count: input.count,
        group: input.group.to_owned(),
        family,
        cpu: input.needs.cpu_units,
        memory_mib: input.needs.memory_mib,
        tcp_host_ports: input.needs.host_ports_tcp.clone(),
        udp_host_ports: input.needs.host_ports_udp.clone(),
        requires_attributes: input
            .needs
            .requires_attributes
            .iter()
            .map(|(name, value)| RequiredAttribute {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        constraints,
        strategies,
        seed: input.seed,
    };
    let outcome = match input.only_instances {
        Some(only) => place_on_named(&cluster.snapshot, &request, only),
        None => {
            let plan = place_tasks(&cluster.snapshot, &request);
            PlacementOutcome {
                placed: plan.placed_instance_ids().map(str::to_owned).collect(),
                failures: plan
                    .failures()
                    .into_iter()
                    .map(|f| {
                        (
                            // MISSING failures name no instance; ECS reports the cluster.
                            f.instance_id
                                .unwrap_or_else(|| input.cluster_arn.to_owned()),
                            f.reason.as_str().to_owned(),
                        )
                    })
                    .collect(),
            }
        }
    };
    let mut used: Vec<Versioned<InstanceRecord>> = Vec::new();
    for arn in &outcome.placed {
        if used.iter().any(|u| &u.value.arn == arn) {
            continue;
        }
        if let Some(record) = cluster.instance_by_arn(arn) {
            used.push(record.clone());
        }
    }
    Ok((outcome, used))
}

/// StartTask: one task on each named instance, each checked on its own and against
/// the tasks placed on the instances before it in this call.
fn place_on_named(
    snapshot: &ClusterSnapshot,
    request: &PlacementRequest,
    only: &[String],
) -> PlacementOutcome {
    let mut working = snapshot.clone();
    let mut outcome = PlacementOutcome {
        placed: Vec::new(),
        failures: Vec::new(),
    };
    for arn in only {
        let Some(instance) = working.instances.iter_mut().find(|i| &i.id == arn) else {
            outcome.failures.push((arn.clone(), "MISSING".to_owned()));
            continue;
        };
        if let Some(reason) = rejection_reason(instance, request) {
            outcome
                .failures
                .push((arn.clone(), reason.as_str().to_owned()));
            continue;
        }
        instance.remaining.cpu -= request.cpu;
        instance.remaining.memory_mib -= request.memory_mib;
        instance
            .remaining
            .tcp_ports
            .extend(request.tcp_host_ports.iter().copied());
        instance
            .remaining
            .udp_ports
            .extend(request.udp_host_ports.iter().copied());
        instance.tasks.push(TaskOnInstance {
            group: request.group.clone(),
            family: request.family.clone(),
        });
        instance.index_groups();
        outcome.placed.push(arn.clone());
    }
    outcome
}
