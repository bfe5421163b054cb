//! Table tests of placement: every strategy, constraint and failure reason, and the
//! input validation the API layer uses.

mod fixtures;

use fixtures::{instance, request, short, with_tasks};
use wharf_scheduler::{
    parse_expression, place_tasks, rejection_reason, validate_placement, BinpackField,
    ClusterSnapshot, FailureReason, InstanceSnapshot, InstanceStatus, PlacementConstraint,
    PlacementFailure, PlacementInputError, PlacementPlan, PlacementRequest, PlacementStrategy,
    RequiredAttribute, SpreadField, TaskPlacement,
};

fn cluster(instances: Vec<InstanceSnapshot>) -> ClusterSnapshot {
    ClusterSnapshot { instances }
}

/// Short names of the chosen instances; `-` for an unplaced task.
fn chosen(plan: &PlacementPlan) -> Vec<String> {
    plan.tasks
        .iter()
        .map(|task| match task {
            TaskPlacement::Placed { instance_id } => short(instance_id).to_owned(),
            TaskPlacement::Unplaced { .. } => "-".to_owned(),
        })
        .collect()
}

/// The failures of the one unplaced task, as (short name, reason string).
fn failures_of(task: &TaskPlacement) -> Vec<(String, &'static str)> {
    match task {
        TaskPlacement::Unplaced { failures } => failures
            .iter()
            .map(|failure| {
                let name = failure.instance_id.as_deref().map(short).unwrap_or("");
                (name.to_owned(), failure.reason.as_str())
            })
            .collect(),
        TaskPlacement::Placed { instance_id } => panic!("placed on {instance_id}"),
    }
}

fn member_of(text: &str) -> PlacementConstraint {
    PlacementConstraint::MemberOf(parse_expression(text).unwrap())
}

#[test]
fn binpack_cpu_picks_the_least_cpu_that_still_fits() {
    let snapshot = cluster(vec![
        instance("big", "a", 4096, 8192),
        instance("snug", "a", 1024, 8192),
        instance("small", "a", 512, 8192),
    ]);
    let mut req = request(1, 1000, 100);
    req.strategies = vec![PlacementStrategy::Binpack(BinpackField::Cpu)];
    assert_eq!(chosen(&place_tasks(&snapshot, &req)), ["snug"]);
}

#[test]
fn binpack_memory_fills_one_instance_before_the_next() {
    let snapshot = cluster(vec![
        instance("a", "z", 4096, 4096),
        instance("b", "z", 4096, 2048),
        instance("c", "z", 4096, 8192),
    ]);
    let mut req = request(5, 0, 1024);
    req.strategies = vec![PlacementStrategy::Binpack(BinpackField::Memory)];
    assert_eq!(
        chosen(&place_tasks(&snapshot, &req)),
        ["b", "b", "a", "a", "a"]
    );
}

#[test]
fn spread_instance_id_balances_counting_existing_group_tasks() {
    let snapshot = cluster(vec![
        with_tasks(instance("a", "z", 4096, 4096), "family:web", 2),
        instance("b", "z", 4096, 4096),
        with_tasks(instance("c", "z", 4096, 4096), "family:other", 3),
    ]);
    for field in ["instanceId", "host"] {
        let mut req = request(4, 10, 10);
        req.strategies = vec![PlacementStrategy::from_input("spread", Some(field)).unwrap()];
        let plan = chosen(&place_tasks(&snapshot, &req));
        let count = |name: &str| plan.iter().filter(|chosen| *chosen == name).count();
        // a already holds two: b and c catch up to two each, nothing goes to a.
        assert_eq!((count("a"), count("b"), count("c")), (0, 2, 2), "{field}");
    }
}

#[test]
fn spread_by_zone_balances_zones_not_instances() {
    let snapshot = cluster(vec![
        instance("a1", "us-east-1a", 4096, 4096),
        instance("a2", "us-east-1a", 4096, 4096),
        instance("a3", "us-east-1a", 4096, 4096),
        with_tasks(instance("b1", "us-east-1b", 4096, 4096), "family:web", 1),
        instance("c1", "us-east-1c", 4096, 4096),
    ]);
    let mut req = request(5, 10, 10);
    req.strategies = vec![PlacementStrategy::Spread(SpreadField::Attribute(
        "ecs.availability-zone".to_owned(),
    ))];
    let plan = chosen(&place_tasks(&snapshot, &req));
    let zone_count = |prefix: &str| plan.iter().filter(|name| name.starts_with(prefix)).count();
    // Existing: a=0, b=1, c=0. Five more make 2/2/2.
    assert_eq!(
        (zone_count("a"), zone_count("b"), zone_count("c")),
        (2, 1, 2)
    );
}

