//! Replication in the store: applying the LTX files a replica receives, the WAL-index header
//! that tells a replica's WAL-mode readers the database changed, and the consistent snapshots
//! a primary sends. Nothing here touches the network or the mount; the caller excludes local
//! readers (through the mount's locks) and tells the kernel what changed.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use litefs_ltx::{
    checksum_page, format_filename, Decoder, Encoder, Flags, Header, PageNum, PageSize, Pos,
    RollingChecksum, TXID,
};

use crate::db::{Db, FileKind, JournalMode, MAX_GROWTH_PAGES};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::recover::{ltx_files, read_ltx};
use crate::sums::PageSums;
use crate::wal::FRAME_HEADER_SIZE;

/// What applying one LTX file changed.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The database's position afterwards.
    pub pos: Pos,
    /// The file was a snapshot: every page (and the size) may have changed.
    pub snapshot: bool,
    /// The pages written.
    pub pages: Vec<PageNum>,
    /// Page size afterwards.
    pub page_size: PageSize,
    /// Size in pages afterwards (0: the database was deleted).
    pub commit: u32,
    /// This node's own LTX files that a snapshot replaced, moved to `ltx/diverged/`.
    pub diverged: Vec<PathBuf>,
    /// Committed WAL frames were first copied into the database file (see [`Db::fold_wal`]):
    /// the WAL index must start a new WAL.
    pub folded: bool,
    /// The file was this node's own transaction (written under the halt lock), already here,
    /// coming back from the primary: nothing changed.
    pub own: bool,
}

/// Size of the part of the WAL index (`-shm`) that [`wal_index_header`] rewrites: two copies of
/// the index header and the checkpoint information.
pub const WAL_INDEX_HEADER_SIZE: usize = 136;

