//! The halt lock's file system: where `<db>-lock` leads.
//!
//! An application takes the cluster's write lock on a database (the *halt lock*) with an OFD
//! lock on byte 72 of `<db>-lock`, and releases it by unlocking that byte or closing the file.
//! The main mount leaves POSIX locks to the kernel (SQLite's many lock calls never cross FUSE),
//! so it cannot see that lock. `<db>-lock` in the main mount is therefore a symbolic link into
//! this small second mount, which asks the kernel for every POSIX lock on its files: a lock
//! call on byte 72 blocks until the node holds the halt lock (see [`HaltLocks`]).
//!
//! What a lock call gets, as in LiteFS: only a waiting lock (`F_OFD_SETLKW`) on byte 72 alone
//! is supported. A non-blocking one fails with `ENOSYS`, any other range with `EINVAL`, a
//! second one on the same open file with `ENOLCK`, and one that cannot be had in time with
//! the error [`HaltLocks::halt`] gives (`EAGAIN` for a timeout). Reads return nothing and
//! writes fail with `EIO`.
//!
//! File names: the database's name with `%` and `/` percent-encoded, then `-lock`, all in one
//! directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLock, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use litefs_store::Store;

/// The byte of `<db>-lock` whose lock is the halt lock.
pub const HALT_BYTE: u64 = 72;

/// Takes and releases the cluster's halt lock for the node (the node knows the primary).
pub trait HaltLocks: Send + Sync + std::fmt::Debug {
    /// Blocks until this node holds the halt lock on database `db`; returns what
    /// [`HaltLocks::unhalt`] releases it with. On the primary there is nothing to take.
    ///
    /// # Errors
    /// The errno the locking application gets: `EAGAIN` when it could not be had in time.
    fn halt(&self, db: &str) -> Result<u64, Errno>;

    /// Releases what [`HaltLocks::halt`] took.
    fn unhalt(&self, db: &str, token: u64);
}

const ROOT: u64 = 1;
const FIRST_INO: u64 = 2;
/// The kernel may keep names and attributes: they only change through this mount.
const TTL: Duration = Duration::from_secs(60);

