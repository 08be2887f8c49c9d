//! Helpers for tests with several nodes on 127.0.0.1 (static lease): start a primary and its
//! replicas, read positions, wait for replicas to catch up.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::{Duration, Instant};

use litefs_ltx::Pos;

use super::consul::Consul;
use super::mount::{Client, MountedNode, NodeOptions, Role};

/// How long a replica may take to catch up (or an awaited event to arrive).
pub const CATCH_UP: Duration = Duration::from_secs(20);

/// A primary with default options.
pub fn primary() -> MountedNode {
    MountedNode::start()
}

/// A replica following `primary`.
pub fn replica_of(primary: &MountedNode) -> MountedNode {
    MountedNode::start_with(NodeOptions {
        role: Role::Replica(primary.port()),
        ..NodeOptions::default()
    })
}

/// `<db>-pos` of a node, or zero while the database does not exist there.
pub fn pos_or_zero(node: &MountedNode, db: &str) -> Pos {
    match fs::read_to_string(node.mnt().join(format!("{db}-pos"))) {
        Ok(text) => text.trim().parse().unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pos::ZERO,
        Err(e) => panic!("read {db}-pos: {e}"),
    }
}

/// Waits until every replica has the primary's position of `db`; returns it.
pub fn wait_caught_up(primary: &MountedNode, replicas: &[&MountedNode], db: &str) -> Pos {
    let want = pos_or_zero(primary, db);
    let until = Instant::now() + CATCH_UP;
    for r in replicas {
        loop {
            let have = pos_or_zero(r, db);
            if have == want {
                break;
            }
            assert!(
                Instant::now() < until,
                "{db}: replica at {have}, primary at {want} after {CATCH_UP:?}\n\
                 --- replica log ---\n{}\n--- primary log ---\n{}",
                r.log(),
                primary.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    want
}

/// Runs SQL on a database through a node's mount with the sqlite3 CLI; fails the test with the
/// node's log if it fails.
pub fn sql(node: &MountedNode, db: &str, mode: Option<&str>, sql: &str) -> String {
    Client::Cli
        .run(&node.db_path(db), mode, sql)
        .unwrap_or_else(|e| panic!("sqlite3 {db}: {sql}\n{e}\n--- log ---\n{}", node.log()))
}

/// The node's `/metrics` text.
pub fn metrics(node: &MountedNode) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("{}/metrics", node.url())])
        .args(node.curl_auth())
        .output()
        .expect("run curl");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the node's `/metrics` has the line `line`.
pub fn wait_metric(node: &MountedNode, line: &str) {
    let until = Instant::now() + CATCH_UP;
    loop {
        let text = metrics(node);
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < until,
            "no {line:?} in /metrics after {CATCH_UP:?}:\n{text}\n--- log ---\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// Consul-lease clusters.

/// How long an election or a failover may take in these tests (the lease's health check turns
/// critical 2.5 s after a primary dies, then the 1 s lock-delay runs).
pub const ELECTION: Duration = Duration::from_secs(30);

pub fn candidate(consul: &Consul) -> NodeOptions {
    NodeOptions {
        role: Role::Consul {
            consul_port: consul.port(),
            candidate: true,
        },
        ..NodeOptions::default()
    }
}

pub fn start_candidate(consul: &Consul) -> MountedNode {
    MountedNode::start_with(candidate(consul))
}

/// `/info` of a node, `None` if it does not answer.
pub fn info(node: &MountedNode) -> Option<serde_json::Value> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-f", "-m", "2", &format!("{}/info", node.url())])
        .args(node.curl_auth())
        .output()
        .expect("run curl");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

pub fn is_primary(node: &MountedNode) -> bool {
    info(node).is_some_and(|i| i["isPrimary"] == serde_json::Value::Bool(true))
}

/// The indices of the nodes that say they are the primary.
pub fn primaries(nodes: &[&MountedNode]) -> Vec<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| is_primary(n))
        .map(|(i, _)| i)
        .collect()
}

/// Waits until exactly one node is the primary and every other node names it in `.primary`;
/// fails if two ever take writes at once. Returns the primary's index.
///
/// Two nodes may both say they are the primary for a moment when Consul forgot its sessions
/// (a restarted dev agent): the former primary, its writes fenced, has not yet heard that its
/// lease is gone, while the new one waits out that fence before it takes writes. What must
/// never happen is two of them taking writes.
pub fn wait_one_primary(nodes: &[&MountedNode]) -> usize {
    let until = Instant::now() + ELECTION;
    loop {
        let infos: Vec<Option<serde_json::Value>> = nodes.iter().map(|n| info(n)).collect();
        let flag = |i: &Option<serde_json::Value>, key: &str| {
            i.as_ref()
                .is_some_and(|i| i[key] == serde_json::Value::Bool(true))
        };
        let p: Vec<usize> = (0..nodes.len())
            .filter(|&i| flag(&infos[i], "isPrimary"))
            .collect();
        let writable: Vec<usize> = (0..nodes.len())
            .filter(|&i| flag(&infos[i], "writable"))
            .collect();
        assert!(
            writable.len() <= 1,
            "two primaries taking writes at once: {writable:?}\n{}",
            logs(nodes)
        );
        if let [i] = p[..] {
            let host = format!("node-{}", nodes[i].port());
            let followers_agree = nodes.iter().enumerate().all(|(j, n)| {
                j == i
                    || std::fs::read_to_string(n.mnt().join(".primary"))
                        .is_ok_and(|s| s == format!("{host}\n"))
            });
            if followers_agree {
                return i;
            }
        }
        assert!(
            Instant::now() < until,
            "no single primary within {ELECTION:?} (primaries: {p:?})\n{}",
            logs(nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn logs(nodes: &[&MountedNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- node-{} ---\n{}", n.port(), n.log()))
        .collect::<Vec<_>>()
        .join("\n")
}
