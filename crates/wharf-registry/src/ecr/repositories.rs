//! Repository operations: Create/Describe/DeleteRepository, PutImageTagMutability and
//! the tag operations.

use super::{epoch_seconds, internal, invalid, page, repository_not_found, EcrService};
use crate::metadata::{RepositoryRecord, TagMutability};
use crate::names::is_valid_repository;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wharf_aws::AwsError;

const MAX_TAGS: usize = 50;

#[derive(Debug, Clone, Deserialize)]
pub(super) struct TagWire {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ExclusionFilter {
    filter: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScanningConfiguration {
    #[serde(default)]
    scan_on_push: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EncryptionConfiguration {
    encryption_type: String,
    kms_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateRepositoryRequest {
    repository_name: String,
    #[serde(default)]
    tags: Vec<TagWire>,
    image_tag_mutability: Option<String>,
    image_tag_mutability_exclusion_filters: Option<Vec<ExclusionFilter>>,
    image_scanning_configuration: Option<ScanningConfiguration>,
    encryption_configuration: Option<EncryptionConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DescribeRepositoriesRequest {
    repository_names: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteRepositoryRequest {
    repository_name: String,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutImageTagMutabilityRequest {
    repository_name: String,
    image_tag_mutability: String,
    image_tag_mutability_exclusion_filters: Option<Vec<ExclusionFilter>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TagResourceRequest {
    resource_arn: String,
    tags: Vec<TagWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UntagResourceRequest {
    resource_arn: String,
    tag_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListTagsForResourceRequest {
    resource_arn: String,
}

/// Parses `imageTagMutability` and its exclusion filters into the record's terms.
fn mutability(
    value: &str,
    filters: Option<Vec<ExclusionFilter>>,
) -> Result<(TagMutability, Vec<String>), AwsError> {
    let filters: Vec<String> = filters
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.filter)
        .collect();
    let (mode, with_exclusions) = match value {
        "MUTABLE" => (TagMutability::Mutable, false),
        "IMMUTABLE" => (TagMutability::Immutable, false),
        "MUTABLE_WITH_EXCLUSION" => (TagMutability::Mutable, true),
        "IMMUTABLE_WITH_EXCLUSION" => (TagMutability::Immutable, true),
        other => return Err(invalid(format!("Invalid imageTagMutability {other}"))),
    };
    if with_exclusions == filters.is_empty() {
        return Err(invalid(if with_exclusions {
            format!("imageTagMutabilityExclusionFilters are required with {value}")
        } else {
            format!("imageTagMutabilityExclusionFilters are only allowed with *_WITH_EXCLUSION, not {value}")
        }));
    }
    Ok((mode, filters))
}

fn mutability_name(record: &RepositoryRecord) -> &'static str {
    match (
        record.tag_mutability,
        record.mutability_exclusions.is_empty(),
    ) {
        (TagMutability::Mutable, true) => "MUTABLE",
        (TagMutability::Immutable, true) => "IMMUTABLE",
        (TagMutability::Mutable, false) => "MUTABLE_WITH_EXCLUSION",
        (TagMutability::Immutable, false) => "IMMUTABLE_WITH_EXCLUSION",
    }
}

fn exclusion_filters(record: &RepositoryRecord) -> Value {
    if record.mutability_exclusions.is_empty() {
        return Value::Null;
    }
    record
        .mutability_exclusions
        .iter()
        .map(|f| json!({"filterType": "WILDCARD", "filter": f}))
        .collect()
}

/// Merges tags into `into`, checking ECR's limits.
pub(super) fn merge_tags(
    into: &mut BTreeMap<String, String>,
    tags: Vec<TagWire>,
) -> Result<(), AwsError> {
    for t in tags {
        if t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256 || t.key.starts_with("aws:")
        {
            return Err(AwsError::client(
                "InvalidTagParameterException",
                format!("Invalid tag {:?}: keys are 1-128 characters not starting with aws:, values at most 256", t.key),
            ));
        }
        into.insert(t.key, t.value);
    }
    if into.len() > MAX_TAGS {
        return Err(AwsError::client(
            "TooManyTagsException",
            format!("A repository can have at most {MAX_TAGS} tags"),
        ));
    }
    Ok(())
}

fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    tags.iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect()
}

impl EcrService {
    /// The repository in the model's `Repository` shape.
    pub(super) fn repository_json(&self, name: &str, record: &RepositoryRecord) -> Value {
        if record.public {
            // ECR Public's `Repository` has these members only.
            return json!({
                "repositoryArn": self.repository_arn(name),
                "registryId": self.config.account_id,
                "repositoryName": name,
                "repositoryUri": format!("{}/{name}", self.config.registry_addr),
                "createdAt": epoch_seconds(record.created_at),
            });
        }
        let (encryption_type, kms_key) = record
            .encryption
            .clone()
            .unwrap_or_else(|| ("AES256".to_owned(), None));
        json!({
            "repositoryArn": self.repository_arn(name),
            "registryId": self.config.account_id,
            "repositoryName": name,
            "repositoryUri": format!("{}/{name}", self.config.registry_addr),
            "createdAt": epoch_seconds(record.created_at),
            "imageTagMutability": mutability_name(record),
            "imageTagMutabilityExclusionFilters": exclusion_filters(record),
            "imageScanningConfiguration": {"scanOnPush": record.scan_on_push},
            "encryptionConfiguration": {"encryptionType": encryption_type, "kmsKey": kms_key},
        })
    }

    pub(super) async fn create_repository(
        &self,
        req: CreateRepositoryRequest,
    ) -> Result<Value, AwsError> {
        let name = req.repository_name;
        if !is_valid_repository(&name) {
            return Err(invalid(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*'' and length 2-256: {name:?}"
            )));
        }
        let (tag_mutability, mutability_exclusions) = mutability(
            req.image_tag_mutability.as_deref().unwrap_or("MUTABLE"),
            req.image_tag_mutability_exclusion_filters,
        )?;
        let encryption = match req.encryption_configuration {
            None => None,
            Some(e) => {
                if e.encryption_type == "AES256" && e.kms_key.is_some() {
                    return Err(invalid(
                        "kmsKey can only be given with encryptionType KMS or KMS_DSSE",
                    ));
                }
                Some((e.encryption_type, e.kms_key))
            }
        };
        let mut tags = BTreeMap::new();
        merge_tags(&mut tags, req.tags)?;
        let record = RepositoryRecord {
            created_at: self.meta.now_millis(),
            tag_mutability,
            mutability_exclusions,
            scan_on_push: req
                .image_scanning_configuration
                .unwrap_or_default()
                .scan_on_push,
            encryption,
            tags,
            ..Default::default()
        };
        if !self
            .meta
            .create_repository(&name, &record)
            .await
            .map_err(internal)?
        {
            return Err(AwsError::client(
                "RepositoryAlreadyExistsException",
                format!(
                    "The repository with name '{name}' already exists in the registry with id '{}'",
                    self.config.account_id
                ),
            ));
        }
        Ok(json!({"repository": self.repository_json(&name, &record)}))
    }

    pub(super) async fn describe_repositories(
        &self,
        req: DescribeRepositoriesRequest,
    ) -> Result<Value, AwsError> {
        if let Some(names) = req.repository_names {
            if req.next_token.is_some() || req.max_results.is_some() {
                return Err(invalid(
                    "maxResults and nextToken cannot be used with repositoryNames",
                ));
            }
            let mut out = Vec::new();
            for name in names {
                let (record, _) = self.existing_repository(&name).await?;
                out.push(self.repository_json(&name, &record));
            }
            return Ok(json!({"repositories": out}));
        }
        // Each API lists the repositories of its own door.
        let public = self.door == super::Door::Public;
        let mut mine = Vec::new();
        for name in self.meta.repositories().await.map_err(internal)? {
            // A repository deleted since the listing is simply left out.
            if let Some((record, _)) = self.meta.repository(&name).await.map_err(internal)? {
                if record.public == public {
                    mine.push((name, record));
                }
            }
        }
        let (mine, next) = page(mine, req.next_token.as_deref(), req.max_results)?;
        let out: Vec<Value> = mine
            .iter()
            .map(|(name, record)| self.repository_json(name, record))
            .collect();
        Ok(json!({"repositories": out, "nextToken": next}))
    }

    pub(super) async fn delete_repository(
        &self,
        req: DeleteRepositoryRequest,
    ) -> Result<Value, AwsError> {
        let name = req.repository_name;
        let (record, _) = self.existing_repository(&name).await?;
        if !req.force
            && !self
                .meta
                .manifests(&name)
                .await
                .map_err(internal)?
                .is_empty()
        {
            return Err(AwsError::client(
                "RepositoryNotEmptyException",
                format!(
                    "The repository with name '{name}' in registry with id '{}' cannot be deleted because it still contains images",
                    self.config.account_id
                ),
            ));
        }
        if !self.meta.delete_repository(&name).await.map_err(internal)? {
            return Err(repository_not_found(&self.config.account_id, &name));
        }
        Ok(json!({"repository": self.repository_json(&name, &record)}))
    }

    /// Applies `change` to a repository's record, retrying lost races.
    pub(super) async fn update_repository(
        &self,
        name: &str,
        change: impl Fn(&mut RepositoryRecord) -> Result<(), AwsError>,
    ) -> Result<RepositoryRecord, AwsError> {
        for _ in 0..8 {
            let (mut record, rev) = self.existing_repository(name).await?;
            change(&mut record)?;
            if self
                .meta
                .update_repository(name, &record, rev)
                .await
                .map_err(internal)?
            {
                return Ok(record);
            }
        }
        Err(AwsError::server(
            "ServerException",
            format!("updates of {name} kept losing races"),
        ))
    }

    pub(super) async fn put_image_tag_mutability(
        &self,
        req: PutImageTagMutabilityRequest,
    ) -> Result<Value, AwsError> {
        let (mode, exclusions) = mutability(
            &req.image_tag_mutability,
            req.image_tag_mutability_exclusion_filters,
        )?;
        let record = self
            .update_repository(&req.repository_name, |r| {
                r.tag_mutability = mode;
                r.mutability_exclusions = exclusions.clone();
                Ok(())
            })
            .await?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": req.repository_name,
            "imageTagMutability": mutability_name(&record),
            "imageTagMutabilityExclusionFilters": exclusion_filters(&record),
        }))
    }

    /// The repository an ARN names, if the ARN is one of this registry's.
    fn repository_of_arn(&self, arn: &str) -> Result<String, AwsError> {
        let prefix = self.repository_arn("");
        arn.strip_prefix(&prefix)
            .filter(|n| is_valid_repository(n))
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("Invalid parameter at 'resourceArn': {arn} is not a repository ARN of this registry")))
    }

    pub(super) async fn tag_resource(&self, req: TagResourceRequest) -> Result<Value, AwsError> {
        let name = self.repository_of_arn(&req.resource_arn)?;
        self.update_repository(&name, |r| merge_tags(&mut r.tags, req.tags.clone()))
            .await?;
        Ok(json!({}))
    }

    pub(super) async fn untag_resource(
        &self,
        req: UntagResourceRequest,
    ) -> Result<Value, AwsError> {
        let name = self.repository_of_arn(&req.resource_arn)?;
        self.update_repository(&name, |r| {
            for k in &req.tag_keys {
                r.tags.remove(k);
            }
            Ok(())
        })
        .await?;
        Ok(json!({}))
    }

    pub(super) async fn list_tags_for_resource(
        &self,
        req: ListTagsForResourceRequest,
    ) -> Result<Value, AwsError> {
        let name = self.repository_of_arn(&req.resource_arn)?;
        let (record, _) = self.existing_repository(&name).await?;
        Ok(json!({"tags": tag_list(&record.tags)}))
    }
}
