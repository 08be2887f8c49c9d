//! The LTX decoder past the header: a valid header (plain or LZ4, snapshot or incremental, a
//! small commit) built from the first bytes, then the rest of the input as the body, so that the
//! page block, the LZ4 frame and the trailer are reached at once (`ltx_decoder` takes the whole
//! file from the input). A file the decoder accepts must verify the same, re-encode from its
//! header and pages with the same trailer, and, uncompressed, to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_ltx::header::{HEADER_SIZE, TRAILER_SIZE};
use litefs_ltx::{
    verify, Checksum, Decoder, Encoder, Flags, Header, PageNum, PageSize, Trailer, TXID,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < 6 {
        return;
    }
    // Small pages keep every execution cheap; the commit stays small so that page numbers the
    // fuzzer writes are within it.
    let page_size = PageSize::new(512 << (rest[0] % 2)).unwrap_or(PageSize::DEFAULT);
    let commit = u32::from(u16::from_be_bytes([rest[1], rest[2]]) % 64);
    let snapshot = rest[3] & 1 == 0;
    let min = if snapshot { TXID::ONE } else { TXID::new(2) };
    let mut h = Header::new(page_size, commit, min, TXID::new(2));
    if !snapshot {
        h.pre_apply_checksum = Checksum::from_crc(u64::from(rest[4]));
    }
    if mode & 1 == 1 {
        h.flags = Flags::COMPRESS_LZ4;
    }
    let mut file = h.to_bytes().to_vec();
    file.extend_from_slice(&rest[5..]);
    check(&file);
});

fn check(file: &[u8]) {
    if let Some(h) = file.get(..HEADER_SIZE) {
        let _ = Header::from_bytes(h.try_into().expect("a header's length"));
    }
    if file.len() >= TRAILER_SIZE {
        let t = &file[file.len() - TRAILER_SIZE..];
        let _ = Trailer::from_bytes(t.try_into().expect("a trailer's length"));
    }
    let Ok(mut dec) = Decoder::new(file) else {
        return;
    };
    let header = *dec.header();
    let mut pages: Vec<(PageNum, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; header.page_size.bytes()];
    // The wrong buffer length is an error, not a panic.
    assert!(dec.next_page(&mut buf[1..]).is_err());
    loop {
        match dec.next_page(&mut buf) {
            Ok(Some(pgno)) => pages.push((pgno, buf.clone())),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let Ok(trailer) = dec.finish() else {
        return;
    };
    let count = u32::try_from(pages.len()).expect("page count");
    assert_eq!(dec.page_count(), count);
    let (h2, t2, n2) = verify(file).expect("a file that decoded once verifies");
    assert_eq!((h2, t2, n2), (header, trailer, count));
    let mut enc = Encoder::new(Vec::new(), &header).expect("a decoded header encodes");
    for (pgno, page) in &pages {
        enc.encode_page(*pgno, page).expect("decoded pages encode");
    }
    let (t3, bytes) = enc
        .finish(trailer.post_apply_checksum)
        .expect("a decoded file encodes");
    assert_eq!(t3, trailer);
    if !header.flags.is_compressed() {
        assert_eq!(bytes, file, "re-encoding a decoded file changes it");
    }
}
