//! SQLite's rollback journal: enough of the format to roll back a hot journal on start, as
//! SQLite itself would, before the database is served again.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::wal::be32;

/// The journal header magic.
pub const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// What a rollback restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollback {
    /// Pages written back.
    pub pages: u32,
    /// Database size in pages before the interrupted transaction.
    pub initial_pages: u32,
    /// Page size from the journal header.
    pub page_size: u32,
}

/// True when the journal holds a transaction to roll back: it exists with the magic in place.
pub fn is_hot(journal: &File) -> io::Result<bool> {
    let mut magic = [0u8; 8];
    match journal.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == JOURNAL_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the original pages recorded in `journal` back into `db` and truncates `db` to its
/// size before the transaction. Records are read segment by segment until one fails its
/// checksum, as SQLite does. Returns `None` if the journal is not hot.
pub fn rollback(journal: &File, db: &File) -> io::Result<Option<Rollback>> {
    let len = journal.metadata()?.len();
    let mut hdr = [0u8; 28];
    let mut offset = 0u64;
    let mut first: Option<Rollback> = None;
    let mut pages = 0u32;
    loop {
        if offset + 28 > len {
            break;
        }
        journal.read_exact_at(&mut hdr, offset)?;
        if hdr[..8] != JOURNAL_MAGIC {
            break;
        }
        let n_rec = be32(&hdr, 8);
        let nonce = be32(&hdr, 12);
        let initial = be32(&hdr, 16);
        let sector = u64::from(be32(&hdr, 20).max(512));
        let page_size = be32(&hdr, 24);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            break;
        }
        let first = first.get_or_insert(Rollback {
            pages: 0,
            initial_pages: initial,
            page_size,
        });
        if page_size != first.page_size {
            break;
        }
        let rec_size = 8 + u64::from(page_size);
        let body = offset + sector;
        let n_rec = if n_rec == u32::MAX {
            u32::try_from(len.saturating_sub(body) / rec_size).unwrap_or(u32::MAX)
        } else {
            n_rec
        };
        if n_rec == 0 {
            break;
        }
        let mut rec = vec![0u8; rec_size as usize];
        let mut at = body;
        let mut complete = true;
        for _ in 0..n_rec {
            if at + rec_size > len {
                complete = false;
                break;
            }
            journal.read_exact_at(&mut rec, at)?;
            let pgno = be32(&rec, 0);
            let data = &rec[4..4 + page_size as usize];
            if be32(&rec, 4 + page_size as usize) != record_checksum(nonce, data) || pgno == 0 {
                complete = false;
                break;
            }
            db.write_all_at(data, u64::from(pgno - 1) * u64::from(page_size))?;
            pages += 1;
            at += rec_size;
        }
        if !complete {
            break;
        }
        // The next segment starts at the next sector boundary.
        offset = at.div_ceil(sector) * sector;
    }
    let Some(mut info) = first else {
        return Ok(None);
    };
    info.pages = pages;
    db.set_len(u64::from(info.initial_pages) * u64::from(info.page_size))?;
    db.sync_all()?;
    Ok(Some(info))
}

/// The checksum of a journal record: the nonce plus every 200th byte, counted from the end.
fn record_checksum(nonce: u32, data: &[u8]) -> u32 {
    let mut sum = nonce;
    let mut i = data.len() as i64 - 200;
    while i > 0 {
        sum = sum.wrapping_add(u32::from(data[i as usize]));
        i -= 200;
    }
    sum
}
