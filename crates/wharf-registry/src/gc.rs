//! Online garbage collection of blobs: mark and sweep while the registry serves.
//!
//! A blob is garbage when no manifest of any repository references it, it is not a
//! manifest itself, and nothing has put it to use within the grace period (an upload,
//! a mount, a manifest PUT, or an existence check a client may act on; see
//! [`crate::metadata`]'s blob records).
//!
//! One run:
//!
//! 1. **Finish** what an interrupted run left: condemned blobs lose their bytes, then
//!    their condemned marker.
//! 2. **Mark** from one consistent read of every repository-scoped record at store
//!    revision `R`: each manifest's digest and the digests it references (kept in its
//!    record; parsed from its body for records written before they were kept).
//! 3. **Sweep** every stored blob (and every blob record) that is not marked, whose
//!    record was last written at or before `R` and longer ago than the grace period (or,
//!    without a record, whose bytes are that old). It is condemned by one transaction
//!    that holds only if its record is still the one read — absent, for a blob without
//!    one — which deletes the record and every repository's link to the blob and
//!    writes its condemned marker. Only then are the bytes deleted, and then the
//!    marker.
//!
//! Why this never deletes a blob that a push needs: everything that makes a blob
//! reachable rewrites its record *before* it writes bytes or links (a claim), and a
//! manifest PUT stores the manifest only if its own record and the links of the blobs
//! it references still exist, rewriting their records in the same transaction. So a
//! push that got there first makes the condemning transaction fail; a condemnation
//! that got there first makes the manifest PUT see the blob gone
//! (`MANIFEST_BLOB_UNKNOWN`, never a manifest pointing at nothing) — which a push only
//! meets if it put the blob to use longer than the grace period ago. A claim refuses
//! to run while a blob is condemned and waits for the bytes and the marker to go
//! before writing the bytes again.

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::images::read_blob;
use crate::manifest::parse_manifest;
use crate::metadata::{
    blob_record_key, condemned_key, BlobRecord, ManifestRecord, Metadata, BLOB_RECORDS, CONDEMNED,
    REPOSITORY_SCOPED,
};
use crate::storage::BlobStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wharf_store::{Revision, Txn};

/// The default grace period: one hour.
pub const DEFAULT_GRACE_MILLIS: i64 = 60 * 60 * 1000;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs whose bytes were deleted.
    pub blobs_deleted: usize,
    /// Their total size.
    pub bytes_freed: u64,
    /// Repository links to deleted blobs that were removed.
    pub links_removed: usize,
    /// Unreferenced blobs spared because they were put to use within the grace period
    /// (or after the mark).
    pub spared_recent: usize,
    /// Unreferenced blobs spared because a concurrent request put them to use between
    /// the sweep's read and its transaction.
    pub lost_races: usize,
    /// Blobs referenced by a manifest (kept).
    pub marked: usize,
}

/// Collects unreferenced blobs of one registry.
pub struct GarbageCollector {
    meta: Metadata,
    blobs: Arc<dyn BlobStore>,
    grace_millis: i64,
}

/// A blob's repository link key: `registry/r/<repo>@blobs/<digest>`.
fn parse_scoped(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(REPOSITORY_SCOPED)?;
    let (_, scoped) = rest.split_once('@')?;
    scoped.split_once('/')
}

impl GarbageCollector {
    /// A collector over the registry's records and blobs that spares blobs used
    /// within `grace_millis`.
    pub fn new(meta: Metadata, blobs: Arc<dyn BlobStore>, grace_millis: i64) -> Self {
        Self {
            meta,
            blobs,
            grace_millis,
        }
    }

    /// Deletes the bytes of a condemned blob, then its condemned marker; the size
    /// freed, or `None` when the bytes were already gone (another run got there).
    async fn finish_deletion(
        &self,
        digest: &Digest,
        marker_revision: Revision,
    ) -> Result<Option<u64>, RegistryError> {
        let size = self.blobs.stat(digest).await?.unwrap_or(0);
        let deleted = self.blobs.delete(digest).await?;
        let key = condemned_key(digest);
        self.meta
            .store()
            .txn(
                Txn::new()
                    .when_mod_revision(&key, marker_revision)
                    .delete(&key),
            )
            .await?;
        Ok(deleted.then_some(size))
    }

    /// The digests a manifest references.
    async fn references(
        &self,
        digest: &Digest,
        record: &ManifestRecord,
    ) -> Result<Vec<String>, RegistryError> {
        if let Some(refs) = &record.references {
            return Ok(refs.clone());
        }
        let Some(body) = read_blob(self.blobs.as_ref(), digest).await? else {
            return Ok(Vec::new());
        };
        Ok(parse_manifest(&body, Some(&record.media_type))
            .map(|p| p.references.iter().map(|(d, _)| d.to_string()).collect())
            .unwrap_or_default())
    }

