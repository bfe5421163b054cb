//! Resource tags: TagResource, UntagResource, ListTagsForResource, and the tag rules
//! every taggable operation shares.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{Arn, ResourceKind};

use super::{invalid, keys, Cx, EcsService};
use crate::records::{too_much_contention, MAX_CONFLICT_RETRIES};

/// One tag, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tag {
    pub key: String,
    pub value: String,
}

/// The tag list of a request (`[{key, value}]`). It serializes back to its wire form,
/// so that a request holding tags can be compared with an earlier one.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct WireTag {
    key: Option<String>,
    value: Option<String>,
}

/// Validates request tags as ECS does and returns them in stored form.
pub(crate) fn check_tags(tags: Vec<WireTag>) -> Result<Vec<Tag>, AwsError> {
    if tags.len() > 50 {
        return Err(invalid("Tags can have a maximum of 50 tags."));
    }
    let mut out: Vec<Tag> = Vec::with_capacity(tags.len());
    for tag in tags {
        let key = tag.key.unwrap_or_default();
        let value = tag.value.unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(invalid("Tag keys must be between 1 and 128 characters."));
        }
        if value.chars().count() > 256 {
            return Err(invalid("Tag values must be at most 256 characters."));
        }
        if is_reserved(&key) {
            return Err(invalid(
                "Tag keys may not start with the reserved prefix 'aws:'.",
            ));
        }
        match out.iter_mut().find(|t| t.key == key) {
            Some(existing) => existing.value = value,
            None => out.push(Tag { key, value }),
        }
    }
    Ok(out)
}

/// Whether a tag key has the prefix reserved for AWS (any case of `aws:`).
fn is_reserved(key: &str) -> bool {
    key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"))
}

/// Merges `new` into `tags`, overwriting values of keys present in both.
pub(crate) fn merge_tags(tags: &mut Vec<Tag>, new: Vec<Tag>) {
    for tag in new {
        match tags.iter_mut().find(|t| t.key == tag.key) {
            Some(existing) => existing.value = tag.value,
            None => tags.push(tag),
        }
    }
}

