//! Property tests of placement's safety rules and the parser's robustness.

mod fixtures;

use std::collections::HashMap;

use fixtures::{instance, with_tasks};
use proptest::prelude::*;
use wharf_scheduler::{
    parse_expression, place_tasks, BinpackField, ClusterSnapshot, InstanceSnapshot, InstanceStatus,
    PlacementConstraint, PlacementRequest, PlacementStrategy, SpreadField,
};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const PORTS: [u16; 3] = [80, 443, 8080];

fn arbitrary_instance(index: usize) -> impl Strategy<Value = InstanceSnapshot> {
    (
        0i64..3000,
        0i64..4000,
        0usize..3,
        proptest::sample::subsequence(PORTS.to_vec(), 0..=2),
        any::<bool>(),
        prop_oneof![8 => Just(InstanceStatus::Active), 1 => Just(InstanceStatus::Draining)],
        0usize..3,
    )
        .prop_map(
            move |(cpu, memory, zone, ports, disconnected, status, existing)| {
                let mut instance = instance(&index.to_string(), ZONES[zone], cpu, memory);
                instance.remaining.tcp_ports.extend(ports);
                instance.agent_connected = !disconnected || index % 3 != 0;
                instance.status = status;
                with_tasks(instance, "family:web", existing)
            },
        )
}

fn arbitrary_cluster() -> impl Strategy<Value = ClusterSnapshot> {
    (0usize..12)
        .prop_flat_map(|size| (0..size).map(arbitrary_instance).collect::<Vec<_>>())
        .prop_map(|instances| ClusterSnapshot { instances })
}

fn arbitrary_strategy() -> impl Strategy<Value = PlacementStrategy> {
    prop_oneof![
        Just(PlacementStrategy::Random),
        Just(PlacementStrategy::Binpack(BinpackField::Cpu)),
        Just(PlacementStrategy::Binpack(BinpackField::Memory)),
        Just(PlacementStrategy::Spread(SpreadField::InstanceId)),
        Just(PlacementStrategy::Spread(SpreadField::Attribute(
            "ecs.availability-zone".to_owned()
        ))),
    ]
}

fn arbitrary_request() -> impl Strategy<Value = PlacementRequest> {
    (
        0usize..15,
        0i64..700,
        0i64..1500,
        proptest::sample::subsequence(PORTS.to_vec(), 0..=1),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(arbitrary_strategy(), 0..3),
        any::<u64>(),
    )
        .prop_map(
            |(count, cpu, memory, ports, distinct, member_of, strategies, seed)| {
                let mut constraints = Vec::new();
                if distinct {
                    constraints.push(PlacementConstraint::DistinctInstance);
                }
                if member_of {
                    let expression =
                        parse_expression("attribute:ecs.availability-zone != us-east-1c").unwrap();
                    constraints.push(PlacementConstraint::MemberOf(expression));
                }
                PlacementRequest {
                    count,
                    group: "family:web".to_owned(),
                    family: "web".to_owned(),
                    cpu,
                    memory_mib: memory,
                    tcp_host_ports: ports,
                    constraints,
                    strategies,
                    seed,
                    ..PlacementRequest::default()
                }
            },
        )
}

