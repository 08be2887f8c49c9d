//! Streaming LTX writer.

use std::io::{self, Write};

use lz4_flex::frame::FrameEncoder;

use crate::checksum::{checksum_page, Digest, RollingChecksum, CRC64};
use crate::header::{Header, HeaderError, Trailer};
use crate::pages::{PageOrder, PageOrderError};
use crate::types::{Checksum, PageNum};

/// Why a file could not be encoded.
#[derive(thiserror::Error, Debug)]
pub enum EncodeError {
    /// The header breaks a format rule.
    #[error("encode ltx header")]
    Header(#[source] HeaderError),
    /// A page buffer of the wrong length.
    #[error("encode page {pgno}: {len} bytes given, page size is {page_size}")]
    PageLength {
        /// The page.
        pgno: PageNum,
        /// The buffer length.
        len: usize,
        /// The header's page size.
        page_size: u32,
    },
    /// A page that may not come next.
    #[error("encode page")]
    PageOrder(#[source] PageOrderError),
    /// The post-apply checksum given does not match the pages of a snapshot or deletion.
    #[error(
        "post-apply checksum {given} does not match {computed} computed from the file's pages"
    )]
    PostApplyChecksum {
        /// What the caller passed.
        given: Checksum,
        /// What the pages give.
        computed: Checksum,
    },
    /// The trailer breaks a format rule.
    #[error("encode ltx trailer")]
    Trailer(#[source] HeaderError),
    /// Writing failed.
    #[error("write ltx file")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
enum Body<W: Write> {
    Plain(W),
    Lz4(FrameEncoder<W>),
}

impl<W: Write> Body<W> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Body::Plain(w) => w.write_all(buf),
            Body::Lz4(w) => w.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Body::Plain(w) => Ok(w),
            Body::Lz4(w) => w.finish().map_err(io::Error::from),
        }
    }
}

/// Writes one LTX file to `W`: the header at construction, then pages in order with
/// [`Encoder::encode_page`], then the trailer with [`Encoder::finish`]. Nothing is buffered beyond
/// one LZ4 block, so a snapshot of any size streams.
///
/// ```
/// use litefs_ltx::{Decoder, Encoder, Header, PageNum, PageSize, TXID, checksum_page, Checksum};
///
/// let page = vec![0u8; 4096];
/// let header = Header::new(PageSize::DEFAULT, 1, TXID::ONE, TXID::ONE);
/// let mut enc = Encoder::new(Vec::new(), &header)?;
/// enc.encode_page(PageNum::ONE, &page)?;
/// let post = Checksum::EMPTY_DATABASE.xor(checksum_page(PageNum::ONE, &page));
/// let (trailer, bytes) = enc.finish(post)?;
/// assert_eq!(bytes.len(), 100 + 4 + 4096 + 4 + 16);
/// let mut dec = Decoder::new(&bytes[..])?;
/// assert_eq!(dec.finish()?, trailer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Encoder<W: Write> {
    header: Header,
    body: Body<W>,
    digest: Digest,
    order: PageOrder,
    sum: RollingChecksum,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it.
    pub fn new(mut w: W, header: &Header) -> Result<Self, EncodeError> {
        header.validate().map_err(EncodeError::Header)?;
        let bytes = header.to_bytes();
        w.write_all(&bytes)?;
        let mut digest = CRC64.digest();
        digest.update(&bytes);
        let body = if header.flags.is_compressed() {
            Body::Lz4(crate::lz4::frame_encoder(w))
        } else {
            Body::Plain(w)
        };
        Ok(Encoder {
            header: *header,
            body,
            digest,
            order: PageOrder::new(header),
            sum: RollingChecksum::new(),
        })
    }

    /// The header this file was started with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Writes one page. Pages come in ascending order, within the header's commit, never the lock
    /// page; a snapshot writes every page.
    pub fn encode_page(&mut self, pgno: PageNum, data: &[u8]) -> Result<(), EncodeError> {
        if data.len() != self.header.page_size.bytes() {
            return Err(EncodeError::PageLength {
                pgno,
                len: data.len(),
                page_size: self.header.page_size.get(),
            });
        }
        self.order
            .push(pgno.get())
            .map_err(EncodeError::PageOrder)?;
        let page_header = pgno.get().to_be_bytes();
        self.body.write_all(&page_header)?;
        self.body.write_all(data)?;
        self.digest.update(&page_header);
        self.digest.update(data);
        if self.header.is_snapshot() {
            self.sum.toggle(checksum_page(pgno, data));
        }
        Ok(())
    }

    /// Ends the page block, writes the trailer and returns it with the writer (flushed, not
    /// synced). For a snapshot or a deletion the post-apply checksum must match the file's pages.
    pub fn finish(mut self, post_apply_checksum: Checksum) -> Result<(Trailer, W), EncodeError> {
        self.order.finish().map_err(EncodeError::PageOrder)?;
        if self.header.is_snapshot() || self.header.commit == 0 {
            let computed = self.sum.get();
            if computed != post_apply_checksum {
                return Err(EncodeError::PostApplyChecksum {
                    given: post_apply_checksum,
                    computed,
                });
            }
        }
        let end = [0u8; 4];
        self.body.write_all(&end)?;
        self.digest.update(&end);
        let mut w = self.body.finish()?;
        self.digest.update(&post_apply_checksum.get().to_be_bytes());
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: Checksum::from_crc(self.digest.finalize()),
        };
        trailer.validate().map_err(EncodeError::Trailer)?;
        w.write_all(&trailer.to_bytes())?;
        w.flush()?;
        Ok((trailer, w))
    }
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("header", &self.header)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}