#[test]
fn service_default_spreads_across_zones_then_instances() {
    assert_eq!(
        PlacementStrategy::service_default(),
        vec![
            PlacementStrategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
            PlacementStrategy::Spread(SpreadField::InstanceId),
        ]
    );
    let snapshot = cluster(vec![
        instance("a1", "us-east-1a", 4096, 4096),
        instance("a2", "us-east-1a", 4096, 4096),
        instance("b1", "us-east-1b", 4096, 4096),
    ]);
    let mut req = request(4, 10, 10);
    req.strategies = PlacementStrategy::service_default();
    let mut plan = chosen(&place_tasks(&snapshot, &req));
    plan.sort();
    assert_eq!(plan, ["a1", "a2", "b1", "b1"]);
}

#[test]
fn later_strategies_break_the_ties_of_earlier_ones() {
    let snapshot = cluster(vec![
        instance("a-roomy", "us-east-1a", 4096, 8192),
        instance("a-tight", "us-east-1a", 4096, 2048),
        instance("b-roomy", "us-east-1b", 4096, 8192),
        instance("b-tight", "us-east-1b", 4096, 1024),
    ]);
    let mut req = request(2, 10, 512);
    req.strategies = vec![
        PlacementStrategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
        PlacementStrategy::Binpack(BinpackField::Memory),
    ];
    let mut plan = chosen(&place_tasks(&snapshot, &req));
    plan.sort();
    assert_eq!(plan, ["a-tight", "b-tight"]);
}

#[test]
fn random_is_the_default_and_depends_only_on_the_seed() {
    let snapshot = cluster(
        (0..20)
            .map(|i| instance(&i.to_string(), "z", 4096, 4096))
            .collect(),
    );
    let mut req = request(10, 10, 10);
    let first = place_tasks(&snapshot, &req);
    assert_eq!(first, place_tasks(&snapshot, &req));
    req.strategies = vec![PlacementStrategy::Random];
    assert_eq!(
        first,
        place_tasks(&snapshot, &req),
        "no strategy means random"
    );
    let differs = (1..20).any(|seed| {
        req.seed = seed;
        place_tasks(&snapshot, &req) != first
    });
    assert!(differs, "other seeds give other plans");
}

#[test]
fn distinct_instance_keeps_group_tasks_apart() {
    let snapshot = cluster(vec![
        instance("a", "z", 4096, 4096),
        instance("b", "z", 4096, 4096),
        with_tasks(instance("c", "z", 4096, 4096), "family:web", 1),
        with_tasks(instance("d", "z", 4096, 4096), "family:other", 1),
    ]);
    let mut req = request(4, 10, 10);
    req.constraints = vec![PlacementConstraint::DistinctInstance];
    let plan = place_tasks(&snapshot, &req);
    let mut placed = chosen(&plan)[..3].to_vec();
    placed.sort();
    assert_eq!(placed, ["a", "b", "d"]);
    let reason = "DistinctInstance placement constraint unsatisfied.";
    assert_eq!(
        failures_of(&plan.tasks[3]),
        [
            ("a".to_owned(), reason),
            ("b".to_owned(), reason),
            ("c".to_owned(), reason),
            ("d".to_owned(), reason)
        ]
    );
}

#[test]
fn member_of_restricts_to_matching_instances() {
    let mut m5 = instance("m5", "us-east-1a", 4096, 4096);
    m5.attributes
        .insert("ecs.instance-type".into(), Some("m5.large".into()));
    let snapshot = cluster(vec![
        m5,
        instance("t2-a", "us-east-1a", 4096, 4096),
        instance("t2-d", "us-east-1d", 4096, 4096),
    ]);
    let mut req = request(3, 10, 10);
    req.constraints = vec![member_of(
        "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d",
    )];
    assert_eq!(
        chosen(&place_tasks(&snapshot, &req)),
        ["t2-a", "t2-a", "t2-a"]
    );

    req.constraints = vec![member_of("attribute:ecs.instance-type == c5.large")];
    let plan = place_tasks(&snapshot, &req);
    let reason = "MemberOf placement constraint unsatisfied.";
    assert_eq!(
        failures_of(&plan.tasks[0]),
        [
            ("m5".to_owned(), reason),
            ("t2-a".to_owned(), reason),
            ("t2-d".to_owned(), reason)
        ]
    );
}

