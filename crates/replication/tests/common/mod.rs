//! Helpers shared by the integration tests: deterministic bodies and splits, and a driver that
//! feeds a stream to a `StreamDecoder` in pieces and reassembles what it returns.
#![allow(dead_code)]

use litefs_replication::{encode_chunks, CodecError, Event, Frame, StreamDecoder, MAX_FRAME_LEN};

/// A small deterministic PRNG (xorshift64*), so large bodies cost no proptest shrinking.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `1..=max`.
    pub fn piece(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
}

/// `len` pseudo-random bytes.
pub fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| (rng.next_u64() >> 56) as u8).collect()
}

/// A stream element as a test sees it: a frame, or the whole LTX file after an LTX frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    Body(Vec<u8>),
    /// An LTX file whose terminator never came (only at the end of a truncated stream).
    PartialBody(Vec<u8>),
}

/// Encodes items: frames as they are, bodies chunked. Returns the bytes and the offsets at which
/// the stream may cleanly end (0 and after every frame or body, but not between an LTX frame and
/// its body).
pub fn encode(items: &[Item]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut ends = vec![0];
    for (i, item) in items.iter().enumerate() {
        match item {
            Item::Frame(f) => f.encode(&mut out),
            Item::Body(b) => encode_chunks(b, &mut out),
            Item::PartialBody(_) => panic!("cannot encode a partial body"),
        }
        let body_follows = matches!(item, Item::Frame(Frame::Ltx { .. }))
            && matches!(items.get(i + 1), Some(Item::Body(_)));
        if !body_follows {
            ends.push(out.len());
        }
    }
    (out, ends)
}

/// What decoding a whole input gave.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub items: Vec<Item>,
    /// The error of `next`, if any.
    pub error: Option<CodecError>,
    /// `finish()` after all input.
    pub finish: Result<(), CodecError>,
}

/// Feeds `wire` to a fresh decoder in pieces of the given sizes (the last piece takes the rest),
/// draining after each, and checks the decoder's invariants along the way.
pub fn decode_in_pieces(wire: &[u8], mut piece: impl FnMut() -> usize) -> Outcome {
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
                    assert!(body.is_none(), "frame {f:?} inside an LTX body");
                    if let Frame::Ltx { .. } = f {
                        body = Some(Vec::new());
                    }
                    items.push(Item::Frame(f));
                }
                Ok(Some(Event::LtxData(data))) => {
                    assert!(!data.is_empty(), "empty LtxData event");
                    body.as_mut()
                        .expect("LtxData outside an LTX body")
                        .extend_from_slice(&data);
                }
                Ok(Some(Event::LtxEnd)) => {
                    items.push(Item::Body(body.take().expect("LtxEnd outside an LTX body")));
                }
                Ok(None) => {
                    assert!(
                        dec.buffered() < MAX_FRAME_LEN,
                        "{} bytes buffered after draining",
                        dec.buffered()
                    );
                    assert_eq!(dec.in_ltx_body(), body.is_some());
                    break;
                }
                Err(e) => {
                    // Sticky: the same error again, and nothing buffered.
                    assert_eq!(dec.next(), Err(e.clone()));
                    assert_eq!(dec.buffered(), 0);
                    assert_eq!(dec.error(), Some(&e));
                    error = Some(e);
                    break;
                }
            }
        }
    }
    if let Some(b) = body {
        items.push(Item::PartialBody(b));
    }
    Outcome {
        items,
        error,
        finish: dec.finish(),
    }
}

/// Feeds `wire` in random pieces of at most `max_piece` bytes.
pub fn decode_split(wire: &[u8], max_piece: usize, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    decode_in_pieces(wire, move || rng.piece(max_piece))
}
