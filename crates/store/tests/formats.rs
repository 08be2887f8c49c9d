//! SQLite's own WAL and rollback-journal files, made by the sqlite3 CLI, read by the store's
//! parsers: every committed transaction is found, and a hot journal rolls back to the
//! database as it was before the transaction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use litefs_store::{journal, wal};

/// Runs a script (SQL and dot-commands) through the sqlite3 CLI's standard input.
fn sqlite3(db: &Path, script: &str) -> String {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sqlite3 (scripts/deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn scan_finds_every_committed_wal_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let copy = dir.path().join("copy-wal");
    // `.shell` copies the WAL while the connection still has it open (closing would
    // checkpoint and delete it).
    sqlite3(
        &db,
        &format!(
            "PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(3000)); \
             INSERT INTO t VALUES (1); BEGIN; INSERT INTO t VALUES (2); INSERT INTO t VALUES (3); COMMIT;\n\
.shell cp {}-wal {}",
            db.display(),
            copy.display()
        ),
    );
    let (hdr, txns) = wal::scan(&File::open(&copy).unwrap()).unwrap().unwrap();
    assert_eq!(hdr.page_size.get(), 4096);
    assert_eq!(txns.len(), 4, "{txns:?}");
    let mut start = wal::WAL_HEADER_SIZE;
    for t in &txns {
        assert_eq!(t.start, start);
        assert!(t.end > t.start);
        assert_eq!(t.frames.last().unwrap().commit, t.commit);
        start = t.end;
    }
    // A torn last frame ends the log at the transaction before it.
    let len = fs::metadata(&copy).unwrap().len();
    let f = OpenOptions::new().write(true).open(&copy).unwrap();
    f.set_len(len - 100).unwrap();
    let (_, torn) = wal::scan(&File::open(&copy).unwrap()).unwrap().unwrap();
    assert_eq!(torn.len(), 3);
    // Not a WAL at all.
    assert!(wal::scan(&File::open(&db).unwrap()).unwrap().is_none());
}

#[test]
fn hot_journal_rolls_back_to_the_database_before_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let copy = dir.path().join("copy");
    sqlite3(&db, "CREATE TABLE t(x); INSERT INTO t VALUES ('before');");
    // A transaction that spills pages into the database file (small cache), copied with its
    // hot journal while it is still open: what a crash leaves behind.
    sqlite3(
        &db,
        &format!(
            "PRAGMA cache_size=2; BEGIN; \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 300) \
             INSERT INTO t SELECT randomblob(800) FROM n;\n\
.shell cp {db} {copy}; cp {db}-journal {copy}-journal\n\
ROLLBACK;",
            db = db.display(),
            copy = copy.display()
        ),
    );
    let journal_path = dir.path().join("copy-journal");
    let j = File::open(&journal_path).unwrap();
    assert!(journal::is_hot(&j).unwrap());
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    let rb = journal::rollback(&j, &target).unwrap().unwrap();
    assert!(rb.pages > 0, "{rb:?}");
    drop(target);
    fs::remove_file(&journal_path).unwrap();
    assert_eq!(
        sqlite3(&copy, "SELECT count(*), min(x) FROM t").trim(),
        "1|before"
    );
    assert_eq!(sqlite3(&copy, "PRAGMA integrity_check").trim(), "ok");
}
