use super::*;
use crate::sigv4::{sign_request, Credential, SigningCredentials, SigningScope, StaticCredentials};
use async_trait::async_trait;
use chrono::TimeZone;
use proptest::prelude::*;
use std::sync::Mutex;
use tower::ServiceExt;

const PREFIX: &str = "FakeService_V1";
const XMLNS: &str = "http://fake.amazonaws.com/doc/2020-01-01/";

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(CallContext, String, ServiceInput)>>,
}

#[async_trait]
impl AwsService for Fake {
    fn signing_name(&self) -> &'static str {
        "fake"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Json11 {
            target_prefix: PREFIX,
        }
    }
    async fn call(
        &self,
        ctx: &CallContext,
        operation: &str,
        input: ServiceInput,
    ) -> Result<ServiceOutput, AwsError> {
        self.calls
            .lock()
            .unwrap()
            .push((ctx.clone(), operation.to_string(), input.clone()));
        match (operation, input) {
            ("Echo", ServiceInput::Json(v)) => Ok(ServiceOutput::Json(v)),
            ("Fail", _) => Err(AwsError::client(
                "ClusterNotFoundException",
                "Cluster not found.",
            )),
            ("Boom", _) => Err(AwsError::server("ServerException", "boom")),
            _ => Err(AwsError::client("UnknownOperationException", "")),
        }
    }
}

struct FakeQuery;

#[async_trait]
impl AwsService for FakeQuery {
    fn signing_name(&self) -> &'static str {
        "fakeq"
    }
    fn protocol(&self) -> Protocol {
        Protocol::Query {
            xmlns: XMLNS,
            version: "2020-01-01",
        }
    }
    async fn call(
        &self,
        _ctx: &CallContext,
        operation: &str,
        input: ServiceInput,
    ) -> Result<ServiceOutput, AwsError> {
        let ServiceInput::Query(pairs) = input else {
            return Err(AwsError::server("InternalFailure", "not a query"));
        };
        match operation {
            "Describe" => {
                let mut w = crate::query::XmlWriter::new();
                for (k, v) in &pairs {
                    w.element(k, v);
                }
                Ok(ServiceOutput::QueryResultXml(w.finish()))
            }
            _ => Err(AwsError::client(
                "TargetGroupNotFound",
                "One or more target groups not found",
            )),
        }
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
}

fn store() -> Arc<StaticCredentials> {
    Arc::new(StaticCredentials::new().with(
        "test",
        Credential {
            secret_access_key: "test".into(),
            account_id: "000000000000".into(),
            session_token: None,
        },
    ))
}

fn router_with(fake: Arc<Fake>, max: usize) -> Router {
    AwsFront::new(store(), Arc::new(now))
        .service(fake)
        .service(Arc::new(FakeQuery))
        .max_body_bytes(max)
        .router()
}

fn router() -> (Router, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    (router_with(fake.clone(), 1024), fake)
}

/// Builds a request signed by the crate's own signer.
fn signed(
    service: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request<Body> {
    let mut map = HeaderMap::new();
    map.insert("host", HeaderValue::from_static("localhost:4566"));
    for (k, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let creds = SigningCredentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    let h = sign_request(
        &creds,
        SigningScope {
            region: "eu-west-1",
            service,
        },
        method,
        uri,
        &map,
        body,
        now(),
    )
    .unwrap();
    h.apply(&mut map).unwrap();
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_vec()))
        .unwrap();
    *req.headers_mut() = map;
    req
}

