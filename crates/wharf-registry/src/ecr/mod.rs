//! The ECR API (`AmazonEC2ContainerRegistry_V20150921`, AWS JSON 1.1) over the same
//! records and blobs the OCI API serves, plus [`build`], which wires both doors.
//!
//! Requests are checked against the botocore model's input shape, parsed into request
//! structs, and answered in the model's output shape with ECR's exception names.
//!
//! Regions: the OCI API has no region in its URLs, so a registry serves exactly one
//! region, [`RegistryConfig::region`] (the one `wharf up` runs in). Repository records
//! are keyed by name alone; ECR calls signed for any other region are refused with
//! `InvalidParameterException` rather than silently sharing (or hiding) repositories.
//! Likewise `registryId` is always [`RegistryConfig::account_id`]: a `registryId` naming
//! another account is refused the same way.
//!
//! The same [`EcrService`] type also serves ECR Public (`ecr-public`, 2020-10-30, its
//! own model, target prefix and signing name, on the same listener): [`Door`] says
//! which. Public and private repositories share one namespace on the registry (a name
//! is either, never both: creating it through the other API is
//! `RepositoryAlreadyExistsException`), each API sees only its own kind, and a public
//! repository's `repositoryUri` is `<registry address>/<name>`, like a private one's.
//! Anyone may pull from a public repository without credentials; pushes need a token,
//! as for private ones.
//!
//! Every call naming a repository is checked against its repository policy for the
//! caller's identity ([`access::Identities`]) before it runs (see [`crate::policy`]).

pub mod access;
mod images;
mod layers;
pub mod lifecycle;
mod policies;
mod public;
mod repositories;
pub mod tokens;

use crate::error::RegistryError;
use crate::metadata::{system_clock, Clock, Metadata, RepositoryCreation, RepositoryRecord};
use crate::storage::{BlobStore, FsBlobStore, StorageError};
use crate::{registry_router, RegistryState};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use wharf_aws::model::ServiceModel;
use wharf_aws::{AwsError, AwsService, CallContext, Protocol, ServiceInput, ServiceOutput};
use wharf_store::Store;

pub use lifecycle::{
    evaluate, parse_policy, Expiration, LifecycleImage, LifecyclePolicy, LifecycleRun,
};
pub use tokens::{EcrTokens, IssuedToken, TOKEN_LIFETIME_MILLIS};

/// The botocore model of the ECR API, which decides the wire shapes.
pub const ECR_MODEL_JSON: &str = include_str!("../../../../models/ecr-2015-09-21.json");

/// The JSON 1.1 target prefix of ECR.
pub const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";

/// The botocore model of the ECR Public API.
pub const ECR_PUBLIC_MODEL_JSON: &str =
    include_str!("../../../../models/ecr-public-2020-10-30.json");

fn ecr_model() -> &'static ServiceModel {
    static MODEL: std::sync::OnceLock<ServiceModel> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        ServiceModel::from_json(ECR_MODEL_JSON).expect("the bundled ECR model parses")
    })
}

fn ecr_public_model() -> &'static ServiceModel {
    static MODEL: std::sync::OnceLock<ServiceModel> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        ServiceModel::from_json(ECR_PUBLIC_MODEL_JSON).expect("the bundled ECR Public model parses")
    })
}

/// Which of the two APIs an [`EcrService`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// ECR (`ecr`, 2015-09-21): private repositories.
    Private,
    /// ECR Public (`ecr-public`, 2020-10-30): public repositories.
    Public,
}

/// Where the registry lives and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The one region the registry serves (see the module documentation).
    pub region: String,
    /// The account id: every repository's `registryId` and ARN account.
    pub account_id: String,
    /// The OCI listener's `host:port`, used in `repositoryUri`, `proxyEndpoint` and
    /// download URLs (e.g. `127.0.0.1:5000`).
    pub registry_addr: String,
}

/// Both doors of one registry, ready to serve.
pub struct Registry {
    /// The ECR API, to register with the AWS front.
    pub ecr: Arc<EcrService>,
    /// The ECR Public API, to register with the AWS front as well.
    pub ecr_public: Arc<EcrService>,
    /// Which identity each access key is, for repository policies (keys not listed
    /// act for their account's root).
    pub identities: Arc<access::Identities>,
    /// The OCI `/v2/` router, authenticating `AWS:<password>` Basic credentials.
    pub router: axum::Router,
    /// The token issuer/verifier the two share.
    pub tokens: Arc<EcrTokens>,
}

/// Builds the registry over `store` (records and tokens) and blobs on the local disk
/// under `blobs_root`, with the system clock.
pub fn build(
    store: Arc<dyn Store>,
    blobs_root: impl Into<PathBuf>,
    config: RegistryConfig,
) -> Result<Registry, StorageError> {
    let blobs = Arc::new(FsBlobStore::new(blobs_root)?);
    Ok(build_with(store, blobs, config, system_clock()))
}

