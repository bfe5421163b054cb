//! The optimised planners against the plain reference planner in `reference/`.
//!
//! [`place_tasks`] works each instance's static checks out once per call and only
//! re-checks the chosen instance after each task; [`IndexedSnapshot`] in addition
//! answers attribute conditions once per distinct value, counts groups from an
//! inverted index and keeps all of that up to date as instances change. Each of those
//! shortcuts could diverge from the rules, so every plan here must equal, task for
//! task and failure for failure, the plan of a planner that re-checks everything from
//! scratch before every task.

mod reference;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use reference::reference_plan;
use wharf_scheduler::{
    parse_expression, place_tasks, BinpackField, ClusterSnapshot, IndexedSnapshot,
    InstanceSnapshot, InstanceStatus, PlacementConstraint, PlacementPlan, PlacementRequest,
    PlacementStrategy, RequiredAttribute, Resources, SpreadField, TaskOnInstance,
};

const GROUPS: [&str; 3] = ["family:web", "service:api", "family:db"];
const PORTS: [u16; 3] = [80, 443, 8080];
/// Attribute values, `None` standing for "present without a value".
const ZONES: [Option<&str>; 3] = [Some("us-east-1a"), Some("us-east-1b"), None];
const TYPES: [Option<&str>; 4] = [Some("m5.large"), Some("m5.xlarge"), Some("t3.micro"), None];

/// `memberOf` expressions covering every path: attribute conditions (answered per
/// value by the index), conditions on the instance itself, conditions on tasks
/// (re-checked as tasks are placed), and mixtures.
const EXPRESSIONS: [&str; 13] = [
    "attribute:ecs.availability-zone != us-east-1b",
    "attribute:rack >= 1 and not (attribute:rack == 2 or attribute:rack !exists)",
    "attribute:rack == 1 or attribute:ecs.instance-type == t3.micro",
    "attribute:ecs.instance-type =~ m5.*",
    "attribute:ecs.availability-zone exists",
    "not (attribute:ecs.instance-type in [t3.micro, c5.large])",
    "attribute:rack > 2",
    "attribute:nothing-has-this !exists",
    "agentVersion >= 1.50.0 and ec2InstanceId != i-3",
    "task:group != service:api",
    "runningTasksCount <= 3",
    "attribute:ecs.availability-zone == us-east-1a or task:group == family:web",
    "registeredAt > 2018-06-18 || attribute:rack == 1",
];

fn arbitrary_instance(index: usize) -> impl Strategy<Value = InstanceSnapshot> {
    (
        (0i64..2000, 0i64..3000),
        (0usize..4, 0usize..5, 0usize..5),
        proptest::sample::subsequence(PORTS.to_vec(), 0..=2),
        (any::<bool>(), 0usize..10),
        proptest::collection::vec(0usize..GROUPS.len(), 0..5),
        any::<bool>(),
        0i64..3,
    )
        .prop_map(
            move |(
                (cpu, memory),
                (zone, kind, rack),
                ports,
                (disconnected, status),
                groups,
                indexed,
                days,
            )| {
                let mut attributes = BTreeMap::new();
                // Index 3 leaves the attribute out altogether.
                if let Some(zone) = ZONES.get(zone) {
                    attributes.insert("ecs.availability-zone".to_owned(), zone.map(str::to_owned));
                }
                if let Some(kind) = TYPES.get(kind) {
                    attributes.insert("ecs.instance-type".to_owned(), kind.map(str::to_owned));
                }
                if rack < 4 {
                    attributes.insert("rack".to_owned(), Some(rack.to_string()));
                }
                let registered = Resources {
                    cpu: 2048,
                    memory_mib: 4096,
                    tcp_ports: BTreeSet::from([22]),
                    udp_ports: BTreeSet::new(),
                };
                let mut remaining = Resources {
                    cpu,
                    memory_mib: memory,
                    ..registered.clone()
                };
                remaining.tcp_ports.extend(ports);
                let mut instance = InstanceSnapshot {
                    id: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/c/{index}"),
                    ec2_instance_id: format!("i-{index}"),
                    status: match status {
                        0 => InstanceStatus::Draining,
                        1 => InstanceStatus::Other("REGISTERING".to_owned()),
                        _ => InstanceStatus::Active,
                    },
                    agent_connected: !disconnected || index % 3 != 0,
                    agent_version: if index % 2 == 0 { "1.50.0" } else { "1.20.1" }.to_owned(),
                    registered_at_ms: 1_529_280_000_000 + days * 86_400_000,
                    attributes,
                    registered,
                    remaining,
                    running_tasks_count: 0,
                    tasks: Vec::new(),
                    group_counts: Default::default(),
                };
                for group in groups {
                    instance.tasks.push(TaskOnInstance {
                        group: GROUPS[group].to_owned(),
                        family: GROUPS[group].split(':').nth(1).unwrap_or("").to_owned(),
                    });
                    instance.running_tasks_count += 1;
                }
                if indexed {
                    instance.index_groups();
                }
                instance
            },
        )
}

