//! The FUSE mount: a thin `fuser` adapter over the store. Names map to database files
//! (`<db>`, `<db>-journal`, `<db>-wal`, `<db>-shm`), control files (`<db>-pos`, `<db>-lock`)
//! and `.lag`; every operation is a call into [`litefs_store`], and store errors become errnos
//! in one place ([`errno`]).
//!
//! What the kernel may cache: everything that only changes through this mount. Attributes and
//! directory entries (including "no such file", so SQLite's per-transaction check for a hot
//! journal never leaves the kernel) are cached, and file pages are kept across opens. When the
//! store removes a database's journal, WAL and index itself (a drop), it tells the kernel to
//! forget them; an open that races with that recreates the file, as SQLite's open would. POSIX
//! locks are left to the kernel, which arbitrates them between local processes exactly as on
//! a local filesystem, so SQLite's lock calls never cross FUSE. The control files change on
//! their own and are never cached, and are not listed (they stay readable by name), so a
//! listing matches a local directory's. A database file's mode, owner and times are its
//! backing file's.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use litefs_store::{Db, Error, FileKind, Store};

/// How long the kernel may trust what it was told about files that only change through the
/// mount.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Control files change by themselves.
const NO_CACHE: Duration = Duration::ZERO;
/// Size of `<db>-pos`: `%016x/%016x\n`.
pub const POS_FILE_SIZE: u64 = 34;
/// Size of `.lag`: `%+010d\n`.
pub const LAG_FILE_SIZE: u64 = 11;
const LAG_INO: u64 = 2;
const FIRST_DB_INO: u64 = 16;
const INOS_PER_DB: u64 = 8;

/// Maps a store error to the errno the application sees.
pub fn errno(e: &Error) -> Errno {
    match e {
        Error::Io { source, .. } => source.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
        Error::NotFound(_) => Errno::ENOENT,
        Error::InvalidName(..) | Error::UnalignedWrite { .. } => Errno::EINVAL,
        Error::Growth { .. } => Errno::from_i32(libc::EFBIG),
        _ => Errno::EIO,
    }
}

/// Logs a failed operation (where it is turned into an errno) and maps it.
fn fail(op: &str, e: &Error) -> Errno {
    if !matches!(e, Error::NotFound(_)) {
        tracing::warn!("{op} failed: {}", litefs_store::error_chain(e));
    }
    errno(e)
}

/// A name in the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Data(FileKind),
    Pos,
    Lock,
}

impl Node {
    fn index(self) -> u64 {
        match self {
            Node::Data(FileKind::Database) => 0,
            Node::Data(FileKind::Journal) => 1,
            Node::Data(FileKind::Wal) => 2,
            Node::Data(FileKind::Shm) => 3,
            Node::Pos => 4,
            Node::Lock => 5,
        }
    }

    fn from_index(i: u64) -> Option<Node> {
        Some(match i {
            0 => Node::Data(FileKind::Database),
            1 => Node::Data(FileKind::Journal),
            2 => Node::Data(FileKind::Wal),
            3 => Node::Data(FileKind::Shm),
            4 => Node::Pos,
            5 => Node::Lock,
            _ => return None,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Node::Data(k) => k.suffix(),
            Node::Pos => "-pos",
            Node::Lock => "-lock",
        }
    }
}

/// Splits a file name into a database name and the node it names.
fn parse_name(name: &str) -> (&str, Node) {
    for node in [
        Node::Data(FileKind::Journal),
        Node::Data(FileKind::Wal),
        Node::Data(FileKind::Shm),
        Node::Pos,
        Node::Lock,
    ] {
        if let Some(db) = name.strip_suffix(node.suffix()) {
            if !db.is_empty() {
                return (db, node);
            }
        }
    }
    (name, Node::Data(FileKind::Database))
}

/// Names whose files the mount makes by itself (when their database appears).
fn is_control_name(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n == ".lag" || matches!(parse_name(n).1, Node::Pos | Node::Lock))
}

/// Stable inode numbers for database names and local files, for the life of the mount.
#[derive(Debug, Default)]
struct Inodes {
    by_name: HashMap<String, u64>,
    names: Vec<String>,
    local_by_name: HashMap<String, u64>,
    local_names: Vec<String>,
}

/// Local files take inode numbers from here up.
const FIRST_LOCAL_INO: u64 = 1 << 48;

