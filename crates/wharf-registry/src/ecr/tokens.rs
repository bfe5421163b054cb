//! Registry passwords issued by GetAuthorizationToken and checked on every OCI request.
//!
//! A password is 256 random bits in hex (so it never contains the `:` the AWS CLI
//! splits on). Only its sha256 is stored, under `registry/tokens/<hex>`, with its
//! expiry, so tokens survive restarts and a leaked store does not leak passwords.

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

    /// Issues a new password valid for [`TOKEN_LIFETIME_MILLIS`], and forgets expired
    /// ones.
    pub async fn issue(&self) -> Result<IssuedToken, StoreError> {
        let now = (self.clock)();
        let password = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires_at = now + TOKEN_LIFETIME_MILLIS;
        let record = serde_json::to_vec(&TokenRecord { expires_at }).expect("records serialize");
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
        let Ok(Some(kv)) = self.store.get(&token_key(password)).await else {
            return false;
        };
        serde_json::from_slice::<TokenRecord>(&kv.value)
            .is_ok_and(|t| t.expires_at > (self.clock)())
    }
}
