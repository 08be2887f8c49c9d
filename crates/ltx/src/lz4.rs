//! The LZ4 frame around a compressed body. Frame encoding and block decompression come from
//! `lz4_flex`; what is ours is knowing where the frame ends. A frame decoder reads ahead to look
//! for a following frame, which in an LTX file would swallow the trailer, so [`FrameBound`]
//! follows the frame's structure and reports end-of-input exactly where the frame ends.

use std::io::{self, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

/// The standard LZ4 frame magic number (little-endian on disk).
const FRAME_MAGIC: u32 = 0x184D_2204;
/// The largest block size an LZ4 frame may declare (4 MiB).
const MAX_BLOCK_SIZE: u32 = 4 << 20;

const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_1: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_DICT_ID: u8 = 0x01;

/// Starts an LZ4 frame with the settings LiteFS uses: 64 KiB independent blocks and a content
/// checksum. Any valid frame interoperates, since checksums cover the uncompressed bytes.
pub(crate) fn frame_encoder<W: Write>(w: W) -> FrameEncoder<W> {
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true);
    FrameEncoder::with_frame_info(info, w)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Magic,
    Descriptor,
    /// Optional content size and dictionary id, then the header checksum byte.
    DescriptorRest,
    BlockSize,
    /// Block bytes plus the optional block checksum.
    BlockData,
    ContentChecksum,
    Done,
}

/// A reader that passes one LZ4 frame through from `inner` and then reports end-of-input, without
/// reading a byte past the frame. Input that ends inside the frame is an `UnexpectedEof` error;
/// a malformed frame structure is `InvalidData`.
#[derive(Debug)]
pub(crate) struct FrameBound<R> {
    inner: R,
    part: Part,
    remaining: usize,
    captured: [u8; 4],
    filled: usize,
    flg: u8,
}

impl<R: Read> FrameBound<R> {
    pub(crate) fn new(inner: R) -> Self {
        FrameBound {
            inner,
            part: Part::Magic,
            remaining: 4,
            captured: [0; 4],
            filled: 0,
            flg: 0,
        }
    }

    /// True once the whole frame has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.part == Part::Done
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn enter(&mut self, part: Part, len: usize) {
        self.part = part;
        self.remaining = len;
        self.filled = 0;
    }

    /// Moves to the next part once the current one has been read whole.
    fn advance(&mut self) -> io::Result<()> {
        let word = u32::from_le_bytes(self.captured);
        match self.part {
            Part::Magic => {
                if word != FRAME_MAGIC {
                    return Err(invalid(format!(
                        "lz4 frame magic is {word:#010x}, expected {FRAME_MAGIC:#010x}"
                    )));
                }
                self.enter(Part::Descriptor, 2);
            }
            Part::Descriptor => {
                self.flg = self.captured[0];
                if self.flg & FLG_VERSION_MASK != FLG_VERSION_1 {
                    return Err(invalid(format!(
                        "lz4 frame descriptor {:#04x} has an unknown version",
                        self.flg
                    )));
                }
                let mut rest = 1;
                if self.flg & FLG_CONTENT_SIZE != 0 {
                    rest += 8;
                }
                if self.flg & FLG_DICT_ID != 0 {
                    rest += 4;
                }
                self.enter(Part::DescriptorRest, rest);
            }
            Part::DescriptorRest | Part::BlockData => self.enter(Part::BlockSize, 4),
            Part::BlockSize => {
                if word == 0 {
                    if self.flg & FLG_CONTENT_CHECKSUM != 0 {
                        self.enter(Part::ContentChecksum, 4);
                    } else {
                        self.enter(Part::Done, 0);
                    }
                } else {
                    let size = word & 0x7fff_ffff;
                    if size > MAX_BLOCK_SIZE {
                        return Err(invalid(format!(
                            "lz4 block of {size} bytes is larger than the format allows"
                        )));
                    }
                    let mut len = size as usize;
                    if self.flg & FLG_BLOCK_CHECKSUM != 0 {
                        len += 4;
                    }
                    self.enter(Part::BlockData, len);
                }
            }
            Part::ContentChecksum => self.enter(Part::Done, 0),
            Part::Done => {}
        }
        Ok(())
    }
}

impl<R: Read> Read for FrameBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.remaining == 0 {
            if self.part == Part::Done {
                return Ok(0);
            }
            // Only an empty block gets here.
            self.advance()?;
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining);
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "input ends inside the lz4 frame",
            ));
        }
        if matches!(self.part, Part::Magic | Part::Descriptor | Part::BlockSize) {
            let end = self.filled + got;
            self.captured[self.filled..end].copy_from_slice(&buf[..got]);
            self.filled = end;
        }
        self.remaining -= got;
        if self.remaining == 0 {
            // Interpret a completed part at once, so the end of the frame is known as soon as
            // its last byte has been read.
            self.advance()?;
        }
        Ok(got)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8]) -> Vec<u8> {
        let mut enc = frame_encoder(Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn stops_exactly_at_the_end_of_the_frame() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i / 7) as u8).collect();
        let mut input = frame(&data);
        let frame_len = input.len();
        input.extend_from_slice(b"TRAILER-BYTES");
        let mut cursor = io::Cursor::new(input);
        let mut bound = FrameBound::new(&mut cursor);
        let mut out = Vec::new();
        lz4_flex::frame::FrameDecoder::new(&mut bound)
            .read_to_end(&mut out)
            .unwrap();
        assert!(bound.is_done());
        assert_eq!(out, data);
        assert_eq!(cursor.position() as usize, frame_len);
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let input = frame(&[7u8; 100_000]);
        for cut in [0, 3, 6, 7, 11, input.len() / 2, input.len() - 1] {
            let mut bound = FrameBound::new(&input[..cut]);
            let mut out = Vec::new();
            let res = lz4_flex::frame::FrameDecoder::new(&mut bound).read_to_end(&mut out);
            assert!(res.is_err() || !bound.is_done(), "cut at {cut}");
        }
    }

    #[test]
    fn wrong_magic_is_invalid_data() {
        let mut input = frame(b"hello");
        input[0] ^= 0xff;
        let mut bound = FrameBound::new(&input[..]);
        let mut out = Vec::new();
        let err = bound.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
