//! Content-addressed blob storage behind the [`BlobStore`] trait, and its local
//! filesystem backend [`FsBlobStore`].
//!
//! A blob becomes visible under its digest only after every byte was hashed and the
//! hash matched: bytes go to a temporary file, which is fsynced and then renamed into
//! place (`blobs/<alg>/<hex[0..2]>/<hex>`), so a crash never leaves a partial blob under
//! a digest. Upload sessions (chunked pushes) keep their bytes under `uploads/<id>`
//! until they are committed the same way.

use crate::digest::{Algorithm, Digest, Hasher};
use async_trait::async_trait;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// A byte stream read from storage.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The bytes written do not hash to the digest the client named.
    #[error("content hashes to {actual}, not {expected}")]
    DigestMismatch {
        /// The digest the client claimed.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// No upload session data under this id.
    #[error("upload {0} is unknown")]
    UploadUnknown(String),
    /// The backend could not read or write.
    #[error("blob storage failed: {0}")]
    Io(#[from] io::Error),
}

/// A blob being written: bytes are hashed as they arrive and the blob is published
/// under its digest only by [`BlobWriter::commit`]. Dropping a writer discards it.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Makes the blob durable and visible if its bytes hash to `expected`; returns its
    /// size. On a mismatch nothing is published.
    async fn commit(self: Box<Self>, expected: &Digest) -> Result<u64, StorageError>;
}

/// Where an upload session's next bytes go; [`UploadAppender::finish`] makes them durable.
#[async_trait]
pub trait UploadAppender: Send {
    /// Appends bytes.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError>;
    /// Flushes and fsyncs; returns the session's total size.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
}

/// A blob found by [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its digest.
    pub digest: Digest,
    /// When its bytes were last written (Unix milliseconds), when the backend knows.
    pub modified_millis: Option<i64>,
}

/// Content-addressed blob storage, shared by every repository.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a stored blob, or `None` when it is absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;
    /// Reads a blob, or `length` bytes of it from `offset` (the caller checks bounds).
    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Option<BlobReader>, StorageError>;
    /// Starts writing a blob whose digest will be checked under `algorithm`.
    async fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn BlobWriter>, StorageError>;
    /// Removes a blob; `false` when it was absent.
    async fn delete(&self, digest: &Digest) -> Result<bool, StorageError>;
    /// Every stored blob (for garbage collection).
    async fn list(&self) -> Result<Vec<StoredBlob>, StorageError>;
    /// Creates the (empty) data of a new upload session.
    async fn upload_create(&self, id: &str) -> Result<(), StorageError>;
    /// Opens an upload session for writing at `offset` (its recorded size); bytes past
    /// `offset` left by an unacknowledged earlier write are discarded.
    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
    ) -> Result<Box<dyn UploadAppender>, StorageError>;
    /// Verifies the session's first `size` bytes against `expected` and publishes them
    /// as a blob; the session data is consumed on success and kept on a mismatch.
    async fn upload_commit(
        &self,
        id: &str,
        size: u64,
        expected: &Digest,
    ) -> Result<u64, StorageError>;
    /// Discards an upload session's data (absent data is not an error).
    async fn upload_delete(&self, id: &str) -> Result<(), StorageError>;
}

/// Blobs as files under a root directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        for dir in ["blobs", "tmp", "uploads"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self { root })
    }

    /// `blobs/<alg>/<hex[0..2]>/<hex>`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        // Ids come from the API already parsed as UUIDs; this check keeps the backend
        // safe on its own.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        Ok(self.root.join("uploads").join(id))
    }

    /// Fsyncs `path` and renames it to the blob's place, fsyncing the directory so the
    /// rename itself survives a crash.
    async fn publish(
        &self,
        file: &tokio::fs::File,
        path: &Path,
        digest: &Digest,
    ) -> io::Result<()> {
        file.sync_all().await?;
        let target = self.blob_path(digest);
        let dir = target.parent().expect("blob path has a parent");
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::rename(path, &target).await?;
        tokio::fs::File::open(dir).await?.sync_all().await?;
        Ok(())
    }
}

struct FsBlobWriter {
    store: FsBlobStore,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Hasher,
    written: u64,
}

impl Drop for FsBlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: the temporary file is garbage.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[async_trait]
impl BlobWriter for FsBlobWriter {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let file = self.file.as_mut().expect("writer used after commit");
        file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn commit(mut self: Box<Self>, expected: &Digest) -> Result<u64, StorageError> {
        let actual =
            std::mem::replace(&mut self.hasher, Hasher::new(expected.algorithm())).finish();
        if &actual != expected {
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let mut file = self.file.take().expect("writer committed once");
        file.flush().await?;
        let published = self.store.publish(&file, &self.path, expected).await;
        if published.is_err() {
            let _ = tokio::fs::remove_file(&self.path).await;
        }
        published?;
        Ok(self.written)
    }
}

struct FsUploadAppender {
    file: tokio::fs::File,
    size: u64,
}

#[async_trait]
impl UploadAppender for FsUploadAppender {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.file.write_all(bytes).await?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        self.file.flush().await?;
        self.file.set_len(self.size).await?;
        self.file.sync_data().await?;
        Ok(self.size)
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Option<BlobReader>, StorageError> {
        let mut file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(Some(match length {
            Some(n) => Box::pin(file.take(n)),
            None => Box::pin(file),
        }))
    }

