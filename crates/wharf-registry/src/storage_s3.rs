//! Blob storage in an S3-compatible bucket: [`S3BlobStore`], a [`BlobStore`] over
//! [`object_store`]'s `AmazonS3` client.
//!
//! Keys (under an optional prefix): blobs at `blobs/<alg>/<hex>`, blobs being written
//! at `tmp/<uuid>`, upload sessions at `uploads/<id>/session` (a marker) and
//! `uploads/<id>/part-<offset>` (one object per acknowledged append, `offset` padded
//! to 20 digits so the keys sort in byte order).
//!
//! Nothing unverified is ever visible under a digest. S3 offers no rename, but it does
//! offer two atomic publications: a single PUT, and a multipart upload, whose object
//! appears only when the upload is completed. Every write here is one of those two:
//!
//! * bytes are hashed as they stream in; fewer than one part (5 MiB by default) stay
//!   in memory and, once the hash matches, are PUT straight to `blobs/<alg>/<hex>`;
//! * a [`BlobWriter`] that grows past one part streams into a multipart upload to
//!   `tmp/<uuid>` (the digest is not known before the commit). On a mismatch the
//!   upload is aborted and no object ever existed; on a match it is completed and
//!   copied server-side to the blob key, then the temporary object is deleted. S3's
//!   CopyObject stops at 5 GiB, so a larger blob is instead re-read, re-hashed and
//!   streamed into a multipart upload to the blob key that is completed only if the
//!   hash matches again;
//! * [`BlobStore::upload_commit`] knows the digest up front: it reads the session's
//!   parts in order, hashes them and streams them into a multipart upload to the blob
//!   key, completed only on a match and aborted otherwise, so no copy is needed.
//!
//! A writer dropped before its commit aborts its multipart upload in the background;
//! an upload aborted by a crash is left to the bucket's lifecycle rule
//! (`AbortIncompleteMultipartUpload`), which deployments should set, along with an
//! expiry on `tmp/`.

use crate::digest::{Algorithm, Digest, Hasher};
use crate::storage::{BlobReader, BlobStore, BlobWriter, StorageError, StoredBlob, UploadAppender};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use std::io;
use std::sync::Arc;

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest object S3's CopyObject copies in one request.
const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Parts uploaded at once by one writer.
const PART_CONCURRENCY: usize = 4;

/// Where an [`S3BlobStore`] keeps its blobs.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// The service's URL, e.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The bucket, which must exist.
    pub bucket: String,
    /// The signing region, e.g. `us-east-1`.
    pub region: String,
    /// Static credentials; when absent the usual AWS environment and instance
    /// sources are used.
    pub access_key_id: Option<String>,
    /// The secret matching `access_key_id`.
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
    /// Allows a plain-HTTP endpoint (a local test server).
    pub allow_http: bool,
    /// Prepended to every key (`""` for the bucket's root), so registries can share
    /// a bucket.
    pub prefix: String,
}

impl S3Config {
    /// The bucket and key prefix of an `s3://bucket[/prefix]` URL, with the other
    /// settings left to the caller; `None` when `url` is not such a URL.
    pub fn from_url(url: &str) -> Option<S3Config> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            ..Default::default()
        })
    }
}

/// Blobs as objects in an S3-compatible bucket; see the module docs for the layout
/// and how digests are verified before anything is published.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    part_size: usize,
}

