//! The data plane end to end in one process: records in a real SQLite store, the plane
//! following it, real upstream servers and real HTTP clients on 127.0.0.1.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use wharf_lb::access_log::AccessLog;
use wharf_lb::records::{Condition, QueryPair};
use wharf_lb::PlaneConfig;

fn request(port: u16, path: &str) -> http::request::Builder {
    Request::get(format!("http://127.0.0.1:{port}{path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_rule_and_sets_forwarding_headers() {
    let h = Harness::start(PlaneConfig::default()).await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("tg-a", no_checks(), "HTTP1", &[]),
        target_group("tg-b", no_checks(), "HTTP1", &[]),
        target("tg-a", a.address, None),
        target("tg-b", b.address, None),
        listener("l1", port, vec![fixed(404, "no route")]),
        rule("l1", "r1", 10, vec![path("/a/*")], forward(&[("tg-a", 1)])),
        rule("l1", "r2", 20, vec![path("/b?")], forward(&[("tg-b", 1)])),
        rule(
            "l1",
            "r3",
            5,
            vec![Condition::HostHeader {
                values: vec!["b.*".into()],
            }],
            forward(&[("tg-b", 1)]),
        ),
        rule(
            "l1",
            "r4",
            30,
            vec![Condition::QueryString {
                values: vec![QueryPair {
                    key: Some("to".into()),
                    value: "a".into(),
                }],
            }],
            forward(&[("tg-a", 1)]),
        ),
    ])
    .await;
    assert_eq!(h.plane.bound().get(&port).map(|a| a.port()), Some(port));
    let client = client();

    let (status, body) = get(&client, port, "/a/x?y=1").await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["server"], "a");
    assert_eq!(seen["path"], "/a/x");
    assert_eq!(seen["query"], "y=1");
    assert_eq!(seen["xff"], "127.0.0.1");
    assert_eq!(seen["proto"], "http");
    assert_eq!(seen["port"], port.to_string());
    assert_eq!(seen["host"], format!("127.0.0.1:{port}"));

    assert_eq!(json(&get(&client, port, "/b1").await.1)["server"], "b");
    // `?` is exactly one character.
    assert_eq!(
        get(&client, port, "/b12").await,
        (StatusCode::NOT_FOUND, Bytes::from_static(b"no route"))
    );
    assert_eq!(json(&get(&client, port, "/x?to=A").await.1)["server"], "a");

    // The host-header rule has the lowest priority number, so it wins over /a/*.
    let (status, _, body) = send(
        &client,
        request(port, "/a/x")
            .header("host", "B.example.com")
            .header("x-forwarded-for", "203.0.113.7")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "hop")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["server"], "b");
    assert_eq!(seen["host"], "B.example.com");
    assert_eq!(seen["xff"], "203.0.113.7, 127.0.0.1");

    // A body is forwarded whole.
    let (status, _, body) = send(
        &client,
        Request::post(format!("http://127.0.0.1:{port}/a/upload"))
            .body(Full::new(Bytes::from(vec![7u8; 200_000])))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["body_len"], 200_000);
    assert_eq!(json(&body)["method"], "POST");
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_502_504_as_alb_does() {
    let h = Harness::start(PlaneConfig::default()).await;
    let slow = Upstream::start_with("slow", Duration::from_secs(4)).await;
    // A target whose port is closed: the connection is refused.
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    h.put(vec![
        load_balancer(&[("idle_timeout.timeout_seconds", "1")]),
        target_group("empty", fast_checks(), "HTTP1", &[]),
        target_group("dead", fast_checks(), "HTTP1", &[]),
        target_group("slow", no_checks(), "HTTP1", &[]),
        target("dead", dead, None),
        target("slow", slow.address, None),
        listener("l1", port, vec![forward(&[("empty", 1)])]),
        rule("l1", "r1", 1, vec![path("/dead")], forward(&[("dead", 1)])),
        rule("l1", "r2", 2, vec![path("/slow")], forward(&[("slow", 1)])),
        rule(
            "l1",
            "r3",
            3,
            vec![path("/missing")],
            forward(&[("no-such-group", 1)]),
        ),
    ])
    .await;
    let client = client();
    assert_eq!(
        get(&client, port, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&client, port, "/missing").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The dead target is unhealthy (or not yet checked); with no healthy target the
    // group fails open and the broken connection gives 502.
    assert_eq!(get(&client, port, "/dead").await.0, StatusCode::BAD_GATEWAY);
    let started = std::time::Instant::now();
    assert_eq!(
        get(&client, port, "/slow").await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let record = h
        .wait_health("dead", dead, |r| r.state == "unhealthy")
        .await;
    assert_eq!(record.reason.as_deref(), Some("Target.FailedHealthChecks"));
    // Still 502 after it is known unhealthy: fail open. (A new client: the pooled
    // connection may be closing after the one-second idle timeout, and a request sent
    // into a closing keep-alive connection fails with any load balancer.)
    assert_eq!(
        get(&support::client(), port, "/dead").await.0,
        StatusCode::BAD_GATEWAY
    );
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_move_targets_between_states_and_traffic_follows() {
    let h = Harness::start(PlaneConfig::default()).await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("app", fast_checks(), "HTTP1", &[]),
        target("app", a.address, None),
        target("app", b.address, None),
        listener("l1", port, vec![forward(&[("app", 1)])]),
    ])
    .await;
    let first = h
        .wait_health("app", a.address, |r| r.state == "healthy")
        .await;
    h.wait_health("app", b.address, |r| r.state == "healthy")
        .await;
    assert_eq!(first.reason, None);

    b.health_status.store(500, Ordering::SeqCst);
    let down = h
        .wait_health("app", b.address, |r| r.state == "unhealthy")
        .await;
    assert_eq!(down.reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    assert!(down.description.unwrap().contains("500"));
    // The record is written once per change, not per check.
    let revision_of = |kv: Option<wharf_store::KeyValue>| kv.unwrap().mod_revision;
    let key = wharf_lb::records::health_key(REGION, "app", "127.0.0.1", b.address.port());
    let written = revision_of(h.store.get(&key).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(revision_of(h.store.get(&key).await.unwrap()), written);

    let client = client();
    for _ in 0..20 {
        assert_eq!(json(&get(&client, port, "/").await.1)["server"], "a");
    }

    b.health_status.store(200, Ordering::SeqCst);
    h.wait_health("app", b.address, |r| r.state == "healthy")
        .await;
    let mut servers = std::collections::HashSet::new();
    for _ in 0..20 {
        servers.insert(
            json(&get(&client, port, "/").await.1)["server"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(servers.len(), 2, "both targets serve again: {servers:?}");
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_targets_get_no_new_requests_but_finish_old_ones() {
    let h = Harness::start(PlaneConfig::default()).await;
    let a = Upstream::start_with("a", Duration::from_millis(1500)).await;
    let b = Upstream::start("b").await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("app", no_checks(), "HTTP1", &[]),
        target("app", a.address, None),
        target("app", b.address, None),
        listener("l1", port, vec![forward(&[("app", 1)])]),
    ])
    .await;
    let client = client();
    // Start slow requests until one is in flight on a.
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        in_flight.push(tokio::spawn(
            async move { get(&client, port, "/slow").await },
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.requests.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.put(vec![target("app", a.address, Some(i64::MAX))]).await;
    let before = a.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(json(&get(&client, port, "/").await.1)["server"], "b");
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), before);
    for request in in_flight {
        let (status, _) = request.await.unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "in-flight requests finish while draining"
        );
    }
    // Only draining targets left: 503.
    h.put(vec![target("app", b.address, Some(i64::MAX))]).await;
    assert_eq!(
        get(&client, port, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_swaps_under_load_fail_no_request() {
    let h = Harness::start(PlaneConfig::default()).await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("tg-a", no_checks(), "HTTP1", &[]),
        target_group("tg-b", no_checks(), "HTTP1", &[]),
        target("tg-a", a.address, None),
        target("tg-b", b.address, None),
        listener("l1", port, vec![forward(&[("tg-a", 1)])]),
    ])
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        let client = client();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match send(
                    &client,
                    request(port, "/").body(Full::new(Bytes::new())).unwrap(),
                )
                .await
                {
                    Ok((StatusCode::OK, _, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }));
    }
    for round in 0..30u32 {
        let weights: &[(&str, u32)] = match round % 3 {
            0 => &[("tg-a", 1), ("tg-b", 1)],
            1 => &[("tg-b", 1)],
            _ => &[("tg-a", 3), ("tg-b", 0)],
        };
        h.put(vec![
            listener("l1", port, vec![forward(weights)]),
            rule(
                "l1",
                &format!("r{round}"),
                round + 1,
                vec![path(&format!("/round/{round}"))],
                fixed(200, "x"),
            ),
        ])
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "only {total} requests were made");
    assert!(a.requests.load(Ordering::SeqCst) > 0 && b.requests.load(Ordering::SeqCst) > 0);
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_h2c_clients_and_h2c_targets() {
    let h = Harness::start(PlaneConfig::default()).await;
    let a = Upstream::start("a").await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group("h1", no_checks(), "HTTP1", &[]),
        target_group("h2", no_checks(), "HTTP2", &[]),
        target("h1", a.address, None),
        target("h2", a.address, None),
        listener("l1", port, vec![forward(&[("h1", 1)])]),
        rule("l1", "r1", 1, vec![path("/h2/*")], forward(&[("h2", 1)])),
    ])
    .await;
    let h2 = h2_client();
    let (status, body) = get(&h2, port, "/plain").await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(
        seen["version"], "HTTP/1.1",
        "an h2 client's request reaches an HTTP1 group over HTTP/1.1"
    );
    assert_eq!(seen["host"], format!("127.0.0.1:{port}"));
    assert_eq!(seen["xff"], "127.0.0.1");
    let seen = json(&get(&h2, port, "/h2/x").await.1);
    assert_eq!(seen["version"], "HTTP/2.0");
    let seen = json(&get(&client(), port, "/h2/y").await.1);
    assert_eq!(seen["version"], "HTTP/2.0");
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_responses_redirects_and_listener_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let h = Harness::start(PlaneConfig {
        access_log: AccessLog::to_file(&log_path).unwrap(),
        ..PlaneConfig::default()
    })
    .await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        listener("l1", port, vec![fixed(418, "teapot")]),
        rule(
            "l1",
            "r1",
            1,
            vec![path("/old/*")],
            wharf_lb::records::Action::Redirect {
                order: None,
                protocol: None,
                host: Some("new.#{host}".into()),
                port: None,
                path: Some("/new/#{path}".into()),
                query: Some("#{query}&moved=1".into()),
                status_code: "HTTP_301".into(),
            },
        ),
    ])
    .await;
    let client = client();
    let (status, headers, body) = send(
        &client,
        request(port, "/old/page?x=1")
            .header("host", "example.com")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        headers["location"],
        format!("http://new.example.com:{port}/new//old/page?x=1&moved=1")
    );
    assert!(body.is_empty());
    let (status, headers, body) = send(
        &client,
        request(port, "/").body(Full::new(Bytes::new())).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status.as_u16(), 418);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, "teapot");

    // A listener deleted closes its port; one added opens another.
    let second = free_port();
    h.delete(&wharf_lb::records::listener_key(REGION, LB, "l1"))
        .await;
    h.put(vec![listener("l2", second, vec![fixed(200, "second")])])
        .await;
    assert!(!h.plane.bound().contains_key(&port));
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    assert_eq!(get(&client, second, "/").await.1, "second");

    // The access log has one line per request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        if lines.len() >= 3 {
            assert!(
                lines[0].contains(&format!(" {port} GET /old/page?x=1 HTTP/1.1 301 - - ")),
                "{}",
                lines[0]
            );
            assert!(
                lines[2].contains(&format!(" {second} GET / HTTP/1.1 200 ")),
                "{}",
                lines[2]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "access log: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed_after_the_idle_timeout() {
    let h = Harness::start(PlaneConfig::default()).await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[("idle_timeout.timeout_seconds", "1")]),
        listener("l1", port, vec![fixed(200, "ok")]),
    ])
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the load balancer closes the idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without another response");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_requests_avoids_a_busy_target() {
    let h = Harness::start(PlaneConfig::default()).await;
    let a = Upstream::start_with("a", Duration::from_secs(2)).await;
    let b = Upstream::start_with("b", Duration::from_secs(2)).await;
    let port = free_port();
    h.put(vec![
        load_balancer(&[]),
        target_group(
            "app",
            no_checks(),
            "HTTP1",
            &[(
                "load_balancing.algorithm.type",
                "least_outstanding_requests",
            )],
        ),
        target("app", a.address, None),
        target("app", b.address, None),
        listener("l1", port, vec![forward(&[("app", 1)])]),
    ])
    .await;
    let client = client();
    // One slow request occupies one target; the next quick ones all go to the other.
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            json(&get(&client, port, "/slow").await.1)["server"]
                .as_str()
                .unwrap()
                .to_owned()
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = if a.requests.load(Ordering::SeqCst) == 1 {
        "a"
    } else {
        "b"
    };
    for _ in 0..10 {
        assert_ne!(json(&get(&client, port, "/").await.1)["server"], busy);
    }
    assert_eq!(slow.await.unwrap(), busy);
    h.plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_configuration_is_served() {
    let a = Upstream::start("a").await;
    let port = free_port();
    let config = serde_json::Value::Object(
        vec![
            load_balancer(&[]),
            target_group("app", no_checks(), "HTTP1", &[]),
            target("app", a.address, None),
            listener("l1", port, vec![forward(&[("app", 1)])]),
        ]
        .into_iter()
        .collect(),
    );
    let entries = wharf_lb::static_config::parse(&serde_json::to_vec(&config).unwrap()).unwrap();
    let store: std::sync::Arc<dyn wharf_store::Store> =
        std::sync::Arc::new(wharf_store::sqlite::SqliteStore::open_in_memory().unwrap());
    wharf_lb::static_config::load_into(store.as_ref(), entries)
        .await
        .unwrap();
    let plane = wharf_lb::Plane::start(store, PlaneConfig::default())
        .await
        .unwrap();
    assert_eq!(json(&get(&client(), port, "/x").await.1)["server"], "a");
    plane.shutdown().await;
}
