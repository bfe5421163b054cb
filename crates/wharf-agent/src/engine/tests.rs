//! Unit tests of the task engine over the recording runtime and reporter. No test
//! sleeps to wait for the engine: each waits for a report or a call with a deadline.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wharf_agent_channel::session::SessionEvent;
use wharf_agent_channel::{ContainerPayload, TaskPayload};

use super::plan::{plan_task, PlanContext, LABEL_INSTANCE_ARN, LABEL_TASK_ARN};
use super::*;
use crate::runtime::fake::{RecordingRuntime, RuntimeCall, RuntimeOperation};
use crate::runtime::{ContainerRuntime, HealthStatus, Protocol, RuntimeError};

const DEADLINE: Duration = Duration::from_secs(5);
const CLUSTER: &str = "arn:aws:ecs:local:000000000000:cluster/default";
const INSTANCE: &str = "arn:aws:ecs:local:000000000000:container-instance/default/i1";
const IMAGE: &str = "app:1";

fn payload(arn: &str, containers: Value, desired: &str) -> TaskPayload {
    let names: Vec<ContainerPayload> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ContainerPayload {
            name: c["name"].as_str().unwrap().into(),
            container_arn: format!("{arn}/{}", c["name"].as_str().unwrap()),
        })
        .collect();
    TaskPayload {
        arn: arn.into(),
        family: "web".into(),
        task_definition_arn: "arn:aws:ecs:local:000000000000:task-definition/web:3".into(),
        desired_status: desired.into(),
        version: 1,
        task_definition: json!({"family": "web", "revision": 3, "containerDefinitions": containers}),
        overrides: Value::Null,
        containers: names,
        started_by: None,
        group: "family:web".into(),
    }
}

