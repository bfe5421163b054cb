//! Wharf's own OCI Distribution Spec v1.1 conformance suite: every endpoint and every
//! error code of the spec, spoken over real HTTP, organised as the spec's sections —
//! pull, push, content discovery, content management — followed by the error codes
//! and the headers every response carries. Each check is its own test.
//!
//! By default each check starts a Wharf registry of its own on 127.0.0.1, built by
//! [`wharf_registry::build`] exactly as `wharf up` builds it: durable SQLite records,
//! blobs on disk, ECR's rule that a repository exists before it is pushed to (the suite
//! creates its repositories through the registry's records, as CreateRepository does)
//! and Basic `AWS:<password>` credentials from GetAuthorizationToken's token issuer.
//!
//! The same checks run against any other registry: set
//! `WHARF_CONFORMANCE_URL=http://127.0.0.1:PORT` (and `WHARF_CONFORMANCE_BASIC=user:pass`
//! when it wants Basic credentials) to count what it fails. Against another registry,
//! repositories are created by the first push, as plain registries do.
//!
//! Two codes are not provoked through the target: `DENIED` needs a caller that is known
//! but not allowed, which Wharf's authorization hook expresses, so that check always
//! runs in-process with a read-only hook; `TOOMANYREQUESTS` is not checked because
//! Wharf's registry does not rate-limit.

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::Arc;
use wharf_registry::metadata::{system_clock, Metadata, RepositoryCreation, RepositoryRecord};
use wharf_registry::{Action, AuthChallenge, RegistryAuth, RegistryConfig};
use wharf_registry::{Algorithm, Digest};
use wharf_store::sqlite::{Durability, SqliteStore};
use wharf_store::Store;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const SIGNATURE_TYPE: &str = "application/vnd.example.signature.v1";
const SBOM_TYPE: &str = "application/vnd.example.sbom.v1+json";
const FOUR_MIB: usize = 4 * 1024 * 1024;
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------------
// The harness: a target registry, a real HTTP client, and helpers that push content.
// ---------------------------------------------------------------------------------

type RequestBody = BoxBody<Bytes, std::io::Error>;

/// A registry under test and a client for it.
struct Target {
    base: String,
    authorization: Option<String>,
    client: Client<HttpConnector, RequestBody>,
    /// For the in-process Wharf: its records (to create repositories) and its files.
    wharf: Option<(Metadata, tempfile::TempDir)>,
}

/// A response, fully read.
struct Reply {
    method: Method,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

fn sha256(bytes: &[u8]) -> String {
    Digest::of(Algorithm::Sha256, bytes).to_string()
}

fn sha512(bytes: &[u8]) -> String {
    Digest::of(Algorithm::Sha512, bytes).to_string()
}

/// A short random suffix that keeps repository names unique across checks and runs.
fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

fn encode_query(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A fresh Wharf registry on 127.0.0.1, built as `wharf up` builds it; returns its base
/// URL, an `Authorization` value from its token issuer, its records and its directory.
async fn start_wharf() -> (String, String, Metadata, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("state.db"), Durability::Full).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = wharf_registry::build(
        store.clone(),
        dir.path().join("registry"),
        RegistryConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            registry_addr: addr.to_string(),
        },
    )
    .unwrap();
    let token = registry.tokens.issue().await.unwrap();
    let router = registry.router;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let metadata = Metadata::with_options(store, RepositoryCreation::Explicit, system_clock());
    (
        format!("http://{addr}"),
        basic(&format!("AWS:{}", token.password)),
        metadata,
        dir,
    )
}

async fn target() -> Target {
    let client = Client::builder(TokioExecutor::new()).build_http();
    match std::env::var("WHARF_CONFORMANCE_URL") {
        Ok(url) if !url.is_empty() => Target {
            base: url.trim_end_matches('/').to_string(),
            authorization: std::env::var("WHARF_CONFORMANCE_BASIC")
                .ok()
                .filter(|c| !c.is_empty())
                .map(|c| basic(&c)),
            client,
            wharf: None,
        },
        _ => {
            let (base, authorization, metadata, dir) = start_wharf().await;
            Target {
                base,
                authorization: Some(authorization),
                client,
                wharf: Some((metadata, dir)),
            }
        }
    }
}

impl Reply {
    fn opt_header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn header(&self, name: &str) -> &str {
        self.opt_header(name).unwrap_or_else(|| {
            panic!(
                "{} answered {} without a {name} header: {:?}",
                self.method, self.status, self.headers
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status, with the body in the message.
    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{} answered {}: {}",
            self.method,
            self.status,
            self.text()
        );
        self
    }

    /// Asserts an error response: the status and, in the spec's error shape
    /// (`{"errors":[{"code","message",…}]}`, sent as JSON), the code.
    fn expect_error(&self, status: StatusCode, code: &str) {
        self.expect(status);
        if self.method == Method::HEAD {
            return;
        }
        let content_type = self.header("content-type");
        assert!(
            content_type.starts_with("application/json"),
            "error sent as {content_type}"
        );
        let body = self.json();
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array in {body}"));
        assert!(!errors.is_empty(), "empty errors array");
        for e in errors {
            assert!(e["code"].is_string() && e["message"].is_string(), "{e}");
        }
        let codes: Vec<&str> = errors.iter().filter_map(|e| e["code"].as_str()).collect();
        assert!(codes.contains(&code), "expected {code}, got {codes:?}");
    }
}

/// A pushed blob: its digest and size.
#[derive(Clone)]
struct Blob {
    digest: String,
    size: usize,
}

impl Blob {
    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.size})
    }
}

/// A pushed manifest: its bytes, digest and media type.
struct Pushed {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
}

impl Pushed {
    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

impl Target {
    /// A fresh repository name; in Wharf it is created first, as CreateRepository does.
    async fn repo(&self, label: &str) -> String {
        self.named_repo(&format!("conformance/{label}-{}", unique()))
            .await
    }

    async fn named_repo(&self, name: &str) -> String {
        if let Some((metadata, _)) = &self.wharf {
            let record = RepositoryRecord {
                created_at: metadata.now_millis(),
                ..Default::default()
            };
            assert!(metadata.create_repository(name, &record).await.unwrap());
        }
        name.to_string()
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: RequestBody,
        authorization: Option<&str>,
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(self.url(path));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        // Manifest reads carry the Accept header real clients send: every manifest
        // type they can handle.
        let reads_manifest = matches!(method, Method::GET | Method::HEAD)
            && path.contains("/manifests/")
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("accept"));
        if reads_manifest {
            request = request.header("accept", MANIFEST_ACCEPT);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .client
            .request(request.body(body).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} answered {status} with a broken body: {e}"))
            .to_bytes();
        Reply {
            method,
            status,
            headers,
            body,
        }
    }

    /// Sends a request with a body of known length (sent with `Content-Length`).
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let body = Full::new(body.into()).map_err(|e| match e {}).boxed();
        self.request(method, path, headers, body, self.authorization.as_deref())
            .await
    }

