//! `GET /export?name=NAME` and `POST /import?name=NAME`: a database as a plain SQLite file, out
//! of any node and into the primary.
//!
//! An export is a snapshot from one consistent point ([`Db::write_snapshot`], which includes
//! what is in the WAL), written to a temporary LTX file and decoded page by page into the
//! response on a blocking thread (the lock page as zeros). Its length is known up front
//! (`Content-Length`); if anything fails once the body has started, the body ends short and the
//! client sees a cut response, never a shorter database.
//!
//! An import streams the body to a temporary file on the data directory's filesystem (memory
//! stays bounded), checks it with `PRAGMA integrity_check` (SQLite opened read-only on the
//! temporary file) before anything is replaced, then makes it the database's content as one
//! transaction, replicated like any other:
//! - A new database is created in the store and given the file ([`Db::replace_with`]); the
//!   kernel has nothing cached for it.
//! - A database that exists is replaced once no transaction is in progress on it: the import
//!   takes SQLite's own locks through the mount (as an exclusive writer would, waiting up to
//!   10 s for the writer and the readers in a transaction to finish; 409 after that), then the
//!   file is renamed over the database through the mount, exactly as `mv FILE DB` in the mount
//!   does, so that the mount tells the kernel to drop what it cached. A connection left open on
//!   the primary across an import fails from then on ("disk I/O error") and must be reopened,
//!   as after `mv`; replicas apply the import in place, and their open connections see the new
//!   database.
//!
//! Like LiteFS, the imported file's header is adjusted so that connections that cached the old
//! database notice: the change counter (and the version-valid-for number, when it was valid)
//! and the schema cookie become the replaced database's plus one (LiteFS zeroes them). A new
//! database gets the file's bytes unchanged.
//!
//! Differences from LiteFS: LiteFS checks nothing and answers 500 to every failure; this answers
//! 400 (not a database, fails the check), 409 (a transaction in progress that does not finish,
//! WAL frames not checkpointed, or a plain file with that name) or 503 (not served).
//!
//! Temporary files live in `<data.dir>/tmp/`, named with the process id; those of earlier
//! processes are removed the first time this process needs the folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use litefs_ltx::{Decoder, Header, Pos};
use litefs_store::{content_of, Content, Db, FileKind, JournalMode, Store};
use tokio::sync::mpsc;

use super::{db_name_param, text, Api, ApiBody, ChannelBody};

/// How much of an export is handed to the connection at once.
const CHUNK: usize = 1 << 20;

/// How many body chunks of an import may wait for the disk.
const IMPORT_QUEUE: usize = 16;

/// How many problems `PRAGMA integrity_check` reports at most.
const MAX_INTEGRITY_ERRORS: u32 = 20;

