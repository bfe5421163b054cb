//! The shared AWS listener: one axum `Router` in front of every service.
//!
//! Each request gets a request id (echoed in `x-amzn-RequestId` on every response), has
//! its body read under a size limit, is authenticated with SigV4, and is routed either
//! by `X-Amz-Target` (JSON 1.1) or, without that header, by the credential scope's
//! service name (query protocol). Errors from any step are written in the shape the
//! caller's protocol expects, so SDKs raise the right exception class.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{AwsError, Fault};
use crate::query::{escape_xml, parse_form};
use crate::sigv4::{self, CredentialStore, SigV4Request, VerifiedCaller};
use crate::{AwsService, CallContext, Protocol, ServiceInput, ServiceOutput};

/// The clock the front checks signatures against.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The default cap on request bodies: 10 MiB, above any AWS control-plane payload.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The content type of JSON 1.1 requests and responses.
pub const JSON_11_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Query parameters that carry a presigned request's authentication, not its input.
const PRESIGN_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Builds the shared AWS listener.
pub struct AwsFront {
    credentials: Arc<dyn CredentialStore>,
    clock: Clock,
    services: Vec<Arc<dyn AwsService>>,
    max_body_bytes: usize,
}

impl std::fmt::Debug for AwsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsFront")
            .field("services", &self.services.len())
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// The routing tables, fixed when the router is built.
struct Routes {
    credentials: Arc<dyn CredentialStore>,
    clock: Clock,
    max_body_bytes: usize,
    /// JSON 1.1 services by target prefix.
    json: HashMap<&'static str, Arc<dyn AwsService>>,
    /// Query services by signing name, with their namespace.
    query: HashMap<&'static str, (Arc<dyn AwsService>, &'static str)>,
}

/// Runs a service call on its own task, so that a bug that panics inside a service is
/// answered with the protocol's server error instead of dropping the connection.
async fn call_guarded(
    service: &Arc<dyn AwsService>,
    ctx: CallContext,
    operation: &str,
    input: ServiceInput,
) -> Result<ServiceOutput, AwsError> {
    let service = Arc::clone(service);
    let operation = operation.to_owned();
    let op_name = operation.clone();
    match tokio::spawn(async move { service.call(&ctx, &operation, input).await }).await {
        Ok(result) => result,
        Err(join_error) => {
            tracing::error!(operation = %op_name, error = %join_error, "service call panicked");
            Err(AwsError::server(
                "InternalFailure",
                "The request processing has failed because of an unknown error, exception or failure.",
            ))
        }
    }
}

/// The shape an error response takes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Json,
    Query { xmlns: Option<&'static str> },
}

impl AwsFront {
    /// A front with no services that verifies signatures against `credentials` at the
    /// time `clock` gives.
    pub fn new(credentials: Arc<dyn CredentialStore>, clock: Clock) -> Self {
        Self {
            credentials,
            clock,
            services: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Adds a service. A later service with the same target prefix (JSON) or signing
    /// name (query) replaces an earlier one.
    pub fn service(mut self, service: Arc<dyn AwsService>) -> Self {
        self.services.push(service);
        self
    }

    /// Sets the largest accepted request body, in bytes.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// The router: it answers every path and method itself, so every response — even
    /// for a request nothing can serve — carries a request id and an AWS error shape.
    pub fn router(self) -> Router {
        let mut json = HashMap::new();
        let mut query = HashMap::new();
        for service in self.services {
            match service.protocol() {
                Protocol::Json11 { target_prefix } => {
                    json.insert(target_prefix, service);
                }
                Protocol::Query { xmlns, .. } => {
                    query.insert(service.signing_name(), (service, xmlns));
                }
            }
        }
        let routes = Arc::new(Routes {
            credentials: self.credentials,
            clock: self.clock,
            max_body_bytes: self.max_body_bytes,
            json,
            query,
        });
        Router::new().fallback(move |request: Request<Body>| {
            let routes = routes.clone();
            async move { routes.handle(request).await }
        })
    }
}

impl Routes {
    async fn handle(&self, request: Request<Body>) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (parts, body) = request.into_parts();
        let is_json = parts.headers.contains_key("x-amz-target");
        let early_shape = if is_json {
            Shape::Json
        } else {
            Shape::Query { xmlns: None }
        };

        let too_large = || {
            AwsError::client_with_status(
                "RequestEntityTooLarge",
                format!(
                    "Request body is larger than the {} bytes allowed.",
                    self.max_body_bytes
                ),
                413,
            )
        };
        let declared_len = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_len.is_some_and(|n| n > self.max_body_bytes as u64) {
            return error_response(early_shape, &request_id, &too_large());
        }
        let body = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return error_response(early_shape, &request_id, &too_large());
            }
            Err(e) => {
                let err = AwsError::client(
                    "InvalidRequest",
                    format!("Could not read the request body: {e}"),
                );
                return error_response(early_shape, &request_id, &err);
            }
        };

