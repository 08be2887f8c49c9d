//! Every kind of bad input gives the error that names it, never a panic, and never makes the
//! decoder wait for (or allocate) a length it has just read.

mod common;

use common::{decode_in_pieces, decode_split, encode, Item};
use litefs_ltx::{Checksum, Pos, TXID};
use litefs_replication::{
    CodecError, Event, Frame, PosMap, StreamDecoder, MAX_LEASE_ID_LEN, MAX_NAME_LEN,
    MAX_POS_MAP_COUNT,
};

/// A stream with every frame type and LTX bodies of 0, 1 and 3 bytes.
fn every_frame() -> Vec<Item> {
    vec![
        Item::Frame(Frame::Ltx { name: "db".into() }),
        Item::Body(vec![1, 2, 3]),
        Item::Frame(Frame::Hwm {
            txid: TXID::new(5),
            name: "db".into(),
        }),
        Item::Frame(Frame::Ltx { name: "e".into() }),
        Item::Body(vec![]),
        Item::Frame(Frame::Ready),
        Item::Frame(Frame::Heartbeat { timestamp_ms: 42 }),
        Item::Frame(Frame::DropDb {
            name: "gone".into(),
        }),
        Item::Frame(Frame::Ltx { name: "f".into() }),
        Item::Body(vec![9]),
        Item::Frame(Frame::Handoff {
            lease_id: "lease".into(),
        }),
        Item::Frame(Frame::End),
    ]
}

/// Feeds `input` in one piece and returns the first error of `next`, checking it is sticky.
fn first_error(input: &[u8]) -> Option<CodecError> {
    let mut dec = StreamDecoder::new();
    dec.feed(input);
    loop {
        match dec.next() {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                assert_eq!(dec.next(), Err(e.clone()), "error is not sticky");
                assert_eq!(dec.finish(), Err(e.clone()), "finish forgets the error");
                dec.feed(&Frame::Ready.to_bytes());
                assert_eq!(
                    dec.next(),
                    Err(e.clone()),
                    "input after an error is decoded"
                );
                return Some(e);
            }
        }
    }
}

#[test]
fn truncated_at_every_byte() {
    let items = every_frame();
    let (wire, ends) = encode(&items);
    for cut in 0..=wire.len() {
        for max_piece in [1, 2, usize::MAX] {
            let out = decode_split(&wire[..cut], max_piece, cut as u64);
            assert_eq!(out.error, None, "cut {cut}");
            if ends.contains(&cut) {
                assert_eq!(out.finish, Ok(()), "cut {cut}");
            } else {
                assert!(
                    matches!(out.finish, Err(CodecError::Truncated(_))),
                    "cut {cut}: {:?}",
                    out.finish
                );
            }
        }
    }
    let out = decode_split(&wire, 1, 0);
    assert_eq!(out.items, items);
}

#[test]
fn truncation_names_where_the_input_ended() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0, 0], "frame type"),
        (vec![0, 0, 0, 1, 0, 0, 0], "LTX frame"),
        (
            vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, b'a'],
            "LTX frame",
        ),
        (vec![0, 0, 0, 4, 0, 0], "DropDB frame"),
        (vec![0, 0, 0, 5, 0, 0, 0, 9, b'x'], "Handoff frame"),
        (vec![0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 1, 0], "HWM frame"),
        (vec![0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0], "Heartbeat frame"),
        // An LTX frame, then: nothing; half a chunk length; a chunk cut short.
        (
            Frame::Ltx { name: "a".into() }.to_bytes(),
            "chunked LTX body",
        ),
        (
            [Frame::Ltx { name: "a".into() }.to_bytes(), vec![0]].concat(),
            "chunked LTX body",
        ),
        (
            [Frame::Ltx { name: "a".into() }.to_bytes(), vec![0, 5, 1, 2]].concat(),
            "chunked LTX body",
        ),
    ];
    for (input, what) in cases {
        let out = decode_in_pieces(&input, || 1);
        assert_eq!(out.error, None, "{input:?}");
        assert_eq!(out.finish, Err(CodecError::Truncated(what)), "{input:?}");
        let msg = out.finish.unwrap_err().to_string();
        assert!(msg.contains("truncated") && msg.contains(what), "{msg}");
    }
}

