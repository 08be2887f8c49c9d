//! The FUSE mount: a thin `fuser` adapter over the store, shaped like a local directory.
//!
//! Names: a path whose last component is `<db>`, `<db>-journal`, `<db>-wal` or `<db>-shm` for a
//! database `<dir>/<db>` of the store is that database's file; `<db>-pos` and `<db>-lock` are
//! its control files, and `.lag` is at the top. Everything else (subdirectories, and files that
//! are not databases: logs, scripts, SQLite's super-journals) lives under `data/files/` and
//! stays on this node. A new file starts as a plain file and becomes a database when SQLite
//! starts a transaction in it (it creates its journal or WAL), or when a writer closes or syncs
//! it holding a whole SQLite database (`cp`); its content is then the database's first
//! transaction. Writes into a database outside SQLite's transactions (`cp` over it) are
//! recorded as one transaction on close or sync. A rename of a database, or of a plain file
//! holding one, over a database name replaces it atomically, as one transaction of the target.
//! Every operation is a call into [`litefs_store`] or the local filesystem, and store errors
//! become errnos in one place ([`errno`]).
//!
//! What the kernel may cache: everything that only changes through this mount. Attributes and
//! directory entries (including "no such file", so SQLite's per-transaction check for a hot
//! journal never leaves the kernel) are cached, and file pages are kept across opens. When the
//! store removes a database's journal, WAL and index itself (a drop or a replacement), it tells
//! the kernel to forget them; an open that races with that recreates the file, as SQLite's
//! open would. POSIX locks are left to the kernel, which arbitrates them between local
//! processes exactly as on a local filesystem, so SQLite's lock calls never cross FUSE; the one
//! lock litefs-rs must see, the halt lock on `<db>-lock`, is taken on a second mount that
//! `<db>-lock` links to (see [`halt`]). The
//! control files change on their own and are never cached, and are not listed (they stay
//! readable by name), so a listing matches a local directory's. A file's mode, owner and times
//! are its backing file's.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use litefs_store::{Content, Db, Error, FileKind, Store};

mod halt;
pub use fuser::Errno as HaltErrno;
pub use halt::{HaltLocks, HALT_BYTE};

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
const PRIMARY_INO: u64 = 3;
/// `.lag` before the node is ready: the largest value its 11 bytes hold.
const LAG_NOT_READY: i64 = 999_999_999;
/// Other paths take inode numbers from here up.
const FIRST_INO: u64 = 16;

/// Maps a store error to the errno the application sees.
pub fn errno(e: &Error) -> Errno {
    match e {
        Error::Io { source, .. } => source.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
        Error::NotFound(_) => Errno::ENOENT,
        Error::InvalidName(name, _)
            if name.len() > litefs_store::MAX_NAME_LEN
                || name.split('/').any(|c| c.len() > MAX_COMPONENT) =>
        {
            Errno::ENAMETOOLONG
        }
        Error::InvalidName(..) | Error::UnalignedWrite { .. } => Errno::EINVAL,
        Error::Growth { .. } => Errno::from_i32(libc::EFBIG),
        Error::Busy { .. } => Errno::EBUSY,
        Error::ReadOnly(_) => Errno::EROFS,
        Error::NotADatabase { .. } => Errno::EINVAL,
        // An I/O error inside another one (writing an LTX file, say) keeps its errno: ENOSPC
        // must reach SQLite as ENOSPC, which it reports as SQLITE_FULL.
        other => io_source(other)
            .and_then(io::Error::raw_os_error)
            .map_or(Errno::EIO, Errno::from_i32),
    }
}

/// The first I/O error among the sources of `e`.
fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// The longest component of a path (the kernel's limit too).
const MAX_COMPONENT: usize = 255;

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
    name.to_str().is_some_and(|n| {
        n == ".lag" || n == ".primary" || matches!(parse_name(n).1, Node::Pos | Node::Lock)
    })
}

/// Splits a path of the mount into its directory (`""` at the top) and its last component.
fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// `dir/name`, or `name` at the top.
fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// True if `path` is `dir` itself or below it.
fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// True if the last component of `path` can name a database: not one of a database's other
/// files (`-journal`, `-wal`, `-shm`, `-pos`, `-lock`), which it would be taken for.
fn names_a_database(path: &str) -> bool {
    parse_name(split_path(path).1).1 == Node::Data(FileKind::Database)
}

/// True if the thread id `tid` (what FUSE reports as a request's pid) is one of this
/// process's threads.
fn is_own_thread(tid: u32) -> bool {
    Path::new("/proc/self/task").join(tid.to_string()).exists()
}

/// The open flags for a file this process opens in its own mount (to take SQLite's locks
/// while it applies a replicated transaction, or for the halt lock): no FLUSH on close. A
/// process killed while it holds such a file closes it as it exits, and a FLUSH would wait for
/// an answer from its own threads, which are gone: it would never exit.
fn own_open(req: &Request, flags: FopenFlags) -> FopenFlags {
    if is_own_thread(req.pid()) {
        flags | FopenFlags::FOPEN_NOFLUSH
    } else {
        flags
    }
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
    /// Where to mount the halt lock's file system (see [`halt`]); `<db>-lock` is a symbolic
    /// link into it. Without it, `<db>-lock` is an empty file whose locks do nothing.
    pub halt_dir: Option<PathBuf>,
}

/// Inode numbers: one per path of the mount, stable for the life of the mount; a rename moves
/// the inode with the file, as the kernel expects.
#[derive(Debug)]
struct Inodes {
    by_path: HashMap<Arc<str>, u64>,
    /// The path of each inode. An inode whose file was unlinked or replaced is detached: it
    /// keeps its entry here (not in `by_path`) until the kernel forgets it, and names nothing.
    paths: HashMap<u64, Arc<str>>,
    /// Detached inodes of plain files that were open when unlinked: where their data is.
    orphans: HashMap<u64, PathBuf>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut inodes = Inodes {
            by_path: HashMap::new(),
            paths: HashMap::new(),
            orphans: HashMap::new(),
            next: FIRST_INO,
        };
        for (ino, path) in [
            (INodeNo::ROOT.0, ""),
            (LAG_INO, ".lag"),
            (PRIMARY_INO, ".primary"),
        ] {
            let path: Arc<str> = Arc::from(path);
            inodes.by_path.insert(path.clone(), ino);
            inodes.paths.insert(ino, path);
        }
        inodes
    }
}

/// A directory's entries: inode, type and name.
type Listing = Vec<(INodeNo, FileType, String)>;

/// Open file and directory handles.
#[derive(Debug, Default)]
struct Handles {
    next: AtomicU64,
    /// Handles that wrote to a database or a plain file since they were opened.
    wrote: Mutex<std::collections::HashSet<u64>>,
    /// The inode of each open file handle.
    files: Mutex<HashMap<u64, u64>>,
    /// The listing of each open directory, taken when it was opened, so that reading it in
    /// several calls neither skips nor repeats entries.
    listings: Mutex<HashMap<u64, Listing>>,
}

