//! ELBv2 ARNs: how they are built, and how a reference sent by a client resolves to
//! the store key of the record it names.
//!
//! `arn:aws:elasticloadbalancing:<region>:<account>:` followed by
//! `loadbalancer/app/<name>/<id>`, `targetgroup/<name>/<id>`,
//! `listener/app/<lb-name>/<lb-id>/<id>` or
//! `listener-rule/app/<lb-name>/<lb-id>/<listener-id>/<id>`. Ids are 16 hex digits.

use super::error::validation;
use wharf_aws::AwsError;

/// The resource an ELBv2 ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ElbResource {
    LoadBalancer {
        name: String,
    },
    TargetGroup {
        name: String,
    },
    Listener {
        lb_name: String,
        id: String,
    },
    Rule {
        lb_name: String,
        listener_id: String,
        id: String,
    },
}

/// A parsed ELBv2 ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElbArn {
    pub region: String,
    pub account: String,
    pub resource: ElbResource,
}

/// A fresh 16-hex-digit resource id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

fn prefix(region: &str, account: &str) -> String {
    format!("arn:aws:elasticloadbalancing:{region}:{account}:")
}

pub(crate) fn load_balancer(region: &str, account: &str, name: &str, id: &str) -> String {
    format!("{}loadbalancer/app/{name}/{id}", prefix(region, account))
}

pub(crate) fn target_group(region: &str, account: &str, name: &str, id: &str) -> String {
    format!("{}targetgroup/{name}/{id}", prefix(region, account))
}

/// A listener's ARN, from its load balancer's ARN.
pub(crate) fn listener(lb_arn: &str, id: &str) -> String {
    format!(
        "{}/{id}",
        lb_arn.replacen(":loadbalancer/", ":listener/", 1)
    )
}

/// A rule's ARN, from its listener's ARN.
pub(crate) fn rule(listener_arn: &str, id: &str) -> String {
    format!(
        "{}/{id}",
        listener_arn.replacen(":listener/", ":listener-rule/", 1)
    )
}

/// The id of a listener's default rule: derived from the listener's, so that it needs
/// no record of its own and never collides with a stored rule's (stored rule ids have
/// their first digit below 8, the default rule's at or above it).
pub(crate) fn default_rule_id(listener_id: &str) -> String {
    listener_id
        .chars()
        .enumerate()
        .map(|(i, c)| match (i, c.to_digit(16)) {
            (0, Some(d)) => char::from_digit((d % 8) + 8, 16).unwrap_or('f'),
            _ => c,
        })
        .collect()
}

/// A fresh id for a stored rule (first digit below 8, see [`default_rule_id`]).
pub(crate) fn new_rule_id() -> String {
    let id = new_id();
    default_rule_id(&id)
        .chars()
        .enumerate()
        .map(|(i, c)| match (i, c.to_digit(16)) {
            (0, Some(d)) => char::from_digit(d % 8, 16).unwrap_or('0'),
            _ => c,
        })
        .collect()
}

/// Whether a rule id is a default rule's.
pub(crate) fn is_default_rule_id(id: &str) -> bool {
    id.chars()
        .next()
        .and_then(|c| c.to_digit(16))
        .is_some_and(|d| d >= 8)
}

/// Parses an ELBv2 ARN; anything else is a `ValidationError`.
pub(crate) fn parse(arn: &str) -> Result<ElbArn, AwsError> {
    let bad = || validation(format!("'{arn}' is not a valid ARN"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6
        || parts[0] != "arn"
        || parts[2] != "elasticloadbalancing"
        || parts[3].is_empty()
    {
        return Err(bad());
    }
    let segs: Vec<&str> = parts[5].split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(bad());
    }
    let owned = |s: &str| s.to_owned();
    let resource = match segs.as_slice() {
        ["loadbalancer", "app", name, _id] => ElbResource::LoadBalancer { name: owned(name) },
        ["targetgroup", name, _id] => ElbResource::TargetGroup { name: owned(name) },
        ["listener", "app", lb, _lb_id, id] => ElbResource::Listener {
            lb_name: owned(lb),
            id: owned(id),
        },
        ["listener-rule", "app", lb, _lb_id, listener, id] => ElbResource::Rule {
            lb_name: owned(lb),
            listener_id: owned(listener),
            id: owned(id),
        },
        _ => return Err(bad()),
    };
    Ok(ElbArn {
        region: parts[3].to_owned(),
        account: parts[4].to_owned(),
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_round_trip() {
        let lb = load_balancer("us-east-1", "000000000000", "web", "0123456789abcdef");
        assert_eq!(
            lb,
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/0123456789abcdef"
        );
        let l = listener(&lb, "1111111111111111");
        let r = rule(&l, "2222222222222222");
        assert_eq!(
            parse(&r).unwrap().resource,
            ElbResource::Rule {
                lb_name: "web".into(),
                listener_id: "1111111111111111".into(),
                id: "2222222222222222".into()
            }
        );
        assert_eq!(
            parse(&l).unwrap().resource,
            ElbResource::Listener {
                lb_name: "web".into(),
                id: "1111111111111111".into()
            }
        );
        let tg = target_group("eu-west-1", "1", "tg", "abc");
        let p = parse(&tg).unwrap();
        assert_eq!(p.region, "eu-west-1");
        assert_eq!(p.resource, ElbResource::TargetGroup { name: "tg".into() });
        for bad in [
            "",
            "arn:aws:ecs:us-east-1:0:cluster/x",
            "arn:aws:elasticloadbalancing:us-east-1:0:loadbalancer/app//x",
            "arn:aws:elasticloadbalancing:us-east-1:0:thing/x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_rule_ids_never_collide_with_stored_ones() {
        for _ in 0..200 {
            let id = new_rule_id();
            assert!(!is_default_rule_id(&id), "{id}");
            assert_eq!(id.len(), 16);
            let d = default_rule_id(&new_id());
            assert!(is_default_rule_id(&d), "{d}");
        }
        assert_eq!(default_rule_id("0abc"), "8abc");
    }
}