#[test]
fn member_of_task_group_sees_tasks_placed_earlier_in_the_plan() {
    let snapshot = cluster(vec![
        instance("a", "z", 4096, 4096),
        with_tasks(instance("db", "z", 4096, 4096), "service:database", 1),
        instance("c", "z", 4096, 4096),
    ]);
    // Affinity: only next to the database.
    let mut req = request(2, 10, 10);
    req.constraints = vec![member_of("task:group == service:database")];
    assert_eq!(chosen(&place_tasks(&snapshot, &req)), ["db", "db"]);

    // Anti-affinity with its own group behaves like distinctInstance.
    req.constraints = vec![member_of("not(task:group == family:web)")];
    req.count = 4;
    let plan = chosen(&place_tasks(&snapshot, &req));
    let mut placed = plan[..3].to_vec();
    placed.sort();
    assert_eq!(placed, ["a", "c", "db"]);
    assert_eq!(plan[3], "-");

    // runningTasksCount counts planned tasks too.
    req.constraints = vec![member_of("runningTasksCount == 0")];
    req.count = 3;
    let plan = chosen(&place_tasks(&snapshot, &req));
    let mut placed = plan[..2].to_vec();
    placed.sort();
    assert_eq!(
        (placed, plan[2].as_str()),
        (vec!["a".into(), "c".into()], "-")
    );
}

#[test]
fn required_attributes_must_all_be_present() {
    let mut capable = instance("capable", "z", 4096, 4096);
    capable.attributes.insert(
        "com.amazonaws.ecs.capability.docker-remote-api.1.19".into(),
        None,
    );
    capable
        .attributes
        .insert("ecs.os-type".into(), Some("linux".into()));
    let mut windows = capable.clone();
    windows.id = windows.id.replace("capable", "windows");
    windows
        .attributes
        .insert("ecs.os-type".into(), Some("windows".into()));
    let plain = instance("plain", "z", 4096, 4096);
    let snapshot = cluster(vec![plain, windows, capable]);

    let mut req = request(1, 10, 10);
    req.requires_attributes = vec![
        RequiredAttribute {
            name: "com.amazonaws.ecs.capability.docker-remote-api.1.19".into(),
            value: None,
        },
        RequiredAttribute {
            name: "ecs.os-type".into(),
            value: Some("linux".into()),
        },
    ];
    assert_eq!(chosen(&place_tasks(&snapshot, &req)), ["capable"]);

    req.requires_attributes.push(RequiredAttribute {
        name: "ecs.capability.efs".into(),
        value: None,
    });
    let plan = place_tasks(&snapshot, &req);
    assert_eq!(
        failures_of(&plan.tasks[0]),
        [
            ("plain".to_owned(), "ATTRIBUTE"),
            ("windows".to_owned(), "ATTRIBUTE"),
            ("capable".to_owned(), "ATTRIBUTE")
        ]
    );
}

#[test]
fn each_resource_shortage_has_its_own_reason() {
    let mut disconnected = instance("gone", "z", 4096, 4096);
    disconnected.agent_connected = false;
    let mut tcp_taken = instance("tcp", "z", 4096, 4096);
    tcp_taken.remaining.tcp_ports.insert(8080);
    let mut udp_taken = instance("udp", "z", 4096, 4096);
    udp_taken.remaining.udp_ports.insert(53);
    let mut draining = instance("draining", "z", 4096, 4096);
    draining.status = InstanceStatus::Draining;
    let snapshot = cluster(vec![
        instance("cpu", "z", 100, 4096),
        instance("mem", "z", 4096, 100),
        tcp_taken,
        udp_taken,
        disconnected,
        draining,
    ]);
    let mut req = request(1, 512, 512);
    req.tcp_host_ports = vec![8080];
    req.udp_host_ports = vec![53];
    let plan = place_tasks(&snapshot, &req);
    // The draining instance is passed over without a failure entry.
    assert_eq!(
        failures_of(&plan.tasks[0]),
        [
            ("cpu".to_owned(), "RESOURCE:CPU"),
            ("mem".to_owned(), "RESOURCE:MEMORY"),
            ("tcp".to_owned(), "RESOURCE:PORTS"),
            ("udp".to_owned(), "RESOURCE:PORTS"),
            ("gone".to_owned(), "AGENT"),
        ]
    );
}

