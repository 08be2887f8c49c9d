//! Regression tests, one fault each, for bugs the fault campaign (`tests/campaign.rs`) found:
//! a real Consul agent, real mounts, the sqlite3 CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::cluster::{
    is_primary, logs, sql, start_candidate, wait_caught_up, wait_one_primary, ELECTION,
};
use support::consul::Consul;
use support::mount::{Client, MountedNode};

/// SIGSTOPs a process; SIGCONTs it when dropped (so a failing test never leaves it stopped).
struct Paused(u32);

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a child of this process.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), sig) };
}

impl Paused {
    fn stop(node: &MountedNode) -> Paused {
        let pid = node.pid().expect("the node runs");
        signal(pid, libc::SIGSTOP);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn count(node: &MountedNode) -> u64 {
    sql(node, "db", None, "SELECT COUNT(*) FROM t;")
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `cond` holds, failing with `what` and the nodes' logs after `within`.
fn wait_for(within: Duration, what: &str, nodes: &[&MountedNode], mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < until,
            "{what} within {within:?}\n{}",
            logs(nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Begins a write transaction on the database named by its argument, says so, and commits when
/// told; prints whether the commit was acknowledged.
const WRITER: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("BEGIN IMMEDIATE")
c.execute("INSERT INTO t VALUES (2)")
print("in transaction", flush=True)
sys.stdin.readline()
try:
    c.execute("COMMIT")
    print("acknowledged", flush=True)
except sqlite3.Error as e:
    print("refused:", e, flush=True)
"#;

/// Campaign bug 1: a write that waited in the kernel while the primary was stopped was
/// acknowledged when it resumed, after another node had taken the lease, and then lost. It must
/// be refused. Whether the node's timers fence it before its FUSE thread reads the commit is a
/// race; the deadline every write checks against the monotonic clock refuses it either way
/// (`litefs-store`'s `writes_are_refused_once_the_write_deadline_has_passed` checks that
/// deadline alone).
#[test]
fn a_write_queued_while_the_primary_is_paused_past_its_lease_is_refused_on_resume() {
    let consul = Consul::start();
    let a = start_candidate(&consul);
    let b = start_candidate(&consul);
    let all = [&a, &b];
    let p = wait_one_primary(&all);
    let (primary, other) = (all[p], all[1 - p]);
    sql(
        primary,
        "db",
        None,
        "PRAGMA journal_mode=wal; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(primary, &[other], "db");

    // A writer inside its transaction (WAL mode: nothing of it written yet) when the primary
    // stops; its commit then waits in the kernel for the stopped node, and is the first
    // request the node reads when it runs again.
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(WRITER)
        .arg(primary.db_path("db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut out = std::io::BufReader::new(writer.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "in transaction");
    let paused = Paused::stop(primary);
    std::io::Write::write_all(writer.stdin.as_mut().unwrap(), b"commit\n").unwrap();
    wait_for(ELECTION, "the other node takes the lease", &all, || {
        is_primary(other)
    });
    drop(paused);
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    eprintln!("writer: {}", line.trim());
    let status = writer.wait().unwrap();
    assert!(status.success(), "the writer failed: {line}");
    assert!(
        line.starts_with("refused"),
        "a commit that waited while the primary was stopped past its lease was acknowledged: \
         {line}"
    );

    let q = wait_one_primary(&all);
    assert_eq!(
        all[q].port(),
        other.port(),
        "the lease stays with the other node"
    );
    wait_caught_up(all[q], &[all[1 - q]], "db");
    for n in all {
        assert_eq!(count(n), 1, "node-{}: only the first row", n.port());
        n.check_consistent("db");
    }
}

/// Campaign bug 4: once Consul had marked a node's health check critical (the node was stopped
/// past the check's TTL), registering the check again kept it critical and Consul refused the
/// node's sessions, so it never took the lease again. A lone candidate must take it back after
/// every pause.
#[test]
fn a_lone_candidate_takes_the_lease_again_after_each_pause_past_it() {
    let consul = Consul::start();
    let a = start_candidate(&consul);
    let all = [&a];
    wait_one_primary(&all);
    sql(&a, "db", None, "CREATE TABLE t (x);");
    for round in 1..=2u64 {
        let paused = Paused::stop(&a);
        // Consul ends the session once the check's TTL (2.5 s) passes without a pass.
        wait_for(ELECTION, "Consul drops the node's session", &all, || {
            consul
                .get("/v1/session/list")
                .is_some_and(|s| s.trim() == "[]")
        });
        drop(paused);
        wait_for(ELECTION, "the node takes the lease again", &all, || {
            is_primary(&a)
                && Client::Cli
                    .run(
                        &a.db_path("db"),
                        None,
                        &format!("INSERT INTO t VALUES ({round});"),
                    )
                    .is_ok()
        });
        assert_eq!(count(&a), round);
    }
}
