//! How the proxy uses its connections to HTTP/1.1 targets, against a hand-driven
//! upstream on 127.0.0.1 that counts its connections and answers with every body
//! framing: keep-alive reuse, bodies relayed byte for byte whatever their framing, a
//! connection the target closes while idle, and a client that leaves mid-body.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_lb::PlaneConfig;

/// What the raw upstream does after answering.
#[derive(Clone, Copy, PartialEq)]
enum AfterAnswer {
    /// Waits for the next request on the same connection.
    KeepAlive,
    /// Closes the connection without saying so in the answer, as a target whose
    /// keep-alive timeout is shorter than the proxy's does.
    Close,
}

/// A raw HTTP/1.1 server. `GET /len/<n>/<framing>` answers `n` bytes of a pattern
/// derived from `n`, framed by `framing`: `cl` (Content-Length), `chunked` (in chunks
/// of up to 1,000 bytes), `empty` (204, no body); `GET /stall/<n>` promises `n` bytes,
/// sends half and then waits for the client to go; `POST /early` answers 413 at once
/// and then swallows the request body for as long as it comes. `GET /host` answers
/// the Host header it got.
struct RawUpstream {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + ((i * 7 + n) % 26) as u8).collect()
}

impl RawUpstream {
    async fn start(after: AfterAnswer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_raw(stream, after, reqs.clone()));
            }
        });
        Self {
            address,
            connections,
            requests,
        }
    }
}

async fn serve_raw(mut stream: TcpStream, after: AfterAnswer, requests: Arc<AtomicUsize>) {
    let mut buffer = Vec::new();
    loop {
        // Read one request head (these requests have no body).
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        requests.fetch_add(1, Ordering::SeqCst);
        let line = head.lines().next().unwrap_or_default();
        let mut words = line.split(' ');
        let method = words.next().unwrap_or_default().to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let n: usize = parts.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        let body = pattern(n);
        let mut out = Vec::new();
        if path == "/early" {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
                .await;
            let mut sink = [0u8; 8192];
            while matches!(stream.read(&mut sink).await, Ok(k) if k > 0) {}
            return;
        }
        if path == "/host" {
            let host = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("host: ")
                        .or_else(|| l.strip_prefix("Host: "))
                })
                .unwrap_or("")
                .to_owned();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{host}",
                host.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        match (parts.first().copied(), parts.get(2).copied()) {
            (Some("len"), Some("chunked")) => {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                if method != "HEAD" {
                    for chunk in body.chunks(1000) {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            (Some("len"), Some("tecl")) => {
                // Both framings at once: chunked wins, but the connection is suspect.
                out.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                );
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            (Some("len"), Some("extra")) => {
                // More bytes than the Content-Length says.
                out.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes(),
                );
                out.extend_from_slice(&body);
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil");
            }
            (Some("len"), Some("empty")) => {
                out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
            }
            (Some("stall"), _) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body[..n / 2]).await;
                // Wait for the proxy to give up on this connection.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(k) if k > 0) {}
                return;
            }
            _ => {
                out.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n").as_bytes(),
                );
                if method != "HEAD" {
                    out.extend_from_slice(&body);
                }
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        if after == AfterAnswer::Close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn plane_in_front_of(upstream: &RawUpstream) -> (Harness, u16) {
    let h = Harness::start(PlaneConfig::default()).await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("tg", no_checks(), "HTTP1", &[]),
        target("tg", upstream.address, None),
        listener("l1", port, vec![forward(&[("tg", 1)])]),
    ])
    .await;
    (h, port)
}