/// Why an export or an import failed; each maps to one status code.
#[derive(thiserror::Error, Debug)]
pub(crate) enum TransferError {
    /// The request is wrong (the file is not a sound SQLite database).
    #[error("{0}")]
    BadRequest(String),
    /// The name is taken by something that is not a database.
    #[error("{0}")]
    Conflict(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] litefs_store::Error),
    /// A temporary file could not be written or read.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TransferError + 'a {
    move |source| TransferError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl TransferError {
    fn status(&self) -> StatusCode {
        use litefs_store::Error as E;
        match self {
            TransferError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TransferError::Conflict(_) => StatusCode::CONFLICT,
            TransferError::Store(e) => match e {
                E::NotFound(_) => StatusCode::NOT_FOUND,
                E::InvalidName(..) | E::NotADatabase { .. } => StatusCode::BAD_REQUEST,
                E::Busy { .. } => StatusCode::CONFLICT,
                E::ReadOnly(_) | E::Unavailable { .. } | E::SnapshotMoved { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            TransferError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn response(&self) -> Response<ApiBody> {
        let status = self.status();
        let msg = litefs_store::error_chain(self);
        if status.is_server_error() {
            tracing::warn!("{msg}");
        }
        text(status, msg)
    }
}

/// Numbers temporary files within this process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);
/// Removes earlier processes' temporary files once.
static TEMP_CLEANED: Once = Once::new();

/// A temporary file in `<data.dir>/tmp/` (not created here), removed with its `-wal` and `-shm`
/// when dropped unless it was renamed away.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Names a new temporary file (nothing is created).
    fn new(store: &Store, what: &str) -> TempFile {
        let dir = store
            .dbs_dir()
            .parent()
            .unwrap_or(store.dbs_dir())
            .join("tmp");
        let pid = std::process::id();
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        TempFile {
            path: dir.join(format!("{what}-{pid}-{n}.tmp")),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the `-wal` and `-shm` files SQLite may have made beside it.
    fn remove_sidecars(&self) {
        for suffix in ["-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        self.remove_sidecars();
    }
}

/// Creates the folder of the temporary file `path` (and removes earlier processes' files from
/// it, the first time).
fn create_temp_dir(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    fs::create_dir_all(dir)?;
    TEMP_CLEANED.call_once(|| remove_stale(dir, std::process::id()));
    Ok(())
}

/// Removes the temporary files of other processes (`<what>-<pid>-<n>.tmp...`).
fn remove_stale(dir: &Path, pid: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let ours = pid.to_string();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.split('-').nth(1) != Some(ours.as_str()) {
            tracing::info!(file = %entry.path().display(), "removing a temporary file left by an earlier run");
            let _ = fs::remove_file(entry.path());
        }
    }
}

impl Api {
    /// `GET /export?name=NAME`: the database as a plain SQLite file, on any node.
    pub(super) async fn export(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let name = match db_name_param(req.uri()) {
            Ok(n) => n,
            Err(resp) => return resp,
        };
        let Some(db) = self.store.db(&name).filter(|d| d.is_present()) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("database {name:?} not found"),
            );
        };
        let store = self.store.clone();
        let snap = tokio::task::spawn_blocking(move || snapshot(&store, &db)).await;
        let (file, header) = match snap {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return e.response(),
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("export task failed: {e}"),
                )
            }
        };
        let len = u64::from(header.commit) * u64::from(header.page_size.get());
        tracing::info!(db = %name, txid = %header.max_txid, bytes = len, "exporting");
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = send_pages(file, &tx) {
                tracing::warn!(db = %name, "export cut short: {e}");
            }
        });
        let mut resp = Response::new(ChannelBody { rx, len: Some(len) }.boxed());
        let headers = resp.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/vnd.sqlite3"),
        );
        headers.insert(hyper::header::CONTENT_LENGTH, len.into());
        resp
    }

    /// `POST /import?name=NAME`: replaces (or creates) the database with the SQLite file in the
    /// body, on the primary.
    pub(super) async fn import(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let (parts, mut body) = req.into_parts();
        // A refusal still reads the body: an answer sent while the client is still sending can
        // reach it as a broken connection instead.
        let name = match db_name_param(&parts.uri) {
            Ok(n) => n,
            Err(resp) => {
                drain(&mut body).await;
                return resp;
            }
        };
        if !*self.primary.borrow() {
            drain(&mut body).await;
            let msg = match self.store.status().primary() {
                Some(host) => {
                    format!("this node is not the primary: import on the primary, {host}")
                }
                None => "this node is not the primary, and no primary is known".to_owned(),
            };
            return text(StatusCode::SERVICE_UNAVAILABLE, msg);
        }
        let tmp = TempFile::new(&self.store, "import");
        let size = match receive(&mut body, &tmp).await {
            Ok(n) => n,
            Err(resp) => {
                // Removing it is file system work too.
                let _ = tokio::task::spawn_blocking(move || drop(tmp)).await;
                return resp;
            }
        };
        let store = self.store.clone();
        let mount = PathBuf::from(&self.mount_dir);
        let invalidator = self.invalidator.clone();
        let done = tokio::task::spawn_blocking(move || {
            let res = import_file(&store, &mount, &invalidator, &name, &tmp);
            drop(tmp);
            res.map(|pos| (name, pos))
        })
        .await;
        match done {
            Ok(Ok((name, pos))) => {
                tracing::info!(db = %name, %pos, bytes = size, "imported a database");
                text(StatusCode::OK, format!("imported {name}: position {pos}"))
            }
            Ok(Err(e)) => e.response(),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("import task failed: {e}"),
            ),
        }
    }
}

