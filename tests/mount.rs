//! The FUSE mount end to end: a real `litefs-rs mount` process, real SQLite clients (the
//! `sqlite3` CLI, rusqlite in this process, Python's `sqlite3` module) writing through it in
//! every journal mode, and the LTX files, positions and database files checked against each
//! other (LiteFS's fuse/file_system_test.go and cmd/litefs/mount_test.go scenarios).
//!
//! Every test runs as root (FUSE), with its own temporary mount point and data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::mount::{line_channel, wait_deadline, Client, MountedNode, NodeOptions, Rng};

/// Runs `sql` with `client` on database `db` in journal mode `mode`, expects success and
/// exactly `delta` new transactions (TXIDs). Returns the client's output.
fn step(node: &MountedNode, db: &str, client: Client, mode: &str, sql: &str, delta: u64) -> String {
    let before = node.txid_or_zero(db);
    let out = client
        .run(&node.db_path(db), Some(mode), sql)
        .unwrap_or_else(|e| {
            panic!(
                "{client:?} in {mode} mode on {db}: {sql}\n{e}\n--- log ---\n{}",
                node.log()
            )
        });
    let after = node.txid_or_zero(db);
    assert_eq!(
        after,
        before + delta,
        "{client:?} in {mode} mode: `{sql}` moved the TXID of {db} from {before} to {after}, \
         expected +{delta}\n--- log ---\n{}",
        node.log()
    );
    out
}

/// Puts a new database into `mode`: switching to WAL is one transaction (it writes page 1);
/// the rollback modes are per connection and write nothing. Returns the TXID afterwards.
fn init_mode(node: &MountedNode, db: &str, mode: &str) -> u64 {
    let delta = u64::from(mode == "wal");
    step(node, db, Client::Cli, mode, "SELECT 1;", delta);
    delta
}

fn count(node: &MountedNode, db: &str, table: &str) -> u64 {
    Client::Rusqlite
        .run(
            &node.db_path(db),
            None,
            &format!("SELECT count(*) FROM {table};"),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each run in every journal mode (see `per_mode!` at the bottom).
// ---------------------------------------------------------------------------------------------

/// TXID grows by exactly one per write transaction, and not at all for reads, empty
/// `BEGIN IMMEDIATE; COMMIT` and rollbacks (TestFileSystem_OK/NoWrite/Rollback/BeginImmediate),
/// with each of the three clients. Afterwards everything is consistent.
fn txid_per_transaction(mode: &str) {
    let node = MountedNode::start();
    let mut txid = init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Python,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
        1,
    );
    txid += 1;
    let mut rows = 0u64;
    for client in Client::ALL {
        let tx = |sql: &str, delta: u64| step(&node, "db", client, mode, sql, delta);
        tx("INSERT INTO t (v) VALUES ('autocommit');", 1);
        tx(
            "BEGIN; INSERT INTO t (v) VALUES ('a'); INSERT INTO t (v) VALUES ('b'); COMMIT;",
            1,
        );
        rows += 3;
        let out = tx("SELECT count(*) FROM t;", 0);
        assert_eq!(out.trim(), rows.to_string(), "{client:?}");
        tx("BEGIN; SELECT count(*) FROM t; COMMIT;", 0);
        tx("BEGIN; SELECT count(*) FROM t; ROLLBACK;", 0);
        tx("BEGIN IMMEDIATE; COMMIT;", 0);
        tx("BEGIN EXCLUSIVE; COMMIT;", 0);
        tx("BEGIN IMMEDIATE; SELECT count(*) FROM t; COMMIT;", 0);
        tx(
            "BEGIN; INSERT INTO t (v) VALUES ('rolled back'); ROLLBACK;",
            0,
        );
        tx(
            "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('x'); UPDATE t SET v = 'y'; ROLLBACK;",
            0,
        );
        // An UPDATE that matches nothing writes nothing.
        tx("UPDATE t SET v = 'none' WHERE id < 0;", 0);
        tx(
            "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('after begin immediate'); COMMIT;",
            1,
        );
        rows += 1;
        txid += 3;
        assert_eq!(node.txid("db"), txid);
    }
    assert_eq!(count(&node, "db", "t"), rows);
    let pos = node.check_consistent("db");
    assert_eq!(pos.txid.get(), txid);
}

/// VACUUM after inserting 1000 rows of 500 bytes and deleting them (TestFileSystem_Vacuum):
/// the database shrinks, and every step is one transaction.
fn vacuum(mode: &str) {
    let node = MountedNode::start();
    init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    step(
        &node,
        "db",
        Client::Rusqlite,
        mode,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) \
         INSERT INTO t (v) SELECT randomblob(500) FROM c;",
        1,
    );
    let big = node.check_consistent("db");
    let (big_info, _) = litefs_ltx::dbfile::checksum_file(&node.db_path("db")).unwrap();
    assert!(big_info.page_count > 100, "{big_info:?}");
    step(&node, "db", Client::Python, mode, "DELETE FROM t;", 1);
    step(&node, "db", Client::Cli, mode, "VACUUM;", 1);
    let pos = node.check_consistent("db");
    assert_eq!(pos.txid.get(), big.txid.get() + 2);
    let (info, _) = litefs_ltx::dbfile::checksum_file(&node.db_path("db")).unwrap();
    assert!(
        info.page_count < 5,
        "VACUUM did not shrink the database: {info:?} (was {big_info:?})"
    );
    assert_eq!(count(&node, "db", "t"), 0);
    step(
        &node,
        "db",
        Client::Rusqlite,
        mode,
        "INSERT INTO t (v) VALUES ('after vacuum');",
        1,
    );
    node.check_consistent("db");
}

