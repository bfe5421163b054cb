//! `wharf bench api`: signed ECS API calls over loopback HTTP against an in-process
//! server whose state is durable (SQLite, WAL, synchronous commits), as `wharf up`
//! runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use wharf_aws::sigv4::{sign_http_request, SigningCredentials, SigningScope};

use crate::credentials::RootKey;

/// Flags of `wharf bench api`.
#[derive(Args, Clone)]
pub(crate) struct ApiBenchArgs {
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Percentage of calls that are durable writes (the rest are reads).
    #[arg(long, default_value_t = 30)]
    write_percent: u32,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Caller {
    client: HttpClient,
    endpoint: String,
    credentials: SigningCredentials,
}

impl Caller {
    async fn call(&self, op: &str, body: &Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(body)?;
        let mut request = http::Request::post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{op}"),
            )
            .body(Full::new(Bytes::from(body.clone())))?;
        sign_http_request(
            &mut request,
            &body,
            &self.credentials,
            SigningScope {
                region: "us-east-1",
                service: "ecs",
            },
            chrono::Utc::now(),
        )?;
        let response = self.client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            anyhow::bail!(
                "{op} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, latencies: &mut [Duration], elapsed: Duration) {
    latencies.sort();
    println!(
        "{name:<7} {:>8} calls {:>9.0} calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 0.50).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// Runs the benchmark and prints its figures.
pub(crate) async fn run_api(args: ApiBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = RootKey {
        access_key_id: "BENCHKEY".to_owned(),
        secret_access_key: "benchsecret".to_owned(),
    };
    let store = crate::server::open_store(dir.path())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}/", listener.local_addr()?);
    let router = crate::server::api_router(
        store,
        &key,
        "000000000000",
        endpoint.trim_end_matches('/'),
        Default::default(),
        None,
    );
    tokio::spawn(async move { axum::serve(listener, router).await });

    let caller = Arc::new(Caller {
        client: Client::builder(TokioExecutor::new()).build_http(),
        endpoint,
        credentials: SigningCredentials {
            access_key_id: key.access_key_id.clone(),
            secret_access_key: key.secret_access_key.clone(),
            session_token: None,
        },
    });

    // A cluster with one instance and ten tasks for the reads to describe.
    caller
        .call("CreateCluster", &json!({"clusterName": "bench"}))
        .await?;
    caller
        .call(
            "RegisterContainerInstance",
            &json!({"cluster": "bench", "totalResources": [
                {"name": "CPU", "type": "INTEGER", "integerValue": 1_000_000},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": 1_000_000}]}),
        )
        .await?;
    let definition = json!({"family": "bench", "containerDefinitions": [
        {"name": "web", "image": "busybox", "memory": 16, "cpu": 1,
         "portMappings": [{"containerPort": 80}]}]});
    caller.call("RegisterTaskDefinition", &definition).await?;
    let run = caller
        .call(
            "RunTask",
            &json!({"cluster": "bench", "taskDefinition": "bench", "count": 10}),
        )
        .await?;
    let task_arns: Vec<Value> = run["tasks"]
        .as_array()
        .context("RunTask returned no tasks")?
        .iter()
        .map(|t| t["taskArn"].clone())
        .collect();
    anyhow::ensure!(
        task_arns.len() == 10,
        "RunTask placed {} tasks",
        task_arns.len()
    );

    println!(
        "wharf bench api: {} clients, {} s, {}% durable writes (CreateCluster, RegisterTaskDefinition), reads (DescribeTasks of 10, DescribeClusters)",
        args.clients, args.seconds, args.write_percent
    );
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in 0..args.clients {
        let caller = caller.clone();
        let task_arns = task_arns.clone();
        let definition = definition.clone();
        let write_percent = args.write_percent;
        workers.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            let mut writes = Vec::new();
            let mut errors = 0u64;
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                n += 1;
                // A fixed interleaving per client gives the asked-for mix without a
                // random number generator on the hot path.
                let write = (n * 37 + client as u64) % 100 < u64::from(write_percent);
                let begin = Instant::now();
                let result = if write {
                    if n % 2 == 0 {
                        caller
                            .call(
                                "CreateCluster",
                                &json!({"clusterName": format!("c{client}-{n}")}),
                            )
                            .await
                    } else {
                        caller.call("RegisterTaskDefinition", &definition).await
                    }
                } else if n % 2 == 0 {
                    caller
                        .call(
                            "DescribeTasks",
                            &json!({"cluster": "bench", "tasks": task_arns}),
                        )
                        .await
                } else {
                    caller
                        .call(
                            "DescribeClusters",
                            &json!({"clusters": ["bench"], "include": ["STATISTICS"]}),
                        )
                        .await
                };
                let took = begin.elapsed();
                match result {
                    Ok(_) if write => writes.push(took),
                    Ok(_) => reads.push(took),
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("client {client}: {e}");
                        }
                    }
                }
            }
            (reads, writes, errors)
        }));
    }
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (r, w, e) = worker.await?;
        reads.extend(r);
        writes.extend(w);
        errors += e;
    }
    let elapsed = started.elapsed();
    let total = reads.len() + writes.len();
    println!(
        "total   {total:>8} calls {:>9.0} calls/s  errors {errors}",
        total as f64 / elapsed.as_secs_f64()
    );
    report("reads", &mut reads, elapsed);
    report("writes", &mut writes, elapsed);
    anyhow::ensure!(errors == 0, "{errors} calls failed");
    Ok(())
}