/// Writes a snapshot LTX file of `db` to a temporary file and returns it open (the name is
/// already gone) with its header.
fn snapshot(store: &Store, db: &Db) -> Result<(File, Header), TransferError> {
    let tmp = TempFile::new(store, "export");
    create_temp_dir(tmp.path()).map_err(io_err("create", tmp.path()))?;
    let header = db.write_snapshot(tmp.path(), false)?;
    let file = File::open(tmp.path()).map_err(io_err("open", tmp.path()))?;
    Ok((file, header))
}

/// What an export has handed over: the chunk being filled, and the full one before it, held
/// back until the file is verified so that a bad file ends the body short.
struct Pages<'a> {
    tx: &'a mpsc::Sender<Bytes>,
    chunk: Vec<u8>,
    held: Option<Bytes>,
}

impl Pages<'_> {
    fn send(&self, b: Bytes) -> Result<(), String> {
        self.tx
            .blocking_send(b)
            .map_err(|_| "the client went away".to_owned())
    }

    fn push(&mut self, data: &[u8]) -> Result<(), String> {
        self.chunk.extend_from_slice(data);
        if self.chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
            if let Some(prev) = self.held.replace(Bytes::from(full)) {
                self.send(prev)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        if let Some(prev) = self.held.take() {
            self.send(prev)?;
        }
        if !self.chunk.is_empty() {
            let last = Bytes::from(std::mem::take(&mut self.chunk));
            self.send(last)?;
        }
        Ok(())
    }
}

/// Decodes the snapshot LTX file `file` into the pages of a database file, in order, the lock
/// page as zeros.
fn send_pages(file: File, tx: &mpsc::Sender<Bytes>) -> Result<(), String> {
    let mut dec = Decoder::new(BufReader::with_capacity(CHUNK, file)).map_err(|e| e.to_string())?;
    let h = *dec.header();
    let ps = h.page_size.bytes();
    let zeros = vec![0u8; ps];
    let mut page = vec![0u8; ps];
    let mut out = Pages {
        tx,
        chunk: Vec::with_capacity(CHUNK + ps),
        held: None,
    };
    let commit = u64::from(h.commit);
    let mut next = 1u64;
    while let Some(pgno) = dec.next_page(&mut page).map_err(|e| e.to_string())? {
        let p = u64::from(pgno.get());
        if p < next || p > commit {
            return Err(format!(
                "page {p} out of order in a snapshot of {commit} pages"
            ));
        }
        while next < p {
            out.push(&zeros)?;
            next += 1;
        }
        out.push(&page)?;
        next = p + 1;
    }
    while next <= commit {
        out.push(&zeros)?;
        next += 1;
    }
    dec.finish().map_err(|e| e.to_string())?;
    out.finish()
}

/// Reads and discards the rest of a request body.
async fn drain(body: &mut Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// Streams the request body into a new file at `path` (through a bounded queue to a blocking
/// writer), synced. Returns its size, or the response saying what failed.
#[allow(clippy::result_large_err)] // a cold path; the response is built once
async fn receive(body: &mut Incoming, tmp: &TempFile) -> Result<u64, Response<ApiBody>> {
    let path = tmp.path();
    let (tx, mut rx) = mpsc::channel::<Bytes>(IMPORT_QUEUE);
    let target = path.to_owned();
    let writer = tokio::task::spawn_blocking(move || -> io::Result<u64> {
        create_temp_dir(&target)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)?;
        let mut n = 0u64;
        while let Some(b) = rx.blocking_recv() {
            f.write_all(&b)?;
            n += b.len() as u64;
        }
        f.sync_all()?;
        Ok(n)
    });
    let mut read_err = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if tx.send(data).await.is_err() {
                        // The writer failed; it says why below.
                        break;
                    }
                }
            }
            Err(e) => {
                read_err = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await;
    if let Some(e) = read_err {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("read the request body: {e}"),
        ));
    }
    match written {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            drain(body).await;
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("write {}: {e}", path.display()),
            ))
        }
        Err(e) => {
            drain(body).await;
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("import writer failed: {e}"),
            ))
        }
    }
}

