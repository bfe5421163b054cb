//! Repository, blob-link, manifest, tag, referrer and upload-session records in Wharf's
//! revisioned store.
//!
//! Key layout (`:` and `@` never occur in repository names, so one repository's keys
//! are never a prefix of another's):
//!
//! | key | value |
//! |---|---|
//! | `registry/repos/<repo>` | [`RepositoryRecord`] (the catalog) |
//! | `registry/r/<repo>@blobs/<digest>` | [`BlobLink`]: the blob is in the repository |
//! | `registry/r/<repo>@manifests/<digest>` | [`ManifestRecord`] (the body is a blob) |
//! | `registry/r/<repo>@tags/<tag>` | [`TagRecord`] |
//! | `registry/r/<repo>@referrers/<subject>/<digest>` | the referrer's descriptor |
//! | `registry/r/<repo>@pulls/<digest>` | [`PullRecord`]: when it was last pulled |
//! | `registry/uploads/<id>` | [`UploadRecord`] |
//! | `registry/blobs/<digest>` | [`BlobRecord`]: when the blob was last put to use |
//! | `registry/condemned/<digest>` | garbage collection is deleting the blob's bytes |
//!
//! Blob records are what keeps garbage collection ([`crate::gc`]) from racing pushes.
//! Collection condemns a blob with one transaction that holds only if the blob's record
//! is still the one it judged, and that deletes the record and every link to the blob
//! and writes the condemned marker. Every path that makes a blob reachable — an upload,
//! a mount, a manifest PUT — first *claims* the blob ([`Metadata::claim_blob`]): it
//! rewrites the record (so a collection that judged the old one fails) on the condition
//! that the blob is not condemned, before any byte is written. A manifest PUT stores
//! the manifest on the condition that its own record and each referenced blob's link
//! still exist, which a condemnation removes, and rewrites their records: whichever
//! of the two transactions commits first, the other fails. Existence rather than
//! revisions keeps concurrent pushes of the same blobs from failing each other.
//!
//! Whether a push may create its repository is decided here, by [`RepositoryCreation`],
//! so that the OCI API and the ECR API agree on which repositories exist; so is tag
//! immutability, checked in the same transaction that moves a tag.

use crate::digest::Digest;
use crate::error::RegistryError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use wharf_store::{KeyValue, Revision, Store, Txn};

/// A repository in the catalog, with the settings the ECR API gives it. Repositories
/// created by an OCI push (when [`RepositoryCreation::OnPush`]) have the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RepositoryRecord {
    /// When it was created (Unix milliseconds; 0 when unknown).
    #[serde(default)]
    pub created_at: i64,
    /// Whether tags may be moved once set.
    #[serde(default)]
    pub tag_mutability: TagMutability,
    /// Wildcard patterns (`*` matches any run of characters) of tags exempt from
    /// [`RepositoryRecord::tag_mutability`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutability_exclusions: Vec<String>,
    /// ECR's `imageScanningConfiguration.scanOnPush`, accepted and echoed.
    #[serde(default)]
    pub scan_on_push: bool,
    /// ECR's `encryptionConfiguration` (`encryptionType`, `kmsKey`), accepted and echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<(String, Option<String>)>,
    /// Resource tags, by key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Whether it was created through the ECR Public API: anyone may pull from it
    /// without credentials. Public and private repositories share one namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// The repository policy (SetRepositoryPolicy's text, as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// ECR Public's catalog data (`RepositoryCatalogData`, as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_data: Option<Value>,
}

/// Whether a repository's tags may be moved to another manifest.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum TagMutability {
    /// Tags may be overwritten.
    #[default]
    Mutable,
    /// A tag, once set, keeps pointing at its manifest (until deleted).
    Immutable,
}

impl RepositoryRecord {
    /// Whether `tag` may be moved from the manifest it points at.
    pub fn tag_is_mutable(&self, tag: &str) -> bool {
        let excluded = self
            .mutability_exclusions
            .iter()
            .any(|p| wildcard_match(p, tag));
        (self.tag_mutability == TagMutability::Mutable) != excluded
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    if !text.ends_with(last) {
        return false;
    }
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a push into a repository that is not in the catalog creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryCreation {
    /// Pushes create repositories (a plain OCI registry).
    OnPush,
    /// Only an explicit [`Metadata::create_repository`] does (ECR: a push elsewhere is
    /// `NAME_UNKNOWN`).
    Explicit,
}

/// When a manifest was last pulled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PullRecord {
    /// Unix milliseconds.
    pub at: i64,
}

/// The registry's clock: Unix milliseconds. Injected so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// A blob made available in a repository (pushed or mounted there).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlobLink {
    /// Its size in bytes.
    pub size: u64,
}

