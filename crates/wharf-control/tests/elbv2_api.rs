//! End-to-end tests of the ELBv2 API over the shared AWS listener.
//!
//! Every call is a real query-protocol request (form body, SigV4-signed for
//! `elasticloadbalancing`) sent through `AwsFront`'s router. Every successful XML
//! response is read back into JSON by walking the botocore model's output shape —
//! an element the shape does not know fails the test — and checked against that
//! shape; every error code is checked against the errors the model declares for the
//! operation. The ELBv2 service runs on a manual clock, so draining is tested by
//! moving time, not by sleeping.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tower::ServiceExt;
use wharf_aws::sigv4::{
    sign_request, Credential, SigningCredentials, SigningScope, StaticCredentials,
};
use wharf_aws::{AwsFront, AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_control::clock::ManualClock;
use wharf_control::elbv2::{Elbv2Config, Elbv2Service, ELBV2_MODEL_JSON};
use wharf_control::records::Records;
use wharf_control::{EcsConfig, EcsService};
use wharf_store::sqlite::SqliteStore;
use wharf_store::{Store, Txn};

const REGION: &str = "us-east-1";
const START_MILLIS: i64 = 1_700_000_000_000;

/// Errors of the query protocol itself, which any operation may answer.
const GENERIC_ERRORS: [&str; 4] = [
    "ValidationError",
    "InvalidAction",
    "MissingParameter",
    "ThrottlingException",
];

fn raw_model() -> &'static Value {
    static MODEL: OnceLock<Value> = OnceLock::new();
    MODEL.get_or_init(|| serde_json::from_str(ELBV2_MODEL_JSON).unwrap())
}

// ---------------------------------------------------------------------------
// Reading query-protocol XML back into JSON, guided by the model.
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

fn parse_xml(xml: &str) -> Element {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack = vec![Element::default()];
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(Element {
                name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                ..Default::default()
            }),
            Event::Empty(e) => {
                let el = Element {
                    name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                    ..Default::default()
                };
                stack.last_mut().unwrap().children.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(el);
            }
            Event::Text(t) => stack
                .last_mut()
                .unwrap()
                .text
                .push_str(&t.decode().unwrap()),
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => match r.decode().unwrap().as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => panic!("unknown entity {other}"),
                    },
                };
                stack.last_mut().unwrap().text.push_str(&text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "unbalanced XML: {xml}");
    stack.pop().unwrap().children.pop().expect("a root element")
}

fn child<'a>(el: &'a Element, name: &str) -> Option<&'a Element> {
    el.children.iter().find(|c| c.name == name)
}

/// Converts an element to JSON by the model's shape; unknown elements and values
/// that do not parse as their type are pushed to `problems`.
fn to_json(shape: &str, el: &Element, path: &str, problems: &mut Vec<String>) -> Value {
    let s = &raw_model()["shapes"][shape];
    match s["type"].as_str().unwrap() {
        "structure" => {
            let mut map = Map::new();
            for c in &el.children {
                match s["members"].get(&c.name) {
                    Some(m) => {
                        let v = to_json(
                            m["shape"].as_str().unwrap(),
                            c,
                            &format!("{path}.{}", c.name),
                            problems,
                        );
                        map.insert(c.name.clone(), v);
                    }
                    None => problems.push(format!("{path}: unknown element <{}>", c.name)),
                }
            }
            Value::Object(map)
        }
        "list" => {
            let member = s["member"]["shape"].as_str().unwrap();
            Value::Array(
                el.children
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if c.name != "member" {
                            problems.push(format!("{path}: list item <{}>", c.name));
                        }
                        to_json(member, c, &format!("{path}[{i}]"), problems)
                    })
                    .collect(),
            )
        }
        "map" => {
            let mut map = Map::new();
            for entry in &el.children {
                let k = child(entry, "key")
                    .map(|k| k.text.clone())
                    .unwrap_or_default();
                let v = child(entry, "value")
                    .map(|v| to_json(s["value"]["shape"].as_str().unwrap(), v, path, problems))
                    .unwrap_or(Value::Null);
                map.insert(k, v);
            }
            Value::Object(map)
        }
        "string" => Value::String(el.text.clone()),
        "integer" | "long" => match el.text.parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => {
                problems.push(format!("{path}: {:?} is not an integer", el.text));
                Value::Null
            }
        },
        "boolean" => match el.text.as_str() {
            "true" => json!(true),
            "false" => json!(false),
            other => {
                problems.push(format!("{path}: {other:?} is not a boolean"));
                Value::Null
            }
        },
        "double" | "float" => json!(el.text.parse::<f64>().unwrap_or(f64::NAN)),
        "timestamp" => match chrono::DateTime::parse_from_rfc3339(&el.text) {
            Ok(t) => json!(t.timestamp_millis() as f64 / 1000.0),
            Err(_) => {
                problems.push(format!("{path}: {:?} is not an ISO 8601 time", el.text));
                Value::Null
            }
        },
        other => {
            problems.push(format!("{path}: unexpected shape type {other}"));
            Value::Null
        }
    }
}

// ---------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Failure {
    status: u16,
    code: String,
    message: String,
}

struct Harness {
    router: axum::Router,
    clock: Arc<ManualClock>,
    elbv2: Arc<Elbv2Service>,
    ecs: Arc<EcsService>,
    store: Arc<dyn Store>,
}

