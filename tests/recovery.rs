//! Start-up recovery and the durability edges of the mount, end to end: a LiteFS 0.5 volume
//! taken over as it is, `kill -9` with a hot journal or a WAL that is ahead of the LTX files,
//! damaged database and LTX files, retention, the control files, SQLite's own locking through
//! the mount, and the lock page at 1 GiB (LiteFS's fuse/file_system_test.go and
//! cmd/litefs/mount_test.go scenarios, and docs/mount.md "Start-up recovery").
//!
//! Every test runs as root (FUSE), with its own node (mount point and data directory). Nothing
//! sleeps for a fixed time before asserting: waits poll with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::{BufReader, Write as _};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

use litefs_ltx::{Checksum, Decoder, Header, Pos, Trailer};
use support::mount::{line_channel, Client, MountedNode, NodeOptions};

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Runs `sql` with the sqlite3 CLI through the mount (journal mode `mode` if given), failing
/// the test with the mount's log if it fails.
fn cli(node: &MountedNode, db: &str, mode: Option<&str>, sql: &str) -> String {
    Client::Cli
        .run(&node.db_path(db), mode, sql)
        .unwrap_or_else(|e| panic!("sqlite3 {db}: {sql}\n{e}\n--- log ---\n{}", node.log()))
}

/// Polls `cond` every 10 ms until it holds; fails with `what` and the log after `deadline`.
fn wait_until(node: &MountedNode, deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < until,
            "{what}: not within {deadline:?}\n--- log ---\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Header, trailer and page numbers of an LTX file (fully verified).
fn decode_ltx(path: &Path) -> (Header, Trailer, Vec<u32>) {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut dec = Decoder::new(BufReader::new(f))
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()));
    let hdr = *dec.header();
    let mut buf = vec![0u8; hdr.page_size.bytes()];
    let mut pages = Vec::new();
    while let Some(pgno) = dec
        .next_page(&mut buf)
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
    {
        pages.push(pgno.get());
    }
    let trailer = dec
        .finish()
        .unwrap_or_else(|e| panic!("verify {}: {e}", path.display()));
    (hdr, trailer, pages)
}

fn verifies(path: &Path) -> bool {
    litefs_ltx::verify(BufReader::new(fs::File::open(path).unwrap())).is_ok()
}

/// Flips `len` bytes of `path` at `offset` (XOR 0xff), so that they differ from what was there.
fn corrupt(path: &Path, offset: u64, len: usize) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
    for b in &mut buf {
        *b ^= 0xff;
    }
    f.write_all_at(&buf, offset).unwrap();
    f.sync_all().unwrap();
}

/// The backing database file of `db` in the data directory.
fn data_db_file(node: &MountedNode, db: &str) -> PathBuf {
    node.db_data_dir(db).join("database")
}

/// The rolling checksum of a plain database file (not through the mount).
fn file_checksum(path: &Path) -> Checksum {
    litefs_ltx::dbfile::checksum_file(path)
        .unwrap_or_else(|e| panic!("checksum {}: {e}", path.display()))
        .1
}

/// Everything a table holds, as text, to compare before and after.
fn dump(node: &MountedNode, db: &str) -> String {
    cli(
        node,
        db,
        None,
        "SELECT count(*), group_concat(id || ':' || hex(v), ',') FROM t;",
    )
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            fs::copy(entry.path(), &dst).unwrap();
        }
    }
}

/// `chmod -R u+w`.
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = fs::metadata(path).unwrap();
    let mut perm = meta.permissions();
    perm.set_mode(perm.mode() | 0o200);
    fs::set_permissions(path, perm).unwrap();
    if meta.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            make_writable(&entry.unwrap().path());
        }
    }
}

/// Names of the files in `dir` (not recursive), sorted; empty if it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// One line of the log that contains every one of `parts`, if any.
fn log_line<'a>(log: &'a str, parts: &[&str]) -> Option<&'a str> {
    log.lines().find(|l| parts.iter().all(|p| l.contains(p)))
}

/// An interactive Python sqlite3 connection in its own process: one statement per line on
/// stdin, one answer line per statement (`ok a|b;c|d` or `err SQLITE_X: message`). Killing it
/// with SIGKILL leaves whatever it had in progress (a hot journal, WAL frames) behind.
const PY_DRIVER: &str = r#"
import sqlite3, sys
db, timeout = sys.argv[1], float(sys.argv[2])
con = sqlite3.connect(db, isolation_level=None, timeout=timeout)
print("ready", flush=True)
for line in sys.stdin:
    sql = line.strip()
    if not sql:
        continue
    try:
        rows = con.execute(sql).fetchall()
        print("ok " + ";".join("|".join("" if v is None else str(v) for v in r) for r in rows), flush=True)
    except sqlite3.Error as e:
        print("err %s: %s" % (getattr(e, "sqlite_errorname", type(e).__name__), e), flush=True)
"#;

#[derive(Debug)]
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    name: String,
}