/// SQLite's WAL-index version (`WALINDEX_MAX_VERSION`).
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// The WAL-index header that makes WAL-mode readers see a database of `pages` pages of
/// `page_size`, entirely in the database file (no WAL frames), from the header they have now
/// (`current`, its first [`WAL_INDEX_HEADER_SIZE`] bytes, or shorter if the index is new).
/// The change counter moves on, so every reader drops its cache. With `restart` (the WAL's
/// frames were copied into the database file, see [`Applied::folded`]) the first salt moves on
/// too, as when SQLite restarts a WAL, so that no old frame can pass for a new one. Native byte
/// order, as SQLite keeps it.
pub fn wal_index_header(
    current: &[u8],
    page_size: PageSize,
    pages: u32,
    restart: bool,
) -> [u8; 136] {
    let word = |at: usize| {
        current
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    let change = word(8).wrapping_add(1);
    let big_end = current.get(13).copied().unwrap_or(0);
    let salts = [word(32).wrapping_add(u32::from(restart)), word(36)];
    let mut hdr = [0u8; 48];
    hdr[0..4].copy_from_slice(&WAL_INDEX_VERSION.to_ne_bytes());
    hdr[8..12].copy_from_slice(&change.to_ne_bytes());
    hdr[12] = 1; // isInit
    hdr[13] = big_end;
    let raw_size = if page_size.get() == 65536 {
        1
    } else {
        page_size.get() as u16
    };
    hdr[14..16].copy_from_slice(&raw_size.to_ne_bytes());
    // mxFrame (16..20) and the last frame's checksum (24..32) stay zero: no frames.
    hdr[20..24].copy_from_slice(&pages.to_ne_bytes());
    hdr[32..36].copy_from_slice(&salts[0].to_ne_bytes());
    hdr[36..40].copy_from_slice(&salts[1].to_ne_bytes());
    let (s1, s2) = native_checksum(&hdr[..40]);
    hdr[40..44].copy_from_slice(&s1.to_ne_bytes());
    hdr[44..48].copy_from_slice(&s2.to_ne_bytes());
    let mut out = [0u8; WAL_INDEX_HEADER_SIZE];
    out[..48].copy_from_slice(&hdr);
    out[48..96].copy_from_slice(&hdr);
    // Checkpoint information: nothing backfilled, reader 0 on the database file alone, the
    // other read marks unused. The lock bytes (120..128) are kept as they are.
    let mut marks = [0u8; 24];
    for (i, m) in marks.chunks_exact_mut(4).enumerate() {
        let v: u32 = if i == 0 || i > 5 { 0 } else { u32::MAX };
        m.copy_from_slice(&v.to_ne_bytes());
    }
    out[96..120].copy_from_slice(&marks);
    if let Some(locks) = current.get(120..128) {
        out[120..128].copy_from_slice(locks);
    }
    out
}

/// SQLite's WAL checksum over native-order words (`walChecksumBytes` with `nativeCksum`).
fn native_checksum(data: &[u8]) -> (u32, u32) {
    let (mut s1, mut s2) = (0u32, 0u32);
    for pair in data.chunks_exact(8) {
        let a = u32::from_ne_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let b = u32::from_ne_bytes([pair[4], pair[5], pair[6], pair[7]]);
        s1 = s1.wrapping_add(a).wrapping_add(s2);
        s2 = s2.wrapping_add(b).wrapping_add(s1);
    }
    (s1, s2)
}

/// LTX files up to this size are read into memory once when applied.
const IN_MEMORY_LTX: u64 = 16 << 20;

/// How many times a snapshot is tried without holding the database's lock before it is taken
/// under it.
const SNAPSHOT_TRIES: usize = 3;

impl Db {
    /// On a replica: applies the LTX file at `src` (received from the primary; on the same
    /// filesystem as the data directory). A file that is not a snapshot must continue the
    /// database's position exactly. The file is verified whole, made durable in the LTX
    /// folder, its pages written into the database file, and the result must have the file's
    /// post-apply checksum. A snapshot that replaces a database with a history keeps that
    /// history in `ltx/diverged/<txid>/`, never deletes it.
    pub fn apply_ltx(&self, src: &Path) -> Result<Applied> {
        self.apply_ltx_with(src, true)
    }

    /// Whether the LTX file starting with `start` (its first bytes) is one of this node's own
    /// transactions that the database already has: one written under the halt lock and
    /// streamed back by the primary. Applying it changes nothing.
    pub fn is_own_ltx(&self, start: &[u8]) -> bool {
        let Some(h) = start
            .get(..litefs_ltx::header::HEADER_SIZE)
            .and_then(|b| b.try_into().ok())
            .and_then(|b| Header::from_bytes(b).ok())
        else {
            return false;
        };
        !h.is_snapshot() && h.node_id == self.node_id() && h.max_txid <= self.pos().txid
    }

    /// [`Db::apply_ltx`], with the syncs left to the caller when `durable` is false (applying
    /// a batch of files, then syncing once with [`Db::sync_applied`]). A replica that stops
    /// before the sync gets what it lost from the primary again.
    pub fn apply_ltx_with(&self, src: &Path, durable: bool) -> Result<Applied> {
        // Read and verified once, before the database is locked: its readers (`-pos`
        // included) wait only for the writes. A large file (a snapshot) is read twice rather
        // than held in memory.
        let small = fs::metadata(src).map_err(Error::io("stat", src))?.len() <= IN_MEMORY_LTX;
        let data = if small {
            Some(fs::read(src).map_err(Error::io("read", src))?)
        } else {
            None
        };
        self.apply_from(src, data, false, durable)
    }

    /// [`Db::apply_ltx_with`] for an LTX file received into memory: it is written straight to
    /// its place in the LTX folder (a crash that cuts it short leaves a file that does not
    /// verify, which start-up moves aside, and the primary sends it again).
    pub fn apply_ltx_bytes(&self, data: Vec<u8>, durable: bool) -> Result<Applied> {
        let label = self.ltx_dir().join("received");
        self.apply_from(&label, Some(data), true, durable)
    }

    fn apply_from(
        &self,
        src: &Path,
        data: Option<Vec<u8>>,
        in_memory: bool,
        durable: bool,
    ) -> Result<Applied> {
        let decode_src = |source| Error::Decode {
            db: self.name().to_owned(),
            path: src.to_owned(),
            source,
        };
        // A file in memory is decoded (and so verified) once, here, with its pages kept.
        let mut decoded: Option<Vec<(PageNum, Vec<u8>)>> = None;
        let (h, t) = match &data {
            Some(bytes) => {
                let mut dec = Decoder::new(&bytes[..]).map_err(decode_src)?;
                let ps = dec.header().page_size.bytes();
                let mut pages = Vec::with_capacity(dec.page_count() as usize);
                let mut buf = vec![0u8; ps];
                while let Some(pgno) = dec.next_page(&mut buf).map_err(decode_src)? {
                    pages.push((pgno, buf.clone()));
                }
                let t = dec.finish().map_err(decode_src)?;
                decoded = Some(pages);
                (*dec.header(), t)
            }
            None => read_ltx(self, src)?,
        };
        let mut inner = self.lock();
        self.check_available(&inner)?;
        let snapshot = h.is_snapshot();
        if !snapshot && h.node_id == self.node_id() && h.max_txid <= inner.pos.txid {
            // A transaction this node wrote under the halt lock, streamed back by the primary.
            if !in_memory {
                let _ = fs::remove_file(src);
            }
            return Ok(Applied {
                pos: inner.pos,
                snapshot: false,
                pages: Vec::new(),
                page_size: inner.page_size.unwrap_or(h.page_size),
                commit: inner.sums.len(),
                diverged: Vec::new(),
                folded: false,
                own: true,
            });
        }
        if self.is_halted() {
            // The primary wrote a transaction of its own: it no longer holds this node's halt
            // lock, and this node's writes would not apply there.
            tracing::warn!(db = %self.name(), txid = %h.max_txid, "a transaction from the primary arrived under the halt lock: the lock is gone, writes are refused again");
            self.set_halt_forward_locked(None);
        }
        if !snapshot {
            let want = Pos::new(
                h.min_txid.prev().unwrap_or(TXID::ZERO),
                h.pre_apply_checksum,
            );
            if inner.pos != want {
                return Err(Error::PosMismatch {
                    db: self.name().to_owned(),
                    have: inner.pos,
                    want,
                });
            }
            // No transaction may grow the database by more than a write here may: a commit
            // size beyond that is refused before anything is written (a snapshot holds every
            // page it counts, which the decoder has checked).
            let txns = u32::try_from(h.max_txid.get() - h.min_txid.get() + 1).unwrap_or(u32::MAX);
            let limit = inner
                .sums
                .len()
                .saturating_add(MAX_GROWTH_PAGES.saturating_mul(txns));
            if h.commit > limit {
                return Err(Error::Growth {
                    db: self.name().to_owned(),
                    pages: h.commit,
                    limit,
                });
            }
        }
        self.sync_ltx(&mut inner)?;
        // Transactions of this node still in its WAL (a former primary, or writes under the
        // halt lock) go into the database file first, durably, before anything of this file
        // is written: the pages are written there.
        let folded = self.fold_wal(&mut inner)?;
        let ltx_dir = self.ltx_dir().to_owned();
        let mut diverged = Vec::new();
        if snapshot {
            self.forget_history();
        }
        if snapshot && !inner.pos.txid.is_zero() {
            let aside = ltx_dir
                .join("diverged")
                .join(format!("{}-replaced-by-{}", inner.pos.txid, h.max_txid));
            for (_, _, path) in ltx_files(&ltx_dir)? {
                fs::create_dir_all(&aside).map_err(Error::io("create", &aside))?;
                let to = aside.join(path.file_name().unwrap_or_default());
                fs::rename(&path, &to).map_err(Error::io("rename", &path))?;
                diverged.push(to);
            }
            if !diverged.is_empty() {
                fsutil::sync_dir(&aside).map_err(Error::io("sync", &aside))?;
                tracing::warn!(db = %self.name(), from = %inner.pos, to = %Pos::new(h.max_txid, t.post_apply_checksum), kept = %aside.display(), files = diverged.len(), "a snapshot from the primary replaces this database's history; its LTX files are kept");
            }
        }
        // The space the pages need in the database file is taken before anything is written:
        // on a full disk the apply fails here with ENOSPC, with the database as it was, and
        // is tried again (the primary sends the file again) instead of leaving the database
        // between two states.
        let db_path = self.dir().join(FileKind::Database.backing_name());
        if h.commit > 0 {
            let len = u64::from(h.commit) * u64::from(h.page_size.get());
            crate::fsutil::allocate(&inner.db, len).map_err(Error::io("allocate", &db_path))?;
        }
        let dst = ltx_dir.join(format_filename(h.min_txid, h.max_txid));
        match (&data, in_memory) {
            (Some(bytes), true) => {
                let written = (|| {
                    let mut f = File::create(&dst)?;
                    f.write_all(bytes)?;
                    if durable {
                        f.sync_all()?;
                    }
                    Ok(())
                })();
                if let Err(e) = written {
                    // No partial file may stay under the name of a transaction not applied.
                    let _ = fs::remove_file(&dst);
                    return Err(Error::io("write", &dst)(e));
                }
                self.ltx_written(bytes.len() as u64);
            }
            _ => {
                if durable {
                    File::open(src)
                        .and_then(|f| f.sync_all())
                        .map_err(Error::io("sync", src))?;
                }
                fs::rename(src, &dst).map_err(Error::io("rename", src))?;
                self.ltx_written(fs::metadata(&dst).map_or(0, |m| m.len()));
            }
        }
        if durable {
            fsutil::sync_dir(&ltx_dir).map_err(Error::io("sync", &ltx_dir))?;
        }
        if !snapshot {
            self.remember_range(h.min_txid, h.max_txid);
        }

        // The pages.
        let ps = h.page_size;
        if snapshot || inner.page_size != Some(ps) {
            inner.sums = PageSums::default();
        }
        let decode = |source| Error::Decode {
            db: self.name().to_owned(),
            path: dst.clone(),
            source,
        };
        drop(data);
        let mut pages = Vec::new();
        let written = (|| {
            let mut put = |inner: &mut crate::db::Inner, pgno: PageNum, buf: &[u8]| {
                inner
                    .db
                    .write_all_at(buf, ps.offset_of(pgno))
                    .map_err(Error::io("write", &db_path))?;
                inner.sums.set(pgno, checksum_page(pgno, buf));
                pages.push(pgno);
                Ok::<(), Error>(())
            };
            match decoded {
                Some(decoded) => {
                    for (pgno, buf) in &decoded {
                        put(&mut inner, *pgno, buf)?;
                    }
                }
                None => {
                    let f = File::open(&dst).map_err(Error::io("open", &dst))?;
                    let mut dec =
                        Decoder::new(BufReader::with_capacity(1 << 20, f)).map_err(decode)?;
                    let mut buf = vec![0u8; ps.bytes()];
                    while let Some(pgno) = dec.next_page(&mut buf).map_err(decode)? {
                        put(&mut inner, pgno, &buf)?;
                    }
                    dec.finish().map_err(decode)?;
                }
            }
            let len = u64::from(h.commit) * u64::from(ps.get());
            let current = inner
                .db
                .metadata()
                .map_err(Error::io("stat", &db_path))?
                .len();
            if current != len {
                inner
                    .db
                    .set_len(len)
                    .map_err(Error::io("truncate", &db_path))?;
            }
            inner.sums.set_len(h.commit);
            if durable {
                inner.db.sync_data().map_err(Error::io("sync", &db_path))?;
            }
            Ok(())
        })();
        let actual = inner.sums.total();
        if let Err(e) = written.and_then(|()| {
            if actual == t.post_apply_checksum {
                Ok(())
            } else {
                Err(Error::ChecksumMismatch {
                    db: self.name().to_owned(),
                    txid: h.max_txid,
                    actual,
                    expected: t.post_apply_checksum,
                })
            }
        }) {
            // The database file is between two states: not served until a restart repairs
            // it from the LTX files.
            inner.unavailable = Some(format!(
                "applying {} failed: {}",
                dst.display(),
                crate::error::chain(&e)
            ));
            return Err(e);
        }
        inner.pos = Pos::new(h.max_txid, t.post_apply_checksum);
        inner.timestamp = h.timestamp;
        if h.commit == 0 {
            for kind in [FileKind::Journal, FileKind::Wal] {
                let path = self.dir().join(kind.backing_name());
                fsutil::remove_if_exists(&path).map_err(Error::io("remove", path))?;
            }
            inner.journal = None;
            inner.wal = None;
            inner.wal_file = None;
            inner.page_size = None;
            inner.mode = JournalMode::Rollback;
            inner.present = false;
        } else {
            inner.page_size = Some(ps);
            let mut p1 = [0u8; 100];
            if inner.db.read_exact_at(&mut p1, 0).is_ok() {
                inner.mode = if p1[18] == 2 && p1[19] == 2 {
                    JournalMode::Wal
                } else {
                    JournalMode::Rollback
                };
            }
            inner.present = true;
        }
        self.publish(inner.pos);
        Ok(Applied {
            pos: inner.pos,
            snapshot,
            pages,
            page_size: ps,
            commit: h.commit,
            diverged,
            folded: !folded.is_empty(),
            own: false,
        })
        .map(|mut a| {
            a.pages.extend(folded);
            a
        })
    }

    /// On a replica: rolls back the transaction a hot journal holds (one a former primary was
    /// in when it stepped down, whose writer can no longer finish or roll it back here: its
    /// writes are refused). The caller keeps SQLite out (PENDING and every SHARED byte) and
    /// then tells the kernel the database changed. Returns whether there was one.
    pub fn roll_back_journal(&self) -> Result<bool> {
        let mut inner = self.lock();
        if !self.journaled(&mut inner)? || self.is_halted() {
            return Ok(false);
        }
        let journal_path = self.dir().join(FileKind::Journal.backing_name());
        let db_path = self.dir().join(FileKind::Database.backing_name());
        let journal = match self.file(&mut inner, FileKind::Journal, false) {
            Ok(j) => j.try_clone().map_err(Error::io("open", &journal_path))?,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let rb = crate::journal::rollback(&journal, &inner.db)
            .map_err(Error::io("roll back", &journal_path))?;
        inner.db.sync_data().map_err(Error::io("sync", &db_path))?;
        inner.journal = None;
        fsutil::remove_if_exists(&journal_path).map_err(Error::io("remove", &journal_path))?;
        inner.dirty.clear();
        // The checksums follow the file again: they must be those of the last transaction.
        if let Some(ps) = inner.page_size {
            let len = inner
                .db
                .metadata()
                .map_err(Error::io("stat", &db_path))?
                .len();
            let pages = u32::try_from(len / u64::from(ps.get())).unwrap_or(u32::MAX);
            inner.sums = crate::recover::file_sums(&inner.db, ps, pages)
                .map_err(Error::io("read", &db_path))?;
        }
        if !inner.pos.txid.is_zero() && inner.sums.total() != inner.pos.post_apply_checksum {
            let e = Error::ChecksumMismatch {
                db: self.name().to_owned(),
                txid: inner.pos.txid,
                actual: inner.sums.total(),
                expected: inner.pos.post_apply_checksum,
            };
            inner.unavailable = Some(format!(
                "rolling back a hot journal left the database unlike its position: {}",
                crate::error::chain(&e)
            ));
            return Err(e);
        }
        tracing::info!(db = %self.name(), ?rb, "rolled back the transaction a former primary left in its journal");
        Ok(true)
    }

    /// Copies the WAL's committed frames (the newest of each page) into the database file and
    /// forgets them, so that the database file alone holds the database, as a checkpoint of
    /// the whole WAL would. The caller keeps SQLite out (every lock of the WAL index) and then
    /// tells its readers to start a new WAL. Returns the pages copied.
    pub(crate) fn fold_wal(&self, inner: &mut crate::db::Inner) -> Result<Vec<PageNum>> {
        let Some((ps, frames)) = inner
            .wal
            .as_ref()
            .filter(|t| !t.frames.is_empty())
            .map(|t| (t.page_size(), t.frames.clone()))
        else {
            return Ok(Vec::new());
        };
        // Queued LTX files read their pages from these frames.
        self.flush_deferred()?;
        self.sync_ltx(inner)?;
        let wal_path = self.dir().join(FileKind::Wal.backing_name());
        let db_path = self.dir().join(FileKind::Database.backing_name());
        let wal = inner
            .wal_file
            .as_ref()
            .map(File::try_clone)
            .transpose()
            .map_err(Error::io("open", &wal_path))?;
        let wal = match wal {
            Some(f) => f,
            None => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&wal_path)
                .map_err(Error::io("open", &wal_path))?,
        };
        let mut buf = vec![0u8; ps.bytes()];
        let mut pages = Vec::with_capacity(frames.len());
        for (&pgno, &off) in &frames {
            let Some(p) = PageNum::new(pgno) else {
                continue;
            };
            if pgno > inner.sums.len() || p == ps.lock_pgno() {
                continue;
            }
            wal.read_exact_at(&mut buf, off + FRAME_HEADER_SIZE)
                .map_err(Error::io("read", &wal_path))?;
            inner
                .db
                .write_all_at(&buf, ps.offset_of(p))
                .map_err(Error::io("write", &db_path))?;
            pages.push(p);
        }
        let len = u64::from(inner.sums.len()) * u64::from(ps.get());
        inner
            .db
            .set_len(len)
            .map_err(Error::io("truncate", &db_path))?;
        // Durable before the WAL is voided.
        inner.db.sync_data().map_err(Error::io("sync", &db_path))?;
        // The WAL's header is zeroed, so that neither SQLite (rebuilding its index after a
        // restart) nor this store's start-up recovery takes the old frames for current ones.
        wal.write_all_at(&[0u8; crate::wal::WAL_HEADER_SIZE as usize], 0)
            .and_then(|()| wal.sync_data())
            .map_err(Error::io("write", &wal_path))?;
        inner.wal = None;
        tracing::info!(db = %self.name(), pages = pages.len(), "copied the WAL's transactions into the database file");
        Ok(pages)
    }

    /// Makes everything [`Db::apply_ltx_with`] wrote without syncing durable: one `syncfs` of
    /// the data directory's filesystem.
    pub fn sync_applied(&self) -> Result<()> {
        fsutil::sync_filesystem(self.dir()).map_err(Error::io("sync", self.dir()))
    }

    /// On a primary: writes a snapshot LTX file of the database (every page, TXIDs 1 to the
    /// current one) to the file `to` (created or truncated), from one consistent point. It is
    /// first read without holding the database (writers go on; a page that changed meanwhile is
    /// caught by its checksum and the attempt starts again), and only after [`SNAPSHOT_TRIES`]
    /// such attempts under the database's lock.
    pub fn write_snapshot(&self, to: &Path, compress: bool) -> Result<Header> {
        for attempt in 0..=SNAPSHOT_TRIES {
            let hold = attempt == SNAPSHOT_TRIES;
            let file = File::create(to).map_err(Error::io("create", to))?;
            let w = std::io::BufWriter::with_capacity(1 << 20, file);
            match self.snapshot_once(compress, w, hold) {
                Err(Error::SnapshotMoved { .. }) if !hold => {
                    tracing::debug!(db = %self.name(), attempt, "the database changed during a snapshot; trying again");
                }
                Err(e) => {
                    let _ = fs::remove_file(to);
                    return Err(e);
                }
                Ok(h) => return Ok(h),
            }
        }
        Err(Error::SnapshotMoved {
            db: self.name().to_owned(),
        })
    }

    fn snapshot_once<W: Write>(&self, compress: bool, w: W, hold: bool) -> Result<Header> {
        let mut guard = Some(self.lock());
        let (pos, ps, sums, frames, wal, db, timestamp) = {
            let Some(inner) = guard.as_mut() else {
                return Err(Error::NotFound(self.name().to_owned()));
            };
            self.check_available(inner)?;
            self.commit_raw(inner)?;
            let Some(ps) = inner
                .page_size
                .filter(|_| inner.present && !inner.pos.txid.is_zero())
            else {
                return Err(Error::NotFound(self.name().to_owned()));
            };
            let frames = inner
                .wal
                .as_ref()
                .map(|t| t.frames.clone())
                .unwrap_or_default();
            let wal = match (&inner.wal_file, frames.is_empty()) {
                (Some(f), false) => Some(
                    f.try_clone()
                        .map_err(Error::io("open", self.dir().join("wal")))?,
                ),
                _ => None,
            };
            let db = inner
                .db
                .try_clone()
                .map_err(Error::io("open", self.dir().join("database")))?;
            (
                inner.pos,
                ps,
                inner.sums.clone(),
                frames,
                wal,
                db,
                inner.timestamp,
            )
        };
        if !hold {
            guard = None;
        }
        let commit = sums.len();
        let mut header = Header::new(ps, commit, TXID::ONE, pos.txid);
        if compress {
            header.flags = Flags::COMPRESS_LZ4;
        }
        header.timestamp = timestamp;
        header.node_id = self.node_id();
        let encode = |source| Error::Encode {
            db: self.name().to_owned(),
            source,
        };
        let mut enc = Encoder::new(w, &header).map_err(encode)?;
        let mut buf = vec![0u8; ps.bytes()];
        let mut rolling = RollingChecksum::new();
        let lock_pgno = ps.lock_pgno();
        for p in 1..=commit {
            let Some(pgno) = PageNum::new(p) else {
                continue;
            };
            if pgno == lock_pgno {
                continue;
            }
            let (file, offset, what) = match (frames.get(&p), &wal) {
                (Some(&off), Some(wal)) => (wal, off + FRAME_HEADER_SIZE, "wal"),
                _ => (&db, ps.offset_of(pgno), "database"),
            };
            let n = fsutil::read_full_at(file, &mut buf, offset)
                .map_err(Error::io("read", self.dir().join(what)))?;
            buf[n..].fill(0);
            let sum = checksum_page(pgno, &buf);
            if sum != sums.get(pgno) {
                return Err(Error::SnapshotMoved {
                    db: self.name().to_owned(),
                });
            }
            rolling.toggle(sum);
            enc.encode_page(pgno, &buf).map_err(encode)?;
        }
        if rolling.get() != pos.post_apply_checksum {
            return Err(Error::SnapshotMoved {
                db: self.name().to_owned(),
            });
        }
        drop(guard);
        let (_, mut w) = enc.finish(pos.post_apply_checksum).map_err(encode)?;
        w.flush()
            .map_err(Error::io("write", self.dir().join("snapshot")))?;
        Ok(header)
    }

    /// The LTX file that starts at transaction `txid`: the file of that transaction alone, or
    /// a file of several from it that this process wrote or received. `None` if there is no
    /// such file, or only one this process does not know of (a range file from before it
    /// started: look in the folder).
    pub fn ltx_file(&self, txid: TXID) -> Option<PathBuf> {
        if let Some(r) = self.recent_ltx(txid) {
            // Written moments ago by this process.
            return Some(
                self.ltx_dir()
                    .join(format_filename(r.header.min_txid, r.header.max_txid)),
            );
        }
        let path = self.ltx_dir().join(format_filename(txid, txid));
        if path.exists() {
            return Some(path);
        }
        let max = self.range_from(txid)?;
        let path = self.ltx_dir().join(format_filename(txid, max));
        path.exists().then_some(path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use litefs_ltx::{checksum_page, Checksum, Encoder, Header, PageNum, PageSize, TXID};

    use crate::Error;

    fn ltx(header: &Header, pages: &[(u32, u8)], post: Checksum) -> Vec<u8> {
        let mut enc = Encoder::new(Vec::new(), header).unwrap();
        for &(pgno, fill) in pages {
            let page = vec![fill; header.page_size.bytes()];
            enc.encode_page(PageNum::new(pgno).unwrap(), &page).unwrap();
        }
        enc.finish(post).unwrap().1
    }

    /// An incremental file whose header claims a database of `u32::MAX` pages (once sizing the
    /// checksum table at 32 GiB) is refused before anything is written.
    #[test]
    fn an_incremental_file_may_not_claim_an_absurd_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::tests::test_store(dir.path(), false, 0);
        let db = store.create_db("a.db").unwrap();
        let ps = PageSize::new(512).unwrap();
        let page = vec![1u8; ps.bytes()];
        let post = Checksum::EMPTY_DATABASE.xor(checksum_page(PageNum::ONE, &page));
        let snapshot = Header::new(ps, 1, TXID::ONE, TXID::ONE);
        db.apply_ltx_bytes(ltx(&snapshot, &[(1, 1)], post), false)
            .unwrap();

        let mut h = Header::new(ps, u32::MAX, TXID::new(2), TXID::new(2));
        h.pre_apply_checksum = post;
        let err = db
            .apply_ltx_bytes(ltx(&h, &[(1, 1)], post), false)
            .unwrap_err();
        assert!(
            matches!(err, Error::Growth { pages: u32::MAX, limit, .. } if limit == 1 + super::MAX_GROWTH_PAGES),
            "{err}"
        );
        assert_eq!(db.pos().txid, TXID::ONE);
    }
}