/// A `wharf` process the benchmark measures, on a free port over a temporary data
/// directory, killed when dropped.
pub(crate) struct ChildWharf {
    pub(crate) process: tokio::process::Child,
    pub(crate) client: wharf_agent_channel::client::EcsClient,
    _data_dir: tempfile::TempDir,
}

impl ChildWharf {
    /// Starts `wharf <subcommand…>` and waits until its API answers.
    pub(crate) async fn start(subcommand: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let process = tokio::process::Command::new(std::env::current_exe()?)
            .args(subcommand)
            .args(["--api-addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--root-access-key", "BENCHKEY:benchsecret"])
            .env("WHARF_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting wharf {}", subcommand.join(" ")))?;
        let client = wharf_agent_channel::client::EcsClient::new(
            &format!("http://127.0.0.1:{port}"),
            "us-east-1",
            SigningCredentials {
                access_key_id: "BENCHKEY".to_owned(),
                secret_access_key: "benchsecret".to_owned(),
                session_token: None,
            },
        );
        let ready = Instant::now();
        loop {
            match client.call("ListClusters", &json!({})).await {
                Ok(_) => break,
                Err(_) if ready.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => anyhow::bail!("wharf {} did not come up: {e}", subcommand.join(" ")),
            }
        }
        Ok(ChildWharf {
            process,
            client,
            _data_dir: data_dir,
        })
    }
}

/// Flags of `wharf bench placement`.
#[derive(Args, Clone)]
pub(crate) struct PlacementBenchArgs {
    /// Hollow container instances.
    #[arg(long, default_value_t = 5000)]
    instances: usize,
    /// Tasks to place, in RunTask calls of 10.
    #[arg(long, default_value_t = 50_000)]
    tasks: usize,
    /// Concurrent RunTask clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// The peak resident set size of a process, from `/proc/<pid>/status` (`VmHWM`), MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the placement benchmark.
pub(crate) async fn run_placement(args: PlacementBenchArgs) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    use wharf_agent::hollow::{start_fleet, HollowFleetConfig};

    let child = ChildWharf::start(&["server"], &[]).await?;
    let client = child.client.clone();
    let pid = child.process.id().context("control plane has no pid")?;
    client
        .call("CreateCluster", &json!({"clusterName": "bench"}))
        .await?;
    client
        .call(
            "RegisterTaskDefinition",
            &json!({"family": "hollow", "containerDefinitions": [
                {"name": "app", "image": "busybox", "cpu": 10, "memory": 32}]}),
        )
        .await?;

