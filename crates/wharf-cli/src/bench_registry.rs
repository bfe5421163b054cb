//! `wharf bench registry`: blob pushes and pulls over loopback HTTP against Wharf's
//! registry and against CNCF distribution (Debian's `docker-registry`), measured in the
//! same run, with the same client, with both registries keeping their data in the same
//! directory on the same disk.
//!
//! Wharf runs in-process on a runtime of its own, built as `wharf up` builds it: durable
//! SQLite records (WAL, synchronous commits), blobs on the filesystem, and a token from
//! its GetAuthorizationToken issuer on every request. Distribution runs as a child
//! process with a temporary configuration (filesystem storage, no authentication).
//!
//! Small blobs are pushed with POST then PUT (the whole blob in the PUT); large ones the
//! way the docker CLI pushes a layer: POST, one streamed PATCH, and a PUT with the
//! digest. Pulls are `GET /v2/<name>/blobs/<digest>`, each body read in full and its
//! digest checked.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use wharf_registry::digest::Hasher;
use wharf_registry::metadata::{system_clock, Metadata, RepositoryCreation, RepositoryRecord};
use wharf_registry::{Algorithm, Digest};

/// Flags of `wharf bench registry`.
#[derive(Args, Clone)]
pub(crate) struct RegistryBenchArgs {
    /// How many small blobs each run pushes and pulls.
    #[arg(long, default_value_t = 2000)]
    small_count: usize,
    /// The size of a small blob, in bytes.
    #[arg(long, default_value_t = 4096)]
    small_size: usize,
    /// How many large blobs each run pushes and pulls.
    #[arg(long, default_value_t = 64)]
    large_count: usize,
    /// The size of a large blob, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    large_size: usize,
    /// Numbers of concurrent clients to run each case with, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    clients: Vec<usize>,
    /// The directory both registries keep their data under (a temporary directory is
    /// made in it); the system's temporary directory by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// CNCF distribution's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
}

type RequestBody = BoxBody<Bytes, std::io::Error>;
type HttpClient = Client<HttpConnector, RequestBody>;

/// The size of the pieces a large blob's PATCH body is streamed in.
const STREAM_PIECE: usize = 1024 * 1024;

/// A registry the benchmark talks to.
struct Endpoint {
    name: &'static str,
    base: String,
    authorization: Option<String>,
}

/// A blob to push, with its digest.
struct BenchBlob {
    bytes: Bytes,
    digest: String,
}

/// Pseudo-random blobs (xorshift; different for every seed and index) and their digests.
fn make_blobs(seed: u64, count: usize, size: usize) -> Vec<BenchBlob> {
    (0..count)
        .map(|i| {
            let mut state = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64 + 1)
                | 1;
            let mut bytes = Vec::with_capacity(size + 8);
            while bytes.len() < size {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.extend_from_slice(&state.to_le_bytes());
            }
            bytes.truncate(size);
            let digest = Digest::of(Algorithm::Sha256, &bytes).to_string();
            BenchBlob {
                bytes: Bytes::from(bytes),
                digest,
            }
        })
        .collect()
}

fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

impl Endpoint {
    fn request(&self, method: http::Method, url: &str) -> http::request::Builder {
        let mut builder = http::Request::builder().method(method).uri(url);
        if let Some(a) = &self.authorization {
            builder = builder.header(http::header::AUTHORIZATION, a);
        }
        builder
    }

