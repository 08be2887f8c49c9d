//! A scratch file for targets that read their input from a file: created empty in the temporary
//! folder, unlinked at once, and rewritten by the target for every input.

use std::fs::File;

/// A new scratch file, `which` naming its use.
pub fn file(which: &str) -> File {
    let path = std::env::temp_dir().join(format!("litefs-fuzz-{which}-{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create a scratch file");
    let _ = std::fs::remove_file(&path);
    file
}
