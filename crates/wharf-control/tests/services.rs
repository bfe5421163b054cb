//! ECS services, in process: the API operations (every response checked against the
//! botocore model, every error against the errors it declares) and the service
//! controller, driven pass by pass with a manual clock while the tests play the agent
//! (SubmitTaskStateChange) and, for load balancers, the data plane (health records).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wharf_aws::{AwsError, AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_control::clock::ManualClock;
use wharf_control::ecs::services::{ControllerSettings, ServiceController};
use wharf_control::records::Records;
use wharf_control::{EcsConfig, EcsService};
use wharf_lb::records as lb;
use wharf_store::sqlite::SqliteStore;
use wharf_store::Store;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
const START_MILLIS: i64 = 1_700_000_000_000;
const GENERIC_ERRORS: [&str; 3] = [
    "SerializationException",
    "UnknownOperationException",
    "ThrottlingException",
];

struct Harness {
    service: EcsService,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    controller: ServiceController,
}

fn settings() -> ControllerSettings {
    ControllerSettings {
        tick: Duration::from_millis(100),
        lost_agent_after: Duration::from_secs(60),
        healthy_settle: Duration::from_secs(10),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(8),
        event_quiet: Duration::from_secs(300),
        unchecked_healthy_after: Duration::ZERO,
    }
}

impl Harness {
    fn new() -> Self {
        Self::with_settings(settings())
    }