impl Handles {
    fn open(&self) -> FileHandle {
        FileHandle(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn open_file(&self, ino: INodeNo) -> FileHandle {
        let fh = self.open();
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh.0, ino.0);
        fh
    }

    fn release_file(&self, fh: FileHandle) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        self.take_wrote(fh);
    }

    /// Marks every handle open on `ino` as having written; false if there is none.
    fn all_wrote(&self, ino: INodeNo) -> bool {
        let open: Vec<u64> = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, &i)| i == ino.0)
            .map(|(&fh, _)| fh)
            .collect();
        for &fh in &open {
            self.wrote(FileHandle(fh));
        }
        !open.is_empty()
    }

    fn wrote(&self, fh: FileHandle) {
        self.wrote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh.0);
    }

    /// True if `fh` wrote since it was opened or last settled.
    fn take_wrote(&self, fh: FileHandle) -> bool {
        self.wrote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0)
    }
}

/// What a path of the mount is.
#[derive(Debug)]
enum Target {
    /// The mount's top directory.
    Root,
    /// `.lag`.
    Lag,
    /// `.primary` (on a replica that knows its primary).
    Primary,
    /// A subdirectory: its folder under `files/` (which may not exist yet when only
    /// databases below it do).
    Dir(PathBuf),
    /// A database's file or control file.
    Db(Arc<Db>, Node),
    /// A file that is not a database, kept under `files/`.
    Local(PathBuf),
}

/// The filesystem.
#[derive(Debug)]
pub struct LiteFs {
    store: Arc<Store>,
    inodes: Arc<RwLock<Inodes>>,
    /// Held by operations that change names (create, rename, unlink, mkdir, rmdir, and a file
    /// becoming a database), so that each sees and leaves a consistent namespace.
    names: RwLock<()>,
    /// File handles: the next number, the handles that wrote (their close may record a
    /// database), and the listings of open directories.
    handles: Handles,
    /// Where plain files unlinked while open are kept until the kernel forgets them.
    orphans_dir: PathBuf,
    uid: u32,
    gid: u32,
    debug: bool,
    /// Set once mounted: tells the kernel to forget what it cached about files the store
    /// changed on its own.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    /// The halt lock's mount, which `<db>-lock` links into.
    halt_dir: Option<PathBuf>,
}

type OpResult<T> = Result<T, Errno>;

impl LiteFs {
    /// A filesystem over `store`.
    pub fn new(store: Arc<Store>, debug: bool) -> Self {
        let orphans_dir = store
            .files_dir()
            .parent()
            .unwrap_or(store.files_dir())
            .join("orphans");
        // Left by a previous process: nothing can have them open now.
        let _ = std::fs::remove_dir_all(&orphans_dir);
        // SAFETY: getuid and getgid cannot fail and have no preconditions.
        #[allow(unsafe_code)]
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        LiteFs {
            store,
            inodes: Arc::new(RwLock::new(Inodes::default())),
            names: RwLock::new(()),
            handles: Handles::default(),
            orphans_dir,
            uid,
            gid,
            debug,
            notifier: Arc::new(OnceLock::new()),
            halt_dir: None,
        }
    }

    /// For operations that change names.
    fn lock_names(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.names.write().unwrap_or_else(|e| e.into_inner())
    }

    /// For writes to plain files, which must not race with one becoming a database.
    fn share_names(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.names.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The inode of `path`, allocated on first use.
    fn ino(&self, path: &str) -> INodeNo {
        if let Some(&i) = self
            .inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_path
            .get(path)
        {
            return INodeNo(i);
        }
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&i) = inodes.by_path.get(path) {
            return INodeNo(i);
        }
        let i = inodes.next;
        inodes.next += 1;
        let path: Arc<str> = Arc::from(path);
        inodes.by_path.insert(path.clone(), i);
        inodes.paths.insert(i, path);
        INodeNo(i)
    }

    /// The inode `path` has now, if it has one.
    fn existing_ino(&self, path: &str) -> Option<INodeNo> {
        self.inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_path
            .get(path)
            .map(|&i| INodeNo(i))
    }

