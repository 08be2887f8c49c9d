//! Damaged and hostile files: each is a typed error that names what was wrong, never a panic.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use litefs_ltx::{
    checksum_page, verify, Checksum, DecodeError, Encoder, Flags, Header, HeaderError, PageNum,
    PageOrderError, PageSize, TXID,
};

fn fixture() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/ltx-v1/000000000000000d-000000000000000d.ltx");
    fs::read(path).unwrap()
}

fn header(page_size: u32, commit: u32, txid: u64, compress: bool) -> Header {
    let mut h = Header::new(
        PageSize::new(page_size).unwrap(),
        commit,
        TXID::new(txid),
        TXID::new(txid),
    );
    if txid > 1 {
        h.pre_apply_checksum = Checksum::from_crc(0x1234);
    }
    if compress {
        h.flags = Flags::COMPRESS_LZ4;
    }
    h
}

fn page(fill: u8, page_size: u32) -> Vec<u8> {
    vec![fill; page_size as usize]
}

/// A small valid file: pages 2 and 5 of a 6-page database.
fn valid(compress: bool) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), &header(512, 6, 3, compress)).unwrap();
    enc.encode_page(PageNum::new(2).unwrap(), &page(2, 512))
        .unwrap();
    enc.encode_page(PageNum::new(5).unwrap(), &page(5, 512))
        .unwrap();
    enc.finish(Checksum::from_crc(0x99)).unwrap().1
}

/// Builds an uncompressed file from raw page numbers, bypassing the encoder's rules, with a
/// correct file checksum so that only the page rule is broken.
fn raw_file(h: &Header, pgnos: &[u32]) -> Vec<u8> {
    let mut b = h.to_bytes().to_vec();
    for &p in pgnos {
        b.extend_from_slice(&p.to_be_bytes());
        b.extend_from_slice(&page(p as u8, h.page_size.get()));
    }
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&Checksum::from_crc(1).get().to_be_bytes());
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO).checksum(&b);
    b.extend_from_slice(&Checksum::from_crc(crc).get().to_be_bytes());
    b
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    for bytes in [fixture(), valid(false), valid(true)] {
        for cut in 0..bytes.len() {
            match verify(&bytes[..cut]) {
                Err(DecodeError::Truncated(_)) => {}
                other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
            }
        }
        verify(&bytes[..]).unwrap();
    }
}

#[test]
fn wrong_magic() {
    let mut b = fixture();
    b[0..4].copy_from_slice(b"LTX3");
    let err = verify(&b[..]).unwrap_err();
    assert!(
        matches!(err, DecodeError::Header(HeaderError::Magic(_))),
        "{err:?}"
    );
    assert!(format!("{:#}", anyhow_chain(&err)).contains("magic"));
}

#[test]
fn bad_flags() {
    let mut b = fixture();
    b[7] = 0x2;
    let err = verify(&b[..]).unwrap_err();
    assert!(
        matches!(err, DecodeError::Header(HeaderError::Flags(2))),
        "{err:?}"
    );
}

#[test]
fn flipped_page_byte_is_a_file_checksum_mismatch() {
    let mut b = fixture();
    b[100 + 4 + 200] ^= 0x01;
    let err = verify(&b[..]).unwrap_err();
    assert!(matches!(err, DecodeError::FileChecksum { .. }), "{err:?}");
    assert!(err.to_string().contains("file checksum mismatch"));
}

#[test]
fn damaged_trailer_is_a_file_checksum_mismatch() {
    // Upstream's corrupt-LTX scenario overwrites 4 bytes at offset 96 (reserved header bytes,
    // which this decoder rejects outright), so damage the file checksum itself too.
    let mut b = fixture();
    let n = b.len();
    b[n - 3] ^= 0xff;
    assert!(matches!(
        verify(&b[..]).unwrap_err(),
        DecodeError::FileChecksum { .. }
    ));
    let mut b = fixture();
    b[96..100].copy_from_slice(&[1, 2, 3, 4]);
    assert!(matches!(
        verify(&b[..]).unwrap_err(),
        DecodeError::Header(HeaderError::Reserved)
    ));
}

#[test]
fn out_of_order_pages() {
    let h = header(512, 10, 2, false);
    let err = verify(&raw_file(&h, &[3, 2])[..]).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::PageOrder(PageOrderError::OutOfOrder { pgno: 2, .. })
        ),
        "{err:?}"
    );
    let err = verify(&raw_file(&h, &[4, 4])[..]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::PageOrder(PageOrderError::OutOfOrder { pgno: 4, .. })
    ));
}

#[test]
fn page_past_commit() {
    let h = header(512, 3, 2, false);
    let err = verify(&raw_file(&h, &[1, 4])[..]).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::PageOrder(PageOrderError::PastCommit { pgno: 4, commit: 3 })
        ),
        "{err:?}"
    );
    assert!(anyhow_chain(&err).contains("page 4 is past the commit size of 3 pages"));
}