#[test]
fn unknown_frame_types() {
    for code in [0u32, 8, 9, 0x100, 0x0100_0000, u32::MAX] {
        let mut dec = StreamDecoder::new();
        let bytes = code.to_be_bytes();
        dec.feed(&bytes[..3]);
        assert_eq!(dec.next(), Ok(None));
        dec.feed(&bytes[3..]);
        assert_eq!(dec.next(), Err(CodecError::UnknownFrameType(code)));
        assert_eq!(
            CodecError::UnknownFrameType(code).to_string(),
            format!("unknown stream frame type {code}")
        );
        // Sticky, and later input is dropped.
        assert_eq!(
            first_error(&bytes),
            Some(CodecError::UnknownFrameType(code))
        );
    }
    // A bad type after good frames and a body: the good ones come out first.
    let mut wire = Frame::Ready.to_bytes();
    wire.extend_from_slice(&[
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0,
    ]);
    wire.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let out = decode_split(&wire, 1, 0);
    assert_eq!(
        out.items,
        vec![
            Item::Frame(Frame::Ready),
            Item::Frame(Frame::Ltx {
                name: String::new()
            }),
            Item::Body(vec![7]),
        ]
    );
    assert_eq!(out.error, Some(CodecError::UnknownFrameType(0xdead_beef)));
    assert_eq!(out.finish, out.error.clone().map_or(Ok(()), Err));
}

/// The bytes of a frame of type `code` up to and including its (name or lease id) length field.
fn header_with_len(code: u32, len: u32) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    match code {
        1 => b.extend_from_slice(&[0; 8]),
        6 => b.extend_from_slice(&7u64.to_be_bytes()),
        _ => {}
    }
    b.extend_from_slice(&len.to_be_bytes());
    b
}

#[test]
fn oversized_names_fail_as_soon_as_the_length_is_read() {
    for (code, context) in [(1, "LTX frame"), (4, "DropDB frame"), (6, "HWM frame")] {
        for len in [MAX_NAME_LEN as u32 + 1, 1 << 20, u32::MAX] {
            let header = header_with_len(code, len);
            // Only the length is there, none of the (up to 4 GiB of) name it announces.
            let want = CodecError::NameTooLong { len, context };
            assert_eq!(first_error(&header), Some(want.clone()), "{context} {len}");
            // Byte by byte: the error comes with the length's last byte.
            let mut dec = StreamDecoder::new();
            for (i, b) in header.iter().enumerate() {
                dec.feed(&[*b]);
                if i + 1 < header.len() {
                    assert_eq!(dec.next(), Ok(None));
                    assert!(dec.buffered() <= i + 1);
                } else {
                    assert_eq!(dec.next(), Err(want.clone()));
                }
            }
            let msg = want.to_string();
            assert!(
                msg.contains(&len.to_string()) && msg.contains(context),
                "{msg}"
            );
        }
        // Exactly the limit is fine, and waits for its bytes with a small buffer.
        let mut header = header_with_len(code, MAX_NAME_LEN as u32);
        assert_eq!(first_error(&header), None);
        header.extend_from_slice(&vec![b'n'; MAX_NAME_LEN]);
        let mut dec = StreamDecoder::new();
        dec.feed(&header);
        assert!(matches!(dec.next(), Ok(Some(Event::Frame(_)))));
    }
}

#[test]
fn oversized_lease_id() {
    for len in [MAX_LEASE_ID_LEN as u32 + 1, u32::MAX] {
        assert_eq!(
            first_error(&header_with_len(5, len)),
            Some(CodecError::LeaseIdTooLong { len })
        );
    }
    let err = CodecError::LeaseIdTooLong { len: 1025 }.to_string();
    assert!(
        err.contains("handoff lease id") && err.contains("1025"),
        "{err}"
    );
}

#[test]
fn invalid_utf8() {
    let bad = [b'a', 0xff, 0xfe];
    for (code, context) in [(1, "LTX frame"), (4, "DropDB frame"), (6, "HWM frame")] {
        let mut input = header_with_len(code, 3);
        input.extend_from_slice(&bad);
        assert_eq!(
            first_error(&input),
            Some(CodecError::InvalidUtf8Name {
                name: "a\u{fffd}\u{fffd}".into(),
                context
            })
        );
    }
    let mut input = header_with_len(5, 2);
    input.extend_from_slice(&[0xc3, 0x28]);
    assert_eq!(
        first_error(&input),
        Some(CodecError::InvalidUtf8LeaseId {
            lease_id: "\u{fffd}(".into()
        })
    );
}