    fn with_settings(settings: ControllerSettings) -> Self {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in_memory().expect("in-memory store opens"));
        let clock = Arc::new(ManualClock::at(START_MILLIS));
        let service = EcsService::new(
            Records::new(store.clone()),
            clock.clone(),
            EcsConfig::default(),
        );
        Harness {
            service,
            clock,
            store,
            controller: ServiceController::new(settings),
        }
    }

    async fn call(&self, op: &str, input: Value) -> Result<Value, AwsError> {
        let ctx = CallContext {
            request_id: "00000000-0000-0000-0000-000000000000".to_owned(),
            region: REGION.to_owned(),
            access_key_id: "AKIDWHARFTEST".to_owned(),
            account_id: ACCOUNT.to_owned(),
        };
        let model = self.service.model();
        match self.service.call(&ctx, op, ServiceInput::Json(input)).await {
            Ok(ServiceOutput::Json(value)) => {
                if let Err(violations) = model.validate_output(op, &value) {
                    for v in &violations {
                        eprintln!("{op} output violation at {:?}: {:?}", v.path, v.kind);
                    }
                    panic!("{op} output does not match the model: {value:#}");
                }
                Ok(value)
            }
            Ok(other) => panic!("{op} answered a non-JSON output: {other:?}"),
            Err(err) => {
                if !GENERIC_ERRORS.contains(&err.code.as_str()) {
                    let declared = model.error_names(op).expect("declared errors");
                    assert!(
                        declared.iter().any(|e| e.code == err.code),
                        "{op} answered {} ({}), which the model does not declare",
                        err.code,
                        err.message
                    );
                }
                Err(err)
            }
        }
    }

    async fn ok(&self, op: &str, input: Value) -> Value {
        match self.call(op, input.clone()).await {
            Ok(value) => value,
            Err(err) => panic!(
                "{op} failed with {}: {} (input {input})",
                err.code, err.message
            ),
        }
    }

    async fn err(&self, op: &str, input: Value) -> (String, String) {
        match self.call(op, input.clone()).await {
            Ok(value) => panic!("{op} succeeded but should have failed (input {input}): {value:#}"),
            Err(err) => {
                assert!(!err.message.is_empty());
                (err.code, err.message)
            }
        }
    }

    async fn pass(&self) -> usize {
        self.controller
            .reconcile_all(&self.service)
            .await
            .expect("controller pass")
    }

    async fn register_instance(&self, cluster: &str, zone: &str, memory: i64) -> String {
        let out = self
            .ok(
                "RegisterContainerInstance",
                json!({
                    "cluster": cluster,
                    "totalResources": [
                        {"name": "CPU", "type": "INTEGER", "integerValue": 4096},
                        {"name": "MEMORY", "type": "INTEGER", "integerValue": memory},
                        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
                        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
                    ],
                    "versionInfo": {"agentVersion": "1.80.0", "agentHash": "abc", "dockerVersion": "25.0.3"},
                    "attributes": [
                        {"name": "ecs.availability-zone", "value": zone},
                        {"name": "ecs.capability.container-health-check"},
                    ],
                }),
            )
            .await;
        out["containerInstance"]["containerInstanceArn"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn register_td(&self, family: &str, extra: Value) -> String {
        let mut container = json!({
            "name": "app",
            "image": "wharf-test/busybox:latest",
            "memory": 64,
            "essential": true,
            "command": ["httpd", "-f", "-p", "8080"],
            "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        });
        if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let out = self
            .ok(
                "RegisterTaskDefinition",
                json!({"family": family, "containerDefinitions": [container]}),
            )
            .await;
        out["taskDefinition"]["taskDefinitionArn"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn describe(&self, cluster: &str, name: &str) -> Value {
        let out = self
            .ok(
                "DescribeServices",
                json!({"cluster": cluster, "services": [name]}),
            )
            .await;
        assert_eq!(out["failures"], json!([]), "{out:#}");
        out["services"][0].clone()
    }

    /// Every task of the cluster (desired RUNNING and STOPPED).
    async fn tasks(&self, cluster: &str) -> Vec<Value> {
        let mut arns = Vec::new();
        for desired in ["RUNNING", "STOPPED"] {
            let out = self
                .ok(
                    "ListTasks",
                    json!({"cluster": cluster, "desiredStatus": desired, "maxResults": 100}),
                )
                .await;
            arns.extend(strings(&out["taskArns"]));
        }
        let mut tasks = Vec::new();
        for chunk in arns.chunks(100) {
            let out = self
                .ok("DescribeTasks", json!({"cluster": cluster, "tasks": chunk}))
                .await;
            tasks.extend(out["tasks"].as_array().unwrap().iter().cloned());
        }
        tasks
    }

    /// Tasks desired RUNNING.
    async fn live(&self, cluster: &str) -> Vec<Value> {
        self.tasks(cluster)
            .await
            .into_iter()
            .filter(|t| t["desiredStatus"] == "RUNNING" && t["lastStatus"] != "STOPPED")
            .collect()
    }

    async fn report(&self, cluster: &str, task: &Value, status: &str, exit_code: Option<i64>) {
        let port = 32768 + self.clock_ms() % 1000;
        let mut container = json!({
            "containerName": "app",
            "status": status,
            "networkBindings": [{"bindIP": "0.0.0.0", "containerPort": 8080, "hostPort": port, "protocol": "tcp"}],
        });
        if let Some(code) = exit_code {
            container["exitCode"] = json!(code);
        }
        self.ok(
            "SubmitTaskStateChange",
            json!({
                "cluster": cluster,
                "task": task["taskArn"],
                "status": status,
                "containers": [container],
            }),
        )
        .await;
    }

    fn clock_ms(&self) -> i64 {
        use wharf_control::Clock;
        self.clock.now_millis()
    }

    /// Plays the agent: starts what should run, stops what should stop.
    async fn agent(&self, cluster: &str) {
        for task in self.tasks(cluster).await {
            let last = task["lastStatus"].as_str().unwrap();
            if last == "STOPPED" {
                continue;
            }
            if task["desiredStatus"] == "STOPPED" {
                self.report(cluster, &task, "STOPPED", Some(143)).await;
            } else if last != "RUNNING" {
                self.report(cluster, &task, "RUNNING", None).await;
                // Distinct host ports per task.
                self.clock.advance(1);
            }
        }
    }

    /// Runs passes and the agent until nothing changes (at most `rounds`).
    async fn settle(&self, cluster: &str, rounds: usize) {
        for _ in 0..rounds {
            let changed = self.pass().await;
            self.agent(cluster).await;
            if changed == 0 && self.pass().await == 0 {
                return;
            }
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn messages(service: &Value) -> Vec<String> {
    service["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

fn count_messages(service: &Value, needle: &str) -> usize {
    messages(service)
        .iter()
        .filter(|m| m.contains(needle))
        .count()
}

/// botocore's `services_stable` waiter: one deployment and runningCount == desiredCount.
fn stable(service: &Value) -> bool {
    service["deployments"].as_array().unwrap().len() == 1
        && service["runningCount"] == service["desiredCount"]
}

async fn setup(h: &Harness, instances: usize) -> Vec<String> {
    h.ok("CreateCluster", json!({"clusterName": "c"})).await;
    let mut arns = Vec::new();
    for i in 0..instances {
        let zone = ["us-east-1a", "us-east-1b"][i % 2];
        arns.push(h.register_instance("c", zone, 2048).await);
    }
    arns
}

// ---------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_describe_list_update_delete() {
    let h = Harness::new();
    setup(&h, 1).await;
    let td = h.register_td("web", json!({})).await;
    let out = h
        .ok(
            "CreateService",
            json!({
                "cluster": "c", "serviceName": "web", "taskDefinition": "web",
                "desiredCount": 2, "tags": [{"key": "team", "value": "a"}],
            }),
        )
        .await;
    let svc = &out["service"];
    assert_eq!(
        svc["serviceArn"],
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/c/web")
    );
    assert_eq!(svc["status"], "ACTIVE");
    assert_eq!(svc["taskDefinition"], td);
    assert_eq!(svc["schedulingStrategy"], "REPLICA");
    assert_eq!(svc["launchType"], "EC2");
    assert_eq!(svc["deploymentConfiguration"]["maximumPercent"], 200);
    assert_eq!(svc["deploymentConfiguration"]["minimumHealthyPercent"], 100);
    let deployments = svc["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0]["status"], "PRIMARY");
    assert_eq!(deployments[0]["rolloutState"], "IN_PROGRESS");
    let id = deployments[0]["id"].as_str().unwrap();
    assert!(
        id.starts_with("ecs-svc/") && id[8..].len() == 19,
        "deployment id {id}"
    );

    // A second create with the same name is refused while the first is ACTIVE.
    let (code, _) = h
        .err(
            "CreateService",
            json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");

    // Describe: by name and ARN, with tags on request, MISSING for unknown ones.
    let out = h
        .ok(
            "DescribeServices",
            json!({"cluster": "c", "services": ["web", svc["serviceArn"], "ghost"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(out["services"].as_array().unwrap().len(), 2);
    assert_eq!(
        out["services"][0]["tags"],
        json!([{"key": "team", "value": "a"}])
    );
    assert_eq!(out["failures"][0]["reason"], "MISSING");
    assert_eq!(
        out["failures"][0]["arn"],
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/c/ghost")
    );

    // List with paging and filters.
    for name in ["api", "db"] {
        h.ok(
            "CreateService",
            json!({"cluster": "c", "serviceName": name, "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
    }
    let first = h
        .ok("ListServices", json!({"cluster": "c", "maxResults": 2}))
        .await;
    assert_eq!(strings(&first["serviceArns"]).len(), 2);
    let token = first["nextToken"].as_str().expect("a next page").to_owned();
    let second = h
        .ok(
            "ListServices",
            json!({"cluster": "c", "maxResults": 2, "nextToken": token}),
        )
        .await;
    assert_eq!(strings(&second["serviceArns"]).len(), 1);
    let daemons = h
        .ok(
            "ListServices",
            json!({"cluster": "c", "schedulingStrategy": "DAEMON"}),
        )
        .await;
    assert!(strings(&daemons["serviceArns"]).is_empty());
    let fargate = h
        .ok(
            "ListServices",
            json!({"cluster": "c", "launchType": "FARGATE"}),
        )
        .await;
    assert!(strings(&fargate["serviceArns"]).is_empty());

    // Errors with ECS's names.
    let (code, _) = h
        .err("ListServicesByNamespace", json!({"namespace": "prod"}))
        .await;
    assert_eq!(code, "NamespaceNotFoundException");
    let (code, _) = h.err("ListServices", json!({"cluster": "ghost"})).await;
    assert_eq!(code, "ClusterNotFoundException");
    let (code, _) = h
        .err(
            "UpdateService",
            json!({"cluster": "c", "service": "ghost", "desiredCount": 1}),
        )
        .await;
    assert_eq!(code, "ServiceNotFoundException");
    let (code, message) = h
        .err("DeleteService", json!({"cluster": "c", "service": "web"}))
        .await;
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("scaled above 0"), "{message}");

    // Delete: DRAINING at once, INACTIVE once its tasks are gone.
    h.settle("c", 5).await;
    assert_eq!(h.live("c").await.len(), 2);
    let out = h
        .ok(
            "DeleteService",
            json!({"cluster": "c", "service": "web", "force": true}),
        )
        .await;
    assert_eq!(out["service"]["status"], "DRAINING");
    let listed = h.ok("ListServices", json!({"cluster": "c"})).await;
    assert!(!strings(&listed["serviceArns"])
        .iter()
        .any(|a| a.ends_with("/web")));
    h.settle("c", 5).await;
    assert!(h.live("c").await.is_empty());
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["status"], "INACTIVE");
    let (code, _) = h
        .err(
            "UpdateService",
            json!({"cluster": "c", "service": "web", "desiredCount": 1}),
        )
        .await;
    assert_eq!(code, "ServiceNotActiveException");
    // An INACTIVE service's name can be used again.
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 0}),
    )
    .await;
}

#[tokio::test]
async fn invalid_requests_are_refused_as_ecs_does() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    let base =
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1});
    let with = |patch: Value| {
        let mut v = base.clone();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v
    };
    let cases = [
        (
            with(json!({"serviceName": "bad name!"})),
            "InvalidParameterException",
        ),
        (
            with(json!({"desiredCount": -1})),
            "InvalidParameterException",
        ),
        (
            with(json!({"desiredCount": null})),
            "InvalidParameterException",
        ),
        (
            with(json!({"schedulingStrategy": "DAEMON"})),
            "InvalidParameterException",
        ),
        (
            with(
                json!({"schedulingStrategy": "DAEMON", "desiredCount": null, "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
            ),
            "InvalidParameterException",
        ),
        (
            with(
                json!({"deploymentConfiguration": {"maximumPercent": 100, "minimumHealthyPercent": 100}}),
            ),
            "InvalidParameterException",
        ),
        (
            with(json!({"deploymentConfiguration": {"minimumHealthyPercent": 150}})),
            "InvalidParameterException",
        ),
        (
            with(json!({"placementStrategy": [{"type": "binpack", "field": "disk"}]})),
            "InvalidParameterException",
        ),
        (with(json!({"taskDefinition": "ghost"})), "ClientException"),
        (
            with(
                json!({"loadBalancers": [{"targetGroupArn": format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/tg/0123456789abcdef"), "containerName": "app", "containerPort": 8080}]}),
            ),
            "InvalidParameterException",
        ),
        (
            with(json!({"cluster": "ghost"})),
            "ClusterNotFoundException",
        ),
    ];
    for (input, expected) in cases {
        let (code, message) = h.err("CreateService", input.clone()).await;
        assert_eq!(code, expected, "{input}: {message}");
    }
    // A DAEMON service without a desired count is fine.
    let out = h
        .ok(
            "CreateService",
            with(json!({"serviceName": "d", "schedulingStrategy": "DAEMON", "desiredCount": null})),
        )
        .await;
    assert_eq!(
        out["service"]["deploymentConfiguration"]["maximumPercent"],
        100
    );
    assert_eq!(
        out["service"]["deploymentConfiguration"]["minimumHealthyPercent"],
        0
    );
    let (code, _) = h
        .err(
            "UpdateService",
            json!({"cluster": "c", "service": "d", "desiredCount": 3}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
}

#[tokio::test]
async fn load_balancer_entries_are_checked_against_the_task_definition_and_target_group() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    let tg = put_target_group(&h, "tg", "instance", 0, true).await;
    let create = |container: &str, port: i64| {
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
               "loadBalancers": [{"targetGroupArn": tg, "containerName": container, "containerPort": port}]})
    };
    let (code, message) = h.err("CreateService", create("nope", 8080)).await;
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("nope"), "{message}");
    let (code, _) = h.err("CreateService", create("app", 9999)).await;
    assert_eq!(code, "InvalidParameterException");
    let lonely = put_target_group(&h, "lonely", "instance", 0, false).await;
    let (code, message) = h
        .err(
            "CreateService",
            json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                   "loadBalancers": [{"targetGroupArn": lonely, "containerName": "app", "containerPort": 8080}]}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
    assert!(
        message.contains("does not have an associated load balancer"),
        "{message}"
    );
    let out = h.ok("CreateService", create("app", 8080)).await;
    assert_eq!(
        out["service"]["loadBalancers"],
        json!([{"targetGroupArn": tg, "containerName": "app", "containerPort": 8080}])
    );
}

// ---------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_controller_starts_replaces_and_reaches_a_steady_state() {
    let h = Harness::new();
    setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    h.pass().await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 2);
    for task in &live {
        assert_eq!(task["group"], "service:web");
        assert!(task["startedBy"].as_str().unwrap().starts_with("ecs-svc/"));
    }
    // Spread across the two zones (the service default).
    let zones: BTreeSet<String> = live
        .iter()
        .map(|t| t["availabilityZone"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(zones.len(), 2);
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["pendingCount"], 2);
    assert!(messages(&svc)[0].starts_with("(service web) has started 2 tasks: (task "));
    assert!(!stable(&svc));

    h.settle("c", 5).await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(count_messages(&svc, "has reached a steady state."), 1);
    assert_eq!(count_messages(&svc, "deployment completed."), 1);
    let newest = messages(&svc);
    assert_eq!(newest[0], "(service web) has reached a steady state.");

    // A task that exits (even cleanly) is replaced.
    let victim = h.live("c").await[0].clone();
    h.report("c", &victim, "STOPPED", Some(0)).await;
    h.pass().await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|t| t["taskArn"] != victim["taskArn"]));
    h.settle("c", 5).await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc));
    assert_eq!(count_messages(&svc, "has reached a steady state."), 2);

    // A pass with nothing to do changes nothing.
    assert_eq!(h.pass().await, 0);
}

#[tokio::test]
async fn scaling_up_and_down() {
    let h = Harness::new();
    setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
    )
    .await;
    h.settle("c", 5).await;
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 4}),
    )
    .await;
    h.settle("c", 5).await;
    assert_eq!(h.live("c").await.len(), 4);
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc));
    assert_eq!(svc["runningCount"], 4);
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 1}),
    )
    .await;
    h.pass().await;
    let stopping: Vec<Value> = h
        .tasks("c")
        .await
        .into_iter()
        .filter(|t| t["desiredStatus"] == "STOPPED")
        .collect();
    assert_eq!(stopping.len(), 3);
    for task in &stopping {
        assert_eq!(task["stopCode"], "ServiceSchedulerInitiated");
        assert!(task["stoppedReason"]
            .as_str()
            .unwrap()
            .starts_with("Scaling activity initiated by (deployment ecs-svc/"));
    }
    let svc = h.describe("c", "web").await;
    assert!(messages(&svc)
        .iter()
        .any(|m| m.starts_with("(service web) has stopped 3 running tasks: (task ")));
    h.settle("c", 5).await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc));
    assert_eq!(svc["runningCount"], 1);
}

