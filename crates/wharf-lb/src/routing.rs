//! The routing table: load balancer records compiled into an immutable structure that
//! the request path reads without locks, and the pure decisions made on it — which
//! rule matches a request, which target group a weighted forward picks, which target of
//! a group gets the request.
//!
//! A [`RouteTable`] is rebuilt from a fresh read of the records on every configuration
//! change and swapped in whole. What must outlive a rebuild — a target's observed health
//! and its count of outstanding requests — lives in a [`TargetState`] that the rebuild
//! carries over by the target's store key.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::records::{
    Action, Condition, HealthCheck, ListenerRecord, LoadBalancerRecord, RuleRecord,
    TargetGroupRecord, TargetHealthRecord, TargetRecord,
};

/// The idle timeout of a load balancer without the attribute (ALB's default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every load balancer record under `elbv2/`, parsed, keyed by store key.
#[derive(Debug, Default, Clone)]
pub struct ElbRecords {
    /// Load balancers by key.
    pub load_balancers: BTreeMap<String, LoadBalancerRecord>,
    /// Listeners by key.
    pub listeners: BTreeMap<String, ListenerRecord>,
    /// Rules by key.
    pub rules: BTreeMap<String, RuleRecord>,
    /// Target groups by key.
    pub target_groups: BTreeMap<String, TargetGroupRecord>,
    /// Targets by key.
    pub targets: BTreeMap<String, TargetRecord>,
    /// Observed health by key.
    pub health: BTreeMap<String, TargetHealthRecord>,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The key is not one of the load balancer layouts.
    #[error("{0}: not a load balancer record key")]
    UnknownKey(String),
    /// The value is not the JSON record its key calls for.
    #[error("{key}: {source}")]
    BadValue {
        /// The record's key.
        key: String,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
}

impl ElbRecords {
    /// Files one record by the kind its key names (`elbv2/<region>/<kind>/…`).
    pub fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), RecordError> {
        fn parse<T: serde::de::DeserializeOwned>(
            key: &str,
            value: &[u8],
        ) -> Result<T, RecordError> {
            serde_json::from_slice(value).map_err(|source| RecordError::BadValue {
                key: key.to_owned(),
                source,
            })
        }
        let kind = key_kind(key).ok_or_else(|| RecordError::UnknownKey(key.to_owned()))?;
        let key_owned = key.to_owned();
        match kind {
            "lb" => {
                self.load_balancers.insert(key_owned, parse(key, value)?);
            }
            "listener" => {
                self.listeners.insert(key_owned, parse(key, value)?);
            }
            "rule" => {
                self.rules.insert(key_owned, parse(key, value)?);
            }
            "tg" => {
                self.target_groups.insert(key_owned, parse(key, value)?);
            }
            "target" => {
                self.targets.insert(key_owned, parse(key, value)?);
            }
            "health" => {
                self.health.insert(key_owned, parse(key, value)?);
            }
            _ => return Err(RecordError::UnknownKey(key.to_owned())),
        }
        Ok(())
    }
}

/// The kind segment of a load balancer key (`lb`, `listener`, `rule`, `tg`, `target`,
/// `health`), if the key has the `elbv2/<region>/<kind>/<rest>` shape.
pub fn key_kind(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("elbv2/")?;
    let (region, rest) = rest.split_once('/')?;
    let (kind, tail) = rest.split_once('/')?;
    if region.is_empty() || tail.is_empty() {
        return None;
    }
    Some(kind)
}

/// The region segment of a load balancer key.
fn key_region(key: &str) -> Option<&str> {
    key.strip_prefix("elbv2/")?.split_once('/').map(|(r, _)| r)
}

/// What a target's health checks last concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    /// Registered, no conclusion yet.
    Initial = 0,
    /// Passed its checks.
    Healthy = 1,
    /// Failed its checks.
    Unhealthy = 2,
}

impl HealthState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => HealthState::Healthy,
            2 => HealthState::Unhealthy,
            _ => HealthState::Initial,
        }
    }
    /// The state's name in ELBv2 (`initial`, `healthy`, `unhealthy`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// What outlives table rebuilds for one target: its health, its load and its idle
