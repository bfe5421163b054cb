//! The ECR Public API (`SpencerFrontendService`, signing name `ecr-public`): public
//! repositories, their images and tags, catalog data, policies and the public
//! authorization token. The push operations and the policy operations are the private
//! API's own handlers, which only ever see repositories of their door.

use super::{epoch_seconds, internal, invalid, page, parse, EcrService};
use crate::metadata::RepositoryRecord;
use crate::names::is_valid_repository;
use crate::policy::Principal;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use wharf_aws::AwsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatePublicRepositoryRequest {
    repository_name: String,
    catalog_data: Option<Map<String, Value>>,
    #[serde(default)]
    tags: Vec<super::repositories::TagWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    repository_name: String,
    next_token: Option<String>,
    max_results: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CatalogDataRequest {
    repository_name: String,
    catalog_data: Option<Map<String, Value>>,
}

/// The members of the model's `ImageDetail` (public), `ReferencedImageDetail` and
/// `RepositoryCatalogDataInput` that carry over.
const IMAGE_DETAIL: [&str; 8] = [
    "registryId",
    "repositoryName",
    "imageDigest",
    "imageTags",
    "imageSizeInBytes",
    "imagePushedAt",
    "imageManifestMediaType",
    "artifactMediaType",
];
const REFERENCED_IMAGE_DETAIL: [&str; 5] = [
    "imageDigest",
    "imageSizeInBytes",
    "imagePushedAt",
    "imageManifestMediaType",
    "artifactMediaType",
];
const CATALOG_FIELDS: [&str; 5] = [
    "description",
    "architectures",
    "operatingSystems",
    "aboutText",
    "usageText",
];

fn only(value: &Value, members: &[&str]) -> Value {
    let mut out = Map::new();
    if let Some(obj) = value.as_object() {
        for m in members {
            if let Some(v) = obj.get(*m) {
                out.insert((*m).to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Catalog data as stored: the input's fields without the logo (Wharf serves no logo
/// URLs), checked against ECR Public's limits.
fn catalog_record(input: Map<String, Value>) -> Result<Value, AwsError> {
    let limits = [
        ("description", 1024),
        ("aboutText", 25600),
        ("usageText", 25600),
    ];
    for (field, max) in limits {
        if let Some(text) = input.get(field).and_then(Value::as_str) {
            if text.chars().count() > max {
                return Err(invalid(format!(
                    "Invalid parameter at 'catalogData.{field}': longer than {max} characters"
                )));
            }
        }
    }
    Ok(only(&Value::Object(input), &CATALOG_FIELDS))
}

fn catalog_json(record: &RepositoryRecord) -> Value {
    let mut data = record
        .catalog_data
        .clone()
        .unwrap_or_else(|| Value::Object(Map::new()));
    data["marketplaceCertified"] = Value::Bool(false);
    data
}

impl EcrService {
    pub(super) async fn dispatch_public(
        &self,
        op: &str,
        input: Value,
        who: &Principal,
    ) -> Result<Value, AwsError> {
        match op {
            "CreateRepository" => self.create_public_repository(parse(input)?).await,
            "DescribeRepositories" => self.describe_repositories(parse(input)?).await,
            "DeleteRepository" => self.delete_repository(parse(input)?).await,
            "DescribeImages" => {
                let mut out = self.describe_images(parse(input)?).await?;
                if let Some(details) = out.get_mut("imageDetails").and_then(Value::as_array_mut) {
                    for d in details.iter_mut() {
                        *d = only(d, &IMAGE_DETAIL);
                    }
                }
                Ok(out)
            }
            "DescribeImageTags" => self.describe_image_tags(parse(input)?).await,
            "GetAuthorizationToken" => {
                let mut out = self.get_authorization_token(who).await?;
                // ECR Public answers one object without a proxy endpoint.
                let data = out["authorizationData"][0].take();
                Ok(json!({"authorizationData": only(&data, &["authorizationToken", "expiresAt"])}))
            }
            "PutRepositoryCatalogData" => self.put_catalog_data(parse(input)?).await,
            "GetRepositoryCatalogData" => {
                let req: CatalogDataRequest = parse(input)?;
                let (record, _) = self.existing_repository(&req.repository_name).await?;
                Ok(json!({"catalogData": catalog_json(&record)}))
            }
            "DescribeRegistries" => Ok(json!({"registries": [{
                "registryId": self.config.account_id,
                "registryArn": format!("arn:aws:ecr-public::{0}:registry/{0}", self.config.account_id),
                "registryUri": self.config.registry_addr,
                "verified": false,
                "aliases": [],
            }]})),
            "GetRegistryCatalogData" => Ok(json!({"registryCatalogData": {}})),
            "SetRepositoryPolicy" => self.set_repository_policy(parse(input)?, who).await,
            "GetRepositoryPolicy" => self.get_repository_policy(parse(input)?).await,
            "DeleteRepositoryPolicy" => self.delete_repository_policy(parse(input)?).await,
            "TagResource" => self.tag_resource(parse(input)?).await,
            "UntagResource" => self.untag_resource(parse(input)?).await,
            "ListTagsForResource" => self.list_tags_for_resource(parse(input)?).await,
            "BatchCheckLayerAvailability" => {
                self.batch_check_layer_availability(parse(input)?).await
            }
            "InitiateLayerUpload" => self.initiate_layer_upload(parse(input)?).await,
            "UploadLayerPart" => self.upload_layer_part(parse(input)?).await,
            "CompleteLayerUpload" => self.complete_layer_upload(parse(input)?).await,
            "PutImage" => self.put_image(parse(input)?).await,
            "BatchDeleteImage" => self.batch_delete_image(parse(input)?).await,
            other => Err(AwsError::client(
                "UnsupportedCommandException",
                format!("Operation {other} is not supported by Wharf's ECR Public API."),
            )),
        }
    }

    async fn create_public_repository(
        &self,
        req: CreatePublicRepositoryRequest,
    ) -> Result<Value, AwsError> {
        let name = req.repository_name;
        if !is_valid_repository(&name) {
            return Err(invalid(format!(
                "Invalid parameter at 'repositoryName' failed to satisfy constraint: {name:?}"
            )));
        }
        let mut tags = BTreeMap::new();
        super::repositories::merge_tags(&mut tags, req.tags)?;
        let record = RepositoryRecord {
            created_at: self.meta.now_millis(),
            tags,
            public: true,
            catalog_data: req.catalog_data.map(catalog_record).transpose()?,
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
                    "The repository with name '{name}' already exists in the registry with id '{}' (public and private repositories share one namespace)",
                    self.config.account_id
                ),
            ));
        }
        Ok(json!({
            "repository": self.repository_json(&name, &record),
            "catalogData": catalog_json(&record),
        }))
    }

    async fn put_catalog_data(&self, req: CatalogDataRequest) -> Result<Value, AwsError> {
        let data = catalog_record(req.catalog_data.unwrap_or_default())?;
        let record = self
            .update_repository(&req.repository_name, |r| {
                r.catalog_data = Some(data.clone());
                Ok(())
            })
            .await?;
        Ok(json!({"catalogData": catalog_json(&record)}))
    }

    async fn describe_image_tags(&self, req: ListRequest) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        self.existing_repository(repo).await?;
        let tags = self.meta.tag_targets(repo).await.map_err(internal)?;
        let (tags, next) = page(tags, req.next_token.as_deref(), req.max_results)?;
        let mut out = Vec::new();
        for (tag, digest_text) in tags {
            let Ok(digest) = digest_text.parse::<crate::digest::Digest>() else {
                continue;
            };
            // A tag whose manifest went meanwhile is left out.
            let Some(record) = self.meta.manifest(repo, &digest).await.map_err(internal)? else {
                continue;
            };
            let detail = self.image_detail_of(repo, &digest, &record).await?;
            out.push(json!({
                "imageTag": tag,
                "createdAt": record.pushed_at.map(epoch_seconds),
                "imageDetail": only(&detail, &REFERENCED_IMAGE_DETAIL),
            }));
        }
        Ok(json!({"imageTagDetails": out, "nextToken": next}))
    }
}
