//! Manifest parsing: which kind a manifest is, what it references, and its subject.

use crate::digest::Digest;
use serde_json::Value;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests larger than this are refused.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Whether a manifest's entries name blobs or other manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A config or layer blob.
    Blob,
    /// A child manifest of an index or list.
    Manifest,
}

/// A manifest understood well enough to store it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    /// One of the four supported media types.
    pub media_type: String,
    /// What must already be in the repository.
    pub references: Vec<(Digest, ReferenceKind)>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one its config's media type.
    pub artifact_type: Option<String>,
    /// The manifest's annotations, copied into referrers descriptors.
    pub annotations: Option<Value>,
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, missing fields, bad digests.
    #[error("{0}")]
    Invalid(String),
    /// A media type the registry does not store.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
}

fn descriptor_digest(d: &Value, what: &str) -> Result<Digest, ManifestError> {
    let s = d
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| ManifestError::Invalid(format!("{what} has no digest")))?;
    s.parse()
        .map_err(|e| ManifestError::Invalid(format!("{what}: {e}")))
}

fn descriptors<'a>(doc: &'a Value, field: &str) -> Result<&'a [Value], ManifestError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ManifestError::Invalid(format!("{field} is not an array"))),
    }
}

/// Parses `body`, sent with `content_type` (the `Content-Type` header, if any).
pub fn parse_manifest(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, ManifestError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ManifestError::Invalid(format!("not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(ManifestError::Invalid("not a JSON object".into()));
    }
    if doc.get("schemaVersion").and_then(Value::as_i64) != Some(2) {
        return Err(ManifestError::Invalid("schemaVersion must be 2".into()));
    }
    let declared = doc.get("mediaType").and_then(Value::as_str);
    // Parameters such as `; charset=utf-8` are not part of the type.
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (header, declared) {
        (Some(h), Some(d)) if h != d => {
            return Err(ManifestError::Invalid(format!(
                "Content-Type {h:?} differs from mediaType {d:?}"
            )))
        }
        (Some(h), _) => h.to_string(),
        (None, Some(d)) => d.to_string(),
        // An OCI document without mediaType is told apart by its fields.
        (None, None) if doc.get("manifests").is_some() => OCI_INDEX.to_string(),
        (None, None) if doc.get("config").is_some() => OCI_MANIFEST.to_string(),
        (None, None) => return Err(ManifestError::Invalid("no media type".into())),
    };
    let mut references = Vec::new();
    let mut artifact_type = doc
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string);
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = doc
                .get("config")
                .filter(|c| c.is_object())
                .ok_or_else(|| ManifestError::Invalid("no config descriptor".into()))?;
            references.push((descriptor_digest(config, "config")?, ReferenceKind::Blob));
            if artifact_type.is_none() && media_type == OCI_MANIFEST {
                artifact_type = config
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            for layer in descriptors(&doc, "layers")? {
                let digest = descriptor_digest(layer, "layer")?;
                // Foreign layers live elsewhere (their `urls`); they are not pushed.
                let foreign = layer
                    .get("urls")
                    .and_then(Value::as_array)
                    .is_some_and(|u| !u.is_empty());
                if !foreign {
                    references.push((digest, ReferenceKind::Blob));
                }
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            if doc.get("manifests").is_none() {
                return Err(ManifestError::Invalid("no manifests array".into()));
            }
            for m in descriptors(&doc, "manifests")? {
                references.push((descriptor_digest(m, "manifest")?, ReferenceKind::Manifest));
            }
        }
        other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
    }
    let subject = match doc.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(descriptor_digest(s, "subject")?),
    };
    let annotations = doc.get("annotations").filter(|a| a.is_object()).cloned();
    Ok(ParsedManifest {
        media_type,
        references,
        subject,
        artifact_type,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn image_manifest_with_subject() {
        let cfg = Digest::of(Algorithm::Sha256, b"c");
        let layer = Digest::of(Algorithm::Sha256, b"l");
        let subj = Digest::of(Algorithm::Sha256, b"s");
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/x.sig", "digest": cfg.to_string(), "size": 1},
            "layers": [{"mediaType": "x", "digest": layer.to_string(), "size": 1}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subj.to_string(), "size": 1},
        });
        let m = parse_manifest(body.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.references.len(), 2);
        assert_eq!(m.subject, Some(subj));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
    }

    #[test]
    fn refuses_bad_documents() {
        for (body, ct) in [
            ("nope", None),
            ("[]", None),
            (r#"{"schemaVersion":1}"#, None),
            (r#"{"schemaVersion":2,"mediaType":"x/y","config":{}}"#, None),
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha256:zz"}}"#,
                None,
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some(OCI_MANIFEST),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":{}}"#,
                None,
            ),
        ] {
            assert!(parse_manifest(body.as_bytes(), ct).is_err(), "{body}");
        }
    }
}