struct Harness {
    runtime: RecordingRuntime,
    reporter: Arc<RecordingReporter>,
    engine: Arc<TaskEngine>,
    session: mpsc::Sender<SessionEvent>,
    _shutdown: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Harness {
    async fn start(runtime: RecordingRuntime, tweak: impl FnOnce(&mut EngineConfig)) -> Self {
        let reporter = Arc::new(RecordingReporter::new());
        let mut config = EngineConfig::new(CLUSTER, INSTANCE);
        config.task_cleanup_wait = Duration::from_secs(3600);
        config.metadata_endpoint = Some("http://172.17.0.1:51679".into());
        tweak(&mut config);
        let engine = TaskEngine::new(Arc::new(runtime.clone()), reporter.clone(), config);
        let (session, events) = mpsc::channel(16);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handle = tokio::spawn(engine.clone().run(events, shutdown_rx));
        session.send(SessionEvent::Connected).await.unwrap();
        Harness {
            runtime,
            reporter,
            engine,
            session,
            _shutdown: shutdown,
            handle,
        }
    }

    async fn send(&self, tasks: Vec<TaskPayload>) {
        self.session.send(SessionEvent::Tasks(tasks)).await.unwrap();
    }

    async fn wait_task(&self, arn: &str, status: ReportedTaskStatus) -> TaskStateChange {
        self.reporter
            .wait_for_task(arn, status, DEADLINE)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "no {status:?} report for {arn}; reports: {:#?}",
                    self.reporter.reports()
                )
            })
    }

    /// The engine id of the task's container `name`.
    fn id_of(&self, arn: &str, name: &str) -> String {
        self.engine
            .task(arn)
            .and_then(|t| t.containers.into_iter().find(|c| c.name == name))
            .and_then(|c| c.docker_id)
            .unwrap_or_else(|| panic!("no container {name} in {arn}"))
    }

    fn creates(&self) -> usize {
        self.runtime
            .calls()
            .iter()
            .filter(|c| matches!(c, RuntimeCall::CreateContainer(_)))
            .count()
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn web() -> Value {
    json!([{"name": "web", "image": IMAGE, "portMappings": [{"containerPort": 80, "hostPort": 0}],
            "dockerLabels": {"team": "a"}, "stopTimeout": 7, "memory": 128}])
}

#[tokio::test]
async fn a_new_task_is_created_labelled_started_and_reported_running_with_real_ports() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    let running = h.wait_task("t1", ReportedTaskStatus::Running).await;
    let pending = h.wait_task("t1", ReportedTaskStatus::Pending).await;
    assert!(pending.pull_started_at.is_some() && pending.pull_stopped_at.is_some());
    let web = &running.containers[0];
    assert_eq!(web.status, ReportedContainerStatus::Running);
    assert_eq!(web.network_bindings.len(), 1);
    assert_eq!(web.network_bindings[0].host_port, 32768);
    assert_eq!(web.network_bindings[0].protocol, Protocol::Tcp);

    let id = h.id_of("t1", "web");
    let spec = h.runtime.spec_of(&id).unwrap();
    assert!(spec.name.starts_with("ecs-web-3-web-"), "{}", spec.name);
    assert_eq!(spec.name.len(), "ecs-web-3-web-".len() + 20);
    for (key, value) in [
        ("com.amazonaws.ecs.cluster", CLUSTER),
        ("com.amazonaws.ecs.task-arn", "t1"),
        ("com.amazonaws.ecs.container-name", "web"),
        ("com.amazonaws.ecs.task-definition-family", "web"),
        ("com.amazonaws.ecs.task-definition-version", "3"),
        (LABEL_INSTANCE_ARN, INSTANCE),
        ("team", "a"),
    ] {
        assert_eq!(
            spec.labels.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert_eq!(spec.memory_bytes, Some(128 * 1024 * 1024));
    let view = h.engine.task("t1").unwrap();
    let metadata = format!(
        "http://172.17.0.1:51679/v4/{}",
        view.containers[0].metadata_id
    );
    assert!(spec
        .env
        .contains(&("ECS_CONTAINER_METADATA_URI_V4".into(), metadata)));
    assert_eq!(view.known_status, TaskStatus::Running);
    assert_eq!(view.containers[0].ports[0].host_port, 32768);
}

#[tokio::test]
async fn the_same_payload_twice_changes_nothing() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    h.wait_task("t1", ReportedTaskStatus::Running).await;
    let reports = h.reporter.reports().len();
    let t1_reports = || {
        h.reporter
            .reports()
            .iter()
            .filter(|r| {
                matches!(r, Report::Task(t) if t.task_arn == "t1")
                    || matches!(r, Report::Container(c) if c.task_arn == "t1")
            })
            .count()
    };
    let before = t1_reports();
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    // A later payload about another task proves the repeats were processed.
    h.send(vec![payload("t2", web(), "RUNNING")]).await;
    h.wait_task("t2", ReportedTaskStatus::Running).await;
    assert_eq!(h.creates(), 2);
    assert!(h.reporter.reports().len() > reports);
    assert_eq!(t1_reports(), before);
    assert_eq!(h.reporter.task_reports("t1").len(), 2);
}

#[tokio::test]
async fn desired_stopped_stops_with_the_stop_timeout_and_reports_exit_codes() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    h.wait_task("t1", ReportedTaskStatus::Running).await;
    let id = h.id_of("t1", "web");
    h.send(vec![payload("t1", web(), "STOPPED")]).await;
    let stopped = h.wait_task("t1", ReportedTaskStatus::Stopped).await;
    assert_eq!(stopped.reason, None);
    assert_eq!(stopped.containers[0].exit_code, Some(143));
    assert!(stopped.execution_stopped_at.is_some());
    assert!(h.runtime.calls().contains(&RuntimeCall::StopContainer {
        id,
        timeout: Duration::from_secs(7)
    }));
}

fn two_containers(sidecar_essential: bool) -> Value {
    json!([
        {"name": "app", "image": IMAGE},
        {"name": "sidecar", "image": IMAGE, "essential": sidecar_essential},
    ])
}

