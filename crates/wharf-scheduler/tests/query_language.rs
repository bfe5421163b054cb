//! Table tests of the cluster query language: every subject, operator and compound
//! form, and every parse error.

mod fixtures;

use std::collections::BTreeMap;

use wharf_scheduler::query::{Expected, MAX_EXPRESSION_LENGTH};
use wharf_scheduler::{parse_expression, InstanceSnapshot, QueryError, TaskOnInstance};

/// i-abcd1234, agent 1.14.5 connected, registered 2018-06-18T22:28:28Z, one task of
/// `service:production`, t2.small in us-east-1a, `flag` without value, `cores` = 8.
fn subject_instance() -> InstanceSnapshot {
    let mut instance = fixtures::instance("abcd1234", "us-east-1a", 1024, 2048);
    instance.agent_version = "1.14.5".to_owned();
    instance.attributes = BTreeMap::from([
        ("ecs.instance-type".to_owned(), Some("t2.small".to_owned())),
        (
            "ecs.availability-zone".to_owned(),
            Some("us-east-1a".to_owned()),
        ),
        ("flag".to_owned(), None),
        ("cores".to_owned(), Some("8".to_owned())),
    ]);
    instance.tasks = vec![TaskOnInstance {
        group: "service:production".to_owned(),
        family: "web".to_owned(),
    }];
    instance.running_tasks_count = 1;
    instance
}

const MATCHING: &[(&str, bool)] = &[
    // agentConnected
    ("agentConnected == true", true),
    ("agentConnected equals false", false),
    ("agentConnected != false", true),
    ("agentConnected not_equals true", false),
    ("agentConnected in [true]", true),
    ("agentConnected in [FALSE]", false),
    ("agentConnected !in [false]", true),
    ("agentConnected not_in [true, false]", false),
    ("agentConnected =~ tr.*", true),
    ("agentConnected matches f.*", false),
    ("agentConnected !~ f.*", true),
    ("agentConnected not_matches t.*", false),
    // agentVersion, in version order
    ("agentVersion == 1.14.5", true),
    ("agentVersion == 1.14", false),
    ("agentVersion != 1.14.5", false),
    ("agentVersion < 1.14.10", true),
    ("agentVersion < 1.14.5", false),
    ("agentVersion less_than 1.15", true),
    ("agentVersion <= 1.14.5", true),
    ("agentVersion less_than_equal 1.14.4", false),
    ("agentVersion > 1.9", true),
    ("agentVersion greater_than 1.14.5", false),
    ("agentVersion >= 1.14.5", true),
    ("agentVersion greater_than_equal 2.0.0", false),
    // attribute:<name>
    ("attribute:ecs.instance-type == t2.small", true),
    ("attribute:ecs.instance-type equals t2.micro", false),
    ("attribute:ecs.instance-type != t2.micro", true),
    ("attribute:ecs.instance-type =~ t2.*", true),
    ("attribute:ecs.instance-type =~ t2", false),
    ("attribute:ecs.instance-type matches 'm5.*'", false),
    ("attribute:ecs.instance-type !~ m5.*", true),
    ("attribute:ecs.instance-type not_matches t2.*", false),
    ("attribute:ecs.instance-type in [t2.small, t2.micro]", true),
    (
        "attribute:ecs.instance-type in ['t2.micro', \"m5.large\"]",
        false,
    ),
    ("attribute:ecs.instance-type !in ['t2.small']", false),
    ("attribute:ecs.instance-type not_in [m5.large]", true),
    ("attribute:ecs.instance-type exists", true),
    ("attribute:missing exists", false),
    ("attribute:missing !exists", true),
    ("attribute:ecs.instance-type not_exists", false),
    ("attribute:flag exists", true),
    ("attribute:flag == x", false),
    ("attribute:missing == x", false),
    ("attribute:missing != x", true),
    ("attribute:cores > 10", false),
    ("attribute:cores < 10", true),
    ("attribute:cores >= 8", true),
    ("attribute:cores <= 7.5", false),
    ("attribute:ecs.instance-type > t2.a", true),
    ("attribute:missing < 10", false),
    // ec2InstanceId
    ("ec2InstanceId == i-abcd1234", true),
    ("ec2InstanceId != i-abcd1234", false),
    ("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", true),
    ("ec2InstanceId !in ['i-abcd1234', 'i-wxyx7890']", false),
    ("ec2InstanceId =~ i-abcd.*", true),
    ("ec2InstanceId !~ i-abcd.*", false),
    // registeredAt, at the argument's precision
    ("registeredAt == 2018-06-18", true),
    ("registeredAt != 2018-06-18", false),
    ("registeredAt < 2018-06-19", true),
    ("registeredAt < 2018-06-18", false),
    ("registeredAt <= 2018-06-18", true),
    ("registeredAt > 2018-06-17", true),
    ("registeredAt > 2018-06-18", false),
    ("registeredAt >= 2018-06-18T22:28:28Z", true),
    ("registeredAt > 2018-06-18T22:28:28+00:00", false),
    ("registeredAt < 2018-06-19T00:28:29+02:00", true),
    ("registeredAt == 2018-06-18T22:28:28", true),
    (
        "registeredAt greater_than_equal 2018-06-18T22:28:28.001Z",
        false,
    ),
    // runningTasksCount
    ("runningTasksCount == 1", true),
    ("runningTasksCount != 1", false),
    ("runningTasksCount > 0", true),
    ("runningTasksCount < 1", false),
    ("runningTasksCount <= 1", true),
    ("runningTasksCount greater_than_equal 2", false),
    // task:group (true when any task has the group)
    ("task:group == service:production", true),
    ("task:group == database", false),
    ("task:group != service:production", false),
    ("task:group != database", true),
    ("task:group in [service:production, database]", true),
    ("task:group not_in [service:production]", false),
    ("task:group =~ service:.*", true),
    ("task:group !~ family:.*", true),
    ("task:group exists", true),
    ("task:group !exists", false),
    // compound expressions
    ("not(task:group == database)", true),
    ("not (task:group == service:production)", false),
    ("!(task:group == database)", true),
    ("! agentConnected == false", true),
    (
        "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d",
        true,
    ),
    (
        "attribute:ecs.instance-type =~ t2.* && attribute:ecs.availability-zone != us-east-1a",
        false,
    ),
    (
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        true,
    ),
    ("runningTasksCount == 0 or agentVersion < 1.15", true),
    ("runningTasksCount == 0 || agentVersion > 1.15", false),
    // `and` binds tighter than `or`; parentheses override.
    (
        "runningTasksCount == 1 or runningTasksCount == 5 and runningTasksCount == 6",
        true,
    ),
    (
        "(runningTasksCount == 1 or runningTasksCount == 5) and runningTasksCount == 6",
        false,
    ),
    (
        "runningTasksCount == 1 AND NOT (task:group == db) OR agentConnected == false",
        true,
    ),
    ("ec2InstanceId==i-abcd1234&&runningTasksCount==1", true),
    ("((( ec2InstanceId == i-abcd1234 )))", true),
    ("  agentVersion < 1.14.10  ", true),
];

