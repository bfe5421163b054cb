//! Active health checks: one task per checked target, sending the target group's
//! check request every interval, turning results into ELBv2's states with its
//! thresholds, and writing a [`TargetHealthRecord`] to the store only when the state or
//! its reason changes.
//!
//! The state machine ([`HealthTracker`]) is pure; [`check_once`] does one request;
//! [`run_checker`] ties them to the clock and the store.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use wharf_store::{Compare, Op, Store, Txn};

use crate::records::{HealthCheck, TargetHealthRecord};
use crate::routing::{HealthState, TargetState};

/// The status codes a check accepts (ELBv2's matcher: `200`, `200,202`, `200-299`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher(Vec<RangeInclusive<u16>>);

impl StatusMatcher {
    /// Parses a matcher; an unreadable one means `200`.
    pub fn parse(text: &str) -> Self {
        let ranges: Option<Vec<RangeInclusive<u16>>> = text
            .split(',')
            .map(|part| {
                let part = part.trim();
                match part.split_once('-') {
                    Some((a, b)) => Some(a.trim().parse().ok()?..=b.trim().parse().ok()?),
                    None => {
                        let code = part.parse().ok()?;
                        Some(code..=code)
                    }
                }
            })
            .collect();
        match ranges {
            Some(r) if !r.is_empty() => StatusMatcher(r),
            _ => StatusMatcher(vec![200..=200]),
        }
    }
    /// Whether `status` passes.
    pub fn accepts(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The target answered with an accepted status.
    Passed,
    /// It answered with another status.
    WrongStatus(u16),
    /// It did not answer within the timeout.
    TimedOut,
    /// The connection failed or the answer was not HTTP.
    Failed(String),
}

impl CheckOutcome {
    fn reason(&self) -> (&'static str, String) {
        match self {
            CheckOutcome::Passed => ("", String::new()),
            CheckOutcome::WrongStatus(code) => (
                "Target.ResponseCodeMismatch",
                format!("Health checks failed with these codes: [{code}]"),
            ),
            CheckOutcome::TimedOut => ("Target.Timeout", "Request timed out".to_owned()),
            CheckOutcome::Failed(_) => (
                "Target.FailedHealthChecks",
                "Health checks failed".to_owned(),
            ),
        }
    }
}

/// A state and the reason ELBv2 gives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The state.
    pub state: HealthState,
    /// `Target.Timeout`, … (none when healthy).
    pub reason: Option<&'static str>,
    /// A sentence for humans.
    pub description: Option<String>,
}

/// ELBv2's health state machine with its thresholds: a new target becomes healthy on
/// its first passed check (as ALB does), unhealthy after `unhealthy_threshold` failed
/// checks in a row; a healthy target becomes unhealthy after `unhealthy_threshold`
/// failures in a row, an unhealthy one healthy after `healthy_threshold` passes in a
/// row.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    state: HealthState,
    passes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl HealthTracker {
    /// A tracker starting in `state`.
    pub fn new(state: HealthState, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            state,
            passes: 0,
            failures: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
        }
    }
    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }
    /// Takes one check's outcome; returns the new state and reason when the state
    /// changes.
    pub fn observe(&mut self, outcome: &CheckOutcome) -> Option<Observed> {
        if *outcome == CheckOutcome::Passed {
            self.passes += 1;
            self.failures = 0;
            let needed = match self.state {
                HealthState::Initial => 1,
                HealthState::Unhealthy => self.healthy_threshold,
                HealthState::Healthy => return None,
            };
            if self.passes >= needed {
                self.state = HealthState::Healthy;
                return Some(Observed {
                    state: HealthState::Healthy,
                    reason: None,
                    description: None,
                });
            }
            None
        } else {
            self.failures += 1;
            self.passes = 0;
            if self.state == HealthState::Unhealthy || self.failures < self.unhealthy_threshold {
                return None;
            }
            self.state = HealthState::Unhealthy;
            let (reason, description) = outcome.reason();
            Some(Observed {
                state: HealthState::Unhealthy,
                reason: Some(reason),
                description: Some(description),
            })
        }
    }
}

/// A client for health checks: no connection reuse (every check opens and closes its
/// own connection, as ALB's do).
pub type CheckClient = Client<HttpConnector, Empty<Bytes>>;

/// A health check client.
pub fn check_client() -> CheckClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// What a checker checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// The target's store key (the health record is written only while it exists).
    pub target_key: String,
    /// Where its health record goes.
    pub health_key: String,
    /// `host:port` the check connects to.
    pub address: String,
    /// The target group's check.
    pub check: HealthCheck,
}

impl CheckSpec {
    /// The check's URL: the target's address, or its host at the check port.
    pub fn url(&self) -> String {
        let address = if self.check.port == "traffic-port" || self.check.port.is_empty() {
            self.address.clone()
        } else {
            let host = match self.address.rsplit_once(':') {
                Some((host, _)) => host,
                None => &self.address,
            };
            format!("{host}:{}", self.check.port)
        };
        let path = if self.check.path.starts_with('/') {
            self.check.path.clone()
        } else {
            format!("/{}", self.check.path)
        };
        format!("http://{address}{path}")
    }
}

