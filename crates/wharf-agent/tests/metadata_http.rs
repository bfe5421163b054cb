//! The task metadata endpoint over HTTP, in process: every path, the exact JSON shapes
//! ECS documents, refusals, and isolation between tasks, against a fake source.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;
use wharf_agent::metadata::{
    metadata_router, MetadataContainer, MetadataHealth, MetadataNetwork, MetadataPort,
    MetadataSource, MetadataTask,
};

const TASK_A: &str = "arn:aws:ecs:us-east-1:000000000000:task/prod/aaaa";
const TASK_B: &str = "arn:aws:ecs:us-east-1:000000000000:task/prod/bbbb";

/// Two tasks; tokens resolve to (task, Docker id).
struct FakeSource {
    tasks: HashMap<&'static str, MetadataTask>,
    tokens: HashMap<&'static str, (&'static str, &'static str)>,
    stats: HashMap<&'static str, Value>,
}

#[async_trait]
impl MetadataSource for FakeSource {
    fn lookup(&self, token: &str) -> Option<(MetadataTask, String)> {
        let (task, docker_id) = self.tokens.get(token)?;
        Some((self.tasks[task].clone(), (*docker_id).to_owned()))
    }

    async fn stats(&self, docker_id: &str) -> Option<Value> {
        self.stats.get(docker_id).cloned()
    }
}

