//! `S3BlobStore` against a real S3 server: moto's server mode, started on a free port
//! by `scripts/start-test-s3` (which installs it on first use) and killed at the end.
//! Set `WHARF_TEST_S3_ENDPOINT` (e.g. `http://127.0.0.1:9000`) to use a running
//! server instead. If no server can be started the test fails; it never skips.

use futures_util::TryStreamExt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use wharf_registry::storage_s3::{S3BlobStore, S3Config, MIN_PART_SIZE};
use wharf_registry::{Algorithm, BlobStore, Digest, StorageError};

/// The server, killed on drop (also when a check panics).
struct Server {
    child: Option<Child>,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One plain HTTP/1.1 request (moto does not check signatures on these).
fn http(endpoint: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

fn start_server() -> Server {
    if let Ok(endpoint) = std::env::var("WHARF_TEST_S3_ENDPOINT") {
        return Server {
            child: None,
            endpoint,
        };
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/start-test-s3");
    let child = Command::new("bash")
        .arg(script)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let mut server = Server {
        child: Some(child),
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    // The first run installs moto into a venv, which takes a while.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok((200, _)) = http(&server.endpoint, "GET", "/") {
            return server;
        }
        if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "scripts/start-test-s3 exited ({status}) before the S3 server answered; \
                 run it by hand to see why (it needs python3 and PyPI for `moto[server]`)"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the S3 server from scripts/start-test-s3 did not answer on {} within 300 s",
            server.endpoint
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn store(server: &Server, bucket: &str, prefix: &str) -> S3BlobStore {
    S3BlobStore::new(S3Config {
        endpoint: Some(server.endpoint.clone()),
        bucket: bucket.to_string(),
        region: "us-east-1".to_string(),
        access_key_id: Some("test".to_string()),
        secret_access_key: Some("test".to_string()),
        session_token: None,
        allow_http: true,
        prefix: prefix.to_string(),
    })
    .unwrap()
}

async fn keys(store: &S3BlobStore, prefix: &str) -> Vec<String> {
    let prefix = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = store
        .object_store()
        .list(Some(&prefix))
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

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect()
}

async fn write_read_stat_delete(store: &S3BlobStore) {
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let d = Digest::of(alg, b"hello world");
        assert_eq!(store.stat(&d).await.unwrap(), None);
        assert!(store.open(&d, 0, None).await.unwrap().is_none());
        let mut w = store.writer(alg).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert_eq!(w.written(), 11);
        assert_eq!(w.commit(&d).await.unwrap(), 11);
        assert_eq!(store.stat(&d).await.unwrap(), Some(11));
        assert_eq!(
            store.blob_key(&d).to_string(),
            format!("basic/blobs/{}/{}", alg.name(), d.hex())
        );
        assert_eq!(read_all(store, &d, 0, None).await, b"hello world");
        assert_eq!(read_all(store, &d, 6, Some(3)).await, b"wor");
        assert_eq!(read_all(store, &d, 6, None).await, b"world");
        assert_eq!(read_all(store, &d, 4, Some(0)).await, b"");
        assert!(store.delete(&d).await.unwrap());
        assert!(!store.delete(&d).await.unwrap());
        assert_eq!(store.stat(&d).await.unwrap(), None);
    }
    // An empty blob.
    let empty = Digest::of(Algorithm::Sha256, b"");
    let w = store.writer(Algorithm::Sha256).await.unwrap();
    assert_eq!(w.commit(&empty).await.unwrap(), 0);
    assert_eq!(store.stat(&empty).await.unwrap(), Some(0));
    assert_eq!(read_all(store, &empty, 0, None).await, b"");
    assert!(store.delete(&empty).await.unwrap());
    assert!(keys(store, "basic").await.is_empty());
}

async fn mismatch_leaves_nothing(store: &S3BlobStore) {
    // Small (one PUT, never made) and multipart (aborted) writes.
    for len in [5usize, 2 * MIN_PART_SIZE + 99] {
        let data = pattern(len, 1);
        let claimed = Digest::of(Algorithm::Sha256, b"something else");
        let mut w = store.writer(Algorithm::Sha256).await.unwrap();
        for chunk in data.chunks(256 * 1024) {
            w.write(chunk).await.unwrap();
        }
        assert!(matches!(
            w.commit(&claimed).await,
            Err(StorageError::DigestMismatch { .. })
        ));
        assert_eq!(store.stat(&claimed).await.unwrap(), None);
        let real = Digest::of(Algorithm::Sha256, &data);
        assert_eq!(store.stat(&real).await.unwrap(), None);
        assert!(keys(store, "mismatch").await.is_empty(), "len {len}");
    }
}

async fn large_blob_in_small_chunks(store: &S3BlobStore) {
    let data = pattern(2 * MIN_PART_SIZE + 12_345, 2);
    let d = Digest::of(Algorithm::Sha256, &data);
    let mut w = store.writer(Algorithm::Sha256).await.unwrap();
    for chunk in data.chunks(64 * 1024) {
        w.write(chunk).await.unwrap();
    }
    assert_eq!(w.commit(&d).await.unwrap(), data.len() as u64);
    assert_eq!(store.stat(&d).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(store, &d, 0, None).await, data);
    // A range across the first part boundary.
    let at = MIN_PART_SIZE - 7;
    assert_eq!(
        read_all(store, &d, at as u64, Some(100)).await,
        &data[at..at + 100]
    );
    // The temporary object is gone; only the blob remains.
    assert_eq!(keys(store, "large").await, [store.blob_key(&d).to_string()]);
}

async fn upload_sessions(store: &S3BlobStore) {
    store.upload_create("abc-1").await.unwrap();
    let mut a = store.upload_append("abc-1", 0).await.unwrap();
    a.write(b"hello ").await.unwrap();
    assert_eq!(a.finish().await.unwrap(), 6);
    // An unacknowledged write at the recorded size is replaced by the retry.
    let mut a = store.upload_append("abc-1", 6).await.unwrap();
    a.write(b"garbage!").await.unwrap();
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
    // The session survives a mismatch.
    let d = Digest::of(Algorithm::Sha512, b"hello world");
    assert_eq!(store.upload_commit("abc-1", 11, &d).await.unwrap(), 11);
    assert_eq!(read_all(store, &d, 0, None).await, b"hello world");
    assert!(matches!(
        store.upload_append("abc-1", 0).await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert!(matches!(
        store.upload_commit("abc-1", 11, &d).await,
        Err(StorageError::UploadUnknown(_))
    ));
    assert!(store.upload_create("../x").await.is_err());

    // A session larger than one part, in requests of 1 MiB and one of 6 MiB (itself
    // a multipart upload), composed at commit.
    let data = pattern(2 * MIN_PART_SIZE + 4321, 3);
    store.upload_create("big-2").await.unwrap();
    let mut offset = 0u64;
    let split = 3 * 1024 * 1024;
    for request in data[..split]
        .chunks(1024 * 1024)
        .chain(std::iter::once(&data[split..split + 6 * 1024 * 1024]))
        .chain(data[split + 6 * 1024 * 1024..].chunks(1024 * 1024))
    {
        let mut a = store.upload_append("big-2", offset).await.unwrap();
        for chunk in request.chunks(64 * 1024) {
            a.write(chunk).await.unwrap();
        }
        offset = a.finish().await.unwrap();
    }
    assert_eq!(offset, data.len() as u64);
    let big = Digest::of(Algorithm::Sha256, &data);
    assert_eq!(
        store.upload_commit("big-2", offset, &big).await.unwrap(),
        offset
    );
    assert_eq!(read_all(store, &big, 0, None).await, data);
    store.upload_create("gone-3").await.unwrap();
    store.upload_delete("gone-3").await.unwrap();
    store.upload_delete("gone-3").await.unwrap();
    assert_eq!(
        keys(store, "sessions").await,
        [
            store.blob_key(&d).to_string(),
            store.blob_key(&big).to_string()
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_blob_store_against_a_local_s3_server() {
    let started = Instant::now();
    let server = tokio::task::spawn_blocking(start_server).await.unwrap();
    eprintln!(
        "S3 server up at {} in {:?}",
        server.endpoint,
        started.elapsed()
    );
    let bucket = format!("wharf-test-{}", std::process::id());
    let (status, body) = http(&server.endpoint, "PUT", &format!("/{bucket}")).unwrap();
    assert_eq!(status, 200, "creating bucket {bucket}: {body}");

    write_read_stat_delete(&store(&server, &bucket, "basic")).await;
    mismatch_leaves_nothing(&store(&server, &bucket, "mismatch")).await;
    large_blob_in_small_chunks(&store(&server, &bucket, "large")).await;
    upload_sessions(&store(&server, &bucket, "sessions")).await;

    // Every multipart upload was completed or aborted (aborts on drop run in the
    // background, so give them a moment).
    let mut pending = String::new();
    for _ in 0..20 {
        let (status, body) = http(&server.endpoint, "GET", &format!("/{bucket}?uploads")).unwrap();
        assert_eq!(status, 200, "{body}");
        if !body.contains("<Upload>") {
            pending.clear();
            break;
        }
        pending = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pending.is_empty(),
        "multipart uploads left behind: {pending}"
    );
    eprintln!("S3 checks done in {:?}", started.elapsed());
    drop(server);
}
