//! Shared helpers for the registry's integration tests.
#![allow(dead_code)]

use axum::body::Body;
use axum::Router;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;
use wharf_registry::{registry_router, AllowAll, FsBlobStore, RegistryAuth, RegistryState};
use wharf_store::sqlite::SqliteStore;

pub struct TestRegistry {
    pub router: Router,
    pub dir: tempfile::TempDir,
}

pub fn registry_with(auth: Arc<dyn RegistryAuth>) -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let blobs = Arc::new(FsBlobStore::new(dir.path()).unwrap());
    let router = registry_router(RegistryState::new(store, blobs, auth));
    TestRegistry { router, dir }
}

pub fn registry() -> TestRegistry {
    registry_with(Arc::new(AllowAll))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl TestRegistry {
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.into())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let r = self
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        digest
    }

    /// Pushes an image manifest (config + one layer) under `reference`; returns the
    /// manifest's body and digest.
    pub async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> (Vec<u8>, String) {
        let config = self
            .push_blob(repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes())
            .await;
        let layer = self
            .push_blob(repo, format!("layer {seed}").as_bytes())
            .await;
        let manifest = image_manifest(&config, &[&layer], None);
        let r = self
            .send(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", OCI_MANIFEST)],
                manifest.clone(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        (manifest, r.header("docker-content-digest").to_string())
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub fn sha256(bytes: &[u8]) -> String {
    wharf_registry::Digest::of(wharf_registry::Algorithm::Sha256, bytes).to_string()
}

pub fn image_manifest(config: &str, layers: &[&str], subject: Option<(&str, &str)>) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": 1
        })).collect::<Vec<_>>(),
    });
    if let Some((subject, artifact_type)) = subject {
        m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": subject, "size": 1});
        m["artifactType"] = serde_json::json!(artifact_type);
        m["annotations"] = serde_json::json!({"org.example": "yes"});
    }
    serde_json::to_vec(&m).unwrap()
}
