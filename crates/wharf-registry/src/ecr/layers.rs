//! Layer operations (ECR's JSON push path) and GetAuthorizationToken. Uploads are the
//! OCI API's upload sessions, so a layer pushed either way is the same blob link.

use super::{epoch_seconds, internal, invalid, EcrService};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::storage::StorageError;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;

/// The part size InitiateLayerUpload advertises.
const PART_SIZE: u64 = 10 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LayerDigestsRequest {
    repository_name: String,
    layer_digests: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RepositoryRequest {
    repository_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UploadLayerPartRequest {
    repository_name: String,
    upload_id: String,
    part_first_byte: u64,
    part_last_byte: u64,
    layer_part_blob: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CompleteLayerUploadRequest {
    repository_name: String,
    upload_id: String,
    layer_digests: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetDownloadUrlForLayerRequest {
    repository_name: String,
    layer_digest: String,
}

fn upload_not_found(id: &str, repo: &str) -> AwsError {
    AwsError::client(
        "UploadNotFoundException",
        format!("The upload with id '{id}' does not exist in the repository '{repo}'"),
    )
}

impl EcrService {
    pub(super) async fn batch_check_layer_availability(
        &self,
        req: LayerDigestsRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        self.existing_repository(repo).await?;
        let (mut layers, mut failures) = (Vec::new(), Vec::new());
        for text in &req.layer_digests {
            let Ok(digest) = text.parse::<Digest>() else {
                failures.push(json!({
                    "layerDigest": text,
                    "failureCode": if text.is_empty() { "MissingLayerDigest" } else { "InvalidLayerDigest" },
                    "failureReason": format!("Invalid layer digest {text:?}"),
                }));
                continue;
            };
            let linked = self.meta.blob_link(repo, &digest).await.map_err(internal)?;
            // The client will skip uploading a blob found here: keep it from garbage
            // collection meanwhile (a blob being collected is reported missing).
            let usable = linked.is_some()
                && self
                    .meta
                    .touch_blob(&digest, crate::metadata::BLOB_TOUCH_INTERVAL_MILLIS)
                    .await
                    .map_err(internal)?;
            let size = if usable {
                self.blobs
                    .stat(&digest)
                    .await
                    .map_err(|e| internal(e.into()))?
            } else {
                None
            };
            layers.push(match size {
                Some(size) => json!({"layerDigest": text, "layerAvailability": "AVAILABLE", "layerSize": size}),
                None => json!({"layerDigest": text, "layerAvailability": "UNAVAILABLE"}),
            });
        }
        Ok(json!({"layers": layers, "failures": failures}))
    }

    pub(super) async fn initiate_layer_upload(
        &self,
        req: RepositoryRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        self.existing_repository(repo).await?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        self.blobs
            .upload_create(&id)
            .await
            .map_err(|e| internal(e.into()))?;
        self.meta
            .create_upload(&id, repo)
            .await
            .map_err(|e| match e {
                RegistryError::NameUnknown(_) => {
                    super::repository_not_found(&self.config.account_id, repo)
                }
                other => internal(other),
            })?;
        Ok(json!({"uploadId": id, "partSize": PART_SIZE}))
    }

    /// The upload session `id` of `repo`, with its revision.
    async fn session(
        &self,
        repo: &str,
        id: &str,
    ) -> Result<(String, crate::metadata::UploadRecord, i64), AwsError> {
        self.existing_repository(repo).await?;
        let id = uuid::Uuid::parse_str(id)
            .map(|u| u.hyphenated().to_string())
            .map_err(|_| upload_not_found(id, repo))?;
        match self.meta.upload(&id).await.map_err(internal)? {
            Some((record, rev)) if record.repository == repo => Ok((id, record, rev)),
            _ => Err(upload_not_found(&id, repo)),
        }
    }

    pub(super) async fn upload_layer_part(
        &self,
        req: UploadLayerPartRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let (id, mut record, rev) = self.session(repo, &req.upload_id).await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(req.layer_part_blob.as_bytes())
            .map_err(|e| invalid(format!("Invalid parameter at 'layerPartBlob': {e}")))?;
        let last_valid = record.size as i64 - 1;
        let part_error = |why: String| {
            AwsError::client(
                "InvalidLayerPartException",
                format!("{why}; last valid byte received: {last_valid}"),
            )
        };
        if req.part_first_byte != record.size {
            return Err(part_error(format!(
                "The part starts at byte {}, but the upload has {} bytes",
                req.part_first_byte, record.size
            )));
        }
        if bytes.is_empty()
            || req.part_last_byte < req.part_first_byte
            || req.part_last_byte - req.part_first_byte + 1 != bytes.len() as u64
        {
            return Err(part_error(format!(
                "partFirstByte {} and partLastByte {} do not frame the {} bytes sent",
                req.part_first_byte,
                req.part_last_byte,
                bytes.len()
            )));
        }
        let mut appender = self
            .blobs
            .upload_append(&id, record.size)
            .await
            .map_err(|e| internal(e.into()))?;
        appender
            .write(&bytes)
            .await
            .map_err(|e| internal(e.into()))?;
        let size = appender.finish().await.map_err(|e| internal(e.into()))?;
        record.size = size;
        if !self
            .meta
            .set_upload_size(&id, &record, rev)
            .await
            .map_err(internal)?
        {
            return Err(part_error(
                "The upload was changed by a concurrent request".to_owned(),
            ));
        }
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "uploadId": id,
            "lastByteReceived": size - 1,
        }))
    }

    pub(super) async fn complete_layer_upload(
        &self,
        req: CompleteLayerUploadRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let (id, record, _) = self.session(repo, &req.upload_id).await?;
        let [text] = req.layer_digests.as_slice() else {
            return Err(invalid("Exactly one layer digest is expected"));
        };
        let digest: Digest = text.parse().map_err(|e| {
            AwsError::client(
                "InvalidLayerException",
                format!("Invalid layer digest {text:?}: {e}"),
            )
        })?;
        if record.size == 0 {
            return Err(AwsError::client(
                "EmptyUploadException",
                format!("The upload with id '{id}' has no layer parts"),
            ));
        }
        if self
            .meta
            .blob_link(repo, &digest)
            .await
            .map_err(internal)?
            .is_some()
        {
            self.meta.delete_upload(&id).await.map_err(internal)?;
            let _ = self.blobs.upload_delete(&id).await;
            return Err(AwsError::client(
                "LayerAlreadyExistsException",
                format!("The layer '{digest}' already exists in the repository with name '{repo}'"),
            ));
        }
        self.meta.claim_blob(&digest).await.map_err(internal)?;
        match self.blobs.upload_commit(&id, record.size, &digest).await {
            Ok(_) => {}
            Err(e @ StorageError::DigestMismatch { .. }) => {
                return Err(AwsError::client("InvalidLayerException", e.to_string()))
            }
            Err(e) => return Err(internal(e.into())),
        }
        self.meta
            .link_blob(repo, &digest, record.size)
            .await
            .map_err(|e| match e {
                RegistryError::NameUnknown(_) => {
                    super::repository_not_found(&self.config.account_id, repo)
                }
                other => internal(other),
            })?;
        self.meta.delete_upload(&id).await.map_err(internal)?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "uploadId": id,
            "layerDigest": digest.to_string(),
        }))
    }

    pub(super) async fn get_download_url_for_layer(
        &self,
        req: GetDownloadUrlForLayerRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        self.existing_repository(repo).await?;
        let digest: Digest = req
            .layer_digest
            .parse()
            .map_err(|e| invalid(format!("Invalid parameter at 'layerDigest': {e}")))?;
        let present = self
            .meta
            .blob_link(repo, &digest)
            .await
            .map_err(internal)?
            .is_some()
            && self
                .blobs
                .stat(&digest)
                .await
                .map_err(|e| internal(e.into()))?
                .is_some();
        if !present {
            return Err(AwsError::client(
                "LayersNotFoundException",
                format!("The layer '{digest}' does not exist in the repository with name '{repo}'"),
            ));
        }
        Ok(json!({
            "downloadUrl": format!("http://{}/v2/{repo}/blobs/{digest}", self.config.registry_addr),
            "layerDigest": digest.to_string(),
        }))
    }

    pub(super) async fn get_authorization_token(
        &self,
        who: &crate::policy::Principal,
    ) -> Result<Value, AwsError> {
        let issued = match who {
            crate::policy::Principal::Identity { arn, .. } => self.tokens.issue_for(arn).await,
            crate::policy::Principal::Anonymous => self.tokens.issue().await,
        };
        let token = issued.map_err(|e| internal(e.into()))?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", token.password));
        Ok(json!({"authorizationData": [{
            "authorizationToken": encoded,
            "expiresAt": epoch_seconds(token.expires_at),
            "proxyEndpoint": format!("http://{}", self.config.registry_addr),
        }]}))
    }
}
