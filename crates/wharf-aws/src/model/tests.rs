use super::*;
use proptest::prelude::*;
use serde_json::json;
use std::sync::OnceLock;

fn read_model(file: &str) -> String {
    let path = format!("{}/../../models/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ecs() -> &'static ServiceModel {
    static ECS: OnceLock<ServiceModel> = OnceLock::new();
    ECS.get_or_init(|| ServiceModel::from_json(&read_model("ecs-2014-11-13.json")).unwrap())
}

fn ecr() -> &'static ServiceModel {
    static ECR: OnceLock<ServiceModel> = OnceLock::new();
    ECR.get_or_init(|| ServiceModel::from_json(&read_model("ecr-2015-09-21.json")).unwrap())
}

fn kinds(result: Result<(), Vec<Violation>>) -> Vec<(String, ViolationKind)> {
    result
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.path, v.kind))
        .collect()
}

#[test]
fn metadata_and_operations() {
    let m = ecs();
    assert_eq!(
        m.target_prefix(),
        Some("AmazonEC2ContainerServiceV20141113")
    );
    assert_eq!(m.signing_name(), "ecs");
    assert_eq!(m.protocol(), "json");
    assert_eq!(m.api_version(), "2014-11-13");
    let ops = m.operation_names();
    for op in [
        "RunTask",
        "RegisterTaskDefinition",
        "ListClusters",
        "CreateService",
    ] {
        assert!(ops.contains(&op), "{op}");
    }
    assert!(ops.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        ecr().target_prefix(),
        Some("AmazonEC2ContainerRegistry_V20150921")
    );
}

#[test]
fn declared_errors() {
    let errors = ecs().error_names("ListClusters").unwrap();
    let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "AccessDeniedException",
            "ServerException",
            "InvalidParameterException",
            "ClientException"
        ]
    );
    assert!(ecs().error_names("Nope").is_none());
}

#[test]
fn error_code_override_is_used() {
    let model = r#"{
        "metadata": {"protocol": "query", "apiVersion": "2015-12-01", "signingName": "elasticloadbalancing"},
        "operations": {"DescribeTargetGroups": {"input": {"shape": "In"}, "errors": [{"shape": "TargetGroupNotFoundException"}]}},
        "shapes": {
            "In": {"type": "structure", "members": {}},
            "TargetGroupNotFoundException": {"type": "structure", "members": {},
                "error": {"code": "TargetGroupNotFound", "httpStatusCode": 400, "senderFault": true}, "exception": true}
        }
    }"#;
    let m = ServiceModel::from_json(model).unwrap();
    assert_eq!(
        m.error_names("DescribeTargetGroups").unwrap(),
        vec![ErrorName {
            shape: "TargetGroupNotFoundException".into(),
            code: "TargetGroupNotFound".into(),
            http_status: Some(400),
            sender_fault: true,
        }]
    );
    assert_eq!(m.target_prefix(), None);
}

#[test]
fn broken_models_are_errors() {
    assert!(matches!(
        ServiceModel::from_json("{"),
        Err(ModelError::Json(_))
    ));
    let dangling =
        r#"{"metadata": {}, "operations": {"Op": {"input": {"shape": "Missing"}}}, "shapes": {}}"#;
    assert!(matches!(
        ServiceModel::from_json(dangling),
        Err(ModelError::UnknownShape { .. })
    ));
    let odd = r#"{"metadata": {}, "operations": {}, "shapes": {"X": {"type": "quaternion"}}}"#;
    assert!(matches!(
        ServiceModel::from_json(odd),
        Err(ModelError::MalformedShape { .. })
    ));
}

#[test]
fn valid_inputs_pass() {
    let m = ecs();
    assert_eq!(m.validate_input("ListClusters", &json!({})), Ok(()));
    assert_eq!(
        m.validate_input("ListClusters", &json!({"maxResults": 10, "nextToken": "x"})),
        Ok(())
    );
    assert_eq!(
        m.validate_input("RegisterTaskDefinition", &big_task_definition(3)),
        Ok(())
    );
}

