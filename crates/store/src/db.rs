//! One database: its files under `dbs/<name>/`, the pass-through of SQLite's reads and writes,
//! and the capture of every committed transaction into one LTX file.
//!
//! Commit detection, without any help from SQLite's locks:
//! - rollback journal modes: the pages written to the database file since the last commit form
//!   the transaction; it commits when SQLite invalidates the journal (unlink for DELETE,
//!   truncation to zero for TRUNCATE, a zeroed header for PERSIST);
//! - WAL mode: frames are checked as they are written, chaining SQLite's checksums; the write
//!   that completes a valid commit frame commits the transaction. SQLite updates the WAL index
//!   only after that write returns, so no reader or checkpointer can see an uncaptured frame.
//!
//! Durability: in rollback modes the LTX file is synced (when SQLite syncs) before the journal
//! is invalidated, so a crash leaves either a hot journal (the transaction rolls back) or the
//! LTX file. In WAL mode the WAL is the durable record: LTX files are written without a sync
//! and synced before the WAL they were cut from is restarted, truncated or removed; on start,
//! committed WAL transactions without an LTX file are turned into one (see `recover`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use litefs_ltx::{
    checksum_page, format_filename, Checksum, Encoder, Flags, Header, NodeId, PageNum, PageSize,
    Pos, TXID,
};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sums::PageSums;
use crate::wal::{self, Frame, WalHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

/// In a burst of WAL commits, the LTX writer writes a database's queued transactions at most
/// every [`LTX_BATCH_WINDOW`] times the number of transactions the previous file held, up to
/// [`LTX_BATCH_WINDOW_MAX`], as one file of several transactions (a TXID range): one file to
/// create, one message per replica and one apply there instead of one per transaction. A
/// commit that comes after a pause is written at once, so one transaction at a time is never
/// delayed; a burst is, by at most the longest window.
pub const LTX_BATCH_WINDOW: Duration = Duration::from_millis(1);
/// The longest wait of a burst's transactions for their LTX file (see [`LTX_BATCH_WINDOW`]).
pub const LTX_BATCH_WINDOW_MAX: Duration = Duration::from_millis(16);

/// When the LTX writer last wrote a database's file, and how many transactions it held.
#[derive(Debug, Default)]
pub(crate) struct LastWrite {
    at: Option<Instant>,
    txns: usize,
}

impl LastWrite {
    /// When the next file may be written: see [`LTX_BATCH_WINDOW`].
    fn next_due(&self) -> Option<Instant> {
        let n = u32::try_from(self.txns.max(1)).unwrap_or(u32::MAX);
        let window = LTX_BATCH_WINDOW.saturating_mul(n).min(LTX_BATCH_WINDOW_MAX);
        self.at.map(|t| t + window)
    }
}

/// The most transactions, and the most pages, that one WAL-mode LTX file holds.
const BATCH_TXNS: usize = 256;
const BATCH_PAGES: usize = 4096;

/// How many range files [`Db::ltx_file`] remembers.
const RANGES_KEPT: usize = 4096;

/// LTX files up to this size (uncompressed) are encoded in memory and kept there for a while
/// after they are written (see [`Db::recent_ltx`]): per database the last [`RECENT_FILES`] of
/// them, [`RECENT_BYTES`] at most, none older than [`RECENT_AGE`].
pub const RECENT_LTX_MAX: usize = 256 << 10;
const RECENT_FILES: usize = 64;
const RECENT_BYTES: usize = 1 << 20;
const RECENT_AGE: Duration = Duration::from_secs(10);

/// An LTX file this process wrote, as it is on disk.
#[derive(Clone, Debug)]
pub struct RecentLtx {
    /// Its header.
    pub header: Header,
    /// Its post-apply checksum.
    pub post: Checksum,
    /// The whole file.
    pub bytes: Arc<[u8]>,
    /// When it was written.
    written: Instant,
}

/// The most pages one write or transaction may add to a database. A bound, so that a write at
/// an absurd offset (or a crafted WAL frame) cannot make the checksum table exhaust memory.
pub(crate) const MAX_GROWTH_PAGES: u32 = 1 << 24;

/// The files SQLite uses for one database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The database file.
    Database,
    /// The rollback journal (`-journal`).
    Journal,
    /// The write-ahead log (`-wal`).
    Wal,
    /// The WAL index (`-shm`).
    Shm,
}

impl FileKind {
    /// Every kind, in the order a directory listing shows them.
    pub const ALL: [FileKind; 4] = [
        FileKind::Database,
        FileKind::Journal,
        FileKind::Shm,
        FileKind::Wal,
    ];

    /// Name of the backing file inside the database's directory.
    pub fn backing_name(self) -> &'static str {
        match self {
            FileKind::Database => "database",
            FileKind::Journal => "journal",
            FileKind::Wal => "wal",
            FileKind::Shm => "shm",
        }
    }

    /// Suffix SQLite adds to the database name.
    pub fn suffix(self) -> &'static str {
        match self {
            FileKind::Database => "",
            FileKind::Journal => "-journal",
            FileKind::Wal => "-wal",
            FileKind::Shm => "-shm",
        }
    }
}

/// How the database journals, from page 1's read and write version bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalMode {
    /// DELETE, TRUNCATE or PERSIST.
    Rollback,
    /// WAL.
    Wal,
}

/// Options every database of a store shares.
#[derive(Debug)]
pub(crate) struct DbOptions {
    /// LZ4-compress LTX files.
    pub compress: bool,
    /// Recompute the whole database checksum after every commit.
    pub strict_verify: bool,
    /// Written into every LTX header.
    pub node_id: NodeId,
    /// Told when a deferred LTX file is waiting.
    pub(crate) wake: Arc<Wake>,
    /// Databases to adopt as they are at start (see `StoreOptions::adopt`).
    pub(crate) adopt: Vec<String>,
    /// This node is a replica: SQLite may not write (see [`Error::ReadOnly`]).
    pub(crate) readonly: std::sync::atomic::AtomicBool,
    /// What `write_deadline` counts from.
    pub(crate) epoch: Instant,
    /// Nanoseconds after `epoch` from which SQLite may not write; 0: no deadline (see
    /// `Store::set_write_deadline`).
    pub(crate) write_deadline: std::sync::atomic::AtomicU64,
    /// Told the name of a database whose published position moved (see
    /// [`Db::published`]).
    pub(crate) observer: std::sync::OnceLock<ObserverSlot>,
    /// The most bytes the LTX files of one database may take (0: no limit); see
    /// `StoreOptions::retention_max_size`.
    pub(crate) ltx_max_bytes: u64,
}

impl DbOptions {
    /// Whether SQLite's writes are refused now: a replica, or a primary past its write
    /// deadline (against the monotonic clock).
    pub(crate) fn writes_refused(&self) -> bool {
        use std::sync::atomic::Ordering;
        let deadline = self.write_deadline.load(Ordering::Acquire);
        let late = deadline != 0
            && u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX) >= deadline;
        late || self.readonly.load(Ordering::Acquire)
    }
}

/// [`Db`]'s count of the bytes in its LTX folder before the folder was first measured.
const LTX_BYTES_UNKNOWN: u64 = u64::MAX;

/// Holds the observer (a function has no `Debug`).
pub(crate) struct ObserverSlot(pub(crate) Observer);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// Called with a database's name when its published position moves.
pub type Observer = Arc<dyn Fn(&str) + Send + Sync>;

/// The frames of the current WAL generation, checked as they arrive.
#[derive(Debug)]
pub(crate) struct WalTracker {
    hdr: WalHeader,
    /// End of the last committed (and captured) transaction.
    committed_end: u64,
    /// Running checksum at `committed_end`.
    committed_sum: (u32, u32),
    /// Valid frames after `committed_end`, not yet committed.
    pending: Vec<Frame>,
    /// Largest end offset written in this generation.
    written_end: u64,
    /// Latest committed frame of each page in this generation.
    pub(crate) frames: HashMap<u32, u64>,
    /// How to undo the newest commit, until SQLite is seen to have published it.
    last: Option<WalUndo>,
}

/// What the newest WAL commit changed. SQLite publishes a transaction in the WAL index only
/// after its frames are written (and, with `synchronous=FULL`, synced): a writer killed in
/// between leaves frames that were committed here but that no reader will ever see, and the
/// next writer reuses their place. This undoes such a commit.
#[derive(Debug)]
struct WalUndo {
    txid: TXID,
    start: u64,
    sum_before: (u32, u32),
    pos_before: Pos,
    timestamp_before: i64,
    mode_before: JournalMode,
    len_before: u32,
    /// Checksums of the pages the commit changed or dropped, as they were.
    sums_before: Vec<(PageNum, Checksum)>,
    /// Frames of the pages the commit changed or dropped, as they were.
    frames_before: Vec<(u32, Option<u64>)>,
    /// The pages the commit wrote.
    pages: Vec<PageNum>,
}

impl WalTracker {
    fn new(hdr: WalHeader) -> Self {
        WalTracker {
            hdr,
            committed_end: WAL_HEADER_SIZE,
            committed_sum: hdr.checksum,
            pending: Vec::new(),
            written_end: WAL_HEADER_SIZE,
            frames: HashMap::new(),
            last: None,
        }
    }

    /// The WAL's page size.
    pub(crate) fn page_size(&self) -> PageSize {
        self.hdr.page_size
    }

    fn pending_end(&self) -> u64 {
        self.pending
            .last()
            .map_or(self.committed_end, |f| f.offset + self.hdr.frame_size())
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) db: File,
    pub(crate) journal: Option<File>,
    pub(crate) wal_file: Option<File>,
    pub(crate) shm: Option<File>,
    pub(crate) page_size: Option<PageSize>,
    pub(crate) sums: PageSums,
    pub(crate) pos: Pos,
    /// Milliseconds since the epoch of the last transaction.
    pub(crate) timestamp: i64,
    pub(crate) mode: JournalMode,
    /// Rollback modes: pages written since the last commit.
    pub(crate) dirty: BTreeSet<u32>,
    /// Rollback modes: SQLite synced the journal or database in this transaction.
    synced: bool,
    pub(crate) wal: Option<WalTracker>,
    /// Why the database is not served, if it is not.
    pub(crate) unavailable: Option<String>,
    /// The database exists in the mount (created and not dropped).
    pub(crate) present: bool,
    /// Writes no journal or WAL protects, waiting to be recorded.
    pub(crate) raw: Option<RawWrites>,
}

/// Writes into the database file outside any SQLite transaction: a copy tool writing the file
/// (`cp`, `dd`, a rename over it), or SQLite in journal_mode OFF or MEMORY. They are recorded
/// as one transaction when the file is synced or closed and holds a whole SQLite database.
#[derive(Debug)]
pub(crate) struct RawWrites {
    /// Byte ranges written, `(start, end)`, contiguous ones merged.
    ranges: Vec<(u64, u64)>,
    /// The smallest size the file had meanwhile: every page past it is new.
    min_len: u64,
}

