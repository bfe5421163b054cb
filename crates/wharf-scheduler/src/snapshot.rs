//! The read-only picture of a cluster that placement and filtering work on.
//!
//! The control plane builds a [`ClusterSnapshot`] from its in-memory view of the store;
//! placement never mutates it (an [`IndexedSnapshot`](crate::IndexedSnapshot) changes
//! only when its owner says so). Placement copies what it needs into its own working
//! state, so one snapshot can serve many plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every container instance of one cluster, in the order placement should consider them.
///
/// The order matters only for determinism: with the same snapshot, request and seed,
/// placement returns the same plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The cluster's container instances, whatever their status.
    pub instances: Vec<InstanceSnapshot>,
}

/// A container instance's lifecycle status as far as placement cares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum InstanceStatus {
    /// Registered and taking new tasks.
    #[default]
    Active,
    /// Being emptied: keeps its running tasks but takes no new ones.
    Draining,
    /// Any other status (`REGISTERING`, `DEREGISTERING`, `INACTIVE`, …), carried as
    /// the wire spelling; such instances take no tasks.
    Other(String),
}

impl InstanceStatus {
    /// Parses the ECS wire spelling (`ACTIVE`, `DRAINING`, anything else).
    pub fn from_wire(status: &str) -> Self {
        match status {
            "ACTIVE" => Self::Active,
            "DRAINING" => Self::Draining,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether an instance in this status may be given new tasks: only `ACTIVE` may.
    pub fn accepts_new_tasks(&self) -> bool {
        matches!(self, Self::Active)
    }
}

/// One resource ledger of an instance, in ECS's units.
///
/// For `registered` resources the port sets are the ports the agent reserved at
/// registration; for `remaining` resources they are every port reserved or in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU units (1,024 per vCPU).
    pub cpu: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// TCP host ports reserved or in use (`PORTS`).
    pub tcp_ports: BTreeSet<u16>,
    /// UDP host ports reserved or in use (`PORTS_UDP`).
    pub udp_ports: BTreeSet<u16>,
}

/// A task already on an instance, as far as placement cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskOnInstance {
    /// The task group, e.g. `family:web` or `service:api`.
    pub group: String,
    /// The task definition family.
    pub family: String,
}

/// One container instance as placement and the cluster query language see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSnapshot {
    /// The container instance ARN; placements name instances by it.
    pub id: String,
    /// The EC2 (or host) instance id, e.g. `i-0abc…`.
    pub ec2_instance_id: String,
    /// Only [`InstanceStatus::Active`] instances take tasks.
    pub status: InstanceStatus,
    /// Whether the agent is connected; a disconnected agent takes no tasks.
    pub agent_connected: bool,
    /// The agent's version, e.g. `1.14.5`, compared in version order.
    pub agent_version: String,
    /// Registration time, milliseconds since the Unix epoch (UTC).
    pub registered_at_ms: i64,
    /// Instance attributes: name → optional value.
    pub attributes: BTreeMap<String, Option<String>>,
    /// What the instance registered with.
    pub registered: Resources,
    /// What is left after the tasks already on it.
    pub remaining: Resources,
    /// The number of tasks in the `RUNNING` state.
    pub running_tasks_count: i64,
    /// The tasks on the instance (pending and running), for task groups and spread.
    pub tasks: Vec<TaskOnInstance>,
    /// How many of `tasks` are in each group: an index a caller that keeps snapshots
    /// between calls maintains (see [`InstanceSnapshot::index_groups`]) so that
    /// placement need not scan every task of every instance. When it is empty,
    /// placement counts from `tasks`.
    pub group_counts: HashMap<String, usize>,
}

impl InstanceSnapshot {
    /// The value of an attribute: `None` when absent, `Some(None)` when present
    /// without a value.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes.get(name).map(|value| value.as_deref())
    }

    /// How many tasks of `group` are on this instance: from the index when there is
    /// one, else by counting `tasks`.
    pub fn group_task_count(&self, group: &str) -> usize {
        if self.group_counts.is_empty() {
            self.tasks.iter().filter(|task| task.group == group).count()
        } else {
            self.group_counts.get(group).copied().unwrap_or(0)
        }
    }

    /// Rebuilds `group_counts` from `tasks`.
    pub fn index_groups(&mut self) {
        self.group_counts.clear();
        for task in &self.tasks {
            *self.group_counts.entry(task.group.clone()).or_insert(0) += 1;
        }
    }
}