/// `PRAGMA cache_size=10`, 1000 rows of 800 bytes in one transaction, then an update of every
/// row: the journal (or WAL) spills mid-transaction, and the TXID still moves by exactly two
/// (TestFileSystem_MultipleJournalSegments).
fn multiple_journal_segments(mode: &str) {
    let node = MountedNode::start();
    init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    let before = node.txid("db");
    step(
        &node,
        "db",
        Client::Python,
        mode,
        "PRAGMA cache_size = 10; BEGIN; \
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) \
         INSERT INTO t (v) SELECT randomblob(800) FROM c; COMMIT;",
        1,
    );
    step(
        &node,
        "db",
        Client::Rusqlite,
        mode,
        "PRAGMA cache_size = 10; UPDATE t SET v = randomblob(800);",
        1,
    );
    assert_eq!(node.txid("db"), before + 2);
    assert_eq!(count(&node, "db", "t"), 1000);
    node.check_consistent("db");
}

/// A rolled-back transaction that spilled pages (`cache_size=2`) leaves the rows unchanged and
/// the position consistent with the file (TestMultiNode_Halt/RollbackWithWrittenWAL, on one
/// node).
fn rollback_after_spill(mode: &str) {
    let node = MountedNode::start();
    init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "INSERT INTO t (v) VALUES (randomblob(100));",
        1,
    );
    let before = node.check_consistent("db");
    for client in Client::ALL {
        client
            .run(
                &node.db_path("db"),
                Some(mode),
                "PRAGMA cache_size = 2; BEGIN; \
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) \
                 INSERT INTO t (v) SELECT randomblob(2000) FROM c; ROLLBACK;",
            )
            .unwrap_or_else(|e| panic!("{client:?}: {e}\n--- log ---\n{}", node.log()));
        assert_eq!(count(&node, "db", "t"), 1, "{client:?}");
        let pos = node.check_consistent("db");
        // Rolling back pages that reached the database file puts the old pages back; the
        // logical database is unchanged, so a TXID for it must carry the same checksum.
        assert_eq!(
            pos.post_apply_checksum, before.post_apply_checksum,
            "{client:?}: the rollback changed the database checksum"
        );
        assert_eq!(
            pos.txid, before.txid,
            "{client:?}: a rolled-back transaction produced a TXID (an LTX file)"
        );
    }
}

/// Page sizes 512 and 65536 (TestMultiNode_NonStandardPageSize), two databases in one mount.
fn page_sizes(mode: &str) {
    let node = MountedNode::start();
    for ps in [512u32, 65536] {
        let db = format!("db{ps}");
        let db = db.as_str();
        // The page size must be set before the first write, so before switching to WAL.
        let create = format!(
            "PRAGMA page_size = {ps}; PRAGMA journal_mode = {mode}; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);"
        );
        let before = node.txid_or_zero(db);
        Client::Rusqlite
            .run(&node.db_path(db), None, &create)
            .unwrap_or_else(|e| panic!("{db}: {e}\n--- log ---\n{}", node.log()));
        assert_eq!(node.txid(db), before + 1 + u64::from(mode == "wal"), "{db}");
        step(
            &node,
            db,
            Client::Python,
            mode,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) \
             INSERT INTO t (v) SELECT randomblob(700) FROM c;",
            1,
        );
        step(
            &node,
            db,
            Client::Cli,
            mode,
            "UPDATE t SET v = randomblob(50) WHERE id % 3 = 0;",
            1,
        );
        step(
            &node,
            db,
            Client::Rusqlite,
            mode,
            "DELETE FROM t WHERE id > 200;",
            1,
        );
        let out = step(&node, db, Client::Cli, mode, "PRAGMA page_size;", 0);
        assert_eq!(out.trim(), ps.to_string());
        assert_eq!(count(&node, db, "t"), 200);
        node.check_consistent(db);
        for f in node.ltx_files(db) {
            let (hdr, _, _) = litefs_ltx::verify(fs::File::open(&f).unwrap()).unwrap();
            assert_eq!(hdr.page_size.get(), ps, "{}", f.display());
        }
    }
}

/// Several databases in one mount, written in turn, each with its own TXID sequence.
fn several_databases(mode: &str) {
    let node = MountedNode::start();
    let dbs = ["alpha.db", "beta", "gamma-db.sqlite"];
    for db in dbs {
        init_mode(&node, db, mode);
        step(
            &node,
            db,
            Client::Cli,
            mode,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
            1,
        );
    }
    for round in 0..3 {
        for (i, db) in dbs.iter().enumerate() {
            let client = Client::ALL[(round + i) % 3];
            let sql = format!("INSERT INTO t (v) VALUES ('{db} {round}');");
            step(&node, db, client, mode, &sql, 1);
        }
    }
    let base = u64::from(mode == "wal") + 1;
    for db in dbs {
        assert_eq!(count(&node, db, "t"), 3);
        assert_eq!(node.check_consistent(db).txid.get(), base + 3, "{db}");
    }
    let ls = node.ls();
    for db in dbs {
        assert!(ls.contains(&db.to_owned()), "{ls:?}");
        // Not listed, readable by name.
        assert!(!ls.contains(&format!("{db}-pos")), "{ls:?}");
        assert_eq!(node.pos(db).txid.get(), base + 3);
    }
}

