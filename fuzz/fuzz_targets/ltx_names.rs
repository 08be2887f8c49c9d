//! The text forms of LTX values read from disk and the network: LTX file names, TXIDs,
//! checksums, positions (`TXID/checksum`) and node ids (the `Litefs-Id` header). Whatever
//! parses must print back to a form that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_ltx::{format_filename, parse_filename, Checksum, NodeId, Pos, TXID};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((min, max)) = parse_filename(s) {
        assert_eq!(
            format_filename(min, max),
            s,
            "a file name prints as it parsed"
        );
    }
    if let Ok(t) = s.parse::<TXID>() {
        assert_eq!(t.to_string().parse::<TXID>().ok(), Some(t));
    }
    if let Ok(c) = s.parse::<Checksum>() {
        assert_eq!(c.to_string().parse::<Checksum>().ok(), Some(c));
    }
    if let Ok(p) = s.parse::<Pos>() {
        assert_eq!(p.to_string().parse::<Pos>().ok(), Some(p));
    }
    if let Ok(n) = s.parse::<NodeId>() {
        assert_eq!(n.to_string().parse::<NodeId>().ok(), Some(n));
    }
});
