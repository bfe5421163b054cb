//! Placement: choosing a container instance for each task of a request.
//!
//! [`place_tasks`] places the request's tasks one after another. For each task it
//! rejects the instances that cannot take it (each with an ECS failure reason), then
//! narrows the rest with the strategies in order, each later strategy breaking the
//! ties left by the ones before; remaining ties go to the seeded generator. Every
//! placed task is charged to a working copy of the instance's resources, ports and
//! task groups, so the next task sees it.
//!
//! Only `ACTIVE` instances take tasks. Other instances are passed over silently;
//! when there is no `ACTIVE` instance at all, the task fails with `MISSING`.
//!
//! A call works in two steps. First it surveys the active instances once: what
//! rules an instance out whatever the plan (agent, required attributes, `memberOf`
//! expressions that do not look at tasks), how many tasks of the group each has, and
//! the attribute-spread buckets. Then it places the tasks from that survey,
//! re-checking after each task only the instance that took it. [`place_tasks`]
//! surveys by reading the snapshot, which on a large cluster means every instance's
//! attribute map and group counts on every call; [`IndexedSnapshot`], which a caller
//! keeps between calls, surveys from indexes it keeps up to date (interned attribute
//! values, a per-group count of tasks by instance) and is many times faster on many
//! small calls. The placing step is the same code for both, and the tests compare
//! both with a plain reference planner.

mod indexed;
mod input;
mod seeded_rng;

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::query::{Expression, QueryTarget};
use crate::snapshot::{ClusterSnapshot, InstanceSnapshot};
pub use indexed::IndexedSnapshot;
pub use input::{
    validate_placement, PlacementInputError, MAX_PLACEMENT_CONSTRAINTS, MAX_PLACEMENT_STRATEGIES,
};
use seeded_rng::SeededRng;

/// A rule every chosen instance must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum PlacementConstraint {
    /// No two tasks of the request's group on the same instance (counting the tasks of
    /// the group already there).
    DistinctInstance,
    /// Only instances matching the expression, evaluated against the plan so far
    /// (so `task:group` and `runningTasksCount` count tasks placed earlier in the same
    /// request).
    MemberOf(Expression),
}

/// The resource `binpack` packs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinpackField {
    /// CPU units.
    Cpu,
    /// Memory MiB.
    Memory,
}

/// What `spread` balances the group's tasks across.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpreadField {
    /// Each instance (`instanceId`, alias `host`).
    InstanceId,
    /// Each value of an attribute, e.g. `ecs.availability-zone`. Instances without the
    /// attribute (or without a value) form one bucket of their own.
    Attribute(String),
}

/// How to choose among the instances that can take a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlacementStrategy {
    /// Prefer the instance with the least of the resource left that still fits.
    Binpack(BinpackField),
    /// Prefer the instances (or attribute values) with the fewest tasks of the group.
    Spread(SpreadField),
    /// Pick at random, from the request's seed.
    Random,
}

impl PlacementStrategy {
    /// What ECS does for a service that names no strategy: spread across availability
    /// zones, then across instances.
    pub fn service_default() -> Vec<PlacementStrategy> {
        vec![
            Self::Spread(SpreadField::Attribute("ecs.availability-zone".to_owned())),
            Self::Spread(SpreadField::InstanceId),
        ]
    }
}

/// An attribute a task definition requires (`requiresAttributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredAttribute {
    /// The attribute's name, e.g. `com.amazonaws.ecs.capability.docker-remote-api.1.19`.
    pub name: String,
    /// The value it must have; `None` means any value, or none.
    pub value: Option<String>,
}

/// What to place: `count` identical tasks of one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementRequest {
    /// How many tasks.
    pub count: usize,
    /// The tasks' group, e.g. `family:web` or `service:api`.
    pub group: String,
    /// The tasks' task definition family.
    pub family: String,
    /// CPU units each task reserves (0 for none).
    pub cpu: i64,
    /// Memory MiB each task reserves (0 for none).
    pub memory_mib: i64,
    /// Static TCP host ports each task binds; dynamic host ports need no entry.
    pub tcp_host_ports: Vec<u16>,
    /// Static UDP host ports each task binds.
    pub udp_host_ports: Vec<u16>,
    /// Attributes an instance must have (all of them).
    pub requires_attributes: Vec<RequiredAttribute>,
    /// Constraints every chosen instance must satisfy.
    pub constraints: Vec<PlacementConstraint>,
    /// Strategies in order; empty means [`PlacementStrategy::Random`], as RunTask does.
    pub strategies: Vec<PlacementStrategy>,
    /// Seeds every random choice; the same seed gives the same plan.
    pub seed: u64,
}

