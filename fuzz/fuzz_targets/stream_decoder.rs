//! Arbitrary bytes through the replication stream decoder, fed in arbitrary splits, and through
//! the pos-map decoder. Neither may panic, hang or buffer without bound; the stream decoder must
//! give the same frames, LTX bytes, error and `finish` verdict whatever the split, and whatever
//! either decoder accepts must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_replication::{
    encode_chunks, CodecError, Event, Frame, PosMap, StreamDecoder, MAX_FRAME_LEN,
};

/// What a decoder made of a whole input: frames, LTX files, and how it ended.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Frame(Frame),
    Body(Vec<u8>),
    PartialBody(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Item>,
    error: Option<CodecError>,
    finish: Result<(), CodecError>,
}

/// Feeds `wire` in pieces of `piece()` bytes (at least 1), draining and checking invariants
/// after each piece.
fn decode(wire: &[u8], mut piece: impl FnMut() -> usize) -> Outcome {
    let mut dec = StreamDecoder::new();
    let mut items = Vec::new();
    let mut body: Option<Vec<u8>> = None;
    let mut error = None;
    let mut rest = wire;
    while !rest.is_empty() && error.is_none() {
        let n = piece().clamp(1, rest.len());
        dec.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match dec.next() {
                Ok(Some(Event::Frame(f))) => {
                    assert!(body.is_none(), "frame inside an LTX body");
                    assert_eq!(f.validate(), Ok(()), "decoded a frame over the limits");
                    if let Frame::Ltx { .. } = f {
                        body = Some(Vec::new());
                    }
                    items.push(Item::Frame(f));
                }
                Ok(Some(Event::LtxData(d))) => {
                    assert!(!d.is_empty(), "empty LtxData");
                    body.as_mut()
                        .expect("LtxData outside a body")
                        .extend_from_slice(&d);
                }
                Ok(Some(Event::LtxEnd)) => {
                    items.push(Item::Body(body.take().expect("LtxEnd outside a body")));
                }
                Ok(None) => {
                    assert!(
                        dec.buffered() < MAX_FRAME_LEN,
                        "{} bytes buffered",
                        dec.buffered()
                    );
                    assert_eq!(dec.in_ltx_body(), body.is_some());
                    break;
                }
                Err(e) => {
                    assert_eq!(dec.next(), Err(e.clone()), "error not sticky");
                    dec.feed(rest);
                    assert_eq!(dec.next(), Err(e.clone()), "input decoded after an error");
                    error = Some(e);
                    break;
                }
            }
        }
    }
    if let Some(b) = body {
        items.push(Item::PartialBody(b));
    }
    let finish = dec.finish();
    match (&error, &finish) {
        (Some(e), f) => assert_eq!(f, &Err(e.clone()), "finish forgot the error"),
        (None, Err(CodecError::Truncated(_)) | Ok(())) => {}
        (None, f) => panic!("unexpected finish verdict {f:?}"),
    }
    Outcome {
        items,
        error,
        finish,
    }
}

fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Frame(f) => f.encode(&mut out),
            Item::Body(b) => encode_chunks(b, &mut out),
            Item::PartialBody(_) => unreachable!("only complete items are re-encoded"),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the rest is split; the rest is the stream.
    let Some((&plan, wire)) = data.split_first() else {
        return;
    };
    let max_piece = match plan & 3 {
        0 => 1,
        1 => 7,
        2 => 300,
        _ => usize::MAX,
    };
    let mut x = u32::from(plan) | 0x100;
    let split = decode(wire, move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if max_piece == usize::MAX {
            usize::MAX
        } else {
            1 + x as usize % max_piece
        }
    });
    let whole = decode(wire, || usize::MAX);
    assert_eq!(split, whole, "the split changed the outcome");

    // Whatever complete items were decoded encode back to a stream that decodes to them.
    let complete: Vec<Item> = whole
        .items
        .into_iter()
        .filter(|i| !matches!(i, Item::PartialBody(_)))
        .collect();
    // Drop a trailing LTX frame whose body never completed.
    let keep = match complete.last() {
        Some(Item::Frame(Frame::Ltx { .. })) => complete.len() - 1,
        _ => complete.len(),
    };
    let again = decode(&encode(&complete[..keep]), || usize::MAX);
    assert_eq!(again.items, complete[..keep], "re-encoded stream differs");
    assert_eq!(again.error, None);
    assert_eq!(again.finish, Ok(()));

    // The same bytes as a pos-map body.
    for body in [wire, data] {
        if let Ok(map) = PosMap::decode(body) {
            let bytes = map.encode();
            assert_eq!(bytes.len(), map.encoded_len());
            assert!(bytes.len() <= body.len());
            assert_eq!(PosMap::decode(&bytes), Ok(map), "pos map round trip");
        }
    }
});
