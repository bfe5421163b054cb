//! The control plane's end of a remote load balancer (`wharf lb --control-plane`): the
//! load balancer records' feed and the health write-back, on the API listener.
//!
//! - `GET` [`FEED_PATH`] streams newline-delimited JSON: a snapshot of every key under
//!   `elbv2/` with the revision it was read at, then each change from the store's watch
//!   after that revision, and a heartbeat line whenever nothing was sent for the
//!   heartbeat interval, so the reader can tell a quiet feed from a dead connection.
//!   When the watch ends (the reader fell behind the change log, or the store closes)
//!   or the server shuts down, the stream ends and the reader resyncs.
//! - `POST` [`HEALTH_PATH`] takes a [`HealthReport`]: every key must be a target health
//!   key and every record a valid [`TargetHealthRecord`], in at most
//!   [`MAX_HEALTH_BODY`] bytes, or nothing is written and the caller gets a
//!   `ValidationError`. A record is written only while its target is registered, so a
//!   late report cannot resurrect the health of a deregistered target.
//!
//! Both are authenticated with SigV4 scoped to `elasticloadbalancing`, and refusals use
//! the AWS JSON error shape, as the logs endpoint does. The wire types live in
//! `wharf_lb::remote`, shared with the data plane's side.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use wharf_aws::sigv4::CredentialStore;
use wharf_aws::AwsError;
use wharf_lb::records::TargetHealthRecord;
use wharf_lb::remote::{
    FeedDelete, FeedLine, FeedPut, FeedSnapshot, HealthKey, HealthReport, HealthReportOutcome,
    FEED_PATH, FEED_PREFIX, HEALTH_PATH, HEALTH_STATES, HEARTBEAT_INTERVAL, MAX_HEALTH_BODY,
    SIGNING_SERVICE,
};
use wharf_store::{Compare, Op, Revision, Store, Txn, WatchEvent, WatchReceiver};

use crate::endpoints::{self, refuse};

/// How the endpoints behave.
#[derive(Debug, Clone)]
pub struct LbFeedSettings {
    /// How long a feed may be quiet before a heartbeat line is sent.
    pub heartbeat: Duration,
    /// Turns true when the server shuts down: open feeds end, so that a graceful
    /// shutdown does not wait for readers that never finish.
    pub shutdown: Option<watch::Receiver<bool>>,
}

impl Default for LbFeedSettings {
    fn default() -> Self {
        LbFeedSettings {
            heartbeat: HEARTBEAT_INTERVAL,
            shutdown: None,
        }
    }
}

#[derive(Clone)]
struct FeedState {
    store: Arc<dyn Store>,
    credentials: Arc<dyn CredentialStore>,
    settings: LbFeedSettings,
}

/// The router serving the feed and the health write-back.
pub fn lb_feed_router(
    store: Arc<dyn Store>,
    credentials: Arc<dyn CredentialStore>,
    settings: LbFeedSettings,
) -> Router {
    Router::new()
        .route(FEED_PATH, get(feed).fallback(wrong_method))
        .route(HEALTH_PATH, post(health).fallback(wrong_method))
        .with_state(FeedState {
            store,
            credentials,
            settings,
        })
}

/// Any other method on the two paths.
async fn wrong_method(method: Method, uri: Uri) -> Response {
    refuse(&AwsError::client_with_status(
        "MethodNotAllowed",
        format!("{method} is not allowed on {}.", uri.path()),
        405,
    ))
}

fn validation(message: impl Into<String>) -> AwsError {
    AwsError::client("ValidationError", message)
}

fn store_failure(error: wharf_store::StoreError) -> AwsError {
    tracing::error!(%error, "load balancer feed: store failed");
    AwsError::server("InternalFailure", "The state store failed; retry.")
}

