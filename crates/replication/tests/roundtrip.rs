//! Property tests: random streams of frames and LTX bodies, encoded, then decoded from random
//! splits (down to one byte per feed), give back exactly what was encoded.

mod common;

use std::io::Write;

use common::{body, decode_in_pieces, decode_split, encode, Item, Rng};
use litefs_ltx::{Checksum, Pos, TXID};
use litefs_replication::{ChunkWriter, CodecError, Frame, PosMap, MAX_CHUNK_LEN, MAX_NAME_LEN};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9._-]{0,24}",
        2 => "\\PC{0,12}",
        1 => Just("n".repeat(MAX_NAME_LEN)),
        1 => Just(String::new()),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::Ready),
        Just(Frame::End),
        name().prop_map(|name| Frame::DropDb { name }),
        "[0-9a-f-]{0,36}".prop_map(|lease_id| Frame::Handoff { lease_id }),
        (any::<u64>(), name()).prop_map(|(t, name)| Frame::Hwm {
            txid: TXID::new(t),
            name
        }),
        any::<i64>().prop_map(|timestamp_ms| Frame::Heartbeat { timestamp_ms }),
    ]
}

/// LTX body lengths: small ones, the chunk-size edges, and large ones.
fn body_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..300usize,
        1 => Just(MAX_CHUNK_LEN),
        1 => Just(MAX_CHUNK_LEN + 1),
        1 => Just(2 * MAX_CHUNK_LEN),
        1 => (MAX_CHUNK_LEN - 3)..(MAX_CHUNK_LEN + 4),
        2 => 0..200_000usize,
    ]
}

/// A stream: frames, and LTX frames each followed by their body.
fn stream() -> impl Strategy<Value = Vec<Item>> {
    let element = prop_oneof![
        frame().prop_map(|f| vec![Item::Frame(f)]),
        (name(), body_len(), any::<u64>()).prop_map(|(name, len, seed)| vec![
            Item::Frame(Frame::Ltx { name }),
            Item::Body(body(len, seed)),
        ]),
    ];
    prop::collection::vec(element, 0..6).prop_map(|v| v.into_iter().flatten().collect())
}

/// The largest piece fed at once.
fn max_piece() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        2..16usize,
        16..4096usize,
        4096..200_000usize,
        Just(usize::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn stream_round_trips_in_any_split(items in stream(), max_piece in max_piece(), seed in any::<u64>()) {
        let (wire, _) = encode(&items);
        let out = decode_split(&wire, max_piece, seed);
        prop_assert_eq!(out.error, None);
        prop_assert_eq!(out.finish, Ok(()));
        prop_assert!(out.items == items, "decoded items differ");
    }

    #[test]
    fn one_byte_feeds(items in stream()) {
        let (wire, _) = encode(&items);
        let out = decode_in_pieces(&wire, || 1);
        prop_assert_eq!(out.finish, Ok(()));
        prop_assert!(out.items == items, "decoded items differ");
    }

    #[test]
    fn chunk_writer_round_trips(len in body_len(), seed in any::<u64>(), max_write in max_piece()) {
        let data = body(len, seed);
        let mut wire = Frame::Ltx { name: "db".into() }.to_bytes();
        let mut w = ChunkWriter::new(&mut wire);
        let mut rng = Rng::new(seed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rng.piece(max_write).min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            if rng.next_u64() % 64 == 0 {
                w.flush().unwrap();
            }
            rest = &rest[n..];
        }
        w.finish().unwrap();
        let out = decode_split(&wire, 4096, seed);
        prop_assert_eq!(out.finish, Ok(()));
        prop_assert!(
            out.items == vec![Item::Frame(Frame::Ltx { name: "db".into() }), Item::Body(data)],
            "decoded body differs"
        );
    }

    #[test]
    fn truncated_stream_fails_finish_unless_cut_between_items(
        items in stream(),
        cut_seed in any::<u64>(),
        max_piece in max_piece(),
    ) {
        let (wire, ends) = encode(&items);
        let cut = if wire.is_empty() { 0 } else { (cut_seed % wire.len() as u64) as usize };
        let out = decode_split(&wire[..cut], max_piece, cut_seed);
        prop_assert_eq!(out.error, None);
        if ends.contains(&cut) {
            prop_assert_eq!(out.finish, Ok(()));
        } else {
            prop_assert!(
                matches!(out.finish, Err(CodecError::Truncated(_))),
                "cut at {} of {}: {:?}", cut, wire.len(), out.finish
            );
        }
        // What was decoded is a prefix of the stream (the last body maybe partial).
        for (i, got) in out.items.iter().enumerate() {
            match got {
                Item::PartialBody(b) => match &items[i] {
                    Item::Body(full) => prop_assert!(full.starts_with(b)),
                    other => prop_assert!(false, "partial body in place of {:?}", other),
                },
                item => prop_assert!(*item == items[i], "item {} differs", i),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_in_any_split(
        wire in prop::collection::vec(any::<u8>(), 0..2048),
        max_piece in max_piece(),
        seed in any::<u64>(),
    ) {
        let whole = decode_in_pieces(&wire, || usize::MAX);
        let split = decode_split(&wire, max_piece, seed);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn pos_map_round_trips(
        entries in prop::collection::vec((name(), any::<u64>(), any::<u64>()), 0..40)
    ) {
        let map: PosMap = entries
            .iter()
            .map(|(n, t, c)| (n.clone(), Pos::new(TXID::new(*t), Checksum::new(*c))))
            .collect();
        let bytes = map.encode();
        prop_assert_eq!(bytes.len(), map.encoded_len());
        prop_assert_eq!(PosMap::decode(&bytes), Ok(map.clone()));
        // Any proper prefix is truncated, any extension has trailing bytes.
        for cut in [0, 1, 3, 4, bytes.len() / 2, bytes.len() - 1] {
            if cut < bytes.len() {
                prop_assert!(matches!(PosMap::decode(&bytes[..cut]), Err(CodecError::Truncated(_))));
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(PosMap::decode(&longer), Err(CodecError::PosMapTrailingBytes(1)));
    }
}
