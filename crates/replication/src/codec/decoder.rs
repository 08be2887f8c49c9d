//! The sans-IO decoder of a `/stream` response: bytes in, in whatever pieces the network
//! delivers them; frames and LTX file data out.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{self, FrameType};
use super::{CodecError, Frame};

/// What a [`StreamDecoder`] found next in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A frame. After [`Frame::Ltx`] come `LtxData` events (none for an empty file) and then
    /// `LtxEnd`.
    Frame(Frame),
    /// The next piece of the LTX file that follows an LTX frame. Pieces are never empty, have no
    /// particular size (not even the chunks' sizes), and concatenate to the file.
    LtxData(Bytes),
    /// The end of the LTX file (the chunked body's zero-length terminator).
    LtxEnd,
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// At a frame boundary, or inside a frame's bytes (the frame is decoded once all are there).
    #[default]
    Frame,
    /// Inside an LTX body, before a chunk length.
    ChunkLen,
    /// Inside an LTX body, inside a chunk with this many bytes still to come.
    ChunkData { remaining: usize },
}

/// An incremental decoder of the `/stream` response: [`feed`](StreamDecoder::feed) it bytes as
/// they arrive, split anywhere, then call [`next`](StreamDecoder::next) until it returns
/// `Ok(None)`; at the end of the input [`finish`](StreamDecoder::finish) says whether the stream
/// ended cleanly between frames.
///
/// Buffering is bounded: a frame is decoded as soon as its last byte is there, LTX data is handed
/// out as soon as any of it is there, and lengths are checked against the limits
/// ([`MAX_NAME_LEN`](super::MAX_NAME_LEN), [`MAX_LEASE_ID_LEN`](super::MAX_LEASE_ID_LEN)) as soon
/// as they are read, so once `next` has returned `Ok(None)` the decoder holds less than
/// [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN) bytes. It never allocates by a length it read.
///
/// After an error the decoder stays failed: `next` and `finish` return the same error again and
/// further input is dropped.
///
/// ```
/// use litefs_replication::{encode_chunks, Event, Frame, StreamDecoder};
///
/// let mut wire = Vec::new();
/// Frame::Ltx { name: "db".into() }.encode(&mut wire);
/// encode_chunks(b"LTX1...", &mut wire);
/// Frame::Ready.encode(&mut wire);
///
/// let mut dec = StreamDecoder::new();
/// let mut events = Vec::new();
/// for piece in wire.chunks(3) {
///     dec.feed(piece);
///     while let Some(event) = dec.next()? {
///         events.push(event);
///     }
/// }
/// dec.finish()?;
/// assert_eq!(events[0], Event::Frame(Frame::Ltx { name: "db".into() }));
/// assert_eq!(events.last(), Some(&Event::Frame(Frame::Ready)));
/// # Ok::<(), litefs_replication::CodecError>(())
/// ```
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: BytesMut,
    state: State,
    failed: Option<CodecError>,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Adds the next bytes of the stream. Dropped once the decoder has failed.
    pub fn feed(&mut self, input: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(input);
        }
    }

    /// The next event, `Ok(None)` when the bytes fed so far hold no further complete event, or
    /// the error that makes the stream invalid (again on every later call).
    // Not `Iterator::next`: it is fallible, and `None` only means "feed more bytes".
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event>, CodecError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.step();
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.buf = BytesMut::new();
        }
        result
    }

    fn step(&mut self) -> Result<Option<Event>, CodecError> {
        loop {
            match self.state {
                State::Frame => {
                    let Some((frame, used)) = frame::parse(&self.buf)? else {
                        return Ok(None);
                    };
                    self.buf.advance(used);
                    if let Frame::Ltx { .. } = frame {
                        self.state = State::ChunkLen;
                    }
                    return Ok(Some(Event::Frame(frame)));
                }
                State::ChunkLen => {
                    let Some(&[hi, lo]) = self.buf.get(..2) else {
                        return Ok(None);
                    };
                    self.buf.advance(2);
                    let len = usize::from(u16::from_be_bytes([hi, lo]));
                    if len == 0 {
                        self.state = State::Frame;
                        return Ok(Some(Event::LtxEnd));
                    }
                    self.state = State::ChunkData { remaining: len };
                }
                State::ChunkData { remaining } => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(self.buf.len());
                    let piece = self.buf.split_to(n).freeze();
                    self.state = match remaining - n {
                        0 => State::ChunkLen,
                        remaining => State::ChunkData { remaining },
                    };
                    return Ok(Some(Event::LtxData(piece)));
                }
            }
        }
    }

    /// Checks that the stream may end here: `Ok` between frames (outside any LTX body), a
    /// [`CodecError::Truncated`] naming the frame or body the input ends inside, the decoder's
    /// error if it has failed, or [`CodecError::Undecoded`] if `next` has not yet returned every
    /// event of the bytes fed.
    pub fn finish(&self) -> Result<(), CodecError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let buffered = self.buf.len();
        match self.state {
            State::Frame if buffered == 0 => Ok(()),
            State::Frame => match frame::parse(&self.buf)? {
                Some(_) => Err(CodecError::Undecoded(buffered)),
                None => {
                    let code = self.buf.get(..4).and_then(|b| b.try_into().ok());
                    let context = code
                        .and_then(|b| FrameType::from_code(u32::from_be_bytes(b)))
                        .map_or("frame type", FrameType::context);
                    Err(CodecError::Truncated(context))
                }
            },
            State::ChunkLen if buffered >= 2 => Err(CodecError::Undecoded(buffered)),
            State::ChunkData { .. } if buffered > 0 => Err(CodecError::Undecoded(buffered)),
            State::ChunkLen | State::ChunkData { .. } => {
                Err(CodecError::Truncated("chunked LTX body"))
            }
        }
    }

    /// Bytes fed but not yet returned as events.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True between an LTX frame and the end of its file.
    pub fn in_ltx_body(&self) -> bool {
        self.state != State::Frame
    }

    /// The error the decoder failed with, if it has.
    pub fn error(&self) -> Option<&CodecError> {
        self.failed.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_chunks;

    fn drain(dec: &mut StreamDecoder) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(e) = dec.next().unwrap() {
            events.push(e);
        }
        events
    }

    #[test]
    fn ltx_body_pieces_follow_the_input() {
        let mut wire = Frame::Ltx { name: "a".into() }.to_bytes();
        encode_chunks(b"hello", &mut wire);
        let mut dec = StreamDecoder::new();
        dec.feed(&wire[..wire.len() - 4]); // frame, chunk length, "hel"
        assert_eq!(
            drain(&mut dec),
            vec![
                Event::Frame(Frame::Ltx { name: "a".into() }),
                Event::LtxData(Bytes::from_static(b"hel")),
            ]
        );
        assert!(dec.in_ltx_body());
        assert_eq!(dec.finish(), Err(CodecError::Truncated("chunked LTX body")));
        dec.feed(&wire[wire.len() - 4..]);
        assert_eq!(
            drain(&mut dec),
            vec![Event::LtxData(Bytes::from_static(b"lo")), Event::LtxEnd]
        );
        assert!(!dec.in_ltx_body());
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn finish_reports_undecoded_input() {
        let mut dec = StreamDecoder::new();
        dec.feed(&Frame::End.to_bytes());
        assert_eq!(dec.finish(), Err(CodecError::Undecoded(4)));
        assert_eq!(drain(&mut dec), vec![Event::Frame(Frame::End)]);
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn failure_is_sticky() {
        let mut dec = StreamDecoder::new();
        dec.feed(&[0, 0, 0, 9]);
        let err = CodecError::UnknownFrameType(9);
        assert_eq!(dec.next(), Err(err.clone()));
        dec.feed(&Frame::Ready.to_bytes());
        assert_eq!(dec.next(), Err(err.clone()));
        assert_eq!(dec.finish(), Err(err.clone()));
        assert_eq!(dec.error(), Some(&err));
        assert_eq!(dec.buffered(), 0);
    }
}
