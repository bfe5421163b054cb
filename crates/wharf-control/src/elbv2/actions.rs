//! Listener and rule actions: forward (to one target group, or to several with
//! weights), fixed-response and redirect, read from the wire into
//! [`wharf_lb::records::Action`] and written back.
//!
//! An action list must end in exactly one of these; authentication actions are
//! refused (Wharf has no identity provider to send users to). Actions without an
//! `Order` get their position (1, 2, …) so that the data plane always sees an order.

use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;
use wharf_lb::records::{Action, WeightedTargetGroup};

use super::error::{validation, Elbv2Error};

/// An `Action` on the wire.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireAction {
    #[serde(rename = "Type")]
    action_type: String,
    target_group_arn: Option<String>,
    order: Option<u32>,
    redirect_config: Option<WireRedirect>,
    fixed_response_config: Option<WireFixedResponse>,
    forward_config: Option<WireForward>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireRedirect {
    protocol: Option<String>,
    port: Option<String>,
    host: Option<String>,
    path: Option<String>,
    query: Option<String>,
    status_code: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireFixedResponse {
    message_body: Option<String>,
    status_code: String,
    content_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireForward {
    #[serde(default)]
    target_groups: Vec<WireTuple>,
    target_group_stickiness_config: Option<WireStickiness>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireTuple {
    target_group_arn: Option<String>,
    weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireStickiness {
    enabled: Option<bool>,
    duration_seconds: Option<u32>,
}

const CONTENT_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "text/html",
    "application/javascript",
    "application/json",
];

fn parse_one(wire: &WireAction, position: usize) -> Result<Action, AwsError> {
    let order = Some(wire.order.unwrap_or(position as u32 + 1));
    match wire.action_type.as_str() {
        "forward" => {
            let mut target_groups: Vec<WeightedTargetGroup> = Vec::new();
            let mut stickiness_seconds = None;
            if let Some(fc) = &wire.forward_config {
                if fc.target_groups.len() > 5 {
                    return Err(Elbv2Error::TooManyActions(
                        "A forward action can have at most 5 target groups".into(),
                    )
                    .into());
                }
                for t in &fc.target_groups {
                    let Some(arn) = &t.target_group_arn else {
                        return Err(validation(
                            "Each target group of a forward action needs a TargetGroupArn",
                        ));
                    };
                    if target_groups.iter().any(|g| &g.arn == arn) {
                        return Err(validation(format!(
                            "Target group '{arn}' appears twice in one forward action"
                        )));
                    }
                    target_groups.push(WeightedTargetGroup {
                        arn: arn.clone(),
                        weight: t.weight.unwrap_or(1),
                    });
                }
                if let Some(s) = &fc.target_group_stickiness_config {
                    if s.enabled == Some(true) {
                        match s.duration_seconds {
                            Some(d) if (1..=604800).contains(&d) => stickiness_seconds = Some(d),
                            _ => {
                                return Err(validation(
                                    "Target group stickiness needs DurationSeconds between 1 and 604800",
                                ))
                            }
                        }
                    }
                }
            }
            match (&wire.target_group_arn, target_groups.as_slice()) {
                (Some(arn), []) => target_groups.push(WeightedTargetGroup {
                    arn: arn.clone(),
                    weight: 1,
                }),
                (Some(arn), [only]) if &only.arn == arn => {}
                (Some(_), _) => {
                    return Err(validation(
                        "TargetGroupArn and ForwardConfig must name the same single target group when both are given",
                    ))
                }
                (None, []) => {
                    return Err(validation(
                        "A forward action needs a TargetGroupArn or a ForwardConfig with target groups",
                    ))
                }
                (None, _) => {}
            }
            if target_groups.iter().all(|g| g.weight == 0) && target_groups.len() > 1 {
                return Err(validation(
                    "At least one target group weight must be above 0",
                ));
            }
            Ok(Action::Forward {
                order,
                target_groups,
                stickiness_seconds,
            })
        }
        "fixed-response" => {
            let Some(fr) = &wire.fixed_response_config else {
                return Err(validation(
                    "A fixed-response action needs a FixedResponseConfig",
                ));
            };
            let status_code = fr
                .status_code
                .parse::<u16>()
                .ok()
                .filter(|c| matches!(c / 100, 2 | 4 | 5) && fr.status_code.len() == 3)
                .ok_or_else(|| {
                    validation(format!(
                        "Fixed response status code '{}' must be 2XX, 4XX or 5XX",
                        fr.status_code
                    ))
                })?;
            if let Some(ct) = &fr.content_type {
                if !CONTENT_TYPES.contains(&ct.as_str()) {
                    return Err(validation(format!(
                        "Fixed response content type '{ct}' must be one of {}",
                        CONTENT_TYPES.join(", ")
                    )));
                }
            }
            if fr.message_body.as_ref().is_some_and(|b| b.len() > 1024) {
                return Err(validation(
                    "Fixed response message body is at most 1024 bytes",
                ));
            }
            Ok(Action::FixedResponse {
                order,
                status_code,
                content_type: fr.content_type.clone(),
                message_body: fr.message_body.clone(),
            })
        }
        "redirect" => {
            let Some(r) = &wire.redirect_config else {
                return Err(validation("A redirect action needs a RedirectConfig"));
            };
            let protocol = r.protocol.clone().unwrap_or_else(|| "#{protocol}".into());
            if !matches!(protocol.as_str(), "HTTP" | "HTTPS" | "#{protocol}") {
                return Err(validation(
                    "Redirect protocol must be HTTP, HTTPS or #{protocol}",
                ));
            }
            let path = r.path.clone().unwrap_or_else(|| "/#{path}".into());
            if !path.starts_with('/') {
                return Err(validation("Redirect path must begin with '/'"));
            }
            let port = r.port.clone().unwrap_or_else(|| "#{port}".into());
            if port != "#{port}" && !port.parse::<u16>().is_ok_and(|p| p >= 1) {
                return Err(validation(
                    "Redirect port must be #{port} or between 1 and 65535",
                ));
            }
            let host = r.host.clone().unwrap_or_else(|| "#{host}".into());
            let query = r.query.clone().unwrap_or_else(|| "#{query}".into());
            if protocol == "#{protocol}"
                && host == "#{host}"
                && port == "#{port}"
                && path == "/#{path}"
                && query == "#{query}"
            {
                return Err(Elbv2Error::InvalidLoadBalancerAction(
                    "A redirect must change at least one of protocol, host, port, path or query, or it would loop".into(),
                )
                .into());
            }
            Ok(Action::Redirect {
                order,
                protocol: Some(protocol),
                host: Some(host),
                port: Some(port),
                path: Some(path),
                query: Some(query),
                status_code: r.status_code.clone(),
            })
        }
        other => Err(Elbv2Error::InvalidLoadBalancerAction(format!(
            "Action type '{other}' is not supported by Wharf's load balancer"
        ))
        .into()),
    }
}

/// Reads and checks an action list.
pub(crate) fn parse_actions(wire: &[WireAction]) -> Result<Vec<Action>, AwsError> {
    if wire.is_empty() {
        return Err(validation("At least one action must be specified"));
    }
    let actions: Vec<Action> = wire
        .iter()
        .enumerate()
        .map(|(i, w)| parse_one(w, i))
        .collect::<Result<_, _>>()?;
    if actions.len() > 1 {
        return Err(Elbv2Error::TooManyActions(
            "Only one forward, redirect or fixed-response action can be specified".into(),
        )
        .into());
    }
    Ok(actions)
}

/// The `Action` wire shape.
pub(crate) fn to_wire(action: &Action) -> Value {
    match action {
        Action::Forward {
            order,
            target_groups,
            stickiness_seconds,
        } => {
            let mut v = json!({
                "Type": "forward",
                "Order": order,
                "ForwardConfig": {
                    "TargetGroups": target_groups.iter().map(|g| json!({"TargetGroupArn": g.arn, "Weight": g.weight})).collect::<Vec<_>>(),
                    "TargetGroupStickinessConfig": match stickiness_seconds {
                        Some(d) => json!({"Enabled": true, "DurationSeconds": d}),
                        None => json!({"Enabled": false}),
                    },
                },
            });
            if let [only] = target_groups.as_slice() {
                v["TargetGroupArn"] = json!(only.arn);
            }
            v
        }
        Action::FixedResponse {
            order,
            status_code,
            content_type,
            message_body,
        } => json!({
            "Type": "fixed-response",
            "Order": order,
            "FixedResponseConfig": {
                "StatusCode": status_code.to_string(),
                "ContentType": content_type,
                "MessageBody": message_body,
            },
        }),
        Action::Redirect {
            order,
            protocol,
            host,
            port,
            path,
            query,
            status_code,
        } => json!({
            "Type": "redirect",
            "Order": order,
            "RedirectConfig": {
                "Protocol": protocol,
                "Host": host,
                "Port": port,
                "Path": path,
                "Query": query,
                "StatusCode": status_code,
            },
        }),
    }
}

/// The wire shape of an action list.
pub(crate) fn list_to_wire(actions: &[Action]) -> Value {
    Value::Array(actions.iter().map(to_wire).collect())
}