/// Tags in wire shape.
pub(crate) fn wire_tags(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect(),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagResourceRequest {
    resource_arn: String,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UntagResourceRequest {
    resource_arn: String,
    #[serde(default)]
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListTagsForResourceRequest {
    resource_arn: String,
}

impl EcsService {
    /// The store key of the taggable resource an ARN names.
    fn tagged_key(
        &self,
        cx: &Cx<'_>,
        resource_arn: &str,
    ) -> Result<(String, ResourceKind), AwsError> {
        let arn = Arn::parse(resource_arn).map_err(|e| invalid(e.to_string()))?;
        if arn.region != cx.region || arn.account != cx.account {
            return Err(not_found());
        }
        let key = match arn.kind {
            ResourceKind::Cluster => keys::cluster(cx.region, &arn.resource),
            ResourceKind::TaskDefinition => {
                let (family, revision) = arn
                    .resource
                    .rsplit_once(':')
                    .and_then(|(f, r)| Some((f, r.parse::<i64>().ok()?)))
                    .ok_or_else(|| invalid("The task definition ARN must name a revision."))?;
                keys::task_definition(cx.region, family, revision)
            }
            ResourceKind::Task | ResourceKind::ContainerInstance => {
                let (cluster, id) = arn
                    .resource
                    .split_once('/')
                    .ok_or_else(|| invalid("The ARN must name its cluster."))?;
                if arn.kind == ResourceKind::Task {
                    keys::task(cx.region, cluster, id)
                } else {
                    keys::instance(cx.region, cluster, id)
                }
            }
            ResourceKind::CapacityProvider => keys::capacity_provider(cx.region, &arn.resource),
            // Only the long ARN form (`service/<cluster>/<name>`) names its cluster, and
            // ECS tags services only by that form.
            ResourceKind::Service => {
                let (cluster, name) = arn.resource.split_once('/').ok_or_else(|| {
                    invalid("Long arn format must be used for tagging operations.")
                })?;
                keys::service(cx.region, cluster, name)
            }
            _ => {
                return Err(invalid(format!(
                    "Resource {resource_arn} cannot be tagged."
                )))
            }
        };
        Ok((key, arn.kind))
    }

    async fn modify_tags(
        &self,
        cx: &Cx<'_>,
        resource_arn: &str,
        change: impl Fn(&mut Vec<Tag>),
    ) -> Result<(), AwsError> {
        let (key, kind) = self.tagged_key(cx, resource_arn)?;
        // Service writers in this process (the API and the controller) queue on the
        // service's key lock and expect their compare-and-swap to win; tagging joins
        // that queue rather than making them lose.
        let _queued = match kind {
            ResourceKind::Service => Some(self.key_locks.lock(&key).await),
            _ => None,
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(mut record) = self.records.get::<Value>(&key).await? else {
                return Err(match kind {
                    ResourceKind::Cluster => super::clusters::cluster_not_found(),
                    _ => not_found(),
                });
            };
            // Every record keeps its tags under the same member, so tagging can work on
            // the stored document without knowing each record type.
            let mut tags: Vec<Tag> = record
                .value
                .get("tags")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|_| AwsError::server("ServerException", "Stored tags unreadable."))?
                .unwrap_or_default();
            change(&mut tags);
            // Tags ECS manages (`aws:` keys) do not count against the limit.
            if tags.iter().filter(|t| !is_reserved(&t.key)).count() > 50 {
                return Err(invalid("Tags can have a maximum of 50 tags."));
            }
            record.value["tags"] = serde_json::to_value(&tags).unwrap_or(Value::Null);
            if self
                .records
                .put_if(&key, &record.value, record.revision)
                .await?
            {
                return Ok(());
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn tag_resource(
        &self,
        cx: &Cx<'_>,
        req: TagResourceRequest,
    ) -> Result<Value, AwsError> {
        let new = check_tags(req.tags)?;
        self.modify_tags(cx, &req.resource_arn, |tags| merge_tags(tags, new.clone()))
            .await?;
        Ok(json!({}))
    }

    pub(crate) async fn untag_resource(
        &self,
        cx: &Cx<'_>,
        req: UntagResourceRequest,
    ) -> Result<Value, AwsError> {
        let keys = req.tag_keys;
        // Tags with the reserved prefix are ECS's own (managed tags): users cannot
        // remove them.
        if keys.iter().any(|k| is_reserved(k)) {
            return Err(invalid(
                "Tag keys may not start with the reserved prefix 'aws:'.",
            ));
        }
        self.modify_tags(cx, &req.resource_arn, |tags| {
            tags.retain(|t| !keys.contains(&t.key))
        })
        .await?;
        Ok(json!({}))
    }

    pub(crate) async fn list_tags_for_resource(
        &self,
        cx: &Cx<'_>,
        req: ListTagsForResourceRequest,
    ) -> Result<Value, AwsError> {
        // ListTagsForResource declares no ResourceNotFoundException, so an unknown
        // resource is an invalid parameter here.
        let as_invalid = |e: AwsError| {
            if e.code == "ResourceNotFoundException" {
                invalid(e.message)
            } else {
                e
            }
        };
        let (key, kind) = self.tagged_key(cx, &req.resource_arn).map_err(as_invalid)?;
        let Some(record) = self.records.get::<Value>(&key).await? else {
            return Err(match kind {
                ResourceKind::Cluster => super::clusters::cluster_not_found(),
                _ => as_invalid(not_found()),
            });
        };
        let tags = record.value.get("tags").cloned().unwrap_or(json!([]));
        Ok(json!({ "tags": tags }))
    }
}

fn not_found() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified resource could not be found.",
    )
}
