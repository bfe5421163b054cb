//! The authorization hook the router consults on every request.

use async_trait::async_trait;
use base64::Engine as _;
use http::HeaderMap;
use std::sync::Arc;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reads (manifests, blobs, tags, referrers, catalog, the `/v2/` probe).
    Pull,
    /// Writes (uploads, mounts, manifest puts).
    Push,
    /// Deletes (manifests, tags, blobs).
    Delete,
}

/// A refusal: the router answers 401 with `WWW-Authenticate` (no or bad credentials)
/// or 403 (authenticated but not allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChallenge {
    /// No credentials or credentials refused; the value is the full challenge, e.g.
    /// `Basic realm="wharf"`.
    Unauthenticated(String),
    /// Known caller without the permission.
    Denied(String),
}

/// Decides whether a request may proceed. `repository` is `None` for the `/v2/` probe
/// and the catalog.
#[async_trait]
pub trait RegistryAuth: Send + Sync + 'static {
    /// `Ok(())` to let the request through.
    async fn authorize(
        &self,
        headers: &HeaderMap,
        repository: Option<&str>,
        action: Action,
    ) -> Result<(), AuthChallenge>;
}

/// Lets every request through (tests, and registries on a trusted loopback).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl RegistryAuth for AllowAll {
    async fn authorize(
        &self,
        _headers: &HeaderMap,
        _repository: Option<&str>,
        _action: Action,
    ) -> Result<(), AuthChallenge> {
        Ok(())
    }
}

/// Says whether a registry password (the part after `AWS:` in an ECR authorization
/// token) is valid and unexpired. ECR's GetAuthorizationToken provides the real one.
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// `true` when `password` is a valid, unexpired token.
    async fn verify(&self, password: &str) -> bool;
}

/// Accepts `Authorization: Basic base64(AWS:<password>)` when the verifier accepts the
/// password; anything else gets a Basic challenge.
pub struct BasicTokens {
    verifier: Arc<dyn TokenVerifier>,
    realm: String,
}

impl BasicTokens {
    /// The user name ECR tokens carry.
    pub const USER: &'static str = "AWS";

    /// Checks passwords with `verifier`; challenges name `realm`.
    pub fn new(verifier: Arc<dyn TokenVerifier>, realm: impl Into<String>) -> Self {
        Self {
            verifier,
            realm: realm.into(),
        }
    }

    fn challenge(&self) -> AuthChallenge {
        let realm = self.realm.replace(['"', '\\'], "");
        AuthChallenge::Unauthenticated(format!("Basic realm=\"{realm}\""))
    }
}

/// The password of a `Basic` authorization header for user `user`, if well formed.
pub fn basic_password(headers: &HeaderMap, user: &str) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, password) = text.split_once(':')?;
    (u == user).then(|| password.to_string())
}

#[async_trait]
impl RegistryAuth for BasicTokens {
    async fn authorize(
        &self,
        headers: &HeaderMap,
        _repository: Option<&str>,
        _action: Action,
    ) -> Result<(), AuthChallenge> {
        match basic_password(headers, Self::USER) {
            Some(password) if self.verifier.verify(&password).await => Ok(()),
            _ => Err(self.challenge()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    #[async_trait]
    impl TokenVerifier for Fixed {
        async fn verify(&self, password: &str) -> bool {
            password == "good"
        }
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn basic_tokens() {
        let auth = BasicTokens::new(Arc::new(Fixed), "wharf");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ok = with_auth(&format!("Basic {}", b64("AWS:good")));
        assert!(auth.authorize(&ok, None, Action::Pull).await.is_ok());
        for bad in [
            format!("Basic {}", b64("AWS:bad")),
            format!("Basic {}", b64("root:good")),
            format!("Bearer {}", b64("AWS:good")),
            "Basic !!!".to_string(),
        ] {
            assert_eq!(
                auth.authorize(&with_auth(&bad), Some("a/b"), Action::Push)
                    .await,
                Err(AuthChallenge::Unauthenticated(
                    "Basic realm=\"wharf\"".to_string()
                ))
            );
        }
        assert!(auth
            .authorize(&HeaderMap::new(), None, Action::Pull)
            .await
            .is_err());
    }
}
