//! The error every AWS-protocol operation can return, mapped to each protocol's shape.

/// Who is at fault: the protocol's `Sender`/`Receiver` (client errors are HTTP 4xx,
/// server errors 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller sent something wrong.
    Sender,
    /// The service failed.
    Receiver,
}

/// An error in the protocol's terms: the code SDKs turn into an exception class, a
/// message, and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    /// The error code, e.g. `ClusterNotFoundException` or `TargetGroupNotFound`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
    /// The HTTP status code.
    pub status: u16,
    /// Sender or receiver fault.
    pub fault: Fault,
}

impl AwsError {
    /// A client error (HTTP 400) with the given code.
    pub fn client(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status: 400,
            fault: Fault::Sender,
        }
    }
    /// A client error with an explicit status (e.g. 403 for authentication failures).
    pub fn client_with_status(
        code: impl Into<String>,
        message: impl Into<String>,
        status: u16,
    ) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status,
            fault: Fault::Sender,
        }
    }
    /// A server error (HTTP 500) with the given code, e.g. `ServerException`.
    pub fn server(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status: 500,
            fault: Fault::Receiver,
        }
    }
}