    /// One mark-and-sweep run (see the module documentation).
    pub async fn run(&self) -> Result<GcReport, RegistryError> {
        let mut report = GcReport::default();
        let store = self.meta.store().clone();

        // 1. Finish condemned blobs.
        let (markers, _) = store.range(CONDEMNED).await?;
        for kv in &markers {
            if let Ok(digest) = kv.key[CONDEMNED.len()..].parse::<Digest>() {
                if let Some(size) = self.finish_deletion(&digest, kv.mod_revision).await? {
                    report.bytes_freed += size;
                    report.blobs_deleted += 1;
                }
            }
        }

        // 2. Mark.
        let (scoped, mark_revision) = store.range(REPOSITORY_SCOPED).await?;
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut links: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in &scoped {
            match parse_scoped(&kv.key) {
                Some(("manifests", digest_text)) => {
                    let Ok(digest) = digest_text.parse::<Digest>() else {
                        continue;
                    };
                    let record: ManifestRecord = match serde_json::from_slice(&kv.value) {
                        Ok(r) => r,
                        Err(_) => continue,
                    };
                    live.extend(self.references(&digest, &record).await?);
                    live.insert(digest_text.to_string());
                }
                Some(("blobs", digest_text)) => links
                    .entry(digest_text.to_string())
                    .or_default()
                    .push(kv.key.clone()),
                _ => {}
            }
        }
        report.marked = live.len();

        // 3. Sweep.
        let (records, _) = store.range(BLOB_RECORDS).await?;
        let records: BTreeMap<String, (BlobRecord, Revision)> = records
            .iter()
            .filter_map(|kv| {
                let record = serde_json::from_slice::<BlobRecord>(&kv.value).ok()?;
                Some((
                    kv.key[BLOB_RECORDS.len()..].to_string(),
                    (record, kv.mod_revision),
                ))
            })
            .collect();
        let stored = self.blobs.list().await?;
        let mut candidates: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for blob in stored {
            candidates.insert(blob.digest.to_string(), blob.modified_millis);
        }
        for digest in records.keys() {
            candidates.entry(digest.clone()).or_insert(None);
        }
        let cutoff = self.meta.now_millis() - self.grace_millis;
        for (digest_text, modified) in candidates {
            if live.contains(&digest_text) {
                continue;
            }
            let Ok(digest) = digest_text.parse::<Digest>() else {
                continue;
            };
            let expected = match records.get(&digest_text) {
                Some((record, rev)) => {
                    if *rev > mark_revision || record.last_used > cutoff {
                        report.spared_recent += 1;
                        continue;
                    }
                    *rev
                }
                None => {
                    // Bytes without a record (written before records were kept): judged
                    // by their age.
                    if modified.is_none_or(|m| m > cutoff) {
                        report.spared_recent += 1;
                        continue;
                    }
                    0
                }
            };
            let key = blob_record_key(&digest);
            let marker = condemned_key(&digest);
            let mut txn = Txn::new()
                .when_mod_revision(&key, expected)
                .when_mod_revision(&marker, 0)
                .delete(&key)
                .put(&marker, b"{}".to_vec());
            let link_keys = links.get(&digest_text).cloned().unwrap_or_default();
            for link in &link_keys {
                txn = txn.delete(link.clone());
            }
            let outcome = store.txn(txn).await?;
            if !outcome.succeeded {
                report.lost_races += 1;
                continue;
            }
            report.links_removed += link_keys.len();
            if let Some(size) = self.finish_deletion(&digest, outcome.revision).await? {
                report.bytes_freed += size;
                report.blobs_deleted += 1;
            }
        }
        Ok(report)
    }
}

/// The path of the on-demand collection on the registry listener.
pub const ADMIN_PATH: &str = "/_wharf/registry/gc";

#[derive(Clone)]
struct AdminState {
    gc: Arc<GarbageCollector>,
    tokens: Arc<crate::ecr::EcrTokens>,
    account_id: String,
}

/// `POST` [`ADMIN_PATH`] with the owner account's registry credentials (`Basic
/// AWS:<password>` from GetAuthorizationToken) runs one collection now and answers
/// its [`GcReport`] as JSON; anything else is 401.
pub fn admin_router(
    gc: Arc<GarbageCollector>,
    tokens: Arc<crate::ecr::EcrTokens>,
    account_id: &str,
) -> axum::Router {
    axum::Router::new()
        .route(ADMIN_PATH, axum::routing::post(run_on_demand))
        .with_state(AdminState {
            gc,
            tokens,
            account_id: account_id.to_string(),
        })
}

async fn run_on_demand(
    axum::extract::State(state): axum::extract::State<AdminState>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let owner = match crate::auth::basic_password(&headers, crate::auth::BasicTokens::USER) {
        Some(p) => match state.tokens.holder(&p).await {
            Some(None) => true,
            Some(Some(arn)) => matches!(
                crate::policy::Principal::from_arn(&arn),
                crate::policy::Principal::Identity { account, .. } if account == state.account_id
            ),
            None => false,
        },
        None => false,
    };
    if !owner {
        return (
            http::StatusCode::UNAUTHORIZED,
            [(http::header::WWW_AUTHENTICATE, "Basic realm=\"wharf\"")],
            "the registry credentials of the owner account are required\n",
        )
            .into_response();
    }
    match state.gc.run().await {
        Ok(r) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "blobsDeleted": r.blobs_deleted,
                "bytesFreed": r.bytes_freed,
                "linksRemoved": r.links_removed,
                "sparedRecent": r.spared_recent,
                "lostRaces": r.lost_races,
                "marked": r.marked,
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}: {e:?}\n"),
        )
            .into_response(),
    }
}

/// Runs `gc` every `period` until `shutdown` turns true, logging what each run freed.
pub fn spawn_gc_schedule(
    gc: Arc<GarbageCollector>,
    period: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match gc.run().await {
                Ok(report) if report.blobs_deleted > 0 => tracing::info!(
                    blobs = report.blobs_deleted,
                    bytes = report.bytes_freed,
                    "garbage collection freed blobs"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "garbage collection failed"),
            }
        }
    });
}