#[tokio::test]
async fn an_essential_exit_stops_the_other_containers_and_the_task() {
    let h = Harness::start(RecordingRuntime::new(), |c| {
        c.stop_timeout = Duration::from_secs(9)
    })
    .await;
    h.send(vec![payload("t1", two_containers(false), "RUNNING")])
        .await;
    h.wait_task("t1", ReportedTaskStatus::Running).await;
    let sidecar = h.id_of("t1", "sidecar");
    h.runtime.set_exited(&h.id_of("t1", "app"), 3).unwrap();
    let stopped = h.wait_task("t1", ReportedTaskStatus::Stopped).await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(3));
    assert_eq!(stopped.containers[1].exit_code, Some(143));
    assert!(h.runtime.calls().contains(&RuntimeCall::StopContainer {
        id: sidecar,
        timeout: Duration::from_secs(9)
    }));
}

#[tokio::test]
async fn a_non_essential_exit_reports_only_that_container() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    h.send(vec![payload("t1", two_containers(false), "RUNNING")])
        .await;
    h.wait_task("t1", ReportedTaskStatus::Running).await;
    h.runtime.set_exited(&h.id_of("t1", "sidecar"), 5).unwrap();
    let report = h
        .reporter
        .wait_for(
            DEADLINE,
            |r| matches!(r, Report::Container(c) if c.status == ReportedContainerStatus::Stopped),
        )
        .await
        .expect("a container STOPPED report");
    let Report::Container(change) = report else {
        unreachable!()
    };
    assert_eq!(change.container_name, "sidecar");
    assert_eq!(change.exit_code, Some(5));
    assert!(h
        .reporter
        .task_reports("t1")
        .iter()
        .all(|t| t.status != ReportedTaskStatus::Stopped));
    assert_eq!(
        h.engine.task("t1").unwrap().known_status,
        TaskStatus::Running
    );
}

fn init_then_main(condition: &str) -> Value {
    json!([
        {"name": "init", "image": IMAGE, "essential": false},
        {"name": "main", "image": IMAGE, "dependsOn": [{"containerName": "init", "condition": condition}]},
    ])
}

fn started(h: &Harness, id: &str) -> bool {
    h.runtime
        .calls()
        .contains(&RuntimeCall::StartContainer(id.to_string()))
}

#[tokio::test]
async fn a_success_dependency_holds_the_start_until_it_exits_zero() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    h.send(vec![payload("t1", init_then_main("SUCCESS"), "RUNNING")])
        .await;
    eventually("init started", || {
        h.engine
            .task("t1")
            .is_some_and(|t| t.containers[0].known_status == ContainerKnownStatus::Running)
    })
    .await;
    let main = h.id_of("t1", "main");
    assert!(!started(&h, &main));
    h.runtime.set_exited(&h.id_of("t1", "init"), 0).unwrap();
    let running = h.wait_task("t1", ReportedTaskStatus::Running).await;
    assert_eq!(
        running.containers[0].status,
        ReportedContainerStatus::Stopped
    );
    assert_eq!(running.containers[0].exit_code, Some(0));
    assert!(started(&h, &main));
}

#[tokio::test]
async fn a_failed_success_dependency_never_starts_the_dependent_and_stops_the_task() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    h.send(vec![payload("t1", init_then_main("SUCCESS"), "RUNNING")])
        .await;
    eventually("init started", || {
        h.engine
            .task("t1")
            .is_some_and(|t| t.containers[0].known_status == ContainerKnownStatus::Running)
    })
    .await;
    h.runtime.set_exited(&h.id_of("t1", "init"), 1).unwrap();
    let stopped = h.wait_task("t1", ReportedTaskStatus::Stopped).await;
    assert!(stopped.reason.unwrap().contains("exited with code 1"));
    assert!(!started(&h, &h.id_of("t1", "main")));
}