    /// Sends a request whose body is streamed in `chunks` with chunked transfer
    /// encoding, so the server learns its length only at its end.
    async fn send_streamed(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: Vec<Bytes>,
    ) -> Reply {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(c)));
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        self.request(method, path, headers, body, self.authorization.as_deref())
            .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], Bytes::new()).await
    }

    async fn head(&self, path: &str) -> Reply {
        self.send("HEAD", path, &[], Bytes::new()).await
    }

    /// `POST /v2/<name>/blobs/uploads/`: a new session's `Location`.
    async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        r.header("location").to_string()
    }

    /// Pushes a blob the way most clients do (POST, then PUT with the whole body).
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Blob {
        let location = self.start_upload(repo).await;
        let digest = sha256(bytes);
        let r = self
            .send(
                "PUT",
                &with_query(&location, &format!("digest={}", encode_query(&digest))),
                &[("content-type", "application/octet-stream")],
                bytes.to_vec(),
            )
            .await;
        r.expect(StatusCode::CREATED);
        Blob {
            digest,
            size: bytes.len(),
        }
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Reply {
        self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            bytes.to_vec(),
        )
        .await
    }

    /// Pushes a config and a layer, and an OCI image manifest of them under `reference`.
    async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> Pushed {
        let bytes = self.image_manifest(repo, seed, |_| {}).await;
        self.put_manifest(repo, reference, OCI_MANIFEST, &bytes)
            .await
            .expect(StatusCode::CREATED);
        Pushed {
            digest: sha256(&bytes),
            bytes,
            media_type: OCI_MANIFEST.into(),
        }
    }

    /// Pushes the blobs of an OCI image manifest and returns the manifest's bytes,
    /// after `edit` had its say on the document.
    async fn image_manifest(
        &self,
        repo: &str,
        seed: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Vec<u8> {
        let config = self.push_blob(repo, &config_bytes(seed)).await;
        let layer = self
            .push_blob(repo, format!("layer of {seed}").as_bytes())
            .await;
        let mut doc = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": [layer.descriptor(OCI_LAYER)],
        });
        edit(&mut doc);
        serde_json::to_vec(&doc).unwrap()
    }

    /// Pushes an artifact manifest whose subject is `subject`; returns it.
    async fn push_referrer(
        &self,
        repo: &str,
        subject: &Pushed,
        artifact_type: &str,
        seed: &str,
    ) -> Pushed {
        let empty = self.push_blob(repo, b"{}").await;
        let payload = self
            .push_blob(repo, format!("payload {seed}").as_bytes())
            .await;
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": empty.descriptor("application/vnd.oci.empty.v1+json"),
            "layers": [payload.descriptor("application/octet-stream")],
            "subject": subject.descriptor(),
            "annotations": {"org.example.seed": seed},
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let digest = sha256(&bytes);
        let r = self.put_manifest(repo, &digest, OCI_MANIFEST, &bytes).await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("oci-subject"), subject.digest);
        Pushed {
            bytes,
            digest,
            media_type: OCI_MANIFEST.into(),
        }
    }
}

fn config_bytes(seed: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"seed": seed}},
    }))
    .unwrap()
}

fn with_query(location: &str, query: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{query}")
}

/// The upload `Range` header for `n` bytes received.
fn range_of(n: usize) -> String {
    format!("0-{}", n.saturating_sub(1))
}

fn assert_range(r: &Reply, received: usize) {
    // Registries write `0-<last>` (some with a `bytes=` prefix).
    let range = r.header("range");
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    assert_eq!(range, range_of(received), "Range after {received} bytes");
}

// ---------------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------------

mod pull {
    use super::*;

    #[tokio::test]
    async fn base_endpoint_answers_200_with_the_api_version_header() {
        let t = target().await;
        let r = t.get("/v2/").await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    }