/// Checks the received file and makes it database `name`'s content. Returns the database's
/// position afterwards.
fn import_file(
    store: &Store,
    mount: &Path,
    invalidator: &litefs_fuse::Invalidator,
    name: &str,
    tmp: &TempFile,
) -> Result<Pos, TransferError> {
    check_file(tmp)?;
    if let Some(db) = store.db(name).filter(|d| d.is_present()) {
        let locked = exclude_transactions(mount, name, db.mode())?;
        db.ensure_idle()?;
        bump_header(&db, tmp.path())?;
        let page_size = fs::File::open(tmp.path())
            .and_then(|f| litefs_store::content_of(&f))
            .map_err(io_err("read", tmp.path()))?;
        db.replace_with(tmp.path())?;
        // The kernel forgets the old pages and size, so connections left open see the new
        // database (its change counter moved) instead of failing.
        if let litefs_store::Content::Database(ps) = page_size {
            invalidator.database_changed(name, None, ps.get());
        }
        invalidator.names_changed(name);
        drop(locked);
        return Ok(db.pos());
    }
    let local = store.files_dir().join(name);
    if fs::symlink_metadata(&local).is_ok() {
        return Err(TransferError::Conflict(format!(
            "{name} is a file in the mount that is not a database (or a directory); \
             remove it first"
        )));
    }
    let existed = store.db(name).is_some();
    let db = store.create_db(name)?;
    if let Err(e) = db.replace_with(tmp.path()) {
        if !existed && !db.is_present() {
            let _ = store.forget(name);
        }
        return Err(e.into());
    }
    Ok(db.pos())
}

/// The file must be a SQLite database that passes `PRAGMA integrity_check`.
fn check_file(tmp: &TempFile) -> Result<(), TransferError> {
    let path = tmp.path();
    let f = File::open(path).map_err(io_err("open", path))?;
    match content_of(&f).map_err(io_err("read", path))? {
        Content::Empty => {
            return Err(TransferError::BadRequest(
                "the body is empty, not a SQLite database".to_owned(),
            ))
        }
        Content::Other(why) => {
            return Err(TransferError::BadRequest(format!(
                "the body is not a SQLite database ({why})"
            )))
        }
        Content::Database(_) => {}
    }
    drop(f);
    let checked = integrity_check(path);
    tmp.remove_sidecars();
    checked.map_err(|problems| {
        TransferError::BadRequest(format!(
            "the database fails PRAGMA integrity_check; nothing was replaced: {problems}"
        ))
    })
}

/// Runs `PRAGMA integrity_check` on the file, opened read-only; the problems, if any.
fn integrity_check(path: &Path) -> Result<(), String> {
    use rusqlite::{Connection, OpenFlags};
    let rows = (|| -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The schema comes from the network: no functions with side effects in it.
        conn.execute_batch("PRAGMA trusted_schema = OFF;")?;
        let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({MAX_INTEGRITY_ERRORS})"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    })();
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(()),
        Ok(rows) if rows.is_empty() => Err("no result".to_owned()),
        Ok(rows) => Err(rows.join("; ")),
        Err(e) => Err(e.to_string()),
    }
}