fn labels(task_arn: &str, name: &str) -> BTreeMap<String, String> {
    [
        ("com.amazonaws.ecs.cluster", "prod"),
        ("com.amazonaws.ecs.container-name", name),
        ("com.amazonaws.ecs.task-arn", task_arn),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn fake() -> Arc<FakeSource> {
    let at = |second, nanos| {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, second).unwrap()
            + chrono::Duration::nanoseconds(nanos)
    };
    let app = MetadataContainer {
        docker_id: "a1".into(),
        name: "app".into(),
        docker_name: "ecs-web-3-app-1234".into(),
        image: "nginx:1.25".into(),
        image_id: "sha256:abc".into(),
        ports: vec![MetadataPort {
            container_port: 80,
            host_port: Some(32768),
            protocol: "tcp".into(),
            host_ip: Some("0.0.0.0".into()),
        }],
        labels: labels(TASK_A, "app"),
        desired_status: "RUNNING".into(),
        known_status: "RUNNING".into(),
        exit_code: None,
        cpu: Some(256.0),
        memory: Some(512),
        created_at: Some(at(1, 620_912_337)),
        started_at: Some(at(2, 0)),
        finished_at: None,
        health: Some(MetadataHealth {
            status: "HEALTHY".into(),
            since: Some(at(30, 500_000_000)),
            output: Some("ok\n".into()),
        }),
        networks: vec![MetadataNetwork {
            mode: "bridge".into(),
            ipv4: vec!["172.17.0.5".parse().unwrap()],
        }],
        container_arn: Some("arn:aws:ecs:us-east-1:000000000000:container/prod/aaaa/app".into()),
        log_driver: Some("json-file".into()),
        log_options: [("max-size".to_owned(), "10m".to_owned())].into(),
    };
    // An exited sidecar with nothing optional set, and a container not yet created.
    let sidecar = MetadataContainer {
        docker_id: "a2".into(),
        name: "sidecar".into(),
        docker_name: "ecs-web-3-sidecar-5678".into(),
        image: "busybox".into(),
        desired_status: "RUNNING".into(),
        known_status: "STOPPED".into(),
        exit_code: Some(0),
        ..Default::default()
    };
    let pending = MetadataContainer {
        name: "late".into(),
        image: "busybox".into(),
        desired_status: "RUNNING".into(),
        known_status: "PENDING".into(),
        ..Default::default()
    };
    let task_a = MetadataTask {
        cluster: "prod".into(),
        task_arn: TASK_A.into(),
        family: "web".into(),
        revision: 3,
        desired_status: "RUNNING".into(),
        known_status: "RUNNING".into(),
        cpu: Some(0.25),
        memory: Some(1024),
        pull_started_at: Some(at(0, 202_617_438)),
        pull_stopped_at: Some(at(0, 312_884_650)),
        availability_zone: Some("us-east-1a".into()),
        launch_type: Some("EC2".into()),
        task_tags: [("team".to_owned(), "web".to_owned())].into(),
        container_instance_tags: [("rack".to_owned(), "r1".to_owned())].into(),
        containers: vec![app, sidecar, pending],
    };
    let task_b = MetadataTask {
        cluster: "prod".into(),
        task_arn: TASK_B.into(),
        family: "secret-batch".into(),
        revision: 1,
        desired_status: "RUNNING".into(),
        known_status: "RUNNING".into(),
        containers: vec![MetadataContainer {
            docker_id: "b1".into(),
            name: "worker".into(),
            docker_name: "ecs-secret-batch-1-worker".into(),
            image: "batch".into(),
            labels: labels(TASK_B, "worker"),
            desired_status: "RUNNING".into(),
            known_status: "RUNNING".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Arc::new(FakeSource {
        tasks: [(TASK_A, task_a), (TASK_B, task_b)].into(),
        tokens: [
            ("tok-app", (TASK_A, "a1")),
            ("tok-sidecar", (TASK_A, "a2")),
            ("tok-worker", (TASK_B, "b1")),
        ]
        .into(),
        stats: [
            (
                "a1",
                json!({"read": "2024-05-01T12:01:00Z", "memory_stats": {"usage": 1234}}),
            ),
            (
                "b1",
                json!({"read": "2024-05-01T12:01:00Z", "memory_stats": {"usage": 999}}),
            ),
        ]
        .into(),
    })
}

fn router() -> Router {
    metadata_router(fake())
}

async fn request(
    router: &Router,
    method: Method,
    path: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

async fn get(router: &Router, path: &str) -> (StatusCode, Value) {
    let (status, headers, body) = request(router, Method::GET, path).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{path}");
    (status, body)
}

fn expected_app() -> Value {
    json!({
        "DockerId": "a1",
        "Name": "app",
        "DockerName": "ecs-web-3-app-1234",
        "Image": "nginx:1.25",
        "ImageID": "sha256:abc",
        "Ports": [{"ContainerPort": 80, "Protocol": "tcp", "HostPort": 32768, "HostIp": "0.0.0.0"}],
        "Labels": {
            "com.amazonaws.ecs.cluster": "prod",
            "com.amazonaws.ecs.container-name": "app",
            "com.amazonaws.ecs.task-arn": TASK_A,
        },
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 256, "Memory": 512},
        "CreatedAt": "2024-05-01T12:00:01.620912337Z",
        "StartedAt": "2024-05-01T12:00:02Z",
        "Type": "NORMAL",
        "Health": {"status": "HEALTHY", "statusSince": "2024-05-01T12:00:30.5Z", "output": "ok\n"},
        "LogDriver": "json-file",
        "LogOptions": {"max-size": "10m"},
        "ContainerARN": "arn:aws:ecs:us-east-1:000000000000:container/prod/aaaa/app",
        "Networks": [{"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.5"]}],
    })
}

fn expected_sidecar() -> Value {
    // Everything ECS documents as "omitted if …" is absent.
    json!({
        "DockerId": "a2",
        "Name": "sidecar",
        "DockerName": "ecs-web-3-sidecar-5678",
        "Image": "busybox",
        "ImageID": "",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "STOPPED",
        "ExitCode": 0,
        "Type": "NORMAL",
    })
}

fn expected_task_a() -> Value {
    json!({
        "Cluster": "prod",
        "TaskARN": TASK_A,
        "Family": "web",
        "Revision": "3",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.25, "Memory": 1024},
        "PullStartedAt": "2024-05-01T12:00:00.202617438Z",
        "PullStoppedAt": "2024-05-01T12:00:00.31288465Z",
        "AvailabilityZone": "us-east-1a",
        "LaunchType": "EC2",
        "Containers": [
            expected_app(),
            expected_sidecar(),
            {
                "DockerId": "",
                "Name": "late",
                "DockerName": "",
                "Image": "busybox",
                "ImageID": "",
                "DesiredStatus": "RUNNING",
                "KnownStatus": "PENDING",
                "Type": "NORMAL",
            },
        ],
    })
}

#[tokio::test]
async fn the_container_path_returns_this_container_in_the_ecs_shape() {
    let router = router();
    assert_eq!(
        get(&router, "/v4/tok-app").await,
        (StatusCode::OK, expected_app())
    );
    assert_eq!(
        get(&router, "/v4/tok-sidecar").await,
        (StatusCode::OK, expected_sidecar())
    );
    // A trailing slash, as some clients append, is the same path.
    assert_eq!(
        get(&router, "/v4/tok-app/").await,
        (StatusCode::OK, expected_app())
    );
}

#[tokio::test]
async fn the_task_path_returns_the_task_with_all_its_containers_and_no_tags() {
    let router = router();
    for token in ["tok-app", "tok-sidecar"] {
        assert_eq!(
            get(&router, &format!("/v4/{token}/task")).await,
            (StatusCode::OK, expected_task_a())
        );
    }
}

#[tokio::test]
async fn task_with_tags_adds_the_task_and_instance_tags() {
    let (status, body) = get(&router(), "/v4/tok-app/taskWithTags").await;
    assert_eq!(status, StatusCode::OK);
    let mut expected = expected_task_a();
    expected["TaskTags"] = json!({"team": "web"});
    expected["ContainerInstanceTags"] = json!({"rack": "r1"});
    assert_eq!(body, expected);

    // A task without tags still has both fields, empty.
    let (_, body) = get(&router(), "/v4/tok-worker/taskWithTags").await;
    assert_eq!(
        (&body["TaskTags"], &body["ContainerInstanceTags"]),
        (&json!({}), &json!({}))
    );
    assert!(body.get("Limits").is_none(), "no limits, no Limits: {body}");
}

#[tokio::test]
async fn stats_are_the_containers_own_docker_stats() {
    let router = router();
    assert_eq!(
        get(&router, "/v4/tok-app/stats").await,
        (
            StatusCode::OK,
            json!({"read": "2024-05-01T12:01:00Z", "memory_stats": {"usage": 1234}})
        )
    );
    // The exited sidecar has no stats: a 404 with a JSON body, not an empty 200.
    let (status, body) = get(&router, "/v4/tok-sidecar/stats").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["Code"], "StatsNotFound");
}

#[tokio::test]
async fn task_stats_map_each_created_container_to_its_stats() {
    let (status, body) = get(&router(), "/v4/tok-sidecar/task/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "a1": {"read": "2024-05-01T12:01:00Z", "memory_stats": {"usage": 1234}},
            "a2": null,
        })
    );
}