/// `<db>` as a file name of this mount (without `-lock`).
pub(crate) fn encode_name(db: &str) -> String {
    let mut out = String::with_capacity(db.len());
    for c in db.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

fn decode_name(file: &str) -> Option<String> {
    let base = file.strip_suffix("-lock")?;
    let mut out = String::with_capacity(base.len());
    let mut rest = base;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => out.push('%'),
            Some("%2F") => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The database whose lock file `name` is, if it names one a database can have.
fn db_of_lock_file(name: &OsStr) -> Option<String> {
    name.to_str()
        .and_then(decode_name)
        .filter(|db| litefs_store::validate_name(db).is_ok())
}

/// Where a handle's halt lock is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unlocked,
    /// A lock call is waiting for it.
    Waiting,
    /// Held, to be released with this token.
    Held(u64),
    /// The file was closed while the lock call waited: release whatever it gets.
    Closed,
}

#[derive(Debug)]
struct Handle {
    db: String,
    state: State,
}

#[derive(Default)]
struct Names {
    by_db: HashMap<String, u64>,
    dbs: HashMap<u64, String>,
}

/// The file system (see the module's documentation).
pub(crate) struct LockFs {
    store: Arc<Store>,
    pub(crate) locks: Arc<OnceLock<Arc<dyn HaltLocks>>>,
    names: Mutex<Names>,
    handles: Arc<Mutex<HashMap<u64, Handle>>>,
    next_ino: AtomicU64,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
}

impl LockFs {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        // SAFETY: getuid and getgid cannot fail.
        #[allow(unsafe_code)]
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        LockFs {
            store,
            locks: Arc::new(OnceLock::new()),
            names: Mutex::new(Names::default()),
            handles: Arc::new(Mutex::new(HashMap::new())),
            next_ino: AtomicU64::new(FIRST_INO),
            next_fh: AtomicU64::new(1),
            uid,
            gid,
        }
    }

    fn attr(&self, ino: u64, dir: bool) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            // 0444 as LiteFS shows it; opening it for writing is allowed all the same.
            perm: if dir { 0o755 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn db_of(&self, ino: u64) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dbs
            .get(&ino)
            .cloned()
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn locks(&self) -> Option<Arc<dyn HaltLocks>> {
        self.locks.get().cloned()
    }

    /// Releases the halt lock a handle holds (off the request thread: it asks the primary).
    fn release_held(&self, db: String, token: u64) {
        if let Some(locks) = self.locks() {
            std::thread::spawn(move || locks.unhalt(&db, token));
        }
    }
}

impl Filesystem for LockFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        config
            .add_capabilities(InitFlags::FUSE_POSIX_LOCKS)
            .map_err(|_| std::io::Error::other("the kernel's FUSE has no POSIX locks"))?;
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Some(db) = db_of_lock_file(name) else {
            return reply.error(Errno::ENOENT);
        };
        match self.store.db(&db) {
            Some(d) if d.is_present() => {}
            _ => return reply.error(Errno::ENOENT),
        }
        let ino = {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            match names.by_db.get(&db) {
                Some(&ino) => ino,
                None => {
                    let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
                    names.by_db.insert(db.clone(), ino);
                    names.dbs.insert(ino, db);
                    ino
                }
            }
        };
        reply.entry(&TTL, &self.attr(ino, false), fuser::Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == ROOT {
            return reply.attr(&TTL, &self.attr(ROOT, true));
        }
        match self.db_of(ino.0) {
            Some(_) => reply.attr(&TTL, &self.attr(ino.0, false)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(db) = self.db_of(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(
            fh,
            Handle {
                db,
                state: State::Unlocked,
            },
        );
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.data(&[]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EIO);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Closing the file releases its lock (an OFD lock lives as long as the open file).
        let held = {
            let mut handles = self.handles();
            match handles.get_mut(&fh.0) {
                Some(h) if h.state == State::Waiting => {
                    h.state = State::Closed;
                    None
                }
                Some(_) => handles.remove(&fh.0).and_then(|h| match h.state {
                    State::Held(token) => Some((h.db, token)),
                    _ => None,
                }),
                None => None,
            }
        };
        if let Some((db, token)) = held {
            self.release_held(db, token);
        }
        reply.ok();
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        reply.locked(start, end, libc::F_UNLCK, 0);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        if typ == libc::F_UNLCK {
            if start <= HALT_BYTE && HALT_BYTE <= end {
                let held = {
                    let mut handles = self.handles();
                    handles.get_mut(&fh.0).and_then(|h| match h.state {
                        State::Held(token) => {
                            h.state = State::Unlocked;
                            Some((h.db.clone(), token))
                        }
                        _ => None,
                    })
                };
                if let Some((db, token)) = held {
                    self.release_held(db, token);
                }
            }
            return reply.ok();
        }
        if start != HALT_BYTE || end != HALT_BYTE {
            return reply.error(Errno::EINVAL);
        }
        if !sleep {
            return reply.error(Errno::ENOSYS);
        }
        let db = {
            let mut handles = self.handles();
            let Some(h) = handles.get_mut(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            if h.state != State::Unlocked {
                return reply.error(Errno::ENOLCK);
            }
            h.state = State::Waiting;
            h.db.clone()
        };
        let Some(locks) = self.locks() else {
            if let Some(h) = self.handles().get_mut(&fh.0) {
                h.state = State::Unlocked;
            }
            return reply.error(Errno::EAGAIN);
        };
        // The wait happens on its own thread: the request threads stay free.
        let handles = self.handles.clone();
        std::thread::spawn(move || {
            let got = locks.halt(&db);
            let mut table = handles.lock().unwrap_or_else(|e| e.into_inner());
            let closed = table.get(&fh.0).is_none_or(|h| h.state == State::Closed);
            match got {
                Ok(token) if closed => {
                    table.remove(&fh.0);
                    drop(table);
                    locks.unhalt(&db, token);
                    reply.error(Errno::EINTR);
                }
                Ok(token) => {
                    if let Some(h) = table.get_mut(&fh.0) {
                        h.state = State::Held(token);
                    }
                    drop(table);
                    reply.ok();
                }
                Err(e) => {
                    if closed {
                        table.remove(&fh.0);
                    } else if let Some(h) = table.get_mut(&fh.0) {
                        h.state = State::Unlocked;
                    }
                    drop(table);
                    reply.error(e);
                }
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == ROOT {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOTDIR);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        // Not listed, as in the main mount: `.` and `..` only.
        for (i, name) in [".", ".."].into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ROOT), (i + 1) as u64, FileType::Directory, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The target of `<db>-lock` in the main mount: its file in the halt lock's mount at `dir`.
pub(crate) fn link_target(dir: &Path, db: &str) -> std::path::PathBuf {
    dir.join(format!("{}-lock", encode_name(db)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for db in ["db", "a/b", "100%", "x-lock", "a%2Fb"] {
            let file = format!("{}-lock", encode_name(db));
            assert!(!file.contains('/'), "{file}");
            assert_eq!(decode_name(&file).as_deref(), Some(db));
        }
        assert_eq!(decode_name("db"), None);
        assert_eq!(decode_name("a%2-lock"), None);
        assert_eq!(decode_name("a%41-lock"), None);
    }

    #[test]
    fn lock_files_of_hostile_names_name_no_database() {
        let long = format!("{}-lock", "a".repeat(10_000));
        for file in [
            "..-lock",
            "..%2F..%2Fetc%2Fx-lock",
            "a\0b-lock",
            long.as_str(),
            "%2Fetc-lock",
            "a%2F%2Fb-lock",
            "-lock",
        ] {
            assert_eq!(db_of_lock_file(OsStr::new(file)), None, "{file:.40}");
        }
        assert_eq!(
            db_of_lock_file(OsStr::new("a%2Fb-lock")).as_deref(),
            Some("a/b")
        );
    }
}
