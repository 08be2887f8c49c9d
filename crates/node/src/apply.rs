//! Applying a replicated transaction on a replica so that local readers see the database
//! before or after it, never between: the node takes SQLite's own locks through the mount (the
//! kernel arbitrates them between every process, this one included), has the store apply the
//! LTX file, tells the kernel what changed, and (WAL mode) rewrites the WAL-index header through
//! the mount so that readers notice.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litefs_fuse::Invalidator;
use litefs_replication::replica::Received;
use litefs_store::{Applied, JournalMode, Store, WAL_INDEX_HEADER_SIZE};

/// SQLite's lock bytes in the database file (rollback journal modes).
const PENDING_BYTE: i64 = 0x4000_0000;
const SHARED_FIRST: i64 = PENDING_BYTE + 2;
const SHARED_SIZE: i64 = 510;
/// SQLite's lock bytes in the WAL index (`-shm`): WRITE, CKPT, RECOVER, READ0..4, then DMS.
const SHM_LOCKS: i64 = 120;
const SHM_LOCK_COUNT: i64 = 8;
const SHM_DMS: i64 = SHM_LOCKS + SHM_LOCK_COUNT;

/// The size of the WAL index's first page (SQLite's `WALINDEX_PGSZ`).
const WAL_INDEX_PAGE: u64 = 32768;

/// How long an apply waits for local read transactions to end. Past it, the transaction is
/// applied anyway, with a warning: a read transaction held open that long on a replica must not
/// stop replication for good (it may then see the database change under it, and SQLite reports
/// an error to it if its pages no longer fit together).
pub const READER_WAIT: Duration = Duration::from_secs(30);