impl Driver {
    /// Connects to `db` with the given busy timeout (seconds).
    fn open(db: &Path, busy_timeout: f64, name: &str) -> Driver {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(PY_DRIVER)
            .arg(db)
            .arg(busy_timeout.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run python3: {e}"));
        let stdin = child.stdin.take();
        let lines = line_channel(&mut child);
        let mut d = Driver {
            child,
            stdin,
            lines,
            name: name.to_owned(),
        };
        let first = d.line();
        assert_eq!(first, "ready", "{name}");
        d
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: no answer within 30 s: {e}", self.name))
    }

    /// Runs one statement; returns `ok ...` or `err ...`.
    fn exec(&mut self, sql: &str) -> String {
        assert!(!sql.contains('\n'));
        let stdin = self.stdin.as_mut().expect("driver stdin");
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }

    /// Runs one statement that must succeed; returns its rows.
    fn ok(&mut self, sql: &str) -> String {
        let out = self.exec(sql);
        match out.strip_prefix("ok ") {
            Some(rows) => rows.to_owned(),
            None if out == "ok" => String::new(),
            None => panic!("{}: {sql}: {out}", self.name),
        }
    }

    /// SIGKILL, then reap.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin (the script closes its connection and exits) and waits.
    fn close(mut self) {
        drop(self.stdin.take());
        let status = support::mount::wait_deadline(&mut self.child, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{}: exited with {status:?}",
            self.name
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A LiteFS 0.5.14 volume, taken over as it is.
// ---------------------------------------------------------------------------------------------

/// A data directory LiteFS 0.5.14 wrote (compressed LTX files; wal.db's last transaction only
/// in an LTX file, the database file behind it) is served as it is: the same positions, the
/// same rows, and new transactions continue LiteFS's TXIDs and checksum chain.
#[test]
fn litefs_volume_takeover() {
    let fixture = support::fixtures().join("litefs-0.5.14-data");
    let mut node = MountedNode::start_prepared(
        NodeOptions {
            compress: true,
            ..NodeOptions::default()
        },
        |data| {
            copy_dir(&fixture.join("dbs"), &data.join("dbs"));
            make_writable(data);
        },
    );
    let ls = node.ls();
    assert_eq!(ls, ["rollback.db", "wal.db"], "ls");
    let expected = fs::read_to_string(fixture.join("expected-pos.txt")).unwrap();
    let mut old_pos = std::collections::BTreeMap::new();
    for line in expected.lines() {
        let (db, pos) = line.split_once(' ').unwrap();
        let text = fs::read_to_string(node.mnt().join(format!("{db}-pos"))).unwrap();
        assert_eq!(
            text,
            format!("{pos}\n"),
            "{db}-pos\n--- log ---\n{}",
            node.log()
        );
        old_pos.insert(db.to_owned(), pos.parse::<Pos>().unwrap());
    }
    assert_eq!(old_pos.len(), 2);

    assert_eq!(
        cli(
            &node,
            "rollback.db",
            None,
            "SELECT count(*), sum(length(x)) FROM t;"
        )
        .trim(),
        "13|6007"
    );
    assert_eq!(
        cli(&node, "wal.db", None, "SELECT count(*) FROM t;").trim(),
        "5"
    );
    for db in ["rollback.db", "wal.db"] {
        assert_eq!(
            cli(&node, db, None, "PRAGMA integrity_check;").trim(),
            "ok",
            "{db}"
        );
        node.check_consistent(db);
    }
    assert_eq!(
        cli(&node, "wal.db", None, "PRAGMA journal_mode;").trim(),
        "wal"
    );

    // New transactions continue the sequence and the checksum chain.
    cli(
        &node,
        "rollback.db",
        None,
        "INSERT INTO t (x) VALUES ('written by litefs-rs');",
    );
    cli(
        &node,
        "wal.db",
        None,
        "INSERT INTO t (x) VALUES (randomblob(3000));",
    );
    for (db, want) in [("rollback.db", 0xa), ("wal.db", 8)] {
        let pos = node.check_consistent(db);
        assert_eq!(pos.txid.get(), want, "{db}");
        let last = node.ltx_files(db).pop().unwrap();
        let (hdr, trailer, _) = decode_ltx(&last);
        assert_eq!(hdr.min_txid.get(), want, "{}", last.display());
        assert_eq!(
            hdr.pre_apply_checksum, old_pos[db].post_apply_checksum,
            "{db}: the first litefs-rs LTX file does not chain onto LiteFS's last one"
        );
        assert_eq!(trailer.post_apply_checksum, pos.post_apply_checksum);
        assert!(hdr.flags.is_compressed());
    }
    assert_eq!(
        cli(&node, "rollback.db", None, "SELECT count(*) FROM t;").trim(),
        "14"
    );
    assert_eq!(
        cli(&node, "wal.db", None, "SELECT count(*) FROM t;").trim(),
        "6"
    );
    node.restart();
    for db in ["rollback.db", "wal.db"] {
        node.check_consistent(db);
    }
    node.stop();
}

/// The same volume with its database files behind their last LTX files (what LiteFS leaves when
/// the last transactions were still in a WAL that is gone): rollback.db rebuilt from TXIDs 1..=8,
/// wal.db from 1..=5. The takeover replays the missing LTX files and serves LiteFS's positions.
#[test]
fn litefs_volume_takeover_database_behind() {
    let fixture = support::fixtures().join("litefs-0.5.14-data");
    let behind = [("rollback.db", 8u64), ("wal.db", 5u64)];
    let node = MountedNode::start_prepared(
        NodeOptions {
            compress: true,
            ..NodeOptions::default()
        },
        |data| {
            copy_dir(&fixture.join("dbs"), &data.join("dbs"));
            make_writable(data);
            for (db, upto) in behind {
                let dir = data.join("dbs").join(db);
                let file = dir.join("database");
                fs::remove_file(&file).unwrap();
                for txid in 1..=upto {
                    let t = litefs_ltx::TXID::new(txid);
                    let ltx = dir.join("ltx").join(litefs_ltx::format_filename(t, t));
                    litefs_ltx::dbfile::apply_ltx(&file, &ltx)
                        .unwrap_or_else(|e| panic!("apply {}: {e}", ltx.display()));
                }
            }
        },
    );
    let expected = fs::read_to_string(fixture.join("expected-pos.txt")).unwrap();
    for line in expected.lines() {
        let (db, pos) = line.split_once(' ').unwrap();
        assert_eq!(
            node.pos(db),
            pos.parse::<Pos>().unwrap(),
            "{db}-pos\n--- log ---\n{}",
            node.log()
        );
        assert_eq!(node.check_consistent(db).to_string(), pos);
        assert!(
            log_line(&node.log(), &["repaired the database file", db]).is_some(),
            "no log line about repairing {db}\n--- log ---\n{}",
            node.log()
        );
    }
    assert_eq!(
        cli(
            &node,
            "rollback.db",
            None,
            "SELECT count(*), sum(length(x)) FROM t;"
        )
        .trim(),
        "13|6007"
    );
    assert_eq!(
        cli(&node, "wal.db", None, "SELECT count(*) FROM t;").trim(),
        "5"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 with a hot journal.
// ---------------------------------------------------------------------------------------------

/// TestFileSystem_RollbackJournalOnStartup: `cache_size=2`, 100 rows of 500 bytes in one open
/// transaction in DELETE mode (the journal is hot and pages have spilled into the database
/// file), then kill -9 of the node and of the client. After a restart the transaction is gone:
/// integrity ok, none of its rows, the position of before the transaction, LTX files chained.
#[test]
fn rollback_journal_on_startup() {
    let mut node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); \
         INSERT INTO t (v) VALUES (randomblob(500)), (randomblob(500));",
    );
    let before = node.check_consistent("db");
    let rows_before = dump(&node, "db");
    let db_file = data_db_file(&node, "db");
    let len_before = fs::metadata(&db_file).unwrap().len();

    let mut client = Driver::open(&node.db_path("db"), 5.0, "writer");
    assert_eq!(client.ok("PRAGMA journal_mode = delete"), "delete");
    client.ok("PRAGMA cache_size = 2");
    client.ok("BEGIN");
    client.ok(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) \
         INSERT INTO t (v) SELECT randomblob(500) FROM c",
    );
    // The transaction is open: a hot journal, and pages already in the database file.
    let journal = node.db_data_dir("db").join("journal");
    let jlen = fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    assert!(jlen > 0, "no journal in the data directory mid-transaction");
    let len_mid = fs::metadata(&db_file).unwrap().len();
    assert!(
        len_mid > len_before && file_checksum(&db_file) != before.post_apply_checksum,
        "no page spilled into the database file (size {len_before} -> {len_mid})"
    );
    assert_eq!(node.pos("db"), before, "an open transaction moved -pos");

    node.kill9();
    client.kill9();
    assert!(journal.exists(), "the journal did not survive kill -9");

    node.start_again();
    assert_eq!(
        node.pos("db"),
        before,
        "position after recovery\n--- log ---\n{}",
        node.log()
    );
    assert!(!journal.exists(), "the hot journal is still there");
    let pos = node.check_consistent("db");
    assert_eq!(pos, before);
    assert_eq!(dump(&node, "db"), rows_before, "rows after recovery");
    assert_eq!(
        fs::metadata(&db_file).unwrap().len(),
        len_before,
        "the database file did not shrink back"
    );
    // And it goes on.
    cli(
        &node,
        "db",
        Some("delete"),
        "INSERT INTO t (v) VALUES ('after');",
    );
    assert_eq!(
        node.check_consistent("db").txid.get(),
        before.txid.get() + 1
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A WAL ahead of the LTX files.
// ---------------------------------------------------------------------------------------------

/// TestFileSystem_OutOfSyncWAL, done better: WAL mode, one connection commits 16 rows in 16
/// transactions, the node is killed with every frame still in the WAL, and the newest `lost`
/// LTX files are deleted while it is down (what a power loss can do to LTX files that were not
/// synced yet). LiteFS comes back with 11 rows; litefs-rs rebuilds the missing transactions
/// from the WAL as ONE LTX file (TXID = the first deleted TXID), whose checksums are exactly
/// those of the deleted files, and keeps all 16 rows.
fn out_of_sync_wal(lost: u64) {
    let mut node = MountedNode::start();
    let mut client = Driver::open(&node.db_path("db"), 5.0, "writer");
    assert_eq!(client.ok("PRAGMA journal_mode = wal"), "wal");
    client.ok("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    let base = node.txid("db");
    assert_eq!(base, 2);
    for i in 1..=16u64 {
        client.ok("INSERT INTO t (v) VALUES (randomblob(200))");
        assert_eq!(node.txid("db"), base + i, "insert {i}");
    }
    let last = node.pos("db");
    let wal = node.db_data_dir("db").join("wal");
    assert!(fs::metadata(&wal).unwrap().len() > 0, "the WAL is empty");

    node.kill9();
    client.kill9();
    assert!(wal.exists(), "the WAL did not survive kill -9");

    // Delete the newest `lost` LTX files, keeping their headers to compare with.
    let files = node.ltx_files("db");
    let deleted: Vec<(Header, Trailer)> = files[files.len() - lost as usize..]
        .iter()
        .map(|p| {
            let (h, t, _) = decode_ltx(p);
            fs::remove_file(p).unwrap();
            (h, t)
        })
        .collect();
    let first_lost = deleted[0].0.min_txid.get();
    assert_eq!(first_lost, last.txid.get() - lost + 1);
    let kept_pos = {
        let p = node.ltx_files("db").pop().unwrap();
        let (h, t, _) = decode_ltx(&p);
        Pos::new(h.max_txid, t.post_apply_checksum)
    };

    node.start_again();
    let pos = node.pos("db");
    eprintln!(
        "out_of_sync_wal({lost}): before the kill {last}; deleted TXIDs {first_lost}..={}; \
         after the restart {pos}",
        last.txid.get()
    );
    assert_eq!(
        pos,
        last,
        "the position before the kill should come back\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(
        pos.post_apply_checksum, last.post_apply_checksum,
        "the recovered position's checksum is not the one of the last committed transaction"
    );
    let recovered = node.ltx_files("db").pop().unwrap();
    let (hdr, trailer, _) = decode_ltx(&recovered);
    assert_eq!(
        (hdr.min_txid.get(), hdr.max_txid.get()),
        (first_lost, last.txid.get()),
        "one LTX file covering the lost TXIDs"
    );
    assert_eq!(hdr.pre_apply_checksum, kept_pos.post_apply_checksum);
    assert_eq!(trailer.post_apply_checksum, last.post_apply_checksum);
    let first = deleted[0].0;
    let last_deleted = deleted[deleted.len() - 1].0;
    assert_eq!(
        (hdr.wal_salt1, hdr.wal_salt2),
        (first.wal_salt1, first.wal_salt2)
    );
    assert_eq!(
        hdr.wal_offset, first.wal_offset,
        "the recovered file starts where the first lost one did"
    );
    assert_eq!(
        hdr.wal_offset + hdr.wal_size,
        last_deleted.wal_offset + last_deleted.wal_size,
        "the recovered file ends where the last lost one did"
    );
    assert_eq!(hdr.commit, last_deleted.commit);
    assert!(
        log_line(&node.log(), &["recovered committed WAL transactions"]).is_some(),
        "no log line about the recovered transactions\n--- log ---\n{}",
        node.log()
    );
    // Recovery checkpointed and removed the WAL.
    assert!(!wal.exists(), "the WAL is still there after recovery");
    let pos = node.check_consistent("db");
    let out = cli(
        &node,
        "db",
        None,
        "SELECT count(*), min(id), max(id) FROM t;",
    );
    assert_eq!(out.trim(), "16|1|16", "rows after recovery");
    cli(&node, "db", None, "INSERT INTO t (v) VALUES ('after');");
    assert_eq!(node.check_consistent("db").txid.get(), pos.txid.get() + 1);
    node.restart();
    assert_eq!(node.check_consistent("db").txid.get(), pos.txid.get() + 1);
}

#[test]
fn out_of_sync_wal_newest_ltx_lost() {
    out_of_sync_wal(1);
}

#[test]
fn out_of_sync_wal_newest_two_ltx_lost() {
    out_of_sync_wal(2);
}

// ---------------------------------------------------------------------------------------------
// 4.-6. Damaged database files.
// ---------------------------------------------------------------------------------------------

/// A database in `mode` with a table of a few hundred rows over many pages, whose last
/// transaction appends a large row (so it writes the last pages of the file). Stops the node
/// cleanly and returns the position, the row dump and the last LTX file's pages.
fn prepared(mode: &str, opts: NodeOptions) -> (MountedNode, Pos, String, Header, Vec<u32>) {
    let mut node = MountedNode::start_with(opts);
    cli(
        &node,
        "db",
        Some(mode),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
    );
    cli(
        &node,
        "db",
        Some(mode),
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) \
         INSERT INTO t (v) SELECT randomblob(500) FROM c;",
    );
    cli(
        &node,
        "db",
        Some(mode),
        "UPDATE t SET v = randomblob(400) WHERE id % 7 = 0;",
    );
    cli(
        &node,
        "db",
        Some(mode),
        "INSERT INTO t (v) VALUES (randomblob(20000));",
    );
    let pos = if opts.retention.is_some() {
        let pos = check_served(&node, "db");
        let newest = node.ltx_files("db").pop().unwrap();
        wait_until(
            &node,
            Duration::from_secs(15),
            "retention left only the newest LTX file",
            || node.ltx_files("db") == vec![newest.clone()],
        );
        pos
    } else {
        node.check_consistent("db")
    };
    let rows = dump(&node, "db");
    node.stop();
    let (hdr, trailer, pages) = decode_ltx(&node.ltx_files("db").pop().unwrap());
    assert_eq!(trailer.post_apply_checksum, pos.post_apply_checksum);
    // After a clean stop the database file alone holds the position (WAL checkpointed).
    assert_eq!(
        file_checksum(&data_db_file(&node, "db")),
        pos.post_apply_checksum
    );
    (node, pos, rows, hdr, pages)
}

/// The consistency check for a database whose older LTX files retention may have removed:
/// `-pos` equals the checksum through the mount, the LTX files that are left verify, are
/// contiguous and chain, the newest ends at `-pos`, and `PRAGMA integrity_check` is ok.
fn check_served(node: &MountedNode, db: &str) -> Pos {
    let pos = node.pos(db);
    assert_eq!(
        node.db_checksum(db),
        pos.post_apply_checksum,
        "{db}-pos {pos} != checksum through the mount\n--- log ---\n{}",
        node.log()
    );
    let files = node.ltx_files(db);
    assert!(!files.is_empty(), "{db} has no LTX file");
    let mut prev: Option<(Header, Trailer)> = None;
    for f in &files {
        let (h, t, _) = decode_ltx(f);
        if let Some((ph, pt)) = prev {
            assert_eq!(
                h.min_txid.get(),
                ph.max_txid.get() + 1,
                "{} is not contiguous",
                f.display()
            );
            assert_eq!(
                h.pre_apply_checksum,
                pt.post_apply_checksum,
                "{} does not chain",
                f.display()
            );
        }
        prev = Some((h, t));
    }
    let (h, t) = prev.unwrap();
    assert_eq!(
        Pos::new(h.max_txid, t.post_apply_checksum),
        pos,
        "newest LTX file of {db}"
    );
    let ic = rusqlite::Connection::open(node.db_path(db))
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
        .unwrap_or_else(|e| panic!("integrity_check {db}: {e}\n--- log ---\n{}", node.log()));
    assert_eq!(ic, "ok", "integrity_check of {db}");
    assert_eq!(node.pos(db), pos, "a read-only connection moved {db}-pos");
    pos
}

/// TestFileSystem_ContinueOnDatabaseInitEOF: the database file loses its last page while the
/// node is down; the restart repairs it from the last LTX file.
fn continue_on_database_init_eof(mode: &str) {
    let (mut node, pos, rows, hdr, pages) = prepared(mode, NodeOptions::default());
    let ps = u64::from(hdr.page_size.get());
    assert!(
        pages.contains(&hdr.commit),
        "the last transaction did not write the last page {} (pages {pages:?})",
        hdr.commit
    );
    let file = data_db_file(&node, "db");
    let len = fs::metadata(&file).unwrap().len();
    assert_eq!(len, u64::from(hdr.commit) * ps);
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - ps)
        .unwrap();

    node.start_again();
    assert_eq!(
        node.pos("db"),
        pos,
        "-pos after repair\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        len,
        "file size after repair"
    );
    assert_eq!(node.check_consistent("db"), pos);
    assert_eq!(dump(&node, "db"), rows, "rows after repair");
    assert!(
        log_line(&node.log(), &["repaired the database file"]).is_some(),
        "no log line about the repair\n--- log ---\n{}",
        node.log()
    );
    cli(
        &node,
        "db",
        Some(mode),
        "INSERT INTO t (v) VALUES ('after');",
    );
    assert_eq!(node.check_consistent("db").txid.get(), pos.txid.get() + 1);
}

#[test]
fn continue_on_database_init_eof_delete() {
    continue_on_database_init_eof("delete");
}

#[test]
fn continue_on_database_init_eof_wal() {
    continue_on_database_init_eof("wal");
}

/// TestSingleNode_RecoverFromLastLTX: bytes of a page the last transaction wrote are damaged
/// while the node is down (a torn write); the restart rewrites it from the last LTX file.
fn recover_from_last_ltx(mode: &str) {
    let (mut node, pos, rows, hdr, pages) = prepared(mode, NodeOptions::default());
    let ps = u64::from(hdr.page_size.get());
    let page = *pages.iter().max().unwrap();
    let file = data_db_file(&node, "db");
    corrupt(&file, u64::from(page - 1) * ps + 200, 64);
    assert_ne!(file_checksum(&file), pos.post_apply_checksum);

    node.start_again();
    assert_eq!(
        node.pos("db"),
        pos,
        "-pos after repair\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(
        file_checksum(&file),
        pos.post_apply_checksum,
        "page {page} not repaired"
    );
    assert_eq!(node.check_consistent("db"), pos);
    assert_eq!(dump(&node, "db"), rows, "rows after repair");
    cli(
        &node,
        "db",
        Some(mode),
        "INSERT INTO t (v) VALUES ('after');",
    );
    assert_eq!(node.check_consistent("db").txid.get(), pos.txid.get() + 1);
}

#[test]
fn recover_from_last_ltx_delete() {
    recover_from_last_ltx("delete");
}

#[test]
fn recover_from_last_ltx_wal() {
    recover_from_last_ltx("wal");
}

/// Asserts that `db` is refused: reads through the mount fail (sqlite3 errors, a plain read
/// gets EIO) and the log names the database, the TXID and both checksums.
fn assert_refused(node: &MountedNode, db: &str, txid: u64, actual: Checksum, expected: Checksum) {
    let res = Client::Cli.run(&node.db_path(db), None, "SELECT count(*) FROM t;");
    assert!(
        res.is_err(),
        "{db} was served although it does not match its position: {res:?}\n--- log ---\n{}",
        node.log()
    );
    eprintln!(
        "sqlite3 on the refused database: {}",
        res.unwrap_err().trim()
    );
    match fs::read(node.db_path(db)) {
        Ok(bytes) => panic!(
            "a plain read of the refused {db} returned {} bytes",
            bytes.len()
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "read of {db}: {e}"),
    }
    let want = format!(
        "checksum {actual} on TXID {:016x} does not match LTX post-apply checksum {expected}",
        txid
    );
    let log = node.log();
    let line = log_line(&log, &[&want, db]);
    assert!(
        line.is_some(),
        "no log line naming {db} with `{want}`\n--- log ---\n{log}"
    );
    eprintln!("the refusal in the log: {}", line.unwrap_or_default());
}

/// A page the last transaction did not write (within the database) is damaged while the node
/// is down. Returns the node, the position, the row dump and the damaged file's checksum.
fn damage_older_page(opts: NodeOptions, mode: &str) -> (MountedNode, Pos, String, Checksum) {
    let (node, pos, rows, hdr, pages) = prepared(mode, opts);
    let ps = u64::from(hdr.page_size.get());
    let victim = (2..hdr.commit / 2)
        .rev()
        .find(|p| !pages.contains(p))
        .unwrap();
    let file = data_db_file(&node, "db");
    corrupt(&file, u64::from(victim - 1) * ps + 1000, 16);
    let damaged = file_checksum(&file);
    assert_ne!(damaged, pos.post_apply_checksum);
    eprintln!(
        "damaged page {victim} of {} (last transaction wrote {pages:?})",
        hdr.commit
    );
    (node, pos, rows, damaged)
}

/// TestSingleNode_DatabaseChecksumMismatch, as it happens on a node that has been up for a
/// while: retention has removed every LTX file but the newest, so the damaged page (one the
/// last transaction did not write) cannot be rebuilt. The node starts, refuses that database
/// (and says why), keeps serving another database of the same mount, and deletes nothing.
fn database_checksum_mismatch(mode: &str) {
    let opts = NodeOptions {
        retention: Some("1s"),
        retention_monitor_interval: Some("100ms"),
        ..NodeOptions::default()
    };
    let (mut node, pos, _, damaged) = damage_older_page(opts, mode);
    let file = data_db_file(&node, "db");
    let ltx_dir = node.db_data_dir("db").join("ltx");
    let ltx_before = names_in(&ltx_dir);
    assert_eq!(ltx_before.len(), 1, "retention left {ltx_before:?}");
    let db_before = fs::read(&file).unwrap();

    node.start_again();
    assert_refused(
        &node,
        "db",
        pos.txid.get(),
        damaged,
        pos.post_apply_checksum,
    );

    // Another database in the same mount is served.
    cli(
        &node,
        "other",
        Some(mode),
        "CREATE TABLE t (v); INSERT INTO t VALUES ('other');",
    );
    let other = check_served(&node, "other");
    cli(
        &node,
        "other",
        Some(mode),
        "INSERT INTO t VALUES ('again');",
    );
    assert_eq!(
        cli(&node, "other", None, "SELECT count(*) FROM t;").trim(),
        "2"
    );
    let other = {
        let after = check_served(&node, "other");
        assert_eq!(after.txid.get(), other.txid.get() + 1);
        after
    };

    // Nothing of the refused database was deleted or changed.
    assert_eq!(
        names_in(&ltx_dir),
        ltx_before,
        "the LTX files of the refused database changed"
    );
    assert!(
        fs::read(&file).unwrap() == db_before,
        "the refused database's file was changed"
    );
    node.stop();
    // Still refused after another restart, the other database still served, nothing deleted.
    node.start_again();
    assert_refused(
        &node,
        "db",
        pos.txid.get(),
        damaged,
        pos.post_apply_checksum,
    );
    assert_eq!(check_served(&node, "other"), other);
    assert_eq!(names_in(&ltx_dir), ltx_before);
    assert!(fs::read(&file).unwrap() == db_before);
    node.stop();
}

#[test]
fn database_checksum_mismatch_delete() {
    database_checksum_mismatch("delete");
}

#[test]
fn database_checksum_mismatch_wal() {
    database_checksum_mismatch("wal");
}

/// The same damage with every LTX file since the first (a snapshot) still there: litefs-rs
/// replays them from the snapshot, the result matches the position, and the database is served
/// with its rows intact (LiteFS refuses it).
fn database_checksum_mismatch_full_history(mode: &str) {
    let (mut node, pos, rows, damaged) = damage_older_page(NodeOptions::default(), mode);
    node.start_again();
    assert_eq!(
        node.pos("db"),
        pos,
        "-pos after repair\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(
        file_checksum(&data_db_file(&node, "db")),
        pos.post_apply_checksum,
        "not repaired (damaged checksum {damaged})"
    );
    assert_eq!(node.check_consistent("db"), pos);
    assert_eq!(dump(&node, "db"), rows, "rows after repair");
    assert!(
        log_line(&node.log(), &["repaired the database file"]).is_some(),
        "no log line about the repair\n--- log ---\n{}",
        node.log()
    );
}

#[test]
fn database_checksum_mismatch_full_history_repaired_delete() {
    database_checksum_mismatch_full_history("delete");
}

#[test]
fn database_checksum_mismatch_full_history_repaired_wal() {
    database_checksum_mismatch_full_history("wal");
}

// ---------------------------------------------------------------------------------------------
// 7. A damaged LTX file.
// ---------------------------------------------------------------------------------------------

/// Offset of a byte of the first page's data in an uncompressed LTX file (header 100 bytes,
/// page header 4 bytes): covered by the file checksum, not by any reserved field.
const LTX_PAGE_DATA: u64 = 100 + 4 + 1000;

/// TestSingleNode_CorruptLTX, rollback mode: the newest LTX file is damaged while the node is
/// down. It is moved to `ltx/invalid/` (not deleted) with a log line naming it, and as the
/// database file holds that transaction, which the remaining LTX files do not reach, the
/// database is refused with the checksum error.
#[test]
fn corrupt_ltx_rollback() {
    let mut node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
    );
    for _ in 0..3 {
        cli(
            &node,
            "db",
            Some("delete"),
            "INSERT INTO t (v) VALUES (randomblob(300));",
        );
    }
    let pos = node.check_consistent("db");
    node.stop();
    let files = node.ltx_files("db");
    let newest = files.last().unwrap().clone();
    let (_, prev_trailer, _) = decode_ltx(&files[files.len() - 2]);
    corrupt(&newest, LTX_PAGE_DATA, 4);
    assert!(!verifies(&newest), "the damaged file still verifies");
    let file = data_db_file(&node, "db");
    let db_before = fs::read(&file).unwrap();

    node.start_again();
    let invalid = node.db_data_dir("db").join("ltx").join("invalid");
    let name = file_name(&newest);
    assert!(
        !newest.exists(),
        "the damaged newest LTX file was left in place\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(names_in(&invalid), vec![name.clone()], "ltx/invalid/");
    assert!(!verifies(&invalid.join(&name)), "moved file changed");
    assert!(
        log_line(&node.log(), &[&name, "invalid"]).is_some(),
        "no log line naming {name}\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(node.ltx_files("db"), files[..files.len() - 1].to_vec());
    if let Ok(out) = Client::Cli.run(&node.db_path("db"), None, "SELECT count(*) FROM t;") {
        panic!(
            "the database file held TXID {} (3 committed rows) and only its LTX file {name} was \
             damaged, yet the database is served at {} with {} rows: a committed transaction \
             was rolled back without an error, and the database file overwritten{}\n\
             --- log ---\n{}",
            pos.txid,
            node.pos("db"),
            out.trim(),
            if fs::read(&file).unwrap() == db_before {
                " (no: it is unchanged)"
            } else {
                ""
            },
            node.log()
        );
    }
    assert_refused(
        &node,
        "db",
        pos.txid.get() - 1,
        pos.post_apply_checksum,
        prev_trailer.post_apply_checksum,
    );
    assert!(
        fs::read(&file).unwrap() == db_before,
        "the refused database's file was changed (it held the only intact copy of TXID {})",
        pos.txid
    );
    node.stop();
}

/// TestSingleNode_CorruptLTX, WAL mode with the WAL still there (kill -9): the damaged newest
/// LTX file is moved aside and rebuilt from the WAL; the database is served and consistent.
#[test]
fn corrupt_ltx_wal_rebuilt_from_wal() {
    let mut node = MountedNode::start();
    let mut client = Driver::open(&node.db_path("db"), 5.0, "writer");
    assert_eq!(client.ok("PRAGMA journal_mode = wal"), "wal");
    client.ok("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    for _ in 0..5 {
        client.ok("INSERT INTO t (v) VALUES (randomblob(300))");
    }
    let pos = node.pos("db");
    assert_eq!(pos.txid.get(), 7);
    node.kill9();
    client.kill9();
    let wal = node.db_data_dir("db").join("wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "no WAL after kill -9"
    );

    let newest = node.ltx_files("db").pop().unwrap();
    let (orig_hdr, orig_trailer, orig_pages) = decode_ltx(&newest);
    corrupt(&newest, LTX_PAGE_DATA, 4);
    assert!(!verifies(&newest));

    node.start_again();
    let name = file_name(&newest);
    let invalid = node.db_data_dir("db").join("ltx").join("invalid");
    assert_eq!(
        names_in(&invalid),
        vec![name.clone()],
        "ltx/invalid/\n--- log ---\n{}",
        node.log()
    );
    assert!(
        log_line(&node.log(), &[&name, "invalid"]).is_some(),
        "no log line naming {name}\n--- log ---\n{}",
        node.log()
    );
    assert_eq!(node.pos("db"), pos, "position after the rebuild");
    let (hdr, trailer, pages) = decode_ltx(&newest);
    assert_eq!(hdr.min_txid, orig_hdr.min_txid);
    assert_eq!(hdr.pre_apply_checksum, orig_hdr.pre_apply_checksum);
    assert_eq!(
        trailer.post_apply_checksum,
        orig_trailer.post_apply_checksum
    );
    assert_eq!(
        (hdr.wal_offset, hdr.wal_size),
        (orig_hdr.wal_offset, orig_hdr.wal_size)
    );
    assert_eq!(pages, orig_pages);
    assert_eq!(node.check_consistent("db"), pos);
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM t;").trim(),
        "5"
    );
    cli(&node, "db", None, "INSERT INTO t (v) VALUES ('after');");
    assert_eq!(node.check_consistent("db").txid.get(), pos.txid.get() + 1);
}

// ---------------------------------------------------------------------------------------------
// 8. Retention.
// ---------------------------------------------------------------------------------------------

/// TestMultiNode_EnforceRetention/Expiry: with `data.retention: 1s` every LTX file but the
/// newest goes within a deadline; writes go on with the next TXID, chained onto the one kept,
/// and a restart on the single remaining file works.
#[test]
fn retention_keeps_only_the_newest() {
    let mut node = MountedNode::start_with(NodeOptions {
        retention: Some("1s"),
        retention_monitor_interval: Some("100ms"),
        ..NodeOptions::default()
    });
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
    );
    for _ in 0..9 {
        cli(
            &node,
            "db",
            Some("delete"),
            "INSERT INTO t (v) VALUES (randomblob(1000));",
        );
    }
    let pos = node.pos("db");
    assert_eq!(pos.txid.get(), 10);
    let newest = node.ltx_files("db").pop().unwrap();
    wait_until(
        &node,
        Duration::from_secs(15),
        "only the newest LTX file left",
        || node.ltx_files("db") == vec![newest.clone()],
    );
    assert_eq!(node.db_checksum("db"), pos.post_apply_checksum);

    let check_chain_step = |node: &MountedNode, before: Pos| -> Pos {
        let after = node.pos("db");
        assert_eq!(after.txid.get(), before.txid.get() + 1);
        let name = litefs_ltx::format_filename(after.txid, after.txid);
        let path = node.db_data_dir("db").join("ltx").join(name);
        let (hdr, trailer, _) = decode_ltx(&path);
        assert_eq!(
            hdr.pre_apply_checksum,
            before.post_apply_checksum,
            "{} does not chain onto the kept file",
            path.display()
        );
        assert_eq!(trailer.post_apply_checksum, after.post_apply_checksum);
        assert_eq!(node.db_checksum("db"), after.post_apply_checksum);
        wait_until(
            node,
            Duration::from_secs(15),
            "only the newest LTX file left",
            || node.ltx_files("db") == vec![path.clone()],
        );
        after
    };
    cli(
        &node,
        "db",
        Some("delete"),
        "INSERT INTO t (v) VALUES ('after retention');",
    );
    let pos = check_chain_step(&node, pos);

    node.restart();
    assert_eq!(
        node.pos("db"),
        pos,
        "position after a restart on one LTX file"
    );
    assert_eq!(node.db_checksum("db"), pos.post_apply_checksum);
    assert_eq!(
        cli(&node, "db", None, "PRAGMA integrity_check;").trim(),
        "ok"
    );
    cli(
        &node,
        "db",
        Some("delete"),
        "INSERT INTO t (v) VALUES ('after restart');",
    );
    check_chain_step(&node, pos);
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM t;").trim(),
        "11"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Control files.
// ---------------------------------------------------------------------------------------------

/// TestFileSystem_Lag and the other control files: `.lag` is `+000000000\n` with size 11 and a
/// current mtime; `<db>-pos` is 34 bytes and read-only; `<db>-lock` is empty and mode 0444
/// (a symbolic link to the file of the halt lock's mount, see `tests/halt.rs`).
#[test]
fn control_files() {
    let node = MountedNode::start();
    cli(&node, "db", Some("delete"), "CREATE TABLE t (x);");

    let lag = node.mnt().join(".lag");
    assert_eq!(fs::read(&lag).unwrap(), b"+000000000\n");
    let meta = fs::metadata(&lag).unwrap();
    assert_eq!(meta.len(), 11, ".lag size");
    assert!(meta.is_file());
    let age = SystemTime::now()
        .duration_since(meta.modified().unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(5), ".lag mtime is {age:?} old");

    let pos_path = node.mnt().join("db-pos");
    let meta = fs::metadata(&pos_path).unwrap();
    assert_eq!(meta.len(), 34, "-pos size");
    assert_eq!(
        meta.mode() & 0o777,
        0o666,
        "-pos mode (LiteFS: 0666, writes refused)"
    );
    assert_eq!(fs::read(&pos_path).unwrap().len(), 34);
    let pos = node.pos("db");

    let lock = node.mnt().join("db-lock");
    assert!(fs::symlink_metadata(&lock)
        .unwrap()
        .file_type()
        .is_symlink());
    let meta = fs::metadata(&lock).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 0, "-lock size");
    assert_eq!(meta.mode() & 0o777, 0o444, "-lock mode");

    // Writes to -pos fail, however they are attempted, and change nothing.
    let write = fs::OpenOptions::new()
        .write(true)
        .open(&pos_path)
        .and_then(|mut f| {
            f.write_all(b"0000000000000009/0000000000000000\n")
                .and(f.sync_all())
        });
    assert!(write.is_err(), "a write to -pos succeeded");
    let trunc = fs::OpenOptions::new()
        .write(true)
        .open(&pos_path)
        .and_then(|f| f.set_len(0));
    assert!(trunc.is_err(), "a truncate of -pos succeeded");
    assert!(fs::remove_file(&pos_path).is_err(), "rm of -pos succeeded");
    assert_eq!(node.pos("db"), pos);
    assert_eq!(fs::metadata(&pos_path).unwrap().len(), 34);
    node.check_consistent("db");
}

// ---------------------------------------------------------------------------------------------
// 10. SQLite's locking through the mount.
// ---------------------------------------------------------------------------------------------

/// Runs the TestFileSystem_MultipleTx steps on `db` (a table `t` with one row, rollback mode):
/// a reader in a read transaction, a writer whose COMMIT is busy (busy_timeout 0) until the
/// reader ends. `txid` reads the TXID (0 on a plain directory). Returns the transcript.
fn multiple_tx_steps(db: &Path, txid: &dyn Fn() -> u64) -> Vec<String> {
    let mut reader = Driver::open(db, 0.0, "reader");
    let mut writer = Driver::open(db, 0.0, "writer");
    let mut log = Vec::new();
    let mut step = |who: &str, d: &mut Driver, sql: &str| {
        let out = d.exec(sql);
        log.push(format!("{who}: {sql} -> {out}"));
        out
    };
    step("reader", &mut reader, "PRAGMA journal_mode");
    step("writer", &mut writer, "PRAGMA journal_mode");
    let start = txid();
    step("reader", &mut reader, "BEGIN");
    step("reader", &mut reader, "SELECT count(*) FROM t");
    step("writer", &mut writer, "BEGIN");
    step("writer", &mut writer, "INSERT INTO t VALUES (2)");
    step("writer", &mut writer, "COMMIT");
    step("writer", &mut writer, "COMMIT");
    let during = txid();
    step("reader", &mut reader, "SELECT count(*) FROM t");
    step("reader", &mut reader, "ROLLBACK");
    step("writer", &mut writer, "COMMIT");
    let end = txid();
    step("reader", &mut reader, "SELECT count(*) FROM t");
    reader.close();
    writer.close();
    log.push(format!(
        "TXID moved by {} while busy, {} in all",
        during - start,
        end - start
    ));
    log
}

/// TestFileSystem_MultipleTx: the same steps on a plain directory and on the mount give the
/// same transcript: the writer's COMMIT gets SQLITE_BUSY while the reader's transaction is
/// open, and succeeds (one TXID) once it ends.
#[test]
fn multiple_tx_reader_blocks_writer() {
    let plain = tempfile::tempdir().unwrap();
    let plain_db = plain.path().join("db");
    support::sqlite3(
        &plain_db,
        "PRAGMA journal_mode=delete; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    let local = multiple_tx_steps(&plain_db, &|| 0);

    let node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    let mounted = multiple_tx_steps(&node.db_path("db"), &|| node.txid("db"));
    eprintln!("plain directory:\n  {}", local.join("\n  "));
    eprintln!("mount:\n  {}", mounted.join("\n  "));
    let expect_busy = "writer: COMMIT -> err SQLITE_BUSY: database is locked";
    assert_eq!(
        local.iter().filter(|l| l.as_str() == expect_busy).count(),
        2,
        "the plain directory did not behave as expected: {local:#?}"
    );
    let mut local_cmp = local.clone();
    *local_cmp.last_mut().unwrap() = "TXID moved by 0 while busy, 1 in all".into();
    assert_eq!(mounted, local_cmp, "mount and plain directory differ");
    node.check_consistent("db");
}

/// `locking_mode=EXCLUSIVE` in WAL mode (LiteFS refuses it): transactions commit and each moves
/// the TXID by one, other processes are locked out while the connection holds the lock, and
/// everything is consistent once it closes.
#[test]
fn exclusive_locking_mode_wal() {
    let node = MountedNode::start();
    let conn = rusqlite::Connection::open(node.db_path("db")).unwrap();
    let lm: String = conn
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
        .unwrap();
    assert_eq!(lm, "exclusive");
    let jm: String = conn
        .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    assert_eq!(node.txid("db"), 1);
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);")
        .unwrap();
    assert_eq!(node.txid("db"), 2);
    for i in 1..=5u64 {
        conn.execute("INSERT INTO t (v) VALUES (randomblob(2000))", [])
            .unwrap_or_else(|e| panic!("insert {i}: {e}\n--- log ---\n{}", node.log()));
        assert_eq!(node.txid("db"), 2 + i, "insert {i}");
    }
    conn.execute_batch(
        "BEGIN; UPDATE t SET v = zeroblob(10) WHERE id = 1; DELETE FROM t WHERE id = 2; COMMIT;",
    )
    .unwrap();
    assert_eq!(node.txid("db"), 8);
    // The exclusive lock keeps other processes out, as on a local disk.
    // The sqlite3 CLI without a busy timeout: it fails at once instead of waiting.
    let other = Command::new("sqlite3")
        .arg(node.db_path("db"))
        .arg("SELECT count(*) FROM t;")
        .output()
        .unwrap();
    assert!(
        !other.status.success() && String::from_utf8_lossy(&other.stderr).contains("locked"),
        "another process read while the exclusive lock was held: {other:?}"
    );
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);
    conn.close().unwrap();
    assert_eq!(node.check_consistent("db").txid.get(), 8);
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM t;").trim(),
        "4"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. The lock page.
// ---------------------------------------------------------------------------------------------

/// TestFileSystem_SkipLockPage: a database of 64 KiB pages grows past 1 GiB in WAL mode (17
/// blobs of 64 MiB), is checkpointed with TRUNCATE and closed: it is consistent, and no LTX file
/// holds the lock page (page 16385, the page at byte offset 1 GiB).
#[test]
fn skip_lock_page() {
    const BLOBS: u64 = 17;
    const BLOB: u64 = 64 << 20;
    const LOCK_PGNO: u32 = (1 << 30) / 65536 + 1;
    let started = Instant::now();
    // More than data.retention-max-size's default of LTX files (1 GiB): no cap, so that the
    // chain is checked whole.
    let node = MountedNode::start_with(NodeOptions {
        retention_max_size: Some("0"),
        ..NodeOptions::default()
    });
    let conn = rusqlite::Connection::open(node.db_path("db")).unwrap();
    // synchronous=OFF: the lock page is what is tested here, not durability; the syncs of
    // 3 GiB of WAL, database and LTX files would dominate the run time.
    conn.execute_batch("PRAGMA page_size = 65536; PRAGMA synchronous = OFF;")
        .unwrap();
    let jm: String = conn
        .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);")
        .unwrap();
    for i in 1..=BLOBS {
        conn.execute(
            &format!("INSERT INTO t (v) VALUES (randomblob({BLOB}))"),
            [],
        )
        .unwrap_or_else(|e| panic!("insert {i}: {e}\n--- log ---\n{}", node.log()));
    }
    let written = started.elapsed();
    let out = support::mount::rusqlite_script(&conn, "PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    assert!(out.starts_with("0|"), "checkpoint was blocked: {out}");
    conn.close().unwrap();
    let pos = node.check_consistent("db");
    assert_eq!(pos.txid.get(), 2 + BLOBS);
    let len = fs::metadata(node.db_path("db")).unwrap().len();
    assert!(len > (1 << 30) + 65536, "the database is only {len} bytes");
    let mut max_commit = 0;
    for f in node.ltx_files("db") {
        let (hdr, _, pages) = decode_ltx(&f);
        assert_eq!(hdr.page_size.get(), 65536);
        assert!(
            !pages.contains(&LOCK_PGNO),
            "{} holds the lock page {LOCK_PGNO}",
            f.display()
        );
        max_commit = max_commit.max(hdr.commit);
    }
    assert!(
        max_commit > LOCK_PGNO,
        "the database never passed the lock page"
    );
    let rows = cli(&node, "db", None, "SELECT count(*), sum(length(v)) FROM t;");
    assert_eq!(rows.trim(), format!("{BLOBS}|{}", BLOBS * BLOB));
    eprintln!(
        "skip_lock_page: {BLOBS} x {} MiB written in {written:.1?}, {:.1?} in all",
        BLOB >> 20,
        started.elapsed()
    );
}

/// `PRAGMA page_size` then VACUUM in rollback mode rewrites every page at the new size: the
/// transaction is recorded at the new page size, and a restart keeps the whole database
/// (it used to be cut to the new page count at the old page size).
#[test]
fn page_size_change_survives_restart() {
    let mut node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); \
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) \
         INSERT INTO t (v) SELECT randomblob(300) FROM c;",
    );
    let before = node.txid("db");
    cli(
        &node,
        "db",
        Some("delete"),
        "PRAGMA page_size = 8192; VACUUM;",
    );
    assert_eq!(cli(&node, "db", None, "PRAGMA page_size;").trim(), "8192");
    assert_eq!(node.txid("db"), before + 1, "VACUUM is one transaction");
    let last = node.ltx_files("db").last().cloned().unwrap();
    let (hdr, _, _) = litefs_ltx::verify(fs::File::open(&last).unwrap()).unwrap();
    assert_eq!(
        hdr.page_size.get(),
        8192,
        "the LTX file has the new page size"
    );
    let rows = dump(&node, "db");
    node.restart();
    assert_eq!(
        dump(&node, "db"),
        rows,
        "rows after restart\n{}",
        node.log()
    );
    node.check_consistent("db");
    cli(
        &node,
        "db",
        Some("delete"),
        "INSERT INTO t (v) VALUES ('after');",
    );
    node.check_consistent("db");
}

