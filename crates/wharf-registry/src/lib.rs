//! Wharf's image registry: the OCI Distribution Spec v1.1 over HTTP.
//!
//! This crate owns the `/v2/` API ([`registry_router`]), content-addressed blob
//! storage behind [`storage::BlobStore`] (with [`storage::FsBlobStore`] on a local
//! disk), and the registry's records — repositories, blob links, manifests, tags,
//! referrers, upload sessions — in Wharf's revisioned store ([`metadata`]). Every
//! request passes the [`auth::RegistryAuth`] hook first.
//!
//! What it must not do: trust a digest it did not compute (every blob and manifest is
//! hashed as it arrives and published only when the hash matches), let a repository
//! name reach a key or a path unvalidated, or answer bad input with a panic or a 500.
//! The ECR API ([`ecr::EcrService`]) works on the same records and blobs; [`build`]
//! wires both doors over one store, with ECR's rule that only CreateRepository creates
//! repositories and with GetAuthorizationToken's passwords guarding the OCI side.
//! Repository policies ([`policy`]) are evaluated on every request of both doors
//! ([`ecr::access`]); public repositories (ECR Public) admit anonymous pulls; blobs
//! nothing references are reclaimed online by [`gc`], designed so that it never races
//! a push.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod digest;
pub mod ecr;
pub mod error;
pub mod gc;
pub mod images;
pub mod manifest;
pub mod metadata;
pub mod names;
pub mod policy;
pub mod storage;
pub mod storage_s3;

pub use api::{registry_router, RegistryState, Route};
pub use auth::{Action, AllowAll, AuthChallenge, BasicTokens, RegistryAuth, TokenVerifier};
pub use digest::{Algorithm, Digest};
pub use ecr::{build, build_with, EcrService, EcrTokens, Registry, RegistryConfig};
pub use error::RegistryError;
pub use storage::{BlobStore, FsBlobStore, StorageError};

/// Opens the blob storage a location names: `s3://bucket[/prefix]` for an
/// S3-compatible bucket (at `s3_endpoint` when given, else AWS itself; credentials from
/// the usual `AWS_*` environment variables), anything else as a local directory.
pub fn open_blob_store(
    location: &str,
    s3_endpoint: Option<&str>,
    s3_region: &str,
) -> Result<std::sync::Arc<dyn BlobStore>, StorageError> {
    match storage_s3::S3Config::from_url(location) {
        Some(mut config) => {
            config.endpoint = s3_endpoint.map(str::to_string);
            config.allow_http = s3_endpoint.is_some_and(|e| e.starts_with("http://"));
            config.region = s3_region.to_string();
            Ok(std::sync::Arc::new(storage_s3::S3BlobStore::new(config)?))
        }
        None if location.starts_with("s3:") => Err(StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{location:?} is not an s3://bucket[/prefix] URL"),
        ))),
        None => Ok(std::sync::Arc::new(FsBlobStore::new(location)?)),
    }
}