#[tokio::test]
async fn an_unknown_token_or_path_is_a_404_with_a_json_body() {
    let router = router();
    for path in [
        "/v4/nope",
        "/v4/nope/task",
        "/v4/nope/taskWithTags",
        "/v4/nope/stats",
        "/v4/nope/task/stats",
        "/v4/tok-app/tasks",
        "/v4/tok-app/task/stats/extra",
        "/v4/",
        "/v3/tok-app",
        "/",
        "/v4/TOK-APP",
    ] {
        let (status, body) = get(&router, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["Code"], "NotFound", "{path}");
        assert!(
            body["Message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_token_reaches_only_its_own_task() {
    let router = router();
    let (_, task) = get(&router, "/v4/tok-worker/task").await;
    assert_eq!(task["TaskARN"], TASK_B);
    assert_eq!(task["Containers"].as_array().unwrap().len(), 1);
    let (_, stats) = get(&router, "/v4/tok-worker/task/stats").await;
    assert_eq!(
        stats.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["b1"]
    );

    // Nothing any of task A's tokens can read mentions task B, and the reverse.
    for (token, own, other) in [
        ("tok-app", TASK_A, "bbbb"),
        ("tok-sidecar", TASK_A, "bbbb"),
        ("tok-worker", TASK_B, "aaaa"),
    ] {
        for suffix in ["", "/task", "/taskWithTags", "/stats", "/task/stats"] {
            let (_, body) = get(&router, &format!("/v4/{token}{suffix}")).await;
            let text = body.to_string();
            assert!(
                !text.contains(other),
                "{token}{suffix} leaks the other task: {text}"
            );
            if suffix.starts_with("/task") && suffix != "/task/stats" {
                assert_eq!(body["TaskARN"], own);
            }
        }
    }
}

#[tokio::test]
async fn only_get_and_head_are_answered() {
    let router = router();
    let (status, headers, body) = request(&router, Method::POST, "/v4/tok-app/task").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "GET, HEAD");
    assert_eq!(body["Code"], "MethodNotAllowed");
    let (status, _, _) = request(&router, Method::HEAD, "/v4/tok-app/task").await;
    assert_eq!(status, StatusCode::OK);
}

fn any_path() -> impl Strategy<Value = String> {
    let segment = "[a-zA-Z0-9%._~:@!$&'()*+,;=-]{0,12}";
    prop_oneof![
        // Arbitrary slash-separated paths.
        proptest::collection::vec(segment, 0..6)
            .prop_map(|segments| format!("/{}", segments.join("/"))),
        // Paths under a valid token, and under the v4 prefix.
        (
            prop_oneof![
                Just("/v4/tok-app"),
                Just("/v4/tok-worker"),
                Just("/v4"),
                Just("/v4/")
            ],
            proptest::collection::vec(segment, 0..4)
        )
            .prop_map(|(prefix, segments)| format!("{prefix}/{}", segments.join("/"))),
        // Anything printable; what is not a valid URI is skipped below.
        "/\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_path_panics_or_fails_the_server(path in any_path(), head in any::<bool>()) {
        let Ok(request) = Request::builder()
            .method(if head { Method::HEAD } else { Method::GET })
            .uri(&path)
            .body(Body::empty())
        else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (status, bytes) = runtime.block_on(async {
            let response = router().oneshot(request).await.unwrap();
            let status = response.status();
            (status, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap())
        });
        prop_assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{path}: {status}");
        // axum drops the body of a response to HEAD.
        if head {
            prop_assert!(bytes.is_empty());
            return Ok(());
        }
        let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
        if status == StatusCode::NOT_FOUND {
            prop_assert!(body.get("Code").is_some(), "{path}: {body}");
        }
    }
}
