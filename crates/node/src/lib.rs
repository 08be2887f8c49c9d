//! A litefs-rs node: the store, its FUSE mount, the internal HTTP API, and replication in the
//! node's role (with the static lease: the candidate is the primary, every other node follows
//! it). [`run`] serves until the shutdown token fires, then stops every task it started,
//! unmounts and makes every LTX file durable.

mod api;
mod apply;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use litefs_fuse::MountOptions;
use litefs_replication::replica::{self, Ended, FollowEvent, FollowOptions};
use litefs_store::{Store, StoreOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use apply::{ApplyError, MountApplier};

/// This node's role.
#[derive(Clone, Debug)]
pub enum Role {
    /// The primary: takes writes and streams them to replicas.
    Primary,
    /// A replica of the primary at `url` (its advertise URL), called `hostname`.
    Replica {
        /// The primary's advertise URL.
        url: String,
        /// The primary's hostname (`.primary`).
        hostname: String,
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
    /// The role.
    pub role: Role,
    /// `lease.candidate`.
    pub candidate: bool,
    /// `lease.databases`: what a replica follows (all when empty).
    pub databases: Vec<String>,
    /// `lease.reconnect-delay`: the first wait before reconnecting to the primary.
    pub reconnect_delay: Duration,
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
}

/// The longest wait between attempts to reach the primary.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// What a running node reports.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// True once the node has caught up with the primary (at once on the primary).
    pub ready: watch::Receiver<bool>,
}

/// `:port` means every interface.
fn bind_addr(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    }
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
        })
        .map_err(|source| NodeError::Store {
            path: opts.data_dir.clone(),
            source,
        })?,
    );
    tracing::info!(data = %opts.data_dir.display(), node = %store.node_id(), "store opened");
    let is_primary = matches!(opts.role, Role::Primary);
    store.set_readonly(!is_primary);
    match &opts.role {
        Role::Primary => store.status().set_primary_timestamp(0),
        Role::Replica { hostname, .. } => {
            store.status().set_primary(Some(hostname.clone()));
            store
                .status()
                .set_primary_timestamp(litefs_store::status::NOT_READY);
        }
    }
    let (changes_tx, changes_rx) = watch::channel(0u64);
    let changes_tx = Arc::new(changes_tx);
    {
        let changes_tx = changes_tx.clone();
        store.set_observer(Arc::new(move |_name: &str| {
            changes_tx.send_modify(|g| *g = g.wrapping_add(1));
        }));
    }

    if !opts.skip_unmount {
        litefs_fuse::unmount_stale(&opts.fuse_dir).map_err(|source| NodeError::Mount {
            path: opts.fuse_dir.clone(),
            source,
        })?;
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
        },
    )
    .map_err(|source| NodeError::Mount {
        path: opts.fuse_dir.clone(),
        source,
    })?;
    let mount_dir = mount.dir().to_owned();
    tracing::info!(dir = %mount_dir.display(), primary = is_primary, "mounted");

    let tracker = TaskTracker::new();
    let cancel = shutdown.child_token();
    let (primary_tx, primary_rx) = watch::channel(is_primary);
    let (ready_tx, ready_rx) = watch::channel(is_primary);

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
    let api = Arc::new(api::Api {
        store: store.clone(),
        primary: primary_rx,
        changes: changes_rx,
        compress: opts.compress,
        candidate: opts.candidate,
        mount_dir: mount_dir.display().to_string(),
        invalidator: mount.invalidator(),
        file_cache: Arc::default(),
        streams: Mutex::new(HashSet::new()),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
    });
    tracker.spawn(api.serve(listener));

    if let Role::Replica { url, .. } = &opts.role {
        let mount_applier =
            MountApplier::new(store.clone(), mount_dir.clone(), mount.invalidator());
        tracker.spawn(sync_loop(mount_applier.clone(), cancel.clone()));
        let applier = Arc::new(MountApplierAdapter(mount_applier));
        tracker.spawn(follow_loop(
            store.clone(),
            FollowOptions {
                url: url.clone(),
                node_id: store.node_id(),
                filter: opts.databases.clone(),
            },
            applier,
            ready_tx,
            opts.reconnect_delay,
            cancel.clone(),
        ));
    }

    if !opts.retention_interval.is_zero() {
        tracker.spawn(retention_loop(
            store.clone(),
            opts.retention,
            opts.retention_interval,
            cancel.clone(),
        ));
    }
    tracker.close();
    if let Some(started) = started {
        let _ = started.send(NodeStatus { ready: ready_rx });
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    cancel.cancel();
    tracker.wait().await;
    drop(primary_tx);
    if let Err(e) = mount.unmount() {
        // Something still has files open in the mount: detach it now; it goes away when they
        // close. Everything written is already in the store.
        tracing::warn!(dir = %mount_dir.display(), "unmount failed ({e}); detaching the mount lazily");
        if let Err(e) = litefs_fuse::unmount_stale(&mount_dir) {
            tracing::warn!(dir = %mount_dir.display(), "lazy unmount failed: {e}");
        }
    }
    store.sync().map_err(NodeError::Sync)?;
    if !is_primary {
        // What the replica applied since its last sync.
        litefs_store::fsutil::sync_filesystem(store.dbs_dir()).map_err(|source| {
            NodeError::Sync(litefs_store::Error::Io {
                op: "sync",
                path: store.dbs_dir().to_owned(),
                source,
            })
        })?;
    }
    tracing::info!("stopped");
    Ok(())
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

/// Follows the primary until `cancel`, reconnecting after every disconnect with a growing
/// delay (reset by a successful connection).
async fn follow_loop(
    store: Arc<Store>,
    opts: FollowOptions,
    applier: Arc<dyn replica::Applier>,
    ready: watch::Sender<bool>,
    first_delay: Duration,
    cancel: CancellationToken,
) {
    let first_delay = first_delay.max(Duration::from_millis(100));
    let ready = Arc::new(ready);
    let on_event: replica::EventHandler = {
        let store = store.clone();
        let ready = ready.clone();
        Arc::new(move |event: FollowEvent<'_>| match event {
            FollowEvent::Ready => {
                store
                    .status()
                    .set_primary_timestamp(litefs_store::status::now_ms());
                if !ready.send_replace(true) {
                    tracing::info!("caught up with the primary: ready");
                }
            }
            FollowEvent::Heartbeat { timestamp_ms } => {
                if *ready.borrow() {
                    store.status().set_primary_timestamp(timestamp_ms);
                }
            }
            FollowEvent::Applied { name, .. } => {
                if *ready.borrow() {
                    if let Some(db) = store.db(name) {
                        store.status().set_primary_timestamp(db.timestamp());
                    }
                }
            }
        })
    };
    let mut delay = first_delay;
    loop {
        let result = replica::follow(
            store.clone(),
            &opts,
            applier.clone(),
            on_event.clone(),
            &cancel,
        )
        .await;
        match result {
            Ok(Ended::Cancelled) => return,
            Ok(Ended::Closed) => {
                tracing::info!(primary = %opts.url, "the primary closed the stream");
                delay = first_delay;
            }
            Ok(Ended::Handoff(_)) => {
                tracing::warn!(
                    "the primary handed off its lease, which the static lease cannot take"
                );
                delay = first_delay;
            }
            Err(e) => {
                tracing::warn!(primary = %opts.url, retry_in = ?delay, "replication stream failed: {}", litefs_store::error_chain(&e));
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
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