fn arbitrary_cluster() -> impl Strategy<Value = ClusterSnapshot> {
    (0usize..14)
        .prop_flat_map(|size| (0..size).map(arbitrary_instance).collect::<Vec<_>>())
        .prop_map(|instances| ClusterSnapshot { instances })
}

fn arbitrary_strategy() -> impl Strategy<Value = PlacementStrategy> {
    let spread = |name: &str| PlacementStrategy::Spread(SpreadField::Attribute(name.to_owned()));
    prop_oneof![
        Just(PlacementStrategy::Random),
        Just(PlacementStrategy::Binpack(BinpackField::Cpu)),
        Just(PlacementStrategy::Binpack(BinpackField::Memory)),
        Just(PlacementStrategy::Spread(SpreadField::InstanceId)),
        Just(spread("ecs.availability-zone")),
        Just(spread("ecs.instance-type")),
        Just(spread("rack")),
        Just(spread("nothing-has-this")),
    ]
}

fn arbitrary_required() -> impl Strategy<Value = RequiredAttribute> {
    let required = |name: &str, value: Option<&str>| RequiredAttribute {
        name: name.to_owned(),
        value: value.map(str::to_owned),
    };
    prop_oneof![
        Just(required("ecs.instance-type", None)),
        Just(required("ecs.instance-type", Some("m5.large"))),
        Just(required("ecs.availability-zone", Some("us-east-1b"))),
        Just(required("rack", None)),
        Just(required("rack", Some("no-rack-is-called-this"))),
        Just(required("nothing-has-this", None)),
    ]
}

fn arbitrary_request() -> impl Strategy<Value = PlacementRequest> {
    (
        (0usize..15, 0usize..GROUPS.len()),
        (0i64..700, 0i64..1500),
        proptest::sample::subsequence(PORTS.to_vec(), 0..=1),
        proptest::collection::vec(arbitrary_required(), 0..2),
        any::<bool>(),
        proptest::sample::subsequence((0..EXPRESSIONS.len()).collect::<Vec<_>>(), 0..=2),
        proptest::collection::vec(arbitrary_strategy(), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(
                (count, group),
                (cpu, memory),
                ports,
                requires_attributes,
                distinct,
                expressions,
                strategies,
                seed,
            )| {
                let mut constraints: Vec<PlacementConstraint> = expressions
                    .into_iter()
                    .map(|index| {
                        PlacementConstraint::MemberOf(parse_expression(EXPRESSIONS[index]).unwrap())
                    })
                    .collect();
                if distinct {
                    constraints.insert(seed as usize % (constraints.len() + 1), {
                        PlacementConstraint::DistinctInstance
                    });
                }
                PlacementRequest {
                    count,
                    group: GROUPS[group].to_owned(),
                    family: GROUPS[group].split(':').nth(1).unwrap_or("").to_owned(),
                    cpu,
                    memory_mib: memory,
                    tcp_host_ports: ports,
                    requires_attributes,
                    constraints,
                    strategies,
                    seed,
                    ..PlacementRequest::default()
                }
            },
        )
}

/// A change the control plane makes to a kept cluster.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, InstanceSnapshot),
    /// Adds tasks of a group to an instance (as committing a plan does).
    AddTasks(usize, usize, usize),
    /// Takes an instance's tasks away (as they stop).
    ClearTasks(usize),
    Push(InstanceSnapshot),
    SwapRemove(usize),
}

