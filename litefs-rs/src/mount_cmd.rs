//! `litefs-rs mount`: run the node (store, mount, internal API, replication) until SIGINT or
//! SIGTERM, then shut down cleanly (stop every task, unmount, make every LTX file durable).
//!
//! `exit-on-error`: when the node fails (it cannot start, a part of it stops at run time such
//! as the proxy failing to bind, or an exec command cannot start or fails before the
//! application), `true` stops the application as a SIGTERM would, shuts the node down cleanly
//! and exits with code 1 (a failed command's own code); `false` logs the failure, closes the
//! proxy and goes on serving what still works until SIGINT or SIGTERM, then exits with 0.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use litefs_config::{Config, LeaseType};
use litefs_lease::PrimaryInfo;
use litefs_node::{LeaseKind, NodeOptions};
use litefs_store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

/// Flags of `mount` beyond the configuration file.
#[derive(Debug, Clone)]
pub struct Flags {
    /// Do not unmount a stale mount at `fuse.dir` first.
    pub skip_unmount: bool,
    /// Log every FUSE operation.
    pub fuse_debug: bool,
    /// `-- CMD ARGS`: the application to run, instead of the configuration's `exec`.
    pub exec: Vec<String>,
}

/// Relative directories in the configuration are relative to the working directory, as in
/// LiteFS.
fn resolve(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("resolve {}", dir.display()))
}

/// The machine's host name (`HOSTNAME`, else the kernel's), as LiteFS defaults
/// `lease.hostname`.
fn machine_hostname() -> Result<String> {
    if let Ok(h) = std::env::var("HOSTNAME") {
        if !h.trim().is_empty() {
            return Ok(h.trim().to_owned());
        }
    }
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("read the host name (/proc/sys/kernel/hostname); set lease.hostname")?;
    Ok(h.trim().to_owned())
}

/// The port of `http.addr` (`:20202`, `0.0.0.0:20202`).
fn http_port(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("http.addr {addr:?} has no port"))
}

