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
//! | `registry/uploads/<id>` | [`UploadRecord`] |

use crate::digest::Digest;
use crate::error::RegistryError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use wharf_store::{KeyValue, Revision, Store, Txn};

/// A repository in the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RepositoryRecord {}

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
}

impl Metadata {
    /// Records in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
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

    /// Adds the repository to `txn` if it is not in the catalog yet.
    async fn with_repository(&self, repo: &str, txn: Txn) -> Result<Txn, RegistryError> {
        let key = repo_key(repo);
        Ok(if self.store.get(&key).await?.is_none() {
            txn.put(key, encode(&RepositoryRecord::default()))
        } else {
            txn
        })
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
        let txn = Txn::new().put(
            format!("{}{digest}", scoped(repo, "blobs")),
            encode(&BlobLink { size }),
        );
        self.store
            .txn(self.with_repository(repo, txn).await?)
            .await?;
        Ok(())
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

    /// Stores a manifest record, and optionally points `tag` at it and records it as a
    /// referrer of its subject, in one transaction.
    pub async fn put_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        record: &ManifestRecord,
        tag: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut txn = Txn::new().put(
            format!("{}{digest}", scoped(repo, "manifests")),
            encode(record),
        );
        if let Some(tag) = tag {
            txn = txn.put(
                format!("{}{tag}", scoped(repo, "tags")),
                encode(&TagRecord {
                    digest: digest.to_string(),
                }),
            );
        }
        if let Some(subject) = &record.subject {
            let mut descriptor = serde_json::json!({
                "mediaType": record.media_type,
                "digest": digest.to_string(),
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
        self.store
            .txn(self.with_repository(repo, txn).await?)
            .await?;
        Ok(())
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

    /// Records a new upload session.
    pub async fn create_upload(&self, id: &str, repo: &str) -> Result<(), RegistryError> {
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

    /// Forgets an upload session.
    pub async fn delete_upload(&self, id: &str) -> Result<(), RegistryError> {
        self.store.txn(Txn::new().delete(upload_key(id))).await?;
        Ok(())
    }
}