/// Verifies a signed request scoped to `elasticloadbalancing`.
fn authenticate(
    state: &FeedState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AwsError> {
    endpoints::authenticate(
        state.credentials.as_ref(),
        SIGNING_SERVICE,
        method.as_str(),
        uri,
        headers,
        body,
    )
    .map(drop)
}

async fn feed(State(state): State<FeedState>, uri: Uri, headers: HeaderMap) -> Response {
    match open_feed(state, &uri, &headers).await {
        Ok(response) => response,
        Err(error) => refuse(&error),
    }
}

/// A stored value as the JSON it is; a value that is not JSON is not a record.
fn json_value(key: &str, bytes: &[u8]) -> Option<serde_json::Value> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%key, %error, "load balancer feed: skipping a value that is not JSON");
            None
        }
    }
}

/// The feed's line for one change.
fn change_line(event: WatchEvent) -> Option<FeedLine> {
    match event {
        WatchEvent::Put(kv) => Some(FeedLine::Put(FeedPut {
            value: json_value(&kv.key, &kv.value)?,
            key: kv.key,
            revision: kv.mod_revision,
        })),
        WatchEvent::Delete { key, revision } => {
            Some(FeedLine::Delete(FeedDelete { key, revision }))
        }
    }
}

/// What a feed stream carries between two chunks.
struct FeedStream {
    first: Option<Vec<u8>>,
    events: WatchReceiver,
    heartbeat: Duration,
    last_revision: Revision,
    shutdown: Option<watch::Receiver<bool>>,
}

/// Changes gathered into one chunk at most.
const MAX_CHANGES_PER_CHUNK: usize = 256;

impl FeedStream {
    /// The next chunk of lines; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let shutdown = async {
            match self.shutdown.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            event = tokio::time::timeout(self.heartbeat, self.events.recv()) => event,
            _ = shutdown => return None,
        };
        let event = match event {
            Err(_) => return Some(FeedLine::Heartbeat(self.last_revision).to_line()),
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(error))) => {
                tracing::info!(%error, "load balancer feed: the watch failed; ending the feed");
                return None;
            }
            Ok(None) => return None,
        };
        let mut chunk = Vec::new();
        let mut next = Some(event);
        let mut count = 0;
        while let Some(event) = next.take() {
            self.last_revision = self.last_revision.max(event.revision());
            if let Some(line) = change_line(event) {
                chunk.extend_from_slice(&line.to_line());
            }
            count += 1;
            if count < MAX_CHANGES_PER_CHUNK {
                if let Ok(Ok(event)) = self.events.try_recv() {
                    next = Some(event);
                }
            }
        }
        if chunk.is_empty() {
            // Only values that are not JSON changed: say the feed is alive.
            chunk = FeedLine::Heartbeat(self.last_revision).to_line();
        }
        Some(chunk)
    }
}