/// `rm` of a database through the mount (connections closed) drops it; a database of the
/// same name can be created again and starts empty (TestSingleNode_DropDB). LiteFS records
/// the drop as one deletion LTX file (commit 0), so TXIDs go on from there.
fn drop_and_recreate(mode: &str) {
    let mut node = MountedNode::start();
    init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE old (v TEXT);",
        1,
    );
    step(
        &node,
        "db",
        Client::Python,
        mode,
        "INSERT INTO old VALUES ('a'), ('b');",
        1,
    );
    let before = node.check_consistent("db");

    fs::remove_file(node.db_path("db")).unwrap_or_else(|e| {
        panic!(
            "rm of the database through the mount: {e}\n--- log ---\n{}",
            node.log()
        )
    });
    let ls = node.ls();
    assert!(
        !ls.iter().any(|n| n.starts_with("db")),
        "after rm, ls still shows {ls:?}"
    );
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let p = node.mnt().join(format!("db{suffix}"));
        assert!(
            !p.exists(),
            "{} exists after rm of the database",
            p.display()
        );
    }
    let files = node.ltx_files("db");
    let last = files.last().expect("ltx files");
    let (hdr, trailer, pages) = litefs_ltx::verify(fs::File::open(last).unwrap()).unwrap();
    assert_eq!(
        hdr.max_txid.get(),
        before.txid.get() + 1,
        "deletion LTX file"
    );
    assert_eq!(hdr.commit, 0, "deletion LTX file has commit 0");
    assert_eq!(pages, 0);
    assert_eq!(
        trailer.post_apply_checksum,
        litefs_ltx::Checksum::EMPTY_DATABASE
    );

    // The same name again: a new, empty database.
    // Read without setting the journal mode: switching a new database to WAL writes.
    let out = Client::Rusqlite
        .run(
            &node.db_path("db"),
            None,
            "SELECT count(*) FROM sqlite_master;",
        )
        .unwrap();
    assert_eq!(out.trim(), "0", "the re-created database is not empty");
    let txid = node.txid_or_zero("db");
    assert!(
        txid == 0 || txid == before.txid.get() + 1,
        "reading the dropped database moved its TXID to {txid}"
    );
    if mode == "wal" {
        Client::Cli
            .run(&node.db_path("db"), Some("wal"), "SELECT 1;")
            .unwrap();
    }
    let wal = u64::from(mode == "wal");
    Client::Python
        .run(
            &node.db_path("db"),
            Some(mode),
            "CREATE TABLE new (v TEXT); INSERT INTO new VALUES ('c');",
        )
        .unwrap();
    let pos = node.check_consistent("db");
    assert_eq!(pos.txid.get(), before.txid.get() + 1 + wal + 2);
    let out = Client::Cli
        .run(
            &node.db_path("db"),
            Some(mode),
            "SELECT name FROM sqlite_master;",
        )
        .unwrap();
    assert_eq!(out.trim(), "new");

    node.restart();
    assert_eq!(node.pos("db"), pos);
    node.check_consistent("db");
    let out = Client::Cli
        .run(&node.db_path("db"), Some(mode), "SELECT v FROM new;")
        .unwrap();
    assert_eq!(out.trim(), "c");
}

/// Rows and positions survive a clean restart; TXIDs go on from there.
fn restart_keeps_rows_and_pos(mode: &str) {
    let mut node = MountedNode::start();
    init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    for client in Client::ALL {
        step(
            &node,
            "db",
            client,
            mode,
            "INSERT INTO t (v) VALUES (randomblob(3000));",
            1,
        );
    }
    let pos = node.check_consistent("db");
    let contents = "SELECT count(*), sum(length(v)), group_concat(hex(v)) FROM t;";
    let sum = Client::Cli
        .run(&node.db_path("db"), Some(mode), contents)
        .unwrap();
    for round in 0..2 {
        node.restart();
        assert_eq!(node.pos("db"), pos, "position changed by restart {round}");
        assert_eq!(node.check_consistent("db"), pos);
        let again = Client::Cli
            .run(&node.db_path("db"), Some(mode), contents)
            .unwrap();
        assert_eq!(again, sum, "rows changed by restart {round}");
    }
    step(
        &node,
        "db",
        Client::Rusqlite,
        mode,
        "INSERT INTO t (v) VALUES ('after restart');",
        1,
    );
    let after = node.check_consistent("db");
    assert_eq!(after.txid.get(), pos.txid.get() + 1);
    node.restart();
    assert_eq!(node.pos("db"), after);
    assert_eq!(count(&node, "db", "t"), 4);
    node.stop();
}