/// A transaction that reuses freelist pages is interrupted (kill -9 of client and node): SQLite
/// does not journal reused freelist pages, so rolling back leaves their new bytes. The node
/// must still serve the database: the leftover bytes become one more transaction.
#[test]
fn hot_journal_rollback_with_reused_freelist_pages() {
    // Retention leaves only the newest LTX file: no snapshot to rebuild the database from.
    let mut node = MountedNode::start_with(NodeOptions {
        retention: Some("1s"),
        retention_monitor_interval: Some("100ms"),
        ..NodeOptions::default()
    });
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); \
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) \
         INSERT INTO t (v) SELECT randomblob(400) FROM c; \
         DELETE FROM t WHERE id > 1000;",
    );
    let freelist = cli(&node, "db", None, "PRAGMA freelist_count;");
    assert!(
        freelist.trim().parse::<u64>().unwrap() > 50,
        "freelist {freelist}"
    );
    // The newest LTX file does not hold the freelist pages (so replaying it cannot repair them).
    cli(
        &node,
        "db",
        Some("delete"),
        "UPDATE t SET v = 'x' WHERE id = 1;",
    );
    let before = node.check_consistent("db");
    let rows_before = dump(&node, "db");
    wait_until(
        &node,
        Duration::from_secs(10),
        "retention to leave one file",
        || node.ltx_files("db").len() == 1,
    );

    let mut client = Driver::open(&node.db_path("db"), 5.0, "writer");
    client.ok("PRAGMA cache_size = 2");
    client.ok("BEGIN");
    client.ok(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 800) \
         INSERT INTO t (v) SELECT randomblob(400) FROM c",
    );
    node.kill9();
    client.kill9();
    node.start_again();
    let pos = node.pos("db");
    assert!(
        pos.txid >= before.txid,
        "position went back: {pos} < {before}\n{}",
        node.log()
    );
    assert_eq!(
        dump(&node, "db"),
        rows_before,
        "rows after recovery\n{}",
        node.log()
    );
    // Retention removed the older files: check the position and the database directly.
    let check = |node: &MountedNode| {
        assert_eq!(node.db_checksum("db"), node.pos("db").post_apply_checksum);
        assert_eq!(
            cli(node, "db", None, "PRAGMA integrity_check;").trim(),
            "ok"
        );
    };
    check(&node);
    cli(
        &node,
        "db",
        Some("delete"),
        "INSERT INTO t (v) VALUES ('after');",
    );
    check(&node);
}

