//! Writes from a replica under the halt lock: an application takes an OFD lock on byte 72 of
//! `<db>-lock` on a replica, writes with SQLite there, and its transactions land on the
//! primary. Commit, rollback (also after SQLite spilled pages into the WAL), the implicit
//! release when the lock file is closed, local writers on the primary waiting meanwhile,
//! `/tx` refused without the lock, `litefs-rs run -with-halt-lock-on`, and the lock calls that
//! are not supported. Real mounts, Python's sqlite3 and the sqlite3 CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::process::{Child, ChildStdin, Command, Stdio};

use support::cluster::{pos_or_zero, primary, replica_of, sql, wait_caught_up, CATCH_UP};
use support::mount::{Client, MountedNode};

/// A Python program that takes the halt lock on `argv[1]`, prints `halted`, runs the SQL
/// script `argv[2]` on one connection (printing `ok` or `error <message>`), then, by
/// `argv[3]`: `unlock` (F_UNLCK, then close), `close` (close the lock file without unlocking),
/// or `hold` (print `holding`, wait for a line on stdin, then unlock).
const HALTER: &str = r#"
import fcntl, os, sqlite3, struct, sys
db, script, end = sys.argv[1], sys.argv[2], sys.argv[3]
def flock(kind):
    return struct.pack("hhxxxxqqixxxx", kind, 0, 72, 1, 0)
fd = os.open(db + "-lock", os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, flock(fcntl.F_WRLCK))
print("halted", flush=True)
c = sqlite3.connect(db, isolation_level=None, timeout=5)
try:
    c.executescript(script)
    print("ok", flush=True)
except Exception as e:
    print("error %s" % e, flush=True)
c.close()
if end == "hold":
    print("holding", flush=True)
    sys.stdin.readline()
if end in ("unlock", "hold"):
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock(fcntl.F_UNLCK))
os.close(fd)
print("done", flush=True)
"#;

/// A running [`HALTER`].
struct Halter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Halter {
    fn start(node: &MountedNode, db: &str, script: &str, end: &str) -> Halter {
        let mut child = Command::new("python3")
            .args(["-c", HALTER])
            .arg(node.db_path(db))
            .args([script, end])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let stdin = child.stdin.take();
        let lines = support::mount::line_channel(&mut child);
        Halter {
            child,
            stdin,
            lines,
        }
    }

    /// The next line it prints (the test fails after [`CATCH_UP`]).
    fn line(&self, node: &MountedNode) -> String {
        self.lines.recv_timeout(CATCH_UP).unwrap_or_else(|_| {
            panic!(
                "the halt lock program printed nothing for {CATCH_UP:?}\n--- log ---\n{}",
                node.log()
            )
        })
    }

    /// Runs it to the end: the lines it printed, checked for `halted` and `ok`.
    fn finish(mut self, node: &MountedNode) {
        assert_eq!(self.line(node), "halted");
        let result = self.line(node);
        assert_eq!(result, "ok", "--- log ---\n{}", node.log());
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        loop {
            let l = self.line(node);
            if l == "done" {
                break;
            }
        }
        let status = support::mount::wait_deadline(&mut self.child, CATCH_UP);
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
    }
}

impl Drop for Halter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `script` on the replica under the halt lock, ending with `end` (see [`HALTER`]).
fn halted(node: &MountedNode, db: &str, script: &str, end: &str) {
    Halter::start(node, db, script, end).finish(node);
}

fn count(node: &MountedNode, db: &str) -> u64 {
    sql(node, db, None, "SELECT count(*) FROM t")
        .trim()
        .parse()
        .unwrap()
}