/// Rolls desired 4 with maximumPercent 150 and minimumHealthyPercent 50, checking after
/// every step that no more than 6 tasks run or start and at least 2 healthy remain.
#[tokio::test]
async fn rolling_update_stays_within_minimum_healthy_and_maximum_percent() {
    let h = Harness::new();
    setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 4,
               "deploymentConfiguration": {"maximumPercent": 150, "minimumHealthyPercent": 50}}),
    )
    .await;
    h.settle("c", 5).await;
    let v2 = h
        .register_td("web", json!({"environment": [{"name": "V", "value": "2"}]}))
        .await;
    let out = h
        .ok(
            "UpdateService",
            json!({"cluster": "c", "service": "web", "taskDefinition": "web"}),
        )
        .await;
    assert_eq!(out["service"]["taskDefinition"], v2);
    let deployments = out["service"]["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(deployments[0]["status"], "PRIMARY");
    assert_eq!(deployments[0]["taskDefinition"], v2);
    assert_eq!(deployments[1]["status"], "ACTIVE");
    let mut max_seen = 0;
    let mut min_healthy_seen = usize::MAX;
    for _ in 0..20 {
        h.pass().await;
        let live = h.live("c").await;
        let healthy = live.iter().filter(|t| t["lastStatus"] == "RUNNING").count();
        max_seen = max_seen.max(live.len());
        min_healthy_seen = min_healthy_seen.min(healthy);
        h.agent("c").await;
        let svc = h.describe("c", "web").await;
        if stable(&svc) && live.iter().all(|t| t["taskDefinitionArn"] == v2) {
            break;
        }
    }
    assert!(
        max_seen <= 6,
        "at most 150% of 4 tasks at once, saw {max_seen}"
    );
    assert!(
        min_healthy_seen >= 2,
        "at least 50% of 4 healthy, saw {min_healthy_seen}"
    );
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(svc["deployments"][0]["taskDefinition"], v2);
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    let live = h.live("c").await;
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|t| t["taskDefinitionArn"] == v2));
}

#[tokio::test]
async fn the_circuit_breaker_fails_a_bad_deployment_and_rolls_back() {
    let h = Harness::new();
    setup(&h, 2).await;
    let v1 = h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    h.settle("c", 5).await;
    let good = h.describe("c", "web").await;
    let good_id = good["deployments"][0]["id"].as_str().unwrap().to_owned();
    let old_task = h.live("c").await[0]["taskArn"].clone();
    let v2 = h
        .register_td("web", json!({"command": ["sh", "-c", "exit 1"]}))
        .await;
    let out = h
        .ok(
            "UpdateService",
            json!({"cluster": "c", "service": "web", "taskDefinition": v2}),
        )
        .await;
    let bad_id = out["service"]["deployments"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Each new task starts and exits 1; the breaker trips at its minimum of 3.
    for round in 0..3 {
        h.pass().await;
        let new: Vec<Value> = h
            .live("c")
            .await
            .into_iter()
            .filter(|t| t["taskDefinitionArn"] == v2)
            .collect();
        assert_eq!(new.len(), 1, "round {round}: one new task at a time");
        h.report("c", &new[0], "RUNNING", None).await;
        h.report("c", &new[0], "STOPPED", Some(1)).await;
        h.pass().await;
        // Back-off: nothing starts before it has passed.
        let svc = h.describe("c", "web").await;
        if round < 2 {
            assert_eq!(svc["deployments"][0]["failedTasks"], round + 1);
            assert!(h
                .live("c")
                .await
                .iter()
                .all(|t| t["taskDefinitionArn"] != v2));
        }
        h.clock.advance(10_000);
    }
    let svc = h.describe("c", "web").await;
    let all = messages(&svc);
    assert!(
        all.contains(&format!(
            "(service web) (deployment {bad_id}) deployment failed: tasks failed to start."
        )),
        "{all:#?}"
    );
    assert!(all.contains(&format!(
        "(service web) rolling back to deployment {good_id}."
    )));
    assert_eq!(svc["taskDefinition"], v1);
    let deployments = svc["deployments"].as_array().unwrap();
    assert_eq!(deployments[0]["id"], good_id);
    assert_eq!(deployments[0]["status"], "PRIMARY");
    assert!(deployments[0]["rolloutStateReason"]
        .as_str()
        .unwrap()
        .starts_with("ECS deployment circuit breaker: rolling back"));
    // The old task never stopped; the service settles on it again.
    h.settle("c", 5).await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    let live = h.live("c").await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["taskArn"], old_task);
}

