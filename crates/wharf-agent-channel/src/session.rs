//! The agent's side of the channel: connect (with a presigned URL), receive task
//! payloads and acknowledge them, answer and send heartbeats, and reconnect with
//! exponential backoff whenever the connection drops.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use wharf_aws::sigv4::{presign_query, PresignTarget, SigningScope};

use crate::client::EcsClient;
use crate::{
    Ack, ChannelError, ChannelMessage, Heartbeat, HeartbeatAck, TaskPayload, CHANNEL_PATH,
};

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
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 unreserved characters pass; everything else is percent-encoded, as SigV4
/// canonical query strings require.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Runs the session until `shutdown` turns true, the engine drops `events`, or the
/// control plane refuses the registration.
pub async fn run_session(
    client: EcsClient,
    config: SessionConfig,
    events: mpsc::Sender<SessionEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = config.min_backoff;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let ended = connect_once(&client, &config, &events, &mut shutdown).await;
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

async fn connect_once(
    client: &EcsClient,
    config: &SessionConfig,
    events: &mpsc::Sender<SessionEvent>,
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
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                return Ended::Stop;
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
                    ChannelMessage::AckRequest(_) | ChannelMessage::HeartbeatAckRequest(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode("arn:aws:ecs:us-east-1:0:cluster/a b"),
            "arn%3Aaws%3Aecs%3Aus-east-1%3A0%3Acluster%2Fa%20b"
        );
    }
}
