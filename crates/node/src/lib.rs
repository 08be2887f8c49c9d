//! A litefs-rs node: the store, its FUSE mount, the internal API, and replication in the
//! node's role. The role comes from the lease ([`litefs_lease::Leaser`]): with the static
//! lease the candidate is the primary and every other node follows it; with the Consul lease
//! the candidates elect one, and the role changes as nodes come and go ([`role`] decides, the
//! role loop here carries it out). [`run`] serves until the shutdown token fires, then releases
//! the lease, stops every task it started, unmounts and makes every LTX file durable.

mod api;
mod apply;
#[doc(hidden)]
pub mod fuzzing;
mod halt;
pub mod role;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litefs_fuse::MountOptions;
use litefs_lease::{
    ClusterPosition, ConsulLeaser, ConsulOptions, DbPosition, Lease, LeaseError, Leaser,
    PrimaryInfo, StaticLeaser,
};
use litefs_replication::replica::{self, Ended, FollowEvent, FollowOptions};
use litefs_store::{Store, StoreOptions};
use role::{Action, Event, Machine, Phase, Timing};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use apply::{ApplyError, MountApplier};
pub use litefs_replication::AuthToken;

/// How the primary is chosen.
#[derive(Clone, Debug)]
pub enum LeaseKind {
    /// `lease.type: static`: the candidate is the primary; the others follow `primary`.
    Static {
        /// The primary's hostname and URL (`lease.hostname`, `lease.advertise-url`).
        primary: PrimaryInfo,
    },
    /// `lease.type: consul`.
    Consul {
        /// `lease.consul.url`.
        url: String,
        /// `lease.consul.key`.
        key: String,
        /// `lease.consul.ttl`.
        ttl: Duration,
        /// `lease.consul.lock-delay`.
        lock_delay: Duration,
    },
}

/// Everything a node needs, mapped from `litefs.yml` by the binary.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// `data.dir`.
    pub data_dir: PathBuf,
    /// `data.compress`.
    pub compress: bool,
    /// `strict-verify`.
    pub strict_verify: bool,
    /// `data.retention`.
    pub retention: Duration,
    /// `data.retention-monitor-interval` (zero: no retention).
    pub retention_interval: Duration,
    /// `data.retention-max-size` in bytes (zero: no limit).
    pub retention_max_size: u64,
    /// `fuse.dir`.
    pub fuse_dir: PathBuf,
    /// `fuse.allow-other`.
    pub allow_other: bool,
    /// `fuse.debug`.
    pub fuse_debug: bool,
    /// Do not unmount a stale mount at `fuse_dir` first.
    pub skip_unmount: bool,
    /// `http.addr` (`:20202` means every interface).
    pub http_addr: String,
    /// `http.auth-token`: what every request to this node's API must carry, and what it sends
    /// to its peers' (`None`: the API is open, as LiteFS's).
    pub auth_token: Option<litefs_replication::AuthToken>,
    /// The lease.
    pub lease: LeaseKind,
    /// This node's name and API URL, as written into the lease when it is the primary (Consul).
    pub own: PrimaryInfo,
    /// `lease.candidate`.
    pub candidate: bool,
    /// `lease.promote`: once caught up with the primary, ask it for the lease.
    pub promote: bool,
    /// `lease.databases`: what a replica follows (all when empty).
    pub databases: Vec<String>,
    /// `lease.reconnect-delay`: the first wait before reconnecting to the primary.
    pub reconnect_delay: Duration,
    /// `lease.demote-delay`: after handing the lease over, how long not to compete for it.
    pub demote_delay: Duration,
    /// `lease.stale-timeout`: how long a candidate behind the cluster waits for a fresher node.
    pub stale_timeout: Option<Duration>,
    /// The HTTP proxy in front of the application (`proxy.addr` and the rest), if enabled.
    pub proxy: Option<(String, litefs_proxy::ProxyOptions)>,
    /// `skip-sync`: start the proxy without waiting for the node to be ready.
    pub skip_sync: bool,
}

