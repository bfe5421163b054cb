//! The bridge between stored records and the scheduler: snapshots in, plans out.

use serde_json::Value;
use wharf_aws::AwsError;
use wharf_model::TaskStatus;
use wharf_scheduler::{
    parse_expression, rejection_reason, validate_placement, ClusterSnapshot, Expression,
    InstanceSnapshot, InstanceStatus, PlacementConstraint, PlacementRequest, RequiredAttribute,
    Resources, TaskOnInstance,
};

use super::instances::InstanceRecord;
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

/// One task's share of the instance it was placed on, as placement counts it: only
/// tasks that are placed and not stopped take anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskShare<'a> {
    pub instance_arn: &'a str,
    pub cpu: i64,
    pub memory: i64,
    pub running: bool,
    pub tcp_ports: &'a [u16],
    pub udp_ports: &'a [u16],
    pub group: &'a str,
    pub family: &'a str,
}

impl<'a> TaskShare<'a> {
    /// The share of `task`, or `None` when it takes nothing (unplaced or stopped).
    pub fn of(task: &'a TaskRecord) -> Option<Self> {
        let instance_arn = task.container_instance_arn.as_deref()?;
        let last = task.lifecycle.last();
        (last != TaskStatus::Stopped).then_some(TaskShare {
            instance_arn,
            cpu: task.needs.cpu_units,
            memory: task.needs.memory_mib,
            running: last == TaskStatus::Running,
            tcp_ports: &task.needs.host_ports_tcp,
            udp_ports: &task.needs.host_ports_udp,
            group: &task.group,
            family: &task.family,
        })
    }

    /// Whether two shares take the same resources in the same group of the same
    /// instance (they may differ in whether the task runs yet).
    pub fn same_place(&self, other: &TaskShare<'_>) -> bool {
        TaskShare {
            running: other.running,
            ..*self
        } == *other
    }

    /// Whether the share holds host ports.
    pub fn has_ports(&self) -> bool {
        !self.tcp_ports.is_empty() || !self.udp_ports.is_empty()
    }
}

/// What the unstopped tasks of one instance take from it.
///
/// The view keeps one per instance and moves it task by task (adding or removing one
/// task's share), so that a task's change never costs a pass over every task of its
/// instance; with binpack an instance holds hundreds of tasks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct InstanceLoad {
    cpu: i64,
    memory: i64,
    running: i64,
    /// Host ports in use, with how many tasks use each (several may, on a port that
    /// the agent did not reserve and a task released meanwhile).
    tcp_ports: std::collections::BTreeMap<u16, u32>,
    udp_ports: std::collections::BTreeMap<u16, u32>,
}

impl InstanceLoad {
    /// The load of the tasks among `tasks` that hold a share of `instance_arn`.
    pub fn of<'a>(
        instance_arn: &str,
        tasks: impl IntoIterator<Item = &'a Versioned<TaskRecord>>,
    ) -> Self {
        let mut load = InstanceLoad::default();
        for task in tasks {
            if let Some(share) = TaskShare::of(&task.value) {
                if share.instance_arn == instance_arn {
                    load.add(&share);
                }
            }
        }
        load
    }

    /// Adds one task's share.
    pub fn add(&mut self, share: &TaskShare<'_>) {
        self.cpu += share.cpu;
        self.memory += share.memory;
        self.running += i64::from(share.running);
        for port in share.tcp_ports {
            *self.tcp_ports.entry(*port).or_insert(0) += 1;
        }
        for port in share.udp_ports {
            *self.udp_ports.entry(*port).or_insert(0) += 1;
        }
    }

    /// Removes one task's share, added before.
    pub fn remove(&mut self, share: &TaskShare<'_>) {
        self.cpu -= share.cpu;
        self.memory -= share.memory;
        self.running -= i64::from(share.running);
        for (ports, used) in [
            (share.tcp_ports, &mut self.tcp_ports),
            (share.udp_ports, &mut self.udp_ports),
        ] {
            for port in ports {
                if let Some(count) = used.get_mut(port) {
                    *count -= 1;
                    if *count == 0 {
                        used.remove(port);
                    }
                }
            }
        }
    }

    /// Counts a task that started or stopped running, its share otherwise unchanged.
    pub fn set_running(&mut self, was: bool, is: bool) {
        self.running += i64::from(is) - i64::from(was);
    }

    /// The number of tasks in the `RUNNING` state.
    pub fn running(&self) -> i64 {
        self.running
    }

    /// What is left of `record`'s registered CPU units and memory.
    pub fn remaining_scalars(&self, record: &InstanceRecord) -> (i64, i64) {
        (record.cpu - self.cpu, record.memory - self.memory)
    }

    /// What is left of `record`'s registered resources.
    pub fn remaining(&self, record: &InstanceRecord) -> Resources {
        Resources {
            cpu: record.cpu - self.cpu,
            memory_mib: record.memory - self.memory,
            tcp_ports: record
                .ports
                .iter()
                .chain(self.tcp_ports.keys())
                .copied()
                .collect(),
            udp_ports: record
                .ports_udp
                .iter()
                .chain(self.udp_ports.keys())
                .copied()
                .collect(),
        }
    }
}

/// How the scheduler sees one instance.
pub(crate) fn instance_snapshot<'a>(
    record: &InstanceRecord,
    tasks: impl IntoIterator<Item = &'a Versioned<TaskRecord>> + Clone,
) -> InstanceSnapshot {
    let load = InstanceLoad::of(&record.arn, tasks.clone());
    let on_instance = tasks
        .into_iter()
        .filter_map(|t| TaskShare::of(&t.value))
        .filter(|share| share.instance_arn == record.arn)
        .map(|share| TaskOnInstance {
            group: share.group.to_owned(),
            family: share.family.to_owned(),
        })
        .collect();
    let mut snapshot = instance_snapshot_with(record, &load, on_instance, Default::default());
    // The view keeps snapshots between calls, so it indexes group counts once here
    // rather than placement scanning every task on every call.
    snapshot.index_groups();
    snapshot
}

/// How the scheduler sees one instance whose load, tasks and group counts are known.
pub(crate) fn instance_snapshot_with(
    record: &InstanceRecord,
    load: &InstanceLoad,
    tasks: Vec<TaskOnInstance>,
    group_counts: std::collections::HashMap<String, usize>,
) -> InstanceSnapshot {
    InstanceSnapshot {
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
        registered: Resources {
            cpu: record.cpu,
            memory_mib: record.memory,
            tcp_ports: record.ports.iter().copied().collect(),
            udp_ports: record.ports_udp.iter().copied().collect(),
        },
        remaining: load.remaining(record),
        running_tasks_count: load.running(),
        tasks,
        group_counts,
    }
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
        Some(only) => place_on_named(cluster.snapshot.snapshot(), &request, only),
        None => {
            let plan = cluster.snapshot.place_tasks(&request);
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
