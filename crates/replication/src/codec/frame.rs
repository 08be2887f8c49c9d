//! Stream frames: a `u32` type followed by the type's payload.

use std::fmt;
use std::io::{self, Write};

use litefs_ltx::TXID;

use super::wire::{put_i64, put_str, put_u32, put_u64, Cursor};
use super::{CodecError, MAX_LEASE_ID_LEN, MAX_NAME_LEN};

/// The type codes of the stream frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 1: an LTX file follows, in chunked encoding.
    Ltx,
    /// 2: the replica has been sent every database once.
    Ready,
    /// 3: the primary is closing the stream.
    End,
    /// 4: a database is gone from the primary (deprecated; LiteFS replicas ignore it).
    DropDb,
    /// 5: the primary hands its lease to this replica; the stream ends after it.
    Handoff,
    /// 6: the primary's backup high-water mark of a database.
    Hwm,
    /// 7: the primary's clock, sent when idle.
    Heartbeat,
}

impl FrameType {
    /// Every frame type, in code order.
    pub const ALL: [FrameType; 7] = [
        FrameType::Ltx,
        FrameType::Ready,
        FrameType::End,
        FrameType::DropDb,
        FrameType::Handoff,
        FrameType::Hwm,
        FrameType::Heartbeat,
    ];

    /// The type code on the wire.
    pub const fn code(self) -> u32 {
        match self {
            FrameType::Ltx => 1,
            FrameType::Ready => 2,
            FrameType::End => 3,
            FrameType::DropDb => 4,
            FrameType::Handoff => 5,
            FrameType::Hwm => 6,
            FrameType::Heartbeat => 7,
        }
    }

    /// The frame type of a wire code, or `None` for an unknown code.
    pub const fn from_code(code: u32) -> Option<FrameType> {
        match code {
            1 => Some(FrameType::Ltx),
            2 => Some(FrameType::Ready),
            3 => Some(FrameType::End),
            4 => Some(FrameType::DropDb),
            5 => Some(FrameType::Handoff),
            6 => Some(FrameType::Hwm),
            7 => Some(FrameType::Heartbeat),
            _ => None,
        }
    }

    /// LiteFS's name of the frame type (`"LTX"`, `"Ready"`, ..., `"HWM"`, `"Heartbeat"`).
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Ltx => "LTX",
            FrameType::Ready => "Ready",
            FrameType::End => "End",
            FrameType::DropDb => "DropDB",
            FrameType::Handoff => "Handoff",
            FrameType::Hwm => "HWM",
            FrameType::Heartbeat => "Heartbeat",
        }
    }

    /// "<name> frame", for error messages.
    pub(crate) const fn context(self) -> &'static str {
        match self {
            FrameType::Ltx => "LTX frame",
            FrameType::Ready => "Ready frame",
            FrameType::End => "End frame",
            FrameType::DropDb => "DropDB frame",
            FrameType::Handoff => "Handoff frame",
            FrameType::Hwm => "HWM frame",
            FrameType::Heartbeat => "Heartbeat frame",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One frame of the `/stream` response. On the wire: `u32` type code, then the payload shown on
/// each variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Frame {
    /// Type 1. Payload: `u64 size` (LiteFS always writes 0 and never reads it; this codec does
    /// the same), `u32 nameLen`, name. The LTX file follows in chunked encoding.
    Ltx {
        /// The database name.
        name: String,
    },
    /// Type 2, no payload. Sent once, after the first pass over the databases.
    Ready,
    /// Type 3, no payload. Sent (best effort) when the primary closes the stream.
    End,
    /// Type 4. Payload: `u32 nameLen`, name. Deprecated; LiteFS replicas ignore it.
    DropDb {
        /// The database name.
        name: String,
    },
    /// Type 5. Payload: `u32 len`, lease id. Sent last, then the stream ends.
    Handoff {
        /// The lease id (the Consul session id) the replica takes over.
        lease_id: String,
    },
    /// Type 6. Payload: `u64 TXID`, `u32 nameLen`, name. Sent after every LTX frame.
    Hwm {
        /// The primary's backup high-water mark.
        txid: TXID,
        /// The database name.
        name: String,
    },
    /// Type 7. Payload: `i64` milliseconds since the Unix epoch, by the primary's clock.
    Heartbeat {
        /// Milliseconds since the Unix epoch.
        timestamp_ms: i64,
    },
}

