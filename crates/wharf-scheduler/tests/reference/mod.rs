//! A reference planner: placement's rules written as plainly as possible, for the
//! optimised planners to be compared with.
//!
//! It keeps no state of its own beyond a copy of the snapshot: each placed task is
//! applied to the copy (resources and ports charged, the task added, the group index
//! kept), and before every task every active instance is checked again from scratch
//! and every spread bucket counted again from every instance. It is slow on purpose;
//! that it is obviously right is the point.
#![allow(dead_code)]

use std::collections::HashMap;

use wharf_scheduler::{
    BinpackField, ClusterSnapshot, FailureReason, InstanceSnapshot, PlacementConstraint,
    PlacementFailure, PlacementPlan, PlacementRequest, PlacementStrategy, SpreadField,
    TaskOnInstance, TaskPlacement,
};

/// SplitMix64, the generator placement documents: the same seed draws the same numbers.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % bound as u64) as usize
    }
}

/// Why `instance` (with this request's earlier tasks already applied to it) refuses
/// one more task, in ECS's order of checking: agent, required attributes, the
/// `memberOf` expressions that do not look at tasks, then the constraints that do in
/// the request's order, then CPU, memory and ports.
fn rejection(instance: &InstanceSnapshot, request: &PlacementRequest) -> Option<FailureReason> {
    if !instance.agent_connected {
        return Some(FailureReason::Agent);
    }
    for required in &request.requires_attributes {
        let held = match instance.attribute(&required.name) {
            None => false,
            Some(value) => required.value.is_none() || value == required.value.as_deref(),
        };
        if !held {
            return Some(FailureReason::Attribute);
        }
    }
    for constraint in &request.constraints {
        if let PlacementConstraint::MemberOf(expression) = constraint {
            if !expression.depends_on_tasks() && !expression.matches(instance) {
                return Some(FailureReason::MemberOfUnsatisfied);
            }
        }
    }
    for constraint in &request.constraints {
        match constraint {
            PlacementConstraint::MemberOf(expression)
                if expression.depends_on_tasks() && !expression.matches(instance) =>
            {
                return Some(FailureReason::MemberOfUnsatisfied);
            }
            PlacementConstraint::DistinctInstance
                if instance.group_task_count(&request.group) > 0 =>
            {
                return Some(FailureReason::DistinctInstanceUnsatisfied);
            }
            _ => {}
        }
    }
    if request.cpu > instance.remaining.cpu {
        return Some(FailureReason::ResourceCpu);
    }
    if request.memory_mib > instance.remaining.memory_mib {
        return Some(FailureReason::ResourceMemory);
    }
    let taken = |port: &u16, tcp: bool| {
        let (registered, remaining) = if tcp {
            (
                &instance.registered.tcp_ports,
                &instance.remaining.tcp_ports,
            )
        } else {
            (
                &instance.registered.udp_ports,
                &instance.remaining.udp_ports,
            )
        };
        registered.contains(port) || remaining.contains(port)
    };
    if request.tcp_host_ports.iter().any(|port| taken(port, true))
        || request.udp_host_ports.iter().any(|port| taken(port, false))
    {
        return Some(FailureReason::ResourcePorts);
    }
    None
}

/// Charges one task of `request` to `instance`, as committing it would.
fn apply(instance: &mut InstanceSnapshot, request: &PlacementRequest) {
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
    instance.running_tasks_count += 1;
    instance.tasks.push(TaskOnInstance {
        group: request.group.clone(),
        family: request.family.clone(),
    });
    if !instance.group_counts.is_empty() {
        *instance
            .group_counts
            .entry(request.group.clone())
            .or_insert(0) += 1;
    }
}

/// Keeps the candidates with the lowest score.
fn keep_lowest(candidates: &mut Vec<usize>, score: impl Fn(usize) -> i64) {
    if let Some(lowest) = candidates.iter().map(|&index| score(index)).min() {
        candidates.retain(|&index| score(index) == lowest);
    }
}

/// The plan placement must make for `request` on `snapshot`.
pub fn reference_plan(snapshot: &ClusterSnapshot, request: &PlacementRequest) -> PlacementPlan {
    let mut rng = SplitMix64(request.seed);
    let mut cluster = snapshot.clone();
    let active: Vec<usize> = (0..cluster.instances.len())
        .filter(|&index| cluster.instances[index].status.accepts_new_tasks())
        .collect();
    if active.is_empty() {
        let missing = TaskPlacement::Unplaced {
            failures: vec![PlacementFailure {
                instance_id: None,
                reason: FailureReason::Missing,
            }],
        };
        return PlacementPlan {
            tasks: vec![missing; request.count],
        };
    }
    let strategies = if request.strategies.is_empty() {
        vec![PlacementStrategy::Random]
    } else {
        request.strategies.clone()
    };

    let mut tasks = Vec::new();
    while tasks.len() < request.count {
        let instances = &cluster.instances;
        let fitting: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&index| rejection(&instances[index], request).is_none())
            .collect();
        if fitting.is_empty() {
            let failures: Vec<PlacementFailure> = active
                .iter()
                .filter_map(|&index| {
                    Some(PlacementFailure {
                        instance_id: Some(instances[index].id.clone()),
                        reason: rejection(&instances[index], request)?,
                    })
                })
                .collect();
            tasks.resize(request.count, TaskPlacement::Unplaced { failures });
            break;
        }
        let group_tasks = |index: usize| instances[index].group_task_count(&request.group);
        let mut candidates = fitting;
        for strategy in &strategies {
            if candidates.len() == 1 {
                break;
            }
            match strategy {
                PlacementStrategy::Random => {
                    candidates = vec![candidates[rng.below(candidates.len())]];
                }
                PlacementStrategy::Binpack(BinpackField::Cpu) => {
                    keep_lowest(&mut candidates, |index| instances[index].remaining.cpu)
                }
                PlacementStrategy::Binpack(BinpackField::Memory) => {
                    keep_lowest(&mut candidates, |index| {
                        instances[index].remaining.memory_mib
                    })
                }
                PlacementStrategy::Spread(SpreadField::InstanceId) => {
                    keep_lowest(&mut candidates, |index| group_tasks(index) as i64)
                }
                PlacementStrategy::Spread(SpreadField::Attribute(name)) => {
                    // Every active instance counts towards its value's bucket; those
                    // without the attribute, or without a value, share one bucket.
                    let value_of = |index: usize| instances[index].attribute(name).flatten();
                    let mut in_bucket: HashMap<Option<&str>, usize> = HashMap::new();
                    for &index in &active {
                        *in_bucket.entry(value_of(index)).or_insert(0) += group_tasks(index);
                    }
                    keep_lowest(&mut candidates, |index| in_bucket[&value_of(index)] as i64)
                }
            }
        }
        let chosen = candidates[rng.below(candidates.len())];
        tasks.push(TaskPlacement::Placed {
            instance_id: cluster.instances[chosen].id.clone(),
        });
        apply(&mut cluster.instances[chosen], request);
    }
    PlacementPlan { tasks }
}
