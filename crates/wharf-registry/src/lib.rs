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
//! It knows nothing of the ECR API, repository policies or garbage collection; those
//! plug in through the auth hook and the [`metadata::Metadata`] records.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod metadata;
pub mod names;
pub mod storage;

pub use api::{registry_router, RegistryState, Route};
pub use auth::{Action, AllowAll, AuthChallenge, BasicTokens, RegistryAuth, TokenVerifier};
pub use digest::{Algorithm, Digest};
pub use error::RegistryError;
pub use storage::{BlobStore, FsBlobStore, StorageError};