fn form_encode(pairs: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let clock = Arc::new(ManualClock::at(START_MILLIS));
        let elbv2 = Arc::new(Elbv2Service::new(
            Records::new(store.clone()),
            clock.clone(),
            Elbv2Config::default(),
        ));
        let ecs = Arc::new(EcsService::new(
            Records::new(store.clone()),
            clock.clone(),
            EcsConfig::default(),
        ));
        let credentials = Arc::new(StaticCredentials::new().with(
            "test",
            Credential {
                secret_access_key: "secret".into(),
                account_id: "000000000000".into(),
                session_token: None,
            },
        ));
        let router = AwsFront::new(credentials, Arc::new(chrono::Utc::now))
            .service(elbv2.clone())
            .service(ecs.clone())
            .router();
        Harness {
            router,
            clock,
            elbv2,
            ecs,
            store,
        }
    }

    /// Sends a signed query-protocol request; returns the status and body.
    async fn send(&self, region: &str, body: String) -> (u16, String) {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("localhost:4566"));
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let creds = SigningCredentials {
            access_key_id: "test".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        let signed = sign_request(
            &creds,
            SigningScope {
                region,
                service: "elasticloadbalancing",
            },
            "POST",
            "/",
            &headers,
            body.as_bytes(),
            chrono::Utc::now(),
        )
        .unwrap();
        signed.apply(&mut headers).unwrap();
        let mut request = Request::builder()
            .method("POST")
            .uri("/")
            .body(Body::from(body))
            .unwrap();
        *request.headers_mut() = headers;
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        assert!(response.headers().contains_key("x-amzn-requestid"));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Calls `op` in `region`; a success is read back by the model's output shape and
    /// checked against it, an error against the errors the model declares.
    async fn call_in(
        &self,
        region: &str,
        op: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        let mut pairs = vec![
            ("Action".to_string(), op.to_string()),
            ("Version".to_string(), "2015-12-01".to_string()),
        ];
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (status, body) = self.send(region, form_encode(&pairs)).await;
        let root = parse_xml(&body);
        if status == 200 {
            assert_eq!(root.name, format!("{op}Response"), "{body}");
            let result = child(&root, &format!("{op}Result")).expect("a result element");
            assert!(child(&root, "ResponseMetadata")
                .and_then(|m| child(m, "RequestId"))
                .is_some());
            let mut problems = Vec::new();
            let value = match raw_model()["operations"][op]["output"]["shape"].as_str() {
                Some(shape) => to_json(shape, result, op, &mut problems),
                None => json!({}),
            };
            assert!(problems.is_empty(), "{op} output: {problems:#?}\n{body}");
            if let Err(violations) = self.elbv2.model().validate_output(op, &value) {
                panic!("{op} output does not match the model: {violations:#?}\n{value:#}");
            }
            Ok(value)
        } else {
            assert_eq!(root.name, "ErrorResponse", "{body}");
            let error = child(&root, "Error").expect("an Error element");
            let code = child(error, "Code").unwrap().text.clone();
            let message = child(error, "Message")
                .map(|m| m.text.clone())
                .unwrap_or_default();
            assert!(status < 500, "{op} answered {status} {code}: {message}");
            assert!(!message.is_empty(), "{op}: {code} has no message");
            if !GENERIC_ERRORS.contains(&code.as_str()) {
                let declared = self.elbv2.model().error_names(op).unwrap_or_default();
                assert!(
                    declared.iter().any(|e| e.code == code),
                    "{op} answered {code} ({message}), which the model does not declare"
                );
            }
            Err(Failure {
                status,
                code,
                message,
            })
        }
    }

    async fn ok(&self, op: &str, params: &[(&str, &str)]) -> Value {
        match self.call_in(REGION, op, params).await {
            Ok(v) => v,
            Err(f) => panic!("{op} failed: {f:?} (params {params:?})"),
        }
    }

    async fn err(&self, op: &str, params: &[(&str, &str)]) -> String {
        match self.call_in(REGION, op, params).await {
            Ok(v) => panic!("{op} succeeded but should have failed ({params:?}): {v:#}"),
            Err(f) => {
                assert_eq!(f.status, 400, "{f:?}");
                assert!(!f.message.is_empty());
                f.code
            }
        }
    }

    async fn create_lb(&self, name: &str) -> String {
        let out = self
            .ok(
                "CreateLoadBalancer",
                &[
                    ("Name", name),
                    ("Subnets.member.1", "subnet-a"),
                    ("Subnets.member.2", "subnet-b"),
                    ("SecurityGroups.member.1", "sg-1"),
                ],
            )
            .await;
        s(&out["LoadBalancers"][0]["LoadBalancerArn"])
    }

    async fn create_tg(&self, name: &str, target_type: &str) -> String {
        let out = self
            .ok(
                "CreateTargetGroup",
                &[
                    ("Name", name),
                    ("Protocol", "HTTP"),
                    ("Port", "8080"),
                    ("VpcId", "vpc-1"),
                    ("TargetType", target_type),
                ],
            )
            .await;
        s(&out["TargetGroups"][0]["TargetGroupArn"])
    }

    async fn create_listener(&self, lb: &str, port: &str, tg: &str) -> String {
        let out = self
            .ok(
                "CreateListener",
                &[
                    ("LoadBalancerArn", lb),
                    ("Protocol", "HTTP"),
                    ("Port", port),
                    ("DefaultActions.member.1.Type", "forward"),
                    ("DefaultActions.member.1.TargetGroupArn", tg),
                ],
            )
            .await;
        s(&out["Listeners"][0]["ListenerArn"])
    }

    async fn tg(&self, arn: &str) -> Value {
        let out = self
            .ok("DescribeTargetGroups", &[("TargetGroupArns.member.1", arn)])
            .await;
        out["TargetGroups"][0].clone()
    }

    async fn health(&self, tg: &str) -> Vec<(String, String, String)> {
        let out = self
            .ok("DescribeTargetHealth", &[("TargetGroupArn", tg)])
            .await;
        out["TargetHealthDescriptions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                (
                    s(&d["Target"]["Id"]),
                    s(&d["TargetHealth"]["State"]),
                    s(&d["TargetHealth"]["Reason"]),
                )
            })
            .collect()
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn attrs(v: &Value) -> BTreeMap<String, String> {
    v["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (s(&a["Key"]), s(&a["Value"])))
        .collect()
}

// ---------------------------------------------------------------------------
// Load balancers.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn load_balancer_lifecycle() {
    let h = Harness::new();
    let out = h
        .ok(
            "CreateLoadBalancer",
            &[
                ("Name", "web"),
                ("Subnets.member.1", "subnet-a"),
                ("Subnets.member.2", "subnet-b"),
                ("SecurityGroups.member.1", "sg-1"),
                ("Tags.member.1.Key", "team"),
                ("Tags.member.1.Value", "core"),
            ],
        )
        .await;
    let lb = &out["LoadBalancers"][0];
    let arn = s(&lb["LoadBalancerArn"]);
    assert!(arn
        .starts_with("arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/"));
    let id = arn.rsplit('/').next().unwrap();
    assert_eq!(
        s(&lb["DNSName"]),
        format!("web-{id}.us-east-1.elb.localhost")
    );
    assert_eq!(lb["State"]["Code"], "active");
    assert_eq!(lb["Type"], "application");
    assert_eq!(lb["Scheme"], "internet-facing");
    assert_eq!(lb["SecurityGroups"], json!(["sg-1"]));
    assert_eq!(lb["AvailabilityZones"][1]["SubnetId"], "subnet-b");
    assert_eq!(lb["AvailabilityZones"][0]["ZoneName"], "us-east-1a");

    // The same settings again answer the same load balancer; other settings clash.
    let again = h
        .ok(
            "CreateLoadBalancer",
            &[
                ("Name", "web"),
                ("Subnets.member.1", "subnet-a"),
                ("Subnets.member.2", "subnet-b"),
            ],
        )
        .await;
    assert_eq!(s(&again["LoadBalancers"][0]["LoadBalancerArn"]), arn);
    assert_eq!(
        h.err(
            "CreateLoadBalancer",
            &[("Name", "web"), ("Scheme", "internal")]
        )
        .await,
        "DuplicateLoadBalancerName"
    );
    for bad in ["-web", "web-", "a_b", "internal-x", &"x".repeat(33)] {
        assert_eq!(
            h.err("CreateLoadBalancer", &[("Name", bad)]).await,
            "ValidationError",
            "{bad}"
        );
    }
    assert_eq!(
        h.err(
            "CreateLoadBalancer",
            &[("Name", "nlb"), ("Type", "network")]
        )
        .await,
        "InvalidConfigurationRequest"
    );

    let by_name = h
        .ok("DescribeLoadBalancers", &[("Names.member.1", "web")])
        .await;
    assert_eq!(s(&by_name["LoadBalancers"][0]["LoadBalancerArn"]), arn);
    let by_arn = h
        .ok(
            "DescribeLoadBalancers",
            &[("LoadBalancerArns.member.1", &arn)],
        )
        .await;
    assert_eq!(by_arn["LoadBalancers"][0]["LoadBalancerName"], "web");
    assert_eq!(
        h.err("DescribeLoadBalancers", &[("Names.member.1", "nope")])
            .await,
        "LoadBalancerNotFound"
    );
    let tags = h
        .ok("DescribeTags", &[("ResourceArns.member.1", &arn)])
        .await;
    assert_eq!(
        tags["TagDescriptions"][0]["Tags"],
        json!([{"Key": "team", "Value": "core"}])
    );

    // Attributes: defaults, a change, and refusals.
    let a = attrs(
        &h.ok(
            "DescribeLoadBalancerAttributes",
            &[("LoadBalancerArn", &arn)],
        )
        .await,
    );
    assert_eq!(a["idle_timeout.timeout_seconds"], "60");
    assert_eq!(a["deletion_protection.enabled"], "false");
    assert!(a.keys().all(|k| !k.starts_with("wharf:")));
    let changed = h
        .ok(
            "ModifyLoadBalancerAttributes",
            &[
                ("LoadBalancerArn", &arn),
                ("Attributes.member.1.Key", "idle_timeout.timeout_seconds"),
                ("Attributes.member.1.Value", "120"),
            ],
        )
        .await;
    assert_eq!(attrs(&changed)["idle_timeout.timeout_seconds"], "120");
    for (k, v) in [
        ("idle_timeout.timeout_seconds", "0"),
        ("no.such.key", "1"),
        ("routing.http2.enabled", "yes"),
    ] {
        let code = h
            .err(
                "ModifyLoadBalancerAttributes",
                &[
                    ("LoadBalancerArn", &arn),
                    ("Attributes.member.1.Key", k),
                    ("Attributes.member.1.Value", v),
                ],
            )
            .await;
        assert_eq!(code, "ValidationError", "{k}={v}");
    }

    // Deletion protection holds the load balancer; then it goes, and going twice is fine.
    h.ok(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &arn),
            ("Attributes.member.1.Key", "deletion_protection.enabled"),
            ("Attributes.member.1.Value", "true"),
        ],
    )
    .await;
    assert_eq!(
        h.err("DeleteLoadBalancer", &[("LoadBalancerArn", &arn)])
            .await,
        "OperationNotPermitted"
    );
    h.ok(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &arn),
            ("Attributes.member.1.Key", "deletion_protection.enabled"),
            ("Attributes.member.1.Value", "false"),
        ],
    )
    .await;
    h.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &arn)])
        .await;
    h.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &arn)])
        .await;
    assert_eq!(
        h.err(
            "DescribeLoadBalancers",
            &[("LoadBalancerArns.member.1", &arn)]
        )
        .await,
        "LoadBalancerNotFound"
    );
    assert_eq!(
        h.err(
            "DescribeLoadBalancers",
            &[("LoadBalancerArns.member.1", "not-an-arn")]
        )
        .await,
        "ValidationError"
    );
}

