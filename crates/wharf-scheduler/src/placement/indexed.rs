//! [`IndexedSnapshot`]: a cluster snapshot kept together with the indexes placement
//! scans, so that a call reads a few small arrays per instance rather than every
//! instance's attribute map and group counts.
//!
//! What is indexed, and what for:
//! - per instance: whether it is `ACTIVE`, whether its agent is connected, and its
//!   remaining CPU and memory, so the first pass over the cluster stays in a few
//!   contiguous arrays;
//! - per attribute name: every instance's value as a small number (values are
//!   interned per name), so a `requiresAttributes` entry is one comparison, a
//!   `memberOf` condition on an attribute is evaluated once per distinct value rather
//!   than once per instance, and an attribute spread counts into an array;
//! - per task group: the instances that have tasks of the group and how many, so
//!   counting a group's tasks touches only those instances.
//!
//! Every change to an instance goes through the index, which re-derives that
//! instance's entries, so the indexes cannot drift from the snapshot they describe.
//! The placing itself is the code [`place_tasks`](super::place_tasks) runs, on the
//! same per-call survey; only how the survey is gathered differs.

use std::collections::HashMap;

use super::{
    missing_plan, plan_surveyed, static_member_of, strategies_of, AttributeBuckets, FailureReason,
    PlacementPlan, PlacementRequest, PlacementStrategy, RequiredAttribute, SpreadBuckets,
    SpreadField, Survey, WorkingInstance,
};
use crate::query::{Condition, Expression};
use crate::snapshot::{ClusterSnapshot, InstanceSnapshot};

/// The state of an instance without the attribute.
const ABSENT: u32 = 0;
/// The state of an instance that has the attribute without a value.
const NO_VALUE: u32 = 1;
/// The state of an instance whose value was interned as id 0; id `n` is `n + 2`.
const FIRST_VALUE: u32 = 2;

/// A [`ClusterSnapshot`] plus the indexes that make placing into it cheap to repeat.
///
/// A caller that keeps a cluster's snapshot between placements (as the control
/// plane's view does) keeps this instead and makes every change through it:
/// [`replace_instance`](Self::replace_instance) or
/// [`update_instance`](Self::update_instance) when an instance or its tasks change,
/// [`push_instance`](Self::push_instance) when one registers and
/// [`swap_remove_instance`](Self::swap_remove_instance) when one goes. Positions are
/// those of [`ClusterSnapshot::instances`], and these operations move instances
/// exactly as the `Vec` operations of the same names do.
///
/// [`IndexedSnapshot::place_tasks`] gives exactly the plan that
/// [`place_tasks`](super::place_tasks) gives for [`IndexedSnapshot::snapshot`].
#[derive(Debug, Clone, Default)]
pub struct IndexedSnapshot {
    snapshot: ClusterSnapshot,
    /// Per position: whether the instance is `ACTIVE`.
    active: Vec<bool>,
    /// Per position: whether the instance's agent is connected.
    agent_connected: Vec<bool>,
    /// Per position: the instance's remaining CPU units.
    cpu_left: Vec<i64>,
    /// Per position: the instance's remaining memory MiB.
    memory_left: Vec<i64>,
    /// Per attribute name that some instance has (or had): every instance's value.
    attributes: HashMap<String, AttributeColumn>,
    /// Per task group: position → how many of the group's tasks are there, for the
    /// instances that have any.
    groups: HashMap<String, HashMap<usize, usize>>,
}

impl From<ClusterSnapshot> for IndexedSnapshot {
    fn from(snapshot: ClusterSnapshot) -> Self {
        Self::new(snapshot)
    }
}

impl IndexedSnapshot {
    /// Indexes every instance of `snapshot`.
    pub fn new(snapshot: ClusterSnapshot) -> Self {
        let mut indexed = Self::default();
        indexed.snapshot.instances.reserve(snapshot.instances.len());
        for instance in snapshot.instances {
            indexed.push_instance(instance);
        }
        indexed
    }

    /// The snapshot the indexes describe.
    pub fn snapshot(&self) -> &ClusterSnapshot {
        &self.snapshot
    }

