//! The control plane's end of the agent channel: a WebSocket on the API listener at
//! [`CHANNEL_PATH`], authenticated by a SigV4-presigned URL, over which the control
//! plane pushes task payloads and exchanges heartbeats with each agent.
//!
//! This is the one place the control plane speaks HTTP itself; the messages and the
//! agent's side live in `wharf-agent-channel`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use wharf_agent_channel::{ChannelError, ChannelMessage, Heartbeat, HeartbeatAck, CHANNEL_PATH};
use wharf_aws::sigv4::{verify, CredentialStore, SigV4Request};
use wharf_aws::AwsError;

use crate::ecs::agent_sessions::{ChannelTarget, PushedTasks};
use crate::EcsService;

/// Timing of the channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    /// How often the control plane sends a heartbeat.
    pub heartbeat: Duration,
    /// After this many heartbeat intervals without a word from the agent, the session
    /// ends and the instance is marked `agentConnected: false`.
    pub missed_heartbeats: u32,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            heartbeat: Duration::from_secs(10),
            missed_heartbeats: 3,
        }
    }
}

#[derive(Clone)]
struct ChannelState {
    ecs: Arc<EcsService>,
    credentials: Arc<dyn CredentialStore>,
    settings: ChannelSettings,
}

/// The router serving the channel path.
pub fn agent_channel_router(
    ecs: Arc<EcsService>,
    credentials: Arc<dyn CredentialStore>,
    settings: ChannelSettings,
) -> Router {
    Router::new()
        .route(CHANNEL_PATH, get(upgrade))
        .with_state(ChannelState {
            ecs,
            credentials,
            settings,
        })
}

fn refuse(error: &AwsError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({"__type": error.code, "message": error.message}).to_string();
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        body,
    )
        .into_response()
}

async fn upgrade(
    State(state): State<ChannelState>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let request = SigV4Request {
        method: "GET",
        path: uri.path(),
        query: uri.query(),
        headers: &headers,
        body: b"",
    };
    let caller = match verify(&request, state.credentials.as_ref(), chrono::Utc::now()) {
        Ok(caller) => caller,
        Err(error) => return refuse(&AwsError::from(error)),
    };
    if caller.service != "ecs" {
        return refuse(&AwsError::client_with_status(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'ecs'. ",
            403,
        ));
    }
    let params: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
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
    ws.on_upgrade(move |socket| session(state, target, socket))
}

async fn send(socket: &mut WebSocket, message: &ChannelMessage) -> bool {
    socket.send(Message::text(message.to_text())).await.is_ok()
}

async fn session(state: ChannelState, target: ChannelTarget, mut socket: WebSocket) {
    let ecs = state.ecs.clone();
    let number = ecs.begin_session(&target.instance_arn);
    if let Err(error) = ecs.set_agent_connected(&target, true).await {
        tracing::warn!(instance = %target.instance_arn, %error, "could not mark the agent connected");
    }
    let waker = match ecs.task_waker(&target).await {
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
            let payload = ecs.next_payload(&target, &mut pushed, full).await;
            if payload.is_ok() {
                full = false;
            }
            match payload {
                Ok(Some(payload)) => {
                    if !send(&mut socket, &ChannelMessage::PayloadMessage(payload)).await {
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
                if !send(&mut socket, &beat).await {
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
                        if !send(&mut socket, &ack).await {
                            break;
                        }
                    }
                    Ok(ChannelMessage::AckRequest(ack)) => {
                        tracing::trace!(instance = %target.instance_arn, seq = ack.seq_num, "payload acknowledged");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let refusal = ChannelMessage::ErrorMessage(ChannelError {
                            code: "InvalidParameterException".into(),
                            message: format!("undecodable message: {error}"),
                        });
                        let _ = send(&mut socket, &refusal).await;
                        break;
                    }
                }
            }
        }
    }
    if ecs.is_current_session(&target.instance_arn, number) {
        if let Err(error) = ecs.set_agent_connected(&target, false).await {
            tracing::warn!(instance = %target.instance_arn, %error, "could not mark the agent disconnected");
        }
    }
}