    async fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn BlobWriter>, StorageError> {
        let path = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let file = tokio::fs::File::create(&path).await?;
        Ok(Box::new(FsBlobWriter {
            store: self.clone(),
            path,
            file: Some(file),
            hasher: Hasher::new(algorithm),
            written: 0,
        }))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<StoredBlob>, StorageError> {
        let mut out = Vec::new();
        let mut algorithms = tokio::fs::read_dir(self.root.join("blobs")).await?;
        while let Some(alg) = algorithms.next_entry().await? {
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            let mut shards = tokio::fs::read_dir(alg.path()).await?;
            while let Some(shard) = shards.next_entry().await? {
                let mut files = tokio::fs::read_dir(shard.path()).await?;
                while let Some(file) = files.next_entry().await? {
                    let name = file.file_name().to_string_lossy().into_owned();
                    // Anything that is not a blob under its digest is not ours to list.
                    let Ok(digest) = format!("{alg_name}:{name}").parse::<Digest>() else {
                        continue;
                    };
                    let modified_millis = file
                        .metadata()
                        .await
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64);
                    out.push(StoredBlob {
                        digest,
                        modified_millis,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn upload_create(&self, id: &str) -> Result<(), StorageError> {
        tokio::fs::File::create(self.upload_path(id)?).await?;
        Ok(())
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
    ) -> Result<Box<dyn UploadAppender>, StorageError> {
        let path = self.upload_path(id)?;
        let mut file = match tokio::fs::OpenOptions::new().write(true).open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::UploadUnknown(id.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        file.set_len(offset).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        Ok(Box::new(FsUploadAppender { file, size: offset }))
    }

    async fn upload_commit(
        &self,
        id: &str,
        size: u64,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let path = self.upload_path(id)?;
        let file = match tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::UploadUnknown(id.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        // Bytes past the recorded size were never acknowledged to the client.
        file.set_len(size).await?;
        let mut hasher = Hasher::new(expected.algorithm());
        let mut reader =
            tokio::io::BufReader::with_capacity(1 << 20, file.try_clone().await?.take(size));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = hasher.finish();
        if &actual != expected {
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.publish(&file, &path, expected).await?;
        Ok(size)
    }

    async fn upload_delete(&self, id: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.upload_path(id)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(store: &FsBlobStore, d: &Digest, off: u64, len: Option<u64>) -> Vec<u8> {
        let mut r = store.open(d, off, len).await.unwrap().unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn writes_verifies_and_reads_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path()).unwrap();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let d = Digest::of(alg, b"hello world");
            let mut w = store.writer(alg).await.unwrap();
            w.write(b"hello ").await.unwrap();
            w.write(b"world").await.unwrap();
            assert_eq!(w.commit(&d).await.unwrap(), 11);
            assert_eq!(store.stat(&d).await.unwrap(), Some(11));
            assert!(store.blob_path(&d).ends_with(format!(
                "blobs/{}/{}/{}",
                alg.name(),
                &d.hex()[..2],
                d.hex()
            )));
            assert_eq!(read_all(&store, &d, 6, Some(3)).await, b"wor");
            assert_eq!(read_all(&store, &d, 0, None).await, b"hello world");
            assert!(store.delete(&d).await.unwrap());
            assert_eq!(store.stat(&d).await.unwrap(), None);
        }
        // Nothing left behind in tmp.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn mismatch_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path()).unwrap();
        let claimed = Digest::of(Algorithm::Sha256, b"other");
        let mut w = store.writer(Algorithm::Sha256).await.unwrap();
        w.write(b"bytes").await.unwrap();
        assert!(matches!(
            w.commit(&claimed).await,
            Err(StorageError::DigestMismatch { .. })
        ));
        assert_eq!(store.stat(&claimed).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn upload_sessions_append_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path()).unwrap();
        store.upload_create("abc-1").await.unwrap();
        let mut a = store.upload_append("abc-1", 0).await.unwrap();
        a.write(b"hello ").await.unwrap();
        assert_eq!(a.finish().await.unwrap(), 6);
        // A retried chunk at the acknowledged offset overwrites unacknowledged bytes.
        let mut a = store.upload_append("abc-1", 6).await.unwrap();
        a.write(b"world").await.unwrap();
        assert_eq!(a.finish().await.unwrap(), 11);
        let wrong = Digest::of(Algorithm::Sha256, b"nope");
        assert!(store.upload_commit("abc-1", 11, &wrong).await.is_err());
        let d = Digest::of(Algorithm::Sha512, b"hello world");
        assert_eq!(store.upload_commit("abc-1", 11, &d).await.unwrap(), 11);
        assert_eq!(read_all(&store, &d, 0, None).await, b"hello world");
        assert!(matches!(
            store.upload_append("abc-1", 0).await,
            Err(StorageError::UploadUnknown(_))
        ));
        assert!(store.upload_create("../x").await.is_err());
    }
}
