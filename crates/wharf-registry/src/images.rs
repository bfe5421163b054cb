//! Writes and reads of images that both doors share: the OCI API's manifest PUT and
//! ECR's PutImage store a manifest through [`store_manifest`], so the two apply the
//! same checks (parse, digest, referenced blobs present, tag immutability).

use crate::digest::{Algorithm, Digest};
use crate::error::RegistryError;
use crate::manifest::{parse_manifest, ManifestError, ReferenceKind};
use crate::metadata::{ManifestRecord, Metadata};
use crate::storage::BlobStore;
use tokio::io::AsyncReadExt;

/// Stores `bytes` as a manifest of repository `name`. Its digest is `claimed` when
/// given (and must match the bytes, else `DIGEST_INVALID`), or the sha256 of the bytes;
/// `tag`, when given, is pointed at it. Returns the digest and the stored record.
pub async fn store_manifest(
    meta: &Metadata,
    blobs: &dyn BlobStore,
    name: &str,
    bytes: &[u8],
    content_type: Option<&str>,
    claimed: Option<Digest>,
    tag: Option<&str>,
) -> Result<(Digest, ManifestRecord), RegistryError> {
    let parsed = parse_manifest(bytes, content_type).map_err(|e| match e {
        ManifestError::Invalid(d) | ManifestError::UnsupportedMediaType(d) => {
            RegistryError::ManifestInvalid(d)
        }
    })?;
    let digest = match claimed {
        Some(claimed) => {
            let actual = Digest::of(claimed.algorithm(), bytes);
            if actual != claimed {
                return Err(RegistryError::DigestInvalid(format!(
                    "manifest hashes to {actual}, not {claimed}"
                )));
            }
            claimed
        }
        None => Digest::of(Algorithm::Sha256, bytes),
    };
    for (d, kind) in &parsed.references {
        let present = match kind {
            ReferenceKind::Blob => {
                meta.blob_link(name, d).await?.is_some() && blobs.stat(d).await?.is_some()
            }
            ReferenceKind::Manifest => meta.manifest(name, d).await?.is_some(),
        };
        if !present {
            return Err(RegistryError::ManifestBlobUnknown(format!(
                "{d} is not in {name}"
            )));
        }
    }
    // Claimed before its bytes are (re)written, so garbage collection cannot delete
    // them under the manifest about to be stored.
    meta.claim_blob(&digest).await?;
    if blobs.stat(&digest).await?.is_none() {
        let mut w = blobs.writer(digest.algorithm()).await?;
        w.write(bytes).await?;
        w.commit(&digest).await?;
    }
    let record = ManifestRecord {
        media_type: parsed.media_type,
        size: bytes.len() as u64,
        subject: parsed.subject.as_ref().map(Digest::to_string),
        artifact_type: parsed.artifact_type,
        annotations: parsed.annotations,
        pushed_at: None,
        references: Some(
            parsed
                .references
                .iter()
                .map(|(d, _)| d.to_string())
                .collect(),
        ),
    };
    meta.put_manifest(name, &digest, &record, tag).await?;
    Ok((digest, record))
}

/// The bytes of a stored manifest (or any blob), or `None` when the content is missing.
pub async fn read_blob(
    blobs: &dyn BlobStore,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let Some(mut reader) = blobs.open(digest, 0, None).await? else {
        return Ok(None);
    };
    let mut body = Vec::new();
    reader
        .read_to_end(&mut body)
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
    Ok(Some(body))
}
