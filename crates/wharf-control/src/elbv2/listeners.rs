//! Listeners: CreateListener, DescribeListeners, ModifyListener, DeleteListener.
//!
//! A listener is a port the data plane serves for its load balancer, over HTTP.
//! Creating or moving one rewrites its load balancer's record unchanged, so that two
//! calls putting listeners on the same port of one load balancer are serialised and
//! the second sees the first (DuplicateListener).

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{listener_key, load_balancer_key, ListenerRecord};

use super::actions::{self, WireAction};
use super::arns;
use super::error::{validation, Elbv2Error};
use super::routing::{Routing, RoutingChange};
use super::tags::{tag_map, WireTag};
use super::{paging, resolve, Cx, Elbv2Service};
use crate::records::{encode, too_much_contention, MAX_CONFLICT_RETRIES};

/// ELBv2's quota of listeners per load balancer.
pub(crate) const MAX_LISTENERS: usize = 50;

/// The `Listener` wire shape.
pub(crate) fn to_wire(l: &ListenerRecord) -> Value {
    json!({
        "ListenerArn": l.arn,
        "LoadBalancerArn": l.load_balancer_arn,
        "Port": l.port,
        "Protocol": l.protocol,
        "DefaultActions": actions::list_to_wire(&l.default_actions),
    })
}

fn check_protocol(protocol: Option<&str>) -> Result<String, AwsError> {
    match protocol.unwrap_or("HTTP") {
        "HTTP" => Ok("HTTP".into()),
        other => Err(Elbv2Error::UnsupportedProtocol(format!(
            "Protocol '{other}' is not supported; Wharf's load balancer listens over HTTP"
        ))
        .into()),
    }
}

fn check_port(port: Option<i64>) -> Result<u16, AwsError> {
    match port {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Some(p) => Err(validation(format!("Port {p} must be between 1 and 65535"))),
        None => Err(validation("A listener port must be specified")),
    }
}

