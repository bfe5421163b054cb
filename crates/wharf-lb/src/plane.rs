//! The data plane's control loop: watches the store prefix `elbv2/`, rebuilds the
//! routing table from a fresh read after each burst of changes (debounced), swaps it
//! in atomically, opens and closes listener sockets as listeners come and go, and
//! keeps one health checker running per checked target.
//!
//! Only this loop writes the table; the request path only loads it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wharf_store::{Revision, Store, StoreError};

use crate::access_log::AccessLog;
use crate::health::{self, CheckClient, CheckSpec};
use crate::proxy::{self, Proxy, UpstreamSettings};
use crate::routing::{self, ElbRecords, RouteTable, TargetStates};

/// The store prefix the data plane watches.
pub const WATCH_PREFIX: &str = "elbv2/";

/// How the data plane runs.
#[derive(Debug, Clone)]
pub struct PlaneConfig {
    /// The address listeners bind on (each listener's port on it).
    pub bind_ip: IpAddr,
    /// Where access log lines go.
    pub access_log: AccessLog,
    /// How long the store must be quiet after a change before the table is rebuilt
    /// (a burst of writes costs one rebuild); a rebuild waits at most ten times this.
    pub debounce: Duration,
    /// Upstream connection settings.
    pub upstream: UpstreamSettings,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            access_log: AccessLog::Off,
            debounce: Duration::from_millis(20),
            upstream: UpstreamSettings::default(),
        }
    }
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The first read of the records failed.
    #[error("reading load balancer records: {0}")]
    Store(#[from] StoreError),
}