#[test]
fn static_ports_allow_one_task_per_instance_and_respect_reserved_ports() {
    let snapshot = cluster(vec![
        instance("a", "z", 4096, 4096),
        instance("b", "z", 4096, 4096),
    ]);
    let mut req = request(3, 10, 10);
    req.tcp_host_ports = vec![80];
    let plan = place_tasks(&snapshot, &req);
    let mut placed = chosen(&plan)[..2].to_vec();
    placed.sort();
    assert_eq!(placed, ["a", "b"]);
    assert_eq!(
        failures_of(&plan.tasks[2]),
        [
            ("a".to_owned(), "RESOURCE:PORTS"),
            ("b".to_owned(), "RESOURCE:PORTS")
        ]
    );
    // Port 22 is reserved at registration (the fixture's registered PORTS).
    req.tcp_host_ports = vec![22];
    assert_eq!(chosen(&place_tasks(&snapshot, &req)), ["-", "-", "-"]);
    // Dynamic host ports need nothing.
    req.tcp_host_ports.clear();
    assert_eq!(place_tasks(&snapshot, &req).placed_count(), 3);
}

#[test]
fn resources_run_out_as_tasks_are_placed() {
    let snapshot = cluster(vec![instance("a", "z", 1024, 1024)]);
    let plan = place_tasks(&snapshot, &request(3, 512, 256));
    assert_eq!(chosen(&plan), ["a", "a", "-"]);
    assert_eq!(
        failures_of(&plan.tasks[2]),
        [("a".to_owned(), "RESOURCE:CPU")]
    );
}

#[test]
fn missing_when_there_is_no_active_instance() {
    let missing = vec![(String::new(), "MISSING")];
    let empty = place_tasks(&ClusterSnapshot::default(), &request(2, 1, 1));
    assert_eq!(empty.tasks.len(), 2);
    assert_eq!(failures_of(&empty.tasks[0]), missing);

    let mut draining = instance("a", "z", 4096, 4096);
    draining.status = InstanceStatus::from_wire("DRAINING");
    let mut inactive = instance("b", "z", 4096, 4096);
    inactive.status = InstanceStatus::from_wire("INACTIVE");
    let plan = place_tasks(&cluster(vec![draining, inactive]), &request(1, 1, 1));
    assert_eq!(failures_of(&plan.tasks[0]), missing);
    assert_eq!(
        plan.tasks[0],
        TaskPlacement::Unplaced {
            failures: vec![PlacementFailure {
                instance_id: None,
                reason: FailureReason::Missing
            }]
        }
    );
}

#[test]
fn zero_tasks_is_an_empty_plan() {
    let plan = place_tasks(&cluster(vec![instance("a", "z", 1, 1)]), &request(0, 1, 1));
    assert!(plan.tasks.is_empty());
}

#[test]
fn plan_failures_are_deduplicated_like_run_task() {
    let snapshot = cluster(vec![instance("a", "z", 100, 4096)]);
    let plan = place_tasks(&snapshot, &request(3, 512, 1));
    assert_eq!(plan.placed_count(), 0);
    let failures = plan.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].reason, FailureReason::ResourceCpu);
}

#[test]
fn failure_reasons_use_ecs_wording() {
    let table = [
        (FailureReason::ResourceCpu, "RESOURCE:CPU"),
        (FailureReason::ResourceMemory, "RESOURCE:MEMORY"),
        (FailureReason::ResourcePorts, "RESOURCE:PORTS"),
        (FailureReason::Attribute, "ATTRIBUTE"),
        (FailureReason::Agent, "AGENT"),
        (FailureReason::Missing, "MISSING"),
        (FailureReason::InstanceNotActive, "INACTIVE"),
        (
            FailureReason::MemberOfUnsatisfied,
            "MemberOf placement constraint unsatisfied.",
        ),
        (
            FailureReason::DistinctInstanceUnsatisfied,
            "DistinctInstance placement constraint unsatisfied.",
        ),
    ];
    for (reason, text) in table {
        assert_eq!(reason.as_str(), text);
        assert_eq!(reason.to_string(), text);
    }
}

