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

/// The credentials the API accepts: the root key.
fn root_credentials(key: &RootKey, account_id: &str) -> Arc<dyn CredentialStore> {
    Arc::new(StaticCredentials::new().with(
        key.access_key_id.clone(),
        Credential {
            secret_access_key: key.secret_access_key.clone(),
            account_id: account_id.to_owned(),
            session_token: None,
        },
    ))
}

/// The AWS API router over a store, accepting the root key, with the agent channel.
pub(crate) fn api_router(
    store: Arc<dyn Store>,
    key: &RootKey,
    account_id: &str,
    endpoint: &str,
    channel: ChannelSettings,
    ecr: Option<Arc<wharf_registry::EcrService>>,
) -> Router {
    let credentials = root_credentials(key, account_id);
    let elbv2 = Arc::new(wharf_control::elbv2::Elbv2Service::new(
        Records::new(store.clone()),
        Arc::new(SystemClock),
        wharf_control::elbv2::Elbv2Config {
            account_id: account_id.to_owned(),
        },
    ));
    wharf_control::elbv2::spawn_drain_sweeper(elbv2.clone(), std::time::Duration::from_secs(1));
    let ecs = Arc::new(EcsService::new(
        Records::new(store),
        Arc::new(SystemClock),
        EcsConfig {
            account_id: account_id.to_owned(),
            endpoint: Some(endpoint.to_owned()),
        },
    ));
    let mut front = AwsFront::new(credentials.clone(), Arc::new(chrono::Utc::now))
        .service(ecs.clone())
        .service(elbv2);
    if let Some(ecr) = ecr {
        // ECR Public shares the registry's records, tokens and identities.
        front = front.service(Arc::new(ecr.public_twin())).service(ecr);
    }
    let front = front.router();
    wharf_control::ecs::housekeeping::spawn_housekeeping(
        ecs.clone(),
        std::time::Duration::from_secs(60),
    );
    wharf_control::ecs::services::spawn_service_controller(ecs.clone(), Default::default());
    Router::new()
        .route("/_wharf/health", get(|| async { "ok\n" }))
        .merge(agent_channel_router(ecs, credentials, channel))
        .merge(front)
}

/// Opens the durable embedded store under the data directory.
pub(crate) fn open_store(data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    let path = data_dir.join("state.db");
    let store = Arc::new(
        SqliteStore::open(&path, Durability::Full)
            .with_context(|| format!("opening {}", path.display()))?,
    );
    store.spawn_log_compaction(RETAINED_REVISIONS, std::time::Duration::from_secs(60));
    Ok(store)
}

/// How many revisions of change log the store keeps for watchers to resume from; a
/// watcher further behind reloads.
const RETAINED_REVISIONS: i64 = 100_000;

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

/// What runs besides the control plane.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Components {
    /// The local agent.
    pub agent: bool,
    /// The image registry.
    pub registry: bool,
    /// The load balancer data plane, its listeners bound on this address.
    pub lb: Option<std::net::IpAddr>,
}

/// `wharf up` (with the local agent and the registry) and `wharf server`.
pub(crate) async fn run(
    args: ServerArgs,
    with_agent_and_registry: Components,
) -> anyhow::Result<()> {
    let with_agent = with_agent_and_registry.agent;
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
    // The image registry (ECR API on the AWS listener, OCI on its own address) runs
    // with the API in `wharf up`.
    let registry = if with_agent_and_registry.registry {
        let listener = tokio::net::TcpListener::bind(args.registry_addr)
            .await
            .with_context(|| format!("binding the registry to {}", args.registry_addr))?;
        let location = match &args.registry_storage {
            Some(location) => location.clone(),
            None => data_dir.join("registry").to_string_lossy().into_owned(),
        };
        let blobs = wharf_registry::open_blob_store(
            &location,
            args.s3_endpoint.as_deref(),
            &args.s3_region,
        )
        .with_context(|| format!("opening the registry's blob storage at {location}"))?;
        let registry = wharf_registry::build_with(
            store.clone(),
            blobs,
            wharf_registry::RegistryConfig {
                region: args.region.clone(),
                account_id: args.account_id.clone(),
                registry_addr: listener.local_addr()?.to_string(),
            },
            wharf_registry::metadata::system_clock(),
        );
        Some((registry, listener))
    } else {
        None
    };
    let lb_store = store.clone();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    // The logs streams end on shutdown too: `wharf logs --follow` never finishes.
    let channel = ChannelSettings {
        heartbeat: std::time::Duration::from_millis(args.agent_heartbeat_ms),
        shutdown: Some(shutdown.clone()),
        ..ChannelSettings::default()
    };
    // The feed of remote load balancers (`wharf lb --control-plane`) is merged here
    // rather than in `api_router`, because its streams must end on shutdown: a graceful
    // shutdown waits for every response to finish.
    let lb_feed = wharf_control::lb_feed::lb_feed_router(
        store.clone(),
        root_credentials(&key, &args.account_id),
        wharf_control::lb_feed::LbFeedSettings {
            shutdown: Some(shutdown.clone()),
            ..Default::default()
        },
    );
    let router = api_router(
        store,
        &key,
        &args.account_id,
        &endpoint,
        channel,
        registry.as_ref().map(|(r, _)| r.ecr.clone()),
    )
    .merge(lb_feed);

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

    tokio::spawn(shutdown_signal(stop));
    // The load balancer data plane follows the same store as the API.
    if let Some(lb_addr) = with_agent_and_registry.lb {
        crate::lb::start_in_up(lb_store, &data_dir, lb_addr, shutdown.clone()).await?;
        println!("  load balancer listeners on {lb_addr}");
    }
    let mut stopping = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await
    });
    if let Some((registry, listener)) = registry {
        println!("  registry:    http://{}", listener.local_addr()?);
        wharf_registry::ecr::lifecycle::spawn_lifecycle_schedule(
            registry.ecr.clone(),
            std::time::Duration::from_secs(600),
            shutdown.clone(),
        );
        let gc = Arc::new(wharf_registry::gc::GarbageCollector::new(
            registry.ecr.metadata().clone(),
            registry.ecr.blobs().clone(),
            args.registry_gc_grace_secs.saturating_mul(1000) as i64,
        ));
        wharf_registry::gc::spawn_gc_schedule(
            gc.clone(),
            std::time::Duration::from_secs(args.registry_gc_interval_secs.max(1)),
            shutdown.clone(),
        );
        let registry_router = registry.router.merge(wharf_registry::gc::admin_router(
            gc,
            registry.tokens.clone(),
            &args.account_id,
        ));
        let mut stopping = shutdown.clone();
        tokio::spawn(async move {
            // Nagle's algorithm off: a blob's body must not wait behind its headers for
            // the client's delayed ACK (40 ms per small pull otherwise).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served = axum::serve(listener, registry_router)
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|s| *s).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the registry stopped");
            }
        });
    }
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