/// Names of files that are not databases and stay on this node: SQLite's super-journals
/// (`<db>-mj` and nine hex digits, `-mj%06X9%02X`), written while a transaction spanning several
/// attached databases commits.
fn is_local_name(name: &str) -> bool {
    const SUFFIX: usize = 3 + 9;
    name.len() > SUFFIX
        && name.is_char_boundary(name.len() - SUFFIX)
        && name[name.len() - SUFFIX..].starts_with("-mj")
        && name[name.len() - 9..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

fn os_errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Options of the mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Where to mount.
    pub dir: PathBuf,
    /// Let other users use the mount (`fuse.allow-other`).
    pub allow_other: bool,
    /// Log every operation (`fuse.debug`).
    pub debug: bool,
    /// Request threads.
    pub threads: usize,
}

/// The filesystem.
#[derive(Debug)]
pub struct LiteFs {
    store: Arc<Store>,
    inodes: RwLock<Inodes>,
    uid: u32,
    gid: u32,
    debug: bool,
    /// Set once mounted: tells the kernel to forget what it cached about files the store
    /// changed on its own.
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

type OpResult<T> = Result<T, Errno>;

impl LiteFs {
    /// A filesystem over `store`.
    pub fn new(store: Arc<Store>, debug: bool) -> Self {
        // SAFETY: getuid and getgid cannot fail and have no preconditions.
        #[allow(unsafe_code)]
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        LiteFs {
            store,
            inodes: RwLock::new(Inodes::default()),
            uid,
            gid,
            debug,
            notifier: Arc::new(OnceLock::new()),
        }
    }

    /// After a database was dropped, its other files are gone too: drop the kernel's entries
    /// and cached pages for all of them. Runs on its own thread, because the kernel holds the
    /// directory while the request that caused it is being answered.
    fn forget_database(&self, name: &str) {
        let Some(notifier) = self.notifier.get().cloned() else {
            return;
        };
        let nodes: Vec<(String, INodeNo)> = [
            Node::Data(FileKind::Database),
            Node::Data(FileKind::Journal),
            Node::Data(FileKind::Wal),
            Node::Data(FileKind::Shm),
        ]
        .into_iter()
        .map(|n| (format!("{name}{}", n.suffix()), self.ino(name, n)))
        .collect();
        let spawned = std::thread::Builder::new()
            .name("fuse-invalidate".into())
            .spawn(move || {
                for (name, ino) in nodes {
                    // ENOENT: the kernel had nothing cached.
                    let _ = notifier.inval_entry(INodeNo::ROOT, OsStr::new(&name));
                    let _ = notifier.inval_inode(ino, 0, 0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("failed to start cache invalidation: {e}");
        }
    }

    fn db_index(&self, name: &str) -> u64 {
        if let Some(&i) = self
            .inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(name)
        {
            return i;
        }
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&i) = inodes.by_name.get(name) {
            return i;
        }
        let i = inodes.names.len() as u64;
        inodes.names.push(name.to_owned());
        inodes.by_name.insert(name.to_owned(), i);
        i
    }

    fn ino(&self, db: &str, node: Node) -> INodeNo {
        INodeNo(FIRST_DB_INO + self.db_index(db) * INOS_PER_DB + node.index())
    }

    /// The database and node of an inode.
    fn resolve(&self, ino: INodeNo) -> OpResult<(Arc<Db>, Node)> {
        let n = ino.0.checked_sub(FIRST_DB_INO).ok_or(Errno::ENOENT)?;
        let node = Node::from_index(n % INOS_PER_DB).ok_or(Errno::ENOENT)?;
        let name = {
            let inodes = self.inodes.read().unwrap_or_else(|e| e.into_inner());
            inodes
                .names
                .get((n / INOS_PER_DB) as usize)
                .cloned()
                .ok_or(Errno::ENOENT)?
        };
        let db = self.store.db(&name).ok_or(Errno::ENOENT)?;
        Ok((db, node))
    }

    fn attr(&self, ino: INodeNo, size: u64, mtime: SystemTime, perm: u16) -> FileAttr {
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: FileType::RegularFile,
            perm,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn root_attr(&self) -> FileAttr {
        let mut a = self.attr(INodeNo::ROOT, 0, UNIX_EPOCH, 0o755);
        a.kind = FileType::Directory;
        a.nlink = 2;
        a
    }

    fn lag_attr(&self) -> FileAttr {
        self.attr(INodeNo(LAG_INO), LAG_FILE_SIZE, SystemTime::now(), 0o444)
    }

    /// Attributes of a backing file (its own mode, owner and times: what chmod, chown and
    /// utimes through the mount set), or `None` if it does not exist.
    fn file_attr(&self, ino: INodeNo, path: &Path) -> OpResult<Option<FileAttr>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(os_errno(&e)),
        };
        let time = |secs: i64, nsecs: i64| {
            let d = Duration::new(secs.unsigned_abs(), u32::try_from(nsecs).unwrap_or(0));
            if secs >= 0 {
                UNIX_EPOCH + d
            } else {
                UNIX_EPOCH - d
            }
        };
        let mut attr = self.attr(ino, meta.len(), time(meta.mtime(), meta.mtime_nsec()), 0);
        attr.perm = (meta.mode() & 0o7777) as u16;
        attr.uid = meta.uid();
        attr.gid = meta.gid();
        attr.atime = time(meta.atime(), meta.atime_nsec());
        attr.ctime = time(meta.ctime(), meta.ctime_nsec());
        attr.blocks = meta.blocks();
        Ok(Some(attr))
    }

    /// Inode of a local file, by name.
    fn local_ino(&self, name: &str) -> INodeNo {
        if let Some(&i) = self
            .inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .local_by_name
            .get(name)
        {
            return INodeNo(FIRST_LOCAL_INO + i);
        }
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&i) = inodes.local_by_name.get(name) {
            return INodeNo(FIRST_LOCAL_INO + i);
        }
        let i = inodes.local_names.len() as u64;
        inodes.local_names.push(name.to_owned());
        inodes.local_by_name.insert(name.to_owned(), i);
        INodeNo(FIRST_LOCAL_INO + i)
    }

    /// The backing path of a local file's inode, if `ino` is one.
    fn local_path(&self, ino: INodeNo) -> Option<PathBuf> {
        let i = ino.0.checked_sub(FIRST_LOCAL_INO)?;
        let inodes = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        let name = inodes.local_names.get(usize::try_from(i).ok()?)?;
        Some(self.store.files_dir().join(name))
    }

    /// Creates a local file (see [`is_local_name`]).
    fn create_local(&self, name: &str, mode: u32, umask: u32) -> OpResult<FileAttr> {
        let path = self.store.files_dir().join(name);
        std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|_| {
                std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(mode & !umask & 0o7777),
                )
            })
            .map_err(|e| os_errno(&e))?;
        self.file_attr(self.local_ino(name), &path)?
            .ok_or(Errno::EIO)
    }

    /// Attributes of a node, or `None` if it does not exist; with the TTL the kernel may keep.
    fn node_attr(&self, db: &Db, node: Node) -> OpResult<Option<(FileAttr, Duration)>> {
        if !db.is_present() {
            return Ok(None);
        }
        let ino = self.ino(db.name(), node);
        match node {
            Node::Data(kind) => {
                let path = db.dir().join(kind.backing_name());
                Ok(self.file_attr(ino, &path)?.map(|a| (a, CACHE_TTL)))
            }
            Node::Pos => {
                let ms = u64::try_from(db.timestamp()).unwrap_or(0);
                let mtime = UNIX_EPOCH + Duration::from_millis(ms);
                Ok(Some((
                    self.attr(ino, POS_FILE_SIZE, mtime, 0o666),
                    NO_CACHE,
                )))
            }
            Node::Lock => Ok(Some((self.attr(ino, 0, UNIX_EPOCH, 0o444), NO_CACHE))),
        }
    }

    fn lookup_name(&self, name: &OsStr) -> OpResult<Option<(FileAttr, Duration)>> {
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        if name == ".lag" {
            return Ok(Some((self.lag_attr(), NO_CACHE)));
        }
        if is_local_name(name) {
            let ino = self.local_ino(name);
            let path = self.store.files_dir().join(name);
            return Ok(self.file_attr(ino, &path)?.map(|a| (a, CACHE_TTL)));
        }
        let (db_name, node) = parse_name(name);
        let Some(db) = self.store.db(db_name) else {
            return Ok(None);
        };
        self.node_attr(&db, node)
    }

    fn lag_content(&self) -> Vec<u8> {
        // A single node is always the primary: no lag.
        format!("{:+010}\n", 0).into_bytes()
    }

    fn do_create(&self, name: &OsStr, mode: u32, umask: u32) -> OpResult<(FileAttr, Node)> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        let (db_name, node) = parse_name(name);
        let kind = match node {
            Node::Data(kind) => kind,
            _ => return Err(Errno::EPERM),
        };
        let db = if kind == FileKind::Database {
            let db = self
                .store
                .create_db(db_name)
                .map_err(|e| fail("create", &e))?;
            db.set_present();
            db
        } else {
            let db = self.store.db(db_name).ok_or(Errno::ENOENT)?;
            if !db.is_present() {
                return Err(Errno::ENOENT);
            }
            db.create(kind).map_err(|e| fail("create", &e))?;
            db
        };
        let path = db.dir().join(kind.backing_name());
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(mode & !umask & 0o7777),
        )
        .map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let (attr, _) = self.node_attr(&db, node)?.ok_or(Errno::EIO)?;
        Ok((attr, node))
    }

    fn open_flags(node: Node) -> FopenFlags {
        match node {
            Node::Data(_) => FopenFlags::FOPEN_KEEP_CACHE,
            _ => FopenFlags::FOPEN_DIRECT_IO,
        }
    }

    fn log(&self, op: &str, detail: std::fmt::Arguments<'_>) {
        if self.debug {
            tracing::debug!("fuse {op} {detail}");
        }
    }
}

