//! The channel between a node agent and the control plane, both sides' shared part.
//!
//! This crate owns the messages of the agent's WebSocket channel (modelled on ECS's
//! agent communication service: task payloads with sequence numbers that the agent
//! acknowledges, heartbeats both ways, and log requests that stream a task's container
//! logs back with flow control), the agent's signed client for the ECS
//! agent operations over JSON 1.1 ([`client::EcsClient`]), and the agent's side of the
//! channel session with reconnection and backoff ([`session`]). The real agent and the
//! hollow agents of `wharf sim` both use it, so there is one implementation of the
//! protocol.
//!
//! The channel also carries container logs on demand: the control plane asks with a
//! [`LogsRequest`], the agent answers with [`LogsOpened`], [`LogsChunk`]s and one
//! [`LogsEnd`], and the control plane sends [`LogsCancel`] when the reader goes away.
//! Chunks are flow-controlled: at most [`LOGS_WINDOW`] of a request travel
//! unacknowledged, and the control plane returns [`LogsAck`]s as its reader consumes
//! them, so a slow reader slows the container's log stream instead of filling memory.
//! Where the logs come from is the agent's business ([`session::TaskLogs`]).
//!
//! It must not run containers or decide placement.

use serde::{Deserialize, Serialize};

pub mod client;
pub mod session;

/// The ARN of the cluster a container instance ARN
/// (`arn:…:container-instance/<cluster>/<id>`) belongs to.
pub fn cluster_arn_of_instance(instance_arn: &str) -> Option<String> {
    let (prefix, rest) = instance_arn.split_once(":container-instance/")?;
    let (cluster, _) = rest.split_once('/')?;
    Some(format!("{prefix}:cluster/{cluster}"))
}

/// The path of the channel on the control plane's API listener.
pub const CHANNEL_PATH: &str = "/_wharf/agent/ws";

/// How many chunks of one logs request the agent may send that the control plane has
/// not acknowledged with [`LogsAck`]; the control plane buffers that many per request.
pub const LOGS_WINDOW: u32 = 256;

/// One message on the channel, as a JSON text frame
/// `{"type": "<variant>", "message": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "message")]
pub enum ChannelMessage {
    /// Control plane → agent: tasks whose desired state the agent must act on.
    PayloadMessage(Payload),
    /// Agent → control plane: a payload was received.
    AckRequest(Ack),
    /// Either way: the sender is alive.
    HeartbeatMessage(Heartbeat),
    /// Either way: a heartbeat was received.
    HeartbeatAckRequest(HeartbeatAck),
    /// Control plane → agent: the session cannot go on (e.g. the instance was
    /// deregistered); the agent should not reconnect with the same registration.
    ErrorMessage(ChannelError),
    /// Control plane → agent: stream a task's container logs.
    LogsRequest(LogsRequest),
    /// Agent → control plane: the logs of a request are open; chunks follow.
    LogsOpened(LogsOpened),
    /// Agent → control plane: a piece of a container's output.
    LogsChunk(LogsChunk),
    /// Agent → control plane: a logs request is over, with the reason if it failed.
    LogsEnd(LogsEnd),
    /// Control plane → agent: chunks of a request were consumed; as many more may be sent.
    LogsAck(LogsAck),
    /// Control plane → agent: stop streaming a request (its reader went away).
    LogsCancel(LogsCancel),
}

/// Tasks pushed to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Unique per message; echoed in the acknowledgement.
    pub message_id: String,
    /// The cluster of the instance.
    pub cluster_arn: String,
    /// The instance the tasks are placed on.
    pub container_instance_arn: String,
    /// Increases with every payload: the store revision of the newest change it carries.
    pub seq_num: i64,
    /// The tasks whose desired state changed (or every live task, on connection).
    pub tasks: Vec<TaskPayload>,
}

/// What an agent needs to run (or stop) one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPayload {
    /// The task ARN.
    pub arn: String,
    /// The task definition family.
    pub family: String,
    /// The task definition ARN.
    pub task_definition_arn: String,
    /// `RUNNING` or `STOPPED`.
    pub desired_status: String,
    /// The task's version; it grows with every change of the task.
    pub version: i64,
    /// The task definition in ECS's wire shape (`containerDefinitions`, `networkMode`, …).
    pub task_definition: serde_json::Value,
    /// RunTask's `overrides`.
    #[serde(default)]
    pub overrides: serde_json::Value,
    /// The container ARNs the control plane assigned, by container name.
    pub containers: Vec<ContainerPayload>,
    /// RunTask's `startedBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// The task group.
    pub group: String,
}

/// A container's identity in a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPayload {
    /// The container name from the task definition.
    pub name: String,
    /// The container ARN.
    pub container_arn: String,
}

/// An acknowledgement of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The acknowledged payload's id.
    pub message_id: String,
    /// Its sequence number.
    pub seq_num: i64,
}

/// A heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Unique per heartbeat; echoed in the acknowledgement.
    pub message_id: String,
    /// Whether the sender considers itself healthy.
    pub healthy: bool,
}

/// An acknowledgement of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAck {
    /// The acknowledged heartbeat's id.
    pub message_id: String,
}

/// Why the control plane ended a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelError {
    /// A short code, e.g. `InactiveInstanceException`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
}

/// A request for a task's container logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsRequest {
    /// Unique per request; every answer carries it.
    pub request_id: String,
    /// The task ARN.
    pub task_arn: String,
    /// One container by its task definition name; every container of the task when
    /// absent (each line then starts with the container's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Keep streaming what the containers write until they stop.
    #[serde(default)]
    pub follow: bool,
    /// Only the last `tail` entries of each container's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
}

