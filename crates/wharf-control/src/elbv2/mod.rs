//! The ELBv2 API (Elastic Load Balancing, version 2015-12-01), in the AWS query
//! protocol.
//!
//! `wharf-aws` authenticates a call and hands over its form; the botocore model reads
//! the form into a value of the operation's input shape and checks it (types,
//! required members, enums, lengths, ranges), the operation parses that value into its
//! own request struct, applies ELBv2's rules, and answers with a value in the model's
//! output shape, which the model writes as the `<OperationResult>` XML.
//!
//! The records written here are the load balancer's configuration
//! ([`wharf_lb::records`]): the data plane in `wharf-lb` watches them and serves what
//! they say. Every write is a compare-and-swap transaction. A change of what forwards
//! where (listeners, rules, load balancer deletion) rewrites every target group it
//! touches in the same transaction, with their `load_balancer_arns` recomputed, so
//! that two such changes touching one group are serialised and the list never drifts
//! from the listeners and rules (see `routing.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wharf_aws::{AwsError, AwsService, CallContext, Protocol, ServiceInput, ServiceOutput};

use crate::clock::Clock;
use crate::records::Records;

mod actions;
mod arns;
pub mod error;
mod listeners;
mod load_balancers;
mod paging;
mod resolve;
mod routing;
mod rules;
mod tags;
mod target_groups;
pub mod targets;

pub use error::Elbv2Error;

/// The botocore model of the ELBv2 API, which decides the wire shapes.
pub const ELBV2_MODEL_JSON: &str = include_str!("../../../../models/elbv2-2015-12-01.json");

/// The XML namespace of ELBv2 responses.
pub const ELBV2_XMLNS: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// Settings of the ELBv2 API.
#[derive(Debug, Clone)]
pub struct Elbv2Config {
    /// The account id in every ARN (default `000000000000`).
    pub account_id: String,
}

impl Default for Elbv2Config {
    fn default() -> Self {
        Elbv2Config {
            account_id: "000000000000".to_owned(),
        }
    }
}

/// The ELBv2 API service.
pub struct Elbv2Service {
    records: Records,
    clock: Arc<dyn Clock>,
    model: Arc<wharf_aws::model::ServiceModel>,
    config: Elbv2Config,
}

/// One call's context: who, where, when.
pub(crate) struct Cx<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub now_millis: i64,
}

impl Elbv2Service {
    /// Builds the service over a store.
    pub fn new(records: Records, clock: Arc<dyn Clock>, config: Elbv2Config) -> Self {
        let model = wharf_aws::model::ServiceModel::from_json(ELBV2_MODEL_JSON)
            .expect("the bundled ELBv2 model parses");
        Elbv2Service {
            records,
            clock,
            model: Arc::new(model),
            config,
        }
    }

    /// The ELBv2 service model the service checks requests against.
    pub fn model(&self) -> &Arc<wharf_aws::model::ServiceModel> {
        &self.model
    }

    /// Deletes the targets whose drain deadline has passed; returns how many went.
    pub async fn sweep_drained_targets(&self) -> Result<usize, AwsError> {
        targets::sweep_drained_targets(&self.records, self.clock.now_millis()).await
    }

