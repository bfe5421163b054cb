//! Clusters: CreateCluster, DescribeClusters, ListClusters, DeleteCluster,
//! UpdateCluster, UpdateClusterSettings, PutClusterCapacityProviders.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{names, ClusterStatus, ContainerInstanceStatus, ResourceKind, TaskStatus};

use super::services::ServiceStatus;
use super::tags::{check_tags, wire_tags, Tag, WireTag};
use super::{invalid, keys, paging, Cx, EcsService};
use crate::records::{too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

/// A cluster as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterRecord {
    pub name: String,
    pub arn: String,
    pub status: ClusterStatus,
    /// `[{name, value}]` as the client set them.
    pub settings: Vec<Value>,
    pub configuration: Option<Value>,
    pub service_connect_defaults: Option<Value>,
    pub capacity_providers: Vec<String>,
    pub default_capacity_provider_strategy: Vec<Value>,
    pub tags: Vec<Tag>,
}

pub(crate) fn cluster_not_found() -> AwsError {
    AwsError::client("ClusterNotFoundException", "Cluster not found.")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateClusterRequest {
    cluster_name: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(default)]
    settings: Vec<Value>,
    configuration: Option<Value>,
    #[serde(default)]
    capacity_providers: Vec<String>,
    #[serde(default)]
    default_capacity_provider_strategy: Vec<Value>,
    service_connect_defaults: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeClustersRequest {
    clusters: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListClustersRequest {
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteClusterRequest {
    cluster: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateClusterRequest {
    cluster: String,
    settings: Option<Vec<Value>>,
    configuration: Option<Value>,
    service_connect_defaults: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateClusterSettingsRequest {
    cluster: String,
    settings: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutClusterCapacityProvidersRequest {
    cluster: String,
    capacity_providers: Vec<String>,
    default_capacity_provider_strategy: Vec<Value>,
}

/// What DescribeClusters' `include` asked for.
#[derive(Default, Clone, Copy)]
struct Include {
    statistics: bool,
    tags: bool,
    settings: bool,
    configurations: bool,
    attachments: bool,
}

/// Counts of what a cluster holds, derived from its instances and tasks.
#[derive(Default)]
struct ClusterCounts {
    registered_instances: i64,
    running: i64,
    pending: i64,
}

/// The cluster's services by status and launch type, as the `statistics` split them.
/// `activeServicesCount` is the ACTIVE ones only; DRAINING ones (deleted, their tasks
/// still stopping) appear in the statistics and still keep the cluster from being
/// deleted.
#[derive(Default, Debug, PartialEq, Eq)]
struct ServiceCounts {
    active_ec2: i64,
    active_fargate: i64,
    draining_ec2: i64,
    draining_fargate: i64,
}

impl ServiceCounts {
    fn active(&self) -> i64 {
        self.active_ec2 + self.active_fargate
    }

    fn draining(&self) -> i64 {
        self.draining_ec2 + self.draining_fargate
    }
}

/// The part of a stored service the cluster counts read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSummary {
    status: ServiceStatus,
    launch_type: String,
}

/// Settings accepted on clusters: `containerInsights` with `enabled`, `disabled` or
/// `enhanced`.
fn check_settings(settings: &[Value]) -> Result<(), AwsError> {
    for setting in settings {
        let name = setting.get("name").and_then(Value::as_str).unwrap_or("");
        let value = setting.get("value").and_then(Value::as_str).unwrap_or("");
        if name != "containerInsights" {
            return Err(invalid(format!("Unsupported cluster setting name: {name}")));
        }
        if !["enabled", "disabled", "enhanced"].contains(&value) {
            return Err(invalid(format!(
                "Invalid value for containerInsights: {value}. Valid values are enabled, disabled, enhanced."
            )));
        }
    }
    Ok(())
}

/// Replaces settings of the same name and keeps the others.
fn merge_settings(current: &mut Vec<Value>, new: Vec<Value>) {
    for setting in new {
        let name = setting.get("name").cloned();
        match current.iter_mut().find(|s| s.get("name") == name.as_ref()) {
            Some(existing) => *existing = setting,
            None => current.push(setting),
        }
    }
}

impl EcsService {
    /// Reads an ACTIVE cluster by reference, or fails with ClusterNotFoundException.
    pub(crate) async fn active_cluster(
        &self,
        cx: &Cx<'_>,
        reference: Option<&str>,
    ) -> Result<Versioned<ClusterRecord>, AwsError> {
        let name = keys::cluster_name(cx, reference)?;
        match self
            .records
            .get::<ClusterRecord>(&keys::cluster(cx.region, &name))
            .await?
        {
            Some(record) if record.value.status == ClusterStatus::Active => Ok(record),
            _ => Err(cluster_not_found()),
        }
    }

    async fn cluster_counts(&self, cx: &Cx<'_>, name: &str) -> Result<ClusterCounts, AwsError> {
        let view = self.fresh_view().await?;
        Ok(view.read_cluster_records(cx.region, name, |state| {
            let mut counts = ClusterCounts {
                registered_instances: state
                    .instances
                    .iter()
                    .filter(|i| {
                        matches!(
                            i.value.status,
                            ContainerInstanceStatus::Active | ContainerInstanceStatus::Draining
                        )
                    })
                    .count() as i64,
                ..Default::default()
            };
            for task in state.tasks.values() {
                match task.value.lifecycle.last() {
                    TaskStatus::Running => counts.running += 1,
                    TaskStatus::Stopped => {}
                    s if s < TaskStatus::Running => counts.pending += 1,
                    _ => {}
                }
            }
            counts
        }))
    }

    async fn service_counts(&self, cx: &Cx<'_>, name: &str) -> Result<ServiceCounts, AwsError> {
        let services = self
            .records
            .list::<ServiceSummary>(&keys::services(cx.region, name))
            .await?;
        let mut counts = ServiceCounts::default();
        for service in services {
            // ECS's statistics have an EC2 and a Fargate column; EXTERNAL services run
            // on registered instances as EC2 ones do.
            let fargate = service.value.launch_type == "FARGATE";
            let slot = match (service.value.status, fargate) {
                (ServiceStatus::Active, false) => &mut counts.active_ec2,
                (ServiceStatus::Active, true) => &mut counts.active_fargate,
                (ServiceStatus::Draining, false) => &mut counts.draining_ec2,
                (ServiceStatus::Draining, true) => &mut counts.draining_fargate,
                (ServiceStatus::Inactive, _) => continue,
            };
            *slot += 1;
        }
        Ok(counts)
    }

    async fn cluster_wire(
        &self,
        cx: &Cx<'_>,
        record: &ClusterRecord,
        include: Include,
    ) -> Result<Value, AwsError> {
        let (counts, services) = if record.status == ClusterStatus::Active {
            (
                self.cluster_counts(cx, &record.name).await?,
                self.service_counts(cx, &record.name).await?,
            )
        } else {
            (ClusterCounts::default(), ServiceCounts::default())
        };
        let mut wire = json!({
            "clusterArn": record.arn,
            "clusterName": record.name,
            "status": record.status.as_str(),
            "registeredContainerInstancesCount": counts.registered_instances,
            "runningTasksCount": counts.running,
            "pendingTasksCount": counts.pending,
            "activeServicesCount": services.active(),
            "capacityProviders": record.capacity_providers,
            "defaultCapacityProviderStrategy": record.default_capacity_provider_strategy,
        });
        if include.statistics {
            wire["statistics"] = json!([
                {"name": "runningEC2TasksCount", "value": counts.running.to_string()},
                {"name": "runningFargateTasksCount", "value": "0"},
                {"name": "pendingEC2TasksCount", "value": counts.pending.to_string()},
                {"name": "pendingFargateTasksCount", "value": "0"},
                {"name": "activeEC2ServiceCount", "value": services.active_ec2.to_string()},
                {"name": "activeFargateServiceCount", "value": services.active_fargate.to_string()},
                {"name": "drainingEC2ServiceCount", "value": services.draining_ec2.to_string()},
                {"name": "drainingFargateServiceCount", "value": services.draining_fargate.to_string()},
            ]);
        }
        if include.tags {
            wire["tags"] = wire_tags(&record.tags);
        }
        if include.settings {
            wire["settings"] = Value::Array(record.settings.clone());
        }
        if include.configurations {
            if let Some(configuration) = &record.configuration {
                wire["configuration"] = configuration.clone();
            }
        }
        if include.attachments {
            wire["attachments"] = json!([]);
        }
        if let Some(defaults) = &record.service_connect_defaults {
            wire["serviceConnectDefaults"] = defaults.clone();
        }
        Ok(wire)
    }

    /// CreateCluster's answer: the whole cluster, with every list member present.
    async fn created_response(
        &self,
        cx: &Cx<'_>,
        record: &ClusterRecord,
    ) -> Result<Value, AwsError> {
        let all = Include {
            statistics: false,
            tags: true,
            settings: true,
            configurations: true,
            attachments: false,
        };
        let mut wire = self.cluster_wire(cx, record, all).await?;
        wire["statistics"] = json!([]);
        Ok(json!({ "cluster": wire }))
    }

    pub(crate) async fn create_cluster(
        &self,
        cx: &Cx<'_>,
        req: CreateClusterRequest,
    ) -> Result<Value, AwsError> {
        let name = req.cluster_name.unwrap_or_else(|| "default".to_owned());
        if !names::is_valid_cluster_name(&name) {
            return Err(invalid(
                "Cluster name must be up to 255 letters (uppercase and lowercase), numbers, underscores and hyphens.",
            ));
        }
        check_settings(&req.settings)?;
        let tags = check_tags(req.tags)?;
        self.check_capacity_providers(cx, &req.capacity_providers)
            .await?;
        let key = keys::cluster(cx.region, &name);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let existing = self.records.get::<ClusterRecord>(&key).await?;
            // CreateCluster is idempotent by name: an ACTIVE cluster of that name is
            // returned as it is.
            if let Some(existing) = &existing {
                if existing.value.status == ClusterStatus::Active {
                    return self.created_response(cx, &existing.value).await;
                }
            }
            let record = ClusterRecord {
                arn: cx.arn(ResourceKind::Cluster, &name),
                name: name.clone(),
                status: ClusterStatus::Active,
                settings: if req.settings.is_empty() {
                    vec![json!({"name": "containerInsights", "value": "disabled"})]
                } else {
                    req.settings.clone()
                },
                configuration: req.configuration.clone(),
                service_connect_defaults: req.service_connect_defaults.clone(),
                capacity_providers: req.capacity_providers.clone(),
                default_capacity_provider_strategy: req.default_capacity_provider_strategy.clone(),
                tags: tags.clone(),
            };
            let expected = existing.map(|e| e.revision).unwrap_or(0);
            if self.records.put_if(&key, &record, expected).await? {
                return self.created_response(cx, &record).await;
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_clusters(
        &self,
        cx: &Cx<'_>,
        req: DescribeClustersRequest,
    ) -> Result<Value, AwsError> {
        let mut include = Include::default();
        for word in &req.include {
            match word.as_str() {
                "STATISTICS" => include.statistics = true,
                "TAGS" => include.tags = true,
                "SETTINGS" => include.settings = true,
                "CONFIGURATIONS" => include.configurations = true,
                "ATTACHMENTS" => include.attachments = true,
                other => return Err(invalid(format!("Unsupported include value: {other}"))),
            }
        }
        let references = req.clusters.unwrap_or_else(|| vec!["default".to_owned()]);
        if references.len() > 100 {
            return Err(invalid("Clusters can have a maximum of 100 entries."));
        }
        let mut clusters = Vec::new();
        let mut failures = Vec::new();
        for reference in references {
            let name = keys::cluster_name(cx, Some(&reference))?;
            match self
                .records
                .get::<ClusterRecord>(&keys::cluster(cx.region, &name))
                .await?
            {
                Some(record) => clusters.push(self.cluster_wire(cx, &record.value, include).await?),
                None => failures.push(cx.missing(ResourceKind::Cluster, &reference, &name)),
            }
        }
        Ok(json!({"clusters": clusters, "failures": failures}))
    }

    pub(crate) async fn list_clusters(
        &self,
        cx: &Cx<'_>,
        req: ListClustersRequest,
    ) -> Result<Value, AwsError> {
        let arns: Vec<String> = self
            .records
            .list::<ClusterRecord>(&keys::clusters(cx.region))
            .await?
            .into_iter()
            .filter(|c| c.value.status == ClusterStatus::Active)
            .map(|c| c.value.arn)
            .collect();
        let (arns, next) = paging::page(
            arns,
            String::clone,
            req.next_token.as_deref(),
            req.max_results,
            100,
        )?;
        Ok(json!({"clusterArns": arns, "nextToken": next}))
    }

    pub(crate) async fn delete_cluster(
        &self,
        cx: &Cx<'_>,
        req: DeleteClusterRequest,
    ) -> Result<Value, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let cluster = self.active_cluster(cx, Some(&req.cluster)).await?;
            let counts = self.cluster_counts(cx, &cluster.value.name).await?;
            if counts.registered_instances > 0 {
                return Err(AwsError::client(
                    "ClusterContainsContainerInstancesException",
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                ));
            }
            let services = self.service_counts(cx, &cluster.value.name).await?;
            if services.active() + services.draining() > 0 {
                return Err(AwsError::client(
                    "ClusterContainsServicesException",
                    "The Cluster cannot be deleted while Services are active.",
                ));
            }
            if counts.running + counts.pending > 0
                || self.has_unstopped_tasks(cx, &cluster.value.name).await?
            {
                return Err(AwsError::client(
                    "ClusterContainsTasksException",
                    "The Cluster cannot be deleted while Tasks are active.",
                ));
            }
            let mut record = cluster.value.clone();
            record.status = ClusterStatus::Inactive;
            let key = keys::cluster(cx.region, &record.name);
            if self.records.put_if(&key, &record, cluster.revision).await? {
                let wire = self.cluster_wire(cx, &record, Include::default()).await?;
                return Ok(json!({"cluster": wire}));
            }
        }
        Err(too_much_contention())
    }

    /// Reads, changes and writes back an ACTIVE cluster, retrying on conflicts.
    async fn modify_cluster(
        &self,
        cx: &Cx<'_>,
        reference: &str,
        change: impl Fn(&mut ClusterRecord),
    ) -> Result<ClusterRecord, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let cluster = self.active_cluster(cx, Some(reference)).await?;
            let mut record = cluster.value.clone();
            change(&mut record);
            let key = keys::cluster(cx.region, &record.name);
            if self.records.put_if(&key, &record, cluster.revision).await? {
                return Ok(record);
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn update_cluster(
        &self,
        cx: &Cx<'_>,
        req: UpdateClusterRequest,
    ) -> Result<Value, AwsError> {
        if let Some(settings) = &req.settings {
            check_settings(settings)?;
        }
        let record = self
            .modify_cluster(cx, &req.cluster, |record| {
                if let Some(settings) = &req.settings {
                    merge_settings(&mut record.settings, settings.clone());
                }
                if let Some(configuration) = &req.configuration {
                    record.configuration = Some(configuration.clone());
                }
                if let Some(defaults) = &req.service_connect_defaults {
                    record.service_connect_defaults = Some(defaults.clone());
                }
            })
            .await?;
        let all = Include {
            settings: true,
            configurations: true,
            tags: true,
            ..Include::default()
        };
        Ok(json!({"cluster": self.cluster_wire(cx, &record, all).await?}))
    }

    pub(crate) async fn update_cluster_settings(
        &self,
        cx: &Cx<'_>,
        req: UpdateClusterSettingsRequest,
    ) -> Result<Value, AwsError> {
        check_settings(&req.settings)?;
        let record = self
            .modify_cluster(cx, &req.cluster, |record| {
                merge_settings(&mut record.settings, req.settings.clone())
            })
            .await?;
        let include = Include {
            settings: true,
            ..Include::default()
        };
        Ok(json!({"cluster": self.cluster_wire(cx, &record, include).await?}))
    }

    pub(crate) async fn put_cluster_capacity_providers(
        &self,
        cx: &Cx<'_>,
        req: PutClusterCapacityProvidersRequest,
    ) -> Result<Value, AwsError> {
        self.check_capacity_providers(cx, &req.capacity_providers)
            .await?;
        for item in &req.default_capacity_provider_strategy {
            let provider = item
                .get("capacityProvider")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !req.capacity_providers.iter().any(|p| p == provider) {
                return Err(invalid(format!(
                    "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again. (capacity provider: {provider})"
                )));
            }
        }
        let record = self
            .modify_cluster(cx, &req.cluster, |record| {
                record.capacity_providers = req.capacity_providers.clone();
                record.default_capacity_provider_strategy =
                    req.default_capacity_provider_strategy.clone();
            })
            .await?;
        Ok(json!({"cluster": self.cluster_wire(cx, &record, Include::default()).await?}))
    }
}