    /// Gives the snapshot back, dropping the indexes.
    pub fn into_snapshot(self) -> ClusterSnapshot {
        self.snapshot
    }

    /// Adds an instance at the end.
    pub fn push_instance(&mut self, instance: InstanceSnapshot) {
        let position = self.snapshot.instances.len();
        self.snapshot.instances.push(instance);
        self.active.push(false);
        self.agent_connected.push(false);
        self.cpu_left.push(0);
        self.memory_left.push(0);
        for column in self.attributes.values_mut() {
            column.states.push(ABSENT);
        }
        self.index(position);
    }

    /// Replaces the instance at `position`, returning the old one.
    ///
    /// # Panics
    ///
    /// When `position` is out of bounds, as indexing the `Vec` would.
    pub fn replace_instance(
        &mut self,
        position: usize,
        instance: InstanceSnapshot,
    ) -> InstanceSnapshot {
        self.update_instance(position, |slot| std::mem::replace(slot, instance))
    }

    /// Changes the instance at `position` in place (e.g. charges a committed task to
    /// it) and re-indexes it.
    ///
    /// # Panics
    ///
    /// When `position` is out of bounds, as indexing the `Vec` would.
    pub fn update_instance<R>(
        &mut self,
        position: usize,
        update: impl FnOnce(&mut InstanceSnapshot) -> R,
    ) -> R {
        self.unindex(position);
        let result = update(&mut self.snapshot.instances[position]);
        self.index(position);
        result
    }

    /// Removes the instance at `position` and moves the last instance into its
    /// place, as [`Vec::swap_remove`] does.
    ///
    /// # Panics
    ///
    /// When `position` is out of bounds, as [`Vec::swap_remove`] would.
    pub fn swap_remove_instance(&mut self, position: usize) -> InstanceSnapshot {
        self.unindex(position);
        let last = self.snapshot.instances.len() - 1;
        if position != last {
            // The last instance moves to `position`; its group entries follow it (its
            // attribute states move with the columns' own swap_remove below).
            for_each_group(&self.snapshot.instances[last], |group, _| {
                if let Some(on) = self.groups.get_mut(group) {
                    if let Some(count) = on.remove(&last) {
                        on.insert(position, count);
                    }
                }
            });
        }
        self.active.swap_remove(position);
        self.agent_connected.swap_remove(position);
        self.cpu_left.swap_remove(position);
        self.memory_left.swap_remove(position);
        for column in self.attributes.values_mut() {
            column.states.swap_remove(position);
        }
        self.snapshot.instances.swap_remove(position)
    }

