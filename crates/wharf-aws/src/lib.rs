//! The AWS wire protocols, as a library.
//!
//! This crate owns everything a request goes through before it reaches a service's
//! logic, and everything a response goes through after: SigV4 verification (and
//! signing, for Wharf's own clients) in [`sigv4`], the shared listener in [`front`]
//! (request ids, body limits, routing by `X-Amz-Target` or by the SigV4 credential
//! scope's service, the JSON 1.1 and query/XML response and error shapes SDKs map to
//! exception classes), query-protocol form decoding and XML writing in [`query`],
//! opaque pagination tokens in [`pagination`], and checking JSON values against the
//! botocore service models kept under `models/` in [`model`] (which also reads
//! query-protocol forms into such values and writes query results as XML, both by the
//! model's shapes).
//!
//! It must not know ECS (or any other service's) semantics: services plug in through
//! the [`AwsService`] trait and see typed, authenticated calls. It keeps no state
//! between requests, reads no clock of its own (the front is given one) and does no
//! I/O beyond reading the request it is handed.

#![warn(missing_docs)]

use async_trait::async_trait;

pub mod error;
pub mod front;
pub mod json;
pub mod model;
pub mod pagination;
pub mod query;
pub mod sigv4;

pub use error::{AwsError, Fault};
pub use front::AwsFront;
pub use sigv4::{Credential, CredentialStore, StaticCredentials, VerifiedCaller};

/// The wire protocol a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.1: `POST /`, operation in `X-Amz-Target: <prefix>.<Operation>`.
    Json11 {
        /// The target prefix, e.g. `AmazonEC2ContainerServiceV20141113`.
        target_prefix: &'static str,
    },
    /// The AWS query protocol: form-encoded `Action=…&Version=…`, XML responses.
    Query {
        /// The XML namespace of responses, e.g.
        /// `http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/`.
        xmlns: &'static str,
        /// The API version clients send in `Version`.
        version: &'static str,
    },
}

/// Who is calling and where: established by the front end before a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The request id echoed in `x-amzn-RequestId` and error bodies.
    pub request_id: String,
    /// The region from the SigV4 credential scope; it selects the regional state.
    pub region: String,
    /// The access key id that signed the request.
    pub access_key_id: String,
    /// The account the key belongs to.
    pub account_id: String,
}

/// A decoded request body.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceInput {
    /// A JSON 1.1 body (`{}` when the client sent an empty body).
    Json(serde_json::Value),
    /// A query-protocol form, without `Action` and `Version`.
    Query(Vec<(String, String)>),
}

/// A response body before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceOutput {
    /// A JSON 1.1 response body.
    Json(serde_json::Value),
    /// The inner XML of a query-protocol `<OperationResult>` element.
    QueryResultXml(String),
}

/// A service behind the shared AWS listener.
#[async_trait]
pub trait AwsService: Send + Sync + 'static {
    /// The SigV4 signing name, e.g. `ecs`.
    fn signing_name(&self) -> &'static str;
    /// The wire protocol and its routing key.
    fn protocol(&self) -> Protocol;
    /// Runs one operation for an authenticated caller.
    async fn call(
        &self,
        ctx: &CallContext,
        operation: &str,
        input: ServiceInput,
    ) -> Result<ServiceOutput, AwsError>;
}
