//! A full and a read-only data directory, end to end (docs/disk.md): the data directory of a
//! node on a small tmpfs, filled up with a filler file; SQLite clients through the mount get
//! SQLITE_FULL, reads go on, writes resume once space is freed; a replica whose disk fills up
//! catches up once it is freed; a read-only data directory; the cap on the LTX files
//! (`data.retention-max-size`).
//!
//! Every test runs as root (FUSE, tmpfs). Every node is stopped by its PID and every tmpfs
//! unmounted when the test ends, failed or not (the guards drop in reverse order: the node
//! first, then its filesystem). Waits poll with deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{pos_or_zero, wait_caught_up, CATCH_UP};
use support::disk::node_on_tmpfs;
use support::mount::{wait_deadline, Client, MountedNode, NodeOptions, Role};

fn opts() -> NodeOptions {
    NodeOptions {
        strict_verify: false,
        ..NodeOptions::default()
    }
}

/// The node process runs and its mount answers.
fn assert_alive(node: &MountedNode) {
    let pid = node.pid().expect("node running");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the node process {pid} is gone\n--- log ---\n{}",
        node.log()
    );
    assert!(
        fs::metadata(node.mnt().join(".primary")).is_ok()
            || fs::metadata(node.mnt().join(".lag")).is_ok()
    );
}

fn count(node: &MountedNode, db: &str, mode: Option<&str>) -> u64 {
    Client::Cli
        .run(&node.db_path(db), mode, "SELECT count(*) FROM t;")
        .unwrap_or_else(|e| panic!("read {db}: {e}\n--- log ---\n{}", node.log()))
        .trim()
        .parse()
        .unwrap()
}

