//! Repository policies: parsing the IAM-style JSON that SetRepositoryPolicy stores and
//! deciding, as a pure function, whether a principal may perform an `ecr:` action.
//!
//! The subset of the IAM policy language understood here is the one repository
//! policies use: `Version`, `Statement` (one object or a list), and per statement
//! `Sid`, `Effect` (`Allow`/`Deny`), `Principal` (`"*"`, or `{"AWS": …}` with `"*"`,
//! account ids, account root ARNs or principal ARNs; `Service` principals are accepted
//! and match no caller), and `Action`/`NotAction` with `*` wildcards, matched without
//! regard to case. `Condition` blocks are refused rather than ignored: ignoring one
//! would grant (or deny) more than the author wrote.
//!
//! Evaluation follows IAM's order: an explicit `Deny` that matches wins; otherwise a
//! matching `Allow` grants; otherwise the caller's own account decides, and in Wharf
//! every identity of the registry's own account holds full ECR permissions, so
//! principals of the owner account are allowed and every other principal (another
//! account, or an anonymous caller) is refused.

use serde_json::Value;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A caller with credentials: its IAM identity ARN and its account.
    Identity {
        /// e.g. `arn:aws:iam::000000000000:root`.
        arn: String,
        /// The account the identity belongs to.
        account: String,
    },
    /// No credentials (only public repositories let such a caller pull).
    Anonymous,
}

impl Principal {
    /// The root identity of `account`.
    pub fn account_root(account: &str) -> Self {
        Principal::Identity {
            arn: format!("arn:aws:iam::{account}:root"),
            account: account.to_string(),
        }
    }

    /// The account of an identity ARN (`arn:aws:iam::<account>:…`, or an STS ARN).
    pub fn from_arn(arn: &str) -> Self {
        let account = arn.split(':').nth(4).unwrap_or("").to_string();
        Principal::Identity {
            arn: arn.to_string(),
            account,
        }
    }
}

/// What a policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A `Deny` statement matched.
    ExplicitDeny,
    /// An `Allow` statement matched and no `Deny` did.
    Allow,
    /// No statement matched.
    NotMentioned,
}

/// Why a policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid repository policy provided: {0}")]
pub struct PolicyError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalPattern {
    Everyone,
    Account(String),
    Arn(String),
    /// A service principal: no Wharf caller is one.
    Service,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    deny: bool,
    principals: Vec<PrincipalPattern>,
    actions: Vec<String>,
    not_actions: bool,
}

/// A parsed repository policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryPolicy {
    statements: Vec<Statement>,
}

/// The policy text's longest accepted length (ECR's `RepositoryPolicyText` maximum).
pub const MAX_POLICY_LENGTH: usize = 10240;

fn strings(value: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PolicyError(format!("{what} must hold strings")))
            })
            .collect(),
        _ => Err(PolicyError(format!(
            "{what} must be a string or a non-empty list of strings"
        ))),
    }
}

fn principal_pattern(p: &str) -> Result<PrincipalPattern, PolicyError> {
    if p == "*" {
        return Ok(PrincipalPattern::Everyone);
    }
    if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(PrincipalPattern::Account(p.to_string()));
    }
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    if parts.len() == 6 && parts[0] == "arn" && (parts[2] == "iam" || parts[2] == "sts") {
        if parts[5] == "root" {
            return Ok(PrincipalPattern::Account(parts[4].to_string()));
        }
        return Ok(PrincipalPattern::Arn(p.to_string()));
    }
    Err(PolicyError(format!("invalid principal {p:?}")))
}

