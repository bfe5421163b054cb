//! Account settings: ListAccountSettings, PutAccountSetting, PutAccountSettingDefault,
//! DeleteAccountSetting.
//!
//! A setting's effective value for a principal is its own, else the account default,
//! else ECS's built-in default.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_aws::AwsError;

use super::{invalid, keys, paging, Cx, EcsService};

/// Each setting ECS knows, its built-in default, and the values it takes.
const SETTINGS: &[(&str, &str, &[&str])] = &[
    ("serviceLongArnFormat", "enabled", &["enabled", "disabled"]),
    ("taskLongArnFormat", "enabled", &["enabled", "disabled"]),
    (
        "containerInstanceLongArnFormat",
        "enabled",
        &["enabled", "disabled"],
    ),
    ("awsvpcTrunking", "disabled", &["enabled", "disabled"]),
    (
        "containerInsights",
        "disabled",
        &["enabled", "disabled", "enhanced"],
    ),
    ("fargateFIPSMode", "disabled", &["enabled", "disabled"]),
    ("tagResourceAuthorization", "on", &["on", "off"]),
    ("fargateTaskRetirementWaitPeriod", "7", &["0", "7", "14"]),
    ("guardDutyActivate", "off", &["on", "off"]),
    (
        "defaultLogDriverMode",
        "blocking",
        &["blocking", "non-blocking"],
    ),
];

/// The key under which account-wide defaults are stored, in place of a principal.
const ACCOUNT_DEFAULT: &str = "account-default";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettingRecord {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutAccountSettingRequest {
    name: String,
    value: String,
    principal_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteAccountSettingRequest {
    name: String,
    principal_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListAccountSettingsRequest {
    name: Option<String>,
    value: Option<String>,
    principal_arn: Option<String>,
    effective_settings: Option<bool>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

fn setting_spec(
    name: &str,
) -> Result<&'static (&'static str, &'static str, &'static [&'static str]), AwsError> {
    SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| invalid(format!("Invalid account setting name: {name}")))
}

fn root_arn(cx: &Cx<'_>) -> String {
    format!("arn:aws:iam::{}:root", cx.account)
}

/// Principal ARNs are stored with `/` replaced so that they form one key segment.
fn principal_segment(principal: &str) -> String {
    principal.replace('/', "|")
}

impl EcsService {
    pub(crate) async fn put_account_setting(
        &self,
        cx: &Cx<'_>,
        req: PutAccountSettingRequest,
        account_default: bool,
    ) -> Result<Value, AwsError> {
        let (name, _, values) = setting_spec(&req.name)?;
        if !values.contains(&req.value.as_str()) {
            return Err(invalid(format!(
                "Invalid value {} for setting {name}; valid values are {}.",
                req.value,
                values.join(", ")
            )));
        }
        let principal = if account_default {
            ACCOUNT_DEFAULT.to_owned()
        } else {
            req.principal_arn.clone().unwrap_or_else(|| root_arn(cx))
        };
        let key = keys::account_setting(cx.region, &principal_segment(&principal), name);
        let record = SettingRecord {
            name: (*name).to_owned(),
            value: req.value.clone(),
        };
        // Last writer wins, as in ECS: a setting has no revision the caller could name.
        let current = self.records.get::<SettingRecord>(&key).await?;
        let expected = current.map(|c| c.revision).unwrap_or(0);
        if !self.records.put_if(&key, &record, expected).await? {
            return Err(crate::records::too_much_contention());
        }
        let principal_arn = if account_default {
            root_arn(cx)
        } else {
            principal
        };
        Ok(
            json!({"setting": {"name": name, "value": req.value, "principalArn": principal_arn, "type": "user"}}),
        )
    }

    pub(crate) async fn delete_account_setting(
        &self,
        cx: &Cx<'_>,
        req: DeleteAccountSettingRequest,
    ) -> Result<Value, AwsError> {
        let (name, default, _) = setting_spec(&req.name)?;
        let principal = req.principal_arn.clone().unwrap_or_else(|| root_arn(cx));
        let key = keys::account_setting(cx.region, &principal_segment(&principal), name);
        if let Some(current) = self.records.get::<SettingRecord>(&key).await? {
            let txn = wharf_store::Txn::new()
                .when_mod_revision(&key, current.revision)
                .delete(&key);
            self.records.commit(txn).await?;
        }
        Ok(
            json!({"setting": {"name": name, "value": default, "principalArn": principal, "type": "aws_managed"}}),
        )
    }

    pub(crate) async fn list_account_settings(
        &self,
        cx: &Cx<'_>,
        req: ListAccountSettingsRequest,
    ) -> Result<Value, AwsError> {
        if let Some(name) = &req.name {
            setting_spec(name)?;
        }
        if req.value.is_some() && req.name.is_none() {
            return Err(invalid(
                "The name parameter must be specified when value is.",
            ));
        }
        let principal = req.principal_arn.clone().unwrap_or_else(|| root_arn(cx));
        let own_prefix = keys::account_setting(cx.region, &principal_segment(&principal), "");
        let default_prefix = keys::account_setting(cx.region, ACCOUNT_DEFAULT, "");
        let mut out = Vec::new();
        for (name, default, _) in SETTINGS {
            if req.name.as_deref().is_some_and(|n| n != *name) {
                continue;
            }
            let own = self
                .records
                .get::<SettingRecord>(&format!("{own_prefix}{name}"))
                .await?
                .map(|r| r.value.value);
            let account = self
                .records
                .get::<SettingRecord>(&format!("{default_prefix}{name}"))
                .await?
                .map(|r| r.value.value);
            let (value, kind) = match (own, account, req.effective_settings.unwrap_or(false)) {
                (Some(v), _, _) => (v, "user"),
                (None, Some(v), true) => (v, "user"),
                (None, None, true) => ((*default).to_owned(), "aws_managed"),
                (None, _, false) => continue,
            };
            if req.value.as_ref().is_some_and(|v| *v != value) {
                continue;
            }
            out.push(
                json!({"name": name, "value": value, "principalArn": principal, "type": kind}),
            );
        }
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let (page, next) = paging::page(
            out,
            |v| v["name"].as_str().unwrap_or("").to_owned(),
            req.next_token.as_deref(),
            req.max_results,
            10,
        )?;
        Ok(json!({"settings": page, "nextToken": next}))
    }
}
