//! Streaming LTX reader with full validation.

use std::io::{self, Read};

use lz4_flex::frame::FrameDecoder;

use crate::checksum::{checksum_page, Digest, RollingChecksum, CRC64};
use crate::header::{Header, HeaderError, Trailer, HEADER_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE};
use crate::lz4::FrameBound;
use crate::pages::{PageOrder, PageOrderError};
use crate::types::{Checksum, PageNum};

/// Why a file could not be decoded. Every variant names the part of the file it concerns.
#[derive(thiserror::Error, Debug)]
pub enum DecodeError {
    /// The input ended early.
    #[error("ltx file truncated: input ends inside the {0}")]
    Truncated(&'static str),
    /// The header is invalid.
    #[error("invalid ltx header")]
    Header(#[source] HeaderError),
    /// A page that may not come next (out of order, past commit, the lock page, ...).
    #[error("invalid ltx page block")]
    PageOrder(#[source] PageOrderError),
    /// The caller's page buffer is not one page long.
    #[error("page buffer is {len} bytes, page size is {page_size}")]
    BufferLength {
        /// The buffer length.
        len: usize,
        /// The header's page size.
        page_size: u32,
    },
    /// The compressed body is not a valid LZ4 frame.
    #[error("invalid lz4 frame in ltx body (reading the {at})")]
    Lz4 {
        /// What was being read.
        at: &'static str,
        /// The decompressor's error.
        #[source]
        source: io::Error,
    },
    /// The LZ4 frame holds bytes after the end of the page block.
    #[error("lz4 frame holds data after the end of the page block")]
    DataAfterPages,
    /// Bytes after the trailer.
    #[error("unexpected data after the ltx trailer")]
    TrailingData,
    /// The trailer is invalid.
    #[error("invalid ltx trailer")]
    Trailer(#[source] HeaderError),
    /// The file checksum does not match the file's bytes.
    #[error("file checksum mismatch: trailer says {stored}, file hashes to {computed}")]
    FileChecksum {
        /// The trailer's value.
        stored: Checksum,
        /// The checksum of the bytes read.
        computed: Checksum,
    },
    /// A snapshot or deletion whose pages do not give its post-apply checksum.
    #[error("post-apply checksum mismatch: trailer says {stored}, pages give {computed}")]
    PostApplyChecksum {
        /// The trailer's value.
        stored: Checksum,
        /// The checksum of the pages.
        computed: Checksum,
    },
    /// Reading failed.
    #[error("read ltx {at}")]
    Io {
        /// What was being read.
        at: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
enum Body<R: Read> {
    Plain(R),
    Lz4(Box<FrameDecoder<FrameBound<R>>>),
}

impl<R: Read> Body<R> {
    fn read_exact(&mut self, buf: &mut [u8], at: &'static str) -> Result<(), DecodeError> {
        let res = match self {
            Body::Plain(r) => r.read_exact(buf),
            Body::Lz4(r) => r.read_exact(buf),
        };
        res.map_err(|e| self.error(e, at))
    }

    fn error(&self, e: io::Error, at: &'static str) -> DecodeError {
        match (self, e.kind()) {
            (_, io::ErrorKind::UnexpectedEof) => DecodeError::Truncated(at),
            (Body::Lz4(_), io::ErrorKind::InvalidData) => DecodeError::Lz4 { at, source: e },
            _ => DecodeError::Io { at, source: e },
        }
    }

    /// Checks that the body has nothing after the page block and returns the underlying reader,
    /// positioned at the trailer.
    fn finish(self) -> Result<R, DecodeError> {
        match self {
            Body::Plain(r) => Ok(r),
            Body::Lz4(mut r) => {
                let mut one = [0u8; 1];
                match r.read(&mut one) {
                    Ok(0) => {}
                    Ok(_) => return Err(DecodeError::DataAfterPages),
                    Err(e) => return Err(Body::Lz4(r).error(e, "end of the lz4 frame")),
                }
                let bound = r.into_inner();
                if !bound.is_done() {
                    return Err(DecodeError::Truncated("lz4 frame"));
                }
                Ok(bound.into_inner())
            }
        }
    }
}

/// Reads one LTX file from `R`: the header at construction, pages one at a time with
/// [`Decoder::next_page`], and the trailer with [`Decoder::finish`], which also verifies the file
/// checksum (and, for a snapshot or deletion, the post-apply checksum). A file is only known to be
/// valid once `finish` succeeds; callers that apply pages must do so in a way they can undo.
pub struct Decoder<R: Read> {
    header: Header,
    body: Option<Body<R>>,
    digest: Digest,
    order: PageOrder,
    sum: RollingChecksum,
    pages_done: bool,
    page_count: u32,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(mut r: R) -> Result<Self, DecodeError> {
        let mut bytes = [0u8; HEADER_SIZE];
        read_part(&mut r, &mut bytes, "header")?;
        let header = Header::from_bytes(&bytes).map_err(DecodeError::Header)?;
        let mut digest = CRC64.digest();
        digest.update(&bytes);
        let body = if header.flags.is_compressed() {
            Body::Lz4(Box::new(FrameDecoder::new(FrameBound::new(r))))
        } else {
            Body::Plain(r)
        };
        Ok(Decoder {
            header,
            body: Some(body),
            digest,
            order: PageOrder::new(&header),
            sum: RollingChecksum::new(),
            pages_done: false,
            page_count: 0,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The number of pages read so far.
    pub fn page_count(&self) -> u32 {
        self.page_count
    }

    /// Reads the next page into `buf` (exactly one page long) and returns its number, or `None`
    /// at the end of the page block.
    pub fn next_page(&mut self, buf: &mut [u8]) -> Result<Option<PageNum>, DecodeError> {
        if self.pages_done {
            return Ok(None);
        }
        if buf.len() != self.header.page_size.bytes() {
            return Err(DecodeError::BufferLength {
                len: buf.len(),
                page_size: self.header.page_size.get(),
            });
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let mut page_header = [0u8; PAGE_HEADER_SIZE];
        body.read_exact(&mut page_header, "page header")?;
        self.digest.update(&page_header);
        let pgno = u32::from_be_bytes(page_header);
        if pgno == 0 {
            self.pages_done = true;
            return Ok(None);
        }
        let pgno = self.order.push(pgno).map_err(DecodeError::PageOrder)?;
        body.read_exact(buf, "page data")?;
        self.digest.update(buf);
        if self.header.is_snapshot() {
            self.sum.toggle(checksum_page(pgno, buf));
        }
        self.page_count += 1;
        Ok(Some(pgno))
    }

    /// Reads any pages left, then the trailer, and verifies the whole file: its checksum, that
    /// nothing follows the trailer, and for a snapshot or deletion the post-apply checksum.
    pub fn finish(&mut self) -> Result<Trailer, DecodeError> {
        let mut scratch = Vec::new();
        while !self.pages_done {
            scratch.resize(self.header.page_size.bytes(), 0);
            self.next_page(&mut scratch)?;
        }
        self.order.finish().map_err(DecodeError::PageOrder)?;
        let Some(body) = self.body.take() else {
            return Err(DecodeError::Truncated("trailer"));
        };
        let mut r = body.finish()?;
        let mut bytes = [0u8; TRAILER_SIZE];
        read_part(&mut r, &mut bytes, "trailer")?;
        self.digest.update(&bytes[..8]);
        let computed = Checksum::from_crc(self.digest.clone().finalize());
        let stored = Checksum::new(u64::from_be_bytes(
            bytes[8..16].try_into().unwrap_or_default(),
        ));
        if stored != computed {
            return Err(DecodeError::FileChecksum { stored, computed });
        }
        let trailer = Trailer::from_bytes(&bytes).map_err(DecodeError::Trailer)?;
        let mut one = [0u8; 1];
        loop {
            match r.read(&mut one) {
                Ok(0) => break,
                Ok(_) => return Err(DecodeError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(DecodeError::Io {
                        at: "end of file",
                        source: e,
                    })
                }
            }
        }
        if self.header.is_snapshot() || self.header.commit == 0 {
            let computed = self.sum.get();
            if computed != trailer.post_apply_checksum {
                return Err(DecodeError::PostApplyChecksum {
                    stored: trailer.post_apply_checksum,
                    computed,
                });
            }
        }
        Ok(trailer)
    }
}

/// Reads one fixed-size part of the file that is never compressed.
fn read_part<R: Read>(r: &mut R, buf: &mut [u8], at: &'static str) -> Result<(), DecodeError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DecodeError::Truncated(at),
        _ => DecodeError::Io { at, source: e },
    })
}

/// Reads a whole file and checks it, returning its header, trailer and page count.
pub fn verify<R: Read>(r: R) -> Result<(Header, Trailer, u32), DecodeError> {
    let mut dec = Decoder::new(r)?;
    let trailer = dec.finish()?;
    Ok((dec.header, trailer, dec.page_count))
}

impl<R: Read> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("header", &self.header)
            .field("page_count", &self.page_count)
            .field("pages_done", &self.pages_done)
            .finish_non_exhaustive()
    }
}
