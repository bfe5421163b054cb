use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::records::{self, QueryPair, WeightedTargetGroup};

const REGION: &str = "us-east-1";
const LB_ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/1";
const LISTENER_ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/web/1/l1";

fn tg_arn(name: &str) -> String {
    format!("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{name}/1")
}

fn forward(groups: &[(&str, u32)]) -> Action {
    Action::Forward {
        order: None,
        target_groups: groups
            .iter()
            .map(|(name, weight)| WeightedTargetGroup {
                arn: tg_arn(name),
                weight: *weight,
            })
            .collect(),
        stickiness_seconds: None,
    }
}

fn fixed(status: u16, body: &str) -> Action {
    Action::FixedResponse {
        order: None,
        status_code: status,
        content_type: Some("text/plain".into()),
        message_body: Some(body.into()),
    }
}

fn health_check(enabled: bool) -> HealthCheck {
    HealthCheck {
        enabled,
        protocol: "HTTP".into(),
        port: "traffic-port".into(),
        path: "/".into(),
        interval_seconds: 30,
        timeout_seconds: 5,
        healthy_threshold: 5,
        unhealthy_threshold: 2,
        matcher: "200".into(),
    }
}

struct Builder {
    records: ElbRecords,
}

impl Builder {
    fn new(default_action: Action) -> Self {
        let mut records = ElbRecords::default();
        records.load_balancers.insert(
            records::load_balancer_key(REGION, "web"),
            LoadBalancerRecord {
                arn: LB_ARN.into(),
                name: "web".into(),
                scheme: "internet-facing".into(),
                lb_type: "application".into(),
                dns_name: "web.example".into(),
                state: "active".into(),
                created_ms: 0,
                attributes: BTreeMap::new(),
                tags: BTreeMap::new(),
            },
        );
        records.listeners.insert(
            records::listener_key(REGION, "web", "l1"),
            ListenerRecord {
                arn: LISTENER_ARN.into(),
                load_balancer_arn: LB_ARN.into(),
                port: 8080,
                protocol: "HTTP".into(),
                default_actions: vec![default_action],
                tags: BTreeMap::new(),
            },
        );
        Self { records }
    }

    fn rule(mut self, id: &str, priority: u32, conditions: Vec<Condition>, action: Action) -> Self {
        self.records.rules.insert(
            records::rule_key(REGION, "web", "l1", id),
            RuleRecord {
                arn: format!("{LISTENER_ARN}/{id}"),
                listener_arn: LISTENER_ARN.into(),
                priority,
                conditions,
                actions: vec![action],
                tags: BTreeMap::new(),
            },
        );
        self
    }

    fn group(mut self, name: &str, checks: bool, attributes: &[(&str, &str)]) -> Self {
        self.records.target_groups.insert(
            records::target_group_key(REGION, name),
            TargetGroupRecord {
                arn: tg_arn(name),
                name: name.into(),
                protocol: "HTTP".into(),
                protocol_version: "HTTP1".into(),
                port: 80,
                target_type: "ip".into(),
                vpc_id: None,
                health_check: health_check(checks),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                load_balancer_arns: vec![],
                tags: BTreeMap::new(),
            },
        );
        self
    }

    fn target(mut self, group: &str, ip: &str, port: u16, draining: bool) -> Self {
        self.records.targets.insert(
            records::target_key(REGION, group, ip, port),
            TargetRecord {
                id: ip.into(),
                port,
                address: format!("{ip}:{port}"),
                availability_zone: None,
                registered_ms: 0,
                drain_until_ms: draining.then_some(1),
            },
        );
        self
    }

    fn build(&self) -> RouteTable {
        compile(&self.records, 1, &TargetStates::new()).0
    }
}