fn storage_err(e: object_store::Error) -> StorageError {
    StorageError::Io(io::Error::from(e))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3BlobStore {
    /// A store over an S3 bucket (no request is made here).
    pub fn new(config: S3Config) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let s3 = builder.build().map_err(storage_err)?;
        Ok(Self::with_object_store(Arc::new(s3), &config.prefix))
    }

    /// A store over any [`ObjectStore`] (tests use an in-memory one).
    pub fn with_object_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            store,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_size: MIN_PART_SIZE,
        }
    }

    /// Sets the multipart part size (at least [`MIN_PART_SIZE`]); S3 allows 10,000
    /// parts, so the default 5 MiB caps one blob near 48 GiB.
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    /// `blobs/<alg>/<hex>` under the prefix.
    pub fn blob_key(&self, digest: &Digest) -> Path {
        self.key(&format!(
            "blobs/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    fn upload_dir(&self, id: &str) -> Result<Path, StorageError> {
        // Ids come from the API already parsed as UUIDs; this check keeps the backend
        // safe on its own.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StorageError::UploadUnknown(id.to_string()));
        }
        Ok(self.key(&format!("uploads/{id}")))
    }

    fn sink(&self, key: Path) -> ObjectSink {
        ObjectSink {
            store: self.store.clone(),
            key,
            part_size: self.part_size,
            buf: Vec::new(),
            upload: None,
        }
    }

    /// Fails with `UploadUnknown` unless the session's marker exists.
    async fn check_session(&self, id: &str, dir: &Path) -> Result<(), StorageError> {
        match self.store.head(&dir.clone().join("session")).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(StorageError::UploadUnknown(id.to_string())),
            Err(e) => Err(storage_err(e)),
        }
    }

    /// The session's parts as `(offset, size, key)`, in offset order.
    async fn session_parts(&self, dir: &Path) -> Result<Vec<(u64, u64, Path)>, StorageError> {
        let mut parts = Vec::new();
        let mut listing = self.store.list(Some(dir));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(storage_err)?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if let Some(offset) = name
                .strip_prefix("part-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                parts.push((offset, meta.size, meta.location.clone()));
            }
        }
        parts.sort_by_key(|p| p.0);
        Ok(parts)
    }

    /// Streams `sources` (`(key, bytes to take)`) into `key`, hashing as it goes, and
    /// publishes only if the bytes hash to `expected`.
    async fn compose(
        &self,
        sources: &[(Path, u64)],
        key: Path,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let mut hasher = Hasher::new(expected.algorithm());
        let mut sink = self.sink(key);
        let mut total = 0u64;
        for (source, take) in sources {
            if *take == 0 {
                continue;
            }
            let read = self
                .store
                .get_opts(
                    source,
                    GetOptions {
                        range: Some(GetRange::Bounded(0..*take)),
                        ..Default::default()
                    },
                )
                .await;
            let mut stream = match read {
                Ok(r) => r.into_stream(),
                Err(e) => {
                    sink.abort().await;
                    return Err(storage_err(e));
                }
            };
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        sink.abort().await;
                        return Err(storage_err(e));
                    }
                };
                hasher.update(&chunk);
                total += chunk.len() as u64;
                if let Err(e) = sink.write(&chunk).await {
                    sink.abort().await;
                    return Err(e);
                }
            }
        }
        let actual = hasher.finish();
        if &actual != expected {
            sink.abort().await;
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        sink.finish().await?;
        Ok(total)
    }
}

/// Writes one object: bytes stay in memory until a part's worth has arrived, then
/// stream into a multipart upload. The object appears only at [`ObjectSink::finish`].
struct ObjectSink {
    store: Arc<dyn ObjectStore>,
    key: Path,
    part_size: usize,
    buf: Vec<u8>,
    upload: Option<WriteMultipart>,
}

impl ObjectSink {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        if let Some(upload) = &mut self.upload {
            upload
                .wait_for_capacity(PART_CONCURRENCY)
                .await
                .map_err(storage_err)?;
            upload.write(bytes);
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= self.part_size {
            let multipart = self
                .store
                .put_multipart(&self.key)
                .await
                .map_err(storage_err)?;
            let mut upload = WriteMultipart::new_with_chunk_size(multipart, self.part_size);
            upload.put(Bytes::from(std::mem::take(&mut self.buf)));
            self.upload = Some(upload);
        }
        Ok(())
    }

    fn is_multipart(&self) -> bool {
        self.upload.is_some()
    }

    /// Publishes the object (one PUT, or completes the multipart upload).
    async fn finish(mut self) -> Result<(), StorageError> {
        match self.upload.take() {
            Some(upload) => upload.finish().await.map_err(storage_err)?,
            None => self
                .store
                .put(&self.key, std::mem::take(&mut self.buf).into())
                .await
                .map_err(storage_err)?,
        };
        Ok(())
    }

