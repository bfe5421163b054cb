//! `wharf agent`, and the local agent `wharf up` runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use wharf_agent::config::AgentConfig;
use wharf_agent::node::{run_node, NodeOptions};
use wharf_agent::runtime::docker::DockerRuntime;
use wharf_agent::runtime::ContainerRuntime;
use wharf_agent_channel::client::EcsClient;
use wharf_aws::sigv4::SigningCredentials;

/// Flags of `wharf agent`.
#[derive(Args, Clone)]
pub(crate) struct AgentArgs {
    /// The ECS agent configuration file (KEY=VALUE lines); the environment overrides
    /// it. Default: /etc/ecs/ecs.config when it exists.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Where the metadata endpoint listens: the configured address, else the bridge
/// gateway on a free port (reachable from containers, not from other machines).
async fn metadata_addr(config: &AgentConfig, runtime: &DockerRuntime) -> Option<SocketAddr> {
    if let Some(addr) = config.metadata_addr {
        return Some(addr);
    }
    let gateway = runtime.bridge_gateway().await?;
    Some(SocketAddr::new(gateway, 0))
}

async fn shutdown_on_signal(stop: watch::Sender<bool>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop.send(true);
}

/// `wharf agent`.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let file = args
        .config
        .or_else(wharf_agent::config::default_config_path);
    let config = match AgentConfig::load(file.as_deref(), &env) {
        Ok(config) => config,
        Err(error) => {
            crate::init_logging("info");
            return Err(error.into());
        }
    };
    crate::init_logging(&config.log_level.tracing_level().to_string().to_lowercase());
    let endpoint = config
        .backend_host
        .clone()
        .context("ECS_BACKEND_HOST is not set: the agent needs the control plane's endpoint")?;
    let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) else {
        anyhow::bail!("WHARF_ACCESS_KEY_ID and WHARF_SECRET_ACCESS_KEY are not set");
    };
    let client = EcsClient::new(
        &endpoint,
        &config.region,
        SigningCredentials {
            access_key_id: key.clone(),
            secret_access_key: secret.expose().to_owned(),
            session_token: None,
        },
    );
    let runtime = DockerRuntime::connect().await?;
    let metadata = metadata_addr(&config, &runtime).await;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(shutdown_on_signal(stop));
    run_node(
        NodeOptions {
            config,
            client,
            metadata_addr: metadata,
            create_cluster: false,
        },
        Arc::new(runtime),
        shutdown,
    )
    .await?;
    Ok(())
}

/// Starts the local agent of `wharf up`, unless no Docker engine is reachable, which
/// it reports plainly (the API keeps serving).
pub(crate) async fn start_local(
    data_dir: &Path,
    endpoint: &str,
    region: &str,
    key: &crate::credentials::RootKey,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config = AgentConfig::load(None, &env)?;
    if !env.contains_key("ECS_DATADIR") {
        config.data_dir = data_dir.join("agent");
    }
    config.region = region.to_owned();
    let runtime = match DockerRuntime::connect().await {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("  agent:       not started: no Docker engine is reachable ({error})");
            return Ok(None);
        }
    };
    if let Err(error) = runtime.version().await {
        println!("  agent:       not started: the Docker engine does not answer ({error})");
        return Ok(None);
    }
    let metadata = metadata_addr(&config, &runtime).await;
    let client = EcsClient::new(
        endpoint,
        region,
        SigningCredentials {
            access_key_id: key.access_key_id.clone(),
            secret_access_key: key.secret_access_key.clone(),
            session_token: None,
        },
    );
    println!(
        "  agent:       local Docker engine, cluster {}",
        config.cluster
    );
    let options = NodeOptions {
        config,
        client,
        metadata_addr: metadata,
        create_cluster: true,
    };
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = run_node(options, Arc::new(runtime), shutdown).await {
            tracing::error!(%error, "the local agent stopped");
        }
    })))
}
