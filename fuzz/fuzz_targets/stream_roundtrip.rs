//! Encode-then-decode of `/stream` responses: any frames the codec accepts (`Frame::validate`),
//! with the LTX bodies written by `encode_chunks` or a `ChunkWriter` in writes of any size,
//! decode to the same frames and bodies.
#![no_main]

use std::io::Write;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use litefs_ltx::TXID;
use litefs_replication::{encode_chunks, ChunkWriter, Event, Frame, StreamDecoder};

#[derive(Arbitrary, Debug)]
enum Item {
    Ltx {
        name: String,
        body: Vec<u8>,
        writes: Vec<u8>,
        writer: bool,
    },
    Ready,
    End,
    DropDb(String),
    Handoff(String),
    Hwm(u64, String),
    Heartbeat(i64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<Item>,
    split: u8,
}

fuzz_target!(|input: Input| {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for item in input.items {
        let frame = match &item {
            Item::Ltx { name, .. } => Frame::Ltx { name: name.clone() },
            Item::Ready => Frame::Ready,
            Item::End => Frame::End,
            Item::DropDb(name) => Frame::DropDb { name: name.clone() },
            Item::Handoff(id) => Frame::Handoff {
                lease_id: id.clone(),
            },
            Item::Hwm(txid, name) => Frame::Hwm {
                txid: TXID::new(*txid),
                name: name.clone(),
            },
            Item::Heartbeat(ts) => Frame::Heartbeat { timestamp_ms: *ts },
        };
        if frame.validate().is_err() {
            continue;
        }
        frame.encode(&mut wire);
        want.push(Event::Frame(frame));
        if let Item::Ltx {
            body,
            writes,
            writer,
            ..
        } = item
        {
            if writer {
                let mut w = ChunkWriter::new(&mut wire);
                let mut rest = &body[..];
                for n in writes.iter().cycle().take(body.len() + 1) {
                    if rest.is_empty() {
                        break;
                    }
                    let n = (usize::from(*n) * 331).min(rest.len()).max(1);
                    w.write_all(&rest[..n]).expect("writing to a Vec");
                    if n % 5 == 0 {
                        w.flush().expect("writing to a Vec");
                    }
                    rest = &rest[n..];
                }
                w.write_all(rest).expect("writing to a Vec");
                w.finish().expect("writing to a Vec");
            } else {
                encode_chunks(&body, &mut wire);
            }
            if !body.is_empty() {
                want.push(Event::LtxData(body.into()));
            }
            want.push(Event::LtxEnd);
        }
    }
    let mut dec = StreamDecoder::new();
    let mut got: Vec<Event> = Vec::new();
    for piece in wire.chunks(usize::from(input.split) + 1) {
        dec.feed(piece);
        while let Some(e) = dec.next().expect("an encoded stream decodes") {
            match (e, got.last_mut()) {
                (Event::LtxData(d), Some(Event::LtxData(prev))) => {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(&d);
                    *prev = joined.into();
                }
                (e, _) => got.push(e),
            }
        }
    }
    dec.finish().expect("an encoded stream ends cleanly");
    assert_eq!(got, want);
});
