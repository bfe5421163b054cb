//! The request path: serves a listener's connections (HTTP/1.1 and h2c on the same
//! port), routes each request through the current [`RouteTable`] and forwards it over
//! pooled keep-alive connections to the chosen target, answering as ALB does when it
//! cannot: 503 with no target to send to, 502 when the target's connection or answer is
//! broken, 504 when the target cannot be reached within the connect timeout or does
//! not answer within the idle timeout.
//!
//! The table is read with one `ArcSwap::load` per request; nothing on this path takes a
//! lock but the one guarding a target's idle connections for the moment it takes one
//! out or puts one back.
//!
//! HTTP/1.1 targets get connections of their own per target ([`IdleConnections`], kept
//! in the target's [`TargetState`] so that they outlive table rebuilds): a connection
//! goes back to its target once the response body has been read to its end, and a
//! request that a reused connection could not send (the target closed it while idle)
//! is sent again on a fresh one. h2c targets share one multiplexed client.
//! A client connection whose first bytes cannot be HTTP/2's preface is served by
//! hyper's HTTP/1 server directly, without the HTTP/2 detection layer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1 as client_http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::access_log::{AccessEntry, AccessLog};
use crate::routing::{
    self, host_without_port, OutstandingGuard, RedirectSource, RequestFacts, RouteAction,
    RouteTable, TargetState,
};
use crate::upstream;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A response body: the target's, streamed through (holding the target's outstanding
/// count until it ends), or one the load balancer wrote.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the target.
    Upstream {
        /// The target's body.
        body: Incoming,
        /// Counts the request as outstanding on the target until the body is done.
        load: OutstandingGuard,
        /// The HTTP/1.1 connection the body comes over, going back to the target's
        /// idle connections once the body has ended.
        connection: Option<Checkout>,
    },
    /// Read straight from an HTTP/1.1 target's connection by the task serving the
    /// client (answers to requests without a body).
    Direct {
        /// The connection and the body's state.
        reading: upstream::Reading,
        /// Counts the request as outstanding on the target until the body is done.
        load: OutstandingGuard,
    },
    /// Written here (fixed responses, redirects, errors).
    Full(Option<Bytes>),
}

impl ProxyBody {
    fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Direct { reading, .. } => reading
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
            ProxyBody::Upstream {
                body, connection, ..
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    // Trailers close a body; servers poll no further after them.
                    Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || body.is_end_stream(),
                    _ => false,
                };
                if ended {
                    if let Some(connection) = connection {
                        connection.finished = true;
                    }
                }
                polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
            }
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Direct { reading, .. } => reading.body.is_done(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Direct { reading, .. } => reading
                .body
                .exact_length()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

type UpstreamClient = Client<HttpConnector, Incoming>;
type Sender = client_http1::SendRequest<Incoming>;

/// Idle connections kept per target at most; more are closed when they come back.
const MAX_IDLE_PER_TARGET: usize = 1024;

/// Idle keep-alive HTTP/1.1 connections to one target, the most recently used last,
/// with the address they lead to: a target whose address changes under the same key
/// drops the connections to the old one.
#[derive(Default)]
pub struct IdleConnections(std::sync::Mutex<IdleList>);

#[derive(Default)]
struct IdleList {
    address: String,
    /// hyper's connections (for requests with a body).
    connections: Stack<Sender>,
    /// Plain connections (for requests without one).
    raw: Stack<upstream::Conn>,
}

impl IdleList {
    /// Locked for one take or put concerning `address`: connections to another
    /// address are forgotten, and those idle `max_idle` or longer are dropped.
    fn follow(&mut self, address: &str, max_idle: Duration) {
        if self.address != address {
            self.connections.0.clear();
            self.raw.0.clear();
            self.address = address.to_owned();
        }
        let now = Instant::now();
        self.connections.prune(now, max_idle);
        self.raw.prune(now, max_idle);
    }
}

/// Idle connections of one kind, in the order they were put back, so the oldest come
/// first and the most recently used last.
struct Stack<T>(Vec<(T, Instant)>);

impl<T> Default for Stack<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Stack<T> {
    /// Drops connections idle `max_idle` or longer (they are the first ones).
    fn prune(&mut self, now: Instant, max_idle: Duration) {
        let expired = self
            .0
            .partition_point(|(_, since)| now.saturating_duration_since(*since) >= max_idle);
        self.0.drain(..expired);
    }

    /// The most recently used connection that is `usable`; the unusable ones met on
    /// the way are dropped.
    fn pop(&mut self, usable: impl Fn(&T) -> bool) -> Option<T> {
        while let Some((connection, _)) = self.0.pop() {
            if usable(&connection) {
                return Some(connection);
            }
        }
        None
    }

    fn push(&mut self, connection: T) {
        if self.0.len() < MAX_IDLE_PER_TARGET {
            self.0.push((connection, Instant::now()));
        }
    }
}

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("idle", &self.len())
            .finish()
    }
}

