//! SQLite's write-ahead log format: the 32-byte header, 24-byte frame headers and the running
//! checksum that chains them. Used to find committed transactions as they are written and, on
//! start, those a crash left without an LTX file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use litefs_ltx::PageSize;

/// Size of the WAL header.
pub const WAL_HEADER_SIZE: u64 = 32;
/// Size of a frame header.
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const FORMAT_VERSION: u32 = 3_007_000;

/// A parsed WAL header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    /// True when checksums read words big-endian.
    pub big_endian: bool,
    /// Database page size.
    pub page_size: PageSize,
    /// Salt 1; changes each time the WAL restarts.
    pub salt1: u32,
    /// Salt 2; random for each restart.
    pub salt2: u32,
    /// The checksum of the header, which seeds the frame checksums.
    pub checksum: (u32, u32),
}

impl WalHeader {
    /// Parses and checks a header; `None` if it is not a valid WAL header.
    pub fn parse(b: &[u8]) -> Option<WalHeader> {
        if b.len() < WAL_HEADER_SIZE as usize {
            return None;
        }
        let magic = be32(b, 0);
        let big_endian = match magic {
            MAGIC_BE => true,
            MAGIC_LE => false,
            _ => return None,
        };
        if be32(b, 4) != FORMAT_VERSION {
            return None;
        }
        let raw = be32(b, 8);
        let page_size = PageSize::new(if raw == 1 { 65536 } else { raw })?;
        let checksum = wal_checksum(big_endian, (0, 0), &b[..24]);
        if checksum != (be32(b, 24), be32(b, 28)) {
            return None;
        }
        Some(WalHeader {
            big_endian,
            page_size,
            salt1: be32(b, 16),
            salt2: be32(b, 20),
            checksum,
        })
    }

    /// Size of one frame (header and page).
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size.get())
    }
}

/// SQLite's WAL checksum: pairs of 32-bit words folded into two running sums.
pub fn wal_checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s1, mut s2) = seed;
    for chunk in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(chunk, 0), be32(chunk, 4))
        } else {
            (le32(chunk, 0), le32(chunk, 4))
        };
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

/// One valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Byte offset of the frame header in the WAL.
    pub offset: u64,
    /// The page it holds.
    pub pgno: u32,
    /// Database size in pages after the transaction, for a commit frame; 0 otherwise.
    pub commit: u32,
    /// The running checksum after this frame.
    pub checksum: (u32, u32),
}

impl Frame {
    /// Offset of the page data.
    pub fn data_offset(&self) -> u64 {
        self.offset + FRAME_HEADER_SIZE
    }
}

/// Reads and checks the frame at `offset`, chained from `seed`. `Ok(None)` when the frame is
/// incomplete, carries other salts, or does not chain: SQLite treats all of these as the end
/// of the log.
pub fn read_frame(
    file: &File,
    hdr: &WalHeader,
    offset: u64,
    seed: (u32, u32),
    buf: &mut Vec<u8>,
) -> io::Result<Option<Frame>> {
    let size = hdr.frame_size() as usize;
    buf.resize(size, 0);
    let mut got = 0;
    while got < size {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let pgno = be32(buf, 0);
    let commit = be32(buf, 4);
    if pgno == 0 || be32(buf, 8) != hdr.salt1 || be32(buf, 12) != hdr.salt2 {
        return Ok(None);
    }
    let sum = wal_checksum(hdr.big_endian, seed, &buf[..8]);
    let sum = wal_checksum(hdr.big_endian, sum, &buf[FRAME_HEADER_SIZE as usize..]);
    if sum != (be32(buf, 16), be32(buf, 20)) {
        return Ok(None);
    }
    Ok(Some(Frame {
        offset,
        pgno,
        commit,
        checksum: sum,
    }))
}

/// One committed transaction found in a WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalTxn {
    /// Offset of its first frame.
    pub start: u64,
    /// Offset just past its commit frame.
    pub end: u64,
    /// Database size in pages after it.
    pub commit: u32,
    /// Its frames, in log order.
    pub frames: Vec<Frame>,
}

/// Reads every committed transaction of a WAL file, stopping at the first frame that does not
/// chain (frames after the last commit frame are an unfinished transaction and are ignored).
pub fn scan(file: &File) -> io::Result<Option<(WalHeader, Vec<WalTxn>)>> {
    let mut head = [0u8; WAL_HEADER_SIZE as usize];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let Some(hdr) = WalHeader::parse(&head) else {
        return Ok(None);
    };
    let mut txns = Vec::new();
    let mut pending = Vec::new();
    let mut offset = WAL_HEADER_SIZE;
    let mut start = offset;
    let mut seed = hdr.checksum;
    let mut buf = Vec::new();
    while let Some(frame) = read_frame(file, &hdr, offset, seed, &mut buf)? {
        seed = frame.checksum;
        offset += hdr.frame_size();
        pending.push(frame);
        if frame.commit != 0 {
            txns.push(WalTxn {
                start,
                end: offset,
                commit: frame.commit,
                frames: std::mem::take(&mut pending),
            });
            start = offset;
        }
    }
    Ok(Some((hdr, txns)))
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