    /// Drops the bytes; a multipart upload is aborted so its parts are freed.
    async fn abort(mut self) {
        if let Some(upload) = self.upload.take() {
            let _ = upload.abort().await;
        }
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // Neither finished nor aborted: abort the upload in the background if we can.
        if let Some(upload) = self.upload.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

struct S3BlobWriter {
    store: S3BlobStore,
    tmp: Path,
    sink: Option<ObjectSink>,
    hasher: Option<Hasher>,
    written: u64,
}

#[async_trait]
impl BlobWriter for S3BlobWriter {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let sink = self.sink.as_mut().expect("writer used after commit");
        sink.write(bytes).await?;
        self.hasher
            .as_mut()
            .expect("writer used after commit")
            .update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    async fn commit(mut self: Box<Self>, expected: &Digest) -> Result<u64, StorageError> {
        let mut sink = self.sink.take().expect("writer committed once");
        let actual = self.hasher.take().expect("writer committed once").finish();
        if &actual != expected {
            sink.abort().await;
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let target = self.store.blob_key(expected);
        if !sink.is_multipart() {
            // Verified bytes, all in memory: one atomic PUT to the blob key.
            sink.key = target;
            sink.finish().await?;
            return Ok(self.written);
        }
        sink.finish().await?;
        let published = if self.written <= MAX_COPY_SIZE {
            self.store
                .store
                .copy(&self.tmp, &target)
                .await
                .map_err(storage_err)
                .map(|()| self.written)
        } else {
            self.store
                .compose(&[(self.tmp.clone(), self.written)], target, expected)
                .await
        };
        let _ = self.store.store.delete(&self.tmp).await;
        published
    }
}

struct S3UploadAppender {
    sink: ObjectSink,
    offset: u64,
    written: u64,
}

#[async_trait]
impl UploadAppender for S3UploadAppender {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.sink.write(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let Self {
            sink,
            offset,
            written,
        } = *self;
        if written == 0 {
            sink.abort().await;
        } else {
            sink.finish().await?;
        }
        Ok(offset + written)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(storage_err(e)),
        }
    }

    async fn open(
        &self,
        digest: &Digest,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Option<BlobReader>, StorageError> {
        let key = self.blob_key(digest);
        let range = match length {
            // S3 refuses an empty range: answer it after checking the blob exists.
            Some(0) => {
                return Ok(self
                    .stat(digest)
                    .await?
                    .map(|_| Box::pin(tokio::io::empty()) as BlobReader));
            }
            Some(n) => Some(GetRange::Bounded(offset..offset + n)),
            None if offset > 0 => Some(GetRange::Offset(offset)),
            None => None,
        };
        let result = match self
            .store
            .get_opts(
                &key,
                GetOptions {
                    range,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(storage_err(e)),
        };
        let stream = result.into_stream().map_err(io::Error::from);
        Ok(Some(Box::pin(tokio_util::io::StreamReader::new(stream))))
    }

    async fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn BlobWriter>, StorageError> {
        let tmp = self.key(&format!("tmp/{}", uuid::Uuid::new_v4().simple()));
        Ok(Box::new(S3BlobWriter {
            store: self.clone(),
            sink: Some(self.sink(tmp.clone())),
            tmp,
            hasher: Some(Hasher::new(algorithm)),
            written: 0,
        }))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        // S3's DELETE succeeds whether or not the key exists, so ask first.
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.store
            .delete(&self.blob_key(digest))
            .await
            .map_err(storage_err)?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<StoredBlob>, StorageError> {
        let mut out = Vec::new();
        let root = self.key("blobs");
        let mut listing = self.store.list(Some(&root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(storage_err)?;
            // `blobs/<alg>/<hex>` under the prefix.
            let parts: Vec<_> = meta.location.parts().collect();
            let n = parts.len();
            if n < 2 {
                continue;
            }
            let text = format!("{}:{}", parts[n - 2].as_ref(), parts[n - 1].as_ref());
            if let Ok(digest) = text.parse::<Digest>() {
                out.push(StoredBlob {
                    digest,
                    modified_millis: Some(meta.last_modified.timestamp_millis()),
                });
            }
        }
        Ok(out)
    }

    async fn upload_create(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.upload_dir(id)?;
        self.store
            .put(&dir.join("session"), Bytes::new().into())
            .await
            .map_err(storage_err)?;
        Ok(())
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
    ) -> Result<Box<dyn UploadAppender>, StorageError> {
        let dir = self.upload_dir(id)?;
        self.check_session(id, &dir).await?;
        // Parts at or past `offset` were never acknowledged; one straddling it is cut.
        for (start, size, key) in self.session_parts(&dir).await? {
            if start >= offset {
                self.store.delete(&key).await.map_err(storage_err)?;
            } else if start + size > offset {
                let kept = self
                    .store
                    .get_range(&key, 0..offset - start)
                    .await
                    .map_err(storage_err)?;
                self.store
                    .put(&key, kept.into())
                    .await
                    .map_err(storage_err)?;
            }
        }
        let key = dir.join(format!("part-{offset:020}"));
        Ok(Box::new(S3UploadAppender {
            sink: self.sink(key),
            offset,
            written: 0,
        }))
    }

    async fn upload_commit(
        &self,
        id: &str,
        size: u64,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let dir = self.upload_dir(id)?;
        self.check_session(id, &dir).await?;
        let parts = self.session_parts(&dir).await?;
        // The parts must tile 0..size; bytes past `size` were never acknowledged.
        let mut sources = Vec::new();
        let mut next = 0u64;
        for (start, len, key) in &parts {
            if next >= size {
                break;
            }
            if *start != next {
                return Err(StorageError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("upload {id} has no bytes at offset {next}"),
                )));
            }
            let take = (*len).min(size - next);
            sources.push((key.clone(), take));
            next += take;
        }
        if next != size {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload {id} holds {next} bytes, not {size}"),
            )));
        }
        let written = self
            .compose(&sources, self.blob_key(expected), expected)
            .await?;
        self.upload_delete(id).await?;
        Ok(written)
    }

    async fn upload_delete(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.upload_dir(id)?;
        let keys: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(storage_err)?;
        for key in keys {
            match self.store.delete(&key).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(storage_err(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The backend's logic over an in-memory object store; `tests/s3_storage.rs`
    //! runs the same checks against a real S3 server.
    use super::*;
    use object_store::memory::InMemory;
    use tokio::io::AsyncReadExt;

    fn store() -> S3BlobStore {
        S3BlobStore::with_object_store(Arc::new(InMemory::new()), "reg")
    }

    #[test]
    fn s3_urls() {
        let c = S3Config::from_url("s3://bucket/some/prefix/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        let c = S3Config::from_url("s3://bucket").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("bucket", ""));
        assert!(S3Config::from_url("s3:///x").is_none());
        assert!(S3Config::from_url("/var/lib/wharf").is_none());
    }

    #[tokio::test]
    async fn lists_blobs_under_its_prefix_only() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = S3BlobStore::with_object_store(inner.clone(), "reg");
        let other = S3BlobStore::with_object_store(inner, "other");
        let mut expected = Vec::new();
        for (alg, bytes) in [
            (Algorithm::Sha256, &b"one"[..]),
            (Algorithm::Sha512, b"two"),
        ] {
            let d = Digest::of(alg, bytes);
            let mut w = store.writer(alg).await.unwrap();
            w.write(bytes).await.unwrap();
            w.commit(&d).await.unwrap();
            expected.push(d);
        }
        let mut w = other.writer(Algorithm::Sha256).await.unwrap();
        w.write(b"elsewhere").await.unwrap();
        w.commit(&Digest::of(Algorithm::Sha256, b"elsewhere"))
            .await
            .unwrap();
        store.upload_create("u1").await.unwrap();
        let mut listed: Vec<Digest> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| {
                assert!(b.modified_millis.is_some());
                b.digest
            })
            .collect();
        listed.sort_by_key(|d| d.to_string());
        expected.sort_by_key(|d| d.to_string());
        assert_eq!(listed, expected);
    }

    async fn keys(store: &S3BlobStore) -> Vec<String> {
        let mut keys: Vec<String> = store
            .object_store()
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    }

    async fn read_all(store: &S3BlobStore, d: &Digest, off: u64, len: Option<u64>) -> Vec<u8> {
        let mut r = store.open(d, off, len).await.unwrap().unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn writes_verifies_and_reads_ranges() {
        let store = store();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let d = Digest::of(alg, b"hello world");
            let mut w = store.writer(alg).await.unwrap();
            w.write(b"hello ").await.unwrap();
            w.write(b"world").await.unwrap();
            assert_eq!(w.commit(&d).await.unwrap(), 11);
            assert_eq!(store.stat(&d).await.unwrap(), Some(11));
            assert_eq!(
                store.blob_key(&d).to_string(),
                format!("reg/blobs/{}/{}", alg.name(), d.hex())
            );
            assert_eq!(read_all(&store, &d, 6, Some(3)).await, b"wor");
            assert_eq!(read_all(&store, &d, 6, None).await, b"world");
            assert_eq!(read_all(&store, &d, 3, Some(0)).await, b"");
            assert_eq!(read_all(&store, &d, 0, None).await, b"hello world");
            assert!(store.delete(&d).await.unwrap());
            assert!(!store.delete(&d).await.unwrap());
            assert_eq!(store.stat(&d).await.unwrap(), None);
            assert!(store.open(&d, 0, None).await.unwrap().is_none());
        }
        assert!(keys(&store).await.is_empty());
    }

    #[tokio::test]
    async fn mismatch_publishes_nothing_small_or_multipart() {
        let store = store();
        for len in [5usize, MIN_PART_SIZE * 2 + 17] {
            let claimed = Digest::of(Algorithm::Sha256, b"other");
            let mut w = store.writer(Algorithm::Sha256).await.unwrap();
            for chunk in vec![7u8; len].chunks(100_000) {
                w.write(chunk).await.unwrap();
            }
            assert!(matches!(
                w.commit(&claimed).await,
                Err(StorageError::DigestMismatch { .. })
            ));
            assert_eq!(store.stat(&claimed).await.unwrap(), None);
            assert!(keys(&store).await.is_empty());
        }
    }

    #[tokio::test]
    async fn large_blob_goes_through_multipart_and_tmp() {
        let store = store();
        let data: Vec<u8> = (0..MIN_PART_SIZE * 2 + 1234)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        let mut w = store.writer(Algorithm::Sha256).await.unwrap();
        for chunk in data.chunks(65_536) {
            w.write(chunk).await.unwrap();
        }
        assert_eq!(w.commit(&d).await.unwrap(), data.len() as u64);
        assert_eq!(keys(&store).await, [store.blob_key(&d).to_string()]);
        assert_eq!(read_all(&store, &d, 0, None).await, data);
        let mid = MIN_PART_SIZE as u64 - 10;
        assert_eq!(
            read_all(&store, &d, mid, Some(20)).await,
            &data[mid as usize..mid as usize + 20]
        );
    }

    #[tokio::test]
    async fn upload_sessions_append_and_commit() {
        let store = store();
        store.upload_create("abc-1").await.unwrap();
        let mut a = store.upload_append("abc-1", 0).await.unwrap();
        a.write(b"hello ").await.unwrap();
        assert_eq!(a.finish().await.unwrap(), 6);
        // An unacknowledged write past the recorded size is discarded on the retry.
        let mut a = store.upload_append("abc-1", 6).await.unwrap();
        a.write(b"XXXXXXXX").await.unwrap();
        a.finish().await.unwrap();
        let mut a = store.upload_append("abc-1", 6).await.unwrap();
        a.write(b"world").await.unwrap();
        assert_eq!(a.finish().await.unwrap(), 11);
        let wrong = Digest::of(Algorithm::Sha256, b"nope");
        assert!(matches!(
            store.upload_commit("abc-1", 11, &wrong).await,
            Err(StorageError::DigestMismatch { .. })
        ));
        assert_eq!(store.stat(&wrong).await.unwrap(), None);
        let d = Digest::of(Algorithm::Sha512, b"hello world");
        assert_eq!(store.upload_commit("abc-1", 11, &d).await.unwrap(), 11);
        assert_eq!(read_all(&store, &d, 0, None).await, b"hello world");
        assert!(matches!(
            store.upload_append("abc-1", 0).await,
            Err(StorageError::UploadUnknown(_))
        ));
        assert_eq!(keys(&store).await, [store.blob_key(&d).to_string()]);
        assert!(store.upload_create("../x").await.is_err());
        assert!(store.upload_delete("never-made").await.is_ok());
    }
}