/// Why a node could not start or stopped with an error.
#[derive(thiserror::Error, Debug)]
pub enum NodeError {
    /// The data directory could not be opened.
    #[error("open data directory {path}")]
    Store {
        /// The data directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: litefs_store::Error,
    },
    /// The lease cannot be set up.
    #[error("lease")]
    Lease(#[source] LeaseError),
    /// The cluster id file cannot be read.
    #[error("read {path}")]
    ClusterId {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Mounting failed.
    #[error("mount {path}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The API port could not be bound.
    #[error("listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Making the LTX files durable at shutdown failed.
    #[error("sync ltx files")]
    Sync(#[source] litefs_store::Error),
    /// The proxy could not start (its address is taken, say).
    #[error("proxy")]
    Proxy(#[source] litefs_proxy::ProxyError),
}

/// What a running node reports.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// True once the node has caught up with the primary (at once on the primary).
    pub ready: watch::Receiver<bool>,
    /// The node's first run-time failure: a part of it that stopped and cannot go on (the
    /// proxy could not bind its address, say). The node reports it and keeps serving the rest;
    /// the caller decides whether to shut it down (`exit-on-error`).
    failure: watch::Receiver<Option<Arc<NodeError>>>,
    /// Closes the proxy (before it starts, or while it serves).
    proxy: CancellationToken,
}

impl NodeStatus {
    /// Waits for the node's first run-time failure; never returns while there is none (or
    /// once the node has stopped).
    pub async fn failed(&mut self) -> Arc<NodeError> {
        loop {
            if let Some(failure) = self.failure.borrow_and_update().clone() {
                return failure;
            }
            if self.failure.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Stops the proxy: it no longer accepts connections and drops the ones it has. The rest
    /// of the node (mount, internal API, replication) keeps running.
    pub fn close_proxy(&self) {
        self.proxy.cancel();
    }
}

/// Reports a run-time failure of the node (only the first one is kept).
fn report_failure(failure: &watch::Sender<Option<Arc<NodeError>>>, error: NodeError) {
    if failure.receiver_count() == 0 {
        // Nobody watches this node's failures: say it here.
        tracing::error!("{}", litefs_store::error_chain(&error));
    }
    failure.send_if_modified(|f| {
        if f.is_some() {
            return false;
        }
        *f = Some(Arc::new(error));
        true
    });
}

/// `:port` means every interface.
fn bind_addr(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    }
}

/// The cluster id file in the data directory (`LFSC` and 16 hex digits, as LiteFS writes it).
const CLUSTER_ID_FILE: &str = "clusterid";

fn read_cluster_id(data_dir: &Path) -> Result<Option<String>, NodeError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NodeError::ClusterId { path, source }),
    }
}

fn write_cluster_id(data_dir: &Path, id: &str) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, data_dir.join(CLUSTER_ID_FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// A new cluster id: `LFSC` and 16 uppercase hex digits.
fn new_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("LFSC{:016X}", h.finish())
}

/// Runs a node until `shutdown` fires. `started` receives the node's status once it serves.
pub async fn run(
    opts: NodeOptions,
    shutdown: CancellationToken,
    started: Option<tokio::sync::oneshot::Sender<NodeStatus>>,
) -> Result<(), NodeError> {
    let store = Arc::new(
        Store::open(StoreOptions {
            data_dir: opts.data_dir.clone(),
            compress: opts.compress,
            strict_verify: opts.strict_verify,
            adopt: Vec::new(),
            retention_max_size: opts.retention_max_size,
        })
        .map_err(|source| NodeError::Store {
            path: opts.data_dir.clone(),
            source,
        })?,
    );
    tracing::info!(data = %opts.data_dir.display(), node = %store.node_id(), "store opened");
    let leaser = match &opts.lease {
        LeaseKind::Static { primary } => Leaser::Static(StaticLeaser {
            is_primary: opts.candidate,
            primary: primary.clone(),
        }),
        LeaseKind::Consul {
            url,
            key,
            ttl,
            lock_delay,
        } => Leaser::Consul(Box::new(
            ConsulLeaser::new(ConsulOptions {
                url: url.clone(),
                key: key.clone(),
                ttl: *ttl,
                lock_delay: *lock_delay,
                info: opts.own.clone(),
            })
            .map_err(NodeError::Lease)?,
        )),
    };
    let cluster_id = Arc::new(Mutex::new(read_cluster_id(&opts.data_dir)?));
    // A node takes no writes until the lease says it is the primary; the static lease says so
    // at once (the role loop confirms it before anything can connect).
    let static_primary = matches!(leaser, Leaser::Static(_)) && opts.candidate;
    store.set_readonly(!static_primary);
    store.status().set_primary_timestamp(if static_primary {
        0
    } else {
        litefs_store::status::NOT_READY
    });
    let (changes_tx, changes_rx) = watch::channel(0u64);
    let changes_tx = Arc::new(changes_tx);
    {
        let changes_tx = changes_tx.clone();
        store.set_observer(Arc::new(move |_name: &str| {
            changes_tx.send_modify(|g| *g = g.wrapping_add(1));
        }));
    }

    let halt_dir = opts.data_dir.join("locks");
    if !opts.skip_unmount {
        for dir in [&opts.fuse_dir, &halt_dir] {
            litefs_fuse::unmount_stale(dir).map_err(|source| NodeError::Mount {
                path: dir.clone(),
                source,
            })?;
        }
    }
    let mount = litefs_fuse::mount(
        store.clone(),
        &MountOptions {
            dir: opts.fuse_dir.clone(),
            allow_other: opts.allow_other,
            debug: opts.fuse_debug,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
            halt_dir: Some(halt_dir),
        },
    )
    .map_err(|source| NodeError::Mount {
        path: opts.fuse_dir.clone(),
        source,
    })?;
    let mount_dir = mount.dir().to_owned();
    tracing::info!(dir = %mount_dir.display(), lease = leaser.kind(), candidate = opts.candidate, "mounted");

    let tracker = TaskTracker::new();
    let cancel = shutdown.child_token();
    let (primary_tx, primary_rx) = watch::channel(static_primary);
    let (ready_tx, ready_rx) = watch::channel(static_primary);

    let addr = bind_addr(&opts.http_addr);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| NodeError::Listen {
            addr: addr.clone(),
            source,
        });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            let _ = mount.unmount();
            return Err(e);
        }
    };
    tracing::info!(addr = %listener.local_addr().map_or(addr.clone(), |a| a.to_string()), "internal API listening");
    let (handoff_tx, handoff_rx) = mpsc::channel(4);
    let (primary_proxy_tx, primary_proxy_rx) = watch::channel(None::<String>);
    let (failure_tx, failure_rx) = watch::channel(None::<Arc<NodeError>>);
    let failure_tx = Arc::new(failure_tx);
    let proxy_cancel = cancel.child_token();
    if let Some((addr, proxy_opts)) = opts.proxy.clone() {
        let store = store.clone();
        let primary = primary_rx.clone();
        let primary_proxy = primary_proxy_rx.clone();
        let mut ready = ready_rx.clone();
        let cancel = proxy_cancel.clone();
        let proxy_tracker = tracker.clone();
        let skip_sync = opts.skip_sync;
        let failure = failure_tx.clone();
        tracker.spawn(async move {
            // Only once the node is ready (the primary, or caught up with it).
            if !skip_sync {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    r = async { ready.wait_for(|r| *r).await.is_ok() } => if !r { return; },
                }
            }
            if let Err(e) = litefs_proxy::serve(
                &addr,
                store,
                primary,
                primary_proxy,
                proxy_opts,
                cancel.clone(),
                proxy_tracker,
            )
            .await
            {
                report_failure(&failure, NodeError::Proxy(e));
            }
        });
    }
    // The API (replicas' streams included) outlives the node's other tasks at shutdown: a
    // stopping primary sends its replicas what it has before the lease goes (see
    // `Api::drain_streams`); it stops once the role loop is done.
    let api_cancel = CancellationToken::new();
    let api = Arc::new(api::Api {
        store: store.clone(),
        primary: primary_rx,
        changes: changes_rx,
        compress: opts.compress,
        candidate: opts.candidate,
        static_lease: matches!(leaser, Leaser::Static(_)),
        mount_dir: mount_dir.display().to_string(),
        invalidator: mount.invalidator(),
        file_cache: Arc::default(),
        streams: Mutex::new(HashMap::new()),
        primary_term: Mutex::new(api_cancel.child_token()),
        cluster_id: cluster_id.clone(),
        primary_url: Arc::default(),
        handoffs: handoff_tx,
        cancel: api_cancel.clone(),
        tracker: tracker.clone(),
        applier: std::sync::OnceLock::new(),
        halts: api::halt::Halts::default(),
        auth_token: opts.auth_token.clone(),
        refused: api::Refused::default(),
    });
    let mount_applier = MountApplier::new(store.clone(), mount_dir.clone(), mount.invalidator());
    let _ = api.applier.set(mount_applier.clone());
    let halter = Arc::new(halt::Halter::new(store.clone(), api.clone()));
    mount.set_halt_locks(halter.clone());
    tracker.spawn(api.clone().serve(listener));
    tracker.spawn(expire_halts(api.clone(), cancel.clone()));

    tracker.spawn(sync_loop(mount_applier.clone(), cancel.clone()));
    let roles = Arc::new(Roles {
        store: store.clone(),
        leaser: Arc::new(leaser),
        api: api.clone(),
        primary: primary_tx,
        primary_proxy: primary_proxy_tx,
        ready: Arc::new(ready_tx),
        applier: Arc::new(MountApplierAdapter(mount_applier)),
        cluster_id,
        data_dir: opts.data_dir.clone(),
        opts: opts.clone(),
        promoted: AtomicBool::new(false),
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    });
    let role_task = tracker.spawn(roles.clone().run(handoff_rx));
    let leaser = roles.leaser.clone();

    if !opts.retention_interval.is_zero() {
        tracker.spawn(retention_loop(
            store.clone(),
            opts.retention,
            opts.retention_interval,
            cancel.clone(),
        ));
    }
    if let Some(started) = started {
        let _ = started.send(NodeStatus {
            ready: ready_rx,
            failure: failure_rx,
            proxy: proxy_cancel,
        });
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    cancel.cancel();
    // The role loop releases the lease before anything else stops.
    let _ = role_task.await;
    api_cancel.cancel();
    tracker.close();
    tracker.wait().await;
    // Halt locks: the ones this node holds, and the ones it gave out (files of the mount).
    let _ = tokio::task::spawn_blocking(move || halter.close()).await;
    api.halts.clear();
    drop(roles);
    // Last, once no task can register it again: the node's health check.
    let _ = tokio::time::timeout(SHUTDOWN_LEASE, leaser.close()).await;
    if let Err(e) = mount.unmount() {
        // Something still has files open in the mount: detach it now; it goes away when they
        // close. Everything written is already in the store.
        tracing::warn!(dir = %mount_dir.display(), "unmount failed ({e}); detaching the mount lazily");
        if let Err(e) = litefs_fuse::unmount_stale(&mount_dir) {
            tracing::warn!(dir = %mount_dir.display(), "lazy unmount failed: {e}");
        }
    }
    store.sync().map_err(NodeError::Sync)?;
    // What a replica applied since its last sync.
    litefs_store::fsutil::sync_filesystem(store.dbs_dir()).map_err(|source| {
        NodeError::Sync(litefs_store::Error::Io {
            op: "sync",
            path: store.dbs_dir().to_owned(),
            source,
        })
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Drops the halt locks given out that were neither renewed nor used in time.
async fn expire_halts(api: Arc<api::Api>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let api = api.clone();
        let _ = tokio::task::spawn_blocking(move || api.halts.expire()).await;
    }
}

/// [`MountApplier`] as replication's [`replica::Applier`].
#[derive(Debug)]
struct MountApplierAdapter(MountApplier);

impl replica::Applier for MountApplierAdapter {
    fn apply(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<litefs_store::Applied, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.apply(name, path)?)
    }

    fn apply_batch(
        &self,
        name: &str,
        received: Vec<replica::Received>,
    ) -> (Vec<litefs_store::Applied>, Option<replica::BoxError>) {
        let (done, err) = self.0.apply_batch(name, received);
        (done, err.map(|e| Box::new(e) as replica::BoxError))
    }
}

/// How long a stopping primary waits for its replicas' streams to take everything.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// How long a shutdown waits for the lease to be released (or for Consul to forget the node's
/// health check).
const SHUTDOWN_LEASE: Duration = Duration::from_secs(3);

/// How long a candidate's announcement counts (it renews it at every attempt, several times a
/// second while the lease is free).
const CANDIDATE_FRESH: Duration = Duration::from_secs(3);

/// How often the primary publishes the cluster's position.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a hand-off waits for the last transactions to be written before it gives up.
const HANDOFF_FLUSH: Duration = Duration::from_secs(2);
/// How long a hand-off waits for the replica's stream to send everything and the lease.
const HANDOFF_SEND: Duration = Duration::from_secs(8);

/// What the role loop works with.
#[derive(Debug)]
struct Roles {
    store: Arc<Store>,
    leaser: Arc<Leaser>,
    api: Arc<api::Api>,
    primary: watch::Sender<bool>,
    /// The primary's proxy URL, when it advertises one (for `proxy.forward`).
    primary_proxy: watch::Sender<Option<String>>,
    ready: Arc<watch::Sender<bool>>,
    applier: Arc<MountApplierAdapter>,
    cluster_id: Arc<Mutex<Option<String>>>,
    data_dir: PathBuf,
    opts: NodeOptions,
    /// `lease.promote` asked for the lease once already.
    promoted: AtomicBool,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The role loop's own state beside the machine.
#[derive(Default)]
struct Running {
    /// The current follow task.
    follow: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The hand-off being carried out.
    handoff: Option<api::HandoffRequest>,
}

impl Roles {
    fn local_cluster_id(&self) -> Option<String> {
        self.cluster_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_local_cluster_id(&self, id: &str) {
        if let Err(e) = write_cluster_id(&self.data_dir, id) {
            tracing::warn!(cluster = id, "could not write the cluster id file: {e}");
        }
        *self.cluster_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.to_owned());
    }

    /// The position of every local database (what its LTX files hold).
    fn local_positions(&self) -> BTreeMap<String, DbPosition> {
        self.store
            .dbs()
            .iter()
            .filter(|db| db.is_present())
            .map(|db| {
                let pos = db.published();
                (
                    db.name().to_owned(),
                    DbPosition {
                        txid: pos.txid.get(),
                        checksum: pos.post_apply_checksum.to_string(),
                    },
                )
            })
            .collect()
    }

    /// The databases where this node is behind the published position (name, local TXID,
    /// cluster TXID): a lower TXID, or the same TXID with another checksum (another history),
    /// or a higher TXID whose history does not pass through the published position (checked
    /// when an LTX file ends exactly there). A database missing here counts as TXID 0.
    fn behind(&self, cluster: &ClusterPosition) -> Vec<(String, u64, u64)> {
        let local = self.local_positions();
        cluster
            .dbs
            .iter()
            .filter_map(|(name, want)| {
                let have = local.get(name);
                let have_txid = have.map_or(0, |h| h.txid);
                let behind = match have {
                    None => want.txid > 0,
                    Some(h) if h.txid < want.txid => true,
                    Some(h) if h.txid == want.txid => h.checksum != want.checksum,
                    Some(_) => self.store.db(name).is_some_and(|db| {
                        checksum_after(db.ltx_dir(), want.txid)
                            .is_some_and(|c| c.to_string() != want.checksum)
                    }),
                };
                behind.then(|| (name.clone(), have_txid, want.txid))
            })
            .collect()
    }

    /// Runs the role machine until shutdown; releases the lease on the way out.
    async fn run(self: Arc<Self>, mut handoffs: mpsc::Receiver<api::HandoffRequest>) {
        let timing = Timing {
            reconnect_delay: self.opts.reconnect_delay,
            stale_timeout: self.opts.stale_timeout,
            demote_delay: self.opts.demote_delay,
        };
        // A lease left by a previous run of this node ends now rather than at its TTL.
        self.leaser.close().await;
        let mut machine = Machine::new(self.opts.candidate, timing, Instant::now().into_std());
        let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
        self.tracker.spawn(watch_disk(
            self.data_dir.clone(),
            events_tx.clone(),
            self.cancel.clone(),
        ));
        let mut running = Running::default();
        loop {
            let deadline = machine.deadline().map(Instant::from_std);
            let event = tokio::select! {
                biased;
                () = self.cancel.cancelled() => Event::Shutdown,
                Some(ev) = events.recv() => ev,
                Some(req) = handoffs.recv() => {
                    if matches!(machine.phase(), Phase::Primary(_)) && running.handoff.is_none() {
                        running.handoff = Some(req);
                        Event::HandoffRequested
                    } else {
                        let _ = req.reply.send(Err("this node is not the primary, or a hand-off is under way".into()));
                        continue;
                    }
                }
                () = sleep_until(deadline) => Event::Tick,
            };
            let shutdown = matches!(event, Event::Shutdown);
            let now = Instant::now().into_std();
            let actions = machine.on(now, event);
            // Checked by every write: a node stopped past it refuses writes as soon as it runs
            // again, whatever its timers have not done yet.
            self.store.set_write_deadline(machine.writable_until());
            let compete = machine.competing(now);
            for action in actions {
                self.perform(action, &events_tx, &mut running, shutdown, compete)
                    .await;
            }
            if shutdown {
                break;
            }
        }
        if let Some(req) = running.handoff.take() {
            let _ = req.reply.send(Err("the node is shutting down".into()));
        }
    }

    async fn perform(
        self: &Arc<Self>,
        action: Action,
        events: &mpsc::UnboundedSender<Event>,
        running: &mut Running,
        shutdown: bool,
        compete: bool,
    ) {
        match action {
            Action::LookUp(wait) => {
                let me = self.clone();
                let events = events.clone();
                self.tracker.spawn(async move {
                    tokio::select! {
                        () = me.cancel.cancelled() => {}
                        ev = me.look_up(wait, compete) => { let _ = events.send(ev); }
                    }
                });
            }
            Action::Acquire | Action::AcquireExisting(_) => {
                let me = self.clone();
                let events = events.clone();
                self.tracker.spawn(async move {
                    let acquire = async {
                        match &action {
                            Action::AcquireExisting(id) => me.leaser.acquire_existing(id).await,
                            _ => me.leaser.acquire().await,
                        }
                    };
                    // Dropped at shutdown: a lease taken meanwhile ends with the health check,
                    // which the node deregisters last.
                    let res = tokio::select! {
                        () = me.cancel.cancelled() => return,
                        res = acquire => res,
                    };
                    if me.cancel.is_cancelled() {
                        // The node stopped meanwhile: give back what was just taken.
                        if let Ok(Some(lease)) = &res {
                            let _ = tokio::time::timeout(SHUTDOWN_LEASE, me.leaser.release(lease))
                                .await;
                        }
                        return;
                    }
                    let ev = match res {
                        Ok(lease) => Event::Acquired(lease),
                        Err(e) => {
                            tracing::warn!(
                                "could not acquire the lease: {}",
                                litefs_store::error_chain(&e)
                            );
                            Event::AcquireFailed
                        }
                    };
                    let _ = events.send(ev);
                });
            }
            Action::KeepAlive(lease) => {
                let me = self.clone();
                let events = events.clone();
                self.tracker.spawn(async move {
                    let kept = tokio::select! {
                        () = me.cancel.cancelled() => return,
                        r = me.leaser.keep_alive(&lease) => r,
                    };
                    let ev = match kept {
                        Ok(from) => Event::KeptAlive {
                            lease: lease.id,
                            from,
                        },
                        Err(e) => {
                            tracing::warn!(
                                "could not keep the lease alive: {}",
                                litefs_store::error_chain(&e)
                            );
                            Event::KeepAliveFailed {
                                lease: lease.id,
                                expired: matches!(e, LeaseError::Expired(_)),
                            }
                        }
                    };
                    let _ = events.send(ev);
                });
            }
            Action::BecomePrimary(lease) => self.become_primary(lease),
            Action::Fence(on) => {
                self.store.set_readonly(on);
                if shutdown {
                } else if on {
                    tracing::warn!("writes refused until the lease is confirmed again");
                } else {
                    tracing::info!("the lease is confirmed: writes accepted again");
                }
            }
            Action::StepDown => {
                self.store.set_readonly(true);
                self.primary.send_replace(false);
                self.api.end_term();
                self.store
                    .status()
                    .set_primary_timestamp(litefs_store::status::NOT_READY);
                self.store.status().set_primary(None);
                tracing::info!("this node is no longer the primary");
            }
            Action::Release(lease) => {
                if shutdown {
                    // Writes are fenced: what was acknowledged goes to the replicas first (the
                    // LTX files of the last WAL commits, then the streams), before the lease
                    // does.
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.sync()).await;
                    self.api.drain_streams(SHUTDOWN_DRAIN).await;
                    // The connections write out what they took.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let leaser = self.leaser.clone();
                let release = async move {
                    match leaser.release(&lease).await {
                        Ok(()) => tracing::info!("lease released"),
                        Err(e) => tracing::warn!(
                            "could not release the lease: {}",
                            litefs_store::error_chain(&e)
                        ),
                    }
                };
                if shutdown {
                    if tokio::time::timeout(SHUTDOWN_LEASE, release).await.is_err() {
                        tracing::warn!("could not release the lease within {SHUTDOWN_LEASE:?}: it ends with its health check");
                    }
                } else {
                    self.tracker.spawn(release);
                }
            }
            Action::Follow(info) => {
                let token = self.cancel.child_token();
                let me = self.clone();
                let events = events.clone();
                let t = token.clone();
                let handle = self.tracker.spawn(async move {
                    let ev = me.follow(info, &t).await;
                    let _ = events.send(ev);
                });
                running.follow = Some((token, handle));
            }
            Action::StopFollowing => {
                if let Some((token, handle)) = running.follow.take() {
                    token.cancel();
                    let _ = handle.await;
                }
            }
            Action::SendHandoff(lease) => {
                let Some(req) = running.handoff.take() else {
                    let _ = events.send(Event::HandoffDone(false));
                    return;
                };
                let me = self.clone();
                let events = events.clone();
                self.tracker.spawn(async move {
                    let (done, res) = me.hand_off(req.peer, &lease).await;
                    match &res {
                        Err(e) if done => tracing::warn!(peer = %req.peer, "hand-off: {e}; stepping down anyway (the replica may hold the lease)"),
                        Err(e) => tracing::warn!(peer = %req.peer, "hand-off failed: {e}"),
                        Ok(()) => tracing::info!(peer = %req.peer, "handed the lease over"),
                    }
                    let _ = events.send(Event::HandoffDone(done));
                    let _ = req.reply.send(res);
                });
            }
        }
    }

    /// Looks up the lease, checks the cluster id, and (when nobody holds the lease) how this
    /// node compares with what the cluster committed.
    async fn look_up(&self, wait: Option<(u64, Duration)>, compete: bool) -> Event {
        match self.leaser.cluster_id().await {
            Ok(Some(theirs)) => match self.local_cluster_id() {
                None => {
                    tracing::info!(cluster = %theirs, "joining cluster");
                    self.set_local_cluster_id(&theirs);
                }
                Some(ours) if ours != theirs => {
                    tracing::error!(
                        ours = %ours,
                        theirs = %theirs,
                        "this node belongs to another cluster than the lease's: refusing to join (its data is kept)"
                    );
                    tokio::select! {
                        () = self.cancel.cancelled() => {}
                        () = tokio::time::sleep(role::MAX_RETRY_DELAY) => {}
                    }
                    return Event::LookupFailed;
                }
                Some(_) => {}
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    "could not read the cluster id: {}",
                    litefs_store::error_chain(&e)
                );
                return Event::LookupFailed;
            }
        }
        let lookup = match self.lookup_cancellable(wait).await {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::warn!(
                    "could not look up the lease: {}",
                    litefs_store::error_chain(&e)
                );
                return Event::LookupFailed;
            }
            None => return Event::LookupFailed,
        };
        // (With the static lease this node's own URL is empty: never its own.)
        let own = lookup
            .primary
            .as_ref()
            .is_some_and(|(info, _)| info.advertise_url == self.opts.own.advertise_url);
        let mut behind = Vec::new();
        let mut yield_to = None;
        if lookup.primary.is_none() && compete {
            match self.leaser.cluster_position().await {
                Ok(Some(pos)) => behind = self.behind(&pos),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        "could not read the cluster position: {}",
                        litefs_store::error_chain(&e)
                    );
                    return Event::LookupFailed;
                }
            }
            if behind.is_empty() {
                yield_to = self.fresher_candidate().await;
            }
        }
        Event::LookedUp {
            lookup,
            behind,
            own,
            yield_to,
        }
    }

    /// Announces this node as a candidate for the free lease, and returns the hostname of a
    /// candidate that announced itself within [`CANDIDATE_FRESH`] with more transactions (after
    /// a primary dies, the replicas all find the lease free at once: the freshest takes it). On
    /// Consul errors nobody is deferred to.
    async fn fresher_candidate(&self) -> Option<String> {
        let dbs = self.local_positions();
        let now = litefs_store::status::now_ms();
        let me = litefs_lease::Candidate {
            hostname: self.opts.own.hostname.clone(),
            advertise_url: self.opts.own.advertise_url.clone(),
            timestamp: now,
            dbs: dbs.clone(),
        };
        if let Err(e) = self.leaser.announce(&me).await {
            tracing::debug!(
                "could not announce this candidate: {}",
                litefs_store::error_chain(&e)
            );
        }
        let fresh = i64::try_from(CANDIDATE_FRESH.as_millis()).unwrap_or(i64::MAX);
        match self.leaser.candidates().await {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.advertise_url != me.advertise_url)
                .filter(|c| (now - c.timestamp).abs() <= fresh)
                .find(|c| c.fresher_than(&dbs))
                .map(|c| c.hostname),
            Err(e) => {
                tracing::debug!(
                    "could not list the candidates: {}",
                    litefs_store::error_chain(&e)
                );
                None
            }
        }
    }

    async fn lookup_cancellable(
        &self,
        wait: Option<(u64, Duration)>,
    ) -> Option<litefs_lease::Result<litefs_lease::Lookup>> {
        tokio::select! {
            () = self.cancel.cancelled() => None,
            r = self.leaser.lookup(wait) => Some(r),
        }
    }

    fn become_primary(self: &Arc<Self>, lease: Lease) {
        self.primary_proxy.send_replace(None);
        self.api.begin_term();
        self.store.status().set_primary(None);
        self.store.status().set_primary_timestamp(0);
        *self
            .api
            .primary_url
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        // Halt locks this node held as a replica end: its writes are its own now.
        for db in self.store.dbs() {
            if db.is_halted() {
                tracing::info!(db = %db.name(), "this node is the primary: its halt lock on the former primary ends");
                db.set_halt_forward(None);
            }
        }
        self.store.set_readonly(false);
        self.primary.send_replace(true);
        if !self.ready.send_replace(true) {
            tracing::info!("ready");
        }
        tracing::info!(lease = %lease.id, "this node is the primary");
        let me = self.clone();
        let term = self
            .api
            .primary_term
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.tracker
            .spawn(async move { me.primary_duties(lease, term).await });
    }

    /// While this node is the primary: set the cluster id if nobody did, and publish what the
    /// cluster committed every [`PUBLISH_INTERVAL`] (the positions of one interval earlier, which
    /// a replica that keeps up already has).
    async fn primary_duties(&self, lease: Lease, term: CancellationToken) {
        if matches!(&*self.leaser, Leaser::Static(_)) {
            return;
        }
        tokio::select! {
            () = term.cancelled() => return,
            () = self.ensure_cluster_id() => {}
        }
        let mut published: Option<BTreeMap<String, DbPosition>> = None;
        let mut previous = self.local_positions();
        // This node had at least what the cluster published when it took the lease.
        let mut next = previous.clone();
        loop {
            if published.as_ref() != Some(&next) && !self.store.is_readonly() {
                let pos = ClusterPosition {
                    node: self.store.node_id().to_string(),
                    hostname: self.opts.own.hostname.clone(),
                    timestamp: litefs_store::status::now_ms(),
                    dbs: next.clone(),
                };
                tokio::select! {
                    () = term.cancelled() => return,
                    r = self.leaser.publish_position(&lease, &pos) => match r {
                        Ok(()) => published = Some(next.clone()),
                        Err(e) => tracing::debug!("could not publish the position: {}", litefs_store::error_chain(&e)),
                    },
                }
            }
            tokio::select! {
                () = term.cancelled() => return,
                () = tokio::time::sleep(PUBLISH_INTERVAL) => {}
            }
            let now = self.local_positions();
            next = std::mem::replace(&mut previous, now);
        }
    }

    /// Sets the cluster id in Consul if no primary did yet, and keeps it locally.
    async fn ensure_cluster_id(&self) {
        match self.leaser.cluster_id().await {
            Ok(None) => {
                let id = self.local_cluster_id().unwrap_or_else(new_cluster_id);
                match self.leaser.set_cluster_id(&id).await {
                    Ok(()) => {
                        tracing::info!(cluster = %id, "cluster id set");
                        self.set_local_cluster_id(&id);
                    }
                    Err(e) => tracing::warn!(
                        "could not set the cluster id: {}",
                        litefs_store::error_chain(&e)
                    ),
                }
            }
            Ok(Some(id)) => {
                if self.local_cluster_id().is_none() {
                    self.set_local_cluster_id(&id);
                }
            }
            Err(e) => tracing::warn!(
                "could not read the cluster id: {}",
                litefs_store::error_chain(&e)
            ),
        }
    }

    /// Hands the lease to `peer`: waits until every committed transaction is in an LTX file,
    /// then has its stream send them and the lease. The flag says whether the lease may have
    /// gone (the request reached the stream): then this node must step down whatever the
    /// outcome, since the replica may take the lease over.
    async fn hand_off(
        &self,
        peer: litefs_ltx::NodeId,
        lease: &Lease,
    ) -> (bool, Result<(), String>) {
        let until = Instant::now() + HANDOFF_FLUSH;
        while self.store.dbs().iter().any(|db| db.published() != db.pos()) {
            if Instant::now() >= until {
                return (
                    false,
                    Err("the last transactions were not written in time".into()),
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Err(e) = self.leaser.keep_alive(lease).await {
            return (
                false,
                Err(format!(
                    "keep the lease alive: {}",
                    litefs_store::error_chain(&e)
                )),
            );
        }
        let Some(sent) = self.api.hand_off(peer, lease.id.clone()) else {
            return (
                false,
                Err(format!("node {peer} is not streaming from this node")),
            );
        };
        match tokio::time::timeout(HANDOFF_SEND, sent).await {
            Ok(Ok(())) => (true, Ok(())),
            _ => (
                true,
                Err(format!(
                    "the stream to {peer} did not confirm it sent the lease"
                )),
            ),
        }
    }

    /// Follows `primary` over one connection.
    async fn follow(self: &Arc<Self>, primary: PrimaryInfo, cancel: &CancellationToken) -> Event {
        self.store.set_readonly(true);
        // A transaction this node was in as the primary, left in a hot journal, cannot be
        // finished or rolled back by its writer now: it is rolled back here (off this task: it
        // may wait for that writer's locks).
        let applier = self.applier.clone();
        self.tracker.spawn_blocking(move || {
            let n = applier.0.roll_back_journals();
            if n > 0 {
                tracing::info!(
                    databases = n,
                    "rolled back what the former primary left in hot journals"
                );
            }
        });
        self.primary_proxy
            .send_replace(Some(primary.proxy_url.clone()).filter(|u| !u.is_empty()));
        self.store
            .status()
            .set_primary(Some(primary.hostname.clone()));
        *self
            .api
            .primary_url
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(primary.advertise_url.clone());
        let (caught_up_tx, caught_up) = watch::channel(false);
        let caught_up_tx = Arc::new(caught_up_tx);
        let ready = self.ready.clone();
        let on_event: replica::EventHandler = {
            let store = self.store.clone();
            let caught_up_tx = caught_up_tx.clone();
            Arc::new(move |event: FollowEvent<'_>| match event {
                FollowEvent::Ready => {
                    store
                        .status()
                        .set_primary_timestamp(litefs_store::status::now_ms());
                    caught_up_tx.send_replace(true);
                    if !ready.send_replace(true) {
                        tracing::info!("caught up with the primary: ready");
                    }
                }
                FollowEvent::Heartbeat { timestamp_ms } => {
                    if *caught_up_tx.borrow() {
                        store.status().set_primary_timestamp(timestamp_ms);
                    }
                }
                FollowEvent::Applied { name, .. } => {
                    if *caught_up_tx.borrow() {
                        if let Some(db) = store.db(name) {
                            store.status().set_primary_timestamp(db.timestamp());
                        }
                    }
                }
            })
        };
        if self.opts.promote && self.opts.candidate && !self.promoted.load(Ordering::Acquire) {
            let me = self.clone();
            let url = primary.advertise_url.clone();
            let cancel = cancel.clone();
            self.tracker.spawn(async move {
                let mut caught_up = caught_up;
                tokio::select! {
                    () = cancel.cancelled() => {}
                    r = async { caught_up.wait_for(|c| *c).await.is_ok() } => {
                        if r && !me.promoted.swap(true, Ordering::AcqRel) {
                            tracing::info!(primary = %url, "lease.promote: asking the primary for the lease");
                            tokio::select! {
                                () = me.cancel.cancelled() => {}
                                r = api::request_handoff(&url, me.store.node_id(), me.opts.auth_token.as_ref()) => {
                                    if let Err(e) = r {
                                        tracing::warn!("lease.promote: {e}");
                                    }
                                }
                            }
                        }
                    }
                }
            });
        }
        let opts = FollowOptions {
            url: primary.advertise_url.clone(),
            node_id: self.store.node_id(),
            filter: self.opts.databases.clone(),
            cluster_id: self.local_cluster_id(),
            auth_token: self.opts.auth_token.clone(),
        };
        let result = replica::follow(
            self.store.clone(),
            &opts,
            self.applier.clone(),
            on_event,
            cancel,
        )
        .await;
        self.store
            .status()
            .set_primary_timestamp(litefs_store::status::NOT_READY);
        match result {
            Ok(Ended::Cancelled) => Event::FollowEnded {
                handoff: None,
                failed: false,
            },
            Ok(Ended::Closed) => {
                tracing::info!(primary = %opts.url, "the primary closed the stream");
                Event::FollowEnded {
                    handoff: None,
                    failed: false,
                }
            }
            Ok(Ended::Handoff(id)) => {
                tracing::info!(primary = %opts.url, "the primary handed its lease to this node");
                Event::FollowEnded {
                    handoff: Some(id),
                    failed: false,
                }
            }
            Err(e) => {
                tracing::warn!(primary = %opts.url, "replication stream failed: {}", litefs_store::error_chain(&e));
                Event::FollowEnded {
                    handoff: None,
                    failed: true,
                }
            }
        }
    }
}

/// The database checksum after transaction `txid`, from the trailer of the LTX file in `dir`
/// that ends exactly there, if there is one.
fn checksum_after(dir: &Path, txid: u64) -> Option<litefs_ltx::Checksum> {
    use std::io::{Read as _, Seek as _};
    let suffix = format!("-{txid:016x}.ltx");
    let path = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix) && n.len() == 16 + suffix.len())
        })?;
    let mut f = std::fs::File::open(path).ok()?;
    // The trailer: the post-apply checksum, then the file checksum (8 bytes each, big-endian).
    f.seek(std::io::SeekFrom::End(-16)).ok()?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).ok()?;
    Some(litefs_ltx::Checksum::new(u64::from_be_bytes(b)))
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Makes what the replica applied durable every [`apply::SYNC_INTERVAL`], and once more at the
/// end.
async fn sync_loop(applier: MountApplier, cancel: CancellationToken) {
    loop {
        let stop = tokio::select! {
            () = cancel.cancelled() => true,
            () = tokio::time::sleep(apply::SYNC_INTERVAL) => false,
        };
        let a = applier.clone();
        match tokio::task::spawn_blocking(move || a.sync_if_needed()).await {
            Ok(Err(e)) => tracing::warn!(
                "failed to sync applied transactions: {}",
                litefs_store::error_chain(&e)
            ),
            Err(e) => tracing::warn!("sync task failed: {e}"),
            Ok(Ok(())) => {}
        }
        if stop {
            return;
        }
    }
}

