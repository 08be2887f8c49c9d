//! Start-up recovery of one database, before anything can open it:
//!
//! 1. the newest LTX file gives the position (it must verify);
//! 2. a hot rollback journal is rolled back, as SQLite would, and an LTX file written for that
//!    unfinished transaction is dropped (SQLite never reported it committed);
//! 3. committed WAL transactions that have no LTX file yet (the process died between SQLite's
//!    commit and the LTX write, or a power loss took an unsynced LTX file) become one LTX file,
//!    then the WAL is checkpointed into the database file and removed;
//! 4. the database file's checksum must equal the position's; if not, the LTX files that lead
//!    from what the file holds to the position are applied again (a torn write, or a LiteFS
//!    volume whose last transaction was still in a WAL that is gone). A database that still
//!    does not match is not served, and the error names both checksums.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use litefs_ltx::{
    checksum_page, parse_filename, Checksum, Decoder, Header, PageNum, PageSize, Pos, Trailer, TXID,
};

use crate::db::{Content, Db, FileKind, Inner, WalFields, REWRITE_MARKER};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::journal;
use crate::sums::PageSums;
use crate::wal::{self, FRAME_HEADER_SIZE};

/// The LTX files of a directory, sorted by transaction range.
pub(crate) fn ltx_files(dir: &Path) -> Result<Vec<(TXID, TXID, PathBuf)>> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok((min, max)) = parse_filename(name) {
            files.push((min, max, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

pub(crate) fn read_ltx(db: &Db, path: &Path) -> Result<(Header, Trailer)> {
    let f = File::open(path).map_err(Error::io("open", path))?;
    let (h, t, _) = litefs_ltx::verify(BufReader::new(f)).map_err(|source| Error::Decode {
        db: db.name().to_owned(),
        path: path.to_owned(),
        source,
    })?;
    Ok((h, t))
}

/// Checksums of the database file's first `pages` pages (zeros past its end).
pub(crate) fn file_sums(file: &File, ps: PageSize, pages: u32) -> io::Result<PageSums> {
    let mut sums = PageSums::default();
    let mut buf = vec![0u8; ps.bytes()];
    for n in 1..=pages {
        let Some(pgno) = PageNum::new(n) else {
            continue;
        };
        if pgno == ps.lock_pgno() {
            sums.set_len(n);
            continue;
        }
        read_page(file, u64::from(n - 1) * ps.bytes() as u64, &mut buf)?;
        sums.set(pgno, checksum_page(pgno, &buf));
    }
    sums.set_len(pages);
    Ok(sums)
}

fn read_page(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let n = fsutil::read_full_at(file, buf, offset)?;
    buf[n..].fill(0);
    Ok(())
}

/// Decodes and verifies an LTX file, handing each page to `page`; returns its header.
fn for_each_page(
    db: &Db,
    path: &Path,
    mut page: impl FnMut(PageNum, &[u8]) -> Result<()>,
) -> Result<Header> {
    let f = File::open(path).map_err(Error::io("open", path))?;
    let decode = |source| Error::Decode {
        db: db.name().to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut dec = Decoder::new(BufReader::new(f)).map_err(decode)?;
    let h = *dec.header();
    let mut buf = vec![0u8; h.page_size.bytes()];
    while let Some(pgno) = dec.next_page(&mut buf).map_err(decode)? {
        page(pgno, &buf)?;
    }
    dec.finish().map_err(decode)?;
    Ok(h)
}

/// Writes an LTX file's pages into the database file and sets its size, without checks: the
/// caller compares checksums afterwards.
fn apply_pages(db: &Db, file: &File, path: &Path) -> Result<()> {
    let db_path = db.dir().join(FileKind::Database.backing_name());
    let h = for_each_page(db, path, |pgno, data| {
        // The page size is the file's own, checked by the decoder.
        let offset = u64::from(pgno.get() - 1) * data.len() as u64;
        file.write_all_at(data, offset)
            .map_err(Error::io("write", &db_path))
    })?;
    file.set_len(u64::from(h.commit) * u64::from(h.page_size.get()))
        .map_err(Error::io("truncate", &db_path))?;
    Ok(())
}

/// Brings a database's files to a consistent state on open (the steps below), then forgets
/// the rewrite marker, whose writes the steps recorded.
pub(crate) fn recover(db: &Db, inner: &mut Inner) -> Result<()> {
    let result = recover_files(db, inner);
    // A database refused at start stays in the mount (its operations fail), so that nothing
    // takes its name or removes its folder.
    inner.present = result.is_err() || inner.db.metadata().map_or(true, |m| m.len() > 0);
    result?;
    let marker = db.dir().join(REWRITE_MARKER);
    fsutil::remove_if_exists(&marker).map_err(Error::io("remove", marker))
}

fn recover_files(db: &Db, inner: &mut Inner) -> Result<()> {
    let dir = db.dir().to_owned();
    let ltx_dir = db.ltx_dir().to_owned();
    fsutil::remove_if_exists(&dir.join(FileKind::Shm.backing_name()))
        .map_err(Error::io("remove", dir.join("shm")))?;
    for entry in fs::read_dir(&ltx_dir).map_err(Error::io("list", &ltx_dir))? {
        let entry = entry.map_err(Error::io("list", &ltx_dir))?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            fsutil::remove_if_exists(&entry.path()).map_err(Error::io("remove", entry.path()))?;
        }
    }
    // Writes outside a SQLite transaction (a copy, a rename over the database) were not
    // recorded yet when the process stopped: the file as it is becomes a new transaction.
    let marker = dir.join(REWRITE_MARKER);
    let rewriting = marker.exists();
    let db_path = dir.join(FileKind::Database.backing_name());
    // With the marker, a file holding a whole database is recorded as it is (below); anything
    // else (a copy cut short) goes through the usual checks, which restore the database from
    // its LTX files when they can.
    let rewritten = match rewriting {
        true => match crate::db::content_of(&inner.db).map_err(Error::io("read", &db_path))? {
            Content::Database(ps) => Some(ps),
            Content::Empty | Content::Other(_) => None,
        },
        false => None,
    };
    if rewriting && rewritten.is_none() {
        tracing::warn!(db = %db.name(), "the database file was being rewritten outside a SQLite transaction when the node stopped, and is not a whole database: restoring it from its LTX files");
    }
    inner.present = inner
        .db
        .metadata()
        .map_err(Error::io("stat", &db_path))?
        .len()
        > 0;

    // 1. The position: the newest LTX file that verifies. Newer files that do not verify
    //    (an LTX file a power loss cut short before it was synced) are moved to `ltx/invalid/`,
    //    never deleted; what they held is rebuilt from the WAL below if SQLite committed it.
    let mut files = ltx_files(&ltx_dir)?;
    let mut last: Option<(Header, Trailer)> = None;
    let mut moved_aside: Vec<PathBuf> = Vec::new();
    while let Some((_, _, path)) = files.last() {
        match read_ltx(db, path) {
            Ok(ht) => {
                last = Some(ht);
                break;
            }
            Err(e @ Error::Decode { .. }) => {
                let invalid = ltx_dir.join("invalid");
                fs::create_dir_all(&invalid).map_err(Error::io("create", &invalid))?;
                let to = invalid.join(path.file_name().unwrap_or_default());
                tracing::warn!(db = %db.name(), from = %path.display(), to = %to.display(), "moving aside an LTX file that does not verify: {}", crate::error::chain(&e));
                fs::rename(path, &to).map_err(Error::io("rename", path))?;
                moved_aside.push(to);
                files.pop();
            }
            Err(e) => return Err(e),
        }
    }

    // 2. A hot journal.
    let mut rolled_back = false;
    let journal_path = dir.join(FileKind::Journal.backing_name());
    if let Some(j) =
        fsutil::open_if_exists(&journal_path).map_err(Error::io("open", &journal_path))?
    {
        if journal::is_hot(&j).map_err(Error::io("read", &journal_path))? {
            // Did the interrupted transaction reach its LTX file (written and synced just
            // before the journal is invalidated)? Then the file holds exactly that state. Its
            // transaction was never reported committed: drop the file, and the position is the
            // one before it (from its own header: older files may be gone to retention).
            if let Some((h, t)) = last.filter(|(h, _)| h.wal_size == 0) {
                let before = file_sums(&inner.db, h.page_size, h.commit)
                    .map_err(Error::io("read", &db_path))?
                    .total();
                if before == t.post_apply_checksum {
                    if let Some((_, _, path)) = files.pop() {
                        tracing::info!(db = %db.name(), path = %path.display(), "removing the LTX file of an interrupted transaction");
                        fsutil::remove_if_exists(&path).map_err(Error::io("remove", &path))?;
                    }
                    last = None;
                    inner.pos = match h.min_txid.prev() {
                        Some(prev) if !prev.is_zero() => Pos::new(prev, h.pre_apply_checksum),
                        _ => Pos::ZERO,
                    };
                    inner.page_size = Some(h.page_size);
                    if let Some((_, _, path)) = files.last() {
                        inner.timestamp = read_ltx(db, path)?.0.timestamp;
                    }
                }
            }
            let rb =
                journal::rollback(&j, &inner.db).map_err(Error::io("roll back", &journal_path))?;
            tracing::info!(db = %db.name(), ?rb, "rolled back a hot journal");
            rolled_back = rb.is_some();
        }
        drop(j);
        fsutil::remove_if_exists(&journal_path).map_err(Error::io("remove", &journal_path))?;
    }
    if let Some((h, t)) = last {
        inner.pos = Pos::new(h.max_txid, t.post_apply_checksum);
        inner.timestamp = h.timestamp;
        inner.page_size = Some(h.page_size);
    }

    let mut page1 = [0u8; 100];
    let have_header = inner.db.read_exact_at(&mut page1, 0).is_ok();
    if inner.page_size.is_none() && have_header {
        let raw = u16::from_be_bytes([page1[16], page1[17]]);
        inner.page_size = PageSize::new(if raw == 1 { 65536 } else { u32::from(raw) });
    }

    // 3. The WAL.
    let wal_path = dir.join(FileKind::Wal.backing_name());
    let mut recovered_wal = false;
    if let Some(wal_file) =
        fsutil::open_if_exists(&wal_path).map_err(Error::io("open", &wal_path))?
    {
        if let Some((hdr, txns)) = wal::scan(&wal_file).map_err(Error::io("read", &wal_path))? {
            let captured_end = match last {
                Some((h, _))
                    if h.wal_salt1 == hdr.salt1 && h.wal_salt2 == hdr.salt2 && h.wal_size > 0 =>
                {
                    (h.wal_offset + h.wal_size) as u64
                }
                _ => 0,
            };
            let ps = hdr.page_size;
            let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
            let mut fresh: BTreeSet<u32> = BTreeSet::new();
            let mut first_fresh = None;
            let mut end = 0;
            let mut commit = 0;
            for txn in &txns {
                for f in &txn.frames {
                    newest.insert(f.pgno, f.offset);
                    if txn.end > captured_end {
                        fresh.insert(f.pgno);
                    }
                }
                if txn.end > captured_end && first_fresh.is_none() {
                    first_fresh = Some(txn.start);
                }
                end = txn.end;
                commit = txn.commit;
            }
            if !txns.is_empty() {
                newest.retain(|&p, _| p <= commit);
                // The logical database: the database file under the newest frames.
                let file_pages = (inner
                    .db
                    .metadata()
                    .map_err(Error::io("stat", &db_path))?
                    .len()
                    / u64::from(ps.get())) as u32;
                let mut sums = file_sums(&inner.db, ps, file_pages.max(commit))
                    .map_err(Error::io("read", &db_path))?;
                let mut buf = vec![0u8; ps.bytes()];
                for (&pgno, &off) in &newest {
                    let Some(p) = PageNum::new(pgno) else {
                        continue;
                    };
                    if p == ps.lock_pgno() {
                        continue;
                    }
                    read_page(&wal_file, off + FRAME_HEADER_SIZE, &mut buf)
                        .map_err(Error::io("read", &wal_path))?;
                    sums.set(p, checksum_page(p, &buf));
                }
                sums.set_len(commit);
                if let Some(start) = first_fresh {
                    // Transactions SQLite committed that have no LTX file: one LTX file for
                    // all of them, from the last recorded position to the WAL's end.
                    inner.sums = sums;
                    inner.page_size = Some(ps);
                    inner.wal_file =
                        Some(wal_file.try_clone().map_err(Error::io("open", &wal_path))?);
                    inner.set_wal_frames(hdr, newest.clone());
                    let n = txns.iter().filter(|t| t.end > captured_end).count();
                    db.write_ltx(
                        inner,
                        ps,
                        commit,
                        fresh,
                        Some(WalFields {
                            offset: start,
                            size: end - start,
                            salt1: hdr.salt1,
                            salt2: hdr.salt2,
                            txns: n as u64,
                        }),
                        true,
                    )?;
                    tracing::info!(db = %db.name(), transactions = n, pos = %inner.pos, "recovered committed WAL transactions that had no LTX file");
                    recovered_wal = true;
                }
                // Checkpoint: the newest frame of each page into the database file.
                for (&pgno, &off) in &newest {
                    read_page(&wal_file, off + FRAME_HEADER_SIZE, &mut buf)
                        .map_err(Error::io("read", &wal_path))?;
                    inner
                        .db
                        .write_all_at(&buf, u64::from(pgno - 1) * u64::from(ps.get()))
                        .map_err(Error::io("write", &db_path))?;
                }
                inner
                    .db
                    .set_len(u64::from(commit) * u64::from(ps.get()))
                    .map_err(Error::io("truncate", &db_path))?;
                inner.db.sync_all().map_err(Error::io("sync", &db_path))?;
            }
        }
        inner.clear_wal();
        fsutil::remove_if_exists(&wal_path).map_err(Error::io("remove", &wal_path))?;
        fsutil::sync_dir(&dir).map_err(Error::io("sync", &dir))?;
    }

    // 4. The database file against the position (whose last file step 3 may have written).
    let files = ltx_files(&ltx_dir)?;
    // Range files (bursts of WAL commits, step 3), so that replication finds them by their
    // first TXID without listing the folder.
    for (min, max, _) in &files {
        db.remember_range(*min, *max);
    }
    if let Some(fps) = rewritten {
        let len = inner
            .db
            .metadata()
            .map_err(Error::io("stat", &db_path))?
            .len();
        let pages = u32::try_from(len / u64::from(fps.get())).unwrap_or(u32::MAX);
        inner.sums = file_sums(&inner.db, fps, pages).map_err(Error::io("read", &db_path))?;
        let unchanged = inner.page_size == Some(fps)
            && !inner.pos.txid.is_zero()
            && inner.sums.total() == inner.pos.post_apply_checksum;
        if !unchanged {
            let before = inner.pos;
            inner.page_size = Some(fps);
            db.write_ltx(inner, fps, pages, (1..=pages).collect(), None, true)?;
            tracing::info!(db = %db.name(), from = %before, to = %inner.pos, "recorded the database file, rewritten outside a SQLite transaction, as a new transaction");
        }
        inner.page_size = Some(fps);
        inner.present = true;
        set_mode(inner);
        return Ok(());
    }
    let adopt = db.adopting();
    let Some(ps) = inner.page_size else {
        return Ok(());
    };
    if inner.pos.txid.is_zero() {
        let len = inner
            .db
            .metadata()
            .map_err(Error::io("stat", &db_path))?
            .len();
        if len > 0 && adopt {
            let pages = u32::try_from(len / u64::from(ps.get())).unwrap_or(u32::MAX);
            inner.sums = file_sums(&inner.db, ps, pages).map_err(Error::io("read", &db_path))?;
            db.write_ltx(inner, ps, pages, (1..=pages).collect(), None, true)?;
            tracing::info!(db = %db.name(), pos = %inner.pos, "recorded the database file as it is as its first transaction");
            set_mode(inner);
        } else if len > 0 {
            return Err(Error::Unavailable {
                db: db.name().to_owned(),
                reason: "the database file has data but there is no LTX file to say what it holds"
                    .into(),
            });
        }
        return Ok(());
    }
    let newest = match files.last() {
        Some((_, _, path)) => Some(read_ltx(db, path)?.0),
        None => None,
    };
    let file_pages = u32::try_from(
        inner
            .db
            .metadata()
            .map_err(Error::io("stat", &db_path))?
            .len()
            / u64::from(ps.get()),
    )
    .unwrap_or(u32::MAX);
    let mut commit = match newest {
        Some(h) if h.max_txid == inner.pos.txid => h.commit,
        // The position came from the LTX file of a rolled-back transaction.
        _ => file_pages,
    };
    let mut sums = file_sums(&inner.db, ps, commit).map_err(Error::io("read", &db_path))?;
    if sums.total() != inner.pos.post_apply_checksum && rolled_back && !recovered_wal {
        // SQLite does not journal freelist pages a transaction reuses, so rolling back leaves
        // their new bytes (harmless to SQLite). The file as it is becomes the next transaction,
        // so that every copy of the database holds the same bytes.
        let all: BTreeSet<u32> = (1..=file_pages).collect();
        inner.sums = file_sums(&inner.db, ps, file_pages).map_err(Error::io("read", &db_path))?;
        db.write_ltx(inner, ps, file_pages, all, None, true)?;
        tracing::info!(db = %db.name(), pos = %inner.pos, "recorded the pages a rollback left changed as a new transaction");
        sums = file_sums(&inner.db, ps, file_pages).map_err(Error::io("read", &db_path))?;
        commit = file_pages;
    }
    if sums.total() != inner.pos.post_apply_checksum && !recovered_wal && adopt {
        // The operator says the file is right as it is (changed while the node was down).
        let all: BTreeSet<u32> = (1..=file_pages).collect();
        inner.sums = file_sums(&inner.db, ps, file_pages).map_err(Error::io("read", &db_path))?;
        let before = inner.pos;
        db.write_ltx(inner, ps, file_pages, all, None, true)?;
        tracing::info!(db = %db.name(), from = %before, to = %inner.pos, "adopted the database file as it is as a new transaction");
        sums = file_sums(&inner.db, ps, file_pages).map_err(Error::io("read", &db_path))?;
        commit = file_pages;
    }
    if sums.total() != inner.pos.post_apply_checksum && !recovered_wal {
        let actual = sums.total();
        let mismatch = Error::ChecksumMismatch {
            db: db.name().to_owned(),
            txid: inner.pos.txid,
            actual,
            expected: inner.pos.post_apply_checksum,
        };
        let refuse = |why: String| Error::Unavailable {
            db: db.name().to_owned(),
            reason: format!(
                "{why}. If the database file was changed on purpose while the node was down, \
                 run `litefs-rs adopt -config <litefs.yml> {}` with the node stopped to record \
                 it as it is as a new transaction",
                db.name()
            ),
        };
        if let Some(moved) = moved_aside.first() {
            // The database file may hold the transaction whose LTX file was damaged: replaying
            // older files over it would silently undo a committed transaction.
            return Err(refuse(format!(
                "{mismatch}; the newer LTX file {} did not verify and was moved aside, so the \
                 database file may hold a transaction no valid LTX file records",
                moved.display()
            )));
        }
        if !heal(db, inner, &files, actual, inner.pos.post_apply_checksum)? {
            return Err(refuse(mismatch.to_string()));
        }
        sums = file_sums(&inner.db, ps, commit).map_err(Error::io("read", &db_path))?;
        if sums.total() != inner.pos.post_apply_checksum {
            return Err(mismatch);
        }
        tracing::info!(db = %db.name(), pos = %inner.pos, "repaired the database file from its LTX files");
    }
    let len = inner
        .db
        .metadata()
        .map_err(Error::io("stat", &db_path))?
        .len();
    if len != u64::from(commit) * u64::from(ps.get()) {
        inner
            .db
            .set_len(u64::from(commit) * u64::from(ps.get()))
            .map_err(Error::io("truncate", &db_path))?;
    }
    inner.sums = sums;
    set_mode(inner);
    Ok(())
}

/// The journal mode from page 1's version bytes.
fn set_mode(inner: &mut Inner) {
    let mut p1 = vec![0u8; 100];
    if inner.db.read_exact_at(&mut p1, 0).is_ok() {
        inner.mode = if p1[18] == 2 && p1[19] == 2 {
            crate::db::JournalMode::Wal
        } else {
            crate::db::JournalMode::Rollback
        };
    }
}

/// Applies LTX files again so that the database file reaches `target`: from the newest file
/// whose pre-apply checksum is what the file holds (or a snapshot), else the last file alone
/// (its pages may be the ones a crash tore). Each plan is first checked on the page checksums;
/// the database file is only written by a plan that reaches `target`. Returns whether one did.
fn heal(
    db: &Db,
    inner: &mut Inner,
    files: &[(TXID, TXID, PathBuf)],
    actual: Checksum,
    target: Checksum,
) -> Result<bool> {
    let Some(ps) = inner.page_size else {
        return Ok(false);
    };
    let db_path = db.dir().join(FileKind::Database.backing_name());
    let last = files.len().saturating_sub(1);
    let mut from = last;
    for (i, (_, _, path)) in files.iter().enumerate().rev() {
        let (h, _) = read_ltx(db, path)?;
        if h.pre_apply_checksum == actual || h.is_snapshot() {
            from = i;
            break;
        }
    }
    let file_pages = inner
        .db
        .metadata()
        .map_err(Error::io("stat", &db_path))?
        .len()
        / u64::from(ps.get());
    let file_pages = u32::try_from(file_pages).unwrap_or(u32::MAX);
    let mut plans = vec![from];
    if from != last {
        plans.push(last);
    }
    for start in plans {
        let mut sums = file_sums(&inner.db, ps, file_pages).map_err(Error::io("read", &db_path))?;
        for (_, _, path) in &files[start..] {
            simulate(db, path, &mut sums)?;
        }
        if sums.total() != target {
            continue;
        }
        // Keep the file as it was: the difference may be an edit someone wants back.
        let kept = db
            .dir()
            .join(format!("database.before-repair-{}", inner.pos.txid));
        fs::copy(&db_path, &kept).map_err(Error::io("copy", &kept))?;
        tracing::warn!(db = %db.name(), kept = %kept.display(), "the database file differs from its LTX files; restoring it from them and keeping the old file");
        for (_, _, path) in &files[start..] {
            apply_pages(db, &inner.db, path)?;
        }
        inner.db.sync_all().map_err(Error::io("sync", &db_path))?;
        return Ok(true);
    }
    Ok(false)
}

/// What applying an LTX file would do to the page checksums.
fn simulate(db: &Db, path: &Path, sums: &mut PageSums) -> Result<()> {
    let h = for_each_page(db, path, |pgno, data| {
        sums.set(pgno, checksum_page(pgno, data));
        Ok(())
    })?;
    sums.set_len(h.commit);
    Ok(())
}
