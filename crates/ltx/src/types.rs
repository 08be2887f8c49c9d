//! Value types of the format: transaction ids, positions, checksums, page numbers and sizes, node
//! ids, and the canonical text forms LiteFS uses for them.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

/// A parse error for one of the text forms in this module.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The text was not the expected number of hex digits.
    #[error("invalid {what} {text:?}: expected {expected}")]
    Invalid {
        /// What was being parsed ("txid", "checksum", ...).
        what: &'static str,
        /// The offending text.
        text: String,
        /// A description of the expected form.
        expected: &'static str,
    },
}

fn parse_hex16(what: &'static str, expected: &'static str, text: &str) -> Result<u64, ParseError> {
    let invalid = || ParseError::Invalid {
        what,
        text: text.to_owned(),
        expected,
    };
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    u64::from_str_radix(text, 16).map_err(|_| invalid())
}

/// A transaction id. Transactions of a database are numbered from 1 without gaps; `TXID::ZERO`
/// is the position of a database that has no transaction yet. Text form: 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TXID(u64);

impl TXID {
    /// The position before the first transaction.
    pub const ZERO: TXID = TXID(0);
    /// The first transaction of a database.
    pub const ONE: TXID = TXID(1);

    /// Wraps a raw transaction id.
    pub const fn new(id: u64) -> TXID {
        TXID(id)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// True for `TXID::ZERO`.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The following transaction id, or `None` on overflow.
    pub fn next(self) -> Option<TXID> {
        self.0.checked_add(1).map(TXID)
    }

    /// The preceding transaction id, or `None` for zero.
    pub fn prev(self) -> Option<TXID> {
        self.0.checked_sub(1).map(TXID)
    }
}

impl fmt::Display for TXID {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for TXID {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16("txid", "16 hex digits", s).map(TXID)
    }
}

/// A CRC-64/GO-ISO checksum with the format's flag bit (bit 63) set, or zero for "none".
/// Text form: 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum(u64);

impl Checksum {
    /// Bit 63: set on every stored checksum so that a real checksum is never zero.
    pub const FLAG: u64 = 1 << 63;
    /// No checksum (a snapshot's pre-apply checksum, an empty position).
    pub const ZERO: Checksum = Checksum(0);
    /// The rolling checksum of a database with no pages.
    pub const EMPTY_DATABASE: Checksum = Checksum(Self::FLAG);

    /// Wraps a raw value as stored in a file (no flag is added).
    pub const fn new(raw: u64) -> Checksum {
        Checksum(raw)
    }

    /// Builds a checksum from a CRC, forcing the flag bit on.
    pub const fn from_crc(crc: u64) -> Checksum {
        Checksum(crc | Self::FLAG)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// True for `Checksum::ZERO`.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True when the flag bit is set, as on every checksum the format stores.
    pub const fn has_flag(self) -> bool {
        self.0 & Self::FLAG != 0
    }

    /// Combines two page-checksum sums: XOR, then the flag forced on. XOR is its own inverse, so
    /// `sum.xor(old).xor(new)` replaces one page's contribution.
    pub const fn xor(self, other: Checksum) -> Checksum {
        Checksum((self.0 ^ other.0) | Self::FLAG)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Checksum {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16("checksum", "16 hex digits", s).map(Checksum)
    }
}

/// A database's replication position: its last transaction and the database checksum after it.
/// Text form (the `-pos` file without its newline): `%016x/%016x`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pos {
    /// The last transaction applied.
    pub txid: TXID,
    /// The rolling database checksum after that transaction.
    pub post_apply_checksum: Checksum,
}

impl Pos {
    /// The position of a database with no transaction.
    pub const ZERO: Pos = Pos {
        txid: TXID::ZERO,
        post_apply_checksum: Checksum::ZERO,
    };

    /// Builds a position.
    pub const fn new(txid: TXID, post_apply_checksum: Checksum) -> Pos {
        Pos {
            txid,
            post_apply_checksum,
        }
    }

    /// True for `Pos::ZERO`.
    pub const fn is_zero(self) -> bool {
        self.txid.is_zero() && self.post_apply_checksum.is_zero()
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.txid, self.post_apply_checksum)
    }
}

impl FromStr for Pos {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseError::Invalid {
            what: "position",
            text: s.to_owned(),
            expected: "TXID/CHECKSUM as 16 hex digits each",
        };
        let (txid, checksum) = s.split_once('/').ok_or_else(invalid)?;
        Ok(Pos {
            txid: txid.parse().map_err(|_| invalid())?,
            post_apply_checksum: checksum.parse().map_err(|_| invalid())?,
        })
    }
}

/// A page size: a power of two from 512 to 65536 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u32);

impl PageSize {
    /// The smallest page size SQLite supports.
    pub const MIN: u32 = 512;
    /// The largest page size SQLite supports.
    pub const MAX: u32 = 65536;
    /// SQLite's default page size.
    pub const DEFAULT: PageSize = PageSize(4096);

    /// Validates a page size.
    pub const fn new(size: u32) -> Option<PageSize> {
        if size >= Self::MIN && size <= Self::MAX && size.is_power_of_two() {
            Some(PageSize(size))
        } else {
            None
        }
    }

    /// The size in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as a `usize` for buffers.
    pub const fn bytes(self) -> usize {
        self.0 as usize
    }