#[tokio::test]
async fn describe_load_balancers_pages_with_markers() {
    let h = Harness::new();
    for i in 0..5 {
        h.create_lb(&format!("lb-{i}")).await;
    }
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("PageSize", "2".to_string())];
        if let Some(m) = &marker {
            params.push(("Marker", m.clone()));
        }
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = h.ok("DescribeLoadBalancers", &p).await;
        pages += 1;
        for lb in out["LoadBalancers"].as_array().unwrap() {
            names.push(s(&lb["LoadBalancerName"]));
        }
        match out.get("NextMarker") {
            Some(m) => marker = Some(s(m)),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["lb-0", "lb-1", "lb-2", "lb-3", "lb-4"]);
    assert_eq!(
        h.err("DescribeLoadBalancers", &[("Marker", "bogus!")])
            .await,
        "ValidationError"
    );
    assert_eq!(
        h.err("DescribeLoadBalancers", &[("PageSize", "0")]).await,
        "ValidationError"
    );
}

#[tokio::test]
async fn state_is_regional() {
    let h = Harness::new();
    let out = h
        .call_in("eu-west-1", "CreateLoadBalancer", &[("Name", "eu")])
        .await
        .unwrap();
    let arn = s(&out["LoadBalancers"][0]["LoadBalancerArn"]);
    assert!(arn.contains(":eu-west-1:"));
    assert_eq!(
        h.err(
            "DescribeLoadBalancers",
            &[("LoadBalancerArns.member.1", &arn)]
        )
        .await,
        "LoadBalancerNotFound"
    );
    let listed = h.ok("DescribeLoadBalancers", &[]).await;
    assert!(listed
        .get("LoadBalancers")
        .is_none_or(|l| l.as_array().unwrap().is_empty()));
}