    /// Sends a request; fails unless it answers `expected`. Returns the response
    /// headers after reading the body.
    async fn call(
        &self,
        client: &HttpClient,
        request: http::Request<RequestBody>,
        expected: http::StatusCode,
    ) -> anyhow::Result<http::HeaderMap> {
        let what = format!("{} {}", request.method(), request.uri());
        let response = client.request(request).await.context(what.clone())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        if status != expected {
            bail!(
                "{}: {what} answered {status}: {}",
                self.name,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(headers)
    }

    /// `POST /v2/<repo>/blobs/uploads/`; returns the session's absolute location.
    async fn start_upload(&self, client: &HttpClient, repo: &str) -> anyhow::Result<String> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let request = self
            .request(http::Method::POST, &url)
            .body(full(Bytes::new()))?;
        let headers = self
            .call(client, request, http::StatusCode::ACCEPTED)
            .await?;
        let location = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("upload started without a Location")?;
        Ok(absolute(&self.base, location))
    }

    /// POST, then PUT with the whole blob.
    async fn push_small(
        &self,
        client: &HttpClient,
        repo: &str,
        blob: &BenchBlob,
    ) -> anyhow::Result<()> {
        let location = self.start_upload(client, repo).await?;
        let request = self
            .request(http::Method::PUT, &with_digest(&location, &blob.digest))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(full(blob.bytes.clone()))?;
        self.call(client, request, http::StatusCode::CREATED)
            .await?;
        Ok(())
    }

    /// POST, one PATCH streamed in pieces (chunked transfer encoding, as the docker CLI
    /// sends a layer), then PUT with the digest.
    async fn push_large(
        &self,
        client: &HttpClient,
        repo: &str,
        blob: &BenchBlob,
    ) -> anyhow::Result<()> {
        let location = self.start_upload(client, repo).await?;
        let bytes = blob.bytes.clone();
        let pieces = (0..bytes.len()).step_by(STREAM_PIECE).map(move |at| {
            let end = (at + STREAM_PIECE).min(bytes.len());
            Ok::<_, std::io::Error>(Frame::data(bytes.slice(at..end)))
        });
        let body = StreamBody::new(futures_util::stream::iter(pieces)).boxed();
        let request = self
            .request(http::Method::PATCH, &location)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)?;
        let headers = self
            .call(client, request, http::StatusCode::ACCEPTED)
            .await?;
        let location = headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| absolute(&self.base, l))
            .unwrap_or(location);
        let request = self
            .request(http::Method::PUT, &with_digest(&location, &blob.digest))
            .body(full(Bytes::new()))?;
        self.call(client, request, http::StatusCode::CREATED)
            .await?;
        Ok(())
    }

    /// GET the blob, reading the whole body and checking its digest and size.
    async fn pull(&self, client: &HttpClient, repo: &str, blob: &BenchBlob) -> anyhow::Result<()> {
        let url = format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest);
        let request = self
            .request(http::Method::GET, &url)
            .body(full(Bytes::new()))?;
        let response = client.request(request).await.context(url.clone())?;
        if response.status() != http::StatusCode::OK {
            bail!("{}: GET {url} answered {}", self.name, response.status());
        }
        let mut body = response.into_body();
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut received = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                hasher.update(&data);
                received += data.len();
            }
        }
        let digest = hasher.finish().to_string();
        if digest != blob.digest || received != blob.bytes.len() {
            bail!(
                "{}: GET {url} returned {received} bytes hashing to {digest}",
                self.name
            );
        }
        Ok(())
    }
}

/// Runs `op` on every blob index with `clients` concurrent workers; returns the
/// elapsed time.
async fn run_concurrently<F, Fut>(clients: usize, count: usize, op: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let next = next.clone();
            let op = op.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, anyhow::Error>(());
                    }
                    op(i).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(started.elapsed())
}

/// Which kind of blob a case pushes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlobKind {
    Small,
    Large,
}

/// One measured push-then-pull run.
struct Figures {
    push: Duration,
    pull: Duration,
    bytes: u64,
    count: usize,
}

impl Figures {
    fn rates(&self, elapsed: Duration) -> (f64, f64) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        (self.bytes as f64 / 1e6 / secs, self.count as f64 / secs)
    }
}