/// keep-alive connections.
#[derive(Debug)]
pub struct TargetState {
    health: AtomicU8,
    /// When the target last became healthy (ms since the epoch), for slow start.
    healthy_since_ms: AtomicU64,
    outstanding: AtomicUsize,
    /// Idle HTTP/1.1 connections to the target, kept by the proxy.
    pub idle: crate::proxy::IdleConnections,
}

impl TargetState {
    /// A target in `health` (healthy since `since_ms` if healthy).
    pub fn new(health: HealthState, since_ms: u64) -> Self {
        Self {
            health: AtomicU8::new(health as u8),
            healthy_since_ms: AtomicU64::new(since_ms),
            outstanding: AtomicUsize::new(0),
            idle: crate::proxy::IdleConnections::default(),
        }
    }
    /// The last conclusion of the health checks.
    pub fn health(&self) -> HealthState {
        HealthState::from_u8(self.health.load(Ordering::Relaxed))
    }
    /// Records a new conclusion of the health checks at `now_ms`.
    pub fn set_health(&self, health: HealthState, now_ms: u64) {
        let before = self.health.swap(health as u8, Ordering::Relaxed);
        if health == HealthState::Healthy && before != HealthState::Healthy as u8 {
            self.healthy_since_ms.store(now_ms, Ordering::Relaxed);
        }
    }
    /// Requests sent to the target whose responses have not finished.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
    /// Counts a request as outstanding until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> OutstandingGuard {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        OutstandingGuard(self.clone())
    }
}

/// One outstanding request on a target; dropping it ends the request.
#[derive(Debug)]
pub struct OutstandingGuard(Arc<TargetState>);

impl Drop for OutstandingGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A registered target as the table sees it.
#[derive(Debug)]
pub struct Target {
    /// The target's store key (`elbv2/<region>/target/<tg>/<id>:<port>`).
    pub key: String,
    /// Its health record's key.
    pub health_key: String,
    /// Instance id or IP.
    pub id: String,
    /// The traffic port.
    pub port: u16,
    /// `host:port` to connect to.
    pub address: String,
    /// The same, shared with the connections made to it.
    pub address_shared: Arc<str>,
    /// The same, parsed for building upstream URIs.
    pub authority: Authority,
    /// Being deregistered: gets no new requests.
    pub draining: bool,
    /// Health, load: carried over rebuilds.
    pub state: Arc<TargetState>,
}

/// How a target group spreads requests over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// In turn.
    RoundRobin,
    /// The target with the fewest outstanding requests.
    LeastOutstandingRequests,
}

/// A target group as the table sees it.
#[derive(Debug)]
pub struct TargetGroup {
    /// Its ARN.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// Its region (from its key).
    pub region: String,
    /// Speak HTTP/2 (h2c, prior knowledge) to the targets.
    pub http2: bool,
    /// The selection algorithm.
    pub algorithm: Algorithm,
    /// Slow start: a newly healthy target's share ramps up over this long.
    pub slow_start: Option<Duration>,
    /// The active health check, when enabled.
    pub health_check: Option<HealthCheck>,
    /// Used by at least one listener or rule.
    pub in_use: bool,
    /// Targets in key order.
    pub targets: Vec<Arc<Target>>,
    next: AtomicUsize,
}

impl TargetGroup {
    fn routable(&self, target: &Target) -> bool {
        !target.draining
            && (self.health_check.is_none() || target.state.health() == HealthState::Healthy)
    }

