//! ECR lifecycle policies: the policy document, its pure evaluation ([`evaluate`]), the
//! operations PutLifecyclePolicy, GetLifecyclePolicy, DeleteLifecyclePolicy,
//! StartLifecyclePolicyPreview and GetLifecyclePolicyPreview, and
//! [`EcrService::apply_lifecycle_policies`], which expires images (meant to be called on
//! a schedule by `wharf up`).
//!
//! Evaluation follows ECR's documented rules:
//!
//! - rules are applied in ascending `rulePriority`;
//! - each rule selects images by tag status and its prefix or pattern list (an image
//!   is selected when *every* prefix/pattern matches at least one of its tags);
//! - a rule decides what it would expire over *all* the images it selects, including
//!   images selected by higher-priority rules ("rules can still identify them as if
//!   they haven't been expired"): `imageCountMoreThan` keeps the newest N by push time,
//!   `sinceImagePushed` expires images pushed more than N days ago;
//! - but an image is expired by at most one rule, and never by a rule of lower priority
//!   than one whose selection (tagging requirements) it matched.
//!
//! Records: `registry/r/<repo>@lifecycle/policy` and `registry/r/<repo>@lifecycle/preview`,
//! so deleting the repository deletes them too.

use super::{epoch_seconds, internal, invalid, page, EcrService};
use crate::error::RegistryError;
use crate::metadata::wildcard_match;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use wharf_aws::AwsError;
use wharf_store::{Revision, Txn};

/// Milliseconds in a day (`countUnit: days`).
const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;
/// ECR allows at most four `*` wildcards in one `tagPatternList` entry.
const MAX_WILDCARDS: usize = 4;

/// Which images a rule considers by their tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSelection {
    /// Tagged images whose tags match every prefix (each prefix matching some tag).
    TaggedPrefixes(Vec<String>),
    /// Tagged images whose tags match every `*` pattern (each matching some tag).
    TaggedPatterns(Vec<String>),
    /// Images without tags.
    Untagged,
    /// Every image.
    Any,
}

/// What a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountRule {
    /// Keep the newest N selected images (by push time); expire the rest.
    ImageCountMoreThan(u64),
    /// Expire selected images pushed more than N days ago.
    SinceImagePushedDays(u64),
}

/// One validated rule of a lifecycle policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRule {
    /// `rulePriority`: lower is applied first.
    pub priority: i64,
    /// `selection.tagStatus` with its prefix or pattern list.
    pub selection: TagSelection,
    /// `selection.countType`, `countUnit` and `countNumber`.
    pub count: CountRule,
}

/// A validated lifecycle policy, rules in ascending priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// The rules, sorted by priority.
    pub rules: Vec<LifecycleRule>,
}

/// An image as lifecycle evaluation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleImage {
    /// The manifest digest.
    pub digest: String,
    /// The tags pointing at it.
    pub tags: Vec<String>,
    /// When it was pushed (Unix milliseconds).
    pub pushed_at: i64,
}

/// An image a policy expires, and the priority of the rule that expires it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiration {
    /// The manifest digest.
    pub digest: String,
    /// The `rulePriority` of the rule that expires it.
    pub rule_priority: i64,
}

