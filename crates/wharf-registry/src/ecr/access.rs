//! Who may do what, on both doors: the registry's [`RegistryAuth`] for ECR
//! ([`EcrRegistryAuth`]), the token endpoint of the Docker token flow
//! ([`token_router`]), the access-key → identity mapping ([`Identities`]) and the
//! repository-policy check the ECR APIs run on every call.
//!
//! The OCI side challenges with `Bearer realm="http://<registry>/token"`: Docker asks
//! the realm for a token, sending `AWS:<password>` from `docker login` when it has one
//! and nothing otherwise. A valid password comes back as the bearer token (it is
//! already a secret with an expiry in the store, so nothing new is written); a caller
//! without credentials gets the fixed [`ANONYMOUS_TOKEN`], which carries no identity
//! and is only good for pulls from public repositories. Basic credentials sent straight
//! to `/v2/` keep working too.
//!
//! Every request for a repository is then checked against the repository: anonymous
//! callers may pull from public repositories only; identities are judged by the
//! repository's policy ([`crate::policy`]), under which an explicit `Deny` refuses
//! even the owner account (`DENIED`, 403), and an `Allow` may admit other accounts.

use crate::auth::{basic_password, Action, AuthChallenge, RegistryAuth};
use crate::ecr::EcrTokens;
use crate::metadata::{Metadata, RepositoryRecord};
use crate::policy::{parse_policy, permits, Decision, Principal};
use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The bearer token handed to callers without credentials.
pub const ANONYMOUS_TOKEN: &str = "anonymous";

/// The path of the token endpoint on the registry listener.
pub const TOKEN_PATH: &str = "/token";

/// Which IAM identity each access key is. A key not listed acts for the root of the
/// account it belongs to (`arn:aws:iam::<account>:root`), which is what `wharf up`'s
/// root key is.
#[derive(Debug, Default)]
pub struct Identities {
    by_key: RwLock<HashMap<String, String>>,
}

impl Identities {
    /// Records that `access_key_id` is the identity `arn`.
    pub fn insert(&self, access_key_id: impl Into<String>, arn: impl Into<String>) {
        self.by_key
            .write()
            .expect("identities lock")
            .insert(access_key_id.into(), arn.into());
    }

    /// The identity of a verified caller.
    pub fn principal(&self, access_key_id: &str, account_id: &str) -> Principal {
        match self
            .by_key
            .read()
            .expect("identities lock")
            .get(access_key_id)
        {
            Some(arn) => Principal::from_arn(arn),
            None => Principal::account_root(account_id),
        }
    }
}

/// The IAM action namespace of a repository's door.
pub(crate) fn action_prefix(record: &RepositoryRecord) -> &'static str {
    if record.public {
        "ecr-public"
    } else {
        "ecr"
    }
}

/// The ECR actions a registry request performs.
fn ecr_actions(action: Action) -> &'static [&'static str] {
    match action {
        Action::Pull => &["BatchGetImage", "GetDownloadUrlForLayer"],
        Action::Push => &[
            "PutImage",
            "InitiateLayerUpload",
            "UploadLayerPart",
            "CompleteLayerUpload",
            "BatchCheckLayerAvailability",
        ],
        Action::Delete => &["BatchDeleteImage"],
    }
}

/// The outcome of checking a principal against a repository.
pub(crate) enum Verdict {
    Allowed,
    /// Refused; the text names the action refused.
    Refused(String),
}

/// Whether `who` may perform `actions` (names without prefix) on the repository
/// `record` of account `owner`. Pulls from a public repository are open to everyone
/// a policy does not explicitly deny.
pub(crate) fn judge(
    record: &RepositoryRecord,
    owner: &str,
    resource: &str,
    who: &Principal,
    actions: &[&str],
    open_to_all: bool,
) -> Verdict {
    let prefix = action_prefix(record);
    let qualified: Vec<String> = actions.iter().map(|a| format!("{prefix}:{a}")).collect();
    let qualified: Vec<&str> = qualified.iter().map(String::as_str).collect();
    let policy = match record.policy.as_deref().map(parse_policy) {
        None => None,
        Some(Ok(p)) => Some(p),
        // Only valid policies are stored; a record that no longer parses admits the
        // owner account alone.
        Some(Err(_)) => {
            return if matches!(who, Principal::Identity { account, .. } if account == owner) {
                Verdict::Allowed
            } else {
                Verdict::Refused(qualified.join(", "))
            }
        }
    };
    let who_text = match who {
        Principal::Identity { arn, .. } => arn.as_str(),
        Principal::Anonymous => "anonymous",
    };
    let refused = |action: &str, why: &str| {
        Verdict::Refused(format!(
            "User: {who_text} is not authorized to perform: {action} on resource: {resource}{why}"
        ))
    };
    if open_to_all {
        for action in &qualified {
            if policy.as_ref().map(|p| p.decide(who, action)) == Some(Decision::ExplicitDeny) {
                return refused(action, " with an explicit deny in a resource-based policy");
            }
        }
        return Verdict::Allowed;
    }
    for action in &qualified {
        if !permits(policy.as_ref(), owner, who, &[action]) {
            let why =
                if policy.as_ref().map(|p| p.decide(who, action)) == Some(Decision::ExplicitDeny) {
                    " with an explicit deny in a resource-based policy"
                } else {
                    " because no resource-based policy allows the action"
                };
            return refused(action, why);
        }
    }
    Verdict::Allowed
}

/// The registry's access check for ECR (see the module documentation).
pub struct EcrRegistryAuth {
    tokens: Arc<EcrTokens>,
    meta: Metadata,
    account_id: String,
    region: String,
    challenge: String,
}

