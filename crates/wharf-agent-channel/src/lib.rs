//! The channel between a node agent and the control plane, both sides' shared part.
//!
//! This crate owns the messages of the agent's WebSocket channel (modelled on ECS's
//! agent communication service: task payloads with sequence numbers that the agent
//! acknowledges, and heartbeats both ways), the agent's signed client for the ECS
//! agent operations over JSON 1.1 ([`client::EcsClient`]), and the agent's side of the
//! channel session with reconnection and backoff ([`session`]). The real agent and the
//! hollow agents of `wharf sim` both use it, so there is one implementation of the
//! protocol.
//!
//! It must not run containers or decide placement.

use serde::{Deserialize, Serialize};

pub mod client;
pub mod session;

/// The path of the channel on the control plane's API listener.
pub const CHANNEL_PATH: &str = "/_wharf/agent/ws";

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
    fn garbage_is_an_error_not_a_panic() {
        for text in ["", "{}", "[]", r#"{"type":"Nope","message":{}}"#, "\u{0}"] {
            assert!(ChannelMessage::from_text(text).is_err(), "{text:?}");
        }
    }
}
