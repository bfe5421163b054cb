//! Tasks: RunTask, StartTask, StopTask, DescribeTasks, ListTasks, and the agent's
//! SubmitTaskStateChange and SubmitContainerStateChange.
//!
//! Placement is plan-then-apply: the scheduler plans against the view's snapshot of
//! the cluster's instances and tasks; the applier writes the new tasks in one
//! transaction that also bumps every chosen instance's record, guarded by what the
//! plan assumed of each instance. If any instance changed meanwhile (another
//! placement landed on it), the transaction fails and the call re-plans against fresh
//! state, so concurrent calls never over-commit an instance. Placements of one cluster
//! plan one at a time but commit together: see [`EcsService::place_and_apply`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_model::{
    DesiredTaskStatus, ResourceKind, StopCode, TaskDefinitionStatus, TaskLifecycle, TaskStatus,
};
use wharf_store::Txn;

use super::instances::{InstanceRecord, Usage};
use super::placement::{self, PlacementInput};
use super::tags::{check_tags, wire_tags, Tag, WireTag};
use super::task_definitions::{TaskDefinitionRecord, TaskResourceNeeds};
use super::{client_error, epoch_seconds, invalid, keys, paging, Cx, EcsService};
use crate::records::{encode, store_failure, too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

/// One container of a task, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub name: String,
    pub arn: String,
    pub image: String,
    pub last_status: String,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub runtime_id: Option<String>,
    pub network_bindings: Vec<Value>,
    pub health_status: String,
    /// Whether the task stops when this container exits; it decides the task's health.
    #[serde(default = "essential_by_default")]
    pub essential: bool,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
}

fn essential_by_default() -> bool {
    true
}

/// A task's health as ECS derives it from its essential containers': UNHEALTHY when
/// any is unhealthy, HEALTHY when every one with a health check is healthy, UNKNOWN
/// otherwise.
fn task_health(containers: &[ContainerRecord]) -> &'static str {
    let essential: Vec<&str> = containers
        .iter()
        .filter(|c| c.essential)
        .map(|c| c.health_status.as_str())
        .collect();
    if essential.contains(&"UNHEALTHY") {
        "UNHEALTHY"
    } else if essential.contains(&"HEALTHY") && !essential.contains(&"UNKNOWN") {
        "HEALTHY"
    } else {
        "UNKNOWN"
    }
}

/// A task, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub id: String,
    pub arn: String,
    pub cluster: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    pub family: String,
    pub container_instance_arn: Option<String>,
    pub lifecycle: TaskLifecycle,
    pub needs: TaskResourceNeeds,
    pub group: String,
    pub started_by: Option<String>,
    pub launch_type: String,
    pub overrides: Value,
    pub containers: Vec<ContainerRecord>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub availability_zone: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopping_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub pull_started_at: Option<i64>,
    pub pull_stopped_at: Option<i64>,
    pub execution_stopped_at: Option<i64>,
    pub version: i64,
    pub tags: Vec<Tag>,
}