/// Why an instance could not take a task, in ECS's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Not enough CPU left: `RESOURCE:CPU`.
    ResourceCpu,
    /// Not enough memory left: `RESOURCE:MEMORY`.
    ResourceMemory,
    /// A static host port is taken: `RESOURCE:PORTS`.
    ResourcePorts,
    /// A required attribute is missing or has another value: `ATTRIBUTE`.
    Attribute,
    /// The agent is disconnected: `AGENT`.
    Agent,
    /// No instance (or no `ACTIVE` one) in the cluster: `MISSING`.
    Missing,
    /// The instance is not `ACTIVE` (only from [`rejection_reason`], for StartTask):
    /// `INACTIVE`.
    InstanceNotActive,
    /// A `memberOf` expression does not match the instance.
    MemberOfUnsatisfied,
    /// The instance already has a task of the group and `distinctInstance` is set.
    DistinctInstanceUnsatisfied,
}

impl FailureReason {
    /// The `reason` string of an ECS `Failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResourceCpu => "RESOURCE:CPU",
            Self::ResourceMemory => "RESOURCE:MEMORY",
            Self::ResourcePorts => "RESOURCE:PORTS",
            Self::Attribute => "ATTRIBUTE",
            Self::Agent => "AGENT",
            Self::Missing => "MISSING",
            Self::InstanceNotActive => "INACTIVE",
            Self::MemberOfUnsatisfied => "MemberOf placement constraint unsatisfied.",
            Self::DistinctInstanceUnsatisfied => {
                "DistinctInstance placement constraint unsatisfied."
            }
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance's refusal of one task, like an entry of ECS's `failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementFailure {
    /// The refusing container instance's ARN; `None` for `MISSING` (the caller puts
    /// the cluster's ARN there).
    pub instance_id: Option<String>,
    /// Why.
    pub reason: FailureReason,
}

/// The outcome for one task of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskPlacement {
    /// The task goes to this container instance (its ARN).
    Placed {
        /// The chosen container instance's ARN.
        instance_id: String,
    },
    /// No instance could take the task; one failure per refusing `ACTIVE` instance
    /// (in snapshot order), or a single `MISSING`.
    Unplaced {
        /// Why each instance refused.
        failures: Vec<PlacementFailure>,
    },
}

/// The result of [`place_tasks`]: one outcome per requested task, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementPlan {
    /// `count` entries.
    pub tasks: Vec<TaskPlacement>,
}

impl PlacementPlan {
    /// The chosen instance ARNs of the placed tasks, in task order.
    pub fn placed_instance_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().filter_map(|task| match task {
            TaskPlacement::Placed { instance_id } => Some(instance_id.as_str()),
            TaskPlacement::Unplaced { .. } => None,
        })
    }

    /// How many tasks were placed.
    pub fn placed_count(&self) -> usize {
        self.placed_instance_ids().count()
    }

    /// Every failure of the unplaced tasks, deduplicated by (instance, reason) and in
    /// first-seen order, as RunTask reports them.
    pub fn failures(&self) -> Vec<PlacementFailure> {
        // Every unplaced task may carry a failure per instance, so duplicates are
        // found by hashing rather than by scanning what was kept.
        let mut seen = HashSet::new();
        let mut kept = Vec::new();
        for task in &self.tasks {
            if let TaskPlacement::Unplaced { failures } = task {
                for failure in failures {
                    if seen.insert((failure.instance_id.as_deref(), failure.reason)) {
                        kept.push(failure.clone());
                    }
                }
            }
        }
        kept
    }
}

/// Why `instance` could not take one task of `request` right now, or `None` if it
/// can. Looks at the instance's status too, so StartTask can check the instances it
/// was told to use. Strategies play no part.
pub fn rejection_reason(
    instance: &InstanceSnapshot,
    request: &PlacementRequest,
) -> Option<FailureReason> {
    if !instance.status.accepts_new_tasks() {
        return Some(FailureReason::InstanceNotActive);
    }
    let working = WorkingInstance::new(instance, &request.group);
    static_rejection(instance, request)
        .or_else(|| working.dynamic_rejection(&DynamicRules::new(request)))
}

/// Places `request.count` tasks on `snapshot`'s instances, one after another.
///
/// This reads every active instance's attributes and group counts on each call; a
/// caller that places into the same cluster again and again should keep an
/// [`IndexedSnapshot`] instead, which gives exactly the same plans.
pub fn place_tasks(snapshot: &ClusterSnapshot, request: &PlacementRequest) -> PlacementPlan {
    let active: Vec<&InstanceSnapshot> = snapshot
        .instances
        .iter()
        .filter(|instance| instance.status.accepts_new_tasks())
        .collect();
    if active.is_empty() {
        return missing_plan(request.count);
    }
    let strategies = strategies_of(request);

    // What cannot change while placing (agent, attributes, memberOf expressions that
    // do not look at tasks) is worked out once per instance.
    let static_member_of = static_member_of(request);
    let static_rejections: Vec<Option<FailureReason>> = active
        .iter()
        .map(|instance| static_rejection_with(instance, request, &static_member_of))
        .collect();

    // Counting the group's tasks reads every task on every instance, by far the
    // largest part of the snapshot, so it is done only where something looks at the
    // count: attribute spread needs it on every active instance (its buckets total
    // them), instance spread and distinctInstance only on the instances that can take
    // a task at all.
    let counts_everywhere = strategies.iter().any(|strategy| {
        matches!(
            strategy,
            PlacementStrategy::Spread(SpreadField::Attribute(_))
        )
    });
    let counts_on_eligible = counts_everywhere
        || strategies
            .iter()
            .any(|strategy| matches!(strategy, PlacementStrategy::Spread(SpreadField::InstanceId)))
        || request
            .constraints
            .iter()
            .any(|constraint| matches!(constraint, PlacementConstraint::DistinctInstance));
    let group = GroupName::new(&request.group);
    let working: Vec<WorkingInstance<'_>> = active
        .iter()
        .zip(&static_rejections)
        .map(|(instance, rejection)| {
            let count = counts_everywhere || (counts_on_eligible && rejection.is_none());
            let existing = if count { group.count_on(instance) } else { 0 };
            WorkingInstance::with_group_tasks(instance, &request.group, existing)
        })
        .collect();
    let spreads = SpreadBuckets::new(&active, &working, strategies);
    plan_surveyed(
        request,
        strategies,
        Survey {
            working,
            static_rejections,
            spreads,
        },
    )
}

/// Every task fails with `MISSING`: the cluster has no `ACTIVE` instance.
fn missing_plan(count: usize) -> PlacementPlan {
    let missing = TaskPlacement::Unplaced {
        failures: vec![PlacementFailure {
            instance_id: None,
            reason: FailureReason::Missing,
        }],
    };
    PlacementPlan {
        tasks: vec![missing; count],
    }
}

/// The request's strategies; none means random, as RunTask does.
fn strategies_of(request: &PlacementRequest) -> &[PlacementStrategy] {
    if request.strategies.is_empty() {
        &[PlacementStrategy::Random]
    } else {
        &request.strategies
    }
}

/// The request's `memberOf` expressions that do not look at tasks.
fn static_member_of(request: &PlacementRequest) -> Vec<&Expression> {
    request
        .constraints
        .iter()
        .filter_map(|constraint| match constraint {
            PlacementConstraint::MemberOf(expression) if !expression.depends_on_tasks() => {
                Some(expression)
            }
            _ => None,
        })
        .collect()
}

/// What one call knows about the cluster's active instances (in snapshot order)
/// before placing anything. [`place_tasks`] gathers it by reading the snapshot,
/// [`IndexedSnapshot`] from its indexes; the placing itself is shared.
struct Survey<'a> {
    /// Each active instance with its resources left and the group's tasks on it.
    working: Vec<WorkingInstance<'a>>,
    /// Why each active instance refuses every task of the request, whatever the plan.
    static_rejections: Vec<Option<FailureReason>>,
    /// The buckets of every attribute spread among the strategies.
    spreads: SpreadBuckets,
}

/// Places the request's tasks one after another on the surveyed instances.
fn plan_surveyed(
    request: &PlacementRequest,
    strategies: &[PlacementStrategy],
    survey: Survey<'_>,
) -> PlacementPlan {
    let Survey {
        mut working,
        static_rejections,
        mut spreads,
    } = survey;
    let mut rng = SeededRng::new(request.seed);
    let rules = DynamicRules::new(request);

    // The instances that can take the next task, in snapshot order. Placing a task
    // changes what only the chosen instance can take (its resources, ports, group
    // tasks and running count; `memberOf` looks at one instance at a time), so only
    // that instance is checked again after each task.
    let mut fitting: Vec<usize> = static_rejections
        .iter()
        .enumerate()
        .filter(|&(index, rejection)| {
            rejection.is_none() && working[index].dynamic_rejection(&rules).is_none()
        })
        .map(|(index, _)| index)
        .collect();

    let mut tasks = Vec::with_capacity(request.count);
    let mut candidates = Vec::with_capacity(fitting.len());
    let mut scratch = Vec::with_capacity(fitting.len());
    while tasks.len() < request.count {
        if fitting.is_empty() {
            // Every instance refuses; say why, in snapshot order. Nothing changes
            // until a task is placed, so every task left fails the same way.
            let failures: Vec<PlacementFailure> = working
                .iter()
                .zip(&static_rejections)
                .filter_map(|(instance, rejection)| {
                    let reason = rejection.or_else(|| instance.dynamic_rejection(&rules))?;
                    Some(PlacementFailure {
                        instance_id: Some(instance.base.id.clone()),
                        reason,
                    })
                })
                .collect();
            let unplaced = TaskPlacement::Unplaced { failures };
            tasks.resize(request.count, unplaced);
            break;
        }
        // Each strategy keeps the candidates it likes best among those the ones
        // before it kept; the first reads `fitting` itself rather than a copy.
        let mut narrowed = false;
        for strategy in strategies {
            let from: &[usize] = if narrowed { &candidates } else { &fitting };
            if from.len() == 1 {
                break;
            }
            narrow(from, &mut scratch, strategy, &working, &spreads, &mut rng);
            std::mem::swap(&mut candidates, &mut scratch);
            narrowed = true;
        }
        let pool: &[usize] = if narrowed { &candidates } else { &fitting };
        let chosen = pool[rng.below(pool.len())];
        working[chosen].charge(request);
        spreads.record(chosen);
        if working[chosen].dynamic_rejection(&rules).is_some() {
            fitting.retain(|&index| index != chosen);
        }
        tasks.push(TaskPlacement::Placed {
            instance_id: working[chosen].base.id.clone(),
        });
    }
    PlacementPlan { tasks }
}

/// Puts into `kept` the candidates of `from` that `strategy` likes best, in order.
fn narrow(
    from: &[usize],
    kept: &mut Vec<usize>,
    strategy: &PlacementStrategy,
    working: &[WorkingInstance<'_>],
    spreads: &SpreadBuckets,
    rng: &mut SeededRng,
) {
    match strategy {
        PlacementStrategy::Random => {
            kept.clear();
            kept.push(from[rng.below(from.len())]);
        }
        PlacementStrategy::Binpack(BinpackField::Cpu) => {
            keep_lowest(from, kept, |index| working[index].cpu_left)
        }
        PlacementStrategy::Binpack(BinpackField::Memory) => {
            keep_lowest(from, kept, |index| working[index].memory_left)
        }
        PlacementStrategy::Spread(SpreadField::InstanceId) => {
            keep_lowest(from, kept, |index| working[index].group_tasks() as i64)
        }
        PlacementStrategy::Spread(SpreadField::Attribute(name)) => {
            // Looked up once per task, not once per candidate.
            match spreads.by_attribute.get(name) {
                Some(buckets) => keep_lowest(from, kept, |index| {
                    buckets.group_tasks_sharing(index) as i64
                }),
                None => {
                    kept.clear();
                    kept.extend_from_slice(from);
                }
            }
        }
    }
}

/// Puts into `kept` the candidates of `from` with the lowest score, in order, in one
/// pass: a new lowest score drops what was kept so far.
fn keep_lowest(from: &[usize], kept: &mut Vec<usize>, mut score: impl FnMut(usize) -> i64) {
    kept.clear();
    let mut lowest = i64::MAX;
    for &index in from {
        let score = score(index);
        if score < lowest {
            lowest = score;
            kept.clear();
        }
        if score == lowest {
            kept.push(index);
        }
    }
}

/// Reasons that do not depend on what the plan has placed so far.
fn static_rejection(
    instance: &InstanceSnapshot,
    request: &PlacementRequest,
) -> Option<FailureReason> {
    static_rejection_with(instance, request, &static_member_of(request))
}

/// [`static_rejection`] with the request's task-independent `memberOf` expressions
/// picked out already.
fn static_rejection_with(
    instance: &InstanceSnapshot,
    request: &PlacementRequest,
    static_member_of: &[&Expression],
) -> Option<FailureReason> {
    if !instance.agent_connected {
        return Some(FailureReason::Agent);
    }
    let has_required = |required: &RequiredAttribute| match instance.attribute(&required.name) {
        None => false,
        Some(value) => required.value.is_none() || value == required.value.as_deref(),
    };
    if !request.requires_attributes.iter().all(has_required) {
        return Some(FailureReason::Attribute);
    }
    let unsatisfied = static_member_of
        .iter()
        .any(|expression| !expression.matches(instance));
    unsatisfied.then_some(FailureReason::MemberOfUnsatisfied)
}

/// A task group name, compared against many tasks' groups quickly: most groups of a
/// cluster share a prefix (`service:`, `family:`) and often a length, so the last
/// eight bytes are compared first, without a call into `memcmp`.
struct GroupName<'a> {
    bytes: &'a [u8],
    tail: Option<u64>,
}

impl<'a> GroupName<'a> {
    fn new(group: &'a str) -> Self {
        let bytes = group.as_bytes();
        Self {
            bytes,
            tail: last_eight(bytes),
        }
    }

    fn matches(&self, other: &str) -> bool {
        let other = other.as_bytes();
        if other.len() != self.bytes.len() {
            return false;
        }
        match self.tail {
            Some(tail) if last_eight(other) != Some(tail) => false,
            _ => other == self.bytes,
        }
    }

    /// How many of an instance's tasks are in this group: from its index when it has
    /// one, else by scanning its tasks.
    fn count_on(&self, instance: &InstanceSnapshot) -> usize {
        if instance.group_counts.is_empty() {
            self.count_in(&instance.tasks)
        } else {
            // The index is keyed by the group name this matcher was built from.
            let group = std::str::from_utf8(self.bytes).unwrap_or_default();
            instance.group_counts.get(group).copied().unwrap_or(0)
        }
    }

    /// How many of `tasks` are in this group.
    fn count_in(&self, tasks: &[crate::snapshot::TaskOnInstance]) -> usize {
        let Some(tail) = self.tail else {
            return tasks
                .iter()
                .filter(|task| self.matches(&task.group))
                .count();
        };
        // Reading the tail of every group of the right length waits on memory far
        // from the task list; choosing what to read without a branch (a group of
        // another length reads our own, which is cached and then fails the length
        // test) lets the processor have many of those reads in flight at once.
        let len = self.bytes.len();
        tasks
            .iter()
            .filter(|task| {
                let other = task.group.as_bytes();
                let same_len = other.len() == len;
                let read = if same_len { other } else { self.bytes };
                let same_tail = last_eight(read) == Some(tail);
                same_len & same_tail && other == self.bytes
            })
            .count()
    }
}

/// The last eight bytes as one word, for strings that have eight.
fn last_eight(bytes: &[u8]) -> Option<u64> {
    let start = bytes.len().checked_sub(8)?;
    let word: [u8; 8] = bytes[start..].try_into().ok()?;
    Some(u64::from_ne_bytes(word))
}

/// The checks whose answer can change as tasks are placed, picked out of a request
/// once per call rather than once per instance.
struct DynamicRules<'r> {
    /// The constraints that look at tasks, in the request's order.
    constraints: Vec<DynamicConstraint<'r>>,
    cpu: i64,
    memory_mib: i64,
    binds_static_ports: bool,
    tcp_host_ports: &'r [u16],
    udp_host_ports: &'r [u16],
}

enum DynamicConstraint<'r> {
    /// A `memberOf` expression that looks at tasks (`task:group`, `runningTasksCount`).
    MemberOf(&'r Expression),
    DistinctInstance,
}

impl<'r> DynamicRules<'r> {
    fn new(request: &'r PlacementRequest) -> Self {
        let constraints = request
            .constraints
            .iter()
            .filter_map(|constraint| match constraint {
                PlacementConstraint::MemberOf(expression) if expression.depends_on_tasks() => {
                    Some(DynamicConstraint::MemberOf(expression))
                }
                PlacementConstraint::MemberOf(_) => None,
                PlacementConstraint::DistinctInstance => Some(DynamicConstraint::DistinctInstance),
            })
            .collect();
        Self {
            constraints,
            cpu: request.cpu,
            memory_mib: request.memory_mib,
            binds_static_ports: !request.tcp_host_ports.is_empty()
                || !request.udp_host_ports.is_empty(),
            tcp_host_ports: &request.tcp_host_ports,
            udp_host_ports: &request.udp_host_ports,
        }
    }
}

/// An instance plus what this plan has put on it so far.
struct WorkingInstance<'a> {
    base: &'a InstanceSnapshot,
    group: &'a str,
    cpu_left: i64,
    memory_left: i64,
    existing_group_tasks: usize,
    planned_tasks: usize,
}

impl<'a> WorkingInstance<'a> {
    fn new(base: &'a InstanceSnapshot, group: &'a str) -> Self {
        Self::with_group_tasks(base, group, GroupName::new(group).count_on(base))
    }

    /// With the count of the group's tasks already on the instance worked out (or 0
    /// when nothing will look at it).
    fn with_group_tasks(
        base: &'a InstanceSnapshot,
        group: &'a str,
        existing_group_tasks: usize,
    ) -> Self {
        Self::with_state(
            base,
            group,
            base.remaining.cpu,
            base.remaining.memory_mib,
            existing_group_tasks,
        )
    }

    /// With the instance's remaining CPU and memory and the count of the group's
    /// tasks on it read from elsewhere (an index that mirrors `base`).
    fn with_state(
        base: &'a InstanceSnapshot,
        group: &'a str,
        cpu_left: i64,
        memory_left: i64,
        existing_group_tasks: usize,
    ) -> Self {
        Self {
            base,
            group,
            cpu_left,
            memory_left,
            existing_group_tasks,
            planned_tasks: 0,
        }
    }

    fn group_tasks(&self) -> usize {
        self.existing_group_tasks + self.planned_tasks
    }

    /// Reasons that can change as tasks are placed, in ECS's order of checking.
    fn dynamic_rejection(&self, rules: &DynamicRules<'_>) -> Option<FailureReason> {
        for constraint in &rules.constraints {
            match constraint {
                DynamicConstraint::MemberOf(expression) if !expression.matches_target(self) => {
                    return Some(FailureReason::MemberOfUnsatisfied);
                }
                DynamicConstraint::DistinctInstance if self.group_tasks() > 0 => {
                    return Some(FailureReason::DistinctInstanceUnsatisfied);
                }
                _ => {}
            }
        }
        if rules.cpu > self.cpu_left {
            return Some(FailureReason::ResourceCpu);
        }
        if rules.memory_mib > self.memory_left {
            return Some(FailureReason::ResourceMemory);
        }
        if rules.binds_static_ports && self.ports_taken(rules) {
            return Some(FailureReason::ResourcePorts);
        }
        None
    }

    /// A static port is taken when the instance reserves or uses it already, or when
    /// this plan put a task of the same request here (it binds the same ports).
    fn ports_taken(&self, rules: &DynamicRules<'_>) -> bool {
        if self.planned_tasks > 0 {
            return true;
        }
        let (registered, remaining) = (&self.base.registered, &self.base.remaining);
        rules
            .tcp_host_ports
            .iter()
            .any(|port| remaining.tcp_ports.contains(port) || registered.tcp_ports.contains(port))
            || rules.udp_host_ports.iter().any(|port| {
                remaining.udp_ports.contains(port) || registered.udp_ports.contains(port)
            })
    }

    fn charge(&mut self, request: &PlacementRequest) {
        self.cpu_left -= request.cpu;
        self.memory_left -= request.memory_mib;
        self.planned_tasks += 1;
    }
}

impl QueryTarget for WorkingInstance<'_> {
    fn agent_connected(&self) -> bool {
        self.base.agent_connected
    }
    fn agent_version(&self) -> &str {
        &self.base.agent_version
    }
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.base.attribute(name)
    }
    fn ec2_instance_id(&self) -> &str {
        &self.base.ec2_instance_id
    }
    fn registered_at_ms(&self) -> i64 {
        self.base.registered_at_ms
    }
    fn running_tasks_count(&self) -> i64 {
        self.base.running_tasks_count + self.planned_tasks as i64
    }
    fn any_task_group(&self, predicate: &mut dyn FnMut(&str) -> bool) -> bool {
        (self.planned_tasks > 0 && predicate(self.group))
            || self.base.tasks.iter().any(|task| predicate(&task.group))
    }
}

/// For each attribute spread: which bucket (attribute value) every active instance
/// falls in, and how many tasks of the group each bucket holds across all active
/// instances.
struct SpreadBuckets {
    by_attribute: HashMap<String, AttributeBuckets>,
}

struct AttributeBuckets {
    bucket_of_instance: Vec<usize>,
    group_tasks_in_bucket: Vec<usize>,
}

impl AttributeBuckets {
    /// Tasks of the group on all instances sharing `instance`'s attribute value.
    fn group_tasks_sharing(&self, instance: usize) -> usize {
        self.group_tasks_in_bucket[self.bucket_of_instance[instance]]
    }
}

impl SpreadBuckets {
    /// `working[i]` is `active[i]` with its group tasks counted.
    fn new(
        active: &[&InstanceSnapshot],
        working: &[WorkingInstance<'_>],
        strategies: &[PlacementStrategy],
    ) -> Self {
        let mut by_attribute = HashMap::new();
        for strategy in strategies {
            let PlacementStrategy::Spread(SpreadField::Attribute(name)) = strategy else {
                continue;
            };
            if by_attribute.contains_key(name) {
                continue;
            }
            let mut bucket_ids = BucketIds::default();
            let mut bucket_of_instance = Vec::with_capacity(active.len());
            let mut group_tasks_in_bucket = Vec::new();
            for (instance, counted) in active.iter().zip(working) {
                let value = instance.attribute(name).flatten();
                let bucket = bucket_ids.id_of(value);
                if bucket == group_tasks_in_bucket.len() {
                    group_tasks_in_bucket.push(0);
                }
                group_tasks_in_bucket[bucket] += counted.existing_group_tasks;
                bucket_of_instance.push(bucket);
            }
            by_attribute.insert(
                name.clone(),
                AttributeBuckets {
                    bucket_of_instance,
                    group_tasks_in_bucket,
                },
            );
        }
        Self { by_attribute }
    }

    fn record(&mut self, instance: usize) {
        for buckets in self.by_attribute.values_mut() {
            buckets.group_tasks_in_bucket[buckets.bucket_of_instance[instance]] += 1;
        }
    }
}

/// Numbers attribute values in first-seen order. Spread attributes usually have a
/// handful of values (zones, instance types), found faster by a scan than by hashing;
/// past a few dozen values a map takes over.
#[derive(Default)]
struct BucketIds<'a> {
    few: Vec<Option<&'a str>>,
    many: HashMap<Option<&'a str>, usize>,
}

impl<'a> BucketIds<'a> {
    const SCAN_LIMIT: usize = 32;

    fn id_of(&mut self, value: Option<&'a str>) -> usize {
        if let Some(id) = self.few.iter().position(|known| *known == value) {
            return id;
        }
        if self.few.len() < Self::SCAN_LIMIT {
            self.few.push(value);
            return self.few.len() - 1;
        }
        let next = Self::SCAN_LIMIT + self.many.len();
        *self.many.entry(value).or_insert(next)
    }
}
