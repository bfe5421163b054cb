//! The load balancer's records as they are kept in the store, and where each lives.
//!
//! Every key starts with `elbv2/<region>/`. Records are JSON documents of the types
//! below. The ELBv2 API writes everything but [`TargetHealthRecord`]; the data plane
//! writes only health, and only when a target's state changes.
//!
//! | record | key |
//! |---|---|
//! | [`LoadBalancerRecord`] | `elbv2/<region>/lb/<name>` |
//! | [`ListenerRecord`] | `elbv2/<region>/listener/<lb-name>/<listener-id>` |
//! | [`RuleRecord`] | `elbv2/<region>/rule/<lb-name>/<listener-id>/<rule-id>` |
//! | [`TargetGroupRecord`] | `elbv2/<region>/tg/<name>` |
//! | [`TargetRecord`] | `elbv2/<region>/target/<tg-name>/<target-id>:<port>` |
//! | [`TargetHealthRecord`] | `elbv2/<region>/health/<tg-name>/<target-id>:<port>` |
//!
//! Ids are the last path segment of the resource's ARN, as in AWS
//! (`…:loadbalancer/app/<name>/<id>`, `…:listener/app/<lb-name>/<lb-id>/<id>`,
//! `…:listener-rule/app/<lb-name>/<lb-id>/<listener-id>/<id>`,
//! `…:targetgroup/<name>/<id>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The prefix under which every load balancer record of `region` lives.
pub fn prefix(region: &str) -> String {
    format!("elbv2/{region}/")
}
/// A load balancer's key.
pub fn load_balancer_key(region: &str, name: &str) -> String {
    format!("elbv2/{region}/lb/{name}")
}
/// A listener's key.
pub fn listener_key(region: &str, lb_name: &str, listener_id: &str) -> String {
    format!("elbv2/{region}/listener/{lb_name}/{listener_id}")
}
/// A rule's key.
pub fn rule_key(region: &str, lb_name: &str, listener_id: &str, rule_id: &str) -> String {
    format!("elbv2/{region}/rule/{lb_name}/{listener_id}/{rule_id}")
}
/// A target group's key.
pub fn target_group_key(region: &str, name: &str) -> String {
    format!("elbv2/{region}/tg/{name}")
}
/// A registered target's key; `id` is an instance id or an IP address.
pub fn target_key(region: &str, tg_name: &str, id: &str, port: u16) -> String {
    format!("elbv2/{region}/target/{tg_name}/{id}:{port}")
}
/// The prefix of every target of one target group.
pub fn targets_prefix(region: &str, tg_name: &str) -> String {
    format!("elbv2/{region}/target/{tg_name}/")
}
/// The key of the health the data plane observed for one target.
pub fn health_key(region: &str, tg_name: &str, id: &str, port: u16) -> String {
    format!("elbv2/{region}/health/{tg_name}/{id}:{port}")
}

/// An application load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerRecord {
    pub arn: String,
    pub name: String,
    /// `internet-facing` or `internal`.
    pub scheme: String,
    /// `application` (the only type the data plane serves).
    pub lb_type: String,
    pub dns_name: String,
    /// `provisioning`, `active` or `failed`.
    pub state: String,
    /// Milliseconds since the epoch.
    pub created_ms: i64,
    /// `idle_timeout.timeout_seconds` and the other load balancer attributes. Keys
    /// starting with `wharf:` are not ELBv2 attributes but what the API echoes back
    /// (`wharf:subnets`, `wharf:security-groups`: comma-separated; and
    /// `wharf:ip-address-type`); the API hides them from
    /// DescribeLoadBalancerAttributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A listener: a port the data plane serves for one load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerRecord {
    pub arn: String,
    pub load_balancer_arn: String,
    pub port: u16,
    /// `HTTP` (the only protocol served).
    pub protocol: String,
    pub default_actions: Vec<Action>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A listener rule. The default rule is not stored: it is the listener's
/// `default_actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRecord {
    pub arn: String,
    pub listener_arn: String,
    /// 1..=50000; lower is evaluated first.
    pub priority: u32,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One rule condition; every condition of a rule must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "field", rename_all = "kebab-case")]