// ---------------------------------------------------------------------------
// Target groups.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn target_groups_take_elbv2_defaults_and_rules() {
    let h = Harness::new();
    let out = h
        .ok(
            "CreateTargetGroup",
            &[
                ("Name", "api"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("VpcId", "vpc-1"),
            ],
        )
        .await;
    let tg = &out["TargetGroups"][0];
    let arn = s(&tg["TargetGroupArn"]);
    assert!(arn.starts_with("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/api/"));
    assert_eq!(tg["TargetType"], "instance");
    assert_eq!(tg["ProtocolVersion"], "HTTP1");
    assert_eq!(tg["HealthCheckPath"], "/");
    assert_eq!(tg["HealthCheckPort"], "traffic-port");
    assert_eq!(tg["HealthCheckProtocol"], "HTTP");
    assert_eq!(tg["HealthCheckEnabled"], true);
    assert_eq!(tg["HealthCheckIntervalSeconds"], 30);
    assert_eq!(tg["HealthCheckTimeoutSeconds"], 5);
    assert_eq!(tg["HealthyThresholdCount"], 5);
    assert_eq!(tg["UnhealthyThresholdCount"], 2);
    assert_eq!(tg["Matcher"]["HttpCode"], "200");

    let custom = h
        .ok(
            "CreateTargetGroup",
            &[
                ("Name", "fast"),
                ("Protocol", "HTTP"),
                ("ProtocolVersion", "HTTP2"),
                ("Port", "8080"),
                ("TargetType", "ip"),
                ("HealthCheckPath", "/health"),
                ("HealthCheckPort", "9000"),
                ("HealthCheckIntervalSeconds", "5"),
                ("HealthCheckTimeoutSeconds", "2"),
                ("HealthyThresholdCount", "2"),
                ("UnhealthyThresholdCount", "3"),
                ("Matcher.HttpCode", "200-299"),
            ],
        )
        .await;
    let c = &custom["TargetGroups"][0];
    assert_eq!(c["HealthCheckPath"], "/health");
    assert_eq!(c["HealthCheckPort"], "9000");
    assert_eq!(c["Matcher"]["HttpCode"], "200-299");
    assert_eq!(c["ProtocolVersion"], "HTTP2");
    assert_eq!(c["TargetType"], "ip");

    let bad: &[&[(&str, &str)]] = &[
        &[("Name", "x"), ("Protocol", "HTTP")],
        &[("Name", "x"), ("Port", "80")],
        &[("Name", "x"), ("Protocol", "TCP"), ("Port", "80")],
        &[
            ("Name", "x"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("TargetType", "lambda"),
        ],
        &[
            ("Name", "x"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("HealthCheckIntervalSeconds", "5"),
            ("HealthCheckTimeoutSeconds", "5"),
        ],
        &[
            ("Name", "x"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("Matcher.HttpCode", "600"),
        ],
        &[
            ("Name", "x"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("Matcher.HttpCode", "299-200"),
        ],
        &[
            ("Name", "x"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("HealthCheckPath", "health"),
        ],
        &[
            ("Name", "x"),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("HealthyThresholdCount", "11"),
        ],
        &[("Name", "x"), ("Protocol", "HTTP"), ("Port", "eighty")],
        &[("Name", "x_y"), ("Protocol", "HTTP"), ("Port", "80")],
    ];
    for params in bad {
        assert_eq!(
            h.err("CreateTargetGroup", params).await,
            "ValidationError",
            "{params:?}"
        );
    }
    assert_eq!(
        h.err(
            "CreateTargetGroup",
            &[("Name", "api"), ("Protocol", "HTTP"), ("Port", "81")]
        )
        .await,
        "DuplicateTargetGroupName"
    );

    let modified = h
        .ok(
            "ModifyTargetGroup",
            &[
                ("TargetGroupArn", &arn),
                ("HealthCheckPath", "/ping"),
                ("Matcher.HttpCode", "200,204"),
            ],
        )
        .await;
    assert_eq!(modified["TargetGroups"][0]["HealthCheckPath"], "/ping");
    assert_eq!(
        modified["TargetGroups"][0]["Matcher"]["HttpCode"],
        "200,204"
    );
    assert_eq!(
        h.err(
            "ModifyTargetGroup",
            &[
                ("TargetGroupArn", &arn),
                ("HealthCheckTimeoutSeconds", "60")
            ]
        )
        .await,
        "ValidationError"
    );

    let a = attrs(
        &h.ok("DescribeTargetGroupAttributes", &[("TargetGroupArn", &arn)])
            .await,
    );
    assert_eq!(a["deregistration_delay.timeout_seconds"], "300");
    assert_eq!(a["slow_start.duration_seconds"], "0");
    assert_eq!(a["load_balancing.algorithm.type"], "round_robin");
    assert_eq!(a["stickiness.enabled"], "false");
    let changed = h
        .ok(
            "ModifyTargetGroupAttributes",
            &[
                ("TargetGroupArn", &arn),
                (
                    "Attributes.member.1.Key",
                    "deregistration_delay.timeout_seconds",
                ),
                ("Attributes.member.1.Value", "5"),
                ("Attributes.member.2.Key", "stickiness.enabled"),
                ("Attributes.member.2.Value", "true"),
            ],
        )
        .await;
    let a = attrs(&changed);
    assert_eq!(a["deregistration_delay.timeout_seconds"], "5");
    assert_eq!(a["stickiness.enabled"], "true");
    for (k, v) in [
        ("deregistration_delay.timeout_seconds", "3601"),
        ("slow_start.duration_seconds", "10"),
        ("load_balancing.algorithm.type", "random"),
        ("made.up", "1"),
    ] {
        assert_eq!(
            h.err(
                "ModifyTargetGroupAttributes",
                &[
                    ("TargetGroupArn", &arn),
                    ("Attributes.member.1.Key", k),
                    ("Attributes.member.1.Value", v)
                ],
            )
            .await,
            "ValidationError",
            "{k}={v}"
        );
    }
    assert_eq!(
        h.err(
            "ModifyTargetGroupAttributes",
            &[
                ("TargetGroupArn", &arn),
                ("Attributes.member.1.Key", "slow_start.duration_seconds"),
                ("Attributes.member.1.Value", "30"),
                ("Attributes.member.2.Key", "load_balancing.algorithm.type"),
                ("Attributes.member.2.Value", "least_outstanding_requests"),
            ],
        )
        .await,
        "InvalidConfigurationRequest"
    );

    let by_name = h
        .ok("DescribeTargetGroups", &[("Names.member.1", "fast")])
        .await;
    assert_eq!(by_name["TargetGroups"][0]["TargetGroupName"], "fast");
    assert_eq!(
        h.err("DescribeTargetGroups", &[("Names.member.1", "missing")])
            .await,
        "TargetGroupNotFound"
    );
    let all = h.ok("DescribeTargetGroups", &[]).await;
    assert_eq!(all["TargetGroups"].as_array().unwrap().len(), 2);
    h.ok("DeleteTargetGroup", &[("TargetGroupArn", &arn)]).await;
    h.ok("DeleteTargetGroup", &[("TargetGroupArn", &arn)]).await;
    assert_eq!(
        h.err(
            "DescribeTargetGroups",
            &[("TargetGroupArns.member.1", &arn)]
        )
        .await,
        "TargetGroupNotFound"
    );
}

// ---------------------------------------------------------------------------
// Listeners and rules.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn listeners_and_rules_keep_target_groups_in_sync() {
    let h = Harness::new();
    let lb = h.create_lb("web").await;
    let blue = h.create_tg("blue", "ip").await;
    let green = h.create_tg("green", "ip").await;
    assert_eq!(h.tg(&blue).await["LoadBalancerArns"], json!([]));

    let listener = h.create_listener(&lb, "8080", &blue).await;
    assert!(listener.contains(":listener/app/web/"));
    assert_eq!(h.tg(&blue).await["LoadBalancerArns"], json!([lb]));
    let by_lb = h
        .ok("DescribeTargetGroups", &[("LoadBalancerArn", &lb)])
        .await;
    assert_eq!(by_lb["TargetGroups"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.err("DeleteTargetGroup", &[("TargetGroupArn", &blue)])
            .await,
        "ResourceInUse"
    );
    let dup = h
        .err(
            "CreateListener",
            &[
                ("LoadBalancerArn", &lb),
                ("Port", "8080"),
                ("DefaultActions.member.1.Type", "fixed-response"),
                (
                    "DefaultActions.member.1.FixedResponseConfig.StatusCode",
                    "404",
                ),
            ],
        )
        .await;
    assert_eq!(dup, "DuplicateListener");
    let listeners = h.ok("DescribeListeners", &[("LoadBalancerArn", &lb)]).await;
    let l = &listeners["Listeners"][0];
    assert_eq!(l["Port"], 8080);
    assert_eq!(l["Protocol"], "HTTP");
    assert_eq!(l["DefaultActions"][0]["Type"], "forward");
    assert_eq!(s(&l["DefaultActions"][0]["TargetGroupArn"]), blue);
    assert_eq!(
        l["DefaultActions"][0]["ForwardConfig"]["TargetGroups"][0]["Weight"],
        1
    );

    // Rules: the legacy Values form, then priority clashes.
    let rule = h
        .ok(
            "CreateRule",
            &[
                ("ListenerArn", &listener),
                ("Priority", "10"),
                ("Conditions.member.1.Field", "path-pattern"),
                ("Conditions.member.1.Values.member.1", "/api/*"),
                ("Actions.member.1.Type", "forward"),
                ("Actions.member.1.TargetGroupArn", &green),
            ],
        )
        .await;
    let r = &rule["Rules"][0];
    let rule_arn = s(&r["RuleArn"]);
    assert_eq!(r["Priority"], "10");
    assert_eq!(r["IsDefault"], false);
    assert_eq!(r["Conditions"][0]["Values"], json!(["/api/*"]));
    assert_eq!(
        r["Conditions"][0]["PathPatternConfig"]["Values"],
        json!(["/api/*"])
    );
    assert_eq!(h.tg(&green).await["LoadBalancerArns"], json!([lb]));
    assert_eq!(
        h.err(
            "CreateRule",
            &[
                ("ListenerArn", &listener),
                ("Priority", "10"),
                ("Conditions.member.1.Field", "host-header"),
                ("Conditions.member.1.Values.member.1", "a.example"),
                ("Actions.member.1.Type", "forward"),
                ("Actions.member.1.TargetGroupArn", &green),
            ],
        )
        .await,
        "PriorityInUse"
    );

    // Every condition in its Config form, and a weighted forward.
    let configs = h
        .ok(
            "CreateRule",
            &[
                ("ListenerArn", &listener),
                ("Priority", "20"),
                ("Conditions.member.1.Field", "host-header"),
                (
                    "Conditions.member.1.HostHeaderConfig.Values.member.1",
                    "*.example.com",
                ),
                ("Conditions.member.2.Field", "http-header"),
                (
                    "Conditions.member.2.HttpHeaderConfig.HttpHeaderName",
                    "X-Canary",
                ),
                (
                    "Conditions.member.2.HttpHeaderConfig.Values.member.1",
                    "yes",
                ),
                ("Conditions.member.3.Field", "query-string"),
                (
                    "Conditions.member.3.QueryStringConfig.Values.member.1.Key",
                    "v",
                ),
                (
                    "Conditions.member.3.QueryStringConfig.Values.member.1.Value",
                    "2",
                ),
                ("Conditions.member.4.Field", "http-request-method"),
                (
                    "Conditions.member.4.HttpRequestMethodConfig.Values.member.1",
                    "GET",
                ),
                ("Conditions.member.5.Field", "source-ip"),
                (
                    "Conditions.member.5.SourceIpConfig.Values.member.1",
                    "10.0.0.0/8",
                ),
                ("Actions.member.1.Type", "forward"),
                (
                    "Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
                    &blue,
                ),
                (
                    "Actions.member.1.ForwardConfig.TargetGroups.member.1.Weight",
                    "90",
                ),
                (
                    "Actions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn",
                    &green,
                ),
                (
                    "Actions.member.1.ForwardConfig.TargetGroups.member.2.Weight",
                    "10",
                ),
                (
                    "Actions.member.1.ForwardConfig.TargetGroupStickinessConfig.Enabled",
                    "true",
                ),
                (
                    "Actions.member.1.ForwardConfig.TargetGroupStickinessConfig.DurationSeconds",
                    "60",
                ),
            ],
        )
        .await;
    let c = &configs["Rules"][0];
    assert_eq!(
        c["Conditions"][1]["HttpHeaderConfig"]["HttpHeaderName"],
        "X-Canary"
    );
    assert_eq!(
        c["Conditions"][2]["QueryStringConfig"]["Values"][0],
        json!({"Key": "v", "Value": "2"})
    );
    assert_eq!(
        c["Conditions"][4]["SourceIpConfig"]["Values"],
        json!(["10.0.0.0/8"])
    );
    let fc = &c["Actions"][0]["ForwardConfig"];
    assert_eq!(fc["TargetGroups"][1]["Weight"], 10);
    assert_eq!(
        fc["TargetGroupStickinessConfig"],
        json!({"Enabled": true, "DurationSeconds": 60})
    );
    let config_rule = s(&c["RuleArn"]);

    // Bad conditions and actions.
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut p: Vec<(&str, String)> =
            vec![("ListenerArn", listener.clone()), ("Priority", "30".into())];
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        p
    };
    let fwd = [
        ("Actions.member.1.Type", "forward"),
        ("Actions.member.1.TargetGroupArn", ""),
    ];
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (base(&[("Conditions.member.1.Field", "source-ip"), ("Conditions.member.1.SourceIpConfig.Values.member.1", "10.0.0.0/99"), ("Actions.member.1.Type", "fixed-response"), ("Actions.member.1.FixedResponseConfig.StatusCode", "200")]), "ValidationError"),
        (base(&[("Conditions.member.1.Field", "cookie"), ("Conditions.member.1.Values.member.1", "x"), ("Actions.member.1.Type", "fixed-response"), ("Actions.member.1.FixedResponseConfig.StatusCode", "200")]), "ValidationError"),
        (base(&[("Conditions.member.1.Field", "path-pattern"), ("Conditions.member.1.Values.member.1", "/a"), ("Conditions.member.1.PathPatternConfig.Values.member.1", "/b"), ("Actions.member.1.Type", "fixed-response"), ("Actions.member.1.FixedResponseConfig.StatusCode", "200")]), "ValidationError"),
        (base(&[("Conditions.member.1.Field", "path-pattern"), ("Conditions.member.1.Values.member.1", "/a"), ("Actions.member.1.Type", "fixed-response"), ("Actions.member.1.FixedResponseConfig.StatusCode", "302")]), "ValidationError"),
        (base(&[("Conditions.member.1.Field", "path-pattern"), ("Conditions.member.1.Values.member.1", "/a"), ("Actions.member.1.Type", "authenticate-oidc")]), "InvalidLoadBalancerAction"),
        (base(&[("Conditions.member.1.Field", "path-pattern"), ("Conditions.member.1.Values.member.1", "/a"), ("Actions.member.1.Type", "redirect"), ("Actions.member.1.RedirectConfig.StatusCode", "HTTP_301")]), "InvalidLoadBalancerAction"),
        (base(&[("Conditions.member.1.Field", "path-pattern"), ("Conditions.member.1.Values.member.1", "/a"), fwd[0], ("Actions.member.1.TargetGroupArn", "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/nope/0000000000000000")]), "TargetGroupNotFound"),
        (base(&[("Conditions.member.1.Field", "path-pattern"), ("Conditions.member.1.Values.member.1", "/a"), ("Actions.member.1.Type", "fixed-response"), ("Actions.member.1.FixedResponseConfig.StatusCode", "200"), ("Actions.member.2.Type", "fixed-response"), ("Actions.member.2.FixedResponseConfig.StatusCode", "404")]), "TooManyActions"),
        (base(&[("Actions.member.1.Type", "fixed-response"), ("Actions.member.1.FixedResponseConfig.StatusCode", "200"), ("Conditions", "")]), "ValidationError"),
    ];
    for (params, expected) in cases {
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(h.err("CreateRule", &p).await, expected, "{params:?}");
    }

    // Redirect and fixed-response rules.
    let redirect = h
        .ok(
            "CreateRule",
            &[
                ("ListenerArn", &listener),
                ("Priority", "5"),
                ("Conditions.member.1.Field", "path-pattern"),
                (
                    "Conditions.member.1.PathPatternConfig.Values.member.1",
                    "/old/*",
                ),
                ("Actions.member.1.Type", "redirect"),
                ("Actions.member.1.RedirectConfig.Path", "/new/#{path}"),
                ("Actions.member.1.RedirectConfig.StatusCode", "HTTP_302"),
            ],
        )
        .await;
    let rc = &redirect["Rules"][0]["Actions"][0]["RedirectConfig"];
    assert_eq!(rc["Path"], "/new/#{path}");
    assert_eq!(rc["Host"], "#{host}");
    assert_eq!(rc["StatusCode"], "HTTP_302");
    let redirect_arn = s(&redirect["Rules"][0]["RuleArn"]);

    // DescribeRules: by priority, the default rule last.
    let rules = h.ok("DescribeRules", &[("ListenerArn", &listener)]).await;
    let rules = rules["Rules"].as_array().unwrap().clone();
    let priorities: Vec<String> = rules.iter().map(|r| s(&r["Priority"])).collect();
    assert_eq!(priorities, ["5", "10", "20", "default"]);
    let default = rules.last().unwrap();
    assert_eq!(default["IsDefault"], true);
    assert_eq!(default["Conditions"], json!([]));
    let default_arn = s(&default["RuleArn"]);
    let by_arn = h
        .ok("DescribeRules", &[("RuleArns.member.1", &default_arn)])
        .await;
    assert_eq!(by_arn["Rules"][0]["IsDefault"], true);
    assert_eq!(
        h.err("DeleteRule", &[("RuleArn", &default_arn)]).await,
        "OperationNotPermitted"
    );

    // ModifyRule, SetRulePriorities, DeleteRule.
    let modified = h
        .ok(
            "ModifyRule",
            &[
                ("RuleArn", &rule_arn),
                ("Conditions.member.1.Field", "path-pattern"),
                ("Conditions.member.1.Values.member.1", "/v2/*"),
            ],
        )
        .await;
    assert_eq!(
        modified["Rules"][0]["Conditions"][0]["Values"],
        json!(["/v2/*"])
    );
    let modified_default = h
        .ok(
            "ModifyRule",
            &[
                ("RuleArn", &default_arn),
                ("Actions.member.1.Type", "fixed-response"),
                ("Actions.member.1.FixedResponseConfig.StatusCode", "503"),
                (
                    "Actions.member.1.FixedResponseConfig.ContentType",
                    "text/plain",
                ),
                ("Actions.member.1.FixedResponseConfig.MessageBody", "down"),
            ],
        )
        .await;
    assert_eq!(
        modified_default["Rules"][0]["Actions"][0]["FixedResponseConfig"]["StatusCode"],
        "503"
    );
    assert_eq!(
        h.err(
            "SetRulePriorities",
            &[
                ("RulePriorities.member.1.RuleArn", &rule_arn),
                ("RulePriorities.member.1.Priority", "20")
            ]
        )
        .await,
        "PriorityInUse"
    );
    let swapped = h
        .ok(
            "SetRulePriorities",
            &[
                ("RulePriorities.member.1.RuleArn", &rule_arn),
                ("RulePriorities.member.1.Priority", "20"),
                ("RulePriorities.member.2.RuleArn", &config_rule),
                ("RulePriorities.member.2.Priority", "10"),
            ],
        )
        .await;
    assert_eq!(swapped["Rules"].as_array().unwrap().len(), 2);
    let rules = h.ok("DescribeRules", &[("ListenerArn", &listener)]).await;
    assert_eq!(s(&rules["Rules"][1]["RuleArn"]), config_rule);
    assert_eq!(
        h.err(
            "SetRulePriorities",
            &[
                ("RulePriorities.member.1.RuleArn", &default_arn),
                ("RulePriorities.member.1.Priority", "7")
            ]
        )
        .await,
        "OperationNotPermitted"
    );
    h.ok("DeleteRule", &[("RuleArn", &redirect_arn)]).await;
    assert_eq!(
        h.err("DeleteRule", &[("RuleArn", &redirect_arn)]).await,
        "RuleNotFound"
    );

    // The default action no longer forwards to blue, but the weighted rule still does.
    assert_eq!(h.tg(&blue).await["LoadBalancerArns"], json!([lb]));
    h.ok("DeleteRule", &[("RuleArn", &config_rule)]).await;
    assert_eq!(h.tg(&blue).await["LoadBalancerArns"], json!([]));
    h.ok("DeleteTargetGroup", &[("TargetGroupArn", &blue)])
        .await;

    // A target group serves one load balancer.
    let other = h.create_lb("other").await;
    assert_eq!(
        h.err(
            "CreateListener",
            &[
                ("LoadBalancerArn", &other),
                ("Port", "9090"),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &green),
            ],
        )
        .await,
        "TargetGroupAssociationLimit"
    );

    // Every listener is served on one address, so another load balancer cannot take
    // a port this one listens on.
    let spare = h.create_tg("spare", "ip").await;
    assert_eq!(
        h.err(
            "CreateListener",
            &[
                ("LoadBalancerArn", &other),
                ("Port", "8080"),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &spare),
            ],
        )
        .await,
        "InvalidConfigurationRequest"
    );

    // ModifyListener moves the port; deleting the load balancer takes listeners and
    // rules with it and frees its target groups.
    let moved = h
        .ok(
            "ModifyListener",
            &[("ListenerArn", &listener), ("Port", "8081")],
        )
        .await;
    assert_eq!(moved["Listeners"][0]["Port"], 8081);
    assert_eq!(
        h.err(
            "ModifyListener",
            &[("ListenerArn", &listener), ("Protocol", "HTTPS")]
        )
        .await,
        "UnsupportedProtocol"
    );
    h.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &lb)])
        .await;
    assert_eq!(
        h.err("DescribeListeners", &[("ListenerArns.member.1", &listener)])
            .await,
        "ListenerNotFound"
    );
    assert_eq!(
        h.err("DescribeRules", &[("RuleArns.member.1", &rule_arn)])
            .await,
        "RuleNotFound"
    );
    assert_eq!(h.tg(&green).await["LoadBalancerArns"], json!([]));
    let (left, _) = h.store.range("elbv2/us-east-1/rule/").await.unwrap();
    assert!(left.is_empty(), "rules left behind: {left:?}");
}

