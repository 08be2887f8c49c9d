//! `litefs-rs mount`: open the store, mount it, serve until SIGINT or SIGTERM, then shut down
//! cleanly (stop the background work, make every LTX file durable, unmount).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use litefs_config::{Config, LeaseType};
use litefs_fuse::MountOptions;
use litefs_store::{Store, StoreOptions};

/// Flags of `mount` beyond the configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Do not unmount a stale mount at `fuse.dir` first.
    pub skip_unmount: bool,
    /// Log every FUSE operation.
    pub fuse_debug: bool,
}

/// Relative directories in the configuration are relative to the working directory, as in
/// LiteFS.
fn resolve(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("resolve {}", dir.display()))
}

/// Runs the mount until a shutdown signal. Returns the process exit code.
pub fn run(config: Config, flags: Flags) -> Result<i32> {
    let lease = config.lease_type()?;
    if lease != LeaseType::Static || !config.lease.candidate {
        bail!(
            "this build runs a single primary node only (lease.type: static, lease.candidate: \
             true); replication and the Consul lease are not available yet"
        );
    }
    let signals = block_shutdown_signals()?;
    let fuse_dir = resolve(&config.fuse.dir)?;
    let data_dir = resolve(&config.data.dir)?;

    let store = Arc::new(
        Store::open(StoreOptions {
            data_dir: data_dir.clone(),
            compress: config.data.compress,
            strict_verify: config.strict_verify,
            adopt: Vec::new(),
        })
        .with_context(|| format!("open data directory {}", data_dir.display()))?,
    );
    tracing::info!(data = %data_dir.display(), node = %store.node_id(), "store opened");
    // The only node: the primary, ready at once.
    store.status().set_primary_timestamp(0);

    if !flags.skip_unmount {
        litefs_fuse::unmount_stale(&fuse_dir)
            .with_context(|| format!("unmount stale mount at {}", fuse_dir.display()))?;
    }
    let mount = litefs_fuse::mount(
        store.clone(),
        &MountOptions {
            dir: fuse_dir.clone(),
            allow_other: config.fuse.allow_other,
            debug: config.fuse.debug || flags.fuse_debug,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
        },
    )
    .with_context(|| format!("mount {}", fuse_dir.display()))?;
    tracing::info!(dir = %mount.dir().display(), "mounted; this node is the primary");

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let retention = config.data.retention.as_std();
    let interval = config.data.retention_monitor_interval.as_std();
    let retention_store = store.clone();
    let retention_thread = (!interval.is_zero()).then(|| {
        thread::Builder::new()
            .name("retention".into())
            .spawn(move || retention_loop(&retention_store, retention, interval, &stop_rx))
    });
    let retention_thread = retention_thread.transpose().context("start retention")?;

    let signal = wait_for_signal(&signals)?;
    tracing::info!(signal, "shutting down");
    drop(stop_tx);
    if let Some(t) = retention_thread {
        let _ = t.join();
    }
    if let Err(e) = mount.unmount() {
        // Something still has files open in the mount: detach it now; it goes away when they
        // close. Everything written is already in the store.
        tracing::warn!(dir = %fuse_dir.display(), "unmount failed ({e}); detaching the mount lazily");
        litefs_fuse::unmount_stale(&fuse_dir)
            .with_context(|| format!("unmount {}", fuse_dir.display()))?;
    }
    store.sync().context("sync ltx files")?;
    tracing::info!("stopped");
    Ok(0)
}

/// `litefs-rs adopt`: with the node stopped, records the named databases' files as they are as
/// new transactions (after they were changed while the node was down). Returns the exit code.
pub fn adopt(config: Config, names: &[String]) -> Result<i32> {
    let fuse_dir = resolve(&config.fuse.dir)?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| Path::new(m) == fuse_dir)
        && std::fs::read_dir(&fuse_dir).is_ok()
    {
        bail!(
            "{} is mounted and serving: stop the node before adopting databases",
            fuse_dir.display()
        );
    }
    let data_dir = resolve(&config.data.dir)?;
    let store = Store::open(StoreOptions {
        data_dir: data_dir.clone(),
        compress: config.data.compress,
        strict_verify: config.strict_verify,
        adopt: names.to_vec(),
    })
    .with_context(|| format!("open data directory {}", data_dir.display()))?;
    let mut code = 0;
    for name in names {
        match store.db(name) {
            Some(db) => match db.unavailable() {
                None => println!("{name}: {}", db.pos()),
                Some(reason) => {
                    println!("{name}: not served: {reason}");
                    code = 1;
                }
            },
            None => {
                println!("{name}: no such database in {}", data_dir.display());
                code = 1;
            }
        }
    }
    store.sync().context("sync ltx files")?;
    Ok(code)
}

fn retention_loop(
    store: &Store,
    retention: Duration,
    interval: Duration,
    stop: &mpsc::Receiver<()>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        let n = store.enforce_retention(retention);
        if n > 0 {
            tracing::debug!(removed = n, "retention removed ltx files");
        }
    }
}

/// SIGINT and SIGTERM, blocked in every thread so that only `wait_for_signal` receives them.
struct SignalSet(libc::sigset_t);

fn block_shutdown_signals() -> Result<SignalSet> {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only reads it.
    // Called before any thread starts, so every thread inherits the mask.
    #[allow(unsafe_code)]
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("block signals: {}", std::io::Error::from_raw_os_error(rc));
        }
        Ok(SignalSet(set))
    }
}

fn wait_for_signal(set: &SignalSet) -> Result<&'static str> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_shutdown_signals and `sig` is a valid out pointer.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sigwait(&set.0, &mut sig) };
    if rc != 0 {
        bail!(
            "wait for signals: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}
