//! The OCI Distribution HTTP API: a request is parsed into a [`Route`] at the edge,
//! authorized, then handled by one function per operation.

use crate::auth::{Action, AuthChallenge, RegistryAuth};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::{MAX_MANIFEST_BYTES, OCI_INDEX};
use crate::metadata::{ManifestRecord, Metadata, UploadRecord};
use crate::names::{is_valid_repository, is_valid_tag};
use crate::storage::BlobStore;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use wharf_store::Store;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// What the router serves from: metadata in the store, bytes in blob storage, and the
/// authorization hook.
#[derive(Clone)]
pub struct RegistryState {
    metadata: Metadata,
    blobs: Arc<dyn BlobStore>,
    auth: Arc<dyn RegistryAuth>,
}

impl RegistryState {
    /// A registry over `store` (records), `blobs` (content) and `auth`.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        auth: Arc<dyn RegistryAuth>,
    ) -> Self {
        Self {
            metadata: Metadata::new(store),
            blobs,
            auth,
        }
    }

    /// A registry over `metadata` (records, with its creation rule and clock), `blobs`
    /// and `auth`.
    pub fn with_metadata(
        metadata: Metadata,
        blobs: Arc<dyn BlobStore>,
        auth: Arc<dyn RegistryAuth>,
    ) -> Self {
        Self {
            metadata,
            blobs,
            auth,
        }
    }

    /// The typed records (for the ECR API layered on top).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// The router serving `/v2/…`; every other path is a 404 in the spec's error shape.
pub fn registry_router(state: RegistryState) -> Router {
    Router::new().fallback(dispatch).with_state(Arc::new(state))
}

/// A request path, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/manifests/<reference>`
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(String, String),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(String),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(String, String),
    /// `/v2/<name>/tags/list`
    Tags(String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(String, String),
}

impl Route {
    /// Parses a request path; `None` when it is not a registry path.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| segs[..n - k].join("/");
        if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
            return Some(Route::Tags(name(2)));
        }
        if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Some(Route::UploadStart(name(2)));
        }
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            let id = segs[n - 1];
            return Some(if id.is_empty() {
                Route::UploadStart(name(3))
            } else {
                Route::Upload(name(3), id.to_string())
            });
        }
        if n >= 3 {
            let last = segs[n - 1].to_string();
            match segs[n - 2] {
                "manifests" => return Some(Route::Manifest(name(2), last)),
                "blobs" => return Some(Route::Blob(name(2), last)),
                "referrers" => return Some(Route::Referrers(name(2), last)),
                _ => {}
            }
        }
        None
    }

    fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Tags(n)
            | Route::Referrers(n, _) => Some(n),
        }
    }
}

fn action_for(method: &Method) -> Action {
    match *method {
        Method::GET | Method::HEAD => Action::Pull,
        Method::DELETE => Action::Delete,
        _ => Action::Push,
    }
}

async fn dispatch(State(state): State<Arc<RegistryState>>, request: Request) -> Response {
    let mut response = match handle(&state, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

async fn authorize(
    state: &RegistryState,
    headers: &HeaderMap,
    repository: Option<&str>,
    action: Action,
) -> Result<(), RegistryError> {
    state
        .auth
        .authorize(headers, repository, action)
        .await
        .map_err(|c| match c {
            AuthChallenge::Unauthenticated(challenge) => RegistryError::Unauthorized { challenge },
            AuthChallenge::Denied(d) => RegistryError::Denied(d),
        })
}

async fn handle(state: &RegistryState, request: Request) -> Result<Response, RegistryError> {
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path())
        .ok_or_else(|| RegistryError::NameUnknown(format!("no route for {}", parts.uri.path())))?;
    if let Some(name) = route.repository() {
        if !is_valid_repository(name) {
            return Err(RegistryError::NameInvalid(format!(
                "invalid repository name {name:?}"
            )));
        }
    }
    let method = parts.method.clone();
    authorize(
        state,
        &parts.headers,
        route.repository(),
        action_for(&method),
    )
    .await?;
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let head = method == Method::HEAD;
    let req = Req {
        state,
        headers: &parts.headers,
        query: &query,
    };
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(json_response(StatusCode::OK, "{}", head)),
        (Route::Catalog, Method::GET) => req.catalog().await,
        (Route::Manifest(n, r), Method::GET | Method::HEAD) => req.get_manifest(&n, &r, head).await,
        (Route::Manifest(n, r), Method::PUT) => req.put_manifest(&n, &r, body).await,
        (Route::Manifest(n, r), Method::DELETE) => req.delete_manifest(&n, &r).await,
        (Route::Blob(n, d), Method::GET | Method::HEAD) => req.get_blob(&n, &d, head).await,
        (Route::Blob(n, d), Method::DELETE) => req.delete_blob(&n, &d).await,
        (Route::UploadStart(n), Method::POST) => req.start_upload(&n, body).await,
        (Route::Upload(n, id), Method::GET) => req.upload_status(&n, &id).await,
        (Route::Upload(n, id), Method::PATCH) => req.patch_upload(&n, &id, body).await,
        (Route::Upload(n, id), Method::PUT) => req.finish_upload(&n, &id, body).await,
        (Route::Upload(n, id), Method::DELETE) => req.cancel_upload(&n, &id).await,
        (Route::Tags(n), Method::GET) => req.list_tags(&n).await,
        (Route::Referrers(n, d), Method::GET) => req.referrers(&n, &d).await,
        (_, m) => Err(RegistryError::Unsupported(format!(
            "{m} is not supported here"
        ))),
    }
}