/// The longest encoded frame the decoder accepts: an LTX frame with a name of [`MAX_NAME_LEN`]
/// bytes. A [`StreamDecoder`](super::StreamDecoder) drained with `next` holds fewer bytes than
/// this.
pub const MAX_FRAME_LEN: usize = 4 + 8 + 4 + MAX_NAME_LEN;

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Ltx { .. } => FrameType::Ltx,
            Frame::Ready => FrameType::Ready,
            Frame::End => FrameType::End,
            Frame::DropDb { .. } => FrameType::DropDb,
            Frame::Handoff { .. } => FrameType::Handoff,
            Frame::Hwm { .. } => FrameType::Hwm,
            Frame::Heartbeat { .. } => FrameType::Heartbeat,
        }
    }

    /// Appends the encoded frame to `out`. Only the frame: an LTX frame's file is written after
    /// it with [`encode_chunks`](super::encode_chunks) or a [`ChunkWriter`](super::ChunkWriter).
    ///
    /// Lengths are not checked against the decoder's limits; see [`Frame::validate`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.frame_type().code());
        match self {
            Frame::Ltx { name } => {
                put_u64(out, 0);
                put_str(out, name);
            }
            Frame::Ready | Frame::End => {}
            Frame::DropDb { name } => put_str(out, name),
            Frame::Handoff { lease_id } => put_str(out, lease_id),
            Frame::Hwm { txid, name } => {
                put_u64(out, txid.get());
                put_str(out, name);
            }
            Frame::Heartbeat { timestamp_ms } => put_i64(out, *timestamp_ms),
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Writes the encoded frame to `w` in one `write_all`.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.to_bytes())
    }

    /// Checks that [`StreamDecoder`](super::StreamDecoder) would accept the frame: names of at
    /// most [`MAX_NAME_LEN`] bytes, a lease id of at most [`MAX_LEASE_ID_LEN`] bytes.
    pub fn validate(&self) -> Result<(), CodecError> {
        let name_len = |name: &str, context| {
            if name.len() > MAX_NAME_LEN {
                Err(CodecError::NameTooLong {
                    len: u32::try_from(name.len()).unwrap_or(u32::MAX),
                    context,
                })
            } else {
                Ok(())
            }
        };
        match self {
            Frame::Ltx { name } | Frame::DropDb { name } | Frame::Hwm { name, .. } => {
                name_len(name, self.frame_type().context())
            }
            Frame::Handoff { lease_id } if lease_id.len() > MAX_LEASE_ID_LEN => {
                Err(CodecError::LeaseIdTooLong {
                    len: u32::try_from(lease_id.len()).unwrap_or(u32::MAX),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Decodes the frame at the start of `buf`: `Ok(Some((frame, bytes used)))`, `Ok(None)` when
/// `buf` ends inside the frame, or the error as soon as the bytes present show one (an unknown
/// type after 4 bytes, an oversized length as soon as the length is there).
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, CodecError> {
    let mut c = Cursor::new(buf);
    let Some(code) = c.u32() else {
        return Ok(None);
    };
    let Some(ty) = FrameType::from_code(code) else {
        return Err(CodecError::UnknownFrameType(code));
    };
    let context = ty.context();
    let frame = match ty {
        FrameType::Ltx => {
            // The size field: always 0 from LiteFS, never used.
            if c.u64().is_none() {
                return Ok(None);
            }
            c.name(context)?.map(|name| Frame::Ltx { name })
        }
        FrameType::Ready => Some(Frame::Ready),
        FrameType::End => Some(Frame::End),
        FrameType::DropDb => c.name(context)?.map(|name| Frame::DropDb { name }),
        FrameType::Handoff => c
            .string(
                MAX_LEASE_ID_LEN,
                |len| CodecError::LeaseIdTooLong { len },
                |lease_id| CodecError::InvalidUtf8LeaseId { lease_id },
            )?
            .map(|lease_id| Frame::Handoff { lease_id }),
        FrameType::Hwm => match c.u64() {
            None => None,
            Some(txid) => c.name(context)?.map(|name| Frame::Hwm {
                txid: TXID::new(txid),
                name,
            }),
        },
        FrameType::Heartbeat => c
            .i64()
            .map(|timestamp_ms| Frame::Heartbeat { timestamp_ms }),
    };
    Ok(frame.map(|f| (f, c.position())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_round_trip() {
        for (i, ty) in FrameType::ALL.into_iter().enumerate() {
            assert_eq!(ty.code() as usize, i + 1);
            assert_eq!(FrameType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(FrameType::from_code(0), None);
        assert_eq!(FrameType::from_code(8), None);
        assert_eq!(FrameType::Hwm.to_string(), "HWM");
    }

    #[test]
    fn parse_needs_the_whole_frame() {
        let frame = Frame::Hwm {
            txid: TXID::new(9),
            name: "db".into(),
        };
        let bytes = frame.to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse(&bytes), Ok(Some((frame, bytes.len()))));
    }

    #[test]
    fn validate_checks_limits() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(Frame::Ltx {
            name: "x".repeat(MAX_NAME_LEN)
        }
        .validate()
        .is_ok());
        assert_eq!(
            Frame::DropDb { name: long.clone() }.validate(),
            Err(CodecError::NameTooLong {
                len: 1025,
                context: "DropDB frame"
            })
        );
        assert_eq!(
            Frame::Handoff { lease_id: long }.validate(),
            Err(CodecError::LeaseIdTooLong { len: 1025 })
        );
        assert_eq!(Frame::Ready.validate(), Ok(()));
    }

    #[test]
    fn longest_frame_fits_the_bound() {
        let frame = Frame::Ltx {
            name: "x".repeat(MAX_NAME_LEN),
        };
        assert_eq!(frame.to_bytes().len(), MAX_FRAME_LEN);
        let handoff = Frame::Handoff {
            lease_id: "x".repeat(MAX_LEASE_ID_LEN),
        };
        assert!(handoff.to_bytes().len() <= MAX_FRAME_LEN);
    }
}