async fn measure(
    endpoint: &Arc<Endpoint>,
    client: &HttpClient,
    repo: &str,
    kind: BlobKind,
    clients: usize,
    blobs: &Arc<Vec<BenchBlob>>,
) -> anyhow::Result<Figures> {
    let push = {
        let (endpoint, client, repo, blobs) = (
            endpoint.clone(),
            client.clone(),
            repo.to_string(),
            blobs.clone(),
        );
        run_concurrently(clients, blobs.len(), move |i| {
            let (endpoint, client, repo, blobs) = (
                endpoint.clone(),
                client.clone(),
                repo.clone(),
                blobs.clone(),
            );
            async move {
                match kind {
                    BlobKind::Small => endpoint.push_small(&client, &repo, &blobs[i]).await,
                    BlobKind::Large => endpoint.push_large(&client, &repo, &blobs[i]).await,
                }
            }
        })
        .await?
    };
    let pull = {
        let (endpoint, client, repo, blobs) = (
            endpoint.clone(),
            client.clone(),
            repo.to_string(),
            blobs.clone(),
        );
        run_concurrently(clients, blobs.len(), move |i| {
            let (endpoint, client, repo, blobs) = (
                endpoint.clone(),
                client.clone(),
                repo.clone(),
                blobs.clone(),
            );
            async move { endpoint.pull(&client, &repo, &blobs[i]).await }
        })
        .await?
    };
    Ok(Figures {
        push,
        pull,
        bytes: blobs.iter().map(|b| b.bytes.len() as u64).sum(),
        count: blobs.len(),
    })
}

/// Wharf's registry on a runtime of its own (so that the server's threads are not the
/// client's), stopped when dropped.
struct WharfServer {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for WharfServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts Wharf's registry over `dir` as `wharf up` builds it, with `repositories`
/// created; returns its endpoint (with a token from its issuer) and the server.
async fn start_wharf(
    dir: &Path,
    repositories: Vec<String>,
) -> anyhow::Result<(Endpoint, WharfServer)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wharf-registry")
        .enable_all()
        .build()?;
    let dir = dir.to_path_buf();
    let started = runtime.spawn(async move {
        let store = crate::server::open_store(&dir)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let registry = wharf_registry::build(
            store.clone(),
            dir.join("registry"),
            wharf_registry::RegistryConfig {
                region: "us-east-1".into(),
                account_id: "000000000000".into(),
                registry_addr: addr.to_string(),
            },
        )?;
        let metadata = Metadata::with_options(store, RepositoryCreation::Explicit, system_clock());
        for repo in &repositories {
            let record = RepositoryRecord {
                created_at: metadata.now_millis(),
                ..Default::default()
            };
            metadata.create_repository(repo, &record).await?;
        }
        let token = registry.tokens.issue().await?;
        let router = registry.router;
        // As `wharf up` serves it: Nagle's algorithm off, so that a response's body is
        // not held back behind its headers.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok::<_, anyhow::Error>((addr, token.password))
    });
    let (addr, password) = started.await??;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    Ok((
        Endpoint {
            name: "wharf",
            base: format!("http://{addr}"),
            authorization: Some(format!("Basic {credentials}")),
        },
        WharfServer {
            runtime: Some(runtime),
        },
    ))
}

/// CNCF distribution as a child process, killed when dropped.
struct Distribution {
    child: tokio::process::Child,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts distribution over `dir` on a free loopback port, without authentication.
async fn start_distribution(
    binary: &Path,
    dir: &Path,
    client: &HttpClient,
) -> anyhow::Result<(Endpoint, Distribution)> {
    if !binary.exists() {
        bail!(
            "{} is missing: this benchmark compares Wharf with CNCF distribution; install \
             Debian's package with `apt-get install -y docker-registry` (or pass \
             --distribution PATH)",
            binary.display()
        );
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let root = dir.join("distribution");
    std::fs::create_dir_all(&root)?;
    // The storage settings of Debian's packaged configuration (filesystem, an
    // in-memory blob descriptor cache, deletes enabled), on loopback, without auth.
    let config = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        root.display()
    );
    let config_path = dir.join("distribution.yml");
    std::fs::write(&config_path, config)?;
    let log = std::fs::File::create(dir.join("distribution.log"))?;
    let child = tokio::process::Command::new(binary)
        .arg("serve")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let distribution = Distribution { child };
    let endpoint = Endpoint {
        name: "distribution",
        base: format!("http://127.0.0.1:{port}"),
        authorization: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = endpoint
            .request(http::Method::GET, &format!("{}/v2/", endpoint.base))
            .body(full(Bytes::new()))?;
        match client.request(request).await {
            Ok(r) if r.status() == http::StatusCode::OK => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => bail!(
                "distribution did not answer on {} within 20 s; see {}",
                endpoint.base,
                dir.join("distribution.log").display()
            ),
        }
    }
    Ok((endpoint, distribution))
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Runs the benchmark and prints its figures.
pub(crate) async fn run_registry(args: RegistryBenchArgs) -> anyhow::Result<()> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("wharf-bench-registry-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a directory under {}", parent.display()))?;
    // Nagle's algorithm off on the client's side too, as Go's and docker's clients have it.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);