fn arbitrary_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), arbitrary_instance(100)).prop_map(|(at, i)| Edit::Replace(at, i)),
        (any::<usize>(), 0usize..GROUPS.len(), 1usize..3)
            .prop_map(|(at, group, count)| Edit::AddTasks(at, group, count)),
        any::<usize>().prop_map(Edit::ClearTasks),
        arbitrary_instance(200).prop_map(Edit::Push),
        any::<usize>().prop_map(Edit::SwapRemove),
    ]
}

/// Applies `edit` to the indexed cluster and, the plain way, to `plain`.
fn apply_edit(indexed: &mut IndexedSnapshot, plain: &mut ClusterSnapshot, edit: Edit) {
    let len = plain.instances.len();
    match edit {
        Edit::Push(instance) => {
            plain.instances.push(instance.clone());
            indexed.push_instance(instance);
        }
        _ if len == 0 => {}
        Edit::Replace(at, instance) => {
            let previous = std::mem::replace(&mut plain.instances[at % len], instance.clone());
            assert_eq!(indexed.replace_instance(at % len, instance), previous);
        }
        Edit::AddTasks(at, group, count) => {
            let add = |instance: &mut InstanceSnapshot| {
                for _ in 0..count {
                    instance.tasks.push(TaskOnInstance {
                        group: GROUPS[group].to_owned(),
                        family: String::new(),
                    });
                    instance.running_tasks_count += 1;
                    instance.remaining.memory_mib -= 100;
                    if !instance.group_counts.is_empty() {
                        *instance
                            .group_counts
                            .entry(GROUPS[group].to_owned())
                            .or_insert(0) += 1;
                    }
                }
            };
            add(&mut plain.instances[at % len]);
            indexed.update_instance(at % len, add);
        }
        Edit::ClearTasks(at) => {
            let clear = |instance: &mut InstanceSnapshot| {
                instance.tasks.clear();
                instance.group_counts.clear();
                instance.running_tasks_count = 0;
            };
            clear(&mut plain.instances[at % len]);
            indexed.update_instance(at % len, clear);
        }
        Edit::SwapRemove(at) => {
            let removed = plain.instances.swap_remove(at % len);
            assert_eq!(indexed.swap_remove_instance(at % len), removed);
        }
    }
}

