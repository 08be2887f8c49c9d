//! The databases under `<data.dir>/dbs/<name>/` (`database`, `journal`, `wal`, `shm`, `ltx/`):
//! SQLite's file operations pass through here, every committed transaction becomes one LTX
//! file, positions and rolling checksums are kept page by page, and each database is recovered
//! on open. The store is synchronous and never touches the network; the FUSE adapter calls it
//! from its request threads.

mod db;
mod error;
pub mod fsutil;
pub mod journal;
mod recover;
mod sums;
pub mod wal;

use std::collections::BTreeMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, SystemTime};

pub use db::{Db, FileKind, JournalMode};
use db::{DbOptions, Wake};
pub use error::{chain as error_chain, Error, Result};
use litefs_ltx::NodeId;

/// Options of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The data directory (`data.dir`).
    pub data_dir: PathBuf,
    /// LZ4-compress LTX files (`data.compress`).
    pub compress: bool,
    /// Recompute the full checksum after every commit (`strict-verify`).
    pub strict_verify: bool,
    /// Databases whose file, if it differs from what their LTX files say (it was changed while
    /// the node was down), is recorded as it is as a new transaction instead of being repaired
    /// or refused (`litefs-rs adopt`).
    pub adopt: Vec<String>,
}

type DbMap = Arc<RwLock<BTreeMap<String, Arc<Db>>>>;

/// All databases of one node.
#[derive(Debug)]
pub struct Store {
    dbs_dir: PathBuf,
    files_dir: PathBuf,
    opts: Arc<DbOptions>,
    dbs: DbMap,
    /// Writes deferred WAL-mode LTX files; stopped when the store is dropped.
    writer: Option<LtxWriter>,
}

/// The thread that writes WAL-mode LTX files off the commit path.
#[derive(Debug)]
struct LtxWriter {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

/// How long the LTX writer sleeps when nothing wakes it (it retries failed writes then).
const LTX_WRITER_IDLE: Duration = Duration::from_secs(1);

impl LtxWriter {
    fn spawn(dbs: DbMap, wake: Arc<Wake>) -> io::Result<LtxWriter> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name("ltx-writer".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    wake.wait(LTX_WRITER_IDLE);
                    let dbs: Vec<Arc<Db>> = dbs
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    for db in dbs {
                        if let Err(e) = db.flush_deferred() {
                            tracing::warn!(db = %db.name(), "failed to write an LTX file (will retry): {}", error::chain(&e));
                        }
                    }
                }
            })?;
        Ok(LtxWriter { stop, thread })
    }
}

/// A random node id for this process (LiteFS draws one per start too).
fn random_node_id() -> NodeId {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    NodeId::new(h.finish().max(1))
}

/// Checks that `name` can name a database: one path component, no NUL, at most 255 bytes.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::InvalidName(name.to_owned(), r)),
        None => Ok(()),
    }
}

impl Store {
    /// Opens the store, recovering every database found under `dbs/`. A database that fails
    /// recovery is kept but not served (its error is logged and returned by its operations).
    pub fn open(opts: StoreOptions) -> Result<Store> {
        let dbs_dir = opts.data_dir.join("dbs");
        fs::create_dir_all(&dbs_dir).map_err(Error::io("create", &dbs_dir))?;
        // A process that died may have left LTX files written but not synced; recovery is
        // about to remove the WAL they could be rebuilt from.
        fsutil::sync_filesystem(&dbs_dir).map_err(Error::io("sync", &dbs_dir))?;
        let wake = Arc::new(Wake::default());
        let db_opts = Arc::new(DbOptions {
            compress: opts.compress,
            strict_verify: opts.strict_verify,
            node_id: random_node_id(),
            wake: wake.clone(),
            adopt: opts.adopt.clone(),
        });
        let mut dbs = BTreeMap::new();
        for entry in fs::read_dir(&dbs_dir).map_err(Error::io("list", &dbs_dir))? {
            let entry = entry.map_err(Error::io("list", &dbs_dir))?;
            if !entry
                .file_type()
                .map_err(Error::io("stat", entry.path()))?
                .is_dir()
            {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(path = %entry.path().display(), "skipping a database directory whose name is not UTF-8");
                continue;
            };
            // One database that cannot even be opened must not keep the others from being
            // served.
            match Db::open(&name, entry.path(), db_opts.clone()) {
                Ok(db) => {
                    tracing::info!(db = %name, pos = %db.pos(), "opened database");
                    dbs.insert(name, Arc::new(db));
                }
                Err(e) => {
                    tracing::error!(db = %name, "database not served: {}", error::chain(&e));
                }
            }
        }
        let dbs = Arc::new(RwLock::new(dbs));
        let writer =
            LtxWriter::spawn(dbs.clone(), wake).map_err(Error::io("start ltx writer", &dbs_dir))?;
        let files_dir = opts.data_dir.join("files");
        fs::create_dir_all(&files_dir).map_err(Error::io("create", &files_dir))?;
        Ok(Store {
            dbs_dir,
            files_dir,
            opts: db_opts,
            dbs,
            writer: Some(writer),
        })
    }

    /// The node id written into this process's LTX files.
    pub fn node_id(&self) -> NodeId {
        self.opts.node_id
    }

    /// The `files/` directory: files in the mount that are not databases (SQLite's
    /// super-journals). They stay on this node and are never replicated.
    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// The `dbs/` directory.
    pub fn dbs_dir(&self) -> &Path {
        &self.dbs_dir
    }

    /// A database by name.
    pub fn db(&self, name: &str) -> Option<Arc<Db>> {
        self.dbs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every database, by name.
    pub fn dbs(&self) -> Vec<Arc<Db>> {
        self.dbs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Returns the database `name`, creating its directory if it does not exist.
    pub fn create_db(&self, name: &str) -> Result<Arc<Db>> {
        validate_name(name)?;
        let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = dbs.get(name) {
            return Ok(db.clone());
        }
        let dir = self.dbs_dir.join(name);
        let db = Arc::new(Db::open(name, dir, self.opts.clone())?);
        fsutil::sync_dir(&self.dbs_dir).map_err(Error::io("sync", &self.dbs_dir))?;
        dbs.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Deletes LTX files older than `retention` (by modification time), keeping each
    /// database's newest. Returns how many were deleted.
    pub fn enforce_retention(&self, retention: Duration) -> usize {
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for db in self.dbs() {
            match db.enforce_retention(cutoff) {
                Ok(n) => removed += n,
                Err(e) => tracing::warn!(db = %db.name(), "failed to enforce retention: {e}"),
            }
        }
        removed
    }

    /// Syncs every database directory, so that removed or renamed journals stay that way
    /// (SQLite asks for this with `synchronous=EXTRA`).
    pub fn sync_dirs(&self) -> Result<()> {
        fsutil::sync_dir(&self.dbs_dir).map_err(Error::io("sync", &self.dbs_dir))?;
        for db in self.dbs() {
            fsutil::sync_dir(db.dir()).map_err(Error::io("sync", db.dir()))?;
        }
        Ok(())
    }

    /// Makes every LTX file durable (on shutdown).
    pub fn sync(&self) -> Result<()> {
        for db in self.dbs() {
            db.sync()?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.stop.store(true, Ordering::Release);
            self.opts.wake.notify();
            let _ = w.thread.join();
        }
    }
}

/// Whether an I/O error means "not there".
pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}
