//! The agent's side of the channel: connect (with a presigned URL), receive task
//! payloads and acknowledge them, answer and send heartbeats, and reconnect with
//! exponential backoff whenever the connection drops. It also answers the control
//! plane's logs requests from a [`TaskLogs`] source, one tokio task per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use wharf_aws::sigv4::{presign_query, PresignTarget, SigningScope};

use crate::client::EcsClient;
use crate::{
    Ack, ChannelError, ChannelMessage, Heartbeat, HeartbeatAck, LogsChunk, LogsEnd, LogsOpened,
    LogsRequest, OutputStream, TaskPayload, CHANNEL_PATH, LOGS_WINDOW,
};

/// A piece of a container's output, as a [`TaskLogs`] source yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPiece {
    /// Stdout or stderr.
    pub stream: OutputStream,
    /// The bytes written.
    pub data: Bytes,
}

/// The output of a logs request; an `Err` item ends it with that reason.
pub type TaskLogStream = BoxStream<'static, Result<LogPiece, String>>;

/// Where an agent reads its tasks' logs from.
#[async_trait::async_trait]
pub trait TaskLogs: Send + Sync {
    /// Opens the logs a request asks for, or says why they cannot be read (unknown
    /// task or container, a log driver that cannot be read back, ...).
    async fn open(&self, request: &LogsRequest) -> Result<TaskLogStream, String>;
}

/// How many outgoing frames may wait for the socket before log streams pause.
const OUTGOING_QUEUE: usize = 256;

/// What a session needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The cluster ARN of the registration.
    pub cluster_arn: String,
    /// The registered container instance.
    pub container_instance_arn: String,
    /// How often the agent sends a heartbeat; the session is considered dead (and
    /// reconnected) after three intervals without a word from the control plane.
    pub heartbeat: Duration,
    /// The first reconnection delay; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest reconnection delay.
    pub max_backoff: Duration,
}