/// `ls` of the mount (after LiteFS's TestFileSystem_ReadDir): each database and its
/// `-journal`, `-wal` and `-shm` while those files exist, as a local directory would (not
/// `-pos`, unlike LiteFS); `.lag` is a dot file.
fn readdir(mode: &str) {
    let node = MountedNode::start();
    let mut conns = Vec::new();
    for db in ["db0", "db1"] {
        let conn = rusqlite::Connection::open(node.db_path(db)).unwrap();
        let _: String = conn
            .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get(0))
            .unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        conns.push(conn);
    }
    // As a local directory would show them: `-pos` and `-lock` are not listed (a difference
    // from LiteFS, so that globs such as `db*` match what they match on local disk), but stay
    // readable by name.
    let open_suffixes: &[&str] = match mode {
        "delete" => &[""],
        "truncate" | "persist" => &["", "-journal"],
        "wal" => &["", "-shm", "-wal"],
        _ => unreachable!(),
    };
    for db in ["db0", "db1"] {
        assert_eq!(
            fs::read(node.mnt().join(format!("{db}-pos")))
                .unwrap()
                .len(),
            34
        );
    }
    let want = |suffixes: &[&str]| -> Vec<String> {
        ["db0", "db1"]
            .iter()
            .flat_map(|db| suffixes.iter().map(move |s| format!("{db}{s}")))
            .collect()
    };
    assert_eq!(node.ls(), want(open_suffixes), "ls with open connections");

    let out = Command::new("ls")
        .arg("-a")
        .arg(node.mnt())
        .output()
        .unwrap();
    let all: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(all.contains(&".lag".to_owned()), "ls -a: {all:?}");
    assert!(
        !all.contains(&".primary".to_owned()),
        "ls -a on the primary: {all:?}"
    );
    assert_eq!(
        fs::read_to_string(node.mnt().join(".lag")).unwrap(),
        "+000000000\n"
    );
    assert_eq!(fs::metadata(node.mnt().join("db0-pos")).unwrap().len(), 34);

    drop(conns);
    // Closing the last connection checkpoints and removes the WAL and the shm; the
    // rollback journals stay as they were.
    let closed_suffixes: &[&str] = match mode {
        "delete" | "wal" => &[""],
        _ => &["", "-journal"],
    };
    assert_eq!(node.ls(), want(closed_suffixes), "ls after closing");
    for db in ["db0", "db1"] {
        node.check_consistent(db);
    }
}

/// journal_mode=MEMORY and OFF keep no journal file, so no commit can be seen: their writes
/// are recorded when SQLite syncs or closes the database file, as one transaction of the pages
/// they changed (LiteFS refuses them). From whichever mode the database was in before (leaving
/// WAL for MEMORY or OFF rewrites page 1 without a journal), each client's writes succeed as on
/// a local disk, and once it closed the database the position matches the file.
fn no_journal_writes_are_captured(mode: &str) {
    let mut node = MountedNode::start();
    init_mode(&node, "db", mode);
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "INSERT INTO t (v) VALUES ('before');",
        1,
    );
    node.check_consistent("db");
    let mut failures = Vec::new();
    for bad in ["memory", "off"] {
        for client in Client::ALL {
            for (write, added) in [
                ("INSERT INTO t (v) VALUES ('no journal');", 1),
                (
                    "PRAGMA cache_size = 2; BEGIN; \
                     WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) \
                     INSERT INTO t (v) SELECT randomblob(2000) FROM c; COMMIT;",
                    50,
                ),
            ] {
                let before = node.pos("db");
                let rows_before = count(&node, "db", "t");
                // The first output line is the journal mode SQLite switched to.
                let sql = format!("PRAGMA journal_mode = {bad}; {write}");
                let what = format!("{client:?}, {mode} then `{sql}`");
                let res = client.run(&node.db_path("db"), Some(mode), &sql);
                let pos = node.pos("db");
                let mut wrong = Vec::new();
                match &res {
                    Ok(out) if out.lines().next() == Some(bad) => {}
                    Ok(out) => wrong.push(format!("SQLite answered {:?}", out.lines().next())),
                    Err(e) => wrong.push(format!("the write failed: {}", e.trim())),
                }
                if pos.txid.get() <= before.txid.get() {
                    wrong.push(format!("TXID did not move from {}", before.txid));
                }
                let rows = count(&node, "db", "t");
                if rows != rows_before + added {
                    wrong.push(format!("rows {rows_before} -> {rows}, expected +{added}"));
                }
                let sum = node.db_checksum("db");
                if sum != pos.post_apply_checksum {
                    wrong.push(format!(
                        "database file (checksum {sum}) does not match -pos {pos}"
                    ));
                }
                if !wrong.is_empty() {
                    failures.push(format!("{what}: {}", wrong.join("; ")));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "writes without a journal:\n{}\n--- log ---\n{}",
        failures.join("\n"),
        node.log()
    );
    node.check_consistent("db");
    // Back to the database's own mode: ordinary transactions again, one TXID each.
    let switch = u64::from(mode == "wal");
    step(
        &node,
        "db",
        Client::Python,
        mode,
        "INSERT INTO t (v) VALUES ('after');",
        1 + switch,
    );
    step(
        &node,
        "db",
        Client::Python,
        mode,
        "INSERT INTO t (v) VALUES ('after');",
        1,
    );
    node.check_consistent("db");
    node.restart();
    node.check_consistent("db");
}

macro_rules! per_mode {
    ($mode:ident: $($scenario:ident),* $(,)?) => {
        mod $mode {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(stringify!($mode));
                }
            )*
        }
    };
}

per_mode!(delete: txid_per_transaction, vacuum, multiple_journal_segments, rollback_after_spill,
    page_sizes, several_databases, drop_and_recreate, restart_keeps_rows_and_pos, readdir,
    no_journal_writes_are_captured);
per_mode!(truncate: txid_per_transaction, vacuum, multiple_journal_segments, rollback_after_spill,
    page_sizes, several_databases, drop_and_recreate, restart_keeps_rows_and_pos, readdir,
    no_journal_writes_are_captured);