/// Charges a plan's tasks to the clusters, as the control plane does on commit.
fn commit(
    indexed: &mut IndexedSnapshot,
    plain: &mut ClusterSnapshot,
    request: &PlacementRequest,
    plan: &PlacementPlan,
) {
    for id in plan.placed_instance_ids() {
        let at = plain
            .instances
            .iter()
            .position(|instance| instance.id == id)
            .expect("a placed task names an instance of the cluster");
        let charge = |instance: &mut InstanceSnapshot| {
            instance.remaining.cpu -= request.cpu;
            instance.remaining.memory_mib -= request.memory_mib;
            instance
                .remaining
                .tcp_ports
                .extend(request.tcp_host_ports.iter().copied());
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
        };
        charge(&mut plain.instances[at]);
        indexed.update_instance(at, charge);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `place_tasks` gives the reference plan.
    #[test]
    fn place_tasks_gives_the_reference_plan(
        cluster in arbitrary_cluster(),
        request in arbitrary_request(),
    ) {
        prop_assert_eq!(place_tasks(&cluster, &request), reference_plan(&cluster, &request));
    }

    /// A freshly indexed snapshot gives the reference plan.
    #[test]
    fn an_indexed_snapshot_gives_the_reference_plan(
        cluster in arbitrary_cluster(),
        request in arbitrary_request(),
    ) {
        let indexed = IndexedSnapshot::new(cluster.clone());
        prop_assert_eq!(indexed.snapshot(), &cluster);
        prop_assert_eq!(indexed.place_tasks(&request), reference_plan(&cluster, &request));
    }

    /// Indexes kept up to date through any sequence of changes give the plan of the
    /// snapshot they end up describing, as if it had been indexed afresh.
    #[test]
    fn indexes_kept_through_edits_give_the_reference_plan(
        cluster in arbitrary_cluster(),
        edits in proptest::collection::vec(arbitrary_edit(), 0..12),
        request in arbitrary_request(),
    ) {
        let mut indexed = IndexedSnapshot::new(cluster.clone());
        let mut plain = cluster;
        for edit in edits {
            apply_edit(&mut indexed, &mut plain, edit);
        }
        prop_assert_eq!(indexed.snapshot(), &plain);
        let expected = reference_plan(&plain, &request);
        prop_assert_eq!(&indexed.place_tasks(&request), &expected);
        prop_assert_eq!(&IndexedSnapshot::new(plain.clone()).place_tasks(&request), &expected);
        prop_assert_eq!(&place_tasks(&plain, &request), &expected);
    }

    /// Calls one after another, each plan committed before the next, as RunTask does:
    /// the kept indexes and the plain snapshot agree with the reference every time.
    #[test]
    fn committed_plans_keep_the_planners_in_step(
        cluster in arbitrary_cluster(),
        requests in proptest::collection::vec(arbitrary_request(), 1..5),
    ) {
        let mut indexed = IndexedSnapshot::new(cluster.clone());
        let mut plain = cluster;
        for request in requests {
            let expected = reference_plan(&plain, &request);
            prop_assert_eq!(&place_tasks(&plain, &request), &expected);
            let plan = indexed.place_tasks(&request);
            prop_assert_eq!(&plan, &expected);
            commit(&mut indexed, &mut plain, &request, &plan);
            prop_assert_eq!(indexed.snapshot(), &plain);
        }
    }
}

/// The scale the property tests cannot reach: many instances sharing few attribute
/// values, a group index, and a sequence of calls, compared with the reference.
#[test]
fn a_larger_cluster_agrees_with_the_reference_over_many_calls() {
    let zones = ["a", "b", "c"];
    let kinds = ["m5.large", "c5.large", "m5.xlarge", "t3.micro", "r5.large"];
    let instances = (0..300)
        .map(|index| {
            let mut attributes = BTreeMap::new();
            attributes.insert(
                "ecs.availability-zone".to_owned(),
                Some(zones[index % 3].to_owned()),
            );
            attributes.insert(
                "ecs.instance-type".to_owned(),
                Some(kinds[(index / 3) % kinds.len()].to_owned()),
            );
            let resources = Resources {
                cpu: 1024 * (1 + (index % 4) as i64),
                memory_mib: 2048 * (1 + (index % 3) as i64),
                ..Resources::default()
            };
            let mut instance = InstanceSnapshot {
                id: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/c/{index}"),
                ec2_instance_id: format!("i-{index}"),
                agent_connected: true,
                attributes,
                registered: resources.clone(),
                remaining: resources,
                ..InstanceSnapshot::default()
            };
            for task in 0..index % 7 {
                instance.tasks.push(TaskOnInstance {
                    group: GROUPS[(index + task) % GROUPS.len()].to_owned(),
                    family: String::new(),
                });
            }
            instance.index_groups();
            instance
        })
        .collect();
    let mut plain = ClusterSnapshot { instances };
    let mut indexed = IndexedSnapshot::new(plain.clone());
    let member_of = parse_expression("attribute:ecs.instance-type =~ m5.*").unwrap();
    for call in 0..40 {
        let request = PlacementRequest {
            count: 10,
            group: GROUPS[call % GROUPS.len()].to_owned(),
            cpu: 128,
            memory_mib: 256,
            constraints: vec![PlacementConstraint::MemberOf(member_of.clone())],
            strategies: vec![
                PlacementStrategy::Spread(SpreadField::Attribute(
                    "ecs.availability-zone".to_owned(),
                )),
                PlacementStrategy::Binpack(BinpackField::Memory),
            ],
            seed: call as u64,
            ..PlacementRequest::default()
        };
        let expected = reference_plan(&plain, &request);
        assert_eq!(place_tasks(&plain, &request), expected, "call {call}");
        let plan = indexed.place_tasks(&request);
        assert_eq!(plan, expected, "call {call}");
        commit(&mut indexed, &mut plain, &request, &plan);
    }
    assert!(plain
        .instances
        .iter()
        .all(|instance| instance.remaining.memory_mib >= 0));
}