        // HTTP/2 carries the host in `:authority`; SigV4 signs it as `host`.
        let with_host;
        let headers: &HeaderMap = match (
            parts.headers.contains_key(http::header::HOST),
            parts.uri.authority(),
        ) {
            (false, Some(authority)) => match HeaderValue::from_str(authority.as_str()) {
                Ok(value) => {
                    let mut h = parts.headers.clone();
                    h.insert(http::header::HOST, value);
                    with_host = h;
                    &with_host
                }
                Err(_) => &parts.headers,
            },
            _ => &parts.headers,
        };
        let signed = SigV4Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers,
            body: &body,
        };
        let caller = match sigv4::verify(&signed, self.credentials.as_ref(), (self.clock)()) {
            Ok(caller) => caller,
            Err(e) => return error_response(early_shape, &request_id, &e.into()),
        };

        if is_json {
            self.json(&request_id, headers, &body, caller).await
        } else {
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let is_form = parts.method == http::Method::POST
                && content_type
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded");
            let mut params: Vec<(String, String)> =
                parse_form(parts.uri.query().unwrap_or("").as_bytes())
                    .into_iter()
                    .filter(|(k, _)| !PRESIGN_PARAMS.contains(&k.as_str()))
                    .collect();
            if is_form {
                params.extend(parse_form(&body));
            }
            self.query(&request_id, params, caller).await
        }
    }

    async fn json(
        &self,
        request_id: &str,
        headers: &HeaderMap,
        body: &[u8],
        caller: VerifiedCaller,
    ) -> Response {
        let target = headers
            .get("x-amz-target")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let unknown = || {
            AwsError::client(
                "UnknownOperationException",
                format!("Unknown operation: '{target}'."),
            )
        };
        let Some((prefix, operation)) = target.rsplit_once('.').filter(|(_, op)| !op.is_empty())
        else {
            return error_response(Shape::Json, request_id, &unknown());
        };
        let Some(service) = self.json.get(prefix) else {
            return error_response(Shape::Json, request_id, &unknown());
        };
        if service.signing_name() != caller.service {
            let err = wrong_scope(service.signing_name());
            return error_response(Shape::Json, request_id, &err);
        }
        let input = match parse_json_body(body) {
            Ok(v) => v,
            Err(err) => return error_response(Shape::Json, request_id, &err),
        };
        let ctx = context(request_id, caller);
        match call_guarded(service, ctx, operation, ServiceInput::Json(input)).await {
            Ok(ServiceOutput::Json(value)) => {
                let body = serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec());
                respond(StatusCode::OK, JSON_11_CONTENT_TYPE, body, request_id, None)
            }
            Ok(ServiceOutput::QueryResultXml(_)) => {
                let err = AwsError::server(
                    "InternalFailure",
                    "The service returned a query-protocol result to a JSON request.",
                );
                error_response(Shape::Json, request_id, &err)
            }
            Err(err) => error_response(Shape::Json, request_id, &err),
        }
    }

    async fn query(
        &self,
        request_id: &str,
        mut params: Vec<(String, String)>,
        caller: VerifiedCaller,
    ) -> Response {
        let Some((service, xmlns)) = self.query.get(caller.service.as_str()) else {
            let err = AwsError::client(
                "UnknownOperationException",
                format!("No service is signed as '{}'.", caller.service),
            );
            return error_response(Shape::Query { xmlns: None }, request_id, &err);
        };
        let shape = Shape::Query {
            xmlns: Some(*xmlns),
        };
        let Some(action) = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
        else {
            let err = AwsError::client("MissingAction", "Missing Action");
            return error_response(shape, request_id, &err);
        };
        // The action names XML elements of the response, so only a plain identifier may
        // pass; anything else could not be an operation anyway.
        if action.is_empty() || !action.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let err = AwsError::client(
                "InvalidAction",
                format!("The action {} is not valid for this web service.", action),
            );
            return error_response(shape, request_id, &err);
        }
        params.retain(|(k, _)| k != "Action" && k != "Version");
        let ctx = context(request_id, caller);
        match call_guarded(service, ctx, &action, ServiceInput::Query(params)).await {
            Ok(ServiceOutput::QueryResultXml(inner)) => {
                let body = format!(
                    "<{action}Response xmlns=\"{}\"><{action}Result>{inner}</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
                    escape_xml(xmlns),
                    escape_xml(request_id)
                );
                respond(
                    StatusCode::OK,
                    "text/xml",
                    body.into_bytes(),
                    request_id,
                    None,
                )
            }
            Ok(ServiceOutput::Json(_)) => {
                let err = AwsError::server(
                    "InternalFailure",
                    "The service returned a JSON result to a query-protocol request.",
                );
                error_response(shape, request_id, &err)
            }
            Err(err) => error_response(shape, request_id, &err),
        }
    }
}

