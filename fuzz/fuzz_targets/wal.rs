//! SQLite's WAL read back from disk: the 32-byte header, the frame headers and their checksum
//! chain (`wal::scan` over a file holding the input), and the WAL-index (`-shm`) header that
//! `wal_index_header` reads the current change counter and salts from.
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

fuzz_target!(|data: &[u8]| {
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