    /// The path of an inode.
    fn path(&self, ino: INodeNo) -> OpResult<Arc<str>> {
        self.inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    /// After a rename: the inode of `from` (and, for a directory, of everything below it)
    /// now names `to`.
    fn moved(&self, from: &str, to: &str, dir: bool) {
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        let moving: Vec<(Arc<str>, u64)> = if dir {
            inodes
                .by_path
                .iter()
                .filter(|(p, _)| is_under(p, from))
                .map(|(p, &i)| (p.clone(), i))
                .collect()
        } else {
            inodes
                .by_path
                .get_key_value(from)
                .map(|(p, &i)| (p.clone(), i))
                .into_iter()
                .collect()
        };
        for (old, i) in moving {
            let new: Arc<str> = Arc::from(format!("{to}{}", &old[from.len()..]));
            inodes.by_path.remove(&old);
            inodes.by_path.insert(new.clone(), i);
            inodes.paths.insert(i, new);
        }
    }

    /// Detaches the inode of `path` (its file was unlinked or replaced): it names nothing from
    /// now on, and `path` gets a new inode when it exists again. Returns the inode.
    fn detach(&self, path: &str) -> Option<INodeNo> {
        let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        let i = inodes.by_path.remove(path)?;
        inodes.paths.remove(&i);
        Some(INodeNo(i))
    }

    /// Keeps an unlinked plain file's data reachable through its (detached) inode, for the
    /// handles still open on it, as a local filesystem does: it is moved (or, when `link`,
    /// hard-linked, because a rename is about to replace it) to the orphans folder, and
    /// deleted when the kernel forgets the inode.
    fn orphan(&self, ino: INodeNo, local: &Path, link: bool) -> io::Result<()> {
        std::fs::create_dir_all(&self.orphans_dir)?;
        let to = self.orphans_dir.join(ino.0.to_string());
        if link {
            std::fs::hard_link(local, &to)?;
        } else {
            std::fs::rename(local, &to)?;
        }
        self.inodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .orphans
            .insert(ino.0, to);
        Ok(())
    }

    /// The path of `name` in directory `parent`.
    fn child(&self, parent: INodeNo, name: &OsStr) -> OpResult<String> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(Errno::EINVAL);
        }
        let dir = self.path(parent)?;
        Ok(join_path(&dir, name))
    }

    fn local_path(&self, path: &str) -> PathBuf {
        self.store.files_dir().join(path)
    }

    /// True if a database exists below directory `dir`.
    fn has_databases_under(&self, dir: &str) -> bool {
        self.store
            .dbs()
            .iter()
            .any(|db| db.name().len() > dir.len() && is_under(db.name(), dir) && db.is_present())
    }

    /// What `path` is, or `None` if it does not exist. With `exists`, a database's journal,
    /// WAL or index counts only if its file exists (open handles need not check).
    fn classify(&self, path: &str, exists: bool) -> OpResult<Option<Target>> {
        if path.is_empty() {
            return Ok(Some(Target::Root));
        }
        if path == ".lag" {
            return Ok(Some(Target::Lag));
        }
        if path == ".primary" {
            return Ok(self.store.status().primary().map(|_| Target::Primary));
        }
        let (dir, base) = split_path(path);
        let (db_base, node) = parse_name(base);
        if let Some(db) = self.store.db(&join_path(dir, db_base)) {
            if db.is_present() {
                let there = match node {
                    Node::Data(kind) if exists => db.exists(kind),
                    _ => true,
                };
                if there {
                    return Ok(Some(Target::Db(db, node)));
                }
            }
        }
        let local = self.local_path(path);
        match std::fs::symlink_metadata(&local) {
            Ok(m) if m.is_dir() => Ok(Some(Target::Dir(local))),
            Ok(_) => Ok(Some(Target::Local(local))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.has_databases_under(path) {
                    Ok(Some(Target::Dir(local)))
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(os_errno(&e)),
        }
    }

    /// What an inode names, for an operation on it.
    fn target(&self, ino: INodeNo, exists: bool) -> OpResult<Target> {
        if let Some(orphan) = self
            .inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .orphans
            .get(&ino.0)
        {
            return Ok(Target::Local(orphan.clone()));
        }
        let path = self.path(ino)?;
        self.classify(&path, exists)?.ok_or(Errno::ENOENT)
    }

    /// Tells the kernel to forget the entries `names` (directory inode, name) and the cached
    /// pages of `inodes`. Runs on its own thread, because the kernel holds the directory while
    /// the request that caused it is being answered.
    fn invalidate(&self, names: Vec<(INodeNo, String)>, inodes: Vec<INodeNo>) {
        let Some(notifier) = self.notifier.get().cloned() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("fuse-invalidate".into())
            .spawn(move || {
                // ENOENT: the kernel had nothing cached.
                for (parent, name) in names {
                    let _ = notifier.inval_entry(parent, OsStr::new(&name));
                }
                for ino in inodes {
                    let _ = notifier.inval_inode(ino, 0, 0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("failed to start cache invalidation: {e}");
        }
    }

    /// After a database was dropped or replaced, its other files are gone: drop the kernel's
    /// entries and cached pages for all of them (and for `extra` inodes).
    fn forget_database(&self, name: &str, extra: Vec<INodeNo>) {
        let (dir, base) = split_path(name);
        let parent = self.ino(dir);
        let mut names = Vec::new();
        let mut inodes = extra;
        for kind in FileKind::ALL {
            let file = format!("{base}{}", kind.suffix());
            if let Some(ino) = self.existing_ino(&join_path(dir, &file)) {
                inodes.push(ino);
            }
            names.push((parent, file));
        }
        self.invalidate(names, inodes);
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

    fn lag_attr(&self) -> FileAttr {
        let mtime = match self.store.status().primary_timestamp() {
            0 => SystemTime::now(),
            ts => UNIX_EPOCH + Duration::from_millis(u64::try_from(ts).unwrap_or(0)),
        };
        self.attr(INodeNo(LAG_INO), LAG_FILE_SIZE, mtime, 0o444)
    }

    /// Attributes of a backing file or folder (its own mode, owner and times: what chmod,
    /// chown and utimes through the mount set), or `None` if it does not exist.
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
        if meta.is_dir() {
            attr.kind = FileType::Directory;
            attr.nlink = 2;
        }
        Ok(Some(attr))
    }

    /// Attributes of a directory: its folder's, or made up when only databases below it
    /// exist.
    fn dir_attr(&self, ino: INodeNo, local: &Path) -> OpResult<FileAttr> {
        if let Some(attr) = self.file_attr(ino, local)? {
            return Ok(attr);
        }
        let mut attr = self.attr(ino, 0, UNIX_EPOCH, 0o755);
        attr.kind = FileType::Directory;
        attr.nlink = 2;
        Ok(attr)
    }

    /// Attributes of a database node, or `None` if it does not exist; with the TTL the kernel
    /// may keep.
    fn node_attr(
        &self,
        ino: INodeNo,
        db: &Db,
        node: Node,
    ) -> OpResult<Option<(FileAttr, Duration)>> {
        if !db.is_present() {
            return Ok(None);
        }
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
            Node::Lock => match &self.halt_dir {
                Some(dir) => {
                    let len = halt::link_target(dir, db.name()).as_os_str().len() as u64;
                    let mut a = self.attr(ino, len, UNIX_EPOCH, 0o777);
                    a.kind = FileType::Symlink;
                    Ok(Some((a, NO_CACHE)))
                }
                None => Ok(Some((self.attr(ino, 0, UNIX_EPOCH, 0o444), NO_CACHE))),
            },
        }
    }

    /// Attributes of what `target` is, with the TTL the kernel may keep.
    fn target_attr(&self, ino: INodeNo, target: &Target) -> OpResult<Option<(FileAttr, Duration)>> {
        match target {
            Target::Root => Ok(Some((
                self.dir_attr(ino, self.store.files_dir())?,
                CACHE_TTL,
            ))),
            Target::Lag => Ok(Some((self.lag_attr(), NO_CACHE))),
            Target::Primary => {
                let size = self.primary_content().len() as u64;
                Ok(Some((
                    self.attr(INodeNo(PRIMARY_INO), size, SystemTime::now(), 0o444),
                    NO_CACHE,
                )))
            }
            Target::Dir(local) => Ok(Some((self.dir_attr(ino, local)?, CACHE_TTL))),
            Target::Local(local) => Ok(self.file_attr(ino, local)?.map(|a| (a, CACHE_TTL))),
            Target::Db(db, node) => self.node_attr(ino, db, *node),
        }
    }

    fn lag_content(&self) -> Vec<u8> {
        let lag = self.store.status().lag_ms().unwrap_or(LAG_NOT_READY);
        format!("{:+010}\n", lag.min(LAG_NOT_READY)).into_bytes()
    }

    fn primary_content(&self) -> Vec<u8> {
        self.store
            .status()
            .primary()
            .map(|h| format!("{h}\n").into_bytes())
            .unwrap_or_default()
    }

    /// Makes sure the folder of `path`'s directory exists under `files/` (a directory only
    /// databases made has none yet).
    fn local_parent(&self, path: &str) -> OpResult<()> {
        let (dir, _) = split_path(path);
        if dir.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(self.local_path(dir)).map_err(|e| os_errno(&e))
    }

    /// Turns the file at `path` into a database if it holds one (a header and whole pages),
    /// or, with `empty_too`, if it is empty (SQLite starting its first transaction in a new
    /// file). Its content becomes the database's first transaction. Returns the database, or
    /// `None` if the file stays a plain file.
    fn promote(&self, path: &str, empty_too: bool) -> OpResult<Option<Arc<Db>>> {
        let local = self.local_path(path);
        let content = match std::fs::File::open(&local).and_then(|f| litefs_store::content_of(&f)) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(os_errno(&e)),
        };
        let empty = match content {
            Content::Empty if empty_too => true,
            Content::Database(_) => false,
            _ => return Ok(None),
        };
        if self.store.db(path).is_some_and(|db| db.is_present()) || !names_a_database(path) {
            return Ok(None);
        }
        if litefs_store::validate_name(path).is_err() {
            tracing::info!(path, "not a database name: the file stays a plain file");
            return Ok(None);
        }
        if self.store.is_readonly() {
            // Databases are made on the primary.
            return Err(Errno::EROFS);
        }
        let db = self.store.create_db(path).map_err(|e| fail("create", &e))?;
        if empty {
            let meta = std::fs::metadata(&local).map_err(|e| os_errno(&e))?;
            let backing = db.dir().join(FileKind::Database.backing_name());
            std::fs::set_permissions(&backing, meta.permissions())
                .and_then(|()| {
                    std::os::unix::fs::chown(&backing, Some(meta.uid()), Some(meta.gid()))
                })
                .map_err(|e| os_errno(&e))?;
            db.set_present();
            std::fs::remove_file(&local).map_err(|e| os_errno(&e))?;
        } else {
            db.replace_with(&local).map_err(|e| fail("capture", &e))?;
        }
        tracing::info!(db = %path, pos = %db.pos(), "a new file became a database");
        Ok(Some(db))
    }

    /// Creates `path` (mode already masked): a database's journal, WAL or index; else a plain
    /// file. A journal, WAL or index next to a plain file that is empty or holds a database
    /// makes that file a database first.
    fn do_create(&self, path: &str, mode: u32) -> OpResult<(FileAttr, FopenFlags)> {
        let (dir, base) = split_path(path);
        let (db_base, node) = parse_name(base);
        let db_name = join_path(dir, db_base);
        if let Node::Data(kind) = node {
            if kind != FileKind::Database {
                let db = match self.store.db(&db_name).filter(|db| db.is_present()) {
                    Some(db) => Some(db),
                    None => self.promote(&db_name, true)?,
                };
                if let Some(db) = db {
                    db.create(kind).map_err(|e| fail("create", &e))?;
                    let backing = db.dir().join(kind.backing_name());
                    std::fs::set_permissions(&backing, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| os_errno(&e))?;
                    let ino = self.ino(path);
                    let (attr, _) = self.node_attr(ino, &db, node)?.ok_or(Errno::EIO)?;
                    return Ok((attr, open_flags(node)));
                }
            }
        } else if self.store.db(&db_name).is_some_and(|db| db.is_present()) {
            return Err(match node {
                Node::Data(_) => Errno::EEXIST,
                _ => Errno::EPERM,
            });
        }
        self.local_parent(path)?;
        let local = self.local_path(path);
        std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&local)
            .and_then(|_| std::fs::set_permissions(&local, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| os_errno(&e))?;
        let attr = self.file_attr(self.ino(path), &local)?.ok_or(Errno::EIO)?;
        Ok((attr, FopenFlags::FOPEN_KEEP_CACHE))
    }

    /// Renames `from` to `to` (see the module documentation for databases).
    fn do_rename(&self, from: &str, to: &str, noreplace: bool) -> OpResult<()> {
        let src = self.classify(from, true)?.ok_or(Errno::ENOENT)?;
        let dst = self.classify(to, true)?;
        if noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if from == to {
            return Ok(());
        }
        if is_under(to, from) {
            return Err(Errno::EINVAL);
        }
        match (&src, &dst) {
            (Target::Root | Target::Lag | Target::Primary, _)
            | (_, Some(Target::Root | Target::Lag | Target::Primary)) => return Err(Errno::EBUSY),
            (Target::Db(_, Node::Pos | Node::Lock), _)
            | (_, Some(Target::Db(_, Node::Pos | Node::Lock))) => return Err(Errno::EPERM),
            // SQLite never renames these; a copy and a delete (what `mv` does on EXDEV) go
            // through the ordinary paths.
            (Target::Db(_, Node::Data(k)), _) if *k != FileKind::Database => {
                return Err(Errno::EXDEV)
            }
            (_, Some(Target::Db(_, Node::Data(k)))) if *k != FileKind::Database => {
                return Err(Errno::EXDEV)
            }
            (Target::Dir(_), Some(t)) if !matches!(t, Target::Dir(_)) => {
                return Err(Errno::ENOTDIR)
            }
            (t, Some(Target::Dir(_))) if !matches!(t, Target::Dir(_)) => return Err(Errno::EISDIR),
            _ => {}
        }
        // A name that would be taken for a database's journal, WAL, index or control file.
        let (to_dir, to_base) = split_path(to);
        let (to_db, _) = parse_name(to_base);
        let shadowed = !names_a_database(to)
            && self
                .store
                .db(&join_path(to_dir, to_db))
                .is_some_and(|db| db.is_present());
        if shadowed || (matches!(src, Target::Db(..)) && !names_a_database(to)) {
            return Err(Errno::EXDEV);
        }
        let dst_ino = self.existing_ino(to);
        let is_dir = matches!(src, Target::Dir(_));
        match src {
            Target::Dir(local) => {
                if self.has_databases_under(from) {
                    // Moving databases between names is a copy: `mv` does it on EXDEV.
                    return Err(Errno::EXDEV);
                }
                if let Some(Target::Dir(_)) = &dst {
                    if self.has_databases_under(to) {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                self.local_parent(to)?;
                std::fs::create_dir_all(&local).map_err(|e| os_errno(&e))?;
                std::fs::rename(&local, self.local_path(to)).map_err(|e| os_errno(&e))?;
                self.forget_dropped_under(from);
            }
            Target::Local(local) => match dst {
                Some(Target::Db(t, _)) => match t.replace_with(&local) {
                    Ok(()) => self.forget_database(to, dst_ino.into_iter().collect()),
                    Err(litefs_store::Error::NotADatabase { .. }) => {
                        // A plain file over a database: the file takes the name, then the
                        // database is deleted (the other order could lose the database and
                        // fail the rename).
                        let target = self.local_path(to);
                        self.local_parent(to)?;
                        std::fs::rename(&local, &target).map_err(|e| os_errno(&e))?;
                        if let Err(e) = t.remove(FileKind::Database) {
                            let _ = std::fs::rename(&target, &local);
                            return Err(fail("unlink", &e));
                        }
                        self.forget_database(to, dst_ino.into_iter().collect());
                    }
                    Err(e) => return Err(fail("rename", &e)),
                },
                _ => {
                    let target = self.local_path(to);
                    if let (Some(Target::Local(_)), Some(ino)) = (&dst, dst_ino) {
                        self.orphan(ino, &target, true).map_err(|e| os_errno(&e))?;
                    }
                    self.local_parent(to)?;
                    std::fs::rename(&local, &target).map_err(|e| os_errno(&e))?;
                }
            },
            Target::Db(s, _) => {
                let (t, created) = match &dst {
                    Some(Target::Db(t, _)) => (t.clone(), false),
                    _ => (
                        self.store.create_db(to).map_err(|e| fail("rename", &e))?,
                        true,
                    ),
                };
                if let Err(e) = t.take_over(&s) {
                    if created {
                        let _ = self.store.forget(to);
                    }
                    return Err(fail("rename", &e));
                }
                if let (Some(Target::Local(local)), Some(ino)) = (&dst, dst_ino) {
                    self.orphan(ino, local, false).map_err(|e| os_errno(&e))?;
                } else if let Some(Target::Local(local)) = &dst {
                    std::fs::remove_file(local).map_err(|e| os_errno(&e))?;
                }
                self.forget_database(from, Vec::new());
                self.forget_database(to, dst_ino.into_iter().collect());
            }
            Target::Root | Target::Lag | Target::Primary => return Err(Errno::EBUSY),
        }
        self.detach(to);
        self.moved(from, to, is_dir);
        Ok(())
    }

    /// Removes the dropped databases below directory `dir` from the store, so that their
    /// folders do not outlive the directory.
    fn forget_dropped_under(&self, dir: &str) {
        for db in self.store.dbs() {
            if db.name().len() > dir.len() && is_under(db.name(), dir) && !db.is_present() {
                if let Err(e) = self.store.forget(db.name()) {
                    tracing::warn!(db = %db.name(), "failed to forget a dropped database: {e}");
                }
            }
        }
    }

    /// The entries of directory `path`: its databases and their files, the directories that
    /// hold databases, and its plain files and folders.
    fn list(&self, path: &str) -> OpResult<BTreeMap<String, (INodeNo, FileType)>> {
        let mut entries = BTreeMap::new();
        for db in self.store.dbs() {
            let name = db.name();
            if !is_under(name, path) || name.len() <= path.len() || !db.is_present() {
                continue;
            }
            let rest = if path.is_empty() {
                name
            } else {
                &name[path.len() + 1..]
            };
            if let Some(i) = rest.find('/') {
                let sub = &rest[..i];
                let ino = self.ino(&join_path(path, sub));
                entries.insert(sub.to_owned(), (ino, FileType::Directory));
                continue;
            }
            for kind in FileKind::ALL {
                if db.exists(kind) {
                    let file = format!("{rest}{}", kind.suffix());
                    let ino = self.ino(&join_path(path, &file));
                    entries.insert(file, (ino, FileType::RegularFile));
                }
            }
        }
        match std::fs::read_dir(self.local_path(path)) {
            Ok(dir) => {
                for entry in dir.flatten() {
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if entries.contains_key(&name)
                        || (path.is_empty() && (name == ".lag" || name == ".primary"))
                    {
                        continue;
                    }
                    let kind = match entry.file_type() {
                        Ok(t) if t.is_dir() => FileType::Directory,
                        _ => FileType::RegularFile,
                    };
                    let ino = self.ino(&join_path(path, &name));
                    entries.insert(name, (ino, kind));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(os_errno(&e)),
        }
        Ok(entries)
    }

    fn log(&self, op: &str, detail: std::fmt::Arguments<'_>) {
        if self.debug {
            tracing::debug!("fuse {op} {detail}");
        }
    }
}

fn open_flags(node: Node) -> FopenFlags {
    match node {
        Node::Data(_) => FopenFlags::FOPEN_KEEP_CACHE,
        _ => FopenFlags::FOPEN_DIRECT_IO,
    }
}

/// Reads up to `size` bytes at `offset` of a plain file.
fn read_local(path: &Path, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; size as usize];
    let n = litefs_store::fsutil::read_full_at(&f, &mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

impl Filesystem for LiteFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.log("lookup", format_args!("{parent} {name:?}"));
        let res = self
            .child(parent, name)
            .map_err(|_| Errno::ENOENT)
            .and_then(|path| {
                let target = self.classify(&path, true)?;
                match target {
                    Some(t) => self.target_attr(self.ino(&path), &t),
                    None => Ok(None),
                }
            });
        match res {
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

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match (self.target(ino, true), &self.halt_dir) {
            (Ok(Target::Db(db, Node::Lock)), Some(dir)) => {
                reply.data(halt::link_target(dir, db.name()).as_os_str().as_bytes());
            }
            (Err(e), _) => reply.error(e),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = self
            .target(ino, true)
            .and_then(|t| self.target_attr(ino, &t));
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
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.log("setattr", format_args!("{ino} size={size:?} fh={fh:?}"));
        let res = self.target(ino, true).and_then(|target| {
            let path = match &target {
                Target::Root => self.store.files_dir().to_owned(),
                Target::Lag | Target::Primary | Target::Db(_, Node::Pos | Node::Lock) => {
                    return Err(Errno::EACCES)
                }
                Target::Dir(local) => {
                    std::fs::create_dir_all(local).map_err(|e| os_errno(&e))?;
                    local.clone()
                }
                Target::Local(local) => {
                    let _names = self.share_names();
                    if let Some(size) = size {
                        match fh {
                            Some(fh) => self.handles.wrote(fh),
                            None => {
                                self.handles.all_wrote(ino);
                            }
                        }
                        std::fs::File::options()
                            .write(true)
                            .open(local)
                            .and_then(|f| f.set_len(size))
                            .map_err(|e| os_errno(&e))?;
                    }
                    local.clone()
                }
                Target::Db(db, Node::Data(kind)) => {
                    if let Some(size) = size {
                        db.truncate(*kind, size).map_err(|e| fail("truncate", &e))?;
                        if *kind == FileKind::Database {
                            match fh {
                                Some(fh) => self.handles.wrote(fh),
                                // open(O_TRUNC) (the kernel sends no handle for it): the
                                // handle's close records; truncate(2) by name: now.
                                None => {
                                    if !self.handles.all_wrote(ino) {
                                        db.finish_writes().map_err(|e| fail("truncate", &e))?;
                                    }
                                }
                            }
                        }
                    }
                    db.dir().join(kind.backing_name())
                }
            };
            set_metadata(&path, mode, uid, gid, atime, mtime).map_err(|e| {
                tracing::warn!(path = %path.display(), "setattr failed: {e}");
                os_errno(&e)
            })?;
            self.target_attr(ino, &target)?.ok_or(Errno::ENOENT)
        });
        match res {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.log("mkdir", format_args!("{parent} {name:?}"));
        let _names = self.lock_names();
        let res = self.child(parent, name).and_then(|path| {
            if self.classify(&path, true)?.is_some() {
                return Err(Errno::EEXIST);
            }
            // A dropped database of that name: the name is a directory's now.
            self.store.forget(&path).map_err(|e| fail("mkdir", &e))?;
            self.local_parent(&path)?;
            let local = self.local_path(&path);
            std::fs::create_dir(&local)
                .and_then(|()| {
                    std::fs::set_permissions(
                        &local,
                        std::fs::Permissions::from_mode(mode & !umask & 0o7777),
                    )
                })
                .map_err(|e| os_errno(&e))?;
            self.dir_attr(self.ino(&path), &local)
        });
        match res {
            Ok(attr) => reply.entry(&CACHE_TTL, &attr, fuser::Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.log("rmdir", format_args!("{parent} {name:?}"));
        let _names = self.lock_names();
        let res = self
            .child(parent, name)
            .and_then(|path| match self.classify(&path, true)? {
                Some(Target::Dir(local)) => {
                    if self.has_databases_under(&path) {
                        return Err(Errno::ENOTEMPTY);
                    }
                    std::fs::remove_dir(&local).map_err(|e| os_errno(&e))?;
                    self.forget_dropped_under(&path);
                    Ok(())
                }
                Some(Target::Root) => Err(Errno::EBUSY),
                Some(_) => Err(Errno::ENOTDIR),
                None => Err(Errno::ENOENT),
            });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.log("unlink", format_args!("{parent} {name:?}"));
        let _names = self.lock_names();
        let res = self
            .child(parent, name)
            .and_then(|path| match self.classify(&path, true)? {
                Some(Target::Local(local)) => {
                    match self.detach(&path) {
                        // Handles may still be open on it: keep its data for them.
                        Some(ino) => self.orphan(ino, &local, false),
                        None => std::fs::remove_file(local),
                    }
                    .map_err(|e| os_errno(&e))
                }
                Some(Target::Db(db, Node::Data(kind))) => {
                    db.remove(kind).map_err(|e| fail("unlink", &e))?;
                    if kind == FileKind::Database {
                        // A journal, WAL or index keeps its inode: the kernel may still write
                        // back pages of an index SQLite unlinked while it was mapped.
                        self.detach(&path);
                        self.forget_database(&path, Vec::new());
                    }
                    Ok(())
                }
                Some(Target::Db(..) | Target::Lag | Target::Primary) => Err(Errno::EACCES),
                Some(Target::Dir(_) | Target::Root) => Err(Errno::EISDIR),
                None => Err(Errno::ENOENT),
            });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        self.forget_inode(ino);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.log(
            "rename",
            format_args!("{parent} {name:?} -> {newparent} {newname:?}"),
        );
        let bits = flags.bits();
        if bits & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT.
            return reply.error(Errno::EINVAL);
        }
        let _names = self.lock_names();
        let res = self.child(parent, name).and_then(|from| {
            let to = self.child(newparent, newname)?;
            self.do_rename(&from, &to, bits & libc::RENAME_NOREPLACE != 0)
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.path(ino).and_then(|path| {
            let target = match self.classify(&path, true)? {
                Some(t) => t,
                None => {
                    // A journal, WAL or index the store removed itself (dropping the database)
                    // while the kernel still had its entry: SQLite opens these to create them,
                    // so create it again.
                    let (dir, base) = split_path(&path);
                    let (db_base, node) = parse_name(base);
                    let db = self
                        .store
                        .db(&join_path(dir, db_base))
                        .filter(|db| db.is_present());
                    match (db, node) {
                        (Some(db), Node::Data(kind)) if kind != FileKind::Database => {
                            db.create(kind).map_err(|e| fail("create", &e))?;
                            return Ok(open_flags(node));
                        }
                        _ => return Err(Errno::ENOENT),
                    }
                }
            };
            let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            // This process opens databases on a replica to lock out local readers while it
            // applies a replicated transaction.
            let ours = is_own_thread(req.pid());
            if writing
                && !ours
                && self.store.is_readonly()
                && matches!(&target, Target::Db(db, Node::Data(FileKind::Database)) if !db.is_halted())
            {
                // A replica (that does not hold the halt lock on the database): SQLite then
                // opens the database read-only, and a write fails with SQLITE_READONLY in
                // every journal mode.
                return Err(Errno::EROFS);
            }
            match target {
                Target::Lag | Target::Primary => Ok(FopenFlags::FOPEN_DIRECT_IO),
                Target::Local(_) => Ok(FopenFlags::FOPEN_KEEP_CACHE),
                Target::Db(_, node) => Ok(open_flags(node)),
                Target::Dir(_) | Target::Root => Err(Errno::EISDIR),
            }
        });
        match res {
            Ok(flags) => reply.opened(self.handles.open_file(ino), own_open(req, flags)),
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
        let res = self.target(ino, false).and_then(|target| match target {
            Target::Lag => Ok(slice(&self.lag_content())),
            Target::Primary => Ok(slice(&self.primary_content())),
            Target::Local(path) => read_local(&path, offset, size).map_err(|e| os_errno(&e)),
            Target::Db(db, Node::Data(kind)) => {
                let mut buf = vec![0u8; size as usize];
                let n = db
                    .read(kind, offset, &mut buf)
                    .map_err(|e| fail("read", &e))?;
                buf.truncate(n);
                Ok(buf)
            }
            Target::Db(db, Node::Pos) => Ok(slice(format!("{}\n", db.pos()).as_bytes())),
            Target::Db(_, Node::Lock) => Ok(Vec::new()),
            Target::Dir(_) | Target::Root => Err(Errno::EISDIR),
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
        fh: FileHandle,
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
        let res = self.target(ino, false).and_then(|target| match target {
            Target::Local(_) => {
                use std::os::unix::fs::FileExt;
                // Not while the file becomes a database: look again under the lock.
                let _names = self.share_names();
                match self.target(ino, false)? {
                    Target::Local(path) => {
                        self.handles.wrote(fh);
                        std::fs::File::options()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.write_all_at(data, offset))
                            .map_err(|e| os_errno(&e))
                    }
                    Target::Db(db, Node::Data(FileKind::Database)) => {
                        self.handles.wrote(fh);
                        db.write(FileKind::Database, offset, data)
                            .map_err(|e| fail("write", &e))
                    }
                    _ => Err(Errno::EIO),
                }
            }
            Target::Db(db, Node::Data(kind)) => {
                if kind == FileKind::Database {
                    self.handles.wrote(fh);
                }
                db.write(kind, offset, data).map_err(|e| fail("write", &e))
            }
            Target::Db(_, Node::Pos) | Target::Lag | Target::Primary => Err(Errno::EACCES),
            Target::Db(_, Node::Lock) => Err(Errno::EIO),
            Target::Dir(_) | Target::Root => Err(Errno::EISDIR),
        });
        match res {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    /// A close of a handle that wrote: a database file written outside SQLite's transactions,
    /// or a plain file that now holds a database, is recorded.
    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if !self.handles.take_wrote(fh) {
            return reply.ok();
        }
        match self.settle(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        self.handles.release_file(fh);
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
        let res = self.target(ino, false).and_then(|target| match target {
            Target::Local(path) => {
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_data())
                    .map_err(|e| os_errno(&e))?;
                self.settle(ino)
            }
            Target::Db(db, Node::Data(kind)) => db.fsync(kind).map_err(|e| fail("fsync", &e)),
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
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res =
            self.store
                .sync_dirs()
                .map_err(|e| fail("fsyncdir", &e))
                .and_then(|()| match self.target(ino, true)? {
                    Target::Dir(local) if local.exists() => {
                        litefs_store::fsutil::sync_dir(&local).map_err(|e| os_errno(&e))
                    }
                    Target::Root => litefs_store::fsutil::sync_dir(self.store.files_dir())
                        .map_err(|e| os_errno(&e)),
                    _ => Ok(()),
                });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.listing(ino) {
            Ok(entries) => {
                let fh = self.handles.open();
                self.handles
                    .listings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh.0, entries);
                reply.opened(fh, FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listings = self
            .handles
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let fresh;
        let entries = match listings.get(&fh.0) {
            Some(entries) => entries,
            None => match self.listing(ino) {
                Ok(e) => {
                    fresh = e;
                    &fresh
                }
                Err(e) => return reply.error(e),
            },
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                *ino,
                (i + 1) as u64,
                *kind,
                OsStr::from_bytes(name.as_bytes()),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
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
            Err(e) => reply.error(os_errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.log("create", format_args!("{parent} {name:?}"));
        let _names = self.lock_names();
        let res = self
            .child(parent, name)
            .and_then(|path| self.do_create(&path, mode & !umask & 0o7777));
        match res {
            Ok((attr, flags)) => reply.created(
                &CACHE_TTL,
                &attr,
                fuser::Generation(0),
                self.handles.open_file(attr.ino),
                own_open(req, flags),
            ),
            Err(e) => reply.error(e),
        }
    }
}

impl LiteFs {
    /// The entries of directory `ino`, with `.` and `..` (and `.lag` at the top).
    fn listing(&self, ino: INodeNo) -> OpResult<Listing> {
        let path = self.path(ino)?;
        match self.classify(&path, true)? {
            Some(Target::Root | Target::Dir(_)) => {}
            Some(_) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::ENOENT),
        }
        let (dir, _) = split_path(&path);
        let parent = if path.is_empty() { ino } else { self.ino(dir) };
        let mut entries: Listing = vec![
            (ino, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        if path.is_empty() {
            entries.push((INodeNo(LAG_INO), FileType::RegularFile, ".lag".into()));
            if self.store.status().primary().is_some() {
                entries.push((
                    INodeNo(PRIMARY_INO),
                    FileType::RegularFile,
                    ".primary".into(),
                ));
            }
        }
        for (name, (ino, kind)) in self.list(&path)? {
            entries.push((ino, kind, name));
        }
        Ok(entries)
    }

    /// The kernel forgot an inode: a detached one is dropped, with its orphaned data.
    fn forget_inode(&self, ino: INodeNo) {
        let orphan = {
            let mut inodes = self.inodes.write().unwrap_or_else(|e| e.into_inner());
            if inodes.paths.contains_key(&ino.0) {
                return;
            }
            inodes.orphans.remove(&ino.0)
        };
        if let Some(path) = orphan {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "failed to remove an unlinked file: {e}");
            }
        }
    }

    /// At start, below directory `dir`: a plain file holding a whole SQLite database (one a
    /// process stopped before it was recorded) becomes a database.
    fn promote_found(&self, dir: &str) {
        let Ok(entries) = std::fs::read_dir(self.local_path(dir)) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = join_path(dir, &name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => self.promote_found(&path),
                Ok(t) if t.is_file() => {
                    if let Err(e) = self.promote(&path, false) {
                        tracing::warn!(path, "failed to make a file holding a database one ({e:?}); it stays a plain file");
                    }
                }
                _ => {}
            }
        }
    }

    /// On a close or sync: records a database's writes made outside SQLite's transactions,
    /// or makes a plain file that now holds a database one.
    fn settle(&self, ino: INodeNo) -> OpResult<()> {
        match self.target(ino, false) {
            Ok(Target::Db(db, Node::Data(FileKind::Database))) => {
                db.finish_writes().map_err(|e| fail("close", &e))
            }
            Ok(Target::Local(_)) => {
                let _names = self.lock_names();
                let path = self.path(ino)?;
                self.promote(&path, false).map(|_| ())
            }
            _ => Ok(()),
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
        let spec = |t: Option<TimeOrNow>| match t {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            Some(TimeOrNow::Now) => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            Some(TimeOrNow::SpecificTime(t)) => {
                let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
                    Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                    Err(e) => {
                        let d = e.duration();
                        if d.subsec_nanos() == 0 {
                            (-(d.as_secs() as i64), 0)
                        } else {
                            (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                        }
                    }
                };
                libc::timespec {
                    tv_sec: secs as libc::time_t,
                    tv_nsec: i64::from(nanos) as libc::c_long,
                }
            }
        };
        let times = [spec(atime), spec(mtime)];
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `c` is a valid NUL-terminated path and `times` two initialised timespecs,
        // as utimensat requires; it reads them and writes nothing of ours.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
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

/// Tells the kernel to forget what it cached of a database that changed without going through
/// the mount (replication applied a transaction to it).
#[derive(Clone, Debug)]
pub struct Invalidator {
    inodes: Arc<RwLock<Inodes>>,
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

/// More separate page runs than this invalidate the whole file.
const MAX_INVALIDATED_RUNS: usize = 64;

impl Invalidator {
    fn ino(&self, path: &str) -> Option<INodeNo> {
        self.inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_path
            .get(path)
            .map(|&i| INodeNo(i))
    }

    /// Database `name`'s file changed: pages `pages` (numbered from 1) of `page_size` bytes,
    /// or all of it when `None`, and its size. Pages the kernel cached are dropped (and
    /// unmapped), and its attributes read again.
    pub fn database_changed(&self, name: &str, pages: Option<&[u32]>, page_size: u32) {
        let (Some(notifier), Some(ino)) = (self.notifier.get(), self.ino(name)) else {
            return;
        };
        let mut runs: Vec<(u32, u32)> = Vec::new();
        if let Some(pages) = pages {
            let mut sorted = pages.to_vec();
            sorted.sort_unstable();
            for p in sorted {
                match runs.last_mut() {
                    Some(run) if run.1 + 1 >= p => run.1 = run.1.max(p),
                    _ => runs.push((p, p)),
                }
            }
        }
        if pages.is_none() || runs.len() > MAX_INVALIDATED_RUNS {
            // ENOENT: the kernel had nothing cached.
            let _ = notifier.inval_inode(ino, 0, 0);
            return;
        }
        let ps = i64::from(page_size);
        for (first, last) in runs {
            let offset = i64::from(first.saturating_sub(1)) * ps;
            let len = i64::from(last - first + 1) * ps;
            let _ = notifier.inval_inode(ino, offset, len);
        }
        // The size (and times) too.
        let _ = notifier.inval_inode(ino, -1, 0);
    }

    /// Database `name`'s WAL changed behind the kernel (its header was voided after its frames
    /// were copied into the database file): cached pages and attributes are dropped.
    pub fn wal_changed(&self, name: &str) {
        let (Some(notifier), Some(ino)) = (self.notifier.get(), self.ino(&format!("{name}-wal")))
        else {
            return;
        };
        let _ = notifier.inval_inode(ino, 0, 0);
    }

    /// Database `name` appeared or went away: the kernel forgets its entries (including "no
    /// such file") for it, its journal, WAL and index, and the directories on its path.
    pub fn names_changed(&self, name: &str) {
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        let mut dir = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if let Some(parent) = self.ino(&dir) {
                if i + 1 == parts.len() {
                    for kind in FileKind::ALL {
                        let file = format!("{part}{}", kind.suffix());
                        let _ = notifier.inval_entry(parent, OsStr::new(&file));
                    }
                } else {
                    let _ = notifier.inval_entry(parent, OsStr::new(part));
                }
            }
            dir = join_path(&dir, part);
        }
        if let Some(ino) = self.ino(name) {
            let _ = notifier.inval_inode(ino, 0, 0);
        }
    }
}

/// A mounted filesystem; unmounts when dropped or by [`Mount::unmount`].
#[derive(Debug)]
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
    invalidator: Invalidator,
    /// The halt lock's mount, and where it takes the lock.
    halt: Option<(fuser::BackgroundSession, PathBuf)>,
    halt_locks: Arc<OnceLock<Arc<dyn HaltLocks>>>,
}

impl Mount {
    /// Tells the kernel what replication changed.
    pub fn invalidator(&self) -> Invalidator {
        self.invalidator.clone()
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Has lock calls on `<db>-lock` take the halt lock through `locks` (until then they
    /// fail with `EAGAIN`).
    pub fn set_halt_locks(&self, locks: Arc<dyn HaltLocks>) {
        let _ = self.halt_locks.set(locks);
    }

    /// Where the halt lock's file system is mounted, if it is.
    pub fn halt_dir(&self) -> Option<&Path> {
        self.halt.as_ref().map(|(_, d)| d.as_path())
    }

    fn unmount_halt(&mut self) {
        if let Some((s, dir)) = self.halt.take() {
            if let Err(e) = s.umount_and_join() {
                tracing::warn!(dir = %dir.display(), "failed to unmount the halt lock's mount ({e}); detaching it");
                let _ = unmount_stale(&dir);
            }
        }
    }

    /// Unmounts and waits for the request threads to finish.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_halt();
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount_halt();
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
    let mut fs = LiteFs::new(store.clone(), opts.debug);
    let halt_locks = Arc::new(OnceLock::new());
    let halt = match &opts.halt_dir {
        Some(d) => {
            let d = std::fs::canonicalize(d).or_else(|_| {
                std::fs::create_dir_all(d)?;
                std::fs::canonicalize(d)
            })?;
            let mut lock_fs = halt::LockFs::new(store);
            lock_fs.locks = halt_locks.clone();
            let mut lock_config = fuser::Config::default();
            lock_config.mount_options = vec![
                MountOption::FSName("litefs-halt".into()),
                MountOption::Subtype("litefs-rs".into()),
            ];
            lock_config.acl = config.acl;
            lock_config.n_threads = Some(2);
            let session = fuser::spawn_mount(lock_fs, &d, &lock_config)?;
            fs.halt_dir = Some(d.clone());
            Some((session, d))
        }
        None => None,
    };
    fs.promote_found("");
    let notifier = fs.notifier.clone();
    let invalidator = Invalidator {
        inodes: fs.inodes.clone(),
        notifier: fs.notifier.clone(),
    };
    let session = match fuser::spawn_mount(fs, &dir, &config) {
        Ok(s) => s,
        Err(e) => {
            if let Some((s, _)) = halt {
                let _ = s.umount_and_join();
            }
            return Err(e);
        }
    };
    let _ = notifier.set(session.notifier());
    Ok(Mount {
        session: Some(session),
        dir,
        invalidator,
        halt,
        halt_locks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_get_a_clear_errno() {
        let errno_of = |name: &str| errno(&litefs_store::validate_name(name).unwrap_err());
        assert_eq!(errno_of(".."), Errno::EINVAL);
        assert_eq!(errno_of("a\0b"), Errno::EINVAL);
        assert_eq!(errno_of("a/../../b"), Errno::EINVAL);
        assert_eq!(errno_of(&"a".repeat(10_000)), Errno::ENAMETOOLONG);
        assert_eq!(errno_of(&"a".repeat(256)), Errno::ENAMETOOLONG);
        let deep = format!("{}x.db", "d/".repeat(600));
        assert_eq!(errno_of(&deep), Errno::ENAMETOOLONG);
        // `a/b` is the database `b` in directory `a`; a side file's name names none.
        assert!(litefs_store::validate_name("a/b").is_ok());
        assert!(names_a_database("a/b"));
        for side in ["a/b-wal", "b-journal", "b-shm", "b-pos", "b-lock"] {
            assert!(!names_a_database(side), "{side}");
            assert!(litefs_store::validate_name(side).is_err(), "{side}");
        }
        // Splitting never panics on what the kernel may send.
        let long = "a".repeat(10_000);
        for name in ["..", "a\0b", long.as_str(), "-wal", "-lock", ""] {
            let (db, _) = parse_name(name);
            assert!(name.starts_with(db));
        }
    }

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
        assert_eq!(
            parse_name("app.db-mj887FE9912"),
            ("app.db-mj887FE9912", Node::Data(FileKind::Database))
        );
    }

    #[test]
    fn paths_split_join_and_nest() {
        assert_eq!(split_path("a.db"), ("", "a.db"));
        assert_eq!(split_path("t/a/b.db-wal"), ("t/a", "b.db-wal"));
        assert_eq!(join_path("", "x"), "x");
        assert_eq!(join_path("t/a", "x"), "t/a/x");
        assert!(is_under("t/a.db", "t"));
        assert!(is_under("t", "t"));
        assert!(is_under("anything", ""));
        assert!(!is_under("tx/a.db", "t"));
        assert!(!is_under("t", "t/a"));
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