    /// Picks the target for a new request: among the healthy targets that are not
    /// draining, by the group's algorithm; when none is healthy, among every target
    /// that is not draining ("fail open", as ALB does); `None` when every target is
    /// draining or there is none. `roll` is a random number (slow start uses it);
    /// `now_ms` the current time.
    pub fn pick_target(&self, roll: u32, now_ms: u64) -> Option<&Arc<Target>> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        self.pick_among(start, roll, now_ms, |t| self.routable(t))
            .or_else(|| self.pick_among(start, roll, now_ms, |t| !t.draining))
    }

    fn pick_among(
        &self,
        start: usize,
        roll: u32,
        now_ms: u64,
        eligible: impl Fn(&Target) -> bool,
    ) -> Option<&Arc<Target>> {
        let n = self.targets.len();
        match self.algorithm {
            Algorithm::RoundRobin => {
                let mut ramping: Option<&Arc<Target>> = None;
                for k in 0..n {
                    let target = &self.targets[(start + k) % n];
                    if !eligible(target) {
                        continue;
                    }
                    if self.admits(target, roll, now_ms) {
                        return Some(target);
                    }
                    ramping.get_or_insert(target);
                }
                ramping
            }
            Algorithm::LeastOutstandingRequests => {
                let mut best: Option<(&Arc<Target>, usize)> = None;
                for k in 0..n {
                    let target = &self.targets[(start + k) % n];
                    if !eligible(target) {
                        continue;
                    }
                    let load = target.state.outstanding();
                    if best.is_none_or(|(_, b)| load < b) {
                        best = Some((target, load));
                    }
                }
                best.map(|(t, _)| t)
            }
        }
    }

    /// Slow start: a target that became healthy `elapsed` ago, within the slow start
    /// window, is admitted with probability `elapsed / window`.
    fn admits(&self, target: &Target, roll: u32, now_ms: u64) -> bool {
        let Some(window) = self.slow_start else {
            return true;
        };
        if target.state.health() != HealthState::Healthy {
            return true;
        }
        let since = target.state.healthy_since_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(since);
        let window = window.as_millis() as u64;
        if elapsed >= window || window == 0 {
            return true;
        }
        (roll as u64 % window) < elapsed
    }
}

/// A forward action: target groups with weights.
#[derive(Debug)]
pub struct Forward {
    /// Groups with a weight above zero, with their weights.
    pub groups: Vec<(Arc<TargetGroup>, u32)>,
    /// The sum of the weights.
    pub total_weight: u32,
}

impl Forward {
    /// The group that `roll` (any number) falls on, in proportion to the weights.
    pub fn pick_group(&self, roll: u32) -> Option<&Arc<TargetGroup>> {
        if self.total_weight == 0 {
            return None;
        }
        let mut point = roll % self.total_weight;
        for (group, weight) in &self.groups {
            if point < *weight {
                return Some(group);
            }
            point -= weight;
        }
        None
    }
}

/// A fixed response.
#[derive(Debug)]
pub struct FixedResponse {
    /// The status.
    pub status: StatusCode,
    /// The Content-Type, if any.
    pub content_type: Option<HeaderValue>,
    /// The body.
    pub body: Bytes,
}

/// A redirect; each part is a template with `#{protocol}`, `#{host}`, `#{port}`,
/// `#{path}` and `#{query}`.
#[derive(Debug)]
pub struct Redirect {
    /// 301 or 302.
    pub status: StatusCode,
    /// Protocol template (`HTTP`, `HTTPS` or `#{protocol}`).
    pub protocol: String,
    /// Host template.
    pub host: String,
    /// Port template.
    pub port: String,
    /// Path template.
    pub path: String,
    /// Query template.
    pub query: String,
}

/// The parts of a request a redirect's templates can use.
#[derive(Debug, Clone, Copy)]
pub struct RedirectSource<'a> {
    /// `http`.
    pub protocol: &'a str,
    /// The Host without its port.
    pub host: &'a str,
    /// The listener's port.
    pub port: u16,
    /// The path, with its leading slash.
    pub path: &'a str,
    /// The query without `?`.
    pub query: &'a str,
}

impl Redirect {
    /// The `Location` for a request.
    pub fn location(&self, source: &RedirectSource<'_>) -> String {
        let port = source.port.to_string();
        let expand = |template: &str| -> String {
            template
                .replace("#{protocol}", source.protocol)
                .replace("#{host}", source.host)
                .replace("#{port}", &port)
                .replace("#{path}", source.path)
                .replace("#{query}", source.query)
        };
        let protocol = expand(&self.protocol).to_ascii_lowercase();
        let host = expand(&self.host);
        let port = expand(&self.port);
        let mut path = expand(&self.path);
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let query = expand(&self.query);
        let default_port = matches!(
            (protocol.as_str(), port.as_str()),
            ("http", "80") | ("https", "443")
        );
        let mut location = format!("{protocol}://{host}");
        if !default_port && !port.is_empty() {
            location.push(':');
            location.push_str(&port);
        }
        location.push_str(&path);
        if !query.is_empty() {
            location.push('?');
            location.push_str(&query);
        }
        location
    }
}

