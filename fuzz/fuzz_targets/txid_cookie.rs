//! The proxy's `__txid` cookie on hostile text: parsing never panics, and what parses as pairs
//! encodes to a value that parses back to the same pairs (names percent-encoded; a name no
//! database can have makes the whole cookie invalid).
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_proxy::fuzzing::{encode, parse, Cookie};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Some(Cookie::Each(pairs)) => {
            for (name, _) in &pairs {
                assert!(litefs_store::validate_name(name).is_ok(), "{name:?}");
            }
            // A tracked name none of the pairs has: the pair form.
            let value = encode("\0", &pairs).expect("pairs encode");
            assert_eq!(parse(&value), Some(Cookie::Each(pairs)), "{value:?}");
        }
        Some(Cookie::Tracked(txid)) => {
            let value = encode("db", &[("db".to_owned(), txid)]).expect("one pair encodes");
            assert_eq!(parse(&value), Some(Cookie::Tracked(txid)));
        }
        None => {}
    }
});