/// A write on `node` with SQLite waiting at most `timeout_ms` for the lock.
fn try_write(node: &MountedNode, db: &str, timeout_ms: u32) -> Result<String, String> {
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", &format!(".timeout {timeout_ms}")])
        .arg(node.db_path(db))
        .arg("INSERT INTO t(v) VALUES ('from the primary')")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn commit_rollback_and_implicit_unhalt(mode: &str) {
    let p = primary();
    let r = replica_of(&p);
    let db = "halt.db";
    sql(
        &p,
        db,
        Some(mode),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v)",
    );
    let start = wait_caught_up(&p, &[&r], db);

    // Without the lock the replica refuses writes.
    assert!(Client::Cli
        .run(&r.db_path(db), None, "INSERT INTO t(v) VALUES ('no')")
        .is_err());

    // Commit: the row is on the primary, and the replica has it (its own transaction comes
    // back from the primary and changes nothing).
    halted(&r, db, "INSERT INTO t(v) VALUES ('one');", "unlock");
    assert_eq!(count(&p, db), 1, "the primary has the replica's write");
    let after_one = wait_caught_up(&p, &[&r], db);
    assert_eq!(after_one.txid.get(), start.txid.get() + 1);
    assert_eq!(count(&r, db), 1);

    // Several transactions under one lock.
    halted(
        &r,
        db,
        "INSERT INTO t(v) VALUES ('two'); INSERT INTO t(v) VALUES ('three');",
        "unlock",
    );
    assert_eq!(count(&p, db), 3);
    let pos = wait_caught_up(&p, &[&r], db);

    // Rollback: nothing changes anywhere.
    halted(
        &r,
        db,
        "BEGIN; INSERT INTO t(v) VALUES ('never'); ROLLBACK;",
        "unlock",
    );
    // Rollback after SQLite wrote pages out mid-transaction (a tiny page cache).
    halted(
        &r,
        db,
        "PRAGMA cache_size=2; BEGIN; \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 10) \
         INSERT INTO t(v) SELECT randomblob(2000) FROM n; ROLLBACK;",
        "unlock",
    );
    assert_eq!(pos_or_zero(&p, db), pos, "a rollback changed the primary");
    assert_eq!(pos_or_zero(&r, db), pos, "a rollback changed the replica");
    assert_eq!(count(&p, db), 3);
    assert_eq!(count(&r, db), 3);

    // Closing the lock file without unlocking releases the lock: the primary's own writers
    // get their turn again.
    halted(&r, db, "INSERT INTO t(v) VALUES ('four');", "close");
    assert_eq!(count(&p, db), 4);
    try_write(&p, db, 5000).expect("the primary writes once the lock file is closed");
    wait_caught_up(&p, &[&r], db);
    assert_eq!(count(&r, db), 5);

    // While the replica holds the lock, the primary's writers wait (SQLITE_BUSY), and go on
    // once it is released.
    let mut h = Halter::start(&r, db, "INSERT INTO t(v) VALUES ('five');", "hold");
    assert_eq!(h.line(&r), "halted");
    assert_eq!(h.line(&r), "ok");
    assert_eq!(h.line(&r), "holding");
    let busy = try_write(&p, db, 200).expect_err("a primary write under the halt lock");
    assert!(busy.contains("locked"), "{busy}");
    // And the replica's writes are refused again once another process's lock is gone.
    if let Some(mut stdin) = h.stdin.take() {
        stdin.write_all(b"\n").unwrap();
    }
    while h.line(&r) != "done" {}
    try_write(&p, db, 5000).expect("the primary writes after the release");
    drop(h);
    assert!(Client::Cli
        .run(&r.db_path(db), None, "INSERT INTO t(v) VALUES ('no')")
        .is_err());

    let end = wait_caught_up(&p, &[&r], db);
    assert_eq!(count(&p, db), 7);
    assert_eq!(count(&r, db), 7);
    for n in [&p, &r] {
        assert_eq!(sql(n, db, None, "PRAGMA integrity_check").trim(), "ok");
        assert_eq!(n.check_consistent(db), end);
    }
}

#[test]
fn halt_lock_commit_rollback_and_implicit_unhalt_rollback_journal() {
    commit_rollback_and_implicit_unhalt("delete");
}

#[test]
fn halt_lock_commit_rollback_and_implicit_unhalt_wal() {
    commit_rollback_and_implicit_unhalt("wal");
}