/// A manifest stored in a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestRecord {
    /// Its media type (served as `Content-Type`).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The digest of its `subject`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its artifact type (for referrers filtering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    /// When it was pushed (Unix milliseconds); set by [`Metadata::put_manifest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<i64>,
    /// The digests of the blobs and child manifests it references (garbage
    /// collection's marks). `None` in records written before they were kept: the
    /// collector then parses the manifest's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<String>>,
}

/// The state of one blob in shared storage, for garbage collection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRecord {
    /// When an upload, mount, manifest PUT or existence check last put the blob to
    /// use (Unix milliseconds); collection spares blobs used within its grace period.
    pub last_used: i64,
}

/// A tag pointing at a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TagRecord {
    /// The manifest's digest.
    pub digest: String,
}

/// An upload session in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadRecord {
    /// The repository it was started in.
    pub repository: String,
    /// Bytes acknowledged so far.
    pub size: u64,
}

fn repo_key(repo: &str) -> String {
    format!("registry/repos/{repo}")
}
fn scoped(repo: &str, kind: &str) -> String {
    format!("registry/r/{repo}@{kind}/")
}
fn upload_key(id: &str) -> String {
    format!("registry/uploads/{id}")
}
/// The prefix of every blob record.
pub const BLOB_RECORDS: &str = "registry/blobs/";
/// The prefix of every repository-scoped record (links, manifests, tags, …).
pub const REPOSITORY_SCOPED: &str = "registry/r/";
/// The key of a blob's [`BlobRecord`].
pub fn blob_record_key(digest: &Digest) -> String {
    format!("{BLOB_RECORDS}{digest}")
}
/// The prefix of the markers of blobs being deleted by garbage collection.
pub const CONDEMNED: &str = "registry/condemned/";
/// The key of a blob's condemned marker.
pub fn condemned_key(digest: &Digest) -> String {
    format!("{CONDEMNED}{digest}")
}
/// How stale a blob's record must be before an existence check rewrites it
/// ([`Metadata::touch_blob`]); garbage collection's grace period must be longer.
pub const BLOB_TOUCH_INTERVAL_MILLIS: i64 = 5 * 60 * 1000;
/// How long a claim waits for garbage collection to finish deleting a blob.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, RegistryError> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| RegistryError::Internal(format!("corrupt record {}: {e}", kv.key)))
}
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// Typed access to the registry's records.
#[derive(Clone)]
pub struct Metadata {
    store: Arc<dyn Store>,
    creation: RepositoryCreation,
    clock: Clock,
}