    /// Places `request.count` tasks, one after another: the same plan as
    /// [`place_tasks`](super::place_tasks) on [`Self::snapshot`].
    pub fn place_tasks(&self, request: &PlacementRequest) -> PlacementPlan {
        let instances = &self.snapshot.instances;
        let active: Vec<usize> = (0..instances.len())
            .filter(|&position| self.active[position])
            .collect();
        if active.is_empty() {
            return missing_plan(request.count);
        }
        let strategies = strategies_of(request);

        let required: Vec<RequiredState<'_>> = request
            .requires_attributes
            .iter()
            .map(|required| RequiredState::new(required, &self.attributes))
            .collect();
        let mut filters: Vec<StaticFilter<'_, '_>> = static_member_of(request)
            .into_iter()
            .map(|expression| StaticFilter::compile(expression, &self.attributes))
            .collect();
        // The same checks in the same order as `static_rejection_with`.
        let static_rejections: Vec<Option<FailureReason>> = active
            .iter()
            .map(|&position| {
                if !self.agent_connected[position] {
                    Some(FailureReason::Agent)
                } else if !required.iter().all(|state| state.holds(position)) {
                    Some(FailureReason::Attribute)
                } else if filters
                    .iter_mut()
                    .any(|filter| !filter.matches(position, &instances[position]))
                {
                    Some(FailureReason::MemberOfUnsatisfied)
                } else {
                    None
                }
            })
            .collect();

        // The group's tasks, counted only where there are any. `place_tasks` leaves
        // the count at 0 where nothing will look at it; the true count there changes
        // nothing (every reader of it looks only where it counted).
        let mut existing = vec![0; active.len()];
        if let Some(on) = self.groups.get(&request.group) {
            if active.len() == instances.len() {
                for (&position, &count) in on {
                    existing[position] = count;
                }
            } else {
                let mut slot_of = vec![usize::MAX; instances.len()];
                for (slot, &position) in active.iter().enumerate() {
                    slot_of[position] = slot;
                }
                for (&position, &count) in on {
                    if let Some(slot) = existing.get_mut(slot_of[position]) {
                        *slot = count;
                    }
                }
            }
        }

        let mut spreads = SpreadBuckets {
            by_attribute: HashMap::new(),
        };
        for strategy in strategies {
            let PlacementStrategy::Spread(SpreadField::Attribute(name)) = strategy else {
                continue;
            };
            if spreads.by_attribute.contains_key(name) {
                continue;
            }
            // Instances without the attribute and those with it but no value share
            // bucket 0; value id `n` is bucket `n + 1`.
            let column = self.attributes.get(name);
            let bucket_of_instance: Vec<usize> = match column {
                Some(column) => active
                    .iter()
                    .map(|&position| (column.states[position].max(NO_VALUE) - NO_VALUE) as usize)
                    .collect(),
                None => vec![0; active.len()],
            };
            let buckets = column.map_or(1, |column| column.state_count() - 1);
            let mut group_tasks_in_bucket = vec![0; buckets];
            for (&bucket, &count) in bucket_of_instance.iter().zip(&existing) {
                group_tasks_in_bucket[bucket] += count;
            }
            spreads.by_attribute.insert(
                name.clone(),
                AttributeBuckets {
                    bucket_of_instance,
                    group_tasks_in_bucket,
                },
            );
        }

        let working: Vec<WorkingInstance<'_>> = active
            .iter()
            .zip(&existing)
            .map(|(&position, &existing)| {
                WorkingInstance::with_state(
                    &instances[position],
                    &request.group,
                    self.cpu_left[position],
                    self.memory_left[position],
                    existing,
                )
            })
            .collect();
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

    /// Records the instance at `position` in every index. Its slots must be empty
    /// (fresh, or cleared by [`Self::unindex`]).
    fn index(&mut self, position: usize) {
        let instance = &self.snapshot.instances[position];
        self.active[position] = instance.status.accepts_new_tasks();
        self.agent_connected[position] = instance.agent_connected;
        self.cpu_left[position] = instance.remaining.cpu;
        self.memory_left[position] = instance.remaining.memory_mib;
        let len = self.snapshot.instances.len();
        for (name, value) in &instance.attributes {
            if let Some(column) = self.attributes.get_mut(name) {
                column.set(position, value.as_deref());
            } else {
                let mut column = AttributeColumn::new(len);
                column.set(position, value.as_deref());
                self.attributes.insert(name.clone(), column);
            }
        }
        let groups = &mut self.groups;
        for_each_group(instance, |group, count| {
            if count == 0 {
                return;
            }
            if let Some(on) = groups.get_mut(group) {
                on.insert(position, count);
            } else {
                groups.insert(group.to_owned(), HashMap::from([(position, count)]));
            }
        });
    }

    /// Takes the instance at `position` out of the attribute and group indexes.
    fn unindex(&mut self, position: usize) {
        let instance = &self.snapshot.instances[position];
        for name in instance.attributes.keys() {
            if let Some(column) = self.attributes.get_mut(name) {
                column.clear(position);
            }
        }
        let groups = &mut self.groups;
        for_each_group(instance, |group, _| {
            if let Some(on) = groups.get_mut(group) {
                on.remove(&position);
                if on.is_empty() {
                    groups.remove(group);
                }
            }
        });
    }
}

/// Calls `visit` with each task group on `instance` and how many of its tasks are
/// there, as [`InstanceSnapshot::group_task_count`] counts them (from the index when
/// there is one, else from the tasks).
fn for_each_group(instance: &InstanceSnapshot, mut visit: impl FnMut(&str, usize)) {
    if instance.group_counts.is_empty() {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for task in &instance.tasks {
            *counts.entry(task.group.as_str()).or_insert(0) += 1;
        }
        for (group, count) in counts {
            visit(group, count);
        }
    } else {
        for (group, &count) in &instance.group_counts {
            visit(group, count);
        }
    }
}

/// One attribute name's value on every instance, as a small number per instance.
#[derive(Debug, Clone, Default)]
struct AttributeColumn {
    /// Per position: [`ABSENT`], [`NO_VALUE`], or [`FIRST_VALUE`] plus the value's id.
    states: Vec<u32>,
    /// Value → id, for the values some instance has.
    ids: HashMap<String, u32>,
    /// Id → value; a freed id holds an empty string until it is reused.
    values: Vec<String>,
    /// Id → how many instances have the value.
    uses: Vec<usize>,
    /// Ids no instance uses any more, reused before new ones are made, so a cluster
    /// whose instances come and go with unique values does not grow the column.
    free: Vec<u32>,
}

impl AttributeColumn {
    fn new(len: usize) -> Self {
        Self {
            states: vec![ABSENT; len],
            ..Self::default()
        }
    }

