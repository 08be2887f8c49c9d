//! The LTX file format, version 1, byte-compatible with the files LiteFS 0.5 writes.
//!
//! An LTX file records one or more transactions of one SQLite database as the pages they wrote:
//!
//! ```text
//! [ header 100 B ][ (page header 4 B + page)* + zero page header 4 B ][ trailer 16 B ]
//!                  \__ one LZ4 frame when the header has flag 0x1 ___/
//! ```
//!
//! Checksums are CRC-64/GO-ISO with bit 63 set: per page over the big-endian page number and the
//! page, per database as the XOR of its page checksums (never counting the lock page), and per
//! file over the uncompressed bytes up to the last 8 bytes of the trailer.
//!
//! Layout: [`types`] (TXID, positions, checksums, names), [`header`] (fixed-size parts),
//! [`Encoder`] and [`Decoder`] (streaming, over `io::Write` / `io::Read`), [`checksum`], and
//! [`dbfile`] (tools over plain SQLite database files: checksum, snapshot, apply).

pub mod checksum;
pub mod dbfile;
mod decoder;
mod encoder;
pub mod header;
mod lz4;
mod pages;
pub mod types;

pub use checksum::{checksum_database, checksum_page, RollingChecksum};
pub use decoder::{verify, DecodeError, Decoder};
pub use encoder::{EncodeError, Encoder};
pub use header::{Flags, Header, HeaderError, Trailer};
pub use pages::PageOrderError;
pub use types::{
    format_filename, parse_filename, Checksum, NodeId, PageNum, PageSize, ParseError, Pos, TXID,
};