impl SessionConfig {
    /// Defaults: 10 s heartbeats, backoff from 100 ms to 10 s.
    pub fn new(cluster_arn: &str, container_instance_arn: &str) -> Self {
        SessionConfig {
            cluster_arn: cluster_arn.to_owned(),
            container_instance_arn: container_instance_arn.to_owned(),
            heartbeat: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the session tells the agent's task engine.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The channel is up.
    Connected,
    /// Tasks whose desired state to act on. On every (re)connection the control plane
    /// sends every live task of the instance, so the engine can reconcile.
    Tasks(Vec<TaskPayload>),
    /// The channel dropped; the session is reconnecting.
    Disconnected,
    /// The control plane refused the session for good (the session has ended).
    Refused(ChannelError),
}

/// Why one connection attempt ended.
enum Ended {
    /// The engine is gone or shutdown was asked for: stop for good.
    Stop,
    /// The control plane refused the session.
    Refused(ChannelError),
    /// Anything else: reconnect.
    Dropped(String),
}

/// Builds the presigned `ws://` URL of the channel.
pub fn channel_url(client: &EcsClient, config: &SessionConfig) -> Result<String, String> {
    let endpoint = client.endpoint();
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("endpoint {endpoint} has no scheme"))?;
    let ws_scheme = if scheme == "https" { "wss" } else { "ws" };
    let host = rest.split('/').next().unwrap_or(rest);
    let query: String = form_pairs(&[
        ("clusterArn", &config.cluster_arn),
        ("containerInstanceArn", &config.container_instance_arn),
    ]);
    let presigned = presign_query(
        client.credentials(),
        SigningScope {
            region: client.region(),
            service: "ecs",
        },
        PresignTarget {
            method: "GET",
            path: CHANNEL_PATH,
            query: &query,
            host,
        },
        300,
        chrono::Utc::now(),
    )
    .map_err(|e| e.to_string())?;
    Ok(format!("{ws_scheme}://{host}{CHANNEL_PATH}?{presigned}"))
}

fn form_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", wharf_aws::sigv4::encode_query_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs the session until `shutdown` turns true, the engine drops `events`, or the
/// control plane refuses the registration. Logs requests are answered from `logs`;
/// without one they end at once with an error.
pub async fn run_session(
    client: EcsClient,
    config: SessionConfig,
    events: mpsc::Sender<SessionEvent>,
    logs: Option<Arc<dyn TaskLogs>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = config.min_backoff;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let ended = connect_once(&client, &config, &events, logs.as_ref(), &mut shutdown).await;
        match ended {
            Ended::Stop => return,
            Ended::Refused(error) => {
                let _ = events.send(SessionEvent::Refused(error)).await;
                return;
            }
            Ended::Dropped(reason) => {
                tracing::debug!(instance = %config.container_instance_arn, %reason, "channel dropped");
                if events.send(SessionEvent::Disconnected).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// One logs request being streamed: its task, and the chunks it may still send
/// before the control plane acknowledges more.
struct LogStream {
    task: JoinHandle<()>,
    window: Arc<Semaphore>,
}

/// The logs requests being streamed on one connection, by request id. Dropping it
/// (whichever way the connection ends) stops them all.
#[derive(Default)]
struct LogStreams(HashMap<String, LogStream>);

impl LogStreams {
    fn start(
        &mut self,
        request: LogsRequest,
        source: Option<&Arc<dyn TaskLogs>>,
        outgoing: mpsc::Sender<ChannelMessage>,
    ) {
        self.0.retain(|_, stream| !stream.task.is_finished());
        let id = request.request_id.clone();
        let window = Arc::new(Semaphore::new(LOGS_WINDOW as usize));
        let task = tokio::spawn(stream_logs(
            request,
            source.cloned(),
            window.clone(),
            outgoing,
        ));
        if let Some(replaced) = self.0.insert(id, LogStream { task, window }) {
            replaced.task.abort();
        }
    }

    fn acknowledge(&mut self, request_id: &str, chunks: u32) {
        if let Some(stream) = self.0.get(request_id) {
            // Never more than the window, whatever the control plane says.
            let room = LOGS_WINDOW as usize - stream.window.available_permits();
            stream.window.add_permits((chunks as usize).min(room));
        }
    }

    fn cancel(&mut self, request_id: &str) {
        if let Some(stream) = self.0.remove(request_id) {
            stream.task.abort();
        }
    }
}

impl Drop for LogStreams {
    fn drop(&mut self) {
        for stream in self.0.values() {
            stream.task.abort();
        }
    }
}

/// Answers one logs request: opened, the chunks, then the end. Returns early (without
/// an end) only when the connection is gone.
async fn stream_logs(
    request: LogsRequest,
    source: Option<Arc<dyn TaskLogs>>,
    window: Arc<Semaphore>,
    outgoing: mpsc::Sender<ChannelMessage>,
) {
    let request_id = request.request_id.clone();
    let end = |error: Option<String>| {
        ChannelMessage::LogsEnd(LogsEnd {
            request_id: request_id.clone(),
            error,
        })
    };
    let Some(source) = source else {
        let _ = outgoing
            .send(end(Some("this instance serves no container logs".into())))
            .await;
        return;
    };
    let mut pieces = match source.open(&request).await {
        Ok(pieces) => pieces,
        Err(error) => {
            let _ = outgoing.send(end(Some(error))).await;
            return;
        }
    };
    let opened = ChannelMessage::LogsOpened(LogsOpened {
        request_id: request_id.clone(),
    });
    if outgoing.send(opened).await.is_err() {
        return;
    }
    let mut error = None;
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(piece) => {
                // The semaphore is never closed, so acquiring only waits.
                let Ok(permit) = window.acquire().await else {
                    return;
                };
                permit.forget();
                let chunk = ChannelMessage::LogsChunk(LogsChunk {
                    request_id: request_id.clone(),
                    stream: piece.stream,
                    data: String::from_utf8_lossy(&piece.data).into_owned(),
                });
                if outgoing.send(chunk).await.is_err() {
                    return;
                }
            }
            Err(reason) => {
                error = Some(reason);
                break;
            }
        }
    }
    let _ = outgoing.send(end(error)).await;
}

async fn connect_once(
    client: &EcsClient,
    config: &SessionConfig,
    events: &mpsc::Sender<SessionEvent>,
    logs: Option<&Arc<dyn TaskLogs>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let url = match channel_url(client, config) {
        Ok(url) => url,
        Err(reason) => return Ended::Dropped(reason),
    };
    let (socket, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok(connected) => connected,
        Err(error) => return Ended::Dropped(error.to_string()),
    };
    let (mut sink, mut stream) = socket.split();
    if events.send(SessionEvent::Connected).await.is_err() {
        return Ended::Stop;
    }
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    // Logs requests run in their own tasks and hand their frames to this loop, which
    // alone writes to the socket.
    let (outgoing_tx, mut outgoing) = mpsc::channel::<ChannelMessage>(OUTGOING_QUEUE);
    let mut log_streams = LogStreams::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ended::Stop;
            }
            Some(message) = outgoing.recv() => {
                if let Err(error) = sink.send(Message::text(message.to_text())).await {
                    return Ended::Dropped(error.to_string());
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > config.heartbeat * 3 {
                    return Ended::Dropped("no word from the control plane for three heartbeats".into());
                }
                let beat = ChannelMessage::HeartbeatMessage(Heartbeat {
                    message_id: uuid::Uuid::new_v4().to_string(),
                    healthy: true,
                });
                if let Err(error) = sink.send(Message::text(beat.to_text())).await {
                    return Ended::Dropped(error.to_string());
                }
            }
            frame = stream.next() => {
                let text = match frame {
                    None => return Ended::Dropped("closed".into()),
                    Some(Err(error)) => return Ended::Dropped(error.to_string()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) => return Ended::Dropped("closed by the control plane".into()),
                    Some(Ok(_)) => continue,
                };
                last_heard = tokio::time::Instant::now();
                let message = match ChannelMessage::from_text(text.as_str()) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "undecodable channel message ignored");
                        continue;
                    }
                };
                let reply = match message {
                    ChannelMessage::PayloadMessage(payload) => {
                        let ack = ChannelMessage::AckRequest(Ack {
                            message_id: payload.message_id.clone(),
                            seq_num: payload.seq_num,
                        });
                        if events.send(SessionEvent::Tasks(payload.tasks)).await.is_err() {
                            return Ended::Stop;
                        }
                        Some(ack)
                    }
                    ChannelMessage::HeartbeatMessage(beat) => {
                        Some(ChannelMessage::HeartbeatAckRequest(HeartbeatAck { message_id: beat.message_id }))
                    }
                    ChannelMessage::ErrorMessage(error) => return Ended::Refused(error),
                    ChannelMessage::LogsRequest(request) => {
                        log_streams.start(request, logs, outgoing_tx.clone());
                        None
                    }
                    ChannelMessage::LogsAck(ack) => {
                        log_streams.acknowledge(&ack.request_id, ack.chunks);
                        None
                    }
                    ChannelMessage::LogsCancel(cancel) => {
                        log_streams.cancel(&cancel.request_id);
                        None
                    }
                    ChannelMessage::AckRequest(_)
                    | ChannelMessage::HeartbeatAckRequest(_)
                    | ChannelMessage::LogsOpened(_)
                    | ChannelMessage::LogsChunk(_)
                    | ChannelMessage::LogsEnd(_) => None,
                };
                if let Some(reply) = reply {
                    if let Err(error) = sink.send(Message::text(reply.to_text())).await {
                        return Ended::Dropped(error.to_string());
                    }
                }
            }
        }
    }
}