/// [`build`] with any blob store and clock.
pub fn build_with(
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    config: RegistryConfig,
    clock: Clock,
) -> Registry {
    let metadata =
        Metadata::with_options(store.clone(), RepositoryCreation::Explicit, clock.clone());
    let tokens = Arc::new(EcrTokens::new(store, clock));
    let auth = Arc::new(access::EcrRegistryAuth::new(
        tokens.clone(),
        metadata.clone(),
        &config.account_id,
        &config.region,
        &config.registry_addr,
    ));
    let router = access::token_router(tokens.clone()).merge(registry_router(
        RegistryState::with_metadata(metadata.clone(), blobs.clone(), auth),
    ));
    let identities = Arc::new(access::Identities::default());
    let ecr = EcrService::new(metadata, blobs, tokens.clone(), config)
        .with_identities(identities.clone());
    let ecr_public = Arc::new(ecr.public_twin());
    Registry {
        ecr: Arc::new(ecr),
        ecr_public,
        identities,
        router,
        tokens,
    }
}

/// The ECR API service.
pub struct EcrService {
    meta: Metadata,
    blobs: Arc<dyn BlobStore>,
    tokens: Arc<EcrTokens>,
    model: &'static ServiceModel,
    config: RegistryConfig,
    door: Door,
    identities: Arc<access::Identities>,
}

impl EcrService {
    /// The service over the registry's records and blobs; `metadata` should refuse
    /// implicit repository creation ([`RepositoryCreation::Explicit`]), as ECR does.
    pub fn new(
        metadata: Metadata,
        blobs: Arc<dyn BlobStore>,
        tokens: Arc<EcrTokens>,
        config: RegistryConfig,
    ) -> Self {
        Self {
            meta: metadata,
            blobs,
            tokens,
            model: ecr_model(),
            config,
            door: Door::Private,
            identities: Arc::new(access::Identities::default()),
        }
    }

    /// Resolves callers' identities through `identities`.
    pub fn with_identities(mut self, identities: Arc<access::Identities>) -> Self {
        self.identities = identities;
        self
    }

    /// The ECR Public API over the same records, blobs, tokens and identities.
    pub fn public_twin(&self) -> EcrService {
        EcrService {
            meta: self.meta.clone(),
            blobs: self.blobs.clone(),
            tokens: self.tokens.clone(),
            model: ecr_public_model(),
            config: self.config.clone(),
            door: Door::Public,
            identities: self.identities.clone(),
        }
    }

    /// The service model requests are checked against.
    pub fn model(&self) -> &'static ServiceModel {
        self.model
    }

    /// Which API this is.
    pub fn door(&self) -> Door {
        self.door
    }

    /// The registry's records.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The registry's blob storage.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The registry's configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    async fn dispatch(
        &self,
        op: &str,
        input: Value,
        who: &crate::policy::Principal,
    ) -> Result<Value, AwsError> {
        if self.door == Door::Public {
            return self.dispatch_public(op, input, who).await;
        }
        match op {
            "CreateRepository" => self.create_repository(parse(input)?).await,
            "DescribeRepositories" => self.describe_repositories(parse(input)?).await,
            "DeleteRepository" => self.delete_repository(parse(input)?).await,
            "PutImageTagMutability" => self.put_image_tag_mutability(parse(input)?).await,
            "TagResource" => self.tag_resource(parse(input)?).await,
            "UntagResource" => self.untag_resource(parse(input)?).await,
            "ListTagsForResource" => self.list_tags_for_resource(parse(input)?).await,
            "ListImages" => self.list_images(parse(input)?).await,
            "DescribeImages" => self.describe_images(parse(input)?).await,
            "BatchGetImage" => self.batch_get_image(parse(input)?).await,
            "BatchDeleteImage" => self.batch_delete_image(parse(input)?).await,
            "PutImage" => self.put_image(parse(input)?).await,
            "BatchCheckLayerAvailability" => {
                self.batch_check_layer_availability(parse(input)?).await
            }
            "InitiateLayerUpload" => self.initiate_layer_upload(parse(input)?).await,
            "UploadLayerPart" => self.upload_layer_part(parse(input)?).await,
            "CompleteLayerUpload" => self.complete_layer_upload(parse(input)?).await,
            "GetDownloadUrlForLayer" => self.get_download_url_for_layer(parse(input)?).await,
            "GetAuthorizationToken" => self.get_authorization_token(who).await,
            "SetRepositoryPolicy" => self.set_repository_policy(parse(input)?, who).await,
            "GetRepositoryPolicy" => self.get_repository_policy(parse(input)?).await,
            "DeleteRepositoryPolicy" => self.delete_repository_policy(parse(input)?).await,
            "PutLifecyclePolicy" => self.put_lifecycle_policy(parse(input)?).await,
            "GetLifecyclePolicy" => self.get_lifecycle_policy(parse(input)?).await,
            "DeleteLifecyclePolicy" => self.delete_lifecycle_policy(parse(input)?).await,
            "StartLifecyclePolicyPreview" => {
                self.start_lifecycle_policy_preview(parse(input)?).await
            }
            "GetLifecyclePolicyPreview" => self.get_lifecycle_policy_preview(parse(input)?).await,
            other => Err(AwsError::client(
                "UnknownOperationException",
                format!("Operation {other} is not supported by Wharf's ECR API."),
            )),
        }
    }

    /// Refuses calls for another region or registry (see the module documentation).
    fn check_scope(&self, region: &str, input: &Value) -> Result<(), AwsError> {
        if region != self.config.region {
            return Err(invalid(format!(
                "This Wharf registry serves region {}, not {region}",
                self.config.region
            )));
        }
        if let Some(id) = input.get("registryId").and_then(Value::as_str) {
            if id != self.config.account_id {
                return Err(invalid(format!(
                    "This Wharf registry is registry {}, not {id}",
                    self.config.account_id
                )));
            }
        }
        Ok(())
    }

    /// The ARN of a repository.
    fn repository_arn(&self, name: &str) -> String {
        match self.door {
            Door::Private => format!(
                "arn:aws:ecr:{}:{}:repository/{name}",
                self.config.region, self.config.account_id
            ),
            Door::Public => format!(
                "arn:aws:ecr-public::{}:repository/{name}",
                self.config.account_id
            ),
        }
    }

    /// A repository's record, or `RepositoryNotFoundException` (also for a repository
    /// of the other door).
    async fn existing_repository(&self, name: &str) -> Result<(RepositoryRecord, i64), AwsError> {
        self.meta
            .repository(name)
            .await
            .map_err(internal)?
            .filter(|(r, _)| r.public == (self.door == Door::Public))
            .ok_or_else(|| repository_not_found(&self.config.account_id, name))
    }
}