per_mode!(persist: txid_per_transaction, vacuum, multiple_journal_segments, rollback_after_spill,
    page_sizes, several_databases, drop_and_recreate, restart_keeps_rows_and_pos, readdir,
    no_journal_writes_are_captured);
per_mode!(wal: txid_per_transaction, vacuum, multiple_journal_segments, rollback_after_spill,
    page_sizes, several_databases, drop_and_recreate, restart_keeps_rows_and_pos, readdir,
    no_journal_writes_are_captured, checkpoints);

// ---------------------------------------------------------------------------------------------
// WAL only.
// ---------------------------------------------------------------------------------------------

/// `PRAGMA wal_checkpoint(PASSIVE|FULL|RESTART|TRUNCATE)` is not blocked (busy = 0), moves no
/// TXID, leaves the database file equal to the position, and writes after it keep working
/// (TestFileSystem_Checkpoint). The writer's connection stays open throughout; the checkpoint
/// runs on it, or on another client's connection.
fn checkpoints(mode: &str) {
    assert_eq!(mode, "wal");
    let node = MountedNode::start();
    let conn = rusqlite::Connection::open(node.db_path("db")).unwrap();
    let jm: String = conn
        .query_row("PRAGMA journal_mode = wal", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    assert_eq!(node.txid("db"), 1);
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);")
        .unwrap();
    let mut txid = 2;
    assert_eq!(node.txid("db"), txid);
    let checkpointers = [
        ("PASSIVE", None),
        ("FULL", Some(Client::Cli)),
        ("RESTART", None),
        ("TRUNCATE", Some(Client::Python)),
        ("PASSIVE", Some(Client::Python)),
        ("TRUNCATE", None),
        ("RESTART", Some(Client::Cli)),
    ];
    for (kind, client) in checkpointers {
        conn.execute("INSERT INTO t (v) VALUES (randomblob(5000))", [])
            .unwrap();
        txid += 1;
        assert_eq!(node.txid("db"), txid);
        let sql = format!("PRAGMA wal_checkpoint({kind});");
        let out = match client {
            None => support::mount::rusqlite_script(&conn, &sql),
            Some(c) => c.run(&node.db_path("db"), None, &sql),
        }
        .unwrap_or_else(|e| panic!("{kind} by {client:?}: {e}\n--- log ---\n{}", node.log()));
        let cols: Vec<i64> = out.trim().split('|').map(|c| c.parse().unwrap()).collect();
        assert_eq!(cols[0], 0, "{kind} by {client:?} was blocked: {out}");
        assert_eq!(
            cols[1], cols[2],
            "{kind} by {client:?} did not copy every frame: {out}"
        );
        assert_eq!(node.txid("db"), txid, "{kind} moved the TXID");
        assert_eq!(
            node.db_checksum("db"),
            node.pos("db").post_apply_checksum,
            "{kind} by {client:?}: database file != position after a full checkpoint"
        );
        if kind == "TRUNCATE" {
            let wal = node.mnt().join("db-wal");
            assert_eq!(fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
        }
        // Writes after the checkpoint, from this connection and from another client.
        conn.execute("UPDATE t SET v = randomblob(100) WHERE id = 1", [])
            .unwrap();
        txid += 1;
        step(
            &node,
            "db",
            Client::Cli,
            "wal",
            "INSERT INTO t (v) VALUES ('other');",
            1,
        );
        txid += 1;
    }
    conn.close().unwrap();
    let pos = node.check_consistent("db");
    assert_eq!(pos.txid.get(), txid);
    assert_eq!(count(&node, "db", "t"), 14);
}

// ---------------------------------------------------------------------------------------------
// Compression, and the crash loop.
// ---------------------------------------------------------------------------------------------

/// With `data.compress: true` the LTX files are LZ4-compressed and still verify and chain.
#[test]
fn compressed_ltx_files() {
    let mut node = MountedNode::start_with(NodeOptions {
        compress: true,
        ..NodeOptions::default()
    });
    for (db, mode) in [("rollback", "delete"), ("wal", "wal")] {
        init_mode(&node, db, mode);
        step(&node, db, Client::Cli, mode, "CREATE TABLE t (v BLOB);", 1);
        step(
            &node,
            db,
            Client::Python,
            mode,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) \
             INSERT INTO t SELECT zeroblob(1000) FROM c;",
            1,
        );
        node.check_consistent(db);
    }
    node.restart();
    node.check_consistent("rollback");
    node.check_consistent("wal");
}