#[tokio::test]
async fn failing_tasks_back_off_exponentially() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("crash", json!({"command": ["sh", "-c", "exit 3"]}))
        .await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "crash", "taskDefinition": "crash", "desiredCount": 1}),
    )
    .await;
    // Failure n holds starts back for 1 s * 2^(n-1), capped at 8 s.
    for (failure, wait_ms) in [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (5, 8000)] {
        h.pass().await;
        let live = h.live("c").await;
        assert_eq!(live.len(), 1, "failure {failure}");
        h.report("c", &live[0], "STOPPED", Some(3)).await;
        h.pass().await;
        h.clock.advance(wait_ms - 1);
        h.pass().await;
        assert!(
            h.live("c").await.is_empty(),
            "still backing off after failure {failure}"
        );
        h.clock.advance(1);
    }
    let svc = h.describe("c", "crash").await;
    assert_eq!(
        count_messages(&svc, "is unable to consistently start tasks successfully."),
        1
    );
}

#[tokio::test]
async fn daemon_services_follow_instances() {
    let h = Harness::new();
    let instances = setup(&h, 2).await;
    h.register_td("agent", json!({"portMappings": []})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "agent", "taskDefinition": "agent", "schedulingStrategy": "DAEMON"}),
    )
    .await;
    h.settle("c", 5).await;
    let on = |tasks: &[Value]| -> BTreeSet<String> {
        tasks
            .iter()
            .map(|t| t["containerInstanceArn"].as_str().unwrap().to_owned())
            .collect()
    };
    let live = h.live("c").await;
    assert_eq!(live.len(), 2);
    assert_eq!(on(&live), instances.iter().cloned().collect());
    let svc = h.describe("c", "agent").await;
    assert_eq!(svc["desiredCount"], 2);
    assert!(stable(&svc));

    // A new instance gets one.
    let third = h.register_instance("c", "us-east-1c", 2048).await;
    h.settle("c", 5).await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 3);
    assert!(on(&live).contains(&third));
    assert_eq!(h.describe("c", "agent").await["desiredCount"], 3);

    // A draining instance loses its task and is not replaced elsewhere.
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c", "containerInstances": [instances[0]], "status": "DRAINING"}),
    )
    .await;
    h.settle("c", 5).await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 2);
    assert!(!on(&live).contains(&instances[0]));
    let svc = h.describe("c", "agent").await;
    assert_eq!(svc["desiredCount"], 2);
    assert!(stable(&svc));
}

#[tokio::test]
async fn unhealthy_containers_are_replaced_after_the_grace_period() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td(
        "web",
        json!({"healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "retries": 1}}),
    )
    .await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
               "healthCheckGracePeriodSeconds": 30}),
    )
    .await;
    h.settle("c", 3).await;
    // RUNNING but not yet HEALTHY: the deployment does not complete.
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["deployments"][0]["rolloutState"], "IN_PROGRESS");
    let live = h.live("c").await;
    assert_eq!(live.len(), 1, "{:#?} {svc:#}", h.tasks("c").await);
    let task = live[0].clone();
    let health = |status: &str| {
        json!({"cluster": "c", "task": task["taskArn"], "containerName": "app", "status": "RUNNING",
               "networkBindings": [], "healthStatus": status})
    };
    h.ok("SubmitContainerStateChange", health("HEALTHY")).await;
    h.pass().await;
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    h.ok("SubmitContainerStateChange", health("UNHEALTHY"))
        .await;
    h.pass().await;
    // Within the grace period it stays.
    assert_eq!(h.live("c").await[0]["taskArn"], task["taskArn"]);
    h.clock.advance(31_000);
    h.pass().await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 1);
    assert_ne!(live[0]["taskArn"], task["taskArn"]);
    let svc = h.describe("c", "web").await;
    assert!(messages(&svc).iter().any(|m| m
        == &format!(
            "(service web) (task {}) failed container health checks.",
            task["taskArn"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
        )));
}

#[tokio::test]
async fn tasks_on_a_lost_instance_are_replaced() {
    let h = Harness::new();
    let instances = setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    h.settle("c", 5).await;
    // The first instance's agent goes away.
    let id = instances[0].rsplit('/').next().unwrap();
    let key = format!("ecs/{REGION}/instance/c/{id}");
    let kv = h.store.get(&key).await.unwrap().unwrap();
    let mut record: Value = serde_json::from_slice(&kv.value).unwrap();
    record["agent_connected"] = json!(false);
    h.store
        .txn(wharf_store::Txn::new().put(&key, serde_json::to_vec(&record).unwrap()))
        .await
        .unwrap();
    h.pass().await;
    assert_eq!(
        h.live("c").await.len(),
        2,
        "not yet: the agent may come back"
    );
    h.clock.advance(61_000);
    h.pass().await;
    let live = h.live("c").await;
    let on_lost = live
        .iter()
        .filter(|t| {
            t["containerInstanceArn"] == instances[0].as_str() && t["lastStatus"] == "RUNNING"
        })
        .count();
    assert_eq!(on_lost, 0);
    assert_eq!(live.len(), 2);
    // The stopped task on the lost instance never reports STOPPED (its agent is gone),
    // yet the service reaches a steady state on the replacement. (Only the healthy
    // instance's "agent" reports here.)
    for _ in 0..3 {
        h.pass().await;
        for task in h.live("c").await {
            if task["containerInstanceArn"] != instances[0].as_str()
                && task["lastStatus"] != "RUNNING"
            {
                h.report("c", &task, "RUNNING", None).await;
                h.clock.advance(1);
            }
        }
    }
    h.pass().await;
    let stranded = h
        .tasks("c")
        .await
        .into_iter()
        .filter(|t| t["containerInstanceArn"] == instances[0].as_str())
        .filter(|t| t["desiredStatus"] == "STOPPED" && t["lastStatus"] == "RUNNING")
        .count();
    assert_eq!(stranded, 1);
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(svc["runningCount"], 2);
    assert_eq!(count_messages(&svc, "has reached a steady state."), 2);
}

