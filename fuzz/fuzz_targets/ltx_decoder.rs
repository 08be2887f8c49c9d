//! Arbitrary bytes through the LTX decoder: it must return an error or a trailer, never panic,
//! hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_ltx::{verify, Decoder};

fuzz_target!(|data: &[u8]| {
    let Ok(mut dec) = Decoder::new(data) else {
        // The header is rejected; `verify` must agree.
        assert!(
            verify(data).is_err(),
            "verify accepted a header Decoder::new rejected"
        );
        return;
    };
    let header = *dec.header();
    let mut buf = vec![0u8; header.page_size.bytes()];
    let mut pages = 0u32;
    let mut last = 0u32;
    let streamed = loop {
        match dec.next_page(&mut buf) {
            Ok(Some(pgno)) => {
                // Pages the decoder hands out obey the header's rules.
                assert!(pgno.get() > last, "page {pgno} after {last}");
                assert!(
                    pgno.get() <= header.commit,
                    "page {pgno} past commit {}",
                    header.commit
                );
                assert_ne!(pgno, header.lock_pgno(), "decoder returned the lock page");
                last = pgno.get();
                pages += 1;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert_eq!(dec.page_count(), pages);
    let result = match streamed {
        Ok(()) => dec.finish(),
        Err(e) => {
            // Finishing after a failed page read is allowed to fail but not to panic.
            let _ = dec.finish();
            Err(e)
        }
    };
    // Neither may calls after `finish`.
    let _ = dec.next_page(&mut buf);
    let _ = dec.finish();

    // The one-call check must reach the same verdict as the streaming decoder.
    match (&result, verify(data)) {
        (Ok(trailer), Ok((h, t, n))) => {
            assert_eq!(h, header);
            assert_eq!(&t, trailer);
            assert_eq!(n, pages);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("decoder and verify disagree: {a:?} vs {b:?}"),
    }
});
