//! Target groups: CreateTargetGroup, DescribeTargetGroups, ModifyTargetGroup,
//! DeleteTargetGroup, DescribeTargetGroupAttributes, ModifyTargetGroupAttributes.
//!
//! Wharf's data plane speaks HTTP (HTTP/1.1 or HTTP/2) to `instance` and `ip`
//! targets, so those are the target groups it accepts. Health checks take ELBv2's
//! defaults for HTTP target groups (path `/`, the traffic port, every 30 s with a 5 s
//! timeout, 5 healthy and 2 unhealthy in a row, matcher `200`) and its rules (the
//! timeout is shorter than the interval; matcher codes are 200 to 499).

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{
    target_group_key, targets_prefix, HealthCheck, LoadBalancerRecord, TargetGroupRecord,
};
use wharf_store::Txn;

use super::arns;
use super::error::{validation, Elbv2Error};
use super::load_balancers::{
    attribute_changes, check_name, wire_attributes, WireAttribute, WHARF_VPC,
};
use super::tags::{tag_map, WireTag};
use super::{paging, resolve, Cx, Elbv2Service};
use crate::records::{too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

/// A target group's attributes and their defaults.
const DEFAULT_ATTRIBUTES: &[(&str, &str)] = &[
    ("deregistration_delay.timeout_seconds", "300"),
    ("load_balancing.algorithm.anomaly_mitigation", "off"),
    ("load_balancing.algorithm.type", "round_robin"),
    (
        "load_balancing.cross_zone.enabled",
        "use_load_balancer_configuration",
    ),
    ("slow_start.duration_seconds", "0"),
    ("stickiness.app_cookie.cookie_name", ""),
    ("stickiness.app_cookie.duration_seconds", "86400"),
    ("stickiness.enabled", "false"),
    ("stickiness.lb_cookie.duration_seconds", "86400"),
    ("stickiness.type", "lb_cookie"),
];

fn check_attribute(key: &str, value: &str) -> Result<(), String> {
    let range = |lo: i64, hi: i64| match value.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(format!(
            "Attribute '{key}' must be an integer between {lo} and {hi}"
        )),
    };
    let one_of = |allowed: &[&str]| {
        if allowed.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "Attribute '{key}' must be one of: {}",
                allowed.join(", ")
            ))
        }
    };
    match key {
        "deregistration_delay.timeout_seconds" => range(0, 3600),
        "slow_start.duration_seconds" => match value.parse::<i64>() {
            Ok(0) => Ok(()),
            _ => range(30, 900),
        },
        "load_balancing.algorithm.type" => one_of(&[
            "round_robin",
            "least_outstanding_requests",
            "weighted_random",
        ]),
        "load_balancing.algorithm.anomaly_mitigation" => one_of(&["on", "off"]),
        "load_balancing.cross_zone.enabled" => {
            one_of(&["true", "false", "use_load_balancer_configuration"])
        }
        "stickiness.enabled" => one_of(&["true", "false"]),
        "stickiness.type" => one_of(&["lb_cookie", "app_cookie"]),
        "stickiness.lb_cookie.duration_seconds" | "stickiness.app_cookie.duration_seconds" => {
            range(1, 604800)
        }
        "stickiness.app_cookie.cookie_name" => {
            if value.len() <= 64 && !value.to_ascii_uppercase().starts_with("AWSALB") {
                Ok(())
            } else {
                Err(format!("Attribute '{key}' is not a valid cookie name"))
            }
        }
        _ => Err(format!(
            "Target group attribute key '{key}' is not recognized"
        )),
    }
}

/// Checks an ELBv2 HTTP matcher: codes 200 to 499 as `200`, `200,202` or `200-299`.
pub(crate) fn check_matcher(matcher: &str) -> Result<(), AwsError> {
    let code = |s: &str| s.parse::<u16>().ok().filter(|c| (200..=499).contains(c));
    let ok = !matcher.is_empty()
        && matcher.split(',').all(|part| match part.split_once('-') {
            Some((lo, hi)) => matches!((code(lo), code(hi)), (Some(l), Some(h)) if l <= h),
            None => code(part).is_some(),
        });
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "Health check matcher HTTP code '{matcher}' must be a value between 200 and 499, a list such as '200,202' or a range such as '200-299'"
        )))
    }
}

