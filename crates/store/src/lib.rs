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
mod replica;
pub mod status;
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
use std::time::{Duration, Instant, SystemTime};

pub use db::{content_of, Content, Db, FileKind, JournalMode, Observer, RecentLtx, RECENT_LTX_MAX};
use db::{DbOptions, Wake};
pub use error::{chain as error_chain, Error, Result};
use litefs_ltx::NodeId;
pub use replica::{wal_index_header, Applied, WAL_INDEX_HEADER_SIZE};
pub use status::Status;

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
    /// The most bytes the LTX files of one database may take (`data.retention-max-size`; 0:
    /// no limit). Past it the oldest files are deleted even if younger than
    /// `data.retention`; the newest is always kept.
    pub retention_max_size: u64,
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
    /// The node's role and lag, for the mount and replication.
    status: Status,
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
                let list = || -> Vec<Arc<Db>> {
                    dbs.read()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect()
                };
                // A database whose write failed is tried again after LTX_WRITER_IDLE.
                let mut retry: BTreeMap<String, Instant> = BTreeMap::new();
                while !stopping.load(Ordering::Acquire) {
                    // Wait for the first database due (in a burst, the commits queue
                    // meanwhile), or a commit into an empty queue.
                    let now = Instant::now();
                    let due = list()
                        .iter()
                        .filter_map(|db| {
                            let due = db.ltx_due()?;
                            Some(retry.get(db.name()).map_or(due, |&r| due.max(r)))
                        })
                        .min();
                    match due {
                        Some(due) if due <= now => {}
                        Some(due) => wake.wait((due - now).min(LTX_WRITER_IDLE)),
                        None => wake.wait(LTX_WRITER_IDLE),
                    }
                    let now = Instant::now();
                    for db in list() {
                        db.expire_recent();
                        if retry.get(db.name()).is_some_and(|&r| r > now) {
                            continue;
                        }
                        match db.write_due() {
                            Ok(()) => {
                                retry.remove(db.name());
                            }
                            Err(e) => {
                                retry.insert(db.name().to_owned(), now + LTX_WRITER_IDLE);
                                tracing::warn!(db = %db.name(), "failed to write an LTX file (will retry): {}", error::chain(&e));
                            }
                        }
                        // `data.retention-max-size`: checked after writes, not only by the
                        // retention monitor, so a burst cannot outrun it.
                        if db.take_ltx_cap_due() {
                            match db.enforce_retention(SystemTime::UNIX_EPOCH) {
                                Ok(n) if n > 0 => tracing::debug!(db = %db.name(), removed = n, "LTX files over retention-max-size removed"),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(db = %db.name(), "failed to enforce retention-max-size: {}", error::chain(&e)),
                            }
                        }
                    }
                    retry.retain(|name, _| dbs.read().unwrap_or_else(|e| e.into_inner()).contains_key(name));
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

/// The longest database name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The endings of the other files of a database in the mount (`app.db-wal` is `app.db`'s WAL),
/// which a database's own name may not have.
pub const SIDE_FILE_SUFFIXES: [&str; 5] = ["-journal", "-wal", "-shm", "-pos", "-lock"];

/// The files the mount shows at its top level by itself.
const MOUNT_FILES: [&str; 2] = [".lag", ".primary"];

/// Checks that `name` can name a database: a relative path of components separated by `/`
/// (a database in a subdirectory of the mount), none empty, `.` or `..`, none longer than 255
/// bytes, no NUL, at most [`MAX_NAME_LEN`] bytes in all. Below the top level no component may
/// be `ltx`: the directory of a database is the one that holds an `ltx` folder. The last
/// component may not end in one of [`SIDE_FILE_SUFFIXES`] (the mount would take the database
/// for another's side file), and the name may not be one of the mount's own files (`.lag`,
/// `.primary`).
///
/// Every name that comes from outside (the API, the replication stream, the directories found
/// on disk, the mount, the configuration, the commands) is checked with this function.
pub fn validate_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.starts_with('/') {
        Some("an absolute path")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 1024 bytes")
    } else if parts.iter().any(|p| p.is_empty()) {
        Some("an empty path component")
    } else if parts.iter().any(|p| *p == "." || *p == "..") {
        Some("a `.` or `..` path component")
    } else if parts.iter().any(|p| p.len() > 255) {
        Some("a path component longer than 255 bytes")
    } else if parts.iter().skip(1).any(|p| *p == "ltx") {
        Some("a path component `ltx` below the top level")
    } else if parts.last().is_some_and(|last| {
        SIDE_FILE_SUFFIXES
            .iter()
            .any(|s| last.len() > s.len() && last.ends_with(s))
    }) {
        Some("ends in -journal, -wal, -shm, -pos or -lock (the mount would take it for another database's file)")
    } else if MOUNT_FILES.contains(&name) {
        Some("the name of a file the mount makes (`.lag`, `.primary`)")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::InvalidName(name.to_owned(), r)),
        None => Ok(()),
    }
}

