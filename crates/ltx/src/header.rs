//! The fixed-size parts of an LTX file: the 100-byte header, the 4-byte page header and the
//! 16-byte trailer, with their validation rules. All integers are big-endian.

use crate::types::{Checksum, NodeId, PageNum, PageSize, TXID};

/// Size of the file header.
pub const HEADER_SIZE: usize = 100;
/// Size of a page header.
pub const PAGE_HEADER_SIZE: usize = 4;
/// Size of the trailer.
pub const TRAILER_SIZE: usize = 16;
/// The file's first four bytes. Version 1 is implied: the format has no version field.
pub const MAGIC: [u8; 4] = *b"LTX1";

/// Header flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(u32);

impl Flags {
    /// The body (page headers, pages and the terminating page header) is one LZ4 frame.
    pub const COMPRESS_LZ4: Flags = Flags(0x1);
    /// Every flag version 1 defines.
    pub const MASK: u32 = 0x1;

    /// No flag.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// Validates raw flags.
    pub const fn from_bits(bits: u32) -> Option<Flags> {
        if bits & !Self::MASK == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The raw value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when the body is LZ4-compressed.
    pub const fn is_compressed(self) -> bool {
        self.contains(Self::COMPRESS_LZ4)
    }
}

/// Why a header or trailer is not valid.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file does not start with `LTX1`.
    #[error("not an ltx file: magic is {0:02x?}, expected \"LTX1\"")]
    Magic([u8; 4]),
    /// Flags outside the version-1 mask.
    #[error("invalid header flags {0:#x}: version 1 only defines 0x1 (lz4)")]
    Flags(u32),
    /// Page size not a power of two in 512..=65536.
    #[error("invalid page size {0}: must be a power of two from 512 to 65536")]
    PageSize(u32),
    /// Zero transaction id.
    #[error("invalid transaction range: min txid {min} and max txid {max} must be non-zero")]
    ZeroTxid {
        /// Minimum transaction id.
        min: TXID,
        /// Maximum transaction id.
        max: TXID,
    },
    /// `min_txid > max_txid`.
    #[error("invalid transaction range: min txid {min} is after max txid {max}")]
    TxidOrder {
        /// Minimum transaction id.
        min: TXID,
        /// Maximum transaction id.
        max: TXID,
    },
    /// Negative WAL offset or size.
    #[error("invalid wal fields: offset {offset} and size {size} must not be negative")]
    WalNegative {
        /// WAL offset.
        offset: i64,
        /// WAL size.
        size: i64,
    },
    /// Only one of WAL offset and size is set, or salts without either.
    #[error(
        "invalid wal fields: offset {offset}, size {size}, salts {salt1:#x}/{salt2:#x} \
         (offset and size are both zero or both set; salts need both)"
    )]
    WalInconsistent {
        /// WAL offset.
        offset: i64,
        /// WAL size.
        size: i64,
        /// WAL salt 1.
        salt1: u32,
        /// WAL salt 2.
        salt2: u32,
    },
    /// A snapshot (min txid 1) with a pre-apply checksum.
    #[error("invalid snapshot header: pre-apply checksum must be zero, found {0}")]
    SnapshotPreApply(Checksum),
    /// An incremental file without a flagged pre-apply checksum.
    #[error("invalid header: pre-apply checksum {0} of an incremental file must have bit 63 set")]
    PreApplyChecksum(Checksum),
    /// A post-apply checksum without its flag bit.
    #[error("invalid trailer: post-apply checksum {0} must have bit 63 set")]
    PostApplyChecksum(Checksum),
    /// A file checksum without its flag bit.
    #[error("invalid trailer: file checksum {0} must have bit 63 set")]
    FileChecksum(Checksum),
    /// Non-zero reserved bytes.
    #[error("invalid header: reserved bytes 80..100 must be zero")]
    Reserved,
}