/// What a listener does with a request.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward to a target group.
    Forward(Forward),
    /// Answer with a fixed response.
    Fixed(FixedResponse),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Nothing usable is configured: answer 503.
    Unavailable,
}

/// A wildcard pattern: `*` matches any run of characters, `?` exactly one.
#[derive(Debug, Clone)]
pub struct Pattern {
    pattern: String,
    case_insensitive: bool,
}

impl Pattern {
    /// A case-sensitive pattern.
    pub fn case_sensitive(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            case_insensitive: false,
        }
    }
    /// A case-insensitive pattern (ASCII letters).
    pub fn case_insensitive(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            case_insensitive: true,
        }
    }
    /// Whether `subject` matches the whole pattern.
    pub fn matches(&self, subject: &str) -> bool {
        wildcard_match(
            self.pattern.as_bytes(),
            subject.as_bytes(),
            self.case_insensitive,
        )
    }
}

/// The byte length of the UTF-8 character starting with `lead`.
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Glob matching with one backtracking point (the last `*`), linear in practice.
/// Both sides are valid UTF-8; `?` and the `*` backtracking step over whole characters.
fn wildcard_match(pattern: &[u8], subject: &[u8], case_insensitive: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if case_insensitive {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < subject.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p + 1, s));
            p += 1;
        } else if p < pattern.len() && pattern[p] == b'?' {
            s += char_len(subject[s]);
            p += 1;
        } else if p < pattern.len() && eq(pattern[p], subject[s]) {
            p += 1;
            s += 1;
        } else if let Some((after_star, from)) = star {
            let next = from + char_len(subject[from]);
            star = Some((after_star, next));
            p = after_star;
            s = next;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self {
            network: addr,
            prefix,
        })
    }
    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One compiled rule condition.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The path matches one of the patterns (case-sensitive).
    Path(Vec<Pattern>),
    /// The host (without port) matches one of the patterns (case-insensitive).
    Host(Vec<Pattern>),
    /// A value of the header matches one of the patterns (case-insensitive).
    Header(HeaderName, Vec<Pattern>),
    /// A query parameter matches one of the key/value patterns (case-insensitive).
    Query(Vec<(Option<Pattern>, Pattern)>),
    /// The method is one of these.
    Method(Vec<Method>),
    /// The client address is in one of these blocks.
    SourceIp(Vec<Cidr>),
    /// A condition that cannot match (an unparsable one).
    Never,
}

/// What rule matching looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// The Host header (or `:authority`), port included if sent.
    pub host: Option<&'a str>,
    /// Every header.
    pub headers: &'a HeaderMap,
    /// The client's address.
    pub client_ip: IpAddr,
}