    /// How many states there are: absent, no value, and one per id.
    fn state_count(&self) -> usize {
        FIRST_VALUE as usize + self.values.len()
    }

    /// The value a state stands for, as [`InstanceSnapshot::attribute`] gives it.
    fn value(&self, state: u32) -> Option<Option<&str>> {
        match state {
            ABSENT => None,
            NO_VALUE => Some(None),
            _ => Some(
                self.values
                    .get((state - FIRST_VALUE) as usize)
                    .map(String::as_str),
            ),
        }
    }

    /// The state of instances with `value`, if any instance has it.
    fn state_of_value(&self, value: &str) -> Option<u32> {
        self.ids.get(value).map(|id| id + FIRST_VALUE)
    }

    fn set(&mut self, position: usize, value: Option<&str>) {
        let state = match value {
            None => NO_VALUE,
            Some(value) => {
                let id = match self.ids.get(value) {
                    Some(&id) => id,
                    None => {
                        let id = match self.free.pop() {
                            Some(id) => {
                                self.values[id as usize] = value.to_owned();
                                id
                            }
                            None => {
                                self.values.push(value.to_owned());
                                self.uses.push(0);
                                (self.values.len() - 1) as u32
                            }
                        };
                        self.ids.insert(value.to_owned(), id);
                        id
                    }
                };
                self.uses[id as usize] += 1;
                id + FIRST_VALUE
            }
        };
        self.states[position] = state;
    }

    fn clear(&mut self, position: usize) {
        let state = std::mem::replace(&mut self.states[position], ABSENT);
        if state < FIRST_VALUE {
            return;
        }
        let id = state - FIRST_VALUE;
        let uses = &mut self.uses[id as usize];
        *uses -= 1;
        if *uses == 0 {
            let value = std::mem::take(&mut self.values[id as usize]);
            self.ids.remove(&value);
            self.free.push(id);
        }
    }
}

/// One `requiresAttributes` entry, looked up in its column once per call.
struct RequiredState<'i> {
    column: Option<&'i AttributeColumn>,
    wanted: WantedState,
}

enum WantedState {
    /// Any value, or none: only presence counts.
    Present,
    /// Exactly this state.
    Exactly(u32),
    /// A value no instance has.
    Unheld,
}

impl<'i> RequiredState<'i> {
    fn new(required: &RequiredAttribute, attributes: &'i HashMap<String, AttributeColumn>) -> Self {
        let column = attributes.get(&required.name);
        let wanted = match &required.value {
            None => WantedState::Present,
            Some(value) => column
                .and_then(|column| column.state_of_value(value))
                .map_or(WantedState::Unheld, WantedState::Exactly),
        };
        Self { column, wanted }
    }

    fn holds(&self, position: usize) -> bool {
        let Some(column) = self.column else {
            return false;
        };
        let state = column.states[position];
        state != ABSENT
            && match self.wanted {
                WantedState::Present => true,
                WantedState::Exactly(wanted) => state == wanted,
                WantedState::Unheld => false,
            }
    }
}