/// Sends one check request and judges the answer.
pub async fn check_once(client: &CheckClient, spec: &CheckSpec) -> CheckOutcome {
    let request = match http::Request::get(spec.url())
        .header(http::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(error) => return CheckOutcome::Failed(error.to_string()),
    };
    let timeout = Duration::from_secs(spec.check.timeout_seconds.max(1) as u64);
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => CheckOutcome::TimedOut,
        Ok(Err(error)) => CheckOutcome::Failed(error.to_string()),
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            if StatusMatcher::parse(&spec.check.matcher).accepts(status) {
                CheckOutcome::Passed
            } else {
                CheckOutcome::WrongStatus(status)
            }
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes a health record, provided the target is still registered (so that a record
/// deleted with its target is not written back).
async fn write_health(store: &dyn Store, spec: &CheckSpec, observed: &Observed) -> bool {
    let record = TargetHealthRecord {
        state: observed.state.as_str().to_owned(),
        reason: observed.reason.map(str::to_owned),
        description: observed.description.clone(),
        updated_ms: now_ms() as i64,
    };
    let Ok(value) = serde_json::to_vec(&record) else {
        return false;
    };
    let txn = Txn {
        compares: vec![Compare::Exists {
            key: spec.target_key.clone(),
        }],
        ops: vec![Op::Put {
            key: spec.health_key.clone(),
            value,
        }],
    };
    match store.txn(txn).await {
        Ok(outcome) => outcome.succeeded,
        Err(error) => {
            tracing::warn!(%error, key = %spec.health_key, "writing target health failed");
            false
        }
    }
}

/// Checks one target until the task is aborted: the first check at once, then every
/// interval. Publishes each change to `state` (which the request path reads) and to
/// the store. `stored` is the health record already in the store, if any; a record is
/// written only when the state differs from it.
pub async fn run_checker(
    store: Arc<dyn Store>,
    client: CheckClient,
    spec: CheckSpec,
    state: Arc<TargetState>,
    stored: Option<TargetHealthRecord>,
) {
    let mut tracker = HealthTracker::new(
        state.health(),
        spec.check.healthy_threshold,
        spec.check.unhealthy_threshold,
    );
    let mut written: Option<(String, Option<String>)> =
        stored.map(|record| (record.state, record.reason));
    let interval = Duration::from_secs(spec.check.interval_seconds.max(1) as u64);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = check_once(&client, &spec).await;
        tracing::trace!(target = %spec.address, ?outcome, "health check");
        let Some(observed) = tracker.observe(&outcome) else {
            // A seeded state that the store does not show yet (e.g. initial after a
            // restart) is not worth a write; only transitions are.
            continue;
        };
        state.set_health(observed.state, now_ms());
        tracing::info!(
            target = %spec.address,
            state = observed.state.as_str(),
            reason = observed.reason.unwrap_or(""),
            "target health changed"
        );
        let current = (
            observed.state.as_str().to_owned(),
            observed.reason.map(str::to_owned),
        );
        if written.as_ref() != Some(&current)
            && write_health(store.as_ref(), &spec, &observed).await
        {
            written = Some(current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_forms() {
        let m = StatusMatcher::parse("200,202");
        assert!(m.accepts(200) && m.accepts(202) && !m.accepts(201));
        let m = StatusMatcher::parse("200-299");
        assert!(m.accepts(204) && !m.accepts(300));
        let m = StatusMatcher::parse("junk");
        assert!(m.accepts(200) && !m.accepts(204));
    }

    #[test]
    fn initial_target_is_healthy_after_one_pass() {
        let mut t = HealthTracker::new(HealthState::Initial, 5, 2);
        let change = t.observe(&CheckOutcome::Passed).unwrap();
        assert_eq!(change.state, HealthState::Healthy);
        assert_eq!(change.reason, None);
        assert_eq!(t.observe(&CheckOutcome::Passed), None);
    }

    #[test]
    fn thresholds_govern_later_transitions() {
        let mut t = HealthTracker::new(HealthState::Healthy, 3, 2);
        assert_eq!(t.observe(&CheckOutcome::TimedOut), None);
        // A pass resets the failure streak.
        assert_eq!(t.observe(&CheckOutcome::Passed), None);
        assert_eq!(t.observe(&CheckOutcome::WrongStatus(500)), None);
        let down = t.observe(&CheckOutcome::WrongStatus(503)).unwrap();
        assert_eq!(down.state, HealthState::Unhealthy);
        assert_eq!(down.reason, Some("Target.ResponseCodeMismatch"));
        assert!(down.description.unwrap().contains("503"));
        assert_eq!(t.observe(&CheckOutcome::TimedOut), None);
        assert_eq!(t.observe(&CheckOutcome::Passed), None);
        assert_eq!(t.observe(&CheckOutcome::Passed), None);
        let up = t.observe(&CheckOutcome::Passed).unwrap();
        assert_eq!(up.state, HealthState::Healthy);
    }

    #[test]
    fn initial_target_becomes_unhealthy_after_the_threshold() {
        let mut t = HealthTracker::new(HealthState::Initial, 5, 3);
        assert_eq!(t.observe(&CheckOutcome::Failed("refused".into())), None);
        assert_eq!(t.observe(&CheckOutcome::Failed("refused".into())), None);
        let down = t.observe(&CheckOutcome::Failed("refused".into())).unwrap();
        assert_eq!(down.reason, Some("Target.FailedHealthChecks"));
        let down = HealthTracker::new(HealthState::Initial, 5, 1)
            .observe(&CheckOutcome::TimedOut)
            .unwrap();
        assert_eq!(down.reason, Some("Target.Timeout"));
    }

    #[test]
    fn check_url_uses_the_check_port_when_given() {
        let mut spec = CheckSpec {
            target_key: "k".into(),
            health_key: "h".into(),
            address: "10.0.0.1:8080".into(),
            check: HealthCheck {
                enabled: true,
                protocol: "HTTP".into(),
                port: "traffic-port".into(),
                path: "/health".into(),
                interval_seconds: 5,
                timeout_seconds: 2,
                healthy_threshold: 2,
                unhealthy_threshold: 2,
                matcher: "200".into(),
            },
        };
        assert_eq!(spec.url(), "http://10.0.0.1:8080/health");
        spec.check.port = "9000".into();
        assert_eq!(spec.url(), "http://10.0.0.1:9000/health");
    }
}