fn be_u32(b: &[u8; 100], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Makes the file's change counter and schema cookie differ from the database it replaces,
/// so that connections that cached the old one read it again (SQLite compares them at the
/// start of every transaction).
fn bump_header(db: &Db, path: &Path) -> Result<(), TransferError> {
    let mut old = [0u8; 100];
    if db.read(FileKind::Database, 0, &mut old)? < old.len() {
        return Ok(());
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let mut new = [0u8; 100];
    f.read_exact_at(&mut new, 0).map_err(io_err("read", path))?;
    let counter = be_u32(&old, 24).wrapping_add(1).to_be_bytes();
    // The in-header size is trusted only while version-valid-for equals the counter.
    let size_valid = be_u32(&new, 92) == be_u32(&new, 24);
    new[24..28].copy_from_slice(&counter);
    if size_valid {
        new[92..96].copy_from_slice(&counter);
    }
    let cookie = be_u32(&old, 40).wrapping_add(1).to_be_bytes();
    new[40..44].copy_from_slice(&cookie);
    f.write_all_at(&new, 0)
        .and_then(|()| f.sync_data())
        .map_err(io_err("write", path))
}

/// SQLite's lock bytes in the database file (rollback journal modes).
const PENDING_BYTE: i64 = 0x4000_0000;
const RESERVED_BYTE: i64 = PENDING_BYTE + 1;
const SHARED_FIRST: i64 = PENDING_BYTE + 2;
const SHARED_SIZE: i64 = 510;
/// SQLite's lock bytes in the WAL index (`-shm`): WRITE, CKPT, RECOVER, READ0..4, then DMS.
const SHM_WRITE: i64 = 120;
const SHM_LOCK_COUNT: i64 = 8;
const SHM_DMS: i64 = SHM_WRITE + SHM_LOCK_COUNT;

/// How long an import waits for the transactions in progress on the database it replaces.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// SQLite's locks on a database, held through the mount (OFD locks, which the kernel
/// arbitrates with SQLite's own); released when dropped.
struct Excluded {
    _file: Option<File>,
}

/// Tries to take an OFD lock; `false` if another holds a conflicting one.
fn try_lock(file: &File, kind: libc::c_int, start: i64, len: i64) -> io::Result<bool> {
    crate::apply::try_ofd_lock(file, kind, start, len)
}

/// Waits until no transaction is in progress on database `name` and keeps new ones from
/// starting, as SQLite's own exclusive lock does: in rollback modes the RESERVED byte (the
/// writer finishes), then PENDING (no new reader), then every SHARED byte (the readers finish);
/// in WAL mode every lock of the WAL index (WRITE first), and DMS shared. Gives up after
/// [`LOCK_WAIT`] with [`litefs_store::Error::Busy`].
fn exclude_transactions(
    mount: &Path,
    name: &str,
    mode: JournalMode,
) -> Result<Excluded, TransferError> {
    let (path, locks): (PathBuf, &[(libc::c_int, i64, i64)]) = match mode {
        JournalMode::Rollback => (
            mount.join(name),
            &[
                (libc::F_WRLCK, RESERVED_BYTE, 1),
                (libc::F_WRLCK, PENDING_BYTE, 1),
                (libc::F_WRLCK, SHARED_FIRST, SHARED_SIZE),
            ],
        ),
        JournalMode::Wal => (
            mount.join(format!("{name}-shm")),
            &[
                (libc::F_WRLCK, SHM_WRITE, 1),
                (libc::F_WRLCK, SHM_WRITE + 1, SHM_LOCK_COUNT - 1),
                (libc::F_RDLCK, SHM_DMS, 1),
            ],
        ),
    };
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        // No WAL index: no connection has the database open in WAL mode.
        Err(e) if mode == JournalMode::Wal && e.kind() == io::ErrorKind::NotFound => {
            return Ok(Excluded { _file: None })
        }
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(1);
    let mut logged = false;
    for &(kind, start, len) in locks {
        while !try_lock(&file, kind, start, len).map_err(io_err("lock", &path))? {
            if Instant::now() >= deadline {
                return Err(litefs_store::Error::Busy {
                    db: name.to_owned(),
                    why: "a transaction on it did not finish in time for the import",
                }
                .into());
            }
            if !logged {
                tracing::info!(db = %name, "waiting for the transactions in progress to finish before importing");
                logged = true;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
    Ok(Excluded { _file: Some(file) })
}