/// A PERSIST journal stays on disk between transactions; another connection that switches to
/// journal_mode OFF writes without it, and its write is recorded as a transaction of its own
/// when it closes the database, not mixed into anyone else's.
#[test]
fn journal_mode_off_beside_a_persisted_journal_is_its_own_transaction() {
    let node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("persist"),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    assert!(node.db_data_dir("db").join("journal").exists());
    let txid = node.txid("db");
    cli(
        &node,
        "db",
        None,
        "PRAGMA journal_mode = OFF; INSERT INTO t VALUES (2);",
    );
    assert_eq!(node.txid("db"), txid + 1);
    node.check_consistent("db");
    cli(&node, "db", Some("persist"), "INSERT INTO t VALUES (3);");
    assert_eq!(node.txid("db"), txid + 2);
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM t;").trim(),
        "3"
    );
    node.check_consistent("db");
}

/// Appends to the WAL one valid commit frame that SQLite never publishes in its WAL index, as a
/// writer killed between writing its frames and publishing them leaves behind. Returns the TXID
/// before it.
fn append_unpublished_commit(node: &MountedNode, db: &str) -> u64 {
    let wal_path = node.db_path(&format!("{db}-wal"));
    let wal = fs::read(&wal_path).unwrap();
    let hdr = litefs_store::wal::WalHeader::parse(&wal).unwrap();
    let frame = hdr.frame_size() as usize;
    assert_eq!((wal.len() - 32) % frame, 0, "WAL holds whole frames only");
    let last = wal.len() - frame;
    let be32 = |at: usize| u32::from_be_bytes(wal[at..at + 4].try_into().unwrap());
    let seed = (be32(last + 16), be32(last + 20));
    let commit = be32(last + 4);
    assert!(commit > 1, "the last frame is a commit frame");
    // Page 2 with other bytes, as a commit of the same size.
    let mut f = vec![0u8; frame];
    f[0..4].copy_from_slice(&2u32.to_be_bytes());
    f[4..8].copy_from_slice(&commit.to_be_bytes());
    f[8..16].copy_from_slice(&wal[8 + 8..8 + 16]);
    for (i, b) in f[24..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let sum = litefs_store::wal::wal_checksum(hdr.big_endian, seed, &f[..8]);
    let sum = litefs_store::wal::wal_checksum(hdr.big_endian, sum, &f[24..]);
    f[16..20].copy_from_slice(&sum.0.to_be_bytes());
    f[20..24].copy_from_slice(&sum.1.to_be_bytes());
    let txid = node.txid(db);
    let file = fs::OpenOptions::new().write(true).open(&wal_path).unwrap();
    file.write_all_at(&f, wal.len() as u64).unwrap();
    drop(file);
    assert_eq!(node.txid(db), txid + 1, "the frame was taken as a commit");
    txid
}

/// A commit frame SQLite never published, then the next writer writes over it: the commit is
/// retracted (its LTX file too) and the writer's transaction takes its TXID.
#[test]
fn unpublished_wal_commit_overwritten_by_next_writer() {
    let node = MountedNode::start();
    let mut a = Driver::open(&node.db_path("db"), 5.0, "writer");
    assert_eq!(a.ok("PRAGMA journal_mode = wal"), "wal");
    a.ok("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    a.ok("INSERT INTO t (v) VALUES (randomblob(100))");
    let txid = append_unpublished_commit(&node, "db");
    a.ok("INSERT INTO t (v) VALUES (randomblob(100))");
    assert_eq!(
        node.txid("db"),
        txid + 1,
        "retracted, then the real commit\n{}",
        node.log()
    );
    assert!(
        node.log().contains("retracted a WAL transaction"),
        "{}",
        node.log()
    );
    a.close();
    node.check_consistent("db");
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM t;").trim(),
        "2"
    );
}

/// A commit frame SQLite never published, then a checkpoint truncates the WAL: the database
/// file does not hold it, so it is retracted before its LTX file is made durable.
#[test]
fn unpublished_wal_commit_dropped_by_checkpoint() {
    let node = MountedNode::start();
    let mut a = Driver::open(&node.db_path("db"), 5.0, "writer");
    assert_eq!(a.ok("PRAGMA journal_mode = wal"), "wal");
    a.ok("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    a.ok("INSERT INTO t (v) VALUES (randomblob(100))");
    let txid = append_unpublished_commit(&node, "db");
    a.ok("PRAGMA wal_checkpoint(TRUNCATE)");
    assert_eq!(node.txid("db"), txid, "retracted\n{}", node.log());
    a.ok("INSERT INTO t (v) VALUES (randomblob(100))");
    a.close();
    node.check_consistent("db");
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM t;").trim(),
        "2"
    );
}

/// A write at an absurd offset into a database (here in the middle of a real transaction, with
/// a live journal) is refused with EFBIG instead of making the daemon allocate a checksum table
/// for billions of pages; the mount keeps working.
#[test]
fn absurd_database_write_is_refused() {
    let node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t (v) VALUES (1);",
    );
    let mut a = Driver::open(&node.db_path("db"), 5.0, "writer");
    a.ok("PRAGMA cache_size = 2");
    a.ok("BEGIN");
    a.ok(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) \
         INSERT INTO t (v) SELECT randomblob(500) FROM c",
    );
    let f = fs::OpenOptions::new()
        .write(true)
        .open(node.db_path("db"))
        .unwrap();
    let err = f.write_all_at(&[0u8; 4096], 1 << 44).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EFBIG), "{err}");
    drop(f);
    a.ok("ROLLBACK");
    a.close();
    cli(&node, "db", Some("delete"), "INSERT INTO t (v) VALUES (2);");
    node.check_consistent("db");
}

