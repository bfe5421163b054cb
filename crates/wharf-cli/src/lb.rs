//! `wharf lb` (the load balancer data plane on its own, serving a static
//! configuration) and the data plane's wiring into `wharf up`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use wharf_lb::access_log::AccessLog;
use wharf_lb::{Plane, PlaneConfig};
use wharf_store::sqlite::SqliteStore;
use wharf_store::Store;

/// Flags of `wharf lb`.
#[derive(Args, Clone)]
pub(crate) struct LbArgs {
    /// A JSON file of load balancer records, one object mapping store keys
    /// (`elbv2/<region>/lb/<name>`, `…/listener/…`, `…/rule/…`, `…/tg/…`,
    /// `…/target/…`) to records as the ELBv2 API stores them.
    #[arg(long)]
    config: PathBuf,
    /// The address every listener binds on (each at its own port).
    #[arg(long, env = "WHARF_LB_ADDR", default_value = "127.0.0.1")]
    addr: IpAddr,
    /// Worker threads; 1 runs everything on one thread, 0 means one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Append one line per request to this file.
    #[arg(long)]
    access_log: Option<PathBuf>,
}

/// Runs `wharf lb` on a runtime of the size asked for.
pub(crate) fn main(args: LbArgs) -> anyhow::Result<()> {
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Runtime::new()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(args))
}

async fn run(args: LbArgs) -> anyhow::Result<()> {
    let json = std::fs::read(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let entries = wharf_lb::static_config::parse(&json)
        .with_context(|| format!("in {}", args.config.display()))?;
    // The static records go into an in-memory store, so the plane runs exactly as it
    // does on a control plane's store (health records land there too).
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
    wharf_lb::static_config::load_into(store.as_ref(), entries).await?;
    let access_log = match &args.access_log {
        Some(path) => {
            AccessLog::to_file(path).with_context(|| format!("opening {}", path.display()))?
        }
        None => AccessLog::Off,
    };
    let plane = Plane::start(
        store,
        PlaneConfig {
            bind_ip: args.addr,
            access_log,
            ..PlaneConfig::default()
        },
    )
    .await?;
    let wanted = plane.table().ports().count();
    let bound = plane.bound();
    for address in bound.values() {
        println!("listening on http://{address}");
    }
    if bound.len() < wanted {
        // The plane keeps retrying; say so rather than serve part silently.
        eprintln!(
            "{} of {wanted} listeners could not be bound yet (see the log); retrying",
            wanted - bound.len()
        );
    }
    wait_for_signal().await;
    plane.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Starts the data plane of `wharf up` on the control plane's store: listeners bind
/// on `bind_ip`, the access log goes to `<data-dir>/lb-access.log`. It stops when
/// `shutdown` turns true.
pub(crate) async fn start_in_up(
    store: Arc<dyn Store>,
    data_dir: &Path,
    bind_ip: IpAddr,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let log_path = data_dir.join("lb-access.log");
    let access_log =
        AccessLog::to_file(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
    let plane = Plane::start(
        store,
        PlaneConfig {
            bind_ip,
            access_log,
            ..PlaneConfig::default()
        },
    )
    .await?;
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        plane.shutdown().await;
    });
    Ok(())
}