/// Writes a target group as the ELBv2 API would (attached to a load balancer or not).
async fn put_target_group(
    h: &Harness,
    name: &str,
    target_type: &str,
    delay_s: u32,
    attached: bool,
) -> String {
    let arn = format!(
        "arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/{name}/0123456789abcdef"
    );
    let record = lb::TargetGroupRecord {
        arn: arn.clone(),
        name: name.to_owned(),
        protocol: "HTTP".to_owned(),
        protocol_version: "HTTP1".to_owned(),
        port: 80,
        target_type: target_type.to_owned(),
        vpc_id: None,
        health_check: lb::HealthCheck {
            enabled: true,
            protocol: "HTTP".to_owned(),
            port: "traffic-port".to_owned(),
            path: "/".to_owned(),
            interval_seconds: 5,
            timeout_seconds: 2,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            matcher: "200".to_owned(),
        },
        attributes: [(
            "deregistration_delay.timeout_seconds".to_owned(),
            delay_s.to_string(),
        )]
        .into(),
        load_balancer_arns: if attached {
            vec![format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/app/lb/0123456789abcdef")]
        } else {
            vec![]
        },
        tags: Default::default(),
    };
    h.store
        .txn(wharf_store::Txn::new().put(
            lb::target_group_key(REGION, name),
            serde_json::to_vec(&record).unwrap(),
        ))
        .await
        .unwrap();
    arn
}

/// Plays the data plane: marks every registered target of `tg` with `state`.
async fn mark_targets(h: &Harness, tg: &str, state: &str) -> Vec<lb::TargetRecord> {
    let (kvs, _) = h
        .store
        .range(&lb::targets_prefix(REGION, tg))
        .await
        .unwrap();
    let targets: Vec<lb::TargetRecord> = kvs
        .iter()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
        .collect();
    for target in &targets {
        let health = lb::TargetHealthRecord {
            state: state.to_owned(),
            reason: None,
            description: None,
            updated_ms: 0,
        };
        h.store
            .txn(wharf_store::Txn::new().put(
                lb::health_key(REGION, tg, &target.id, target.port),
                serde_json::to_vec(&health).unwrap(),
            ))
            .await
            .unwrap();
    }
    targets
}

#[tokio::test]
async fn load_balanced_tasks_are_registered_and_drained_before_they_stop() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    let tg = put_target_group(&h, "tg", "instance", 20, true).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
               "loadBalancers": [{"targetGroupArn": tg, "containerName": "app", "containerPort": 8080}]}),
    )
    .await;
    h.settle("c", 3).await;
    // Registered at each task's host port, on the instance's EC2 id.
    let targets = mark_targets(&h, "tg", "initial").await;
    assert_eq!(targets.len(), 2);
    let live = h.live("c").await;
    let mut ports: Vec<u16> = live
        .iter()
        .map(|t| {
            t["containers"][0]["networkBindings"][0]["hostPort"]
                .as_u64()
                .unwrap() as u16
        })
        .collect();
    ports.sort();
    let mut registered: Vec<u16> = targets.iter().map(|t| t.port).collect();
    registered.sort();
    assert_eq!(ports, registered);
    let svc = h.describe("c", "web").await;
    assert!(messages(&svc)
        .iter()
        .any(|m| m == &format!("(service web) registered 2 targets in (target-group {tg})")));
    // Not healthy yet: the deployment waits for the targets.
    h.pass().await;
    assert_eq!(
        h.describe("c", "web").await["deployments"][0]["rolloutState"],
        "IN_PROGRESS"
    );
    mark_targets(&h, "tg", "healthy").await;
    h.pass().await;
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    assert!(stable(&svc));

    // Scale in: the target drains first; the task is asked to stop only afterwards.
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 1}),
    )
    .await;
    h.pass().await;
    let (kvs, _) = h
        .store
        .range(&lb::targets_prefix(REGION, "tg"))
        .await
        .unwrap();
    let draining: Vec<lb::TargetRecord> = kvs
        .iter()
        .map(|kv| serde_json::from_slice::<lb::TargetRecord>(&kv.value).unwrap())
        .filter(|t| t.drain_until_ms.is_some())
        .collect();
    assert_eq!(draining.len(), 1);
    assert!(h
        .tasks("c")
        .await
        .iter()
        .all(|t| t["desiredStatus"] == "RUNNING"));
    let svc = h.describe("c", "web").await;
    let all = messages(&svc);
    assert!(all.contains(&"(service web) has begun draining connections on 1 tasks.".to_owned()));
    assert!(all.contains(&format!(
        "(service web) deregistered 1 targets in (target-group {tg})"
    )));
    h.clock.advance(19_000);
    h.pass().await;
    assert!(h
        .tasks("c")
        .await
        .iter()
        .all(|t| t["desiredStatus"] == "RUNNING"));
    h.clock.advance(1_000);
    h.pass().await;
    let stopping: Vec<Value> = h
        .tasks("c")
        .await
        .into_iter()
        .filter(|t| t["desiredStatus"] == "STOPPED")
        .collect();
    assert_eq!(stopping.len(), 1);
    let port = stopping[0]["containers"][0]["networkBindings"][0]["hostPort"]
        .as_u64()
        .unwrap();
    assert_eq!(port, draining[0].port as u64);
    h.settle("c", 5).await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc));
    assert_eq!(svc["runningCount"], 1);
}

/// A revision whose container crashes a moment after it starts is never counted
/// healthy (tasks without health checks must stay RUNNING a while first), so it never
/// replaces the good task; the breaker then rolls back to it.
#[tokio::test]
async fn a_task_that_crashes_right_after_starting_never_replaces_a_good_one() {
    let h = Harness::with_settings(ControllerSettings {
        unchecked_healthy_after: Duration::from_secs(5),
        ..settings()
    });
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    h.settle("c", 3).await;
    assert_eq!(
        h.describe("c", "web").await["deployments"][0]["rolloutState"],
        "IN_PROGRESS"
    );
    h.clock.advance(5_000);
    h.pass().await;
    assert_eq!(
        h.describe("c", "web").await["deployments"][0]["rolloutState"],
        "COMPLETED"
    );
    let good = h.live("c").await[0]["taskArn"].clone();
    let v2 = h
        .register_td("web", json!({"command": ["sh", "-c", "exit 1"]}))
        .await;
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "taskDefinition": v2}),
    )
    .await;
    for _ in 0..3 {
        h.pass().await;
        let new: Vec<Value> = h
            .live("c")
            .await
            .into_iter()
            .filter(|t| t["taskDefinitionArn"] == v2)
            .collect();
        assert_eq!(new.len(), 1);
        h.report("c", &new[0], "RUNNING", None).await;
        h.clock.advance(1_000);
        h.pass().await;
        h.report("c", &new[0], "STOPPED", Some(1)).await;
        h.pass().await;
        assert!(h.live("c").await.iter().any(|t| t["taskArn"] == good));
        h.clock.advance(10_000);
    }
    let svc = h.describe("c", "web").await;
    assert_ne!(svc["taskDefinition"], v2);
    assert!(count_messages(&svc, "rolling back to deployment") == 1);
    h.settle("c", 3).await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["taskArn"], good);
    assert!(stable(&h.describe("c", "web").await));
}

/// The spawned controller reacts to the store's watch: a new service gets its tasks, and
/// a task that stops is replaced, without anyone calling a pass.
#[tokio::test]
async fn the_spawned_controller_follows_the_store() {
    let h = Harness::new();
    let ecs = Arc::new(EcsService::new(
        Records::new(h.store.clone()),
        h.clock.clone(),
        EcsConfig::default(),
    ));
    wharf_control::ecs::services::spawn_service_controller(ecs.clone(), settings());
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut live = Vec::new();
    while tokio::time::Instant::now() < deadline {
        live = h.live("c").await;
        if live.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.len(), 2, "the controller started the service's tasks");
    h.report("c", &live[0], "STOPPED", Some(0)).await;
    let mut replaced = false;
    while tokio::time::Instant::now() < deadline {
        let now = h.live("c").await;
        if now.len() == 2 && now.iter().all(|t| t["taskArn"] != live[0]["taskArn"]) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replaced, "the controller replaced the stopped task");
    drop(ecs);
}

#[tokio::test]
async fn force_new_deployment_replaces_every_task_with_the_same_revision() {
    let h = Harness::new();
    setup(&h, 2).await;
    let td = h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    h.settle("c", 5).await;
    let before: BTreeSet<String> = h
        .live("c")
        .await
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_owned())
        .collect();
    let out = h
        .ok(
            "UpdateService",
            json!({"cluster": "c", "service": "web", "forceNewDeployment": true}),
        )
        .await;
    let deployments = out["service"]["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(deployments[0]["taskDefinition"], td);
    assert_eq!(deployments[1]["taskDefinition"], td);
    h.settle("c", 10).await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc), "{svc:#}");
    let after: BTreeSet<String> = h
        .live("c")
        .await
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after));
}

#[tokio::test]
async fn tasks_on_a_draining_instance_move_elsewhere_first() {
    let h = Harness::new();
    let instances = setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await;
    h.settle("c", 5).await;
    let on_first = |tasks: &[Value]| {
        tasks
            .iter()
            .filter(|t| t["containerInstanceArn"] == instances[0].as_str())
            .count()
    };
    assert_eq!(on_first(&h.live("c").await), 1);
    h.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "c", "containerInstances": [instances[0]], "status": "DRAINING"}),
    )
    .await;
    // The replacement starts before the old task stops (minimum healthy 100%).
    h.pass().await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 3);
    assert_eq!(on_first(&live), 1);
    h.settle("c", 5).await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 2);
    assert_eq!(on_first(&live), 0);
    assert!(stable(&h.describe("c", "web").await));
}

