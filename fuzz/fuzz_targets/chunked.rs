//! The chunked LTX body after an LTX frame, on hostile bytes: the data handed out must be
//! exactly the chunks' data, the body must end at the zero length and nowhere else, and what
//! follows is read as frames again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_replication::{CodecError, Event, Frame, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let mut wire = Frame::Ltx { name: "db".into() }.to_bytes();
    wire.extend_from_slice(body);

    // What the body holds, walked chunk by chunk: the data and where the body ends, if it does.
    let mut expect = Vec::new();
    let mut at = 0;
    let mut end = None;
    while let Some(len) = body.get(at..at + 2) {
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        at += 2;
        if len == 0 {
            end = Some(at);
            break;
        }
        let n = len.min(body.len() - at);
        expect.extend_from_slice(&body[at..at + n]);
        at += n;
    }

    let mut dec = StreamDecoder::new();
    let mut got = Vec::new();
    let mut ended = false;
    let size = usize::from(split) + 1;
    'feed: for piece in wire.chunks(size) {
        dec.feed(piece);
        loop {
            match dec.next() {
                Ok(Some(Event::Frame(Frame::Ltx { name }))) if !ended && got.is_empty() => {
                    assert_eq!(name, "db");
                }
                Ok(Some(Event::LtxData(d))) => {
                    assert!(!ended);
                    got.extend_from_slice(&d);
                }
                Ok(Some(Event::LtxEnd)) => {
                    assert!(!ended);
                    ended = true;
                    // What follows is another frame: not this target's business.
                    break 'feed;
                }
                Ok(Some(e)) => panic!("unexpected event inside the body: {e:?}"),
                Ok(None) => break,
                Err(e) => panic!("a chunked body cannot be invalid, only short: {e}"),
            }
        }
    }
    assert_eq!(got, expect);
    assert_eq!(ended, end.is_some());
    if !ended {
        assert!(dec.in_ltx_body());
        match dec.finish() {
            Err(CodecError::Truncated(_)) => {}
            other => panic!("an unfinished body must be truncated, got {other:?}"),
        }
    }
});