/// Refuses a port another load balancer already listens on, in any region: Wharf's
/// data plane serves every listener on one bind address, so a port can carry only one
/// listener there. (Two load balancers racing for one port are not serialised; the
/// data plane then serves the first and logs the other.)
async fn check_port_free(svc: &Elbv2Service, port: u16, own_lb_arn: &str) -> Result<(), AwsError> {
    let (kvs, _) = svc
        .records
        .store()
        .range("elbv2/")
        .await
        .map_err(crate::records::store_failure)?;
    for kv in kvs {
        if kv.key.split('/').nth(2) != Some("listener") {
            continue;
        }
        let Ok(l) = serde_json::from_slice::<ListenerRecord>(&kv.value) else {
            continue;
        };
        if l.port == port && l.load_balancer_arn != own_lb_arn {
            return Err(Elbv2Error::InvalidConfiguration(format!(
                "Port {port} is already served by a listener of '{}'; Wharf serves all listeners on one address, so each port carries one load balancer",
                l.load_balancer_arn
            ))
            .into());
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateListenerRequest {
    load_balancer_arn: String,
    protocol: Option<String>,
    port: Option<i64>,
    default_actions: Vec<WireAction>,
    #[serde(default)]
    certificates: Vec<Value>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeListenersRequest {
    load_balancer_arn: Option<String>,
    #[serde(default)]
    listener_arns: Vec<String>,
    marker: Option<String>,
    page_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ModifyListenerRequest {
    listener_arn: String,
    port: Option<i64>,
    protocol: Option<String>,
    default_actions: Option<Vec<WireAction>>,
    #[serde(default)]
    certificates: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListenerArnRequest {
    listener_arn: String,
}

impl Elbv2Service {
    pub(crate) async fn create_listener(
        &self,
        cx: &Cx<'_>,
        req: CreateListenerRequest,
    ) -> Result<Value, AwsError> {
        let protocol = check_protocol(req.protocol.as_deref())?;
        if !req.certificates.is_empty() {
            return Err(Elbv2Error::UnsupportedProtocol(
                "Certificates need an HTTPS listener, which Wharf does not serve".into(),
            )
            .into());
        }
        let port = check_port(req.port)?;
        let default_actions = actions::parse_actions(&req.default_actions)?;
        let tags = tag_map(&req.tags, false)?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let lb =
                resolve::load_balancer(&self.records, cx.region, &req.load_balancer_arn).await?;
            routing.check_targets(&lb.value.arn, &default_actions)?;
            let mine: Vec<&ListenerRecord> = routing
                .listeners
                .values()
                .map(|l| &l.value)
                .filter(|l| l.load_balancer_arn == lb.value.arn)
                .collect();
            if let Some(same) = mine.iter().find(|l| l.port == port) {
                if same.protocol == protocol && same.default_actions == default_actions {
                    return Ok(json!({"Listeners": [to_wire(same)]}));
                }
                return Err(Elbv2Error::DuplicateListener.into());
            }
            if mine.len() >= MAX_LISTENERS {
                return Err(AwsError::client(
                    "TooManyListeners",
                    format!("A load balancer can have at most {MAX_LISTENERS} listeners"),
                ));
            }
            check_port_free(self, port, &lb.value.arn).await?;
            let id = arns::new_id();
            let record = ListenerRecord {
                arn: arns::listener(&lb.value.arn, &id),
                load_balancer_arn: lb.value.arn.clone(),
                port,
                protocol: protocol.clone(),
                default_actions: default_actions.clone(),
                tags: tags.clone(),
            };
            let mut change = RoutingChange::default();
            change.listeners.insert(
                listener_key(cx.region, &lb.value.name, &id),
                Some(record.clone()),
            );
            let lb_key = load_balancer_key(cx.region, &lb.value.name);
            let txn = routing
                .transaction(&change)
                .when_mod_revision(&lb_key, lb.revision)
                .put(&lb_key, encode(&lb.value));
            if self.records.commit(txn).await? {
                return Ok(json!({"Listeners": [to_wire(&record)]}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn describe_listeners(
        &self,
        cx: &Cx<'_>,
        req: DescribeListenersRequest,
    ) -> Result<Value, AwsError> {
        let mut found: Vec<ListenerRecord> = Vec::new();
        if !req.listener_arns.is_empty() {
            if req.load_balancer_arn.is_some() {
                return Err(validation(
                    "Listener ARNs and a load balancer ARN cannot be specified at the same time",
                ));
            }
            for arn in &req.listener_arns {
                found.push(
                    resolve::listener(&self.records, cx.region, arn)
                        .await?
                        .1
                        .value,
                );
            }
        } else if let Some(arn) = &req.load_balancer_arn {
            let lb = resolve::load_balancer(&self.records, cx.region, arn).await?;
            found = self
                .records
                .list::<ListenerRecord>(&format!("elbv2/{}/listener/{}/", cx.region, lb.value.name))
                .await?
                .into_iter()
                .map(|v| v.value)
                .filter(|l| l.load_balancer_arn == lb.value.arn)
                .collect();
        } else {
            return Err(validation(
                "You must specify either listener ARNs or a load balancer ARN",
            ));
        }
        found.sort_by(|a, b| (a.port, &a.arn).cmp(&(b.port, &b.arn)));
        found.dedup_by(|a, b| a.arn == b.arn);
        let (page, next) = paging::page(
            found,
            |l| format!("{:05}/{}", l.port, l.arn),
            req.marker.as_deref(),
            req.page_size,
        )?;
        Ok(json!({
            "Listeners": page.iter().map(to_wire).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
    }

    pub(crate) async fn modify_listener(
        &self,
        cx: &Cx<'_>,
        req: ModifyListenerRequest,
    ) -> Result<Value, AwsError> {
        let protocol = match &req.protocol {
            Some(p) => Some(check_protocol(Some(p))?),
            None => None,
        };
        if !req.certificates.is_empty() {
            return Err(Elbv2Error::UnsupportedProtocol(
                "Certificates need an HTTPS listener, which Wharf does not serve".into(),
            )
            .into());
        }
        let port = match req.port {
            Some(p) => Some(check_port(Some(p))?),
            None => None,
        };
        let default_actions = match &req.default_actions {
            Some(a) => Some(actions::parse_actions(a)?),
            None => None,
        };
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let (key, listener) =
                resolve::listener(&self.records, cx.region, &req.listener_arn).await?;
            let lb =
                resolve::load_balancer(&self.records, cx.region, &listener.value.load_balancer_arn)
                    .await
                    .map_err(|_| {
                        AwsError::from(Elbv2Error::ListenerNotFound(format!(
                            "Listener '{}' not found",
                            req.listener_arn
                        )))
                    })?;
            let mut updated = listener.value.clone();
            if let Some(p) = &protocol {
                updated.protocol = p.clone();
            }
            if let Some(actions) = &default_actions {
                routing.check_targets(&lb.value.arn, actions)?;
                updated.default_actions = actions.clone();
            }
            if let Some(port) = port {
                let taken = routing.listeners.values().any(|l| {
                    l.value.load_balancer_arn == lb.value.arn
                        && l.value.port == port
                        && l.value.arn != updated.arn
                });
                if taken {
                    return Err(Elbv2Error::DuplicateListener.into());
                }
                check_port_free(self, port, &lb.value.arn).await?;
                updated.port = port;
            }
            let mut change = RoutingChange::default();
            change.listeners.insert(key, Some(updated.clone()));
            let lb_key = load_balancer_key(cx.region, &lb.value.name);
            let txn = routing
                .transaction(&change)
                .when_mod_revision(&lb_key, lb.revision)
                .put(&lb_key, encode(&lb.value));
            if self.records.commit(txn).await? {
                return Ok(json!({"Listeners": [to_wire(&updated)]}));
            }
        }
        Err(too_much_contention())
    }

    pub(crate) async fn delete_listener(
        &self,
        cx: &Cx<'_>,
        req: ListenerArnRequest,
    ) -> Result<Value, AwsError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let routing = Routing::read(&self.records, cx.region).await?;
            let (key, listener) =
                resolve::listener(&self.records, cx.region, &req.listener_arn).await?;
            let mut change = RoutingChange::default();
            change.listeners.insert(key, None);
            for (rule_key, _) in routing.rules_of(&listener.value.arn) {
                change.rules.insert(rule_key.clone(), None);
            }
            if self.records.commit(routing.transaction(&change)).await? {
                return Ok(json!({}));
            }
        }
        Err(too_much_contention())
    }
}
