//! What the control plane does for agent channels: which tasks to push to an
//! instance, whether its agent is connected, and DiscoverPollEndpoint.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_agent_channel::{ContainerPayload, Payload, TaskPayload};
use wharf_aws::AwsError;
use wharf_model::{ResourceKind, TaskStatus};

use super::instances::InstanceRecord;
use super::task_definitions::TaskDefinitionRecord;
use super::{invalid, keys, Cx, EcsService};
use crate::records::{too_much_contention, MAX_CONFLICT_RETRIES};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DiscoverPollEndpointRequest {
    #[allow(dead_code)]
    container_instance: Option<String>,
    #[allow(dead_code)]
    cluster: Option<String>,
}

/// The instance a channel session serves.
#[derive(Debug, Clone)]
pub struct ChannelTarget {
    /// The region of the registration.
    pub region: String,
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The instance's id.
    pub instance_id: String,
    /// The instance's ARN.
    pub instance_arn: String,
}

/// Where a task runs, for reading its logs through its instance's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPlacement {
    /// The task's ARN.
    pub task_arn: String,
    /// The container instance it was placed on.
    pub instance_arn: String,
}

/// What a session has pushed so far: each task's desired status as last sent, and the
/// task definitions already read.
#[derive(Default)]
pub struct PushedTasks {
    desired: HashMap<String, String>,
    definitions: HashMap<String, Value>,
    /// The view's feed position this session has read up to.
    seen: u64,
}

impl EcsService {
    pub(crate) async fn discover_poll_endpoint(
        &self,
        _cx: &Cx<'_>,
        _req: DiscoverPollEndpointRequest,
    ) -> Result<Value, AwsError> {
        let endpoint = self.config.endpoint.clone().unwrap_or_default();
        Ok(json!({
            "endpoint": endpoint,
            "telemetryEndpoint": endpoint,
            "serviceConnectEndpoint": endpoint,
        }))
    }

    /// Resolves the cluster and instance a channel asks for; the instance must be
    /// registered (ACTIVE or DRAINING) in that cluster.
    pub async fn channel_target(
        &self,
        region: &str,
        account: &str,
        cluster_arn: &str,
        instance_arn: &str,
    ) -> Result<ChannelTarget, AwsError> {
        let cx = Cx {
            region,
            account,
            now_millis: self.clock.now_millis(),
        };
        let cluster = self.active_cluster(&cx, Some(cluster_arn)).await?.value;
        let instance = self
            .find_instance(&cx, &cluster.name, instance_arn)
            .await?
            .filter(|i| i.value.is_live())
            .ok_or_else(|| {
                AwsError::client(
                    "InactiveInstanceException",
                    "The container instance is not registered in this cluster.",
                )
            })?;
        Ok(ChannelTarget {
            region: region.to_owned(),
            cluster: cluster.name,
            cluster_arn: cluster.arn,
            instance_id: instance.value.id,
            instance_arn: instance.value.arn,
        })
    }

    /// Finds a task of a cluster (by id or ARN) and the instance it was placed on.
    /// An unknown cluster is `ClusterNotFoundException`; an unknown task, or one not
    /// placed on an instance, is `InvalidParameterException`.
    pub async fn task_placement(
        &self,
        region: &str,
        account: &str,
        cluster: Option<&str>,
        task: &str,
    ) -> Result<TaskPlacement, AwsError> {
        let cx = Cx {
            region,
            account,
            now_millis: self.clock.now_millis(),
        };
        let cluster = self.active_cluster(&cx, cluster).await?.value;
        let id = keys::resource_id(task, ResourceKind::Task)?;
        let record = self
            .records
            .get::<super::tasks::TaskRecord>(&keys::task(region, &cluster.name, &id))
            .await?
            .ok_or_else(|| invalid("The referenced task was not found."))?
            .value;
        let instance_arn = record
            .container_instance_arn
            .ok_or_else(|| invalid("The task is not placed on a container instance."))?;
        Ok(TaskPlacement {
            task_arn: record.arn,
            instance_arn,
        })
    }

    /// Starts a session for an instance and returns its number.
    pub fn begin_session(&self, instance_arn: &str) -> u64 {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        let next = sessions.get(instance_arn).copied().unwrap_or(0) + 1;
        sessions.insert(instance_arn.to_owned(), next);
        next
    }

    /// Whether `session` is still the newest session of the instance.
    pub fn is_current_session(&self, instance_arn: &str, session: u64) -> bool {
        let sessions = self.sessions.lock().expect("sessions lock poisoned");
        sessions.get(instance_arn) == Some(&session)
    }

