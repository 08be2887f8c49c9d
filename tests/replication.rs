//! Replication end to end: real `litefs-rs mount` processes on 127.0.0.1 with the static lease
//! (one primary, replicas following it over LiteFS's `/stream` protocol), real SQLite clients
//! writing on the primary and reading on the replicas, in every journal mode (LiteFS's
//! TestMultiNode scenarios that fit a static lease).
//!
//! Every test runs as root (FUSE). Waits poll with a deadline; nothing sleeps a fixed time
//! before asserting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use litefs_ltx::Pos;
use support::cluster::{
    metrics, pos_or_zero, primary, replica_of, sql, wait_caught_up, wait_metric, CATCH_UP,
};
use support::mount::{Client, MountedNode, NodeOptions, Role};

const MODES: [&str; 4] = ["delete", "truncate", "persist", "wal"];

fn count(node: &MountedNode, db: &str) -> String {
    sql(
        node,
        db,
        None,
        "SELECT count(*), coalesce(sum(length(v)), 0) FROM t;",
    )
}

/// Creates `<mode>.db` on the primary in journal mode `mode`, with one row, and waits until
/// `replicas` have it; returns its name.
fn seed(p: &MountedNode, replicas: &[&MountedNode], mode: &str) -> String {
    let db = format!("{mode}.db");
    sql(
        p,
        &db,
        Some(mode),
        "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(p, replicas, &db);
    db
}

/// Rows written on the primary appear on two replicas, transaction by transaction, in every
/// journal mode; the replicas' databases and LTX files match their positions, `.primary`
/// names the primary on replicas only, and `.lag` is small once caught up.
#[test]
fn replicas_follow_the_primary_in_every_journal_mode() {
    let p = primary();
    let r1 = replica_of(&p);
    let r2 = replica_of(&p);
    for mode in MODES {
        let db = format!("{mode}.db");
        sql(
            &p,
            &db,
            Some(mode),
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        );
        for i in 0..5 {
            sql(
                &p,
                &db,
                Some(mode),
                &format!("INSERT INTO t (v) VALUES (randomblob({}));", 100 + i * 1000),
            );
        }
        let pos = wait_caught_up(&p, &[&r1, &r2], &db);
        assert_eq!(pos.txid.get(), 6 + u64::from(mode == "wal"), "{mode}");
        for r in [&r1, &r2] {
            assert_eq!(count(r, &db), count(&p, &db), "{mode}");
            r.check_consistent(&db);
        }
    }
    assert_eq!(
        fs::read_to_string(r1.mnt().join(".primary")).unwrap(),
        format!("primary-{}\n", p.port())
    );
    assert!(!p.mnt().join(".primary").exists());
    let lag: i64 = fs::read_to_string(r1.mnt().join(".lag"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((0..5_000).contains(&lag), ".lag {lag}");
    // The metrics say the same, with LiteFS's names.
    let on_primary = metrics(&p);
    assert!(on_primary.contains("litefs_is_primary 1"), "{on_primary}");
    assert!(
        on_primary.contains("litefs_subscriber_count 2"),
        "{on_primary}"
    );
    assert!(
        on_primary.contains("litefs_http_stream_count 2"),
        "{on_primary}"
    );
    assert!(
        on_primary.contains("litefs_db_commit_count{db=\"wal.db\"} 7"),
        "{on_primary}"
    );
    let on_replica = metrics(&r1);
    assert!(on_replica.contains("litefs_is_primary 0"), "{on_replica}");
    assert!(
        on_replica.contains("litefs_db_txid{db=\"delete.db\"} 6"),
        "{on_replica}"
    );
    // One file a transaction, or fewer when the primary wrote a burst as one file.
    let files = r1.ltx_files("wal.db").len();
    assert!((1..=7).contains(&files), "{files} LTX files");
    assert!(
        on_replica.contains(&format!("litefs_db_ltx_count{{db=\"wal.db\"}} {files}")),
        "{on_replica}"
    );
}

/// A burst of WAL commits on the primary travels as the primary's range files: each replica
/// ends with the same LTX files (names, so the same TXID boundaries everywhere), the same
/// position and the same rows, with fewer files than transactions.
#[test]
fn a_burst_of_wal_commits_replicates_as_range_files() {
    const BURST: u64 = 3000;
    // strict-verify writes every LTX file at its commit: no batching then.
    let p = MountedNode::start_with(NodeOptions {
        strict_verify: false,
        ..NodeOptions::default()
    });
    let r1 = replica_of(&p);
    let r2 = replica_of(&p);
    sql(
        &p,
        "db",
        Some("wal"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
    );
    support::mount::insert_burst(&p.db_path("db"), BURST);
    let pos = wait_caught_up(&p, &[&r1, &r2], "db");
    assert_eq!(pos.txid.get(), 2 + BURST, "one TXID per transaction");
    // The files of the burst (TXID 3 on; the first two may reach a replica as a snapshot).
    let names = |n: &MountedNode| -> Vec<String> {
        n.ltx_files("db")
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|name| litefs_ltx::parse_filename(name).is_ok_and(|(min, _)| min.get() > 2))
            .collect()
    };
    let on_primary = names(&p);
    assert!(
        (on_primary.len() as u64) < BURST,
        "{BURST} transactions in {} LTX files: the burst was not batched",
        on_primary.len()
    );
    for r in [&r1, &r2] {
        assert_eq!(names(r), on_primary, "a replica's LTX files");
        assert_eq!(count(r, "db"), count(&p, "db"));
        r.check_consistent("db");
    }
    p.check_consistent("db");
}

/// A replica that joins late gets a snapshot (every page, TXIDs 1 to the primary's), then the
/// transactions that follow one by one, in every journal mode.
#[test]
fn a_late_replica_gets_a_snapshot_then_transactions() {
    let p = primary();
    for mode in MODES {
        let db = format!("{mode}.db");
        sql(
            &p,
            &db,
            Some(mode),
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        );
        for _ in 0..20 {
            sql(
                &p,
                &db,
                Some(mode),
                "INSERT INTO t (v) VALUES (randomblob(3000));",
            );
        }
    }
    let r = replica_of(&p);
    for mode in MODES {
        let db = format!("{mode}.db");
        let pos = wait_caught_up(&p, &[&r], &db);
        let files = r.ltx_files(&db);
        assert_eq!(files.len(), 1, "{mode}: {files:?}");
        assert_eq!(
            files[0].file_name().unwrap().to_str().unwrap(),
            format!("{}-{}.ltx", litefs_ltx::TXID::ONE, pos.txid),
            "{mode}"
        );
        sql(&p, &db, Some(mode), "INSERT INTO t (v) VALUES ('after');");
        wait_caught_up(&p, &[&r], &db);
        assert_eq!(r.ltx_files(&db).len(), 2, "{mode}");
        assert_eq!(count(&r, &db), count(&p, &db), "{mode}");
        r.check_consistent(&db);
    }
}

/// Writes on a replica fail with SQLITE_READONLY ("attempt to write a readonly database") in
/// every journal mode, WAL included, and change nothing; so does creating a database.
#[test]
fn writes_on_a_replica_are_read_only_errors() {
    let p = primary();
    let r = replica_of(&p);
    for mode in MODES {
        let db = format!("{mode}.db");
        sql(
            &p,
            &db,
            Some(mode),
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (1);",
        );
        let pos = wait_caught_up(&p, &[&r], &db);
        for client in Client::ALL {
            let err = client
                .run(&r.db_path(&db), None, "INSERT INTO t VALUES (2);")
                .expect_err("a write on a replica succeeded");
            assert!(
                err.contains("readonly database") || err.contains("READONLY"),
                "{mode} {client:?}: {err}"
            );
        }
        assert_eq!(pos_or_zero(&r, &db), pos);
        assert_eq!(count(&r, &db), count(&p, &db));
    }
    let created = Client::Cli.run(&r.db_path("new.db"), None, "CREATE TABLE t (x);");
    assert!(created.is_err(), "{created:?}");
    assert_eq!(pos_or_zero(&r, "new.db"), Pos::ZERO);
}

/// Dropping a database on the primary drops it on the replica; creating it again replicates
/// again (page size 512 the second time), in every journal mode.
#[test]
fn drop_and_recreate_propagate() {
    let p = primary();
    let r = replica_of(&p);
    for mode in MODES {
        let db = seed(&p, &[&r], mode);
        assert!(r.db_path(&db).exists(), "{mode}");
        let rm = Command::new("sh")
            .arg("-c")
            .arg(format!("rm -f '{}'*", p.db_path(&db).display()))
            .status()
            .unwrap();
        assert!(rm.success());
        let until = Instant::now() + CATCH_UP;
        while r.db_path(&db).exists() {
            assert!(
                Instant::now() < until,
                "{db} still on the replica\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The page size first: a database in WAL mode keeps the one it was created with.
        sql(
            &p,
            &db,
            None,
            &format!(
                "PRAGMA page_size = 512; PRAGMA journal_mode = {mode}; \
                 CREATE TABLE t (v BLOB); INSERT INTO t VALUES (randomblob(2000));"
            ),
        );
        wait_caught_up(&p, &[&r], &db);
        assert_eq!(count(&r, &db), count(&p, &db), "{mode}");
        assert_eq!(
            sql(&r, &db, None, "PRAGMA page_size;").trim(),
            "512",
            "{mode}"
        );
        r.check_consistent(&db);
    }
}

/// `lease.databases` limits what a replica follows; databases in subdirectories replicate
/// under their relative path (one journal mode per database, all four).
#[test]
fn several_databases_and_the_databases_filter() {
    let p = primary();
    let all = replica_of(&p);
    let some = MountedNode::start_with(NodeOptions {
        role: Role::Replica(p.port()),
        databases: &["a.db", "tenants/acme.db", "c.db"],
        ..NodeOptions::default()
    });
    fs::create_dir(p.mnt().join("tenants")).unwrap();
    // One journal mode each.
    let dbs = [
        ("a.db", "wal"),
        ("b.db", "delete"),
        ("tenants/acme.db", "truncate"),
        ("c.db", "persist"),
    ];
    for (db, mode) in dbs {
        sql(
            &p,
            db,
            Some(mode),
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (1);",
        );
    }
    for (db, _) in dbs {
        wait_caught_up(&p, &[&all], db);
        assert_eq!(count(&all, db), count(&p, db));
    }
    for db in ["a.db", "tenants/acme.db", "c.db"] {
        wait_caught_up(&p, &[&some], db);
        assert_eq!(count(&some, db), count(&p, db));
        some.check_consistent(db);
    }
    assert_eq!(pos_or_zero(&some, "b.db"), Pos::ZERO);
    assert!(!some.db_path("b.db").exists());
}

/// The primary restarts mid-stream: the replica reconnects by itself and catches up; the
/// replica restarts: it resumes from its own position with the transactions it missed (every
/// journal mode).
#[test]
fn primary_and_replica_restarts() {
    let mut p = primary();
    let mut r = replica_of(&p);
    for mode in MODES {
        let db = seed(&p, &[&r], mode);
        p.restart();
        sql(&p, &db, Some(mode), "INSERT INTO t VALUES (2);");
        wait_caught_up(&p, &[&r], &db);
        r.stop();
        sql(&p, &db, Some(mode), "INSERT INTO t VALUES (3);");
        sql(&p, &db, Some(mode), "INSERT INTO t VALUES (4);");
        r.start_again();
        let pos = wait_caught_up(&p, &[&r], &db);
        assert_eq!(count(&r, &db), count(&p, &db), "{mode}");
        // Incremental: no second snapshot.
        let files = r.ltx_files(&db);
        assert_eq!(
            files.last().unwrap().file_name().unwrap().to_str().unwrap(),
            format!("{0}-{0}.ltx", pos.txid),
            "{mode}"
        );
        r.check_consistent(&db);
    }
}

/// A replica whose history differs from the primary's (it was written to as a primary of its
/// own) is re-synced by snapshot, and its own LTX files are kept under `ltx/diverged/`, in
/// every journal mode.
#[test]
fn divergence_is_repaired_by_snapshot_and_keeps_the_diverged_files() {
    let p = primary();
    // Another primary with its own history of the same databases.
    let mut other = primary();
    let mut own: Vec<Vec<String>> = Vec::new();
    for mode in MODES {
        let db = format!("{mode}.db");
        sql(
            &p,
            &db,
            Some(mode),
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES ('primary');",
        );
        sql(&other, &db, Some(mode), "CREATE TABLE t (v BLOB);");
        for _ in 0..3 {
            sql(
                &other,
                &db,
                Some(mode),
                "INSERT INTO t VALUES ('diverged');",
            );
        }
        own.push(
            other
                .ltx_files(&db)
                .iter()
                .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
                .collect(),
        );
    }
    let r = replica_from_data_of(&p, &mut other);
    for (mode, own) in MODES.iter().zip(own) {
        let db = format!("{mode}.db");
        wait_caught_up(&p, &[&r], &db);
        assert_eq!(
            sql(&r, &db, None, "SELECT v FROM t;").trim(),
            "primary",
            "{mode}"
        );
        r.check_consistent(&db);
        let diverged = r.db_data_dir(&db).join("ltx/diverged");
        let mut kept: Vec<String> = Vec::new();
        for dir in fs::read_dir(&diverged).unwrap() {
            for f in fs::read_dir(dir.unwrap().path()).unwrap() {
                kept.push(f.unwrap().file_name().into_string().unwrap());
            }
        }
        kept.sort();
        assert_eq!(kept, own, "{mode}");
    }
    assert!(r.log().contains("its LTX files are kept"), "{}", r.log());
}

/// LiteFS's three kinds of divergence (`TestMultiNode_PositionMismatchRecovery`) converge to
/// the primary, each keeping the replica's own files under `ltx/diverged/`: the same TXID with
/// another checksum, a replica ahead of the primary, and a replica behind whose checksum the
/// primary's next file does not continue.
#[test]
fn every_kind_of_divergence_converges_to_the_primary() {
    let p = primary();
    let mut other = primary();
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("same-txid.db", &["'p'"], &["'o'"]),
        ("replica-ahead.db", &["'p'"], &["'o1'", "'o2'", "'o3'"]),
        ("pre-apply.db", &["'p1'", "'p2'"], &["'o1'"]),
    ];
    for (db, on_primary, on_other) in cases {
        for (node, rows) in [(&p, on_primary), (&other, on_other)] {
            sql(node, db, Some("delete"), "CREATE TABLE t (v TEXT);");
            for v in rows {
                sql(
                    node,
                    db,
                    Some("delete"),
                    &format!("INSERT INTO t VALUES ({v});"),
                );
            }
        }
    }
    let r = replica_from_data_of(&p, &mut other);
    for (db, on_primary, _) in cases {
        let pos = wait_caught_up(&p, &[&r], db);
        assert_eq!(pos.txid.get(), 1 + on_primary.len() as u64, "{db}");
        assert_eq!(count(&r, db), count(&p, db), "{db}");
        assert_eq!(
            sql(&r, db, None, "SELECT group_concat(v) FROM t;"),
            sql(&p, db, None, "SELECT group_concat(v) FROM t;"),
            "{db}"
        );
        r.check_consistent(db);
        let kept = fs::read_dir(r.db_data_dir(db).join("ltx/diverged"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(kept, 1, "{db}: one folder of diverged files");
    }
}

/// Stops `other` and starts a replica of `primary` on a copy of `other`'s data directory.
fn replica_from_data_of(primary: &MountedNode, other: &mut MountedNode) -> MountedNode {
    other.stop();
    MountedNode::start_prepared(
        NodeOptions {
            role: Role::Replica(primary.port()),
            ..NodeOptions::default()
        },
        |data| copy_dir(&other.data(), data),
    )
}

/// Copies a directory tree (the data directory of a stopped node).
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Requests to `/stream` that are not from a replica get a 4xx with a message, and the node
/// keeps serving: HTTP/1.1, a missing or malformed node id, the node's own id, a garbage
/// position map.
#[test]
fn bad_stream_requests_are_refused_with_a_message() {
    let p = primary();
    let url = format!("{}/stream", p.url());
    let curl = |args: &[&str], body: &[u8]| -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let body_path = dir.path().join("body");
        fs::write(&body_path, body).unwrap();
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
            .args(args)
            .arg("--data-binary")
            .arg(format!("@{}", body_path.display()))
            .arg(&url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let (code, body) = curl(&["-H", "Litefs-Id: 0000000000000001"], b"\0\0\0\0");
    assert_eq!(code, "426", "{body}");
    let h2 = "--http2-prior-knowledge";
    let (code, body) = curl(&[h2], b"\0\0\0\0");
    assert_eq!(
        (code.as_str(), body.contains("Litefs-Id")),
        ("400", true),
        "{body}"
    );
    let (code, body) = curl(&[h2, "-H", "Litefs-Id: zz"], b"\0\0\0\0");
    assert_eq!(code, "400", "{body}");
    let (code, body) = curl(
        &[h2, "-H", "Litefs-Id: 0000000000000001"],
        b"\0\0\0\x05garbage",
    );
    assert_eq!(
        (code.as_str(), body.contains("position map")),
        ("400", true),
        "{body}"
    );
    // Still serving.
    sql(&p, "db", None, "CREATE TABLE t (v BLOB);");
    let r = replica_of(&p);
    wait_caught_up(&p, &[&r], "db");
}

/// A replica that was down while the primary's retention removed the LTX files it needed
/// rejoins by snapshot, in every journal mode.
#[test]
fn a_replica_behind_pruned_files_rejoins_by_snapshot() {
    let p = MountedNode::start_with(NodeOptions {
        retention: Some("200ms"),
        retention_monitor_interval: Some("100ms"),
        ..NodeOptions::default()
    });
    let mut r = replica_of(&p);
    for mode in MODES {
        seed(&p, &[&r], mode);
    }
    r.stop();
    for mode in MODES {
        let db = format!("{mode}.db");
        for i in 0..5 {
            sql(&p, &db, Some(mode), &format!("INSERT INTO t VALUES ({i});"));
        }
    }
    let until = Instant::now() + CATCH_UP;
    for mode in MODES {
        let db = format!("{mode}.db");
        while p.ltx_files(&db).len() > 1 {
            assert!(
                Instant::now() < until,
                "retention removed nothing of {db}\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    r.start_again();
    for mode in MODES {
        let db = format!("{mode}.db");
        let pos = wait_caught_up(&p, &[&r], &db);
        assert_eq!(count(&r, &db), count(&p, &db), "{mode}");
        // As in LiteFS's TestMultiNode_RejoinWithSnapshot: one file, the snapshot.
        let files: Vec<String> = r
            .ltx_files(&db)
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            files,
            [format!("{}-{}.ltx", litefs_ltx::TXID::ONE, pos.txid)],
            "{mode}"
        );
        r.check_consistent(&db);
    }
}

/// A second stream from a node that is already streaming is refused (409), as is a stream
/// from the primary's own id (400).
#[test]
fn duplicate_and_self_streams_are_refused() {
    let p = primary();
    let url = format!("{}/stream", p.url());
    let own = fs::read_to_string(p.log_path()).unwrap();
    let own_id = own
        .split("node=")
        .nth(1)
        .and_then(|s| s.get(..16))
        .expect("node id in the log")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let empty_map = dir.path().join("positions");
    fs::write(&empty_map, [0u8; 4]).unwrap();
    let data = format!("@{}", empty_map.display());
    let post = |id: &str, max_time: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-m", max_time, "-X", "POST", "-H"])
            .arg(format!("Litefs-Id: {id}"))
            .args(["--data-binary", &data])
            .arg(&url)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(post(&own_id, "5"), "400");
    // A long-lived stream from node 2 (curl keeps reading it), then a second one.
    let mut first = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-X",
            "POST",
        ])
        .args(["-H", "Litefs-Id: 0000000000000002", "--data-binary", &data])
        .arg(&url)
        .spawn()
        .unwrap();
    wait_metric(&p, "litefs_subscriber_count 1");
    let second = post("0000000000000002", "5");
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second, "409");
}

/// A read transaction on a replica sees one state of the database: a transaction replicated
/// meanwhile waits until the reader's transaction ends, then appears (in every journal mode).
#[test]
fn a_reader_on_a_replica_sees_one_state_until_its_transaction_ends() {
    let p = primary();
    let r = replica_of(&p);
    for mode in MODES {
        let db = format!("{mode}.db");
        sql(
            &p,
            &db,
            Some(mode),
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (1);",
        );
        let before = wait_caught_up(&p, &[&r], &db);
        let mut reader = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 c.execute('BEGIN')\n\
                 print(c.execute('SELECT count(*) FROM t').fetchone()[0], flush=True)\n\
                 sys.stdin.readline()\n\
                 print(c.execute('SELECT count(*) FROM t').fetchone()[0], flush=True)\n\
                 c.execute('COMMIT')\n",
            )
            .arg(r.db_path(&db))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = support::mount::line_channel(&mut reader);
        let mut reader = KillOnDrop(reader);
        let first = lines.recv_timeout(CATCH_UP).unwrap();
        assert_eq!(first, "1", "{mode}");
        sql(&p, &db, Some(mode), "INSERT INTO t VALUES (2);");
        // The replica received it, and holds it back while the reader is in its transaction.
        wait_metric(&r, "litefs_replica_queued_count 1");
        assert_eq!(
            pos_or_zero(&r, &db),
            before,
            "{mode}: applied under a reader"
        );
        use std::io::Write as _;
        reader.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let second = lines.recv_timeout(CATCH_UP).unwrap();
        assert_eq!(second, "1", "{mode}: the reader saw the database change");
        assert!(reader.0.wait().unwrap().success());
        wait_caught_up(&p, &[&r], &db);
        assert_eq!(count(&r, &db), count(&p, &db));
    }
}

/// Kills and reaps a child process when dropped (a failed assert must not leave it running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A fake primary that answers `/stream` with `body` (HTTP/2 without TLS), for every
/// connection, until dropped. Returns its port.
struct FakePrimary {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakePrimary {
    fn start(body: Vec<u8>) -> FakePrimary {
        use std::sync::atomic::Ordering;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let body = bytes::Bytes::from(body);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                });
            }
        });
        FakePrimary {
            port,
            runtime: Some(runtime),
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakePrimary {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Garbage from the primary (an LTX body that is not an LTX file; an unknown frame type; a
/// body cut in the middle of a frame) is rejected: nothing is applied, the connection is
/// dropped with an error in the log, and the replica connects again.
#[test]
fn garbage_from_the_primary_is_rejected_and_nothing_applied() {
    let ltx_frame = |name: &str| {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b
    };
    let mut not_ltx = ltx_frame("db");
    not_ltx.extend_from_slice(&5u16.to_be_bytes());
    not_ltx.extend_from_slice(b"LTX1x");
    not_ltx.extend_from_slice(&0u16.to_be_bytes());
    let unknown_type = 99u32.to_be_bytes().to_vec();
    let mut cut = ltx_frame("db");
    cut.extend_from_slice(&100u16.to_be_bytes());
    cut.extend_from_slice(b"LTX1");
    for (what, body, expect) in [
        ("not an LTX file", not_ltx, "apply an LTX file to db"),
        (
            "unknown frame type",
            unknown_type,
            "unknown stream frame type 99",
        ),
        ("cut short", cut, "bad stream"),
    ] {
        let fake = FakePrimary::start(body);
        let r = MountedNode::start_with(NodeOptions {
            role: Role::Replica(fake.port),
            ..NodeOptions::default()
        });
        let until = Instant::now() + CATCH_UP;
        while fake.connections() < 2 || !r.log().contains(expect) {
            assert!(
                Instant::now() < until,
                "{what}: no error and reconnect\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pos_or_zero(&r, "db"), Pos::ZERO, "{what}");
        assert!(!r.db_path("db").exists(), "{what}");
        assert!(
            !r.db_data_dir("db").join("ltx").exists() || r.ltx_files("db").is_empty(),
            "{what}: {:?}",
            r.ltx_files("db")
        );
    }
}
