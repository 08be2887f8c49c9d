//! What the halt lock reads from the network: on the primary, the query string of `/halt` and
//! `/tx` (`name`, `id`, `lockID`, percent-decoded as Go does), the `Litefs-Id` header and the
//! LTX header at the start of a `/tx` body; on the replica, the primary's HTTP answer and the
//! JSON `{"id","pos","expires"}` in it.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use litefs_ltx::header::HEADER_SIZE;
use litefs_ltx::{Header, NodeId};
use litefs_node::fuzzing;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    query: &'a str,
    key: &'a str,
    id_header: Option<&'a [u8]>,
    answer: &'a [u8],
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(uri) = format!("/tx?{}", input.query).parse::<hyper::Uri>() {
        let value = fuzzing::query_param(&uri, input.key);
        if let Ok(Some(v)) = &value {
            // A decoded value is never longer than its encoding.
            assert!(v.len() <= input.query.len());
        }
        if let Ok(name) = fuzzing::db_name_param(&uri) {
            assert_eq!(fuzzing::query_param(&uri, "name"), Ok(Some(name)));
        }
        for key in ["id", "lockID"] {
            if let Ok(id) = fuzzing::id_param(&uri, key) {
                let text = fuzzing::query_param(&uri, key).ok().flatten();
                assert_eq!(text.and_then(|t| t.parse().ok()), Some(id));
            }
        }
    }
    let me = NodeId::new(1);
    if let Ok(peer) = fuzzing::peer_of(input.id_header, me) {
        assert_ne!(peer, me);
    }
    if let Ok((_, body)) = fuzzing::parse_answer(input.answer) {
        let _ = fuzzing::halt_pos(&body);
    }
    if let Ok(text) = std::str::from_utf8(input.answer) {
        let _ = fuzzing::halt_pos(text);
    }
    if let Some(h) = input.body.get(..HEADER_SIZE) {
        if let Ok(h) = Header::from_bytes(h.try_into().expect("a header's length")) {
            assert_eq!(h.to_bytes()[..], input.body[..HEADER_SIZE]);
        }
    }
});
