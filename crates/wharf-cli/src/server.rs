//! Assembles and runs the API listener: store, ECS service, AWS front end.

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use wharf_aws::sigv4::{Credential, CredentialStore, StaticCredentials};
use wharf_aws::AwsFront;
use wharf_control::agent_channel::{agent_channel_router, ChannelSettings};
use wharf_control::records::Records;
use wharf_control::{EcsConfig, EcsService, SystemClock};
use wharf_store::sqlite::{Durability, SqliteStore};
use wharf_store::Store;

use crate::credentials::{self, RootKey};
use crate::ServerArgs;

/// The AWS API router over a store, accepting the root key, with the agent channel.
pub(crate) fn api_router(
    store: Arc<dyn Store>,
    key: &RootKey,
    account_id: &str,
    endpoint: &str,
    channel: ChannelSettings,
) -> Router {
    let credentials: Arc<dyn CredentialStore> = Arc::new(StaticCredentials::new().with(
        key.access_key_id.clone(),
        Credential {
            secret_access_key: key.secret_access_key.clone(),
            account_id: account_id.to_owned(),
            session_token: None,
        },
    ));
    let ecs = Arc::new(EcsService::new(
        Records::new(store),
        Arc::new(SystemClock),
        EcsConfig {
            account_id: account_id.to_owned(),
            endpoint: Some(endpoint.to_owned()),
        },
    ));
    let front = AwsFront::new(credentials.clone(), Arc::new(chrono::Utc::now))
        .service(ecs.clone())
        .router();
    Router::new()
        .route("/_wharf/health", get(|| async { "ok\n" }))
        .merge(agent_channel_router(ecs, credentials, channel))
        .merge(front)
}

/// Opens the durable embedded store under the data directory.
pub(crate) fn open_store(data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    let path = data_dir.join("state.db");
    let store = SqliteStore::open(&path, Durability::Full)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(store))
}

async fn shutdown_signal(stop: tokio::sync::watch::Sender<bool>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
}

/// `wharf up` (with the local agent) and `wharf server`.
pub(crate) async fn run(args: ServerArgs, with_agent: bool) -> anyhow::Result<()> {
    let data_dir = crate::data_dir_or_default(args.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (key, fresh) = credentials::root_key(&data_dir, args.root_access_key.as_deref())?;
    let store = open_store(&data_dir)?;
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("binding the API listener to {}", args.api_addr))?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    credentials::write_client_files(&data_dir, &key, &args.region, &endpoint)?;
    let channel = ChannelSettings {
        heartbeat: std::time::Duration::from_millis(args.agent_heartbeat_ms),
        ..ChannelSettings::default()
    };
    let router = api_router(store, &key, &args.account_id, &endpoint, channel);

    println!("Wharf is up.");
    println!("  endpoint:    {endpoint}");
    println!("  region:      {}", args.region);
    println!("  access key:  {}", key.access_key_id);
    if fresh {
        // The secret is printed once, when it is created; afterwards it is only in
        // the credentials file.
        println!("  secret key:  {}", key.secret_access_key);
    }
    println!(
        "  credentials: {}",
        data_dir.join("aws-credentials").display()
    );
    println!(
        "Point the AWS CLI at it with:  eval \"$(wharf env --data-dir {})\"",
        data_dir.display()
    );

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(shutdown_signal(stop));
    let mut stopping = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
    });
    let agent = if with_agent {
        crate::agent::start_local(&data_dir, &endpoint, &args.region, &key, shutdown.clone())
            .await?
    } else {
        None
    };
    server.await??;
    if let Some(agent) = agent {
        // The agent leaves its containers running; a restarted agent adopts them.
        let _ = agent.await;
    }
    Ok(())
}
