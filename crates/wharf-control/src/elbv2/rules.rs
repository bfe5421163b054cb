//! Listener rules: CreateRule, DescribeRules, ModifyRule, DeleteRule,
//! SetRulePriorities.
//!
//! Conditions are read from both of ELBv2's forms — the legacy `Values` (host-header
//! and path-pattern only) and the `…Config` structures — into
//! [`wharf_lb::records::Condition`], and written back in both where ELBv2 does. A
//! listener's default rule is not stored: it is the listener's default actions, with
//! an id derived from the listener's (see [`super::arns::default_rule_id`]).
//! Rule changes rewrite their listener's record unchanged, so that two calls taking
//! the same priority on one listener are serialised and the second gets
//! PriorityInUse.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{
    rule_key, Condition, ListenerRecord, LoadBalancerRecord, QueryPair, RuleRecord,
};

use super::actions::{self, WireAction};
use super::arns::{self, ElbResource};
use super::error::{validation, Elbv2Error};
use super::resolve::RuleRef;
use super::routing::{Routing, RoutingChange};
use super::tags::{tag_map, WireTag};
use super::{paging, resolve, Cx, Elbv2Service};
use crate::records::{too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

/// ELBv2's quota of rules per listener (not counting the default rule).
pub(crate) const MAX_RULES: usize = 100;

/// ELBv2's quota of condition values per rule.
pub(crate) const MAX_CONDITION_VALUES: usize = 5;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireCondition {
    field: Option<String>,
    values: Option<Vec<String>>,
    host_header_config: Option<WireValues>,
    path_pattern_config: Option<WireValues>,
    http_header_config: Option<WireHeader>,
    query_string_config: Option<WireQuery>,
    http_request_method_config: Option<WireValues>,
    source_ip_config: Option<WireValues>,
    regex_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireValues {
    #[serde(default)]
    values: Vec<String>,
    regex_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireHeader {
    http_header_name: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    regex_values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireQuery {
    #[serde(default)]
    values: Vec<WirePair>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WirePair {
    key: Option<String>,
    value: Option<String>,
}

fn no_regex(values: &Option<Vec<String>>) -> Result<(), AwsError> {
    if values.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(validation(
            "RegexValues are not supported by Wharf's load balancer; use Values with wildcards",
        ));
    }
    Ok(())
}

fn check_values(field: &str, values: &[String], max_len: usize) -> Result<(), AwsError> {
    if values.is_empty() {
        return Err(validation(format!(
            "A '{field}' condition needs at least one value"
        )));
    }
    if let Some(v) = values.iter().find(|v| v.is_empty() || v.len() > max_len) {
        return Err(validation(format!(
            "Value '{v}' of a '{field}' condition must be 1 to {max_len} characters"
        )));
    }
    Ok(())
}

/// Reads one condition from either form.
fn parse_condition(wire: &WireCondition) -> Result<Condition, AwsError> {
    no_regex(&wire.regex_values)?;
    let Some(field) = wire.field.as_deref() else {
        return Err(validation("A condition needs a Field"));
    };
    // The legacy form: `Values` directly on the condition.
    let legacy = |config: &Option<WireValues>| -> Result<Vec<String>, AwsError> {
        match (&wire.values, config) {
            (Some(v), Some(c)) if !v.is_empty() && !c.values.is_empty() => Err(validation(
                format!("A '{field}' condition cannot have both Values and a {field} config"),
            )),
            (Some(v), None) => Ok(v.clone()),
            (Some(v), Some(c)) if c.values.is_empty() => {
                no_regex(&c.regex_values)?;
                Ok(v.clone())
            }
            (_, Some(c)) => {
                no_regex(&c.regex_values)?;
                Ok(c.values.clone())
            }
            (None, None) => Ok(Vec::new()),
        }
    };
    let config_only = |config: &Option<WireValues>| -> Result<Vec<String>, AwsError> {
        if wire.values.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(validation(format!(
                "A '{field}' condition takes its values in its config, not in Values"
            )));
        }
        match config {
            Some(c) => {
                no_regex(&c.regex_values)?;
                Ok(c.values.clone())
            }
            None => Ok(Vec::new()),
        }
    };
    match field {
        "path-pattern" => {
            let values = legacy(&wire.path_pattern_config)?;
            check_values(field, &values, 128)?;
            Ok(Condition::PathPattern { values })
        }
        "host-header" => {
            let values = legacy(&wire.host_header_config)?;
            check_values(field, &values, 128)?;
            let ok = |v: &String| {
                v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*?_:".contains(&b))
            };
            if let Some(v) = values.iter().find(|v| !ok(v)) {
                return Err(validation(format!("'{v}' is not a valid host header pattern")));
            }
            Ok(Condition::HostHeader { values })
        }
        "http-request-method" => {
            let values = config_only(&wire.http_request_method_config)?;
            check_values(field, &values, 40)?;
            let ok = |v: &String| v.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-');
            if let Some(v) = values.iter().find(|v| !ok(v)) {
                return Err(validation(format!(
                    "'{v}' is not a valid HTTP request method (upper case letters, '_' and '-')"
                )));
            }
            Ok(Condition::HttpRequestMethod { values })
        }
        "source-ip" => {
            let values = config_only(&wire.source_ip_config)?;
            check_values(field, &values, 64)?;
            if let Some(v) = values.iter().find(|v| !is_cidr(v)) {
                return Err(validation(format!("'{v}' is not a valid CIDR block")));
            }
            Ok(Condition::SourceIp { values })
        }
        "http-header" => {
            if wire.values.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(validation(
                    "An 'http-header' condition takes its values in HttpHeaderConfig",
                ));
            }
            let Some(h) = &wire.http_header_config else {
                return Err(validation("An 'http-header' condition needs an HttpHeaderConfig"));
            };
            no_regex(&h.regex_values)?;
            let name = h.http_header_name.clone().unwrap_or_default();
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || name.len() > 40 || !name.bytes().all(token) {
                return Err(validation(format!("'{name}' is not a valid HTTP header name")));
            }
            check_values(field, &h.values, 128)?;
            Ok(Condition::HttpHeader {
                name,
                values: h.values.clone(),
            })
        }
        "query-string" => {
            if wire.values.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(validation(
                    "A 'query-string' condition takes its values in QueryStringConfig",
                ));
            }
            let Some(q) = &wire.query_string_config else {
                return Err(validation("A 'query-string' condition needs a QueryStringConfig"));
            };
            if q.values.is_empty() {
                return Err(validation("A 'query-string' condition needs at least one value"));
            }
            let mut values = Vec::with_capacity(q.values.len());
            for p in &q.values {
                let Some(value) = p.value.clone().filter(|v| !v.is_empty() && v.len() <= 128) else {
                    return Err(validation("Each query-string pair needs a Value of 1 to 128 characters"));
                };
                values.push(QueryPair {
                    key: p.key.clone().filter(|k| !k.is_empty()),
                    value,
                });
            }
            Ok(Condition::QueryString { values })
        }
        other => Err(validation(format!(
            "Condition field '{other}' must be one of path-pattern, host-header, http-header, query-string, http-request-method, source-ip"
        ))),
    }
}

fn is_cidr(v: &str) -> bool {
    let Some((ip, bits)) = v.split_once('/') else {
        return false;
    };
    match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
        (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
        _ => false,
    }
}

/// Reads and checks a rule's conditions: at least one, at most one of each field but
/// http-header and query-string, and at most five values in all.
pub(crate) fn parse_conditions(wire: &[WireCondition]) -> Result<Vec<Condition>, AwsError> {
    if wire.is_empty() {
        return Err(validation("A rule needs at least one condition"));
    }
    let conditions: Vec<Condition> = wire.iter().map(parse_condition).collect::<Result<_, _>>()?;
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut total = 0;
    for c in &conditions {
        let (field, count) = match c {
            Condition::PathPattern { values } => ("path-pattern", values.len()),
            Condition::HostHeader { values } => ("host-header", values.len()),
            Condition::HttpRequestMethod { values } => ("http-request-method", values.len()),
            Condition::SourceIp { values } => ("source-ip", values.len()),
            Condition::HttpHeader { values, .. } => ("http-header", values.len()),
            Condition::QueryString { values } => ("query-string", values.len()),
        };
        total += count;
        *seen.entry(field).or_default() += 1;
        if seen[field] > 1 && !matches!(field, "http-header" | "query-string") {
            return Err(validation(format!(
                "A rule can have only one '{field}' condition"
            )));
        }
    }
    if total > MAX_CONDITION_VALUES {
        return Err(validation(format!(
            "A rule can have at most {MAX_CONDITION_VALUES} condition values in all"
        )));
    }
    Ok(conditions)
}

/// The `RuleCondition` wire shape.
fn condition_to_wire(c: &Condition) -> Value {
    match c {
        Condition::PathPattern { values } => json!({
            "Field": "path-pattern", "Values": values, "PathPatternConfig": {"Values": values},
        }),
        Condition::HostHeader { values } => json!({
            "Field": "host-header", "Values": values, "HostHeaderConfig": {"Values": values},
        }),
        Condition::HttpHeader { name, values } => json!({
            "Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": name, "Values": values},
        }),
        Condition::QueryString { values } => json!({
            "Field": "query-string",
            "QueryStringConfig": {"Values": values.iter().map(|p| json!({"Key": p.key, "Value": p.value})).collect::<Vec<_>>()},
        }),
        Condition::HttpRequestMethod { values } => json!({
            "Field": "http-request-method", "HttpRequestMethodConfig": {"Values": values},
        }),
        Condition::SourceIp { values } => json!({
            "Field": "source-ip", "SourceIpConfig": {"Values": values},
        }),
    }
}

