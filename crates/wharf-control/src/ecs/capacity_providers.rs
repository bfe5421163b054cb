//! Capacity providers: CreateCapacityProvider, DescribeCapacityProviders,
//! UpdateCapacityProvider, DeleteCapacityProvider. `FARGATE` and `FARGATE_SPOT` exist
//! in every region without being created.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{arn, names, Arn, CapacityProviderStatus, ClusterStatus, ResourceKind};

use super::clusters::ClusterRecord;
use super::tags::{check_tags, wire_tags, Tag, WireTag};
use super::{client_error, invalid, keys, paging, Cx, EcsService};
use crate::records::{too_much_contention, MAX_CONFLICT_RETRIES};

/// The providers every account has.
const BUILT_IN: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CapacityProviderRecord {
    name: String,
    arn: String,
    status: CapacityProviderStatus,
    auto_scaling_group_provider: Option<Value>,
    update_status: Option<String>,
    tags: Vec<Tag>,
}

impl CapacityProviderRecord {
    fn built_in(cx: &Cx<'_>, name: &str) -> Self {
        CapacityProviderRecord {
            name: name.to_owned(),
            arn: cx.arn(ResourceKind::CapacityProvider, name),
            status: CapacityProviderStatus::Active,
            auto_scaling_group_provider: None,
            update_status: None,
            tags: Vec::new(),
        }
    }

