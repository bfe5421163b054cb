//! The ECS API (`AmazonEC2ContainerServiceV20141113`), operation by operation.
//!
//! Requests arrive as JSON values that `wharf-aws` has authenticated; each operation
//! first checks the value against the botocore model's input shape (types, required
//! members, enums, lengths and ranges), then parses it into its own request struct,
//! applies ECS's semantic rules, and answers with a value in the model's output shape.

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wharf_aws::{AwsError, AwsService, CallContext, Protocol, ServiceInput, ServiceOutput};
use wharf_model::{Arn, ResourceKind};

use crate::clock::Clock;
use crate::records::Records;

mod account_settings;
pub mod agent_liveness;
pub mod agent_sessions;
mod capacity_providers;
mod clusters;
pub mod housekeeping;
mod instances;
mod keys;
mod paging;
mod placement;
pub mod services;
mod tags;
pub mod task_definition_rules;
mod task_definitions;
mod tasks;
mod view;

/// The botocore model of the ECS API, which decides the wire shapes.
pub const ECS_MODEL_JSON: &str = include_str!("../../../../models/ecs-2014-11-13.json");

/// Settings of the ECS API.
#[derive(Debug, Clone)]
pub struct EcsConfig {
    /// The account id in every ARN (default `000000000000`).
    pub account_id: String,
    /// The endpoint agents reach the control plane at, which DiscoverPollEndpoint
    /// returns (e.g. `http://127.0.0.1:4566`).
    pub endpoint: Option<String>,
}

impl Default for EcsConfig {
    fn default() -> Self {
        EcsConfig {
            account_id: "000000000000".to_owned(),
            endpoint: None,
        }
    }
}

/// The ECS API service.
pub struct EcsService {
    records: Records,
    /// Queues writers of hot keys in this process; see [`crate::records::KeyLocks`].
    key_locks: crate::records::KeyLocks,
    /// The newest channel session of each instance (by ARN), so that an older session
    /// ending does not mark a reconnected agent as disconnected.
    sessions: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Started on first use, so that building the service needs no runtime.
    view: tokio::sync::OnceCell<Arc<view::StateView>>,
    clock: Arc<dyn Clock>,
    model: Arc<wharf_aws::model::ServiceModel>,
    config: EcsConfig,
}

/// One call's context: who, where, when.
pub(crate) struct Cx<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub now_millis: i64,
}

impl Cx<'_> {
    /// An ARN in this call's region and account.
    pub fn arn(&self, kind: ResourceKind, resource: &str) -> String {
        Arn::new(self.region, self.account, kind, resource).to_string()
    }

    /// A Describe call's failure for a reference that names nothing: the ARN as
    /// given, or the one the resource (`resource`, as in [`Cx::arn`]) would have.
    pub fn missing(&self, kind: ResourceKind, reference: &str, resource: &str) -> Value {
        let arn = if wharf_model::arn::is_arn(reference) {
            reference.to_owned()
        } else {
            self.arn(kind, resource)
        };
        serde_json::json!({"arn": arn, "reason": "MISSING"})
    }
}

impl EcsService {
    /// Builds the service over a store.
    pub fn new(records: Records, clock: Arc<dyn Clock>, config: EcsConfig) -> Self {
        let model = wharf_aws::model::ServiceModel::from_json(ECS_MODEL_JSON)
            .expect("the bundled ECS model parses");
        EcsService {
            records,
            key_locks: Default::default(),
            sessions: Default::default(),
            view: tokio::sync::OnceCell::new(),
            clock,
            model: Arc::new(model),
            config,
        }
    }

    /// The watch-fed view of instances and tasks.
    pub(crate) async fn view(&self) -> Result<&Arc<view::StateView>, AwsError> {
        self.view
            .get_or_try_init(|| view::StateView::start(self.records.store().clone()))
            .await
            .map_err(crate::records::store_failure)
    }

    /// The view, caught up with every write acknowledged before this call.
    pub(crate) async fn fresh_view(&self) -> Result<&Arc<view::StateView>, AwsError> {
        let view = self.view().await?;
        let revision = self
            .records
            .store()
            .revision()
            .await
            .map_err(crate::records::store_failure)?;
        view.wait_for(revision).await;
        Ok(view)
    }

    /// The ECS service model the service checks requests against.
    pub fn model(&self) -> &Arc<wharf_aws::model::ServiceModel> {
        &self.model
    }