/// The Host value without its port (`[::1]:80` gives `[::1]`).
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl Matcher {
    /// Compiles a condition.
    pub fn compile(condition: &Condition) -> Self {
        match condition {
            Condition::PathPattern { values } => {
                Matcher::Path(values.iter().map(|v| Pattern::case_sensitive(v)).collect())
            }
            Condition::HostHeader { values } => Matcher::Host(
                values
                    .iter()
                    .map(|v| Pattern::case_insensitive(v))
                    .collect(),
            ),
            Condition::HttpHeader { name, values } => match HeaderName::try_from(name.as_str()) {
                Ok(name) => Matcher::Header(
                    name,
                    values
                        .iter()
                        .map(|v| Pattern::case_insensitive(v))
                        .collect(),
                ),
                Err(_) => Matcher::Never,
            },
            Condition::QueryString { values } => Matcher::Query(
                values
                    .iter()
                    .map(|pair| {
                        (
                            pair.key.as_deref().map(Pattern::case_insensitive),
                            Pattern::case_insensitive(&pair.value),
                        )
                    })
                    .collect(),
            ),
            Condition::HttpRequestMethod { values } => Matcher::Method(
                values
                    .iter()
                    .filter_map(|v| Method::from_bytes(v.as_bytes()).ok())
                    .collect(),
            ),
            Condition::SourceIp { values } => {
                let blocks: Option<Vec<Cidr>> = values.iter().map(|v| Cidr::parse(v)).collect();
                blocks.map_or(Matcher::Never, Matcher::SourceIp)
            }
        }
    }

    /// Whether the request satisfies the condition.
    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        match self {
            Matcher::Path(patterns) => patterns.iter().any(|p| p.matches(request.path)),
            Matcher::Host(patterns) => {
                let Some(host) = request.host else {
                    return false;
                };
                let host = host_without_port(host);
                patterns.iter().any(|p| p.matches(host))
            }
            Matcher::Header(name, patterns) => request
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| patterns.iter().any(|p| p.matches(v))),
            Matcher::Query(pairs) => {
                let Some(query) = request.query else {
                    return false;
                };
                form_urlencoded::parse(query.as_bytes()).any(|(key, value)| {
                    pairs.iter().any(|(k, v)| {
                        k.as_ref().is_none_or(|k| k.matches(&key)) && v.matches(&value)
                    })
                })
            }
            Matcher::Method(methods) => methods.iter().any(|m| m == request.method),
            Matcher::SourceIp(blocks) => blocks.iter().any(|b| b.contains(request.client_ip)),
            Matcher::Never => false,
        }
    }
}

/// A compiled listener rule.
#[derive(Debug)]
pub struct Rule {
    /// Its ARN.
    pub arn: String,
    /// Lower first.
    pub priority: u32,
    /// All must match.
    pub conditions: Vec<Matcher>,
    /// What to do when they do.
    pub action: RouteAction,
}

/// One listener's routes.
#[derive(Debug)]
pub struct ListenerRoutes {
    /// Its ARN.
    pub arn: String,
    /// Its port.
    pub port: u16,
    /// The load balancer's name.
    pub load_balancer: String,
    /// The load balancer's idle timeout (also how long a target may take to answer).
    pub idle_timeout: Duration,
    /// `X-Forwarded-Port`'s value.
    pub port_header: HeaderValue,
    /// Rules by ascending priority.
    pub rules: Vec<Rule>,
    /// The default rule's action.
    pub default_action: RouteAction,
}

impl ListenerRoutes {
    /// The action of the first rule, by priority, whose conditions all match; the
    /// default action when none does.
    pub fn route(&self, request: &RequestFacts<'_>) -> &RouteAction {
        self.rules
            .iter()
            .find(|rule| rule.conditions.iter().all(|c| c.matches(request)))
            .map_or(&self.default_action, |rule| &rule.action)
    }
}

/// The whole routing configuration at one store revision.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The store revision the table was built from.
    pub revision: i64,
    listeners: HashMap<u16, Arc<ListenerRoutes>>,
    target_groups: Vec<Arc<TargetGroup>>,
}

impl RouteTable {
    /// The routes of the listener on `port`.
    pub fn listener(&self, port: u16) -> Option<&Arc<ListenerRoutes>> {
        self.listeners.get(&port)
    }
    /// Every listener port.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.listeners.keys().copied()
    }
    /// Every target group.
    pub fn target_groups(&self) -> &[Arc<TargetGroup>] {
        &self.target_groups
    }
}

/// The target states of the previous table, by target key, handed to the next build.
pub type TargetStates = HashMap<String, Arc<TargetState>>;

fn attribute_seconds(attributes: &BTreeMap<String, String>, name: &str) -> Option<u64> {
    attributes.get(name).and_then(|v| v.trim().parse().ok())
}

