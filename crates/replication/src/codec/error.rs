//! Errors of the wire codec.

use super::{MAX_LEASE_ID_LEN, MAX_NAME_LEN, MAX_POS_MAP_COUNT};

/// Why bytes are not a valid pos map or stream. Every variant says what was wrong and where.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// A frame type other than 1 to 7.
    #[error("unknown stream frame type {0}")]
    UnknownFrameType(u32),
    /// A database name longer than [`MAX_NAME_LEN`].
    #[error(
        "database name of {len} bytes in {context} is longer than the limit of {MAX_NAME_LEN}"
    )]
    NameTooLong {
        /// The declared length.
        len: u32,
        /// Where the name was (`"LTX frame"`, `"pos map"`, ...).
        context: &'static str,
    },
    /// A database name that is not valid UTF-8.
    #[error("database name {name:?} in {context} is not valid UTF-8")]
    InvalidUtf8Name {
        /// The name, with invalid sequences replaced by U+FFFD.
        name: String,
        /// Where the name was.
        context: &'static str,
    },
    /// A handoff lease id longer than [`MAX_LEASE_ID_LEN`].
    #[error("handoff lease id of {len} bytes is longer than the limit of {MAX_LEASE_ID_LEN}")]
    LeaseIdTooLong {
        /// The declared length.
        len: u32,
    },
    /// A handoff lease id that is not valid UTF-8.
    #[error("handoff lease id {lease_id:?} is not valid UTF-8")]
    InvalidUtf8LeaseId {
        /// The lease id, with invalid sequences replaced by U+FFFD.
        lease_id: String,
    },
    /// The input ended inside a frame, a chunked LTX body or a pos map.
    #[error("truncated input: it ends inside the {0}")]
    Truncated(&'static str),
    /// A pos map declaring more than [`MAX_POS_MAP_COUNT`] databases.
    #[error("pos map count {count} is larger than the limit of {MAX_POS_MAP_COUNT}")]
    PosMapCountTooLarge {
        /// The declared count.
        count: u32,
    },
    /// Bytes after the last entry of a pos map.
    #[error("pos map has {0} trailing bytes after its last entry")]
    PosMapTrailingBytes(usize),
    /// A pos map naming one database twice.
    #[error("pos map names database {0:?} twice")]
    PosMapDuplicateName(String),
    /// [`StreamDecoder::finish`](super::StreamDecoder::finish) was called while fed bytes still
    /// held events that `next` had not returned.
    #[error("{0} fed bytes not yet decoded: call next() until it returns None before finish()")]
    Undecoded(usize),
}
