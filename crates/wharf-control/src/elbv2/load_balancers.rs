//! Load balancers: CreateLoadBalancer, DescribeLoadBalancers, DeleteLoadBalancer,
//! DescribeLoadBalancerAttributes, ModifyLoadBalancerAttributes.
//!
//! Wharf serves application load balancers. Subnets and security groups are accepted
//! and echoed (each subnet becomes an availability zone of the region), the DNS name
//! is `<name>-<id>.<region>.elb.localhost`, and a load balancer is `active` as soon as
//! it exists: its listeners are served on the data plane's bind address.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{load_balancer_key, LoadBalancerRecord};
use wharf_store::Txn;

use super::arns;
use super::error::{validation, Elbv2Error};
use super::routing::{Routing, RoutingChange};
use super::tags::{tag_map, WireTag};
use super::{epoch_seconds, paging, resolve, Cx, Elbv2Service};
use crate::records::{encode, too_much_contention, Versioned, MAX_CONFLICT_RETRIES};

const SUBNETS: &str = "wharf:subnets";
const SECURITY_GROUPS: &str = "wharf:security-groups";
const IP_ADDRESS_TYPE: &str = "wharf:ip-address-type";

/// The VPC every Wharf load balancer and target group reports.
pub(crate) const WHARF_VPC: &str = "vpc-00000000000000000";

/// An application load balancer's attributes and their defaults.
const DEFAULT_ATTRIBUTES: &[(&str, &str)] = &[
    ("access_logs.s3.enabled", "false"),
    ("access_logs.s3.bucket", ""),
    ("access_logs.s3.prefix", ""),
    ("client_keep_alive.seconds", "3600"),
    ("deletion_protection.enabled", "false"),
    ("idle_timeout.timeout_seconds", "60"),
    ("routing.http.desync_mitigation_mode", "defensive"),
    ("routing.http.drop_invalid_header_fields.enabled", "false"),
    ("routing.http.preserve_host_header.enabled", "false"),
    (
        "routing.http.x_amzn_tls_version_and_cipher_suite.enabled",
        "false",
    ),
    ("routing.http.xff_client_port.enabled", "false"),
    ("routing.http.xff_header_processing.mode", "append"),
    ("routing.http2.enabled", "true"),
    ("waf.fail_open.enabled", "false"),
];

/// Checks one attribute's value; `Err` says why it is refused.
fn check_attribute(key: &str, value: &str) -> Result<(), String> {
    let boolean = || match value {
        "true" | "false" => Ok(()),
        _ => Err(format!("Attribute '{key}' must be 'true' or 'false'")),
    };
    let range = |lo: i64, hi: i64| match value.parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(format!(
            "Attribute '{key}' must be an integer between {lo} and {hi}"
        )),
    };
    match key {
        "idle_timeout.timeout_seconds" => range(1, 4000),
        "client_keep_alive.seconds" => range(60, 604800),
        "routing.http.desync_mitigation_mode" => match value {
            "monitor" | "defensive" | "strictest" => Ok(()),
            _ => Err(format!(
                "Attribute '{key}' must be monitor, defensive or strictest"
            )),
        },
        "routing.http.xff_header_processing.mode" => match value {
            "append" | "preserve" | "remove" => Ok(()),
            _ => Err(format!(
                "Attribute '{key}' must be append, preserve or remove"
            )),
        },
        "access_logs.s3.bucket" | "access_logs.s3.prefix" => Ok(()),
        k if k.ends_with(".enabled") && DEFAULT_ATTRIBUTES.iter().any(|(d, _)| *d == k) => {
            boolean()
        }
        _ => Err(format!(
            "Load balancer attribute key '{key}' is not recognized"
        )),
    }
}

