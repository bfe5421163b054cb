//! `wharf bench proxy`: Wharf's load balancer (`wharf lb`, one thread) against HAProxy
//! and nginx (one thread / one worker each), every proxy pinned to the same core and
//! forwarding to the same upstream — a small hyper server returning a fixed body, run
//! by this process on the other core together with the load generators.
//!
//! Two measurements per proxy, and the same two straight to the upstream as the
//! baseline: throughput at saturation with `wrk` (fixed connections and duration;
//! req/s of the proxy's one core and wrk's p50/p99), and latency below saturation with
//! an open-loop fixed-rate client (latency counted from each request's scheduled send
//! time, so a stall is not hidden), from which the direct latency is subtracted to get
//! the latency the proxy adds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use wharf_lb::records::{self, *};

use crate::bench::free_port;

/// Flags of `wharf bench proxy`.
#[derive(Args, Clone)]
pub(crate) struct ProxyBenchArgs {
    /// wrk's open connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long each wrk run lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The fixed request rate of the latency measurement (below saturation).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// How long each latency measurement lasts, in seconds.
    #[arg(long, default_value_t = 3)]
    latency_seconds: u64,
    /// Rounds of measurements; the subjects take turns within a round and each one's
    /// median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The core the proxies are pinned to.
    #[arg(long, default_value_t = 0)]
    proxy_cpu: usize,
    /// The core of the upstream and the load generators.
    #[arg(long, default_value_t = 1)]
    load_cpu: usize,
}

/// The upstream's answer.
const BODY: &[u8] = b"hello from the upstream, a small fixed body of sixty-four bytes\n";

struct Tools {
    wrk: PathBuf,
    haproxy: PathBuf,
    nginx: PathBuf,
    taskset: PathBuf,
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn tools() -> anyhow::Result<Tools> {
    let found: Vec<(&str, Option<PathBuf>)> = ["wrk", "haproxy", "nginx", "taskset"]
        .into_iter()
        .map(|name| (name, find(name)))
        .collect();
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {}: install them with `apt-get install -y haproxy nginx wrk util-linux` \
             (Debian) and run the bench again",
            missing.join(", ")
        );
    }
    let get = |name: &str| {
        found
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, p)| p.clone())
            .expect("checked above")
    };
    Ok(Tools {
        wrk: get("wrk"),
        haproxy: get("haproxy"),
        nginx: get("nginx"),
        taskset: get("taskset"),
    })
}

/// Runs the upstream on a thread of its own with a single-threaded runtime.
fn start_upstream() -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-upstream".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building the upstream runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("binding the upstream");
                let _ = tx.send(listener.local_addr().expect("upstream address"));
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(|_request| async {
                            let mut response =
                                http::Response::new(Full::new(Bytes::from_static(BODY)));
                            response.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("text/plain"),
                            );
                            Ok::<_, Infallible>(response)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })?;
    Ok(rx.recv_timeout(Duration::from_secs(5))?)
}

/// The static configuration `wharf lb` serves: one listener forwarding to one target.
fn wharf_config(port: u16, upstream: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let region = "us-east-1";
    let lb_arn = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/bench/1";
    let tg_arn = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/bench/1";
    let mut map = serde_json::Map::new();
    map.insert(
        records::load_balancer_key(region, "bench"),
        serde_json::to_value(LoadBalancerRecord {
            arn: lb_arn.into(),
            name: "bench".into(),
            scheme: "internal".into(),
            lb_type: "application".into(),
            dns_name: "bench.localhost".into(),
            state: "active".into(),
            created_ms: 0,
            attributes: Default::default(),
            tags: Default::default(),
        })?,
    );
    map.insert(
        records::listener_key(region, "bench", "1"),
        serde_json::to_value(ListenerRecord {
            arn: format!("{lb_arn}/1").replace(":loadbalancer/", ":listener/"),
            load_balancer_arn: lb_arn.into(),
            port,
            protocol: "HTTP".into(),
            default_actions: vec![Action::Forward {
                order: Some(1),
                target_groups: vec![WeightedTargetGroup {
                    arn: tg_arn.into(),
                    weight: 1,
                }],
                stickiness_seconds: None,
            }],
            tags: Default::default(),
        })?,
    );
    map.insert(
        records::target_group_key(region, "bench"),
        serde_json::to_value(TargetGroupRecord {
            arn: tg_arn.into(),
            name: "bench".into(),
            protocol: "HTTP".into(),
            protocol_version: "HTTP1".into(),
            port: upstream.port(),
            target_type: "ip".into(),
            vpc_id: None,
            health_check: HealthCheck {
                enabled: true,
                protocol: "HTTP".into(),
                port: "traffic-port".into(),
                path: "/".into(),
                interval_seconds: 30,
                timeout_seconds: 5,
                healthy_threshold: 5,
                unhealthy_threshold: 2,
                matcher: "200".into(),
            },
            attributes: Default::default(),
            load_balancer_arns: vec![lb_arn.into()],
            tags: Default::default(),
        })?,
    );
    let ip = upstream.ip().to_string();
    map.insert(
        records::target_key(region, "bench", &ip, upstream.port()),
        serde_json::to_value(TargetRecord {
            id: ip,
            port: upstream.port(),
            address: upstream.to_string(),
            availability_zone: None,
            registered_ms: 0,
            drain_until_ms: None,
        })?,
    );
    Ok(serde_json::Value::Object(map))
}

