//! The `wharf` binary: argument parsing and wiring only.
//!
//! Every behaviour lives in a library crate; this binary reads flags and environment,
//! assembles the components (`wharf-store`, `wharf-control`, `wharf-aws`) and runs
//! them. It must not hold logic a library crate should own.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod agent;
mod bench;
mod bench_deploy;
mod bench_proxy;
mod bench_registry;
mod credentials;
mod lb;
mod logs;
mod server;
mod sim;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Wharf: ECS and ECR on your own machines.
#[derive(Parser)]
#[command(name = "wharf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: the AWS API listener with its embedded state, and a
    /// local agent on the local Docker engine.
    Up(UpArgs),
    /// The control plane alone (the AWS API listener and its state).
    Server(ServerArgs),
    /// The node agent: registers this machine and runs the tasks placed on it on the
    /// local Docker engine. Configured like the ECS agent (ECS_* keys).
    Agent(agent::AgentArgs),
    /// Print `export` lines that point the AWS CLI and SDKs at a running Wharf.
    Env {
        /// The data directory of the Wharf to point at.
        #[arg(long, env = "WHARF_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Hollow container instances: register through the API, keep agent channels,
    /// and report placed tasks RUNNING (and STOPPED when told) without containers.
    Sim(sim::SimArgs),
    /// Print a task's container logs (`json-file` driver), read through the control
    /// plane from the agent of the task's instance.
    Logs(logs::LogsArgs),
    /// The load balancer data plane on its own, serving a static configuration (a
    /// JSON file of load balancer records) or following a control plane's.
    Lb(lb::LbArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Signed ECS API calls on loopback against an in-process server with durable
    /// state: calls/s and latency percentiles for reads and writes.
    Api(bench::ApiBenchArgs),
    /// Placement at scale: a control plane in its own process, hollow instances, and
    /// RunTask calls of 10 from many clients until every task runs; tasks/s and the
    /// control plane's peak RSS.
    Placement(bench::PlacementBenchArgs),
    /// Task launch latency on the local Docker engine: RunTask until RUNNING against
    /// raw `docker run -d` of the same image, one at a time and in a burst.
    Launch(bench::LaunchBenchArgs),
    /// Wharf's load balancer against HAProxy and nginx (Debian packages), each on one
    /// pinned core forwarding to the same upstream: req/s per core with wrk, latency
    /// added below saturation, and the ratios.
    Proxy(bench_proxy::ProxyBenchArgs),
    /// Registry blob pushes and pulls (small and large, 1 and 16 clients) against
    /// Wharf's registry and Debian's CNCF distribution in the same run: MB/s, blobs/s
    /// and the ratio of the two.
    Registry(bench_registry::RegistryBenchArgs),
    /// A rolling deployment of 10 load-balanced tasks on the local Docker engine under
    /// 200 req/s through the listener: time from UpdateService to stable, failed
    /// requests, and the share answered by the new revision.
    Deploy(bench_deploy::DeployBenchArgs),
}

/// Flags of `up`.
#[derive(Args, Clone)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Do not run the local agent.
    #[arg(long, env = "WHARF_NO_AGENT")]
    no_agent: bool,
    /// The address load balancer listeners bind on (each at its listener's port).
    #[arg(long, env = "WHARF_LB_ADDR", default_value = "127.0.0.1")]
    lb_addr: std::net::IpAddr,
}