impl TaskRecord {
    /// The `Task` wire shape.
    pub fn to_wire(&self, with_tags: bool) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let mut wire = json!({
                    "containerArn": c.arn,
                    "taskArn": self.arn,
                    "name": c.name,
                    "image": c.image,
                    "lastStatus": c.last_status,
                    "networkBindings": c.network_bindings,
                    "networkInterfaces": [],
                    "healthStatus": c.health_status,
                });
                if let Some(code) = c.exit_code {
                    wire["exitCode"] = json!(code);
                }
                if let Some(reason) = &c.reason {
                    wire["reason"] = json!(reason);
                }
                if let Some(id) = &c.runtime_id {
                    wire["runtimeId"] = json!(id);
                }
                if let Some(cpu) = c.cpu {
                    wire["cpu"] = json!(cpu.to_string());
                }
                if let Some(memory) = c.memory {
                    wire["memory"] = json!(memory.to_string());
                }
                if let Some(reservation) = c.memory_reservation {
                    wire["memoryReservation"] = json!(reservation.to_string());
                }
                wire
            })
            .collect();
        let mut wire = json!({
            "taskArn": self.arn,
            "clusterArn": self.cluster_arn,
            "taskDefinitionArn": self.task_definition_arn,
            "overrides": self.overrides,
            "lastStatus": self.lifecycle.last().as_str(),
            "desiredStatus": self.lifecycle.desired().as_str(),
            "containers": containers,
            "version": self.version,
            "createdAt": epoch_seconds(self.created_at),
            "group": self.group,
            "launchType": self.launch_type,
            "attachments": [],
            "healthStatus": task_health(&self.containers),
            "enableExecuteCommand": false,
            "tags": [],
        });
        let optional_times = [
            ("startedAt", self.started_at),
            ("stoppingAt", self.stopping_at),
            ("stoppedAt", self.stopped_at),
            ("pullStartedAt", self.pull_started_at),
            ("pullStoppedAt", self.pull_stopped_at),
            ("executionStoppedAt", self.execution_stopped_at),
        ];
        for (name, at) in optional_times {
            if let Some(at) = at {
                wire[name] = epoch_seconds(at);
            }
        }
        if let Some(arn) = &self.container_instance_arn {
            wire["containerInstanceArn"] = json!(arn);
        }
        if let Some(by) = &self.started_by {
            wire["startedBy"] = json!(by);
        }
        if let Some(cpu) = &self.cpu {
            wire["cpu"] = json!(cpu);
        }
        if let Some(memory) = &self.memory {
            wire["memory"] = json!(memory);
        }
        if let Some(zone) = &self.availability_zone {
            wire["availabilityZone"] = json!(zone);
        }
        if let Some(code) = self.lifecycle.stop_code() {
            wire["stopCode"] = json!(code.as_str());
        }
        if let Some(reason) = self.lifecycle.stopped_reason() {
            wire["stoppedReason"] = json!(reason);
        }
        if with_tags {
            wire["tags"] = wire_tags(&self.tags);
        }
        wire
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunTaskRequest {
    cluster: Option<String>,
    task_definition: String,
    count: Option<i64>,
    group: Option<String>,
    started_by: Option<String>,
    overrides: Option<Value>,
    #[serde(default)]
    placement_constraints: Vec<Value>,
    #[serde(default)]
    placement_strategy: Vec<Value>,
    launch_type: Option<String>,
    client_token: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartTaskRequest {
    cluster: Option<String>,
    task_definition: String,
    container_instances: Vec<String>,
    group: Option<String>,
    started_by: Option<String>,
    overrides: Option<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "enableECSManagedTags")]
    enable_ecs_managed_tags: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StopTaskRequest {
    cluster: Option<String>,
    task: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeTasksRequest {
    cluster: Option<String>,
    tasks: Vec<String>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListTasksRequest {
    cluster: Option<String>,
    container_instance: Option<String>,
    family: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    started_by: Option<String>,
    service_name: Option<String>,
    desired_status: Option<String>,
    launch_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerStateChange {
    container_name: Option<String>,
    runtime_id: Option<String>,
    exit_code: Option<i64>,
    #[serde(default)]
    network_bindings: Vec<Value>,
    reason: Option<String>,
    status: Option<String>,
    /// Wharf's agent adds the container's health (not an ECS member).
    health_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubmitTaskStateChangeRequest {
    cluster: Option<String>,
    task: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerStateChange>,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    execution_stopped_at: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubmitContainerStateChangeRequest {
    cluster: Option<String>,
    task: Option<String>,
    #[serde(flatten)]
    change: ContainerStateChange,
}

/// The idempotency record of a RunTask call with a clientToken.
#[derive(Serialize, Deserialize)]
struct ClientTokenRecord {
    task_definition_arn: String,
    response: Value,
}

/// Tasks a placement reserved in the view; dropping it gives their shares back, which
/// is what must happen unless their transaction committed (then the view's own copy
/// of each task takes over its share).
struct Reservation<'a> {
    view: &'a super::view::StateView,
    region: &'a str,
    cluster: &'a str,
    task_ids: Vec<String>,
}

impl Reservation<'_> {
    /// The transaction committed: the view takes the shares over when it sees the
    /// tasks.
    fn keep(mut self) {
        self.task_ids.clear();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.task_ids.is_empty() {
            self.view.release(self.region, self.cluster, &self.task_ids);
        }
    }
}

/// How many tasks a single RunTask may start, as in ECS.
const MAX_RUN_TASK_COUNT: i64 = 10;

/// The tags ECS puts on a task it launches with `enableECSManagedTags`: the cluster's
/// name and, for a service's task, the service's name. Their `aws:` prefix keeps users
/// from setting, changing or removing them.
pub(crate) fn ecs_managed_tags(cluster: &str, service: Option<&str>) -> Vec<Tag> {
    let mut tags = vec![Tag {
        key: "aws:ecs:clusterName".to_owned(),
        value: cluster.to_owned(),
    }];
    if let Some(service) = service {
        tags.push(Tag {
            key: "aws:ecs:serviceName".to_owned(),
            value: service.to_owned(),
        });
    }
    tags
}

fn seconds_to_millis(seconds: Option<f64>) -> Option<i64> {
    seconds
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0) as i64)
}

/// The resource needs of a task after RunTask's task-level cpu/memory overrides.
fn needs_with_overrides(
    definition: &TaskDefinitionRecord,
    overrides: &Value,
) -> Result<TaskResourceNeeds, AwsError> {
    let mut needs = definition.needs.clone();
    for (member, slot) in [
        ("cpu", &mut needs.cpu_units),
        ("memory", &mut needs.memory_mib),
    ] {
        if let Some(text) = overrides.get(member).and_then(Value::as_str) {
            *slot = text.trim().parse::<i64>().map_err(|_| {
                invalid(format!(
                    "Invalid {member} override {text:?}: a number is expected."
                ))
            })?;
        }
    }
    Ok(needs)
}

impl EcsService {
    /// What the unstopped tasks on one instance use, from the view caught up with
    /// the store.
    pub(crate) async fn instance_usage(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        instance_arn: &str,
    ) -> Result<Usage, AwsError> {
        let view = self.fresh_view().await?;
        Ok(view.read_cluster_records(cx.region, cluster, |state| {
            Usage::of(instance_arn, state.tasks_on(instance_arn))
        }))
    }

    pub(crate) async fn has_unstopped_tasks(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
    ) -> Result<bool, AwsError> {
        let view = self.fresh_view().await?;
        Ok(view.read_cluster_records(cx.region, cluster, |state| {
            state
                .tasks
                .values()
                .any(|t| t.value.lifecycle.last() != TaskStatus::Stopped)
        }))
    }

    /// The ACTIVE task definition a new task is started from.
    async fn runnable_definition(
        &self,
        cx: &Cx<'_>,
        reference: &str,
    ) -> Result<TaskDefinitionRecord, AwsError> {
        self.active_definition(cx, reference, "Unable to find task definition.")
            .await
    }

    /// The ACTIVE revision `reference` names; `not_found` is the caller's message for
    /// a reference that names none.
    pub(crate) async fn active_definition(
        &self,
        cx: &Cx<'_>,
        reference: &str,
        not_found: &str,
    ) -> Result<TaskDefinitionRecord, AwsError> {
        let definition = self
            .find_task_definition(cx, reference)
            .await?
            .ok_or_else(|| client_error(not_found))?
            .value;
        if definition.status != TaskDefinitionStatus::Active {
            return Err(client_error(format!(
                "TaskDefinition is inactive ({})",
                definition.arn
            )));
        }
        Ok(definition)
    }

    /// Builds a new task record placed on `instance`.
    #[allow(clippy::too_many_arguments)]
    fn new_task(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        definition: &TaskDefinitionRecord,
        needs: &TaskResourceNeeds,
        instance: &InstanceRecord,
        group: &str,
        started_by: Option<&str>,
        overrides: &Value,
        launch_type: &str,
        tags: &[Tag],
    ) -> TaskRecord {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let arn = cx.arn(ResourceKind::Task, &format!("{cluster}/{id}"));
        let containers = definition
            .wire
            .get("containerDefinitions")
            .and_then(Value::as_array)
            .map(|defs| {
                defs.iter()
                    .map(|def| {
                        let int = |name: &str| def.get(name).and_then(Value::as_i64);
                        ContainerRecord {
                            name: def
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            arn: cx.arn(
                                ResourceKind::Container,
                                &format!("{cluster}/{id}/{}", uuid::Uuid::new_v4()),
                            ),
                            image: def
                                .get("image")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            last_status: "PENDING".to_owned(),
                            exit_code: None,
                            reason: None,
                            runtime_id: None,
                            network_bindings: Vec::new(),
                            health_status: "UNKNOWN".to_owned(),
                            essential: def
                                .get("essential")
                                .and_then(Value::as_bool)
                                .unwrap_or(true),
                            cpu: int("cpu"),
                            memory: int("memory"),
                            memory_reservation: int("memoryReservation"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let availability_zone = instance
            .attributes
            .iter()
            .find(|a| a.name == "ecs.availability-zone")
            .and_then(|a| a.value.clone());
        TaskRecord {
            id,
            arn,
            cluster: cluster.to_owned(),
            cluster_arn: cx.arn(ResourceKind::Cluster, cluster),
            task_definition_arn: definition.arn.clone(),
            family: definition.family.clone(),
            container_instance_arn: Some(instance.arn.clone()),
            lifecycle: TaskLifecycle::placed(),
            needs: needs.clone(),
            group: group.to_owned(),
            started_by: started_by.map(str::to_owned),
            launch_type: launch_type.to_owned(),
            overrides: overrides.clone(),
            containers,
            cpu: definition
                .wire
                .get("cpu")
                .and_then(Value::as_str)
                .map(str::to_owned),
            memory: definition
                .wire
                .get("memory")
                .and_then(Value::as_str)
                .map(str::to_owned),
            availability_zone,
            created_at: cx.now_millis,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            pull_started_at: None,
            pull_stopped_at: None,
            execution_stopped_at: None,
            version: 1,
            tags: tags.to_vec(),
        }
    }

    /// Plans and applies a placement, re-planning when the applier loses a race.
    ///
    /// Placements in one cluster plan one at a time, but commit together: a call holds
    /// the cluster's placement lock only while it plans and queues its transaction,
    /// and the view reserves what the plan took, so the next call plans around it
    /// while the first one's commit is still being made durable. Every transaction
    /// compares each instance it uses: its revision when the plan saw everything
    /// committed, or, when the plan counted placements still queued, the version the
    /// last of them leaves together with one task key that placement writes — so a
    /// placement that relied on a failed one fails too, and nothing is over-committed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn place_and_apply(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        definition: &TaskDefinitionRecord,
        input: PlacementInput<'_>,
        started_by: Option<&str>,
        overrides: &Value,
        launch_type: &str,
        tags: &[Tag],
        client_token_key: Option<&str>,
    ) -> Result<Value, AwsError> {
        let view = self.view().await?;
        let store = self.records.store();
        let lock_key = format!("placement/{}/{cluster}", cx.region);
        // The plan must see every write acknowledged before this call (an instance
        // registered a moment ago), so the view catches up with the store as it was
        // when the call began; it has usually done so by the time the lock is ours.
        let mut revision = store.revision().await.map_err(store_failure)?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let queued = self.key_locks.lock(&lock_key).await;
            view.wait_for(revision).await;
            let ((outcome, instances), new_tasks, expectations) = view.plan_and_reserve(
                cx.region,
                cluster,
                |state| {
                    let (outcome, instances) = placement::place(state, &input)?;
                    let tasks = outcome
                        .placed
                        .iter()
                        .filter_map(|arn| instances.iter().find(|i| &i.value.arn == arn))
                        .map(|instance| {
                            self.new_task(
                                cx,
                                cluster,
                                definition,
                                input.needs,
                                &instance.value,
                                input.group,
                                started_by,
                                overrides,
                                launch_type,
                                tags,
                            )
                        })
                        .collect();
                    Ok(((outcome, instances), tasks))
                },
                |task| keys::task(cx.region, cluster, &task.id),
            )?;
            let reservation = Reservation {
                view,
                region: cx.region,
                cluster,
                task_ids: new_tasks.iter().map(|t| t.id.clone()).collect(),
            };
            let mut txn = Txn::new();
            // The tasks come before the instances they bump: a watcher that has seen an
            // instance at this revision has then seen its new tasks too, so a plan made
            // against the view never pairs an instance's new revision with its old load.
            for task in &new_tasks {
                txn = txn.put(keys::task(cx.region, cluster, &task.id), encode(task));
            }
            for expectation in &expectations {
                let Some(instance) = instances
                    .iter()
                    .find(|i| i.value.arn == expectation.instance_arn)
                else {
                    continue;
                };
                let key = keys::instance(cx.region, cluster, &instance.value.id);
                txn = match &expectation.after_task_key {
                    None => txn.when_mod_revision(&key, expectation.revision),
                    Some(task_key) => {
                        txn.compares.push(wharf_store::Compare::Exists {
                            key: task_key.clone(),
                        });
                        txn.when_version(&key, expectation.version)
                    }
                };
                let mut record = instance.value.clone();
                record.version = expectation.record_version;
                txn = txn.put(key, encode(&record));
            }
            let failures: Vec<Value> = outcome
                .failures
                .iter()
                .map(|(arn, reason)| json!({"arn": arn, "reason": reason}))
                .collect();
            let response = json!({
                "tasks": new_tasks.iter().map(|t| t.to_wire(true)).collect::<Vec<_>>(),
                "failures": failures,
            });
            if let Some(token_key) = client_token_key {
                txn = txn.when_mod_revision(token_key, 0).put(
                    token_key,
                    encode(&ClientTokenRecord {
                        task_definition_arn: definition.arn.clone(),
                        response: response.clone(),
                    }),
                );
            }
            if txn.ops.is_empty() {
                return Ok(response);
            }
            let mut commit = store.txn(txn);
            // The first poll queues the transaction with the store; only then may the
            // next placement plan (and queue behind it).
            let first = std::future::poll_fn(|context| {
                std::task::Poll::Ready(commit.as_mut().poll(context))
            })
            .await;
            drop(queued);
            let committed = match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => commit.await,
            }
            .map_err(store_failure)?
            .succeeded;
            if committed {
                reservation.keep();
                return Ok(response);
            }
            drop(reservation);
            // The next plan must see what made this one fail.
            revision = store.revision().await.map_err(store_failure)?;
            // Another writer got there first: a token now stored answers the call.
            if let Some(token_key) = client_token_key {
                if let Some(stored) = self.records.get::<ClientTokenRecord>(token_key).await? {
                    return Ok(stored.value.response);
                }
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn run_task(
        &self,
        cx: &Cx<'_>,
        req: RunTaskRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let count = req.count.unwrap_or(1);
        if !(1..=MAX_RUN_TASK_COUNT).contains(&count) {
            return Err(invalid("Count must be between 1 and 10."));
        }
        if req.started_by.as_ref().is_some_and(|s| s.len() > 128) {
            return Err(invalid("startedBy must be at most 128 characters."));
        }
        let mut tags = check_tags(req.tags)?;
        if req.enable_ecs_managed_tags == Some(true) {
            tags.extend(ecs_managed_tags(&cluster.name, None));
        }
        let launch_type = req.launch_type.unwrap_or_else(|| "EC2".to_owned());
        let token_key = match &req.client_token {
            Some(token) if token.is_empty() || token.len() > 64 => {
                return Err(invalid("clientToken must be 1 to 64 characters."))
            }
            Some(token) => Some(keys::client_token(cx.region, &cluster.name, token)),
            None => None,
        };
        let definition = self.runnable_definition(cx, &req.task_definition).await?;
        let compatible = definition
            .wire
            .get("compatibilities")
            .and_then(Value::as_array)
            .is_none_or(|list| {
                list.iter()
                    .any(|c| c.as_str() == Some(launch_type.as_str()))
            });
        if !compatible {
            return Err(client_error(format!(
                "Task definition does not support launch_type {launch_type}."
            )));
        }
        if let Some(key) = &token_key {
            if let Some(stored) = self.records.get::<ClientTokenRecord>(key).await? {
                if stored.value.task_definition_arn != definition.arn {
                    return Err(invalid(
                        "The clientToken was already used with different parameters.",
                    ));
                }
                return Ok(stored.value.response);
            }
        }
        let overrides = req.overrides.unwrap_or_else(|| json!({}));
        let needs = needs_with_overrides(&definition, &overrides)?;
        let group = req
            .group
            .unwrap_or_else(|| format!("family:{}", definition.family));
        let input = PlacementInput {
            needs: &needs,
            count: count as usize,
            group: &group,
            constraints: &req.placement_constraints,
            strategies: &req.placement_strategy,
            only_instances: None,
            cluster_arn: &cluster.arn,
            seed: rand::random(),
        };
        self.place_and_apply(
            cx,
            &cluster.name,
            &definition,
            input,
            req.started_by.as_deref(),
            &overrides,
            &launch_type,
            &tags,
            token_key.as_deref(),
        )
        .await
    }

    pub(crate) async fn start_task(
        &self,
        cx: &Cx<'_>,
        req: StartTaskRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        if req.container_instances.is_empty() || req.container_instances.len() > 10 {
            return Err(invalid(
                "containerInstances must have between 1 and 10 items.",
            ));
        }
        let mut tags = check_tags(req.tags)?;
        if req.enable_ecs_managed_tags == Some(true) {
            tags.extend(ecs_managed_tags(&cluster.name, None));
        }
        let definition = self.runnable_definition(cx, &req.task_definition).await?;
        let overrides = req.overrides.unwrap_or_else(|| json!({}));
        let needs = needs_with_overrides(&definition, &overrides)?;
        let group = req
            .group
            .unwrap_or_else(|| format!("family:{}", definition.family));
        let mut arns = Vec::new();
        for reference in &req.container_instances {
            let id = keys::resource_id(reference, ResourceKind::ContainerInstance)?;
            arns.push(cx.arn(
                ResourceKind::ContainerInstance,
                &format!("{}/{id}", cluster.name),
            ));
        }
        let input = PlacementInput {
            needs: &needs,
            count: arns.len(),
            group: &group,
            constraints: &[],
            strategies: &[],
            only_instances: Some(&arns),
            cluster_arn: &cluster.arn,
            seed: rand::random(),
        };
        self.place_and_apply(
            cx,
            &cluster.name,
            &definition,
            input,
            req.started_by.as_deref(),
            &overrides,
            "EC2",
            &tags,
            None,
        )
        .await
    }

    /// Finds a task of a cluster by id or ARN.
    async fn find_task(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        reference: &str,
    ) -> Result<Option<Versioned<TaskRecord>>, AwsError> {
        let id = keys::resource_id(reference, ResourceKind::Task)?;
        self.records.get(&keys::task(cx.region, cluster, &id)).await
    }

    /// Reads, changes and writes back a task, retrying on conflicts.
    ///
    /// The first attempt starts from the view's copy of the task, which spares a store
    /// read and a decode on the agents' busiest path (every state report). The copy may
    /// trail the store: then the compare-and-swap fails, or the change refuses it, and
    /// every later attempt reads the store.
    async fn modify_task(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        reference: &str,
        change: impl Fn(&mut TaskRecord) -> Result<(), AwsError>,
    ) -> Result<TaskRecord, AwsError> {
        let id = keys::resource_id(reference, ResourceKind::Task)?;
        let mut from_view = match self.view().await {
            Ok(view) => {
                view.read_cluster_records(cx.region, cluster, |state| state.tasks.get(&id).cloned())
            }
            Err(_) => None,
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let viewed = from_view.is_some();
            let current = match from_view.take() {
                Some(current) => current,
                None => match self.find_task(cx, cluster, reference).await? {
                    Some(current) => current,
                    None => return Err(invalid("The referenced task was not found.")),
                },
            };
            let mut record = current.value;
            if let Err(error) = change(&mut record) {
                if viewed {
                    continue;
                }
                return Err(error);
            }
            record.version += 1;
            let key = keys::task(cx.region, cluster, &record.id);
            if self.records.put_if(&key, &record, current.revision).await? {
                return Ok(record);
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn stop_task(
        &self,
        cx: &Cx<'_>,
        req: StopTaskRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        if req.reason.as_ref().is_some_and(|r| r.len() > 255) {
            return Err(invalid("reason must be at most 255 characters."));
        }
        let reason = req
            .reason
            .clone()
            .unwrap_or_else(|| "Task stopped by user".to_owned());
        let now = cx.now_millis;
        let record = self
            .modify_task(cx, &cluster.name, &req.task, |task| {
                if task
                    .lifecycle
                    .request_stop(StopCode::UserInitiated, &reason)
                {
                    task.stopping_at = Some(now);
                    // A task no agent has picked up yet has no containers to stop, so
                    // it stops at once.
                    if task.lifecycle.last() == TaskStatus::Provisioning {
                        task.lifecycle
                            .advance(TaskStatus::Stopped)
                            .map_err(|e| invalid(e.to_string()))?;
                        task.stopped_at = Some(now);
                        for container in &mut task.containers {
                            container.last_status = "STOPPED".to_owned();
                        }
                    }
                }
                Ok(())
            })
            .await?;
        Ok(json!({"task": record.to_wire(false)}))
    }

    pub(crate) async fn describe_tasks(
        &self,
        cx: &Cx<'_>,
        req: DescribeTasksRequest,
    ) -> Result<Value, AwsError> {
        if req.tasks.len() > 100 {
            return Err(invalid("Tasks cannot have more than 100 entries."));
        }
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let with_tags = req.include.iter().any(|i| i == "TAGS");
        let mut tasks = Vec::new();
        let mut failures = Vec::new();
        for reference in &req.tasks {
            match self.find_task(cx, &cluster.name, reference).await {
                Ok(Some(task)) => tasks.push(task.value.to_wire(with_tags)),
                Ok(None) | Err(_) => failures.push(cx.missing(
                    ResourceKind::Task,
                    reference,
                    &format!("{}/{reference}", cluster.name),
                )),
            }
        }
        Ok(json!({"tasks": tasks, "failures": failures}))
    }

    pub(crate) async fn list_tasks(
        &self,
        cx: &Cx<'_>,
        req: ListTasksRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let instance_arn = match &req.container_instance {
            Some(reference) => {
                let id = keys::resource_id(reference, ResourceKind::ContainerInstance)?;
                Some(cx.arn(
                    ResourceKind::ContainerInstance,
                    &format!("{}/{id}", cluster.name),
                ))
            }
            None => None,
        };
        let desired = req.desired_status.as_deref().unwrap_or("RUNNING");
        if !["RUNNING", "PENDING", "STOPPED"].contains(&desired) {
            return Err(invalid(format!("Invalid desiredStatus: {desired}")));
        }
        let service_group = req.service_name.as_ref().map(|s| format!("service:{s}"));
        let view = self.fresh_view().await?;
        let mut arns: Vec<String> = view.read_cluster_records(cx.region, &cluster.name, |state| {
            state
                .tasks
                .values()
                .map(|t| &t.value)
                .filter(|t| {
                    let status_ok = match desired {
                        "STOPPED" => t.lifecycle.desired() == DesiredTaskStatus::Stopped,
                        // ECS never sets a desired status of PENDING, so asking for it
                        // finds nothing.
                        "PENDING" => false,
                        _ => t.lifecycle.desired() == DesiredTaskStatus::Running,
                    };
                    status_ok
                        && req.family.as_ref().is_none_or(|f| *f == t.family)
                        && req
                            .started_by
                            .as_ref()
                            .is_none_or(|s| Some(s) == t.started_by.as_ref())
                        && req.launch_type.as_ref().is_none_or(|l| *l == t.launch_type)
                        && instance_arn
                            .as_ref()
                            .is_none_or(|a| Some(a) == t.container_instance_arn.as_ref())
                        && service_group.as_ref().is_none_or(|g| *g == t.group)
                })
                .map(|t| t.arn.clone())
                .collect()
        });
        arns.sort();
        let (arns, next) = paging::page(
            arns,
            String::clone,
            req.next_token.as_deref(),
            req.max_results,
            100,
        )?;
        Ok(json!({"taskArns": arns, "nextToken": next}))
    }

    pub(crate) async fn submit_task_state_change(
        &self,
        cx: &Cx<'_>,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let task = req
            .task
            .as_deref()
            .ok_or_else(|| invalid("task is required."))?;
        let status = req
            .status
            .as_deref()
            .map(|s| {
                TaskStatus::parse(s).ok_or_else(|| invalid(format!("Invalid task status: {s}")))
            })
            .transpose()?;
        let now = cx.now_millis;
        self.modify_task(cx, &cluster.name, task, |record| {
            if let Some(status) = status {
                // A report older than what is known (a retried, late message) is
                // acknowledged and ignored: state changes are idempotent.
                if record.lifecycle.last().can_move_to(status) {
                    // A task that stops without having been asked to stopped because an
                    // essential container exited; the reason is recorded before the
                    // move, since reaching STOPPED closes the stop request.
                    if status == TaskStatus::Stopped {
                        let reason = req
                            .reason
                            .clone()
                            .unwrap_or_else(|| "Essential container in task exited".to_owned());
                        record
                            .lifecycle
                            .request_stop(StopCode::EssentialContainerExited, &reason);
                        record.stopped_at = Some(now);
                    }
                    if status == TaskStatus::Running {
                        record.started_at = record.started_at.or(Some(now));
                    }
                    record
                        .lifecycle
                        .advance(status)
                        .map_err(|e| invalid(e.to_string()))?;
                }
            }
            for change in &req.containers {
                apply_container_change(record, change);
            }
            record.pull_started_at =
                seconds_to_millis(req.pull_started_at).or(record.pull_started_at);
            record.pull_stopped_at =
                seconds_to_millis(req.pull_stopped_at).or(record.pull_stopped_at);
            record.execution_stopped_at =
                seconds_to_millis(req.execution_stopped_at).or(record.execution_stopped_at);
            Ok(())
        })
        .await?;
        Ok(json!({"acknowledgment": "ACK"}))
    }

    pub(crate) async fn submit_container_state_change(
        &self,
        cx: &Cx<'_>,
        req: SubmitContainerStateChangeRequest,
    ) -> Result<Value, AwsError> {
        let cluster = self.active_cluster(cx, req.cluster.as_deref()).await?.value;
        let task = req
            .task
            .as_deref()
            .ok_or_else(|| invalid("task is required."))?;
        self.modify_task(cx, &cluster.name, task, |record| {
            apply_container_change(record, &req.change);
            Ok(())
        })
        .await?;
        Ok(json!({"acknowledgment": "ACK"}))
    }
}

/// Container statuses in lifecycle order; a report never moves a container back.
const CONTAINER_STATUS_ORDER: [&str; 4] = ["PENDING", "RUNNING", "STOPPING", "STOPPED"];

fn apply_container_change(task: &mut TaskRecord, change: &ContainerStateChange) {
    let Some(name) = &change.container_name else {
        return;
    };
    let Some(container) = task.containers.iter_mut().find(|c| &c.name == name) else {
        return;
    };
    if let Some(status) = &change.status {
        let rank = |s: &str| CONTAINER_STATUS_ORDER.iter().position(|x| *x == s);
        if let (Some(new), current) = (rank(status), rank(&container.last_status)) {
            if current.is_none_or(|c| new >= c) {
                container.last_status = status.clone();
            }
        }
    }
    if change.exit_code.is_some() {
        container.exit_code = change.exit_code;
    }
    if change.reason.is_some() {
        container.reason = change.reason.clone();
    }
    if change.runtime_id.is_some() {
        container.runtime_id = change.runtime_id.clone();
    }
    if let Some(health) = &change.health_status {
        if ["HEALTHY", "UNHEALTHY", "UNKNOWN"].contains(&health.as_str()) {
            container.health_status = health.clone();
        }
    }
    if !change.network_bindings.is_empty() {
        container.network_bindings = change.network_bindings.clone();
    }
}

// ---------------------------------------------------------------------------------
// Entry points for the service scheduler (`ecs/services`). They only wrap the RunTask
// and StopTask paths above, so that service tasks are placed and stopped exactly as
// RunTask and StopTask place and stop tasks.
// ---------------------------------------------------------------------------------

impl EcsService {
    /// Places and starts `count` tasks of `definition` for a service (group
    /// `service:<name>`, `startedBy` the deployment id) with the service's constraints
    /// and strategies, or one task on each of `only_instances` (as StartTask, for
    /// DAEMON services). Answers in RunTask's shape: `{tasks, failures}`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_service_tasks(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        definition: &TaskDefinitionRecord,
        count: usize,
        group: &str,
        started_by: &str,
        constraints: &[Value],
        strategies: &[Value],
        only_instances: Option<&[String]>,
        launch_type: &str,
        tags: &[Tag],
    ) -> Result<Value, AwsError> {
        let cluster_arn = cx.arn(ResourceKind::Cluster, cluster);
        let input = PlacementInput {
            needs: &definition.needs,
            count: only_instances.map_or(count, <[String]>::len),
            group,
            constraints,
            strategies,
            only_instances,
            cluster_arn: &cluster_arn,
            seed: rand::random(),
        };
        self.place_and_apply(
            cx,
            cluster,
            definition,
            input,
            Some(started_by),
            &json!({}),
            launch_type,
            tags,
            None,
        )
        .await
    }

    /// Asks a task to stop on behalf of the service scheduler (stop code
    /// `ServiceSchedulerInitiated`), as StopTask does for a user.
    pub(crate) async fn stop_service_task(
        &self,
        cx: &Cx<'_>,
        cluster: &str,
        task_id: &str,
        reason: &str,
    ) -> Result<TaskRecord, AwsError> {
        let now = cx.now_millis;
        self.modify_task(cx, cluster, task_id, |task| {
            if task
                .lifecycle
                .request_stop(StopCode::ServiceSchedulerInitiated, reason)
            {
                task.stopping_at = Some(now);
                if task.lifecycle.last() == TaskStatus::Provisioning {
                    task.lifecycle
                        .advance(TaskStatus::Stopped)
                        .map_err(|e| invalid(e.to_string()))?;
                    task.stopped_at = Some(now);
                    for container in &mut task.containers {
                        container.last_status = "STOPPED".to_owned();
                    }
                }
            }
            Ok(())
        })
        .await
    }
}
