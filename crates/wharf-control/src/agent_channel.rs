//! The control plane's end of the agent channel: a WebSocket on the API listener at
//! [`CHANNEL_PATH`], authenticated by a SigV4-presigned URL, over which the control
//! plane pushes task payloads and exchanges heartbeats with each agent.
//!
//! It also serves container logs at [`LOGS_PATH`]: a signed `GET` names a task, and
//! the control plane asks the agent of the task's instance for the logs over that
//! instance's live session and streams them back as a chunked `text/plain` body.
//! A graceful shutdown waits for every open response, so these streams end, cut short,
//! when [`ChannelSettings::shutdown`] fires. The WebSocket sessions need no such care:
//! an upgraded connection is no longer one the server waits for.
//!
//! This is the one place the control plane speaks HTTP itself; the messages and the
//! agent's side live in `wharf-agent-channel`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, watch};
use wharf_agent_channel::{
    ChannelError, ChannelMessage, Heartbeat, HeartbeatAck, LogsAck, LogsCancel, LogsRequest,
    CHANNEL_PATH, LOGS_WINDOW,
};
use wharf_aws::sigv4::{CredentialStore, VerifiedCaller};
use wharf_aws::AwsError;

use crate::ecs::agent_sessions::{ChannelTarget, PushedTasks};
use crate::endpoints::{self, refuse};
use crate::EcsService;

/// Timing of the channel, and when its streams end.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// How often the control plane sends a heartbeat.
    pub heartbeat: Duration,
    /// After this many heartbeat intervals without a word from the agent, the session
    /// ends and the instance is marked `agentConnected: false`.
    pub missed_heartbeats: u32,
    /// When this turns true, open logs streams end (cut short, so that a follower
    /// knows they did not reach their end): a graceful shutdown waits for every
    /// response to finish, and a follow would otherwise never finish.
    pub shutdown: Option<watch::Receiver<bool>>,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 3,
            shutdown: None,
        }
    }
}

/// The path of the logs endpoint on the API listener:
/// `GET /_wharf/logs?task=<id or ARN>[&cluster=C][&container=NAME][&follow=true][&tail=N]`.
pub const LOGS_PATH: &str = "/_wharf/logs";

/// What a logs reader asks of the session of the task's instance.
enum SessionCommand {
    /// Send a logs request to the agent and hand its answers to `answers`.
    Logs {
        request: LogsRequest,
        answers: mpsc::Sender<LogAnswer>,
    },
    /// The reader consumed this many chunks.
    Consumed { request_id: String, chunks: u32 },
    /// The reader went away.
    Cancel { request_id: String },
}

/// The agent's answers to one logs request.
#[derive(Debug)]
enum LogAnswer {
    Opened,
    Chunk(String),
    End(Option<String>),
}

/// The sessions with a live agent, by instance ARN: each one's number (so that an
/// older session ending does not unregister a newer one) and its command queue.
/// Commands are unbounded so that a reader's acknowledgements and cancellations are
/// never lost; each reader sends a handful per window of chunks.
#[derive(Default)]
struct LiveSessions(Mutex<HashMap<String, (u64, mpsc::UnboundedSender<SessionCommand>)>>);

impl LiveSessions {
    fn insert(
        &self,
        instance_arn: &str,
        number: u64,
        commands: mpsc::UnboundedSender<SessionCommand>,
    ) {
        let mut live = self.0.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(instance_arn.to_owned(), (number, commands));
    }

    fn remove(&self, instance_arn: &str, number: u64) {
        let mut live = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(instance_arn).is_some_and(|(n, _)| *n == number) {
            live.remove(instance_arn);
        }
    }

    fn get(&self, instance_arn: &str) -> Option<mpsc::UnboundedSender<SessionCommand>> {
        let live = self.0.lock().unwrap_or_else(|e| e.into_inner());
        live.get(instance_arn)
            .map(|(_, commands)| commands.clone())
            .filter(|commands| !commands.is_closed())
    }
}

#[derive(Clone)]
struct ChannelState {
    ecs: Arc<EcsService>,
    credentials: Arc<dyn CredentialStore>,
    settings: ChannelSettings,
    live: Arc<LiveSessions>,
}