impl Filesystem for LiteFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.log("lookup", format_args!("{name:?}"));
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        match self.lookup_name(name) {
            Ok(Some((attr, ttl))) => reply.entry(&ttl, &attr, fuser::Generation(0)),
            // Control files appear without the kernel seeing a create: never cache their
            // absence.
            Ok(None) if is_control_name(name) => reply.error(Errno::ENOENT),
            // Inode 0 tells the kernel to remember that the name does not exist; any create of
            // it goes through the kernel, which then forgets that.
            Ok(None) => {
                let mut attr = self.attr(INodeNo(0), 0, UNIX_EPOCH, 0);
                attr.nlink = 0;
                reply.entry(&CACHE_TTL, &attr, fuser::Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return reply.attr(&CACHE_TTL, &self.root_attr());
        }
        if ino.0 == LAG_INO {
            return reply.attr(&NO_CACHE, &self.lag_attr());
        }
        if let Some(path) = self.local_path(ino) {
            return match self.file_attr(ino, &path) {
                Ok(Some(attr)) => reply.attr(&CACHE_TTL, &attr),
                Ok(None) => reply.error(Errno::ENOENT),
                Err(e) => reply.error(e),
            };
        }
        let res = self
            .resolve(ino)
            .and_then(|(db, node)| self.node_attr(&db, node));
        match res {
            Ok(Some((attr, ttl))) => reply.attr(&ttl, &attr),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.log("setattr", format_args!("{ino} size={size:?}"));
        if ino == INodeNo::ROOT {
            return reply.attr(&CACHE_TTL, &self.root_attr());
        }
        if let Some(path) = self.local_path(ino) {
            let res = (|| {
                if let Some(size) = size {
                    std::fs::File::options()
                        .write(true)
                        .open(&path)?
                        .set_len(size)?;
                }
                set_metadata(&path, mode, uid, gid, atime, mtime)
            })()
            .map_err(|e| os_errno(&e))
            .and_then(|()| self.file_attr(ino, &path)?.ok_or(Errno::ENOENT));
            return match res {
                Ok(attr) => reply.attr(&CACHE_TTL, &attr),
                Err(e) => reply.error(e),
            };
        }
        let res = self.resolve(ino).and_then(|(db, node)| {
            if let Some(size) = size {
                match node {
                    Node::Data(kind) => {
                        db.truncate(kind, size).map_err(|e| fail("truncate", &e))?
                    }
                    _ => return Err(Errno::EACCES),
                }
            }
            if let Node::Data(kind) = node {
                let path = db.dir().join(kind.backing_name());
                set_metadata(&path, mode, uid, gid, atime, mtime).map_err(|e| {
                    tracing::warn!(path = %path.display(), "setattr failed: {e}");
                    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
                })?;
            }
            self.node_attr(&db, node)?.ok_or(Errno::ENOENT)
        });
        match res {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.log("unlink", format_args!("{name:?}"));
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        if is_local_name(name) {
            return match std::fs::remove_file(self.store.files_dir().join(name)) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(os_errno(&e)),
            };
        }
        let (db_name, node) = parse_name(name);
        let Some(db) = self.store.db(db_name) else {
            return reply.error(Errno::ENOENT);
        };
        let res = match node {
            Node::Data(kind) => db.remove(kind).map_err(|e| fail("unlink", &e)),
            _ => Err(Errno::EACCES),
        };
        match res {
            Ok(()) => {
                reply.ok();
                if node == Node::Data(FileKind::Database) {
                    self.forget_database(db_name);
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == LAG_INO {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        if let Some(path) = self.local_path(ino) {
            return if path.exists() {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            } else {
                reply.error(Errno::ENOENT)
            };
        }
        match self.resolve(ino) {
            Ok((db, node)) => match self.node_attr(&db, node) {
                Ok(Some(_)) => reply.opened(FileHandle(0), Self::open_flags(node)),
                // A journal, WAL or index the store removed itself (dropping the database)
                // while the kernel still had its entry: SQLite opens these to create them, so
                // create it again.
                Ok(None)
                    if db.is_present()
                        && matches!(node, Node::Data(k) if k != FileKind::Database) =>
                {
                    let Node::Data(kind) = node else {
                        return reply.error(Errno::ENOENT);
                    };
                    match db.create(kind) {
                        Ok(()) => reply.opened(FileHandle(0), Self::open_flags(node)),
                        Err(e) => reply.error(fail("create", &e)),
                    }
                }
                Ok(None) => reply.error(Errno::ENOENT),
                Err(e) => reply.error(e),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let slice = |content: &[u8]| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(content.len());
            let end = start.saturating_add(size as usize).min(content.len());
            content[start..end].to_vec()
        };
        if ino.0 == LAG_INO {
            return reply.data(&slice(&self.lag_content()));
        }
        if let Some(path) = self.local_path(ino) {
            let res = std::fs::File::open(&path).and_then(|f| {
                let mut buf = vec![0u8; size as usize];
                let n = litefs_store::fsutil::read_full_at(&f, &mut buf, offset)?;
                buf.truncate(n);
                Ok(buf)
            });
            return match res {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(os_errno(&e)),
            };
        }
        let res = self.resolve(ino).and_then(|(db, node)| match node {
            Node::Data(kind) => {
                let mut buf = vec![0u8; size as usize];
                let n = db
                    .read(kind, offset, &mut buf)
                    .map_err(|e| fail("read", &e))?;
                buf.truncate(n);
                Ok(buf)
            }
            Node::Pos => Ok(slice(format!("{}\n", db.pos()).as_bytes())),
            Node::Lock => Ok(Vec::new()),
        });
        match res {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.log(
            "write",
            format_args!("{ino} offset={offset} len={}", data.len()),
        );
        if let Some(path) = self.local_path(ino) {
            use std::os::unix::fs::FileExt;
            let res = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.write_all_at(data, offset));
            return match res {
                Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
                Err(e) => reply.error(os_errno(&e)),
            };
        }
        let res = self.resolve(ino).and_then(|(db, node)| match node {
            Node::Data(kind) => db.write(kind, offset, data).map_err(|e| fail("write", &e)),
            Node::Pos => Err(Errno::EACCES),
            Node::Lock => Err(Errno::EIO),
        });
        match res {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
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

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(path) = self.local_path(ino) {
            return match std::fs::File::open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(os_errno(&e)),
            };
        }
        let res = self.resolve(ino).and_then(|(db, node)| match node {
            Node::Data(kind) => db.fsync(kind).map_err(|e| fail("fsync", &e)),
            _ => Ok(()),
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.store.sync_dirs() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("fsyncdir", &e)),
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
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries: Vec<(INodeNo, FileType, String)> = vec![
            (INodeNo::ROOT, FileType::Directory, ".".into()),
            (INodeNo::ROOT, FileType::Directory, "..".into()),
            (INodeNo(LAG_INO), FileType::RegularFile, ".lag".into()),
        ];
        for db in self.store.dbs() {
            if !db.is_present() || db.page_count() == 0 {
                continue;
            }
            let name = db.name().to_owned();
            entries.push((
                self.ino(&name, Node::Data(FileKind::Database)),
                FileType::RegularFile,
                name.clone(),
            ));
            for kind in [FileKind::Journal, FileKind::Shm, FileKind::Wal] {
                if db.exists(kind) {
                    entries.push((
                        self.ino(&name, Node::Data(kind)),
                        FileType::RegularFile,
                        format!("{name}{}", kind.suffix()),
                    ));
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.store.files_dir()) {
            for entry in dir.flatten() {
                if let Some(name) = entry.file_name().to_str().filter(|n| is_local_name(n)) {
                    entries.push((self.local_ino(name), FileType::RegularFile, name.to_owned()));
                }
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(
                ino,
                (i + 1) as u64,
                kind,
                OsStr::from_bytes(name.as_bytes()),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match statvfs(self.store.dbs_dir()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                255,
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.log("create", format_args!("{name:?}"));
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        if let Some(local) = name.to_str().filter(|n| is_local_name(n)) {
            return match self.create_local(local, mode, umask) {
                Ok(attr) => reply.created(
                    &CACHE_TTL,
                    &attr,
                    fuser::Generation(0),
                    FileHandle(0),
                    FopenFlags::FOPEN_KEEP_CACHE,
                ),
                Err(e) => reply.error(e),
            };
        }
        match self.do_create(name, mode, umask) {
            Ok((attr, node)) => reply.created(
                &CACHE_TTL,
                &attr,
                fuser::Generation(0),
                FileHandle(0),
                Self::open_flags(node),
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// Applies chmod, chown and utimes to a backing file.
fn set_metadata(
    path: &Path,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
) -> io::Result<()> {
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    if atime.is_some() || mtime.is_some() {
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        };
        let mut times = std::fs::FileTimes::new();
        if let Some(t) = atime {
            times = times.set_accessed(at(t));
        }
        if let Some(t) = mtime {
            times = times.set_modified(at(t));
        }
        std::fs::File::options()
            .write(true)
            .open(path)?
            .set_times(times)?;
    }
    Ok(())
}

fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `out` points to writable memory of the
    // right type; statvfs fills it completely on success.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statvfs(c.as_ptr(), out.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so `out` is initialised.
    #[allow(unsafe_code)]
    Ok(unsafe { out.assume_init() })
}

/// A mounted filesystem; unmounts when dropped or by [`Mount::unmount`].
#[derive(Debug)]
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
}

impl Mount {
    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and waits for the request threads to finish.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                tracing::warn!(dir = %self.dir.display(), "failed to unmount: {e}");
            }
        }
    }
}

/// Unmounts whatever is mounted at `dir` (a mount left by a process that died), if anything.
pub fn unmount_stale(dir: &Path) -> io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let target = dir.to_string_lossy();
    let mounted = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| m.replace("\\040", " ") == target);
    if !mounted {
        return Ok(());
    }
    tracing::info!(dir = %dir.display(), "unmounting a stale mount");
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(dir)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fusermount3 -u -z {} failed: {status}",
            dir.display()
        )))
    }
}

/// Mounts `store` at `opts.dir` (created if missing) and serves it on background threads.
pub fn mount(store: Arc<Store>, opts: &MountOptions) -> io::Result<Mount> {
    let dir = std::fs::canonicalize(&opts.dir).or_else(|_| {
        std::fs::create_dir_all(&opts.dir)?;
        std::fs::canonicalize(&opts.dir)
    })?;
    let mut options = vec![
        MountOption::FSName("litefs".into()),
        MountOption::Subtype("litefs-rs".into()),
    ];
    let acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    options.push(MountOption::CUSTOM("default_permissions".into()));
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let fs = LiteFs::new(store, opts.debug);
    let notifier = fs.notifier.clone();
    let session = fuser::spawn_mount(fs, &dir, &config)?;
    let _ = notifier.set(session.notifier());
    Ok(Mount {
        session: Some(session),
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_databases_and_nodes() {
        assert_eq!(parse_name("db"), ("db", Node::Data(FileKind::Database)));
        assert_eq!(
            parse_name("db-journal"),
            ("db", Node::Data(FileKind::Journal))
        );
        assert_eq!(
            parse_name("my.db-wal"),
            ("my.db", Node::Data(FileKind::Wal))
        );
        assert_eq!(parse_name("x-shm"), ("x", Node::Data(FileKind::Shm)));
        assert_eq!(parse_name("x-pos"), ("x", Node::Pos));
        assert_eq!(parse_name("x-lock"), ("x", Node::Lock));
        assert_eq!(parse_name("-wal"), ("-wal", Node::Data(FileKind::Database)));
        assert!(is_local_name("app.db-mj887FE9912"));
        assert!(!is_local_name("app.db-mj887FE991"));
        assert!(!is_local_name("-mj887FE991Z"));
        assert!(!is_local_name("app.db"));
    }

    #[test]
    fn control_file_sizes() {
        assert_eq!(
            format!("{}\n", litefs_ltx::Pos::ZERO).len() as u64,
            POS_FILE_SIZE
        );
        assert_eq!(format!("{:+010}\n", 0).len() as u64, LAG_FILE_SIZE);
    }
}