    #[tokio::test]
    async fn manifest_get_by_tag_returns_the_bytes_type_and_digest() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let m = t.push_image(&repo, "v1", "pull-tag").await;
        let r = t.get(&format!("/v2/{repo}/manifests/v1")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body, m.bytes);
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), m.digest);
        assert_eq!(r.header("content-length"), m.bytes.len().to_string());
    }

    #[tokio::test]
    async fn manifest_get_by_digest_returns_the_bytes() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let m = t.push_image(&repo, "v1", "pull-digest").await;
        let r = t.get(&format!("/v2/{repo}/manifests/{}", m.digest)).await;
        r.expect(StatusCode::OK);
        assert_eq!(sha256(&r.body), m.digest);
        assert_eq!(r.header("docker-content-digest"), m.digest);
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
    }

    #[tokio::test]
    async fn manifest_head_by_tag_and_digest_has_length_and_digest_but_no_body() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let m = t.push_image(&repo, "v1", "pull-head").await;
        for reference in ["v1", m.digest.as_str()] {
            let r = t.head(&format!("/v2/{repo}/manifests/{reference}")).await;
            r.expect(StatusCode::OK);
            assert!(r.body.is_empty());
            assert_eq!(r.header("content-length"), m.bytes.len().to_string());
            assert_eq!(r.header("docker-content-digest"), m.digest);
            assert_eq!(r.header("content-type"), OCI_MANIFEST);
        }
    }

    #[tokio::test]
    async fn manifest_get_and_head_of_an_unknown_tag_are_404() {
        let t = target().await;
        let repo = t.repo("pull").await;
        t.push_image(&repo, "v1", "pull-unknown").await;
        t.get(&format!("/v2/{repo}/manifests/nope"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        t.head(&format!("/v2/{repo}/manifests/nope"))
            .await
            .expect(StatusCode::NOT_FOUND);
        let absent = sha256(b"no such manifest");
        t.get(&format!("/v2/{repo}/manifests/{absent}"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }

    #[tokio::test]
    async fn blob_get_returns_the_bytes_with_digest_and_length() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let data = b"blob for pulling".to_vec();
        let blob = t.push_blob(&repo, &data).await;
        let r = t.get(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body, data);
        assert_eq!(r.header("docker-content-digest"), blob.digest);
        assert_eq!(r.header("content-length"), data.len().to_string());
    }

    #[tokio::test]
    async fn blob_head_has_length_and_digest_but_no_body() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let blob = t.push_blob(&repo, b"0123456789abcdef").await;
        let r = t.head(&format!("/v2/{repo}/blobs/{}", blob.digest)).await;
        r.expect(StatusCode::OK);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), "16");
        assert_eq!(r.header("docker-content-digest"), blob.digest);
    }

    #[tokio::test]
    async fn blob_get_and_head_of_an_unknown_digest_are_404() {
        let t = target().await;
        let repo = t.repo("pull").await;
        t.push_blob(&repo, b"something").await;
        let absent = sha256(b"never pushed");
        t.get(&format!("/v2/{repo}/blobs/{absent}"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
        t.head(&format!("/v2/{repo}/blobs/{absent}"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn blob_range_get_returns_206_with_content_range() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let blob = t.push_blob(&repo, b"0123456789").await;
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        let r = t
            .send("GET", &path, &[("range", "bytes=2-5")], Bytes::new())
            .await;
        r.expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(&r.body[..], b"2345");
        assert_eq!(r.header("content-range"), "bytes 2-5/10");
        assert_eq!(r.header("content-length"), "4");
    }

    #[tokio::test]
    async fn blob_range_get_open_ended_and_suffix_ranges() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let blob = t.push_blob(&repo, b"0123456789").await;
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        let r = t
            .send("GET", &path, &[("range", "bytes=7-")], Bytes::new())
            .await;
        r.expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(&r.body[..], b"789");
        assert_eq!(r.header("content-range"), "bytes 7-9/10");
        let r = t
            .send("GET", &path, &[("range", "bytes=-4")], Bytes::new())
            .await;
        r.expect(StatusCode::PARTIAL_CONTENT);
        assert_eq!(&r.body[..], b"6789");
    }

    #[tokio::test]
    async fn blob_range_get_past_the_end_is_416() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let blob = t.push_blob(&repo, b"0123456789").await;
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        let r = t
            .send("GET", &path, &[("range", "bytes=10-20")], Bytes::new())
            .await;
        r.expect(StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.header("content-range"), "bytes */10");
    }

    #[tokio::test]
    async fn blob_of_another_repository_is_not_served() {
        let t = target().await;
        let repo = t.repo("pull").await;
        let other = t.repo("pull-other").await;
        let blob = t.push_blob(&other, b"only in the other repository").await;
        t.push_blob(&repo, b"something of its own").await;
        t.get(&format!("/v2/{repo}/blobs/{}", blob.digest))
            .await
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }
}

// ---------------------------------------------------------------------------------
// Push
// ---------------------------------------------------------------------------------

mod push {
    use super::*;

    #[tokio::test]
    async fn monolithic_post_with_digest_creates_the_blob() {
        let t = target().await;
        let repo = t.repo("push").await;
        let data = b"monolithic in one POST".to_vec();
        let digest = sha256(&data);
        let r = t
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={}", encode_query(&digest)),
                &[("content-type", "application/octet-stream")],
                data.clone(),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert!(r.header("location").contains(&format!("/v2/{repo}/blobs/")));
        assert_eq!(r.header("docker-content-digest"), digest);
        let r = t.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body, data);
    }

    #[tokio::test]
    async fn post_then_put_with_the_whole_body_creates_the_blob() {
        let t = target().await;
        let repo = t.repo("push").await;
        let r = t
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").to_string();
        let data = b"posted then put".to_vec();
        let digest = sha256(&data);
        let r = t
            .send(
                "PUT",
                &with_query(&location, &format!("digest={}", encode_query(&digest))),
                &[("content-type", "application/octet-stream")],
                data.clone(),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert!(r
            .header("location")
            .ends_with(&format!("/v2/{repo}/blobs/{digest}")));
        assert_eq!(r.header("docker-content-digest"), digest);
        assert_eq!(
            t.get(&format!("/v2/{repo}/blobs/{digest}")).await.body,
            data
        );
    }

    #[tokio::test]
    async fn chunked_patches_with_content_range_then_put_create_the_blob() {
        let t = target().await;
        let repo = t.repo("push").await;
        let mut location = t.start_upload(&repo).await;
        let chunks: [&[u8]; 3] = [b"first chunk, ", b"second chunk, ", b"last"];
        let mut sent = 0;
        for chunk in chunks {
            let range = format!("{sent}-{}", sent + chunk.len() - 1);
            let r = t
                .send(
                    "PATCH",
                    &location,
                    &[
                        ("content-type", "application/octet-stream"),
                        ("content-range", &range),
                    ],
                    chunk.to_vec(),
                )
                .await;
            r.expect(StatusCode::ACCEPTED);
            sent += chunk.len();
            assert_range(&r, sent);
            location = r.header("location").to_string();
        }
        let full: Vec<u8> = chunks.concat();
        let digest = sha256(&full);
        let r = t
            .send(
                "PUT",
                &with_query(&location, &format!("digest={}", encode_query(&digest))),
                &[],
                Bytes::new(),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("docker-content-digest"), digest);
        assert_eq!(
            t.get(&format!("/v2/{repo}/blobs/{digest}")).await.body,
            full
        );
    }

    #[tokio::test]
    async fn the_closing_put_may_carry_the_last_chunk() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        let r = t
            .send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "0-5"),
                ],
                b"head, ".to_vec(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").to_string();
        let digest = sha256(b"head, tail");
        let r = t
            .send(
                "PUT",
                &with_query(&location, &format!("digest={}", encode_query(&digest))),
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "6-9"),
                ],
                b"tail".to_vec(),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert_eq!(
            &t.get(&format!("/v2/{repo}/blobs/{digest}")).await.body[..],
            b"head, tail"
        );
    }

    #[tokio::test]
    async fn out_of_order_chunk_is_416() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        let r = t
            .send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "0-4"),
                ],
                b"hello".to_vec(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").to_string();
        // Skips bytes 5 and 6.
        let r = t
            .send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "7-9"),
                ],
                b"abc".to_vec(),
            )
            .await;
        r.expect(StatusCode::RANGE_NOT_SATISFIABLE);
        // The session is unharmed: it still holds the first five bytes.
        let r = t.get(&location).await;
        r.expect(StatusCode::NO_CONTENT);
        assert_range(&r, 5);
    }

    #[tokio::test]
    async fn resending_an_accepted_chunk_is_416() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        let headers = [
            ("content-type", "application/octet-stream"),
            ("content-range", "0-4"),
        ];
        let r = t
            .send("PATCH", &location, &headers, b"hello".to_vec())
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").to_string();
        let r = t
            .send("PATCH", &location, &headers, b"hello".to_vec())
            .await;
        r.expect(StatusCode::RANGE_NOT_SATISFIABLE);
    }

    #[tokio::test]
    async fn streamed_patch_without_length_then_put_creates_the_blob() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        let chunks: Vec<Bytes> = (0..8)
            .map(|i| Bytes::from(vec![b'a' + i as u8; 32 * 1024]))
            .collect();
        let full: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let r = t
            .send_streamed(
                "PATCH",
                &location,
                &[("content-type", "application/octet-stream")],
                chunks,
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        assert_range(&r, full.len());
        let location = r.header("location").to_string();
        let digest = sha256(&full);
        t.send(
            "PUT",
            &with_query(&location, &format!("digest={}", encode_query(&digest))),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::CREATED);
        assert_eq!(
            t.get(&format!("/v2/{repo}/blobs/{digest}")).await.body,
            full
        );
    }

    #[tokio::test]
    async fn upload_status_is_204_with_range_and_location() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        let r = t
            .send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "0-2"),
                ],
                b"abc".to_vec(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").to_string();
        let r = t.get(&location).await;
        r.expect(StatusCode::NO_CONTENT);
        assert_range(&r, 3);
        assert!(r
            .header("location")
            .contains(&format!("/v2/{repo}/blobs/uploads/")));
    }

    #[tokio::test]
    async fn completed_upload_sessions_are_gone() {
        let t = target().await;
        let repo = t.repo("push").await;
        // Whole blob in the closing PUT.
        let whole = t.start_upload(&repo).await;
        t.send(
            "PUT",
            &with_query(
                &whole,
                &format!("digest={}", encode_query(&sha256(b"whole"))),
            ),
            &[("content-type", "application/octet-stream")],
            b"whole".to_vec(),
        )
        .await
        .expect(StatusCode::CREATED);
        // Chunks, then an empty closing PUT.
        let chunked = t.start_upload(&repo).await;
        let r = t
            .send(
                "PATCH",
                &chunked,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "0-6"),
                ],
                b"chunked".to_vec(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let chunked = r.header("location").to_string();
        t.send(
            "PUT",
            &with_query(
                &chunked,
                &format!("digest={}", encode_query(&sha256(b"chunked"))),
            ),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::CREATED);
        for location in [whole, chunked] {
            t.get(&location)
                .await
                .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
        }
    }

    #[tokio::test]
    async fn mount_without_from_mounts_or_opens_an_upload() {
        let t = target().await;
        let repo = t.repo("push").await;
        let digest = sha256(b"no source named");
        let r = t
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?mount={}", encode_query(&digest)),
                &[],
                Bytes::new(),
            )
            .await;
        // The blob exists nowhere, so nothing can be mounted: an upload session opens.
        r.expect(StatusCode::ACCEPTED);
        assert!(r
            .header("location")
            .contains(&format!("/v2/{repo}/blobs/uploads/")));
    }

    #[tokio::test]
    async fn cancelled_upload_is_gone() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        t.send("DELETE", &location, &[], Bytes::new())
            .await
            .expect(StatusCode::NO_CONTENT);
        t.get(&location)
            .await
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
        t.send(
            "PATCH",
            &location,
            &[("content-type", "application/octet-stream")],
            b"late".to_vec(),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    }

    #[tokio::test]
    async fn put_with_a_digest_that_does_not_match_is_refused() {
        let t = target().await;
        let repo = t.repo("push").await;
        let location = t.start_upload(&repo).await;
        let wrong = sha256(b"not these bytes");
        t.send(
            "PUT",
            &with_query(&location, &format!("digest={}", encode_query(&wrong))),
            &[("content-type", "application/octet-stream")],
            b"these bytes".to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
        t.head(&format!("/v2/{repo}/blobs/{wrong}"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn cross_repository_mount_is_201() {
        let t = target().await;
        let from = t.repo("mount-from").await;
        let to = t.repo("mount-to").await;
        let blob = t.push_blob(&from, b"a layer worth sharing").await;
        let r = t
            .send(
                "POST",
                &format!(
                    "/v2/{to}/blobs/uploads/?mount={}&from={}",
                    encode_query(&blob.digest),
                    encode_query(&from)
                ),
                &[],
                Bytes::new(),
            )
            .await;
        r.expect(StatusCode::CREATED);
        assert!(r
            .header("location")
            .ends_with(&format!("/v2/{to}/blobs/{}", blob.digest)));
        assert_eq!(r.header("docker-content-digest"), blob.digest);
        t.head(&format!("/v2/{to}/blobs/{}", blob.digest))
            .await
            .expect(StatusCode::OK);
    }

    #[tokio::test]
    async fn mount_of_a_missing_blob_falls_back_to_an_upload() {
        let t = target().await;
        let from = t.repo("mount-from").await;
        let to = t.repo("mount-to").await;
        t.push_blob(&from, b"something else").await;
        let data = b"not in the source repository".to_vec();
        let digest = sha256(&data);
        let r = t
            .send(
                "POST",
                &format!(
                    "/v2/{to}/blobs/uploads/?mount={}&from={}",
                    encode_query(&digest),
                    encode_query(&from)
                ),
                &[],
                Bytes::new(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        // The session it opened finishes the push.
        let location = r.header("location").to_string();
        t.send(
            "PUT",
            &with_query(&location, &format!("digest={}", encode_query(&digest))),
            &[("content-type", "application/octet-stream")],
            data,
        )
        .await
        .expect(StatusCode::CREATED);
    }

    #[tokio::test]
    async fn sha512_blobs_push_monolithically_and_in_chunks() {
        let t = target().await;
        let repo = t.repo("push").await;
        let data = b"hashed with sha512".to_vec();
        let digest = sha512(&data);
        t.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={}", encode_query(&digest)),
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
        let r = t.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body, data);
        assert_eq!(r.header("docker-content-digest"), digest);

        let location = t.start_upload(&repo).await;
        let r = t
            .send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "0-8"),
                ],
                b"chunked, ".to_vec(),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let location = r.header("location").to_string();
        let digest = sha512(b"chunked, sha512");
        t.send(
            "PUT",
            &with_query(&location, &format!("digest={}", encode_query(&digest))),
            &[
                ("content-type", "application/octet-stream"),
                ("content-range", "9-14"),
            ],
            b"sha512".to_vec(),
        )
        .await
        .expect(StatusCode::CREATED);
        t.head(&format!("/v2/{repo}/blobs/{digest}"))
            .await
            .expect(StatusCode::OK);
    }

    #[tokio::test]
    async fn oci_image_manifest_put_by_tag_is_201_with_location_and_digest() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = t.image_manifest(&repo, "oci-image", |_| {}).await;
        let r = t.put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await;
        r.expect(StatusCode::CREATED);
        assert!(r
            .header("location")
            .contains(&format!("/v2/{repo}/manifests/")));
        assert_eq!(r.header("docker-content-digest"), sha256(&bytes));
        t.get(&format!("/v2/{repo}/manifests/v1"))
            .await
            .expect(StatusCode::OK);
    }

    #[tokio::test]
    async fn manifest_put_by_digest_is_201() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = t.image_manifest(&repo, "by-digest", |_| {}).await;
        let digest = sha256(&bytes);
        let r = t.put_manifest(&repo, &digest, OCI_MANIFEST, &bytes).await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("docker-content-digest"), digest);
        let r = t.get(&format!("/v2/{repo}/manifests/{digest}")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body, bytes);
    }

    #[tokio::test]
    async fn manifest_put_by_sha512_digest_is_served_under_it() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = t.image_manifest(&repo, "sha512-manifest", |_| {}).await;
        let digest = sha512(&bytes);
        let r = t.put_manifest(&repo, &digest, OCI_MANIFEST, &bytes).await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("docker-content-digest"), digest);
        let r = t.get(&format!("/v2/{repo}/manifests/{digest}")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body, bytes);
        assert_eq!(r.header("docker-content-digest"), digest);
    }

    #[tokio::test]
    async fn oci_image_index_put_is_201_and_served_with_its_type() {
        let t = target().await;
        let repo = t.repo("push").await;
        let amd = t.push_image(&repo, "amd64", "index-amd64").await;
        let arm = t.push_image(&repo, "arm64", "index-arm64").await;
        let mut a = amd.descriptor();
        a["platform"] = json!({"architecture": "amd64", "os": "linux"});
        let mut b = arm.descriptor();
        b["platform"] = json!({"architecture": "arm64", "os": "linux"});
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [a, b],
        }))
        .unwrap();
        let r = t.put_manifest(&repo, "multi", OCI_INDEX, &index).await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("docker-content-digest"), sha256(&index));
        let r = t.get(&format!("/v2/{repo}/manifests/multi")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("content-type"), OCI_INDEX);
        assert_eq!(r.body, index);
    }

    #[tokio::test]
    async fn docker_schema2_manifest_put_is_201_and_served_with_its_type() {
        let t = target().await;
        let repo = t.repo("push").await;
        let config = t.push_blob(&repo, &config_bytes("docker")).await;
        let layer = t.push_blob(&repo, b"docker layer").await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(DOCKER_CONFIG),
            "layers": [layer.descriptor(DOCKER_LAYER)],
        }))
        .unwrap();
        let r = t
            .put_manifest(&repo, "docker", DOCKER_MANIFEST, &manifest)
            .await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("docker-content-digest"), sha256(&manifest));
        let r = t.get(&format!("/v2/{repo}/manifests/docker")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("content-type"), DOCKER_MANIFEST);
        assert_eq!(r.body, manifest);
    }

    #[tokio::test]
    async fn docker_manifest_list_put_is_201_and_served_with_its_type() {
        let t = target().await;
        let repo = t.repo("push").await;
        let config = t.push_blob(&repo, &config_bytes("docker-list")).await;
        let layer = t.push_blob(&repo, b"docker list layer").await;
        let child = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(DOCKER_CONFIG),
            "layers": [layer.descriptor(DOCKER_LAYER)],
        }))
        .unwrap();
        let child_digest = sha256(&child);
        t.put_manifest(&repo, &child_digest, DOCKER_MANIFEST, &child)
            .await
            .expect(StatusCode::CREATED);
        let list = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [{
                "mediaType": DOCKER_MANIFEST,
                "digest": child_digest,
                "size": child.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            }],
        }))
        .unwrap();
        let r = t.put_manifest(&repo, "list", DOCKER_LIST, &list).await;
        r.expect(StatusCode::CREATED);
        let r = t.get(&format!("/v2/{repo}/manifests/list")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("content-type"), DOCKER_LIST);
        assert_eq!(r.body, list);
    }

    #[tokio::test]
    async fn manifest_put_whose_layer_is_missing_is_refused() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = t
            .image_manifest(&repo, "missing-layer", |doc| {
                let absent = Blob {
                    digest: sha256(b"layer never pushed"),
                    size: 18,
                };
                doc["layers"]
                    .as_array_mut()
                    .unwrap()
                    .push(absent.descriptor(OCI_LAYER));
            })
            .await;
        t.put_manifest(&repo, "v1", OCI_MANIFEST, &bytes)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
        t.get(&format!("/v2/{repo}/manifests/v1"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn manifest_put_whose_config_is_missing_is_refused() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = t
            .image_manifest(&repo, "missing-config", |doc| {
                doc["config"] = Blob {
                    digest: sha256(b"config never pushed"),
                    size: 19,
                }
                .descriptor(OCI_CONFIG);
            })
            .await;
        t.put_manifest(&repo, "v1", OCI_MANIFEST, &bytes)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    }

    #[tokio::test]
    async fn index_put_whose_child_manifest_is_missing_is_refused() {
        let t = target().await;
        let repo = t.repo("push").await;
        let absent = sha256(b"a manifest never pushed");
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": absent, "size": 23}],
        }))
        .unwrap();
        t.put_manifest(&repo, "multi", OCI_INDEX, &index)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    }

    /// An image manifest of exactly `size` bytes, padded with an annotation.
    async fn manifest_of_size(t: &Target, repo: &str, size: usize) -> Vec<u8> {
        let base = t
            .image_manifest(repo, "large", |doc| {
                doc["annotations"] = json!({"org.example.padding": ""});
            })
            .await;
        let mut doc: Value = serde_json::from_slice(&base).unwrap();
        doc["annotations"]["org.example.padding"] = json!("p".repeat(size - base.len()));
        let bytes = serde_json::to_vec(&doc).unwrap();
        assert_eq!(bytes.len(), size);
        bytes
    }

    #[tokio::test]
    async fn manifest_of_4_mib_is_accepted() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = manifest_of_size(&t, &repo, FOUR_MIB).await;
        t.put_manifest(&repo, "large", OCI_MANIFEST, &bytes)
            .await
            .expect(StatusCode::CREATED);
        let r = t.get(&format!("/v2/{repo}/manifests/large")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.body.len(), FOUR_MIB);
    }

    #[tokio::test]
    async fn manifest_over_4_mib_is_refused_as_too_large() {
        let t = target().await;
        let repo = t.repo("push").await;
        let bytes = manifest_of_size(&t, &repo, FOUR_MIB + 1).await;
        let r = t.put_manifest(&repo, "huge", OCI_MANIFEST, &bytes).await;
        // The spec allows 413 Payload Too Large, or refusing it as an invalid manifest.
        if r.status == StatusCode::BAD_REQUEST {
            r.expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
        } else {
            r.expect(StatusCode::PAYLOAD_TOO_LARGE);
        }
        t.get(&format!("/v2/{repo}/manifests/huge"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn pushing_a_tag_again_moves_it() {
        let t = target().await;
        let repo = t.repo("push").await;
        t.push_image(&repo, "latest", "first").await;
        let second = t.push_image(&repo, "latest", "second").await;
        let r = t.get(&format!("/v2/{repo}/manifests/latest")).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("docker-content-digest"), second.digest);
    }
}

// ---------------------------------------------------------------------------------
// Content discovery
// ---------------------------------------------------------------------------------

mod discovery {
    use super::*;

    async fn repo_with_tags(t: &Target, tags: &[&str]) -> String {
        let repo = t.repo("tags").await;
        let bytes = t.image_manifest(&repo, "tagged", |_| {}).await;
        for tag in tags {
            t.put_manifest(&repo, tag, OCI_MANIFEST, &bytes)
                .await
                .expect(StatusCode::CREATED);
        }
        repo
    }

    fn tags_of(r: &Reply) -> Vec<String> {
        r.json()["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no tags array: {}", r.text()))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    /// The target of a `Link: <url>; rel="next"` header.
    fn next_link(r: &Reply) -> String {
        let link = r.header("link");
        assert!(link.contains("rel=\"next\""), "{link}");
        let start = link.find('<').unwrap() + 1;
        let end = link.find('>').unwrap();
        link[start..end].to_string()
    }

    #[tokio::test]
    async fn tags_list_is_complete_and_lexical() {
        let t = target().await;
        let repo = repo_with_tags(&t, &["v2", "latest", "v1", "alpha"]).await;
        let r = t.get(&format!("/v2/{repo}/tags/list")).await;
        r.expect(StatusCode::OK);
        assert!(r.header("content-type").starts_with("application/json"));
        assert_eq!(r.json()["name"], repo.as_str());
        assert_eq!(tags_of(&r), ["alpha", "latest", "v1", "v2"]);
        assert!(r.opt_header("link").is_none());
    }

    #[tokio::test]
    async fn tags_list_n_limits_the_page_and_links_the_next() {
        let t = target().await;
        let repo = repo_with_tags(&t, &["a", "b", "c", "d", "e"]).await;
        let r = t.get(&format!("/v2/{repo}/tags/list?n=2")).await;
        r.expect(StatusCode::OK);
        assert_eq!(tags_of(&r), ["a", "b"]);
        let next = next_link(&r);
        assert!(next.contains(&format!("/v2/{repo}/tags/list?")), "{next}");
        let r = t.get(&next).await;
        r.expect(StatusCode::OK);
        assert_eq!(tags_of(&r), ["c", "d"]);
        let r = t.get(&next_link(&r)).await;
        r.expect(StatusCode::OK);
        assert_eq!(tags_of(&r), ["e"]);
        assert!(r.opt_header("link").is_none(), "no page after the last");
    }

    #[tokio::test]
    async fn tags_list_last_starts_after_the_given_tag() {
        let t = target().await;
        let repo = repo_with_tags(&t, &["a", "b", "c", "d"]).await;
        let r = t.get(&format!("/v2/{repo}/tags/list?n=2&last=b")).await;
        r.expect(StatusCode::OK);
        assert_eq!(tags_of(&r), ["c", "d"]);
        let r = t.get(&format!("/v2/{repo}/tags/list?last=a")).await;
        r.expect(StatusCode::OK);
        assert_eq!(tags_of(&r), ["b", "c", "d"]);
    }

    #[tokio::test]
    async fn tags_list_of_an_unknown_repository_is_name_unknown() {
        let t = target().await;
        let name = format!("conformance/absent-{}", unique());
        t.get(&format!("/v2/{name}/tags/list"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    }

    fn repositories_of(r: &Reply) -> Vec<String> {
        r.json()["repositories"]
            .as_array()
            .unwrap_or_else(|| panic!("no repositories array: {}", r.text()))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn catalog_lists_repositories_in_order() {
        let t = target().await;
        let prefix = format!("conformance/catalog-{}", unique());
        let mut names = Vec::new();
        for suffix in ["c", "a", "b"] {
            let repo = t.named_repo(&format!("{prefix}-{suffix}")).await;
            t.push_image(&repo, "v1", suffix).await;
            names.push(repo);
        }
        let r = t.get("/v2/_catalog").await;
        r.expect(StatusCode::OK);
        assert!(r.header("content-type").starts_with("application/json"));
        let listed = repositories_of(&r);
        let mine: Vec<&String> = listed.iter().filter(|n| n.starts_with(&prefix)).collect();
        assert_eq!(mine, [&names[1], &names[2], &names[0]]);
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted);
    }

    #[tokio::test]
    async fn catalog_paginates_with_n_last_and_link() {
        let t = target().await;
        let prefix = format!("conformance/catalog-{}", unique());
        for suffix in ["a", "b", "c"] {
            let repo = t.named_repo(&format!("{prefix}-{suffix}")).await;
            t.push_image(&repo, "v1", suffix).await;
        }
        let r = t
            .get(&format!(
                "/v2/_catalog?n=1&last={}",
                encode_query(&format!("{prefix}-a"))
            ))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(repositories_of(&r), [format!("{prefix}-b")]);
        let r = t.get(&next_link(&r)).await;
        r.expect(StatusCode::OK);
        assert_eq!(repositories_of(&r), [format!("{prefix}-c")]);
    }

    #[tokio::test]
    async fn manifest_put_with_a_subject_answers_oci_subject() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        let image = t.push_image(&repo, "v1", "subject").await;
        // push_referrer asserts the OCI-Subject header.
        t.push_referrer(&repo, &image, SIGNATURE_TYPE, "sig").await;
    }

    #[tokio::test]
    async fn manifest_whose_subject_is_absent_is_accepted() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        let absent = Pushed {
            bytes: b"{}".to_vec(),
            digest: sha256(b"a subject pushed later"),
            media_type: OCI_MANIFEST.into(),
        };
        t.push_referrer(&repo, &absent, SIGNATURE_TYPE, "early")
            .await;
        let r = t
            .get(&format!("/v2/{repo}/referrers/{}", absent.digest))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn referrers_list_every_manifest_with_the_subject() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        let image = t.push_image(&repo, "v1", "referred").await;
        let sig = t.push_referrer(&repo, &image, SIGNATURE_TYPE, "sig").await;
        let sbom = t.push_referrer(&repo, &image, SBOM_TYPE, "sbom").await;
        let r = t
            .get(&format!("/v2/{repo}/referrers/{}", image.digest))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("content-type"), OCI_INDEX);
        let index = r.json();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], OCI_INDEX);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2, "{index}");
        for (pushed, artifact_type, seed) in
            [(&sig, SIGNATURE_TYPE, "sig"), (&sbom, SBOM_TYPE, "sbom")]
        {
            let d = manifests
                .iter()
                .find(|d| d["digest"] == pushed.digest.as_str())
                .unwrap_or_else(|| panic!("{} not listed in {index}", pushed.digest));
            assert_eq!(d["mediaType"], OCI_MANIFEST);
            assert_eq!(d["size"], pushed.bytes.len());
            assert_eq!(d["artifactType"], artifact_type);
            assert_eq!(d["annotations"]["org.example.seed"], seed);
        }
    }

    #[tokio::test]
    async fn referrers_filter_by_artifact_type_and_say_so() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        let image = t.push_image(&repo, "v1", "filtered").await;
        let sig = t.push_referrer(&repo, &image, SIGNATURE_TYPE, "sig").await;
        t.push_referrer(&repo, &image, SBOM_TYPE, "sbom").await;
        let r = t
            .get(&format!(
                "/v2/{repo}/referrers/{}?artifactType={}",
                image.digest,
                encode_query(SIGNATURE_TYPE)
            ))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("oci-filters-applied"), "artifactType");
        let index = r.json();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "{index}");
        assert_eq!(manifests[0]["digest"], sig.digest.as_str());
        // Without a filter, no filter is claimed.
        let r = t
            .get(&format!("/v2/{repo}/referrers/{}", image.digest))
            .await;
        assert!(r.opt_header("oci-filters-applied").is_none());
    }

    #[tokio::test]
    async fn referrers_of_a_manifest_without_artifact_type_use_its_config_type() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        let image = t.push_image(&repo, "v1", "config-typed").await;
        let config_type = "application/vnd.example.config.v1+json";
        let config = t.push_blob(&repo, b"{\"typed\":true}").await;
        let layer = t.push_blob(&repo, b"typed payload").await;
        let doc = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(config_type),
            "layers": [layer.descriptor("application/octet-stream")],
            "subject": image.descriptor(),
        }))
        .unwrap();
        let digest = sha256(&doc);
        t.put_manifest(&repo, &digest, OCI_MANIFEST, &doc)
            .await
            .expect(StatusCode::CREATED);
        let r = t
            .get(&format!("/v2/{repo}/referrers/{}", image.digest))
            .await;
        r.expect(StatusCode::OK);
        let index = r.json();
        assert_eq!(
            index["manifests"][0]["artifactType"], config_type,
            "{index}"
        );
    }

    #[tokio::test]
    async fn referrers_of_an_unknown_digest_are_an_empty_index_not_404() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        t.push_image(&repo, "v1", "lonely").await;
        let r = t
            .get(&format!(
                "/v2/{repo}/referrers/{}",
                sha256(b"nobody refers to me")
            ))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.header("content-type"), OCI_INDEX);
        let index = r.json();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(index["manifests"], json!([]));
    }

    #[tokio::test]
    async fn referrers_of_a_malformed_digest_are_400() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        t.push_image(&repo, "v1", "malformed").await;
        let r = t.get(&format!("/v2/{repo}/referrers/sha256:not-hex")).await;
        r.expect(StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn an_index_with_a_subject_is_a_referrer_too() {
        let t = target().await;
        let repo = t.repo("referrers").await;
        let image = t.push_image(&repo, "v1", "index-subject").await;
        let child = t.push_image(&repo, "child", "index-child").await;
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": SBOM_TYPE,
            "manifests": [child.descriptor()],
            "subject": image.descriptor(),
        }))
        .unwrap();
        let digest = sha256(&index);
        let r = t.put_manifest(&repo, &digest, OCI_INDEX, &index).await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("oci-subject"), image.digest);
        let r = t
            .get(&format!("/v2/{repo}/referrers/{}", image.digest))
            .await;
        let listed = r.json();
        assert_eq!(
            listed["manifests"][0]["digest"],
            digest.as_str(),
            "{listed}"
        );
        assert_eq!(listed["manifests"][0]["mediaType"], OCI_INDEX);
        assert_eq!(listed["manifests"][0]["artifactType"], SBOM_TYPE);
    }
}

