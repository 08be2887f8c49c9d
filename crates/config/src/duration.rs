//! Go-style durations (`10s`, `1m30s`, `500ms`, `1.5h`), as `time.ParseDuration` reads them
//! and `time.Duration.String` prints them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// Nanoseconds in each unit Go accepts, longest spelling first where one is a prefix of another.
const UNITS: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // U+00B5 MICRO SIGN, what Go prints
    ("\u{3bc}s", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The largest duration Go can represent (`math.MaxInt64` nanoseconds, about 292 years).
const MAX_NANOS: u64 = i64::MAX as u64;

/// A non-negative span of time written the way Go writes durations.
///
/// Parsing accepts everything Go's `time.ParseDuration` accepts (`300ms`, `1.5h`, `2h45m`,
/// `100us`, `100µs`, `0`, an optional leading `+`) except negative values, which no LiteFS
/// setting can use. Display prints Go's canonical form (`1h30m0s`, `1m0s`, `10s`, `500ms`,
/// `0s`), which parses back to the same value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// The zero duration (`0s`).
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    /// Wraps a standard library duration.
    pub const fn from_std(d: std::time::Duration) -> Self {
        Duration(d)
    }

    /// The standard library duration this value holds.
    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Whether this is the zero duration (several settings use zero to mean "disabled").
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Parses a Go duration string; see the type's documentation for the accepted syntax.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        parse_go_duration(s)
            .map(|nanos| Duration(std::time::Duration::from_nanos(nanos)))
            .map_err(|reason| ConfigError::InvalidDuration {
                value: s.to_owned(),
                reason,
            })
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

/// Parses Go's `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` into nanoseconds, following the steps of
/// `time.ParseDuration` so that the same inputs succeed and give the same values.
fn parse_go_duration(orig: &str) -> Result<u64, String> {
    let invalid = || "not a Go duration (examples: \"10s\", \"1m30s\", \"500ms\")".to_owned();
    let mut s = orig;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }

    let mut total: u64 = 0;
    while !s.is_empty() {
        let bytes = s.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }

        // Integer part. Go rejects a run of digits that overflows 2^63.
        let int_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &b in &bytes[..int_len] {
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .filter(|&v| v <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        s = &s[int_len..];

        // Fraction part. Go keeps consuming digits after it stops accumulating them.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            let mut overflow = false;
            for &b in s.as_bytes().iter().take_while(|b| b.is_ascii_digit()) {
                frac_len += 1;
                if overflow {
                    continue;
                }
                match frac
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                {
                    Some(v) if v <= 1 << 63 => {
                        frac = v;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }

        // Unit: everything up to the next digit or dot.
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err("missing unit (use ns, us, ms, s, m or h)".to_owned());
        }
        let unit_str = &s[..unit_len];
        s = &s[unit_len..];
        let unit = UNITS
            .iter()
            .find(|(name, _)| *name == unit_str)
            .map(|&(_, nanos)| nanos)
            .ok_or_else(|| format!("unknown unit {unit_str:?} (use ns, us, ms, s, m or h)"))?;

        if whole > (1u64 << 63) / unit {
            return Err("out of range".to_owned());
        }
        let mut value = whole * unit;
        if frac > 0 {
            // Go computes the fractional part in floating point; do the same so values agree.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let extra = (frac as f64 * (unit as f64 / scale)) as u64;
            value = value.saturating_add(extra);
            if value > 1 << 63 {
                return Err("out of range".to_owned());
            }
        }
        total = total.saturating_add(value);
        if total > 1 << 63 {
            return Err("out of range".to_owned());
        }
    }

    if negative && total != 0 {
        return Err("negative durations are not allowed".to_owned());
    }
    if total > MAX_NANOS {
        return Err("out of range".to_owned());
    }
    Ok(total)
}

/// Writes `value / 10^prec` with the fraction's trailing zeros (and a bare dot) left out.
fn write_scaled(f: &mut fmt::Formatter<'_>, value: u64, prec: u32) -> fmt::Result {
    let pow = 10u64.pow(prec);
    let (whole, mut frac) = (value / pow, value % pow);
    write!(f, "{whole}")?;
    if frac != 0 {
        let mut digits = prec as usize;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write!(f, ".{frac:0digits$}")?;
    }
    Ok(())
}

impl fmt::Display for Duration {
    /// Go's `time.Duration.String` form: `72h3m0.5s`, `1m0s`, `1.5s`, `500ms`, `1µs`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values beyond Go's range cannot come from parsing; clamp rather than misprint.
        let nanos = u64::try_from(self.0.as_nanos())
            .unwrap_or(MAX_NANOS)
            .min(MAX_NANOS);
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            write_scaled(f, nanos, 3)?;
            return f.write_str("\u{b5}s");
        }
        if nanos < 1_000_000_000 {
            write_scaled(f, nanos, 6)?;
            return f.write_str("ms");
        }
        let secs = nanos / 1_000_000_000;
        let (hours, minutes) = (secs / 3600, (secs / 60) % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_scaled(f, (secs % 60) * 1_000_000_000 + nanos % 1_000_000_000, 9)?;
        f.write_str("s")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(crate::de::StrVisitor::new(
            "a Go duration such as \"10s\"",
            |s| Duration::parse(s).map_err(|e| e.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(s: &str) -> u128 {
        Duration::parse(s).unwrap().as_std().as_nanos()
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("+0"), 0);
        assert_eq!(nanos("-0"), 0);
        assert_eq!(nanos("0s"), 0);
        assert_eq!(nanos("10s"), 10_000_000_000);
        assert_eq!(nanos("1m"), 60_000_000_000);
        assert_eq!(nanos("1h30m"), 5_400_000_000_000);
        assert_eq!(nanos("500ms"), 500_000_000);
        assert_eq!(nanos("1.5s"), 1_500_000_000);
        assert_eq!(nanos(".5s"), 500_000_000);
        assert_eq!(nanos("1.s"), 1_000_000_000);
        assert_eq!(nanos("100us"), 100_000);
        assert_eq!(nanos("100\u{b5}s"), 100_000);
        assert_eq!(nanos("100\u{3bc}s"), 100_000);
        assert_eq!(nanos("7ns"), 7);
        assert_eq!(nanos("+5s"), 5_000_000_000);
        assert_eq!(nanos("1h1m1s1ms1us1ns"), 3_661_001_001_001);
        assert_eq!(nanos("0.000000001s"), 1);
        assert_eq!(nanos("2562047h47m16.854775807s"), i64::MAX as u128);
    }

    #[test]
    fn rejects_invalid_and_names_the_value() {
        for bad in [
            "", "+", "-", "s", ".s", "10", "1.5", "10x", "1d", "1h-5m", "ten", "10 s", " 10s",
            "-1s", "-1ns",
        ] {
            let err = Duration::parse(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{bad:?}: {msg}");
            assert!(
                matches!(err, ConfigError::InvalidDuration { .. }),
                "{bad:?}"
            );
        }
        assert!(Duration::parse("10")
            .unwrap_err()
            .to_string()
            .contains("missing unit"));
        assert!(Duration::parse("10x")
            .unwrap_err()
            .to_string()
            .contains("unknown unit \"x\""));
        assert!(Duration::parse("-1s")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(Duration::parse("2562047h47m16.854775808s").is_err());
        assert!(Duration::parse("9223372036854775808ns").is_err());
        assert!(Duration::parse("99999999999999999999s").is_err());
    }

    #[test]
    fn prints_like_go() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1\u{b5}s"),
            (1_500, "1.5\u{b5}s"),
            (1_000_000, "1ms"),
            (500_000_000, "500ms"),
            (1_500_000, "1.5ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (10_000_000_000, "10s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (600_000_000_000, "10m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (5_400_000_000_000, "1h30m0s"),
            (259_380_500_000_000, "72h3m0.5s"),
            (3_601_000_000_001, "1h0m1.000000001s"),
            (i64::MAX as u64, "2562047h47m16.854775807s"),
        ];
        for &(n, want) in cases {
            let d = Duration::from_std(std::time::Duration::from_nanos(n));
            assert_eq!(d.to_string(), want, "{n}ns");
        }
    }

    #[test]
    fn round_trips_through_text() {
        for s in [
            "0s",
            "1ns",
            "1.5\u{b5}s",
            "999ms",
            "1s",
            "1m0s",
            "1h30m0s",
            "72h3m0.5s",
            "10m0s",
        ] {
            let d = Duration::parse(s).unwrap();
            assert_eq!(d.to_string(), s);
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
        // Non-canonical spellings parse to the same value and print canonically.
        assert_eq!(Duration::parse("90s").unwrap().to_string(), "1m30s");
        assert_eq!(Duration::parse("1m").unwrap().to_string(), "1m0s");
        assert_eq!(Duration::parse("100us").unwrap().to_string(), "100\u{b5}s");
    }

    #[test]
    fn converts_to_and_from_std() {
        let d = Duration::from_secs(10);
        assert_eq!(
            std::time::Duration::from(d),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(
            Duration::from(std::time::Duration::from_millis(5)),
            Duration::from_millis(5)
        );
        assert!(Duration::ZERO.is_zero());
        assert!(!d.is_zero());
        assert_eq!("1m".parse::<Duration>().unwrap(), Duration::from_secs(60));
    }
}