/// Why a transaction could not be applied.
#[derive(thiserror::Error, Debug)]
pub enum ApplyError {
    /// The store refused or failed it.
    #[error(transparent)]
    Store(#[from] litefs_store::Error),
    /// Locking or writing through the mount failed.
    #[error("{op} {path}")]
    Mount {
        /// What was being done.
        op: &'static str,
        /// The file in the mount.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Applies replicated LTX files to the store behind a mount.
#[derive(Clone, Debug)]
pub struct MountApplier {
    store: Arc<Store>,
    mnt: PathBuf,
    invalidator: Invalidator,
    /// Whether some applied files are not durable yet (the sync loop makes them so).
    unsynced: Arc<AtomicBool>,
}

/// How often applied files are made durable (one `syncfs`) while transactions keep coming.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// OFD locks held on a file of the mount; released when dropped (the byte ranges `ranges`,
/// `(start, 0)` meaning to the end of the file).
struct Locked {
    file: Arc<File>,
    ranges: Vec<(i64, i64)>,
}

impl Locked {
    /// Every lock of `file`.
    fn all(file: Arc<File>) -> Self {
        Locked {
            file,
            ranges: vec![(0, 0)],
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        for &(start, len) in &self.ranges {
            let mut fl = libc::flock {
                l_type: libc::F_UNLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: start,
                l_len: len,
                l_pid: 0,
            };
            // SAFETY: the descriptor is open while `self.file` lives and `fl` is a valid flock
            // the kernel only reads.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
            if rc != 0 {
                tracing::warn!("failed to release a lock: {}", io::Error::last_os_error());
            }
        }
    }
}

/// SQLite's write lock on one database, taken on the primary for the replica that holds the
/// cluster's halt lock: local writers wait (`SQLITE_BUSY`) while local readers go on. In
/// rollback modes it is RESERVED on the database file, in WAL mode the WAL index's WRITE lock
/// (with a shared DMS, as every connection holds). Released when dropped.
pub struct WriterLock {
    mode: JournalMode,
    locked: Locked,
    /// WAL mode: a SHARED lock on the database file, as every open connection holds, so that
    /// a connection that closes does not take itself for the last one and delete the WAL and
    /// its index (with the locks above).
    _shared: Option<Locked>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Tries to take an OFD lock on `len` bytes at `start` of `file` (`kind`: `F_RDLCK` or
/// `F_WRLCK`); `false` if another open file description holds a conflicting one.
pub(crate) fn try_ofd_lock(
    file: &File,
    kind: libc::c_int,
    start: i64,
    len: i64,
) -> io::Result<bool> {
    let mut fl = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    loop {
        // SAFETY: `file` is an open descriptor for the call's duration and `fl` a valid,
        // initialised flock that the kernel only reads.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EACCES) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Takes an OFD lock on `len` bytes at `start`, retrying until `deadline`. Returns false if
/// other processes still held conflicting locks then.
fn ofd_lock(
    file: &File,
    kind: libc::c_short,
    start: i64,
    len: i64,
    deadline: Instant,
) -> io::Result<bool> {
    let mut pause = Duration::from_micros(200);
    loop {
        if try_ofd_lock(file, libc::c_int::from(kind), start, len)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

impl MountApplier {
    /// An applier for `store`, mounted at `mnt`.
    pub fn new(store: Arc<Store>, mnt: PathBuf, invalidator: Invalidator) -> Self {
        MountApplier {
            store,
            mnt,
            invalidator,
            unsynced: Arc::default(),
        }
    }

    fn mount_err<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> ApplyError + 'a {
        move |source| ApplyError::Mount {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// Takes the locks that keep local readers out of database `name` in `mode`: in rollback
    /// modes PENDING then all SHARED bytes of the database file, in WAL mode a shared DMS and
    /// every other lock of the WAL index (which is created if no reader made it yet). Waits
    /// for the readers in a transaction to finish, up to [`READER_WAIT`].
    fn exclude_readers(
        &self,
        name: &str,
        mode: JournalMode,
        held: Option<&WriterLock>,
    ) -> Result<(Locked, Option<Arc<File>>), ApplyError> {
        let deadline = Instant::now() + READER_WAIT;
        // A replicated transaction goes in anyway after the wait; one written under the halt
        // lock (`held`, on the primary) is refused instead: a local transaction that stayed
        // open that long may be about to write from what it read.
        let all = |got: bool| {
            if got {
                Ok(())
            } else if held.is_some() {
                Err(ApplyError::Mount {
                    op: "lock",
                    path: self.mnt.join(name),
                    source: io::Error::from_raw_os_error(libc::EAGAIN),
                })
            } else {
                tracing::warn!(db = %name, waited = ?READER_WAIT, "a local read transaction stayed open: applying a replicated transaction anyway");
                Ok(())
            }
        };
        match mode {
            JournalMode::Rollback => {
                let path = self.mnt.join(name);
                let file = self.open_file(name, false, &path)?;
                let wr = libc::F_WRLCK as libc::c_short;
                let got = ofd_lock(&file, wr, PENDING_BYTE, 1, deadline)
                    .map_err(Self::mount_err("lock", &path))?
                    && ofd_lock(&file, wr, SHARED_FIRST, SHARED_SIZE, deadline)
                        .map_err(Self::mount_err("lock", &path))?;
                all(got)?;
                Ok((Locked::all(file), None))
            }
            JournalMode::Wal => {
                let path = self.mnt.join(format!("{name}-shm"));
                // Under a writer lock, on its own open file: the WRITE lock it holds would
                // conflict with any other, and stays held afterwards.
                let held = held.filter(|h| h.mode == JournalMode::Wal);
                let file = match held {
                    Some(h) => h.locked.file.clone(),
                    None => self.open_file(name, true, &path)?,
                };
                let got = ofd_lock(&file, libc::F_RDLCK as libc::c_short, SHM_DMS, 1, deadline)
                    .map_err(Self::mount_err("lock", &path))?
                    && ofd_lock(
                        &file,
                        libc::F_WRLCK as libc::c_short,
                        SHM_LOCKS,
                        SHM_LOCK_COUNT,
                        deadline,
                    )
                    .map_err(Self::mount_err("lock", &path))?;
                all(got)?;
                let locked = match held {
                    Some(_) => Locked {
                        file: file.clone(),
                        ranges: vec![(SHM_LOCKS + 1, SHM_LOCK_COUNT - 1)],
                    },
                    None => Locked::all(file.clone()),
                };
                Ok((locked, Some(file)))
            }
        }
    }

    /// Takes SQLite's write lock on database `name` (see [`WriterLock`]), waiting for the
    /// local writer in a transaction to finish, until `deadline`. `None` if the database has
    /// no file yet (no local writer can be in it). Fails with `EAGAIN` (as a mount error) if
    /// local writers still held it at the deadline.
    pub fn lock_writers(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<WriterLock>, ApplyError> {
        let db = self.store.create_db(name)?;
        if !db.is_present() {
            return Ok(None);
        }
        let mode = db.mode();
        let (path, shm, dms) = match mode {
            JournalMode::Rollback => (self.mnt.join(name), false, None),
            JournalMode::Wal => (self.mnt.join(format!("{name}-shm")), true, Some(SHM_DMS)),
        };
        let file = self.open_file(name, shm, &path)?;
        let locked = Locked {
            file: file.clone(),
            ranges: vec![(0, 0)],
        };
        if let Some(dms) = dms {
            if !ofd_lock(&file, libc::F_RDLCK as libc::c_short, dms, 1, deadline)
                .map_err(Self::mount_err("lock", &path))?
            {
                return Err(ApplyError::Mount {
                    op: "lock",
                    path,
                    source: io::Error::from_raw_os_error(libc::EAGAIN),
                });
            }
        }
        let shared = if shm {
            let db_path = self.mnt.join(name);
            let db_file = self.open_file(name, false, &db_path)?;
            if !ofd_lock(
                &db_file,
                libc::F_RDLCK as libc::c_short,
                SHARED_FIRST,
                SHARED_SIZE,
                deadline,
            )
            .map_err(Self::mount_err("lock", &db_path))?
            {
                return Err(ApplyError::Mount {
                    op: "lock",
                    path: db_path,
                    source: io::Error::from_raw_os_error(libc::EAGAIN),
                });
            }
            Some(Locked::all(db_file))
        } else {
            None
        };
        let write_byte = if shm { SHM_LOCKS } else { PENDING_BYTE + 1 };
        if !ofd_lock(
            &file,
            libc::F_WRLCK as libc::c_short,
            write_byte,
            1,
            deadline,
        )
        .map_err(Self::mount_err("lock", &path))?
        {
            return Err(ApplyError::Mount {
                op: "lock",
                path,
                source: io::Error::from_raw_os_error(libc::EAGAIN),
            });
        }
        if shm {
            // No connection made the WAL index yet (the last one to close removed it): give it a
            // valid header, a page long, so that readers need not rebuild it, which takes the
            // WRITE lock held here. Its WAL is empty then.
            let len = file
                .metadata()
                .map_err(Self::mount_err("stat", &path))?
                .len();
            if let (true, false, Some(ps)) =
                (len < WAL_INDEX_PAGE, db.has_wal_frames(), db.page_size())
            {
                let header = litefs_store::wal_index_header(&[], ps, db.page_count(), false);
                file.write_all_at(&header, 0)
                    .and_then(|()| file.set_len(WAL_INDEX_PAGE))
                    .map_err(Self::mount_err("write", &path))?;
            }
        }
        Ok(Some(WriterLock {
            mode,
            locked,
            _shared: shared,
        }))
    }

    /// The database file (or WAL index, `shm`) of `name` in the mount, opened for one batch.
    /// Never kept open between batches: a process killed while it holds a file of its own
    /// mount open cannot exit (closing it waits for a FUSE answer from the dead process's own
    /// threads), and would keep its port and mount.
    fn open_file(&self, _name: &str, shm: bool, path: &Path) -> Result<Arc<File>, ApplyError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(shm)
            .truncate(false)
            .open(path)
            .map_err(Self::mount_err("open", path))?;
        Ok(Arc::new(file))
    }

    /// Applies the LTX file at `path` (on the data directory's filesystem) to database `name`,
    /// creating it if needed. Blocks while local readers are in a transaction.
    pub fn apply(&self, name: &str, path: &Path) -> Result<Applied, ApplyError> {
        let (mut applied, err) = self.apply_batch(name, vec![Received::File(path.to_owned())]);
        match (applied.pop(), err) {
            (_, Some(e)) => Err(e),
            (Some(a), None) => Ok(a),
            (None, None) => Err(ApplyError::Store(litefs_store::Error::NotFound(
                name.to_owned(),
            ))),
        }
    }

    /// Applies LTX files to database `name` in order, under one exclusion of local readers
    /// (the sync loop makes them durable, see [`MountApplier::sync_if_needed`]). Returns what each applied file changed, until the first
    /// failure (and that failure).
    pub fn apply_batch(
        &self,
        name: &str,
        received: Vec<Received>,
    ) -> (Vec<Applied>, Option<ApplyError>) {
        self.apply_batch_under(name, received, None)
    }

    /// [`MountApplier::apply_batch`], under the writer lock `held` (see
    /// [`MountApplier::lock_writers`]) if there is one.
    pub(crate) fn apply_batch_under(
        &self,
        name: &str,
        received: Vec<Received>,
        held: Option<&WriterLock>,
    ) -> (Vec<Applied>, Option<ApplyError>) {
        let mut done = Vec::new();
        let db = match self.store.create_db(name) {
            Ok(db) => db,
            Err(e) => return (done, Some(e.into())),
        };
        // This node's own transactions (written under the halt lock) coming back change
        // nothing: no lock is taken for them (the writer that made them may still hold its
        // own).
        let own = |r: &Received| match r {
            Received::File(path) => {
                let mut start = [0u8; litefs_ltx::header::HEADER_SIZE];
                File::open(path)
                    .and_then(|f| litefs_store::fsutil::read_full_at(&f, &mut start, 0))
                    .is_ok_and(|n| n == start.len() && db.is_own_ltx(&start))
            }
            Received::Memory { data, .. } => db.is_own_ltx(data),
        };
        let (mine, received): (Vec<_>, Vec<_>) = received.into_iter().partition(|r| own(r));
        for r in mine {
            let applied = match r {
                Received::File(path) => db.apply_ltx_with(&path, false),
                Received::Memory { data, .. } => db.apply_ltx_bytes(data, false),
            };
            match applied {
                Ok(a) => done.push(a),
                Err(e) => return (done, Some(e.into())),
            }
        }
        if received.is_empty() {
            return (done, None);
        }
        let existed = db.is_present();
        let mode = db.mode();
        let (mut locked, shm) = if existed {
            match self.exclude_readers(name, mode, held) {
                Ok((l, s)) => (Some(l), s),
                Err(e) => {
                    return (done, Some(e));
                }
            }
        } else {
            (None, None)
        };
        if existed && mode == JournalMode::Rollback && held.is_none() {
            match db.roll_back_journal() {
                Ok(true) => {
                    let ps = db.page_size().map_or(4096, |p| p.get());
                    self.invalidator.database_changed(name, None, ps);
                    self.invalidator.names_changed(name);
                }
                Ok(false) => {}
                Err(e) => return (done, Some(e.into())),
            }
        }
        let mut failure = None;
        for r in received {
            // Under the halt lock the primary answers once the transaction is durable.
            let durable = held.is_some();
            let applied = match r {
                Received::File(path) => {
                    let res = db.apply_ltx_with(&path, durable);
                    if res.is_err() {
                        let _ = std::fs::remove_file(&path);
                    }
                    res
                }
                Received::Memory { data, .. } => db.apply_ltx_bytes(data, durable),
            };
            match applied {
                Ok(a) => done.push(a),
                Err(e) => {
                    failure = Some(ApplyError::from(e));
                    break;
                }
            }
        }
        let whole = !existed || done.iter().any(|a| a.snapshot || a.commit == 0);
        if let Some(last) = done.last() {
            let page_size = last.page_size.get();
            if whole {
                self.invalidator.database_changed(name, None, page_size);
            } else {
                let pages: Vec<u32> = done
                    .iter()
                    .flat_map(|a| a.pages.iter().map(|p| p.get()))
                    .collect();
                self.invalidator
                    .database_changed(name, Some(&pages), page_size);
            }
            if existed != db.is_present() {
                self.invalidator.names_changed(name);
            }
            if !db.is_present() {
                drop(locked.take());
            }
            if let (Some(shm), true) = (shm.as_ref(), last.commit > 0) {
                let restart = done.iter().any(|a| a.folded);
                if restart {
                    self.invalidator.wal_changed(name);
                }
                if let Err(e) = self.write_wal_index(name, shm, last, restart) {
                    failure.get_or_insert(e);
                }
            }
        }
        drop(locked);
        // Readers need not wait for the disk, and neither does the next transaction: the
        // node's sync loop makes applied files durable every SYNC_INTERVAL (and at shutdown),
        // on its own thread. A machine crash loses at most that much, which the primary sends
        // again.
        if !done.is_empty() {
            self.unsynced.store(true, Ordering::Release);
        }
        (done, failure)
    }

    /// On a replica: rolls back the transactions former primaries left in hot journals (see
    /// [`litefs_store::Db::roll_back_journal`]), with local readers kept out. Returns how many.
    pub fn roll_back_journals(&self) -> usize {
        let mut n = 0;
        for db in self.store.dbs() {
            if !db.is_present()
                || db.mode() != JournalMode::Rollback
                || !db.exists(litefs_store::FileKind::Journal)
            {
                continue;
            }
            let name = db.name().to_owned();
            let locked = match self.exclude_readers(&name, JournalMode::Rollback, None) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(db = %name, "could not lock the database to roll back its journal: {e}");
                    continue;
                }
            };
            match db.roll_back_journal() {
                Ok(true) => {
                    let ps = db.page_size().map_or(4096, |p| p.get());
                    self.invalidator.database_changed(&name, None, ps);
                    self.invalidator.names_changed(&name);
                    n += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(db = %name, "rolling back its journal failed: {}", litefs_store::error_chain(&e))
                }
            }
            drop(locked);
        }
        n
    }

    /// Makes applied files durable if some are not (called every [`SYNC_INTERVAL`]).
    pub fn sync_if_needed(&self) -> Result<(), ApplyError> {
        // Cleared first: what is applied while the sync runs is synced next time.
        if self.unsynced.swap(false, Ordering::AcqRel) {
            if let Err(e) = litefs_store::fsutil::sync_filesystem(self.store.dbs_dir()) {
                self.unsynced.store(true, Ordering::Release);
                return Err(ApplyError::Store(litefs_store::Error::Io {
                    op: "sync",
                    path: self.store.dbs_dir().to_owned(),
                    source: e,
                }));
            }
        }
        Ok(())
    }

    /// Rewrites the WAL index's header through the mount so that WAL-mode readers see `last`.
    fn write_wal_index(
        &self,
        name: &str,
        shm: &Arc<File>,
        last: &Applied,
        restart: bool,
    ) -> Result<(), ApplyError> {
        let shm_path = self.mnt.join(format!("{name}-shm"));
        let mut current = vec![0u8; WAL_INDEX_HEADER_SIZE];
        let n = litefs_store::fsutil::read_full_at(shm, &mut current, 0)
            .map_err(Self::mount_err("read", &shm_path))?;
        current.truncate(n);
        let header = litefs_store::wal_index_header(&current, last.page_size, last.commit, restart);
        shm.write_all_at(&header, 0)
            .map_err(Self::mount_err("write", &shm_path))?;
        // A reader maps the index's first page only if the file holds it; otherwise it must
        // rebuild the index itself, which needs the WRITE lock (held on a primary under the
        // halt lock: it would fail with SQLITE_PROTOCOL).
        let len = shm
            .metadata()
            .map_err(Self::mount_err("stat", &shm_path))?
            .len();
        if len < WAL_INDEX_PAGE {
            shm.set_len(WAL_INDEX_PAGE)
                .map_err(Self::mount_err("truncate", &shm_path))?;
        }
        Ok(())
    }
}