/// A burst of WAL commits shares LTX files (each named by its TXID range) while TXIDs still
/// count transactions; a commit after a pause gets a file of its own; the files verify, chain,
/// rebuild the database, and survive a restart.
#[test]
fn a_burst_of_wal_commits_shares_ltx_files() {
    const BURST: u64 = 3000;
    // strict-verify writes every LTX file at its commit: no batching then.
    let mut node = MountedNode::start_with(NodeOptions {
        compress: true,
        strict_verify: false,
        ..NodeOptions::default()
    });
    let base = init_mode(&node, "db", "wal");
    step(
        &node,
        "db",
        Client::Cli,
        "wal",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    support::mount::insert_burst(&node.db_path("db"), BURST);
    let end = base + 1 + BURST;
    assert_eq!(node.txid("db"), end, "one TXID per transaction");
    let pos = node.check_consistent("db");
    let files = node.check_ltx_chain("db", pos);
    assert!(
        files < end,
        "{end} transactions in {files} LTX files: the burst was not batched"
    );
    // One transaction after a pause: its own file, written without waiting for another.
    let before = node.txid("db");
    step(
        &node,
        "db",
        Client::Cli,
        "wal",
        "INSERT INTO t (v) VALUES (randomblob(100));",
        1,
    );
    let single = format!("{:016x}-{:016x}.ltx", before + 1, before + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node
        .ltx_files("db")
        .iter()
        .any(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == single))
    {
        assert!(Instant::now() < deadline, "no {single} after a lone commit");
        std::thread::sleep(Duration::from_millis(5));
    }
    node.check_consistent("db");
    // Replayed from nothing, the files give the same database.
    let replay = tempfile::tempdir().unwrap();
    let out = Command::new(support::bin())
        .args(["ltx", "apply", "-db"])
        .arg(replay.path().join("db"))
        .args(node.ltx_files("db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ltx apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.restart();
    let again = node.check_consistent("db");
    assert_eq!(again.txid.get(), before + 1);
    assert_eq!(count(&node, "db", "t"), BURST + 1);
}

/// The writer for the crash loop: inserts ids `start, start+1, ...` in autocommit
/// transactions and prints each id once its commit has returned.
const CRASH_WRITER: &str = r#"
import sqlite3, sys
db, mode, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = sqlite3.connect(db, isolation_level=None, timeout=10)
con.execute("PRAGMA journal_mode=" + mode).fetchall()
con.execute("PRAGMA synchronous=FULL")
for i in range(start, start + 100000):
    con.execute("INSERT INTO t (id, v) VALUES (?, randomblob(abs(random()) % 3000))", (i,))
    print(i, flush=True)
"#;

/// `kill -9` of the mount while a writer commits, then restart, 20 times: every acknowledged
/// row is there, the database is intact, `-pos` equals the database file, and the LTX files
/// verify and are contiguous.
fn crash_loop(mode: &str) {
    const CYCLES: usize = 20;
    const BUDGET: Duration = Duration::from_secs(50);
    let started = Instant::now();
    let mut rng = Rng::from_env_or_time();
    let mut node = MountedNode::start();
    let setup = init_mode(&node, "db", mode) + 1;
    step(
        &node,
        "db",
        Client::Cli,
        mode,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        1,
    );
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut next_id = 1u64;
    let mut problems: Vec<String> = Vec::new();
    let mut in_flight_kept = 0;
    let mut cycles = 0;
    for cycle in 1..=CYCLES {
        if started.elapsed() > BUDGET {
            break;
        }
        let target = rng.range(1, 40) as usize;
        let mut writer = Command::new("python3")
            .arg("-c")
            .arg(CRASH_WRITER)
            .arg(node.db_path("db"))
            .arg(mode)
            .arg(next_id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_channel(&mut writer);
        let mut this_cycle = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while this_cycle.len() < target {
            let left = until.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => this_cycle.push(line.trim().parse::<u64>().unwrap()),
                Err(_) => {
                    let _ = writer.kill();
                    let out = writer.wait_with_output().unwrap();
                    panic!(
                        "cycle {cycle}: the writer stopped after {} of {target} commits: {}\n\
                         --- log ---\n{}",
                        this_cycle.len(),
                        String::from_utf8_lossy(&out.stderr),
                        node.log()
                    );
                }
            }
        }
        // Jitter, so that the kill lands anywhere in the next commit, not only at its start.
        std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
        node.kill9();
        if wait_deadline(&mut writer, Duration::from_secs(10)).is_none() {
            let _ = writer.kill();
            problems.push(format!("cycle {cycle}: the writer hung after the kill"));
            let _ = writer.wait();
        }
        // Commits that returned between the kill and the writer's first error count too.
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
            this_cycle.push(line.trim().parse::<u64>().unwrap());
        }
        acked.extend(&this_cycle);
        let last_acked = *this_cycle.last().unwrap();

        node.start_again();
        let pos = node.pos("db");
        // Start-up recovery leaves the WAL checkpointed (LiteFS: DB.Open -> recover), so the
        // database file alone is at the position before any client connects.
        let sum = node.db_checksum("db");
        if sum != pos.post_apply_checksum {
            problems.push(format!(
                "cycle {cycle}: right after restart, before any client: -pos {pos} != database \
                 checksum {sum} ({:?})",
                litefs_ltx::dbfile::checksum_file(&node.db_path("db")).map(|(i, _)| i)
            ));
        }
        let conn = rusqlite::Connection::open(node.db_path("db")).unwrap();
        let ic: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| {
                panic!(
                    "cycle {cycle}: integrity_check: {e}\n{}\n--- log ---\n{}",
                    problems.join("\n"),
                    node.log()
                )
            });
        let ids: Vec<u64> = conn
            .prepare("SELECT id FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        conn.close().unwrap();
        if ic != "ok" {
            problems.push(format!("cycle {cycle}: integrity_check: {ic}"));
        }
        let after = node.pos("db");
        if after != pos {
            problems.push(format!(
                "cycle {cycle}: reading moved -pos {pos} -> {after}"
            ));
        }
        let sum = node.db_checksum("db");
        if sum != after.post_apply_checksum {
            problems.push(format!(
                "cycle {cycle}: -pos {after} != database checksum {sum} after restart"
            ));
        }
        node.check_ltx_chain("db", after);
        let present: BTreeSet<u64> = ids.iter().copied().collect();
        let missing: Vec<u64> = this_cycle
            .iter()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "cycle {cycle}: acknowledged ids {missing:?} missing after kill -9 and restart \
                 (writer acknowledged {}..={last_acked}, TXID after restart {})",
                this_cycle[0], after.txid
            ));
        }
        let all_missing = acked.iter().filter(|id| !present.contains(id)).count();
        if all_missing > missing.len() {
            problems.push(format!(
                "cycle {cycle}: ids acknowledged in earlier cycles are gone ({all_missing})"
            ));
        }
        let max = ids.last().copied().unwrap_or(0);
        if ids != (1..=max).collect::<Vec<_>>() {
            problems.push(format!("cycle {cycle}: ids are not 1..={max}"));
        }
        if ids.len() as u64 + setup != after.txid.get() {
            problems.push(format!(
                "cycle {cycle}: {} rows but TXID {} (expected rows + {setup})",
                ids.len(),
                after.txid
            ));
        }
        if max > last_acked {
            in_flight_kept += 1;
        }
        next_id = max.max(last_acked) + 1;
        cycles = cycle;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "crash loop ({mode}): {cycles} kill -9 cycles in {elapsed:.1?}, {} acknowledged commits, \
         {} rows at the end; the unacknowledged in-flight commit survived {in_flight_kept} kills",
        acked.len(),
        count(&node, "db", "t")
    );
    println!("crash loop ({mode}): {cycles} cycles in {elapsed:.1?}");
    assert!(
        problems.is_empty(),
        "crash loop ({mode}), {cycles} cycles:\n{}\n--- log ---\n{}",
        problems.join("\n"),
        node.log()
    );
    assert_eq!(cycles, CYCLES, "the crash loop ran out of time");
    node.stop();
}