fn get_request(port: u16, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_target_connection_whatever_the_framing() {
    let upstream = RawUpstream::start(AfterAnswer::KeepAlive).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    let client = client();
    let paths = [
        "/len/10/cl",
        "/len/5000/chunked",
        "/len/0/empty",
        "/len/0/cl",
    ];
    for round in 0..10 {
        for path in paths {
            let (status, _, body) = send(&client, get_request(port, path)).await.unwrap();
            let n: usize = path.split('/').nth(2).unwrap().parse().unwrap();
            let expected = if path.ends_with("empty") {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            };
            assert_eq!(status, expected, "round {round} {path}");
            assert_eq!(body.as_ref(), pattern(n).as_slice(), "round {round} {path}");
        }
        let head = Request::head(format!("http://127.0.0.1:{port}/len/300/cl"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, headers, body) = send(&client, head).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-length"], "300");
        assert!(body.is_empty());
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 50);
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "one client asking in turn needs one target connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bodies_of_every_size_and_framing_arrive_intact() {
    let upstream = RawUpstream::start(AfterAnswer::KeepAlive).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        tasks.push(tokio::spawn(async move {
            let client = client();
            // A deterministic spread of sizes around chunk and buffer boundaries.
            let mut seed = worker as u64 * 7919 + 1;
            for _ in 0..40 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = match seed % 4 {
                    0 => (seed >> 8) as usize % 16,
                    1 => 990 + (seed >> 8) as usize % 20,
                    2 => 8192 + (seed >> 8) as usize % 8192,
                    _ => (seed >> 8) as usize % 300_000,
                };
                let framing = if seed & 0x100 == 0 { "cl" } else { "chunked" };
                let path = format!("/len/{n}/{framing}");
                let (status, _, body) = send(&client, get_request(port, &path)).await.unwrap();
                assert_eq!(status, StatusCode::OK, "{path}");
                assert_eq!(body.len(), n, "{path}");
                assert!(
                    body.as_ref() == pattern(n).as_slice(),
                    "{path}: body differs"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 8 * 40);
    let opened = upstream.connections.load(Ordering::SeqCst);
    assert!(
        opened <= 8,
        "8 clients asking in turn need at most 8 target connections, {opened} were opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_target_closed_while_idle_costs_no_request() {
    let upstream = RawUpstream::start(AfterAnswer::Close).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    let client = client();
    for i in 0..30 {
        let (status, _, body) = send(&client, get_request(port, "/len/64/cl"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(body.as_ref(), pattern(64).as_slice());
        // Once the close has surely arrived: a request written on a connection in
        // the very moment the target closes it is lost by any proxy (it cannot know
        // whether the target acted on it), so this waits that moment out.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_left_mid_body_is_not_used_again() {
    let upstream = RawUpstream::start(AfterAnswer::KeepAlive).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    // A client that reads the start of a stalled body, then goes away.
    {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(b"GET /stall/100000 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 2048];
        let n = stream.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next request must get its own answer, not the rest of the stalled body.
    let client = client();
    let (status, _, body) = send(&client, get_request(port, "/len/777/cl"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), pattern(777).as_slice());
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_forwarded_whole_over_a_reused_connection() {
    // The hyper upstream of the other tests says what it got; a POST body of each size
    // must arrive whole on the same reused connection.
    let upstream = support::Upstream::start("echo").await;
    let h = Harness::start(PlaneConfig::default()).await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("tg", no_checks(), "HTTP1", &[]),
        target("tg", upstream.address, None),
        listener("l1", port, vec![forward(&[("tg", 1)])]),
    ])
    .await;
    let client = client();
    for n in [0usize, 1, 1000, 65_536, 200_000] {
        let payload = Bytes::from(pattern(n));
        let request = Request::post(format!("http://127.0.0.1:{port}/echo"))
            .body(Full::new(payload.clone()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["body_len"], n, "the upstream saw another body: {seen}");
        assert_eq!(seen["method"], "POST");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_uploading_after_an_early_answer_is_not_handed_out() {
    let upstream = RawUpstream::start(AfterAnswer::KeepAlive).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    // A client starts a large upload, gets the target's early 413, and keeps its
    // connection open without sending the rest.
    let mut uploader = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    uploader
        .write_all(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    uploader.write_all(&[b'x'; 1000]).await.unwrap();
    let mut first = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), uploader.read(&mut first))
        .await
        .expect("the early answer is relayed")
        .unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 413"));
    // The target connection is still busy with that upload: the next request must not
    // wait for it.
    let client = client();
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(5),
        send(&client, get_request(port, "/len/10/cl")),
    )
    .await
    .expect("the next request does not wait for the upload")
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), pattern(10).as_slice());
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    drop(uploader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_request_without_host_reaches_the_target_with_its_address() {
    let upstream = RawUpstream::start(AfterAnswer::KeepAlive).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /host HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an HTTP/1.0 answer ends with the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(
        answer.ends_with(&upstream.address.to_string()),
        "the target saw another Host: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_doubtful_framing_or_extra_bytes_is_not_used_again() {
    let upstream = RawUpstream::start(AfterAnswer::KeepAlive).await;
    let (_h, port) = plane_in_front_of(&upstream).await;
    let client = client();
    for path in ["/len/20/tecl", "/len/20/extra"] {
        let (status, _, body) = send(&client, get_request(port, path)).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body.as_ref(), pattern(20).as_slice(), "{path}");
        // The next answer is its own, never the bytes left behind.
        let (status, _, body) = send(&client, get_request(port, "/len/30/cl"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), pattern(30).as_slice(), "after {path}");
    }
    // Each suspect answer cost its connection; the clean answers after them reused
    // the fresh ones.
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 3);
}