/// The router serving the channel path and the logs path.
pub fn agent_channel_router(
    ecs: Arc<EcsService>,
    credentials: Arc<dyn CredentialStore>,
    settings: ChannelSettings,
) -> Router {
    // After a restart, instances whose agents do not come back within the heartbeat
    // deadline are marked disconnected; live agents reconnect well within it.
    let deadline = settings.heartbeat * settings.missed_heartbeats;
    crate::ecs::agent_liveness::spawn_liveness_sweeper(ecs.clone(), deadline, settings.heartbeat);
    Router::new()
        .route(CHANNEL_PATH, get(upgrade))
        .route(LOGS_PATH, get(logs))
        .with_state(ChannelState {
            ecs,
            credentials,
            settings,
            live: Arc::default(),
        })
}

/// Verifies a signed `GET` (headers or presigned query) scoped to `ecs`.
fn authenticate(
    state: &ChannelState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<VerifiedCaller, AwsError> {
    endpoints::authenticate(state.credentials.as_ref(), "ecs", "GET", uri, headers, b"")
}

fn query_params(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn upgrade(
    State(state): State<ChannelState>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let caller = match authenticate(&state, &uri, &headers) {
        Ok(caller) => caller,
        Err(error) => return refuse(&error),
    };
    let params = query_params(&uri);
    let (Some(cluster), Some(instance)) =
        (params.get("clusterArn"), params.get("containerInstanceArn"))
    else {
        return refuse(&AwsError::client(
            "InvalidParameterException",
            "clusterArn and containerInstanceArn are required.",
        ));
    };
    let target = match state
        .ecs
        .channel_target(&caller.region, &caller.account_id, cluster, instance)
        .await
    {
        Ok(target) => target,
        Err(error) => return refuse(&error),
    };
    // Thousands of agents may hold a session each; the messages are small, so small
    // buffers keep a session's memory to a few KiB instead of tungstenite's 256 KiB.
    ws.read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| session(state, target, socket))
}

/// The agent of the task's instance is not connected.
fn agent_not_connected() -> AwsError {
    AwsError::client_with_status(
        "AgentNotConnectedException",
        "The agent of the task's container instance is not connected.",
        503,
    )
}

/// A logs reader's hold on its request: dropping it before the end (the client went
/// away) cancels the request on the agent.
struct LogsReader {
    session: mpsc::UnboundedSender<SessionCommand>,
    request_id: String,
    answers: mpsc::Receiver<LogAnswer>,
    consumed: u32,
    ended: bool,
}

impl LogsReader {
    /// The next chunk; `Ok(None)` at the end, `Err` when the logs broke off.
    async fn next_chunk(&mut self) -> Result<Option<String>, String> {
        if self.ended {
            return Ok(None);
        }
        loop {
            match self.answers.recv().await {
                Some(LogAnswer::Opened) => {}
                Some(LogAnswer::Chunk(data)) => {
                    self.consumed += 1;
                    // Acknowledged in halves of the window, so the agent rarely waits.
                    if self.consumed >= LOGS_WINDOW / 2 {
                        let _ = self.session.send(SessionCommand::Consumed {
                            request_id: self.request_id.clone(),
                            chunks: self.consumed,
                        });
                        self.consumed = 0;
                    }
                    return Ok(Some(data));
                }
                Some(LogAnswer::End(error)) => {
                    self.ended = true;
                    return error.map_or(Ok(None), Err);
                }
                None => {
                    self.ended = true;
                    return Err("the agent's channel closed before the logs ended".to_owned());
                }
            }
        }
    }
}

impl Drop for LogsReader {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.session.send(SessionCommand::Cancel {
                request_id: self.request_id.clone(),
            });
        }
    }
}

/// The parameters of a logs request, parsed.
struct LogsQuery {
    cluster: Option<String>,
    task: String,
    container: Option<String>,
    follow: bool,
    tail: Option<u64>,
}

impl LogsQuery {
    fn parse(uri: &Uri) -> Result<Self, AwsError> {
        use crate::ecs::invalid;
        let mut params = query_params(uri);
        let task = params
            .remove("task")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("task is required."))?;
        let follow = match params.remove("follow").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "follow must be true or false, not {other:?}."
                )))
            }
        };
        let tail = params
            .remove("tail")
            .map(|t| {
                t.parse::<u64>()
                    .map_err(|_| invalid(format!("tail must be a count of lines, not {t:?}.")))
            })
            .transpose()?;
        Ok(LogsQuery {
            cluster: params.remove("cluster").filter(|c| !c.is_empty()),
            task,
            container: params.remove("container").filter(|c| !c.is_empty()),
            follow,
            tail,
        })
    }
}

async fn logs(State(state): State<ChannelState>, uri: Uri, headers: HeaderMap) -> Response {
    match open_logs(&state, &uri, &headers).await {
        Ok(response) => response,
        Err(error) => refuse(&error),
    }
}