    let cases = [
        (BlobKind::Small, args.small_count, args.small_size),
        (BlobKind::Large, args.large_count, args.large_size),
    ];
    let mut runs = Vec::new();
    for (kind, count, size) in cases {
        for &clients in &args.clients {
            let label = if kind == BlobKind::Small {
                "small"
            } else {
                "large"
            };
            runs.push((
                kind,
                count,
                size,
                clients,
                format!("bench/{label}-c{clients}"),
            ));
        }
    }

    std::fs::create_dir_all(dir.path().join("wharf"))?;
    let (distribution, _distribution_process) =
        start_distribution(&args.distribution, dir.path(), &client).await?;
    let (wharf, _wharf_server) = start_wharf(
        &dir.path().join("wharf"),
        runs.iter().map(|r| r.4.clone()).collect(),
    )
    .await?;
    let (wharf, distribution) = (Arc::new(wharf), Arc::new(distribution));

    println!(
        "Registry blobs over loopback HTTP; both registries under {} (same disk).",
        dir.path().display()
    );
    println!("wharf: in-process, durable SQLite records, filesystem blobs, token auth");
    println!(
        "distribution: {} (CNCF distribution), filesystem storage, no auth",
        args.distribution.display()
    );
    println!(
        "small: POST + PUT; large: POST + streamed PATCH + PUT; pulls: GET with digest check. \
         MB = 10^6 bytes."
    );
    println!();
    println!(
        "{:<22} {:>7}  {:<12} {:>10} {:>10} {:>10} {:>10}",
        "case", "clients", "registry", "push MB/s", "push b/s", "pull MB/s", "pull b/s"
    );
    let mut verdicts = Vec::new();
    for (seed, (kind, count, size, clients, repo)) in runs.iter().enumerate() {
        let blobs = Arc::new(make_blobs(seed as u64 + 1, *count, *size));
        let case = format!("{count} x {}", human_size(*size));
        let w = measure(&wharf, &client, repo, *kind, *clients, &blobs).await?;
        let d = measure(&distribution, &client, repo, *kind, *clients, &blobs).await?;
        for (name, f) in [("wharf", &w), ("distribution", &d)] {
            let (push_mb, push_n) = f.rates(f.push);
            let (pull_mb, pull_n) = f.rates(f.pull);
            println!(
                "{case:<22} {clients:>7}  {name:<12} {push_mb:>10.1} {push_n:>10.0} {pull_mb:>10.1} {pull_n:>10.0}"
            );
        }
        let push_ratio = d.push.as_secs_f64() / w.push.as_secs_f64().max(1e-9);
        let pull_ratio = d.pull.as_secs_f64() / w.pull.as_secs_f64().max(1e-9);
        println!(
            "{case:<22} {clients:>7}  {:<12} {:>9.2}x {:>10} {:>9.2}x",
            "wharf/dist", push_ratio, "", pull_ratio
        );
        let target = if *kind == BlobKind::Small { 1.5 } else { 1.0 };
        verdicts.push((case, *clients, target, push_ratio, pull_ratio));
    }
    println!();
    for (case, clients, target, push, pull) in verdicts {
        let verdict = |r: f64| if r >= target { "meets" } else { "BELOW" };
        println!(
            "{case} with {clients} client(s): push {push:.2}x ({} the {target}x target), \
             pull {pull:.2}x ({} the {target}x target)",
            verdict(push),
            verdict(pull)
        );
    }
    Ok(())
}