impl EcrRegistryAuth {
    /// Checks tokens from `tokens` against the repositories in `meta`; the challenge
    /// points Docker at the token endpoint of `registry_addr`.
    pub fn new(
        tokens: Arc<EcrTokens>,
        meta: Metadata,
        account_id: &str,
        region: &str,
        registry_addr: &str,
    ) -> Self {
        let addr = registry_addr.replace(['"', '\\'], "");
        Self {
            tokens,
            meta,
            account_id: account_id.to_string(),
            region: region.to_string(),
            challenge: format!("Bearer realm=\"http://{addr}{TOKEN_PATH}\",service=\"{addr}\""),
        }
    }

    fn unauthenticated(&self) -> AuthChallenge {
        AuthChallenge::Unauthenticated(self.challenge.clone())
    }

    /// The caller of a request; `Err` when it presented credentials that are not valid.
    async fn caller(&self, headers: &HeaderMap) -> Result<Principal, AuthChallenge> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Principal::Anonymous);
        };
        let password = match value.to_str().ok().and_then(|v| v.trim().split_once(' ')) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                let token = token.trim();
                if token == ANONYMOUS_TOKEN {
                    return Ok(Principal::Anonymous);
                }
                token.to_string()
            }
            _ => basic_password(headers, crate::auth::BasicTokens::USER)
                .ok_or_else(|| self.unauthenticated())?,
        };
        match self.tokens.holder(&password).await {
            Some(Some(arn)) => Ok(Principal::from_arn(&arn)),
            Some(None) => Ok(Principal::account_root(&self.account_id)),
            None => Err(self.unauthenticated()),
        }
    }

    fn resource(&self, repo: &str, record: &RepositoryRecord) -> String {
        if record.public {
            format!("arn:aws:ecr-public::{}:repository/{repo}", self.account_id)
        } else {
            format!(
                "arn:aws:ecr:{}:{}:repository/{repo}",
                self.region, self.account_id
            )
        }
    }
}

#[async_trait]
impl RegistryAuth for EcrRegistryAuth {
    async fn authorize(
        &self,
        headers: &HeaderMap,
        repository: Option<&str>,
        action: Action,
    ) -> Result<(), AuthChallenge> {
        let who = self.caller(headers).await?;
        let Some(repo) = repository else {
            // The `/v2/` probe and the catalog: any valid identity; anonymous callers
            // are challenged so that clients log in or fetch a token.
            return match who {
                Principal::Anonymous => Err(self.unauthenticated()),
                Principal::Identity { .. } => Ok(()),
            };
        };
        let record = match self.meta.repository(repo).await {
            Ok(Some((record, _))) => record,
            // A missing repository: the owner's requests go on to NAME_UNKNOWN; nobody
            // else learns whether it exists.
            Ok(None) => {
                return match &who {
                    Principal::Identity { account, .. } if *account == self.account_id => Ok(()),
                    Principal::Identity { .. } => Err(AuthChallenge::Denied(format!(
                        "access to repository {repo} is denied"
                    ))),
                    Principal::Anonymous => Err(self.unauthenticated()),
                };
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a repository for authorization failed");
                return Err(AuthChallenge::Denied(
                    "the registry could not check access".into(),
                ));
            }
        };
        let open = record.public && action == Action::Pull;
        let resource = self.resource(repo, &record);
        match judge(
            &record,
            &self.account_id,
            &resource,
            &who,
            ecr_actions(action),
            open,
        ) {
            Verdict::Allowed => Ok(()),
            // An anonymous caller is asked to authenticate rather than told no.
            Verdict::Refused(_) if who == Principal::Anonymous => Err(self.unauthenticated()),
            Verdict::Refused(why) => Err(AuthChallenge::Denied(why)),
        }
    }
}

#[derive(Clone)]
struct TokenState {
    tokens: Arc<EcrTokens>,
}

/// The Docker token endpoint ([`TOKEN_PATH`]): `GET` with optional Basic credentials
/// (and the OAuth2 password grant as `POST`), answering `{"token", "access_token",
/// "expires_in"}`.
pub fn token_router(tokens: Arc<EcrTokens>) -> Router {
    Router::new()
        .route(TOKEN_PATH, get(get_token).post(post_token))
        .with_state(TokenState { tokens })
}

/// How long a token is announced to last; Docker asks again when it runs out.
const ANNOUNCED_SECONDS: u64 = 300;

fn token_response(token: &str) -> Response {
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": ANNOUNCED_SECONDS,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn token_refused() -> Response {
    let body = serde_json::json!({"errors": [{
        "code": "UNAUTHORIZED",
        "message": "authentication required",
        "detail": "the password is not a valid, unexpired registry token",
    }]});
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn issue_for_password(state: &TokenState, password: Option<String>) -> Response {
    match password {
        None => token_response(ANONYMOUS_TOKEN),
        Some(p) if state.tokens.holder(&p).await.is_some() => token_response(&p),
        Some(_) => token_refused(),
    }
}

async fn get_token(State(state): State<TokenState>, headers: HeaderMap) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        return match basic_password(&headers, crate::auth::BasicTokens::USER) {
            Some(p) => issue_for_password(&state, Some(p)).await,
            None => token_refused(),
        };
    }
    issue_for_password(&state, None).await
}

async fn post_token(
    State(state): State<TokenState>,
    Query(_): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    match form.get("grant_type").map(String::as_str) {
        Some("password") if form.get("username").map(String::as_str) == Some("AWS") => {
            issue_for_password(&state, form.get("password").cloned()).await
        }
        // A refresh token is a password issued earlier.
        Some("refresh_token") => {
            issue_for_password(&state, form.get("refresh_token").cloned()).await
        }
        _ => token_refused(),
    }
}
