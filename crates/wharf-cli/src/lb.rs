//! `wharf lb` (the load balancer data plane on its own) and the data plane's wiring
//! into `wharf up`.
//!
//! On its own the data plane serves either a static configuration (`--config`, a JSON
//! file of records) or a remote control plane's (`--control-plane URL`): it mirrors
//! the control plane's ELBv2 records into an in-memory store over the feed
//! (`wharf_lb::remote`), keeps serving the last configuration it received while the
//! control plane is unreachable, and reports the health it observes back so that
//! DescribeTargetHealth on the control plane shows it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use wharf_aws::sigv4::SigningCredentials;
use wharf_lb::access_log::AccessLog;
use wharf_lb::remote::{follow, RemoteConfig};
use wharf_lb::{Plane, PlaneConfig};
use wharf_store::sqlite::SqliteStore;
use wharf_store::Store;

/// Flags of `wharf lb`.
#[derive(Args, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "control_plane"])))]
pub(crate) struct LbArgs {
    /// A JSON file of load balancer records, one object mapping store keys
    /// (`elbv2/<region>/lb/<name>`, `…/listener/…`, `…/rule/…`, `…/tg/…`,
    /// `…/target/…`) to records as the ELBv2 API stores them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Follow the control plane at this endpoint (`http://host:port`, its AWS API
    /// listener) instead of a static file.
    #[arg(long, env = "WHARF_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// The access key to sign with when following a control plane (else
    /// AWS_ACCESS_KEY_ID).
    #[arg(long, env = "WHARF_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// The secret half of the key (else AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "WHARF_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: Option<String>,
    /// The region requests to the control plane are signed for (every region's load
    /// balancers are followed).
    #[arg(long, env = "WHARF_REGION", default_value = "us-east-1")]
    region: String,
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

/// The control plane's endpoint with its scheme; only plain HTTP is spoken.
fn control_plane_endpoint(given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    let endpoint = if given.contains("://") {
        given.to_owned()
    } else {
        format!("http://{given}")
    };
    let uri: http::Uri = endpoint
        .parse()
        .with_context(|| format!("--control-plane {given:?} is not a URL"))?;
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty() && uri.scheme_str() == Some("http"))
        .with_context(|| {
            format!(
                "--control-plane must be an http://host:port URL (https is not supported), \
                 not {given:?}"
            )
        })?;
    anyhow::ensure!(
        matches!(uri.path(), "" | "/") && uri.query().is_none(),
        "--control-plane takes the API endpoint without a path, not {given:?}"
    );
    Ok(format!("http://{authority}"))
}

/// The signing key: the flags or WHARF_* variables, else the AWS_* variables.
fn signing_credentials(args: &LbArgs) -> anyhow::Result<SigningCredentials> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // A session token belongs with the AWS_* key it was issued for, not with a key
    // given to Wharf directly.
    let session_token = match args.access_key_id {
        Some(_) => None,
        None => from_env("AWS_SESSION_TOKEN"),
    };
    let access_key_id = args
        .access_key_id
        .clone()
        .or_else(|| from_env("AWS_ACCESS_KEY_ID"));
    let secret_access_key = args
        .secret_access_key
        .clone()
        .or_else(|| from_env("AWS_SECRET_ACCESS_KEY"));
    let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key) else {
        anyhow::bail!(
            "following a control plane needs its access key: --access-key-id and \
             --secret-access-key (or WHARF_ACCESS_KEY_ID and WHARF_SECRET_ACCESS_KEY, or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        );
    };
    Ok(SigningCredentials {
        access_key_id,
        secret_access_key,
        session_token,
    })
}

/// How long `wharf lb --control-plane` waits for the first snapshot before it starts
/// serving anyway (with nothing, until the control plane answers).
const FIRST_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(args: LbArgs) -> anyhow::Result<()> {
    // The records go into an in-memory store, so the plane runs exactly as it does on
    // a control plane's store (health records land there too).
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
    let mut follower = None;
    if let Some(path) = &args.config {
        let json = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let entries = wharf_lb::static_config::parse(&json)
            .with_context(|| format!("in {}", path.display()))?;
        wharf_lb::static_config::load_into(store.as_ref(), entries).await?;
    } else if let Some(given) = &args.control_plane {
        let endpoint = control_plane_endpoint(given)?;
        let credentials = signing_credentials(&args)?;
        let following = follow(
            RemoteConfig::new(&endpoint, &args.region, credentials),
            store.clone(),
        );
        let synced =
            tokio::time::timeout(FIRST_SYNC_WAIT, following.wait_for(|s| s.syncs > 0)).await;
        if synced.is_ok() {
            println!("following the control plane at {endpoint}");
        } else {
            eprintln!(
                "the control plane at {endpoint} has not answered yet (see the log); \
                 serving nothing until it does"
            );
        }
        follower = Some(following);
    }
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
    if let Some(follower) = follower {
        follower.shutdown().await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_endpoints_are_plain_http_without_a_path() {
        assert_eq!(
            control_plane_endpoint("http://10.0.0.5:4566/").unwrap(),
            "http://10.0.0.5:4566"
        );
        assert_eq!(
            control_plane_endpoint("10.0.0.5:4566").unwrap(),
            "http://10.0.0.5:4566"
        );
        for bad in [
            "https://10.0.0.5:4566",
            "http://10.0.0.5:4566/api",
            "http://",
            "",
        ] {
            assert!(control_plane_endpoint(bad).is_err(), "{bad:?}");
        }
    }
}
