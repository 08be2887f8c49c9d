//! The primary's side of `/stream`: for one connected replica, send every transaction it
//! lacks, as LiteFS 0.5's `handlePostStream` does (spec §1.5, §4.3). The stream is produced by
//! a task into a bounded channel of body pieces, so a slow replica only ever holds up its own
//! task, never a writer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use litefs_ltx::{Header, Pos, TXID};
use litefs_store::{Db, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::codec::{Frame, PosMap, MAX_CHUNK_LEN};

/// How many body pieces may wait for a replica. A piece is at most 256 KiB (small LTX files
/// joined, or one 64 KiB chunk of a larger one), so a replica holds at most 16 MiB of the
/// primary's memory.
pub const STREAM_BUFFER: usize = 64;

/// After a round that sent transactions, the next round waits until this long after it: a
/// burst of commits goes in fewer, larger rounds. A transaction after a pause goes at once.
pub const BURST_WINDOW: Duration = Duration::from_millis(1);

/// How often an idle stream sends a heartbeat (LiteFS's `HeartbeatInterval`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The messages recently built from LTX files (frame, chunked body, HWM frame), shared by every
/// stream of a node: each file is read and verified once however many replicas receive it.
#[derive(Debug, Default)]
pub struct FileCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: std::collections::HashMap<(String, u64), Cached>,
    order: std::collections::VecDeque<(String, u64)>,
    bytes: usize,
}

#[derive(Clone, Debug)]
struct Cached {
    /// The database's retraction count when the message was built (a retracted transaction's
    /// TXID, and pre-apply checksum, go to the next one).
    generation: u64,
    /// The checksum the file applies to.
    pre: litefs_ltx::Checksum,
    /// The position it reaches.
    after: Pos,
    piece: Bytes,
}

/// How much [`FileCache`] keeps: entries and bytes.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 64 << 20;

impl FileCache {
    fn get(&self, db: &str, txid: TXID) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.get(&(db.to_owned(), txid.get())).cloned()
    }

    fn put(&self, db: &str, txid: TXID, entry: Cached) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (db.to_owned(), txid.get());
        inner.bytes += entry.piece.len();
        if let Some(old) = inner.entries.insert(key.clone(), entry) {
            inner.bytes -= old.piece.len();
        } else {
            inner.order.push_back(key);
        }
        while inner.order.len() > CACHE_ENTRIES || inner.bytes > CACHE_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.piece.len();
            }
        }
    }
}

/// A request to hand the lease over to a stream's replica, or (without a lease) to send it
/// everything the primary has before the primary stops.
#[derive(Debug)]
pub struct Handoff {
    /// The lease id the replica takes over; `None`: only send everything, and say when it has
    /// left the stream (the stream goes on).
    pub lease_id: Option<String>,
    /// Told once the Handoff frame is queued (after every transaction the primary has), or,
    /// without a lease, once everything was taken by the connection.
    pub sent: oneshot::Sender<()>,
}

/// How long a drain (a [`Handoff`] without a lease) waits for the connection to take what was
/// queued.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// What a stream needs to know.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// LZ4-compress snapshots (`data.compress`).
    pub compress: bool,
    /// Only these databases (the replica's `filter`); all when empty.
    pub filter: Vec<String>,
    /// Names the replica in logs.
    pub peer: String,
    /// Shared by the node's streams.
    pub cache: Arc<FileCache>,
}

/// Why a stream stopped.
#[derive(thiserror::Error, Debug)]
pub enum StreamError {
    /// The replica went away (its body was dropped).
    #[error("the replica disconnected")]
    Disconnected,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] litefs_store::Error),
    /// Reading an LTX file failed.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An LTX file on disk does not verify.
    #[error("{path} does not verify")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: litefs_ltx::DecodeError,
    },
    /// A blocking task failed.
    #[error("a blocking task failed: {0}")]
    Join(String),
}

/// One replica's stream.
struct Streamer {
    store: Arc<Store>,
    opts: StreamOptions,
    tx: mpsc::Sender<Bytes>,
    /// What the replica has, as far as this stream knows.
    client: BTreeMap<String, Pos>,
}