/// Flags shared by `up` and `server`.
#[derive(Args, Clone)]
pub(crate) struct ServerArgs {
    /// Where state, credentials and the AWS config files live.
    #[arg(long, env = "WHARF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The address of the AWS API listener.
    #[arg(long, env = "WHARF_API_ADDR", default_value = "127.0.0.1:4566")]
    api_addr: SocketAddr,
    /// The address of the image registry (`wharf up` only).
    #[arg(long, env = "WHARF_REGISTRY_ADDR", default_value = "127.0.0.1:5000")]
    registry_addr: SocketAddr,
    /// The account id in ARNs.
    #[arg(long, env = "WHARF_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// The region written to the generated AWS config file.
    #[arg(long, env = "WHARF_REGION", default_value = "us-east-1")]
    region: String,
    /// A fixed root key pair `ID:SECRET` instead of a generated one.
    #[arg(long, env = "WHARF_ROOT_ACCESS_KEY")]
    root_access_key: Option<String>,
    /// How often the agent channel sends heartbeats, in milliseconds; an agent silent
    /// for three intervals is marked disconnected.
    #[arg(long, env = "WHARF_AGENT_HEARTBEAT_MS", default_value_t = 10_000)]
    agent_heartbeat_ms: u64,
    /// Where the registry keeps blobs (`wharf up` only): a directory, or
    /// `s3://bucket[/prefix]` for an S3-compatible bucket (credentials from the usual
    /// AWS_* variables). Default: `<data-dir>/registry`.
    #[arg(long, env = "WHARF_REGISTRY_STORAGE")]
    registry_storage: Option<String>,
    /// The S3 endpoint for `s3://` registry storage (e.g. `http://127.0.0.1:9000`);
    /// AWS itself when absent.
    #[arg(long, env = "WHARF_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The S3 signing region for `s3://` registry storage.
    #[arg(long, env = "WHARF_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Seconds between two garbage collections of unreferenced registry blobs.
    #[arg(long, env = "WHARF_REGISTRY_GC_INTERVAL_SECS", default_value_t = 3600)]
    registry_gc_interval_secs: u64,
    /// Seconds an unreferenced blob is kept after it was last put to use (uploaded,
    /// mounted, referenced by a push, found by an existence check).
    #[arg(long, env = "WHARF_REGISTRY_GC_GRACE_SECS", default_value_t = 3600)]
    registry_gc_grace_secs: u64,
}

/// `~/.local/share/wharf` unless a data directory was given.
pub(crate) fn data_dir_or_default(data_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = data_dir {
        return Ok(dir);
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --data-dir"))?;
    Ok(PathBuf::from(home).join(".local/share/wharf"))
}

/// Logs to stderr at `WHARF_LOG`'s filter, or at `default_level`.
pub(crate) fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Lb(args) = &cli.command {
        // `wharf lb` sizes its own runtime (`--threads`).
        init_logging("info");
        return lb::main(args.clone());
    }
    // The agent logs at its configuration's ECS_LOGLEVEL; it sets up logging itself
    // once it has read its configuration.
    if !matches!(cli.command, Command::Agent(_)) {
        init_logging("info");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Up(args) => runtime.block_on(server::run(
            args.server,
            server::Components {
                agent: !args.no_agent,
                registry: true,
                lb: Some(args.lb_addr),
            },
        )),
        Command::Server(args) => runtime.block_on(server::run(
            args,
            server::Components {
                agent: false,
                registry: false,
                lb: None,
            },
        )),
        Command::Env { data_dir } => {
            let dir = data_dir_or_default(data_dir)?;
            print!("{}", credentials::env_lines(&dir)?);
            Ok(())
        }
        Command::Agent(args) => runtime.block_on(agent::run(args)),
        Command::Sim(args) => runtime.block_on(sim::run(args)),
        Command::Logs(args) => runtime.block_on(logs::run(args)),
        Command::Lb(_) => unreachable!("handled before the runtime is built"),
        Command::Bench(BenchCommand::Api(args)) => runtime.block_on(bench::run_api(args)),
        Command::Bench(BenchCommand::Placement(args)) => {
            runtime.block_on(bench::run_placement(args))
        }
        Command::Bench(BenchCommand::Launch(args)) => runtime.block_on(bench::run_launch(args)),
        Command::Bench(BenchCommand::Proxy(args)) => runtime.block_on(bench_proxy::run_proxy(args)),
        Command::Bench(BenchCommand::Registry(args)) => {
            runtime.block_on(bench_registry::run_registry(args))
        }
        Command::Bench(BenchCommand::Deploy(args)) => {
            runtime.block_on(bench_deploy::run_deploy(args))
        }
    }
}
