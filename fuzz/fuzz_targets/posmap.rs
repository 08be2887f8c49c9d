//! The pos-map body of `POST /stream` on hostile bytes. Whatever decodes must encode to a body
//! of the announced length that decodes to the same map, and to the same bytes when the input
//! had its names in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_replication::PosMap;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = PosMap::decode(data) else {
        return;
    };
    let bytes = map.encode();
    assert_eq!(bytes.len(), map.encoded_len());
    assert_eq!(
        bytes.len(),
        data.len(),
        "a decoded body has the length it encodes to"
    );
    assert_eq!(PosMap::decode(&bytes).as_ref(), Ok(&map));
});