#[tokio::test]
async fn delete_listener_frees_its_target_groups() {
    let h = Harness::new();
    let lb = h.create_lb("web").await;
    let tg = h.create_tg("tg", "ip").await;
    let listener = h.create_listener(&lb, "80", &tg).await;
    h.ok(
        "CreateRule",
        &[
            ("ListenerArn", &listener),
            ("Priority", "1"),
            ("Conditions.member.1.Field", "http-request-method"),
            (
                "Conditions.member.1.HttpRequestMethodConfig.Values.member.1",
                "POST",
            ),
            ("Actions.member.1.Type", "forward"),
            ("Actions.member.1.TargetGroupArn", &tg),
        ],
    )
    .await;
    h.ok("DeleteListener", &[("ListenerArn", &listener)]).await;
    assert_eq!(h.tg(&tg).await["LoadBalancerArns"], json!([]));
    assert_eq!(
        h.err("DeleteListener", &[("ListenerArn", &listener)]).await,
        "ListenerNotFound"
    );
    let (left, _) = h.store.range("elbv2/us-east-1/rule/").await.unwrap();
    assert!(left.is_empty());
}

// ---------------------------------------------------------------------------
// Targets.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ip_targets_register_report_health_and_drain() {
    let h = Harness::new();
    let tg = h.create_tg("ips", "ip").await;
    h.ok(
        "RegisterTargets",
        &[
            ("TargetGroupArn", &tg),
            ("Targets.member.1.Id", "127.0.0.1"),
            ("Targets.member.2.Id", "127.0.0.1"),
            ("Targets.member.2.Port", "9090"),
        ],
    )
    .await;
    let stored = h
        .store
        .get("elbv2/us-east-1/target/ips/127.0.0.1:9090")
        .await
        .unwrap()
        .unwrap();
    let record: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(record["address"], "127.0.0.1:9090");
    assert_eq!(
        h.err(
            "RegisterTargets",
            &[("TargetGroupArn", &tg), ("Targets.member.1.Id", "i-0123")]
        )
        .await,
        "InvalidTarget"
    );
    assert_eq!(
        h.err(
            "RegisterTargets",
            &[
                ("TargetGroupArn", &tg),
                ("Targets.member.1.Id", "10.0.0.1"),
                ("Targets.member.1.Port", "0")
            ]
        )
        .await,
        "ValidationError"
    );

    // No listener uses the group yet.
    let health = h.health(&tg).await;
    assert_eq!(health.len(), 2);
    assert!(
        health
            .iter()
            .all(|(_, state, reason)| state == "unused" && reason == "Target.NotInUse"),
        "{health:?}"
    );

    let lb = h.create_lb("web").await;
    h.create_listener(&lb, "80", &tg).await;
    let health = h.health(&tg).await;
    assert!(
        health
            .iter()
            .all(|(_, state, reason)| state == "initial" && reason == "Elb.RegistrationInProgress"),
        "{health:?}"
    );

    // The data plane records health; the API reports it.
    let health_record =
        json!({"state": "healthy", "reason": null, "description": null, "updatedMs": START_MILLIS});
    h.store
        .txn(Txn::new().put(
            "elbv2/us-east-1/health/ips/127.0.0.1:8080",
            serde_json::to_vec(&health_record).unwrap(),
        ))
        .await
        .unwrap();
    let out = h
        .ok(
            "DescribeTargetHealth",
            &[
                ("TargetGroupArn", &tg),
                ("Targets.member.1.Id", "127.0.0.1"),
                ("Targets.member.1.Port", "8080"),
            ],
        )
        .await;
    let d = &out["TargetHealthDescriptions"][0];
    assert_eq!(d["TargetHealth"]["State"], "healthy");
    assert_eq!(d["HealthCheckPort"], "8080");
    assert_eq!(d["Target"]["Port"], 8080);
    let unknown = h
        .ok(
            "DescribeTargetHealth",
            &[("TargetGroupArn", &tg), ("Targets.member.1.Id", "10.9.9.9")],
        )
        .await;
    assert_eq!(
        unknown["TargetHealthDescriptions"][0]["TargetHealth"]["Reason"],
        "Target.NotRegistered"
    );

    // Deregistering drains for the group's delay, then the sweeper removes the target.
    h.ok(
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", &tg),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            ),
            ("Attributes.member.1.Value", "30"),
        ],
    )
    .await;
    h.ok(
        "DeregisterTargets",
        &[
            ("TargetGroupArn", &tg),
            ("Targets.member.1.Id", "127.0.0.1"),
        ],
    )
    .await;
    let stored = h
        .store
        .get("elbv2/us-east-1/target/ips/127.0.0.1:8080")
        .await
        .unwrap()
        .unwrap();
    let record: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(record["drainUntilMs"], START_MILLIS + 30_000);
    let health: BTreeMap<String, (String, String)> = h
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &tg)])
        .await["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                format!("{}:{}", s(&d["Target"]["Id"]), d["Target"]["Port"]),
                (
                    s(&d["TargetHealth"]["State"]),
                    s(&d["TargetHealth"]["Reason"]),
                ),
            )
        })
        .collect();
    assert_eq!(
        health["127.0.0.1:8080"],
        ("draining".into(), "Target.DeregistrationInProgress".into())
    );
    assert_eq!(health["127.0.0.1:9090"].0, "initial");
    assert_eq!(
        h.err(
            "DeregisterTargets",
            &[("TargetGroupArn", &tg), ("Targets.member.1.Id", "10.1.1.1")]
        )
        .await,
        "InvalidTarget"
    );

    h.clock.advance(29_000);
    assert_eq!(h.elbv2.sweep_drained_targets().await.unwrap(), 0);
    h.clock.advance(1_000);
    assert_eq!(h.elbv2.sweep_drained_targets().await.unwrap(), 1);
    assert!(h
        .store
        .get("elbv2/us-east-1/target/ips/127.0.0.1:8080")
        .await
        .unwrap()
        .is_none());
    assert!(h
        .store
        .get("elbv2/us-east-1/health/ips/127.0.0.1:8080")
        .await
        .unwrap()
        .is_none());
    assert_eq!(h.health(&tg).await.len(), 1);

    // A health record the data plane wrote after its target left is swept too.
    h.store
        .txn(Txn::new().put(
            "elbv2/us-east-1/health/ips/127.0.0.1:8080",
            serde_json::to_vec(&health_record).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(h.elbv2.sweep_drained_targets().await.unwrap(), 0);
    assert!(h
        .store
        .get("elbv2/us-east-1/health/ips/127.0.0.1:8080")
        .await
        .unwrap()
        .is_none());
    assert!(h
        .store
        .get("elbv2/us-east-1/target/ips/127.0.0.1:9090")
        .await
        .unwrap()
        .is_some());

    // With no delay, deregistering removes the target at once.
    h.ok(
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", &tg),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            ),
            ("Attributes.member.1.Value", "0"),
        ],
    )
    .await;
    h.ok(
        "DeregisterTargets",
        &[
            ("TargetGroupArn", &tg),
            ("Targets.member.1.Id", "127.0.0.1"),
            ("Targets.member.1.Port", "9090"),
        ],
    )
    .await;
    assert!(h.health(&tg).await.is_empty());
}