#[async_trait]
impl AwsService for EcrService {
    fn signing_name(&self) -> &'static str {
        self.model.signing_name()
    }

    fn protocol(&self) -> Protocol {
        Protocol::Json11 {
            target_prefix: self
                .model
                .target_prefix()
                .expect("the ECR models name a target prefix"),
        }
    }

    async fn call(
        &self,
        ctx: &CallContext,
        operation: &str,
        input: ServiceInput,
    ) -> Result<ServiceOutput, AwsError> {
        let ServiceInput::Json(input) = input else {
            return Err(AwsError::client(
                "SerializationException",
                "ECR speaks AWS JSON 1.1",
            ));
        };
        self.model.check_json_request(operation, &input)?;
        self.check_scope(&ctx.region, &input)?;
        let who = self
            .identities
            .principal(&ctx.access_key_id, &ctx.account_id);
        self.authorize_call(&who, operation, &input).await?;
        let mut output = self.dispatch(operation, input, &who).await?;
        wharf_aws::json::omit_nulls(&mut output);
        Ok(ServiceOutput::Json(output))
    }
}

/// Parses a request already checked against the model.
fn parse<T: DeserializeOwned>(input: Value) -> Result<T, AwsError> {
    serde_json::from_value(input)
        .map_err(|e| AwsError::client("SerializationException", e.to_string()))
}

fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

fn repository_not_found(account: &str, name: &str) -> AwsError {
    AwsError::client(
        "RepositoryNotFoundException",
        format!(
            "The repository with name '{name}' does not exist in the registry with id '{account}'"
        ),
    )
}

/// A store or storage failure: ECR's `ServerException`.
fn internal(e: RegistryError) -> AwsError {
    tracing::error!(error = %e, "ECR request failed");
    AwsError::server("ServerException", format!("{e}: {e:?}"))
}

/// Unix milliseconds as the JSON protocol's epoch seconds.
fn epoch_seconds(millis: i64) -> Value {
    serde_json::json!(millis as f64 / 1000.0)
}

/// A page of `items` from the position in `next_token`, and the token of the next page.
fn page<T>(
    items: Vec<T>,
    next_token: Option<&str>,
    max_results: Option<usize>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let start = match next_token {
        None => 0,
        Some(t) => wharf_aws::pagination::decode_token::<usize>(t)
            .filter(|s| *s <= items.len())
            .ok_or_else(|| invalid("Invalid nextToken"))?,
    };
    let max = max_results.unwrap_or(100);
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| wharf_aws::pagination::encode_token(&end));
    Ok((
        items.into_iter().skip(start).take(end - start).collect(),
        next,
    ))
}