    async fn dispatch(&self, cx: &Cx<'_>, op: &str, input: Value) -> Result<Value, AwsError> {
        match op {
            "CreateCluster" => self.create_cluster(cx, parse(input)?).await,
            "DescribeClusters" => self.describe_clusters(cx, parse(input)?).await,
            "ListClusters" => self.list_clusters(cx, parse(input)?).await,
            "DeleteCluster" => self.delete_cluster(cx, parse(input)?).await,
            "UpdateCluster" => self.update_cluster(cx, parse(input)?).await,
            "UpdateClusterSettings" => self.update_cluster_settings(cx, parse(input)?).await,
            "PutClusterCapacityProviders" => {
                self.put_cluster_capacity_providers(cx, parse(input)?).await
            }
            "RegisterTaskDefinition" => self.register_task_definition(cx, input).await,
            "DescribeTaskDefinition" => self.describe_task_definition(cx, parse(input)?).await,
            "ListTaskDefinitions" => self.list_task_definitions(cx, parse(input)?).await,
            "ListTaskDefinitionFamilies" => {
                self.list_task_definition_families(cx, parse(input)?).await
            }
            "DeregisterTaskDefinition" => self.deregister_task_definition(cx, parse(input)?).await,
            "DeleteTaskDefinitions" => self.delete_task_definitions(cx, parse(input)?).await,
            "RegisterContainerInstance" => {
                self.register_container_instance(cx, parse(input)?).await
            }
            "DeregisterContainerInstance" => {
                self.deregister_container_instance(cx, parse(input)?).await
            }
            "DescribeContainerInstances" => {
                self.describe_container_instances(cx, parse(input)?).await
            }
            "ListContainerInstances" => self.list_container_instances(cx, parse(input)?).await,
            "UpdateContainerInstancesState" => {
                self.update_container_instances_state(cx, parse(input)?)
                    .await
            }
            "PutAttributes" => self.put_attributes(cx, parse(input)?).await,
            "DeleteAttributes" => self.delete_attributes(cx, parse(input)?).await,
            "ListAttributes" => self.list_attributes(cx, parse(input)?).await,
            "RunTask" => self.run_task(cx, parse(input)?).await,
            "StartTask" => self.start_task(cx, parse(input)?).await,
            "StopTask" => self.stop_task(cx, parse(input)?).await,
            "DescribeTasks" => self.describe_tasks(cx, parse(input)?).await,
            "ListTasks" => self.list_tasks(cx, parse(input)?).await,
            "DiscoverPollEndpoint" => self.discover_poll_endpoint(cx, parse(input)?).await,
            "SubmitTaskStateChange" => self.submit_task_state_change(cx, parse(input)?).await,
            "SubmitContainerStateChange" => {
                self.submit_container_state_change(cx, parse(input)?).await
            }
            "CreateService" => self.create_service(cx, parse(input)?).await,
            "UpdateService" => self.update_service(cx, parse(input)?).await,
            "DeleteService" => self.delete_service(cx, parse(input)?).await,
            "DescribeServices" => self.describe_services(cx, parse(input)?).await,
            "ListServices" => self.list_services(cx, parse(input)?).await,
            "ListServicesByNamespace" => self.list_services_by_namespace(cx, parse(input)?).await,
            "TagResource" => self.tag_resource(cx, parse(input)?).await,
            "UntagResource" => self.untag_resource(cx, parse(input)?).await,
            "ListTagsForResource" => self.list_tags_for_resource(cx, parse(input)?).await,
            "ListAccountSettings" => self.list_account_settings(cx, parse(input)?).await,
            "PutAccountSetting" => self.put_account_setting(cx, parse(input)?, false).await,
            "PutAccountSettingDefault" => self.put_account_setting(cx, parse(input)?, true).await,
            "DeleteAccountSetting" => self.delete_account_setting(cx, parse(input)?).await,
            "CreateCapacityProvider" => self.create_capacity_provider(cx, parse(input)?).await,
            "DescribeCapacityProviders" => {
                self.describe_capacity_providers(cx, parse(input)?).await
            }
            "UpdateCapacityProvider" => self.update_capacity_provider(cx, parse(input)?).await,
            "DeleteCapacityProvider" => self.delete_capacity_provider(cx, parse(input)?).await,
            other => Err(AwsError::client(
                "UnknownOperationException",
                format!("Operation {other} is not supported by Wharf's ECS API."),
            )),
        }
    }
}

#[async_trait]
impl AwsService for EcsService {
    fn signing_name(&self) -> &'static str {
        "ecs"
    }

    fn protocol(&self) -> Protocol {
        Protocol::Json11 {
            target_prefix: "AmazonEC2ContainerServiceV20141113",
        }
    }

    async fn call(
        &self,
        ctx: &CallContext,
        operation: &str,
        input: ServiceInput,
    ) -> Result<ServiceOutput, AwsError> {
        let ServiceInput::Json(input) = input else {
            return Err(AwsError::client(
                "SerializationException",
                "ECS speaks AWS JSON 1.1",
            ));
        };
        self.model.check_json_request(operation, &input)?;
        let cx = Cx {
            region: &ctx.region,
            account: if ctx.account_id.is_empty() {
                &self.config.account_id
            } else {
                &ctx.account_id
            },
            now_millis: self.clock.now_millis(),
        };
        let mut output = self.dispatch(&cx, operation, input).await?;
        wharf_aws::json::omit_nulls(&mut output);
        Ok(ServiceOutput::Json(output))
    }
}

/// Parses a request value into an operation's request struct.
pub(crate) fn parse<T: DeserializeOwned>(input: Value) -> Result<T, AwsError> {
    serde_json::from_value(input)
        .map_err(|err| AwsError::client("SerializationException", err.to_string()))
}

/// Epoch milliseconds as the wire's epoch seconds.
pub(crate) fn epoch_seconds(millis: i64) -> Value {
    serde_json::json!(millis as f64 / 1000.0)
}

/// ECS's "invalid parameter" error.
pub(crate) fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", message)
}

/// ECS's generic client error.
pub(crate) fn client_error(message: impl Into<String>) -> AwsError {
    AwsError::client("ClientException", message)
}