impl Metadata {
    /// Records in `store`; pushes create repositories; the system clock.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_options(store, RepositoryCreation::OnPush, system_clock())
    }

    /// Records in `store` with the given creation rule and clock.
    pub fn with_options(store: Arc<dyn Store>, creation: RepositoryCreation, clock: Clock) -> Self {
        Self {
            store,
            creation,
            clock,
        }
    }

    /// The store the records live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Now, by the injected clock (Unix milliseconds).
    pub fn now_millis(&self) -> i64 {
        (self.clock)()
    }

    /// The rule for creating repositories.
    pub fn creation(&self) -> RepositoryCreation {
        self.creation
    }

    async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>, RegistryError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    fn lost_races(repo: &str) -> RegistryError {
        RegistryError::Internal(format!("writes to {repo} kept losing races"))
    }

    /// Commits the transaction `build` makes from the repository's record, on the
    /// condition that the record did not change meanwhile; `false` when it lost a race
    /// (callers retry). A missing repository is created when pushes create
    /// repositories and is `NAME_UNKNOWN` otherwise.
    async fn try_commit_in_repository(
        &self,
        repo: &str,
        build: impl Fn(&RepositoryRecord) -> Result<Txn, RegistryError>,
    ) -> Result<bool, RegistryError> {
        let key = repo_key(repo);
        let txn = match self.read::<RepositoryRecord>(&key).await? {
            Some((record, rev)) => build(&record)?.when_mod_revision(&key, rev),
            None if self.creation == RepositoryCreation::OnPush => {
                let record = RepositoryRecord {
                    created_at: self.now_millis(),
                    ..Default::default()
                };
                build(&record)?
                    .when_mod_revision(&key, 0)
                    .put(&key, encode(&record))
            }
            None => return Err(Self::no_repository(repo)),
        };
        Ok(self.store.txn(txn).await?.succeeded)
    }

    fn no_repository(repo: &str) -> RegistryError {
        RegistryError::NameUnknown(format!(
            "The repository with name '{repo}' does not exist in the registry"
        ))
    }

    /// A repository's record and the revision it was read at.
    pub async fn repository(
        &self,
        repo: &str,
    ) -> Result<Option<(RepositoryRecord, Revision)>, RegistryError> {
        self.read(&repo_key(repo)).await
    }

    /// Creates a repository; `false` when it already exists.
    pub async fn create_repository(
        &self,
        repo: &str,
        record: &RepositoryRecord,
    ) -> Result<bool, RegistryError> {
        let key = repo_key(repo);
        let txn = Txn::new()
            .when_mod_revision(&key, 0)
            .put(&key, encode(record));
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Replaces a repository's record if nobody changed it since `revision`.
    pub async fn update_repository(
        &self,
        repo: &str,
        record: &RepositoryRecord,
        revision: Revision,
    ) -> Result<bool, RegistryError> {
        let key = repo_key(repo);
        let txn = Txn::new()
            .when_mod_revision(&key, revision)
            .put(&key, encode(record));
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Deletes a repository and every record in it (blob links, manifests, tags,
    /// referrers, pulls); `false` when it did not exist. The blobs stay in shared
    /// storage for garbage collection.
    pub async fn delete_repository(&self, repo: &str) -> Result<bool, RegistryError> {
        let key = repo_key(repo);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        let (records, _) = self.store.range(&format!("registry/r/{repo}@")).await?;
        let mut txn = Txn::new()
            .when_mod_revision(&key, kv.mod_revision)
            .delete(&key);
        for r in records {
            txn = txn.delete(r.key);
        }
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Every manifest in `repo`, by digest.
    pub async fn manifests(
        &self,
        repo: &str,
    ) -> Result<Vec<(Digest, ManifestRecord)>, RegistryError> {
        let prefix = scoped(repo, "manifests");
        let (kvs, _) = self.store.range(&prefix).await?;
        kvs.iter()
            .map(|kv| {
                let digest = kv.key[prefix.len()..]
                    .parse()
                    .map_err(|e| RegistryError::Internal(format!("corrupt key {}: {e}", kv.key)))?;
                Ok((digest, decode(kv)?))
            })
            .collect()
    }

    /// Every tag of `repo` with the digest it points at, in lexical order of tags.
    pub async fn tag_targets(&self, repo: &str) -> Result<Vec<(String, String)>, RegistryError> {
        let prefix = scoped(repo, "tags");
        let (kvs, _) = self.store.range(&prefix).await?;
        kvs.iter()
            .map(|kv| {
                let t: TagRecord = decode(kv)?;
                Ok((kv.key[prefix.len()..].to_string(), t.digest))
            })
            .collect()
    }

    /// Records that a manifest was pulled now.
    pub async fn record_pull(&self, repo: &str, digest: &Digest) -> Result<(), RegistryError> {
        let record = PullRecord {
            at: self.now_millis(),
        };
        self.store
            .txn(Txn::new().put(
                format!("{}{digest}", scoped(repo, "pulls")),
                encode(&record),
            ))
            .await?;
        Ok(())
    }

    /// When a manifest was last pulled.
    pub async fn last_pull(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<i64>, RegistryError> {
        Ok(self
            .read::<PullRecord>(&format!("{}{digest}", scoped(repo, "pulls")))
            .await?
            .map(|(p, _)| p.at))
    }

    /// Whether the repository exists.
    pub async fn repository_exists(&self, repo: &str) -> Result<bool, RegistryError> {
        Ok(self.store.get(&repo_key(repo)).await?.is_some())
    }

    /// Every repository, sorted.
    pub async fn repositories(&self) -> Result<Vec<String>, RegistryError> {
        let prefix = repo_key("");
        let (kvs, _) = self.store.range(&prefix).await?;
        Ok(kvs
            .into_iter()
            .map(|kv| kv.key[prefix.len()..].to_string())
            .collect())
    }

    /// Makes a stored blob available in `repo` (creating the repository if needed).
    pub async fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let key = format!("{}{digest}", scoped(repo, "blobs"));
        let condemned = condemned_key(digest);
        for _ in 0..8 {
            // A collection that condemned the blob after the caller's claim (an upload
            // slower than the grace period) may be deleting the bytes just written:
            // the link would point at nothing, so the upload fails instead.
            if self.store.get(&condemned).await?.is_some() {
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "blob {digest} was garbage collected during the upload; upload it again"
                )));
            }
            let linked = self
                .try_commit_in_repository(repo, |_| {
                    Ok(Txn::new()
                        .when_mod_revision(&condemned, 0)
                        .put(&key, encode(&BlobLink { size })))
                })
                .await?;
            if linked {
                return Ok(());
            }
        }
        Err(Self::lost_races(repo))
    }

    /// The blob's link in `repo`.
    pub async fn blob_link(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<BlobLink>, RegistryError> {
        Ok(self
            .read(&format!("{}{digest}", scoped(repo, "blobs")))
            .await?
            .map(|(v, _)| v))
    }

    /// Removes the blob from `repo`; `false` if it was not there.
    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        self.delete_if_present(&format!("{}{digest}", scoped(repo, "blobs")))
            .await
    }

    async fn delete_if_present(&self, key: &str) -> Result<bool, RegistryError> {
        match self.store.get(key).await? {
            None => Ok(false),
            Some(kv) => {
                let txn = Txn::new()
                    .when_mod_revision(key, kv.mod_revision)
                    .delete(key);
                // Losing the race means someone else changed or deleted it meanwhile;
                // either way the caller's delete is not the one that happened.
                Ok(self.store.txn(txn).await?.succeeded)
            }
        }
    }

    /// Stores a manifest record (stamping its push time), and optionally points `tag`
    /// at it and records it as a referrer of its subject, in one transaction. Moving a
    /// tag the repository holds immutable is `TAG_INVALID` ([`RegistryError::TagImmutable`]);
    /// re-pushing the manifest a tag already points at is not a move.
    pub async fn put_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        record: &ManifestRecord,
        tag: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut record = record.clone();
        let manifest_key = format!("{}{digest}", scoped(repo, "manifests"));
        // A re-push keeps the first push time, as ECR does.
        record.pushed_at = match self.read::<ManifestRecord>(&manifest_key).await? {
            Some((old, _)) if old.pushed_at.is_some() => old.pushed_at,
            _ => Some(self.now_millis()),
        };
        let digest_text = digest.to_string();
        // The manifest's own blob and everything it references are put to use by the
        // same transaction that stores it, on the condition that nothing changed them
        // since they were read (see the module documentation): the blob records, and
        // each referenced blob's link in this repository (or the referenced child
        // manifest), which garbage collection removes when it condemns a blob.
        let own_key = blob_record_key(digest);
        let mut referenced: Vec<Digest> = Vec::new();
        for r in record.references.iter().flatten() {
            let d: Digest = r
                .parse()
                .map_err(|e| RegistryError::ManifestInvalid(format!("reference {r}: {e}")))?;
            if !referenced.contains(&d) && &d != digest {
                referenced.push(d);
            }
        }
        let gone = |d: &dyn std::fmt::Display| {
            RegistryError::ManifestBlobUnknown(format!(
                "{d} is not in {repo} (it was garbage collected meanwhile)"
            ))
        };
        for _ in 0..8 {
            // Keys that must still exist, and whether to rewrite them as used now.
            let mut guards: Vec<(String, bool)> = Vec::new();
            // Claimed by the caller before the bytes were written: a missing record
            // means a collection condemned the bytes since.
            if self.store.get(&own_key).await?.is_none() {
                return Err(gone(digest));
            }
            guards.push((own_key.clone(), true));
            for d in &referenced {
                // A collection removes the links of a blob in the transaction that
                // condemns it; a child manifest it never condemns while it exists.
                let link = format!("{}{d}", scoped(repo, "blobs"));
                let child = format!("{}{d}", scoped(repo, "manifests"));
                if self.store.get(&link).await?.is_some() {
                    guards.push((link, false));
                } else if self.store.get(&child).await?.is_some() {
                    guards.push((child, false));
                } else {
                    return Err(gone(d));
                }
                // Rewritten, not required: blobs stored before records were kept have
                // none.
                guards.push((blob_record_key(d), true));
            }
            let in_use = encode(&BlobRecord {
                last_used: self.now_millis(),
            });
            // The tag is read on every attempt: losing a race to a concurrent push of the
            // same tag must re-check immutability against what that push wrote.
            let tag_state = match tag {
                Some(tag) => {
                    let key = format!("{}{tag}", scoped(repo, "tags"));
                    let current = self.read::<TagRecord>(&key).await?;
                    Some((tag, key, current))
                }
                None => None,
            };
            let committed = self.try_commit_in_repository(repo, |repository| {
            let mut txn = Txn::new().put(&manifest_key, encode(&record));
            for (key, touch) in &guards {
                if key.starts_with(REPOSITORY_SCOPED) || *key == own_key {
                    txn.compares.push(wharf_store::Compare::Exists { key: key.clone() });
                }
                if *touch {
                    txn = txn.put(key.as_str(), in_use.clone());
                }
            }
            if let Some((tag, key, current)) = &tag_state {
                match current {
                    Some((old, _)) if old.digest != digest_text && !repository.tag_is_mutable(tag) => {
                        return Err(RegistryError::TagImmutable(format!(
                            "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable."
                        )));
                    }
                    // Already there (a concurrent push of the same image won): nothing
                    // to move, and nothing to make the next attempt lose to.
                    Some((old, rev)) if old.digest == digest_text => {
                        txn = txn.when_mod_revision(key, *rev)
                    }
                    Some((_, rev)) => {
                        txn = txn.when_mod_revision(key, *rev).put(
                            key,
                            encode(&TagRecord {
                                digest: digest_text.clone(),
                            }),
                        )
                    }
                    None => {
                        txn = txn.when_mod_revision(key, 0).put(
                            key,
                            encode(&TagRecord {
                                digest: digest_text.clone(),
                            }),
                        )
                    }
                }
            }
            if let Some(subject) = &record.subject {
                let mut descriptor = serde_json::json!({
                    "mediaType": record.media_type,
                    "digest": digest_text,
                    "size": record.size,
                });
                if let Some(t) = &record.artifact_type {
                    descriptor["artifactType"] = Value::String(t.clone());
                }
                if let Some(a) = &record.annotations {
                    descriptor["annotations"] = a.clone();
                }
                txn = txn.put(
                    format!("{}{subject}/{digest}", scoped(repo, "referrers")),
                    encode(&descriptor),
                );
            }
            Ok(txn)
        })
        .await?;
            if committed {
                return Ok(());
            }
        }
        Err(Self::lost_races(repo))
    }

    /// A manifest's record.
    pub async fn manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, RegistryError> {
        Ok(self
            .read(&format!("{}{digest}", scoped(repo, "manifests")))
            .await?
            .map(|(v, _)| v))
    }

    /// What a tag points at.
    pub async fn tag(&self, repo: &str, tag: &str) -> Result<Option<Digest>, RegistryError> {
        match self
            .read::<TagRecord>(&format!("{}{tag}", scoped(repo, "tags")))
            .await?
        {
            None => Ok(None),
            Some((t, _)) => t
                .digest
                .parse()
                .map(Some)
                .map_err(|e| RegistryError::Internal(format!("corrupt tag {tag}: {e}"))),
        }
    }

    /// Every tag of `repo`, in lexical order.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let prefix = scoped(repo, "tags");
        let (kvs, _) = self.store.range(&prefix).await?;
        Ok(kvs
            .into_iter()
            .map(|kv| kv.key[prefix.len()..].to_string())
            .collect())
    }

    /// Removes a tag; `false` if it did not exist.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, RegistryError> {
        self.delete_if_present(&format!("{}{tag}", scoped(repo, "tags")))
            .await
    }

    /// Removes a manifest, every tag pointing at it and its referrer entry; `false` if
    /// it did not exist. Tags re-pointed concurrently are left alone (the transaction
    /// is retried on a fresh read).
    pub async fn delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let key = format!("{}{digest}", scoped(repo, "manifests"));
        let digest_text = digest.to_string();
        for _ in 0..8 {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(false);
            };
            let record: ManifestRecord = decode(&kv)?;
            let mut txn = Txn::new()
                .when_mod_revision(&key, kv.mod_revision)
                .delete(&key);
            let (tags, _) = self.store.range(&scoped(repo, "tags")).await?;
            for t in tags {
                if decode::<TagRecord>(&t)?.digest == digest_text {
                    txn = txn.when_mod_revision(&t.key, t.mod_revision).delete(&t.key);
                }
            }
            if let Some(subject) = &record.subject {
                txn = txn.delete(format!("{}{subject}/{digest}", scoped(repo, "referrers")));
            }
            if self.store.txn(txn).await?.succeeded {
                return Ok(true);
            }
        }
        Err(RegistryError::Internal(
            "manifest delete kept losing races".into(),
        ))
    }

    /// Descriptors of the manifests whose subject is `subject`.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<Value>, RegistryError> {
        let (kvs, _) = self
            .store
            .range(&format!("{}{subject}/", scoped(repo, "referrers")))
            .await?;
        kvs.iter().map(decode).collect()
    }

    /// Records a new upload session. Starting one in a repository that does not exist
    /// is `NAME_UNKNOWN` unless pushes create repositories.
    pub async fn create_upload(&self, id: &str, repo: &str) -> Result<(), RegistryError> {
        if self.creation == RepositoryCreation::Explicit && !self.repository_exists(repo).await? {
            return Err(Self::no_repository(repo));
        }
        let record = UploadRecord {
            repository: repo.to_string(),
            size: 0,
        };
        let key = upload_key(id);
        self.store
            .txn(
                Txn::new()
                    .when_mod_revision(&key, 0)
                    .put(&key, encode(&record)),
            )
            .await?;
        Ok(())
    }

    /// An upload session and the revision it was read at.
    pub async fn upload(
        &self,
        id: &str,
    ) -> Result<Option<(UploadRecord, Revision)>, RegistryError> {
        self.read(&upload_key(id)).await
    }

    /// Records the session's new size if nobody changed it since `revision`.
    pub async fn set_upload_size(
        &self,
        id: &str,
        record: &UploadRecord,
        revision: Revision,
    ) -> Result<bool, RegistryError> {
        let key = upload_key(id);
        Ok(self
            .store
            .txn(
                Txn::new()
                    .when_mod_revision(&key, revision)
                    .put(&key, encode(record)),
            )
            .await?
            .succeeded)
    }

    /// A blob's record and the revision it was read at.
    pub async fn blob_record(
        &self,
        digest: &Digest,
    ) -> Result<Option<(BlobRecord, Revision)>, RegistryError> {
        self.read(&blob_record_key(digest)).await
    }

    /// Puts a blob to use before its bytes are written or it is linked into a
    /// repository: its record is rewritten as used now, so that a garbage collection
    /// that judged the old record loses its race, on the condition that no collection
    /// condemned the blob; a condemned blob is waited for (its bytes are deleted before
    /// its marker is).
    pub async fn claim_blob(&self, digest: &Digest) -> Result<(), RegistryError> {
        let key = blob_record_key(digest);
        let condemned = condemned_key(digest);
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            let record = BlobRecord {
                last_used: self.now_millis(),
            };
            let txn = Txn::new()
                .when_mod_revision(&condemned, 0)
                .put(&key, encode(&record));
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Internal(format!(
                    "blob {digest} is still being garbage collected"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Claims a blob ([`Metadata::claim_blob`]) when its record says it was last used
    /// more than `stale_after` milliseconds ago (or it has none): an existence check
    /// that a client may act on (skipping an upload it would otherwise make) keeps the
    /// blob from collection for a while, at the cost of at most one write per blob and
    /// period. `false` when a collection is deleting the blob: the caller must report
    /// it absent.
    pub async fn touch_blob(
        &self,
        digest: &Digest,
        stale_after: i64,
    ) -> Result<bool, RegistryError> {
        if self.store.get(&condemned_key(digest)).await?.is_some() {
            return Ok(false);
        }
        match self.blob_record(digest).await? {
            Some((b, _)) if b.last_used > self.now_millis() - stale_after => Ok(true),
            _ => self.claim_blob_now(digest).await,
        }
    }

    /// One claim attempt: `false` when the blob is condemned.
    async fn claim_blob_now(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let record = BlobRecord {
            last_used: self.now_millis(),
        };
        let txn = Txn::new()
            .when_mod_revision(condemned_key(digest), 0)
            .put(blob_record_key(digest), encode(&record));
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Forgets an upload session.
    pub async fn delete_upload(&self, id: &str) -> Result<(), RegistryError> {
        self.store.txn(Txn::new().delete(upload_key(id))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        for (p, t, m) in [
            ("dev-*", "dev-1", true),
            ("dev-*", "prod", false),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
            ("*-rc", "1.0-rc", true),
        ] {
            assert_eq!(wildcard_match(p, t), m, "{p} {t}");
        }
        let r = RepositoryRecord {
            tag_mutability: TagMutability::Immutable,
            mutability_exclusions: vec!["dev*".into()],
            ..Default::default()
        };
        assert!(r.tag_is_mutable("dev1") && !r.tag_is_mutable("v1"));
        assert!(RepositoryRecord::default().tag_is_mutable("v1"));
    }
}