#[test]
fn chunks_are_streamed_not_buffered() {
    // A chunk announcing 65535 bytes: whatever part of it is there comes out at once.
    let mut dec = StreamDecoder::new();
    dec.feed(&Frame::Ltx { name: "a".into() }.to_bytes());
    dec.feed(&[0xff, 0xff, 1]);
    assert!(matches!(dec.next(), Ok(Some(Event::Frame(_)))));
    assert_eq!(dec.next(), Ok(Some(Event::LtxData(vec![1].into()))));
    assert_eq!(dec.next(), Ok(None));
    assert_eq!(dec.buffered(), 0);
    assert!(dec.in_ltx_body());
    assert_eq!(dec.finish(), Err(CodecError::Truncated("chunked LTX body")));
}

#[test]
fn finish_with_undecoded_input() {
    let mut dec = StreamDecoder::new();
    dec.feed(&Frame::Heartbeat { timestamp_ms: 1 }.to_bytes());
    assert_eq!(dec.finish(), Err(CodecError::Undecoded(12)));
    // An error already in the bytes is reported as such.
    let mut dec = StreamDecoder::new();
    dec.feed(&[0, 0, 0, 0]);
    assert_eq!(dec.finish(), Err(CodecError::UnknownFrameType(0)));
}

fn pos_map_bytes(entries: &[(&[u8], u64, u64)]) -> Vec<u8> {
    let mut b = (entries.len() as u32).to_be_bytes().to_vec();
    for (name, txid, checksum) in entries {
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&txid.to_be_bytes());
        b.extend_from_slice(&checksum.to_be_bytes());
    }
    b
}

#[test]
fn pos_map_errors() {
    assert_eq!(
        PosMap::decode(&[]),
        Err(CodecError::Truncated("pos map count"))
    );
    assert_eq!(
        PosMap::decode(&[0, 0, 1]),
        Err(CodecError::Truncated("pos map count"))
    );
    // Counts over the limit fail from the count alone.
    for count in [MAX_POS_MAP_COUNT + 1, u32::MAX] {
        let err = PosMap::decode(&count.to_be_bytes()).unwrap_err();
        assert_eq!(err, CodecError::PosMapCountTooLarge { count });
        assert!(err.to_string().contains(&count.to_string()), "{err}");
    }
    // The limit itself is allowed, and fails quickly on the missing entries.
    assert_eq!(
        PosMap::decode(&MAX_POS_MAP_COUNT.to_be_bytes()),
        Err(CodecError::Truncated("pos map entry"))
    );
    // A name length over the limit, with nothing after it.
    let mut b = 1u32.to_be_bytes().to_vec();
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        PosMap::decode(&b),
        Err(CodecError::NameTooLong {
            len: u32::MAX,
            context: "pos map"
        })
    );
    assert_eq!(
        PosMap::decode(&pos_map_bytes(&[(&[0xff], 1, 1)])),
        Err(CodecError::InvalidUtf8Name {
            name: "\u{fffd}".into(),
            context: "pos map"
        })
    );
    assert_eq!(
        PosMap::decode(&pos_map_bytes(&[(b"a", 1, 1), (b"a", 2, 2)])),
        Err(CodecError::PosMapDuplicateName("a".into()))
    );
    let mut trailing = pos_map_bytes(&[(b"a", 1, 1)]);
    trailing.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        PosMap::decode(&trailing),
        Err(CodecError::PosMapTrailingBytes(3))
    );
    assert!(CodecError::PosMapTrailingBytes(3)
        .to_string()
        .contains("3 trailing bytes"));
}

#[test]
fn pos_map_truncated_at_every_byte() {
    let bytes = pos_map_bytes(&[(b"a.db", 1, 0x8000_0000_0000_0001), (b"b.db", 2, 3)]);
    let map = PosMap::decode(&bytes).unwrap();
    assert_eq!(
        map.get("a.db"),
        Some(Pos::new(TXID::new(1), Checksum::new(0x8000_0000_0000_0001)))
    );
    for cut in 0..bytes.len() {
        let want = if cut < 4 {
            "pos map count"
        } else {
            "pos map entry"
        };
        assert_eq!(
            PosMap::decode(&bytes[..cut]),
            Err(CodecError::Truncated(want)),
            "cut {cut}"
        );
    }
}
