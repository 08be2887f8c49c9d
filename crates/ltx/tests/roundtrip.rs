//! Property: whatever valid file the encoder writes, the decoder reads back unchanged.

#![allow(clippy::unwrap_used)]

use litefs_ltx::{
    checksum_page, verify, Checksum, Decoder, Encoder, Flags, Header, NodeId, PageNum, PageSize,
    RollingChecksum, TXID,
};
use proptest::prelude::*;

/// Deterministic page contents: compressible runs mixed with noise, from a seed.
fn page_data(seed: u64, pgno: u32, size: usize) -> Vec<u8> {
    let mut x = seed ^ (u64::from(pgno) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|i| {
            if i % 64 < 32 {
                (pgno % 251) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    header: Header,
    pgnos: Vec<u32>,
    seed: u64,
    post: Checksum,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(512u32), Just(1024), Just(4096), Just(65536)],
        any::<bool>(),
        any::<bool>(),
        0u32..24,
        2u64..1_000_000,
        any::<u64>(),
        proptest::collection::vec(any::<bool>(), 24),
        any::<u64>(),
        (any::<i64>(), any::<u64>()),
        any::<bool>(),
    )
        .prop_map(
            |(ps, compress, snapshot, commit, txid, seed, keep, post, (ts, node), wal)| {
                let page_size = PageSize::new(ps).unwrap();
                let (min, max) = if snapshot {
                    (TXID::ONE, TXID::new(txid))
                } else {
                    (TXID::new(txid), TXID::new(txid + seed % 3))
                };
                let mut header = Header::new(page_size, commit, min, max);
                header.timestamp = ts;
                header.node_id = NodeId::new(node);
                if compress {
                    header.flags = Flags::COMPRESS_LZ4;
                }
                if !snapshot {
                    header.pre_apply_checksum = Checksum::from_crc(seed);
                }
                if wal {
                    header.wal_offset = 32;
                    header.wal_size = i64::from(ps + 24) * 2;
                    header.wal_salt1 = seed as u32;
                    header.wal_salt2 = (seed >> 32) as u32;
                }
                let pgnos: Vec<u32> = (1..=commit)
                    .filter(|&p| snapshot || keep[p as usize - 1])
                    .collect();
                Case {
                    header,
                    pgnos,
                    seed,
                    post: Checksum::from_crc(post),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encode_then_decode_round_trips(c in case()) {
        let size = c.header.page_size.bytes();
        let mut enc = Encoder::new(Vec::new(), &c.header).unwrap();
        let mut sum = RollingChecksum::new();
        for &p in &c.pgnos {
            let pgno = PageNum::new(p).unwrap();
            let data = page_data(c.seed, p, size);
            sum.toggle(checksum_page(pgno, &data));
            enc.encode_page(pgno, &data).unwrap();
        }
        // Snapshots and deletions must carry the checksum of their pages; others any checksum.
        let post = if c.header.is_snapshot() || c.header.commit == 0 { sum.get() } else { c.post };
        let (trailer, bytes) = enc.finish(post).unwrap();

        let mut dec = Decoder::new(&bytes[..]).unwrap();
        prop_assert_eq!(*dec.header(), c.header);
        let mut buf = vec![0u8; size];
        let mut seen = Vec::new();
        while let Some(pgno) = dec.next_page(&mut buf).unwrap() {
            prop_assert!(buf == page_data(c.seed, pgno.get(), size));
            seen.push(pgno.get());
        }
        prop_assert_eq!(&seen, &c.pgnos);
        prop_assert_eq!(dec.finish().unwrap(), trailer);
        prop_assert_eq!(verify(&bytes[..]).unwrap().2 as usize, c.pgnos.len());
    }
}