    /// The page that holds SQLite's lock bytes (the page containing byte offset 2^30). It is never
    /// written by SQLite, never stored in an LTX file and never counted in a checksum.
    pub const fn lock_pgno(self) -> PageNum {
        match NonZeroU32::new(LOCK_BYTE_OFFSET / self.0 + 1) {
            Some(n) => PageNum(n),
            None => PageNum::ONE,
        }
    }

    /// Byte offset of a page in the database file.
    pub const fn offset_of(self, pgno: PageNum) -> u64 {
        (pgno.get() as u64 - 1) * self.0 as u64
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Offset of SQLite's PENDING lock byte; the page holding it is the lock page.
pub const LOCK_BYTE_OFFSET: u32 = 0x4000_0000;

/// A page number, counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNum(NonZeroU32);

impl PageNum {
    /// The first page (the one with the database header).
    pub const ONE: PageNum = PageNum(NonZeroU32::MIN);

    /// Validates a page number (zero is not one).
    pub const fn new(n: u32) -> Option<PageNum> {
        match NonZeroU32::new(n) {
            Some(n) => Some(PageNum(n)),
            None => None,
        }
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The following page number, or `None` on overflow.
    pub fn next(self) -> Option<PageNum> {
        self.0.checked_add(1).map(PageNum)
    }
}

impl fmt::Display for PageNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of the node that wrote an LTX file (0 when unknown). Text form, as LiteFS prints it:
/// 16 uppercase hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeId(u64);

impl NodeId {
    /// No node.
    pub const ZERO: NodeId = NodeId(0);

    /// Wraps a raw node id.
    pub const fn new(id: u64) -> NodeId {
        NodeId(id)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16("node id", "16 hex digits", s).map(NodeId)
    }
}

/// Formats the file name of an LTX file covering `min..=max`: `%016x-%016x.ltx`.
pub fn format_filename(min: TXID, max: TXID) -> String {
    format!("{min}-{max}.ltx")
}

/// Parses an LTX file name (`%016x-%016x.ltx`, lowercase hex only, as LiteFS writes it) into its
/// transaction range.
pub fn parse_filename(name: &str) -> Result<(TXID, TXID), ParseError> {
    let invalid = || ParseError::Invalid {
        what: "ltx file name",
        text: name.to_owned(),
        expected: "MIN-MAX.ltx with 16 lowercase hex digits each",
    };
    let stem = name.strip_suffix(".ltx").ok_or_else(invalid)?;
    let (min, max) = stem.split_once('-').ok_or_else(invalid)?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower_hex(min) || !lower_hex(max) {
        return Err(invalid());
    }
    let min: TXID = min.parse().map_err(|_| invalid())?;
    let max: TXID = max.parse().map_err(|_| invalid())?;
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_text_round_trip() {
        let t = TXID::new(0xd);
        assert_eq!(t.to_string(), "000000000000000d");
        assert_eq!("000000000000000d".parse::<TXID>(), Ok(t));
        assert!("d".parse::<TXID>().is_err());
        assert!("000000000000000g".parse::<TXID>().is_err());
        assert!("+00000000000000d".parse::<TXID>().is_err());
        assert_eq!(TXID::new(u64::MAX).next(), None);
        assert_eq!(TXID::ZERO.prev(), None);
    }

    #[test]
    fn pos_text_round_trip() {
        let pos: Pos = "0000000000000001/f630f5ae3060002c".parse().unwrap();
        assert_eq!(pos.txid, TXID::ONE);
        assert_eq!(pos.post_apply_checksum, Checksum::new(0xf630f5ae3060002c));
        assert_eq!(pos.to_string(), "0000000000000001/f630f5ae3060002c");
        assert_eq!(pos.to_string().len(), 33);
        for bad in [
            "",
            "0000000000000001",
            "0000000000000001/",
            "0000000000000001/f630f5ae3060002c/",
            "000000000000001/f630f5ae3060002c",
        ] {
            let err = bad.parse::<Pos>().unwrap_err();
            assert!(err.to_string().contains("position"), "{err}");
        }
    }

    #[test]
    fn filenames() {
        assert_eq!(
            format_filename(TXID::new(1), TXID::new(0x1f)),
            "0000000000000001-000000000000001f.ltx"
        );
        assert_eq!(
            parse_filename("0000000000000001-000000000000001f.ltx"),
            Ok((TXID::new(1), TXID::new(0x1f)))
        );
        for bad in [
            "0000000000000001-000000000000001F.ltx",
            "0000000000000001-000000000000001f.ltx.tmp",
            "0000000000000001_000000000000001f.ltx",
            "1-2.ltx",
            "database",
        ] {
            assert!(parse_filename(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_sizes_and_lock_page() {
        assert!(PageSize::new(4096).is_some());
        assert!(PageSize::new(65536).is_some());
        for bad in [0, 256, 1000, 131072] {
            assert!(PageSize::new(bad).is_none(), "{bad}");
        }
        assert_eq!(PageSize::DEFAULT.lock_pgno().get(), 262145);
        assert_eq!(PageSize::new(512).unwrap().lock_pgno().get(), 2097153);
        assert_eq!(PageSize::new(65536).unwrap().lock_pgno().get(), 16385);
    }

    #[test]
    fn checksum_xor_keeps_flag() {
        let a = Checksum::from_crc(0x1234);
        assert!(a.has_flag());
        assert_eq!(
            Checksum::EMPTY_DATABASE.xor(a).xor(a),
            Checksum::EMPTY_DATABASE
        );
        assert_eq!(NodeId::new(0xabc).to_string(), "0000000000000ABC");
    }
}