/// Streams to one replica until `cancel` fires or the replica goes away: the receiving end
/// yields the response body, piece by piece. `changes` moves whenever a database's published
/// position does.
pub fn spawn(
    store: Arc<Store>,
    client: PosMap,
    opts: StreamOptions,
    changes: watch::Receiver<u64>,
    handoff: mpsc::Receiver<Handoff>,
    cancel: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let mut streamer = Streamer {
        store,
        opts,
        tx,
        client: client.into_map(),
    };
    tracker.spawn(async move {
        match streamer.run(changes, handoff, cancel).await {
            Ok(()) | Err(StreamError::Disconnected) => {
                tracing::info!(peer = %streamer.opts.peer, "stream ended");
            }
            Err(e) => {
                tracing::warn!(peer = %streamer.opts.peer, "stream failed: {}", litefs_store::error_chain(&e));
            }
        }
    });
    rx
}

impl Streamer {
    async fn send(&self, piece: Vec<u8>) -> Result<(), StreamError> {
        self.tx
            .send(Bytes::from(piece))
            .await
            .map_err(|_| StreamError::Disconnected)
    }

    async fn send_frame(&self, frame: &Frame) -> Result<(), StreamError> {
        self.send(frame.to_bytes()).await
    }

    fn wanted(&self, name: &str) -> bool {
        self.opts.filter.is_empty() || self.opts.filter.iter().any(|f| f == name)
    }

