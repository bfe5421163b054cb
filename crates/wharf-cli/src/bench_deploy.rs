//! `wharf bench deploy`: a rolling deployment of a load-balanced service under load, on
//! a child `wharf up` whose local agent runs real containers on the Docker Engine.
//!
//! The scenario: a target group (HTTP, health check `/` every 5 s, healthy and
//! unhealthy thresholds 2, timeout 2 s, deregistration delay 5 s), a load balancer with
//! an HTTP listener forwarding to it, and a service of 10 busybox `httpd` tasks
//! (revision 1, dynamic host ports) behind the group, with the ECS defaults written out
//! (`maximumPercent` 200, `minimumHealthyPercent` 100). Once it is stable, a fixed-rate
//! client sends requests through the listener; revision 2 is registered and the service
//! updated to it. Measured: the wall time from UpdateService until the service is
//! stable (botocore's `services_stable` condition — exactly one deployment and
//! `runningCount == desiredCount` — polled every 250 ms instead of the waiter's 15 s),
//! every non-2xx answer or connection error, and the share of answers from revision 2
//! just after. The service's events are printed with their times, which shows where the
//! time goes (task start, health checks, draining).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use wharf_agent_channel::client::EcsClient;
use wharf_aws::sigv4::{encode_query_component, sign_http_request, SigningScope};

use crate::bench::{free_port, ChildWharf};

/// Flags of `wharf bench deploy`.
#[derive(Args, Clone)]
pub(crate) struct DeployBenchArgs {
    /// Tasks of the service.
    #[arg(long, default_value_t = 10)]
    tasks: u32,
    /// Requests per second through the listener during the deployment.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds of load kept after the service is stable; the revision-2 share is
    /// measured over this window.
    #[arg(long, default_value_t = 3)]
    tail_seconds: u64,
    /// The image; it must be present locally (nothing is pulled).
    #[arg(long, default_value = "wharf-test/busybox:latest")]
    image: String,
    /// The child `wharf up`'s log filter (its log goes to stderr), e.g.
    /// `warn,wharf_lb::health=trace` to see every health check.
    #[arg(long, default_value = "warn")]
    child_log: String,
}

/// The label Wharf's agent puts on every container it starts, naming its instance.
const INSTANCE_LABEL: &str = "wharf.container-instance-arn";
const SERVICE: &str = "bench-deploy";
const HTTPD: &str = "mkdir -p /www && echo \"$GREETING\" > /www/index.html && \
                     trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
/// How often DescribeServices is polled (botocore's waiter: every 15 s).
const POLL: Duration = Duration::from_millis(250);
/// How long any wait may take before the bench gives up.
const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// The targets of the issue.
const TARGET_STABLE: Duration = Duration::from_secs(30);

