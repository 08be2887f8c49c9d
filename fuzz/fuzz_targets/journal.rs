//! SQLite's rollback journal read back from disk: `journal::is_hot` and `journal::rollback` of a
//! journal holding the input into a scratch database, as a node does at start for a hot
//! journal a crash left.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use litefs_store::journal;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    static FILES: OnceLock<(File, File)> = OnceLock::new();
    let (jrnl, db) = FILES.get_or_init(|| (scratch::file("journal"), scratch::file("db")));
    jrnl.set_len(0).expect("truncate the journal");
    db.set_len(0).expect("truncate the database");
    jrnl.write_all_at(data, 0).expect("write the journal");
    let hot = journal::is_hot(jrnl).expect("read the journal");
    assert_eq!(hot, data.starts_with(&journal::JOURNAL_MAGIC));
    // A journal can hold pages for offsets far past its own size (the page number is a u32):
    // the write is refused by the file system, not by the journal code, so errors are fine.
    match journal::rollback(jrnl, db) {
        Ok(Some(r)) => {
            assert!(hot);
            assert!(r.page_size.is_power_of_two() && (512..=65536).contains(&r.page_size));
            let len = db.metadata().expect("stat the database").len();
            assert_eq!(len, u64::from(r.initial_pages) * u64::from(r.page_size));
            // Each page restored came from a record of the journal.
            assert!(u64::from(r.pages) * (8 + u64::from(r.page_size)) <= data.len() as u64);
        }
        Ok(None) => {}
        Err(_) => {}
    }
});