fn compile_action(actions: &[Action], groups: &HashMap<&str, Arc<TargetGroup>>) -> RouteAction {
    // The first action by order is the one served; actions without an order keep
    // their place after ordered ones.
    let Some((_, action)) = actions
        .iter()
        .enumerate()
        .min_by_key(|(i, a)| (action_order(a).unwrap_or(u32::MAX), *i))
    else {
        return RouteAction::Unavailable;
    };
    match action {
        Action::Forward { target_groups, .. } => {
            let mut chosen = Vec::new();
            for weighted in target_groups {
                let weight = if target_groups.len() == 1 {
                    weighted.weight.max(1)
                } else {
                    weighted.weight
                };
                if weight == 0 {
                    continue;
                }
                if let Some(group) = groups.get(weighted.arn.as_str()) {
                    chosen.push((group.clone(), weight));
                }
            }
            let total_weight = chosen.iter().map(|(_, w)| *w).sum();
            if total_weight == 0 {
                return RouteAction::Unavailable;
            }
            RouteAction::Forward(Forward {
                groups: chosen,
                total_weight,
            })
        }
        Action::FixedResponse {
            status_code,
            content_type,
            message_body,
            ..
        } => RouteAction::Fixed(FixedResponse {
            status: StatusCode::from_u16(*status_code).unwrap_or(StatusCode::OK),
            content_type: content_type
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok()),
            body: Bytes::from(message_body.clone().unwrap_or_default()),
        }),
        Action::Redirect {
            protocol,
            host,
            port,
            path,
            query,
            status_code,
            ..
        } => RouteAction::Redirect(Redirect {
            status: if status_code == "HTTP_301" {
                StatusCode::MOVED_PERMANENTLY
            } else {
                StatusCode::FOUND
            },
            protocol: protocol.clone().unwrap_or_else(|| "#{protocol}".into()),
            host: host.clone().unwrap_or_else(|| "#{host}".into()),
            port: port.clone().unwrap_or_else(|| "#{port}".into()),
            path: path.clone().unwrap_or_else(|| "/#{path}".into()),
            query: query.clone().unwrap_or_else(|| "#{query}".into()),
        }),
    }
}

fn action_order(action: &Action) -> Option<u32> {
    match action {
        Action::Forward { order, .. }
        | Action::FixedResponse { order, .. }
        | Action::Redirect { order, .. } => *order,
    }
}

fn forwarded_arns(actions: &[Action]) -> impl Iterator<Item = &str> {
    actions.iter().flat_map(|a| match a {
        Action::Forward { target_groups, .. } => {
            target_groups.iter().map(|g| g.arn.as_str()).collect()
        }
        _ => Vec::new(),
    })
}