#[tokio::test]
async fn ip_targets_are_the_instance_host_address_and_host_port() {
    let h = Harness::new();
    let instances = setup(&h, 1).await;
    h.ok(
        "PutAttributes",
        json!({"cluster": "c", "attributes": [{"name": "wharf.host-address", "value": "10.1.2.3",
               "targetType": "container-instance", "targetId": instances[0]}]}),
    )
    .await;
    h.register_td("web", json!({})).await;
    let tg = put_target_group(&h, "iptg", "ip", 0, true).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
               "loadBalancers": [{"targetGroupArn": tg, "containerName": "app", "containerPort": 8080}]}),
    )
    .await;
    h.settle("c", 3).await;
    let targets = mark_targets(&h, "iptg", "healthy").await;
    let task = h.live("c").await[0].clone();
    let port = task["containers"][0]["networkBindings"][0]["hostPort"]
        .as_u64()
        .unwrap() as u16;
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].id, "10.1.2.3");
    assert_eq!(targets[0].port, port);
    assert_eq!(targets[0].address, format!("10.1.2.3:{port}"));
    // With no deregistration delay the task is asked to stop at once on scale-in.
    h.pass().await;
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 0}),
    )
    .await;
    h.pass().await;
    assert!(h.live("c").await.is_empty());
}

// ---------------------------------------------------------------------------------
// Services seen from their cluster, tags and client tokens
// ---------------------------------------------------------------------------------

/// The `statistics` of a DescribeClusters answer, by name.
fn statistics(cluster: &Value) -> std::collections::BTreeMap<String, String> {
    cluster["statistics"]
        .as_array()
        .expect("statistics")
        .iter()
        .map(|kv| {
            (
                kv["name"].as_str().unwrap().to_owned(),
                kv["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn describe_cluster(h: &Harness, name: &str) -> Value {
    let out = h
        .ok(
            "DescribeClusters",
            json!({"clusters": [name], "include": ["STATISTICS"]}),
        )
        .await;
    assert_eq!(out["failures"], json!([]), "{out:#}");
    out["clusters"][0].clone()
}

async fn refused_deletion(h: &Harness) {
    let (code, message) = h.err("DeleteCluster", json!({"cluster": "c"})).await;
    assert_eq!(code, "ClusterContainsServicesException");
    assert_eq!(
        message,
        "The Cluster cannot be deleted while Services are active."
    );
}

async fn listed_tags(h: &Harness, arn: &str) -> Value {
    h.ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await["tags"]
        .clone()
}

#[tokio::test]
async fn clusters_count_their_services_and_are_not_deleted_under_them() {
    let h = Harness::new();
    setup(&h, 0).await;
    h.register_td("web", json!({})).await;
    let cluster = describe_cluster(&h, "c").await;
    assert_eq!(cluster["activeServicesCount"], 0);
    assert_eq!(statistics(&cluster)["activeEC2ServiceCount"], "0");

    for name in ["web", "api"] {
        h.ok(
            "CreateService",
            json!({"cluster": "c", "serviceName": name, "taskDefinition": "web", "desiredCount": 0}),
        )
        .await;
    }
    let cluster = describe_cluster(&h, "c").await;
    assert_eq!(cluster["activeServicesCount"], 2);
    let stats = statistics(&cluster);
    assert_eq!(stats["activeEC2ServiceCount"], "2");
    assert_eq!(stats["activeFargateServiceCount"], "0");
    assert_eq!(stats["drainingEC2ServiceCount"], "0");
    // Services without tasks leave the task counts alone.
    assert_eq!(stats["runningEC2TasksCount"], "0");
    assert_eq!(stats["pendingEC2TasksCount"], "0");
    assert_eq!(cluster["runningTasksCount"], 0);

    refused_deletion(&h).await;

    // A deleted service is DRAINING until the controller sees it has no task left:
    // no longer active, but still holding the cluster.
    h.ok("DeleteService", json!({"cluster": "c", "service": "web"}))
        .await;
    let cluster = describe_cluster(&h, "c").await;
    assert_eq!(cluster["activeServicesCount"], 1);
    let stats = statistics(&cluster);
    assert_eq!(stats["activeEC2ServiceCount"], "1");
    assert_eq!(stats["drainingEC2ServiceCount"], "1");
    h.ok("DeleteService", json!({"cluster": "c", "service": "api"}))
        .await;
    let cluster = describe_cluster(&h, "c").await;
    assert_eq!(cluster["activeServicesCount"], 0);
    assert_eq!(statistics(&cluster)["drainingEC2ServiceCount"], "2");
    refused_deletion(&h).await;

    h.settle("c", 3).await;
    assert_eq!(h.describe("c", "web").await["status"], "INACTIVE");
    assert_eq!(h.describe("c", "api").await["status"], "INACTIVE");
    let cluster = describe_cluster(&h, "c").await;
    assert_eq!(statistics(&cluster)["drainingEC2ServiceCount"], "0");
    let out = h.ok("DeleteCluster", json!({"cluster": "c"})).await;
    assert_eq!(out["cluster"]["status"], "INACTIVE");
    assert_eq!(out["cluster"]["activeServicesCount"], 0);
}

#[tokio::test]
async fn service_tags_are_listed_changed_and_propagated() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    let out = h
        .ok(
            "CreateService",
            json!({
                "cluster": "c", "serviceName": "web", "taskDefinition": "web",
                "desiredCount": 0, "tags": [{"key": "team", "value": "a"}],
                "propagateTags": "SERVICE", "enableECSManagedTags": true,
            }),
        )
        .await;
    assert_eq!(out["service"]["propagateTags"], "SERVICE");
    assert_eq!(out["service"]["enableECSManagedTags"], true);
    let arn = out["service"]["serviceArn"].as_str().unwrap().to_owned();
    assert_eq!(
        listed_tags(&h, &arn).await,
        json!([{"key": "team", "value": "a"}])
    );

    h.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [
            {"key": "team", "value": "b"}, {"key": "env", "value": "prod"},
        ]}),
    )
    .await;
    let expected = json!([{"key": "team", "value": "b"}, {"key": "env", "value": "prod"}]);
    assert_eq!(listed_tags(&h, &arn).await, expected);
    let described = h
        .ok(
            "DescribeServices",
            json!({"cluster": "c", "services": ["web"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(described["services"][0]["tags"], expected);

    h.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["team"]}),
    )
    .await;
    assert_eq!(
        listed_tags(&h, &arn).await,
        json!([{"key": "env", "value": "prod"}])
    );

    // The service's tags as they are now go to the tasks it starts.
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 1}),
    )
    .await;
    h.settle("c", 5).await;
    let task = h.live("c").await.pop().expect("a task of the service");
    let out = h
        .ok(
            "DescribeTasks",
            json!({"cluster": "c", "tasks": [task["taskArn"]], "include": ["TAGS"]}),
        )
        .await;
    // The service was created with ECS managed tags on: they follow the propagated ones.
    assert_eq!(
        out["tasks"][0]["tags"],
        json!([
            {"key": "env", "value": "prod"},
            {"key": "aws:ecs:clusterName", "value": "c"},
            {"key": "aws:ecs:serviceName", "value": "web"},
        ])
    );

    // Unknown services and the short ARN form, with the errors each operation declares.
    let ghost = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/c/ghost");
    let (code, _) = h
        .err(
            "TagResource",
            json!({"resourceArn": ghost, "tags": [{"key": "k", "value": "v"}]}),
        )
        .await;
    assert_eq!(code, "ResourceNotFoundException");
    let (code, _) = h
        .err(
            "UntagResource",
            json!({"resourceArn": ghost, "tagKeys": ["k"]}),
        )
        .await;
    assert_eq!(code, "ResourceNotFoundException");
    let (code, _) = h
        .err("ListTagsForResource", json!({"resourceArn": ghost}))
        .await;
    assert_eq!(code, "InvalidParameterException");
    let short = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/web");
    let (code, message) = h
        .err(
            "TagResource",
            json!({"resourceArn": short, "tags": [{"key": "k", "value": "v"}]}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("Long arn format"), "{message}");
    let (code, _) = h
        .err(
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"key": "aws:x", "value": "v"}]}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
}