#[tokio::test]
async fn instance_targets_resolve_through_ecs_container_instances() {
    let h = Harness::new();
    let ctx = CallContext {
        request_id: "r".into(),
        region: REGION.into(),
        access_key_id: "test".into(),
        account_id: "000000000000".into(),
    };
    let ecs = |op: &'static str, input: Value| {
        let ctx = ctx.clone();
        let ecs = h.ecs.clone();
        async move {
            match ecs.call(&ctx, op, ServiceInput::Json(input)).await {
                Ok(ServiceOutput::Json(v)) => v,
                other => panic!("{op}: {other:?}"),
            }
        }
    };
    ecs("CreateCluster", json!({})).await;
    let out = ecs(
        "RegisterContainerInstance",
        json!({
            "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 2048},
            ],
            "attributes": [{"name": "wharf.host-address", "value": "192.0.2.7"}],
        }),
    )
    .await;
    let ec2_id = s(&out["containerInstance"]["ec2InstanceId"]);
    let tg = h.create_tg("inst", "instance").await;
    h.ok(
        "RegisterTargets",
        &[
            ("TargetGroupArn", &tg),
            ("Targets.member.1.Id", &ec2_id),
            ("Targets.member.1.Port", "32768"),
        ],
    )
    .await;
    let stored = h
        .store
        .get(&format!("elbv2/us-east-1/target/inst/{ec2_id}:32768"))
        .await
        .unwrap()
        .unwrap();
    let record: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(record["address"], "192.0.2.7:32768");
    assert_eq!(
        h.err(
            "RegisterTargets",
            &[
                ("TargetGroupArn", &tg),
                ("Targets.member.1.Id", "i-00000000000000000")
            ]
        )
        .await,
        "InvalidTarget"
    );
    assert_eq!(
        h.err(
            "RegisterTargets",
            &[
                ("TargetGroupArn", &tg),
                ("Targets.member.1.Id", "127.0.0.1")
            ]
        )
        .await,
        "InvalidTarget"
    );
    // Deleting the group deletes its targets.
    h.ok("DeleteTargetGroup", &[("TargetGroupArn", &tg)]).await;
    let (left, _) = h.store.range("elbv2/us-east-1/target/").await.unwrap();
    assert!(left.is_empty());
    assert_eq!(
        h.err(
            "RegisterTargets",
            &[("TargetGroupArn", &tg), ("Targets.member.1.Id", &ec2_id)]
        )
        .await,
        "TargetGroupNotFound"
    );
}