#[test]
fn lock_page_is_rejected() {
    let h = header(65536, 20000, 2, false);
    let lock = h.lock_pgno().get();
    assert_eq!(lock, 16385);
    let err = verify(&raw_file(&h, &[1, lock])[..]).unwrap_err();
    assert!(
        matches!(err, DecodeError::PageOrder(PageOrderError::LockPage(_))),
        "{err:?}"
    );
    let mut enc = Encoder::new(Vec::new(), &h).unwrap();
    let err = enc
        .encode_page(PageNum::new(lock).unwrap(), &page(0, 65536))
        .unwrap_err();
    assert!(err.to_string().contains("encode page"), "{err}");
}

#[test]
fn snapshot_with_a_gap_is_rejected() {
    let h = header(512, 3, 1, false);
    let err = verify(&raw_file(&h, &[1, 3])[..]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::PageOrder(PageOrderError::SnapshotGap { pgno: 3, .. })
    ));
}

#[test]
fn snapshot_with_wrong_post_apply_checksum_is_rejected() {
    // A snapshot whose trailer (with a correct file checksum) lies about the database checksum.
    let h = header(512, 2, 1, false);
    let err = verify(&raw_file(&h, &[1, 2])[..]).unwrap_err();
    assert!(
        matches!(err, DecodeError::PostApplyChecksum { .. }),
        "{err:?}"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut b = fixture();
    b.push(0);
    assert!(matches!(
        verify(&b[..]).unwrap_err(),
        DecodeError::TrailingData
    ));
}

/// The LZ4 frame must end exactly where the page block ends: a frame that goes on past the
/// terminating page header, or one whose end mark is missing so that it runs into the trailer.
#[test]
fn lz4_frame_that_does_not_end_with_the_page_block() {
    let h = header(512, 6, 3, true);
    let mut body = Vec::new();
    body.extend_from_slice(&2u32.to_be_bytes());
    body.extend_from_slice(&page(2, 512));
    body.extend_from_slice(&[0; 4]);
    let trailer_stub = [0x80u8; 16];

    // Extra bytes after the terminator, inside the frame.
    let mut longer = body.clone();
    longer.extend_from_slice(b"more data");
    let mut file = h.to_bytes().to_vec();
    file.extend(lz4_frame(&longer));
    file.extend_from_slice(&trailer_stub);
    assert!(matches!(
        verify(&file[..]).unwrap_err(),
        DecodeError::DataAfterPages
    ));

    // No end mark: the frame reader would take the trailer as the next block header.
    let frame = lz4_frame(&body);
    let without_end = &frame[..frame.len() - 8]; // drop end mark and content checksum
    let mut file = h.to_bytes().to_vec();
    file.extend_from_slice(without_end);
    file.extend_from_slice(&trailer_stub);
    let err = verify(&file[..]).unwrap_err();
    assert!(
        matches!(err, DecodeError::Truncated(_) | DecodeError::Lz4 { .. }),
        "{err:?}"
    );

    // Garbage where the frame should be.
    let mut file = h.to_bytes().to_vec();
    file.extend_from_slice(&[0xAB; 64]);
    let err = verify(&file[..]).unwrap_err();
    assert!(matches!(err, DecodeError::Lz4 { .. }), "{err:?}");
}

#[test]
fn deletion_file_needs_the_empty_checksum() {
    let h = header(4096, 0, 5, false);
    let enc = Encoder::new(Vec::new(), &h).unwrap();
    let err = enc.finish(Checksum::from_crc(7)).unwrap_err();
    assert!(err.to_string().contains("post-apply checksum"), "{err}");
    let enc = Encoder::new(Vec::new(), &h).unwrap();
    let (_, bytes) = enc.finish(Checksum::EMPTY_DATABASE).unwrap();
    let (hdr, trailer, n) = verify(&bytes[..]).unwrap();
    assert_eq!((hdr.commit, n), (0, 0));
    assert_eq!(trailer.post_apply_checksum, Checksum::EMPTY_DATABASE);
}

#[test]
fn encoder_rejects_wrong_page_length_and_bad_snapshot_checksum() {
    let mut enc = Encoder::new(Vec::new(), &header(512, 1, 1, false)).unwrap();
    let err = enc.encode_page(PageNum::ONE, &[0u8; 100]).unwrap_err();
    assert!(err
        .to_string()
        .contains("100 bytes given, page size is 512"));
    enc.encode_page(PageNum::ONE, &page(1, 512)).unwrap();
    let err = enc.finish(Checksum::from_crc(3)).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let good = Checksum::EMPTY_DATABASE.xor(checksum_page(PageNum::ONE, &page(1, 512)));
    let mut enc = Encoder::new(Vec::new(), &header(512, 1, 1, false)).unwrap();
    enc.encode_page(PageNum::ONE, &page(1, 512)).unwrap();
    enc.finish(good).unwrap();
}

fn lz4_frame(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The error and all its sources, as a user sees them.
fn anyhow_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}