    /// Records whether the instance's agent is connected.
    pub async fn set_agent_connected(
        &self,
        target: &ChannelTarget,
        connected: bool,
    ) -> Result<(), AwsError> {
        let key = keys::instance(&target.region, &target.cluster, &target.instance_id);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Some(current) = self.records.get::<InstanceRecord>(&key).await? else {
                return Ok(());
            };
            if current.value.agent_connected == connected {
                return Ok(());
            }
            let mut record = current.value.clone();
            record.agent_connected = connected;
            record.version += 1;
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(());
            }
        }
        Err(too_much_contention())
    }

    /// The notifier woken when a task of the instance changes.
    pub async fn task_waker(
        &self,
        target: &ChannelTarget,
    ) -> Result<std::sync::Arc<tokio::sync::Notify>, AwsError> {
        Ok(self.view().await?.waker(&target.instance_arn))
    }

    /// The tasks of the instance whose desired status the agent has not been told yet
    /// (all live ones on a fresh session), as a payload; `None` when there is nothing new.
    /// A `full` payload is sent even when empty: it tells a reconnected agent the whole
    /// truth, so that it can stop what the control plane no longer knows of.
    pub async fn next_payload(
        &self,
        target: &ChannelTarget,
        pushed: &mut PushedTasks,
        full: bool,
    ) -> Result<Option<Payload>, AwsError> {
        // A full payload must reflect every acknowledged write; later ones are woken
        // by the view itself, which has then applied the change they carry.
        let view = if full {
            self.fresh_view().await?
        } else {
            self.view().await?
        };
        let changed: Vec<super::tasks::TaskRecord> =
            view.read_cluster_records(&target.region, &target.cluster, |state| {
                // Only tasks changed since the last payload can need pushing.
                let after = if full { 0 } else { pushed.seen };
                pushed.seen = state.latest_feed_position();
                state
                    .tasks_changed_after(&target.instance_arn, after)
                    .filter(|t| {
                        let desired = t.value.lifecycle.desired().as_str();
                        t.value.lifecycle.last() != TaskStatus::Stopped
                            && pushed.desired.get(&t.value.arn).map(String::as_str) != Some(desired)
                    })
                    .map(|t| t.value.clone())
                    .collect()
            });
        if changed.is_empty() && !full {
            return Ok(None);
        }
        let mut tasks = Vec::with_capacity(changed.len());
        for task in changed {
            let definition = match pushed.definitions.get(&task.task_definition_arn) {
                Some(definition) => definition.clone(),
                None => {
                    let definition = self
                        .definition_wire(&target.region, &task.task_definition_arn)
                        .await?;
                    pushed
                        .definitions
                        .insert(task.task_definition_arn.clone(), definition.clone());
                    definition
                }
            };
            let desired = task.lifecycle.desired().as_str().to_owned();
            pushed.desired.insert(task.arn.clone(), desired.clone());
            tasks.push(TaskPayload {
                arn: task.arn.clone(),
                family: task.family.clone(),
                task_definition_arn: task.task_definition_arn.clone(),
                desired_status: desired,
                version: task.version,
                task_definition: definition,
                overrides: task.overrides.clone(),
                containers: task
                    .containers
                    .iter()
                    .map(|c| ContainerPayload {
                        name: c.name.clone(),
                        container_arn: c.arn.clone(),
                    })
                    .collect(),
                started_by: task.started_by.clone(),
                group: task.group.clone(),
            });
        }
        Ok(Some(Payload {
            message_id: uuid::Uuid::new_v4().to_string(),
            cluster_arn: target.cluster_arn.clone(),
            container_instance_arn: target.instance_arn.clone(),
            seq_num: view.revision(),
            tasks,
        }))
    }

    async fn definition_wire(&self, region: &str, arn: &str) -> Result<Value, AwsError> {
        let parsed = wharf_model::Arn::parse(arn).map_err(|e| invalid(e.to_string()))?;
        if parsed.kind != ResourceKind::TaskDefinition {
            return Err(invalid(format!("{arn} is not a task definition ARN")));
        }
        let (family, revision) = parsed
            .resource
            .rsplit_once(':')
            .and_then(|(f, r)| Some((f.to_owned(), r.parse::<i64>().ok()?)))
            .ok_or_else(|| invalid(format!("{arn} names no revision")))?;
        let record = self
            .records
            .get::<TaskDefinitionRecord>(&keys::task_definition(region, &family, revision))
            .await?
            .ok_or_else(|| invalid(format!("task definition {arn} is gone")))?;
        Ok(record.value.to_wire())
    }
}
