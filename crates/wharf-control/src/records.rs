//! Typed records over the revisioned store.
//!
//! Every control-plane object is one JSON document under a region-scoped key; reads
//! return the document with the revision it was read at, and writes are guarded by that
//! revision, so a read-modify-write that raced another writer fails instead of losing
//! the other write. Callers retry such conflicts by reading again.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use wharf_aws::AwsError;
use wharf_store::{Revision, Store, StoreError, Txn};

/// A record together with the revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its `mod_revision`; writing back requires it to be unchanged.
    pub revision: Revision,
}

/// How many times a read-modify-write is retried after losing a race.
pub const MAX_CONFLICT_RETRIES: usize = 64;

/// Typed access to the store.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
}

/// Maps a store failure to the protocol's server error: the client did nothing wrong.
pub fn store_failure(err: StoreError) -> AwsError {
    tracing::error!(error = %err, "store failure");
    AwsError::server(
        "ServerException",
        "The service could not complete the request.",
    )
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, AwsError> {
    serde_json::from_slice(bytes).map_err(|err| {
        tracing::error!(key, error = %err, "undecodable record");
        AwsError::server("ServerException", "A stored record could not be read.")
    })
}

/// Encodes a record for storage.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, maps with string keys), which
    // serde_json always encodes.
    serde_json::to_vec(value).expect("records are always encodable")
}

impl Records {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Records { store }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, AwsError> {
        match self.store.get(key).await.map_err(store_failure)? {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: decode(key, &kv.value)?,
                revision: kv.mod_revision,
            })),
        }
    }

    /// Reads every record under a prefix, in key order.
    pub async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Versioned<T>>, AwsError> {
        let (kvs, _) = self.store.range(prefix).await.map_err(store_failure)?;
        kvs.into_iter()
            .map(|kv| {
                Ok(Versioned {
                    value: decode(&kv.key, &kv.value)?,
                    revision: kv.mod_revision,
                })
            })
            .collect()
    }

    /// Writes a record if its key still has revision `expected` (0 = absent). Returns
    /// false when another writer changed it first.
    pub async fn put_if<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expected: Revision,
    ) -> Result<bool, AwsError> {
        let txn = Txn::new()
            .when_mod_revision(key, expected)
            .put(key, encode(value));
        self.commit(txn).await
    }

    /// Commits a prepared transaction; false when a comparison failed.
    pub async fn commit(&self, txn: Txn) -> Result<bool, AwsError> {
        Ok(self.store.txn(txn).await.map_err(store_failure)?.succeeded)
    }
}

/// The error returned when a record kept changing under a read-modify-write.
pub fn too_much_contention() -> AwsError {
    AwsError::client("ThrottlingException", "Rate exceeded")
}

/// In-process serialisation of writers to one hot key (a task definition family's
/// revision counter, say). Compare-and-swap alone stays correct under contention but
/// makes many concurrent writers retry each other into the ground; queueing them here
/// first means each attempt usually succeeds. Across processes the compare-and-swap
/// still decides.
#[derive(Default)]
pub struct KeyLocks {
    locks: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>,
    >,
}

impl KeyLocks {
    /// Waits for the lock of `key`; it is released when the guard drops.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().expect("key locks poisoned");
            if locks.len() > 1024 {
                locks.retain(|_, weak| weak.strong_count() > 0);
            }
            match locks.get(key).and_then(std::sync::Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}
