//! Image operations: ListImages, DescribeImages, BatchGetImage, BatchDeleteImage and
//! PutImage. An ECR image is a manifest of the repository; its tags are the tags
//! pointing at it.

use super::{epoch_seconds, internal, invalid, page, EcrService};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::images::{read_blob, store_manifest};
use crate::metadata::ManifestRecord;
use crate::names::is_valid_tag;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wharf_aws::AwsError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ImageIdentifier {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

impl ImageIdentifier {
    fn to_json(&self) -> Value {
        json!({"imageDigest": self.image_digest, "imageTag": self.image_tag})
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TagFilter {
    tag_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListImagesRequest {
    repository_name: String,
    next_token: Option<String>,
    max_results: Option<usize>,
    filter: Option<TagFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DescribeImagesRequest {
    repository_name: String,
    image_ids: Option<Vec<ImageIdentifier>>,
    next_token: Option<String>,
    max_results: Option<usize>,
    filter: Option<TagFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchImagesRequest {
    repository_name: String,
    image_ids: Vec<ImageIdentifier>,
    /// BatchGetImage's `acceptedMediaTypes`: manifests of other types are failures.
    accepted_media_types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutImageRequest {
    repository_name: String,
    image_manifest: String,
    image_manifest_media_type: Option<String>,
    image_tag: Option<String>,
    image_digest: Option<String>,
}

/// A repository's images: each manifest with the tags pointing at it.
struct Images {
    manifests: BTreeMap<String, (Digest, ManifestRecord)>,
    tags: Vec<(String, String)>,
}

impl Images {
    /// The manifest lists (indexes) of the repository that reference `digest`.
    fn lists_referencing(&self, digest: &str) -> Vec<String> {
        self.manifests
            .iter()
            .filter(|(_, (_, r))| {
                matches!(
                    r.media_type.as_str(),
                    crate::manifest::OCI_INDEX | crate::manifest::DOCKER_LIST
                ) && r
                    .references
                    .as_ref()
                    .is_some_and(|refs| refs.iter().any(|d| d == digest))
            })
            .map(|(d, _)| d.clone())
            .collect()
    }

    fn tags_of(&self, digest: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, d)| d == digest)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Resolves an image id to a manifest digest, or the ImageFailure code and reason.
    fn resolve(&self, id: &ImageIdentifier) -> Result<String, (&'static str, String)> {
        let by_tag = match &id.image_tag {
            None => None,
            Some(t) if !is_valid_tag(t) => {
                return Err(("InvalidImageTag", format!("Invalid image tag {t:?}")))
            }
            Some(t) => match self.tags.iter().find(|(tag, _)| tag == t) {
                Some((_, d)) => Some(d.clone()),
                None => return Err(("ImageNotFound", "Requested image not found".into())),
            },
        };
        let by_digest = match &id.image_digest {
            None => None,
            Some(d) => match d.parse::<Digest>() {
                Err(_) => {
                    return Err(("InvalidImageDigest", format!("Invalid image digest {d:?}")))
                }
                Ok(d) => match self.manifests.get(&d.to_string()) {
                    Some(_) => Some(d.to_string()),
                    None => return Err(("ImageNotFound", "Requested image not found".into())),
                },
            },
        };
        match (by_tag, by_digest) {
            (None, None) => Err((
                "MissingDigestAndTag",
                "Invalid request parameters: both tag and digest cannot be null".into(),
            )),
            (Some(t), Some(d)) if t != d => Err((
                "ImageTagDoesNotMatchDigest",
                "Invalid request parameters: given tag and digest do not match".into(),
            )),
            (Some(d), _) | (None, Some(d)) => Ok(d),
        }
    }
}

fn failure(id: &ImageIdentifier, (code, reason): (&'static str, String)) -> Value {
    json!({"imageId": id.to_json(), "failureCode": code, "failureReason": reason})
}

/// The model's `ImageIdentifierList` has at least one member, so an empty list is left
/// out (null members are dropped before the answer is sent).
fn non_empty(ids: Vec<Value>) -> Value {
    if ids.is_empty() {
        Value::Null
    } else {
        Value::Array(ids)
    }
}

fn tag_status(filter: Option<&TagFilter>) -> &str {
    filter
        .and_then(|f| f.tag_status.as_deref())
        .unwrap_or("ANY")
}

impl EcrService {
    async fn images(&self, repo: &str) -> Result<Images, AwsError> {
        self.existing_repository(repo).await?;
        let manifests = self
            .meta
            .manifests(repo)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|(d, r)| (d.to_string(), (d, r)))
            .collect();
        let tags = self.meta.tag_targets(repo).await.map_err(internal)?;
        Ok(Images { manifests, tags })
    }

    pub(super) async fn list_images(&self, req: ListImagesRequest) -> Result<Value, AwsError> {
        let images = self.images(&req.repository_name).await?;
        let status = tag_status(req.filter.as_ref());
        let mut ids = Vec::new();
        if status != "UNTAGGED" {
            for (tag, digest) in &images.tags {
                ids.push(json!({"imageDigest": digest, "imageTag": tag}));
            }
        }
        if status != "TAGGED" {
            for digest in images.manifests.keys() {
                if images.tags_of(digest).is_empty() {
                    ids.push(json!({"imageDigest": digest}));
                }
            }
        }
        let (ids, next) = page(ids, req.next_token.as_deref(), req.max_results)?;
        Ok(json!({"imageIds": non_empty(ids), "nextToken": next}))
    }

    /// The model's `ImageDetail` of one manifest, reading its tags.
    pub(super) async fn image_detail_of(
        &self,
        repo: &str,
        digest: &Digest,
        record: &ManifestRecord,
    ) -> Result<Value, AwsError> {
        let images = self.images(repo).await?;
        self.image_detail(repo, &images, digest, record).await
    }

    /// The model's `ImageDetail` of one manifest.
    async fn image_detail(
        &self,
        repo: &str,
        images: &Images,
        digest: &Digest,
        record: &ManifestRecord,
    ) -> Result<Value, AwsError> {
        let body = read_blob(self.blobs.as_ref(), digest)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // ECR reports the compressed size of the layers (plus the config) of an image
        // manifest; an index has no layers of its own, so its own size is reported.
        let size = match doc.get("layers").and_then(Value::as_array) {
            Some(layers) => layers
                .iter()
                .chain(doc.get("config"))
                .filter_map(|d| d.get("size").and_then(Value::as_u64))
                .sum::<u64>(),
            None => record.size,
        };
        let artifact = doc
            .get("config")
            .and_then(|c| c.get("mediaType"))
            .cloned()
            .unwrap_or(Value::Null);
        let last_pull = self
            .meta
            .last_pull(repo, digest)
            .await
            .map_err(internal)?
            .map(epoch_seconds);
        let tags = images.tags_of(&digest.to_string());
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "imageDigest": digest.to_string(),
            "imageTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "imageSizeInBytes": size,
            "imagePushedAt": record.pushed_at.map(epoch_seconds),
            "imageManifestMediaType": record.media_type,
            "artifactMediaType": artifact,
            "lastRecordedPullTime": last_pull,
            "subjectManifestDigest": record.subject,
            "imageStatus": "ACTIVE",
        }))
    }

    pub(super) async fn describe_images(
        &self,
        req: DescribeImagesRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let images = self.images(repo).await?;
        let digests: Vec<String> = match &req.image_ids {
            Some(ids) => {
                if req.next_token.is_some() || req.max_results.is_some() {
                    return Err(invalid(
                        "maxResults and nextToken cannot be used with imageIds",
                    ));
                }
                let mut out = Vec::new();
                for id in ids {
                    match images.resolve(id) {
                        Ok(d) => {
                            if !out.contains(&d) {
                                out.push(d)
                            }
                        }
                        Err((_, reason)) => {
                            return Err(AwsError::client(
                                "ImageNotFoundException",
                                format!(
                                    "The image with imageId {} does not exist within the repository with name '{repo}': {reason}",
                                    id.to_json()
                                ),
                            ))
                        }
                    }
                }
                out
            }
            None => {
                let status = tag_status(req.filter.as_ref());
                images
                    .manifests
                    .keys()
                    .filter(|d| match status {
                        "TAGGED" => !images.tags_of(d).is_empty(),
                        "UNTAGGED" => images.tags_of(d).is_empty(),
                        _ => true,
                    })
                    .cloned()
                    .collect()
            }
        };
        let (digests, next) = if req.image_ids.is_some() {
            (digests, None)
        } else {
            page(digests, req.next_token.as_deref(), req.max_results)?
        };
        let mut details = Vec::new();
        for d in digests {
            let (digest, record) = &images.manifests[&d];
            details.push(self.image_detail(repo, &images, digest, record).await?);
        }
        Ok(json!({"imageDetails": details, "nextToken": next}))
    }

    pub(super) async fn batch_get_image(&self, req: BatchImagesRequest) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let images = self.images(repo).await?;
        let (mut found, mut failures) = (Vec::new(), Vec::new());
        for id in &req.image_ids {
            let digest = match images.resolve(id) {
                Ok(d) => d,
                Err(f) => {
                    failures.push(failure(id, f));
                    continue;
                }
            };
            let (digest, record) = &images.manifests[&digest];
            if let Some(accepted) = &req.accepted_media_types {
                if !accepted.iter().any(|t| t == &record.media_type) {
                    failures.push(failure(
                        id,
                        (
                            "ImageNotFound",
                            format!(
                                "The image's manifest is {}, which is not among the acceptedMediaTypes",
                                record.media_type
                            ),
                        ),
                    ));
                    continue;
                }
            }
            let Some(body) = read_blob(self.blobs.as_ref(), digest)
                .await
                .map_err(internal)?
            else {
                failures.push(failure(
                    id,
                    ("ImageNotFound", "Requested image not found".into()),
                ));
                continue;
            };
            if let Err(e) = self.meta.record_pull(repo, digest).await {
                tracing::warn!(error = %e, "recording a pull failed");
            }
            found.push(json!({
                "registryId": self.config.account_id,
                "repositoryName": repo,
                "imageId": {"imageDigest": digest.to_string(), "imageTag": id.image_tag},
                "imageManifest": String::from_utf8_lossy(&body),
                "imageManifestMediaType": record.media_type,
            }));
        }
        Ok(json!({"images": found, "failures": failures}))
    }

    pub(super) async fn batch_delete_image(
        &self,
        req: BatchImagesRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let (mut deleted, mut failures) = (Vec::new(), Vec::new());
        for id in &req.image_ids {
            // Re-read per id: an earlier deletion in the batch may have removed it.
            let images = self.images(repo).await?;
            let digest_text = match images.resolve(id) {
                Ok(d) => d,
                Err(f) => {
                    failures.push(failure(id, f));
                    continue;
                }
            };
            let digest = images.manifests[&digest_text].0.clone();
            // Deleting the image (not just one of several tags) while a manifest list
            // of the repository references it would leave the list dangling.
            let removes_image = id.image_tag.is_none()
                || id.image_digest.is_some()
                || images.tags_of(&digest_text).len() <= 1;
            let lists = images.lists_referencing(&digest_text);
            if removes_image && !lists.is_empty() {
                failures.push(failure(
                    id,
                    (
                        "ImageReferencedByManifestList",
                        format!(
                            "Requested image is referenced by the manifest list {}",
                            lists.join(", ")
                        ),
                    ),
                ));
                continue;
            }
            match (&id.image_tag, &id.image_digest) {
                // By tag alone: the tag goes; the image goes with its last tag, as in ECR.
                (Some(tag), None) => {
                    self.meta.delete_tag(repo, tag).await.map_err(internal)?;
                    if images.tags_of(&digest_text).len() <= 1 {
                        self.meta
                            .delete_manifest(repo, &digest)
                            .await
                            .map_err(internal)?;
                    }
                    deleted.push(json!({"imageDigest": digest_text, "imageTag": tag}));
                }
                // By digest: the image and every tag pointing at it.
                _ => {
                    self.meta
                        .delete_manifest(repo, &digest)
                        .await
                        .map_err(internal)?;
                    let tags = images.tags_of(&digest_text);
                    if tags.is_empty() {
                        deleted.push(json!({"imageDigest": digest_text}));
                    }
                    for t in tags {
                        deleted.push(json!({"imageDigest": digest_text, "imageTag": t}));
                    }
                }
            }
        }
        Ok(json!({"imageIds": non_empty(deleted), "failures": failures}))
    }

    pub(super) async fn put_image(&self, req: PutImageRequest) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        self.existing_repository(repo).await?;
        if let Some(t) = &req.image_tag {
            if !is_valid_tag(t) {
                return Err(invalid(format!("Invalid parameter at 'imageTag': {t:?}")));
            }
        }
        let claimed = match &req.image_digest {
            None => None,
            Some(d) => Some(
                d.parse::<Digest>()
                    .map_err(|e| invalid(format!("Invalid parameter at 'imageDigest': {e}")))?,
            ),
        };
        let bytes = req.image_manifest.as_bytes();
        let digest = claimed
            .clone()
            .unwrap_or_else(|| Digest::of(crate::digest::Algorithm::Sha256, bytes));
        // ECR refuses a PutImage that changes nothing.
        let exists = self
            .meta
            .manifest(repo, &digest)
            .await
            .map_err(internal)?
            .is_some();
        let tag_target = match &req.image_tag {
            Some(t) => self.meta.tag(repo, t).await.map_err(internal)?,
            None => None,
        };
        if exists && (req.image_tag.is_none() || tag_target.as_ref() == Some(&digest)) {
            return Err(AwsError::client(
                "ImageAlreadyExistsException",
                format!(
                    "Image with digest '{digest}'{} already exists in the repository with name '{repo}' in registry with id '{}'",
                    req.image_tag.as_deref().map(|t| format!(" and tag '{t}'")).unwrap_or_default(),
                    self.config.account_id
                ),
            ));
        }
        let is_list = serde_json::from_slice::<Value>(bytes)
            .ok()
            .is_some_and(|doc| doc.get("manifests").is_some_and(Value::is_array));
        let (digest, record) = store_manifest(
            &self.meta,
            self.blobs.as_ref(),
            repo,
            bytes,
            req.image_manifest_media_type.as_deref(),
            claimed,
            req.image_tag.as_deref(),
        )
        .await
        .map_err(|e| match e {
            RegistryError::NameUnknown(_) => {
                super::repository_not_found(&self.config.account_id, repo)
            }
            RegistryError::TagImmutable(m) => AwsError::client("ImageTagAlreadyExistsException", m),
            RegistryError::DigestInvalid(m) => {
                AwsError::client("ImageDigestDoesNotMatchException", m)
            }
            // A list or index names images, an image names layers.
            RegistryError::ManifestBlobUnknown(m) if is_list => AwsError::client(
                "ReferencedImagesNotFoundException",
                format!("Referenced images not found in the repository: {m}"),
            ),
            RegistryError::ManifestBlobUnknown(m) => AwsError::client(
                "LayersNotFoundException",
                format!("Layers not found in the repository: {m}"),
            ),
            RegistryError::ManifestInvalid(m) | RegistryError::TooLarge(m) => {
                invalid(format!("Invalid parameter at 'imageManifest': {m}"))
            }
            other => internal(other),
        })?;
        Ok(json!({"image": {
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "imageId": {"imageDigest": digest.to_string(), "imageTag": req.image_tag},
            "imageManifest": req.image_manifest,
            "imageManifestMediaType": record.media_type,
        }}))
    }
}