impl IdleConnections {
    /// How many connections are idle.
    pub fn len(&self) -> usize {
        let idle = self.lock();
        idle.connections.0.len() + idle.raw.0.len()
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleList> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connections idle `max_idle` or longer, and the plain ones on which
    /// something (their end, most likely) has arrived while idle.
    pub fn prune(&self, max_idle: Duration) {
        let noisy: Vec<(upstream::Conn, Instant)> = {
            let mut idle = self.lock();
            let now = Instant::now();
            idle.connections.prune(now, max_idle);
            idle.raw.prune(now, max_idle);
            let (quiet, noisy) = std::mem::take(&mut idle.raw.0)
                .into_iter()
                .partition(|(conn, _)| conn.is_quiet());
            idle.raw.0 = quiet;
            noisy
        };
        // Closed outside the lock.
        drop(noisy);
    }

    /// The most recently used connection to `address` that is ready for a request
    /// and has been idle less than `max_idle`.
    fn take(&self, address: &str, max_idle: Duration) -> Option<Sender> {
        let mut idle = self.lock();
        idle.follow(address, max_idle);
        idle.connections.pop(Sender::is_ready)
    }

    /// Keeps a connection to `address` that is ready for its next request.
    fn put(&self, address: &str, sender: Sender) {
        let mut idle = self.lock();
        idle.follow(address, Duration::MAX);
        idle.connections.push(sender);
    }

    /// The most recently used plain connection to `address` that has stayed quiet and
    /// has been idle less than `max_idle`.
    fn take_raw(&self, address: &str, max_idle: Duration) -> Option<upstream::Conn> {
        let mut idle = self.lock();
        idle.follow(address, max_idle);
        idle.raw.pop(upstream::Conn::is_quiet)
    }

    /// Keeps a plain connection to `address` whose last answer was read to its end.
    pub(crate) fn put_raw(&self, address: &str, conn: upstream::Conn) {
        let mut idle = self.lock();
        idle.follow(address, Duration::MAX);
        idle.raw.push(conn);
    }
}

/// An HTTP/1.1 connection taken out for one request; it goes back to its target when
/// dropped if the response body was read to its end and the connection is (or soon
/// becomes) ready for another request, and is closed otherwise.
#[derive(Debug)]
pub struct Checkout {
    sender: Option<Sender>,
    state: Arc<TargetState>,
    address: Arc<str>,
    /// How long a connection may wait to become ready again before it is closed.
    max_wait: Duration,
    finished: bool,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.finished {
            return;
        }
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            self.state.idle.put(&self.address, sender);
        } else if !sender.is_closed() {
            // The answer has ended but the connection is not ready yet: it is still
            // sending the request body (the target answered early), or has not yet
            // taken note of the end. It goes back once ready, if that comes soon.
            let (state, address, max_wait) =
                (self.state.clone(), self.address.clone(), self.max_wait);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Ok(Ok(())) = tokio::time::timeout(max_wait, sender.ready()).await {
                        state.idle.put(&address, sender);
                    }
                });
            }
        }
    }
}

