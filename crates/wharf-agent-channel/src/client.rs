//! The agent's signed client for the ECS API (JSON 1.1 over HTTP, SigV4).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use wharf_aws::sigv4::{sign_http_request, SigningCredentials, SigningScope};

/// The target prefix of ECS operations.
const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113";
/// The target prefix of ECR operations.
const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint could not be reached or the connection broke.
    #[error("cannot reach the control plane: {0}")]
    Transport(String),
    /// The control plane answered with an AWS error.
    #[error("{code}: {message}")]
    Service {
        /// The HTTP status.
        status: u16,
        /// The error code (`__type`).
        code: String,
        /// The message.
        message: String,
    },
    /// The request could not be built or signed, or the answer was not JSON.
    #[error("malformed request or response: {0}")]
    Malformed(String),
}

impl ClientError {
    /// Whether trying again later may succeed (transport failures, throttling and
    /// server errors), as opposed to a request the server will always refuse.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Service { status, code, .. } => {
                *status >= 500 || code == "ThrottlingException"
            }
            ClientError::Malformed(_) => false,
        }
    }
}

/// A signed ECS client.
#[derive(Clone)]
pub struct EcsClient {
    http: Client<HttpConnector, Full<Bytes>>,
    endpoint: String,
    region: String,
    credentials: SigningCredentials,
}

impl EcsClient {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:4566`) in `region`.
    pub fn new(endpoint: &str, region: &str, credentials: SigningCredentials) -> Self {
        EcsClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: region.to_owned(),
            credentials,
        }
    }

    /// The endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The credentials requests are signed with.
    pub fn credentials(&self) -> &SigningCredentials {
        &self.credentials
    }

    /// Calls one ECS operation, retrying what may succeed later (transport failures,
    /// throttling, server errors) with exponential backoff from 50 ms to 5 s, at most
    /// `max_retries` times (`None`: until it succeeds or fails for good).
    pub async fn call_with_retry(
        &self,
        operation: &str,
        input: &Value,
        max_retries: Option<u32>,
    ) -> Result<Value, ClientError> {
        let mut delay = std::time::Duration::from_millis(50);
        let mut retries = 0;
        loop {
            match self.call(operation, input).await {
                Err(error)
                    if error.is_retryable() && max_retries.is_none_or(|max| retries < max) =>
                {
                    retries += 1;
                    tracing::debug!(%error, operation, "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// Calls one ECS operation.
    pub async fn call(&self, operation: &str, input: &Value) -> Result<Value, ClientError> {
        self.call_service("ecs", ECS_TARGET_PREFIX, operation, input)
            .await
    }

    /// Calls one ECR operation (the same endpoint serves every Wharf API).
    pub async fn call_ecr(&self, operation: &str, input: &Value) -> Result<Value, ClientError> {
        self.call_service("ecr", ECR_TARGET_PREFIX, operation, input)
            .await
    }

    /// Calls one operation of a JSON 1.1 service, signed for `signing_name`.
    async fn call_service(
        &self,
        signing_name: &str,
        target_prefix: &str,
        operation: &str,
        input: &Value,
    ) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(input).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let mut request = http::Request::post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("{target_prefix}.{operation}"))
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        sign_http_request(
            &mut request,
            &body,
            &self.credentials,
            SigningScope {
                region: &self.region,
                service: signing_name,
            },
            chrono::Utc::now(),
        )
        .map_err(|e| ClientError::Malformed(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Malformed(format!("{operation} answered non-JSON: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let text = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Err(ClientError::Service {
            status,
            code: text("__type"),
            message: text("message"),
        })
    }
}
