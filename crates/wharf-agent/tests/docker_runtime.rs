//! The Docker runtime against the real engine on this machine.
//!
//! Every test labels its containers with a label of its own and removes them when it
//! ends, passed or failed, through [`TestContainers`]'s `Drop`. The image is
//! `wharf-test/busybox:latest`, built locally by `scripts/build-test-images` (nothing
//! can be pulled on the test machines); the tests run that script when the image is
//! missing and fail, not skip, when it cannot be built or no engine answers.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_agent::runtime::docker::DockerRuntime;
use wharf_agent::runtime::{
    ContainerEventKind, ContainerRuntime, ContainerSpec, ContainerState, ContainerStatus,
    EventStream, HealthCheckSpec, HealthStatus, LogSource, PortBinding, Protocol, RuntimeError,
    Ulimit,
};

const IMAGE: &str = "wharf-test/busybox:latest";
const TEST_LABEL: &str = "wharf.test";

/// How long a test waits for something the engine does on its own (a health check
/// passing, a process exiting) before it fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn ensure_test_image() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        if present.status.success() {
            return Ok(());
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/build-test-images"
        );
        let built = Command::new("bash")
            .arg(script)
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if built.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{script} failed:\n{}{}",
                String::from_utf8_lossy(&built.stdout),
                String::from_utf8_lossy(&built.stderr)
            ))
        }
    });
    if let Err(reason) = ready {
        panic!("test image {IMAGE} is missing and could not be built: {reason}");
    }
}

/// The containers of one test: a unique label to put on them, and their removal when
/// the test ends. Removal goes through the docker CLI because `Drop` cannot await, and
/// it must run even when the test panics.
struct TestContainers {
    id: String,
}