/// A target's answer: from hyper's client, or read directly.
enum Answer {
    Hyper(Response<Incoming>, Option<Checkout>),
    Direct(http::response::Parts, upstream::Reading),
}

/// Methods whose request may be sent again without changing what it does (RFC 9110
/// 9.2.2).
fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Why a request could not be sent to its target.
enum SendFailure {
    /// No connection within the connect timeout (ALB answers 504).
    ConnectTimeout,
    /// Refused, reset or a broken answer (ALB answers 502).
    Broken(String),
}

/// How upstream connections are made and pooled.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Give up connecting after this long (answer 504).
    pub connect_timeout: Duration,
    /// Close pooled connections idle this long.
    pub pool_idle_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(50),
        }
    }
}

/// The proxy: the current table, the upstream settings and the shared h2c client.
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    settings: UpstreamSettings,
    http1: client_http1::Builder,
    http2: UpstreamClient,
    access_log: AccessLog,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("revision", &self.table.load().revision)
            .finish_non_exhaustive()
    }
}

/// Closes, every half idle timeout, the HTTP/1.1 connections that have been idle a
/// whole one, on every target of the current table (a target no longer in the table
/// drops its connections with its state). Ends when the table is gone.
fn spawn_idle_sweeper(table: std::sync::Weak<ArcSwap<RouteTable>>, max_idle: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let period = (max_idle / 2).max(Duration::from_millis(100));
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(table) = table.upgrade() else {
                return;
            };
            let table = table.load();
            for group in table.target_groups() {
                for target in &group.targets {
                    target.state.idle.prune(max_idle);
                }
            }
        }
    });
}

/// What a connection knows about itself.
struct ConnectionContext {
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    port: u16,
    peer_ip_header: HeaderValue,
    in_flight: AtomicUsize,
    /// When the last request ended, in ms since `opened`.
    last_active_ms: AtomicU64,
    opened: Instant,
}