#[tokio::test]
async fn a_client_token_makes_create_service_idempotent() {
    let h = Arc::new(Harness::new());
    setup(&h, 0).await;
    h.register_td("web", json!({})).await;
    let request = json!({
        "cluster": "c", "serviceName": "web", "taskDefinition": "web",
        "desiredCount": 1, "clientToken": "token-1",
    });
    let first = h.ok("CreateService", request.clone()).await["service"].clone();

    // The same request again, also naming the cluster by ARN: the same service, not a
    // new one (its deployment is the one the first call started).
    let mut by_arn = request.clone();
    by_arn["cluster"] = json!(format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/c"));
    for retry in [request.clone(), by_arn] {
        let again = h.ok("CreateService", retry).await["service"].clone();
        assert_eq!(again["serviceArn"], first["serviceArn"]);
        assert_eq!(again["createdAt"], first["createdAt"]);
        assert_eq!(again["deployments"], first["deployments"]);
    }

    // The token with other parameters is refused and changes nothing; so is another
    // name under it, which never makes a second service.
    let mut other = request.clone();
    other["desiredCount"] = json!(2);
    let (code, message) = h.err("CreateService", other).await;
    assert_eq!(code, "InvalidParameterException");
    assert_eq!(message, "Creation of service was not idempotent.");
    assert_eq!(h.describe("c", "web").await["desiredCount"], 1);
    let mut renamed = request.clone();
    renamed["serviceName"] = json!("web2");
    let (code, _) = h.err("CreateService", renamed).await;
    assert_eq!(code, "InvalidParameterException");
    // Another token cannot take a name in use either.
    let mut other_token = request.clone();
    other_token["clientToken"] = json!("token-2");
    let (code, _) = h.err("CreateService", other_token).await;
    assert_eq!(code, "InvalidParameterException");
    let listed = h.ok("ListServices", json!({"cluster": "c"})).await;
    assert_eq!(
        strings(&listed["serviceArns"]),
        [first["serviceArn"].as_str().unwrap()]
    );

    // After an update the retry still answers the one service, as it is now.
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 3}),
    )
    .await;
    let again = h.ok("CreateService", request.clone()).await["service"].clone();
    assert_eq!(again["serviceArn"], first["serviceArn"]);
    assert_eq!(again["desiredCount"], 3);

    // Racing retries of one request: every one gets the same service. Racing requests
    // with one token and different names: exactly one service.
    let mut race = request.clone();
    race["serviceName"] = json!("raced");
    race["clientToken"] = json!("token-3");
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (h, race) = (h.clone(), race.clone());
            tokio::spawn(async move { h.call("CreateService", race).await })
        })
        .collect();
    let mut deployments = BTreeSet::new();
    for call in calls {
        let out = call.await.unwrap().expect("every retry succeeds");
        deployments.insert(out["service"]["deployments"][0]["id"].to_string());
    }
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let h = h.clone();
            let mut req = request.clone();
            req["serviceName"] = json!(format!("contender-{i}"));
            req["clientToken"] = json!("token-4");
            tokio::spawn(async move { h.call("CreateService", req).await })
        })
        .collect();
    let mut won = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => won += 1,
            Err(err) => assert_eq!(err.code, "InvalidParameterException"),
        }
    }
    assert_eq!(won, 1);
    let listed = h.ok("ListServices", json!({"cluster": "c"})).await;
    let contenders = strings(&listed["serviceArns"])
        .into_iter()
        .filter(|a| a.contains("/contender-"))
        .count();
    assert_eq!(contenders, 1);

    for bad in ["", "with space", &"x".repeat(37)] {
        let mut req = request.clone();
        req["serviceName"] = json!("bad-token");
        req["clientToken"] = json!(bad);
        let (code, _) = h.err("CreateService", req).await;
        assert_eq!(code, "InvalidParameterException", "token {bad:?}");
    }
}

// ---------------------------------------------------------------------------------
// Counting tasks on their way out, and ECS managed tags
// ---------------------------------------------------------------------------------

fn arns(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_owned())
        .collect()
}

/// Tasks asked to stop whose agent has not yet reported them STOPPED.
async fn stopping(h: &Harness, cluster: &str) -> Vec<Value> {
    h.tasks(cluster)
        .await
        .into_iter()
        .filter(|t| t["desiredStatus"] == "STOPPED" && t["lastStatus"] != "STOPPED")
        .collect()
}

#[tokio::test]
async fn a_scaled_down_service_is_stable_only_once_its_tasks_have_stopped() {
    let h = Harness::new();
    setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
    )
    .await;
    h.settle("c", 5).await;
    assert!(stable(&h.describe("c", "web").await));

    // Scale to 0: the task is asked to stop, but its agent has not reported it stopped.
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 0}),
    )
    .await;
    h.pass().await;
    let leaving = stopping(&h, "c").await;
    assert_eq!(leaving.len(), 1);
    assert_eq!(leaving[0]["lastStatus"], "RUNNING");
    for _ in 0..3 {
        h.clock.advance(1_000);
        h.pass().await;
        let svc = h.describe("c", "web").await;
        assert_eq!(svc["desiredCount"], 0);
        assert_eq!(svc["runningCount"], 1, "{svc:#}");
        assert_eq!(svc["deployments"][0]["runningCount"], 1);
        assert_eq!(svc["pendingCount"], 0);
        assert!(!stable(&svc), "the waiter must not pass yet: {svc:#}");
        assert_eq!(count_messages(&svc, "has reached a steady state."), 1);
        // Nothing else is stopped or started meanwhile.
        assert!(h.live("c").await.is_empty());
        assert_eq!(stopping(&h, "c").await.len(), 1);
    }

    // The agent reports it stopped: now the service is stable, and says so once.
    h.report("c", &leaving[0], "STOPPED", Some(143)).await;
    h.pass().await;
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["runningCount"], 0);
    assert_eq!(svc["deployments"][0]["runningCount"], 0);
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(count_messages(&svc, "has reached a steady state."), 2);
    assert_eq!(
        messages(&svc)[0],
        "(service web) has reached a steady state."
    );
    assert_eq!(h.pass().await, 0);

    // From 3 to 1: the two leaving tasks still count as running until they stop, and
    // are neither replaced nor stopped twice.
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 3}),
    )
    .await;
    h.settle("c", 5).await;
    assert_eq!(h.describe("c", "web").await["runningCount"], 3);
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "desiredCount": 1}),
    )
    .await;
    h.pass().await;
    let leaving = stopping(&h, "c").await;
    assert_eq!(leaving.len(), 2);
    let kept = arns(&h.live("c").await);
    assert_eq!(kept.len(), 1);
    for _ in 0..3 {
        h.clock.advance(1_000);
        h.pass().await;
        let svc = h.describe("c", "web").await;
        assert_eq!(svc["runningCount"], 3, "{svc:#}");
        assert!(!stable(&svc));
        assert_eq!(arns(&h.live("c").await), kept);
        assert_eq!(arns(&stopping(&h, "c").await), arns(&leaving));
    }
    h.report("c", &leaving[0], "STOPPED", Some(143)).await;
    h.pass().await;
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["runningCount"], 2);
    assert!(!stable(&svc));
    assert_eq!(arns(&h.live("c").await), kept);
    h.report("c", &leaving[1], "STOPPED", Some(143)).await;
    h.pass().await;
    let svc = h.describe("c", "web").await;
    assert_eq!(svc["runningCount"], 1);
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(count_messages(&svc, "has reached a steady state."), 4);
}

