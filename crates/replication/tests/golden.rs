//! Golden byte vectors written out by hand from the LiteFS 0.5 wire format (all integers
//! big-endian), checked against both the encoder and the decoder.

mod common;

use common::{decode_split, Item};
use litefs_ltx::{Checksum, Pos, TXID};
use litefs_replication::{encode_chunks, Frame, PosMap, MAX_CHUNK_LEN};

/// Every frame type with its exact bytes.
fn golden_frames() -> Vec<(Frame, Vec<u8>)> {
    vec![
        (
            Frame::Ltx { name: "db".into() },
            vec![
                0, 0, 0, 1, // type 1
                0, 0, 0, 0, 0, 0, 0, 0, // u64 size, always 0
                0, 0, 0, 2, // name length
                b'd', b'b',
            ],
        ),
        (Frame::Ready, vec![0, 0, 0, 2]),
        (Frame::End, vec![0, 0, 0, 3]),
        (
            Frame::DropDb {
                name: "old.db".into(),
            },
            vec![
                0, 0, 0, 4, // type 4
                0, 0, 0, 6, // name length
                b'o', b'l', b'd', b'.', b'd', b'b',
            ],
        ),
        (
            Frame::Handoff {
                lease_id: "a5b2c3d4-0000-1111-2222-333344445555".into(),
            },
            [
                &[0u8, 0, 0, 5][..], // type 5
                &[0, 0, 0, 0x24],    // length 36
                b"a5b2c3d4-0000-1111-2222-333344445555",
            ]
            .concat(),
        ),
        (
            Frame::Hwm {
                txid: TXID::new(0x0102_0304_0506_0708),
                name: "db".into(),
            },
            vec![
                0, 0, 0, 6, // type 6
                1, 2, 3, 4, 5, 6, 7, 8, // u64 TXID
                0, 0, 0, 2, // name length
                b'd', b'b',
            ],
        ),
        (
            Frame::Heartbeat {
                timestamp_ms: 1_700_000_000_123, // 0x18b_cfe5_687b
            },
            vec![
                0, 0, 0, 7, // type 7
                0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b,
            ],
        ),
        (
            Frame::Heartbeat { timestamp_ms: -2 },
            vec![0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
        ),
        (
            Frame::Ltx {
                name: "é".into(), // UTF-8: c3 a9
            },
            vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xc3, 0xa9],
        ),
    ]
}

#[test]
fn frames_encode_to_golden_bytes() {
    for (frame, bytes) in golden_frames() {
        assert_eq!(frame.to_bytes(), bytes, "{frame:?}");
        let mut out = vec![0xaa];
        frame.encode(&mut out);
        assert_eq!(out[1..], bytes[..], "encode appends: {frame:?}");
        let mut w = Vec::new();
        frame.write_to(&mut w).unwrap();
        assert_eq!(w, bytes);
        assert_eq!(frame.validate(), Ok(()));
    }
}

#[test]
fn golden_bytes_decode_to_frames() {
    for (frame, mut bytes) in golden_frames() {
        let ltx = matches!(frame, Frame::Ltx { .. });
        if ltx {
            bytes.extend_from_slice(&[0, 0]); // an empty LTX body
        }
        for max_piece in [1, 3, bytes.len()] {
            let out = decode_split(&bytes, max_piece, 7);
            let mut want = vec![Item::Frame(frame.clone())];
            if ltx {
                want.push(Item::Body(vec![]));
            }
            assert_eq!(out.items, want, "{frame:?}");
            assert_eq!(out.error, None);
            assert_eq!(out.finish, Ok(()));
        }
    }
}

#[test]
fn ltx_size_field_is_ignored_on_read() {
    let bytes = [
        0, 0, 0, 1, // type 1
        0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // a size LiteFS never sends
        0, 0, 0, 1, b'x', // name
        0, 2, 0xaa, 0xbb, // one 2-byte chunk
        0, 0, // terminator
    ];
    let out = decode_split(&bytes, 1, 1);
    assert_eq!(
        out.items,
        vec![
            Item::Frame(Frame::Ltx { name: "x".into() }),
            Item::Body(vec![0xaa, 0xbb]),
        ]
    );
    assert_eq!(out.finish, Ok(()));
}

#[test]
fn pos_map_golden_bytes() {
    let mut map = PosMap::new();
    // Inserted out of order: the encoding is sorted by name.
    map.insert(
        "b.db",
        Pos::new(TXID::new(1), Checksum::new(0xf630_f5ae_3060_002c)),
    );
    map.insert(
        "a.db",
        Pos::new(TXID::new(0x0203), Checksum::new(0x8000_0000_0000_0001)),
    );
    let bytes = vec![
        0, 0, 0, 2, // count
        0, 0, 0, 4, b'a', b'.', b'd', b'b', // name
        0, 0, 0, 0, 0, 0, 0x02, 0x03, // TXID
        0x80, 0, 0, 0, 0, 0, 0, 0x01, // PostApplyChecksum
        0, 0, 0, 4, b'b', b'.', b'd', b'b', // name
        0, 0, 0, 0, 0, 0, 0, 0x01, // TXID
        0xf6, 0x30, 0xf5, 0xae, 0x30, 0x60, 0x00, 0x2c, // PostApplyChecksum
    ];
    assert_eq!(map.encode(), bytes);
    assert_eq!(map.encoded_len(), bytes.len());
    let mut w = Vec::new();
    map.write_to(&mut w).unwrap();
    assert_eq!(w, bytes);
    assert_eq!(PosMap::decode(&bytes), Ok(map));
}

#[test]
fn chunked_body_golden_bytes() {
    let mut out = Vec::new();
    encode_chunks(b"abc", &mut out);
    assert_eq!(out, [0, 3, b'a', b'b', b'c', 0, 0]);

    let mut out = Vec::new();
    encode_chunks(&[], &mut out);
    assert_eq!(out, [0, 0]);

    // 65536 bytes: one full chunk of 65535, one of 1, the terminator.
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    encode_chunks(&data, &mut out);
    assert_eq!(out.len(), 2 + 65535 + 2 + 1 + 2);
    assert_eq!(out[..2], [0xff, 0xff]);
    assert_eq!(out[2..2 + MAX_CHUNK_LEN], data[..65535]);
    assert_eq!(out[65537..65539], [0x00, 0x01]);
    assert_eq!(out[65539], data[65535]);
    assert_eq!(out[65540..], [0, 0]);
}

#[test]
fn whole_stream_golden_bytes() {
    let bytes: Vec<u8> = [
        &[0u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, b'd', b'b'][..], // LTX "db"
        &[0, 2, b'L', b'T', 0, 2, b'X', b'1', 0, 0],                         // body "LTX1"
        &[0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2, b'd', b'b'],       // HWM 9 "db"
        &[0, 0, 0, 2],                                                       // Ready
        &[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0x03, 0xe8],                         // Heartbeat 1000
        &[0, 0, 0, 3],                                                       // End
    ]
    .concat();
    let want = vec![
        Item::Frame(Frame::Ltx { name: "db".into() }),
        Item::Body(b"LTX1".to_vec()),
        Item::Frame(Frame::Hwm {
            txid: TXID::new(9),
            name: "db".into(),
        }),
        Item::Frame(Frame::Ready),
        Item::Frame(Frame::Heartbeat { timestamp_ms: 1000 }),
        Item::Frame(Frame::End),
    ];
    for max_piece in [1, 2, 5, bytes.len()] {
        let out = decode_split(&bytes, max_piece, 3);
        assert_eq!(out.items, want);
        assert_eq!(out.error, None);
        assert_eq!(out.finish, Ok(()));
    }
}