    async fn dispatch(&self, cx: &Cx<'_>, op: &str, input: Value) -> Result<Value, AwsError> {
        match op {
            "CreateLoadBalancer" => self.create_load_balancer(cx, parse(input)?).await,
            "DescribeLoadBalancers" => self.describe_load_balancers(cx, parse(input)?).await,
            "DeleteLoadBalancer" => self.delete_load_balancer(cx, parse(input)?).await,
            "DescribeLoadBalancerAttributes" => {
                self.describe_load_balancer_attributes(cx, parse(input)?)
                    .await
            }
            "ModifyLoadBalancerAttributes" => {
                self.modify_load_balancer_attributes(cx, parse(input)?)
                    .await
            }
            "CreateTargetGroup" => self.create_target_group(cx, parse(input)?).await,
            "DescribeTargetGroups" => self.describe_target_groups(cx, parse(input)?).await,
            "ModifyTargetGroup" => self.modify_target_group(cx, parse(input)?).await,
            "DeleteTargetGroup" => self.delete_target_group(cx, parse(input)?).await,
            "DescribeTargetGroupAttributes" => {
                self.describe_target_group_attributes(cx, parse(input)?)
                    .await
            }
            "ModifyTargetGroupAttributes" => {
                self.modify_target_group_attributes(cx, parse(input)?).await
            }
            "CreateListener" => self.create_listener(cx, parse(input)?).await,
            "DescribeListeners" => self.describe_listeners(cx, parse(input)?).await,
            "ModifyListener" => self.modify_listener(cx, parse(input)?).await,
            "DeleteListener" => self.delete_listener(cx, parse(input)?).await,
            "CreateRule" => self.create_rule(cx, parse(input)?).await,
            "DescribeRules" => self.describe_rules(cx, parse(input)?).await,
            "ModifyRule" => self.modify_rule(cx, parse(input)?).await,
            "DeleteRule" => self.delete_rule(cx, parse(input)?).await,
            "SetRulePriorities" => self.set_rule_priorities(cx, parse(input)?).await,
            "AddTags" => self.add_tags(cx, parse(input)?).await,
            "RemoveTags" => self.remove_tags(cx, parse(input)?).await,
            "DescribeTags" => self.describe_tags(cx, parse(input)?).await,
            "RegisterTargets" => self.register_targets_op(cx, parse(input)?).await,
            "DeregisterTargets" => self.deregister_targets_op(cx, parse(input)?).await,
            "DescribeTargetHealth" => self.describe_target_health(cx, parse(input)?).await,
            other => Err(Elbv2Error::NotImplemented(format!(
                "Operation {other} is not supported by Wharf's ELBv2 API."
            ))
            .into()),
        }
    }
}

#[async_trait]
impl AwsService for Elbv2Service {
    fn signing_name(&self) -> &'static str {
        "elasticloadbalancing"
    }

    fn protocol(&self) -> Protocol {
        Protocol::Query {
            xmlns: ELBV2_XMLNS,
            version: "2015-12-01",
        }
    }

    async fn call(
        &self,
        ctx: &CallContext,
        operation: &str,
        input: ServiceInput,
    ) -> Result<ServiceOutput, AwsError> {
        let ServiceInput::Query(pairs) = input else {
            return Err(error::validation("ELBv2 speaks the AWS query protocol"));
        };
        let input = self.model.check_query_request(operation, &pairs)?;
        let cx = Cx {
            region: &ctx.region,
            account: if ctx.account_id.is_empty() {
                &self.config.account_id
            } else {
                &ctx.account_id
            },
            now_millis: self.clock.now_millis(),
        };
        let output = self.dispatch(&cx, operation, input).await?;
        Ok(ServiceOutput::QueryResultXml(
            self.model.query_output_xml(operation, &output),
        ))
    }
}

/// Parses a checked request value into an operation's request struct.
pub(crate) fn parse<T: DeserializeOwned>(input: Value) -> Result<T, AwsError> {
    serde_json::from_value(input).map_err(|err| error::validation(err.to_string()))
}

/// Epoch milliseconds as the wire's epoch seconds (the model writes them as ISO 8601).
pub(crate) fn epoch_seconds(millis: i64) -> Value {
    serde_json::json!(millis as f64 / 1000.0)
}

/// Runs the drain sweeper every `period` while the service lives.
pub fn spawn_drain_sweeper(service: Arc<Elbv2Service>, period: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let service = Arc::downgrade(&service);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(service) = service.upgrade() else {
                return;
            };
            match service.sweep_drained_targets().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(targets = n, "drained targets removed"),
                Err(error) => tracing::warn!(%error, "sweeping drained targets failed"),
            }
        }
    });
}