fn request<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestFacts<'a> {
    RequestFacts {
        method,
        path,
        query: None,
        host: None,
        headers,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn body_of(action: &RouteAction) -> String {
    match action {
        RouteAction::Fixed(f) => String::from_utf8(f.body.to_vec()).unwrap(),
        other => format!("{other:?}"),
    }
}

#[test]
fn rules_are_evaluated_by_priority_not_by_insertion_order() {
    let path = |p: &str| Condition::PathPattern {
        values: vec![p.into()],
    };
    let table = Builder::new(fixed(404, "default"))
        .rule("a", 20, vec![path("/api/*")], fixed(200, "broad"))
        .rule("b", 10, vec![path("/api/v2/*")], fixed(200, "narrow"))
        .build();
    let listener = table.listener(8080).unwrap();
    let headers = HeaderMap::new();
    assert_eq!(listener.rules[0].priority, 10);
    assert_eq!(
        body_of(listener.route(&request(&Method::GET, "/api/v2/x", &headers))),
        "narrow"
    );
    assert_eq!(
        body_of(listener.route(&request(&Method::GET, "/api/v1/x", &headers))),
        "broad"
    );
    assert_eq!(
        body_of(listener.route(&request(&Method::GET, "/other", &headers))),
        "default"
    );
}

#[test]
fn every_condition_of_a_rule_must_match() {
    let table = Builder::new(fixed(404, "default"))
        .rule(
            "a",
            1,
            vec![
                Condition::PathPattern {
                    values: vec!["/x".into()],
                },
                Condition::HttpRequestMethod {
                    values: vec!["POST".into()],
                },
            ],
            fixed(200, "post-x"),
        )
        .build();
    let listener = table.listener(8080).unwrap();
    let headers = HeaderMap::new();
    assert_eq!(
        body_of(listener.route(&request(&Method::POST, "/x", &headers))),
        "post-x"
    );
    assert_eq!(
        body_of(listener.route(&request(&Method::GET, "/x", &headers))),
        "default"
    );
}

#[test]
fn host_header_is_case_insensitive_and_ignores_the_port() {
    let m = Matcher::compile(&Condition::HostHeader {
        values: vec!["*.Example.com".into()],
    });
    let headers = HeaderMap::new();
    let mut req = request(&Method::GET, "/", &headers);
    req.host = Some("API.example.COM:8080");
    assert!(m.matches(&req));
    req.host = Some("example.com");
    assert!(!m.matches(&req));
    req.host = None;
    assert!(!m.matches(&req));
}

#[test]
fn path_patterns_are_case_sensitive() {
    let m = Matcher::compile(&Condition::PathPattern {
        values: vec!["/Img/*".into()],
    });
    let headers = HeaderMap::new();
    assert!(m.matches(&request(&Method::GET, "/Img/a.png", &headers)));
    assert!(!m.matches(&request(&Method::GET, "/img/a.png", &headers)));
}

#[test]
fn header_query_method_and_source_ip_conditions() {
    let mut headers = HeaderMap::new();
    headers.append("x-env", HeaderValue::from_static("prod"));
    headers.append("x-env", HeaderValue::from_static("Canary-7"));
    let header = Matcher::compile(&Condition::HttpHeader {
        name: "X-Env".into(),
        values: vec!["canary-?".into()],
    });
    assert!(header.matches(&request(&Method::GET, "/", &headers)));
    let other = Matcher::compile(&Condition::HttpHeader {
        name: "X-Env".into(),
        values: vec!["staging".into()],
    });
    assert!(!other.matches(&request(&Method::GET, "/", &headers)));

    let query = Matcher::compile(&Condition::QueryString {
        values: vec![
            QueryPair {
                key: Some("version".into()),
                value: "v2*".into(),
            },
            QueryPair {
                key: None,
                value: "beta".into(),
            },
        ],
    });
    let mut req = request(&Method::GET, "/", &headers);
    req.query = Some("a=1&VERSION=V2.1");
    assert!(query.matches(&req));
    req.query = Some("mode=BETA");
    assert!(query.matches(&req));
    req.query = Some("version=v1&x=alpha%20beta");
    assert!(!query.matches(&req));
    req.query = Some("x=hello%20world&y=beta");
    assert!(query.matches(&req));
    req.query = None;
    assert!(!query.matches(&req));

    let method = Matcher::compile(&Condition::HttpRequestMethod {
        values: vec!["PUT".into(), "DELETE".into()],
    });
    assert!(method.matches(&request(&Method::DELETE, "/", &headers)));
    assert!(!method.matches(&request(&Method::GET, "/", &headers)));

    let source = Matcher::compile(&Condition::SourceIp {
        values: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
    });
    let mut req = request(&Method::GET, "/", &headers);
    req.client_ip = "10.1.2.3".parse().unwrap();
    assert!(source.matches(&req));
    req.client_ip = "::ffff:10.9.9.9".parse().unwrap();
    assert!(source.matches(&req));
    req.client_ip = "2001:db8:1::1".parse().unwrap();
    assert!(source.matches(&req));
    req.client_ip = "11.0.0.1".parse().unwrap();
    assert!(!source.matches(&req));
    let broken = Matcher::compile(&Condition::SourceIp {
        values: vec!["10.0.0.0/33".into()],
    });
    req.client_ip = "10.0.0.1".parse().unwrap();
    assert!(!broken.matches(&req));
}

#[test]
fn first_action_by_order_is_served() {
    let mut builder = Builder::new(fixed(404, "default"));
    builder
        .records
        .listeners
        .values_mut()
        .next()
        .unwrap()
        .default_actions = vec![
        Action::FixedResponse {
            order: Some(2),
            status_code: 500,
            content_type: None,
            message_body: Some("second".into()),
        },
        Action::FixedResponse {
            order: Some(1),
            status_code: 200,
            content_type: None,
            message_body: Some("first".into()),
        },
    ];
    let table = builder.build();
    let headers = HeaderMap::new();
    let action = table
        .listener(8080)
        .unwrap()
        .route(&request(&Method::GET, "/", &headers));
    assert_eq!(body_of(action), "first");
}

#[test]
fn forward_to_an_unknown_group_is_unavailable() {
    let table = Builder::new(forward(&[("missing", 1)])).build();
    let headers = HeaderMap::new();
    assert!(matches!(
        table
            .listener(8080)
            .unwrap()
            .route(&request(&Method::GET, "/", &headers)),
        RouteAction::Unavailable
    ));
}

#[test]
fn redirect_substitutes_the_request_parts() {
    let redirect = Redirect {
        status: StatusCode::MOVED_PERMANENTLY,
        protocol: "HTTPS".into(),
        host: "new.#{host}".into(),
        port: "443".into(),
        path: "/v2#{path}".into(),
        query: "#{query}&from=old".into(),
    };
    let source = RedirectSource {
        protocol: "http",
        host: "example.com",
        port: 80,
        path: "/a/b",
        query: "x=1",
    };
    assert_eq!(
        redirect.location(&source),
        "https://new.example.com/v2/a/b?x=1&from=old"
    );
    let same = Redirect {
        status: StatusCode::FOUND,
        protocol: "#{protocol}".into(),
        host: "#{host}".into(),
        port: "#{port}".into(),
        path: "/#{path}".into(),
        query: "#{query}".into(),
    };
    let source = RedirectSource {
        port: 8080,
        query: "",
        ..source
    };
    assert_eq!(same.location(&source), "http://example.com:8080//a/b");
}

#[test]
fn unhealthy_and_draining_targets_are_avoided_and_fail_open_when_all_unhealthy() {
    let table = Builder::new(forward(&[("app", 1)]))
        .group("app", true, &[])
        .target("app", "10.0.0.1", 80, false)
        .target("app", "10.0.0.2", 80, false)
        .target("app", "10.0.0.3", 80, true)
        .build();
    let group = &table.target_groups()[0];
    let [a, b, c] = [0, 1, 2].map(|i| group.targets[i].clone());
    a.state.set_health(HealthState::Healthy, 0);
    b.state.set_health(HealthState::Unhealthy, 0);
    c.state.set_health(HealthState::Healthy, 0);
    for _ in 0..20 {
        assert_eq!(group.pick_target(roll(), 0).unwrap().id, "10.0.0.1");
    }
    // Every target unhealthy: ALB routes to all of them (not the draining one).
    a.state.set_health(HealthState::Unhealthy, 0);
    let picked: std::collections::HashSet<String> = (0..20)
        .map(|_| group.pick_target(roll(), 0).unwrap().id.clone())
        .collect();
    assert_eq!(
        picked,
        ["10.0.0.1", "10.0.0.2"]
            .map(String::from)
            .into_iter()
            .collect()
    );

    // Only a draining target left: nothing to send new requests to.
    let drained = Builder::new(forward(&[("app", 1)]))
        .group("app", true, &[])
        .target("app", "10.0.0.3", 80, true)
        .build();
    assert!(drained.target_groups()[0].pick_target(1, 0).is_none());
}

#[test]
fn least_outstanding_requests_picks_the_least_loaded() {
    let table = Builder::new(forward(&[("app", 1)]))
        .group(
            "app",
            false,
            &[(
                "load_balancing.algorithm.type",
                "least_outstanding_requests",
            )],
        )
        .target("app", "10.0.0.1", 80, false)
        .target("app", "10.0.0.2", 80, false)
        .build();
    let group = &table.target_groups()[0];
    let _busy = group.targets[0].state.begin_request();
    for _ in 0..10 {
        assert_eq!(group.pick_target(roll(), 0).unwrap().id, "10.0.0.2");
    }
    drop(_busy);
    let _busy = group.targets[1].state.begin_request();
    assert_eq!(group.pick_target(roll(), 0).unwrap().id, "10.0.0.1");
}

#[test]
fn slow_start_ramps_a_newly_healthy_target() {
    let table = Builder::new(forward(&[("app", 1)]))
        .group("app", true, &[("slow_start.duration_seconds", "100")])
        .target("app", "10.0.0.1", 80, false)
        .target("app", "10.0.0.2", 80, false)
        .build();
    let group = &table.target_groups()[0];
    group.targets[0].state.set_health(HealthState::Healthy, 0);
    // The second target became healthy 10 s into a 100 s window.
    group.targets[1]
        .state
        .set_health(HealthState::Healthy, 1_000_000);
    let now = 1_010_000;
    let newcomer = (0..10_000)
        .filter(|_| group.pick_target(roll(), now).unwrap().id == "10.0.0.2")
        .count();
    // Without slow start it would get half; at 10 % of the window, about 5 %.
    assert!(newcomer < 1_500, "newcomer got {newcomer} of 10000");
    assert!(newcomer > 100, "newcomer got {newcomer} of 10000");
}

#[test]
fn states_carry_over_rebuilds_and_seed_from_health_records() {
    let mut builder = Builder::new(forward(&[("app", 1)]))
        .group("app", true, &[])
        .target("app", "10.0.0.1", 80, false)
        .target("app", "10.0.0.2", 80, false);
    builder.records.health.insert(
        records::health_key(REGION, "app", "10.0.0.2", 80),
        TargetHealthRecord {
            state: "healthy".into(),
            reason: None,
            description: None,
            updated_ms: 0,
        },
    );
    let (table, states) = compile(&builder.records, 1, &TargetStates::new());
    let group = &table.target_groups()[0];
    assert_eq!(group.targets[0].state.health(), HealthState::Initial);
    assert_eq!(group.targets[1].state.health(), HealthState::Healthy);
    group.targets[0].state.set_health(HealthState::Unhealthy, 0);
    let (table2, _) = compile(&builder.records, 2, &states);
    assert!(Arc::ptr_eq(
        &table2.target_groups()[0].targets[0].state,
        &group.targets[0].state
    ));
    assert_eq!(
        table2.target_groups()[0].targets[0].state.health(),
        HealthState::Unhealthy
    );
}

#[test]
fn in_use_follows_listeners_and_rules() {
    let table = Builder::new(forward(&[("a", 1)]))
        .group("a", true, &[])
        .group("b", true, &[])
        .group("c", true, &[])
        .rule("r", 1, vec![], forward(&[("b", 1)]))
        .build();
    let used: Vec<bool> = table.target_groups().iter().map(|g| g.in_use).collect();
    assert_eq!(used, vec![true, true, false]);
}

#[test]
fn key_kinds() {
    assert_eq!(key_kind("elbv2/us-east-1/tg/web"), Some("tg"));
    assert_eq!(
        key_kind("elbv2/us-east-1/target/web/1.2.3.4:80"),
        Some("target")
    );
    assert_eq!(key_kind("elbv2/us-east-1/tg"), None);
    assert_eq!(key_kind("ecs/us-east-1/tg/x"), None);
}

/// The reference semantics of a pattern, through the regex crate.
fn reference_match(pattern: &str, subject: &str, case_insensitive: bool) -> bool {
    let mut re = String::from(if case_insensitive { "(?is)^" } else { "(?s)^" });
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    let re = regex::RegexBuilder::new(&re).unicode(true).build().unwrap();
    // The regex crate's (?i) folds Unicode; ours folds ASCII only, so compare on
    // ASCII-only inputs when insensitive.
    re.is_match(subject)
}

proptest! {
    #[test]
    fn wildcard_matching_agrees_with_the_reference(
        pattern in "[ab*?/é]{0,8}",
        subject in "[abAB/é]{0,10}",
    ) {
        prop_assert_eq!(
            Pattern::case_sensitive(&pattern).matches(&subject),
            reference_match(&pattern, &subject, false),
            "pattern {:?} subject {:?}", pattern, subject
        );
    }

    #[test]
    fn case_insensitive_matching_agrees_with_the_reference(
        pattern in "[aB*?/]{0,8}",
        subject in "[abAB/]{0,10}",
    ) {
        prop_assert_eq!(
            Pattern::case_insensitive(&pattern).matches(&subject),
            reference_match(&pattern, &subject, true)
        );
    }

    #[test]
    fn a_literal_path_matches_itself_only(path in "/[a-z0-9/._-]{0,20}", other in "/[a-z0-9/._-]{0,20}") {
        let pattern = Pattern::case_sensitive(&path);
        prop_assert!(pattern.matches(&path));
        prop_assert_eq!(pattern.matches(&other), path == other);
    }

    #[test]
    fn rules_match_in_priority_order(priorities in proptest::collection::btree_set(1u32..50_000, 1..8)) {
        // Every rule matches everything; the lowest priority must win whatever order the
        // rules are stored in.
        let mut builder = Builder::new(fixed(404, "default"));
        for (i, priority) in priorities.iter().rev().enumerate() {
            builder = builder.rule(&format!("r{i}"), *priority, vec![Condition::PathPattern { values: vec!["*".into()] }], fixed(200, &priority.to_string()));
        }
        let table = builder.build();
        let headers = HeaderMap::new();
        let action = table.listener(8080).unwrap().route(&request(&Method::GET, "/any", &headers));
        prop_assert_eq!(body_of(action), priorities.iter().next().unwrap().to_string());
    }

    #[test]
    fn weighted_selection_is_proportional_and_never_picks_zero_weight(
        weights in proptest::collection::vec(0u32..=999, 2..5),
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let names: Vec<String> = (0..weights.len()).map(|i| format!("g{i}")).collect();
        let spec: Vec<(&str, u32)> = names.iter().map(String::as_str).zip(weights.iter().copied()).collect();
        let mut builder = Builder::new(forward(&spec));
        for name in &names {
            builder = builder.group(name, false, &[]);
        }
        let table = builder.build();
        let headers = HeaderMap::new();
        let RouteAction::Forward(fwd) = table.listener(8080).unwrap().route(&request(&Method::GET, "/", &headers)) else {
            panic!("not a forward");
        };
        let total: u32 = weights.iter().sum();
        let draws = 20_000u32;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..draws {
            let group = fwd.pick_group(roll()).unwrap();
            let index = names.iter().position(|n| *n == group.name).unwrap();
            counts[index] += 1;
        }
        for (i, weight) in weights.iter().enumerate() {
            if *weight == 0 {
                prop_assert_eq!(counts[i], 0);
            } else {
                let expected = *weight as f64 / total as f64;
                let seen = counts[i] as f64 / draws as f64;
                prop_assert!((seen - expected).abs() < 0.03, "group {} weight {} expected {} seen {}", i, weight, expected, seen);
            }
        }
    }

    #[test]
    fn draining_targets_are_never_picked(
        draining in proptest::collection::vec(any::<bool>(), 1..6),
        healthy in proptest::collection::vec(any::<bool>(), 6),
        least in any::<bool>(),
    ) {
        let algorithm = if least { "least_outstanding_requests" } else { "round_robin" };
        let mut builder = Builder::new(forward(&[("app", 1)]))
            .group("app", true, &[("load_balancing.algorithm.type", algorithm)]);
        for (i, d) in draining.iter().enumerate() {
            builder = builder.target("app", &format!("10.0.0.{i}"), 80, *d);
        }
        let table = builder.build();
        let group = &table.target_groups()[0];
        for (target, h) in group.targets.iter().zip(&healthy) {
            target.state.set_health(if *h { HealthState::Healthy } else { HealthState::Unhealthy }, 0);
        }
        let any_live = draining.iter().any(|d| !d);
        let any_healthy_live = group.targets.iter().any(|t| !t.draining && t.state.health() == HealthState::Healthy);
        for _ in 0..50 {
            match group.pick_target(roll(), 0) {
                Some(t) => {
                    prop_assert!(!t.draining);
                    if any_healthy_live {
                        prop_assert_eq!(t.state.health(), HealthState::Healthy);
                    }
                }
                None => prop_assert!(!any_live),
            }
        }
    }
}