/// How many separate written ranges [`RawWrites`] keeps before it treats everything from the
/// lowest on as rewritten (a bound on its memory).
const MAX_RAW_RANGES: usize = 4096;

/// Name of the marker file kept in a database's directory while unrecorded raw writes exist:
/// start-up recovery records the file as it is when it finds it.
pub(crate) const REWRITE_MARKER: &str = "rewriting";

/// What a file holds, judged from its size and SQLite header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Nothing (an empty file is an empty SQLite database).
    Empty,
    /// A SQLite database: a valid header and whole pages.
    Database(PageSize),
    /// Something else.
    Other(&'static str),
}

/// Fails with [`Error::NotADatabase`] unless the file at `path` is empty or a SQLite database.
fn check_database_file(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    match content_of(&file).map_err(Error::io("read", path))? {
        Content::Other(why) => Err(Error::NotADatabase {
            path: path.to_owned(),
            why,
        }),
        Content::Empty | Content::Database(_) => Ok(()),
    }
}

/// Judges `file`'s content: empty, a SQLite database, or something else.
pub fn content_of(file: &File) -> io::Result<Content> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Content::Empty);
    }
    let mut hdr = [0u8; 100];
    if fsutil::read_full_at(file, &mut hdr, 0)? < hdr.len() {
        return Ok(Content::Other("shorter than a SQLite header"));
    }
    let Some(ps) = header_page_size(&hdr) else {
        return Ok(Content::Other("no SQLite header"));
    };
    if len % u64::from(ps.get()) != 0 {
        return Ok(Content::Other("not whole pages"));
    }
    if len / u64::from(ps.get()) > u64::from(u32::MAX) {
        return Ok(Content::Other("too many pages"));
    }
    Ok(Content::Database(ps))
}

impl Inner {
    /// Makes `frames` (page to frame offset) the committed frames of the WAL.
    pub(crate) fn set_wal_frames(&mut self, hdr: WalHeader, frames: BTreeMap<u32, u64>) {
        let mut t = WalTracker::new(hdr);
        t.frames = frames.into_iter().collect();
        self.wal = Some(t);
    }

    /// Forgets the WAL (after it was checkpointed and removed).
    pub(crate) fn clear_wal(&mut self) {
        self.wal = None;
        self.wal_file = None;
    }
}

/// One database of the store.
#[derive(Debug)]
pub struct Db {
    name: String,
    dir: PathBuf,
    ltx_dir: PathBuf,
    opts: Arc<DbOptions>,
    inner: Mutex<Inner>,
    /// WAL transactions committed but whose LTX file is still to be written, oldest first.
    /// The WAL holds their pages until it restarts, and it cannot restart before this is empty.
    deferred: Mutex<VecDeque<Deferred>>,
    /// Held while LTX files from `deferred` are written, so they are written in order.
    ltx_writer: Mutex<LastWrite>,
    /// LTX files of several transactions written or received by this process, by first TXID
    /// (the last one as value): a file of one transaction is found by its name alone.
    ranges: Mutex<BTreeMap<u64, u64>>,
    /// The bytes of the small LTX files this process wrote last, newest last: replication
    /// sends them from here instead of reading them back.
    recent: Mutex<VecDeque<RecentLtx>>,
    /// LTX files written without a sync (WAL mode); synced before the WAL moves on.
    unsynced: Mutex<Vec<PathBuf>>,
    /// The position of the newest LTX file written (behind `pos` while WAL-mode files wait for
    /// the LTX writer thread): what can be streamed.
    published: Mutex<Pos>,
    /// Transactions published since the process started.
    commits: std::sync::atomic::AtomicU64,
    /// How many transactions were retracted (see [`Db::retractions`]).
    retractions: std::sync::atomic::AtomicU64,
    /// On a replica holding the cluster's halt lock on this database: where its transactions
    /// go (see [`Db::set_halt_forward`]).
    forward: Mutex<Option<ForwardSlot>>,
    /// `forward` is set: SQLite may write here although the node is a replica.
    halted: std::sync::atomic::AtomicBool,
    /// The bytes of the LTX files in `ltx_dir` as far as this process knows (measured by
    /// each retention pass, counted up as files are written; [`LTX_BYTES_UNKNOWN`] before
    /// the first pass): a cheap check against `DbOptions::ltx_max_bytes` after each write.
    ltx_bytes: std::sync::atomic::AtomicU64,
    /// The LTX writer thread is to check the LTX files against `DbOptions::ltx_max_bytes`.
    ltx_cap_due: std::sync::atomic::AtomicBool,
}

/// Sends an LTX file written under the halt lock to the primary (its path, still under a
/// temporary name); the transaction commits only if this succeeds.
pub type Forward = Arc<dyn Fn(&Path) -> std::result::Result<(), String> + Send + Sync>;

/// Holds the forwarder (a function has no `Debug`) and the id of its lock.
#[derive(Clone)]
struct ForwardSlot {
    id: u64,
    forward: Forward,
}

impl std::fmt::Debug for ForwardSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forward")
    }
}

/// Reads a page for an LTX file: its number, where it is, and the buffer to fill.
type PageReader<'a> = dyn FnMut(PageNum, u64, &mut [u8]) -> Result<()> + 'a;

/// An LTX file to write from WAL frames, off the commit path.
#[derive(Debug)]
struct Deferred {
    header: Header,
    post: Checksum,
    /// Each page, its checksum when committed, and where its data is in the WAL.
    pages: Vec<(PageNum, Checksum, u64)>,
    /// The WAL (one handle shared by the queued transactions of one WAL).
    wal: Arc<File>,
    /// When it was committed.
    at: Instant,
    /// It made the database smaller.
    shrinks: bool,
}