/// A database file changed while the node was down (here by the sqlite3 CLI on the data
/// directory) and an LTX history that can rebuild it: it is restored from the LTX files, and
/// the changed file is kept beside it (`database.before-repair-<txid>`), never lost.
#[test]
fn external_edit_is_repaired_and_kept() {
    let mut node = MountedNode::start();
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE a (x); INSERT INTO a VALUES (1);",
    );
    let pos = node.check_consistent("db");
    node.stop();
    let file = node.db_data_dir("db").join("database");
    support::sqlite3(&file, "INSERT INTO a VALUES ('edited');");
    node.start_again();
    assert_eq!(node.pos("db"), pos);
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM a;").trim(),
        "1"
    );
    node.check_consistent("db");
    let kept = node
        .db_data_dir("db")
        .join(format!("database.before-repair-{}", pos.txid));
    assert_eq!(
        support::sqlite3(&kept, "SELECT count(*) FROM a;").trim(),
        "2"
    );
}

/// A database file changed while the node was down that its LTX files cannot rebuild (older
/// files gone to retention) is refused with a message naming the database and the command to
/// adopt it; `litefs-rs adopt` then records the file as it is as a new transaction.
#[test]
fn external_edit_is_refused_then_adopted() {
    let mut node = MountedNode::start_with(NodeOptions {
        retention: Some("1s"),
        retention_monitor_interval: Some("100ms"),
        ..NodeOptions::default()
    });
    cli(
        &node,
        "db",
        Some("delete"),
        "CREATE TABLE a (x); CREATE TABLE b (y); INSERT INTO b VALUES (1);",
    );
    // The newest transaction only touches table a's pages.
    cli(&node, "db", Some("delete"), "INSERT INTO a VALUES (1);");
    wait_until(
        &node,
        Duration::from_secs(10),
        "retention to leave one file",
        || node.ltx_files("db").len() == 1,
    );
    let pos = node.pos("db");
    node.stop();
    let file = node.db_data_dir("db").join("database");
    support::sqlite3(&file, "INSERT INTO b VALUES ('edited');");

    node.start_again();
    let err = Command::new("sqlite3")
        .arg(node.db_path("db"))
        .arg("SELECT count(*) FROM b;")
        .output()
        .unwrap();
    assert!(
        !err.status.success(),
        "the edited database was served: {err:?}"
    );
    let log = node.log();
    assert!(
        log.contains("litefs-rs adopt") && log.contains("db"),
        "{log}"
    );
    node.stop();

    let out = Command::new(support::bin())
        .args(["adopt", "-config"])
        .arg(node.config_path())
        .arg("db")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    node.start_again();
    assert_eq!(node.txid("db"), pos.txid.get() + 1);
    assert_eq!(
        cli(&node, "db", None, "SELECT count(*) FROM b;").trim(),
        "2"
    );
    assert_eq!(node.db_checksum("db"), node.pos("db").post_apply_checksum);
    assert_eq!(
        cli(&node, "db", None, "PRAGMA integrity_check;").trim(),
        "ok"
    );
}