/// The `Rule` wire shape of a stored rule.
fn to_wire(r: &RuleRecord) -> Value {
    json!({
        "RuleArn": r.arn,
        "Priority": r.priority.to_string(),
        "Conditions": r.conditions.iter().map(condition_to_wire).collect::<Vec<_>>(),
        "Actions": actions::list_to_wire(&r.actions),
        "IsDefault": false,
    })
}

/// The default rule's ARN.
fn default_rule_arn(l: &ListenerRecord) -> String {
    let id = l.arn.rsplit('/').next().unwrap_or_default();
    arns::rule(&l.arn, &arns::default_rule_id(id))
}

/// The `Rule` wire shape of a listener's default rule.
fn default_to_wire(l: &ListenerRecord) -> Value {
    json!({
        "RuleArn": default_rule_arn(l),
        "Priority": "default",
        "Conditions": [],
        "Actions": actions::list_to_wire(&l.default_actions),
        "IsDefault": true,
    })
}

fn priority_in_use(
    routing: &Routing,
    listener_arn: &str,
    priority: u32,
    except: &[&str],
) -> Result<(), AwsError> {
    let clash = routing
        .rules_of(listener_arn)
        .any(|(_, r)| r.value.priority == priority && !except.contains(&r.value.arn.as_str()));
    if clash {
        return Err(Elbv2Error::PriorityInUse(priority).into());
    }
    Ok(())
}