/// HAProxy set to do what Wharf and the nginx configuration do to each request: keep
/// Host, append X-Forwarded-For, set X-Forwarded-Proto and X-Forwarded-Port.
fn haproxy_config(port: u16, upstream: SocketAddr) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  \
         option http-keep-alive\n  option forwardfor\n  http-reuse always\n\n\
         frontend bench\n  bind 127.0.0.1:{port}\n  \
         http-request set-header X-Forwarded-Proto http\n  \
         http-request set-header X-Forwarded-Port %[dst_port]\n  \
         default_backend upstream\n\n\
         backend upstream\n  server u1 {upstream}\n"
    )
}

fn nginx_config(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         upstream bench {{ server {upstream}; keepalive 256; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://bench;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_set_header Host $host;\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n      \
         proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Forwarded-Port $server_port;\n    }}\n  }}\n}}\n"
    )
}

/// A proxy process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_pinned(
    tools: &Tools,
    cpu: usize,
    program: &Path,
    args: &[&str],
    log: &Path,
) -> anyhow::Result<Running> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(&tools.taskset)
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Running(child))
}

/// One GET on a fresh connection.
async fn get_once(address: SocketAddr) -> anyhow::Result<http::StatusCode> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get("/")
                .header(http::header::HOST, address.to_string())
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