fn check_health_check(hc: &HealthCheck) -> Result<(), AwsError> {
    if hc.protocol != "HTTP" {
        return Err(validation(format!(
            "Health check protocol '{}' is not supported; Wharf checks targets over HTTP",
            hc.protocol
        )));
    }
    if hc.port != "traffic-port" && !hc.port.parse::<u16>().is_ok_and(|p| p >= 1) {
        return Err(validation(format!(
            "Health check port '{}' must be 'traffic-port' or a port between 1 and 65535",
            hc.port
        )));
    }
    if !hc.path.starts_with('/') || hc.path.len() > 1024 {
        return Err(validation(
            "Health check path must begin with '/' and be at most 1024 characters",
        ));
    }
    if hc.timeout_seconds >= hc.interval_seconds {
        return Err(validation(format!(
            "Health check timeout ({}) must be smaller than the interval ({})",
            hc.timeout_seconds, hc.interval_seconds
        )));
    }
    check_matcher(&hc.matcher)
}

/// The `TargetGroup` wire shape.
pub(crate) fn to_wire(tg: &TargetGroupRecord) -> Value {
    let hc = &tg.health_check;
    json!({
        "TargetGroupArn": tg.arn,
        "TargetGroupName": tg.name,
        "Protocol": tg.protocol,
        "Port": tg.port,
        "VpcId": tg.vpc_id.clone().unwrap_or_else(|| WHARF_VPC.to_owned()),
        "HealthCheckProtocol": hc.protocol,
        "HealthCheckPort": hc.port,
        "HealthCheckEnabled": hc.enabled,
        "HealthCheckIntervalSeconds": hc.interval_seconds,
        "HealthCheckTimeoutSeconds": hc.timeout_seconds,
        "HealthyThresholdCount": hc.healthy_threshold,
        "UnhealthyThresholdCount": hc.unhealthy_threshold,
        "HealthCheckPath": hc.path,
        "Matcher": {"HttpCode": hc.matcher},
        "LoadBalancerArns": tg.load_balancer_arns,
        "TargetType": tg.target_type,
        "ProtocolVersion": tg.protocol_version,
        "IpAddressType": "ipv4",
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireMatcher {
    http_code: Option<String>,
    grpc_code: Option<String>,
}

/// The health check members shared by CreateTargetGroup and ModifyTargetGroup.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthCheckInput {
    health_check_protocol: Option<String>,
    health_check_port: Option<String>,
    health_check_enabled: Option<bool>,
    health_check_path: Option<String>,
    health_check_interval_seconds: Option<u32>,
    health_check_timeout_seconds: Option<u32>,
    healthy_threshold_count: Option<u32>,
    unhealthy_threshold_count: Option<u32>,
    matcher: Option<WireMatcher>,
}

impl HealthCheckInput {
    /// `base` with every member the client sent applied.
    fn apply(&self, base: &HealthCheck) -> Result<HealthCheck, AwsError> {
        if self.matcher.as_ref().is_some_and(|m| m.grpc_code.is_some()) {
            return Err(validation(
                "GrpcCode matchers need a GRPC target group, which Wharf does not serve",
            ));
        }
        let hc = HealthCheck {
            enabled: self.health_check_enabled.unwrap_or(base.enabled),
            protocol: self
                .health_check_protocol
                .clone()
                .unwrap_or_else(|| base.protocol.clone()),
            port: self
                .health_check_port
                .clone()
                .unwrap_or_else(|| base.port.clone()),
            path: self
                .health_check_path
                .clone()
                .unwrap_or_else(|| base.path.clone()),
            interval_seconds: self
                .health_check_interval_seconds
                .unwrap_or(base.interval_seconds),
            timeout_seconds: self
                .health_check_timeout_seconds
                .unwrap_or(base.timeout_seconds),
            healthy_threshold: self
                .healthy_threshold_count
                .unwrap_or(base.healthy_threshold),
            unhealthy_threshold: self
                .unhealthy_threshold_count
                .unwrap_or(base.unhealthy_threshold),
            matcher: self
                .matcher
                .as_ref()
                .and_then(|m| m.http_code.clone())
                .unwrap_or_else(|| base.matcher.clone()),
        };
        check_health_check(&hc)?;
        Ok(hc)
    }
}

/// ELBv2's health check defaults for an HTTP target group.
fn default_health_check() -> HealthCheck {
    HealthCheck {
        enabled: true,
        protocol: "HTTP".into(),
        port: "traffic-port".into(),
        path: "/".into(),
        interval_seconds: 30,
        timeout_seconds: 5,
        healthy_threshold: 5,
        unhealthy_threshold: 2,
        matcher: "200".into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateTargetGroupRequest {
    name: String,
    protocol: Option<String>,
    protocol_version: Option<String>,
    port: Option<i64>,
    vpc_id: Option<String>,
    target_type: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(flatten)]
    health_check: HealthCheckInput,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeTargetGroupsRequest {
    load_balancer_arn: Option<String>,
    #[serde(default)]
    target_group_arns: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModifyTargetGroupRequest {
    target_group_arn: String,
    #[serde(flatten)]
    health_check: HealthCheckInput,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TargetGroupArnRequest {
    target_group_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModifyTargetGroupAttributesRequest {
    target_group_arn: String,
    attributes: Vec<WireAttribute>,
}

impl Elbv2Service {
    pub(crate) async fn create_target_group(
        &self,
        cx: &Cx<'_>,
        req: CreateTargetGroupRequest,
    ) -> Result<Value, AwsError> {
        check_name("Target group", &req.name)?;
        let target_type = req.target_type.as_deref().unwrap_or("instance");
        if !matches!(target_type, "instance" | "ip") {
            return Err(validation(format!(
                "Target type '{target_type}' is not supported; Wharf serves 'instance' and 'ip' targets"
            )));
        }
        let Some(protocol) = req.protocol.as_deref() else {
            return Err(validation("A protocol must be specified"));
        };
        if protocol != "HTTP" {
            return Err(validation(format!(
                "Protocol '{protocol}' is not supported; Wharf's load balancer forwards HTTP"
            )));
        }
        let protocol_version = req.protocol_version.as_deref().unwrap_or("HTTP1");
        if !matches!(protocol_version, "HTTP1" | "HTTP2") {
            return Err(validation(format!(
                "Protocol version '{protocol_version}' is not supported; use HTTP1 or HTTP2"
            )));
        }
        let port = match req.port {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => return Err(validation(format!("Port {p} must be between 1 and 65535"))),
            None => return Err(validation("A port must be specified")),
        };
        let health_check = req.health_check.apply(&default_health_check())?;
        let tags = tag_map(&req.tags, false)?;
        let key = target_group_key(cx.region, &req.name);
        if let Some(existing) = self.records.get::<TargetGroupRecord>(&key).await? {
            let e = &existing.value;
            if e.protocol == protocol
                && e.port == port
                && e.target_type == target_type
                && e.protocol_version == protocol_version
                && e.health_check == health_check
            {
                return Ok(json!({"TargetGroups": [to_wire(e)]}));
            }
            return Err(Elbv2Error::DuplicateTargetGroupName(req.name).into());
        }
        let id = arns::new_id();
        let record = TargetGroupRecord {
            arn: arns::target_group(cx.region, cx.account, &req.name, &id),
            name: req.name.clone(),
            protocol: protocol.to_owned(),
            protocol_version: protocol_version.to_owned(),
            port,
            target_type: target_type.to_owned(),
            vpc_id: req.vpc_id.clone(),
            health_check,
            attributes: DEFAULT_ATTRIBUTES
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            load_balancer_arns: Vec::new(),
            tags,
        };
        if !self.records.put_if(&key, &record, 0).await? {
            return Err(Elbv2Error::DuplicateTargetGroupName(req.name).into());
        }
        Ok(json!({"TargetGroups": [to_wire(&record)]}))
    }

    pub(crate) async fn describe_target_groups(
        &self,
        cx: &Cx<'_>,
        req: DescribeTargetGroupsRequest,
    ) -> Result<Value, AwsError> {
        let filters = usize::from(req.load_balancer_arn.is_some())
            + usize::from(!req.target_group_arns.is_empty())
            + usize::from(!req.names.is_empty());
        if filters > 1 {
            return Err(validation(
                "Only one of LoadBalancerArn, TargetGroupArns and Names can be specified",
            ));
        }
        let mut found: Vec<TargetGroupRecord> = Vec::new();
        if !req.target_group_arns.is_empty() {
            for arn in &req.target_group_arns {
                found.push(
                    resolve::target_group(&self.records, cx.region, arn)
                        .await?
                        .value,
                );
            }
        } else if !req.names.is_empty() {
            for name in &req.names {
                match self
                    .records
                    .get::<TargetGroupRecord>(&target_group_key(cx.region, name))
                    .await?
                {
                    Some(tg) => found.push(tg.value),
                    None => {
                        return Err(Elbv2Error::TargetGroupNotFound(format!(
                            "One or more target groups not found: '{name}'"
                        ))
                        .into())
                    }
                }
            }
        } else {
            let lb: Option<LoadBalancerRecord> = match &req.load_balancer_arn {
                Some(arn) => Some(
                    resolve::load_balancer(&self.records, cx.region, arn)
                        .await?
                        .value,
                ),
                None => None,
            };
            found = self
                .records
                .list::<TargetGroupRecord>(&format!("elbv2/{}/tg/", cx.region))
                .await?
                .into_iter()
                .map(|v| v.value)
                .filter(|tg| {
                    lb.as_ref()
                        .is_none_or(|lb| tg.load_balancer_arns.contains(&lb.arn))
                })
                .collect();
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.arn == b.arn);
        let (page, next) = paging::page(
            found,
            |tg| tg.name.clone(),
            req.marker.as_deref(),
            req.page_size,
        )?;
        Ok(json!({
            "TargetGroups": page.iter().map(to_wire).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    pub(crate) async fn modify_target_group(
        &self,
        cx: &Cx<'_>,
        req: ModifyTargetGroupRequest,
    ) -> Result<Value, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Versioned {
                mut value,
                revision,
            } = resolve::target_group(&self.records, cx.region, &req.target_group_arn).await?;
            value.health_check = req.health_check.apply(&value.health_check)?;
            let key = target_group_key(cx.region, &value.name);
            if self.records.put_if(&key, &value, revision).await? {
                return Ok(json!({"TargetGroups": [to_wire(&value)]}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn delete_target_group(
        &self,
        cx: &Cx<'_>,
        req: TargetGroupArnRequest,
    ) -> Result<Value, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let tg = match resolve::target_group(&self.records, cx.region, &req.target_group_arn)
                .await
            {
                Ok(tg) => tg,
                // Deleting a target group that is gone succeeds.
                Err(e) if e.code == "TargetGroupNotFound" => return Ok(json!({})),
                Err(e) => return Err(e),
            };
            if let Some(lb) = tg.value.load_balancer_arns.first() {
                return Err(Elbv2Error::ResourceInUse(format!(
                    "Target group '{}' is currently in use by a listener or a rule of '{lb}'",
                    tg.value.arn
                ))
                .into());
            }
            let key = target_group_key(cx.region, &tg.value.name);
            let mut txn = Txn::new().when_mod_revision(&key, tg.revision).delete(&key);
            let (targets, _) = self
                .records
                .store()
                .range(&targets_prefix(cx.region, &tg.value.name))
                .await
                .map_err(crate::records::store_failure)?;
            let (health, _) = self
                .records
                .store()
                .range(&format!("elbv2/{}/health/{}/", cx.region, tg.value.name))
                .await
                .map_err(crate::records::store_failure)?;
            for kv in targets.into_iter().chain(health) {
                txn = txn.delete(kv.key);
            }
            if self.records.commit(txn).await? {
                return Ok(json!({}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_target_group_attributes(
        &self,
        cx: &Cx<'_>,
        req: TargetGroupArnRequest,
    ) -> Result<Value, AwsError> {
        let tg = resolve::target_group(&self.records, cx.region, &req.target_group_arn).await?;
        Ok(json!({"Attributes": wire_attributes(&tg.value.attributes)}))
    }

    pub(crate) async fn modify_target_group_attributes(
        &self,
        cx: &Cx<'_>,
        req: ModifyTargetGroupAttributesRequest,
    ) -> Result<Value, AwsError> {
        let changes = attribute_changes(&req.attributes, check_attribute)?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Versioned {
                mut value,
                revision,
            } = resolve::target_group(&self.records, cx.region, &req.target_group_arn).await?;
            for (k, v) in &changes {
                value.attributes.insert(k.clone(), v.clone());
            }
            let slow_start = value
                .attributes
                .get("slow_start.duration_seconds")
                .is_some_and(|v| v != "0");
            let least_outstanding = value
                .attributes
                .get("load_balancing.algorithm.type")
                .is_some_and(|v| v == "least_outstanding_requests");
            if slow_start && least_outstanding {
                return Err(Elbv2Error::InvalidConfiguration(
                    "Slow start cannot be used with the least outstanding requests algorithm"
                        .into(),
                )
                .into());
            }
            let key = target_group_key(cx.region, &value.name);
            if self.records.put_if(&key, &value, revision).await? {
                return Ok(json!({"Attributes": wire_attributes(&value.attributes)}));
            }
        }
        Err(too_much_contention())
    }
}
