//! Repository policies on the ECR APIs: Set/Get/DeleteRepositoryPolicy, and the check
//! every call naming a repository passes before it runs.

use super::access::{judge, Verdict};
use super::{internal, invalid, EcrService};
use crate::policy::{parse_policy, Decision, Principal};
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_aws::AwsError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SetRepositoryPolicyRequest {
    repository_name: String,
    policy_text: String,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RepositoryPolicyRequest {
    repository_name: String,
}

/// Operations on the policy itself. The account root is never locked out of them,
/// whatever the policy says, so that a policy denying everyone can still be undone.
const POLICY_OPERATIONS: [&str; 3] = [
    "SetRepositoryPolicy",
    "GetRepositoryPolicy",
    "DeleteRepositoryPolicy",
];

/// Operations that name no repository and that every identity may call.
const ACCOUNT_OPERATIONS: [&str; 1] = ["GetAuthorizationToken"];

fn access_denied(message: String) -> AwsError {
    AwsError::client("AccessDeniedException", message)
}

fn policy_not_found(account: &str, repo: &str) -> AwsError {
    AwsError::client(
        "RepositoryPolicyNotFoundException",
        format!(
            "Repository policy does not exist for the repository with name '{repo}' in the registry with id '{account}'"
        ),
    )
}

/// The repositories a request names (`repositoryName`, `repositoryNames`, or the
/// repository of a `resourceArn`).
fn named_repositories(input: &Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(n) = input.get("repositoryName").and_then(Value::as_str) {
        names.push(n.to_string());
    }
    if let Some(list) = input.get("repositoryNames").and_then(Value::as_array) {
        names.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
    }
    if let Some(arn) = input.get("resourceArn").and_then(Value::as_str) {
        if let Some((_, name)) = arn.split_once(":repository/") {
            names.push(name.to_string());
        }
    }
    names
}

impl EcrService {
    /// Refuses a call the repository policy of a repository it names does not let
    /// `who` make (`AccessDeniedException`); calls naming no repository are for the
    /// registry's own account.
    pub(super) async fn authorize_call(
        &self,
        who: &Principal,
        operation: &str,
        input: &Value,
    ) -> Result<(), AwsError> {
        let own = matches!(who, Principal::Identity { account, .. } if *account == self.config.account_id);
        let root = *who == Principal::account_root(&self.config.account_id);
        if root && POLICY_OPERATIONS.contains(&operation) {
            return Ok(());
        }
        let names = named_repositories(input);
        if names.is_empty() || operation == "CreateRepository" {
            if own || ACCOUNT_OPERATIONS.contains(&operation) {
                return Ok(());
            }
            return Err(access_denied(format!(
                "User is not authorized to perform {operation} in the registry of account {}",
                self.config.account_id
            )));
        }
        for name in names {
            // A repository that does not exist (or is of the other door) is left to the
            // operation, which reports it as not found to its own account.
            let record = match self.meta.repository(&name).await.map_err(internal)? {
                Some((r, _)) if r.public == (self.door == super::Door::Public) => r,
                _ if own => continue,
                _ => {
                    return Err(access_denied(format!(
                        "User is not authorized to perform {operation} on repository {name}"
                    )))
                }
            };
            let resource = self.repository_arn(&name);
            if let Verdict::Refused(why) = judge(
                &record,
                &self.config.account_id,
                &resource,
                who,
                &[operation],
                false,
            ) {
                return Err(access_denied(why));
            }
        }
        Ok(())
    }

    pub(super) async fn set_repository_policy(
        &self,
        req: SetRepositoryPolicyRequest,
        who: &Principal,
    ) -> Result<Value, AwsError> {
        let policy = parse_policy(&req.policy_text).map_err(|e| invalid(e.to_string()))?;
        let set_action = format!(
            "{}:SetRepositoryPolicy",
            super::access::action_prefix(&crate::metadata::RepositoryRecord {
                public: self.door == super::Door::Public,
                ..Default::default()
            })
        );
        // As in ECR, a policy that would stop its author from setting the policy again
        // needs `force`.
        if !req.force && policy.decide(who, &set_action) == Decision::ExplicitDeny {
            return Err(invalid(
                "The policy would prevent you from setting a repository policy in the future; set force to true to apply it anyway",
            ));
        }
        let text = req.policy_text.clone();
        self.update_repository(&req.repository_name, |r| {
            r.policy = Some(text.clone());
            Ok(())
        })
        .await?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": req.repository_name,
            "policyText": req.policy_text,
        }))
    }

    pub(super) async fn get_repository_policy(
        &self,
        req: RepositoryPolicyRequest,
    ) -> Result<Value, AwsError> {
        let (record, _) = self.existing_repository(&req.repository_name).await?;
        let text = record
            .policy
            .ok_or_else(|| policy_not_found(&self.config.account_id, &req.repository_name))?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": req.repository_name,
            "policyText": text,
        }))
    }

    pub(super) async fn delete_repository_policy(
        &self,
        req: RepositoryPolicyRequest,
    ) -> Result<Value, AwsError> {
        let (record, _) = self.existing_repository(&req.repository_name).await?;
        let text = record
            .policy
            .ok_or_else(|| policy_not_found(&self.config.account_id, &req.repository_name))?;
        self.update_repository(&req.repository_name, |r| {
            r.policy = None;
            Ok(())
        })
        .await?;
        Ok(json!({
            "registryId": self.config.account_id,
            "repositoryName": req.repository_name,
            "policyText": text,
        }))
    }
}