async fn wait_ready(
    name: &str,
    address: SocketAddr,
    child: &mut Running,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(status) = get_once(address).await {
            if status.is_success() {
                return Ok(());
            }
        }
        if let Some(exit) = child.0.try_wait()? {
            bail!(
                "{name} exited ({exit}) before serving: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not answer 200 on {address} within 15 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What wrk measured.
#[derive(Debug, Clone, Copy, Default)]
struct Saturation {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(v) = text.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('m') {
        (v, 60.0)
    } else {
        return None;
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * scale))
}

fn parse_wrk(output: &str) -> anyhow::Result<Saturation> {
    let mut result = Saturation::default();
    for line in output.lines() {
        let line = line.trim();
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            result.requests_per_second = rate.trim().parse()?;
        } else if let Some(value) = line.strip_prefix("50%") {
            result.p50 = parse_wrk_duration(value).context("wrk's p50")?;
        } else if let Some(value) = line.strip_prefix("99%") {
            result.p99 = parse_wrk_duration(value).context("wrk's p99")?;
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.errors += count.trim().parse::<u64>().unwrap_or(1);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            result.errors += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if result.requests_per_second == 0.0 {
        bail!("wrk printed no Requests/sec: {output}");
    }
    Ok(result)
}

fn run_wrk(
    tools: &Tools,
    args: &ProxyBenchArgs,
    address: SocketAddr,
) -> anyhow::Result<Saturation> {
    let output = Command::new(&tools.taskset)
        .arg("-c")
        .arg(args.load_cpu.to_string())
        .arg(&tools.wrk)
        .args([
            "-t1",
            &format!("-c{}", args.connections),
            &format!("-d{}s", args.seconds),
            "--latency",
            &format!("http://{address}/"),
        ])
        .output()
        .context("running wrk")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

/// What the fixed-rate client measured.
#[derive(Debug, Clone, Copy, Default)]
struct BelowSaturation {
    p50: Duration,
    p99: Duration,
    failed: usize,
    sent: usize,
}

/// Sends `rate` requests per second over a few keep-alive connections for `seconds`;
/// each latency counts from the request's scheduled time.
async fn fixed_rate(
    address: SocketAddr,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<BelowSaturation> {
    const CONNECTIONS: u64 = 8;
    let per_connection = Duration::from_secs_f64(CONNECTIONS as f64 / rate.max(1) as f64);
    let count = (rate * seconds / CONNECTIONS).max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        // Connections are offset so that sends are spread evenly.
        let offset = per_connection.mul_f64(c as f64 / CONNECTIONS as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count as usize);
            let mut failed = 0usize;
            for k in 0..count {
                let scheduled = start + offset + per_connection.mul_f64(k as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let request = http::Request::get("/")
                    .header(http::header::HOST, address.to_string())
                    .body(Empty::<Bytes>::new())
                    .expect("a valid request");
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(scheduled.elapsed());
                } else {
                    failed += 1;
                    if sender.ready().await.is_err() {
                        break;
                    }
                }
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (latencies, f) = task.await?;
        all.extend(latencies);
        failed += f;
    }
    all.sort();
    Ok(BelowSaturation {
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        failed,
        sent: all.len() + failed,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Measured {
    name: &'static str,
    saturation: Saturation,
    below: BelowSaturation,
}

/// One thing measured: the upstream itself or a proxy in front of it.
struct Subject {
    name: &'static str,
    address: SocketAddr,
    _process: Option<Running>,
}

fn median_by<T: Copy>(values: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2]
}

/// Runs every measurement `rounds` times, the subjects interleaved within each round
/// so that load from elsewhere on the machine falls on all of them alike, and keeps
/// each subject's median.
async fn measure_all(
    subjects: &[Subject],
    tools: &Tools,
    args: &ProxyBenchArgs,
) -> anyhow::Result<Vec<Measured>> {
    for subject in subjects {
        // Warm the connection pools and caches first.
        fixed_rate(subject.address, args.rate, 1).await?;
    }
    let mut saturation: Vec<Vec<Saturation>> = vec![Vec::new(); subjects.len()];
    let mut below: Vec<Vec<BelowSaturation>> = vec![Vec::new(); subjects.len()];
    for round in 1..=args.rounds.max(1) {
        for (i, subject) in subjects.iter().enumerate() {
            eprintln!("round {round}: {} on {} ...", subject.name, subject.address);
            below[i].push(fixed_rate(subject.address, args.rate, args.latency_seconds).await?);
            saturation[i].push(tokio::task::block_in_place(|| {
                run_wrk(tools, args, subject.address)
            })?);
        }
    }
    Ok(subjects
        .iter()
        .enumerate()
        .map(|(i, subject)| {
            let rps = median_by(&saturation[i], |s| s.requests_per_second);
            let b50 = median_by(&below[i], |b| b.p50.as_secs_f64());
            let b99 = median_by(&below[i], |b| b.p99.as_secs_f64());
            Measured {
                name: subject.name,
                saturation: Saturation {
                    errors: saturation[i].iter().map(|s| s.errors).sum(),
                    ..rps
                },
                below: BelowSaturation {
                    p50: b50.p50,
                    p99: b99.p99,
                    failed: below[i].iter().map(|b| b.failed).sum(),
                    sent: below[i].iter().map(|b| b.sent).sum(),
                },
            }
        })
        .collect())
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn added(proxy: Duration, direct: Duration) -> String {
    let delta = proxy.as_secs_f64() - direct.as_secs_f64();
    format!("{:+.3}", delta * 1000.0)
}

async fn start_wharf(
    tools: &Tools,
    args: &ProxyBenchArgs,
    dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<Subject> {
    let port = free_port()?;
    let config = dir.join("wharf.json");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&wharf_config(port, upstream)?)?,
    )?;
    let log = dir.join("wharf.log");
    let exe = std::env::current_exe()?;
    let mut child = spawn_pinned(
        tools,
        args.proxy_cpu,
        &exe,
        &[
            "lb",
            "--config",
            config.to_str().context("temp path")?,
            "--threads",
            "1",
        ],
        &log,
    )?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready("wharf lb", address, &mut child, &log).await?;
    Ok(Subject {
        name: "wharf",
        address,
        _process: Some(child),
    })
}

async fn start_haproxy(
    tools: &Tools,
    args: &ProxyBenchArgs,
    dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<Subject> {
    let port = free_port()?;
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, haproxy_config(port, upstream))?;
    let log = dir.join("haproxy.log");
    let mut child = spawn_pinned(
        tools,
        args.proxy_cpu,
        &tools.haproxy,
        &["-db", "-f", config.to_str().context("temp path")?],
        &log,
    )?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready("haproxy", address, &mut child, &log).await?;
    Ok(Subject {
        name: "haproxy",
        address,
        _process: Some(child),
    })
}

async fn start_nginx(
    tools: &Tools,
    args: &ProxyBenchArgs,
    dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<Subject> {
    let port = free_port()?;
    let config = dir.join("nginx.conf");
    std::fs::write(&config, nginx_config(dir, port, upstream))?;
    let log = dir.join("nginx.log");
    let prefix = format!("{}/", dir.display());
    let error_log = dir.join("nginx-error.log");
    let mut child = spawn_pinned(
        tools,
        args.proxy_cpu,
        &tools.nginx,
        &[
            "-p",
            &prefix,
            "-e",
            error_log.to_str().context("temp path")?,
            "-c",
            config.to_str().context("temp path")?,
        ],
        &log,
    )?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready("nginx", address, &mut child, &log).await?;
    Ok(Subject {
        name: "nginx",
        address,
        _process: Some(child),
    })
}

/// `wharf bench proxy`.
pub(crate) async fn run_proxy(args: ProxyBenchArgs) -> anyhow::Result<()> {
    let tools = tools()?;
    // Everything in this process (the upstream, the fixed-rate client) and wrk run on
    // the load core; the proxies get the other one to themselves.
    let status = Command::new(&tools.taskset)
        .args([
            "-a",
            "-p",
            "-c",
            &args.load_cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!(
            "taskset could not pin this process to cpu {}",
            args.load_cpu
        );
    }
    let upstream = start_upstream()?;
    let dir = tempfile::tempdir()?;
    let subjects = vec![
        Subject {
            name: "direct",
            address: upstream,
            _process: None,
        },
        start_wharf(&tools, &args, dir.path(), upstream).await?,
        start_haproxy(&tools, &args, dir.path(), upstream).await?,
        start_nginx(&tools, &args, dir.path(), upstream).await?,
    ];
    let results = measure_all(&subjects, &tools, &args).await?;
    drop(subjects);

    println!(
        "Proxy benchmark: each proxy pinned to cpu {} (1 thread/worker), upstream and load on cpu {}; \
         wrk -t1 -c{} -d{}s; fixed rate {} req/s for {} s over 8 connections; median of {} interleaved rounds",
        args.proxy_cpu,
        args.load_cpu,
        args.connections,
        args.seconds,
        args.rate,
        args.latency_seconds,
        args.rounds.max(1)
    );
    println!(
        "{:<8} {:>11} {:>9} {:>9} {:>7} | {:>9} {:>9} {:>10} {:>10} {:>9}",
        "",
        "req/s/core",
        "wrk p50",
        "wrk p99",
        "errors",
        "p50 ms",
        "p99 ms",
        "added p50",
        "added p99",
        "failed"
    );
    let direct = &results[0];
    for m in &results {
        let is_direct = m.name == "direct";
        println!(
            "{:<8} {:>11.0} {:>9} {:>9} {:>7} | {:>9} {:>9} {:>10} {:>10} {:>9}",
            m.name,
            m.saturation.requests_per_second,
            ms(m.saturation.p50),
            ms(m.saturation.p99),
            m.saturation.errors,
            ms(m.below.p50),
            ms(m.below.p99),
            if is_direct {
                "-".to_owned()
            } else {
                added(m.below.p50, direct.below.p50)
            },
            if is_direct {
                "-".to_owned()
            } else {
                added(m.below.p99, direct.below.p99)
            },
            format!("{}/{}", m.below.failed, m.below.sent),
        );
    }
    let find = |name: &str| results.iter().find(|m| m.name == name).expect("measured");
    let (wharf, haproxy, nginx) = (find("wharf"), find("haproxy"), find("nginx"));
    let ratio = |a: &Measured, b: &Measured| {
        a.saturation.requests_per_second / b.saturation.requests_per_second
    };
    println!(
        "throughput ratio wharf/haproxy: {:.2}   wharf/nginx: {:.2}   (target: wharf/haproxy >= 1.0)",
        ratio(wharf, haproxy),
        ratio(wharf, nginx)
    );
    let added_p99 =
        |m: &Measured| (m.below.p99.as_secs_f64() - direct.below.p99.as_secs_f64()) * 1000.0;
    println!(
        "added p99 below saturation: wharf {:.3} ms (target: < 1 ms), haproxy {:.3} ms, nginx {:.3} ms",
        added_p99(wharf),
        added_p99(haproxy),
        added_p99(nginx),
    );
    let best = wharf
        .saturation
        .requests_per_second
        .max(haproxy.saturation.requests_per_second);
    if direct.saturation.requests_per_second < 1.2 * best {
        println!(
            "note: straight to the upstream the load core reaches only {:.0} req/s, close to the \
             proxies' figures: they may be limited by the load generator, not by their own core",
            direct.saturation.requests_per_second
        );
    }
    let failures: u64 = results
        .iter()
        .map(|m| m.below.failed as u64 + m.saturation.errors)
        .sum();
    if failures > 0 {
        bail!("{failures} requests failed during the benchmark");
    }
    Ok(())
}