/// AWS's answer when a JSON request was signed for another service.
fn wrong_scope(signing_name: &str) -> AwsError {
    AwsError::client(
        "InvalidSignatureException",
        format!("Credential should be scoped to correct service: '{signing_name}'. "),
    )
}

fn context(request_id: &str, caller: VerifiedCaller) -> CallContext {
    CallContext {
        request_id: request_id.to_string(),
        region: caller.region,
        access_key_id: caller.access_key_id,
        account_id: caller.account_id,
    }
}

/// Decodes a JSON 1.1 body: empty means `{}`, anything else must be a JSON object.
pub fn parse_json_body(body: &[u8]) -> Result<serde_json::Value, AwsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(AwsError::client(
            "SerializationException",
            "Start of structure or map found where not expected.",
        )),
        Err(e) => Err(AwsError::client(
            "SerializationException",
            format!("The request body is not valid JSON: {e}"),
        )),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    request_id: &str,
    error_type: Option<&str>,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    if let Some(code) = error_type.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("x-amzn-errortype", code);
    }
    response
}

fn error_response(shape: Shape, request_id: &str, err: &AwsError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(request_id, code = %err.code, message = %err.message, status = err.status, "AWS request failed on the server side");
    }
    match shape {
        Shape::Json => {
            let body = serde_json::json!({ "__type": err.code, "message": err.message });
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            respond(
                status,
                JSON_11_CONTENT_TYPE,
                bytes,
                request_id,
                Some(&err.code),
            )
        }
        Shape::Query { xmlns } => {
            let fault = match err.fault {
                Fault::Sender => "Sender",
                Fault::Receiver => "Receiver",
            };
            let open = match xmlns {
                Some(ns) => format!("<ErrorResponse xmlns=\"{}\">", escape_xml(ns)),
                None => "<ErrorResponse>".to_string(),
            };
            let body = format!(
                "{open}<Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                escape_xml(&err.code),
                escape_xml(&err.message),
                escape_xml(request_id)
            );
            respond(status, "text/xml", body.into_bytes(), request_id, None)
        }
    }
}

#[cfg(test)]
mod tests;
