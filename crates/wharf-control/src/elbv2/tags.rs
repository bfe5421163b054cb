//! Tags on load balancers, target groups, listeners and rules: AddTags, RemoveTags,
//! DescribeTags.
//!
//! Every taggable record keeps its tags in a `tags` map, so the operations read the
//! record as a JSON document, change that map and write it back under a compare on
//! the revision read.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{listener_key, load_balancer_key, rule_key, target_group_key};
use wharf_store::Txn;

use super::arns::{self, ElbResource};
use super::error::{validation, Elbv2Error};
use super::{Cx, Elbv2Service};
use crate::records::{encode, too_much_contention, Records, Versioned, MAX_CONFLICT_RETRIES};

/// ELBv2's quota of tags per resource.
pub(crate) const MAX_TAGS: usize = 50;

/// A `Tag` on the wire.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireTag {
    pub key: String,
    pub value: Option<String>,
}

/// Checks tags sent with a create call and turns them into a map. A key sent twice is
/// `DuplicateTagKeys` where the operation declares that error (`declares_duplicate`),
/// else a `ValidationError`.
pub(crate) fn tag_map(
    tags: &[WireTag],
    declares_duplicate: bool,
) -> Result<BTreeMap<String, String>, AwsError> {
    let mut out = BTreeMap::new();
    for tag in tags {
        check_key(&tag.key)?;
        if out
            .insert(tag.key.clone(), tag.value.clone().unwrap_or_default())
            .is_some()
        {
            let err = Elbv2Error::DuplicateTagKeys(tag.key.clone());
            return Err(if declares_duplicate {
                err.into()
            } else {
                validation(err.to_string())
            });
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Elbv2Error::TooManyTags.into());
    }
    Ok(out)
}

fn check_key(key: &str) -> Result<(), AwsError> {
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(validation(format!(
            "Tag key '{key}' uses the reserved prefix 'aws:'"
        )));
    }
    Ok(())
}

/// The `Tags` list of a record's map.
pub(crate) fn wire_tags(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// The store key of the record an ARN names, with the model's not-found error for
/// the ARN's kind.
fn key_of(region: &str, arn: &str) -> Result<(String, AwsError), AwsError> {
    let parsed = arns::parse(arn)?;
    let (key, missing) = match &parsed.resource {
        ElbResource::LoadBalancer { name } => (
            load_balancer_key(region, name),
            Elbv2Error::LoadBalancerNotFound(format!("Load balancer '{arn}' not found")),
        ),
        ElbResource::TargetGroup { name } => (
            target_group_key(region, name),
            Elbv2Error::TargetGroupNotFound(format!("Target group '{arn}' not found")),
        ),
        ElbResource::Listener { lb_name, id } => (
            listener_key(region, lb_name, id),
            Elbv2Error::ListenerNotFound(format!("Listener '{arn}' not found")),
        ),
        ElbResource::Rule {
            lb_name,
            listener_id,
            id,
        } => {
            if arns::is_default_rule_id(id) {
                return Err(validation("Default rules cannot be tagged"));
            }
            (
                rule_key(region, lb_name, listener_id, id),
                Elbv2Error::RuleNotFound(format!("Rule '{arn}' not found")),
            )
        }
    };
    if parsed.region != region {
        return Err(missing.into());
    }
    Ok((key, missing.into()))
}

/// Reads the record an ARN names as a JSON document.
async fn read_tagged(
    records: &Records,
    region: &str,
    arn: &str,
) -> Result<(String, Versioned<Value>), AwsError> {
    let (key, missing) = key_of(region, arn)?;
    match records.get::<Value>(&key).await? {
        Some(v) if v.value.get("arn").and_then(Value::as_str) == Some(arn) => Ok((key, v)),
        _ => Err(missing),
    }
}

fn tags_of(record: &Value) -> BTreeMap<String, String> {
    record
        .get("tags")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AddTagsRequest {
    resource_arns: Vec<String>,
    tags: Vec<WireTag>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RemoveTagsRequest {
    resource_arns: Vec<String>,
    tag_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeTagsRequest {
    resource_arns: Vec<String>,
}

impl Elbv2Service {
    /// Rewrites the tags of every named resource with `change`, in one transaction.
    async fn change_tags(
        &self,
        cx: &Cx<'_>,
        resource_arns: &[String],
        change: impl Fn(&mut BTreeMap<String, String>),
    ) -> Result<(), AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let mut txn = Txn::new();
            for arn in resource_arns {
                let (key, mut record) = read_tagged(&self.records, cx.region, arn).await?;
                let mut tags = tags_of(&record.value);
                change(&mut tags);
                if tags.len() > MAX_TAGS {
                    return Err(Elbv2Error::TooManyTags.into());
                }
                record.value["tags"] = serde_json::to_value(&tags).unwrap_or_default();
                txn = txn
                    .when_mod_revision(&key, record.revision)
                    .put(&key, encode(&record.value));
            }
            if self.records.commit(txn).await? {
                return Ok(());
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn add_tags(
        &self,
        cx: &Cx<'_>,
        req: AddTagsRequest,
    ) -> Result<Value, AwsError> {
        let new = tag_map(&req.tags, true)?;
        self.change_tags(cx, &req.resource_arns, |tags| {
            tags.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())))
        })
        .await?;
        Ok(json!({}))
    }

    pub(crate) async fn remove_tags(
        &self,
        cx: &Cx<'_>,
        req: RemoveTagsRequest,
    ) -> Result<Value, AwsError> {
        self.change_tags(cx, &req.resource_arns, |tags| {
            for key in &req.tag_keys {
                tags.remove(key);
            }
        })
        .await?;
        Ok(json!({}))
    }

    pub(crate) async fn describe_tags(
        &self,
        cx: &Cx<'_>,
        req: DescribeTagsRequest,
    ) -> Result<Value, AwsError> {
        let mut out = Vec::with_capacity(req.resource_arns.len());
        for arn in &req.resource_arns {
            let (_, record) = read_tagged(&self.records, cx.region, arn).await?;
            out.push(json!({"ResourceArn": arn, "Tags": wire_tags(&tags_of(&record.value))}));
        }
        Ok(json!({ "TagDescriptions": out }))
    }
}