#[test]
fn crash_loop_wal() {
    crash_loop("wal");
}

#[test]
fn crash_loop_delete() {
    crash_loop("delete");
}

/// Looking up `<db>-pos` (or the database) before the database exists must not hide it once
/// the database is created: the first client to check for a database often does exactly that.
#[test]
fn names_looked_up_before_create_appear_after() {
    let node = MountedNode::start();
    for name in ["db", "db-pos"] {
        let p = node.mnt().join(name);
        assert!(!p.exists(), "{name} before the database exists");
    }
    Client::Cli
        .run(&node.db_path("db"), Some("delete"), "CREATE TABLE t (x);")
        .unwrap();
    assert!(node.ls().contains(&"db".to_owned()), "{:?}", node.ls());
    let pos = node.mnt().join("db-pos");
    match fs::read_to_string(&pos) {
        Ok(text) => assert_eq!(text.len(), 34, "{text:?}"),
        Err(e) => panic!(
            "db-pos is listed but cannot be opened after a lookup before the database \
             existed: {e}"
        ),
    }
    node.check_consistent("db");
}

/// A node killed with `kill -9` leaves a dead mount behind ("transport endpoint is not
/// connected"); the next start unmounts it by itself and serves the same data.
#[test]
fn restart_after_crash_unmounts_the_dead_mount() {
    let mut node = MountedNode::start();
    support::sqlite3(
        &node.db_path("db"),
        "CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    );
    let pos = node.pos("db");
    node.kill9_leaving_mount();
    assert!(
        fs::read_dir(node.mnt()).is_err(),
        "the dead mount should not answer"
    );
    node.start_again();
    assert_eq!(node.pos("db"), pos);
    assert_eq!(
        support::sqlite3(&node.db_path("db"), "SELECT count(*) FROM t").trim(),
        "1"
    );
    node.stop();
}

/// chmod, chown and utimes on a database are kept and reported as on a local directory, and a
/// new database gets the mode SQLite asked for: the same steps on a plain directory and on the
/// mount give the same `stat`.
#[test]
fn database_metadata_like_a_local_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let stat_after = |dir: &std::path::Path| {
        let db = dir.join("meta.db");
        support::sqlite3(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
        let created = fs::metadata(&db).unwrap().mode() & 0o7777;
        fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&db, Some(1234), Some(5678)).unwrap();
        let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        fs::File::options()
            .write(true)
            .open(&db)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
            .unwrap();
        let m = fs::metadata(&db).unwrap();
        (
            created,
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.mtime(),
            m.atime(),
            m.len(),
        )
    };
    let on_plain = stat_after(plain.path());
    let on_mount = stat_after(&node.mnt());
    assert_eq!(
        on_mount, on_plain,
        "(created mode, mode, uid, gid, mtime, atime, size)"
    );
    // And it is still a working database.
    assert_eq!(
        support::sqlite3(&node.db_path("meta.db"), "SELECT count(*) FROM t").trim(),
        "1"
    );
    node.check_consistent("meta.db");
}