#[tokio::test]
async fn a_replaced_task_counts_as_running_until_it_stops_but_is_replaced_once() {
    let h = Harness::new();
    setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
               "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100}}),
    )
    .await;
    h.settle("c", 5).await;
    let old = arns(&h.live("c").await);
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "forceNewDeployment": true}),
    )
    .await;
    // The new tasks start and become healthy; the old ones are asked to stop, but
    // their agent is slow to report.
    h.pass().await;
    for task in h.live("c").await {
        if !old.contains(task["taskArn"].as_str().unwrap()) {
            h.report("c", &task, "RUNNING", None).await;
            h.clock.advance(1);
        }
    }
    h.pass().await;
    h.clock.advance(11_000);
    h.pass().await;
    let leaving = stopping(&h, "c").await;
    assert_eq!(arns(&leaving), old);
    for _ in 0..3 {
        h.clock.advance(1_000);
        h.pass().await;
        let svc = h.describe("c", "web").await;
        // Both deployments stay while the old tasks run; the old one wants none.
        let deployments = svc["deployments"].as_array().unwrap();
        assert_eq!(deployments.len(), 2, "{svc:#}");
        assert_eq!(deployments[0]["runningCount"], 2);
        assert_eq!(deployments[1]["runningCount"], 2);
        assert_eq!(deployments[1]["desiredCount"], 0);
        assert_eq!(svc["runningCount"], 4);
        assert!(!stable(&svc));
        // Never more than the two new tasks: the leaving ones are not replaced again.
        assert_eq!(h.live("c").await.len(), 2);
    }
    h.agent("c").await;
    h.pass().await;
    let svc = h.describe("c", "web").await;
    assert!(stable(&svc), "{svc:#}");
    assert_eq!(svc["runningCount"], 2);
}

async fn task_tags(h: &Harness, task: &Value) -> Value {
    listed_tags(h, task["taskArn"].as_str().unwrap()).await
}

#[tokio::test]
async fn ecs_managed_tags_follow_the_flag() {
    let h = Harness::new();
    setup(&h, 2).await;
    h.register_td("web", json!({})).await;
    h.ok(
        "CreateService",
        json!({
            "cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
            "tags": [{"key": "team", "value": "a"}], "propagateTags": "SERVICE",
        }),
    )
    .await;
    h.settle("c", 5).await;
    let task = h.live("c").await.pop().expect("a task of the service");
    assert_eq!(
        task_tags(&h, &task).await,
        json!([{"key": "team", "value": "a"}])
    );

    // Turned on: the tasks started after the update carry the managed tags.
    let out = h
        .ok(
            "UpdateService",
            json!({"cluster": "c", "service": "web", "enableECSManagedTags": true,
                   "forceNewDeployment": true}),
        )
        .await;
    assert_eq!(out["service"]["enableECSManagedTags"], true);
    h.settle("c", 10).await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 1);
    assert_ne!(live[0]["taskArn"], task["taskArn"]);
    let managed = json!([
        {"key": "team", "value": "a"},
        {"key": "aws:ecs:clusterName", "value": "c"},
        {"key": "aws:ecs:serviceName", "value": "web"},
    ]);
    assert_eq!(task_tags(&h, &live[0]).await, managed);

    // Users may neither set, change nor remove tags with the reserved prefix.
    let arn = live[0]["taskArn"].clone();
    for key in ["aws:ecs:clusterName", "AWS:mine"] {
        let (code, _) = h
            .err(
                "TagResource",
                json!({"resourceArn": arn, "tags": [{"key": key, "value": "x"}]}),
            )
            .await;
        assert_eq!(code, "InvalidParameterException", "{key}");
    }
    let (code, _) = h
        .err(
            "UntagResource",
            json!({"resourceArn": arn, "tagKeys": ["aws:ecs:serviceName"]}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
    assert_eq!(task_tags(&h, &live[0]).await, managed);
    // Their own tags they may change, and the managed ones stay.
    h.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "team", "value": "b"}]}),
    )
    .await;
    h.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["team"]}),
    )
    .await;
    assert_eq!(
        task_tags(&h, &live[0]).await,
        json!([
            {"key": "aws:ecs:clusterName", "value": "c"},
            {"key": "aws:ecs:serviceName", "value": "web"},
        ])
    );

    // Turned off again, with propagation off: new tasks carry no tag at all.
    h.ok(
        "UpdateService",
        json!({"cluster": "c", "service": "web", "enableECSManagedTags": false,
               "propagateTags": "NONE", "forceNewDeployment": true}),
    )
    .await;
    h.settle("c", 10).await;
    let live = h.live("c").await;
    assert_eq!(live.len(), 1);
    assert_ne!(live[0]["taskArn"], arn);
    assert_eq!(task_tags(&h, &live[0]).await, json!([]));

    // A service may not carry reserved tags either.
    let (code, message) = h
        .err(
            "CreateService",
            json!({"cluster": "c", "serviceName": "api", "taskDefinition": "web",
                   "desiredCount": 0, "tags": [{"key": "aws:ecs:serviceName", "value": "x"}]}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("aws:"), "{message}");
}

#[tokio::test]
async fn managed_tags_do_not_count_against_the_tag_limit() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("web", json!({})).await;
    let tags: Vec<Value> = (0..50)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    h.ok(
        "CreateService",
        json!({
            "cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
            "tags": tags, "propagateTags": "SERVICE", "enableECSManagedTags": true,
        }),
    )
    .await;
    h.settle("c", 5).await;
    let task = h.live("c").await.pop().expect("a task of the service");
    // The model bounds a tag list at 50, but ECS documents that `aws:` tags do not
    // count against that limit; so this listing is read without the output check.
    let ctx = CallContext {
        request_id: "00000000-0000-0000-0000-000000000000".to_owned(),
        region: REGION.to_owned(),
        access_key_id: "AKIDWHARFTEST".to_owned(),
        account_id: ACCOUNT.to_owned(),
    };
    let listed = h
        .service
        .call(
            &ctx,
            "ListTagsForResource",
            ServiceInput::Json(json!({"resourceArn": task["taskArn"]})),
        )
        .await
        .expect("ListTagsForResource");
    let ServiceOutput::Json(listed) = listed else {
        panic!("ListTagsForResource answered a non-JSON output");
    };
    let keys: Vec<&str> = listed["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 52);
    assert_eq!(keys[50..], ["aws:ecs:clusterName", "aws:ecs:serviceName"]);
    // 50 of the user's own: changing one is fine, adding a 51st is not.
    h.ok(
        "TagResource",
        json!({"resourceArn": task["taskArn"], "tags": [{"key": "k0", "value": "w"}]}),
    )
    .await;
    let (code, _) = h
        .err(
            "TagResource",
            json!({"resourceArn": task["taskArn"], "tags": [{"key": "k50", "value": "v"}]}),
        )
        .await;
    assert_eq!(code, "InvalidParameterException");
}

#[tokio::test]
async fn run_task_puts_the_cluster_name_tag_when_asked() {
    let h = Harness::new();
    setup(&h, 1).await;
    h.register_td("job", json!({})).await;
    let managed = h
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "job", "enableECSManagedTags": true,
                   "tags": [{"key": "team", "value": "a"}]}),
        )
        .await;
    assert_eq!(managed["failures"], json!([]));
    assert_eq!(
        task_tags(&h, &managed["tasks"][0]).await,
        json!([
            {"key": "team", "value": "a"},
            {"key": "aws:ecs:clusterName", "value": "c"},
        ])
    );
    let plain = h
        .ok(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "job", "enableECSManagedTags": false}),
        )
        .await;
    assert_eq!(task_tags(&h, &plain["tasks"][0]).await, json!([]));
}