/// A task-independent `memberOf` expression prepared for one call: each condition on
/// an attribute remembers its answer per value, so it is worked out once per
/// distinct value; other conditions ask the instance. When every condition looks at
/// the same attribute (`attribute:ecs.instance-type =~ m5.*`, or several conditions
/// on one attribute), the whole expression's answer is remembered per value too.
struct StaticFilter<'r, 'i> {
    conditions: FilterNode<'r, 'i>,
    /// The sole attribute's column and the expression's answer per state of it.
    whole: Option<(Option<&'i AttributeColumn>, Vec<Option<bool>>)>,
}

impl<'r, 'i> StaticFilter<'r, 'i> {
    fn compile(
        expression: &'r Expression,
        attributes: &'i HashMap<String, AttributeColumn>,
    ) -> Self {
        let whole = sole_attribute(expression).map(|name| {
            let column = attributes.get(name);
            let states = column.map_or(1, AttributeColumn::state_count);
            (column, vec![None; states])
        });
        Self {
            conditions: FilterNode::compile(expression, attributes),
            whole,
        }
    }

    /// Whether the instance at `position` (which is `instance`) satisfies it.
    fn matches(&mut self, position: usize, instance: &InstanceSnapshot) -> bool {
        let Self { conditions, whole } = self;
        match whole {
            Some((column, answers)) => {
                let state = column.map_or(ABSENT, |column| column.states[position]);
                *answers[state as usize]
                    .get_or_insert_with(|| conditions.matches(position, instance))
            }
            None => conditions.matches(position, instance),
        }
    }
}

/// The attribute every condition of `expression` looks at, if they all look at the
/// same one.
fn sole_attribute(expression: &Expression) -> Option<&str> {
    match expression {
        Expression::Condition(condition) => condition.attribute_name(),
        Expression::Not(inner) => sole_attribute(inner),
        Expression::And(left, right) | Expression::Or(left, right) => {
            let name = sole_attribute(left)?;
            (sole_attribute(right)? == name).then_some(name)
        }
    }
}

/// An expression's tree with its attribute conditions bound to their columns.
enum FilterNode<'r, 'i> {
    Attribute {
        condition: &'r Condition,
        column: Option<&'i AttributeColumn>,
        /// Per state of the column: the answer, once worked out.
        answers: Vec<Option<bool>>,
    },
    Instance(&'r Condition),
    Not(Box<Self>),
    And(Box<Self>, Box<Self>),
    Or(Box<Self>, Box<Self>),
}

impl<'r, 'i> FilterNode<'r, 'i> {
    fn compile(
        expression: &'r Expression,
        attributes: &'i HashMap<String, AttributeColumn>,
    ) -> Self {
        let compile = |inner: &'r Expression| Box::new(Self::compile(inner, attributes));
        match expression {
            Expression::Condition(condition) => match condition.attribute_name() {
                Some(name) => {
                    let column = attributes.get(name);
                    let states = column.map_or(1, AttributeColumn::state_count);
                    Self::Attribute {
                        condition,
                        column,
                        answers: vec![None; states],
                    }
                }
                None => Self::Instance(condition),
            },
            Expression::Not(inner) => Self::Not(compile(inner)),
            Expression::And(left, right) => Self::And(compile(left), compile(right)),
            Expression::Or(left, right) => Self::Or(compile(left), compile(right)),
        }
    }

    /// Whether the instance at `position` (which is `instance`) satisfies it.
    fn matches(&mut self, position: usize, instance: &InstanceSnapshot) -> bool {
        match self {
            Self::Attribute {
                condition,
                column,
                answers,
            } => {
                let column = *column;
                let state = column.map_or(ABSENT, |column| column.states[position]);
                *answers[state as usize].get_or_insert_with(|| {
                    let value = column.and_then(|column| column.value(state));
                    condition.holds_for_attribute(value)
                })
            }
            Self::Instance(condition) => condition.holds(instance),
            Self::Not(inner) => !inner.matches(position, instance),
            Self::And(left, right) => {
                left.matches(position, instance) && right.matches(position, instance)
            }
            Self::Or(left, right) => {
                left.matches(position, instance) || right.matches(position, instance)
            }
        }
    }
}
