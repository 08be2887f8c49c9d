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
use std::sync::Arc;
use std::time::{Duration, Instant};

use litefs_fuse::Invalidator;
use litefs_store::{Applied, JournalMode, Store, WAL_INDEX_HEADER_SIZE};

/// SQLite's lock bytes in the database file (rollback journal modes).
const PENDING_BYTE: i64 = 0x4000_0000;
const SHARED_FIRST: i64 = PENDING_BYTE + 2;
const SHARED_SIZE: i64 = 510;
/// SQLite's lock bytes in the WAL index (`-shm`): WRITE, CKPT, RECOVER, READ0..4, then DMS.
const SHM_LOCKS: i64 = 120;
const SHM_LOCK_COUNT: i64 = 8;
const SHM_DMS: i64 = SHM_LOCKS + SHM_LOCK_COUNT;

/// How long to wait for local readers before saying so in the log (the wait goes on: a
/// reader's transaction must see one state).
const READER_WAIT_WARNING: Duration = Duration::from_secs(5);

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
}

/// An open file description holding OFD locks; they go when it is dropped.
struct Locked {
    _file: File,
}

fn ofd_lock(file: &File, kind: libc::c_short, start: i64, len: i64) -> io::Result<()> {
    let mut fl = libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    loop {
        // SAFETY: `file` is an open descriptor for the call's duration and `fl` a valid,
        // initialised flock that the kernel only reads.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &mut fl) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl MountApplier {
    /// An applier for `store`, mounted at `mnt`.
    pub fn new(store: Arc<Store>, mnt: PathBuf, invalidator: Invalidator) -> Self {
        MountApplier {
            store,
            mnt,
            invalidator,
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
    /// for the readers in a transaction to finish.
    fn exclude_readers(
        &self,
        name: &str,
        mode: JournalMode,
    ) -> Result<(Locked, Option<File>), ApplyError> {
        let started = Instant::now();
        let warn = || {
            if started.elapsed() > READER_WAIT_WARNING {
                tracing::warn!(db = %name, waited = ?started.elapsed(), "a local read transaction held up applying a replicated transaction");
            }
        };
        match mode {
            JournalMode::Rollback => {
                let path = self.mnt.join(name);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(Self::mount_err("open", &path))?;
                ofd_lock(&file, libc::F_WRLCK as libc::c_short, PENDING_BYTE, 1)
                    .map_err(Self::mount_err("lock", &path))?;
                ofd_lock(
                    &file,
                    libc::F_WRLCK as libc::c_short,
                    SHARED_FIRST,
                    SHARED_SIZE,
                )
                .map_err(Self::mount_err("lock", &path))?;
                warn();
                Ok((Locked { _file: file }, None))
            }
            JournalMode::Wal => {
                let path = self.mnt.join(format!("{name}-shm"));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(Self::mount_err("open", &path))?;
                ofd_lock(&file, libc::F_RDLCK as libc::c_short, SHM_DMS, 1)
                    .map_err(Self::mount_err("lock", &path))?;
                ofd_lock(
                    &file,
                    libc::F_WRLCK as libc::c_short,
                    SHM_LOCKS,
                    SHM_LOCK_COUNT,
                )
                .map_err(Self::mount_err("lock", &path))?;
                warn();
                let header = file.try_clone().map_err(Self::mount_err("open", &path))?;
                Ok((Locked { _file: file }, Some(header)))
            }
        }
    }

    /// Applies the LTX file at `path` (on the data directory's filesystem) to database `name`,
    /// creating it if needed. Blocks while local readers are in a transaction.
    pub fn apply(&self, name: &str, path: &Path) -> Result<Applied, ApplyError> {
        let db = self.store.create_db(name)?;
        let existed = db.is_present();
        let mode = db.mode();
        let (locked, shm) = if existed {
            let (l, s) = self.exclude_readers(name, mode)?;
            (Some(l), s)
        } else {
            (None, None)
        };
        let applied = db.apply_ltx(path)?;
        let page_size = applied.page_size.get();
        if applied.snapshot || !existed || applied.commit == 0 {
            self.invalidator.database_changed(name, None, page_size);
        } else {
            let pages: Vec<u32> = applied.pages.iter().map(|p| p.get()).collect();
            self.invalidator
                .database_changed(name, Some(&pages), page_size);
        }
        if existed != db.is_present() {
            self.invalidator.names_changed(name);
        }
        if let Some(shm) = shm {
            if applied.commit > 0 {
                let shm_path = self.mnt.join(format!("{name}-shm"));
                let mut current = vec![0u8; WAL_INDEX_HEADER_SIZE];
                let n = litefs_store::fsutil::read_full_at(&shm, &mut current, 0)
                    .map_err(Self::mount_err("read", &shm_path))?;
                current.truncate(n);
                let header =
                    litefs_store::wal_index_header(&current, applied.page_size, applied.commit);
                shm.write_all_at(&header, 0)
                    .map_err(Self::mount_err("write", &shm_path))?;
            }
        }
        drop(locked);
        Ok(applied)
    }
}