/// How often the data directory's file system is looked at.
const DISK_WATCH_EVERY: Duration = Duration::from_millis(500);

/// Watches the data directory's file system (a small file written and removed); once it has
/// turned read-only under the node (the kernel does so after a disk error) or fails writes
/// with an I/O error, tells the role loop, which
/// gives the lease up and stops competing for it. A disk that failed stays so until it is
/// repaired and the node restarted.
async fn watch_disk(dir: PathBuf, events: mpsc::UnboundedSender<Event>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(DISK_WATCH_EVERY) => {}
        }
        let d = dir.clone();
        let probe = tokio::task::spawn_blocking(move || litefs_store::fsutil::probe_writable(&d));
        let failed = match probe.await {
            // A full disk is not a failure: writes resume once space is freed.
            Ok(Ok(())) | Err(_) => None,
            Ok(Err(e)) if matches!(e.raw_os_error(), Some(libc::EROFS | libc::EIO)) => {
                Some(e.to_string())
            }
            Ok(Err(_)) => None,
        };
        if let Some(why) = failed {
            tracing::error!(
                dir = %dir.display(),
                "the data directory failed ({why}): giving the lease up and no longer \
                 competing for it; repair the disk and restart the node"
            );
            let _ = events.send(Event::DiskFailed);
            return;
        }
    }
}

/// Deletes LTX files older than `retention` every `interval`.
async fn retention_loop(
    store: Arc<Store>,
    retention: Duration,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let store = store.clone();
        let removed = tokio::task::spawn_blocking(move || store.enforce_retention(retention)).await;
        if let Ok(n) = removed {
            if n > 0 {
                tracing::debug!(removed = n, "retention");
            }
        }
    }
}