/// `kill -9` after a copy tool wrote a whole database over an existing one but before it
/// closed the file (when the copy is recorded): the next start records the file as it is, as
/// one new transaction.
#[test]
fn copy_over_a_database_cut_by_a_crash_is_recorded_at_start() {
    let mut node = MountedNode::start();
    cli(
        &node,
        "copy.db",
        Some("delete"),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    let txid = node.txid("copy.db");
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("src.db");
    support::sqlite3(
        &source,
        "CREATE TABLE u (y); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c \
         WHERE i < 100) INSERT INTO u SELECT randomblob(100) FROM c;",
    );
    let bytes = fs::read(&source).unwrap();
    let mut copy = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(node.db_path("copy.db"))
        .unwrap();
    copy.write_all(&bytes).unwrap();
    node.kill9();
    drop(copy);
    assert!(
        node.db_data_dir("copy.db").join("rewriting").exists(),
        "the unrecorded writes left their marker"
    );
    node.start_again();
    assert_eq!(node.txid("copy.db"), txid + 1, "{}", node.log());
    assert_eq!(
        cli(&node, "copy.db", None, "SELECT count(*) FROM u;").trim(),
        "100"
    );
    node.check_consistent("copy.db");
    assert!(!node.db_data_dir("copy.db").join("rewriting").exists());
}

/// A copy cut short by a crash (the file is not whole pages) cannot be recorded: at start the
/// database is restored from its LTX files (the cut file kept beside it, as for any repair),
/// and the other databases are served.
#[test]
fn partial_copy_cut_by_a_crash_is_restored_from_ltx_files() {
    let mut node = MountedNode::start();
    cli(
        &node,
        "copy.db",
        Some("delete"),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    cli(&node, "other.db", Some("delete"), "CREATE TABLE t (x);");
    let pos = node.pos("copy.db");
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("src.db");
    support::sqlite3(
        &source,
        "CREATE TABLE u (y); INSERT INTO u VALUES (randomblob(9000));",
    );
    let bytes = fs::read(&source).unwrap();
    let mut copy = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(node.db_path("copy.db"))
        .unwrap();
    copy.write_all(&bytes[..5000]).unwrap();
    node.kill9();
    drop(copy);
    node.start_again();
    assert_eq!(node.pos("copy.db"), pos, "{}", node.log());
    assert_eq!(
        cli(&node, "copy.db", None, "SELECT count(*) FROM t;").trim(),
        "1"
    );
    node.check_consistent("copy.db");
    let kept = node
        .db_data_dir("copy.db")
        .join(format!("database.before-repair-{}", pos.txid));
    assert_eq!(fs::metadata(&kept).unwrap().len(), 5000);
    assert!(
        node.log().contains("restoring it from its LTX files"),
        "{}",
        node.log()
    );
    cli(&node, "other.db", None, "INSERT INTO t VALUES (1);");
    node.check_consistent("other.db");
}