async fn open_feed(state: FeedState, uri: &Uri, headers: &HeaderMap) -> Result<Response, AwsError> {
    authenticate(&state, &Method::GET, uri, headers, b"")?;
    let (kvs, revision) = state
        .store
        .range(FEED_PREFIX)
        .await
        .map_err(store_failure)?;
    let events = state
        .store
        .watch(FEED_PREFIX, revision + 1)
        .await
        .map_err(store_failure)?;
    let entries = kvs
        .into_iter()
        .filter_map(|kv| Some((kv.key.clone(), json_value(&kv.key, &kv.value)?)))
        .collect();
    let snapshot = FeedLine::Snapshot(FeedSnapshot { revision, entries });
    let stream = FeedStream {
        first: Some(snapshot.to_line()),
        events,
        heartbeat: state.settings.heartbeat,
        last_revision: revision,
        shutdown: state.settings.shutdown.clone(),
    };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
            stream,
        ))
    });
    Ok((
        StatusCode::OK,
        [
            ("content-type", "application/x-ndjson"),
            ("cache-control", "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

async fn health(
    State(state): State<FeedState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match write_health(&state, &uri, &headers, body).await {
        Ok(outcome) => (
            StatusCode::OK,
            [
                ("content-type", "application/json".to_owned()),
                ("x-amzn-requestid", uuid::Uuid::new_v4().to_string()),
            ],
            serde_json::to_string(&outcome).unwrap_or_default(),
        )
            .into_response(),
        Err(error) => refuse(&error),
    }
}

fn too_large() -> AwsError {
    AwsError::client_with_status(
        "ValidationError",
        format!("A health report is at most {MAX_HEALTH_BODY} bytes."),
        413,
    )
}

/// Checks a report whole: every key a health key, every record a known state.
fn validate_report(body: &[u8]) -> Result<Vec<(HealthKey, TargetHealthRecord)>, AwsError> {
    let report: HealthReport = serde_json::from_slice(body)
        .map_err(|e| validation(format!("The health report is not valid: {e}")))?;
    report
        .health
        .into_iter()
        .map(|(key, record)| {
            let parsed = HealthKey::parse(&key).ok_or_else(|| {
                validation(format!(
                    "{key:?} is not a target health key (elbv2/<region>/health/<target-group>/<id>:<port>)."
                ))
            })?;
            if !HEALTH_STATES.contains(&record.state.as_str()) {
                return Err(validation(format!(
                    "{:?} is not a target health state (one of {}).",
                    record.state,
                    HEALTH_STATES.join(", ")
                )));
            }
            Ok((parsed, record))
        })
        .collect()
}

async fn write_health(
    state: &FeedState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<HealthReportOutcome, AwsError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_HEALTH_BODY as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_HEALTH_BODY)
        .await
        .map_err(|_| too_large())?;
    authenticate(state, &Method::POST, uri, headers, &bytes)?;
    let records = validate_report(&bytes)?;
    let mut outcome = HealthReportOutcome::default();
    for (key, record) in records {
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let txn = Txn {
            compares: vec![Compare::Exists {
                key: key.target_key(),
            }],
            ops: vec![Op::Put {
                key: key.key(),
                value,
            }],
        };
        if state.store.txn(txn).await.map_err(store_failure)?.succeeded {
            outcome.written += 1;
        } else {
            outcome.skipped += 1;
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    //! The endpoints through the router in process (`oneshot`), and the whole path on
    //! a real loopback listener with `wharf_lb::remote::follow` as the reader.

    use std::time::Duration;

    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use wharf_aws::sigv4::StaticCredentials;
    use wharf_aws::sigv4::{sign_http_request, Credential, SigningCredentials, SigningScope};
    use wharf_lb::records::{health_key, target_key};
    use wharf_lb::remote::{follow, RemoteConfig};
    use wharf_store::sqlite::SqliteStore;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn credentials() -> Arc<dyn CredentialStore> {
        Arc::new(StaticCredentials::new().with(
            "test",
            Credential {
                secret_access_key: "testsecret".into(),
                account_id: "000000000000".into(),
                session_token: None,
            },
        ))
    }

    fn signing() -> SigningCredentials {
        SigningCredentials {
            access_key_id: "test".into(),
            secret_access_key: "testsecret".into(),
            session_token: None,
        }
    }

    fn setup(settings: LbFeedSettings) -> (Arc<dyn Store>, Router) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let router = lb_feed_router(store.clone(), credentials(), settings);
        (store, router)
    }

    fn request(
        method: Method,
        path: &str,
        body: Vec<u8>,
        service: Option<&str>,
    ) -> http::Request<Body> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://wharf.test{path}"))
            .header("host", "wharf.test")
            .body(Body::empty())
            .unwrap();
        if let Some(service) = service {
            sign_http_request(
                &mut request,
                &body,
                &signing(),
                SigningScope {
                    region: "us-east-1",
                    service,
                },
                chrono::Utc::now(),
            )
            .unwrap();
        }
        request.map(|_| Body::from(body))
    }

    async fn error_of(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, value["__type"].as_str().unwrap().to_owned())
    }

    fn record(state: &str) -> TargetHealthRecord {
        TargetHealthRecord {
            state: state.into(),
            reason: None,
            description: None,
            updated_ms: 1,
        }
    }

    async fn put(store: &dyn Store, key: &str, value: serde_json::Value) -> Revision {
        store
            .txn(Txn::new().put(key, serde_json::to_vec(&value).unwrap()))
            .await
            .unwrap()
            .revision
    }

    async fn health_keys(store: &dyn Store) -> Vec<String> {
        let (kvs, _) = store.range("elbv2/us-east-1/health/").await.unwrap();
        kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn unsigned_or_misscoped_requests_are_refused_with_403() {
        let (store, router) = setup(LbFeedSettings::default());
        let target = target_key("us-east-1", "web", "10.0.0.1", 80);
        put(store.as_ref(), &target, serde_json::json!({})).await;
        let report = serde_json::to_vec(&HealthReport {
            health: [(
                health_key("us-east-1", "web", "10.0.0.1", 80),
                record("healthy"),
            )]
            .into(),
        })
        .unwrap();
        for (method, path, body, service) in [
            (Method::GET, FEED_PATH, vec![], None),
            (Method::POST, HEALTH_PATH, report.clone(), None),
            (Method::GET, FEED_PATH, vec![], Some("ecs")),
            (Method::POST, HEALTH_PATH, report.clone(), Some("ecs")),
        ] {
            let response = router
                .clone()
                .oneshot(request(method.clone(), path, body, service))
                .await
                .unwrap();
            assert!(response.headers().contains_key("x-amzn-requestid"));
            let (status, code) = error_of(response).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} {service:?}");
            assert!(!code.is_empty());
        }
        for (method, path) in [(Method::POST, FEED_PATH), (Method::GET, HEALTH_PATH)] {
            let response = router
                .clone()
                .oneshot(request(method, path, vec![], Some(SIGNING_SERVICE)))
                .await
                .unwrap();
            let (status, code) = error_of(response).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
            );
        }
        assert!(health_keys(store.as_ref()).await.is_empty());
    }

    #[tokio::test]
    async fn bad_health_reports_are_refused_and_nothing_is_written() {
        let (store, router) = setup(LbFeedSettings::default());
        let target = target_key("us-east-1", "web", "10.0.0.1", 80);
        put(store.as_ref(), &target, serde_json::json!({})).await;
        let good = health_key("us-east-1", "web", "10.0.0.1", 80);
        let report = |entries: Vec<(String, serde_json::Value)>| {
            let health: serde_json::Map<String, serde_json::Value> = entries.into_iter().collect();
            serde_json::to_vec(&serde_json::json!({ "health": health })).unwrap()
        };
        let valid = serde_json::to_value(record("healthy")).unwrap();
        let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
            ("not json", b"{not json".to_vec(), StatusCode::BAD_REQUEST),
            ("wrong shape", b"[1,2]".to_vec(), StatusCode::BAD_REQUEST),
            (
                "unknown member",
                br#"{"health":{},"x":1}"#.to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "a target key",
                report(vec![
                    (good.clone(), valid.clone()),
                    (target.clone(), valid.clone()),
                ]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "a listener key",
                report(vec![("elbv2/us-east-1/listener/a/b".into(), valid.clone())]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "an ecs key",
                report(vec![("ecs/us-east-1/cluster/x".into(), valid.clone())]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "a padded port",
                report(vec![(
                    "elbv2/us-east-1/health/web/10.0.0.1:080".into(),
                    valid.clone(),
                )]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "a path in the key",
                report(vec![(
                    "elbv2/us-east-1/health/web/../x:80".into(),
                    valid.clone(),
                )]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "a record that is not a health record",
                report(vec![(good.clone(), serde_json::json!({"state": 5}))]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "an unknown state",
                report(vec![(
                    good.clone(),
                    serde_json::to_value(record("great")).unwrap(),
                )]),
                StatusCode::BAD_REQUEST,
            ),
            (
                "too large",
                vec![b' '; MAX_HEALTH_BODY + 1],
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        for (what, body, expected) in cases {
            let response = router
                .clone()
                .oneshot(request(
                    Method::POST,
                    HEALTH_PATH,
                    body,
                    Some(SIGNING_SERVICE),
                ))
                .await
                .unwrap();
            let (status, code) = error_of(response).await;
            assert_eq!(status, expected, "{what}");
            assert_eq!(code, "ValidationError", "{what}");
        }
        assert!(health_keys(store.as_ref()).await.is_empty());
    }

    #[tokio::test]
    async fn health_is_written_only_for_registered_targets() {
        let (store, router) = setup(LbFeedSettings::default());
        put(
            store.as_ref(),
            &target_key("us-east-1", "web", "10.0.0.1", 80),
            serde_json::json!({}),
        )
        .await;
        let registered = health_key("us-east-1", "web", "10.0.0.1", 80);
        let gone = health_key("us-east-1", "web", "10.0.0.2", 80);
        let body = serde_json::to_vec(&HealthReport {
            health: [
                (registered.clone(), record("healthy")),
                (gone, record("unhealthy")),
            ]
            .into(),
        })
        .unwrap();
        let response = router
            .oneshot(request(
                Method::POST,
                HEALTH_PATH,
                body,
                Some(SIGNING_SERVICE),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let outcome: HealthReportOutcome = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            outcome,
            HealthReportOutcome {
                written: 1,
                skipped: 1
            }
        );
        assert_eq!(health_keys(store.as_ref()).await, vec![registered.clone()]);
        let stored = store.get(&registered).await.unwrap().unwrap();
        let stored: TargetHealthRecord = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!(stored.state, "healthy");
    }

    /// Reads feed lines from a response body.
    struct Lines {
        body: Body,
        buffer: Vec<u8>,
    }

    impl Lines {
        async fn next(&mut self) -> Option<FeedLine> {
            loop {
                if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buffer.drain(..=end).collect();
                    return Some(serde_json::from_slice(&line).unwrap());
                }
                let frame = tokio::time::timeout(DEADLINE, self.body.frame())
                    .await
                    .unwrap()?;
                if let Ok(data) = frame.unwrap().into_data() {
                    self.buffer.extend_from_slice(&data);
                }
            }
        }
    }

    #[tokio::test]
    async fn the_feed_sends_a_snapshot_then_changes_and_heartbeats_and_ends_on_shutdown() {
        let (stop, shutdown) = watch::channel(false);
        let (store, router) = setup(LbFeedSettings {
            heartbeat: Duration::from_millis(100),
            shutdown: Some(shutdown),
        });
        let lb = "elbv2/us-east-1/lb/front";
        let first = put(store.as_ref(), lb, serde_json::json!({"name": "front"})).await;
        put(
            store.as_ref(),
            "ecs/us-east-1/cluster/x",
            serde_json::json!({}),
        )
        .await;
        let response = router
            .oneshot(request(
                Method::GET,
                FEED_PATH,
                vec![],
                Some(SIGNING_SERVICE),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut lines = Lines {
            body: response.into_body(),
            buffer: Vec::new(),
        };
        let Some(FeedLine::Snapshot(snapshot)) = lines.next().await else {
            panic!("the first line is not a snapshot");
        };
        assert_eq!(snapshot.revision, first + 1);
        assert_eq!(
            snapshot.entries.into_iter().collect::<Vec<_>>(),
            vec![(lb.to_owned(), serde_json::json!({"name": "front"}))]
        );
        let tg = "elbv2/us-east-1/tg/web";
        let written = put(store.as_ref(), tg, serde_json::json!({"name": "web"})).await;
        put(
            store.as_ref(),
            "ecs/us-east-1/cluster/y",
            serde_json::json!({}),
        )
        .await;
        let deleted = store.txn(Txn::new().delete(lb)).await.unwrap().revision;
        assert_eq!(
            lines.next().await,
            Some(FeedLine::Put(FeedPut {
                key: tg.into(),
                value: serde_json::json!({"name": "web"}),
                revision: written
            }))
        );
        assert_eq!(
            lines.next().await,
            Some(FeedLine::Delete(FeedDelete {
                key: lb.into(),
                revision: deleted
            }))
        );
        assert_eq!(lines.next().await, Some(FeedLine::Heartbeat(deleted)));
        stop.send(true).unwrap();
        // Heartbeats already sent may come first; then the stream ends.
        while let Some(line) = lines.next().await {
            assert!(matches!(line, FeedLine::Heartbeat(_)), "{line:?}");
        }
    }

    #[tokio::test]
    async fn the_feed_ends_when_its_reader_falls_behind_the_watch() {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in_memory()
                .unwrap()
                .with_watch_capacity(2),
        );
        let router = lb_feed_router(store.clone(), credentials(), LbFeedSettings::default());
        let response = router
            .oneshot(request(
                Method::GET,
                FEED_PATH,
                vec![],
                Some(SIGNING_SERVICE),
            ))
            .await
            .unwrap();
        let mut lines = Lines {
            body: response.into_body(),
            buffer: Vec::new(),
        };
        assert!(matches!(lines.next().await, Some(FeedLine::Snapshot(_))));
        // Ten writes while nobody reads: the store drops the watcher after two.
        for i in 0..10 {
            put(
                store.as_ref(),
                &format!("elbv2/us-east-1/tg/g{i}"),
                serde_json::json!({}),
            )
            .await;
        }
        let mut puts = 0;
        while let Some(line) = lines.next().await {
            assert!(matches!(line, FeedLine::Put(_)), "{line:?}");
            puts += 1;
        }
        assert!(
            puts < 10,
            "the stream should end instead of skipping changes"
        );
    }

    /// The router on a real listener, and the data plane's follower reading it.
    #[tokio::test]
    async fn a_follower_mirrors_the_records_and_reports_health_without_echo() {
        let (control, router) = setup(LbFeedSettings {
            heartbeat: Duration::from_millis(200),
            shutdown: None,
        });
        let target = target_key("us-east-1", "web", "10.0.0.1", 80);
        let health = health_key("us-east-1", "web", "10.0.0.1", 80);
        put(
            control.as_ref(),
            &target,
            serde_json::json!({"id": "10.0.0.1"}),
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });

        let local: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        // A stale record from an earlier session goes with the first snapshot.
        put(
            local.as_ref(),
            "elbv2/us-east-1/lb/stale",
            serde_json::json!({}),
        )
        .await;
        let mut config = RemoteConfig::new(&endpoint, "us-east-1", signing());
        config.health_batch_delay = Duration::from_millis(20);
        let follower = follow(config, local.clone());
        tokio::time::timeout(DEADLINE, follower.wait_for(|s| s.syncs == 1))
            .await
            .unwrap();
        assert!(local
            .get("elbv2/us-east-1/lb/stale")
            .await
            .unwrap()
            .is_none());
        assert!(local.get(&target).await.unwrap().is_some());

        // The local plane observes health: it reaches the control plane once.
        let observed = serde_json::to_value(record("healthy")).unwrap();
        put(local.as_ref(), &health, observed.clone()).await;
        tokio::time::timeout(DEADLINE, follower.wait_for(|s| s.health_records_sent == 1))
            .await
            .unwrap();
        let stored = control.get(&health).await.unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&stored.value).unwrap(),
            observed
        );
        // The feed brings it back; it is not sent again.
        let revision = control.revision().await.unwrap();
        tokio::time::timeout(DEADLINE, follower.wait_for(|s| s.revision >= revision))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(follower.status().health_records_sent, 1);
        assert_eq!(control.revision().await.unwrap(), revision);

        // A change on the control plane arrives; so does a deregistration.
        let listener_key = "elbv2/us-east-1/listener/front/l1";
        put(
            control.as_ref(),
            listener_key,
            serde_json::json!({"port": 8080}),
        )
        .await;
        let gone = control
            .txn(Txn::new().delete(&target).delete(&health))
            .await
            .unwrap()
            .revision;
        tokio::time::timeout(DEADLINE, follower.wait_for(|s| s.revision >= gone))
            .await
            .unwrap();
        assert!(local.get(listener_key).await.unwrap().is_some());
        assert!(local.get(&target).await.unwrap().is_none());
        assert!(local.get(&health).await.unwrap().is_none());
        follower.shutdown().await;
    }
}