/// The wire form of a policy, before validation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyWire {
    rules: Option<Vec<RuleWire>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleWire {
    rule_priority: Option<i64>,
    #[allow(dead_code)]
    description: Option<String>,
    selection: Option<SelectionWire>,
    action: Option<ActionWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectionWire {
    tag_status: Option<String>,
    tag_prefix_list: Option<Vec<String>>,
    tag_pattern_list: Option<Vec<String>>,
    count_type: Option<String>,
    count_unit: Option<String>,
    count_number: Option<i64>,
    storage_class: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ActionWire {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Parses and validates a lifecycle policy document; the error is the reason it is
/// invalid (ECR answers `InvalidParameterException`).
pub fn parse_policy(text: &str) -> Result<LifecyclePolicy, String> {
    let wire: PolicyWire =
        serde_json::from_str(text).map_err(|e| format!("the policy is not valid JSON: {e}"))?;
    let rules = wire.rules.ok_or("the policy has no 'rules'")?;
    if rules.is_empty() {
        return Err("the policy must have at least one rule".into());
    }
    let mut out = Vec::new();
    for rule in rules {
        out.push(parse_rule(rule)?);
    }
    out.sort_by_key(|r| r.priority);
    if out.windows(2).any(|w| w[0].priority == w[1].priority) {
        return Err("rulePriority values must be unique".into());
    }
    if let Some(i) = out
        .iter()
        .position(|r| r.selection == TagSelection::Any)
        .filter(|i| i + 1 != out.len())
    {
        return Err(format!(
            "the rule with tagStatus 'any' (rulePriority {}) must have the highest rulePriority",
            out[i].priority
        ));
    }
    if out
        .iter()
        .filter(|r| r.selection == TagSelection::Any)
        .count()
        > 1
    {
        return Err("only one rule may have tagStatus 'any'".into());
    }
    if out
        .iter()
        .filter(|r| r.selection == TagSelection::Untagged)
        .count()
        > 1
    {
        return Err("only one rule may select untagged images".into());
    }
    Ok(LifecyclePolicy { rules: out })
}

fn parse_rule(rule: RuleWire) -> Result<LifecycleRule, String> {
    let priority = rule
        .rule_priority
        .ok_or("every rule needs a 'rulePriority'")?;
    if priority < 1 {
        return Err(format!("rulePriority {priority} must be at least 1"));
    }
    let ctx = |m: &str| format!("rule {priority}: {m}");
    let sel = rule
        .selection
        .ok_or_else(|| ctx("'selection' is required"))?;
    match rule.action.and_then(|a| a.kind).as_deref() {
        Some("expire") => {}
        Some(other) => return Err(ctx(&format!("action type '{other}' is not supported"))),
        None => return Err(ctx("'action.type' is required")),
    }
    if sel.storage_class.is_some() {
        return Err(ctx("'storageClass' is not supported"));
    }
    let selection = match sel.tag_status.as_deref() {
        Some("tagged") => match (sel.tag_prefix_list, sel.tag_pattern_list) {
            (Some(p), None) if !p.is_empty() => TagSelection::TaggedPrefixes(p),
            (None, Some(p)) if !p.is_empty() => {
                if let Some(bad) = p.iter().find(|p| p.matches('*').count() > MAX_WILDCARDS) {
                    return Err(ctx(&format!(
                        "tag pattern '{bad}' has more than {MAX_WILDCARDS} wildcards"
                    )));
                }
                TagSelection::TaggedPatterns(p)
            }
            (Some(_), Some(_)) => {
                return Err(ctx(
                    "specify only one of 'tagPrefixList' and 'tagPatternList'",
                ))
            }
            _ => {
                return Err(ctx(
                    "tagStatus 'tagged' needs a non-empty 'tagPrefixList' or 'tagPatternList'",
                ))
            }
        },
        Some(status @ ("untagged" | "any")) => {
            if sel.tag_prefix_list.is_some() || sel.tag_pattern_list.is_some() {
                return Err(ctx(&format!(
                    "tagStatus '{status}' takes no 'tagPrefixList' or 'tagPatternList'"
                )));
            }
            if status == "any" {
                TagSelection::Any
            } else {
                TagSelection::Untagged
            }
        }
        Some(other) => return Err(ctx(&format!("tagStatus '{other}' is not valid"))),
        None => return Err(ctx("'selection.tagStatus' is required")),
    };
    let number = sel
        .count_number
        .ok_or_else(|| ctx("'countNumber' is required"))?;
    if number < 1 {
        return Err(ctx("'countNumber' must be at least 1"));
    }
    let number = number as u64;
    let count = match sel.count_type.as_deref() {
        Some("imageCountMoreThan") => {
            if sel.count_unit.is_some() {
                return Err(ctx("'countUnit' is not allowed with imageCountMoreThan"));
            }
            CountRule::ImageCountMoreThan(number)
        }
        Some("sinceImagePushed") => {
            match sel.count_unit.as_deref() {
                Some("days") => {}
                Some(other) => return Err(ctx(&format!("countUnit '{other}' is not valid"))),
                None => return Err(ctx("'countUnit' is required with sinceImagePushed")),
            }
            CountRule::SinceImagePushedDays(number)
        }
        Some(other) => return Err(ctx(&format!("countType '{other}' is not supported"))),
        None => return Err(ctx("'countType' is required")),
    };
    Ok(LifecycleRule {
        priority,
        selection,
        count,
    })
}

impl TagSelection {
    /// Whether an image with `tags` meets these tagging requirements.
    pub fn selects(&self, tags: &[String]) -> bool {
        match self {
            TagSelection::Any => true,
            TagSelection::Untagged => tags.is_empty(),
            TagSelection::TaggedPrefixes(prefixes) => prefixes
                .iter()
                .all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
            TagSelection::TaggedPatterns(patterns) => patterns
                .iter()
                .all(|p| tags.iter().any(|t| wildcard_match(p, t))),
        }
    }
}

/// The images `policy` expires among `images` at `now_millis`, oldest first, each with
/// the priority of the one rule that expires it. Pure: no I/O, time passed in.
pub fn evaluate(
    policy: &LifecyclePolicy,
    images: &[LifecycleImage],
    now_millis: i64,
) -> Vec<Expiration> {
    // Newest first; ties broken by digest so the outcome is deterministic.
    let mut order: Vec<&LifecycleImage> = images.iter().collect();
    order.sort_by(|a, b| {
        b.pushed_at
            .cmp(&a.pushed_at)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut expired: Vec<(&LifecycleImage, i64)> = Vec::new();
    for rule in &policy.rules {
        let selected: Vec<&LifecycleImage> = order
            .iter()
            .copied()
            .filter(|i| rule.selection.selects(&i.tags))
            .collect();
        let candidates: Vec<&LifecycleImage> = match rule.count {
            CountRule::ImageCountMoreThan(n) => selected
                .iter()
                .copied()
                .skip(usize::try_from(n).unwrap_or(usize::MAX))
                .collect(),
            CountRule::SinceImagePushedDays(days) => {
                let limit = i64::try_from(days)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(DAY_MILLIS);
                selected
                    .iter()
                    .copied()
                    .filter(|i| now_millis.saturating_sub(i.pushed_at) > limit)
                    .collect()
            }
        };
        for image in candidates {
            if !claimed.contains(image.digest.as_str()) {
                expired.push((image, rule.priority));
            }
        }
        claimed.extend(selected.iter().map(|i| i.digest.as_str()));
    }
    expired.sort_by(|(a, _), (b, _)| {
        a.pushed_at
            .cmp(&b.pushed_at)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    expired
        .into_iter()
        .map(|(i, p)| Expiration {
            digest: i.digest.clone(),
            rule_priority: p,
        })
        .collect()
}

/// What [`EcrService::apply_lifecycle_policies`] did to one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRun {
    /// The repository.
    pub repository: String,
    /// The images expired (deleted, with their tags).
    pub expired: Vec<Expiration>,
}

/// The stored policy of a repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PolicyRecord {
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_evaluated_at: Option<i64>,
}

/// A stored preview: the images it would expire, as they were then.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreviewRecord {
    text: String,
    results: Vec<PreviewEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreviewEntry {
    digest: String,
    tags: Vec<String>,
    pushed_at: i64,
    rule_priority: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutLifecyclePolicyRequest {
    repository_name: String,
    lifecycle_policy_text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RepositoryRequest {
    repository_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StartPreviewRequest {
    repository_name: String,
    lifecycle_policy_text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PreviewFilter {
    tag_status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PreviewImageId {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GetPreviewRequest {
    repository_name: String,
    image_ids: Option<Vec<PreviewImageId>>,
    next_token: Option<String>,
    max_results: Option<usize>,
    filter: Option<PreviewFilter>,
}

fn policy_key(repo: &str) -> String {
    format!("registry/r/{repo}@lifecycle/policy")
}

fn preview_key(repo: &str) -> String {
    format!("registry/r/{repo}@lifecycle/preview")
}

fn policy_not_found(account: &str, repo: &str) -> AwsError {
    AwsError::client(
        "LifecyclePolicyNotFoundException",
        format!(
            "Lifecycle policy does not exist for the repository with name '{repo}' in the registry with id '{account}'"
        ),
    )
}

fn checked_policy(text: &str) -> Result<LifecyclePolicy, AwsError> {
    parse_policy(text).map_err(|reason| {
        invalid(format!(
            "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: {reason}'"
        ))
    })
}

impl EcrService {
    async fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, RegistryError> {
        match self.meta.store().get(key).await? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(Some)
                .map_err(|e| RegistryError::Internal(format!("corrupt record {key}: {e}"))),
        }
    }

    /// Writes a record of `repo` if the repository record is still at `repo_rev` and,
    /// when `own_rev` is given, the record itself is still at that revision; `false`
    /// when either changed meanwhile.
    async fn write_record<T: Serialize>(
        &self,
        repo: &str,
        repo_rev: Revision,
        key: &str,
        own_rev: Option<Revision>,
        value: &T,
    ) -> Result<bool, RegistryError> {
        let bytes = serde_json::to_vec(value).expect("records serialize");
        let mut txn = Txn::new().when_mod_revision(format!("registry/repos/{repo}"), repo_rev);
        if let Some(rev) = own_rev {
            txn = txn.when_mod_revision(key, rev);
        }
        Ok(self.meta.store().txn(txn.put(key, bytes)).await?.succeeded)
    }

    /// Writes a record of `repo`, or answers that the repository is gone (or changed
    /// meanwhile: the caller may retry).
    async fn write_answer<T: Serialize>(
        &self,
        repo: &str,
        repo_rev: Revision,
        key: &str,
        value: &T,
    ) -> Result<(), AwsError> {
        if self
            .write_record(repo, repo_rev, key, None, value)
            .await
            .map_err(internal)?
        {
            Ok(())
        } else {
            Err(AwsError::server(
                "ServerException",
                format!("The repository '{repo}' changed during the request; retry it"),
            ))
        }
    }

    /// The images of `repo` as lifecycle evaluation sees them.
    async fn lifecycle_images(&self, repo: &str) -> Result<Vec<LifecycleImage>, RegistryError> {
        let tags = self.meta.tag_targets(repo).await?;
        Ok(self
            .meta
            .manifests(repo)
            .await?
            .into_iter()
            .map(|(digest, record)| {
                let digest = digest.to_string();
                LifecycleImage {
                    tags: tags
                        .iter()
                        .filter(|(_, d)| *d == digest)
                        .map(|(t, _)| t.clone())
                        .collect(),
                    digest,
                    pushed_at: record.pushed_at.unwrap_or(0),
                }
            })
            .collect())
    }

    fn policy_answer(&self, repo: &str, record: &PolicyRecord) -> Value {
        json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "lifecyclePolicyText": record.text,
            "lastEvaluatedAt": record.last_evaluated_at.map(epoch_seconds),
        })
    }

    pub(super) async fn put_lifecycle_policy(
        &self,
        req: PutLifecyclePolicyRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let (_, repo_rev) = self.existing_repository(repo).await?;
        checked_policy(&req.lifecycle_policy_text)?;
        let record = PolicyRecord {
            text: req.lifecycle_policy_text,
            last_evaluated_at: None,
        };
        self.write_answer(repo, repo_rev, &policy_key(repo), &record)
            .await?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "lifecyclePolicyText": record.text,
        }))
    }

    async fn stored_policy(&self, repo: &str) -> Result<PolicyRecord, AwsError> {
        self.existing_repository(repo).await?;
        self.read_record::<PolicyRecord>(&policy_key(repo))
            .await
            .map_err(internal)?
            .ok_or_else(|| policy_not_found(&self.config.account_id, repo))
    }

    pub(super) async fn get_lifecycle_policy(
        &self,
        req: RepositoryRequest,
    ) -> Result<Value, AwsError> {
        let record = self.stored_policy(&req.repository_name).await?;
        Ok(self.policy_answer(&req.repository_name, &record))
    }

    pub(super) async fn delete_lifecycle_policy(
        &self,
        req: RepositoryRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let record = self.stored_policy(repo).await?;
        self.meta
            .store()
            .txn(Txn::new().delete(policy_key(repo)))
            .await
            .map_err(|e| internal(e.into()))?;
        Ok(self.policy_answer(repo, &record))
    }

    pub(super) async fn start_lifecycle_policy_preview(
        &self,
        req: StartPreviewRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        let (_, repo_rev) = self.existing_repository(repo).await?;
        let text = match req.lifecycle_policy_text {
            Some(text) => text,
            None => self.stored_policy(repo).await?.text,
        };
        let policy = checked_policy(&text)?;
        let images = self.lifecycle_images(repo).await.map_err(internal)?;
        let now = self.meta.now_millis();
        let results = evaluate(&policy, &images, now)
            .into_iter()
            .map(|e| {
                let image = images
                    .iter()
                    .find(|i| i.digest == e.digest)
                    .expect("evaluate returns given images");
                PreviewEntry {
                    digest: e.digest,
                    tags: image.tags.clone(),
                    pushed_at: image.pushed_at,
                    rule_priority: e.rule_priority,
                }
            })
            .collect();
        let record = PreviewRecord { text, results };
        self.write_answer(repo, repo_rev, &preview_key(repo), &record)
            .await?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "lifecyclePolicyText": record.text,
            "status": "COMPLETE",
        }))
    }

    pub(super) async fn get_lifecycle_policy_preview(
        &self,
        req: GetPreviewRequest,
    ) -> Result<Value, AwsError> {
        let repo = &req.repository_name;
        self.existing_repository(repo).await?;
        let record = self
            .read_record::<PreviewRecord>(&preview_key(repo))
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                AwsError::client(
                    "LifecyclePolicyPreviewNotFoundException",
                    format!(
                        "There is no lifecycle policy preview for the repository with name '{repo}' in the registry with id '{}'",
                        self.config.account_id
                    ),
                )
            })?;
        let total = record.results.len();
        let status = req
            .filter
            .as_ref()
            .and_then(|f| f.tag_status.as_deref())
            .unwrap_or("ANY");
        let mut entries: Vec<&PreviewEntry> = record
            .results
            .iter()
            .filter(|e| match status {
                "TAGGED" => !e.tags.is_empty(),
                "UNTAGGED" => e.tags.is_empty(),
                _ => true,
            })
            .collect();
        let next = if let Some(ids) = &req.image_ids {
            if req.next_token.is_some() || req.max_results.is_some() {
                return Err(invalid(
                    "maxResults and nextToken cannot be used with imageIds",
                ));
            }
            entries.retain(|e| {
                ids.iter().any(|id| {
                    id.image_digest.as_deref().is_none_or(|d| d == e.digest)
                        && id
                            .image_tag
                            .as_deref()
                            .is_none_or(|t| e.tags.iter().any(|x| x == t))
                        && (id.image_digest.is_some() || id.image_tag.is_some())
                })
            });
            None
        } else {
            let (p, next) = page(entries, req.next_token.as_deref(), req.max_results)?;
            entries = p;
            next
        };
        let results: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "imageDigest": e.digest,
                    "imageTags": if e.tags.is_empty() { Value::Null } else { json!(e.tags) },
                    "imagePushedAt": epoch_seconds(e.pushed_at),
                    "action": {"type": "EXPIRE"},
                    "appliedRulePriority": e.rule_priority,
                })
            })
            .collect();
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": repo,
            "lifecyclePolicyText": record.text,
            "status": "COMPLETE",
            "previewResults": results,
            "nextToken": next,
            "summary": {"expiringImageTotalCount": total},
        }))
    }

    /// Applies every repository's lifecycle policy at `now_millis` (Unix milliseconds):
    /// the images a policy expires are deleted with their tags, as BatchDeleteImage by
    /// digest does, and the policy's `lastEvaluatedAt` becomes `now_millis`.
    /// Repositories without a policy are left alone; a stored policy that no longer
    /// parses is skipped with a warning. Meant to be called on a schedule (`wharf up`).
    pub async fn apply_lifecycle_policies(
        &self,
        now_millis: i64,
    ) -> Result<Vec<LifecycleRun>, RegistryError> {
        let mut runs = Vec::new();
        for repo in self.meta.repositories().await? {
            let key = policy_key(&repo);
            let Some(kv) = self.meta.store().get(&key).await? else {
                continue;
            };
            let mut record: PolicyRecord = serde_json::from_slice(&kv.value)
                .map_err(|e| RegistryError::Internal(format!("corrupt record {key}: {e}")))?;
            let policy = match parse_policy(&record.text) {
                Ok(p) => p,
                Err(reason) => {
                    tracing::warn!(repository = %repo, %reason, "skipping an invalid lifecycle policy");
                    continue;
                }
            };
            let images = self.lifecycle_images(&repo).await?;
            let expired = evaluate(&policy, &images, now_millis);
            for e in &expired {
                let digest = e
                    .digest
                    .parse()
                    .map_err(|e| RegistryError::Internal(format!("corrupt digest: {e}")))?;
                self.meta.delete_manifest(&repo, &digest).await?;
            }
            // Only if neither the repository nor its policy changed meanwhile: a deleted
            // repository's policy is not resurrected, a replaced policy not reverted.
            if let Some((_, repo_rev)) = self.meta.repository(&repo).await? {
                record.last_evaluated_at = Some(now_millis);
                self.write_record(&repo, repo_rev, &key, Some(kv.mod_revision), &record)
                    .await?;
            }
            runs.push(LifecycleRun {
                repository: repo,
                expired,
            });
        }
        Ok(runs)
    }
}

/// Applies every repository's lifecycle policy every `period` until `shutdown` turns
/// true, as ECR does on its own schedule (ECR promises within 24 hours).
pub fn spawn_lifecycle_schedule(
    ecr: std::sync::Arc<EcrService>,
    period: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match ecr.apply_lifecycle_policies(ecr.meta.now_millis()).await {
                Ok(runs) => {
                    for run in runs.iter().filter(|r| !r.expired.is_empty()) {
                        tracing::info!(
                            repository = %run.repository,
                            images = run.expired.len(),
                            "lifecycle policy expired images"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "lifecycle evaluation failed"),
            }
        }
    });
}
