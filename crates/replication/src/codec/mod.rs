//! The wire format of LiteFS 0.5's `/stream` endpoint: the pos-map request body, the stream
//! frames, and the chunked encoding of the LTX files that follow LTX frames. All integers are
//! big-endian.
//!
//! ```text
//! pos map:  u32 count, then per database sorted by name:
//!           u32 nameLen, name, u64 TXID, u64 PostApplyChecksum
//! frame:    u32 type, then the type's payload (see [`Frame`])
//! chunked:  (u16 len (1..=65535), len bytes)*, u16 0
//! ```
//!
//! Encoding is plain functions over `Vec<u8>` or `io::Write`; decoding is [`PosMap::decode`] for
//! a whole request body and the incremental [`StreamDecoder`] for the response stream.

mod chunk;
mod decoder;
mod error;
mod frame;
mod posmap;
mod wire;

pub use chunk::{encode_chunks, ChunkWriter};
pub use decoder::{Event, StreamDecoder};
pub use error::CodecError;
pub use frame::{Frame, FrameType, MAX_FRAME_LEN};
pub use posmap::PosMap;

/// The longest database name accepted, in bytes (LiteFS itself sets no limit).
pub const MAX_NAME_LEN: usize = 1024;

/// The longest handoff lease id accepted, in bytes (a Consul session id is 36).
pub const MAX_LEASE_ID_LEN: usize = 1024;

/// The largest database count accepted in a pos map.
pub const MAX_POS_MAP_COUNT: u32 = 1 << 20;

/// The largest chunk of a chunked LTX body, in bytes (`u16::MAX`; length 0 ends the body).
pub const MAX_CHUNK_LEN: usize = u16::MAX as usize;
