//! SQLite's WAL read back from disk: the 32-byte header, the frame headers and their checksum
//! chain (`wal::scan` over a file holding the input), and the WAL-index (`-shm`) header that
//! `wal_index_header` reads the current change counter and salts from. The first byte chooses
//! whether the input is taken as it is, with its header checksum made right, or with the
//! header's and every frame's checksum made right, so that the frame walk is reached at once.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use litefs_ltx::PageSize;
use litefs_store::wal::{self, WalHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};
use litefs_store::{wal_index_header, WAL_INDEX_HEADER_SIZE};

#[path = "scratch.rs"]
mod scratch;

/// One scratch file per fuzzing process.
fn scratch() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| scratch::file("wal"))
}

/// Sets the header checksum, and with `frames` every frame's, to what SQLite would write, in
/// frames of the header's page size (the salts are left as the input has them).
fn fix_checksums(wal: &mut [u8], frames: bool) {
    let Some(head) = wal.get(..32) else {
        return;
    };
    let big_endian = head[3] == 0x83;
    let raw = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let sum = wal::wal_checksum(big_endian, (0, 0), &head[..24]);
    wal[24..28].copy_from_slice(&sum.0.to_be_bytes());
    wal[28..32].copy_from_slice(&sum.1.to_be_bytes());
    let Some(ps) = PageSize::new(if raw == 1 { 65536 } else { raw }) else {
        return;
    };
    if !frames {
        return;
    }
    let frame = FRAME_HEADER_SIZE as usize + ps.bytes();
    let mut seed = sum;
    let mut at = WAL_HEADER_SIZE as usize;
    while let Some(f) = wal.get_mut(at..at + frame) {
        let s = wal::wal_checksum(big_endian, seed, &f[..8]);
        let s = wal::wal_checksum(big_endian, s, &f[FRAME_HEADER_SIZE as usize..]);
        f[16..20].copy_from_slice(&s.0.to_be_bytes());
        f[20..24].copy_from_slice(&s.1.to_be_bytes());
        seed = s;
        at += frame;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mut data = rest.to_vec();
    match mode % 3 {
        0 => {}
        m => fix_checksums(&mut data, m == 2),
    }
    let data = &data[..];
    let hdr = WalHeader::parse(data);
    if let Some(h) = &hdr {
        assert_eq!(
            h.frame_size(),
            FRAME_HEADER_SIZE + u64::from(h.page_size.get())
        );
    }
    let file = scratch();
    file.set_len(0).expect("truncate the scratch file");
    file.write_all_at(data, 0).expect("write the scratch file");
    match wal::scan(file).expect("scan the scratch file") {
        None => assert!(hdr.is_none()),
        Some((h, txns)) => {
            assert_eq!(Some(h), hdr);
            let mut at = WAL_HEADER_SIZE;
            for t in &txns {
                assert_eq!(t.start, at);
                assert!(!t.frames.is_empty());
                assert!(t.end <= data.len() as u64);
                assert_eq!(t.frames.last().map(|f| f.commit), Some(t.commit));
                assert_ne!(t.commit, 0);
                at = t.end;
            }
        }
    }
    let shm = &data[..data.len().min(WAL_INDEX_HEADER_SIZE)];
    let ps = PageSize::new(512 << (data.first().copied().unwrap_or(0) % 8)).expect("a page size");
    let pages = data
        .get(1..5)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    let a = wal_index_header(shm, ps, pages, false);
    let b = wal_index_header(shm, ps, pages, true);
    // The two copies of the index header are the same.
    assert_eq!(a[..48], a[48..96]);
    assert_eq!(b[..48], b[48..96]);
});