impl Proxy {
    /// A proxy reading routes from `table`.
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        settings: &UpstreamSettings,
        access_log: AccessLog,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(true);
        let http2 = builder.http2_only(true).build(connector);
        spawn_idle_sweeper(Arc::downgrade(&table), settings.pool_idle_timeout);
        Self {
            table,
            settings: settings.clone(),
            http1: {
                let mut builder = client_http1::Builder::new();
                builder.writev(false);
                builder
            },
            http2,
            access_log,
        }
    }

    /// The table requests are routed by.
    pub fn table(&self) -> &Arc<ArcSwap<RouteTable>> {
        &self.table
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        conn: &ConnectionContext,
    ) -> Response<ProxyBody> {
        let received = Instant::now();
        let table = self.table.load();
        let Some(listener) = table.listener(conn.port) else {
            drop(table);
            return self.answer_locally(
                &request,
                conn,
                received,
                error_response(StatusCode::SERVICE_UNAVAILABLE),
            );
        };
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let facts = RequestFacts {
            method: request.method(),
            path: request.uri().path(),
            query: request.uri().query(),
            host,
            headers: request.headers(),
            client_ip: conn.peer.ip(),
        };
        let response = match listener.route(&facts) {
            RouteAction::Forward(forward) => {
                let target = forward.pick_group(routing::roll()).and_then(|group| {
                    let now_ms = if group.slow_start.is_some() {
                        crate::health::now_ms()
                    } else {
                        0
                    };
                    group
                        .pick_target(routing::roll(), now_ms)
                        .map(|t| (t.clone(), group.http2))
                });
                let Some((target, http2)) = target else {
                    drop(table);
                    return self.answer_locally(
                        &request,
                        conn,
                        received,
                        error_response(StatusCode::SERVICE_UNAVAILABLE),
                    );
                };
                let idle_timeout = listener.idle_timeout;
                let port_header = listener.port_header.clone();
                // The table is not held across the upstream call: a swap frees the old
                // table as soon as no request is routing on it.
                drop(table);
                return self
                    .forward(
                        request,
                        conn,
                        received,
                        target,
                        http2,
                        idle_timeout,
                        port_header,
                    )
                    .await;
            }
            RouteAction::Fixed(fixed) => {
                let mut response = Response::new(ProxyBody::full(fixed.body.clone()));
                *response.status_mut() = fixed.status;
                if let Some(content_type) = &fixed.content_type {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type.clone());
                }
                response
            }
            RouteAction::Redirect(redirect) => {
                let source = RedirectSource {
                    protocol: "http",
                    host: host.map(host_without_port).unwrap_or(""),
                    port: listener.port,
                    path: request.uri().path(),
                    query: request.uri().query().unwrap_or(""),
                };
                let location = redirect.location(&source);
                let mut response = Response::new(ProxyBody::Full(None));
                *response.status_mut() = redirect.status;
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            }
            RouteAction::Unavailable => error_response(StatusCode::SERVICE_UNAVAILABLE),
        };
        drop(table);
        self.answer_locally(&request, conn, received, response)
    }

    fn answer_locally(
        &self,
        request: &Request<Incoming>,
        conn: &ConnectionContext,
        received: Instant,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        self.access_log.record(|| AccessEntry {
            client: conn.peer,
            port: conn.port,
            method: request.method().as_str(),
            uri: request.uri(),
            version: request.version(),
            status: response.status().as_u16(),
            target: None,
            target_time: None,
            total_time: received.elapsed(),
        });
        response
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        request: Request<Incoming>,
        conn: &ConnectionContext,
        received: Instant,
        target: Arc<routing::Target>,
        http2: bool,
        idle_timeout: Duration,
        port_header: HeaderValue,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        let original_uri = std::mem::take(&mut parts.uri);
        let original_version = parts.version;
        let method = parts.method.clone();
        // An HTTP/2 request carries its host as :authority; targets speaking HTTP/1.1
        // need it as Host.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(authority) = original_uri.authority() {
                if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                    parts.headers.insert(header::HOST, value);
                }
            }
        }
        if !parts.headers.contains_key(header::HOST) {
            // An HTTP/1.0 request may come without a host at all.
            if let Ok(value) = HeaderValue::from_str(target.authority.as_str()) {
                parts.headers.insert(header::HOST, value);
            }
        }
        let path_and_query = original_uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/1.1 targets get the origin form (`/path?query`); the h2c client needs
        // the whole URI to find its connection.
        let uri = if http2 {
            let mut uri_parts = http::uri::Parts::default();
            uri_parts.scheme = Some(Scheme::HTTP);
            uri_parts.authority = Some(target.authority.clone());
            uri_parts.path_and_query = Some(path_and_query);
            Uri::from_parts(uri_parts)
        } else {
            Ok(Uri::from(path_and_query))
        };
        parts.uri = match uri {
            Ok(uri) => uri,
            Err(_) => {
                return self.log_forward(
                    conn,
                    &method,
                    &original_uri,
                    original_version,
                    received,
                    &target,
                    None,
                    error_response(StatusCode::BAD_GATEWAY),
                );
            }
        };
        parts.version = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        strip_hop_by_hop(&mut parts.headers);
        append_forwarded_for(&mut parts.headers, &conn.peer_ip_header);
        parts
            .headers
            .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        parts.headers.insert(X_FORWARDED_PORT.clone(), port_header);

        let load = target.state.begin_request();
        let sent = Instant::now();
        // A request without a body to an HTTP/1.1 target is written and answered on a
        // plain connection read by this task; the others go through hyper's client.
        // (CONNECT asks for a tunnel, which only hyper's client knows how to give up.)
        let direct = (!http2 && body.is_end_stream() && parts.method != http::Method::CONNECT)
            .then(|| {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                (
                    upstream::request_head(&parts.method, path, &parts.headers),
                    parts.method == http::Method::HEAD,
                    is_idempotent(&parts.method),
                )
            });
        let request = Request::from_parts(parts, body);
        let outcome = tokio::time::timeout(idle_timeout, async {
            if let Some((head, head_request, idempotent)) = &direct {
                self.send_direct(&target, head, *head_request, *idempotent)
                    .await
                    .map(|(parts, reading)| Answer::Direct(parts, reading))
            } else if http2 {
                self.http2
                    .request(request)
                    .await
                    .map(|response| Answer::Hyper(response, None))
                    .map_err(|error| {
                        if error.is_connect() && caused_by_timeout(&error) {
                            SendFailure::ConnectTimeout
                        } else {
                            SendFailure::Broken(error.to_string())
                        }
                    })
            } else {
                self.send_http1(&target, request)
                    .await
                    .map(|(response, checkout)| Answer::Hyper(response, Some(checkout)))
            }
        })
        .await;
        let target_time = sent.elapsed();
        let response = match outcome {
            Ok(Ok(Answer::Direct(mut parts, mut reading))) => {
                strip_hop_by_hop(&mut parts.headers);
                // An answer without a body frees its connection at once.
                reading.release();
                Response::from_parts(parts, ProxyBody::Direct { reading, load })
            }
            Ok(Ok(Answer::Hyper(response, mut connection))) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = Version::HTTP_11;
                if body.is_end_stream() {
                    // No body to read (204, 304, an empty one): the connection is
                    // free again as soon as the answer has been passed on.
                    if let Some(connection) = &mut connection {
                        connection.finished = true;
                    }
                }
                Response::from_parts(
                    parts,
                    ProxyBody::Upstream {
                        body,
                        load,
                        connection,
                    },
                )
            }
            Ok(Err(SendFailure::Broken(error))) => {
                tracing::debug!(target_address = %target.address, %error, "target failed");
                error_response(StatusCode::BAD_GATEWAY)
            }
            Ok(Err(SendFailure::ConnectTimeout)) => {
                tracing::debug!(target_address = %target.address, "connecting to the target timed out");
                error_response(StatusCode::GATEWAY_TIMEOUT)
            }
            Err(_) => {
                tracing::debug!(target_address = %target.address, "target timed out");
                error_response(StatusCode::GATEWAY_TIMEOUT)
            }
        };
        self.log_forward(
            conn,
            &method,
            &original_uri,
            original_version,
            received,
            &target,
            Some(target_time),
            response,
        )
    }

    /// Sends `request` to an HTTP/1.1 target over one of its idle connections, or a
    /// new one. A request that a reused connection could not send (it was closed while
    /// idle) goes out again on the next one; nothing is resent once it was written.
    async fn send_http1(
        &self,
        target: &Arc<routing::Target>,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Checkout), SendFailure> {
        loop {
            let idle = target
                .state
                .idle
                .take(&target.address, self.settings.pool_idle_timeout);
            let reused = idle.is_some();
            let mut sender = match idle {
                Some(sender) => sender,
                None => self.connect_http1(target).await?,
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok((
                        response,
                        Checkout {
                            sender: Some(sender),
                            state: target.state.clone(),
                            address: target.address_shared.clone(),
                            max_wait: self.settings.pool_idle_timeout,
                            finished: false,
                        },
                    ))
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendFailure::Broken(error.into_error().to_string())),
                },
            }
        }
    }

    /// Sends a request without a body (its head, `head`) to an HTTP/1.1 target over
    /// one of its idle plain connections, or a new one, and reads the answer's head.
    /// An idempotent request that a reused connection ended before answering (the
    /// target closed it while idle) goes out again on the next one.
    async fn send_direct(
        &self,
        target: &Arc<routing::Target>,
        head: &[u8],
        head_request: bool,
        idempotent: bool,
    ) -> Result<(http::response::Parts, upstream::Reading), SendFailure> {
        // A second try goes out on a fresh connection, and there is no third.
        let mut may_reuse = true;
        loop {
            let idle = if may_reuse {
                target
                    .state
                    .idle
                    .take_raw(&target.address, self.settings.pool_idle_timeout)
            } else {
                None
            };
            let reused = idle.is_some();
            let mut conn = match idle {
                Some(conn) => conn,
                None => upstream::Conn::new(self.connect_tcp(target).await?),
            };
            match upstream::exchange(&mut conn, head, head_request).await {
                Ok((parts, body)) => {
                    let reading = upstream::Reading {
                        conn: Some(conn),
                        body,
                        state: target.state.clone(),
                        address: target.address_shared.clone(),
                    };
                    return Ok((parts, reading));
                }
                Err(upstream::Failure::ClosedEarly) if reused && idempotent => {
                    may_reuse = false;
                }
                Err(upstream::Failure::ClosedEarly) => {
                    return Err(SendFailure::Broken(
                        "the target closed the connection without answering".into(),
                    ))
                }
                Err(upstream::Failure::Broken(message)) => {
                    return Err(SendFailure::Broken(message))
                }
            }
        }
    }

    async fn connect_tcp(&self, target: &routing::Target) -> Result<TcpStream, SendFailure> {
        let stream = match tokio::time::timeout(
            self.settings.connect_timeout,
            TcpStream::connect(target.address.as_str()),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(SendFailure::Broken(error.to_string())),
            Err(_) => return Err(SendFailure::ConnectTimeout),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect_http1(&self, target: &routing::Target) -> Result<Sender, SendFailure> {
        let stream = self.connect_tcp(target).await?;
        let (sender, connection) = self
            .http1
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| SendFailure::Broken(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "target connection ended");
            }
        });
        Ok(sender)
    }

    #[allow(clippy::too_many_arguments)]
    fn log_forward(
        &self,
        conn: &ConnectionContext,
        method: &http::Method,
        uri: &Uri,
        version: Version,
        received: Instant,
        target: &routing::Target,
        target_time: Option<Duration>,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        self.access_log.record(|| AccessEntry {
            client: conn.peer,
            port: conn.port,
            method: method.as_str(),
            uri,
            version,
            status: response.status().as_u16(),
            target: Some(&target.address),
            target_time,
            total_time: received.elapsed(),
        });
        response
    }
}