fn parse_principal(value: &Value) -> Result<Vec<PrincipalPattern>, PolicyError> {
    match value {
        Value::String(s) if s == "*" => Ok(vec![PrincipalPattern::Everyone]),
        Value::Object(map) if !map.is_empty() => {
            let mut out = Vec::new();
            for (kind, v) in map {
                match kind.as_str() {
                    "AWS" => {
                        for p in strings(v, "Principal.AWS")? {
                            out.push(principal_pattern(&p)?);
                        }
                    }
                    "Service" => {
                        strings(v, "Principal.Service")?;
                        out.push(PrincipalPattern::Service);
                    }
                    other => {
                        return Err(PolicyError(format!("unsupported principal type {other:?}")))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(PolicyError(
            "Principal must be \"*\" or an object such as {\"AWS\": …}".into(),
        )),
    }
}

fn parse_action(a: &str) -> Result<String, PolicyError> {
    let lower = a.to_ascii_lowercase();
    if lower == "*" || lower.starts_with("ecr:") || lower.starts_with("ecr-public:") {
        Ok(lower)
    } else {
        Err(PolicyError(format!(
            "invalid action {a:?}: repository policies name ecr: actions"
        )))
    }
}

fn parse_statement(value: &Value) -> Result<Statement, PolicyError> {
    let obj = value
        .as_object()
        .ok_or_else(|| PolicyError("each statement must be an object".into()))?;
    for key in obj.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "NotAction" | "Resource" => {}
            "Condition" => {
                return Err(PolicyError(
                    "Condition blocks are not supported by this registry".into(),
                ))
            }
            other => return Err(PolicyError(format!("unknown statement element {other:?}"))),
        }
    }
    if let Some(sid) = obj.get("Sid") {
        if !sid.is_string() {
            return Err(PolicyError("Sid must be a string".into()));
        }
    }
    let deny = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => false,
        Some("Deny") => true,
        _ => return Err(PolicyError("Effect must be \"Allow\" or \"Deny\"".into())),
    };
    let principals = parse_principal(
        obj.get("Principal")
            .ok_or_else(|| PolicyError("a statement needs a Principal".into()))?,
    )?;
    let (actions, not_actions) = match (obj.get("Action"), obj.get("NotAction")) {
        (Some(a), None) => (strings(a, "Action")?, false),
        (None, Some(a)) => (strings(a, "NotAction")?, true),
        _ => {
            return Err(PolicyError(
                "a statement needs exactly one of Action and NotAction".into(),
            ))
        }
    };
    let actions = actions
        .iter()
        .map(|a| parse_action(a))
        .collect::<Result<_, _>>()?;
    Ok(Statement {
        deny,
        principals,
        actions,
        not_actions,
    })
}

/// Parses a repository policy document.
pub fn parse_policy(text: &str) -> Result<RepositoryPolicy, PolicyError> {
    if text.len() > MAX_POLICY_LENGTH {
        return Err(PolicyError(format!(
            "the policy is longer than {MAX_POLICY_LENGTH} characters"
        )));
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| PolicyError(format!("not JSON: {e}")))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| PolicyError("the policy must be a JSON object".into()))?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(PolicyError(format!("unknown policy element {key:?}")));
        }
    }
    match obj.get("Version").and_then(Value::as_str) {
        None | Some("2012-10-17") | Some("2008-10-17") => {}
        Some(v) => return Err(PolicyError(format!("unsupported Version {v:?}"))),
    }
    let statements = match obj.get("Statement") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(parse_statement)
            .collect::<Result<_, _>>()?,
        Some(v @ Value::Object(_)) => vec![parse_statement(v)?],
        _ => {
            return Err(PolicyError(
                "Statement must be a statement or a non-empty list of them".into(),
            ))
        }
    };
    Ok(RepositoryPolicy { statements })
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters and
/// `?` for one character; both are compared in lower case.
fn action_matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.to_ascii_lowercase().as_bytes())
}

impl PrincipalPattern {
    fn matches(&self, who: &Principal) -> bool {
        match (self, who) {
            (PrincipalPattern::Everyone, _) => true,
            (PrincipalPattern::Account(a), Principal::Identity { account, .. }) => a == account,
            (PrincipalPattern::Arn(p), Principal::Identity { arn, .. }) => p == arn,
            _ => false,
        }
    }
}

impl Statement {
    fn applies(&self, who: &Principal, action: &str) -> bool {
        let named = self.actions.iter().any(|a| action_matches(a, action));
        (named != self.not_actions) && self.principals.iter().any(|p| p.matches(who))
    }
}

impl RepositoryPolicy {
    /// What the policy says about `who` performing `action` (e.g. `ecr:BatchGetImage`).
    pub fn decide(&self, who: &Principal, action: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.applies(who, action) {
                if s.deny {
                    return Decision::ExplicitDeny;
                }
                allowed = true;
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NotMentioned
        }
    }
}

