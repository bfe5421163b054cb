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
//! Repository policies and garbage collection are not here yet.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod digest;
pub mod ecr;
pub mod error;
pub mod images;
pub mod manifest;
pub mod metadata;
pub mod names;
pub mod storage;
pub mod storage_s3;

pub use api::{registry_router, RegistryState, Route};
pub use auth::{Action, AllowAll, AuthChallenge, BasicTokens, RegistryAuth, TokenVerifier};
pub use digest::{Algorithm, Digest};
pub use ecr::{build, build_with, EcrService, EcrTokens, Registry, RegistryConfig};
pub use error::RegistryError;
pub use storage::{BlobStore, FsBlobStore, StorageError};