/// Whether an error comes from an I/O timeout somewhere down its chain of causes.
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cause = error.source();
    }
    false
}

/// Removes the headers that belong to one connection, not to the message (RFC 9110
/// 7.6.1), including those the Connection header names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Most messages carry none of them: one pass over the names, which compares
    // standard names without hashing, spares six hashed removals.
    let any = headers.keys().any(|name| {
        name == header::CONNECTION
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
            || name == header::TE
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
    });
    if !any {
        return;
    }
    if let Some(connection) = headers.remove(header::CONNECTION) {
        if let Ok(names) = connection.to_str() {
            for name in names.split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    headers.remove(name);
                }
            }
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
}

fn append_forwarded_for(headers: &mut http::HeaderMap, peer_ip: &HeaderValue) {
    match headers.entry(X_FORWARDED_FOR.clone()) {
        header::Entry::Occupied(mut entry) => {
            let existing = entry.get().as_bytes();
            let mut joined = Vec::with_capacity(existing.len() + 2 + peer_ip.len());
            joined.extend_from_slice(existing);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
                entry.insert(value);
            }
        }
        header::Entry::Vacant(entry) => {
            entry.insert(peer_ip.clone());
        }
    }
}

/// An ALB-style error page.
fn error_response(status: StatusCode) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

