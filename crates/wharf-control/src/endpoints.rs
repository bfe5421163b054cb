//! What Wharf's own endpoints on the API listener share (the agent channel, the logs
//! stream and the load balancer feed): SigV4 verification scoped to one service, and
//! refusals in AWS's JSON error shape.

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use wharf_aws::sigv4::{verify, CredentialStore, SigV4Request, VerifiedCaller};
use wharf_aws::AwsError;

/// Verifies a signed request (headers or presigned query) whose credential is scoped
/// to `service`; anything else is refused with 403.
pub(crate) fn authenticate(
    credentials: &dyn CredentialStore,
    service: &str,
    method: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<VerifiedCaller, AwsError> {
    let request = SigV4Request {
        method,
        path: uri.path(),
        query: uri.query(),
        headers,
        body,
    };
    let caller = verify(&request, credentials, chrono::Utc::now())?;
    if caller.service != service {
        return Err(AwsError::client_with_status(
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{service}'. "),
            403,
        ));
    }
    Ok(caller)
}

/// An AWS JSON error answer with its status and a request id.
pub(crate) fn refuse(error: &AwsError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({"__type": error.code, "message": error.message}).to_string();
    (
        status,
        [
            ("content-type", "application/x-amz-json-1.1".to_owned()),
            ("x-amzn-requestid", uuid::Uuid::new_v4().to_string()),
        ],
        body,
    )
        .into_response()
}
