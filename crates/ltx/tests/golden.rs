//! Golden files written by LiteFS 0.5.14: every one decodes and verifies, replays give the stated
//! checksums, and the encoder reproduces them.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use litefs_ltx::dbfile::{apply_ltx, checksum_file};
use litefs_ltx::{
    checksum_page, parse_filename, Checksum, Decoder, Encoder, Flags, Header, NodeId, PageNum,
    PageSize, Pos, TXID,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

/// The LTX files of one fixture database, in TXID order.
fn ltx_files(db: &str) -> Vec<PathBuf> {
    let dir = fixtures()
        .join("litefs-0.5.14-data/dbs")
        .join(db)
        .join("ltx");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

struct Decoded {
    header: Header,
    pages: Vec<(PageNum, Vec<u8>)>,
    trailer: litefs_ltx::Trailer,
}

fn decode(bytes: &[u8]) -> Decoded {
    let mut dec = Decoder::new(bytes).unwrap();
    let header = *dec.header();
    let mut pages = Vec::new();
    let mut buf = vec![0u8; header.page_size.bytes()];
    while let Some(pgno) = dec.next_page(&mut buf).unwrap() {
        pages.push((pgno, buf.clone()));
    }
    let trailer = dec.finish().unwrap();
    Decoded {
        header,
        pages,
        trailer,
    }
}

fn encode(header: &Header, pages: &[(PageNum, Vec<u8>)], post: Checksum) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), header).unwrap();
    for (pgno, data) in pages {
        enc.encode_page(*pgno, data).unwrap();
    }
    enc.finish(post).unwrap().1
}

#[test]
fn uncompressed_fixture_decodes_with_stated_values() {
    let path = fixtures().join("ltx-v1/000000000000000d-000000000000000d.ltx");
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 12420);
    let d = decode(&bytes);
    let h = d.header;
    assert_eq!(h.flags, Flags::empty());
    assert_eq!(h.page_size, PageSize::DEFAULT);
    assert_eq!(h.commit, 10);
    assert_eq!((h.min_txid, h.max_txid), (TXID::new(0xd), TXID::new(0xd)));
    assert_eq!(h.timestamp, 0);
    assert_eq!(h.pre_apply_checksum, Checksum::new(0x9c74a15b4e4f246c));
    let pgnos: Vec<u32> = d.pages.iter().map(|(p, _)| p.get()).collect();
    assert_eq!(pgnos, [1, 7, 8]);
    let sums: Vec<Checksum> = d
        .pages
        .iter()
        .map(|(p, data)| checksum_page(*p, data))
        .collect();
    assert_eq!(
        sums,
        [
            Checksum::new(0xadf3e188cb5dc241),
            Checksum::new(0xeaf0947b2055d648),
            Checksum::new(0x9a7407c73d4bb9da)
        ]
    );
    assert_eq!(
        d.trailer.post_apply_checksum,
        Checksum::new(0xfe3831a381c602b9)
    );
    assert_eq!(d.trailer.file_checksum, Checksum::new(0x9496a29358326fb5));
}

#[test]
fn uncompressed_fixture_is_reproduced_byte_for_byte() {
    let bytes = fs::read(fixtures().join("ltx-v1/000000000000000d-000000000000000d.ltx")).unwrap();
    let d = decode(&bytes);
    let again = encode(&d.header, &d.pages, d.trailer.post_apply_checksum);
    assert!(again == bytes, "re-encoded file differs from the fixture");
}

#[test]
fn fixture_database_checksum_is_the_post_apply_checksum() {
    let (info, sum) = checksum_file(&fixtures().join("ltx-v1/database")).unwrap();
    assert_eq!(info.page_count, 10);
    assert_eq!(sum, Checksum::new(0xfe3831a381c602b9));
}

/// Every file of both fixture databases decodes, verifies, chains onto the previous one, and a
/// replay from nothing ends at the position LiteFS showed.
#[test]
fn litefs_data_dir_replays_to_expected_positions() {
    let expected =
        fs::read_to_string(fixtures().join("litefs-0.5.14-data/expected-pos.txt")).unwrap();
    for db in ["rollback.db", "wal.db"] {
        let files = ltx_files(db);
        assert!(!files.is_empty(), "{db} has no ltx files");
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("db");
        let mut prev: Option<Pos> = None;
        for (i, path) in files.iter().enumerate() {
            let name = path.file_name().unwrap().to_str().unwrap();
            let (min, max) = parse_filename(name).unwrap();
            let d = decode(&fs::read(path).unwrap());
            assert!(
                d.header.flags.is_compressed(),
                "{name}: LiteFS compresses by default"
            );
            assert_eq!((d.header.min_txid, d.header.max_txid), (min, max), "{name}");
            assert_eq!(min, TXID::new(i as u64 + 1), "{name}");
            match prev {
                None => assert!(d.header.is_snapshot()),
                Some(p) => assert_eq!(d.header.pre_apply_checksum, p.post_apply_checksum),
            }
            let pos = apply_ltx(&replica, path).unwrap();
            assert_eq!(pos, Pos::new(max, d.trailer.post_apply_checksum), "{name}");
            prev = Some(pos);
        }
        let last = prev.unwrap();
        let line = format!("{db} {last}");
        assert!(
            expected.lines().any(|l| l.trim() == line),
            "{line:?} not in expected-pos.txt:\n{expected}"
        );
        assert_eq!(checksum_file(&replica).unwrap().1, last.post_apply_checksum);
    }
}

/// Re-encoding a compressed LiteFS file gives different LZ4 bytes but the same logical stream,
/// so the same file checksum; and it decodes back to the same pages.
#[test]
fn compressed_fixtures_round_trip_with_the_same_file_checksum() {
    for db in ["rollback.db", "wal.db"] {
        for path in ltx_files(db) {
            let d = decode(&fs::read(&path).unwrap());
            let again = encode(&d.header, &d.pages, d.trailer.post_apply_checksum);
            let d2 = decode(&again);
            assert_eq!(d2.header, d.header);
            assert_eq!(d2.trailer, d.trailer, "{}", path.display());
            assert!(d2.pages == d.pages);
        }
    }
}

/// A WAL-mode file keeps its WAL fields through a round trip, and a node id survives.
#[test]
fn wal_fields_of_litefs_files_are_consistent() {
    let mut saw_wal_fields = false;
    for path in ltx_files("wal.db") {
        let d = decode(&fs::read(&path).unwrap());
        if d.header.wal_size != 0 {
            saw_wal_fields = true;
            assert!(d.header.wal_offset >= 32, "{}", path.display());
            assert!(d.header.wal_salt1 != 0 || d.header.wal_salt2 != 0);
        }
        assert_ne!(d.header.node_id, NodeId::ZERO);
    }
    assert!(
        saw_wal_fields,
        "no LiteFS WAL transaction carried WAL fields"
    );
}