    println!(
        "wharf bench placement: {} hollow instances, {} tasks in RunTask calls of 10 from {} clients",
        args.instances, args.tasks, args.clients
    );
    let registering = Instant::now();
    let fleet = start_fleet(
        client.clone(),
        HollowFleetConfig {
            cluster: "bench".to_owned(),
            instances: args.instances,
            zones: vec![
                "us-east-1a".into(),
                "us-east-1b".into(),
                "us-east-1c".into(),
            ],
            attributes: Vec::new(),
            cpu: 4096,
            memory: 16384,
            heartbeat: Duration::from_secs(30),
            id_prefix: "bench".to_owned(),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    while (fleet.stats.connected.load(Ordering::Relaxed) as usize) < args.instances {
        anyhow::ensure!(Instant::now() < deadline, "instances did not all connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "registered and connected {} instances in {:.1} s",
        args.instances,
        registering.elapsed().as_secs_f64()
    );

    let calls = args.tasks.div_ceil(10);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.clients {
        let client = client.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut placed = 0usize;
            let mut failures = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let begin = Instant::now();
                let answer = client
                    .call(
                        "RunTask",
                        &json!({"cluster": "bench", "taskDefinition": "hollow", "count": 10,
                                "placementStrategy": [
                                    {"type": "spread", "field": "attribute:ecs.availability-zone"},
                                    {"type": "binpack", "field": "memory"}]}),
                    )
                    .await;
                latencies.push(begin.elapsed());
                match answer {
                    Ok(answer) => {
                        placed += answer["tasks"].as_array().map_or(0, Vec::len);
                        failures += answer["failures"].as_array().map_or(0, Vec::len);
                    }
                    Err(e) => {
                        failures += 10;
                        eprintln!("RunTask failed: {e}");
                    }
                }
            }
            (latencies, placed, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut placed = 0;
    let mut failures = 0;
    for worker in workers {
        let (l, p, f) = worker.await?;
        latencies.extend(l);
        placed += p;
        failures += f;
    }
    let placing = started.elapsed();
    while (fleet.stats.running_reported.load(Ordering::Relaxed) as usize) < placed {
        anyhow::ensure!(Instant::now() < deadline, "tasks did not all reach RUNNING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = started.elapsed();
    latencies.sort();
    println!(
        "placed {placed} tasks ({failures} failures) in {:.1} s: {:.0} placements/s; RunTask of 10 p50 {:.1} ms p99 {:.1} ms",
        placing.as_secs_f64(),
        placed as f64 / placing.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "all {placed} RUNNING (reported by the hollow agents over the channel) after {:.1} s: {:.0} tasks/s sustained",
        running.as_secs_f64(),
        placed as f64 / running.as_secs_f64()
    );
    if let Some(rss) = peak_rss_mib(pid) {
        println!("control plane peak RSS: {rss:.0} MiB");
    }
    fleet.stop().await;
    drop(child);
    anyhow::ensure!(
        placed == args.tasks.min(calls * 10),
        "only {placed} tasks placed"
    );
    Ok(())
}

/// Flags of `wharf bench launch`.
#[derive(Args, Clone)]
pub(crate) struct LaunchBenchArgs {
    /// Sequential launches of each kind.
    #[arg(long, default_value_t = 20)]
    launches: usize,
    /// Tasks (and `docker run`s) launched at once in the burst.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// The image; it must be present locally (nothing is pulled).
    #[arg(long, default_value = "wharf-test/busybox:latest")]
    image: String,
}

const BENCH_LABEL: &str = "wharf.bench=launch";
const BENCH_COMMAND: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

/// `docker run -d` of the bench container; returns how long the command took.
async fn docker_run(image: &str) -> anyhow::Result<Duration> {
    let begin = Instant::now();
    let output = tokio::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            BENCH_LABEL,
            image,
            "sh",
            "-c",
            BENCH_COMMAND,
        ])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(begin.elapsed())
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

/// Waits until every task is RUNNING; returns when each got there (from `since`).
async fn wait_running(
    client: &wharf_agent_channel::client::EcsClient,
    arns: &[String],
    since: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut done: Vec<Option<Duration>> = vec![None; arns.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.iter().any(Option::is_none) {
        anyhow::ensure!(Instant::now() < deadline, "tasks did not reach RUNNING");
        let pending: Vec<&String> = arns
            .iter()
            .zip(&done)
            .filter(|(_, d)| d.is_none())
            .map(|(a, _)| a)
            .collect();
        for chunk in pending.chunks(100) {
            let answer = client
                .call("DescribeTasks", &json!({"tasks": chunk}))
                .await?;
            for task in answer["tasks"].as_array().into_iter().flatten() {
                let status = task["lastStatus"].as_str().unwrap_or("");
                anyhow::ensure!(
                    status != "STOPPED",
                    "a task stopped: {}",
                    task["stoppedReason"]
                );
                if status == "RUNNING" {
                    if let Some(i) = arns.iter().position(|a| task["taskArn"] == **a) {
                        done[i].get_or_insert(since.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(done.into_iter().map(|d| d.unwrap_or_default()).collect())
}

fn summary(name: &str, latencies: &mut [Duration]) -> (Duration, Duration) {
    latencies.sort();
    let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
    println!(
        "{name:<34} median {:>7.1} ms  p99 {:>7.1} ms  (n = {})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies.len()
    );
    (p50, p99)
}

/// Runs the launch benchmark.
pub(crate) async fn run_launch(args: LaunchBenchArgs) -> anyhow::Result<()> {
    let mut child = ChildWharf::start(
        &["up", "--registry-addr", "127.0.0.1:0"],
        &[
            ("ECS_IMAGE_PULL_BEHAVIOR", "prefer-cached"),
            ("ECS_CONTAINER_STOP_TIMEOUT", "2s"),
            ("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION", "1s"),
        ],
    )
    .await?;
    let client = child.client.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let instance_arn = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the local agent did not register"
        );
        if let Ok(answer) = client.call("ListContainerInstances", &json!({})).await {
            if let Some(arn) = answer["containerInstanceArns"][0].as_str() {
                break arn.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let instance_label = format!("wharf.container-instance-arn={instance_arn}");
    client
        .call(
            "RegisterTaskDefinition",
            &json!({"family": "launch", "containerDefinitions": [{
                "name": "app", "image": args.image, "memory": 16,
                "command": ["sh", "-c", BENCH_COMMAND]}]}),
        )
        .await?;
    println!(
        "wharf bench launch: image {}, {} sequential launches, burst of {}",
        args.image, args.launches, args.burst
    );

    // Warm-up: one of each, not counted.
    docker_run(&args.image).await?;
    let warm = client
        .call("RunTask", &json!({"taskDefinition": "launch"}))
        .await?;
    let warm_arn = warm["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_running(&client, std::slice::from_ref(&warm_arn), Instant::now()).await?;

    let mut raw = Vec::new();
    for _ in 0..args.launches {
        raw.push(docker_run(&args.image).await?);
    }
    remove_labelled(BENCH_LABEL).await;
    let mut wharf = Vec::new();
    let mut arns = vec![warm_arn];
    for _ in 0..args.launches {
        let begin = Instant::now();
        let answer = client
            .call("RunTask", &json!({"taskDefinition": "launch"}))
            .await?;
        let arn = answer["tasks"][0]["taskArn"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(!arn.is_empty(), "RunTask placed nothing: {answer}");
        wharf.push(wait_running(&client, std::slice::from_ref(&arn), begin).await?[0]);
        arns.push(arn);
    }
    let (raw_p50, _) = summary("docker run -d", &mut raw);
    let (wharf_p50, _) = summary("RunTask -> RUNNING", &mut wharf);
    println!(
        "added by Wharf at the median: {:+.1} ms (ratio {:.2})",
        (wharf_p50.as_secs_f64() - raw_p50.as_secs_f64()) * 1e3,
        wharf_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );
    for arn in arns.drain(..) {
        client.call("StopTask", &json!({"task": arn})).await?;
    }

    // The burst: `burst` parallel docker runs against `burst` tasks in RunTask calls of 10.
    let begin = Instant::now();
    let runs: Vec<_> = (0..args.burst)
        .map(|_| {
            tokio::spawn({
                let image = args.image.clone();
                async move { docker_run(&image).await }
            })
        })
        .collect();
    for run in runs {
        run.await??;
    }
    let raw_burst = begin.elapsed();
    remove_labelled(BENCH_LABEL).await;
    let begin = Instant::now();
    let mut calls = Vec::new();
    for chunk in 0..args.burst.div_ceil(10) {
        let count = (args.burst - chunk * 10).min(10);
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            client
                .call(
                    "RunTask",
                    &json!({"taskDefinition": "launch", "count": count}),
                )
                .await
        }));
    }
    let mut burst_arns = Vec::new();
    for call in calls {
        let answer = call.await??;
        for task in answer["tasks"].as_array().into_iter().flatten() {
            burst_arns.push(task["taskArn"].as_str().unwrap_or_default().to_owned());
        }
    }
    anyhow::ensure!(
        burst_arns.len() == args.burst,
        "placed {} of {}",
        burst_arns.len(),
        args.burst
    );
    wait_running(&client, &burst_arns, begin).await?;
    let wharf_burst = begin.elapsed();
    println!(
        "burst of {}: docker run -d in parallel {:.0} ms, Wharf RunTask -> all RUNNING {:.0} ms (ratio {:.2})",
        args.burst,
        raw_burst.as_secs_f64() * 1e3,
        wharf_burst.as_secs_f64() * 1e3,
        wharf_burst.as_secs_f64() / raw_burst.as_secs_f64()
    );
    for arn in burst_arns {
        let _ = client.call("StopTask", &json!({"task": arn})).await;
    }
    let _ = child.process.kill().await;
    remove_labelled(&instance_label).await;
    Ok(())
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
