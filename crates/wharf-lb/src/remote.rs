//! Following a remote control plane: the data plane of `wharf lb --control-plane URL`
//! on another machine mirrors the control plane's load balancer records into a local
//! store, and reports the health it observes back.
//!
//! The wire contract lives here, shared with the control plane's end
//! (`wharf-control`'s `lb_feed`):
//! - `GET` [`FEED_PATH`], SigV4-signed for [`SIGNING_SERVICE`], answers newline-delimited
//!   JSON [`FeedLine`]s: first a snapshot of every key under `elbv2/` with the store
//!   revision it was read at, then every later change, and a heartbeat every few
//!   seconds when nothing changes. The stream ends when the control plane cannot go on
//!   (its change log was compacted past the reader, or it shuts down); the reader then
//!   reconnects and reads a new snapshot.
//! - `POST` [`HEALTH_PATH`], signed likewise, takes a [`HealthReport`]: target health
//!   records by their key ([`HealthKey`] says which keys are health keys).
//!
//! [`follow`] runs both halves against a local store: it applies the snapshot (every
//! entry put, every local `elbv2/` key the snapshot lacks deleted, in one transaction,
//! so the plane never sees half a configuration), then each change; it reconnects with
//! capped exponential back-off, and while disconnected the local store keeps the last
//! configuration it received, so the plane keeps serving. A second task watches the
//! local store for the health records the plane's checkers write and posts them in
//! batches, retrying on failure. A record equal to what the feed last delivered for its
//! key came from the control plane and is not sent back, so nothing ping-pongs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wharf_aws::sigv4::{sign_http_request, SigningCredentials, SigningScope};
use wharf_store::{Revision, Store, StoreError, Txn, WatchEvent};

use crate::records::{health_key, TargetHealthRecord};

/// The feed's path on the control plane's API listener.
pub const FEED_PATH: &str = "/_wharf/lb/feed";
/// The health write-back's path on the control plane's API listener.
pub const HEALTH_PATH: &str = "/_wharf/lb/health";
/// The SigV4 service both endpoints must be signed for.
pub const SIGNING_SERVICE: &str = "elasticloadbalancing";
/// The store prefix the feed carries.
pub const FEED_PREFIX: &str = "elbv2/";
/// How often the feed sends a heartbeat when nothing changes.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The largest health report the control plane accepts, in bytes.
pub const MAX_HEALTH_BODY: usize = 1 << 20;
/// The states a [`TargetHealthRecord`] may carry.
pub const HEALTH_STATES: &[&str] = &[
    "initial",
    "healthy",
    "unhealthy",
    "unused",
    "draining",
    "unavailable",
];

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedLine {
    /// Every record under [`FEED_PREFIX`] at one revision; always the first line.
    Snapshot(FeedSnapshot),
    /// A key was created or changed.
    Put(FeedPut),
    /// A key was deleted.
    Delete(FeedDelete),
    /// Nothing changed; the number is the last revision the feed sent.
    Heartbeat(Revision),
}

impl FeedLine {
    /// The line as sent: compact JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Every record at one revision; values are the stored JSON documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedSnapshot {
    /// The control plane's store revision the snapshot was read at.
    pub revision: Revision,
    /// Records by key.
    pub entries: BTreeMap<String, Value>,
}

/// A key written at `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedPut {
    /// The key.
    pub key: String,
    /// The record, as stored.
    pub value: Value,
    /// The control plane's revision of the write.
    pub revision: Revision,
}

/// A key deleted at `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedDelete {
    /// The key.
    pub key: String,
    /// The control plane's revision of the delete.
    pub revision: Revision,
}

/// The body of a health write-back: records by their health key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// Health records by key (`elbv2/<region>/health/<tg-name>/<id>:<port>`).
    pub health: BTreeMap<String, TargetHealthRecord>,
}

/// The control plane's answer to a health write-back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthReportOutcome {
    /// Records written.
    pub written: usize,
    /// Records not written because their target is no longer registered.
    pub skipped: usize,
}

/// A target health key, parsed: `elbv2/<region>/health/<tg-name>/<id>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthKey {
    /// The region.
    pub region: String,
    /// The target group's name.
    pub target_group: String,
    /// The target's id (an instance id or an IP address).
    pub id: String,
    /// The target's port.
    pub port: u16,
}