/// Serves one listener's port until `stop` turns true: accepts connections and serves
/// each with HTTP/1.1 or HTTP/2 (h2c with prior knowledge), whichever the client
/// speaks. Connections already open finish on their own.
pub async fn serve_listener(
    listener: TcpListener,
    port: u16,
    proxy: Arc<Proxy>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .writev(false)
        .keep_alive(true)
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builders = Arc::new((builder, http1));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off a little.
                        tracing::warn!(port, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let idle_timeout = proxy
                    .table
                    .load()
                    .listener(port)
                    .map_or(routing::DEFAULT_IDLE_TIMEOUT, |l| l.idle_timeout);
                let conn = Arc::new(ConnectionContext {
                    proxy: proxy.clone(),
                    peer,
                    port,
                    peer_ip_header: HeaderValue::from_str(&peer.ip().to_string())
                        .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                    in_flight: AtomicUsize::new(0),
                    last_active_ms: AtomicU64::new(0),
                    opened: Instant::now(),
                });
                tokio::spawn(serve_connection(builders.clone(), stream, conn, idle_timeout));
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// How long a connection may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// HTTP/2's connection preface, which an h2c client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the first bytes of a connection rule out HTTP/2 (they are not a prefix of
/// its preface). With none read yet, or a prefix of it, nothing is ruled out.
fn cannot_be_http2(first: &[u8]) -> bool {
    let n = first.len().min(H2_PREFACE.len());
    n > 0 && first[..n] != H2_PREFACE[..n]
}

async fn serve_connection(
    builders: Arc<(
        auto::Builder<TokioExecutor>,
        hyper::server::conn::http1::Builder,
    )>,
    stream: TcpStream,
    conn: Arc<ConnectionContext>,
    idle_timeout: Duration,
) {
    // Look at the first bytes without taking them: a connection that cannot be h2c
    // goes straight to the HTTP/1 server.
    let mut first = [0u8; 24];
    let first_bytes_timeout = HEADER_READ_TIMEOUT.min(idle_timeout);
    let peeked = match tokio::time::timeout(first_bytes_timeout, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
        Ok(Ok(n)) => n,
    };
    let service_conn = conn.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let conn = service_conn.clone();
        async move {
            conn.in_flight.fetch_add(1, Ordering::Relaxed);
            let response = conn.proxy.handle(request, &conn).await;
            conn.last_active_ms
                .store(conn.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            conn.in_flight.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    if cannot_be_http2(&first[..peeked]) {
        let connection = builders.1.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        drive(connection, &conn, idle_timeout, |c| c.graceful_shutdown()).await;
    } else {
        let connection = builders.0.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        drive(connection, &conn, idle_timeout, |c| c.graceful_shutdown()).await;
    }
}

/// Runs a served connection to its end, closing it after the listener's idle timeout
/// with no request: a connection with no request in flight whose last request ended at
/// least a timeout ago is closed (gracefully: a response still being written finishes
/// first). Checked four times per timeout.
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    conn: &ConnectionContext,
    idle_timeout: Duration,
    shutdown: impl Fn(Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let period = idle_timeout / 4;
    let timeout_ms = idle_timeout.as_millis() as u64;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(peer = %conn.peer, %error, "connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(period), if !closing => {
                let now_ms = conn.opened.elapsed().as_millis() as u64;
                let idle_ms = now_ms.saturating_sub(conn.last_active_ms.load(Ordering::Relaxed));
                if idle_ms >= timeout_ms && conn.in_flight.load(Ordering::Relaxed) == 0 {
                    closing = true;
                    shutdown(connection.as_mut());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_off_the_preface_rule_out_http2() {
        assert!(!cannot_be_http2(b""));
        assert!(!cannot_be_http2(b"PRI * HT"));
        assert!(!cannot_be_http2(H2_PREFACE));
        assert!(cannot_be_http2(b"GET / HTTP/1.1\r\n"));
        assert!(cannot_be_http2(b"PRI * HTTP/1.1\r\n"));
        assert!(cannot_be_http2(b"P "));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = http::HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-end-to-end", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end"]);

        // Without a Connection header, the fixed hop-by-hop names still go.
        let mut headers = http::HeaderMap::new();
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert("host", HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host"]);

        let mut headers = http::HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("a"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
    }
}