/// A running data plane. Dropping it does not stop it; call [`Plane::shutdown`].
#[derive(Debug)]
pub struct Plane {
    table: Arc<ArcSwap<RouteTable>>,
    applied: watch::Receiver<Revision>,
    bound: watch::Receiver<BTreeMap<u16, SocketAddr>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Plane {
    /// Reads the records, builds the first table, binds its listeners, and keeps
    /// following the store in a task of its own.
    pub async fn start(store: Arc<dyn Store>, config: PlaneConfig) -> Result<Plane, PlaneError> {
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let proxy = Arc::new(Proxy::new(
            table.clone(),
            &config.upstream,
            config.access_log.clone(),
        ));
        let (applied_tx, applied) = watch::channel(0);
        let (bound_tx, bound) = watch::channel(BTreeMap::new());
        let (stop, stop_rx) = watch::channel(false);
        let mut task = PlaneTask {
            store,
            config,
            table: table.clone(),
            proxy,
            states: TargetStates::new(),
            listeners: HashMap::new(),
            checkers: HashMap::new(),
            check_client: health::check_client(),
            applied: applied_tx,
            bound: bound_tx,
            applied_revision: 0,
        };
        task.reload().await?;
        let task = tokio::spawn(task.run(stop_rx));
        Ok(Plane {
            table,
            applied,
            bound,
            stop,
            task,
        })
    }

    /// The table requests are routed by now.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The store revision the current table was built from.
    pub fn applied_revision(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Waits until the table reflects the store at `revision` or later.
    pub async fn wait_applied(&self, revision: Revision) {
        let mut applied = self.applied.clone();
        let _ = applied.wait_for(|r| *r >= revision).await;
    }

    /// The listener ports served now, with the address each is bound to.
    pub fn bound(&self) -> BTreeMap<u16, SocketAddr> {
        self.bound.borrow().clone()
    }

    /// Stops following the store, closes every listener socket and stops the health
    /// checks. Connections already open finish on their own.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct ListenerTask {
    stop: watch::Sender<bool>,
    address: SocketAddr,
}

struct Checker {
    spec: CheckSpec,
    task: JoinHandle<()>,
}

struct PlaneTask {
    store: Arc<dyn Store>,
    config: PlaneConfig,
    table: Arc<ArcSwap<RouteTable>>,
    proxy: Arc<Proxy>,
    states: TargetStates,
    listeners: HashMap<u16, ListenerTask>,
    checkers: HashMap<String, Checker>,
    check_client: CheckClient,
    applied: watch::Sender<Revision>,
    bound: watch::Sender<BTreeMap<u16, SocketAddr>>,
    applied_revision: Revision,
}

/// Whether a change under `elbv2/` changes routing (health records are the data
/// plane's own output).
fn changes_routing(key: &str) -> bool {
    !matches!(routing::key_kind(key), Some("health"))
}

impl PlaneTask {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut retry = tokio::time::interval(Duration::from_secs(2));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'watching: loop {
            let mut events = match self
                .store
                .watch(WATCH_PREFIX, self.applied_revision + 1)
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(%error, "watching load balancer records failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break 'watching,
                    }
                    // The change log may have been compacted past us: read afresh.
                    if let Err(error) = self.reload().await {
                        tracing::warn!(%error, "reading load balancer records failed");
                    }
                    continue;
                }
            };
            loop {
                tokio::select! {
                    event = events.recv() => {
                        let ended = match event {
                            Some(Ok(event)) => {
                                if event.revision() <= self.applied_revision || !changes_routing(event.key()) {
                                    continue;
                                }
                                self.quiet_period(&mut events).await
                            }
                            Some(Err(_)) | None => true,
                        };
                        if let Err(error) = self.reload().await {
                            tracing::warn!(%error, "reading load balancer records failed");
                        }
                        if ended {
                            continue 'watching;
                        }
                    }
                    _ = retry.tick(), if self.listeners.len() < self.table.load().ports().count() => {
                        let table = self.table.load_full();
                        self.reconcile_listeners(&table).await;
                    }
                    _ = stop.changed() => break 'watching,
                }
            }
        }
        for (_, listener) in self.listeners.drain() {
            let _ = listener.stop.send(true);
        }
        for (_, checker) in self.checkers.drain() {
            checker.task.abort();
        }
    }

    /// Waits until no change has arrived for the debounce period (at most ten
    /// periods). Returns whether the watch ended meanwhile.
    async fn quiet_period(&self, events: &mut wharf_store::WatchReceiver) -> bool {
        let deadline = tokio::time::Instant::now() + self.config.debounce * 10;
        loop {
            let wait = self
                .config
                .debounce
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if wait.is_zero() {
                return false;
            }
            match tokio::time::timeout(wait, events.recv()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    async fn reload(&mut self) -> Result<(), StoreError> {
        let (kvs, revision) = self.store.range(WATCH_PREFIX).await?;
        let mut records = ElbRecords::default();
        for kv in &kvs {
            match records.insert(&kv.key, &kv.value) {
                Ok(()) => {}
                // Keys of kinds the data plane does not route by are not its business.
                Err(routing::RecordError::UnknownKey(key)) => {
                    tracing::trace!(%key, "not a routing record");
                }
                Err(error) => {
                    tracing::warn!(%error, "skipping an unreadable load balancer record");
                }
            }
        }
        let (table, states) = routing::compile(&records, revision, &self.states);
        self.states = states;
        let table = Arc::new(table);
        self.table.store(table.clone());
        self.reconcile_listeners(&table).await;
        self.reconcile_checkers(&table, &records);
        self.applied_revision = revision;
        self.applied.send_replace(revision);
        tracing::debug!(revision, "load balancer routes applied");
        Ok(())
    }

    async fn reconcile_listeners(&mut self, table: &RouteTable) {
        let wanted: Vec<u16> = table.ports().collect();
        self.listeners.retain(|port, listener| {
            let keep = wanted.contains(port);
            if !keep {
                tracing::info!(port, "listener closed");
                let _ = listener.stop.send(true);
            }
            keep
        });
        for port in wanted {
            if self.listeners.contains_key(&port) {
                continue;
            }
            let address = SocketAddr::new(self.config.bind_ip, port);
            match TcpListener::bind(address).await {
                Ok(socket) => {
                    let address = socket.local_addr().unwrap_or(address);
                    let (stop, stop_rx) = watch::channel(false);
                    tokio::spawn(proxy::serve_listener(
                        socket,
                        port,
                        self.proxy.clone(),
                        stop_rx,
                    ));
                    tracing::info!(%address, "listener open");
                    self.listeners.insert(port, ListenerTask { stop, address });
                }
                Err(error) => {
                    // Retried every few seconds while the listener exists.
                    tracing::warn!(%address, %error, "cannot bind a listener");
                }
            }
        }
        let bound = self
            .listeners
            .iter()
            .map(|(port, l)| (*port, l.address))
            .collect();
        self.bound.send_replace(bound);
    }

    fn reconcile_checkers(&mut self, table: &RouteTable, records: &ElbRecords) {
        let mut wanted: HashMap<String, (CheckSpec, Arc<routing::TargetState>)> = HashMap::new();
        for group in table.target_groups() {
            let Some(check) = group.health_check.as_ref().filter(|_| group.in_use) else {
                continue;
            };
            for target in group.targets.iter().filter(|t| !t.draining) {
                wanted.insert(
                    target.key.clone(),
                    (
                        CheckSpec {
                            target_key: target.key.clone(),
                            health_key: target.health_key.clone(),
                            address: target.address.clone(),
                            check: check.clone(),
                        },
                        target.state.clone(),
                    ),
                );
            }
        }
        self.checkers.retain(|key, checker| {
            let keep = wanted
                .get(key)
                .is_some_and(|(spec, _)| *spec == checker.spec);
            if !keep {
                checker.task.abort();
            }
            keep
        });
        for (key, (spec, state)) in wanted {
            if self.checkers.contains_key(&key) {
                continue;
            }
            let stored = records.health.get(&spec.health_key).cloned();
            let task = tokio::spawn(health::run_checker(
                self.store.clone(),
                self.check_client.clone(),
                spec.clone(),
                state,
                stored,
            ));
            self.checkers.insert(key, Checker { spec, task });
        }
    }
}