    /// Every database this stream may have to send.
    fn all_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.client.keys().cloned().collect();
        names.extend(self.store.dbs().iter().map(|db| db.name().to_owned()));
        names.retain(|n| self.wanted(n));
        names
    }

    async fn run(
        &mut self,
        mut changes: watch::Receiver<u64>,
        mut handoff: mpsc::Receiver<Handoff>,
        cancel: CancellationToken,
    ) -> Result<(), StreamError> {
        let mut ready = false;
        // When the previous round sent something: commits are coming one after another.
        let mut last_round: Option<tokio::time::Instant> = None;
        let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        changes.mark_changed();
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // Best effort: the replica learns the stream ended on purpose.
                    let _ = self.tx.try_send(Bytes::from(Frame::End.to_bytes()));
                    return Ok(());
                }
                Some(h) = handoff.recv() => {
                    // Everything the primary has first, then the lease: the replica takes it
                    // over holding every transaction (the primary no longer takes writes).
                    for name in self.all_names() {
                        self.stream_db(&name).await?;
                    }
                    let Some(lease_id) = h.lease_id else {
                        // A drain: wait until the connection took every queued frame.
                        let until = tokio::time::Instant::now() + DRAIN_WAIT;
                        while self.tx.capacity() < self.tx.max_capacity()
                            && tokio::time::Instant::now() < until
                        {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        let _ = h.sent.send(());
                        continue;
                    };
                    self.send_frame(&Frame::Handoff { lease_id }).await?;
                    // The frame is queued for the body; the replica gets it unless it goes.
                    let _ = h.sent.send(());
                    return Ok(());
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if let Some(at) = last_round {
                        // In a burst, wait a moment so that one round carries several
                        // transactions (one wake-up instead of one per commit).
                        if at.elapsed() < BURST_WINDOW {
                            tokio::time::sleep_until(at + BURST_WINDOW).await;
                        }
                    }
                    let before = self.client.clone();
                    for name in self.all_names() {
                        self.stream_db(&name).await?;
                    }
                    last_round = (self.client != before).then(tokio::time::Instant::now);
                    if !ready {
                        self.send_frame(&Frame::Ready).await?;
                        ready = true;
                        self.heartbeat().await?;
                    }
                }
                _ = ticker.tick() => {
                    if ready {
                        self.heartbeat().await?;
                    }
                }
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), StreamError> {
        self.send_frame(&Frame::Heartbeat {
            timestamp_ms: litefs_store::status::now_ms(),
        })
        .await
    }

    /// Sends database `name` until the replica has what the primary has published.
    async fn stream_db(&mut self, name: &str) -> Result<(), StreamError> {
        let Some(db) = self.store.db(name) else {
            return Ok(());
        };
        loop {
            let pos = db.published();
            let mut have = self.client.get(name).copied().unwrap_or(Pos::ZERO);
            if pos.txid.is_zero() {
                return Ok(());
            }
            if have.txid > pos.txid
                || (have.txid == pos.txid && have.post_apply_checksum != pos.post_apply_checksum)
            {
                tracing::warn!(peer = %self.opts.peer, db = %name, replica = %have, primary = %pos, "the replica's history differs from the primary's: sending a snapshot");
                have = Pos::ZERO;
            }
            if have.txid >= pos.txid {
                return Ok(());
            }
            let next = have.txid.next().unwrap_or(TXID::ONE);
            let file = if next == TXID::ONE {
                None
            } else {
                next_file(&db, next)
            };
            let sent = match file {
                Some((path, header)) if header.pre_apply_checksum == have.post_apply_checksum => {
                    // This file and the ones after it, as far as they are published, in one
                    // blocking task.
                    let mut paths = vec![path];
                    let mut txid = header.max_txid;
                    while paths.len() < SEND_BATCH && txid < pos.txid {
                        let Some(next) = txid.next().and_then(|t| db.ltx_file(t)) else {
                            break;
                        };
                        // A file may hold several transactions (a TXID range).
                        let Some(max) = next
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(|n| litefs_ltx::parse_filename(n).ok())
                            .map(|(_, max)| max)
                        else {
                            break;
                        };
                        paths.push(next);
                        txid = max;
                    }
                    self.send_files(&db, paths, have).await?
                }
                _ => Some(self.send_snapshot(&db).await?),
            };
            let sent = match sent {
                Some(sent) => sent,
                // Nothing continued the replica's position after all.
                None => self.send_snapshot(&db).await?,
            };
            self.client.insert(name.to_owned(), sent);
        }
    }

    /// Sends a snapshot of `db`, written first to a temporary file beside its LTX files.
    async fn send_snapshot(&self, db: &Arc<Db>) -> Result<Pos, StreamError> {
        let tmp = db.ltx_dir().join(format!(
            "snapshot-{}-{}.tmp",
            std::process::id(),
            sanitize(&self.opts.peer)
        ));
        let compress = self.opts.compress;
        let blocking_db = db.clone();
        let blocking_tmp = tmp.clone();
        tokio::task::spawn_blocking(move || blocking_db.write_snapshot(&blocking_tmp, compress))
            .await
            .map_err(|e| StreamError::Join(e.to_string()))??;
        tracing::info!(peer = %self.opts.peer, db = %db.name(), "sending a snapshot");
        let sent = self.send_file(db.name(), tmp.clone(), true).await;
        let _ = std::fs::remove_file(&tmp);
        sent
    }

    /// Sends LTX files that continue each other from `from` (each verified first) in one
    /// blocking task, as the large-file path of [`Streamer::send_file`] does one by one.
    /// Returns the position reached, or `None` if the first file did not continue `from`.
    async fn send_files(
        &mut self,
        db: &Arc<Db>,
        paths: Vec<PathBuf>,
        from: Pos,
    ) -> Result<Option<Pos>, StreamError> {
        let name = db.name().to_owned();
        let cache = self.opts.cache.clone();
        // A few small files, just written, are in memory or in the page cache: reading them
        // here costs less than a hop to a blocking thread.
        let chain = if paths.len() <= INLINE_FILES {
            build_chain(db, &paths, from, &cache)?
        } else {
            let db = db.clone();
            tokio::task::spawn_blocking(move || build_chain(&db, &paths, from, &cache))
                .await
                .map_err(|e| StreamError::Join(e.to_string()))??
        };
        let name = name.as_str();
        let reached = match chain {
            Chain::Pieces(pieces, reached) => {
                // Small files go together as one message (one write to the connection).
                if pieces.len() == 1 {
                    for piece in pieces {
                        self.tx
                            .send(piece)
                            .await
                            .map_err(|_| StreamError::Disconnected)?;
                    }
                } else {
                    let mut joined: Vec<u8> = Vec::new();
                    for piece in pieces {
                        if !joined.is_empty() && joined.len() + piece.len() > JOIN_LIMIT {
                            self.send(std::mem::take(&mut joined)).await?;
                        }
                        joined.extend_from_slice(&piece);
                    }
                    if !joined.is_empty() {
                        self.send(joined).await?;
                    }
                }
                reached
            }
            Chain::Large(path) => {
                let tx = self.tx.clone();
                let db = name.to_owned();
                tokio::task::spawn_blocking(move || send_large(&db, &path, from, &tx))
                    .await
                    .map_err(|e| StreamError::Join(e.to_string()))??
            }
        };
        if let Some(pos) = reached {
            self.client.insert(name.to_owned(), pos);
        }
        Ok(reached)
    }

    /// Sends one LTX file (verified first) as an LTX frame, its chunked body and an HWM frame.
    /// Returns the position the replica reaches with it.
    async fn send_file(
        &self,
        name: &str,
        path: PathBuf,
        snapshot: bool,
    ) -> Result<Pos, StreamError> {
        let verify_path = path.clone();
        let (header, trailer, _) = tokio::task::spawn_blocking(move || {
            let f = File::open(&verify_path).map_err(|source| StreamError::Read {
                path: verify_path.clone(),
                source,
            })?;
            litefs_ltx::verify(BufReader::with_capacity(1 << 20, f)).map_err(|source| {
                StreamError::Invalid {
                    path: verify_path.clone(),
                    source,
                }
            })
        })
        .await
        .map_err(|e| StreamError::Join(e.to_string()))??;
        tracing::debug!(peer = %self.opts.peer, db = %name, min = %header.min_txid, max = %header.max_txid, snapshot, "sending ltx file");
        self.send_frame(&Frame::Ltx {
            name: name.to_owned(),
        })
        .await?;
        let tx = self.tx.clone();
        let read_path = path.clone();
        tokio::task::spawn_blocking(move || send_chunks(&read_path, &tx))
            .await
            .map_err(|e| StreamError::Join(e.to_string()))??;
        self.send_frame(&Frame::Hwm {
            txid: TXID::ZERO,
            name: name.to_owned(),
        })
        .await?;
        Ok(Pos::new(header.max_txid, trailer.post_apply_checksum))
    }
}