impl HealthKey {
    /// Parses a key; `None` unless it is exactly a health key as
    /// [`crate::records::health_key`] writes it.
    pub fn parse(key: &str) -> Option<HealthKey> {
        let rest = key.strip_prefix(FEED_PREFIX)?;
        let mut parts = rest.splitn(4, '/');
        let region = parts.next()?;
        let kind = parts.next()?;
        let target_group = parts.next()?;
        let slot = parts.next()?;
        let (id, port) = slot.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let plain = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.len() <= 256
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c))
        };
        let parsed = HealthKey {
            region: region.to_owned(),
            target_group: target_group.to_owned(),
            id: id.to_owned(),
            port,
        };
        // The round trip refuses non-canonical spellings (`:080`, `+80`).
        (kind == "health"
            && plain(region, &[])
            && plain(target_group, &[])
            && plain(id, &['.', ':', '_'])
            && parsed.key() == key)
            .then_some(parsed)
    }

    /// The key again.
    pub fn key(&self) -> String {
        health_key(&self.region, &self.target_group, &self.id, self.port)
    }

    /// The key of the registered target this health belongs to.
    pub fn target_key(&self) -> String {
        crate::records::target_key(&self.region, &self.target_group, &self.id, self.port)
    }
}

/// Where the control plane is and how to reach it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The control plane's API endpoint, `http://host:port`.
    pub endpoint: String,
    /// The region requests are signed for.
    pub region: String,
    /// The key requests are signed with.
    pub credentials: SigningCredentials,
    /// A feed silent for this long (no change, no heartbeat) is taken for dead.
    pub idle_timeout: Duration,
    /// The first reconnection delay; it doubles after each failure.
    pub backoff_min: Duration,
    /// The longest reconnection (and health retry) delay.
    pub backoff_max: Duration,
    /// How long health changes are gathered before they are posted together.
    pub health_batch_delay: Duration,
}

impl RemoteConfig {
    /// The default timings for an endpoint and a key.
    pub fn new(endpoint: &str, region: &str, credentials: SigningCredentials) -> Self {
        RemoteConfig {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: region.to_owned(),
            credentials,
            idle_timeout: HEARTBEAT_INTERVAL * 3,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            health_batch_delay: Duration::from_millis(200),
        }
    }
}

/// Why a session with the control plane ended.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The request could not be built or signed.
    #[error("building the request: {0}")]
    Request(String),
    /// The control plane could not be reached, or the connection broke.
    #[error("connection to the control plane failed: {0}")]
    Connection(String),
    /// The control plane answered with an error.
    #[error("the control plane refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// `Code: message` from the error body.
        message: String,
    },
    /// Nothing came for longer than the idle timeout.
    #[error("the feed was silent for {0:?}")]
    Idle(Duration),
    /// A line was not a feed line, or came out of order.
    #[error("undecodable feed: {0}")]
    Decode(String),
    /// The local store failed.
    #[error("local store: {0}")]
    Store(#[from] StoreError),
}

/// What the follower has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowStatus {
    /// Whether a feed is open and its snapshot applied.
    pub connected: bool,
    /// The control plane's revision the local store reflects.
    pub revision: Revision,
    /// Snapshots applied (one per successful connection).
    pub syncs: u64,
    /// Health reports the control plane accepted.
    pub health_reports: u64,
    /// Health records those reports carried.
    pub health_records_sent: u64,
}