/// The application's transaction fails with SQLITE_FULL on a full data directory; the node
/// keeps running and serving reads; once the filler is removed writes work again and the
/// database is consistent.
fn full_disk_in(mode: &str) {
    let mut tmpfs = None;
    let node = node_on_tmpfs(opts(), "8m", &mut tmpfs);
    let tmpfs = tmpfs.as_ref().unwrap();
    let db = "full.db";
    let m = Some(mode);
    Client::Cli
        .run(
            &node.db_path(db),
            m,
            "CREATE TABLE t (v BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20) \
             INSERT INTO t SELECT randomblob(1000) FROM n;",
        )
        .unwrap();
    let before = node.pos(db);
    // SQLite removes the WAL index (-shm) when its last connection closes, and a connection
    // that opens a WAL database on a full disk cannot create it again (SQLITE_IOERR_SHMSIZE,
    // as on any full disk; docs/disk.md): one connection stays open meanwhile.
    let keep = rusqlite::Connection::open(node.db_path(db)).unwrap();
    keep.query_row("SELECT count(*) FROM t", [], |_| Ok(()))
        .unwrap();
    let filler = tmpfs.fill();

    for client in Client::ALL {
        let started = Instant::now();
        let err = client
            .run(
                &node.db_path(db),
                m,
                "INSERT INTO t VALUES (randomblob(200000));",
            )
            .expect_err("a write on a full disk must fail");
        assert!(
            err.contains("database or disk is full"),
            "{client:?} {mode}: expected SQLITE_FULL, got: {err}\n--- log ---\n{}",
            node.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the failed write took {:?}",
            started.elapsed()
        );
        assert_alive(&node);
        assert_eq!(count(&node, db, m), 20, "{mode}: reads on a full disk");
    }
    assert_eq!(
        node.pos(db),
        before,
        "{mode}: a failed transaction moved the position"
    );
    let err = keep
        .execute("INSERT INTO t VALUES (randomblob(200000))", [])
        .expect_err("a write on a full disk must fail");
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull),
        "{mode}: {err}"
    );
    let n: u64 = keep
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
    drop(keep);

    fs::remove_file(&filler).unwrap();
    Client::Cli
        .run(
            &node.db_path(db),
            m,
            "INSERT INTO t VALUES (randomblob(200000));",
        )
        .unwrap_or_else(|e| {
            panic!(
                "{mode}: write after space was freed: {e}\n--- log ---\n{}",
                node.log()
            )
        });
    assert_eq!(count(&node, db, m), 21);
    // The LTX file of the WAL-mode commit is written just after it.
    let until = Instant::now() + CATCH_UP;
    while node.pos(db).txid.get() != before.txid.get() + 1 {
        assert!(
            Instant::now() < until,
            "{mode}: position stays at {}",
            node.pos(db)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    node.check_consistent(db);
    let tmp: Vec<_> = fs::read_dir(node.db_data_dir(db).join("ltx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

#[test]
fn full_disk_gives_sqlite_full_in_rollback_mode_and_writes_resume_when_freed() {
    full_disk_in("delete");
}

#[test]
fn full_disk_gives_sqlite_full_in_wal_mode_and_writes_resume_when_freed() {
    full_disk_in("wal");
}

/// A replica whose data directory fills up while the primary writes keeps serving what it has
/// and catches up once space is freed, to the primary's position and checksum.
#[test]
fn a_replica_on_a_full_disk_serves_reads_and_catches_up_when_freed() {
    let primary = MountedNode::start_with(opts());
    let mut tmpfs = None;
    let replica = node_on_tmpfs(
        NodeOptions {
            role: Role::Replica(primary.port()),
            ..opts()
        },
        "8m",
        &mut tmpfs,
    );
    let tmpfs = tmpfs.as_ref().unwrap();
    let db = "rep.db";
    Client::Cli
        .run(
            &primary.db_path(db),
            None,
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (randomblob(1000));",
        )
        .unwrap();
    wait_caught_up(&primary, &[&replica], db);
    let filler = tmpfs.fill();
    for _ in 0..10 {
        Client::Cli
            .run(
                &primary.db_path(db),
                None,
                "INSERT INTO t VALUES (randomblob(100000));",
            )
            .unwrap();
    }
    // The replica cannot store them: until it says its disk is full, it stays behind and
    // keeps serving what it has.
    let until = Instant::now() + CATCH_UP;
    while !replica.log().contains("No space left on device") {
        assert_alive(&replica);
        let n = count(&replica, db, None);
        assert!(
            n < 11,
            "the replica applied everything on a full disk ({n} rows)"
        );
        assert!(
            Instant::now() < until,
            "the replica's log does not say the disk is full\n--- log ---\n{}",
            replica.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_alive(&replica);
    assert!(count(&replica, db, None) < 11);
    assert_ne!(pos_or_zero(&replica, db), primary.pos(db));
    fs::remove_file(&filler).unwrap();
    let pos = wait_caught_up(&primary, &[&replica], db);
    assert_eq!(count(&replica, db, None), 11);
    assert_eq!(replica.db_checksum(db), pos.post_apply_checksum);
    assert_eq!(primary.db_checksum(db), pos.post_apply_checksum);
}

/// A read-only data directory. A running node holds its database files open for writing, so
/// the kernel refuses to remount its filesystem read-only (EBUSY): the data directory of a
/// running node does not turn read-only under it by a remount. A node started on a read-only
/// data directory fails at once with an error naming it; once it is read-write again the node
/// starts and takes writes.
#[test]
fn a_read_only_data_dir_is_refused_at_start_naming_it_and_works_once_read_write() {
    let mut tmpfs = None;
    let mut node = node_on_tmpfs(opts(), "8m", &mut tmpfs);
    let tmpfs = tmpfs.as_ref().unwrap();
    let db = "ro.db";
    Client::Cli
        .run(
            &node.db_path(db),
            None,
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (1);",
        )
        .unwrap();
    assert!(
        !tmpfs.remount("ro"),
        "the data directory of a running node was remounted read-only"
    );
    node.stop();

    assert!(tmpfs.remount("ro"));
    let started = Instant::now();
    let mut child = Command::new(support::bin())
        .arg("mount")
        .arg("-config")
        .arg(node.config_path())
        .current_dir(node.root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_deadline(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        node.force_unmount();
        panic!("a node on a read-only data directory still runs after 10s");
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.force_unmount();
    assert!(!status.unwrap().success(), "{text}");
    let data = node.data().display().to_string();
    assert!(
        text.contains(&data),
        "the error does not name {data}: {text}"
    );
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));

    assert!(tmpfs.remount("rw"));
    node.start_again();
    assert_eq!(count(&node, db, None), 1);
    Client::Cli
        .run(&node.db_path(db), None, "INSERT INTO t VALUES (2);")
        .unwrap();
    assert_eq!(count(&node, db, None), 2);
    node.check_consistent(db);
}

/// `data.retention-max-size`: under many writes the LTX files stay under the cap plus about
/// one transaction, well within `data.retention`; a replica started late, whose position is
/// older than the oldest file kept, gets a snapshot and converges.
#[test]
fn ltx_files_stay_under_retention_max_size_and_a_late_replica_converges() {
    let cap: u64 = 512 << 10;
    let primary = MountedNode::start_with(NodeOptions {
        retention_max_size: Some("512KiB"),
        ..opts()
    });
    let db = "cap.db";
    for mode in [None, Some("wal")] {
        Client::Cli
            .run(
                &primary.db_path(db),
                mode,
                "CREATE TABLE IF NOT EXISTS t (v BLOB);",
            )
            .unwrap();
        for _ in 0..60 {
            Client::Cli
                .run(
                    &primary.db_path(db),
                    mode,
                    "INSERT INTO t VALUES (randomblob(20000));",
                )
                .unwrap();
            let size: u64 = primary
                .ltx_files(db)
                .iter()
                .filter_map(|p| fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            // The newest file (about 20 KB) and one written while the check ran.
            assert!(
                size <= cap + 2 * 32_000,
                "LTX files take {size} bytes, cap {cap}"
            );
        }
        Client::Cli
            .run(
                &primary.db_path(db),
                mode,
                "PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .ok();
    }
    let first = primary.ltx_files(db)[0].clone();
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !name.starts_with("0000000000000001-"),
        "the oldest files were kept: {name}"
    );
    let replica = MountedNode::start_with(NodeOptions {
        role: Role::Replica(primary.port()),
        ..opts()
    });
    let pos = wait_caught_up(&primary, &[&replica], db);
    assert_eq!(replica.db_checksum(db), pos.post_apply_checksum);
    assert_eq!(count(&replica, db, None), 120);
}