fn json_response(status: StatusCode, body: impl Into<String>, head: bool) -> Response {
    let body: String = body.into();
    let len = body.len();
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        if head {
            Body::empty()
        } else {
            Body::from(body)
        },
    )
        .into_response();
    r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    r
}

fn header_value(s: &str) -> HeaderValue {
    // Every value built here is from validated names, digests and numbers.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn parse_digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse()
        .map_err(|e: crate::digest::DigestError| RegistryError::DigestInvalid(e.to_string()))
}

fn parse_upload_id(id: &str) -> Result<String, RegistryError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| RegistryError::BlobUploadUnknown(format!("no upload {id:?}")))
}

/// A manifest reference: a tag or a digest.
enum Reference {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(r: &str) -> Result<Reference, RegistryError> {
    if r.contains(':') {
        parse_digest(r).map(Reference::Digest)
    } else if is_valid_tag(r) {
        Ok(Reference::Tag(r.to_string()))
    } else {
        Err(RegistryError::TagInvalid(format!("invalid tag {r:?}")))
    }
}

/// The `Range` header value of an upload of `size` bytes.
fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Parses `Content-Range: <start>-<end>` (with an optional `bytes ` or `bytes=` prefix).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (s, e) = v.split_once('-')?;
    let (s, e) = (s.trim().parse().ok()?, e.trim().parse().ok()?);
    (s <= e).then_some((s, e))
}

/// A parsed `Range: bytes=…` against a blob of `size` bytes: `Ok(None)` for the whole
/// blob, `Err` when unsatisfiable.
fn parse_byte_range(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let spec = v.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        // Multi-range responses are not served; the whole blob is a valid answer.
        return Ok(None);
    }
    let (s, e) = spec.split_once('-').ok_or(())?;
    let (s, e) = (s.trim(), e.trim());
    let (start, end) = if s.is_empty() {
        let suffix: u64 = e.parse().map_err(|_| ())?;
        if suffix == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let start: u64 = s.parse().map_err(|_| ())?;
        let end = if e.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            e.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

struct Req<'a> {
    state: &'a RegistryState,
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
}