/// A running follower. Dropping it does not stop it; call [`Follower::shutdown`].
#[derive(Debug)]
pub struct Follower {
    status: watch::Receiver<FollowStatus>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Follower {
    /// The status now.
    pub fn status(&self) -> FollowStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `done`.
    pub async fn wait_for(&self, mut done: impl FnMut(&FollowStatus) -> bool) -> FollowStatus {
        let mut status = self.status.clone();
        let result = status.wait_for(|s| done(s)).await;
        match result {
            Ok(s) => s.clone(),
            Err(_) => self.status(),
        }
    }

    /// Stops following; the local store keeps what it has.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the feed last delivered for each key, shared by the mirror (which writes it)
/// and the health reporter (which sends only what differs from it).
#[derive(Debug, Default)]
struct Delivered(Mutex<HashMap<String, Value>>);

impl Delivered {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn is_echo(&self, key: &str, value: &Value) -> bool {
        self.lock().get(key) == Some(value)
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Starts following the control plane at `config.endpoint` into `local`.
pub fn follow(config: RemoteConfig, local: Arc<dyn Store>) -> Follower {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let (status_tx, status) = watch::channel(FollowStatus::default());
    let (stop, stop_rx) = watch::channel(false);
    let status_tx = Arc::new(status_tx);
    let config = Arc::new(config);
    let delivered = Arc::new(Delivered::default());
    let mirror = Mirror {
        local: local.clone(),
        delivered: delivered.clone(),
    };
    let feed = tokio::spawn(run_feed(
        config.clone(),
        client.clone(),
        mirror,
        status_tx.clone(),
        stop_rx.clone(),
    ));
    let reporter = tokio::spawn(run_health_reporter(
        config, client, local, delivered, status_tx, stop_rx,
    ));
    Follower {
        status,
        stop,
        tasks: vec![feed, reporter],
    }
}

/// Applies the feed to the local store.
struct Mirror {
    local: Arc<dyn Store>,
    delivered: Arc<Delivered>,
}

/// The local value of a key as JSON, for comparing with what the feed sends.
fn as_json(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

impl Mirror {
    /// Makes the local `elbv2/` keys exactly the snapshot's, in one transaction.
    async fn apply_snapshot(&self, snapshot: FeedSnapshot) -> Result<(), StoreError> {
        let entries: BTreeMap<String, Value> = snapshot
            .entries
            .into_iter()
            .filter(|(key, _)| key.starts_with(FEED_PREFIX))
            .collect();
        let (kvs, _) = self.local.range(FEED_PREFIX).await?;
        let local: HashMap<&str, Option<Value>> = kvs
            .iter()
            .map(|kv| (kv.key.as_str(), as_json(&kv.value)))
            .collect();
        let mut txn = Txn::new();
        for kv in &kvs {
            if !entries.contains_key(&kv.key) {
                txn = txn.delete(&kv.key);
            }
        }
        for (key, value) in &entries {
            if local.get(key.as_str()) != Some(&Some(value.clone())) {
                txn = txn.put(key, serde_json::to_vec(value).unwrap_or_default());
            }
        }
        // Recorded before the write, so that the reporter, which sees the write after it
        // commits, recognises it as the feed's.
        *self.delivered.lock() = entries.into_iter().collect();
        if !txn.ops.is_empty() {
            self.local.txn(txn).await?;
        }
        Ok(())
    }

    /// Applies changes in one transaction; a put equal to the local value is skipped.
    async fn apply_changes(&self, changes: Vec<FeedLine>) -> Result<(), StoreError> {
        let mut txn = Txn::new();
        for change in changes {
            match change {
                FeedLine::Put(put) if put.key.starts_with(FEED_PREFIX) => {
                    let same = self
                        .local
                        .get(&put.key)
                        .await?
                        .is_some_and(|kv| as_json(&kv.value).as_ref() == Some(&put.value));
                    let bytes = serde_json::to_vec(&put.value).unwrap_or_default();
                    self.delivered.lock().insert(put.key.clone(), put.value);
                    if !same {
                        txn = txn.put(put.key, bytes);
                    }
                }
                FeedLine::Delete(delete) if delete.key.starts_with(FEED_PREFIX) => {
                    self.delivered.lock().remove(&delete.key);
                    txn = txn.delete(delete.key);
                }
                _ => {}
            }
        }
        if !txn.ops.is_empty() {
            self.local.txn(txn).await?;
        }
        Ok(())
    }
}

/// `Code: message` from an AWS JSON error body, or the body as it is.
fn refusal_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match (field("__type"), field("message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// Sends a signed request and returns the response once its headers arrived.
async fn send_signed(
    config: &RemoteConfig,
    client: &HttpClient,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<http::Response<hyper::body::Incoming>, RemoteError> {
    let url = format!("{}{path}", config.endpoint);
    let mut request = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| RemoteError::Request(format!("{url}: {e}")))?;
    sign_http_request(
        &mut request,
        &body,
        &config.credentials,
        SigningScope {
            region: &config.region,
            service: SIGNING_SERVICE,
        },
        chrono::Utc::now(),
    )
    .map_err(|e| RemoteError::Request(e.to_string()))?;
    let request = request.map(|_| Full::new(Bytes::from(body)));
    let response = tokio::time::timeout(config.idle_timeout, client.request(request))
        .await
        .map_err(|_| RemoteError::Idle(config.idle_timeout))?
        .map_err(|e| RemoteError::Connection(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = tokio::time::timeout(config.idle_timeout, response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(RemoteError::Refused {
        status: status.as_u16(),
        message: refusal_message(&body),
    })
}

async fn run_feed(
    config: Arc<RemoteConfig>,
    client: HttpClient,
    mirror: Mirror,
    status: Arc<watch::Sender<FollowStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = config.backoff_min;
    loop {
        let mut synced = false;
        let ended = tokio::select! {
            ended = feed_session(&config, &client, &mirror, &status, &mut synced) => ended,
            _ = stopped(&mut stop) => break,
        };
        status.send_modify(|s| s.connected = false);
        match ended {
            Ok(()) => tracing::info!("the control plane ended the feed; reconnecting"),
            Err(error) => {
                tracing::warn!(%error, "following the control plane failed; keeping the last configuration")
            }
        }
        if synced {
            backoff = config.backoff_min;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => break,
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    status.send_modify(|s| s.connected = false);
}

/// One connection: reads the snapshot and then changes until the stream ends.
async fn feed_session(
    config: &RemoteConfig,
    client: &HttpClient,
    mirror: &Mirror,
    status: &watch::Sender<FollowStatus>,
    synced: &mut bool,
) -> Result<(), RemoteError> {
    let response = send_signed(config, client, http::Method::GET, FEED_PATH, Vec::new()).await?;
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::time::timeout(config.idle_timeout, body.frame())
            .await
            .map_err(|_| RemoteError::Idle(config.idle_timeout))?;
        let data = match frame {
            None => return Ok(()),
            Some(Err(e)) => return Err(RemoteError::Connection(e.to_string())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        buffer.extend_from_slice(&data);
        let Some(end) = buffer.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let complete: Vec<u8> = buffer.drain(..=end).collect();
        let mut changes = Vec::new();
        let mut last = None;
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line: FeedLine =
                serde_json::from_slice(line).map_err(|e| RemoteError::Decode(e.to_string()))?;
            match line {
                FeedLine::Snapshot(snapshot) => {
                    let revision = snapshot.revision;
                    mirror.apply_snapshot(snapshot).await?;
                    *synced = true;
                    status.send_modify(|s| {
                        s.connected = true;
                        s.revision = revision;
                        s.syncs += 1;
                    });
                    tracing::info!(
                        revision,
                        "load balancer configuration synced from the control plane"
                    );
                }
                _ if !*synced => {
                    return Err(RemoteError::Decode(
                        "the feed did not start with a snapshot".to_owned(),
                    ))
                }
                FeedLine::Heartbeat(_) => {}
                change @ (FeedLine::Put(_) | FeedLine::Delete(_)) => {
                    last = Some(match &change {
                        FeedLine::Put(p) => p.revision,
                        FeedLine::Delete(d) => d.revision,
                        _ => 0,
                    });
                    changes.push(change);
                }
            }
        }
        if !changes.is_empty() {
            mirror.apply_changes(changes).await?;
        }
        if let Some(revision) = last {
            status.send_modify(|s| s.revision = s.revision.max(revision));
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Health records waiting to be sent, by key (the latest value of each).
type Pending = BTreeMap<String, Vec<u8>>;

fn is_health_key(key: &str) -> bool {
    HealthKey::parse(key).is_some()
}

async fn run_health_reporter(
    config: Arc<RemoteConfig>,
    client: HttpClient,
    local: Arc<dyn Store>,
    delivered: Arc<Delivered>,
    status: Arc<watch::Sender<FollowStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending = Pending::new();
    let mut flush_at: Option<tokio::time::Instant> = None;
    let mut backoff = config.backoff_min;
    'watching: loop {
        // Start from a read of the health records, so that nothing written while no
        // watch was open is missed.
        let from = match local.range(FEED_PREFIX).await {
            Ok((kvs, revision)) => {
                for kv in kvs.into_iter().filter(|kv| is_health_key(&kv.key)) {
                    note_health(&delivered, &mut pending, kv.key, kv.value);
                }
                revision + 1
            }
            Err(error) => {
                tracing::warn!(%error, "reading local health records failed");
                tokio::select! {
                    _ = tokio::time::sleep(config.backoff_max) => continue 'watching,
                    _ = stopped(&mut stop) => break 'watching,
                }
            }
        };
        if !pending.is_empty() && flush_at.is_none() {
            flush_at = Some(tokio::time::Instant::now() + config.health_batch_delay);
        }
        let mut events = match local.watch(FEED_PREFIX, from).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "watching local health records failed");
                tokio::select! {
                    _ = tokio::time::sleep(config.backoff_max) => continue 'watching,
                    _ = stopped(&mut stop) => break 'watching,
                }
            }
        };
        loop {
            let flush = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(WatchEvent::Put(kv))) if is_health_key(&kv.key) => {
                        note_health(&delivered, &mut pending, kv.key, kv.value);
                        if !pending.is_empty() && flush_at.is_none() {
                            flush_at = Some(tokio::time::Instant::now() + config.health_batch_delay);
                        }
                    }
                    Some(Ok(WatchEvent::Delete { key, .. })) => {
                        // The control plane deleted it (the target left or re-registered):
                        // an older observation must not bring it back.
                        pending.remove(&key);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => continue 'watching,
                },
                _ = flush => {
                    match post_health(&config, &client, &pending).await {
                        Ok(sent) => {
                            pending.clear();
                            backoff = config.backoff_min;
                            flush_at = None;
                            status.send_modify(|s| {
                                s.health_reports += 1;
                                s.health_records_sent += sent as u64;
                            });
                        }
                        Err(RemoteError::Refused { status: code, message }) if code < 500 && code != 403 && code != 429 => {
                            // The control plane will not take this batch however often it
                            // is sent; the next change sends fresh records.
                            tracing::warn!(code, %message, "the control plane refused health records; dropping them");
                            pending.clear();
                            flush_at = None;
                        }
                        Err(error) => {
                            tracing::warn!(%error, retry_in = ?backoff, "reporting target health failed; retrying");
                            flush_at = Some(tokio::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(config.backoff_max);
                        }
                    }
                }
                _ = stopped(&mut stop) => break 'watching,
            }
        }
    }
}

/// Queues a local health record unless it is what the feed delivered.
fn note_health(delivered: &Delivered, pending: &mut Pending, key: String, value: Vec<u8>) {
    match as_json(&value) {
        Some(json) if delivered.is_echo(&key, &json) => {}
        _ => {
            pending.insert(key, value);
        }
    }
}

/// Posts the pending records; returns how many were sent.
async fn post_health(
    config: &RemoteConfig,
    client: &HttpClient,
    pending: &Pending,
) -> Result<usize, RemoteError> {
    let mut report = HealthReport::default();
    for (key, value) in pending {
        match serde_json::from_slice::<TargetHealthRecord>(value) {
            Ok(record) => {
                report.health.insert(key.clone(), record);
            }
            Err(error) => tracing::warn!(%key, %error, "skipping an unreadable health record"),
        }
    }
    if report.health.is_empty() {
        return Ok(0);
    }
    let body = serde_json::to_vec(&report).map_err(|e| RemoteError::Request(e.to_string()))?;
    let response = send_signed(config, client, http::Method::POST, HEALTH_PATH, body).await?;
    // The answer is small; reading it lets the connection go back to the pool.
    let _ = tokio::time::timeout(config.idle_timeout, response.into_body().collect()).await;
    Ok(report.health.len())
}

#[cfg(test)]
mod tests {
    //! The follower against a fake control plane on a real loopback listener: the test
    //! writes the feed's lines itself and reads the health reports the follower posts.

    use std::convert::Infallible;

    use http_body_util::combinators::BoxBody;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::sync::mpsc;
    use wharf_store::sqlite::SqliteStore;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    type FeedSender = http_body_util::channel::Sender<Bytes>;

    /// A fake control plane: each feed connection hands the test its body's sender;
    /// each health report is handed over parsed.
    struct FakeControl {
        endpoint: String,
        feeds: mpsc::UnboundedReceiver<FeedSender>,
        reports: mpsc::UnboundedReceiver<HealthReport>,
    }

    fn boxed(body: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
        Full::new(body.into()).boxed()
    }

    async fn fake_control() -> FakeControl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (feeds_tx, feeds) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let feeds_tx = feeds_tx.clone();
                let reports_tx = reports_tx.clone();
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let feeds_tx = feeds_tx.clone();
                    let reports_tx = reports_tx.clone();
                    async move {
                        let signed = request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| {
                                v.starts_with("AWS4-HMAC-SHA256 Credential=test/")
                                    && v.contains("/us-east-1/elasticloadbalancing/aws4_request")
                            });
                        let response = if !signed {
                            http::Response::builder()
                                .status(403)
                                .body(boxed(r#"{"__type":"MissingAuthenticationToken"}"#))
                        } else if request.uri().path() == FEED_PATH {
                            let (sender, body) = http_body_util::channel::Channel::new(16);
                            feeds_tx.send(sender).unwrap();
                            http::Response::builder().body(body.boxed())
                        } else {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let report: HealthReport = serde_json::from_slice(&body).unwrap();
                            let written = report.health.len();
                            reports_tx.send(report).unwrap();
                            http::Response::builder()
                                .body(boxed(format!(r#"{{"written":{written},"skipped":0}}"#)))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service),
                );
            }
        });
        FakeControl {
            endpoint,
            feeds,
            reports,
        }
    }

    fn config(endpoint: &str) -> RemoteConfig {
        let mut config = RemoteConfig::new(
            endpoint,
            "us-east-1",
            SigningCredentials {
                access_key_id: "test".into(),
                secret_access_key: "testsecret".into(),
                session_token: None,
            },
        );
        config.backoff_min = Duration::from_millis(10);
        config.backoff_max = Duration::from_millis(100);
        config.health_batch_delay = Duration::from_millis(10);
        config
    }

    async fn send(feed: &mut FeedSender, line: FeedLine) {
        feed.send_data(Bytes::from(line.to_line())).await.unwrap();
    }

    fn health(state: &str) -> Value {
        json!({"state": state, "reason": null, "description": null, "updatedMs": 1})
    }

    async fn local_json(store: &dyn Store, key: &str) -> Option<Value> {
        let kv = store.get(key).await.unwrap()?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, future)
            .await
            .unwrap_or_else(|_| panic!("{what} within {DEADLINE:?}"))
    }

    const TG: &str = "elbv2/us-east-1/tg/web";
    const TARGET: &str = "elbv2/us-east-1/target/web/10.0.0.1:80";
    const HEALTH: &str = "elbv2/us-east-1/health/web/10.0.0.1:80";
    const LISTENER: &str = "elbv2/us-east-1/listener/front/l1";

    #[tokio::test]
    async fn snapshot_then_changes_then_a_resync_that_drops_stale_keys_without_echo() {
        let mut control = fake_control().await;
        let local: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let seed = Txn::new()
            .put("elbv2/us-east-1/lb/stale", b"{}".to_vec())
            .put("ecs/us-east-1/cluster/kept", b"{}".to_vec());
        local.txn(seed).await.unwrap();
        let follower = follow(config(&control.endpoint), local.clone());

        let mut feed = within("the first connection", control.feeds.recv())
            .await
            .unwrap();
        let entries = [
            (TG.to_owned(), json!({"name": "web"})),
            (TARGET.to_owned(), json!({"id": "10.0.0.1"})),
            (HEALTH.to_owned(), health("healthy")),
        ];
        send(
            &mut feed,
            FeedLine::Snapshot(FeedSnapshot {
                revision: 5,
                entries: entries.into_iter().collect(),
            }),
        )
        .await;
        let status = within("the first sync", follower.wait_for(|s| s.syncs == 1)).await;
        assert!(status.connected);
        assert_eq!(status.revision, 5);
        assert_eq!(
            local_json(local.as_ref(), "elbv2/us-east-1/lb/stale").await,
            None
        );
        assert!(local_json(local.as_ref(), "ecs/us-east-1/cluster/kept")
            .await
            .is_some());
        assert_eq!(
            local_json(local.as_ref(), TG).await,
            Some(json!({"name": "web"}))
        );
        assert_eq!(
            local_json(local.as_ref(), HEALTH).await,
            Some(health("healthy"))
        );

        send(
            &mut feed,
            FeedLine::Put(FeedPut {
                key: LISTENER.into(),
                value: json!({"port": 8080}),
                revision: 6,
            }),
        )
        .await;
        send(&mut feed, FeedLine::Heartbeat(6)).await;
        within("the change", follower.wait_for(|s| s.revision == 6)).await;
        assert_eq!(
            local_json(local.as_ref(), LISTENER).await,
            Some(json!({"port": 8080}))
        );

        // What the plane observes is reported; what the feed delivered is not.
        local
            .txn(Txn::new().put(HEALTH, serde_json::to_vec(&health("unhealthy")).unwrap()))
            .await
            .unwrap();
        let report = within("the health report", control.reports.recv())
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&report.health).unwrap(),
            json!({ HEALTH: health("unhealthy") })
        );
        // The control plane echoes it back through the feed: it is not sent again.
        send(
            &mut feed,
            FeedLine::Put(FeedPut {
                key: HEALTH.into(),
                value: health("unhealthy"),
                revision: 7,
            }),
        )
        .await;
        within("the echo", follower.wait_for(|s| s.revision == 7)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(control.reports.try_recv().is_err(), "an echo was reported");
        assert_eq!(follower.status().health_reports, 1);

        // The connection breaks: the local records stay while the follower reconnects.
        drop(feed);
        let mut feed = within("the reconnection", control.feeds.recv())
            .await
            .unwrap();
        assert!(!follower.status().connected);
        assert!(local_json(local.as_ref(), LISTENER).await.is_some());
        // The new snapshot no longer has the listener nor the target: both go.
        send(
            &mut feed,
            FeedLine::Snapshot(FeedSnapshot {
                revision: 9,
                entries: [(TG.to_owned(), json!({"name": "web"}))]
                    .into_iter()
                    .collect(),
            }),
        )
        .await;
        within("the resync", follower.wait_for(|s| s.syncs == 2)).await;
        let (kvs, _) = local.range(FEED_PREFIX).await.unwrap();
        let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, vec![TG]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            control.reports.try_recv().is_err(),
            "a deletion was reported"
        );
        follower.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_feed_is_dropped_and_a_feed_without_snapshot_refused() {
        let mut control = fake_control().await;
        let local: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let mut config = config(&control.endpoint);
        config.idle_timeout = Duration::from_millis(200);
        let follower = follow(config, local.clone());
        // No snapshot first: the follower hangs up and comes back.
        let mut feed = within("the first connection", control.feeds.recv())
            .await
            .unwrap();
        send(&mut feed, FeedLine::Heartbeat(1)).await;
        let mut feed = within("a reconnection", control.feeds.recv())
            .await
            .unwrap();
        send(
            &mut feed,
            FeedLine::Snapshot(FeedSnapshot {
                revision: 1,
                entries: [(TG.to_owned(), json!({}))].into_iter().collect(),
            }),
        )
        .await;
        within("the sync", follower.wait_for(|s| s.syncs == 1)).await;
        // Silence past the idle timeout: another connection, the records kept.
        let _feed = within("a reconnection after silence", control.feeds.recv())
            .await
            .unwrap();
        assert!(local_json(local.as_ref(), TG).await.is_some());
        assert_eq!(follower.status().syncs, 1);
        follower.shutdown().await;
    }

    #[test]
    fn health_keys_are_parsed_strictly() {
        let key = HealthKey::parse(HEALTH).unwrap();
        assert_eq!(
            (
                key.region.as_str(),
                key.target_group.as_str(),
                key.id.as_str(),
                key.port
            ),
            ("us-east-1", "web", "10.0.0.1", 80)
        );
        assert_eq!(key.target_key(), TARGET);
        assert!(HealthKey::parse("elbv2/us-east-1/health/web/i-0abc:8080").is_some());
        assert!(HealthKey::parse("elbv2/us-east-1/health/web/fd00::1:80").is_some());
        for bad in [
            TARGET,
            LISTENER,
            "elbv2/us-east-1/health/web/10.0.0.1",
            "elbv2/us-east-1/health/web/10.0.0.1:080",
            "elbv2/us-east-1/health/web/10.0.0.1:70000",
            "elbv2/us-east-1/health/web/a/b:80",
            "elbv2/us-east-1/health//10.0.0.1:80",
            "elbv2//health/web/10.0.0.1:80",
            "elbv2/us-east-1/health/web/:80",
            "elbv2/us-east-1/health/we b/1:80",
            "ecs/us-east-1/health/web/10.0.0.1:80",
        ] {
            assert_eq!(HealthKey::parse(bad), None, "{bad}");
        }
    }
}
