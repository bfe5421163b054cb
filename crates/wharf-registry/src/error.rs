//! The registry's errors and their one mapping to the distribution spec's error shape
//! (`{"errors":[{"code","message","detail"}]}`) and HTTP statuses.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// Why a registry request failed, named by the spec's error codes.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The blob is not in the repository.
    #[error("blob unknown to registry")]
    BlobUnknown(String),
    /// The upload failed or its chunk is invalid.
    #[error("blob upload invalid")]
    BlobUploadInvalid(String),
    /// No such upload session.
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown(String),
    /// The digest is malformed or does not match the content.
    #[error("provided digest did not match uploaded content")]
    DigestInvalid(String),
    /// A manifest references a blob or manifest that is not in the repository.
    #[error("manifest references a manifest or blob unknown to registry")]
    ManifestBlobUnknown(String),
    /// The manifest cannot be parsed or is not one the registry accepts.
    #[error("manifest invalid")]
    ManifestInvalid(String),
    /// No such manifest or tag.
    #[error("manifest unknown to registry")]
    ManifestUnknown(String),
    /// The repository name is invalid.
    #[error("invalid repository name")]
    NameInvalid(String),
    /// The repository does not exist.
    #[error("repository name not known to registry")]
    NameUnknown(String),
    /// A length does not match the content, or content exceeds a limit.
    #[error("provided length did not match content length")]
    SizeInvalid(String),
    /// The content exceeds the size the registry accepts (413).
    #[error("content too large")]
    TooLarge(String),
    /// The tag is invalid.
    #[error("manifest tag did not match URI")]
    TagInvalid(String),
    /// The tag exists and the repository's tags are immutable (`TAG_INVALID`, 400).
    #[error("{0}")]
    TagImmutable(String),
    /// The operation or media type is not supported.
    #[error("the operation is unsupported")]
    Unsupported(String),
    /// A chunk does not start where the upload ends (416).
    #[error("requested range not satisfiable")]
    RangeInvalid {
        /// Why.
        detail: String,
        /// The value of the `Range` (upload) or `Content-Range` (blob) header to send.
        header: Option<(header::HeaderName, String)>,
    },
    /// No credentials, or credentials that were refused (401).
    #[error("authentication required")]
    Unauthorized {
        /// The `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// Authenticated but not allowed (403).
    #[error("requested access to the resource is denied")]
    Denied(String),
    /// The store or blob storage failed; the only 500.
    #[error("internal error")]
    Internal(String),
}

impl RegistryError {
    /// The spec's error code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::BlobUploadInvalid(_) => "BLOB_UPLOAD_INVALID",
            RegistryError::BlobUploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            RegistryError::DigestInvalid(_) => "DIGEST_INVALID",
            RegistryError::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            RegistryError::ManifestInvalid(_) => "MANIFEST_INVALID",
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) => "NAME_UNKNOWN",
            RegistryError::SizeInvalid(_) | RegistryError::TooLarge(_) => "SIZE_INVALID",
            RegistryError::TagInvalid(_) | RegistryError::TagImmutable(_) => "TAG_INVALID",
            RegistryError::Unsupported(_) => "UNSUPPORTED",
            RegistryError::RangeInvalid { .. } => "RANGE_INVALID",
            RegistryError::Unauthorized { .. } => "UNAUTHORIZED",
            RegistryError::Denied(_) => "DENIED",
            RegistryError::Internal(_) => "UNKNOWN",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistryError::BlobUnknown(_)
            | RegistryError::BlobUploadUnknown(_)
            | RegistryError::ManifestUnknown(_)
            | RegistryError::NameUnknown(_) => StatusCode::NOT_FOUND,
            RegistryError::BlobUploadInvalid(_)
            | RegistryError::DigestInvalid(_)
            | RegistryError::ManifestBlobUnknown(_)
            | RegistryError::ManifestInvalid(_)
            | RegistryError::NameInvalid(_)
            | RegistryError::SizeInvalid(_)
            | RegistryError::TagInvalid(_)
            | RegistryError::TagImmutable(_) => StatusCode::BAD_REQUEST,
            RegistryError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            RegistryError::Denied(_) => StatusCode::FORBIDDEN,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            RegistryError::BlobUnknown(d)
            | RegistryError::BlobUploadInvalid(d)
            | RegistryError::BlobUploadUnknown(d)
            | RegistryError::DigestInvalid(d)
            | RegistryError::ManifestBlobUnknown(d)
            | RegistryError::ManifestInvalid(d)
            | RegistryError::ManifestUnknown(d)
            | RegistryError::NameInvalid(d)
            | RegistryError::NameUnknown(d)
            | RegistryError::SizeInvalid(d)
            | RegistryError::TooLarge(d)
            | RegistryError::TagInvalid(d)
            | RegistryError::TagImmutable(d)
            | RegistryError::Unsupported(d)
            | RegistryError::Denied(d)
            | RegistryError::Internal(d) => Some(d),
            RegistryError::RangeInvalid { detail, .. } => Some(detail),
            RegistryError::Unauthorized { .. } => None,
        }
    }
}

impl From<wharf_store::StoreError> for RegistryError {
    fn from(e: wharf_store::StoreError) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

impl From<crate::storage::StorageError> for RegistryError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match e {
            StorageError::DigestMismatch { .. } => RegistryError::DigestInvalid(e.to_string()),
            StorageError::UploadUnknown(id) => RegistryError::BlobUploadUnknown(id),
            StorageError::Io(_) => RegistryError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if let RegistryError::Internal(detail) = &self {
            tracing::error!(%detail, "registry request failed");
        }
        let body = serde_json::json!({
            "errors": [{
                "code": self.code(),
                "message": self.to_string(),
                "detail": self.detail(),
            }]
        });
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        let extra = match self {
            RegistryError::Unauthorized { challenge } => {
                Some((header::WWW_AUTHENTICATE, challenge))
            }
            RegistryError::RangeInvalid { header, .. } => header,
            _ => None,
        };
        if let Some((name, value)) = extra {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}
