//! Registry passwords issued by GetAuthorizationToken and checked on every OCI request.
//!
//! A password is 256 random bits in hex (so it never contains the `:` the AWS CLI
//! splits on). Only its sha256 is stored, under `registry/tokens/<hex>`, with its
//! expiry and the IAM identity it was issued to (repository policies are evaluated
//! for that identity on every registry request), so tokens survive restarts and a
//! leaked store does not leak passwords.

use crate::auth::TokenVerifier;
use crate::metadata::Clock;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use wharf_store::{Store, StoreError, Txn};

/// How long a token lasts: 12 hours, as ECR's.
pub const TOKEN_LIFETIME_MILLIS: i64 = 12 * 60 * 60 * 1000;

const PREFIX: &str = "registry/tokens/";

#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    expires_at: i64,
    /// The identity ARN of the caller of GetAuthorizationToken; absent in tokens
    /// issued without one, which act for the registry's account root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    principal: Option<String>,
}

/// Issues and verifies registry passwords.
pub struct EcrTokens {
    store: Arc<dyn Store>,
    clock: Clock,
}

/// A freshly issued password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The password (the part after `AWS:`).
    pub password: String,
    /// When it stops working (Unix milliseconds).
    pub expires_at: i64,
}

fn token_key(password: &str) -> String {
    format!(
        "{PREFIX}{}",
        hex::encode(Sha256::digest(password.as_bytes()))
    )
}

impl EcrTokens {
    /// Tokens kept in `store`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Issues a new password valid for [`TOKEN_LIFETIME_MILLIS`] acting for the
    /// registry's account root, and forgets expired ones.
    pub async fn issue(&self) -> Result<IssuedToken, StoreError> {
        self.issue_to(None).await
    }

    /// Issues a new password acting for the identity `principal` (an IAM ARN).
    pub async fn issue_for(&self, principal: &str) -> Result<IssuedToken, StoreError> {
        self.issue_to(Some(principal.to_string())).await
    }

    /// Who a valid, unexpired password acts for: `Some(None)` for the account root of
    /// a token issued without an identity, `None` when the password is not valid.
    pub async fn holder(&self, password: &str) -> Option<Option<String>> {
        let Ok(Some(kv)) = self.store.get(&token_key(password)).await else {
            return None;
        };
        serde_json::from_slice::<TokenRecord>(&kv.value)
            .ok()
            .filter(|t| t.expires_at > (self.clock)())
            .map(|t| t.principal)
    }

    async fn issue_to(&self, principal: Option<String>) -> Result<IssuedToken, StoreError> {
        let now = (self.clock)();
        let password = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires_at = now + TOKEN_LIFETIME_MILLIS;
        let record = serde_json::to_vec(&TokenRecord {
            expires_at,
            principal,
        })
        .expect("records serialize");
        let mut txn = Txn::new().put(token_key(&password), record);
        let (existing, _) = self.store.range(PREFIX).await?;
        for kv in existing {
            let expired = serde_json::from_slice::<TokenRecord>(&kv.value)
                .map_or(true, |t| t.expires_at <= now);
            if expired {
                txn = txn.delete(kv.key);
            }
        }
        self.store.txn(txn).await?;
        Ok(IssuedToken {
            password,
            expires_at,
        })
    }
}

#[async_trait]
impl TokenVerifier for EcrTokens {
    async fn verify(&self, password: &str) -> bool {
        self.holder(password).await.is_some()
    }
}