#[test]
fn rejection_reason_checks_one_instance_for_start_task() {
    let req = request(1, 512, 512);
    let fits = instance("a", "z", 1024, 1024);
    assert_eq!(rejection_reason(&fits, &req), None);
    let mut draining = fits.clone();
    draining.status = InstanceStatus::Draining;
    assert_eq!(
        rejection_reason(&draining, &req),
        Some(FailureReason::InstanceNotActive)
    );
    let small = instance("b", "z", 1024, 100);
    assert_eq!(
        rejection_reason(&small, &req),
        Some(FailureReason::ResourceMemory)
    );
    let mut distinct = req.clone();
    distinct.constraints = vec![PlacementConstraint::DistinctInstance];
    let busy = with_tasks(fits, "family:web", 1);
    assert_eq!(
        rejection_reason(&busy, &distinct),
        Some(FailureReason::DistinctInstanceUnsatisfied)
    );
}

#[test]
fn validation_accepts_every_documented_form() {
    let (constraints, strategies) = validate_placement(
        &[
            ("distinctInstance", None),
            ("distinctInstance", Some("")),
            ("memberOf", Some("attribute:ecs.instance-type =~ t2.*")),
        ],
        &[
            ("spread", Some("attribute:ecs.availability-zone")),
            ("spread", Some("instanceId")),
            ("spread", Some("host")),
            ("binpack", Some("memory")),
            ("binpack", Some("CPU")),
        ],
    )
    .unwrap();
    assert_eq!(constraints.len(), 3);
    assert_eq!(constraints[0], PlacementConstraint::DistinctInstance);
    assert_eq!(
        strategies,
        [
            PlacementStrategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
            PlacementStrategy::Spread(SpreadField::InstanceId),
            PlacementStrategy::Spread(SpreadField::InstanceId),
            PlacementStrategy::Binpack(BinpackField::Memory),
            PlacementStrategy::Binpack(BinpackField::Cpu),
        ]
    );
    assert_eq!(
        PlacementStrategy::from_input("random", None),
        Ok(PlacementStrategy::Random)
    );
}

#[test]
fn validation_refuses_bad_constraints_and_strategies() {
    use PlacementInputError as E;
    let constraint_cases: [(&str, Option<&str>, E); 5] = [
        (
            "sameInstance",
            None,
            E::UnknownConstraintType {
                kind: "sameInstance".into(),
            },
        ),
        (
            "distinctInstance",
            Some("task:group == x"),
            E::ExpressionNotAllowed,
        ),
        ("memberOf", None, E::MissingExpression),
        ("memberOf", Some("  "), E::MissingExpression),
        (
            "memberOf",
            Some("agentVersion in [1]"),
            E::InvalidExpression(parse_expression("agentVersion in [1]").unwrap_err()),
        ),
    ];
    for (kind, expression, expected) in constraint_cases {
        assert_eq!(
            PlacementConstraint::from_input(kind, expression),
            Err(expected),
            "{kind} {expression:?}"
        );
    }
    let strategy_cases: [(&str, Option<&str>, E); 7] = [
        (
            "pack",
            None,
            E::UnknownStrategyType {
                kind: "pack".into(),
            },
        ),
        (
            "random",
            Some("cpu"),
            E::FieldNotAllowed {
                field: "cpu".into(),
            },
        ),
        ("binpack", None, E::MissingField { kind: "binpack" }),
        (
            "binpack",
            Some("disk"),
            E::UnknownBinpackField {
                field: "disk".into(),
            },
        ),
        ("spread", None, E::MissingField { kind: "spread" }),
        (
            "spread",
            Some("zone"),
            E::UnknownSpreadField {
                field: "zone".into(),
            },
        ),
        (
            "spread",
            Some("attribute:"),
            E::UnknownSpreadField {
                field: "attribute:".into(),
            },
        ),
    ];
    for (kind, field, expected) in strategy_cases {
        assert_eq!(
            PlacementStrategy::from_input(kind, field),
            Err(expected),
            "{kind} {field:?}"
        );
    }
    let eleven = vec![("distinctInstance", None); 11];
    assert_eq!(
        validate_placement(&eleven, &[]),
        Err(E::TooManyConstraints { count: 11 })
    );
    let six = vec![("random", None); 6];
    assert_eq!(
        validate_placement(&[], &six),
        Err(E::TooManyStrategies { count: 6 })
    );
    let message = PlacementStrategy::from_input("binpack", Some("disk"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "unknown binpack field `disk`: expected cpu or memory"
    );
}

#[test]
fn request_default_places_nothing() {
    let plan = place_tasks(
        &cluster(vec![instance("a", "z", 1, 1)]),
        &PlacementRequest::default(),
    );
    assert_eq!(plan, PlacementPlan::default());
}