// ---------------------------------------------------------------------------
// Tags and protocol errors.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tags_on_every_resource() {
    let h = Harness::new();
    let lb = h.create_lb("web").await;
    let tg = h.create_tg("tg", "ip").await;
    let listener = h.create_listener(&lb, "80", &tg).await;
    let rule = h
        .ok(
            "CreateRule",
            &[
                ("ListenerArn", &listener),
                ("Priority", "1"),
                ("Conditions.member.1.Field", "host-header"),
                ("Conditions.member.1.Values.member.1", "a.example"),
                ("Actions.member.1.Type", "forward"),
                ("Actions.member.1.TargetGroupArn", &tg),
            ],
        )
        .await;
    let rule = s(&rule["Rules"][0]["RuleArn"]);
    let arns = [&lb, &tg, &listener, &rule];
    let mut params: Vec<(String, String)> = arns
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("ResourceArns.member.{}", i + 1), a.to_string()))
        .collect();
    params.push(("Tags.member.1.Key".into(), "env".into()));
    params.push(("Tags.member.1.Value".into(), "prod".into()));
    params.push(("Tags.member.2.Key".into(), "owner".into()));
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h.ok("AddTags", &p).await;
    let described = h.ok("DescribeTags", &p[..4]).await;
    let descriptions = described["TagDescriptions"].as_array().unwrap();
    assert_eq!(descriptions.len(), 4);
    for d in descriptions {
        assert_eq!(
            d["Tags"],
            json!([{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": ""}])
        );
    }
    h.ok(
        "RemoveTags",
        &[("ResourceArns.member.1", &tg), ("TagKeys.member.1", "env")],
    )
    .await;
    let after = h
        .ok("DescribeTags", &[("ResourceArns.member.1", &tg)])
        .await;
    assert_eq!(
        after["TagDescriptions"][0]["Tags"],
        json!([{"Key": "owner", "Value": ""}])
    );

    let many: Vec<(String, String)> = (0..51)
        .map(|i| (format!("Tags.member.{}.Key", i + 1), format!("k{i}")))
        .chain([("ResourceArns.member.1".to_string(), lb.clone())])
        .collect();
    let p: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(h.err("AddTags", &p).await, "TooManyTags");
    assert_eq!(
        h.err(
            "CreateLoadBalancer",
            &[
                ("Name", "lb2"),
                ("Tags.member.1.Key", "a"),
                ("Tags.member.2.Key", "a")
            ],
        )
        .await,
        "DuplicateTagKeys"
    );
    // CreateTargetGroup does not declare DuplicateTagKeys.
    assert_eq!(
        h.err(
            "CreateTargetGroup",
            &[
                ("Name", "t2"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("Tags.member.1.Key", "a"),
                ("Tags.member.2.Key", "a")
            ],
        )
        .await,
        "ValidationError"
    );
    assert_eq!(
        h.err(
            "AddTags",
            &[
                ("ResourceArns.member.1", &lb),
                ("Tags.member.1.Key", "aws:x")
            ]
        )
        .await,
        "ValidationError"
    );
    let gone =
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/gone/0000000000000000";
    assert_eq!(
        h.err(
            "AddTags",
            &[("ResourceArns.member.1", gone), ("Tags.member.1.Key", "a")]
        )
        .await,
        "TargetGroupNotFound"
    );
}

#[tokio::test]
async fn protocol_errors_use_the_query_error_shape() {
    let h = Harness::new();
    assert_eq!(h.err("NoSuchAction", &[]).await, "InvalidAction");
    assert_eq!(h.err("CreateLoadBalancer", &[]).await, "ValidationError");
    assert_eq!(
        h.err(
            "CreateListener",
            &[
                (
                    "LoadBalancerArn",
                    "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/x/1"
                ),
                ("Port", "80"),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", "t")
            ]
        )
        .await,
        "LoadBalancerNotFound"
    );
    // Wrong protocol entirely: a JSON call to the query service.
    let ctx = CallContext {
        request_id: "r".into(),
        region: REGION.into(),
        access_key_id: "test".into(),
        account_id: "000000000000".into(),
    };
    let err = h
        .elbv2
        .call(&ctx, "DescribeLoadBalancers", ServiceInput::Json(json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.code, "ValidationError");
}

// ---------------------------------------------------------------------------
// No form input panics the handler or gets a server error.
// ---------------------------------------------------------------------------

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let h = runtime().block_on(async { Harness::new() });
        runtime().block_on(async {
            let lb = h.create_lb("fuzz").await;
            let tg = h.create_tg("fuzz", "ip").await;
            h.create_listener(&lb, "80", &tg).await;
        });
        h
    })
}

const OPERATIONS: &[&str] = &[
    "CreateLoadBalancer",
    "DescribeLoadBalancers",
    "DeleteLoadBalancer",
    "DescribeLoadBalancerAttributes",
    "ModifyLoadBalancerAttributes",
    "CreateTargetGroup",
    "DescribeTargetGroups",
    "ModifyTargetGroup",
    "DeleteTargetGroup",
    "DescribeTargetGroupAttributes",
    "ModifyTargetGroupAttributes",
    "CreateListener",
    "DescribeListeners",
    "ModifyListener",
    "DeleteListener",
    "CreateRule",
    "DescribeRules",
    "ModifyRule",
    "DeleteRule",
    "SetRulePriorities",
    "RegisterTargets",
    "DeregisterTargets",
    "DescribeTargetHealth",
    "AddTags",
    "RemoveTags",
    "DescribeTags",
    "NotAnOperation",
];

const NAMES: &[&str] = &[
    "Name",
    "Port",
    "Protocol",
    "TargetType",
    "Names.member.1",
    "Names.member.0",
    "LoadBalancerArn",
    "TargetGroupArn",
    "ListenerArn",
    "RuleArn",
    "Priority",
    "Marker",
    "PageSize",
    "Targets.member.1.Id",
    "Targets.member.1.Port",
    "Targets.member.2.Id",
    "DefaultActions.member.1.Type",
    "DefaultActions.member.1.TargetGroupArn",
    "Actions.member.1.Type",
    "Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn",
    "Actions.member.1.ForwardConfig.TargetGroups.member.1.Weight",
    "Actions.member.1.FixedResponseConfig.StatusCode",
    "Actions.member.1.RedirectConfig.StatusCode",
    "Actions.member.1.RedirectConfig.Port",
    "Conditions.member.1.Field",
    "Conditions.member.1.Values.member.1",
    "Conditions.member.1.HttpHeaderConfig.HttpHeaderName",
    "Conditions.member.1.QueryStringConfig.Values.member.1.Value",
    "Conditions.member.1.SourceIpConfig.Values.member.1",
    "Attributes.member.1.Key",
    "Attributes.member.1.Value",
    "ResourceArns.member.1",
    "Tags.member.1.Key",
    "TagKeys.member.1",
    "RulePriorities.member.1.RuleArn",
    "RulePriorities.member.1.Priority",
    "Matcher.HttpCode",
    "HealthCheckIntervalSeconds",
    "HealthCheckTimeoutSeconds",
    "Subnets.member.1",
    "Conditions",
];

fn value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/fuzz/0"
                .to_string()
        ),
        Just("arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/fuzz/0".to_string()),
        Just("forward".to_string()),
        Just("fixed-response".to_string()),
        Just("path-pattern".to_string()),
        Just("HTTP".to_string()),
        Just("127.0.0.1".to_string()),
        "-?[0-9]{1,12}",
        "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn no_form_panics_or_gets_a_server_error(
        op in prop::sample::select(OPERATIONS),
        form in prop::collection::vec((prop::sample::select(NAMES), value_strategy()), 0..8),
        junk in prop::collection::vec(("[A-Za-z0-9.]{1,20}", "\\PC{0,10}"), 0..3),
    ) {
        let h = harness();
        let mut pairs = vec![("Action".to_string(), op.to_string()), ("Version".to_string(), "2015-12-01".to_string())];
        pairs.extend(form.into_iter().map(|(k, v)| (k.to_string(), v)));
        pairs.extend(junk);
        let (status, body) = runtime().block_on(h.send(REGION, form_encode(&pairs)));
        prop_assert!(status == 200 || (400..500).contains(&status), "{status}: {body}");
        let root = parse_xml(&body);
        if status == 200 {
            prop_assert_eq!(root.name, format!("{op}Response"));
        } else {
            prop_assert_eq!(root.name, "ErrorResponse");
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrency: compare-and-swap keeps the rules straight.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_share_a_priority_or_lose_a_target_group_link() {
    let h = Arc::new(Harness::new());
    let lb = h.create_lb("busy").await;
    let tgs: Vec<String> = futures_util::future::join_all((0..4).map(|i| {
        let h = h.clone();
        async move { h.create_tg(&format!("tg-{i}"), "ip").await }
    }))
    .await;
    let fixed = [
        ("DefaultActions.member.1.Type", "fixed-response"),
        (
            "DefaultActions.member.1.FixedResponseConfig.StatusCode",
            "404",
        ),
    ];
    let listener = {
        let out = h
            .ok(
                "CreateListener",
                &[
                    &[("LoadBalancerArn", lb.as_str()), ("Port", "80")][..],
                    &fixed[..],
                ]
                .concat(),
            )
            .await;
        s(&out["Listeners"][0]["ListenerArn"])
    };

    // Eight writers race for priority 7: exactly one wins.
    let results = futures_util::future::join_all((0..8).map(|i| {
        let h = h.clone();
        let listener = listener.clone();
        let tg = tgs[i % tgs.len()].clone();
        async move {
            h.call_in(
                REGION,
                "CreateRule",
                &[
                    ("ListenerArn", &listener),
                    ("Priority", "7"),
                    ("Conditions.member.1.Field", "path-pattern"),
                    ("Conditions.member.1.Values.member.1", "/x"),
                    ("Actions.member.1.Type", "forward"),
                    ("Actions.member.1.TargetGroupArn", &tg),
                ],
            )
            .await
        }
    }))
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|f| f.code == "PriorityInUse"));

    // Writers on distinct priorities all succeed, and every group they forward to
    // lists the load balancer.
    let results = futures_util::future::join_all((0..12).map(|i| {
        let h = h.clone();
        let listener = listener.clone();
        let tg = tgs[i % tgs.len()].clone();
        async move {
            let priority = (100 + i).to_string();
            h.call_in(
                REGION,
                "CreateRule",
                &[
                    ("ListenerArn", &listener),
                    ("Priority", &priority),
                    ("Conditions.member.1.Field", "path-pattern"),
                    ("Conditions.member.1.Values.member.1", "/y"),
                    ("Actions.member.1.Type", "forward"),
                    ("Actions.member.1.TargetGroupArn", &tg),
                ],
            )
            .await
        }
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    for tg in &tgs {
        assert_eq!(h.tg(tg).await["LoadBalancerArns"], json!([lb]), "{tg}");
    }

    // Deleting every rule concurrently leaves no group linked.
    let rules = h.ok("DescribeRules", &[("ListenerArn", &listener)]).await;
    let arns: Vec<String> = rules["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["IsDefault"] == false)
        .map(|r| s(&r["RuleArn"]))
        .collect();
    assert_eq!(arns.len(), 13);
    let results = futures_util::future::join_all(arns.iter().map(|arn| {
        let h = h.clone();
        let arn = arn.clone();
        async move { h.call_in(REGION, "DeleteRule", &[("RuleArn", &arn)]).await }
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    for tg in &tgs {
        assert_eq!(h.tg(tg).await["LoadBalancerArns"], json!([]), "{tg}");
    }
}

#[tokio::test]
async fn a_target_group_holds_at_most_a_thousand_targets() {
    let h = Harness::new();
    let tg = h.create_tg("full", "ip").await;
    let mut params: Vec<(String, String)> = vec![("TargetGroupArn".into(), tg.clone())];
    for i in 0..1000 {
        params.push((
            format!("Targets.member.{}.Id", i + 1),
            format!("10.0.{}.{}", i / 250, i % 250 + 1),
        ));
    }
    let p: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h.ok("RegisterTargets", &p).await;
    // Registering the same targets again changes nothing and is not "too many".
    h.ok("RegisterTargets", &p).await;
    assert_eq!(
        h.err(
            "RegisterTargets",
            &[("TargetGroupArn", &tg), ("Targets.member.1.Id", "10.9.9.9")]
        )
        .await,
        "TooManyTargets"
    );
    assert_eq!(h.health(&tg).await.len(), 1000);
}
