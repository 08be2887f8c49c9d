//! Sizes in bytes, written as a plain number of bytes or with a unit (`512MB`, `1GiB`, `64k`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// Bytes in each unit accepted, matched without regard to case. Decimal units (`KB`, `MB`,
/// `GB`, `TB`) are powers of 1000, binary ones (`KiB`, `MiB`, `GiB`, `TiB`, and the one-letter
/// `k`, `m`, `g`, `t`) powers of 1024.
const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tib", 1 << 40),
];

/// A size in bytes.
///
/// Parsing accepts a whole number of bytes (`1048576`) or a whole number followed by a unit,
/// with or without a space between them (`512MB`, `1 GiB`, `64k`); `0` is zero.
/// Display prints the number of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// Zero bytes.
    pub const ZERO: ByteSize = ByteSize(0);

    /// A size of `n` bytes.
    pub const fn from_bytes(n: u64) -> Self {
        ByteSize(n)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Whether this is zero (a setting that uses zero to mean "no limit").
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses a size; see the type's documentation for the accepted syntax.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        parse_size(s)
            .map(ByteSize)
            .map_err(|reason| ConfigError::InvalidSize {
                value: s.to_owned(),
                reason,
            })
    }
}

fn parse_size(orig: &str) -> Result<u64, String> {
    let s = orig.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err("not a size (examples: \"1048576\", \"512MB\", \"1GiB\")".to_owned());
    }
    let number: u64 = s[..digits].parse().map_err(|_| "out of range".to_owned())?;
    let unit = s[digits..].trim_start().to_ascii_lowercase();
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, n)| n)
            .ok_or_else(|| {
                format!(
                    "unknown unit {:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)",
                    &s[digits..]
                )
            })?
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| "out of range".to_owned())
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteSize::parse(s)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

/// Reads a size from a YAML number or string.
struct SizeVisitor;

impl<'de> serde::de::Visitor<'de> for SizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in bytes such as 536870912 or \"512MiB\"")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom(format!("invalid size {v}: negative")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
        ByteSize::parse(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> u64 {
        ByteSize::parse(s).unwrap().bytes()
    }

    #[test]
    fn parses_numbers_and_units() {
        assert_eq!(bytes("0"), 0);
        assert_eq!(bytes("1048576"), 1 << 20);
        assert_eq!(bytes("512MB"), 512_000_000);
        assert_eq!(bytes("512MiB"), 512 << 20);
        assert_eq!(bytes("1 GiB"), 1 << 30);
        assert_eq!(bytes("64k"), 64 << 10);
        assert_eq!(bytes("2g"), 2 << 30);
        assert_eq!(bytes("10b"), 10);
    }

    #[test]
    fn reads_yaml_numbers_and_strings() {
        let n: ByteSize = serde_yaml::from_str("1048576").unwrap();
        assert_eq!(n.bytes(), 1 << 20);
        let s: ByteSize = serde_yaml::from_str("\"512MiB\"").unwrap();
        assert_eq!(s.bytes(), 512 << 20);
        let bare: ByteSize = serde_yaml::from_str("64k").unwrap();
        assert_eq!(bare.bytes(), 64 << 10);
        assert!(serde_yaml::from_str::<ByteSize>("-5").is_err());
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for bad in [
            "",
            "MB",
            "-1",
            "1.5GB",
            "12 parsecs",
            "99999999999999999999",
            "20000000TB",
        ] {
            let err = ByteSize::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