/// `POST /tx` from a node that does not hold the halt lock is refused, and changes nothing.
#[test]
fn tx_without_the_halt_lock_is_refused() {
    let p = primary();
    let r = replica_of(&p);
    let db = "tx.db";
    sql(&p, db, None, "CREATE TABLE t(v)");
    sql(&p, db, None, "INSERT INTO t VALUES (1)");
    let pos = wait_caught_up(&p, &[&r], db);
    // A well-formed LTX file for the next transaction, written by the replica under a lock.
    halted(&r, db, "INSERT INTO t VALUES (2);", "unlock");
    let next = wait_caught_up(&p, &[&r], db);
    assert_eq!(next.txid.get(), pos.txid.get() + 1);
    let file = r
        .ltx_files(db)
        .into_iter()
        .find(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{:016x}", next.txid.get())))
        })
        .expect("the replica's LTX file of its transaction");
    let post = |query: &str, header: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/stderr",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
        ]);
        if let Some(h) = header {
            cmd.args(["-H", h]);
        }
        cmd.arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("{}/tx?{query}", p.url()));
        let out = cmd.output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, body) = post(
        &format!("name={db}&lockID=12345"),
        Some("Litefs-Id: 00000000000000AB"),
    );
    assert_eq!(code, "409", "{body}");
    assert!(body.contains("does not hold"), "{body}");
    let (code, body) = post(&format!("name={db}&lockID=12345"), None);
    assert_eq!(code, "400", "{body}");
    let (code, body) = post(&format!("name={db}"), Some("Litefs-Id: 00000000000000AB"));
    assert_eq!(code, "400", "{body}");
    assert_eq!(pos_or_zero(&p, db), next);
    assert_eq!(count(&p, db), 2);
}

/// `litefs-rs run -with-halt-lock-on DB -- CMD` on a replica: the command's writes land on the
/// primary.
#[test]
fn run_with_halt_lock_on_writes_from_a_replica() {
    let p = primary();
    let r = replica_of(&p);
    let db = "run.db";
    sql(&p, db, Some("wal"), "CREATE TABLE t(v)");
    wait_caught_up(&p, &[&r], db);
    let out = Command::new(env!("CARGO_BIN_EXE_litefs-rs"))
        .args(["run", "-url", &r.url(), "-with-halt-lock-on"])
        .arg(r.db_path(db))
        .arg("--")
        .arg("sqlite3")
        .arg(r.db_path(db))
        .arg("INSERT INTO t VALUES ('migrated'); INSERT INTO t VALUES ('twice');")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n--- log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.log()
    );
    assert_eq!(count(&p, db), 2);
    wait_caught_up(&p, &[&r], db);
    assert_eq!(count(&r, db), 2);
    // The lock is released when the command ends: the primary writes again.
    try_write(&p, db, 5000).expect("the primary writes after the command");

    // -promote does not go with the halt lock.
    let out = Command::new(env!("CARGO_BIN_EXE_litefs-rs"))
        .args(["run", "-url", &r.url(), "-promote", "-with-halt-lock-on"])
        .arg(r.db_path(db))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-with-halt-lock-on"));
}

/// Only a waiting lock on byte 72 alone is a halt lock; the other lock calls fail as in LiteFS.
#[test]
fn unsupported_lock_calls_on_the_lock_file_fail() {
    let p = primary();
    let r = replica_of(&p);
    let db = "calls.db";
    sql(&p, db, None, "CREATE TABLE t(v)");
    wait_caught_up(&p, &[&r], db);
    let script = r#"
import errno, fcntl, os, struct, sys
def flock(kind, start, n):
    return struct.pack("hhxxxxqqixxxx", kind, 0, start, n, 0)
fd = os.open(sys.argv[1] + "-lock", os.O_RDWR)
def code(cmd, fl):
    try:
        fcntl.fcntl(fd, cmd, fl)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print(code(fcntl.F_OFD_SETLK, flock(fcntl.F_WRLCK, 72, 1)))
print(code(fcntl.F_OFD_SETLKW, flock(fcntl.F_WRLCK, 123, 1)))
print(code(fcntl.F_OFD_SETLKW, flock(fcntl.F_WRLCK, 72, 2)))
print(code(fcntl.F_OFD_SETLKW, flock(fcntl.F_WRLCK, 72, 1)))
print(code(fcntl.F_OFD_SETLKW, flock(fcntl.F_WRLCK, 72, 1)))
print(code(fcntl.F_OFD_SETLK, flock(fcntl.F_UNLCK, 72, 1)))
try:
    os.write(fd, b"x")
    print("written")
except OSError as e:
    print(errno.errorcode[e.errno])
print(len(os.read(fd, 100)))
os.close(fd)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(r.db_path(db))
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(
        lines,
        ["ENOSYS", "EINVAL", "EINVAL", "ok", "ENOLCK", "ok", "EIO", "0"],
        "{}\n--- log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.log()
    );
    // The link leads into the halt lock's mount.
    let link = std::fs::read_link(r.db_path(&format!("{db}-lock"))).unwrap();
    assert!(
        link.starts_with(r.data().join("locks")),
        "{}",
        link.display()
    );
}