/// How many tasks of the plan went to each instance id.
fn placed_per_instance(plan: &wharf_scheduler::PlacementPlan) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for id in plan.placed_instance_ids() {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The group-count index is an optimisation only: a snapshot with it indexed
    /// gives exactly the plan of the same snapshot without.
    #[test]
    fn the_group_index_changes_no_plan(
        cluster in arbitrary_cluster(),
        request in arbitrary_request(),
    ) {
        let mut indexed = cluster.clone();
        for instance in &mut indexed.instances {
            instance.index_groups();
        }
        prop_assert_eq!(place_tasks(&cluster, &request), place_tasks(&indexed, &request));
    }

    #[test]
    fn no_instance_is_ever_over_committed(
        cluster in arbitrary_cluster(),
        request in arbitrary_request(),
    ) {
        let plan = place_tasks(&cluster, &request);
        prop_assert_eq!(plan.tasks.len(), request.count);
        let counts = placed_per_instance(&plan);
        for instance in &cluster.instances {
            let placed = counts.get(instance.id.as_str()).copied().unwrap_or(0) as i64;
            if placed == 0 {
                continue;
            }
            prop_assert!(instance.status.accepts_new_tasks());
            prop_assert!(instance.agent_connected);
            prop_assert!(placed * request.cpu <= instance.remaining.cpu);
            prop_assert!(placed * request.memory_mib <= instance.remaining.memory_mib);
            if !request.tcp_host_ports.is_empty() {
                prop_assert_eq!(placed, 1);
                for port in &request.tcp_host_ports {
                    prop_assert!(!instance.remaining.tcp_ports.contains(port));
                    prop_assert!(!instance.registered.tcp_ports.contains(port));
                }
            }
        }
    }

    #[test]
    fn constraints_always_hold_in_a_plan(
        cluster in arbitrary_cluster(),
        request in arbitrary_request(),
    ) {
        let plan = place_tasks(&cluster, &request);
        let counts = placed_per_instance(&plan);
        let by_id: HashMap<&str, &InstanceSnapshot> =
            cluster.instances.iter().map(|i| (i.id.as_str(), i)).collect();
        for (id, placed) in counts {
            let instance = by_id[id];
            for constraint in &request.constraints {
                match constraint {
                    PlacementConstraint::DistinctInstance => {
                        prop_assert_eq!(placed, 1);
                        prop_assert_eq!(instance.group_task_count(&request.group), 0);
                    }
                    PlacementConstraint::MemberOf(expression) => {
                        prop_assert!(expression.matches(instance));
                    }
                }
            }
        }
    }

    #[test]
    fn spread_by_instance_keeps_the_group_within_one_task(
        size in 1usize..20,
        count in 0usize..60,
        seed in any::<u64>(),
        binpack_after in any::<bool>(),
    ) {
        let cluster = ClusterSnapshot {
            instances: (0..size)
                .map(|i| instance(&i.to_string(), ZONES[i % 3], 100_000, 100_000))
                .collect(),
        };
        let mut strategies = vec![PlacementStrategy::Spread(SpreadField::InstanceId)];
        if binpack_after {
            strategies.push(PlacementStrategy::Binpack(BinpackField::Memory));
        }
        let request = PlacementRequest {
            count,
            group: "family:web".to_owned(),
            cpu: 10,
            memory_mib: 10,
            strategies,
            seed,
            ..PlacementRequest::default()
        };
        let plan = place_tasks(&cluster, &request);
        prop_assert_eq!(plan.placed_count(), count);
        let counts = placed_per_instance(&plan);
        let per_instance: Vec<usize> = cluster
            .instances
            .iter()
            .map(|i| counts.get(i.id.as_str()).copied().unwrap_or(0))
            .collect();
        let most = per_instance.iter().max().copied().unwrap_or(0);
        let least = per_instance.iter().min().copied().unwrap_or(0);
        prop_assert!(most - least <= 1, "{:?}", per_instance);
    }

    #[test]
    fn the_same_seed_gives_the_same_plan(
        cluster in arbitrary_cluster(),
        request in arbitrary_request(),
    ) {
        prop_assert_eq!(place_tasks(&cluster, &request), place_tasks(&cluster, &request));
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse_expression(&text);
    }

    #[test]
    fn the_parser_never_panics_on_near_miss_expressions(
        text in "[a-zA-Z:!=<>~()\\[\\],'\" &|.*0-9_-]{0,80}",
    ) {
        if let Ok(expression) = parse_expression(&text) {
            // Whatever parses also displays as something that parses back the same.
            let shown = expression.to_string();
            prop_assert_eq!(parse_expression(&shown), Ok(expression));
        }
    }

    #[test]
    fn the_parser_never_panics_on_mutated_valid_expressions(
        position in 0usize..90,
        insert in "[\\[\\]()'\"!=<>~&|, a-z]{1,3}",
    ) {
        let base = "attribute:ecs.instance-type =~ t2.* and not (task:group in [a, 'b']) || runningTasksCount >= 2";
        let cut = position.min(base.len());
        let text = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
        if let Err(error) = parse_expression(&text) {
            prop_assert!(error.position() <= text.len());
        }
    }
}