/// Builds a table from the records. `previous` holds the target states of the table
/// being replaced; a target seen for the first time starts from its stored health
/// record, if any (so that a restarted data plane keeps serving), else `initial`.
/// Returns the table and the states it uses. A health seeded as healthy is not in
/// slow start.
pub fn compile(
    records: &ElbRecords,
    revision: i64,
    previous: &TargetStates,
) -> (RouteTable, TargetStates) {
    // Which load balancer each listener belongs to, by ARN.
    let lbs: HashMap<&str, &LoadBalancerRecord> = records
        .load_balancers
        .values()
        .map(|lb| (lb.arn.as_str(), lb))
        .collect();
    let listeners: Vec<(&String, &ListenerRecord)> = records
        .listeners
        .iter()
        .filter(|(_, l)| lbs.contains_key(l.load_balancer_arn.as_str()))
        .filter(|(key, l)| {
            let served = l.protocol.eq_ignore_ascii_case("HTTP");
            if !served {
                tracing::warn!(key = %key, protocol = %l.protocol, "listener protocol not served");
            }
            served
        })
        .collect();
    let listener_arns: HashMap<&str, ()> = listeners
        .iter()
        .map(|(_, l)| (l.arn.as_str(), ()))
        .collect();
    let mut in_use: HashMap<&str, ()> = HashMap::new();
    for (_, l) in &listeners {
        for arn in forwarded_arns(&l.default_actions) {
            in_use.insert(arn, ());
        }
    }
    for rule in records.rules.values() {
        if listener_arns.contains_key(rule.listener_arn.as_str()) {
            for arn in forwarded_arns(&rule.actions) {
                in_use.insert(arn, ());
            }
        }
    }

    let mut states = TargetStates::new();
    let mut groups: HashMap<&str, Arc<TargetGroup>> = HashMap::new();
    for (tg_key, tg) in &records.target_groups {
        let Some(region) = key_region(tg_key) else {
            continue;
        };
        let prefix = crate::records::targets_prefix(region, &tg.name);
        let mut targets = Vec::new();
        for (key, target) in records.targets.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            let Ok(authority) = target.address.parse::<Authority>() else {
                tracing::warn!(key = %key, address = %target.address, "unusable target address");
                continue;
            };
            let health_key = crate::records::health_key(region, &tg.name, &target.id, target.port);
            let state = previous.get(key).cloned().unwrap_or_else(|| {
                let seeded = records
                    .health
                    .get(&health_key)
                    .map(|h| match h.state.as_str() {
                        "healthy" => HealthState::Healthy,
                        "unhealthy" => HealthState::Unhealthy,
                        _ => HealthState::Initial,
                    })
                    .unwrap_or(HealthState::Initial);
                Arc::new(TargetState::new(seeded, 0))
            });
            states.insert(key.clone(), state.clone());
            targets.push(Arc::new(Target {
                key: key.clone(),
                health_key,
                id: target.id.clone(),
                port: target.port,
                address: target.address.clone(),
                address_shared: Arc::from(target.address.as_str()),
                authority,
                draining: target.drain_until_ms.is_some(),
                state,
            }));
        }
        let algorithm = match tg
            .attributes
            .get("load_balancing.algorithm.type")
            .map(String::as_str)
        {
            Some("least_outstanding_requests") => Algorithm::LeastOutstandingRequests,
            _ => Algorithm::RoundRobin,
        };
        let slow_start = attribute_seconds(&tg.attributes, "slow_start.duration_seconds")
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let http2 = matches!(
            tg.protocol_version.to_ascii_uppercase().as_str(),
            "HTTP2" | "GRPC"
        );
        groups.insert(
            tg.arn.as_str(),
            Arc::new(TargetGroup {
                arn: tg.arn.clone(),
                name: tg.name.clone(),
                region: region.to_owned(),
                http2,
                algorithm,
                slow_start,
                health_check: tg.health_check.enabled.then(|| tg.health_check.clone()),
                in_use: in_use.contains_key(tg.arn.as_str()),
                targets,
                next: AtomicUsize::new(0),
            }),
        );
    }

    let mut rules_by_listener: HashMap<&str, Vec<&RuleRecord>> = HashMap::new();
    for rule in records.rules.values() {
        rules_by_listener
            .entry(rule.listener_arn.as_str())
            .or_default()
            .push(rule);
    }
    let mut table_listeners: HashMap<u16, Arc<ListenerRoutes>> = HashMap::new();
    for (key, listener) in listeners {
        if let Some(existing) = table_listeners.get(&listener.port) {
            tracing::warn!(
                key = %key,
                port = listener.port,
                served = %existing.arn,
                "two listeners on one port; the first is served"
            );
            continue;
        }
        let lb = lbs[listener.load_balancer_arn.as_str()];
        let idle_timeout = attribute_seconds(&lb.attributes, "idle_timeout.timeout_seconds")
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_IDLE_TIMEOUT);
        let mut rules: Vec<Rule> = rules_by_listener
            .get(listener.arn.as_str())
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| Rule {
                        arn: r.arn.clone(),
                        priority: r.priority,
                        conditions: r.conditions.iter().map(Matcher::compile).collect(),
                        action: compile_action(&r.actions, &groups),
                    })
                    .collect()
            })
            .unwrap_or_default();
        rules.sort_by_key(|r| r.priority);
        table_listeners.insert(
            listener.port,
            Arc::new(ListenerRoutes {
                arn: listener.arn.clone(),
                port: listener.port,
                load_balancer: lb.name.clone(),
                idle_timeout,
                port_header: HeaderValue::from(listener.port),
                rules,
                default_action: compile_action(&listener.default_actions, &groups),
            }),
        );
    }
    let mut target_groups: Vec<Arc<TargetGroup>> = groups.into_values().collect();
    target_groups.sort_by(|a, b| a.arn.cmp(&b.arn));
    (
        RouteTable {
            revision,
            listeners: table_listeners,
            target_groups,
        },
        states,
    )
}

/// A fast per-thread pseudo-random number for weighted and slow-start choices (not
/// for anything that needs unpredictability).
pub fn roll() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            (seed ^ (&seed as *const u64 as u64)) | 1
        });
    }
    STATE.with(|state| {
        // xorshift64*
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    })
}

#[cfg(test)]
mod tests;