/// How many LTX files one blocking task sends at most.
const SEND_BATCH: usize = 256;

/// Files up to this size are read into memory once, verified and sent from there (larger
/// ones go in chunks of at most 64 KiB).
const IN_MEMORY_LTX: u64 = JOIN_LIMIT as u64;

/// Files sent in one round are joined into messages of up to this size.
const JOIN_LIMIT: usize = 256 << 10;

/// At most this many files are read on the stream's own task (more go to a blocking thread).
const INLINE_FILES: usize = 8;

/// What a run of LTX files becomes on the stream.
enum Chain {
    /// One piece per file (frame, chunked body, HWM frame) and the position they reach
    /// (`None` if the first file did not continue the replica's position).
    Pieces(Vec<Bytes>, Option<Pos>),
    /// The first file is too large to hold in memory: it goes the streaming way.
    Large(PathBuf),
}

/// Reads and verifies `paths` (LTX files of `db`) in order while each continues the position
/// before it. A file this process wrote moments ago comes from memory (as written, so not
/// verified again).
fn build_chain(
    db: &Db,
    paths: &[PathBuf],
    from: Pos,
    cache: &FileCache,
) -> Result<Chain, StreamError> {
    let name = db.name();
    // Read before the files: a retraction meanwhile makes what is built here unusable later.
    let generation = db.retractions();
    let mut at = from;
    let mut reached = None;
    let mut pieces = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let txid = at.txid.next().unwrap_or(TXID::ONE);
        // A message built for another stream (an entry of another history does not continue
        // this position: the file is read again).
        if let Some(hit) = cache
            .get(name, txid)
            .filter(|h| h.pre == at.post_apply_checksum && h.generation == generation)
        {
            pieces.push(hit.piece);
            at = hit.after;
            reached = Some(at);
            continue;
        }
        let (header, post, data) = match db.recent_ltx(txid) {
            Some(r) => (r.header, r.post, LtxBytes::Recent(r.bytes)),
            None => {
                let read_err = |source| StreamError::Read {
                    path: path.clone(),
                    source,
                };
                let len = std::fs::metadata(path).map_err(read_err)?.len();
                if len > IN_MEMORY_LTX {
                    if i == 0 {
                        return Ok(Chain::Large(path.clone()));
                    }
                    break;
                }
                let data = std::fs::read(path).map_err(read_err)?;
                let (header, trailer, _) =
                    litefs_ltx::verify(&data[..]).map_err(|source| StreamError::Invalid {
                        path: path.clone(),
                        source,
                    })?;
                (header, trailer.post_apply_checksum, LtxBytes::Read(data))
            }
        };
        if header.is_snapshot() || header.pre_apply_checksum != at.post_apply_checksum {
            break;
        }
        let data = data.as_slice();
        // One piece per file: the frame, the chunked body and the HWM frame together, so a
        // transaction costs one message to the connection.
        let mut piece = Vec::with_capacity(data.len() + data.len() / MAX_CHUNK_LEN * 2 + 64);
        Frame::Ltx {
            name: name.to_owned(),
        }
        .encode(&mut piece);
        crate::codec::encode_chunks(data, &mut piece);
        Frame::Hwm {
            txid: TXID::ZERO,
            name: name.to_owned(),
        }
        .encode(&mut piece);
        let piece = Bytes::from(piece);
        let after = Pos::new(header.max_txid, post);
        cache.put(
            name,
            header.min_txid,
            Cached {
                generation,
                pre: header.pre_apply_checksum,
                after,
                piece: piece.clone(),
            },
        );
        pieces.push(piece);
        at = after;
        reached = Some(at);
    }
    Ok(Chain::Pieces(pieces, reached))
}