impl Req<'_> {
    fn meta(&self) -> &Metadata {
        &self.state.metadata
    }

    fn page(&self) -> (Option<usize>, Option<&str>) {
        let n = self.query.get("n").and_then(|n| n.parse::<usize>().ok());
        (n, self.query.get("last").map(String::as_str))
    }

    /// Applies `n`/`last` to a sorted list; the boolean says whether more follow.
    fn paginate(&self, all: Vec<String>) -> (Vec<String>, bool) {
        let (n, last) = self.page();
        let mut items: Vec<String> = match last {
            Some(last) => all.into_iter().filter(|t| t.as_str() > last).collect(),
            None => all,
        };
        match n {
            Some(n) if items.len() > n => {
                items.truncate(n);
                (items, n > 0)
            }
            _ => (items, false),
        }
    }

    fn with_link(&self, mut r: Response, path: &str, items: &[String], more: bool) -> Response {
        if let (true, Some(last), (Some(n), _)) = (more, items.last(), self.page()) {
            let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
            r.headers_mut().insert(
                header::LINK,
                header_value(&format!("<{path}?n={n}&last={last}>; rel=\"next\"")),
            );
        }
        r
    }

    async fn catalog(&self) -> Result<Response, RegistryError> {
        let mut repos = self.meta().repositories().await?;
        repos.sort();
        let (page, more) = self.paginate(repos);
        let body = serde_json::json!({ "repositories": page }).to_string();
        Ok(self.with_link(
            json_response(StatusCode::OK, body, false),
            "/v2/_catalog",
            &page,
            more,
        ))
    }

    async fn list_tags(&self, name: &str) -> Result<Response, RegistryError> {
        if !self.meta().repository_exists(name).await? {
            return Err(RegistryError::NameUnknown(format!(
                "repository {name} not found"
            )));
        }
        let tags = self.meta().tags(name).await?;
        let (page, more) = self.paginate(tags);
        let body = serde_json::json!({ "name": name, "tags": page }).to_string();
        let path = format!("/v2/{name}/tags/list");
        Ok(self.with_link(
            json_response(StatusCode::OK, body, false),
            &path,
            &page,
            more,
        ))
    }

    async fn resolve(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<(Digest, ManifestRecord), RegistryError> {
        let unknown =
            || RegistryError::ManifestUnknown(format!("manifest {reference} not found in {name}"));
        let digest = match parse_reference(reference)? {
            Reference::Digest(d) => d,
            Reference::Tag(t) => self.meta().tag(name, &t).await?.ok_or_else(unknown)?,
        };
        let record = self
            .meta()
            .manifest(name, &digest)
            .await?
            .ok_or_else(unknown)?;
        Ok((digest, record))
    }

    async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        head: bool,
    ) -> Result<Response, RegistryError> {
        let (digest, record) = self.resolve(name, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header_value(&record.media_type));
        headers.insert(CONTENT_DIGEST, header_value(&digest.to_string()));
        headers.insert(header::CONTENT_LENGTH, record.size.into());
        if head {
            return Ok((StatusCode::OK, headers, Body::empty()).into_response());
        }
        let mut reader = self
            .state
            .blobs
            .open(&digest, 0, None)
            .await?
            .ok_or_else(|| {
                RegistryError::ManifestUnknown(format!("manifest {digest} content is missing"))
            })?;
        let mut body = Vec::with_capacity(record.size.min(MAX_MANIFEST_BYTES as u64) as usize);
        reader
            .read_to_end(&mut body)
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        // ECR's lastRecordedPullTime; a failure to record it must not fail the pull.
        if let Err(e) = self.meta().record_pull(name, &digest).await {
            tracing::warn!(error = %e, "recording a pull failed");
        }
        Ok((StatusCode::OK, headers, body).into_response())
    }

    async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let reference = parse_reference(reference)?;
        let mut bytes = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| RegistryError::ManifestInvalid(format!("reading body: {e}")))?;
            if bytes.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(RegistryError::TooLarge(format!(
                    "manifests are limited to {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let (claimed, tag) = match reference {
            Reference::Digest(d) => (Some(d), None),
            Reference::Tag(t) => (None, Some(t)),
        };
        let (digest, record) = crate::images::store_manifest(
            self.meta(),
            self.state.blobs.as_ref(),
            name,
            &bytes,
            content_type,
            claimed,
            tag.as_deref(),
        )
        .await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            header_value(&format!("/v2/{name}/manifests/{digest}")),
        );
        headers.insert(CONTENT_DIGEST, header_value(&digest.to_string()));
        if let Some(subject) = &record.subject {
            headers.insert(OCI_SUBJECT, header_value(subject));
        }
        Ok((StatusCode::CREATED, headers).into_response())
    }

    async fn delete_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Response, RegistryError> {
        let deleted = match parse_reference(reference)? {
            Reference::Tag(t) => self.meta().delete_tag(name, &t).await?,
            Reference::Digest(d) => self.meta().delete_manifest(name, &d).await?,
        };
        if !deleted {
            return Err(RegistryError::ManifestUnknown(format!(
                "manifest {reference} not found in {name}"
            )));
        }
        Ok(StatusCode::ACCEPTED.into_response())
    }

    /// The size of a blob that is in repository `name`, or BLOB_UNKNOWN.
    async fn blob_size(&self, name: &str, digest: &Digest) -> Result<u64, RegistryError> {
        let unknown = || RegistryError::BlobUnknown(format!("blob {digest} not found in {name}"));
        self.meta()
            .blob_link(name, digest)
            .await?
            .ok_or_else(unknown)?;
        // A client that finds the blob may skip uploading it and reference it in a
        // manifest: keep it from garbage collection meanwhile.
        if !self
            .meta()
            .touch_blob(digest, crate::metadata::BLOB_TOUCH_INTERVAL_MILLIS)
            .await?
        {
            return Err(unknown());
        }
        self.state.blobs.stat(digest).await?.ok_or_else(unknown)
    }

    async fn get_blob(
        &self,
        name: &str,
        digest: &str,
        head: bool,
    ) -> Result<Response, RegistryError> {
        let digest = parse_digest(digest)?;
        let size = self.blob_size(name, &digest).await?;
        let range = match self.headers.get(header::RANGE) {
            None => None,
            Some(v) => match v
                .to_str()
                .map_err(|_| ())
                .and_then(|v| parse_byte_range(v, size))
            {
                Ok(r) => r,
                Err(()) => {
                    return Err(RegistryError::RangeInvalid {
                        detail: format!("range not satisfiable for a blob of {size} bytes"),
                        header: Some((header::CONTENT_RANGE, format!("bytes */{size}"))),
                    })
                }
            },
        };
        let (status, offset, length) = match range {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
            None => (StatusCode::OK, 0, size),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_DIGEST, header_value(&digest.to_string()));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(header::CONTENT_LENGTH, length.into());
        if let Some((s, e)) = range {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {s}-{e}/{size}")),
            );
        }
        if head {
            return Ok((status, headers, Body::empty()).into_response());
        }
        let reader = self
            .state
            .blobs
            .open(&digest, offset, Some(length))
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(format!("blob {digest} vanished")))?;
        let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 * 1024,
        ));
        Ok((status, headers, body).into_response())
    }

    async fn delete_blob(&self, name: &str, digest: &str) -> Result<Response, RegistryError> {
        let digest = parse_digest(digest)?;
        // The bytes stay in shared storage until garbage collection finds them
        // unreferenced by every repository.
        if !self.meta().unlink_blob(name, &digest).await? {
            return Err(RegistryError::BlobUnknown(format!(
                "blob {digest} not found in {name}"
            )));
        }
        Ok(StatusCode::ACCEPTED.into_response())
    }

    fn blob_created(name: &str, digest: &Digest) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            header_value(&format!("/v2/{name}/blobs/{digest}")),
        );
        headers.insert(CONTENT_DIGEST, header_value(&digest.to_string()));
        headers.insert(header::CONTENT_LENGTH, 0.into());
        (StatusCode::CREATED, headers).into_response()
    }

    fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            header_value(&format!("/v2/{name}/blobs/uploads/{id}")),
        );
        headers.insert(UPLOAD_UUID, header_value(id));
        headers.insert(header::RANGE, header_value(&upload_range(size)));
        headers.insert(header::CONTENT_LENGTH, 0.into());
        (status, headers).into_response()
    }

    async fn start_upload(&self, name: &str, body: Body) -> Result<Response, RegistryError> {
        if let Some(mount) = self.query.get("mount") {
            if let Some(r) = self.try_mount(name, mount).await? {
                return Ok(r);
            }
        }
        if let Some(digest) = self.query.get("digest") {
            let digest = parse_digest(digest)?;
            // The claim's commit overlaps the body's arrival; both precede publishing.
            let (w, ()) = tokio::try_join!(
                self.receive_blob(&digest, body),
                self.meta().claim_blob(&digest)
            )?;
            self.check_length(w.written())?;
            let size = w.commit(&digest).await?;
            self.meta().link_blob(name, &digest, size).await?;
            return Ok(Self::blob_created(name, &digest));
        }
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        self.state.blobs.upload_create(&id).await?;
        self.meta().create_upload(&id, name).await?;
        Ok(Self::upload_accepted(StatusCode::ACCEPTED, name, &id, 0))
    }

    /// Streams `body` into a new blob writer for `digest`'s algorithm (not committed).
    async fn receive_blob(
        &self,
        digest: &Digest,
        body: Body,
    ) -> Result<Box<dyn crate::storage::BlobWriter>, RegistryError> {
        let mut w = self.state.blobs.writer(digest.algorithm()).await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| RegistryError::BlobUploadInvalid(format!("reading body: {e}")))?;
            w.write(&chunk).await?;
        }
        Ok(w)
    }

    /// When a `Content-Length` was sent, the body must have had exactly that length.
    fn check_length(&self, received: u64) -> Result<(), RegistryError> {
        let declared = self
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(d) if d != received => Err(RegistryError::SizeInvalid(format!(
                "Content-Length {d} but {received} bytes received"
            ))),
            _ => Ok(()),
        }
    }

    async fn try_mount(&self, name: &str, mount: &str) -> Result<Option<Response>, RegistryError> {
        let Ok(digest) = mount.parse::<Digest>() else {
            return Ok(None);
        };
        let Some(from) = self.query.get("from").filter(|f| is_valid_repository(f)) else {
            return Ok(None);
        };
        // Mounting reads the source repository: without pull access there, fall back to
        // an ordinary upload rather than revealing whether the blob exists.
        if authorize(self.state, self.headers, Some(from), Action::Pull)
            .await
            .is_err()
        {
            return Ok(None);
        }
        if self.meta().blob_link(from, &digest).await?.is_none() {
            return Ok(None);
        }
        self.meta().claim_blob(&digest).await?;
        let Some(size) = self.state.blobs.stat(&digest).await? else {
            return Ok(None);
        };
        self.meta().link_blob(name, &digest, size).await?;
        Ok(Some(Self::blob_created(name, &digest)))
    }

    async fn session(
        &self,
        name: &str,
        id: &str,
    ) -> Result<(String, UploadRecord, i64), RegistryError> {
        let id = parse_upload_id(id)?;
        match self.meta().upload(&id).await? {
            Some((record, rev)) if record.repository == name => Ok((id, record, rev)),
            _ => Err(RegistryError::BlobUploadUnknown(format!(
                "no upload {id} in {name}"
            ))),
        }
    }

    async fn upload_status(&self, name: &str, id: &str) -> Result<Response, RegistryError> {
        let (id, record, _) = self.session(name, id).await?;
        Ok(Self::upload_accepted(
            StatusCode::NO_CONTENT,
            name,
            &id,
            record.size,
        ))
    }

    /// Appends the body to the session, honouring `Content-Range`; returns the new size.
    async fn append(
        &self,
        name: &str,
        id: &str,
        mut record: UploadRecord,
        rev: i64,
        body: Body,
    ) -> Result<u64, RegistryError> {
        // A Content-Range that does not parse is a malformed chunk (400); one that
        // parses but does not start where the upload ends is out of order (416).
        let range =
            match self.headers.get(header::CONTENT_RANGE) {
                None => None,
                Some(v) => Some(v.to_str().ok().and_then(parse_content_range).ok_or_else(
                    || RegistryError::BlobUploadInvalid(format!("malformed Content-Range {v:?}")),
                )?),
            };
        if let Some((start, _)) = range {
            if start != record.size {
                return Err(RegistryError::RangeInvalid {
                    detail: format!(
                        "chunk starts at {start}, the upload has {} bytes",
                        record.size
                    ),
                    header: Some((header::RANGE, upload_range(record.size))),
                });
            }
        }
        let mut appender = self.state.blobs.upload_append(id, record.size).await?;
        let mut received = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| RegistryError::BlobUploadInvalid(format!("reading body: {e}")))?;
            appender.write(&chunk).await?;
            received += chunk.len() as u64;
        }
        if let Some((start, end)) = range {
            // The chunk's declared size does not match its content: SIZE_INVALID.
            if end - start + 1 != received {
                return Err(RegistryError::SizeInvalid(format!(
                    "Content-Range covers {} bytes, {received} received",
                    end - start + 1
                )));
            }
        }
        self.check_length(received)?;
        let size = appender.finish().await?;
        if received == 0 {
            return Ok(size);
        }
        record.size = size;
        if !self.meta().set_upload_size(id, &record, rev).await? {
            return Err(RegistryError::BlobUploadInvalid(format!(
                "upload {id} in {name} was changed by a concurrent request"
            )));
        }
        Ok(size)
    }

    async fn patch_upload(
        &self,
        name: &str,
        id: &str,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let (id, record, rev) = self.session(name, id).await?;
        let size = self.append(name, &id, record, rev, body).await?;
        Ok(Self::upload_accepted(StatusCode::ACCEPTED, name, &id, size))
    }

    async fn finish_upload(
        &self,
        name: &str,
        id: &str,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let (id, record, rev) = self.session(name, id).await?;
        let digest = parse_digest(self.query.get("digest").ok_or_else(|| {
            RegistryError::DigestInvalid("the digest query parameter is required".into())
        })?)?;
        let chunk_start = self.headers.get(header::CONTENT_RANGE).map(|v| {
            v.to_str()
                .ok()
                .and_then(parse_content_range)
                .map(|(s, _)| s)
        });
        if record.size == 0 && matches!(chunk_start, None | Some(Some(0))) {
            // POST then PUT with the whole blob: the bytes go straight into a blob
            // writer, hashed as they arrive, rather than into the session's file to be
            // fsynced, recorded and read back.
            return self.finish_whole_upload(name, &id, &digest, body).await;
        }
        let size = self.append(name, &id, record, rev, body).await?;
        self.meta().claim_blob(&digest).await?;
        self.state.blobs.upload_commit(&id, size, &digest).await?;
        self.end_upload(name, &id, &digest, size).await
    }

    /// Completes an empty session whose closing PUT carries the whole blob.
    async fn finish_whole_upload(
        &self,
        name: &str,
        id: &str,
        digest: &Digest,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let (w, ()) = tokio::try_join!(
            self.receive_blob(digest, body),
            self.meta().claim_blob(digest)
        )?;
        let received = w.written();
        if let Some((start, end)) = self
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
        {
            if end - start + 1 != received {
                return Err(RegistryError::SizeInvalid(format!(
                    "Content-Range covers {} bytes, {received} received",
                    end - start + 1
                )));
            }
        }
        self.check_length(received)?;
        let size = w.commit(digest).await?;
        self.state.blobs.upload_delete(id).await?;
        self.end_upload(name, id, digest, size).await
    }

    /// Links a committed blob into the repository and forgets its session. The two
    /// records are independent, so their commits are in flight together (the store
    /// groups them); both are durable before the 201.
    async fn end_upload(
        &self,
        name: &str,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<Response, RegistryError> {
        let (linked, forgotten) = tokio::join!(
            self.meta().link_blob(name, digest, size),
            self.meta().delete_upload(id)
        );
        linked?;
        forgotten?;
        Ok(Self::blob_created(name, digest))
    }

    async fn cancel_upload(&self, name: &str, id: &str) -> Result<Response, RegistryError> {
        let (id, _, _) = self.session(name, id).await?;
        self.meta().delete_upload(&id).await?;
        self.state.blobs.upload_delete(&id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn referrers(&self, name: &str, digest: &str) -> Result<Response, RegistryError> {
        let digest = parse_digest(digest)?;
        let mut manifests = self.meta().referrers(name, &digest).await?;
        let filter = self.query.get("artifactType");
        if let Some(t) = filter {
            manifests
                .retain(|d| d.get("artifactType").and_then(|a| a.as_str()) == Some(t.as_str()));
        }
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        })
        .to_string();
        let mut r = json_response(StatusCode::OK, body, false);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
        if filter.is_some() {
            r.headers_mut().insert(
                OCI_FILTERS_APPLIED,
                HeaderValue::from_static("artifactType"),
            );
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |p: &str| Route::parse(p);
        assert_eq!(r("/v2/"), Some(Route::Base));
        assert_eq!(r("/v2"), Some(Route::Base));
        assert_eq!(r("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(r("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            r("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            r("/v2/a/blobs/uploads"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            r("/v2/a/b/blobs/uploads/x"),
            Some(Route::Upload("a/b".into(), "x".into()))
        );
        assert_eq!(
            r("/v2/a/manifests/1"),
            Some(Route::Manifest("a".into(), "1".into()))
        );
        assert_eq!(
            r("/v2/manifests/blobs/d"),
            Some(Route::Blob("manifests".into(), "d".into()))
        );
        assert_eq!(
            r("/v2/a/referrers/d"),
            Some(Route::Referrers("a".into(), "d".into()))
        );
        assert_eq!(r("/v3/a"), None);
        assert_eq!(r("/v2/a/other/x"), None);
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_byte_range("bytes=0-4", 10), Ok(Some((0, 4))));
        assert_eq!(parse_byte_range("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(parse_byte_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_byte_range("bytes=5-100", 10), Ok(Some((5, 9))));
        assert!(parse_byte_range("bytes=10-", 10).is_err());
        assert!(parse_byte_range("bytes=4-2", 10).is_err());
        assert!(parse_byte_range("items=0-1", 10).is_err());
        assert_eq!(parse_content_range("0-9"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9)));
        assert_eq!(parse_content_range("9-5"), None);
    }
}