/// A transaction over two attached databases commits through SQLite's super-journal
/// (`<db>-mj<hex>`), a file that is not a database: it is kept on this node only, and both
/// databases record the transaction. Same rows as on a plain directory, and no file left
/// behind.
#[test]
fn attach_multi_database_transaction() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let script = |dir: &std::path::Path| {
        let out = Command::new("sqlite3")
            .arg(dir.join("main.db"))
            .arg(format!(
                "ATTACH '{}' AS aux; \
                 CREATE TABLE main.t(x); CREATE TABLE aux.u(y); \
                 BEGIN; INSERT INTO main.t VALUES (1); INSERT INTO aux.u VALUES (2); COMMIT; \
                 SELECT (SELECT count(*) FROM main.t), (SELECT count(*) FROM aux.u);",
                dir.join("aux.db").display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(script(&node.mnt()), script(plain.path()));
    // CREATE TABLE in each, then the transaction over both.
    assert_eq!(node.txid("main.db"), 2);
    assert_eq!(node.txid("aux.db"), 2);
    node.check_consistent("main.db");
    node.check_consistent("aux.db");
    let mut plain_ls: Vec<String> = fs::read_dir(plain.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    plain_ls.sort();
    assert_eq!(node.ls(), plain_ls);
}

/// SQLite's own whole-database features give the same results through the mount as on a plain
/// directory, and every database they write through the mount is captured: `VACUUM INTO`, the
/// backup API (`.backup` into the mount, `.restore` of a mount database), journal mode
/// switches in both directions, and memory-mapped reads.
#[test]
fn sqlite_features_like_a_local_directory() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("src.db");
    support::sqlite3(
        &source,
        "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c \
         WHERE i < 500) INSERT INTO t SELECT randomblob(300) FROM c;",
    );
    let run = |dir: &std::path::Path| -> Vec<String> {
        let d = |n: &str| dir.join(n).display().to_string();
        let mut out = Vec::new();
        support::sqlite3(&source, &format!("VACUUM INTO '{}'", d("vacuumed.db")));
        out.push(support::sqlite3(
            &dir.join("vacuumed.db"),
            "SELECT count(*) FROM t; PRAGMA integrity_check;",
        ));
        let backup = Command::new("sqlite3")
            .arg(&source)
            .arg(format!(".backup '{}'", d("backup.db")))
            .status()
            .unwrap();
        assert!(backup.success());
        out.push(support::sqlite3(
            &dir.join("backup.db"),
            "SELECT count(*) FROM t;",
        ));
        support::sqlite3(&dir.join("restored.db"), "CREATE TABLE other(y);");
        let restore = Command::new("sqlite3")
            .arg(dir.join("restored.db"))
            .arg(format!(".restore '{}'", d("backup.db")))
            .status()
            .unwrap();
        assert!(restore.success());
        out.push(support::sqlite3(
            &dir.join("restored.db"),
            "SELECT count(*) FROM t;",
        ));
        out.push(support::sqlite3(
            &dir.join("vacuumed.db"),
            "PRAGMA journal_mode=wal; INSERT INTO t VALUES (1); PRAGMA journal_mode=delete; \
             INSERT INTO t VALUES (2); PRAGMA journal_mode=truncate; INSERT INTO t VALUES (3); \
             PRAGMA journal_mode=wal; INSERT INTO t VALUES (4); SELECT count(*) FROM t;",
        ));
        out.push(support::sqlite3(
            &dir.join("vacuumed.db"),
            "PRAGMA mmap_size=10000000; SELECT count(*), sum(length(x)) FROM t; \
             INSERT INTO t VALUES (5); SELECT count(*) FROM t;",
        ));
        out
    };
    assert_eq!(run(&node.mnt()), run(plain.path()));
    for db in ["vacuumed.db", "backup.db", "restored.db"] {
        node.check_consistent(db);
    }
}

/// `locking_mode=EXCLUSIVE` works in every journal mode (LiteFS refuses it in WAL mode), with
/// one TXID per transaction and the same rows as on a plain directory.
#[test]
fn exclusive_locking_mode_in_every_journal_mode() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    for mode in ["delete", "truncate", "persist", "wal"] {
        let name = format!("ex-{mode}.db");
        let sql = format!(
            "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode={mode}; CREATE TABLE t(x); \
             INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); SELECT count(*) FROM t;"
        );
        let on_mount = support::sqlite3(&node.db_path(&name), &sql);
        assert_eq!(
            on_mount,
            support::sqlite3(&plain.path().join(&name), &sql),
            "{mode}"
        );
        let switch = u64::from(mode == "wal");
        assert_eq!(
            node.check_consistent(&name).txid.get(),
            3 + switch,
            "{mode}"
        );
    }
}

/// `rm -f <db>*` removes a database and everything SQLite left beside it, whatever its size
/// (an empty database SQLite created but never wrote included), leaving the directory as clean
/// as a local one; each mode, compared with a plain directory.
#[test]
fn rm_glob_leaves_the_directory_clean() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let steps = |dir: &std::path::Path, mode: &str| {
        let db = dir.join(format!("{mode}.db"));
        support::sqlite3(
            &db,
            &format!("PRAGMA journal_mode={mode}; CREATE TABLE t(x); INSERT INTO t VALUES (1);"),
        );
        support::sqlite3(&dir.join(format!("empty-{mode}.db")), "SELECT 1;");
        for pattern in [format!("{mode}.db*"), format!("empty-{mode}.db*")] {
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!("cd '{}' && rm -f {pattern}", dir.display()))
                .status()
                .unwrap();
            assert!(status.success(), "rm -f {pattern} in {}", dir.display());
        }
        let mut left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        left.sort();
        left
    };
    for mode in ["delete", "truncate", "persist", "wal"] {
        assert_eq!(
            steps(&node.mnt(), mode),
            steps(plain.path(), mode),
            "{mode}"
        );
        assert!(node.ls().is_empty(), "{mode}: {:?}", node.ls());
    }
    // A name can be used again.
    support::sqlite3(&node.db_path("wal.db"), "CREATE TABLE again(x);");
    node.check_consistent("wal.db");
}
