//! The request path: serves a listener's connections (HTTP/1.1 and h2c on the same
//! port), routes each request through the current [`RouteTable`] and forwards it over
//! pooled keep-alive connections to the chosen target, answering as ALB does when it
//! cannot: 503 with no target to send to, 502 when the target's connection or answer is
//! broken, 504 when the target does not answer within the idle timeout.
//!
//! The table is read with one `ArcSwap::load` per request; nothing on this path takes a
//! lock.

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
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::access_log::{AccessEntry, AccessLog};
use crate::routing::{
    self, host_without_port, OutstandingGuard, RedirectSource, RequestFacts, RouteAction,
    RouteTable,
};

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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full(data) => data.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

type UpstreamClient = Client<HttpConnector, Incoming>;

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

/// The proxy: the current table and the pooled upstream clients.
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    http1: UpstreamClient,
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
        let http1 = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        Self {
            table,
            http1,
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
        let path_and_query = original_uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(target.authority.clone());
        uri_parts.path_and_query = Some(path_and_query);
        parts.uri = match Uri::from_parts(uri_parts) {
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
        let client = if http2 { &self.http2 } else { &self.http1 };
        let sent = Instant::now();
        let outcome = tokio::time::timeout(
            idle_timeout,
            client.request(Request::from_parts(parts, body)),
        )
        .await;
        let target_time = sent.elapsed();
        let response = match outcome {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = Version::HTTP_11;
                Response::from_parts(parts, ProxyBody::Upstream { body, load })
            }
            Ok(Err(error)) => {
                tracing::debug!(target_address = %target.address, error = %error, "target failed");
                error_response(StatusCode::BAD_GATEWAY)
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

/// Removes the headers that belong to one connection, not to the message (RFC 9110
/// 7.6.1), including those the Connection header names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
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
        .header_read_timeout(Duration::from_secs(60));
    builder.http2().timer(TokioTimer::new());
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
                tokio::spawn(serve_connection(builder.clone(), stream, conn, idle_timeout));
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn serve_connection(
    builder: auto::Builder<TokioExecutor>,
    stream: tokio::net::TcpStream,
    conn: Arc<ConnectionContext>,
    idle_timeout: Duration,
) {
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
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // The idle timeout: a connection with no request in flight whose last request
    // ended at least a timeout ago is closed (gracefully: a response still being
    // written finishes first). Checked four times per timeout.
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
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
