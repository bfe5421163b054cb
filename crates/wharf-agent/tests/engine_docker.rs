//! The task engine against the real Docker engine on this machine.
//!
//! Each test runs its engine as a container instance of its own (a unique instance
//! ARN, which every container the engine creates carries as a label), and removes
//! those containers when it ends, passed or failed. The image is
//! `wharf-test/busybox:latest`, built by `scripts/build-test-images` when missing;
//! nothing is pulled (`prefer-cached`).

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wharf_agent::engine::{
    EngineConfig, ImagePullBehavior, RecordingReporter, ReportedTaskStatus, TaskEngine,
    TaskStateChange,
};
use wharf_agent::runtime::docker::DockerRuntime;
use wharf_agent::runtime::{ContainerRuntime, HealthStatus};
use wharf_agent_channel::session::SessionEvent;
use wharf_agent_channel::{ContainerPayload, TaskPayload};

const IMAGE: &str = "wharf-test/busybox:latest";
const DEADLINE: Duration = Duration::from_secs(60);

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

/// One test's instance: its ARN scopes its containers, which `Drop` removes.
struct Instance {
    arn: String,
}

impl Instance {
    fn new() -> Self {
        ensure_test_image();
        Instance {
            arn: format!(
                "arn:aws:ecs:local:000000000000:container-instance/test/{}",
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    fn label_filter(&self) -> String {
        format!("label=wharf.container-instance-arn={}", self.arn)
    }

    fn container_ids(&self, extra_label: Option<&str>) -> Vec<String> {
        let mut command = Command::new("docker");
        command.args(["ps", "-aq", "--filter", &self.label_filter()]);
        if let Some(label) = extra_label {
            command.args(["--filter", &format!("label={label}")]);
        }
        let output = command.output().expect("docker ps");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let ids = self.container_ids(None);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
    }
}

struct Agent {
    reporter: Arc<RecordingReporter>,
    engine: Arc<TaskEngine>,
    session: mpsc::Sender<SessionEvent>,
    _shutdown: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Agent {
    async fn start(instance: &Instance) -> Agent {
        let runtime = DockerRuntime::connect().await.expect("a Docker engine");
        let reporter = Arc::new(RecordingReporter::new());
        let mut config =
            EngineConfig::new("arn:aws:ecs:local:000000000000:cluster/test", &instance.arn);
        config.image_pull_behavior = ImagePullBehavior::PreferCached;
        config.stop_timeout = Duration::from_secs(2);
        let engine = TaskEngine::new(Arc::new(runtime), reporter.clone(), config);
        let (session, events) = mpsc::channel(16);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handle = tokio::spawn(engine.clone().run(events, shutdown_rx));
        session.send(SessionEvent::Connected).await.unwrap();
        Agent {
            reporter,
            engine,
            session,
            _shutdown: shutdown,
            handle,
        }
    }

    async fn send(&self, task: TaskPayload) {
        self.session
            .send(SessionEvent::Tasks(vec![task]))
            .await
            .unwrap();
    }

    async fn wait(&self, arn: &str, status: ReportedTaskStatus) -> TaskStateChange {
        self.reporter
            .wait_for_task(arn, status, DEADLINE)
            .await
            .unwrap_or_else(|| panic!("no {status:?} for {arn}: {:#?}", self.reporter.reports()))
    }
}

fn task(arn: &str, containers: Value, desired: &str) -> TaskPayload {
    TaskPayload {
        arn: arn.into(),
        family: "enginetest".into(),
        task_definition_arn: "arn:aws:ecs:local:000000000000:task-definition/enginetest:1".into(),
        desired_status: desired.into(),
        version: 1,
        task_definition: json!({"family": "enginetest", "revision": 1, "containerDefinitions": containers}),
        overrides: Value::Null,
        containers: containers
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ContainerPayload {
                name: c["name"].as_str().unwrap().into(),
                container_arn: format!("{arn}/{}", c["name"].as_str().unwrap()),
            })
            .collect(),
        started_by: None,
        group: "family:enginetest".into(),
    }
}

fn task_arn() -> String {
    format!(
        "arn:aws:ecs:local:000000000000:task/test/{}",
        uuid::Uuid::new_v4().simple()
    )
}

fn httpd() -> Value {
    json!([{
        "name": "web", "image": IMAGE,
        "command": ["sh", "-c", "mkdir -p /www && echo hello-wharf > /www/index.html && exec httpd -f -p 8080 -h /www"],
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
    }])
}

/// The answer to `GET /`; empty while nothing listens yet (docker-proxy accepts the
/// connection and closes it, or refuses it).
async fn http_get(port: u16) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
}

#[tokio::test]
async fn a_task_with_a_dynamic_port_runs_answers_and_stops() {
    let instance = Instance::new();
    let agent = Agent::start(&instance).await;
    let arn = task_arn();
    agent.send(task(&arn, httpd(), "RUNNING")).await;
    let running = agent.wait(&arn, ReportedTaskStatus::Running).await;
    let binding = &running.containers[0].network_bindings[0];
    assert_eq!(binding.container_port, 8080);
    assert_ne!(binding.host_port, 0);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer =
            tokio::time::timeout(Duration::from_secs(5), http_get(binding.host_port)).await;
        if let Ok(answer) = answer {
            if answer.contains("hello-wharf") {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "httpd never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    agent.send(task(&arn, httpd(), "STOPPED")).await;
    let stopped = agent.wait(&arn, ReportedTaskStatus::Stopped).await;
    // httpd runs as PID 1 without a SIGTERM handler, so the kernel ignores SIGTERM and
    // the engine kills it once the stop timeout is over.
    assert_eq!(stopped.containers[0].exit_code, Some(137));
}

#[tokio::test]
async fn an_essential_exit_stops_the_task_with_its_exit_code() {
    let instance = Instance::new();
    let agent = Agent::start(&instance).await;
    let arn = task_arn();
    let containers = json!([
        {"name": "main", "image": IMAGE, "command": ["sh", "-c", "sleep 1; exit 3"]},
        {"name": "side", "image": IMAGE, "essential": false, "command": ["sleep", "300"]},
    ]);
    agent.send(task(&arn, containers, "RUNNING")).await;
    let stopped = agent.wait(&arn, ReportedTaskStatus::Stopped).await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(3));
    // `sleep` as PID 1 ignores SIGTERM: it is killed after the stop timeout.
    assert_eq!(stopped.containers[1].exit_code, Some(137));
}

#[tokio::test]
async fn a_success_dependency_runs_to_completion_before_the_dependent_starts() {
    let instance = Instance::new();
    let agent = Agent::start(&instance).await;
    let arn = task_arn();
    let containers = json!([
        {"name": "init", "image": IMAGE, "essential": false, "command": ["sh", "-c", "sleep 1; exit 0"]},
        {"name": "main", "image": IMAGE, "command": ["sleep", "300"],
         "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
    ]);
    agent.send(task(&arn, containers, "RUNNING")).await;
    agent.wait(&arn, ReportedTaskStatus::Running).await;
    let view = agent.engine.task(&arn).unwrap();
    let init_finished = view.containers[0].finished_at.expect("init finished");
    let main_started = view.containers[1].started_at.expect("main started");
    assert_eq!(view.containers[0].exit_code, Some(0));
    assert!(
        main_started >= init_finished,
        "{main_started} < {init_finished}"
    );
}

#[tokio::test]
async fn a_healthy_dependency_holds_the_dependent_until_its_check_passes() {
    let instance = Instance::new();
    let agent = Agent::start(&instance).await;
    let arn = task_arn();
    let containers = json!([
        {"name": "db", "image": IMAGE, "command": ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 300"],
         "healthCheck": {"command": ["CMD-SHELL", "test -f /tmp/ready"], "interval": 1, "timeout": 1, "retries": 30}},
        {"name": "app", "image": IMAGE, "command": ["sleep", "300"],
         "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
    ]);
    agent.send(task(&arn, containers, "RUNNING")).await;
    agent.wait(&arn, ReportedTaskStatus::Running).await;
    let view = agent.engine.task(&arn).unwrap();
    assert_eq!(view.containers[0].health, Some(HealthStatus::Healthy));
    let db_started = view.containers[0].started_at.unwrap();
    let app_started = view.containers[1].started_at.unwrap();
    assert!(
        app_started - db_started >= chrono::Duration::seconds(2),
        "app started {app_started}, db {db_started}"
    );
}

#[tokio::test]
async fn a_restarted_engine_adopts_the_running_task_and_stops_it_when_told() {
    let instance = Instance::new();
    let arn = task_arn();
    let containers =
        json!([{"name": "main", "image": IMAGE, "command": ["sleep", "300"], "stopTimeout": 1}]);
    let a = Agent::start(&instance).await;
    a.send(task(&arn, containers.clone(), "RUNNING")).await;
    a.wait(&arn, ReportedTaskStatus::Running).await;
    let id = a.engine.task(&arn).unwrap().containers[0]
        .docker_id
        .clone()
        .unwrap();
    // As after a SIGKILL of the agent: nothing is stopped.
    a.handle.abort();
    drop(a);

    let task_label = format!("com.amazonaws.ecs.task-arn={arn}");
    assert_eq!(instance.container_ids(Some(&task_label)).len(), 1);
    let b = Agent::start(&instance).await;
    b.send(task(&arn, containers.clone(), "RUNNING")).await;
    b.wait(&arn, ReportedTaskStatus::Running).await;
    assert_eq!(instance.container_ids(Some(&task_label)).len(), 1);
    assert_eq!(
        b.engine.task(&arn).unwrap().containers[0]
            .docker_id
            .as_deref(),
        Some(id.as_str())
    );

    b.send(task(&arn, containers, "STOPPED")).await;
    let stopped = b.wait(&arn, ReportedTaskStatus::Stopped).await;
    assert_eq!(stopped.containers[0].exit_code, Some(137));
    let runtime = DockerRuntime::connect().await.unwrap();
    assert!(!runtime
        .inspect_container(&id)
        .await
        .unwrap()
        .status
        .is_running());
}