/// The logs of a request are open: the task and containers exist and their log driver
/// can be read. Until this (or a [`LogsEnd`]) arrives nothing was streamed yet, so
/// the control plane can still answer its reader with an error status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsOpened {
    /// The request.
    pub request_id: String,
}

/// Which output of a container a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsChunk {
    /// The request.
    pub request_id: String,
    /// `stdout` or `stderr`.
    pub stream: OutputStream,
    /// The bytes written, as UTF-8 (invalid sequences replaced).
    pub data: String,
}

/// The end of a logs request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsEnd {
    /// The request.
    pub request_id: String,
    /// Why the logs could not be read (or broke off); absent when they simply ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Chunks of a request its reader consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsAck {
    /// The request.
    pub request_id: String,
    /// How many chunks were consumed since the previous acknowledgement.
    pub chunks: u32,
}

/// Stop streaming a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsCancel {
    /// The request.
    pub request_id: String,
}

impl ChannelMessage {
    /// Encodes the message as a JSON text frame.
    pub fn to_text(&self) -> String {
        // The message types are plain data, which serde_json always encodes.
        serde_json::to_string(self).expect("channel messages are always encodable")
    }

    /// Decodes a JSON text frame.
    pub fn from_text(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_the_type_tag() {
        let message = ChannelMessage::AckRequest(Ack {
            message_id: "m1".into(),
            seq_num: 7,
        });
        let text = message.to_text();
        assert_eq!(
            text,
            r#"{"type":"AckRequest","message":{"messageId":"m1","seqNum":7}}"#
        );
        assert_eq!(ChannelMessage::from_text(&text).unwrap(), message);
    }

    #[test]
    fn logs_messages_have_their_wire_shapes() {
        let cases = [
            (
                ChannelMessage::LogsRequest(LogsRequest {
                    request_id: "r1".into(),
                    task_arn: "arn:aws:ecs:us-east-1:0:task/c/t".into(),
                    container: Some("web".into()),
                    follow: true,
                    tail: Some(10),
                }),
                r#"{"type":"LogsRequest","message":{"requestId":"r1","taskArn":"arn:aws:ecs:us-east-1:0:task/c/t","container":"web","follow":true,"tail":10}}"#,
            ),
            (
                ChannelMessage::LogsRequest(LogsRequest {
                    request_id: "r2".into(),
                    task_arn: "t".into(),
                    container: None,
                    follow: false,
                    tail: None,
                }),
                r#"{"type":"LogsRequest","message":{"requestId":"r2","taskArn":"t","follow":false}}"#,
            ),
            (
                ChannelMessage::LogsOpened(LogsOpened {
                    request_id: "r1".into(),
                }),
                r#"{"type":"LogsOpened","message":{"requestId":"r1"}}"#,
            ),
            (
                ChannelMessage::LogsChunk(LogsChunk {
                    request_id: "r1".into(),
                    stream: OutputStream::Stderr,
                    data: "oops\n".into(),
                }),
                r#"{"type":"LogsChunk","message":{"requestId":"r1","stream":"stderr","data":"oops\n"}}"#,
            ),
            (
                ChannelMessage::LogsEnd(LogsEnd {
                    request_id: "r1".into(),
                    error: None,
                }),
                r#"{"type":"LogsEnd","message":{"requestId":"r1"}}"#,
            ),
            (
                ChannelMessage::LogsEnd(LogsEnd {
                    request_id: "r1".into(),
                    error: Some("no such container".into()),
                }),
                r#"{"type":"LogsEnd","message":{"requestId":"r1","error":"no such container"}}"#,
            ),
            (
                ChannelMessage::LogsAck(LogsAck {
                    request_id: "r1".into(),
                    chunks: 128,
                }),
                r#"{"type":"LogsAck","message":{"requestId":"r1","chunks":128}}"#,
            ),
            (
                ChannelMessage::LogsCancel(LogsCancel {
                    request_id: "r1".into(),
                }),
                r#"{"type":"LogsCancel","message":{"requestId":"r1"}}"#,
            ),
        ];
        for (message, text) in cases {
            assert_eq!(message.to_text(), text);
            assert_eq!(ChannelMessage::from_text(text).unwrap(), message);
        }
    }

    #[test]
    fn a_logs_request_without_optional_fields_decodes() {
        let message = ChannelMessage::from_text(
            r#"{"type":"LogsRequest","message":{"requestId":"r","taskArn":"t"}}"#,
        )
        .unwrap();
        let ChannelMessage::LogsRequest(request) = message else {
            panic!("{message:?}")
        };
        assert!(!request.follow);
        assert_eq!(request.tail, None);
        assert!(ChannelMessage::from_text(
            r#"{"type":"LogsChunk","message":{"requestId":"r","stream":"stdin","data":""}}"#
        )
        .is_err());
    }

    #[test]
    fn the_cluster_of_an_instance_arn() {
        assert_eq!(
            cluster_arn_of_instance("arn:aws:ecs:us-east-1:0:container-instance/prod/abc")
                .as_deref(),
            Some("arn:aws:ecs:us-east-1:0:cluster/prod")
        );
        assert_eq!(
            cluster_arn_of_instance("arn:aws:ecs:us-east-1:0:cluster/prod"),
            None
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in ["", "{}", "[]", r#"{"type":"Nope","message":{}}"#, "\u{0}"] {
            assert!(ChannelMessage::from_text(text).is_err(), "{text:?}");
        }
    }
}