/// Wakes the store's LTX writer thread.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    pub(crate) fn notify(&self) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Waits until notified or `timeout` passes.
    pub(crate) fn wait(&self, timeout: std::time::Duration) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !*pending {
            pending = self
                .cv
                .wait_timeout(pending, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        *pending = false;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match open_rw(path, false) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Page size from a database's first page, if it is a SQLite header.
fn header_page_size(page1: &[u8]) -> Option<PageSize> {
    if page1.len() < 100 || &page1[..16] != litefs_ltx::dbfile::SQLITE_MAGIC {
        return None;
    }
    let raw = u16::from_be_bytes([page1[16], page1[17]]);
    PageSize::new(if raw == 1 { 65536 } else { u32::from(raw) })
}

fn mode_of(page1: &[u8]) -> JournalMode {
    if page1.len() >= 20 && page1[18] == 2 && page1[19] == 2 {
        JournalMode::Wal
    } else {
        JournalMode::Rollback
    }
}

impl Db {
    /// Opens (creating if needed) the database directory `dir` and recovers it: see
    /// [`crate::recover`].
    pub(crate) fn open(name: &str, dir: PathBuf, opts: Arc<DbOptions>) -> Result<Db> {
        let ltx_dir = dir.join("ltx");
        fs::create_dir_all(&ltx_dir).map_err(Error::io("create", &ltx_dir))?;
        let db_path = dir.join(FileKind::Database.backing_name());
        let db = open_rw(&db_path, true).map_err(Error::io("open", &db_path))?;
        let inner = Inner {
            db,
            journal: None,
            wal_file: None,
            shm: None,
            page_size: None,
            sums: PageSums::default(),
            pos: Pos::ZERO,
            timestamp: 0,
            mode: JournalMode::Rollback,
            dirty: BTreeSet::new(),
            synced: false,
            wal: None,
            unavailable: None,
            present: false,
            raw: None,
        };
        let db = Db {
            name: name.to_owned(),
            dir,
            ltx_dir,
            opts,
            inner: Mutex::new(inner),
            deferred: Mutex::new(VecDeque::new()),
            ltx_writer: Mutex::new(LastWrite::default()),
            ranges: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::new()),
            unsynced: Mutex::new(Vec::new()),
            published: Mutex::new(Pos::ZERO),
            commits: std::sync::atomic::AtomicU64::new(0),
            retractions: std::sync::atomic::AtomicU64::new(0),
            forward: Mutex::new(None),
            halted: std::sync::atomic::AtomicBool::new(false),
            ltx_bytes: std::sync::atomic::AtomicU64::new(LTX_BYTES_UNKNOWN),
            ltx_cap_due: std::sync::atomic::AtomicBool::new(true),
        };
        {
            let mut inner = db.lock();
            if let Err(e) = crate::recover::recover(&db, &mut inner) {
                let reason = crate::error::chain(&e);
                tracing::error!(db = %db.name, "database not served: {reason}");
                inner.unavailable = Some(reason);
            }
            *db.published.lock().unwrap_or_else(|e| e.into_inner()) = inner.pos;
        }
        Ok(db)
    }

    /// The position of the newest LTX file written: every transaction up to it can be read
    /// from the LTX folder (WAL-mode files are written just after their commit, off the
    /// application's commit path).
    pub fn published(&self) -> Pos {
        *self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the LTX files up to `pos` are written, and tells the observer.
    pub(crate) fn publish(&self, pos: Pos) {
        {
            let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
            let added = pos.txid.get().saturating_sub(published.txid.get());
            self.commits
                .fetch_add(added, std::sync::atomic::Ordering::Relaxed);
            *published = pos;
        }
        if let Some(observer) = self.opts.observer.get() {
            (observer.0)(&self.name);
        }
    }

    /// How many WAL transactions this process retracted (SQLite never published them): the
    /// TXID of each goes to the next transaction, so anything kept about a TXID from before
    /// a change of this number may describe another transaction.
    pub fn retractions(&self) -> u64 {
        self.retractions.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Transactions published (committed here, or applied from the primary) since the process
    /// started.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fails with [`Error::ReadOnly`] on a replica (unless it holds the halt lock), and on a
    /// primary past its write deadline.
    fn check_writable(&self) -> Result<()> {
        if self.is_halted() {
            return Ok(());
        }
        if self.opts.writes_refused() {
            return Err(Error::ReadOnly(self.name.clone()));
        }
        Ok(())
    }

    /// On a replica that holds the cluster's halt lock on this database: lets SQLite write,
    /// and has every transaction go through `forward` (to the primary) before it commits.
    /// `None` when the lock is released or lost: writes are refused again.
    ///
    /// `id` names the lock: [`Db::clear_halt_forward`] clears only the forwarder of that lock.
    /// Taken under the database's lock, so that no commit sees the lock change half-way.
    pub fn set_halt_forward(&self, forward: Option<(u64, Forward)>) {
        let _inner = self.lock();
        self.set_halt_forward_locked(forward);
    }

    /// Clears the forwarder of halt lock `id` if it is the one set.
    pub fn clear_halt_forward(&self, id: u64) {
        let _inner = self.lock();
        let current = self
            .forward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.id);
        if current == Some(id) {
            self.set_halt_forward_locked(None);
        }
    }

    /// [`Db::set_halt_forward`] with the database's lock held.
    pub(crate) fn set_halt_forward_locked(&self, forward: Option<(u64, Forward)>) {
        let on = forward.is_some();
        *self.forward.lock().unwrap_or_else(|e| e.into_inner()) =
            forward.map(|(id, forward)| ForwardSlot { id, forward });
        self.halted.store(on, std::sync::atomic::Ordering::Release);
    }

    /// Whether this replica holds the halt lock on the database (see
    /// [`Db::set_halt_forward`]).
    pub fn is_halted(&self) -> bool {
        self.halted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The node id written into this process's LTX files.
    pub(crate) fn node_id(&self) -> litefs_ltx::NodeId {
        self.opts.node_id
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's directory under `dbs/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if the operator asked to adopt this database's file as it is.
    pub(crate) fn adopting(&self) -> bool {
        self.opts.adopt.iter().any(|n| n == &self.name)
    }

    /// The folder of its LTX files.
    pub fn ltx_dir(&self) -> &Path {
        &self.ltx_dir
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done that a later caller could
        // observe beyond what a crash would, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn path(&self, kind: FileKind) -> PathBuf {
        self.dir.join(kind.backing_name())
    }

    /// The current position: last TXID and the checksum after it.
    pub fn pos(&self) -> Pos {
        self.lock().pos
    }

    /// Milliseconds since the epoch of the last transaction (0 if none).
    pub fn timestamp(&self) -> i64 {
        self.lock().timestamp
    }

    /// The journal mode the database is in.
    pub fn mode(&self) -> JournalMode {
        self.lock().mode
    }

    /// Size of the database in pages (0 when empty or deleted).
    pub fn page_count(&self) -> u32 {
        self.lock().sums.len()
    }

    /// Page size, once the database has one.
    pub fn page_size(&self) -> Option<PageSize> {
        self.lock().page_size
    }

    /// Whether its WAL holds committed frames not yet in the database file.
    pub fn has_wal_frames(&self) -> bool {
        self.lock()
            .wal
            .as_ref()
            .is_some_and(|t| !t.frames.is_empty())
    }

    /// True while the database exists in the mount: created, and not dropped since.
    pub fn is_present(&self) -> bool {
        self.lock().present
    }

    /// Marks the database as existing (it was created through the mount).
    pub fn set_present(&self) {
        self.lock().present = true;
    }

    /// Why the database is not served, if it is not.
    pub fn unavailable(&self) -> Option<String> {
        self.lock().unavailable.clone()
    }

    pub(crate) fn check_available(&self, inner: &Inner) -> Result<()> {
        match &inner.unavailable {
            Some(reason) => Err(Error::Unavailable {
                db: self.name.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// True if the backing file of `kind` exists.
    pub fn exists(&self, kind: FileKind) -> bool {
        match kind {
            FileKind::Database => true,
            _ => self.path(kind).exists(),
        }
    }

    /// Size of the backing file of `kind`.
    pub fn size(&self, kind: FileKind) -> Result<Option<u64>> {
        let path = self.path(kind);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path)(e)),
        }
    }

    /// Creates (or opens) the backing file of `kind`.
    pub fn create(&self, kind: FileKind) -> Result<()> {
        if kind == FileKind::Journal {
            self.check_writable()?;
        }
        let mut inner = self.lock();
        self.check_available(&inner)?;
        if matches!(kind, FileKind::Journal | FileKind::Wal) {
            // A SQLite transaction starts: what was written before it is recorded first.
            self.commit_raw(&mut inner)?;
        }
        self.file(&mut inner, kind, true)?;
        Ok(())
    }

    pub(crate) fn file<'a>(
        &self,
        inner: &'a mut Inner,
        kind: FileKind,
        create: bool,
    ) -> Result<&'a File> {
        let path = self.path(kind);
        let slot = match kind {
            FileKind::Database => return Ok(&inner.db),
            FileKind::Journal => &mut inner.journal,
            FileKind::Wal => &mut inner.wal_file,
            FileKind::Shm => &mut inner.shm,
        };
        if slot.is_none() {
            let f = if create {
                Some(open_rw(&path, true).map_err(Error::io("create", &path))?)
            } else {
                open_existing(&path).map_err(Error::io("open", &path))?
            };
            *slot = f;
        }
        slot.as_ref()
            .ok_or_else(|| Error::NotFound(format!("{}{}", self.name, kind.suffix())))
    }

    /// Reads from the backing file of `kind`; returns the bytes read (short at end of file).
    pub fn read(&self, kind: FileKind, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut inner = self.lock();
        self.check_available(&inner)?;
        let path = self.path(kind);
        let f = self.file(&mut inner, kind, false)?;
        fsutil::read_full_at(f, buf, offset).map_err(Error::io("read", path))
    }

    /// Writes to the backing file of `kind`, capturing a transaction if this write commits one.
    pub fn write(&self, kind: FileKind, offset: u64, data: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        // Under the lock: once writes are refused (a fenced primary, a hand-off), no write that
        // passed this check can still commit after whoever refused them reads the position.
        if kind != FileKind::Shm {
            self.check_writable()?;
        }
        self.check_available(&inner)?;
        match kind {
            FileKind::Database => self.write_database(&mut inner, offset, data),
            FileKind::Journal => {
                // PERSIST invalidates the journal by zeroing its header.
                if offset == 0 && data.len() >= 8 && data[..8].iter().all(|&b| b == 0) {
                    self.commit_journal(&mut inner)?;
                }
                self.write_at(&mut inner, kind, offset, data)
            }
            FileKind::Wal => self.write_wal(&mut inner, offset, data),
            FileKind::Shm => self.write_at(&mut inner, kind, offset, data),
        }
    }

    /// Writes to an existing backing file. Only `create` makes files: the kernel writes back
    /// a mapped `-shm` after SQLite unlinked it, and that must not bring the file back.
    fn write_at(&self, inner: &mut Inner, kind: FileKind, offset: u64, data: &[u8]) -> Result<()> {
        let path = self.path(kind);
        let file = match self.file(inner, kind, false) {
            Ok(f) => f,
            // Pages of an unlinked index: on a local filesystem they would go to the orphaned
            // inode and vanish with it.
            Err(Error::NotFound(_)) if kind == FileKind::Shm => return Ok(()),
            Err(e) => return Err(e),
        };
        file.write_all_at(data, offset)
            .map_err(Error::io("write", path))
    }

    fn write_database(&self, inner: &mut Inner, offset: u64, data: &[u8]) -> Result<()> {
        if let Some(t) = inner
            .wal
            .as_ref()
            .filter(|_| inner.mode == JournalMode::Wal)
        {
            if !t.frames.is_empty() {
                // SQLite checkpointing: it copies committed WAL frames into the database file,
                // and the logical database (the file under the WAL) does not change. Anything
                // else would be a write under a WAL that still holds newer pages.
                let ps = u64::from(t.hdr.page_size.get());
                let first = offset / ps + 1;
                let last = (offset + data.len().max(1) as u64 - 1) / ps + 1;
                let from_frames = offset % ps == 0
                    && (first..=last)
                        .all(|p| u32::try_from(p).is_ok_and(|p| t.frames.contains_key(&p)));
                if !from_frames {
                    return Err(Error::Busy {
                        db: self.name.clone(),
                        why: "a write into the database file while its WAL holds frames not \
                              checkpointed yet",
                    });
                }
                return self.write_at(inner, FileKind::Database, offset, data);
            }
        }
        if !self.journaled(inner)? {
            return self.write_raw(inner, offset, data);
        }
        if inner.page_size.is_none() && offset == 0 {
            inner.page_size = header_page_size(data);
        }
        let Some(ps) = inner.page_size else {
            return Err(Error::UnalignedWrite {
                db: self.name.clone(),
                offset,
                len: data.len(),
                page_size: 0,
            });
        };
        let psz = ps.bytes();
        if offset % psz as u64 != 0 || data.len() % psz != 0 || data.is_empty() {
            return Err(Error::UnalignedWrite {
                db: self.name.clone(),
                offset,
                len: data.len(),
                page_size: ps.get(),
            });
        }
        let first = offset / psz as u64 + 1;
        let limit = u64::from(inner.sums.len().saturating_add(MAX_GROWTH_PAGES));
        let top = first + (data.len() / psz) as u64 - 1;
        if top > limit {
            return Err(Error::Growth {
                db: self.name.clone(),
                pages: u32::try_from(top).unwrap_or(u32::MAX),
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            });
        }
        self.write_at(inner, FileKind::Database, offset, data)?;
        let lock_pgno = ps.lock_pgno();
        for (i, page) in data.chunks_exact(psz).enumerate() {
            let Some(pgno) = u32::try_from(first + i as u64).ok().and_then(PageNum::new) else {
                continue;
            };
            if pgno == lock_pgno {
                continue;
            }
            inner.sums.set(pgno, checksum_page(pgno, page));
            inner.dirty.insert(pgno.get());
        }
        Ok(())
    }

    /// True if a rollback journal protects writes to the database file now. SQLite writes the
    /// journal header's magic (when it syncs the journal, or at once with synchronous=OFF)
    /// before it writes any database page; a journal file without it is one TRUNCATE or
    /// PERSIST left behind.
    pub(crate) fn journaled(&self, inner: &mut Inner) -> Result<bool> {
        let mut magic = [0u8; 8];
        match self.file(inner, FileKind::Journal, false) {
            Ok(j) => Ok(
                j.read_exact_at(&mut magic, 0).is_ok() && magic == crate::journal::JOURNAL_MAGIC
            ),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts recording raw writes (see [`RawWrites`]), leaving the marker that makes start-up
    /// recovery record them if the process dies first.
    fn begin_raw<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut RawWrites> {
        if inner.raw.is_none() {
            let marker = self.dir.join(REWRITE_MARKER);
            File::create(&marker)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("create", &marker))?;
            fsutil::sync_dir(&self.dir).map_err(Error::io("sync", &self.dir))?;
            let db_path = self.path(FileKind::Database);
            let min_len = inner
                .db
                .metadata()
                .map_err(Error::io("stat", &db_path))?
                .len();
            inner.raw = Some(RawWrites {
                ranges: Vec::new(),
                min_len,
            });
        }
        inner
            .raw
            .as_mut()
            .ok_or_else(|| Error::NotFound(self.name.clone()))
    }

    /// A write to the database file that no transaction protects.
    fn write_raw(&self, inner: &mut Inner, offset: u64, data: &[u8]) -> Result<()> {
        let ps = u64::from(inner.page_size.unwrap_or(PageSize::DEFAULT).get());
        let end = offset.saturating_add(data.len() as u64);
        let limit = u64::from(inner.sums.len().saturating_add(MAX_GROWTH_PAGES));
        if end.div_ceil(ps) > limit {
            return Err(Error::Growth {
                db: self.name.clone(),
                pages: u32::try_from(end.div_ceil(ps)).unwrap_or(u32::MAX),
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            });
        }
        if inner.raw.is_none() {
            tracing::debug!(db = %self.name, "writes outside a SQLite transaction: recording them when the file is synced or closed");
        }
        let raw = self.begin_raw(inner)?;
        match raw.ranges.last_mut() {
            Some(last) if last.0 <= end && offset <= last.1 => {
                *last = (last.0.min(offset), last.1.max(end));
            }
            _ => raw.ranges.push((offset, end)),
        }
        if raw.ranges.len() > MAX_RAW_RANGES {
            // Scattered writes: treat everything from the lowest one on as rewritten.
            let lowest = raw.ranges.iter().map(|r| r.0).min().unwrap_or(0);
            raw.min_len = raw.min_len.min(lowest);
            raw.ranges.clear();
        }
        self.write_at(inner, FileKind::Database, offset, data)
    }

    /// Records the raw writes as one transaction, if there are any and the file now holds a
    /// whole SQLite database (otherwise they wait for the next sync or close).
    pub(crate) fn commit_raw(&self, inner: &mut Inner) -> Result<()> {
        let Some(raw) = inner.raw.as_ref() else {
            return Ok(());
        };
        let db_path = self.path(FileKind::Database);
        let content = content_of(&inner.db).map_err(Error::io("read", &db_path))?;
        let len = inner
            .db
            .metadata()
            .map_err(Error::io("stat", &db_path))?
            .len();
        match content {
            Content::Other(why) => {
                tracing::debug!(db = %self.name, "not recording writes yet: the file is {why}");
                return Ok(());
            }
            Content::Empty => {
                if inner.sums.len() > 0 {
                    let ps = inner.page_size.unwrap_or(PageSize::DEFAULT);
                    inner.sums.set_len(0);
                    self.write_ltx(inner, ps, 0, BTreeSet::new(), None, true)?;
                }
            }
            Content::Database(ps) => {
                let psz = u64::from(ps.get());
                let pages = u32::try_from(len / psz).unwrap_or(u32::MAX);
                let whole = inner.page_size != Some(ps) || inner.pos.txid.is_zero();
                let mut dirty: BTreeSet<u32> = BTreeSet::new();
                let first_new = if whole {
                    1
                } else {
                    u32::try_from(raw.min_len / psz + 1).unwrap_or(u32::MAX)
                };
                dirty.extend(first_new..=pages);
                for &(start, end) in &raw.ranges {
                    if end > start {
                        let lo = start / psz + 1;
                        let hi = ((end - 1) / psz + 1).min(u64::from(pages));
                        dirty.extend((lo..=hi).filter_map(|p| u32::try_from(p).ok()));
                    }
                }
                if whole {
                    inner.sums = PageSums::default();
                }
                inner.sums.set_len(pages);
                let lock_pgno = ps.lock_pgno();
                let mut buf = vec![0u8; ps.bytes()];
                for &p in &dirty {
                    let Some(pgno) = PageNum::new(p) else {
                        continue;
                    };
                    if pgno == lock_pgno {
                        continue;
                    }
                    fsutil::read_full_at(&inner.db, &mut buf, u64::from(p - 1) * psz)
                        .map_err(Error::io("read", &db_path))?;
                    inner.sums.set(pgno, checksum_page(pgno, &buf));
                }
                inner.page_size = Some(ps);
                inner.dirty.clear();
                inner.db.sync_data().map_err(Error::io("sync", &db_path))?;
                self.write_ltx(inner, ps, pages, dirty, None, true)?;
                fsutil::read_full_at(&inner.db, &mut buf[..100], 0)
                    .map_err(Error::io("read", &db_path))?;
                inner.mode = mode_of(&buf);
            }
        }
        tracing::info!(db = %self.name, pos = %inner.pos, "recorded writes made outside a SQLite transaction");
        inner.raw = None;
        inner.present = true;
        let marker = self.dir.join(REWRITE_MARKER);
        fsutil::remove_if_exists(&marker).map_err(Error::io("remove", marker))
    }

    /// Records pending raw writes (see [`RawWrites`]) if the file is a whole database: called
    /// when a file handle of the database is closed.
    pub fn finish_writes(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.raw.is_none() {
            return Ok(());
        }
        self.check_available(&inner)?;
        self.commit_raw(&mut inner)
    }

    /// Fails if a SQLite transaction is using the database's files: a hot journal, or WAL
    /// frames not checkpointed into the database file.
    fn check_idle(&self, inner: &mut Inner) -> Result<()> {
        if self.journaled(inner)? {
            return Err(Error::Busy {
                db: self.name.clone(),
                why: "a transaction is in progress (hot journal)",
            });
        }
        let wal_len = self.size(FileKind::Wal)?.unwrap_or(0);
        if wal_len > 0 {
            return Err(Error::Busy {
                db: self.name.clone(),
                why: "its WAL holds frames not checkpointed yet (close its connections or run \
                      PRAGMA wal_checkpoint(TRUNCATE) first)",
            });
        }
        Ok(())
    }

    /// Fails with [`Error::Busy`] if a SQLite transaction is using the database's files (a
    /// hot journal, or WAL frames not checkpointed), as [`Db::replace_with`] would.
    pub fn ensure_idle(&self) -> Result<()> {
        let mut inner = self.lock();
        self.check_available(&inner)?;
        self.check_idle(&mut inner)
    }

    /// Makes the file at `src` the database's content, atomically (a rename over the database
    /// file), recorded as one transaction. `src` must be on the same filesystem and hold a
    /// SQLite database (or nothing); the database must not be in use by a transaction. Its
    /// leftover journal, WAL and index files are removed.
    pub fn replace_with(&self, src: &Path) -> Result<()> {
        self.check_writable()?;
        let mut inner = self.lock();
        self.check_available(&inner)?;
        check_database_file(src)?;
        self.check_idle(&mut inner)?;
        self.replace_locked(&mut inner, src)
    }

    /// Renames database `src` over this one, as one transaction of this one, and drops `src`
    /// (which records its deletion). Both must be free of transactions; both are locked for the
    /// whole operation, so no transaction can start on either meanwhile.
    pub fn take_over(&self, src: &Db) -> Result<()> {
        self.check_writable()?;
        if std::ptr::eq(self, src) {
            return Ok(());
        }
        // Locks are taken in name order, so two renames in opposite directions cannot
        // deadlock.
        let (mut mine, mut theirs) = if self.name < src.name {
            let m = self.lock();
            (m, src.lock())
        } else {
            let t = src.lock();
            (self.lock(), t)
        };
        self.check_available(&mine)?;
        src.check_available(&theirs)?;
        if !theirs.present {
            return Err(Error::NotFound(src.name.clone()));
        }
        self.check_idle(&mut mine)?;
        src.check_idle(&mut theirs)?;
        src.commit_raw(&mut theirs)?;
        src.sync_ltx(&mut theirs)?;
        let src_path = src.path(FileKind::Database);
        check_database_file(&src_path)?;
        self.replace_locked(&mut mine, &src_path)?;
        // The source's file is gone (it is this database's now): it continues empty, and
        // records its deletion.
        theirs.db = open_rw(&src_path, true).map_err(Error::io("create", &src_path))?;
        theirs.raw = None;
        src.drop_database(&mut theirs)
    }

    fn replace_locked(&self, inner: &mut Inner, src: &Path) -> Result<()> {
        self.sync_ltx(inner)?;
        self.commit_raw(inner)?;
        for kind in [FileKind::Journal, FileKind::Wal, FileKind::Shm] {
            let path = self.path(kind);
            fsutil::remove_if_exists(&path).map_err(Error::io("remove", path))?;
        }
        inner.journal = None;
        inner.wal = None;
        inner.wal_file = None;
        inner.shm = None;
        // From here until its LTX file is durable, a crash leaves the marker: start-up records
        // the file as it is then.
        self.begin_raw(inner)?;
        let db_path = self.path(FileKind::Database);
        fs::rename(src, &db_path).map_err(Error::io("rename", src))?;
        fsutil::sync_dir(&self.dir).map_err(Error::io("sync", &self.dir))?;
        if let Some(parent) = src.parent() {
            fsutil::sync_dir(parent).map_err(Error::io("sync", parent))?;
        }
        inner.db = open_rw(&db_path, false).map_err(Error::io("open", &db_path))?;
        // Every page is new.
        inner.raw = Some(RawWrites {
            ranges: Vec::new(),
            min_len: 0,
        });
        inner.dirty.clear();
        self.commit_raw(inner)?;
        inner.present = true;
        Ok(())
    }

    fn write_wal(&self, inner: &mut Inner, offset: u64, data: &[u8]) -> Result<()> {
        if offset == 0 {
            // A new WAL generation: the frames the unsynced LTX files could be rebuilt from are
            // about to be overwritten.
            self.retract_unpublished(inner)?;
            self.sync_ltx(inner)?;
            inner.wal = None;
            self.write_at(inner, FileKind::Wal, offset, data)?;
            if let Some(hdr) = WalHeader::parse(data) {
                let mut t = WalTracker::new(hdr);
                t.written_end = (data.len() as u64).max(WAL_HEADER_SIZE);
                inner.wal = Some(t);
                self.extend_wal(inner)?;
            }
            return Ok(());
        }
        let committed_end = inner.wal.as_ref().map_or(0, |t| t.committed_end);
        if offset < committed_end {
            // Bytes equal to what is there already (SQLite rewriting the checksums of frames
            // whose content did not change) change nothing.
            let mut old = vec![0u8; data.len()];
            let path = self.path(FileKind::Wal);
            let same = self
                .file(inner, FileKind::Wal, false)?
                .read_exact_at(&mut old, offset)
                .map(|()| old == data)
                .map_err(Error::io("read", path))?;
            if same {
                return Ok(());
            }
            let last_start = inner
                .wal
                .as_ref()
                .and_then(|t| t.last.as_ref())
                .map(|u| u.start);
            match last_start {
                Some(start) if offset >= start => self.retract_last_wal_commit(inner)?,
                _ => {
                    return Err(Error::WalOverwrite {
                        db: self.name.clone(),
                        offset,
                        committed_end,
                    })
                }
            }
        }
        if let Some(t) = inner.wal.as_mut() {
            // A write inside the checked frames (SQLite rewriting a frame of the transaction in
            // progress) voids them from that frame on.
            let fs = t.hdr.frame_size();
            if offset < t.pending_end() {
                t.pending.retain(|f| f.offset + fs <= offset);
            }
        }
        self.write_at(inner, FileKind::Wal, offset, data)?;
        if let Some(t) = inner.wal.as_mut() {
            t.written_end = t.written_end.max(offset + data.len() as u64);
            self.extend_wal(inner)?;
        }
        Ok(())
    }

    /// Checks the frames written after the last valid one; commits when a commit frame chains.
    fn extend_wal(&self, inner: &mut Inner) -> Result<()> {
        let mut buf = Vec::new();
        loop {
            let Some(t) = inner.wal.as_ref() else {
                return Ok(());
            };
            let off = t.pending_end();
            if off + t.hdr.frame_size() > t.written_end {
                return Ok(());
            }
            let seed = t.pending.last().map_or(t.committed_sum, |f| f.checksum);
            let hdr = t.hdr;
            let path = self.path(FileKind::Wal);
            let file = self.file(inner, FileKind::Wal, false)?;
            let frame = wal::read_frame(file, &hdr, off, seed, &mut buf)
                .map_err(Error::io("read", path))?;
            let Some(frame) = frame else {
                return Ok(());
            };
            let commit = frame.commit != 0;
            if let Some(t) = inner.wal.as_mut() {
                t.pending.push(frame);
            }
            if commit {
                self.commit_wal(inner)?;
            }
        }
    }

    /// Truncates the backing file of `kind`. Truncating the journal to zero commits (TRUNCATE
    /// mode); truncating the WAL ends its generation.
    pub fn truncate(&self, kind: FileKind, size: u64) -> Result<()> {
        let mut inner = self.lock();
        if kind != FileKind::Shm {
            self.check_writable()?;
        }
        self.check_available(&inner)?;
        let path = self.path(kind);
        match kind {
            FileKind::Journal if size == 0 => self.commit_journal(&mut inner)?,
            FileKind::Wal => {
                if inner.wal.as_ref().is_some_and(|t| size < t.committed_end) {
                    self.retract_unpublished(&mut inner)?;
                }
                self.sync_ltx(&mut inner)?;
                if let Some(t) = inner.wal.as_mut() {
                    if size < t.committed_end {
                        inner.wal = None;
                    } else {
                        t.written_end = t.written_end.min(size);
                        let fs = t.hdr.frame_size();
                        t.pending.retain(|f| f.offset + fs <= size);
                    }
                }
            }
            FileKind::Database => {
                // A checkpoint cuts the file down to the database's size (or SQLite sizes it
                // for one) while the WAL holds the pages.
                let checkpointing = inner.mode == JournalMode::Wal
                    && inner.wal.as_ref().is_some_and(|t| !t.frames.is_empty());
                let len = inner.db.metadata().map_err(Error::io("stat", &path))?.len();
                // SQLite cuts the file down to the database's size after a rollback-mode
                // commit shrank it, once the journal is gone: that changes nothing logical.
                let logical = inner
                    .page_size
                    .map(|ps| u64::from(inner.sums.len()) * u64::from(ps.get()));
                if checkpointing && size < len && Some(size) != logical {
                    return Err(Error::Busy {
                        db: self.name.clone(),
                        why: "a truncation of the database file while its WAL holds frames \
                              not checkpointed yet",
                    });
                }
                if !checkpointing && !self.journaled(&mut inner)? {
                    if size != len && Some(size) != logical {
                        tracing::debug!(db = %self.name, size, len, "truncation outside a transaction");
                        let raw = self.begin_raw(&mut inner)?;
                        raw.min_len = raw.min_len.min(size);
                    }
                } else if !checkpointing {
                    if let Some(ps) = inner.page_size {
                        let pages = u32::try_from(size / u64::from(ps.get())).unwrap_or(u32::MAX);
                        if pages < inner.sums.len() {
                            inner.sums.set_len(pages);
                            inner.dirty.retain(|&p| p <= pages);
                        }
                    }
                }
            }
            _ => {}
        }
        self.file(&mut inner, kind, false)?
            .set_len(size)
            .map_err(Error::io("truncate", path))
    }

    /// Syncs the backing file of `kind`.
    pub fn fsync(&self, kind: FileKind) -> Result<()> {
        let mut inner = self.lock();
        let path = self.path(kind);
        if matches!(kind, FileKind::Database | FileKind::Journal) {
            inner.synced = true;
        }
        if kind == FileKind::Database && inner.raw.is_some() {
            self.check_available(&inner)?;
            self.commit_raw(&mut inner)?;
        }
        match self.file(&mut inner, kind, false) {
            Ok(f) => f.sync_data().map_err(Error::io("sync", path)),
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the backing file of `kind`. Removing the journal commits (DELETE mode); removing
    /// the WAL ends its generation.
    pub fn remove(&self, kind: FileKind) -> Result<()> {
        let mut inner = self.lock();
        let path = self.path(kind);
        match kind {
            FileKind::Journal => {
                if inner.unavailable.is_none() {
                    self.commit_journal(&mut inner)?;
                }
                inner.journal = None;
            }
            FileKind::Wal => {
                self.retract_unpublished(&mut inner)?;
                self.sync_ltx(&mut inner)?;
                inner.wal = None;
                inner.wal_file = None;
            }
            FileKind::Shm => inner.shm = None,
            FileKind::Database => {
                self.check_writable()?;
                return self.drop_database(&mut inner);
            }
        }
        fsutil::remove_if_exists(&path).map_err(Error::io("remove", path))
    }

    /// Deletes the database: a deletion LTX (commit 0) and empty files.
    pub(crate) fn drop_database(&self, inner: &mut Inner) -> Result<()> {
        self.check_available(inner)?;
        // The WAL is about to go: what was cut from it must be on disk first.
        self.sync_ltx(inner)?;
        if !inner.present {
            return Err(Error::NotFound(self.name.clone()));
        }
        // A database that never got a page (or was dropped before) has nothing to record.
        let recorded_empty = inner.pos.txid.is_zero()
            || inner.pos.post_apply_checksum == litefs_ltx::Checksum::EMPTY_DATABASE;
        if inner.sums.len() > 0 || !recorded_empty {
            let ps = inner.page_size.unwrap_or(PageSize::DEFAULT);
            inner.sums.set_len(0);
            self.write_ltx(inner, ps, 0, BTreeSet::new(), None, true)?;
        }
        for kind in [FileKind::Journal, FileKind::Wal, FileKind::Shm] {
            let path = self.path(kind);
            fsutil::remove_if_exists(&path).map_err(Error::io("remove", path))?;
        }
        inner.journal = None;
        inner.wal = None;
        inner.wal_file = None;
        inner.shm = None;
        inner
            .db
            .set_len(0)
            .map_err(Error::io("truncate", self.path(FileKind::Database)))?;
        inner.page_size = None;
        inner.mode = JournalMode::Rollback;
        inner.present = false;
        inner.raw = None;
        let marker = self.dir.join(REWRITE_MARKER);
        fsutil::remove_if_exists(&marker).map_err(Error::io("remove", marker))
    }

    /// Captures the rollback-journal transaction whose journal is being invalidated.
    fn commit_journal(&self, inner: &mut Inner) -> Result<()> {
        if inner.dirty.is_empty() {
            return Ok(());
        }
        let Some(ps) = inner.page_size else {
            inner.dirty.clear();
            return Ok(());
        };
        let db_path = self.path(FileKind::Database);
        let mut page1 = vec![0u8; ps.bytes()];
        inner
            .db
            .read_exact_at(&mut page1, 0)
            .map_err(Error::io("read", &db_path))?;
        let ps = match header_page_size(&page1) {
            Some(new) if new != ps => {
                // The transaction changed the page size (`PRAGMA page_size` and VACUUM, or a
                // restore from a database with other pages): every page is new, and the
                // checksums are recomputed at the new size.
                tracing::info!(db = %self.name, from = ps.get(), to = new.get(), "page size changed");
                let len = inner
                    .db
                    .metadata()
                    .map_err(Error::io("stat", &db_path))?
                    .len();
                let pages = u32::try_from(len / u64::from(new.get())).unwrap_or(u32::MAX);
                let mut sums = PageSums::default();
                let mut buf = vec![0u8; new.bytes()];
                for n in 1..=pages {
                    let Some(pgno) = PageNum::new(n) else {
                        continue;
                    };
                    if pgno == new.lock_pgno() {
                        continue;
                    }
                    inner
                        .db
                        .read_exact_at(&mut buf, new.offset_of(pgno))
                        .map_err(Error::io("read", &db_path))?;
                    sums.set(pgno, checksum_page(pgno, &buf));
                }
                sums.set_len(pages);
                inner.sums = sums;
                inner.page_size = Some(new);
                inner.dirty = (1..=pages).collect();
                new
            }
            _ => ps,
        };
        let header_commit = u32::from_be_bytes([page1[28], page1[29], page1[30], page1[31]]);
        let file_pages = inner
            .db
            .metadata()
            .map(|m| u32::try_from(m.len() / u64::from(ps.get())).unwrap_or(u32::MAX))
            .map_err(Error::io("stat", &db_path))?;
        let commit = if header_commit == 0 {
            file_pages
        } else {
            header_commit
        };
        inner.sums.set_len(commit);
        if !inner.pos.txid.is_zero() && inner.sums.total() == inner.pos.post_apply_checksum {
            // Every page is back as it was: a rollback by SQLite of a transaction a crashed
            // process left behind, not a new transaction.
            inner.dirty.clear();
            inner.synced = false;
            return Ok(());
        }
        // A transaction that began under the halt lock and commits after it was released, or
        // on a primary fenced meanwhile, is refused: SQLite rolls it back.
        self.check_writable()?;
        let dirty = std::mem::take(&mut inner.dirty);
        let durable = inner.synced;
        // Under the halt lock the primary may refuse the transaction.
        let keep = self.is_halted().then(|| dirty.clone());
        if let Err(e) = self.write_ltx(inner, ps, commit, dirty, None, durable) {
            // Not committed: SQLite rolls it back from its journal, rewriting these pages.
            if let Some(dirty) = keep {
                inner.dirty = dirty;
            }
            return Err(e);
        }
        inner.synced = false;
        inner.mode = mode_of(&page1);
        Ok(())
    }

    /// Captures the WAL transaction whose commit frame just chained.
    fn commit_wal(&self, inner: &mut Inner) -> Result<()> {
        let Some(t) = inner.wal.as_mut() else {
            return Ok(());
        };
        let frames = std::mem::take(&mut t.pending);
        let Some(last) = frames.last().copied() else {
            return Ok(());
        };
        let hdr = t.hdr;
        let start = t.committed_end;
        let end = last.offset + hdr.frame_size();
        let commit = last.commit;
        // The newest frame of each page wins.
        let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
        for f in &frames {
            if f.pgno <= commit {
                newest.insert(f.pgno, f.offset);
            }
        }
        // What this commit changes, to undo it if SQLite never publishes it.
        let len_before = inner.sums.len();
        let mut touched: Vec<u32> = newest.keys().copied().collect();
        touched.extend(commit.saturating_add(1)..=len_before);
        let sums_before = touched
            .iter()
            .filter_map(|&p| PageNum::new(p))
            .map(|p| (p, inner.sums.get(p)))
            .collect();
        let frames_before = inner.wal.as_ref().map_or_else(Vec::new, |t| {
            let mut v: Vec<(u32, Option<u64>)> = touched
                .iter()
                .map(|&p| (p, t.frames.get(&p).copied()))
                .collect();
            v.extend(
                t.frames
                    .iter()
                    .filter(|&(&p, _)| p > commit && p > len_before)
                    .map(|(&p, &o)| (p, Some(o))),
            );
            v
        });
        let undo = WalUndo {
            txid: inner.pos.txid.next().unwrap_or(TXID::new(u64::MAX)),
            start,
            sum_before: inner.wal.as_ref().map_or(hdr.checksum, |t| t.committed_sum),
            pos_before: inner.pos,
            timestamp_before: inner.timestamp,
            mode_before: inner.mode,
            len_before,
            sums_before,
            frames_before,
            pages: newest.keys().filter_map(|&p| PageNum::new(p)).collect(),
        };
        let top = newest.keys().next_back().copied().unwrap_or(0).max(commit);
        if top > len_before.saturating_add(MAX_GROWTH_PAGES) {
            return Err(Error::Growth {
                db: self.name.clone(),
                pages: top,
                limit: len_before.saturating_add(MAX_GROWTH_PAGES),
            });
        }
        if let Some(t) = inner.wal.as_mut() {
            t.last = Some(undo);
        }
        let applied = self.apply_wal_commit(inner, hdr, start, end, last, newest);
        if applied.is_err() {
            // SQLite sees the error and never publishes the transaction.
            self.retract_last_wal_commit(inner)?;
        }
        applied
    }

    /// The fallible part of a WAL commit: checksums, frames, position, LTX file.
    fn apply_wal_commit(
        &self,
        inner: &mut Inner,
        hdr: WalHeader,
        start: u64,
        end: u64,
        last: Frame,
        newest: BTreeMap<u32, u64>,
    ) -> Result<()> {
        // As in `commit_journal`: no commit once writes are refused.
        self.check_writable()?;
        let ps = hdr.page_size;
        let commit = last.commit;
        let len_before = inner.sums.len();
        let wal_file = self.path(FileKind::Wal);
        let mut page = vec![0u8; ps.bytes()];
        for (&pgno, &off) in &newest {
            let Some(p) = PageNum::new(pgno) else {
                continue;
            };
            if p == ps.lock_pgno() {
                continue;
            }
            self.file(inner, FileKind::Wal, false)?
                .read_exact_at(&mut page, off + FRAME_HEADER_SIZE)
                .map_err(Error::io("read", &wal_file))?;
            inner.sums.set(p, checksum_page(p, &page));
        }
        inner.sums.set_len(commit);
        inner.page_size = Some(ps);
        let wal_fields = WalFields {
            offset: start,
            size: end - start,
            salt1: hdr.salt1,
            salt2: hdr.salt2,
            txns: 1,
        };
        let pages: BTreeSet<u32> = newest.keys().copied().collect();
        if let Some(t) = inner.wal.as_mut() {
            for (&pgno, &off) in &newest {
                t.frames.insert(pgno, off);
            }
            t.frames.retain(|&p, _| p <= commit);
            t.committed_end = end;
            t.committed_sum = last.checksum;
        }
        if inner.pos.txid.is_zero() || self.opts.strict_verify || self.is_halted() {
            // Under the halt lock the primary must have the transaction before it commits.
            self.write_ltx(inner, ps, commit, pages, Some(wal_fields), false)?;
        } else {
            // The WAL holds every page of the transaction until it restarts, so the LTX file
            // is written off the commit path (see `flush_deferred`).
            let (header, list) = self.ltx_header(inner, ps, commit, pages, Some(wal_fields));
            let pages = list
                .into_iter()
                .filter_map(|p| {
                    let off = newest.get(&p.get())?;
                    Some((p, inner.sums.get(p), off + FRAME_HEADER_SIZE))
                })
                .collect();
            let post = inner.sums.total();
            let mut queue = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            let same_wal = queue
                .back()
                .filter(|d| (d.header.wal_salt1, d.header.wal_salt2) == (hdr.salt1, hdr.salt2));
            let wal = match same_wal {
                Some(d) => d.wal.clone(),
                None => Arc::new(
                    self.file(inner, FileKind::Wal, false)?
                        .try_clone()
                        .map_err(Error::io("open", &wal_file))?,
                ),
            };
            // Only a first transaction wakes the LTX writer: in a burst it sleeps until the
            // database is due.
            let first = queue.is_empty();
            queue.push_back(Deferred {
                header,
                post,
                pages,
                wal,
                at: Instant::now(),
                shrinks: commit < len_before,
            });
            drop(queue);
            inner.pos = Pos::new(header.max_txid, post);
            inner.timestamp = header.timestamp;
            if first {
                self.opts.wake.notify();
            }
        }
        let mut page1 = vec![0u8; ps.bytes()];
        if self
            .read_logical_page(inner, PageNum::ONE, &mut page1)
            .is_ok()
        {
            inner.mode = mode_of(&page1);
        }
        Ok(())
    }
}

impl Db {
    /// Before the WAL ends (restart, truncation, removal), SQLite has copied every transaction
    /// it published into the database file. If the newest commit's pages are not there, SQLite
    /// never published it (its writer died between writing the frames and publishing them):
    /// undo it.
    fn retract_unpublished(&self, inner: &mut Inner) -> Result<()> {
        let Some((ps, pages)) = inner
            .wal
            .as_ref()
            .and_then(|t| t.last.as_ref().map(|u| (t.hdr.page_size, u.pages.clone())))
        else {
            return Ok(());
        };
        let path = self.path(FileKind::Database);
        let mut buf = vec![0u8; ps.bytes()];
        for pgno in pages {
            let n = fsutil::read_full_at(&inner.db, &mut buf, ps.offset_of(pgno))
                .map_err(Error::io("read", &path))?;
            buf[n..].fill(0);
            if checksum_page(pgno, &buf) != inner.sums.get(pgno) {
                return self.retract_last_wal_commit(inner);
            }
        }
        Ok(())
    }

    /// Undoes the newest WAL commit: its LTX file (queued or written), checksums, frames and
    /// position.
    fn retract_last_wal_commit(&self, inner: &mut Inner) -> Result<()> {
        let Some(undo) = inner.wal.as_mut().and_then(|t| t.last.take()) else {
            return Ok(());
        };
        {
            // The newest transaction is never written with older ones (see `write_queued`):
            // it is still queued, or alone in its file.
            let _writer = self.ltx_writer.lock().unwrap_or_else(|e| e.into_inner());
            let mut queue = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            let queued = queue.back().is_some_and(|d| d.header.max_txid == undo.txid);
            if queued {
                queue.pop_back();
            } else if self.published().txid == undo.txid {
                // Written, alone in its file. (Otherwise its commit failed before it was
                // queued: there is no file, and what was published stays.)
                let path = self.ltx_dir.join(format_filename(undo.txid, undo.txid));
                self.forget_recent(undo.txid);
                fsutil::remove_if_exists(&path).map_err(Error::io("remove", &path))?;
                self.publish(undo.pos_before);
                self.unsynced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|p| *p != path);
            }
            self.retractions
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let grown = inner.sums.len().max(undo.len_before);
        inner.sums.set_len(grown);
        for &(pgno, sum) in &undo.sums_before {
            inner.sums.set(pgno, sum);
        }
        inner.sums.set_len(undo.len_before);
        if let Some(t) = inner.wal.as_mut() {
            for &(pgno, frame) in &undo.frames_before {
                match frame {
                    Some(off) => t.frames.insert(pgno, off),
                    None => t.frames.remove(&pgno),
                };
            }
            t.committed_end = undo.start;
            t.committed_sum = undo.sum_before;
            t.pending.clear();
        }
        tracing::warn!(
            db = %self.name,
            txid = %undo.txid,
            "retracted a WAL transaction that SQLite never published (its writer stopped before publishing it)"
        );
        inner.pos = undo.pos_before;
        inner.timestamp = undo.timestamp_before;
        inner.mode = undo.mode_before;
        Ok(())
    }
}

/// Where a WAL transaction's frames were, recorded in its LTX header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalFields {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) salt1: u32,
    pub(crate) salt2: u32,
    /// How many SQLite transactions the segment holds (more than one only when start-up
    /// recovery writes the transactions a crash left without LTX files as one file, named by
    /// their TXID range so that TXIDs stay what they were).
    pub(crate) txns: u64,
}

impl Db {
    /// Reads a page of the logical database: the newest committed WAL frame holding it, else
    /// the database file; zeros past the end of the file.
    pub(crate) fn read_logical_page(
        &self,
        inner: &mut Inner,
        pgno: PageNum,
        buf: &mut [u8],
    ) -> Result<()> {
        let frame = inner
            .wal
            .as_ref()
            .and_then(|t| t.frames.get(&pgno.get()).copied());
        let (kind, offset) = match frame {
            Some(off) => (FileKind::Wal, off + FRAME_HEADER_SIZE),
            None => (
                FileKind::Database,
                u64::from(pgno.get() - 1) * buf.len() as u64,
            ),
        };
        let path = self.path(kind);
        let f = self.file(inner, kind, false)?;
        let n = fsutil::read_full_at(f, buf, offset).map_err(Error::io("read", path))?;
        buf[n..].fill(0);
        Ok(())
    }

    /// The header and page list of the next transaction's LTX file: `pages` (every page for
    /// the first transaction) up to `commit`, never the lock page.
    fn ltx_header(
        &self,
        inner: &Inner,
        ps: PageSize,
        commit: u32,
        pages: BTreeSet<u32>,
        wal: Option<WalFields>,
    ) -> (Header, Vec<PageNum>) {
        let txid = inner.pos.txid.next().unwrap_or(TXID::new(u64::MAX));
        let span = wal.map_or(1, |w| w.txns.max(1));
        let max_txid = TXID::new(txid.get().saturating_add(span - 1));
        let snapshot = txid == TXID::ONE;
        let lock_pgno = ps.lock_pgno();
        let pages: Vec<PageNum> = if snapshot {
            (1..=commit)
                .filter_map(PageNum::new)
                .filter(|&p| p != lock_pgno)
                .collect()
        } else {
            pages
                .into_iter()
                .filter(|&p| p <= commit)
                .filter_map(PageNum::new)
                .filter(|&p| p != lock_pgno)
                .collect()
        };
        let mut header = Header::new(ps, commit, txid, max_txid);
        if self.opts.compress {
            header.flags = Flags::COMPRESS_LZ4;
        }
        header.timestamp = now_ms();
        header.node_id = self.opts.node_id;
        if !snapshot {
            header.pre_apply_checksum = inner.pos.post_apply_checksum;
        }
        if let Some(w) = wal {
            header.wal_offset = i64::try_from(w.offset).unwrap_or(i64::MAX);
            header.wal_size = i64::try_from(w.size).unwrap_or(i64::MAX);
            header.wal_salt1 = w.salt1;
            header.wal_salt2 = w.salt2;
        }
        (header, pages)
    }

    /// Encodes one LTX file under a temporary name and renames it into place (syncing file
    /// and directory when `durable`). Each page is read with `read` and checked against the
    /// checksum recorded when it was written.
    /// With `send`, under the halt lock, the file goes to the primary (see
    /// [`Db::set_halt_forward`]) before it is renamed into place.
    fn encode_ltx_file(
        &self,
        header: &Header,
        pages: &[(PageNum, Checksum, u64)],
        post: Checksum,
        durable: bool,
        send: bool,
        read: &mut PageReader<'_>,
    ) -> Result<PathBuf> {
        let name = format_filename(header.min_txid, header.max_txid);
        let path = self.ltx_dir.join(&name);
        let tmp = self.ltx_dir.join(format!("{name}.tmp"));
        let encode = |source| Error::Encode {
            db: self.name.clone(),
            source,
        };
        let write_err = Error::io("write", &tmp);
        let encode_pages = |w: &mut dyn io::Write, read: &mut PageReader<'_>| -> Result<()> {
            let mut enc = Encoder::new(w, header).map_err(encode)?;
            let mut buf = vec![0u8; header.page_size.bytes()];
            for &(pgno, expected, at) in pages {
                read(pgno, at, &mut buf)?;
                let actual = checksum_page(pgno, &buf);
                if actual != expected {
                    return Err(Error::PageChecksum {
                        db: self.name.clone(),
                        pgno: pgno.get(),
                        actual,
                        expected,
                    });
                }
                enc.encode_page(pgno, &buf).map_err(encode)?;
            }
            enc.finish(post).map_err(encode)?;
            Ok(())
        };
        let file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        // A small file is encoded in memory, written with one call and kept for replication.
        let most = pages
            .len()
            .saturating_mul(header.page_size.bytes() + litefs_ltx::header::PAGE_HEADER_SIZE)
            .saturating_add(litefs_ltx::header::HEADER_SIZE + litefs_ltx::header::TRAILER_SIZE);
        let small = most <= RECENT_LTX_MAX;
        let result = (|| {
            let mut bytes = None;
            let file = if small {
                let mut data = Vec::with_capacity(RECENT_LTX_MAX.min(64 << 10));
                encode_pages(&mut data, read)?;
                (&file).write_all(&data).map_err(write_err)?;
                bytes = Some(data);
                file
            } else {
                let mut w = BufWriter::with_capacity(64 << 10, file);
                encode_pages(&mut w, read)?;
                w.into_inner()
                    .map_err(|e| Error::io("write", &tmp)(e.into_error()))?
            };
            let forward = self
                .forward
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(ForwardSlot { forward, .. }) = forward.filter(|_| send) {
                forward(&tmp).map_err(|why| Error::Forward {
                    db: self.name.clone(),
                    why,
                })?;
            }
            fsutil::rename(&tmp, &path, &file, durable).map_err(Error::io("rename", &path))?;
            self.ltx_written(file.metadata().map_or(0, |m| m.len()));
            if let Some(data) = bytes {
                self.keep_recent(RecentLtx {
                    header: *header,
                    post,
                    bytes: data.into(),
                    written: Instant::now(),
                });
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }

    /// Keeps `ltx` among the recent files (see [`Db::recent_ltx`]).
    fn keep_recent(&self, ltx: RecentLtx) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back(ltx);
        let mut bytes: usize = recent.iter().map(|r| r.bytes.len()).sum();
        while recent.len() > RECENT_FILES || bytes > RECENT_BYTES {
            let Some(old) = recent.pop_front() else {
                break;
            };
            bytes -= old.bytes.len();
        }
    }

    /// The LTX file starting at `txid`, as this process wrote it, if it was small and written
    /// recently: its bytes are those of the file on disk, with no need to read or verify them
    /// again.
    pub fn recent_ltx(&self, txid: TXID) -> Option<RecentLtx> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .find(|r| r.header.min_txid == txid)
            .cloned()
    }

    /// Forgets the recent file starting at `txid` (it was removed).
    fn forget_recent(&self, txid: TXID) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.header.min_txid != txid);
    }

    /// Drops the recent files older than [`RECENT_AGE`] (called by the LTX writer thread).
    pub(crate) fn expire_recent(&self) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        while recent
            .front()
            .is_some_and(|r| r.written.elapsed() > RECENT_AGE)
        {
            recent.pop_front();
        }
    }

    /// Forgets every recent file and known range (this node's history was replaced).
    pub(crate) fn forget_history(&self) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Writes the LTX file of the next transaction now, from the logical database, with the
    /// current rolling checksum as post-apply checksum, and advances the position.
    pub(crate) fn write_ltx(
        &self,
        inner: &mut Inner,
        ps: PageSize,
        commit: u32,
        pages: BTreeSet<u32>,
        wal: Option<WalFields>,
        durable: bool,
    ) -> Result<()> {
        // Files are written in TXID order.
        self.flush_deferred()?;
        let (header, list) = self.ltx_header(inner, ps, commit, pages, wal);
        let pages: Vec<(PageNum, Checksum, u64)> = list
            .into_iter()
            .map(|p| (p, inner.sums.get(p), 0))
            .collect();
        let post = inner.sums.total();
        let path =
            self.encode_ltx_file(&header, &pages, post, durable, true, &mut |pgno, _, buf| {
                self.read_logical_page(inner, pgno, buf)
            })?;
        if !durable {
            self.unsynced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path);
        }
        inner.pos = Pos::new(header.max_txid, post);
        inner.timestamp = header.timestamp;
        if self
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.publish(inner.pos);
        }
        if self.opts.strict_verify {
            self.verify_logical(inner)?;
        }
        Ok(())
    }

    /// Writes the LTX files of committed WAL transactions that are still waiting, in order.
    /// On an error the transactions stay queued, to be tried again.
    pub(crate) fn flush_deferred(&self) -> Result<()> {
        let mut last = self.ltx_writer.lock().unwrap_or_else(|e| e.into_inner());
        self.write_queued(&mut last, true)
    }

    /// When the LTX writer thread should next write this database's queued transactions
    /// (`None` when nothing is queued): at once after a pause, a window after the previous
    /// file in a burst (see [`LTX_BATCH_WINDOW`]), and, for the one transaction held back,
    /// no later than [`LTX_BATCH_WINDOW`] after its commit (if it is still alone then, the
    /// burst is over).
    pub(crate) fn ltx_due(&self) -> Option<Instant> {
        let due = self
            .ltx_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_due();
        let queue = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        let newest = queue.back()?.at;
        let due = due.unwrap_or_else(Instant::now);
        Some(if queue.len() == 1 {
            due.min(newest + LTX_BATCH_WINDOW)
        } else {
            due
        })
    }

    /// The LTX writer thread's turn: writes what is queued if it is due (see
    /// [`Db::ltx_due`]). While a burst goes on, the newest transaction stays queued when older
    /// ones go, so that the next commits join it; once no commit came for [`LTX_BATCH_WINDOW`]
    /// (the burst is over), it goes too.
    pub(crate) fn write_due(&self) -> Result<()> {
        let mut last = self.ltx_writer.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (alone, over) = {
            let queue = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            let over = queue
                .back()
                .is_some_and(|d| now.duration_since(d.at) >= LTX_BATCH_WINDOW);
            (queue.len() == 1, over)
        };
        if last.next_due().is_some_and(|t| t > now) && !(alone && over) {
            return Ok(());
        }
        self.write_queued(&mut last, over)
    }

    /// Writes the transactions queued now, in order, consecutive ones together (see
    /// [`batch_len`]). The newest of them is never written with older ones, since it may
    /// still be retracted (`retract_last_wal_commit`), which must find it queued or alone in
    /// its file. With `all` it is then written alone; otherwise it stays queued if others
    /// went. Transactions queued meanwhile wait for the next turn.
    fn write_queued(&self, last: &mut LastWrite, all: bool) -> Result<()> {
        let mut left = self
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let mut wrote = false;
        while left > 0 {
            let batch: Vec<Deferred> = {
                let mut queue = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
                let n = match left {
                    1 if wrote && !all => return Ok(()),
                    1 => 1,
                    _ => batch_len(queue.range(..left - 1)),
                };
                left -= n;
                queue.drain(..n).collect()
            };
            let txns = batch.len();
            if let Err((e, batch)) = self.write_batch(batch) {
                let mut queue = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
                for item in batch.into_iter().rev() {
                    queue.push_front(item);
                }
                return Err(e);
            }
            wrote = true;
            *last = LastWrite {
                at: Some(Instant::now()),
                txns,
            };
        }
        Ok(())
    }

    /// Writes one LTX file for `batch` (consecutive transactions of one WAL, see
    /// [`batch_len`]): the newest version of each page it wrote. On an error the batch is
    /// given back.
    fn write_batch(&self, batch: Vec<Deferred>) -> std::result::Result<(), (Error, Vec<Deferred>)> {
        let (Some(first), Some(newest)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let mut header = first.header;
        header.max_txid = newest.header.max_txid;
        header.commit = newest.header.commit;
        header.timestamp = newest.header.timestamp;
        header.wal_size = newest
            .header
            .wal_offset
            .saturating_add(newest.header.wal_size)
            .saturating_sub(first.header.wal_offset);
        let post = newest.post;
        // The newest version of each page: its checksum and where it is in the WAL (the
        // batch's transactions are of one WAL, so any of their handles reads it).
        let mut pages: BTreeMap<PageNum, (Checksum, u64)> = BTreeMap::new();
        for item in &batch {
            for &(pgno, sum, at) in &item.pages {
                pages.insert(pgno, (sum, at));
            }
        }
        let list: Vec<(PageNum, Checksum, u64)> = pages
            .into_iter()
            .map(|(pgno, (sum, at))| (pgno, sum, at))
            .collect();
        let wal_path = self.path(FileKind::Wal);
        let wal = &newest.wal;
        let written =
            self.encode_ltx_file(&header, &list, post, false, false, &mut |_, at, buf| {
                wal.read_exact_at(buf, at)
                    .map_err(Error::io("read", &wal_path))
            });
        match written {
            Ok(path) => {
                self.unsynced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(path);
                self.remember_range(header.min_txid, header.max_txid);
                self.publish(Pos::new(header.max_txid, post));
                Ok(())
            }
            Err(e) => Err((e, batch)),
        }
    }

    /// The last TXID of a range file starting at `min` that this process wrote or received.
    pub(crate) fn range_from(&self, min: TXID) -> Option<TXID> {
        let ranges = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        ranges.get(&min.get()).map(|&max| TXID::new(max))
    }

    /// Records that the LTX file of `min..=max` exists (for [`Db::ltx_file`]).
    pub(crate) fn remember_range(&self, min: TXID, max: TXID) {
        if min == max {
            return;
        }
        let mut ranges = self.ranges.lock().unwrap_or_else(|e| e.into_inner());
        ranges.insert(min.get(), max.get());
        while ranges.len() > RANGES_KEPT {
            ranges.pop_first();
        }
    }

    /// Recomputes the logical database's checksum from disk and compares it with the position.
    pub(crate) fn verify_logical(&self, inner: &mut Inner) -> Result<()> {
        let Some(ps) = inner.page_size else {
            return Ok(());
        };
        let mut sum = litefs_ltx::RollingChecksum::new();
        let mut buf = vec![0u8; ps.bytes()];
        for n in 1..=inner.sums.len() {
            let Some(pgno) = PageNum::new(n) else {
                continue;
            };
            if pgno == ps.lock_pgno() {
                continue;
            }
            self.read_logical_page(inner, pgno, &mut buf)?;
            sum.toggle(checksum_page(pgno, &buf));
        }
        if sum.get() != inner.pos.post_apply_checksum {
            return Err(Error::ChecksumMismatch {
                db: self.name.clone(),
                txid: inner.pos.txid,
                actual: sum.get(),
                expected: inner.pos.post_apply_checksum,
            });
        }
        Ok(())
    }

    /// Writes the deferred LTX files, then makes every LTX file written without a sync
    /// durable: one file and its directory are synced directly; many at once are flushed with
    /// one `syncfs` of their filesystem, which costs far less than a sync per file.
    pub(crate) fn sync_ltx(&self, _inner: &mut Inner) -> Result<()> {
        self.flush_deferred()?;
        let mut unsynced = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        match unsynced.len() {
            0 => return Ok(()),
            1 => {
                let path = unsynced[0].clone();
                match File::open(&path) {
                    Ok(f) => f.sync_data().map_err(Error::io("sync", &path))?,
                    // Removed by retention in the meantime.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("open", &path)(e)),
                }
                fsutil::sync_dir(&self.ltx_dir).map_err(Error::io("sync", &self.ltx_dir))?;
            }
            _ => {
                fsutil::sync_filesystem(&self.ltx_dir).map_err(Error::io("sync", &self.ltx_dir))?
            }
        }
        unsynced.clear();
        Ok(())
    }

    /// Makes everything written so far durable (on shutdown).
    pub fn sync(&self) -> Result<()> {
        let mut inner = self.lock();
        self.sync_ltx(&mut inner)
    }

    /// Deletes LTX files last modified before `cutoff`, and the oldest ones while all of them
    /// take more than the store's `retention_max_size`, always keeping the newest. Returns how
    /// many were deleted.
    pub fn enforce_retention(&self, cutoff: SystemTime) -> Result<usize> {
        // Never leave only files a power loss could still take.
        self.sync()?;
        let mut files = Vec::new();
        let mut total = 0u64;
        for (min, _, path) in crate::recover::ltx_files(&self.ltx_dir)? {
            match fs::metadata(&path) {
                Ok(m) => {
                    total += m.len();
                    files.push((min, path, m.len(), m.modified().ok()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", &path)(e)),
            }
        }
        let max = self.opts.ltx_max_bytes;
        let mut removed = 0;
        let result = (|| {
            for (min, path, len, modified) in files.iter().rev().skip(1).rev() {
                let old = modified.is_some_and(|t| t < cutoff);
                let over = max > 0 && total > max;
                if !old && !over {
                    continue;
                }
                fsutil::remove_if_exists(path).map_err(Error::io("remove", path))?;
                self.forget_recent(*min);
                self.ranges
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&min.get());
                total -= len;
                removed += 1;
            }
            Ok(())
        })();
        // Files written meanwhile are counted again by the next pass.
        self.ltx_bytes
            .store(total, std::sync::atomic::Ordering::Release);
        let result = result.and_then(|()| {
            if max > 0 {
                self.prune_diverged(max)?;
            }
            Ok(())
        });
        result.map(|()| removed)
    }

    /// Deletes the oldest sets of `ltx/diverged/` (each the history one snapshot replaced)
    /// while they take more than `max` bytes, always keeping the newest set: every snapshot
    /// that replaces a history sets its files aside, and a node that diverges again and again
    /// must not fill its disk with them.
    fn prune_diverged(&self, max: u64) -> Result<()> {
        let dir = self.ltx_dir.join("diverged");
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("read", &dir)(e)),
        };
        let mut sets = Vec::new();
        let mut total = 0u64;
        for entry in entries {
            let entry = entry.map_err(Error::io("read", &dir))?;
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let size = fs::read_dir(&path)
                .map(|rd| {
                    rd.filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum::<u64>()
                })
                .unwrap_or(0);
            total += size;
            sets.push((meta.modified().ok(), path, size));
        }
        sets.sort();
        for (_, path, size) in sets.iter().rev().skip(1).rev() {
            if total <= max {
                break;
            }
            fs::remove_dir_all(path).map_err(Error::io("remove", path))?;
            tracing::warn!(db = %self.name, removed = %path.display(), "diverged LTX files over data.retention-max-size: the oldest set removed");
            total -= size;
        }
        Ok(())
    }

    /// Counts an LTX file of `len` bytes just placed in the LTX folder; past the store's
    /// `retention_max_size` the LTX writer thread is woken to delete the oldest files.
    pub(crate) fn ltx_written(&self, len: u64) {
        use std::sync::atomic::Ordering;
        let total = self
            .ltx_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != LTX_BYTES_UNKNOWN).then(|| n.saturating_add(len))
            })
            .map_or(LTX_BYTES_UNKNOWN, |n| n.saturating_add(len));
        if self.opts.ltx_max_bytes > 0 && total > self.opts.ltx_max_bytes {
            self.ltx_cap_due.store(true, Ordering::Release);
            self.opts.wake.notify();
        }
    }

    /// Whether the LTX files may take more than the store's `retention_max_size` since the
    /// last check (or were not measured yet), and forgets it: the LTX writer thread then runs
    /// [`Db::enforce_retention`] on them.
    pub(crate) fn take_ltx_cap_due(&self) -> bool {
        self.opts.ltx_max_bytes > 0
            && self
                .ltx_cap_due
                .swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// How many of `queued` (oldest first) go into one LTX file: consecutive transactions of the
/// same WAL (same salts and page size), at most [`BATCH_TXNS`] transactions and
/// [`BATCH_PAGES`] page writes. A transaction that shrank the database goes alone: one file
/// sets one size, and a page cut off and grown back within a file would keep its old content
/// on a replica. At least one.
fn batch_len<'a>(queued: impl Iterator<Item = &'a Deferred>) -> usize {
    let mut n = 0;
    let mut pages = 0;
    let mut prev: Option<&Header> = None;
    for item in queued {
        let h = &item.header;
        if item.shrinks {
            break;
        }
        if let Some(p) = prev {
            let joins = h.page_size == p.page_size
                && h.wal_salt1 == p.wal_salt1
                && h.wal_salt2 == p.wal_salt2
                && h.commit >= p.commit
                && h.commit > 0
                && p.max_txid.next() == Some(h.min_txid)
                && n < BATCH_TXNS
                && pages + item.pages.len() <= BATCH_PAGES;
            if !joins {
                break;
            }
        }
        pages += item.pages.len();
        n += 1;
        prev = Some(h);
    }
    n.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn queued(txid: u64, commit: u32, salts: (u32, u32), pages: usize) -> Deferred {
        let ps = PageSize::new(4096).unwrap();
        let mut header = Header::new(ps, commit, TXID::new(txid), TXID::new(txid));
        header.wal_salt1 = salts.0;
        header.wal_salt2 = salts.1;
        Deferred {
            header,
            post: Checksum::ZERO,
            pages: (1..=pages)
                .map(|p| (PageNum::new(p as u32).unwrap(), Checksum::ZERO, 0))
                .collect(),
            wal: Arc::new(tempfile::tempfile().unwrap()),
            at: Instant::now(),
            shrinks: false,
        }
    }

    #[test]
    fn consecutive_transactions_of_one_wal_go_together() {
        let q: Vec<Deferred> = (2..12).map(|t| queued(t, 10, (1, 2), 2)).collect();
        assert_eq!(batch_len(q.iter()), 10);
        assert_eq!(batch_len(q.iter().take(1)), 1);
        assert_eq!(batch_len(std::iter::empty()), 1);
    }

    #[test]
    fn a_batch_stops_at_a_new_wal_a_shrink_a_gap_or_a_limit() {
        // Another WAL (salts).
        let q = [queued(2, 10, (1, 2), 1), queued(3, 10, (1, 3), 1)];
        assert_eq!(batch_len(q.iter()), 1);
        // The database shrank.
        let q = [queued(2, 10, (1, 2), 1), queued(3, 9, (1, 2), 1)];
        assert_eq!(batch_len(q.iter()), 1);
        // Deleted (commit 0).
        let q = [queued(2, 10, (1, 2), 1), queued(3, 0, (1, 2), 0)];
        assert_eq!(batch_len(q.iter()), 1);
        // Not the next TXID.
        let q = [queued(2, 10, (1, 2), 1), queued(4, 10, (1, 2), 1)];
        assert_eq!(batch_len(q.iter()), 1);
        // Growing is fine.
        let q = [queued(2, 10, (1, 2), 1), queued(3, 11, (1, 2), 1)];
        assert_eq!(batch_len(q.iter()), 2);
        // A transaction that shrank the database goes alone, first or not: grown back in the
        // same file, a cut page would keep its old content on a replica.
        let mut shrank = queued(2, 8, (1, 2), 1);
        shrank.shrinks = true;
        let q = [shrank, queued(3, 10, (1, 2), 1)];
        assert_eq!(batch_len(q.iter()), 1);
        let mut shrank = queued(3, 10, (1, 2), 1);
        shrank.shrinks = true;
        let q = [queued(2, 10, (1, 2), 1), shrank];
        assert_eq!(batch_len(q.iter()), 1);
        // At most BATCH_TXNS transactions and BATCH_PAGES page writes.
        let q: Vec<Deferred> = (2..2 + BATCH_TXNS as u64 + 5)
            .map(|t| queued(t, 10, (1, 2), 1))
            .collect();
        assert_eq!(batch_len(q.iter()), BATCH_TXNS);
        let big = BATCH_PAGES / 2 + 1;
        let q = [queued(2, 10, (1, 2), big), queued(3, 10, (1, 2), big)];
        assert_eq!(batch_len(q.iter()), 1);
    }

    #[test]
    fn the_window_grows_with_the_previous_file_up_to_its_bound() {
        let at = Instant::now();
        let w = |txns| {
            LastWrite { at: Some(at), txns }
                .next_due()
                .unwrap()
                .duration_since(at)
        };
        assert_eq!(w(1), LTX_BATCH_WINDOW);
        assert_eq!(w(3), LTX_BATCH_WINDOW * 3);
        assert_eq!(w(1000), LTX_BATCH_WINDOW_MAX);
        assert_eq!(LastWrite::default().next_due(), None);
    }
}