#[test]
fn every_subject_and_operator_matches_as_documented() {
    let instance = subject_instance();
    for (text, expected) in MATCHING {
        let expression = parse_expression(text).unwrap_or_else(|error| panic!("{text}: {error}"));
        assert_eq!(expression.matches(&instance), *expected, "{text}");
    }
}

#[test]
fn displayed_expressions_parse_back_to_the_same_expression() {
    for (text, _) in MATCHING {
        let expression = parse_expression(text).unwrap();
        let shown = expression.to_string();
        let reparsed = parse_expression(&shown).unwrap_or_else(|error| panic!("{shown}: {error}"));
        assert_eq!(reparsed, expression, "{text} shown as {shown}");
    }
}

#[test]
fn a_disconnected_agent_and_an_old_registration_are_selectable() {
    let mut instance = subject_instance();
    instance.agent_connected = false;
    instance.registered_at_ms = 0;
    let disconnected = parse_expression("agentConnected == false").unwrap();
    assert!(disconnected.matches(&instance));
    let old = parse_expression("registeredAt < 2018-02-13").unwrap();
    assert!(old.matches(&instance));
}

fn unexpected(position: usize, expected: Expected) -> impl Fn(&QueryError) -> bool {
    move |error| {
        matches!(error, QueryError::Unexpected { position: p, expected: e, .. }
            if *p == position && *e == expected)
    }
}

fn not_allowed(position: usize) -> impl Fn(&QueryError) -> bool {
    move |error| matches!(error, QueryError::OperatorNotAllowed { position: p, .. } if *p == position)
}