impl TestContainers {
    fn new() -> Self {
        ensure_test_image();
        TestContainers {
            id: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    fn label(&self) -> Vec<(String, String)> {
        vec![(TEST_LABEL.to_string(), self.id.clone())]
    }

    fn spec(&self, suffix: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            labels: BTreeMap::from([(TEST_LABEL.to_string(), self.id.clone())]),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            ..ContainerSpec::new(format!("wharf-test-{}-{suffix}", &self.id[..12]), IMAGE)
        }
    }
}

impl Drop for TestContainers {
    fn drop(&mut self) {
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label={TEST_LABEL}={}", self.id))
            .output();
        let Ok(listed) = listed else { return };
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

async fn runtime() -> DockerRuntime {
    DockerRuntime::connect()
        .await
        .expect("a Docker engine must be running for these tests")
}

async fn run(runtime: &DockerRuntime, spec: &ContainerSpec) -> String {
    let id = runtime.create_container(spec).await.expect("create");
    runtime.start_container(&id).await.expect("start");
    id
}

/// Polls the container until `done` holds, failing the test after [`DEADLINE`].
async fn wait_for(
    runtime: &DockerRuntime,
    id: &str,
    what: &str,
    done: impl Fn(&ContainerState) -> bool,
) -> ContainerState {
    let start = Instant::now();
    loop {
        let state = runtime.inspect_container(id).await.expect("inspect");
        if done(&state) {
            return state;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last state: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event matching `wanted`, failing the test after [`DEADLINE`].
async fn next_event(
    events: &mut EventStream,
    id: &str,
    wanted: impl Fn(&ContainerEventKind) -> bool,
) -> ContainerEventKind {
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            let event = event.expect("event stream broke");
            if event.id == id && wanted(&event.kind) {
                return event.kind;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("timed out waiting for an event")
}

async fn http_get(port: u16, path: &str) -> Result<String, std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn version_reports_engine_and_negotiated_api() {
    let version = runtime().await.version().await.unwrap();
    assert!(!version.engine_version.is_empty());
    assert!(!version.api_version.is_empty());
    // The client never speaks a newer API than the engine.
    let as_number = |v: &str| -> f64 { v.parse().unwrap() };
    assert!(as_number(&version.negotiated_api_version) <= as_number(&version.api_version));
    assert_eq!(version.os, "linux");
}

#[tokio::test]
async fn no_engine_at_the_socket_is_unavailable() {
    let result = DockerRuntime::connect_socket("/nonexistent/wharf/docker.sock").await;
    assert!(
        matches!(result, Err(RuntimeError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn httpd_on_a_dynamic_host_port_answers() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let spec = ContainerSpec {
        port_bindings: vec![PortBinding {
            container_port: 8080,
            host_port: None,
            protocol: Protocol::Tcp,
            host_ip: None,
        }],
        ..test.spec(
            "httpd",
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
        )
    };
    let id = run(&runtime, &spec).await;

    let state = runtime.inspect_container(&id).await.unwrap();
    assert_eq!(state.status, ContainerStatus::Running);
    assert_eq!(state.name, spec.name);
    assert_eq!(state.image, IMAGE);
    assert!(state.image_id.starts_with("sha256:"), "{state:?}");
    assert!(state.started_at.is_some());
    assert!(state
        .networks
        .iter()
        .any(|n| n.name == "bridge" && n.ip_address.is_some()));
    let port = state
        .host_port(8080, Protocol::Tcp)
        .unwrap_or_else(|| panic!("no host port bound: {:?}", state.ports));
    assert_ne!(port, 0);

    // httpd needs a moment to listen; docker-proxy accepts and drops until it does.
    let start = Instant::now();
    let response = loop {
        match http_get(port, "/index.html").await {
            Ok(response) if response.starts_with("HTTP/1.") => break response,
            other => {
                assert!(
                    start.elapsed() < DEADLINE,
                    "httpd never answered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // busybox httpd answers in HTTP/1.1 even to an HTTP/1.0 request.
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hi\n"), "{response}");
}

#[tokio::test]
async fn stop_of_a_process_that_traps_term_returns_its_exit_code() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let id = run(
        &runtime,
        &test.spec(
            "trap",
            &[
                "sh",
                "-c",
                "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    // The trap must be installed before the signal arrives.
    wait_for_log(&runtime, &id, "ready").await;

    let start = Instant::now();
    runtime
        .stop_container(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    let state = runtime.inspect_container(&id).await.unwrap();
    assert_eq!(state.status, ContainerStatus::Exited);
    assert_eq!(state.exit_code, Some(3));
    assert!(state.finished_at.is_some());

    // Stopping it again is not an error.
    runtime
        .stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn stop_kills_a_process_that_ignores_term_after_the_timeout() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let id = run(
        &runtime,
        &test.spec(
            "ignore",
            &[
                "sh",
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    wait_for_log(&runtime, &id, "ready").await;

    let start = Instant::now();
    runtime
        .stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    let state = runtime.inspect_container(&id).await.unwrap();
    assert_eq!(state.status, ContainerStatus::Exited);
    assert_eq!(state.exit_code, Some(137));
}

async fn wait_for_log(runtime: &DockerRuntime, id: &str, text: &str) {
    let start = Instant::now();
    loop {
        let output = collect_logs(runtime, id, None).await;
        if output.iter().any(|(_, line)| line.contains(text)) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never logged {text:?}: {output:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn collect_logs(
    runtime: &DockerRuntime,
    id: &str,
    tail: Option<usize>,
) -> Vec<(LogSource, String)> {
    runtime
        .logs(id, false, tail)
        .await
        .unwrap()
        .map(|chunk| {
            let chunk = chunk.unwrap();
            (
                chunk.source,
                String::from_utf8_lossy(&chunk.bytes).into_owned(),
            )
        })
        .collect()
        .await
}

#[tokio::test]
async fn limits_and_options_reach_the_engine() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let spec = ContainerSpec {
        cpu_units: 256,
        memory_bytes: Some(64 << 20),
        memory_reservation_bytes: Some(32 << 20),
        ulimits: vec![Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048,
        }],
        init: true,
        env: vec![("GREETING".into(), "hello".into())],
        stop_timeout: Some(Duration::from_secs(5)),
        log_driver: Some("json-file".into()),
        log_options: BTreeMap::from([("max-size".into(), "1m".into())]),
        ..test.spec(
            "limits",
            &["sh", "-c", "ulimit -n; echo $GREETING; sleep 30"],
        )
    };
    let id = run(&runtime, &spec).await;
    let inspected = runtime
        .client()
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let host = inspected.host_config.unwrap();
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.memory_reservation, Some(32 << 20));
    assert_eq!(host.cpu_shares, Some(256));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("json-file"));
    let ulimit = &host.ulimits.unwrap()[0];
    assert_eq!((ulimit.soft, ulimit.hard), (Some(1024), Some(2048)));
    assert_eq!(inspected.config.unwrap().stop_timeout, Some(5));
    wait_for_log(&runtime, &id, "hello").await;
    let output = collect_logs(&runtime, &id, None).await;
    assert_eq!(output[0].1.trim(), "1024");
}

#[tokio::test]
async fn zero_cpu_units_become_two_shares_as_in_ecs() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let id = runtime
        .create_container(&test.spec("cpu0", &["true"]))
        .await
        .unwrap();
    let inspected = runtime
        .client()
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(inspected.host_config.unwrap().cpu_shares, Some(2));
    let state = runtime.inspect_container(&id).await.unwrap();
    assert_eq!(state.status, ContainerStatus::Created);
    assert_eq!(state.exit_code, None);
    assert_eq!(state.started_at, None);
}

fn health_check(command: &str) -> Option<HealthCheckSpec> {
    Some(HealthCheckSpec {
        test: vec!["CMD-SHELL".into(), command.into()],
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        retries: 1,
        start_period: Duration::ZERO,
    })
}

#[tokio::test]
async fn health_checks_report_healthy_and_unhealthy() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let mut events = runtime.events(&test.label()).await.unwrap();
    let healthy = run(
        &runtime,
        &ContainerSpec {
            health_check: health_check("true"),
            ..test.spec("healthy", &["sleep", "60"])
        },
    )
    .await;
    let unhealthy = run(
        &runtime,
        &ContainerSpec {
            health_check: health_check("exit 1"),
            ..test.spec("unhealthy", &["sleep", "60"])
        },
    )
    .await;

    wait_for(&runtime, &healthy, "healthy", |s| {
        s.health == Some(HealthStatus::Healthy)
    })
    .await;
    wait_for(&runtime, &unhealthy, "unhealthy", |s| {
        s.health == Some(HealthStatus::Unhealthy)
    })
    .await;

    let kind = next_event(&mut events, &unhealthy, |k| {
        matches!(k, ContainerEventKind::HealthChanged(_))
    })
    .await;
    assert_eq!(
        kind,
        ContainerEventKind::HealthChanged(HealthStatus::Unhealthy)
    );
}

#[tokio::test]
async fn events_deliver_start_and_die_with_the_exit_code() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let mut events = runtime.events(&test.label()).await.unwrap();
    let id = run(
        &runtime,
        &test.spec("exit7", &["sh", "-c", "sleep 0.2; exit 7"]),
    )
    .await;

    assert_eq!(
        next_event(&mut events, &id, |k| *k == ContainerEventKind::Started).await,
        ContainerEventKind::Started
    );
    let died = next_event(&mut events, &id, |k| {
        matches!(k, ContainerEventKind::Died { .. })
    })
    .await;
    assert_eq!(died, ContainerEventKind::Died { exit_code: Some(7) });

    let state = runtime.inspect_container(&id).await.unwrap();
    assert_eq!(state.exit_code, Some(7));
    assert!(state.status.has_exited());

    runtime.remove_container(&id).await.unwrap();
    assert_eq!(
        next_event(&mut events, &id, |k| *k == ContainerEventKind::Destroyed).await,
        ContainerEventKind::Destroyed
    );
}

#[tokio::test]
async fn list_by_label_finds_containers_in_every_status() {
    let test = TestContainers::new();
    let other = TestContainers::new();
    let runtime = runtime().await;
    let running = run(&runtime, &test.spec("running", &["sleep", "60"])).await;
    let created = runtime
        .create_container(&test.spec("created", &["true"]))
        .await
        .unwrap();
    let exited = run(&runtime, &test.spec("exited", &["sh", "-c", "exit 2"])).await;
    wait_for(&runtime, &exited, "exit", |s| s.status.has_exited()).await;
    let _not_ours = runtime
        .create_container(&other.spec("other", &["true"]))
        .await
        .unwrap();

    let mut found: Vec<(String, ContainerStatus, Option<i64>)> = runtime
        .list_containers(&test.label())
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.status, s.exit_code))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (running, ContainerStatus::Running, None),
        (created, ContainerStatus::Created, None),
        (exited, ContainerStatus::Exited, Some(2)),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found, expected);
}

#[tokio::test]
async fn logs_return_what_the_container_printed() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let id = run(
        &runtime,
        // Docker copies stdout and stderr separately, so lines of the two streams written
        // together may be logged in either order: the pause makes "last" last.
        &test.spec(
            "logs",
            &["sh", "-c", "echo out; echo err >&2; sleep 0.3; echo last"],
        ),
    )
    .await;
    wait_for(&runtime, &id, "exit", |s| s.status.has_exited()).await;

    let output = collect_logs(&runtime, &id, None).await;
    let text = |source| {
        output
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(_, t)| t.as_str())
            .collect::<String>()
    };
    assert_eq!(text(LogSource::Stdout), "out\nlast\n");
    assert_eq!(text(LogSource::Stderr), "err\n");
    let tail = collect_logs(&runtime, &id, Some(1)).await;
    assert_eq!(tail, [(LogSource::Stdout, "last\n".to_string())]);

    // Following the logs of an exited container ends after the backlog.
    let followed: Vec<_> = tokio::time::timeout(
        DEADLINE,
        runtime
            .logs(&id, true, None)
            .await
            .unwrap()
            .collect::<Vec<_>>(),
    )
    .await
    .expect("follow of an exited container must end");
    assert_eq!(followed.len(), 3);
}

#[tokio::test]
async fn stats_report_memory_usage_and_limit() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    let id = run(
        &runtime,
        &ContainerSpec {
            memory_bytes: Some(64 << 20),
            ..test.spec("stats", &["sleep", "60"])
        },
    )
    .await;
    let stats = runtime.stats(&id).await.unwrap();
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert_eq!(stats.memory_limit_bytes, 64 << 20);
    assert!(stats.cpu_total_usage_ns > 0, "{stats:?}");
    assert!(stats.read_at.is_some());
    assert!(
        stats.raw["memory_stats"]["usage"].as_u64().is_some(),
        "{}",
        stats.raw
    );
    assert!(stats.raw["precpu_stats"].is_object(), "{}", stats.raw);
}

#[tokio::test]
async fn pulling_a_missing_image_fails_with_image_pull() {
    let runtime = runtime().await;
    // A registry on a port nothing listens on: the pull fails at once, offline or not.
    let result = runtime
        .pull_image("127.0.0.1:1/wharf-test/does-not-exist", None)
        .await;
    match result {
        Err(RuntimeError::ImagePull { image, reason }) => {
            assert_eq!(image, "127.0.0.1:1/wharf-test/does-not-exist:latest");
            assert!(!reason.is_empty());
        }
        other => panic!("expected ImagePull, got {other:?}"),
    }
}

#[tokio::test]
async fn image_presence_and_missing_things() {
    let test = TestContainers::new();
    let runtime = runtime().await;
    assert!(runtime.image_present(IMAGE).await.unwrap());
    assert!(!runtime
        .image_present("wharf-test/never-built:latest")
        .await
        .unwrap());

    let missing_image = runtime
        .create_container(&ContainerSpec {
            image: "wharf-test/never-built:latest".into(),
            ..test.spec("noimage", &["true"])
        })
        .await;
    assert!(
        matches!(missing_image, Err(RuntimeError::NotFound(_))),
        "{missing_image:?}"
    );

    let spec = test.spec("dup", &["true"]);
    runtime.create_container(&spec).await.unwrap();
    let duplicate = runtime.create_container(&spec).await;
    assert!(
        matches!(duplicate, Err(RuntimeError::Conflict(_))),
        "{duplicate:?}"
    );

    let nobody = "wharf-test-no-such-container";
    for result in [
        runtime.inspect_container(nobody).await.map(drop),
        runtime.start_container(nobody).await,
        runtime.stop_container(nobody, Duration::from_secs(1)).await,
        runtime.remove_container(nobody).await,
        runtime.stats(nobody).await.map(drop),
        runtime.logs(nobody, false, None).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(RuntimeError::NotFound(_))),
            "{result:?}"
        );
    }
}