/// Runs the deployment benchmark.
pub(crate) async fn run_deploy(args: DeployBenchArgs) -> anyhow::Result<()> {
    preflight(&args.image).await?;
    let mut child = ChildWharf::start(
        &["up", "--registry-addr", "127.0.0.1:0"],
        &[
            ("ECS_IMAGE_PULL_BEHAVIOR", "prefer-cached"),
            ("ECS_CONTAINER_STOP_TIMEOUT", "2s"),
            ("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION", "1s"),
            ("WHARF_LOG", &args.child_log),
        ],
    )
    .await?;
    let ecs = child.client.clone();
    let instance = wait_instance(&ecs).await;
    let outcome = match &instance {
        Ok(_) => scenario(&ecs, &args).await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    // Clean up whatever happened: the service, its tasks, the child and the containers.
    let _ = ecs
        .call(
            "UpdateService",
            &json!({"service": SERVICE, "desiredCount": 0}),
        )
        .await;
    let _ = ecs
        .call("DeleteService", &json!({"service": SERVICE, "force": true}))
        .await;
    if let Ok(answer) = ecs
        .call("ListTasks", &json!({"serviceName": SERVICE}))
        .await
    {
        for arn in answer["taskArns"].as_array().into_iter().flatten() {
            let _ = ecs.call("StopTask", &json!({"task": arn})).await;
        }
    }
    let _ = child.process.kill().await;
    if let Ok(arn) = &instance {
        remove_labelled(&format!("{INSTANCE_LABEL}={arn}")).await;
    }
    outcome
}

/// Fails with a clear message when Docker or the test image is missing.
async fn preflight(image: &str) -> anyhow::Result<()> {
    let version = tokio::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .await
        .context("cannot run `docker`: wharf bench deploy needs the Docker CLI and Engine")?;
    if !version.status.success() {
        bail!(
            "the Docker Engine is not reachable (`docker version` failed: {}); \
             wharf bench deploy runs real containers",
            String::from_utf8_lossy(&version.stderr).trim()
        );
    }
    let inspect = tokio::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .await?;
    if !inspect.status.success() {
        bail!(
            "the image {image} is not present locally and nothing is pulled; \
             build it with scripts/build-test-images"
        );
    }
    Ok(())
}

async fn wait_instance(ecs: &EcsClient) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(answer) = ecs.call("ListContainerInstances", &json!({})).await {
            if let Some(arn) = answer["containerInstanceArns"][0].as_str() {
                return Ok(arn.to_owned());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the local agent of the child `wharf up` did not register within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remove_labelled(label: &str) {
    let ids = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .await
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !ids.is_empty() {
        let _ = tokio::process::Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&ids)
            .output()
            .await;
    }
}

type HttpClient<B> = Client<hyper_util::client::legacy::connect::HttpConnector, B>;

/// ELBv2 calls in the AWS query protocol, signed like the ECS client's.
struct Elbv2 {
    client: HttpClient<Full<Bytes>>,
    ecs: EcsClient,
}

/// The text of the first `<tag>…</tag>` in an XML answer.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

impl Elbv2 {
    async fn call(&self, action: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut body = format!("Action={action}&Version=2015-12-01");
        for (key, value) in params {
            body.push_str(&format!(
                "&{}={}",
                encode_query_component(key),
                encode_query_component(value)
            ));
        }
        let body = body.into_bytes();
        let mut request = http::Request::post(format!("{}/", self.ecs.endpoint()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body.clone())))?;
        sign_http_request(
            &mut request,
            &body,
            self.ecs.credentials(),
            SigningScope {
                region: self.ecs.region(),
                service: "elasticloadbalancing",
            },
            chrono::Utc::now(),
        )?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let text =
            String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned();
        if !status.is_success() {
            bail!("ELBv2 {action} answered {status}: {text}");
        }
        Ok(text)
    }
}

/// What the load generator saw.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok_rev1: AtomicU64,
    ok_rev2: AtomicU64,
    ok_other: AtomicU64,
    failed_status: AtomicU64,
    failed_connection: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> [u64; 6] {
        [
            &self.sent,
            &self.ok_rev1,
            &self.ok_rev2,
            &self.ok_other,
            &self.failed_status,
            &self.failed_connection,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// One request through the listener, counted.
async fn one_request(client: HttpClient<Empty<Bytes>>, url: String, counts: Arc<Counts>) {
    counts.sent.fetch_add(1, Ordering::Relaxed);
    let request = match http::Request::get(&url).body(Empty::<Bytes>::new()) {
        Ok(request) => request,
        Err(_) => {
            counts.failed_connection.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let attempt = async {
        let response = client.request(request).await.map_err(|_| ())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|_| ())?;
        Ok::<_, ()>((status, body.to_bytes()))
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok((status, body))) if status.is_success() => {
            let counter = match body.as_ref() {
                b"revision 1\n" => &counts.ok_rev1,
                b"revision 2\n" => &counts.ok_rev2,
                _ => &counts.ok_other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(_)) => {
            counts.failed_status.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            counts.failed_connection.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends `rate` requests a second (open loop, at most 1000 in flight) until `stop`.
fn start_load(
    port: u16,
    rate: u64,
    counts: Arc<Counts>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client: HttpClient<Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        let url = format!("http://127.0.0.1:{port}/");
        let in_flight = Arc::new(tokio::sync::Semaphore::new(1000));
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = tokio::task::JoinSet::new();
        while !*stop.borrow() {
            tick.tick().await;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                // The client itself cannot keep up: counted as failed, not hidden.
                counts.sent.fetch_add(1, Ordering::Relaxed);
                counts.failed_connection.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (client, url, counts) = (client.clone(), url.clone(), counts.clone());
            requests.spawn(async move {
                one_request(client, url, counts).await;
                drop(permit);
            });
            while requests.try_join_next().is_some() {}
        }
        while requests.join_next().await.is_some() {}
    })
}

/// The states of each target (by host port) of the group, with when each was first
/// seen, from DescribeTargetHealth polled every [`POLL`].
type HealthLog = std::collections::BTreeMap<u16, Vec<(String, f64)>>;

/// The (port, state) pairs of a DescribeTargetHealth answer.
fn target_states(xml: &str) -> Vec<(u16, String)> {
    xml.split("<Target>")
        .skip(1)
        .filter_map(|member| {
            let port = xml_text(member, "Port")?.parse().ok()?;
            Some((port, xml_text(member, "State")?.to_owned()))
        })
        .collect()
}

/// Polls the group's target health from `since` until `stop`; a target that no longer
/// shows is logged as `gone`.
fn start_health_log(
    elb: Arc<Elbv2>,
    tg_arn: String,
    since: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<HealthLog> {
    tokio::spawn(async move {
        let mut log = HealthLog::new();
        while !*stop.borrow() {
            if let Ok(xml) = elb
                .call("DescribeTargetHealth", &[("TargetGroupArn", &tg_arn)])
                .await
            {
                let at = since.elapsed().as_secs_f64();
                let now = target_states(&xml);
                for (port, states) in log.iter_mut() {
                    if !now.iter().any(|(p, _)| p == port)
                        && states.last().is_some_and(|(s, _)| s != "gone")
                    {
                        states.push(("gone".to_owned(), at));
                    }
                }
                for (port, state) in now {
                    let states = log.entry(port).or_default();
                    if states.last().is_none_or(|(s, _)| *s != state) {
                        states.push((state, at));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        log
    })
}

/// `min / median / max` of some seconds.
fn spread(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    values.sort_by(f64::total_cmp);
    format!(
        "{:.1} / {:.1} / {:.1} s",
        values[0],
        values[values.len() / 2],
        values[values.len() - 1]
    )
}

/// Where the time went, from the health log: task start and registration, the wait for
/// the first passing check, and draining.
fn print_phases(log: &HealthLog, old_ports: &[u16]) {
    let first = |states: &[(String, f64)], state: &str| {
        states.iter().find(|(s, _)| s == state).map(|(_, at)| *at)
    };
    let (mut registered, mut to_healthy, mut healthy_at) = (Vec::new(), Vec::new(), Vec::new());
    let (mut drain_start, mut drain_len) = (Vec::new(), Vec::new());
    let mut failed_first = 0;
    for (port, states) in log {
        if old_ports.contains(port) {
            if let Some(start) = first(states, "draining") {
                drain_start.push(start);
                if let Some(gone) = first(states, "gone") {
                    drain_len.push(gone - start);
                }
            }
        } else if let Some(seen) = states.first().map(|(_, at)| *at) {
            registered.push(seen);
            if let Some(healthy) = first(states, "healthy") {
                healthy_at.push(healthy);
                to_healthy.push(healthy - seen);
                if healthy - seen > 2.5 {
                    failed_first += 1;
                }
            }
        }
    }
    println!("\nphases from DescribeTargetHealth every {} ms (min / median / max, s since UpdateService unless said):", POLL.as_millis());
    println!(
        "  new targets registered (task RUNNING):      {}",
        spread(registered)
    );
    println!(
        "  new targets healthy:                         {}",
        spread(healthy_at)
    );
    println!("  registration -> healthy:                     {}  ({failed_first} targets took > 2.5 s, i.e. waited for a later check)", spread(to_healthy));
    println!(
        "  old targets draining from:                   {}",
        spread(drain_start)
    );
    println!(
        "  draining -> gone from the group:             {}",
        spread(drain_len)
    );
}

fn the_service(answer: &Value) -> anyhow::Result<&Value> {
    let service = &answer["services"][0];
    anyhow::ensure!(
        service.is_object(),
        "DescribeServices: no service: {answer}"
    );
    Ok(service)
}

/// botocore's `services_stable` condition on one service.
fn stable(service: &Value) -> bool {
    service["deployments"].as_array().map(Vec::len) == Some(1)
        && service["runningCount"] == service["desiredCount"]
}

async fn describe(ecs: &EcsClient) -> anyhow::Result<Value> {
    let answer = ecs
        .call("DescribeServices", &json!({"services": [SERVICE]}))
        .await?;
    Ok(the_service(&answer)?.clone())
}

/// Polls DescribeServices every [`POLL`] until `done` holds; returns the service.
async fn wait_service(
    ecs: &EcsClient,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let service = describe(ecs).await?;
        if done(&service) {
            return Ok(service);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not reached within {} s; last: {service}",
                WAIT_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn register_revision(ecs: &EcsClient, image: &str, revision: u32) -> anyhow::Result<String> {
    let answer = ecs
        .call(
            "RegisterTaskDefinition",
            &json!({"family": SERVICE, "containerDefinitions": [{
                "name": "web", "image": image, "memory": 16,
                "command": ["sh", "-c", HTTPD],
                "environment": [{"name": "GREETING", "value": format!("revision {revision}")}],
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
            }]}),
        )
        .await?;
    let arn = answer["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .context("RegisterTaskDefinition answered no ARN")?;
    anyhow::ensure!(
        arn.ends_with(&format!(":{revision}")),
        "expected revision {revision}, got {arn}"
    );
    Ok(arn.to_owned())
}

/// The scenario on a running child; the caller cleans up.
async fn scenario(ecs: &EcsClient, args: &DeployBenchArgs) -> anyhow::Result<()> {
    let elb = Arc::new(Elbv2 {
        client: Client::builder(TokioExecutor::new()).build_http(),
        ecs: ecs.clone(),
    });
    // `wharf up` creates `default` for its agent; CreateCluster of an existing cluster
    // answers it unchanged, as in ECS.
    ecs.call("CreateCluster", &json!({"clusterName": "default"}))
        .await?;
    let tg_xml = elb
        .call(
            "CreateTargetGroup",
            &[
                ("Name", SERVICE),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("VpcId", "vpc-1"),
                ("TargetType", "instance"),
                ("HealthCheckPath", "/"),
                ("HealthCheckIntervalSeconds", "5"),
                ("HealthCheckTimeoutSeconds", "2"),
                ("HealthyThresholdCount", "2"),
                ("UnhealthyThresholdCount", "2"),
            ],
        )
        .await?;
    let tg_arn = xml_text(&tg_xml, "TargetGroupArn")
        .context("CreateTargetGroup answered no ARN")?
        .to_owned();
    elb.call(
        "ModifyTargetGroupAttributes",
        &[
            ("TargetGroupArn", &tg_arn),
            (
                "Attributes.member.1.Key",
                "deregistration_delay.timeout_seconds",
            ),
            ("Attributes.member.1.Value", "5"),
        ],
    )
    .await?;
    let lb_xml = elb
        .call(
            "CreateLoadBalancer",
            &[
                ("Name", SERVICE),
                ("Subnets.member.1", "subnet-1"),
                ("Subnets.member.2", "subnet-2"),
            ],
        )
        .await?;
    let lb_arn = xml_text(&lb_xml, "LoadBalancerArn")
        .context("CreateLoadBalancer answered no ARN")?
        .to_owned();
    let port = free_port()?;
    elb.call(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb_arn),
            ("Protocol", "HTTP"),
            ("Port", &port.to_string()),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg_arn),
        ],
    )
    .await?;

    let rev1 = register_revision(ecs, &args.image, 1).await?;
    let created = Instant::now();
    ecs.call(
        "CreateService",
        &json!({
            "serviceName": SERVICE, "taskDefinition": rev1, "desiredCount": args.tasks,
            "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 100},
            "loadBalancers": [{"targetGroupArn": tg_arn, "containerName": "web",
                               "containerPort": 8080}],
        }),
    )
    .await?;
    wait_service(ecs, "the service of revision 1 to be stable", stable).await?;
    // Every target healthy, and the listener answering from revision 1.
    let deadline = Instant::now() + WAIT_LIMIT;
    let old_ports = loop {
        let health = elb
            .call("DescribeTargetHealth", &[("TargetGroupArn", &tg_arn)])
            .await?;
        let states = target_states(&health);
        if states.len() == args.tasks as usize && states.iter().all(|(_, s)| s == "healthy") {
            break states.into_iter().map(|(port, _)| port).collect::<Vec<_>>();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the targets of revision 1 did not all become healthy: {health}"
        );
        tokio::time::sleep(POLL).await;
    };
    let probe: HttpClient<Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let answer = probe
        .get(format!("http://127.0.0.1:{port}/").parse()?)
        .await
        .context("the listener did not answer")?;
    let body = answer.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        body.as_ref() == b"revision 1\n",
        "the listener answered {:?}",
        String::from_utf8_lossy(&body)
    );
    println!(
        "wharf bench deploy: {} tasks of {} behind an ELBv2 listener on 127.0.0.1:{port}; \
         revision 1 stable and all targets healthy after {:.1} s",
        args.tasks,
        args.image,
        created.elapsed().as_secs_f64()
    );

    // The deployment under load.
    let counts = Arc::new(Counts::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = start_load(port, args.rate, counts.clone(), stop_rx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rev2 = register_revision(ecs, &args.image, 2).await?;
    let updated_wall = chrono::Utc::now();
    let updated = Instant::now();
    let health_log = start_health_log(elb.clone(), tg_arn.clone(), updated, stop_tx.subscribe());
    ecs.call(
        "UpdateService",
        &json!({"service": SERVICE, "taskDefinition": rev2}),
    )
    .await?;
    let outcome = wait_service(ecs, "the service of revision 2 to be stable", |s| {
        stable(s) && s["deployments"][0]["taskDefinition"] == rev2.as_str()
    })
    .await;
    let to_stable = updated.elapsed();
    let at_stable = counts.snapshot();
    tokio::time::sleep(Duration::from_secs(args.tail_seconds)).await;
    let at_end = counts.snapshot();
    let _ = stop_tx.send(true);
    load.await?;
    let health_log = health_log.await?;
    let total = counts.snapshot();
    let service = outcome?;
    let completed = describe(ecs).await?;

    println!("\nservice events after UpdateService (s since the call):");
    let mut events: Vec<(f64, String)> = completed["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let at = e["createdAt"].as_f64()?;
            let since = at - updated_wall.timestamp_millis() as f64 / 1e3;
            (since >= -0.5).then(|| (since, e["message"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (since, message) in &events {
        println!("  {since:>6.2}  {message}");
    }

    print_phases(&health_log, &old_ports);

    let [sent, rev1_ok, rev2_ok, other_ok, bad_status, bad_conn] = total;
    let failed = bad_status + bad_conn;
    let tail_rev1 = at_end[1] - at_stable[1];
    let tail_rev2 = at_end[2] - at_stable[2];
    let tail_answers = at_end[1..4].iter().sum::<u64>() - at_stable[1..4].iter().sum::<u64>();
    let share = |n: u64, of: u64| {
        if of == 0 {
            0.0
        } else {
            n as f64 * 100.0 / of as f64
        }
    };
    println!(
        "\nrolling update of {} tasks, revision 1 -> 2 (maximumPercent 200, \
         minimumHealthyPercent 100 — the ECS defaults, written out)",
        args.tasks
    );
    println!(
        "  UpdateService -> stable (one deployment, runningCount == desiredCount == {}, \
         DescribeServices polled every {} ms): {:.1} s   target < {} s: {}",
        service["desiredCount"],
        POLL.as_millis(),
        to_stable.as_secs_f64(),
        TARGET_STABLE.as_secs(),
        if to_stable < TARGET_STABLE {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  rollout state when polled after the tail: {}",
        completed["deployments"][0]["rolloutState"]
    );
    println!(
        "  requests at {} req/s through the listener: {sent} sent, {} ok (rev 1: {rev1_ok}, \
         rev 2: {rev2_ok}, other: {other_ok}), failed {failed} (non-2xx {bad_status}, \
         connection/timeout {bad_conn})   target 0: {}",
        args.rate,
        rev1_ok + rev2_ok + other_ok,
        if failed == 0 { "met" } else { "MISSED" }
    );
    println!(
        "  share served by revision 2 in the {} s after stable: {:.1} % ({tail_rev2} of \
         {tail_answers}; revision 1: {tail_rev1})",
        args.tail_seconds,
        share(tail_rev2, tail_answers)
    );
    println!(
        "  reference, not measured: ECS with its defaults (health check every 30 s, healthy \
         threshold 5, deregistration delay 300 s) needs about 30 s x 5 + 300 s = 7.5 minutes \
         per batch"
    );
    Ok(())
}