/// Whether `who` may perform every one of `actions` on a repository of account
/// `owner` with `policy` (see the module documentation for the order of evaluation).
pub fn permits(
    policy: Option<&RepositoryPolicy>,
    owner: &str,
    who: &Principal,
    actions: &[&str],
) -> bool {
    let own = matches!(who, Principal::Identity { account, .. } if account == owner);
    actions.iter().all(|action| {
        match policy.map_or(Decision::NotMentioned, |p| p.decide(who, action)) {
            Decision::ExplicitDeny => false,
            Decision::Allow => true,
            Decision::NotMentioned => own,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OWNER: &str = "000000000000";

    fn root() -> Principal {
        Principal::account_root(OWNER)
    }
    fn bob() -> Principal {
        Principal::from_arn("arn:aws:iam::111111111111:user/bob")
    }

    fn policy(statements: Value) -> RepositoryPolicy {
        parse_policy(
            &serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
        )
        .unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        assert!(parse_policy("{").is_err());
        assert!(parse_policy("[]").is_err());
        assert!(parse_policy(r#"{"Statement": []}"#).is_err());
        for bad in [
            r#"{"Effect":"Maybe","Principal":"*","Action":"ecr:*"}"#,
            r#"{"Effect":"Allow","Action":"ecr:*"}"#,
            r#"{"Effect":"Allow","Principal":"*"}"#,
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}"#,
            r#"{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"ecr:*"}"#,
            r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{}}"#,
            r#"{"Effect":"Allow","Principal":"*","Action":[]}"#,
            r#"{"Effect":"Allow","Principal":"*","Action":"ecr:*","Bogus":1}"#,
        ] {
            let text = format!(r#"{{"Version":"2012-10-17","Statement":[{bad}]}}"#);
            assert!(parse_policy(&text).is_err(), "{bad}");
        }
        // One statement object instead of a list is fine.
        assert!(parse_policy(
            r#"{"Version":"2008-10-17","Statement":{"Sid":"x","Effect":"Deny","Principal":{"AWS":["*"]},"Action":"ecr:BatchGetImage"}}"#
        )
        .is_ok());
    }

    #[test]
    fn deny_beats_allow_and_wildcards_match() {
        let p = policy(serde_json::json!([
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:user/bob"}, "Action": "ecr:*"},
            {"Effect": "Deny", "Principal": "*", "Action": ["ecr:Batch*"]},
        ]));
        assert_eq!(
            p.decide(&bob(), "ecr:BatchGetImage"),
            Decision::ExplicitDeny
        );
        assert_eq!(p.decide(&bob(), "ecr:PutImage"), Decision::Allow);
        assert_eq!(p.decide(&root(), "ecr:PutImage"), Decision::NotMentioned);
        assert_eq!(
            p.decide(&root(), "ecr:batchdeleteimage"),
            Decision::ExplicitDeny
        );
        assert_eq!(
            p.decide(&Principal::Anonymous, "ecr:BatchGetImage"),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn permits_follows_iam_order() {
        let pull = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"];
        // No policy: the owner account only.
        assert!(permits(None, OWNER, &root(), &pull));
        assert!(!permits(None, OWNER, &bob(), &pull));
        assert!(!permits(None, OWNER, &Principal::Anonymous, &pull));
        // Bob's account is granted pulls only.
        let p = policy(serde_json::json!([
            {"Effect": "Allow", "Principal": {"AWS": "111111111111"}, "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]},
        ]));
        assert!(permits(Some(&p), OWNER, &bob(), &pull));
        assert!(!permits(Some(&p), OWNER, &bob(), &["ecr:PutImage"]));
        // A pull needs both actions.
        let half = policy(serde_json::json!([
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"}, "Action": "ecr:BatchGetImage"},
        ]));
        assert!(!permits(Some(&half), OWNER, &bob(), &pull));
        // NotAction: everything but deletes is allowed to bob.
        let not = policy(serde_json::json!([
            {"Effect": "Allow", "Principal": {"AWS": "111111111111"}, "NotAction": "ecr:BatchDeleteImage"},
        ]));
        assert!(permits(Some(&not), OWNER, &bob(), &pull));
        assert!(!permits(
            Some(&not),
            OWNER,
            &bob(),
            &["ecr:BatchDeleteImage"]
        ));
        // A Deny on everyone stops the owner too.
        let deny = policy(serde_json::json!([
            {"Effect": "Deny", "Principal": "*", "Action": "ecr:PutImage"},
        ]));
        assert!(!permits(Some(&deny), OWNER, &root(), &["ecr:PutImage"]));
        assert!(permits(Some(&deny), OWNER, &root(), &pull));
    }

    proptest! {
        #[test]
        fn star_matches_every_action_and_literal_only_itself(action in "[A-Za-z]{1,20}") {
            let full = format!("ecr:{action}");
            prop_assert!(action_matches("ecr:*", &full));
            prop_assert!(action_matches("*", &full));
            prop_assert!(action_matches(&full.to_ascii_lowercase(), &full));
            let other = format!("ecr:{action}x").to_ascii_lowercase();
            prop_assert!(!action_matches(&other, &full));
        }

        #[test]
        fn parse_never_panics(text in ".{0,200}") {
            let _ = parse_policy(&text);
        }
    }
}