#[tokio::test]
async fn a_healthy_dependency_waits_for_the_health_check() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    let containers = json!([
        {"name": "db", "image": IMAGE, "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "retries": 2}},
        {"name": "app", "image": IMAGE, "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
    ]);
    h.send(vec![payload("t1", containers, "RUNNING")]).await;
    eventually("db started", || {
        h.engine
            .task("t1")
            .is_some_and(|t| t.containers[0].health == Some(HealthStatus::Starting))
    })
    .await;
    let db = h.id_of("t1", "db");
    let spec = h.runtime.spec_of(&db).unwrap().health_check.unwrap();
    assert_eq!(spec.interval, Duration::from_secs(5));
    assert_eq!(spec.retries, 2);
    assert!(!started(&h, &h.id_of("t1", "app")));
    h.runtime.set_health(&db, HealthStatus::Healthy).unwrap();
    h.wait_task("t1", ReportedTaskStatus::Running).await;
    assert!(started(&h, &h.id_of("t1", "app")));
    assert_eq!(
        h.engine.task("t1").unwrap().containers[0].health,
        Some(HealthStatus::Healthy)
    );
}

#[tokio::test]
async fn failures_to_pull_create_or_start_stop_the_task_with_ecs_reasons() {
    let runtime = RecordingRuntime::new();
    runtime.refuse_pulls_of("missing:1");
    let h = Harness::start(runtime, |c| {
        c.image_pull_behavior = ImagePullBehavior::Always
    })
    .await;
    let missing = json!([{"name": "a", "image": "missing:1"}]);
    h.send(vec![payload("pull", missing, "RUNNING")]).await;
    let stopped = h.wait_task("pull", ReportedTaskStatus::Stopped).await;
    assert!(stopped
        .reason
        .unwrap()
        .starts_with("CannotPullContainerError: "));

    h.runtime.fail_next(
        RuntimeOperation::CreateContainer,
        RuntimeError::InvalidSpec("bad ulimit".into()),
    );
    h.send(vec![payload("create", web(), "RUNNING")]).await;
    let stopped = h.wait_task("create", ReportedTaskStatus::Stopped).await;
    assert!(stopped
        .reason
        .unwrap()
        .starts_with("CannotCreateContainerError: "));

    h.runtime.fail_next(
        RuntimeOperation::StartContainer,
        RuntimeError::Engine("no such file".into()),
    );
    h.send(vec![payload("start", web(), "RUNNING")]).await;
    let stopped = h.wait_task("start", ReportedTaskStatus::Stopped).await;
    assert!(stopped
        .reason
        .unwrap()
        .starts_with("CannotStartContainerError: "));
    assert_eq!(
        stopped.containers[0].status,
        ReportedContainerStatus::Stopped
    );
}

#[tokio::test]
async fn an_unavailable_logging_driver_is_refused() {
    let h = Harness::start(RecordingRuntime::new(), |_| {}).await;
    let containers =
        json!([{"name": "a", "image": IMAGE, "logConfiguration": {"logDriver": "awslogs"}}]);
    h.send(vec![payload("t1", containers, "RUNNING")]).await;
    let stopped = h.wait_task("t1", ReportedTaskStatus::Stopped).await;
    let reason = stopped.reason.unwrap();
    assert!(reason.contains("awslogs") && reason.starts_with("CannotCreateContainerError"));
    assert_eq!(h.creates(), 0);
}

#[tokio::test]
async fn a_restarted_engine_adopts_its_containers_without_duplicates() {
    let runtime = RecordingRuntime::new();
    let a = Harness::start(runtime.clone(), |_| {}).await;
    a.send(vec![payload("t1", two_containers(false), "RUNNING")])
        .await;
    a.wait_task("t1", ReportedTaskStatus::Running).await;
    let app = a.id_of("t1", "app");
    let metadata_id = a.engine.task("t1").unwrap().containers[0]
        .metadata_id
        .clone();
    a.handle.abort();
    // While no agent runs, the non-essential sidecar exits.
    runtime.set_exited(&a.id_of("t1", "sidecar"), 4).unwrap();
    let creates_before = a.creates();

    let b = Harness::start(runtime.clone(), |_| {}).await;
    eventually("adopted view", || b.engine.task("t1").is_some()).await;
    b.send(vec![payload("t1", two_containers(false), "RUNNING")])
        .await;
    let running = b.wait_task("t1", ReportedTaskStatus::Running).await;
    assert_eq!(b.creates(), creates_before);
    assert_eq!(running.containers[1].exit_code, Some(4));
    let view = b.engine.task("t1").unwrap();
    assert_eq!(view.containers[0].docker_id.as_deref(), Some(app.as_str()));
    assert_eq!(view.containers[0].metadata_id, metadata_id);
    let listed = runtime
        .list_containers(&[(LABEL_TASK_ARN.to_string(), "t1".to_string())])
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);

    b.send(vec![payload("t1", two_containers(false), "STOPPED")])
        .await;
    let stopped = b.wait_task("t1", ReportedTaskStatus::Stopped).await;
    assert_eq!(stopped.containers[0].exit_code, Some(143));
}

