//! Revisioned key–value state for Wharf's control plane.
//!
//! The store owns durability and ordering and nothing else: keys are opaque UTF-8
//! strings, values are opaque bytes, and it knows nothing of ECS. Its model is etcd's:
//! one store-wide revision counter that every successful write transaction bumps by
//! one; each key remembers the revision that created it (`create_revision`), the one
//! that last changed it (`mod_revision`) and how many times it was written (`version`).
//! Writes are transactions guarded by comparisons on those revisions
//! (compare-and-swap), so that concurrent writers never lose each other's updates, and
//! watchers can resume from any revision still held in the change log.
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, WAL mode; with
//! [`sqlite::Durability::Full`] every commit is fsynced before it is acknowledged, so an
//! acknowledged write survives SIGKILL and power loss; concurrent writers share fsyncs
//! through group commit). The trait is shaped so that an etcd backend fits it without
//! change; that backend is not written yet.
//!
//! What the store must not do: know ECS semantics (keys, values and their layout belong
//! to the control plane), keep caches or views of the data above the revision model (the
//! control plane builds those from watches), or read the clock (revisions, not times,
//! order everything).

use async_trait::async_trait;

pub mod sqlite;

/// A store-wide revision. Revision 0 means "never written"; the first write is 1.
pub type Revision = i64;

/// One stored key with its value and revision metadata (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value as written.
    pub value: Vec<u8>,
    /// The revision of the transaction that created this key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the transaction that last modified this key.
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after creation).
    pub version: i64,
}

/// A condition a transaction checks before applying its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this revision; 0 means the key must be absent.
    ModRevision {
        /// The key compared.
        key: String,
        /// The expected `mod_revision` (0 = absent).
        revision: Revision,
    },
    /// The key has been written exactly `version` times since it was created; 0 means
    /// the key must be absent (etcd's version comparison). Unlike a mod revision, the
    /// version a write will leave is known before it commits, so a writer can queue a
    /// second transaction that expects the first one's write.
    Version {
        /// The key compared.
        key: String,
        /// The expected version (0 = absent).
        version: i64,
    },
    /// The key exists (whatever its revision).
    Exists {
        /// The key compared.
        key: String,
    },
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite a key.
    Put {
        /// The key written.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Delete a key (a no-op if it is absent).
    Delete {
        /// The key removed.
        key: String,
    },
}

/// An atomic write: if every comparison holds, every operation is applied under one
/// new revision; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Writes applied when the conditions hold.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a condition that `key` was last modified at `revision` (0 = absent).
    pub fn when_mod_revision(mut self, key: impl Into<String>, revision: Revision) -> Self {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision,
        });
        self
    }
    /// Adds a condition that `key` has been written `version` times since it was
    /// created (0 = absent).
    pub fn when_version(mut self, key: impl Into<String>, version: i64) -> Self {
        self.compares.push(Compare::Version {
            key: key.into(),
            version,
        });
        self
    }
    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }
    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held and the operations were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged if it failed or wrote nothing).
    pub revision: Revision,
}

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or overwritten; `kv` holds its new state.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// The revision of the deleting transaction.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// A stream of changes under a prefix, in revision order, with no gaps. The sender is
/// dropped (and `recv` returns `None`) when the store shuts down or the watcher falls
/// too far behind; the watcher then re-reads and watches again.
pub type WatchReceiver = tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not read or write (disk, database, connection).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A watch asked for a revision older than the retained change log.
    #[error("revision {requested} was compacted; the oldest retained is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        oldest: Revision,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
}

/// Revisioned key–value state with compare-and-swap and watch.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Reads every key that starts with `prefix`, in key order, together with the store
    /// revision the read was taken at.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;
    /// Applies a transaction atomically and durably: once this returns `Ok`, the write
    /// survives a crash of the process.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    /// The current store revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
    /// Watches every change under `prefix` with a revision greater than or equal to
    /// `from` (use `revision() + 1` for "from now on").
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchReceiver, StoreError>;
}