// ---------------------------------------------------------------------------------
// Content management
// ---------------------------------------------------------------------------------

mod management {
    use super::*;

    #[tokio::test]
    async fn deleting_a_tag_leaves_the_manifest() {
        let t = target().await;
        let repo = t.repo("delete").await;
        let m = t.push_image(&repo, "v1", "delete-tag").await;
        t.send(
            "DELETE",
            &format!("/v2/{repo}/manifests/v1"),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
        t.get(&format!("/v2/{repo}/manifests/v1"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        t.get(&format!("/v2/{repo}/manifests/{}", m.digest))
            .await
            .expect(StatusCode::OK);
    }

    #[tokio::test]
    async fn deleting_a_manifest_by_digest_removes_it_and_its_tags() {
        let t = target().await;
        let repo = t.repo("delete").await;
        let m = t.push_image(&repo, "v1", "delete-manifest").await;
        t.send(
            "DELETE",
            &format!("/v2/{repo}/manifests/{}", m.digest),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
        t.get(&format!("/v2/{repo}/manifests/{}", m.digest))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        t.get(&format!("/v2/{repo}/manifests/v1"))
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn deleting_an_unknown_manifest_is_404() {
        let t = target().await;
        let repo = t.repo("delete").await;
        t.push_image(&repo, "v1", "delete-unknown").await;
        t.send(
            "DELETE",
            &format!("/v2/{repo}/manifests/{}", sha256(b"never a manifest")),
            &[],
            Bytes::new(),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }

    #[tokio::test]
    async fn deleting_a_blob_removes_it_from_the_repository() {
        let t = target().await;
        let repo = t.repo("delete").await;
        let blob = t.push_blob(&repo, b"short-lived blob").await;
        t.send(
            "DELETE",
            &format!("/v2/{repo}/blobs/{}", blob.digest),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
        t.get(&format!("/v2/{repo}/blobs/{}", blob.digest))
            .await
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
        t.head(&format!("/v2/{repo}/blobs/{}", blob.digest))
            .await
            .expect(StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn deleting_an_unknown_blob_is_404() {
        let t = target().await;
        let repo = t.repo("delete").await;
        t.push_blob(&repo, b"a neighbour").await;
        t.send(
            "DELETE",
            &format!("/v2/{repo}/blobs/{}", sha256(b"never a blob")),
            &[],
            Bytes::new(),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }

    #[tokio::test]
    async fn deleting_a_referrer_drops_it_from_the_referrers_list() {
        let t = target().await;
        let repo = t.repo("delete").await;
        let image = t.push_image(&repo, "v1", "delete-referrer").await;
        let sig = t.push_referrer(&repo, &image, SIGNATURE_TYPE, "sig").await;
        let sbom = t.push_referrer(&repo, &image, SBOM_TYPE, "sbom").await;
        t.send(
            "DELETE",
            &format!("/v2/{repo}/manifests/{}", sig.digest),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
        let r = t
            .get(&format!("/v2/{repo}/referrers/{}", image.digest))
            .await;
        r.expect(StatusCode::OK);
        let index = r.json();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "{index}");
        assert_eq!(manifests[0]["digest"], sbom.digest.as_str());
    }
}

// ---------------------------------------------------------------------------------
// Error codes: each of the spec's codes, provoked on purpose
// ---------------------------------------------------------------------------------

mod error_codes {
    use super::*;

    #[tokio::test]
    async fn blob_unknown() {
        let t = target().await;
        let repo = t.repo("errors").await;
        t.push_blob(&repo, b"present").await;
        t.get(&format!("/v2/{repo}/blobs/{}", sha256(b"absent")))
            .await
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }

    #[tokio::test]
    async fn blob_upload_invalid_for_a_malformed_content_range() {
        let t = target().await;
        let repo = t.repo("errors").await;
        let location = t.start_upload(&repo).await;
        t.send(
            "PATCH",
            &location,
            &[
                ("content-type", "application/octet-stream"),
                ("content-range", "bytes=a-b"),
            ],
            b"data".to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    }

    #[tokio::test]
    async fn blob_upload_unknown() {
        let t = target().await;
        let repo = t.repo("errors").await;
        let location = t.start_upload(&repo).await;
        t.send("DELETE", &location, &[], Bytes::new()).await;
        t.get(&location)
            .await
            .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    }

    #[tokio::test]
    async fn digest_invalid_for_a_mismatch_and_for_a_malformed_digest() {
        let t = target().await;
        let repo = t.repo("errors").await;
        t.send(
            "POST",
            &format!(
                "/v2/{repo}/blobs/uploads/?digest={}",
                encode_query(&sha256(b"other"))
            ),
            &[("content-type", "application/octet-stream")],
            b"bytes".to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
        let location = t.start_upload(&repo).await;
        t.send(
            "PUT",
            &with_query(&location, "digest=sha256:zzzz"),
            &[("content-type", "application/octet-stream")],
            b"bytes".to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }

    #[tokio::test]
    async fn digest_invalid_for_a_manifest_put_under_another_digest() {
        let t = target().await;
        let repo = t.repo("errors").await;
        let bytes = t.image_manifest(&repo, "wrong-digest", |_| {}).await;
        t.put_manifest(&repo, &sha256(b"not the manifest"), OCI_MANIFEST, &bytes)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }

    #[tokio::test]
    async fn manifest_blob_unknown() {
        let t = target().await;
        let repo = t.repo("errors").await;
        let bytes = t
            .image_manifest(&repo, "blob-unknown", |doc| {
                doc["layers"][0]["digest"] = json!(sha256(b"layer not pushed"));
            })
            .await;
        t.put_manifest(&repo, "v1", OCI_MANIFEST, &bytes)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    }

    #[tokio::test]
    async fn manifest_invalid() {
        let t = target().await;
        let repo = t.repo("errors").await;
        t.push_blob(&repo, b"anything").await;
        for body in [&b"not json at all"[..], b"{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\"}"] {
            t.put_manifest(&repo, "v1", OCI_MANIFEST, body)
                .await
                .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
        }
    }

    #[tokio::test]
    async fn manifest_unknown() {
        let t = target().await;
        let repo = t.repo("errors").await;
        t.push_image(&repo, "v1", "manifest-unknown").await;
        t.get(&format!("/v2/{repo}/manifests/v2"))
            .await
            .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }

    #[tokio::test]
    async fn name_invalid() {
        let t = target().await;
        t.send(
            "POST",
            "/v2/Conformance/Upper_Case/blobs/uploads/",
            &[],
            Bytes::new(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    }

    #[tokio::test]
    async fn name_unknown() {
        let t = target().await;
        t.get(&format!("/v2/conformance/absent-{}/tags/list", unique()))
            .await
            .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    }

    #[tokio::test]
    async fn size_invalid_when_a_chunk_is_not_the_length_its_range_claims() {
        let t = target().await;
        let repo = t.repo("errors").await;
        let location = t.start_upload(&repo).await;
        t.send(
            "PATCH",
            &location,
            &[
                ("content-type", "application/octet-stream"),
                ("content-range", "0-9"),
            ],
            b"only five".to_vec(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    }

    #[tokio::test]
    async fn unauthorized_without_or_with_bad_credentials() {
        let t = target().await;
        assert!(
            t.authorization.is_some(),
            "the target takes anonymous requests, so UNAUTHORIZED cannot be provoked; \
             run it with authentication and WHARF_CONFORMANCE_BASIC"
        );
        let repo = t.repo("errors").await;
        for authorization in [None, Some(basic("AWS:not-a-token").as_str())] {
            for (method, path) in [
                ("GET", "/v2/".to_string()),
                ("GET", format!("/v2/{repo}/tags/list")),
                ("POST", format!("/v2/{repo}/blobs/uploads/")),
            ] {
                let empty = Full::new(Bytes::new()).map_err(|e| match e {}).boxed();
                let r = t.request(method, &path, &[], empty, authorization).await;
                r.expect_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
                // The challenge says how to authenticate (Basic or Bearer, with a realm).
                let challenge = r.header("www-authenticate");
                assert!(challenge.contains("realm="), "{challenge}");
            }
        }
    }

    /// A hook that knows every caller and lets them read, never write.
    struct ReadOnly;

    #[async_trait]
    impl RegistryAuth for ReadOnly {
        async fn authorize(
            &self,
            _headers: &HeaderMap,
            _repository: Option<&str>,
            action: Action,
        ) -> Result<(), AuthChallenge> {
            match action {
                Action::Pull => Ok(()),
                _ => Err(AuthChallenge::Denied("this caller may only pull".into())),
            }
        }
    }

    #[tokio::test]
    async fn denied_when_the_caller_may_not_do_it() {
        // Always Wharf, in-process: see the module documentation.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let blobs = Arc::new(wharf_registry::FsBlobStore::new(dir.path()).unwrap());
        let router = wharf_registry::registry_router(wharf_registry::RegistryState::new(
            store,
            blobs,
            Arc::new(ReadOnly),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let t = Target {
            base: format!("http://{addr}"),
            authorization: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
            wharf: None,
        };
        t.get("/v2/").await.expect(StatusCode::OK);
        t.send("POST", "/v2/team/app/blobs/uploads/", &[], Bytes::new())
            .await
            .expect_error(StatusCode::FORBIDDEN, "DENIED");
        t.send(
            "DELETE",
            &format!("/v2/team/app/blobs/{}", sha256(b"x")),
            &[],
            Bytes::new(),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "DENIED");
    }

    #[tokio::test]
    async fn unsupported_method_on_an_endpoint() {
        let t = target().await;
        let repo = t.repo("errors").await;
        t.push_image(&repo, "v1", "unsupported").await;
        t.send(
            "POST",
            &format!("/v2/{repo}/manifests/v1"),
            &[],
            Bytes::new(),
        )
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
    }
}

// ---------------------------------------------------------------------------------
// Headers every response carries
// ---------------------------------------------------------------------------------

mod response_headers {
    use super::*;

    /// Every response states its length (except a 204, which has no body and may not
    /// carry one), a HEAD states the length its GET would have, and every body has a
    /// type.
    fn assert_framed(r: &Reply, what: &str) {
        if r.status == StatusCode::NO_CONTENT {
            assert!(r.body.is_empty(), "{what}: 204 with a body");
            if let Some(len) = r.opt_header("content-length") {
                assert_eq!(len, "0", "{what}");
            }
            return;
        }
        let len = r
            .opt_header("content-length")
            .unwrap_or_else(|| panic!("{what}: {} without Content-Length", r.status));
        if r.method != Method::HEAD {
            assert_eq!(len, r.body.len().to_string(), "{what}: Content-Length");
        }
        if !r.body.is_empty() || (r.method == Method::HEAD && len != "0") {
            assert!(
                r.opt_header("content-type").is_some(),
                "{what}: {} with a body but no Content-Type",
                r.status
            );
        }
    }

    #[tokio::test]
    async fn every_response_has_content_length_and_content_type() {
        let t = target().await;
        let repo = t.repo("headers").await;
        let image = t.push_image(&repo, "v1", "headers").await;
        let blob = t.push_blob(&repo, b"0123456789").await;
        let mut replies = Vec::new();
        replies.push(("GET /v2/", t.get("/v2/").await));
        replies.push(("GET catalog", t.get("/v2/_catalog").await));
        replies.push(("GET tags", t.get(&format!("/v2/{repo}/tags/list")).await));
        replies.push((
            "GET manifest",
            t.get(&format!("/v2/{repo}/manifests/v1")).await,
        ));
        replies.push((
            "HEAD manifest",
            t.head(&format!("/v2/{repo}/manifests/v1")).await,
        ));
        let blob_path = format!("/v2/{repo}/blobs/{}", blob.digest);
        replies.push(("GET blob", t.get(&blob_path).await));
        replies.push(("HEAD blob", t.head(&blob_path).await));
        replies.push((
            "GET blob range",
            t.send("GET", &blob_path, &[("range", "bytes=1-3")], Bytes::new())
                .await,
        ));
        let post = t
            .send(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await;
        let location = post.header("location").to_string();
        replies.push(("POST upload", post));
        let patch = t
            .send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", "0-2"),
                ],
                b"abc".to_vec(),
            )
            .await;
        let location = patch.header("location").to_string();
        replies.push(("PATCH upload", patch));
        replies.push(("GET upload", t.get(&location).await));
        replies.push((
            "PUT upload",
            t.send(
                "PUT",
                &with_query(
                    &location,
                    &format!("digest={}", encode_query(&sha256(b"abc"))),
                ),
                &[],
                Bytes::new(),
            )
            .await,
        ));
        replies.push((
            "PUT manifest",
            t.put_manifest(&repo, "v2", OCI_MANIFEST, &image.bytes)
                .await,
        ));
        replies.push((
            "GET referrers",
            t.get(&format!("/v2/{repo}/referrers/{}", image.digest))
                .await,
        ));
        replies.push((
            "DELETE tag",
            t.send(
                "DELETE",
                &format!("/v2/{repo}/manifests/v2"),
                &[],
                Bytes::new(),
            )
            .await,
        ));
        replies.push((
            "DELETE blob",
            t.send("DELETE", &blob_path, &[], Bytes::new()).await,
        ));
        replies.push(("GET unknown blob", t.get(&blob_path).await));
        replies.push(("HEAD unknown blob", t.head(&blob_path).await));
        replies.push((
            "GET unknown manifest",
            t.get(&format!("/v2/{repo}/manifests/nope")).await,
        ));
        for (what, r) in &replies {
            assert!(r.status.as_u16() < 500, "{what}: {}", r.status);
            assert_framed(r, what);
        }
    }

    #[tokio::test]
    async fn docker_content_digest_on_every_content_response() {
        let t = target().await;
        let repo = t.repo("headers").await;
        let bytes = t.image_manifest(&repo, "digest-headers", |_| {}).await;
        let digest = sha256(&bytes);
        let r = t.put_manifest(&repo, "v1", OCI_MANIFEST, &bytes).await;
        r.expect(StatusCode::CREATED);
        assert_eq!(r.header("docker-content-digest"), digest);
        for method in ["GET", "HEAD"] {
            for reference in ["v1", digest.as_str()] {
                let r = t
                    .send(
                        method,
                        &format!("/v2/{repo}/manifests/{reference}"),
                        &[],
                        Bytes::new(),
                    )
                    .await;
                r.expect(StatusCode::OK);
                assert_eq!(
                    r.header("docker-content-digest"),
                    digest,
                    "{method} {reference}"
                );
            }
        }
        let blob = t.push_blob(&repo, b"digest header blob").await;
        for method in ["GET", "HEAD"] {
            let r = t
                .send(
                    method,
                    &format!("/v2/{repo}/blobs/{}", blob.digest),
                    &[],
                    Bytes::new(),
                )
                .await;
            r.expect(StatusCode::OK);
            assert_eq!(r.header("docker-content-digest"), blob.digest, "{method}");
        }
    }
}