#[test]
fn violations_have_paths_and_kinds() {
    let input = json!({
        "family": "web",
        "networkMode": "bridged",
        "containerDefinitions": [
            {"name": "a", "image": "nginx", "portMappings": [{"containerPort": 80}, {"hostPort": "8080", "protocol": "sctp"}]},
            {"name": "b", "memory": 1.5, "essential": "yes", "bogus": 1}
        ],
        "tags": [{"key": "", "value": "v"}],
        "cpu": 256
    });
    let got = kinds(ecs().validate_input("RegisterTaskDefinition", &input));
    let expect = [
        (
            "networkMode",
            ViolationKind::EnumValue {
                value: "bridged".into(),
            },
        ),
        (
            "containerDefinitions[0].portMappings[1].hostPort",
            ViolationKind::WrongType {
                expected: "integer",
            },
        ),
        (
            "containerDefinitions[0].portMappings[1].protocol",
            ViolationKind::EnumValue {
                value: "sctp".into(),
            },
        ),
        (
            "containerDefinitions[1].memory",
            ViolationKind::WrongType {
                expected: "integer",
            },
        ),
        (
            "containerDefinitions[1].essential",
            ViolationKind::WrongType {
                expected: "boolean",
            },
        ),
        (
            "containerDefinitions[1].bogus",
            ViolationKind::UnknownMember,
        ),
        (
            "tags[0].key",
            ViolationKind::Length {
                min: Some(1.0),
                max: Some(128.0),
                actual: 0,
            },
        ),
        ("cpu", ViolationKind::WrongType { expected: "string" }),
    ];
    for (path, kind) in &expect {
        assert!(
            got.iter().any(|(p, k)| p == path && k == kind),
            "missing {path} {kind:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
}

#[test]
fn missing_required_and_unknown_operation() {
    let got = kinds(ecs().validate_input("RegisterTaskDefinition", &json!({"family": null})));
    assert!(got.contains(&("family".into(), ViolationKind::MissingRequired)));
    assert!(got.contains(&(
        "containerDefinitions".into(),
        ViolationKind::MissingRequired
    )));
    assert_eq!(
        kinds(ecs().validate_input("Nope", &json!({}))),
        vec![(String::new(), ViolationKind::UnknownOperation)]
    );
    assert_eq!(
        kinds(ecs().validate_input("ListClusters", &json!([]))),
        vec![(
            String::new(),
            ViolationKind::WrongType {
                expected: "structure"
            }
        )]
    );
}

#[test]
fn list_counts_maps_and_ranges() {
    let tags: Vec<_> = (0..51)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    let got =
        kinds(ecs().validate_input("TagResource", &json!({"resourceArn": "arn", "tags": tags})));
    assert_eq!(
        got,
        vec![(
            "tags".into(),
            ViolationKind::Length {
                min: Some(0.0),
                max: Some(50.0),
                actual: 51
            }
        )]
    );
    let got = kinds(ecs().validate_input(
        "RegisterTaskDefinition",
        &json!({"family": "f", "containerDefinitions": [{"dockerLabels": {"a": 1}}]}),
    ));
    assert_eq!(
        got,
        vec![(
            "containerDefinitions[0].dockerLabels[\"a\"]".into(),
            ViolationKind::WrongType { expected: "string" }
        )]
    );
    // Integers outside i32 are not integers.
    let got = kinds(ecs().validate_input("ListClusters", &json!({"maxResults": 4_000_000_000u64})));
    assert_eq!(
        got,
        vec![(
            "maxResults".into(),
            ViolationKind::WrongType {
                expected: "integer"
            }
        )]
    );
    // ECR's repository name has a length range.
    let got = kinds(ecr().validate_input("CreateRepository", &json!({"repositoryName": "a"})));
    assert_eq!(
        got,
        vec![(
            "repositoryName".into(),
            ViolationKind::Length {
                min: Some(2.0),
                max: Some(256.0),
                actual: 1
            }
        )]
    );
}

#[test]
fn outputs_are_checked_too() {
    let m = ecs();
    let ok = json!({"clusters": [{"clusterArn": "arn:aws:ecs:us-east-1:0:cluster/a", "clusterName": "a",
        "status": "ACTIVE", "registeredContainerInstancesCount": 0, "runningTasksCount": 0,
        "pendingTasksCount": 0, "activeServicesCount": 0, "tags": []}], "failures": []});
    assert_eq!(m.validate_output("DescribeClusters", &ok), Ok(()));
    let bad = json!({"clusters": [{"clusterName": 5, "extra": true}]});
    let got = kinds(m.validate_output("DescribeClusters", &bad));
    assert!(got.contains(&(
        "clusters[0].clusterName".into(),
        ViolationKind::WrongType { expected: "string" }
    )));
    assert!(got.contains(&("clusters[0].extra".into(), ViolationKind::UnknownMember)));
    // Timestamps are epoch seconds.
    let task = json!({"tasks": [{"createdAt": 1714979289.5}]});
    assert_eq!(m.validate_output("DescribeTasks", &task), Ok(()));
    let task = json!({"tasks": [{"createdAt": "2024-05-06"}]});
    assert_eq!(
        kinds(m.validate_output("DescribeTasks", &task)),
        vec![(
            "tasks[0].createdAt".into(),
            ViolationKind::WrongType {
                expected: "timestamp"
            }
        )]
    );
}

#[test]
fn blobs_are_base64() {
    let model = r#"{"metadata": {}, "operations": {"Op": {"input": {"shape": "In"}}},
        "shapes": {"In": {"type": "structure", "members": {"b": {"shape": "B"}, "u": {"shape": "U"}}},
                   "B": {"type": "blob", "max": 3},
                   "U": {"type": "structure", "union": true, "members": {"x": {"shape": "S"}, "y": {"shape": "S"}}},
                   "S": {"type": "string"}}}"#;
    let m = ServiceModel::from_json(model).unwrap();
    assert_eq!(m.validate_input("Op", &json!({"b": "YWJj"})), Ok(()));
    assert_eq!(
        kinds(m.validate_input("Op", &json!({"b": "YWJjZA=="}))),
        vec![(
            "b".into(),
            ViolationKind::Length {
                min: None,
                max: Some(3.0),
                actual: 4
            }
        )]
    );
    assert_eq!(
        kinds(m.validate_input("Op", &json!({"b": "!!"}))),
        vec![("b".into(), ViolationKind::WrongType { expected: "blob" })]
    );
    assert_eq!(
        kinds(m.validate_input("Op", &json!({"u": {"x": "1", "y": "2"}}))),
        vec![("u".into(), ViolationKind::UnionMembers { set: 2 })]
    );
}

fn big_task_definition(containers: usize) -> Value {
    let defs: Vec<Value> = (0..containers)
        .map(|i| {
            json!({
                "name": format!("c{i}"),
                "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:latest",
                "cpu": 256, "memory": 512, "memoryReservation": 256, "essential": i == 0,
                "portMappings": (0..4).map(|p| json!({"containerPort": 8000 + p, "hostPort": 0, "protocol": "tcp"})).collect::<Vec<_>>(),
                "environment": (0..20).map(|e| json!({"name": format!("VAR_{e}"), "value": format!("value-{e}")})).collect::<Vec<_>>(),
                "command": ["/bin/sh", "-c", "exec app --serve"],
                "dockerLabels": {"team": "platform", "tier": "web"},
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/app", "awslogs-region": "us-east-1"}},
                "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"], "interval": 30, "timeout": 5, "retries": 3},
                "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
                "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": false}]
            })
        })
        .collect();
    json!({
        "family": "big-app",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "cpu": "2048", "memory": "4096",
        "containerDefinitions": defs,
        "volumes": [{"name": "data", "host": {"sourcePath": "/var/data"}}],
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ t3.*"}],
        "tags": [{"key": "env", "value": "prod"}]
    })
}

#[test]
fn a_big_task_definition_validates() {
    let m = ecs();
    let input = big_task_definition(10);
    assert_eq!(m.validate_input("RegisterTaskDefinition", &input), Ok(()));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9 ]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "family",
                        "containerDefinitions",
                        "name",
                        "image",
                        "portMappings",
                        "hostPort",
                        "environment",
                        "tags",
                        "key",
                        "value",
                        "cpu",
                        "x",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn validation_never_panics(value in arb_json(), op in prop::sample::select(vec![
        "RegisterTaskDefinition", "RunTask", "CreateService", "ListClusters", "DescribeClusters", "Nope",
    ])) {
        let _ = ecs().validate_input(op, &value);
        let _ = ecs().validate_output(op, &value);
    }

    #[test]
    fn from_json_never_panics(s in "\\PC{0,200}") {
        let _ = ServiceModel::from_json(&s);
    }
}