/// The URL of this node's proxy as other nodes reach it: the advertise URL's host with the
/// proxy's port (empty without a proxy).
fn proxy_url(advertise_url: &str, proxy: &litefs_config::ProxyConfig) -> Result<String> {
    if proxy.target.is_empty() || proxy.addr.is_empty() {
        return Ok(String::new());
    }
    let rest = advertise_url
        .split_once("://")
        .map_or(advertise_url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    Ok(format!("http://{host}:{}", http_port(&proxy.addr)?))
}

/// The proxy's settings, when `proxy.target` is set (then `proxy.addr` and `proxy.db` are
/// required, as in LiteFS). `starts_app`: litefs-rs runs the application (`exec`), so until it
/// first accepts a connection it is starting, and requests wait for it.
fn proxy_options(
    config: &Config,
    starts_app: bool,
) -> Result<Option<(String, litefs_proxy::ProxyOptions)>> {
    let p = &config.proxy;
    if p.target.is_empty() {
        return Ok(None);
    }
    if p.addr.is_empty() {
        bail!("proxy.addr is required when proxy.target is set");
    }
    if p.db.is_empty() {
        bail!("proxy.db is required when proxy.target is set (the database whose transaction id the proxy tracks)");
    }
    check_db_name("proxy.db", &p.db)?;
    Ok(Some((
        p.addr.clone(),
        litefs_proxy::ProxyOptions {
            target: p.target.clone(),
            db: p.db.clone(),
            max_lag: p.max_lag.as_std(),
            passthrough: p.passthrough.clone(),
            always_forward: p.always_forward.clone(),
            primary_redirect_timeout: p.primary_redirect_timeout.as_std(),
            debug: p.debug,
            forward: p.forward,
            target_start_wait: if starts_app {
                litefs_proxy::TARGET_START_WAIT
            } else {
                litefs_proxy::TARGET_DOWN_WAIT
            },
            target_down_wait: litefs_proxy::TARGET_DOWN_WAIT,
        },
    )))
}

/// Refuses a database name of the configuration (`key`) that cannot name a database.
fn check_db_name(key: &str, name: &str) -> Result<()> {
    litefs_store::validate_name(name).map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

/// Runs the node until a shutdown signal. Returns the process exit code.
pub fn run(config: Config, flags: Flags) -> Result<i32> {
    for (i, db) in config.lease.databases.iter().enumerate() {
        check_db_name(&format!("lease.databases[{i}]"), db)?;
    }
    let lease_type = config.lease_type()?;
    let hostname = if config.lease.hostname.is_empty() {
        machine_hostname()?
    } else {
        config.lease.hostname.clone()
    };
    let (lease, own) = match lease_type {
        LeaseType::Static => {
            if !config.lease.candidate && config.lease.advertise_url.is_empty() {
                bail!(
                    "lease.advertise-url must be the primary's URL on a replica (lease.candidate: \
                     false with the static lease)"
                );
            }
            // With the static lease, hostname and URL are the primary's on every node.
            let primary = PrimaryInfo {
                hostname: if config.lease.hostname.is_empty() {
                    config.lease.advertise_url.clone()
                } else {
                    config.lease.hostname.clone()
                },
                advertise_url: config.lease.advertise_url.clone(),
                proxy_url: String::new(),
            };
            let own = PrimaryInfo {
                hostname: String::new(),
                advertise_url: String::new(),
                proxy_url: String::new(),
            };
            (LeaseKind::Static { primary }, own)
        }
        LeaseType::Consul => {
            let advertise_url = if config.lease.advertise_url.is_empty() {
                format!("http://{hostname}:{}", http_port(&config.http.addr)?)
            } else {
                config.lease.advertise_url.clone()
            };
            (
                LeaseKind::Consul {
                    url: config.lease.consul.url.clone(),
                    key: config.lease.consul.key.clone(),
                    ttl: config.lease.consul.ttl.as_std(),
                    lock_delay: config.lease.consul.lock_delay.as_std(),
                },
                PrimaryInfo {
                    proxy_url: proxy_url(&advertise_url, &config.proxy)?,
                    hostname,
                    advertise_url,
                },
            )
        }
    };
    let mut commands = Vec::new();
    if !flags.exec.is_empty() {
        commands.push(crate::exec::Exec {
            args: flags.exec.clone(),
            if_candidate: false,
        });
    } else {
        for c in &config.exec {
            let args = c
                .args()
                .with_context(|| format!("exec command {:?}", c.cmd))?;
            if !args.is_empty() {
                commands.push(crate::exec::Exec {
                    args,
                    if_candidate: c.if_candidate,
                });
            }
        }
    }
    // litefs-rs starts the application itself when the last command runs on this node.
    let starts_app = commands
        .last()
        .is_some_and(|c| !c.if_candidate || config.lease.candidate);
    let signals = block_shutdown_signals()?;
    // From the main thread: the guard learns of the process's end when this thread ends.
    let mounts = [
        resolve(&config.fuse.dir)?,
        resolve(&config.data.dir)?.join("locks"),
    ];
    let _guard = crate::guard::spawn(&mounts).context("start the FUSE guard process")?;
    let opts = NodeOptions {
        data_dir: resolve(&config.data.dir)?,
        compress: config.data.compress,
        strict_verify: config.strict_verify,
        retention: config.data.retention.as_std(),
        retention_interval: config.data.retention_monitor_interval.as_std(),
        retention_max_size: config.data.retention_max_size.bytes(),
        fuse_dir: resolve(&config.fuse.dir)?,
        allow_other: config.fuse.allow_other,
        fuse_debug: config.fuse.debug || flags.fuse_debug,
        skip_unmount: flags.skip_unmount,
        http_addr: config.http.addr.clone(),
        auth_token: litefs_node::AuthToken::new(&config.http.auth_token),
        lease,
        own,
        candidate: config.lease.candidate,
        promote: config.lease.promote,
        databases: config.lease.databases.clone(),
        reconnect_delay: config.lease.reconnect_delay.as_std(),
        demote_delay: config.lease.demote_delay.as_std(),
        stale_timeout: Some(config.lease.stale_timeout.as_std()).filter(|d| !d.is_zero()),
        proxy: proxy_options(&config, starts_app)?,
        skip_sync: config.skip_sync,
    };
    let candidate = config.lease.candidate;
    let skip_sync = config.skip_sync;
    let exit_on_error = config.exit_on_error;
    let (signal_tx, mut signal_rx) = tokio::sync::mpsc::unbounded_channel();
    // With exit-on-error, a failure stops the application as a SIGTERM would.
    let stop_app = signal_tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match wait_for_signal(&signals) {
                Ok(sig) => {
                    if signal_tx.send(sig).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    return;
                }
            }
        })
        .context("start the signal thread")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("litefs-rs")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut node = tokio::spawn(litefs_node::run(opts, shutdown.clone(), Some(started_tx)));
        let Ok(mut status) = started_rx.await else {
            // The node stopped before it served: it could not start.
            let error = match node.await {
                Ok(Ok(())) => return Ok(0),
                Ok(Err(e)) => anyhow::Error::new(e),
                Err(e) => anyhow::Error::new(e).context("the node task failed"),
            };
            if exit_on_error {
                return Err(error);
            }
            tracing::error!("{error:#}");
            tracing::warn!(
                "exit-on-error is false: staying up for debugging, with nothing mounted or \
                 served, until SIGINT or SIGTERM"
            );
            if let Some(sig) = signal_rx.recv().await {
                tracing::info!(signal = signal_name(sig), "shutting down");
            }
            return Ok(0);
        };
        let proxy = status.clone();
        // Set when a run-time failure of the node stops it (exit-on-error).
        let mut stopping = false;
        let mut failure_seen = false;
        let outcome = {
            let supervised = crate::exec::supervise(
                commands,
                candidate,
                skip_sync,
                status.ready.clone(),
                &mut signal_rx,
            );
            tokio::pin!(supervised);
            loop {
                tokio::select! {
                    outcome = &mut supervised => break outcome,
                    failure = status.failed(), if !failure_seen => {
                        failure_seen = true;
                        let failure = anyhow::Error::new(failure);
                        if exit_on_error {
                            tracing::error!(
                                "the node failed: {failure:#}; shutting down (exit-on-error: true)"
                            );
                            stopping = true;
                            // The application (if any) is stopped first, as for a SIGTERM.
                            let _ = stop_app.send(libc::SIGTERM);
                        } else {
                            tracing::error!("the node failed: {failure:#}");
                            stay_up(&proxy);
                        }
                    }
                    r = &mut node => {
                        r.context("the node task failed")??;
                        return Ok(0);
                    }
                }
            }
        };
        let code = match outcome {
            _ if stopping => 1,
            crate::exec::Outcome::Signal(sig) => {
                tracing::info!(signal = signal_name(sig), "shutting down");
                0
            }
            crate::exec::Outcome::Exited(code) => code,
            crate::exec::Outcome::Failed { code, error } if exit_on_error => {
                tracing::error!("{error:#}; shutting down (exit-on-error: true)");
                code
            }
            crate::exec::Outcome::Failed { error, .. } => {
                tracing::error!("{error:#}");
                stay_up(&proxy);
                tokio::select! {
                    Some(sig) = signal_rx.recv() => {
                        tracing::info!(signal = signal_name(sig), "shutting down");
                    }
                    r = &mut node => {
                        r.context("the node task failed")??;
                        return Ok(0);
                    }
                }
                0
            }
        };
        shutdown.cancel();
        node.await.context("the node task failed")??;
        Ok(code)
    })
}