/// Asks the agent for the logs and answers with their stream once the agent has opened
/// them, so that a request the agent cannot serve gets an error status.
async fn open_logs(
    state: &ChannelState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, AwsError> {
    let caller = authenticate(state, uri, headers)?;
    let query = LogsQuery::parse(uri)?;
    let placement = state
        .ecs
        .task_placement(
            &caller.region,
            &caller.account_id,
            query.cluster.as_deref(),
            &query.task,
        )
        .await?;
    let session = state
        .live
        .get(&placement.instance_arn)
        .ok_or_else(agent_not_connected)?;
    let request_id = uuid::Uuid::new_v4().to_string();
    // The window plus the opening and the end: a well-behaved agent never finds the
    // buffer full.
    let (answers_tx, answers) = mpsc::channel(LOGS_WINDOW as usize + 2);
    let request = LogsRequest {
        request_id: request_id.clone(),
        task_arn: placement.task_arn,
        container: query.container,
        follow: query.follow,
        tail: query.tail,
    };
    session
        .send(SessionCommand::Logs {
            request,
            answers: answers_tx,
        })
        .map_err(|_| agent_not_connected())?;
    let mut reader = LogsReader {
        session,
        request_id,
        answers,
        consumed: 0,
        ended: false,
    };
    let first = match reader.answers.recv().await {
        Some(LogAnswer::Opened) => None,
        Some(LogAnswer::Chunk(data)) => Some(data),
        Some(LogAnswer::End(None)) => {
            reader.ended = true;
            None
        }
        Some(LogAnswer::End(Some(error))) => {
            reader.ended = true;
            return Err(AwsError::client("LogsUnavailableException", error));
        }
        None => {
            reader.ended = true;
            return Err(agent_not_connected());
        }
    };
    let first = futures_util::stream::iter(first.map(|data| Ok(Bytes::from(data))));
    let shutdown = state.settings.shutdown.clone();
    // The state is gone once the logs broke off, so the stream ends there.
    let rest = futures_util::stream::unfold(Some((reader, shutdown)), |open| async move {
        let (mut reader, mut shutdown) = open?;
        let next = tokio::select! {
            next = reader.next_chunk() => next,
            _ = shutting_down(&mut shutdown) => {
                Err("the control plane is shutting down".to_owned())
            }
        };
        match next {
            Ok(Some(data)) => Some((Ok(Bytes::from(data)), Some((reader, shutdown)))),
            Ok(None) => None,
            Err(error) => {
                tracing::info!(request = %reader.request_id, %error, "logs broke off");
                // An error ends the response without its last chunk, which tells
                // the client that the body is incomplete. Dropping the reader
                // cancels the request on the agent if it is still going.
                Some((Err(std::io::Error::other(error)), None))
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, rest));
    Ok((
        StatusCode::OK,
        [
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", "no-store"),
        ],
        body,
    )
        .into_response())
}

/// Resolves when the control plane starts shutting down (or can no longer be told);
/// never without a receiver.
async fn shutting_down(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(shutdown) => {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut WebSocket, message: &ChannelMessage) -> bool {
    socket.send(Message::text(message.to_text())).await.is_ok()
}

/// Hands an agent's answer to the reader of its request. Returns whether the request
/// goes on; `false` means it must be cancelled (the reader is gone, or the agent sent
/// more than its window).
fn deliver(
    readers: &mut HashMap<String, mpsc::Sender<LogAnswer>>,
    request_id: &str,
    answer: LogAnswer,
) -> bool {
    let last = matches!(answer, LogAnswer::End(_));
    // An answer to a request no longer read (cancelled meanwhile) is dropped.
    let Some(reader) = readers.get(request_id) else {
        return true;
    };
    let delivered = reader.try_send(answer).is_ok();
    if last || !delivered {
        readers.remove(request_id);
    }
    delivered || last
}

async fn session(state: ChannelState, target: ChannelTarget, mut socket: WebSocket) {
    let ecs = state.ecs.clone();
    let number = ecs.begin_session(&target.instance_arn);
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    state.live.insert(&target.instance_arn, number, commands_tx);
    run_session_loop(&state, &target, number, &mut commands, &mut socket).await;
    state.live.remove(&target.instance_arn, number);
    if ecs.end_session(&target.instance_arn, number) {
        if let Err(error) = ecs.set_agent_connected(&target, false).await {
            tracing::warn!(instance = %target.instance_arn, %error, "could not mark the agent disconnected");
        }
    }
}

async fn run_session_loop(
    state: &ChannelState,
    target: &ChannelTarget,
    number: u64,
    commands: &mut mpsc::UnboundedReceiver<SessionCommand>,
    socket: &mut WebSocket,
) {
    let ecs = state.ecs.clone();
    // The logs readers waiting for the agent's answers, by request id.
    let mut readers: HashMap<String, mpsc::Sender<LogAnswer>> = HashMap::new();
    if let Err(error) = ecs.set_agent_connected(target, true).await {
        tracing::warn!(instance = %target.instance_arn, %error, "could not mark the agent connected");
    }
    let waker = match ecs.task_waker(target).await {
        Ok(waker) => waker,
        Err(error) => {
            tracing::error!(%error, "agent channel could not start");
            return;
        }
    };
    let mut pushed = PushedTasks::default();
    let mut ticker = tokio::time::interval(state.settings.heartbeat);
    ticker.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let deadline = state.settings.heartbeat * state.settings.missed_heartbeats;
    // The first payload carries every live task, so a reconnected agent reconciles.
    let mut push_now = true;
    let mut full = true;
    loop {
        if push_now {
            push_now = false;
            let payload = ecs.next_payload(target, &mut pushed, full).await;
            if payload.is_ok() {
                full = false;
            }
            match payload {
                Ok(Some(payload)) => {
                    if !send(socket, &ChannelMessage::PayloadMessage(payload)).await {
                        break;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(instance = %target.instance_arn, %error, "building a payload failed");
                }
            }
        }
        tokio::select! {
            _ = waker.notified() => push_now = true,
            Some(command) = commands.recv() => {
                let message = match command {
                    SessionCommand::Logs { request, answers } => {
                        readers.insert(request.request_id.clone(), answers);
                        Some(ChannelMessage::LogsRequest(request))
                    }
                    SessionCommand::Consumed { request_id, chunks } => readers
                        .contains_key(&request_id)
                        .then_some(ChannelMessage::LogsAck(LogsAck { request_id, chunks })),
                    SessionCommand::Cancel { request_id } => readers
                        .remove(&request_id)
                        .map(|_| ChannelMessage::LogsCancel(LogsCancel { request_id })),
                };
                if let Some(message) = message {
                    if !send(socket, &message).await {
                        break;
                    }
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > deadline {
                    tracing::info!(instance = %target.instance_arn, "agent missed its heartbeats");
                    break;
                }
                if !ecs.is_current_session(&target.instance_arn, number) {
                    break;
                }
                let beat = ChannelMessage::HeartbeatMessage(Heartbeat {
                    message_id: uuid::Uuid::new_v4().to_string(),
                    healthy: true,
                });
                if !send(socket, &beat).await {
                    break;
                }
            }
            frame = socket.recv() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                last_heard = tokio::time::Instant::now();
                match ChannelMessage::from_text(text.as_str()) {
                    Ok(ChannelMessage::HeartbeatMessage(beat)) => {
                        let ack = ChannelMessage::HeartbeatAckRequest(HeartbeatAck { message_id: beat.message_id });
                        if !send(socket, &ack).await {
                            break;
                        }
                    }
                    Ok(ChannelMessage::AckRequest(ack)) => {
                        tracing::trace!(instance = %target.instance_arn, seq = ack.seq_num, "payload acknowledged");
                    }
                    Ok(message @ (ChannelMessage::LogsOpened(_) | ChannelMessage::LogsChunk(_) | ChannelMessage::LogsEnd(_))) => {
                        let (request_id, answer) = match message {
                            ChannelMessage::LogsOpened(m) => (m.request_id, LogAnswer::Opened),
                            ChannelMessage::LogsChunk(m) => (m.request_id, LogAnswer::Chunk(m.data)),
                            ChannelMessage::LogsEnd(m) => (m.request_id, LogAnswer::End(m.error)),
                            _ => unreachable!("matched above"),
                        };
                        if !deliver(&mut readers, &request_id, answer) {
                            let cancel = ChannelMessage::LogsCancel(LogsCancel { request_id });
                            if !send(socket, &cancel).await {
                                break;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let refusal = ChannelMessage::ErrorMessage(ChannelError {
                            code: "InvalidParameterException".into(),
                            message: format!("undecodable message: {error}"),
                        });
                        let _ = send(socket, &refusal).await;
                        break;
                    }
                }
            }
        }
    }
}