pub enum Condition {
    /// Any of the patterns matches the path (`*` any run of characters, `?` one).
    PathPattern { values: Vec<String> },
    /// Any of the patterns matches the Host header, case-insensitively.
    HostHeader { values: Vec<String> },
    /// The named header has a value matching any of the patterns.
    HttpHeader { name: String, values: Vec<String> },
    /// Any of the key/value patterns matches a query parameter; a `None` key matches any
    /// key.
    QueryString { values: Vec<QueryPair> },
    /// The method is one of these (exact, upper case).
    HttpRequestMethod { values: Vec<String> },
    /// The client address is in one of these CIDR blocks.
    SourceIp { values: Vec<String> },
}

/// A `key=value` pattern of a query-string condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryPair {
    pub key: Option<String>,
    pub value: String,
}

/// What a listener or rule does with a request it matched. The first action by `order`
/// that is not an authentication action is the one served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    /// Forward to one target group, or to several with weights.
    Forward {
        order: Option<u32>,
        target_groups: Vec<WeightedTargetGroup>,
        /// Stickiness duration in seconds, when enabled.
        stickiness_seconds: Option<u32>,
    },
    FixedResponse {
        order: Option<u32>,
        status_code: u16,
        content_type: Option<String>,
        message_body: Option<String>,
    },
    /// A redirect; each part may use `#{protocol}`, `#{host}`, `#{port}`, `#{path}`,
    /// `#{query}`.
    Redirect {
        order: Option<u32>,
        protocol: Option<String>,
        host: Option<String>,
        port: Option<String>,
        path: Option<String>,
        query: Option<String>,
        /// `HTTP_301` or `HTTP_302`.
        status_code: String,
    },
}

/// A target group an action forwards to, with its weight (0..=999; 1 when one group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTargetGroup {
    pub arn: String,
    pub weight: u32,
}

/// A target group: where forwarded requests go, and how its targets are checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupRecord {
    pub arn: String,
    pub name: String,
    /// `HTTP` (the only protocol served).
    pub protocol: String,
    /// `HTTP1` or `HTTP2` towards the targets.
    pub protocol_version: String,
    /// The default target port.
    pub port: u16,
    /// `instance` or `ip`.
    pub target_type: String,
    pub vpc_id: Option<String>,
    pub health_check: HealthCheck,
    /// `deregistration_delay.timeout_seconds` (default "300"),
    /// `slow_start.duration_seconds` (default "0"), `load_balancing.algorithm.type`
    /// (`round_robin` or `least_outstanding_requests`), `stickiness.*`.
    pub attributes: BTreeMap<String, String>,
    /// The load balancers whose rules or listeners forward here.
    #[serde(default)]
    pub load_balancer_arns: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A target group's active health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub enabled: bool,
    /// `HTTP`.
    pub protocol: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub path: String,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// ELBv2's matcher: `200`, `200,202`, `200-299`.
    pub matcher: String,
}

/// A registered target. Deregistering first marks it draining (the data plane sends it
/// no new requests but lets in-flight ones finish); the API deletes the record once
/// `drain_until_ms` has passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    /// An instance id (the data plane reaches it through the instance's address) or an
    /// IP address.
    pub id: String,
    pub port: u16,
    /// The address the data plane connects to, `host:port`.
    pub address: String,
    pub availability_zone: Option<String>,
    pub registered_ms: i64,
    /// Set when the target is being deregistered.
    pub drain_until_ms: Option<i64>,
}

/// The health the data plane last observed for a target (DescribeTargetHealth's
/// answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealthRecord {
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining` or `unavailable`.
    pub state: String,
    /// ELBv2's reason code, e.g. `Elb.InitialHealthChecking`,
    /// `Target.ResponseCodeMismatch`, `Target.Timeout`, `Target.FailedHealthChecks`,
    /// `Target.DeregistrationInProgress`.
    pub reason: Option<String>,
    pub description: Option<String>,
    pub updated_ms: i64,
}