fn json_request(op: &str, body: &[u8]) -> Request<Body> {
    signed(
        "fake",
        "POST",
        "/",
        &[
            ("x-amz-target", &format!("{PREFIX}.{op}")),
            ("content-type", JSON_11_CONTENT_TYPE),
        ],
        body,
    )
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let answer = Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    // Every response carries a UUID request id.
    let id = answer.headers["x-amzn-requestid"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    answer
}

fn json_error(a: &Answer) -> (String, String) {
    assert_eq!(a.headers["content-type"], JSON_11_CONTENT_TYPE);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let code = v["__type"].as_str().unwrap().to_string();
    assert_eq!(a.headers["x-amzn-errortype"], code.as_str());
    (code, v["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn json_call_reaches_the_service_with_context() {
    let (router, fake) = router();
    let a = send(&router, json_request("Echo", br#"{"cluster":"default"}"#)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], JSON_11_CONTENT_TYPE);
    assert_eq!(a.body, r#"{"cluster":"default"}"#);
    let calls = fake.calls.lock().unwrap();
    let (ctx, op, _) = &calls[0];
    assert_eq!(op, "Echo");
    assert_eq!(ctx.region, "eu-west-1");
    assert_eq!(ctx.account_id, "000000000000");
    assert_eq!(ctx.access_key_id, "test");
    assert_eq!(
        ctx.request_id,
        a.headers["x-amzn-requestid"].to_str().unwrap()
    );
}

#[tokio::test]
async fn empty_json_body_is_an_empty_object() {
    let (router, _) = router();
    let a = send(&router, json_request("Echo", b"")).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "{}"));
}

#[tokio::test]
async fn json_errors_have_aws_shape() {
    let (router, _) = router();
    let a = send(&router, json_request("Fail", b"{}")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_error(&a),
        (
            "ClusterNotFoundException".into(),
            "Cluster not found.".into()
        )
    );
    let a = send(&router, json_request("Boom", b"{}")).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json_error(&a).0, "ServerException");
}

#[tokio::test]
async fn malformed_and_non_object_json_are_serialization_errors() {
    let (router, fake) = router();
    for body in [&b"{"[..], b"[1,2]", b"\"x\"", b"null", b"\xff\xfe"] {
        let a = send(&router, json_request("Echo", body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(json_error(&a).0, "SerializationException");
    }
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_targets_are_unknown_operation() {
    let (router, _) = router();
    for target in [
        "Nope_V1.Echo",
        "FakeService_V1.",
        "FakeService_V1",
        "garbage",
    ] {
        let req = signed("fake", "POST", "/", &[("x-amz-target", target)], b"{}");
        let a = send(&router, req).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{target}");
        assert_eq!(json_error(&a).0, "UnknownOperationException");
    }
}

#[tokio::test]
async fn json_request_scoped_to_another_service_is_refused() {
    let (router, _) = router();
    let req = signed(
        "ecs",
        "POST",
        "/",
        &[("x-amz-target", &format!("{PREFIX}.Echo"))],
        b"{}",
    );
    let a = send(&router, req).await;
    assert_eq!(
        json_error(&a),
        (
            "InvalidSignatureException".into(),
            "Credential should be scoped to correct service: 'fake'. ".into()
        )
    );
}

#[tokio::test]
async fn auth_failures_use_the_protocol_shape() {
    let (router, _) = router();
    // No auth at all, JSON.
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "localhost")
        .header("x-amz-target", format!("{PREFIX}.Echo"))
        .body(Body::from("{}"))
        .unwrap();
    let a = send(&router, req).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        json_error(&a),
        (
            "MissingAuthenticationTokenException".into(),
            "Missing Authentication Token".into()
        )
    );
    // Tampered body, JSON.
    let mut req = json_request("Echo", b"{}");
    *req.body_mut() = Body::from("{\"a\":1}");
    let a = send(&router, req).await;
    // The signer declares the body's hash, so the swap is caught there.
    assert_eq!(json_error(&a).0, "XAmzContentSHA256Mismatch");
    // Tampered signed header, JSON.
    let mut req = json_request("Echo", b"{}");
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let a = send(&router, req).await;
    assert_eq!(json_error(&a).0, "InvalidSignatureException");
    // No auth, query shape.
    let req = Request::builder()
        .method("GET")
        .uri("/?Action=Describe")
        .header("host", "localhost")
        .body(Body::empty())
        .unwrap();
    let a = send(&router, req).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.headers["content-type"], "text/xml");
    assert!(
        a.body
            .contains("<Code>MissingAuthenticationTokenException</Code>"),
        "{}",
        a.body
    );
    assert!(a.body.contains("<Type>Sender</Type>"));
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let (router, fake) = router();
    let big = vec![b' '; 2048];
    let a = send(&router, json_request("Echo", &big)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_error(&a).0, "RequestEntityTooLarge");
    // Without a content-length the limit still holds, in the query shape here.
    let stream = Body::from(vec![b'a'; 1400]);
    let req = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "localhost")
        .body(stream)
        .unwrap();
    let a = send(&router, req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.body.contains("<Code>RequestEntityTooLarge</Code>"));
    assert!(fake.calls.lock().unwrap().is_empty());
}

fn form_request(body: &str) -> Request<Body> {
    signed(
        "fakeq",
        "POST",
        "/",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body.as_bytes(),
    )
}

#[tokio::test]
async fn query_call_wraps_result_and_strips_action() {
    let (router, _) = router();
    let a = send(
        &router,
        form_request("Action=Describe&Version=2020-01-01&Name=a%26b"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "text/xml");
    let id = a.headers["x-amzn-requestid"].to_str().unwrap();
    assert_eq!(
        a.body,
        format!("<DescribeResponse xmlns=\"{XMLNS}\"><DescribeResult><Name>a&amp;b</Name></DescribeResult><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></DescribeResponse>")
    );
    // GET with the parameters in the URL works too.
    let req = signed(
        "fakeq",
        "GET",
        "/?Action=Describe&Version=2020-01-01&X=1",
        &[],
        b"",
    );
    let a = send(&router, req).await;
    assert!(
        a.body.contains("<DescribeResult><X>1</X></DescribeResult>"),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn query_errors_have_aws_shape() {
    let (router, _) = router();
    let a = send(&router, form_request("Action=Other")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let id = a.headers["x-amzn-requestid"].to_str().unwrap();
    assert_eq!(
        a.body,
        format!("<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>Sender</Type><Code>TargetGroupNotFound</Code><Message>One or more target groups not found</Message></Error><RequestId>{id}</RequestId></ErrorResponse>")
    );
    let a = send(&router, form_request("Version=2020-01-01")).await;
    assert!(a.body.contains("<Code>MissingAction</Code>"));
    let a = send(&router, form_request("Action=%3Cx%3E")).await;
    assert!(a.body.contains("<Code>InvalidAction</Code>"));
    // Signed for a service nobody serves.
    let req = signed(
        "nosuch",
        "POST",
        "/",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"Action=Describe",
    );
    let a = send(&router, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("<Code>UnknownOperationException</Code>"));
}

#[tokio::test]
async fn presigned_query_request_is_accepted() {
    let (router, _) = router();
    let creds = SigningCredentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    let q = sigv4::presign_query(
        &creds,
        SigningScope {
            region: "us-east-1",
            service: "fakeq",
        },
        sigv4::PresignTarget {
            method: "GET",
            path: "/",
            query: "Action=Describe&Version=2020-01-01&Y=2",
            host: "localhost:4566",
        },
        300,
        now(),
    )
    .unwrap();
    let req = Request::builder()
        .method("GET")
        .uri(format!("/?{q}"))
        .header("host", "localhost:4566")
        .body(Body::empty())
        .unwrap();
    let a = send(&router, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body.contains("<DescribeResult><Y>2</Y></DescribeResult>"),
        "{}",
        a.body
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bodies and headers never crash the front or make it answer 5xx.
    #[test]
    fn random_requests_never_500(
        body in prop::collection::vec(any::<u8>(), 0..1500),
        target in prop::option::of("[A-Za-z0-9_.]{0,30}"),
        content_type in prop::option::of("[ -~]{0,40}"),
        auth in prop::option::of("[ -~]{0,120}"),
        path in "/[A-Za-z0-9%?=&._-]{0,30}",
        sign in any::<bool>(),
        op in prop::sample::select(vec!["Echo", "Fail", "Nope", ""]),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let fake = Arc::new(Fake::default());
            let router = router_with(fake, 1024);
            let req = if sign {
                let t = format!("{PREFIX}.{op}");
                let mut headers: Vec<(&str, &str)> = vec![("x-amz-target", &t)];
                if let Some(ct) = &content_type {
                    if HeaderValue::from_str(ct).is_ok() { headers.push(("content-type", ct)); }
                }
                signed("fake", "POST", "/", &headers, &body)
            } else {
                let mut b = Request::builder().method("POST").uri(path.as_str()).header("host", "localhost");
                for (name, value) in [("x-amz-target", &target), ("content-type", &content_type), ("authorization", &auth)] {
                    if let Some(v) = value {
                        if HeaderValue::from_str(v).is_ok() { b = b.header(name, v.as_str()); }
                    }
                }
                match b.body(Body::from(body.clone())) {
                    Ok(r) => r,
                    Err(_) => return,
                }
            };
            let res = router.oneshot(req).await.unwrap();
            assert!(!res.status().is_server_error(), "{}", res.status());
            assert!(res.headers().contains_key("x-amzn-requestid"));
        });
    }
}