#[tokio::test]
async fn an_adopted_task_whose_essential_container_exited_is_reported_stopped() {
    let runtime = RecordingRuntime::new();
    let a = Harness::start(runtime.clone(), |_| {}).await;
    a.send(vec![payload("t1", web(), "RUNNING")]).await;
    a.wait_task("t1", ReportedTaskStatus::Running).await;
    a.handle.abort();
    runtime.set_exited(&a.id_of("t1", "web"), 2).unwrap();

    let b = Harness::start(runtime, |_| {}).await;
    b.send(vec![payload("t1", web(), "RUNNING")]).await;
    let stopped = b.wait_task("t1", ReportedTaskStatus::Stopped).await;
    assert_eq!(
        stopped.reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(stopped.containers[0].exit_code, Some(2));
}

#[tokio::test]
async fn only_a_full_state_payload_stops_tasks_it_does_not_list() {
    let runtime = RecordingRuntime::new();
    let a = Harness::start(runtime.clone(), |_| {}).await;
    a.send(vec![
        payload("kept", web(), "RUNNING"),
        payload("gone", web(), "RUNNING"),
    ])
    .await;
    a.wait_task("gone", ReportedTaskStatus::Running).await;
    a.wait_task("kept", ReportedTaskStatus::Running).await;
    // A later (not full) payload that omits "gone" stops nothing.
    a.send(vec![payload("kept", web(), "RUNNING")]).await;
    a.send(vec![payload("other", web(), "RUNNING")]).await;
    a.wait_task("other", ReportedTaskStatus::Running).await;
    assert!(a
        .reporter
        .task_reports("gone")
        .iter()
        .all(|t| t.status != ReportedTaskStatus::Stopped));
    a.handle.abort();

    let b = Harness::start(runtime, |_| {}).await;
    b.send(vec![
        payload("kept", web(), "RUNNING"),
        payload("other", web(), "RUNNING"),
    ])
    .await;
    b.wait_task("gone", ReportedTaskStatus::Stopped).await;
    b.wait_task("kept", ReportedTaskStatus::Running).await;
    assert!(b
        .reporter
        .task_reports("kept")
        .iter()
        .all(|t| t.status != ReportedTaskStatus::Stopped));
}

#[tokio::test]
async fn stopped_tasks_are_removed_after_the_cleanup_wait() {
    let h = Harness::start(RecordingRuntime::new(), |c| {
        c.task_cleanup_wait = Duration::from_millis(50)
    })
    .await;
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    h.wait_task("t1", ReportedTaskStatus::Running).await;
    let id = h.id_of("t1", "web");
    h.send(vec![payload("t1", web(), "STOPPED")]).await;
    h.wait_task("t1", ReportedTaskStatus::Stopped).await;
    eventually("removed", || {
        h.runtime
            .calls()
            .contains(&RuntimeCall::RemoveContainer(id.clone()))
    })
    .await;
    eventually("forgotten", || h.engine.task("t1").is_none()).await;
    // A late repeat of the payload does not run the task again.
    h.send(vec![payload("t1", web(), "RUNNING")]).await;
    h.send(vec![payload("t2", web(), "RUNNING")]).await;
    h.wait_task("t2", ReportedTaskStatus::Running).await;
    assert_eq!(h.creates(), 2);
}

#[test]
fn the_plan_maps_the_definition_and_the_overrides() {
    let mut p = payload(
        "t1",
        json!([{
            "name": "app", "image": IMAGE, "cpu": 256, "memory": 512, "memoryReservation": 256,
            "command": ["a"], "entryPoint": ["/bin/sh", "-c"], "workingDirectory": "/w", "user": "1000",
            "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
            "linuxParameters": {"initProcessEnabled": true},
            "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.1"}], "dnsServers": ["1.1.1.1"],
            "privileged": true, "readonlyRootFilesystem": true, "hostname": "h",
            "portMappings": [{"containerPort": 53, "hostPort": 5353, "protocol": "udp"}],
        }]),
        "RUNNING",
    );
    p.overrides = json!({"containerOverrides": [{"name": "app", "command": ["b"], "cpu": 512,
        "environment": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}], "memory": "1 GB"});
    p.task_definition["networkMode"] = json!("awsvpc");
    let cx = PlanContext {
        cluster_arn: CLUSTER,
        instance_arn: INSTANCE,
        default_stop_timeout: Duration::from_secs(30),
        logging_drivers: &["json-file".to_string()],
    };
    let plan = plan_task(&p, &cx).unwrap();
    assert_eq!(plan.memory_mib, Some(1024));
    assert_eq!(plan.network_mode, crate::runtime::NetworkMode::Bridge);
    let c = &plan.containers[0];
    assert_eq!(c.stop_timeout, Duration::from_secs(30));
    let s = &c.spec;
    assert_eq!(s.command, Some(vec!["b".to_string()]));
    assert_eq!(s.cpu_units, 512);
    assert_eq!(s.memory_bytes, Some(512 << 20));
    assert_eq!(s.memory_reservation_bytes, Some(256 << 20));
    assert_eq!(
        s.env,
        [("A", "1"), ("B", "3"), ("C", "4")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(s.ulimits[0].hard, 2048);
    assert!(s.init && s.privileged && s.readonly_root_filesystem);
    assert_eq!(s.port_bindings[0].host_port, Some(5353));
    assert_eq!(s.port_bindings[0].protocol, Protocol::Udp);
    assert_eq!(s.extra_hosts[0].ip_address, "10.0.0.1");

    p.task_definition["networkMode"] = json!("host");
    assert!(plan_task(&p, &cx).unwrap().containers[0]
        .spec
        .port_bindings
        .is_empty());
    p.task_definition["containerDefinitions"][0]["dependsOn"] =
        json!([{"containerName": "nope", "condition": "START"}]);
    assert!(plan_task(&p, &cx).is_err());
}

#[test]
fn task_reports_carry_the_control_planes_field_names() {
    let change = TaskStateChange {
        task_arn: "t1".into(),
        status: ReportedTaskStatus::Stopped,
        reason: Some("Essential container in task exited".into()),
        containers: vec![ContainerStateChange {
            task_arn: "t1".into(),
            container_name: "web".into(),
            runtime_id: Some("abc".into()),
            status: ReportedContainerStatus::Stopped,
            exit_code: Some(3),
            reason: None,
            network_bindings: vec![NetworkBinding {
                bind_ip: "0.0.0.0".into(),
                container_port: 80,
                host_port: 32768,
                protocol: Protocol::Tcp,
            }],
            health_status: Some("UNHEALTHY"),
        }],
        pull_started_at: chrono::DateTime::from_timestamp(10, 500_000_000),
        pull_stopped_at: None,
        execution_stopped_at: chrono::DateTime::from_timestamp(20, 0),
    };
    let input = report::task_state_change_input("default", &change);
    assert_eq!(
        input,
        json!({"cluster": "default", "task": "t1", "status": "STOPPED",
               "reason": "Essential container in task exited",
               "pullStartedAt": 10.5, "executionStoppedAt": 20.0,
               "containers": [{"containerName": "web", "status": "STOPPED", "runtimeId": "abc", "exitCode": 3,
                   "healthStatus": "UNHEALTHY",
                   "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768, "protocol": "tcp"}]}]})
    );
}