/// The 100-byte LTX header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Flags (compression).
    pub flags: Flags,
    /// Page size of the database.
    pub page_size: PageSize,
    /// Size of the database in pages after this file is applied; 0 means the database was deleted.
    pub commit: u32,
    /// First transaction in the file; 1 makes the file a snapshot.
    pub min_txid: TXID,
    /// Last transaction in the file; equal to `min_txid` for a single transaction.
    pub max_txid: TXID,
    /// Milliseconds since the Unix epoch, from the writer's clock.
    pub timestamp: i64,
    /// Database checksum before the file is applied; zero for a snapshot.
    pub pre_apply_checksum: Checksum,
    /// Offset in the source WAL where this transaction's frames start (0 if not from a WAL).
    pub wal_offset: i64,
    /// Length of this transaction's WAL frames (0 if not from a WAL).
    pub wal_size: i64,
    /// Salt 1 of the source WAL header, or 0.
    pub wal_salt1: u32,
    /// Salt 2 of the source WAL header, or 0.
    pub wal_salt2: u32,
    /// The node that wrote the file, or zero.
    pub node_id: NodeId,
}

impl Header {
    /// A header for one transaction (or a snapshot if `txid` is 1) with no WAL fields.
    pub fn new(page_size: PageSize, commit: u32, min_txid: TXID, max_txid: TXID) -> Header {
        Header {
            flags: Flags::empty(),
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp: 0,
            pre_apply_checksum: Checksum::ZERO,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: NodeId::ZERO,
        }
    }