/// Finds the database directories under `dir` (a directory holding an `ltx` folder is a
/// database's; any other is a subdirectory to search), with their names relative to `root`.
fn find_databases(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let entry = entry.map_err(Error::io("list", dir))?;
        if !entry
            .file_type()
            .map_err(Error::io("stat", entry.path()))?
            .is_dir()
        {
            continue;
        }
        let path = entry.path();
        let name = path
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned);
        let Some(name) = name.filter(|n| validate_name(n).is_ok()) else {
            tracing::warn!(path = %path.display(), "skipping a directory whose name cannot name a database");
            continue;
        };
        if path.join("ltx").is_dir() {
            out.push((name, path));
        } else {
            find_databases(root, &path, out)?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens the store, recovering every database found under `dbs/`. A database that fails
    /// recovery is kept but not served (its error is logged and returned by its operations).
    pub fn open(opts: StoreOptions) -> Result<Store> {
        let dbs_dir = opts.data_dir.join("dbs");
        fs::create_dir_all(&dbs_dir).map_err(Error::io("create", &dbs_dir))?;
        // A data directory that cannot be written (a read-only filesystem) is refused here,
        // naming it, rather than served with every database failing to open.
        fsutil::probe_writable(&opts.data_dir)
            .map_err(Error::io("write to the data directory", &opts.data_dir))?;
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
            readonly: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
            write_deadline: std::sync::atomic::AtomicU64::new(0),
            observer: std::sync::OnceLock::new(),
            ltx_max_bytes: opts.retention_max_size,
        });
        let mut dbs = BTreeMap::new();
        let mut found = Vec::new();
        find_databases(&dbs_dir, &dbs_dir, &mut found)?;
        for (name, dir) in found {
            // One database that cannot even be opened must not keep the others from being
            // served.
            match Db::open(&name, dir, db_opts.clone()) {
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
            status: Status::default(),
        })
    }

    /// The node's role and lag.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Makes SQLite's writes fail with [`Error::ReadOnly`] (a replica) or accepts them again
    /// (the primary). Replication's own changes ([`Db::apply_ltx`]) are not affected.
    pub fn set_readonly(&self, readonly: bool) {
        self.opts.readonly.store(readonly, Ordering::Release);
    }

    /// Until when SQLite's writes are accepted (`None`: no limit besides
    /// [`Store::set_readonly`]). Every write checks it against the monotonic clock, which runs
    /// on while the process is stopped: a primary paused (SIGSTOP) past its lease refuses
    /// writes at once when it resumes, before its own timers can fence it.
    pub fn set_write_deadline(&self, until: Option<std::time::Instant>) {
        let nanos = until.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(self.opts.epoch).as_nanos())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        self.opts.write_deadline.store(nanos, Ordering::Release);
    }

    /// Whether SQLite's writes are accepted now: not read-only, and before the write deadline.
    pub fn accepts_writes(&self) -> bool {
        !self.opts.writes_refused()
    }

    /// True on a replica (see [`Store::set_readonly`]).
    pub fn is_readonly(&self) -> bool {
        self.opts.readonly.load(Ordering::Acquire)
    }

    /// Sets the function told the name of a database whose published position moved
    /// ([`Db::published`]): a transaction's LTX file was written, or a database dropped or
    /// applied. It is called on the thread that made the change, with the database locked, so it
    /// must be quick and must not call back into the store. Only the first call has an effect.
    pub fn set_observer(&self, observer: Observer) {
        let _ = self.opts.observer.set(db::ObserverSlot(observer));
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

    /// Returns the database `name`, creating its directory if it does not exist. A database
    /// in a subdirectory needs no database on its path: one that was dropped is forgotten
    /// (see [`Store::forget`]); one that exists makes it an error.
    pub fn create_db(&self, name: &str) -> Result<Arc<Db>> {
        validate_name(name)?;
        if let Some(db) = self.db(name) {
            return Ok(db);
        }
        for (i, _) in name.match_indices('/') {
            let parent = &name[..i];
            if let Some(db) = self.db(parent) {
                if db.is_present() {
                    return Err(Error::InvalidName(
                        name.to_owned(),
                        "a database is on its path",
                    ));
                }
                self.forget(parent)?;
            }
        }
        let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = dbs.get(name) {
            return Ok(db.clone());
        }
        let dir = self.dbs_dir.join(name);
        if dir.is_dir() && !dir.join("ltx").is_dir() {
            return Err(Error::InvalidName(
                name.to_owned(),
                "databases exist below it, as in a directory",
            ));
        }
        let parent = dir.parent().unwrap_or(&self.dbs_dir).to_owned();
        fs::create_dir_all(&parent).map_err(Error::io("create", &parent))?;
        let db = Arc::new(Db::open(name, dir, self.opts.clone())?);
        fsutil::sync_dir(&parent).map_err(Error::io("sync", &parent))?;
        dbs.insert(name.to_owned(), db.clone());
        Ok(db)
    }

    /// Removes a dropped database (one not present in the mount) with its LTX files, and the
    /// subdirectories of `dbs/` it leaves empty: when its name is needed for a directory.
    pub fn forget(&self, name: &str) -> Result<()> {
        let mut dbs = self.dbs.write().unwrap_or_else(|e| e.into_inner());
        let Some(db) = dbs.get(name) else {
            return Ok(());
        };
        if db.is_present() || db.unavailable().is_some() {
            return Err(Error::Busy {
                db: name.to_owned(),
                why: "it exists, or was refused at start and keeps its files",
            });
        }
        let dir = db.dir().to_owned();
        dbs.remove(name);
        tracing::info!(db = %name, dir = %dir.display(), "forgetting a dropped database");
        fs::remove_dir_all(&dir).map_err(Error::io("remove", &dir))?;
        let mut parent = dir.parent();
        while let Some(p) = parent.filter(|p| *p != self.dbs_dir) {
            if fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
        fsutil::sync_dir(&self.dbs_dir).map_err(Error::io("sync", &self.dbs_dir))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in `dir`, uncompressed.
    pub(crate) fn test_store(dir: &Path, strict_verify: bool, retention_max_size: u64) -> Store {
        Store::open(StoreOptions {
            data_dir: dir.to_path_buf(),
            compress: false,
            strict_verify,
            adopt: Vec::new(),
            retention_max_size,
        })
        .unwrap()
    }

    /// The LTX files of `db`: (first TXID, bytes), oldest first.
    fn ltx_sizes(db: &Db) -> Vec<(u64, u64)> {
        recover::ltx_files(db.ltx_dir())
            .unwrap()
            .into_iter()
            // The LTX writer thread may delete a file between the listing and the stat.
            .filter_map(|(min, _, path)| Some((min.get(), fs::metadata(path).ok()?.len())))
            .collect()
    }

    /// Commits one rollback-journal transaction that rewrites pages 1..=pages of `db` (4 KiB
    /// pages, content derived from `seed` so that each file has its full size).
    fn commit_pages(db: &Db, pages: u32, seed: u64) {
        db.create(FileKind::Journal).unwrap();
        let mut hdr = vec![0u8; 512];
        hdr[..8].copy_from_slice(&journal::JOURNAL_MAGIC);
        db.write(FileKind::Journal, 0, &hdr).unwrap();
        let mut x = seed.wrapping_mul(2).wrapping_add(1);
        for pgno in 1..=pages {
            let mut page = vec![0u8; 4096];
            for b in page.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if pgno == 1 {
                page[..16].copy_from_slice(litefs_ltx::dbfile::SQLITE_MAGIC);
                page[16..18].copy_from_slice(&4096u16.to_be_bytes());
                page[18] = 1;
                page[19] = 1;
                page[28..32].copy_from_slice(&pages.to_be_bytes());
            }
            db.write(FileKind::Database, u64::from(pgno - 1) * 4096, &page)
                .unwrap();
        }
        db.remove(FileKind::Journal).unwrap();
    }

    #[test]
    fn ltx_files_over_the_size_cap_are_deleted_oldest_first_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 64 << 10;
        let store = test_store(dir.path(), false, cap);
        let db = store.create_db("cap.db").unwrap();
        db.create(FileKind::Database).unwrap();
        let mut largest = 0;
        for i in 0..60u64 {
            commit_pages(&db, 2, i);
            largest = largest.max(ltx_sizes(&db).last().unwrap().1);
        }
        assert_eq!(db.pos().txid.get(), 60);
        // The check after each write (on the LTX writer thread) keeps the folder near the
        // cap while the writes go on.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let total: u64 = ltx_sizes(&db).iter().map(|f| f.1).sum();
            if total <= cap + largest {
                break;
            }
            assert!(
                Instant::now() < until,
                "LTX files take {total} bytes, cap {cap}"
            );
            thread::sleep(Duration::from_millis(10));
        }
        // A pass by time that deletes nothing by age enforces the cap exactly.
        store.enforce_retention(Duration::from_secs(3600));
        let files = ltx_sizes(&db);
        let total: u64 = files.iter().map(|f| f.1).sum();
        assert!(total <= cap, "{total} bytes left, cap {cap}");
        assert!(files.len() > 1, "{files:?}");
        // What is left is the newest files, without a gap.
        let first = files[0].0;
        let kept: Vec<u64> = files.iter().map(|f| f.0).collect();
        assert_eq!(kept, (first..=60).collect::<Vec<_>>());
        assert_eq!(db.pos().txid.get(), 60);

        // A newest file larger than the cap on its own is kept.
        commit_pages(&db, 20, 99);
        store.enforce_retention(Duration::from_secs(3600));
        let files = ltx_sizes(&db);
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].0, 61);
        assert!(files[0].1 > cap);
    }

    #[test]
    fn diverged_sets_over_the_size_cap_are_deleted_oldest_first_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 64 << 10;
        let store = test_store(dir.path(), false, cap);
        let db = store.create_db("d.db").unwrap();
        let diverged = db.ltx_dir().join("diverged");
        // Five sets of 20 KiB each, the oldest first (as snapshots set them aside).
        let mut names = Vec::new();
        for i in 0..5u64 {
            let set = diverged.join(format!("{:016x}-replaced-by-{:016x}", 10 * i + 5, 10 * i));
            fs::create_dir_all(&set).unwrap();
            fs::write(set.join("a.ltx"), vec![0u8; 20 << 10]).unwrap();
            let at = SystemTime::now() - Duration::from_secs(100 - i);
            fs::File::options()
                .write(true)
                .open(&set)
                .or_else(|_| fs::File::open(&set))
                .and_then(|f| f.set_modified(at))
                .unwrap();
            names.push(set);
        }
        store.enforce_retention(Duration::from_secs(3600));
        let left: Vec<bool> = names.iter().map(|n| n.exists()).collect();
        // 100 KiB over a 64 KiB cap: the two oldest go.
        assert_eq!(left, [false, false, true, true, true]);

        // A newest set larger than the cap on its own is kept.
        let big = diverged.join("big");
        fs::create_dir_all(&big).unwrap();
        fs::write(big.join("b.ltx"), vec![0u8; 100 << 10]).unwrap();
        store.enforce_retention(Duration::from_secs(3600));
        assert!(big.exists());
        assert!(names.iter().all(|n| !n.exists()));
    }

    #[test]
    fn no_size_cap_keeps_files_younger_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), false, 0);
        let db = store.create_db("all.db").unwrap();
        db.create(FileKind::Database).unwrap();
        for i in 0..20u64 {
            commit_pages(&db, 2, i);
        }
        assert_eq!(store.enforce_retention(Duration::from_secs(3600)), 0);
        assert_eq!(ltx_sizes(&db).len(), 20);
        // Past the retention, all but the newest go.
        assert_eq!(store.enforce_retention(Duration::ZERO), 19);
        assert_eq!(ltx_sizes(&db).len(), 1);
    }

    #[test]
    fn writes_are_refused_once_the_write_deadline_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), true, 0);
        let db = store.create_db("a.db").unwrap();
        let page = vec![0u8; 4096];
        let now = std::time::Instant::now();
        // No deadline (a replica's readonly flag aside), and one still to come.
        store.set_write_deadline(None);
        assert!(db.create(FileKind::Journal).is_ok());
        store.set_write_deadline(Some(now + Duration::from_secs(60)));
        assert!(db.write(FileKind::Journal, 0, &page).is_ok());
        // Passed: the writes of SQLite's transactions are refused.
        store.set_write_deadline(Some(now));
        for (what, res) in [
            ("create", db.create(FileKind::Journal)),
            ("write", db.write(FileKind::Journal, 0, &page)),
            ("truncate", db.truncate(FileKind::Journal, 0)),
        ] {
            assert!(
                matches!(res, Err(Error::ReadOnly(ref n)) if n == "a.db"),
                "{what}: {res:?}"
            );
        }
        // A new deadline (the lease confirmed again) lets writes through again.
        store.set_write_deadline(Some(std::time::Instant::now() + Duration::from_secs(60)));
        assert!(db.write(FileKind::Journal, 0, &page).is_ok());
    }

    #[test]
    fn database_names_are_relative_paths_without_dot_dot() {
        for good in [
            "app.db",
            "tenants/acme.db",
            "a/b/c.db",
            "ltx/x.db",
            "ltx",
            ".hidden",
            "-wal",
            "app.db-walrus",
            "t/.lag",
            "wal",
        ] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        const SIDE: &str = "ends in -journal, -wal, -shm, -pos or -lock (the mount would take it for another database's file)";
        let hostile = hostile_names();
        let long = "x".repeat(256);
        let too_long = format!("{}/x", "a/".repeat(600));
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "an absolute path"),
            ("..", "a `.` or `..` path component"),
            ("a/../b.db", "a `.` or `..` path component"),
            ("./a.db", "a `.` or `..` path component"),
            ("a//b.db", "an empty path component"),
            ("a/", "an empty path component"),
            ("a\0b", "contains NUL"),
            (long.as_str(), "a path component longer than 255 bytes"),
            (too_long.as_str(), "longer than 1024 bytes"),
            ("t/ltx", "a path component `ltx` below the top level"),
            ("t/ltx/a.db", "a path component `ltx` below the top level"),
            ("app.db-wal", SIDE),
            ("app.db-journal", SIDE),
            ("t/app.db-shm", SIDE),
            ("app.db-pos", SIDE),
            ("app.db-lock", SIDE),
            (
                ".lag",
                "the name of a file the mount makes (`.lag`, `.primary`)",
            ),
            (
                ".primary",
                "the name of a file the mount makes (`.lag`, `.primary`)",
            ),
            // The hostile names every entry point is tested with.
            ("a\0b", "contains NUL"),
            (hostile[3].as_str(), "longer than 1024 bytes"),
        ] {
            match validate_name(bad) {
                Err(Error::InvalidName(name, reason)) => {
                    assert_eq!(name, bad);
                    assert_eq!(reason, why, "{bad:?}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    /// The hostile names of the entry-point tests: `..` is refused, `a/b` is a database `b`
    /// in directory `a` (subdirectories are supported), and its hostile forms are refused.
    fn hostile_names() -> [String; 4] {
        ["a/b".into(), "..".into(), "a\0b".into(), "a".repeat(10_000)]
    }

    /// The names in `dir`, sorted.
    fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn hostile_names_create_nothing_and_bad_directories_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dbs = tmp.path().join("dbs");
        for d in [
            "good.db",
            "app.db-wal",
            ".lag",
            "t/app.db-shm",
            "u/x.db-journal",
        ] {
            fs::create_dir_all(dbs.join(d).join("ltx")).unwrap();
        }
        let opts = StoreOptions {
            data_dir: tmp.path().to_owned(),
            compress: false,
            strict_verify: true,
            adopt: Vec::new(),
            retention_max_size: 0,
        };
        let store = Store::open(opts).unwrap();
        let names: Vec<String> = store.dbs().iter().map(|d| d.name().to_owned()).collect();
        assert_eq!(names, ["good.db"]);
        let before = [listing(tmp.path()), listing(&dbs)];
        // Skipped, not removed.
        assert!(dbs.join("app.db-wal/ltx").is_dir());
        for bad in hostile_names()
            .iter()
            .skip(1)
            .map(String::as_str)
            .chain(["../x.db", "a/../../x"])
        {
            let e = store.create_db(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName(..)), "{bad:?}: {e}");
            assert!(store.db(bad).is_none());
        }
        assert_eq!([listing(tmp.path()), listing(&dbs)], before);
        assert!(!tmp.path().parent().unwrap().join("x.db").exists());
    }

    #[test]
    fn hostile_names_are_refused_with_a_short_message() {
        let [slash, dotdot, nul, long] = hostile_names();
        assert!(
            validate_name(&slash).is_ok(),
            "a database in a subdirectory"
        );
        for bad in ["/a/b", "a/../../b", "../a/b", "a//b", "a/b/", "a/./b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for bad in [dotdot, nul, long] {
            let msg = validate_name(&bad).unwrap_err().to_string();
            assert!(msg.starts_with("invalid database name"), "{msg}");
            // A long name is cut in the message.
            assert!(msg.len() < 300, "{} bytes: {msg:.300}", msg.len());
        }
        let msg = validate_name(&"a".repeat(10_000)).unwrap_err().to_string();
        assert!(msg.contains("(10000 bytes)"), "{msg}");
        assert!(msg.ends_with("longer than 1024 bytes"), "{msg}");
    }
}