/// An LTX file's bytes: as this process wrote them, or as read back (and verified).
enum LtxBytes {
    Recent(Arc<[u8]>),
    Read(Vec<u8>),
}

impl LtxBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            LtxBytes::Recent(b) => b,
            LtxBytes::Read(v) => v,
        }
    }
}

/// Sends one large LTX file: verified in a first pass, then read again chunk by chunk.
fn send_large(
    name: &str,
    path: &Path,
    from: Pos,
    tx: &mpsc::Sender<Bytes>,
) -> Result<Option<Pos>, StreamError> {
    let f = File::open(path).map_err(|source| StreamError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (header, trailer, _) =
        litefs_ltx::verify(BufReader::with_capacity(1 << 20, f)).map_err(|source| {
            StreamError::Invalid {
                path: path.to_owned(),
                source,
            }
        })?;
    if !header.is_snapshot() && header.pre_apply_checksum != from.post_apply_checksum {
        return Ok(None);
    }
    let send = |piece: Vec<u8>| {
        tx.blocking_send(Bytes::from(piece))
            .map_err(|_| StreamError::Disconnected)
    };
    send(
        Frame::Ltx {
            name: name.to_owned(),
        }
        .to_bytes(),
    )?;
    send_chunks(path, tx)?;
    send(
        Frame::Hwm {
            txid: TXID::ZERO,
            name: name.to_owned(),
        }
        .to_bytes(),
    )?;
    Ok(Some(Pos::new(header.max_txid, trailer.post_apply_checksum)))
}

/// Sends the file at `path` in chunked encoding, chunk by chunk (blocking on a full channel).
fn send_chunks(path: &Path, tx: &mpsc::Sender<Bytes>) -> Result<(), StreamError> {
    let read_err = |source| StreamError::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(read_err)?;
    let mut buf = vec![0u8; MAX_CHUNK_LEN];
    loop {
        let n = read_full(&mut f, &mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        let mut piece = Vec::with_capacity(n + 2);
        piece.extend_from_slice(&(n as u16).to_be_bytes());
        piece.extend_from_slice(&buf[..n]);
        tx.blocking_send(Bytes::from(piece))
            .map_err(|_| StreamError::Disconnected)?;
    }
    tx.blocking_send(Bytes::from_static(&[0, 0]))
        .map_err(|_| StreamError::Disconnected)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The LTX file of `db` whose range starts at `txid`, with its header, if there is one.
fn next_file(db: &Db, txid: TXID) -> Option<(PathBuf, Header)> {
    let read_header = |path: &Path| {
        let mut hdr = [0u8; litefs_ltx::header::HEADER_SIZE];
        File::open(path)
            .and_then(|mut f| f.read_exact(&mut hdr))
            .ok()?;
        Header::from_bytes(&hdr).ok()
    };
    if let Some(r) = db.recent_ltx(txid) {
        let path = db.ltx_dir().join(litefs_ltx::format_filename(
            r.header.min_txid,
            r.header.max_txid,
        ));
        return Some((path, r.header));
    }
    // A file of one transaction or a range (a burst of WAL commits, crash recovery).
    if let Some(path) = db.ltx_file(txid) {
        if let Some(h) = read_header(&path) {
            return Some((path, h));
        }
    }
    let dir = db.ltx_dir();
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok((min, _)) = litefs_ltx::parse_filename(name) else {
            continue;
        };
        if min != txid {
            continue;
        }
        let path = entry.path();
        if let Some(h) = read_header(&path) {
            return Some((path, h));
        }
    }
    None
}

/// `peer` with only characters safe in a file name.
fn sanitize(peer: &str) -> String {
    peer.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
