//! `wharf sim`: hollow container instances against a running control plane.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use std::sync::atomic::Ordering;
use wharf_agent::hollow::{start_fleet, HollowFleetConfig};
use wharf_agent_channel::client::EcsClient;
use wharf_aws::sigv4::SigningCredentials;

/// Flags of `wharf sim`.
#[derive(Args, Clone)]
pub(crate) struct SimArgs {
    /// How many hollow instances.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// The cluster they join (it must exist).
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Availability zones, assigned round-robin.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "us-east-1a,us-east-1b,us-east-1c"
    )]
    zones: Vec<String>,
    /// Extra attributes `name=value`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    attributes: Vec<String>,
    /// CPU units per instance.
    #[arg(long, default_value_t = 4096)]
    cpu: i64,
    /// MiB of memory per instance.
    #[arg(long, default_value_t = 16384)]
    memory: i64,
    /// The data directory of the Wharf to join (its endpoint and root key are used).
    #[arg(long, env = "WHARF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The region to register in.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Channel heartbeat interval, in seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
    /// The prefix of the fleet's EC2 instance ids (`i-<prefix><index>`). A fleet
    /// restarted with the same prefix takes its instances back; a second fleet beside
    /// it needs a prefix of its own.
    #[arg(long, default_value = "hollow")]
    id_prefix: String,
}

/// Runs the fleet until SIGINT or SIGTERM, printing its progress.
pub(crate) async fn run(args: SimArgs) -> anyhow::Result<()> {
    let data_dir = crate::data_dir_or_default(args.data_dir)?;
    let (key, _) = crate::credentials::root_key(&data_dir, None)?;
    let endpoint = std::fs::read_to_string(data_dir.join("endpoint"))?;
    let client = EcsClient::new(
        endpoint.trim(),
        &args.region,
        SigningCredentials {
            access_key_id: key.access_key_id,
            secret_access_key: key.secret_access_key,
            session_token: None,
        },
    );
    let mut attributes = Vec::new();
    for pair in &args.attributes {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--attributes takes name=value, got {pair}"))?;
        attributes.push((name.to_owned(), value.to_owned()));
    }
    let fleet = start_fleet(
        client,
        HollowFleetConfig {
            cluster: args.cluster.clone(),
            instances: args.instances,
            zones: args.zones,
            attributes,
            cpu: args.cpu,
            memory: args.memory,
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            id_prefix: args.id_prefix.clone(),
        },
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = ticker.tick() => {
                let s = &fleet.stats;
                println!(
                    "registered {} connected {} running-reports {} stopped-reports {} errors {}",
                    s.registered.load(Ordering::Relaxed),
                    s.connected.load(Ordering::Relaxed),
                    s.running_reported.load(Ordering::Relaxed),
                    s.stopped_reported.load(Ordering::Relaxed),
                    s.errors.load(Ordering::Relaxed),
                );
            }
        }
    }
    fleet.stop().await;
    Ok(())
}
