//! What forwards where: a consistent read of a region's target groups, listeners and
//! rules, and the transaction that applies a change to listeners and rules while
//! keeping every target group's `load_balancer_arns` equal to the set of load
//! balancers whose listeners or rules forward to it.
//!
//! Target groups are read before listeners and rules, and every change rewrites each
//! group it references (before or after the change) under a compare on the revision
//! read. So a concurrent change that touched the same group either committed before
//! the group was read (and the scan that follows sees it) or fails this transaction's
//! compare; either way the recomputed list is right.

use std::collections::{BTreeMap, BTreeSet};

use wharf_aws::AwsError;
use wharf_lb::records::{target_group_key, Action, ListenerRecord, RuleRecord, TargetGroupRecord};
use wharf_store::Txn;

use super::error::Elbv2Error;
use crate::records::{encode, Records, Versioned};

/// A region's routing records, as read for one change.
pub(crate) struct Routing {
    region: String,
    /// Target groups by ARN.
    pub tgs: BTreeMap<String, Versioned<TargetGroupRecord>>,
    /// Listeners by key.
    pub listeners: BTreeMap<String, Versioned<ListenerRecord>>,
    /// Rules by key.
    pub rules: BTreeMap<String, Versioned<RuleRecord>>,
}

/// A change to listeners and rules: each key's new record, or `None` to delete it.
#[derive(Default)]
pub(crate) struct RoutingChange {
    pub listeners: BTreeMap<String, Option<ListenerRecord>>,
    pub rules: BTreeMap<String, Option<RuleRecord>>,
}

/// The target groups an action list forwards to.
pub(crate) fn forwarded(actions: &[Action]) -> impl Iterator<Item = &str> {
    actions.iter().flat_map(|a| match a {
        Action::Forward { target_groups, .. } => target_groups
            .iter()
            .map(|t| t.arn.as_str())
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    })
}

impl Routing {
    /// Reads the region's target groups, then its listeners and rules.
    pub async fn read(records: &Records, region: &str) -> Result<Self, AwsError> {
        let tgs = records
            .list::<TargetGroupRecord>(&format!("elbv2/{region}/tg/"))
            .await?
            .into_iter()
            .map(|tg| (tg.value.arn.clone(), tg))
            .collect();
        let listeners = list_keyed(records, &format!("elbv2/{region}/listener/")).await?;
        let rules = list_keyed(records, &format!("elbv2/{region}/rule/")).await?;
        Ok(Routing {
            region: region.to_owned(),
            tgs,
            listeners,
            rules,
        })
    }

    /// The rules of one listener.
    pub fn rules_of<'a>(
        &'a self,
        listener_arn: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Versioned<RuleRecord>)> + 'a {
        self.rules
            .iter()
            .filter(move |(_, r)| r.value.listener_arn == listener_arn)
    }

    /// Checks that every target group `actions` forward to exists and may be used by
    /// the load balancer `lb_arn` (an application load balancer's target group serves
    /// one load balancer).
    pub fn check_targets(&self, lb_arn: &str, actions: &[Action]) -> Result<(), AwsError> {
        for arn in forwarded(actions) {
            let Some(tg) = self.tgs.get(arn) else {
                return Err(Elbv2Error::TargetGroupNotFound(format!(
                    "Target group '{arn}' not found"
                ))
                .into());
            };
            if tg.value.load_balancer_arns.iter().any(|l| l != lb_arn) {
                return Err(Elbv2Error::TargetGroupAssociationLimit(arn.to_owned()).into());
            }
        }
        Ok(())
    }

    /// The transaction that applies `change`, guarded by the revision of every record
    /// it replaces or deletes (and the absence of every record it creates), with each
    /// touched target group rewritten with its recomputed `load_balancer_arns`.
    pub fn transaction(&self, change: &RoutingChange) -> Txn {
        let mut txn = Txn::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut listeners: BTreeMap<&str, &ListenerRecord> = self
            .listeners
            .iter()
            .map(|(k, v)| (k.as_str(), &v.value))
            .collect();
        let mut rules: BTreeMap<&str, &RuleRecord> = self
            .rules
            .iter()
            .map(|(k, v)| (k.as_str(), &v.value))
            .collect();
        // Where each listener belongs, before and after (rules of a deleted listener
        // are deleted with it, but their old references still count as touched).
        let mut lb_of_listener: BTreeMap<String, String> = self
            .listeners
            .values()
            .map(|l| (l.value.arn.clone(), l.value.load_balancer_arn.clone()))
            .collect();
        for (key, new) in &change.listeners {
            let old = self.listeners.get(key);
            txn = txn.when_mod_revision(key, old.map_or(0, |o| o.revision));
            if let Some(o) = old {
                touched.extend(forwarded(&o.value.default_actions).map(str::to_owned));
            }
            match new {
                Some(n) => {
                    touched.extend(forwarded(&n.default_actions).map(str::to_owned));
                    lb_of_listener.insert(n.arn.clone(), n.load_balancer_arn.clone());
                    txn = txn.put(key, encode(n));
                    listeners.insert(key, n);
                }
                None => {
                    txn = txn.delete(key);
                    listeners.remove(key.as_str());
                }
            }
        }
        for (key, new) in &change.rules {
            let old = self.rules.get(key);
            txn = txn.when_mod_revision(key, old.map_or(0, |o| o.revision));
            if let Some(o) = old {
                touched.extend(forwarded(&o.value.actions).map(str::to_owned));
            }
            match new {
                Some(n) => {
                    touched.extend(forwarded(&n.actions).map(str::to_owned));
                    txn = txn.put(key, encode(n));
                    rules.insert(key, n);
                }
                None => {
                    txn = txn.delete(key);
                    rules.remove(key.as_str());
                }
            }
        }
        let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for l in listeners.values() {
            for tg in forwarded(&l.default_actions) {
                users.entry(tg).or_default().insert(&l.load_balancer_arn);
            }
        }
        for r in rules.values() {
            let Some(lb) = lb_of_listener.get(&r.listener_arn) else {
                continue;
            };
            for tg in forwarded(&r.actions) {
                users.entry(tg).or_default().insert(lb);
            }
        }
        for arn in touched {
            let Some(tg) = self.tgs.get(&arn) else {
                continue;
            };
            let key = target_group_key(&self.region, &tg.value.name);
            let mut updated = tg.value.clone();
            updated.load_balancer_arns = users
                .get(arn.as_str())
                .map(|s| s.iter().map(|a| (*a).to_owned()).collect())
                .unwrap_or_default();
            txn = txn
                .when_mod_revision(&key, tg.revision)
                .put(&key, encode(&updated));
        }
        txn
    }
}

async fn list_keyed<T: serde::de::DeserializeOwned>(
    records: &Records,
    prefix: &str,
) -> Result<BTreeMap<String, Versioned<T>>, AwsError> {
    let (kvs, _) = records
        .store()
        .range(prefix)
        .await
        .map_err(crate::records::store_failure)?;
    let mut out = BTreeMap::new();
    for kv in kvs {
        let value = serde_json::from_slice(&kv.value).map_err(|err| {
            tracing::error!(key = %kv.key, error = %err, "undecodable record");
            AwsError::server("ServerException", "A stored record could not be read.")
        })?;
        out.insert(
            kv.key,
            Versioned {
                value,
                revision: kv.mod_revision,
            },
        );
    }
    Ok(out)
}
