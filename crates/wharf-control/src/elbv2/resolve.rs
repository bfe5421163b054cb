//! Resolving a client's ARN to the stored record it names, with the model's
//! not-found error when there is none in the caller's region.

use wharf_aws::AwsError;
use wharf_lb::records::{
    listener_key, load_balancer_key, rule_key, target_group_key, ListenerRecord,
    LoadBalancerRecord, RuleRecord, TargetGroupRecord,
};

use super::arns::{self, ElbResource};
use super::error::Elbv2Error;
use crate::records::{Records, Versioned};

fn lb_missing(arn: &str) -> AwsError {
    Elbv2Error::LoadBalancerNotFound(format!("Load balancer '{arn}' not found")).into()
}
fn tg_missing(arn: &str) -> AwsError {
    Elbv2Error::TargetGroupNotFound(format!("Target group '{arn}' not found")).into()
}
fn listener_missing(arn: &str) -> AwsError {
    Elbv2Error::ListenerNotFound(format!("Listener '{arn}' not found")).into()
}
fn rule_missing(arn: &str) -> AwsError {
    Elbv2Error::RuleNotFound(format!("One or more rules not found: '{arn}'")).into()
}

/// The load balancer an ARN names in `region`.
pub(crate) async fn load_balancer(
    records: &Records,
    region: &str,
    arn: &str,
) -> Result<Versioned<LoadBalancerRecord>, AwsError> {
    let parsed = arns::parse(arn)?;
    let ElbResource::LoadBalancer { name } = &parsed.resource else {
        return Err(super::error::validation(format!(
            "'{arn}' is not a valid load balancer ARN"
        )));
    };
    if parsed.region != region {
        return Err(lb_missing(arn));
    }
    match records
        .get::<LoadBalancerRecord>(&load_balancer_key(region, name))
        .await?
    {
        Some(lb) if lb.value.arn == arn => Ok(lb),
        _ => Err(lb_missing(arn)),
    }
}

/// The target group an ARN names in `region`.
pub(crate) async fn target_group(
    records: &Records,
    region: &str,
    arn: &str,
) -> Result<Versioned<TargetGroupRecord>, AwsError> {
    let parsed = arns::parse(arn)?;
    let ElbResource::TargetGroup { name } = &parsed.resource else {
        return Err(super::error::validation(format!(
            "'{arn}' is not a valid target group ARN"
        )));
    };
    if parsed.region != region {
        return Err(tg_missing(arn));
    }
    match records
        .get::<TargetGroupRecord>(&target_group_key(region, name))
        .await?
    {
        Some(tg) if tg.value.arn == arn => Ok(tg),
        _ => Err(tg_missing(arn)),
    }
}

/// The key and record of the listener an ARN names in `region`.
pub(crate) async fn listener(
    records: &Records,
    region: &str,
    arn: &str,
) -> Result<(String, Versioned<ListenerRecord>), AwsError> {
    let parsed = arns::parse(arn)?;
    let ElbResource::Listener { lb_name, id } = &parsed.resource else {
        return Err(super::error::validation(format!(
            "'{arn}' is not a valid listener ARN"
        )));
    };
    if parsed.region != region {
        return Err(listener_missing(arn));
    }
    let key = listener_key(region, lb_name, id);
    match records.get::<ListenerRecord>(&key).await? {
        Some(l) if l.value.arn == arn => Ok((key, l)),
        _ => Err(listener_missing(arn)),
    }
}

/// What a rule ARN names: a stored rule, or a listener's default rule.
pub(crate) enum RuleRef {
    Stored {
        key: String,
        rule: Versioned<RuleRecord>,
    },
    Default {
        listener_key: String,
        listener: Versioned<ListenerRecord>,
    },
}

/// The rule an ARN names in `region`.
pub(crate) async fn rule(records: &Records, region: &str, arn: &str) -> Result<RuleRef, AwsError> {
    let parsed = arns::parse(arn)?;
    let ElbResource::Rule {
        lb_name,
        listener_id,
        id,
    } = &parsed.resource
    else {
        return Err(super::error::validation(format!(
            "'{arn}' is not a valid listener rule ARN"
        )));
    };
    if parsed.region != region {
        return Err(rule_missing(arn));
    }
    if arns::is_default_rule_id(id) {
        let listener_key = listener_key(region, lb_name, listener_id);
        return match records.get::<ListenerRecord>(&listener_key).await? {
            Some(l) if arns::rule(&l.value.arn, &arns::default_rule_id(listener_id)) == arn => {
                Ok(RuleRef::Default {
                    listener_key,
                    listener: l,
                })
            }
            _ => Err(rule_missing(arn)),
        };
    }
    let key = rule_key(region, lb_name, listener_id, id);
    match records.get::<RuleRecord>(&key).await? {
        Some(r) if r.value.arn == arn => Ok(RuleRef::Stored { key, rule: r }),
        _ => Err(rule_missing(arn)),
    }
}