#[test]
fn parse_errors_name_the_position_and_what_was_expected() {
    type Check = Box<dyn Fn(&QueryError) -> bool>;
    let cases: Vec<(&str, Check)> = vec![
        ("", Box::new(unexpected(0, Expected::Subject))),
        ("foo == bar", Box::new(unexpected(0, Expected::Subject))),
        (
            "attribute: == x",
            Box::new(unexpected(0, Expected::Subject)),
        ),
        ("agentVersion", Box::new(unexpected(12, Expected::Operator))),
        (
            "agentVersion ~~ 1",
            Box::new(unexpected(13, Expected::Operator)),
        ),
        ("agentVersion in [1]", Box::new(not_allowed(13))),
        ("runningTasksCount =~ 1", Box::new(not_allowed(18))),
        ("ec2InstanceId > i-1", Box::new(not_allowed(14))),
        ("agentConnected exists", Box::new(not_allowed(15))),
        ("registeredAt in [2018-01-01]", Box::new(not_allowed(13))),
        ("task:group < x", Box::new(not_allowed(11))),
        (
            "runningTasksCount == many",
            Box::new(unexpected(21, Expected::Number)),
        ),
        (
            "registeredAt < 2018-02-30",
            Box::new(unexpected(15, Expected::Date)),
        ),
        (
            "agentConnected == yes",
            Box::new(unexpected(18, Expected::Boolean)),
        ),
        (
            "agentConnected in [true, maybe]",
            Box::new(unexpected(25, Expected::Boolean)),
        ),
        (
            "agentVersion == 1..2",
            Box::new(unexpected(16, Expected::Version)),
        ),
        (
            "attribute:x == ",
            Box::new(unexpected(15, Expected::Argument)),
        ),
        (
            "attribute:x in a",
            Box::new(unexpected(15, Expected::ArgumentList)),
        ),
        (
            "attribute:x in [a b]",
            Box::new(unexpected(18, Expected::ListSeparator)),
        ),
        (
            "attribute:x in [a,",
            Box::new(unexpected(18, Expected::Argument)),
        ),
        (
            "attribute:x == 'abc",
            Box::new(unexpected(19, Expected::ClosingQuote)),
        ),
        (
            "(attribute:x exists",
            Box::new(unexpected(19, Expected::ClosingParenthesis)),
        ),
        (
            "attribute:x exists attribute:y exists",
            Box::new(unexpected(19, Expected::BooleanOperatorOrEnd)),
        ),
        (
            "attribute:x exists and",
            Box::new(unexpected(22, Expected::Subject)),
        ),
        ("not", Box::new(unexpected(3, Expected::Subject))),
        (
            "attribute:x =~ a(b)",
            Box::new(unexpected(16, Expected::BooleanOperatorOrEnd)),
        ),
        (
            "attribute:x =~ '(a'",
            Box::new(|error: &QueryError| {
                matches!(error, QueryError::InvalidPattern { position: 15, .. })
            }),
        ),
    ];
    for (text, check) in cases {
        match parse_expression(text) {
            Ok(expression) => panic!("{text:?} parsed as {expression}"),
            Err(error) => assert!(check(&error), "{text:?} gave {error:?}"),
        }
    }
}

#[test]
fn overlong_and_overdeep_expressions_are_refused() {
    let long = format!("attribute:x == {}", "a".repeat(MAX_EXPRESSION_LENGTH));
    assert_eq!(
        parse_expression(&long),
        Err(QueryError::TooLong {
            position: MAX_EXPRESSION_LENGTH
        })
    );
    let deep = format!(
        "{}agentConnected == true{}",
        "(".repeat(100),
        ")".repeat(100)
    );
    assert!(matches!(
        parse_expression(&deep),
        Err(QueryError::TooDeep { .. })
    ));
    let nots = format!("{}agentConnected == true", "!".repeat(500));
    assert!(matches!(
        parse_expression(&nots),
        Err(QueryError::TooDeep { .. })
    ));
}

#[test]
fn error_messages_say_where_and_what() {
    let error = parse_expression("runningTasksCount == many").unwrap_err();
    assert_eq!(error.position(), 21);
    assert_eq!(
        error.to_string(),
        "at byte 21: expected a whole number, found `many`"
    );
    let error = parse_expression("agentVersion =~ 1").unwrap_err();
    assert_eq!(
        error.to_string(),
        "at byte 13: operator `=~` cannot be used with subject `agentVersion`"
    );
}