    /// True if the file holds every page of the database (its first transaction is 1).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == TXID::ONE
    }

    /// The page that must never appear in the file.
    pub fn lock_pgno(&self) -> PageNum {
        self.page_size.lock_pgno()
    }

    /// Checks the rules every header obeys (beyond what the types already guarantee).
    pub fn validate(&self) -> Result<(), HeaderError> {
        if self.min_txid.is_zero() || self.max_txid.is_zero() {
            return Err(HeaderError::ZeroTxid {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        if self.min_txid > self.max_txid {
            return Err(HeaderError::TxidOrder {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return Err(HeaderError::WalNegative {
                offset: self.wal_offset,
                size: self.wal_size,
            });
        }
        let has_salt = self.wal_salt1 != 0 || self.wal_salt2 != 0;
        if (self.wal_offset == 0) != (self.wal_size == 0) || (has_salt && self.wal_offset == 0) {
            return Err(HeaderError::WalInconsistent {
                offset: self.wal_offset,
                size: self.wal_size,
                salt1: self.wal_salt1,
                salt2: self.wal_salt2,
            });
        }
        if self.is_snapshot() {
            if !self.pre_apply_checksum.is_zero() {
                return Err(HeaderError::SnapshotPreApply(self.pre_apply_checksum));
            }
        } else if !self.pre_apply_checksum.has_flag() {
            return Err(HeaderError::PreApplyChecksum(self.pre_apply_checksum));
        }
        Ok(())
    }

    /// Serialises the header.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.flags.bits().to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.get().to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.get().to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.get().to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.get().to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.get().to_be_bytes());
        b
    }

    /// Parses and validates a header.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Result<Header, HeaderError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        let flags = be_u32(b, 4);
        let flags = Flags::from_bits(flags).ok_or(HeaderError::Flags(flags))?;
        let page_size = be_u32(b, 8);
        let page_size = PageSize::new(page_size).ok_or(HeaderError::PageSize(page_size))?;
        if b[80..].iter().any(|&x| x != 0) {
            return Err(HeaderError::Reserved);
        }
        let header = Header {
            flags,
            page_size,
            commit: be_u32(b, 12),
            min_txid: TXID::new(be_u64(b, 16)),
            max_txid: TXID::new(be_u64(b, 24)),
            timestamp: be_u64(b, 32) as i64,
            pre_apply_checksum: Checksum::new(be_u64(b, 40)),
            wal_offset: be_u64(b, 48) as i64,
            wal_size: be_u64(b, 56) as i64,
            wal_salt1: be_u32(b, 64),
            wal_salt2: be_u32(b, 68),
            node_id: NodeId::new(be_u64(b, 72)),
        };
        header.validate()?;
        Ok(header)
    }
}

/// The 16-byte trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Database checksum after the file is applied.
    pub post_apply_checksum: Checksum,
    /// Checksum of the uncompressed file up to (not including) this field.
    pub file_checksum: Checksum,
}

impl Trailer {
    /// Checks that both checksums carry the flag bit.
    pub fn validate(&self) -> Result<(), HeaderError> {
        if !self.post_apply_checksum.has_flag() {
            return Err(HeaderError::PostApplyChecksum(self.post_apply_checksum));
        }
        if !self.file_checksum.has_flag() {
            return Err(HeaderError::FileChecksum(self.file_checksum));
        }
        Ok(())
    }

    /// Serialises the trailer.
    pub fn to_bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.get().to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.get().to_be_bytes());
        b
    }

    /// Parses and validates a trailer.
    pub fn from_bytes(b: &[u8; TRAILER_SIZE]) -> Result<Trailer, HeaderError> {
        let trailer = Trailer {
            post_apply_checksum: Checksum::new(be_u64(b, 0)),
            file_checksum: Checksum::new(be_u64(b, 8)),
        };
        trailer.validate()?;
        Ok(trailer)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incremental() -> Header {
        let mut h = Header::new(PageSize::DEFAULT, 10, TXID::new(2), TXID::new(2));
        h.pre_apply_checksum = Checksum::from_crc(0x42);
        h
    }

    #[test]
    fn header_round_trip() {
        let mut h = incremental();
        h.flags = Flags::COMPRESS_LZ4;
        h.timestamp = 1_700_000_000_000;
        h.wal_offset = 32;
        h.wal_size = 4120;
        h.wal_salt1 = 7;
        h.wal_salt2 = 9;
        h.node_id = NodeId::new(0xfeed);
        assert_eq!(Header::from_bytes(&h.to_bytes()), Ok(h));
    }

    #[test]
    fn header_rules() {
        let bytes = |f: &dyn Fn(&mut [u8; HEADER_SIZE])| {
            let mut b = incremental().to_bytes();
            f(&mut b);
            Header::from_bytes(&b)
        };
        assert_eq!(bytes(&|b| b[0] = b'X'), Err(HeaderError::Magic(*b"XTX1")));
        assert_eq!(bytes(&|b| b[7] = 2), Err(HeaderError::Flags(2)));
        assert_eq!(bytes(&|b| b[10] = 0x11), Err(HeaderError::PageSize(0x1100)));
        assert!(matches!(
            bytes(&|b| b[23] = 3),
            Err(HeaderError::TxidOrder { .. })
        ));
        assert!(matches!(
            bytes(&|b| b[31] = 0),
            Err(HeaderError::ZeroTxid { .. })
        ));
        assert!(matches!(
            bytes(&|b| b[55] = 1),
            Err(HeaderError::WalInconsistent { .. })
        ));
        assert!(matches!(
            bytes(&|b| b[67] = 1),
            Err(HeaderError::WalInconsistent { .. })
        ));
        assert!(matches!(
            bytes(&|b| b[48] = 0x80),
            Err(HeaderError::WalNegative { .. })
        ));
        assert!(matches!(
            bytes(&|b| b[40] = 0),
            Err(HeaderError::PreApplyChecksum(_))
        ));
        assert_eq!(bytes(&|b| b[99] = 1), Err(HeaderError::Reserved));
        let mut snap = Header::new(PageSize::DEFAULT, 1, TXID::ONE, TXID::ONE);
        snap.pre_apply_checksum = Checksum::from_crc(1);
        assert!(matches!(
            snap.validate(),
            Err(HeaderError::SnapshotPreApply(_))
        ));
    }

    #[test]
    fn trailer_rules() {
        let t = Trailer {
            post_apply_checksum: Checksum::from_crc(1),
            file_checksum: Checksum::from_crc(2),
        };
        assert_eq!(Trailer::from_bytes(&t.to_bytes()), Ok(t));
        let mut b = t.to_bytes();
        b[0] = 0;
        assert!(matches!(
            Trailer::from_bytes(&b),
            Err(HeaderError::PostApplyChecksum(_))
        ));
        let mut b = t.to_bytes();
        b[8] = 0;
        assert!(matches!(
            Trailer::from_bytes(&b),
            Err(HeaderError::FileChecksum(_))
        ));
    }
}