    fn to_wire(&self, with_tags: bool) -> Value {
        let mut wire = json!({
            "capacityProviderArn": self.arn,
            "name": self.name,
            "status": self.status.as_str(),
            "tags": [],
        });
        if let Some(provider) = &self.auto_scaling_group_provider {
            wire["autoScalingGroupProvider"] = provider.clone();
        }
        if let Some(status) = &self.update_status {
            wire["updateStatus"] = json!(status);
        }
        if with_tags {
            wire["tags"] = wire_tags(&self.tags);
        }
        wire
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateCapacityProviderRequest {
    name: String,
    auto_scaling_group_provider: Option<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeCapacityProvidersRequest {
    capacity_providers: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateCapacityProviderRequest {
    name: String,
    auto_scaling_group_provider: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteCapacityProviderRequest {
    capacity_provider: String,
}

fn provider_name(reference: &str) -> Result<String, AwsError> {
    if arn::is_arn(reference) {
        let parsed = Arn::parse(reference).map_err(|e| invalid(e.to_string()))?;
        if parsed.kind != ResourceKind::CapacityProvider {
            return Err(invalid(format!(
                "{reference} is not a capacity provider ARN"
            )));
        }
        Ok(parsed.resource)
    } else {
        Ok(reference.to_owned())
    }
}

impl EcsService {
    async fn find_capacity_provider(
        &self,
        cx: &Cx<'_>,
        reference: &str,
    ) -> Result<Option<crate::records::Versioned<CapacityProviderRecord>>, AwsError> {
        let name = provider_name(reference)?;
        if BUILT_IN.contains(&name.as_str()) {
            return Ok(Some(crate::records::Versioned {
                value: CapacityProviderRecord::built_in(cx, &name),
                revision: 0,
            }));
        }
        self.records
            .get(&keys::capacity_provider(cx.region, &name))
            .await
    }

    /// Refuses capacity providers that do not exist or were deleted.
    pub(crate) async fn check_capacity_providers(
        &self,
        cx: &Cx<'_>,
        references: &[String],
    ) -> Result<(), AwsError> {
        for reference in references {
            match self.find_capacity_provider(cx, reference).await? {
                Some(p) if p.value.status == CapacityProviderStatus::Active => {}
                _ => {
                    return Err(invalid(format!(
                        "The specified capacity provider {reference} is not in an ACTIVE state. Specify a valid capacity provider and try again."
                    )))
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn create_capacity_provider(
        &self,
        cx: &Cx<'_>,
        req: CreateCapacityProviderRequest,
    ) -> Result<Value, AwsError> {
        if !names::is_valid_capacity_provider_name(&req.name) {
            return Err(invalid(
                "The specified capacity provider name is invalid. Up to 255 characters are allowed, including letters (upper and lowercase), numbers, underscores, and hyphens. The name cannot be prefixed with \"aws\", \"ecs\", or \"fargate\".",
            ));
        }
        let tags = check_tags(req.tags)?;
        let key = keys::capacity_provider(cx.region, &req.name);
        let existing = self.records.get::<CapacityProviderRecord>(&key).await?;
        if existing
            .as_ref()
            .is_some_and(|e| e.value.status == CapacityProviderStatus::Active)
        {
            return Err(client_error(
                "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
            ));
        }
        let record = CapacityProviderRecord {
            arn: cx.arn(ResourceKind::CapacityProvider, &req.name),
            name: req.name.clone(),
            status: CapacityProviderStatus::Active,
            auto_scaling_group_provider: req.auto_scaling_group_provider,
            update_status: None,
            tags,
        };
        let expected = existing.map(|e| e.revision).unwrap_or(0);
        if !self.records.put_if(&key, &record, expected).await? {
            return Err(client_error(
                "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.",
            ));
        }
        Ok(json!({"capacityProvider": record.to_wire(true)}))
    }

    pub(crate) async fn describe_capacity_providers(
        &self,
        cx: &Cx<'_>,
        req: DescribeCapacityProvidersRequest,
    ) -> Result<Value, AwsError> {
        let with_tags = req.include.iter().any(|i| i == "TAGS");
        let mut found = Vec::new();
        let mut failures = Vec::new();
        match req.capacity_providers {
            Some(references) if !references.is_empty() => {
                for reference in references {
                    match self.find_capacity_provider(cx, &reference).await? {
                        Some(p) => found.push(p.value),
                        None => failures.push(cx.missing(
                            ResourceKind::CapacityProvider,
                            &reference,
                            &reference,
                        )),
                    }
                }
            }
            _ => {
                found.extend(
                    BUILT_IN
                        .iter()
                        .map(|n| CapacityProviderRecord::built_in(cx, n)),
                );
                found.extend(
                    self.records
                        .list::<CapacityProviderRecord>(&keys::capacity_providers(cx.region))
                        .await?
                        .into_iter()
                        .map(|r| r.value)
                        .filter(|r| r.status == CapacityProviderStatus::Active),
                );
                found.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        let (page, next) = paging::page(
            found,
            |p| p.name.clone(),
            req.next_token.as_deref(),
            req.max_results,
            100,
        )?;
        let providers: Vec<Value> = page.iter().map(|p| p.to_wire(with_tags)).collect();
        Ok(json!({"capacityProviders": providers, "failures": failures, "nextToken": next}))
    }

    pub(crate) async fn update_capacity_provider(
        &self,
        cx: &Cx<'_>,
        req: UpdateCapacityProviderRequest,
    ) -> Result<Value, AwsError> {
        let name = provider_name(&req.name)?;
        if BUILT_IN.contains(&name.as_str()) {
            return Err(invalid(format!(
                "The capacity provider {name} cannot be updated."
            )));
        }
        let key = keys::capacity_provider(cx.region, &name);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self.records.get::<CapacityProviderRecord>(&key).await? else {
                return Err(invalid("The specified capacity provider does not exist."));
            };
            let mut record = current.value.clone();
            if let Some(update) = &req.auto_scaling_group_provider {
                let merged = record
                    .auto_scaling_group_provider
                    .get_or_insert_with(|| json!({}));
                if let (Some(target), Some(source)) = (merged.as_object_mut(), update.as_object()) {
                    for (k, v) in source {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
            record.update_status = Some("UPDATE_COMPLETE".to_owned());
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(json!({"capacityProvider": record.to_wire(false)}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn delete_capacity_provider(
        &self,
        cx: &Cx<'_>,
        req: DeleteCapacityProviderRequest,
    ) -> Result<Value, AwsError> {
        let name = provider_name(&req.capacity_provider)?;
        if BUILT_IN.contains(&name.as_str()) {
            return Err(invalid(format!(
                "The capacity provider {name} cannot be deleted."
            )));
        }
        let clusters = self
            .records
            .list::<ClusterRecord>(&keys::clusters(cx.region))
            .await?;
        if clusters.iter().any(|c| {
            c.value.status == ClusterStatus::Active && c.value.capacity_providers.contains(&name)
        }) {
            // The model declares no ResourceInUseException for this operation.
            return Err(client_error(
                "The specified capacity provider is in use and cannot be removed.",
            ));
        }
        let key = keys::capacity_provider(cx.region, &name);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self.records.get::<CapacityProviderRecord>(&key).await? else {
                return Err(invalid("The specified capacity provider does not exist."));
            };
            let mut record = current.value.clone();
            record.status = CapacityProviderStatus::Inactive;
            record.update_status = Some("DELETE_COMPLETE".to_owned());
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(json!({"capacityProvider": record.to_wire(false)}));
            }
        }
        Err(too_much_contention())
    }
}