/// With `exit-on-error: false`, after a failure: the proxy closes (so that no request reaches
/// a broken node through it), everything else keeps serving until a signal.
fn stay_up(status: &litefs_node::NodeStatus) {
    status.close_proxy();
    tracing::warn!(
        "exit-on-error is false: the proxy is closed; the node keeps running for debugging \
         (mount, internal API, replication) until SIGINT or SIGTERM"
    );
}

fn signal_name(sig: libc::c_int) -> &'static str {
    if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

/// `litefs-rs adopt`: with the node stopped, records the named databases' files as they are as
/// new transactions (after they were changed while the node was down). Returns the exit code.
pub fn adopt(config: Config, names: &[String]) -> Result<i32> {
    for name in names {
        check_db_name("adopt", name)?;
    }
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
        retention_max_size: config.data.retention_max_size.bytes(),
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

/// `litefs-rs forget-position`: deletes the cluster position the primary published in Consul,
/// after printing it.
pub fn forget_position(config: &Config) -> Result<()> {
    if config.lease_type()? != LeaseType::Consul {
        bail!("forget-position is for the Consul lease (lease.type: consul)");
    }
    let leaser = litefs_lease::ConsulLeaser::new(litefs_lease::ConsulOptions {
        url: config.lease.consul.url.clone(),
        key: config.lease.consul.key.clone(),
        ttl: config.lease.consul.ttl.as_std(),
        lock_delay: config.lease.consul.lock_delay.as_std(),
        // Not used: this command never takes the lease.
        info: PrimaryInfo {
            hostname: "forget-position".into(),
            advertise_url: "http://forget-position".into(),
            proxy_url: String::new(),
        },
    })?;
    let key = leaser.key().to_owned();
    let leaser = litefs_lease::Leaser::Consul(Box::new(leaser));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        match leaser.cluster_position().await? {
            None => println!("no position is published at {key}/position"),
            Some(pos) => {
                println!(
                    "forgetting the position {} (node {}) published at {key}/position:",
                    pos.hostname, pos.node
                );
                for (db, p) in &pos.dbs {
                    println!("  {db}: TXID {} (checksum {})", p.txid, p.checksum);
                }
                leaser.forget_position().await?;
                println!("done: any candidate may take the lease now");
            }
        }
        Ok::<_, anyhow::Error>(())
    })
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

fn wait_for_signal(set: &SignalSet) -> Result<libc::c_int> {
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
    Ok(sig)
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn database_names_in_the_configuration_are_checked() {
        let mut config = Config::default();
        config.proxy.target = "127.0.0.1:8081".into();
        config.proxy.addr = ":8080".into();
        for good in ["app.db", "a/b"] {
            config.proxy.db = good.into();
            assert!(proxy_options(&config, false).is_ok(), "{good}");
        }
        for bad in [
            "..".to_owned(),
            "a\0b".into(),
            "a".repeat(10_000),
            "../x.db".into(),
        ] {
            config.proxy.db.clone_from(&bad);
            let e = proxy_options(&config, false).unwrap_err().to_string();
            assert!(e.starts_with("proxy.db: invalid database name"), "{e:.200}");
            assert!(e.len() < 300, "{e:.300}");
            let e = adopt(Config::default(), std::slice::from_ref(&bad))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("adopt: invalid database name"), "{e:.200}");
            let e = check_db_name("lease.databases[0]", &bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("lease.databases[0]: invalid database name"),
                "{e:.200}"
            );
        }
    }
}