fn split_list(attributes: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    attributes
        .get(key)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The `LoadBalancer` wire shape.
pub(crate) fn to_wire(lb: &LoadBalancerRecord, region: &str) -> Value {
    let subnets = split_list(&lb.attributes, SUBNETS);
    let zones: Vec<Value> = if subnets.is_empty() {
        vec![json!({"ZoneName": format!("{region}a"), "LoadBalancerAddresses": []})]
    } else {
        subnets
            .iter()
            .enumerate()
            .map(|(i, subnet)| {
                let letter = (b'a' + (i % 6) as u8) as char;
                json!({"ZoneName": format!("{region}{letter}"), "SubnetId": subnet, "LoadBalancerAddresses": []})
            })
            .collect()
    };
    json!({
        "LoadBalancerArn": lb.arn,
        "DNSName": lb.dns_name,
        "CanonicalHostedZoneId": "Z00WHARF00000000",
        "CreatedTime": epoch_seconds(lb.created_ms),
        "LoadBalancerName": lb.name,
        "Scheme": lb.scheme,
        "VpcId": WHARF_VPC,
        "State": {"Code": lb.state},
        "Type": lb.lb_type,
        "AvailabilityZones": zones,
        "SecurityGroups": split_list(&lb.attributes, SECURITY_GROUPS),
        "IpAddressType": lb.attributes.get(IP_ADDRESS_TYPE).cloned().unwrap_or_else(|| "ipv4".into()),
    })
}

/// ELBv2's load balancer and target group name rule: 1 to 32 letters, digits and
/// hyphens, not starting or ending with a hyphen.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(validation(format!(
            "{what} name '{name}' must be 1 to 32 characters long, contain only alphanumeric characters or hyphens, and must not begin or end with a hyphen"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateLoadBalancerRequest {
    name: String,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    subnet_mappings: Vec<SubnetMapping>,
    #[serde(default)]
    security_groups: Vec<String>,
    scheme: Option<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
    #[serde(rename = "Type")]
    lb_type: Option<String>,
    ip_address_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SubnetMapping {
    subnet_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeLoadBalancersRequest {
    #[serde(default)]
    load_balancer_arns: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LoadBalancerArnRequest {
    load_balancer_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireAttribute {
    pub key: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModifyLoadBalancerAttributesRequest {
    load_balancer_arn: String,
    attributes: Vec<WireAttribute>,
}

/// A load balancer's or target group's attributes as the API lists them (without
/// Wharf's hidden `wharf:` keys).
pub(crate) fn wire_attributes(attributes: &BTreeMap<String, String>) -> Value {
    Value::Array(
        attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("wharf:"))
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// The `(key, value)` pairs a Modify…Attributes call asks for, each checked by
/// `check` before anything is written.
pub(crate) fn attribute_changes(
    attributes: &[WireAttribute],
    check: fn(&str, &str) -> Result<(), String>,
) -> Result<Vec<(String, String)>, AwsError> {
    attributes
        .iter()
        .map(|a| {
            let (Some(key), Some(value)) = (&a.key, &a.value) else {
                return Err(validation("Each attribute needs a Key and a Value"));
            };
            check(key, value).map_err(validation)?;
            Ok((key.clone(), value.clone()))
        })
        .collect()
}

impl Elbv2Service {
    pub(crate) async fn create_load_balancer(
        &self,
        cx: &Cx<'_>,
        req: CreateLoadBalancerRequest,
    ) -> Result<Value, AwsError> {
        check_name("Load balancer", &req.name)?;
        if req.name.starts_with("internal-") {
            return Err(validation(
                "Load balancer names cannot start with 'internal-'",
            ));
        }
        let lb_type = req.lb_type.as_deref().unwrap_or("application");
        if lb_type != "application" {
            return Err(Elbv2Error::InvalidConfiguration(format!(
                "Wharf serves application load balancers only, not '{lb_type}'"
            ))
            .into());
        }
        let scheme = req.scheme.as_deref().unwrap_or("internet-facing");
        let mut subnets = req.subnets.clone();
        subnets.extend(
            req.subnet_mappings
                .iter()
                .filter_map(|m| m.subnet_id.clone()),
        );
        if subnets.iter().any(|s| s.is_empty() || s.contains(',')) {
            return Err(validation(
                "Subnet ids must be non-empty and contain no commas",
            ));
        }
        if req
            .security_groups
            .iter()
            .any(|s| s.is_empty() || s.contains(','))
        {
            return Err(validation(
                "Security group ids must be non-empty and contain no commas",
            ));
        }
        let tags = tag_map(&req.tags, true)?;
        let key = load_balancer_key(cx.region, &req.name);
        if let Some(existing) = self.records.get::<LoadBalancerRecord>(&key).await? {
            let same = existing.value.scheme == scheme
                && split_list(&existing.value.attributes, SUBNETS) == subnets;
            if same {
                return Ok(json!({"LoadBalancers": [to_wire(&existing.value, cx.region)]}));
            }
            return Err(Elbv2Error::DuplicateLoadBalancerName(req.name).into());
        }
        let id = arns::new_id();
        let arn = arns::load_balancer(cx.region, cx.account, &req.name, &id);
        let internal = if scheme == "internal" {
            "internal-"
        } else {
            ""
        };
        let mut attributes: BTreeMap<String, String> = DEFAULT_ATTRIBUTES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !subnets.is_empty() {
            attributes.insert(SUBNETS.into(), subnets.join(","));
        }
        if !req.security_groups.is_empty() {
            attributes.insert(SECURITY_GROUPS.into(), req.security_groups.join(","));
        }
        if let Some(t) = &req.ip_address_type {
            attributes.insert(IP_ADDRESS_TYPE.into(), t.clone());
        }
        let record = LoadBalancerRecord {
            arn,
            name: req.name.clone(),
            scheme: scheme.to_owned(),
            lb_type: lb_type.to_owned(),
            dns_name: format!("{internal}{}-{id}.{}.elb.localhost", req.name, cx.region),
            state: "active".to_owned(),
            created_ms: cx.now_millis,
            attributes,
            tags,
        };
        if !self.records.put_if(&key, &record, 0).await? {
            return Err(Elbv2Error::DuplicateLoadBalancerName(req.name).into());
        }
        Ok(json!({"LoadBalancers": [to_wire(&record, cx.region)]}))
    }

    pub(crate) async fn describe_load_balancers(
        &self,
        cx: &Cx<'_>,
        req: DescribeLoadBalancersRequest,
    ) -> Result<Value, AwsError> {
        if !req.load_balancer_arns.is_empty() && !req.names.is_empty() {
            return Err(validation(
                "Load balancer names and load balancer ARNs cannot be specified at the same time",
            ));
        }
        let mut found: Vec<LoadBalancerRecord> = Vec::new();
        if !req.load_balancer_arns.is_empty() {
            for arn in &req.load_balancer_arns {
                found.push(
                    resolve::load_balancer(&self.records, cx.region, arn)
                        .await?
                        .value,
                );
            }
        } else if !req.names.is_empty() {
            for name in &req.names {
                match self
                    .records
                    .get::<LoadBalancerRecord>(&load_balancer_key(cx.region, name))
                    .await?
                {
                    Some(lb) => found.push(lb.value),
                    None => {
                        return Err(Elbv2Error::LoadBalancerNotFound(format!(
                            "Load balancers '[{name}]' not found"
                        ))
                        .into())
                    }
                }
            }
        } else {
            found = self
                .records
                .list::<LoadBalancerRecord>(&format!("elbv2/{}/lb/", cx.region))
                .await?
                .into_iter()
                .map(|v| v.value)
                .collect();
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.arn == b.arn);
        let (page, next) = paging::page(
            found,
            |lb| lb.name.clone(),
            req.marker.as_deref(),
            req.page_size,
        )?;
        Ok(json!({
            "LoadBalancers": page.iter().map(|lb| to_wire(lb, cx.region)).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    pub(crate) async fn delete_load_balancer(
        &self,
        cx: &Cx<'_>,
        req: LoadBalancerArnRequest,
    ) -> Result<Value, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let lb = match resolve::load_balancer(&self.records, cx.region, &req.load_balancer_arn)
                .await
            {
                Ok(lb) => lb,
                // Deleting a load balancer that is gone succeeds, as in ELBv2.
                Err(e) if e.code == "LoadBalancerNotFound" => return Ok(json!({})),
                Err(e) => return Err(e),
            };
            if lb
                .value
                .attributes
                .get("deletion_protection.enabled")
                .map(String::as_str)
                == Some("true")
            {
                return Err(Elbv2Error::OperationNotPermitted(format!(
                    "Load balancer '{}' cannot be deleted because deletion protection is enabled",
                    lb.value.arn
                ))
                .into());
            }
            let mut change = RoutingChange::default();
            for (key, listener) in &routing.listeners {
                if listener.value.load_balancer_arn != lb.value.arn {
                    continue;
                }
                change.listeners.insert(key.clone(), None);
                for (rule_key, _) in routing.rules_of(&listener.value.arn) {
                    change.rules.insert(rule_key.clone(), None);
                }
            }
            let key = load_balancer_key(cx.region, &lb.value.name);
            let mut txn = routing.transaction(&change);
            txn = txn.when_mod_revision(&key, lb.revision).delete(&key);
            if self.records.commit(txn).await? {
                return Ok(json!({}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_load_balancer_attributes(
        &self,
        cx: &Cx<'_>,
        req: LoadBalancerArnRequest,
    ) -> Result<Value, AwsError> {
        let lb = resolve::load_balancer(&self.records, cx.region, &req.load_balancer_arn).await?;
        Ok(json!({"Attributes": wire_attributes(&lb.value.attributes)}))
    }

    pub(crate) async fn modify_load_balancer_attributes(
        &self,
        cx: &Cx<'_>,
        req: ModifyLoadBalancerAttributesRequest,
    ) -> Result<Value, AwsError> {
        let changes = attribute_changes(&req.attributes, check_attribute)?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let Versioned {
                mut value,
                revision,
            } = resolve::load_balancer(&self.records, cx.region, &req.load_balancer_arn).await?;
            for (k, v) in &changes {
                value.attributes.insert(k.clone(), v.clone());
            }
            let key = load_balancer_key(cx.region, &value.name);
            let txn = Txn::new()
                .when_mod_revision(&key, revision)
                .put(&key, encode(&value));
            if self.records.commit(txn).await? {
                return Ok(json!({"Attributes": wire_attributes(&value.attributes)}));
            }
        }
        Err(too_much_contention())
    }
}