/// The load balancer a listener belongs to (for the one-load-balancer-per-target-group
/// rule), or ListenerNotFound when it is gone.
async fn lb_of(
    svc: &Elbv2Service,
    cx: &Cx<'_>,
    listener: &ListenerRecord,
) -> Result<LoadBalancerRecord, AwsError> {
    resolve::load_balancer(&svc.records, cx.region, &listener.load_balancer_arn)
        .await
        .map(|v| v.value)
        .map_err(|_| {
            Elbv2Error::ListenerNotFound(format!("Listener '{}' not found", listener.arn)).into()
        })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateRuleRequest {
    listener_arn: String,
    conditions: Vec<WireCondition>,
    priority: u32,
    actions: Vec<WireAction>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(default)]
    transforms: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeRulesRequest {
    listener_arn: Option<String>,
    #[serde(default)]
    rule_arns: Vec<String>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModifyRuleRequest {
    rule_arn: String,
    conditions: Option<Vec<WireCondition>>,
    actions: Option<Vec<WireAction>>,
    #[serde(default)]
    transforms: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RuleArnRequest {
    rule_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SetRulePrioritiesRequest {
    rule_priorities: Vec<WirePriority>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WirePriority {
    rule_arn: Option<String>,
    priority: Option<u32>,
}

fn no_transforms(transforms: &[Value]) -> Result<(), AwsError> {
    if !transforms.is_empty() {
        return Err(validation(
            "Rule transforms are not supported by Wharf's load balancer",
        ));
    }
    Ok(())
}

impl Elbv2Service {
    pub(crate) async fn create_rule(
        &self,
        cx: &Cx<'_>,
        req: CreateRuleRequest,
    ) -> Result<Value, AwsError> {
        no_transforms(&req.transforms)?;
        let conditions = parse_conditions(&req.conditions)?;
        let actions = actions::parse_actions(&req.actions)?;
        let tags = tag_map(&req.tags, false)?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let (listener_key, listener) =
                resolve::listener(&self.records, cx.region, &req.listener_arn).await?;
            let lb = lb_of(self, cx, &listener.value).await?;
            routing.check_targets(&lb.arn, &actions)?;
            priority_in_use(&routing, &listener.value.arn, req.priority, &[])?;
            if routing.rules_of(&listener.value.arn).count() >= MAX_RULES {
                return Err(Elbv2Error::TooManyRules.into());
            }
            let ElbResource::Listener {
                lb_name,
                id: listener_id,
            } = arns::parse(&listener.value.arn)?.resource
            else {
                return Err(validation("Invalid listener ARN"));
            };
            let id = arns::new_rule_id();
            let record = RuleRecord {
                arn: arns::rule(&listener.value.arn, &id),
                listener_arn: listener.value.arn.clone(),
                priority: req.priority,
                conditions: conditions.clone(),
                actions: actions.clone(),
                tags: tags.clone(),
            };
            let mut change = RoutingChange::default();
            // Rewriting the listener serialises rule changes on it.
            change
                .listeners
                .insert(listener_key, Some(listener.value.clone()));
            change.rules.insert(
                rule_key(cx.region, &lb_name, &listener_id, &id),
                Some(record.clone()),
            );
            if self.records.commit(routing.transaction(&change)).await? {
                return Ok(json!({"Rules": [to_wire(&record)]}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_rules(
        &self,
        cx: &Cx<'_>,
        req: DescribeRulesRequest,
    ) -> Result<Value, AwsError> {
        // Sorted by priority, the default rule last.
        let mut found: Vec<(u64, String, Value)> = Vec::new();
        if !req.rule_arns.is_empty() {
            if req.listener_arn.is_some() {
                return Err(validation(
                    "Rule ARNs and a listener ARN cannot be specified at the same time",
                ));
            }
            for arn in &req.rule_arns {
                match resolve::rule(&self.records, cx.region, arn).await? {
                    RuleRef::Stored { rule, .. } => found.push((
                        u64::from(rule.value.priority),
                        rule.value.arn.clone(),
                        to_wire(&rule.value),
                    )),
                    RuleRef::Default { listener, .. } => found.push((
                        u64::MAX,
                        default_rule_arn(&listener.value),
                        default_to_wire(&listener.value),
                    )),
                }
            }
        } else if let Some(arn) = &req.listener_arn {
            let (_, listener) = resolve::listener(&self.records, cx.region, arn).await?;
            let ElbResource::Listener { lb_name, id } = arns::parse(arn)?.resource else {
                return Err(validation("Invalid listener ARN"));
            };
            let rules: Vec<Versioned<RuleRecord>> = self
                .records
                .list(&format!("elbv2/{}/rule/{lb_name}/{id}/", cx.region))
                .await?;
            for r in rules {
                found.push((
                    u64::from(r.value.priority),
                    r.value.arn.clone(),
                    to_wire(&r.value),
                ));
            }
            found.push((
                u64::MAX,
                default_rule_arn(&listener.value),
                default_to_wire(&listener.value),
            ));
        } else {
            return Err(validation(
                "You must specify either rule ARNs or a listener ARN",
            ));
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        found.dedup_by(|a, b| a.1 == b.1);
        let (page, next) = paging::page(
            found,
            |(p, arn, _)| format!("{p:020}/{arn}"),
            req.marker.as_deref(),
            req.page_size,
        )?;
        Ok(json!({
            "Rules": page.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    pub(crate) async fn modify_rule(
        &self,
        cx: &Cx<'_>,
        req: ModifyRuleRequest,
    ) -> Result<Value, AwsError> {
        no_transforms(&req.transforms)?;
        let conditions = match &req.conditions {
            Some(c) => Some(parse_conditions(c)?),
            None => None,
        };
        let actions = match &req.actions {
            Some(a) => Some(actions::parse_actions(a)?),
            None => None,
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let mut change = RoutingChange::default();
            let answer = match resolve::rule(&self.records, cx.region, &req.rule_arn).await? {
                RuleRef::Default {
                    listener_key,
                    listener,
                } => {
                    if conditions.is_some() {
                        return Err(Elbv2Error::OperationNotPermitted(
                            "The conditions of a default rule cannot be modified".into(),
                        )
                        .into());
                    }
                    let mut updated = listener.value.clone();
                    if let Some(a) = &actions {
                        let lb = lb_of(self, cx, &listener.value).await?;
                        routing.check_targets(&lb.arn, a)?;
                        updated.default_actions = a.clone();
                    }
                    change.listeners.insert(listener_key, Some(updated.clone()));
                    default_to_wire(&updated)
                }
                RuleRef::Stored { key, rule } => {
                    let mut updated = rule.value.clone();
                    if let Some(c) = &conditions {
                        updated.conditions = c.clone();
                    }
                    if let Some(a) = &actions {
                        let (_, listener) =
                            resolve::listener(&self.records, cx.region, &rule.value.listener_arn)
                                .await?;
                        let lb = lb_of(self, cx, &listener.value).await?;
                        routing.check_targets(&lb.arn, a)?;
                        updated.actions = a.clone();
                    }
                    change.rules.insert(key, Some(updated.clone()));
                    to_wire(&updated)
                }
            };
            if self.records.commit(routing.transaction(&change)).await? {
                return Ok(json!({"Rules": [answer]}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn delete_rule(
        &self,
        cx: &Cx<'_>,
        req: RuleArnRequest,
    ) -> Result<Value, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let key = match resolve::rule(&self.records, cx.region, &req.rule_arn).await? {
                RuleRef::Default { .. } => {
                    return Err(Elbv2Error::OperationNotPermitted(
                        "A default rule cannot be deleted".into(),
                    )
                    .into())
                }
                RuleRef::Stored { key, .. } => key,
            };
            let mut change = RoutingChange::default();
            change.rules.insert(key, None);
            if self.records.commit(routing.transaction(&change)).await? {
                return Ok(json!({}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn set_rule_priorities(
        &self,
        cx: &Cx<'_>,
        req: SetRulePrioritiesRequest,
    ) -> Result<Value, AwsError> {
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for p in &req.rule_priorities {
            let (Some(arn), Some(priority)) = (&p.rule_arn, p.priority) else {
                return Err(validation(
                    "Each rule priority needs a RuleArn and a Priority",
                ));
            };
            if wanted.iter().any(|(_, q)| *q == priority) {
                return Err(Elbv2Error::PriorityInUse(priority).into());
            }
            wanted.push((arn.clone(), priority));
        }
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let mut change = RoutingChange::default();
            let mut updated_rules = Vec::new();
            let moving: Vec<&str> = wanted.iter().map(|(a, _)| a.as_str()).collect();
            for (arn, priority) in &wanted {
                let (key, rule) = match resolve::rule(&self.records, cx.region, arn).await? {
                    RuleRef::Default { .. } => {
                        return Err(Elbv2Error::OperationNotPermitted(
                            "The priority of a default rule cannot be changed".into(),
                        )
                        .into())
                    }
                    RuleRef::Stored { key, rule } => (key, rule),
                };
                priority_in_use(&routing, &rule.value.listener_arn, *priority, &moving)?;
                let mut updated = rule.value.clone();
                updated.priority = *priority;
                // Rewriting the listener serialises priority changes with CreateRule.
                if let Some((lkey, l)) = routing
                    .listeners
                    .iter()
                    .find(|(_, l)| l.value.arn == rule.value.listener_arn)
                {
                    change.listeners.insert(lkey.clone(), Some(l.value.clone()));
                }
                change.rules.insert(key, Some(updated.clone()));
                updated_rules.push(updated);
            }
            if self.records.commit(routing.transaction(&change)).await? {
                return Ok(json!({"Rules": updated_rules.iter().map(to_wire).collect::<Vec<_>>()}));
            }
        }
        Err(too_much_contention())
    }
}
