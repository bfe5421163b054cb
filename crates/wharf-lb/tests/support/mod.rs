//! Shared pieces of the data plane's tests: records written into a real SQLite store,
//! real upstream HTTP servers on 127.0.0.1, and an HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use wharf_lb::records::{self, *};
use wharf_lb::{Plane, PlaneConfig};
use wharf_store::sqlite::{Durability, SqliteStore};
use wharf_store::{Store, Txn};

pub const REGION: &str = "us-east-1";
pub const LB: &str = "web";
pub const LB_ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/50dc6c495c0c9188";

pub fn listener_arn(id: &str) -> String {
    format!("arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/web/50dc6c495c0c9188/{id}")
}
pub fn tg_arn(name: &str) -> String {
    format!(
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{name}/73e2d6bc24d8a067"
    )
}

/// A store in a temporary directory with the plane running on it.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub plane: Plane,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(config: PlaneConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("state.db"), Durability::Relaxed).unwrap());
        let plane = Plane::start(store.clone(), config).await.unwrap();
        Self {
            store,
            plane,
            _dir: dir,
        }
    }

    /// Writes records and waits until the plane has applied them.
    pub async fn put(&self, records: Vec<(String, serde_json::Value)>) {
        let mut txn = Txn::new();
        for (key, value) in records {
            txn = txn.put(key, serde_json::to_vec(&value).unwrap());
        }
        let outcome = self.store.txn(txn).await.unwrap();
        assert!(outcome.succeeded);
        self.wait(outcome.revision).await;
    }

    pub async fn delete(&self, key: &str) {
        let outcome = self.store.txn(Txn::new().delete(key)).await.unwrap();
        self.wait(outcome.revision).await;
    }

    async fn wait(&self, revision: i64) {
        tokio::time::timeout(Duration::from_secs(10), self.plane.wait_applied(revision))
            .await
            .expect("the plane applied the change");
    }

    pub async fn health(&self, tg: &str, address: SocketAddr) -> Option<TargetHealthRecord> {
        let key = records::health_key(REGION, tg, &address.ip().to_string(), address.port());
        self.store
            .get(&key)
            .await
            .unwrap()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
    }

    /// Polls the health record until `pred` holds (deadline 20 s).
    pub async fn wait_health(
        &self,
        tg: &str,
        address: SocketAddr,
        pred: impl Fn(&TargetHealthRecord) -> bool,
    ) -> TargetHealthRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(record) = self.health(tg, address).await {
                if pred(&record) {
                    return record;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health of {address} in {tg} never satisfied the condition: {:?}",
                self.health(tg, address).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn load_balancer(attributes: &[(&str, &str)]) -> (String, serde_json::Value) {
    let record = LoadBalancerRecord {
        arn: LB_ARN.into(),
        name: LB.into(),
        scheme: "internet-facing".into(),
        lb_type: "application".into(),
        dns_name: "web-1.us-east-1.elb.localhost".into(),
        state: "active".into(),
        created_ms: 0,
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tags: BTreeMap::new(),
    };
    (
        records::load_balancer_key(REGION, LB),
        serde_json::to_value(record).unwrap(),
    )
}

pub fn listener(id: &str, port: u16, default_actions: Vec<Action>) -> (String, serde_json::Value) {
    let record = ListenerRecord {
        arn: listener_arn(id),
        load_balancer_arn: LB_ARN.into(),
        port,
        protocol: "HTTP".into(),
        default_actions,
        tags: BTreeMap::new(),
    };
    (
        records::listener_key(REGION, LB, id),
        serde_json::to_value(record).unwrap(),
    )
}

pub fn rule(
    listener_id: &str,
    id: &str,
    priority: u32,
    conditions: Vec<Condition>,
    action: Action,
) -> (String, serde_json::Value) {
    let record = RuleRecord {
        arn: format!("{}/{id}", listener_arn(listener_id)).replace(":listener/", ":listener-rule/"),
        listener_arn: listener_arn(listener_id),
        priority,
        conditions,
        actions: vec![action],
        tags: BTreeMap::new(),
    };
    (
        records::rule_key(REGION, LB, listener_id, id),
        serde_json::to_value(record).unwrap(),
    )
}

pub fn path(pattern: &str) -> Condition {
    Condition::PathPattern {
        values: vec![pattern.into()],
    }
}

pub fn forward(groups: &[(&str, u32)]) -> Action {
    Action::Forward {
        order: Some(1),
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

pub fn fixed(status: u16, body: &str) -> Action {
    Action::FixedResponse {
        order: Some(1),
        status_code: status,
        content_type: Some("text/plain".into()),
        message_body: Some(body.into()),
    }
}

/// Health checks every second on `/health`, two checks to change state.
pub fn fast_checks() -> HealthCheck {
    HealthCheck {
        enabled: true,
        protocol: "HTTP".into(),
        port: "traffic-port".into(),
        path: "/health".into(),
        interval_seconds: 1,
        timeout_seconds: 1,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        matcher: "200-299".into(),
    }
}

pub fn no_checks() -> HealthCheck {
    HealthCheck {
        enabled: false,
        ..fast_checks()
    }
}

pub fn target_group(
    name: &str,
    check: HealthCheck,
    protocol_version: &str,
    attributes: &[(&str, &str)],
) -> (String, serde_json::Value) {
    let record = TargetGroupRecord {
        arn: tg_arn(name),
        name: name.into(),
        protocol: "HTTP".into(),
        protocol_version: protocol_version.into(),
        port: 80,
        target_type: "ip".into(),
        vpc_id: None,
        health_check: check,
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        load_balancer_arns: vec![LB_ARN.into()],
        tags: BTreeMap::new(),
    };
    (
        records::target_group_key(REGION, name),
        serde_json::to_value(record).unwrap(),
    )
}

pub fn target(
    tg: &str,
    address: SocketAddr,
    drain_until_ms: Option<i64>,
) -> (String, serde_json::Value) {
    let ip = address.ip().to_string();
    let record = TargetRecord {
        id: ip.clone(),
        port: address.port(),
        address: address.to_string(),
        availability_zone: None,
        registered_ms: 0,
        drain_until_ms,
    };
    (
        records::target_key(REGION, tg, &ip, address.port()),
        serde_json::to_value(record).unwrap(),
    )
}

/// A real HTTP server (HTTP/1.1 and h2c) on 127.0.0.1. It answers `/health` with the
/// status in `health_status`, `/slow` after `slow`, and everything else with JSON
/// naming itself and echoing the forwarding headers.
pub struct Upstream {
    pub name: String,
    pub address: SocketAddr,
    pub health_status: Arc<AtomicU16>,
    pub requests: Arc<AtomicUsize>,
    pub slow: Duration,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, Duration::from_secs(3)).await
    }

    pub async fn start_with(name: &str, slow: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let health_status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(AtomicUsize::new(0));
        let name_owned = name.to_owned();
        let (status, count) = (health_status.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (name, status, count) = (name_owned.clone(), status.clone(), count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (name, status, count) = (name.clone(), status.clone(), count.clone());
                        async move {
                            Ok::<_, Infallible>(answer(&name, &status, &count, slow, request).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            address,
            health_status,
            requests,
            slow,
        }
    }
}

async fn answer(
    name: &str,
    health_status: &AtomicU16,
    requests: &AtomicUsize,
    slow: Duration,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/health" {
        let status = StatusCode::from_u16(health_status.load(Ordering::SeqCst)).unwrap();
        let mut response = Response::new(Full::new(Bytes::from_static(b"health")));
        *response.status_mut() = status;
        return response;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    if request.uri().path() == "/slow" {
        tokio::time::sleep(slow).await;
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = json!({
        "server": name,
        "path": request.uri().path(),
        "query": request.uri().query(),
        "version": format!("{:?}", request.version()),
        "host": header("host"),
        "xff": header("x-forwarded-for"),
        "proto": header("x-forwarded-proto"),
        "port": header("x-forwarded-port"),
        "connection": header("connection"),
    });
    let method = request.method().clone();
    let received = request.into_body().collect().await.unwrap().to_bytes();
    let mut body = body;
    body["method"] = json!(method.as_str());
    body["body_len"] = json!(received.len());
    Response::new(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// One request; returns the status, the headers and the body.
pub async fn send(
    client: &TestClient,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, http::HeaderMap, Bytes)> {
    let response = client.request(request).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

pub async fn get(client: &TestClient, port: u16, path: &str) -> (StatusCode, Bytes) {
    let request = Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(client, request).await.unwrap();
    (status, body)
}

pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

pub fn empty() -> Empty<Bytes> {
    Empty::new()
}
