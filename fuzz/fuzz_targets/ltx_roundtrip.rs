//! Structured round trip: build an LTX file with the Encoder from an arbitrary description, then
//! check that the Decoder (and `verify`) give back exactly the header, pages and trailer, and that
//! a truncated or extended copy of the file is rejected.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use litefs_ltx::{
    checksum_page, verify, Checksum, Decoder, Encoder, Flags, Header, PageNum, PageSize, TXID,
};

/// At most this many pages per file, to keep one run fast (a page can be 64 KiB).
const MAX_PAGES: usize = 48;
/// Snapshots hold every page up to commit, so their commit is taken modulo this.
const MAX_SNAPSHOT_PAGES: u32 = 40;

#[derive(Arbitrary, Debug)]
struct Page {
    /// Page number (incremental files only; a snapshot numbers its pages itself).
    pgno: u32,
    /// The byte the page is filled with, or the seed of its noise.
    fill: u8,
    /// Incompressible content instead of a constant fill.
    noisy: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Page size is `512 << (page_size_exp % 8)`: 512 to 65536.
    page_size_exp: u8,
    commit: u32,
    /// min_txid; 1 makes a snapshot.
    min_txid: u64,
    /// max_txid - min_txid.
    txid_span: u8,
    compress: bool,
    /// Sort and deduplicate incremental page numbers (otherwise the encoder sees them as given).
    sort_pages: bool,
    timestamp: i64,
    node_id: u64,
    /// Raw pre-apply checksum of an incremental file (the flag bit is forced on).
    pre_apply: u64,
    /// Raw post-apply checksum of an incremental file (the flag bit is forced on).
    post_apply: u64,
    pages: Vec<Page>,
}

fn page_data(page: &Page, size: usize) -> Vec<u8> {
    if !page.noisy {
        return vec![page.fill; size];
    }
    // xorshift32, never seeded with zero.
    let mut x = 0x9e37_79b9u32 ^ u32::from(page.fill);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let page_size = PageSize::new(512u32 << (input.page_size_exp % 8)).expect("valid page size");
    let min_txid = TXID::new(input.min_txid);
    let Some(max_txid) = input.min_txid.checked_add(u64::from(input.txid_span)) else {
        return;
    };
    let snapshot = input.min_txid == 1;
    let commit = if snapshot {
        input.commit % (MAX_SNAPSHOT_PAGES + 1)
    } else {
        input.commit
    };
    let mut header = Header::new(page_size, commit, min_txid, TXID::new(max_txid));
    header.timestamp = input.timestamp;
    header.node_id = litefs_ltx::NodeId::new(input.node_id);
    if !snapshot {
        header.pre_apply_checksum = Checksum::from_crc(input.pre_apply);
    }
    if input.compress {
        header.flags = Flags::COMPRESS_LZ4;
    }

    // The pages to write: a snapshot holds 1..=commit (its commit is far below any lock page);
    // an incremental file holds the numbers given.
    let pages: Vec<(u32, Vec<u8>)> = if snapshot {
        (1..=commit)
            .map(|n| {
                let spec = input.pages.get(n as usize - 1);
                let data = match spec {
                    Some(p) => page_data(p, page_size.bytes()),
                    None => vec![n as u8; page_size.bytes()],
                };
                (n, data)
            })
            .collect()
    } else {
        let mut list: Vec<&Page> = input.pages.iter().take(MAX_PAGES).collect();
        if input.sort_pages {
            list.sort_by_key(|p| p.pgno);
            list.dedup_by_key(|p| p.pgno);
        }
        list.iter()
            .map(|p| (p.pgno, page_data(p, page_size.bytes())))
            .collect()
    };

    // Snapshots and deletions must carry the checksum of their pages; others carry anything.
    let post_apply = if snapshot || commit == 0 {
        let mut sum = Checksum::EMPTY_DATABASE;
        for (n, data) in &pages {
            if let Some(pgno) = PageNum::new(*n) {
                sum = sum.xor(checksum_page(pgno, data));
            }
        }
        sum
    } else {
        Checksum::from_crc(input.post_apply)
    };

    // Encode; inputs the encoder rejects are simply skipped.
    let Ok(mut enc) = Encoder::new(Vec::new(), &header) else {
        return;
    };
    for (n, data) in &pages {
        let Some(pgno) = PageNum::new(*n) else {
            return;
        };
        if enc.encode_page(pgno, data).is_err() {
            return;
        }
    }
    let Ok((trailer, bytes)) = enc.finish(post_apply) else {
        return;
    };
    assert_eq!(trailer.post_apply_checksum, post_apply);

    // Decode page by page: the same header, pages and trailer.
    let mut dec = Decoder::new(&bytes[..]).expect("decoder rejects the encoder's header");
    assert_eq!(*dec.header(), header);
    let mut buf = vec![0u8; page_size.bytes()];
    for (i, (n, data)) in pages.iter().enumerate() {
        let got = dec
            .next_page(&mut buf)
            .unwrap_or_else(|e| panic!("page {i} ({n}): {e:?}"));
        assert_eq!(got.map(PageNum::get), Some(*n), "page {i}");
        assert!(buf == *data, "page {n} data differs");
    }
    assert_eq!(dec.next_page(&mut buf).expect("end of page block"), None);
    assert_eq!(dec.page_count() as usize, pages.len());
    let decoded = dec.finish().expect("finish");
    assert_eq!(decoded, trailer);

    let (h, t, n) = verify(&bytes[..]).expect("verify");
    assert_eq!((h, t, n as usize), (header, trailer, pages.len()));

    // Any proper prefix and any extension must be rejected.
    for cut in [
        0,
        1,
        99,
        100,
        bytes.len() / 2,
        bytes.len() - 17,
        bytes.len() - 1,
    ] {
        if cut < bytes.len() {
            assert!(
                verify(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        verify(&longer[..]).is_err(),
        "file with a byte appended accepted"
    );
});
