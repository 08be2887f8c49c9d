//! The fault campaign: a three-node Consul cluster (real agent, real mounts) under client
//! workloads while faults are injected one cycle after another, with the invariants checked
//! throughout and after every cycle.
//!
//! Workloads (SQLite clients, each following whichever node is the primary: the append clients
//! with rusqlite in this process, the bank clients in Python processes of their own):
//! - *bank*: transfers between accounts; the total never changes, on any node, at any read;
//! - *append*: each client appends unique ids; at the end every id a primary acknowledged is
//!   present exactly once, unless that primary was killed or paused before a replica had it
//!   (replication is asynchronous) and its unreplicated transactions were set aside as
//!   diverged; no id appears that no client wrote.
//!
//! Faults, one a cycle, chosen by a seeded generator: `kill -9` of the primary or of a
//! replica, SIGTERM of the primary, SIGSTOP of the primary for longer than the lease's hold
//! then SIGCONT, Consul stopped and restarted, the primary partitioned from its peers and from
//! Consul for longer than the lease's hold, and the replication links cut for a few seconds
//! (the nodes reach each other and Consul through links the test severs, `support::netcut`:
//! while cut, connections stay open and silent, as in a partition), and the data directory of
//! the primary or of a replica full for a few seconds, or failing (its ext4 file system turns
//! read-only under the node, as on a disk error; the node is then stopped, the file system
//! checked and mounted again, and the node started again). Each node's data directory is an
//! ext4 file system of its own (an image in `/dev/shm`, loop-mounted). After each cycle: one primary, every node
//! caught up, and on every node `PRAGMA integrity_check`, the same position, a database that
//! matches its position's checksum and an unbroken LTX chain.
//!
//! The test runs `LITEFS_CAMPAIGN_CYCLES` cycles (default 11, one of each kind: the short
//! version CI runs);
//! `scripts/campaign.sh --cycles N` runs the long version and prints the figures.
//! `LITEFS_TEST_SEED` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{logs, wait_caught_up, wait_one_primary};
use support::consul::Consul;
use support::disk::Ext4;
use support::mount::{MountedNode, Rng};
use support::netcut::Link;

const BANK: &str = "bank.db";
const APPEND: &str = "append.db";
const ACCOUNTS: i64 = 8;
const TOTAL: i64 = 8000;
const CLIENTS: u64 = 2;
/// The test's Consul is a dev agent, which forgets everything when it restarts: its sessions,
/// so another node may take the lease at once, while the old primary goes on accepting writes
/// until its own fence (1.5 s after its last keep-alive). Writes it acknowledged in that time
/// are lost like those of a crashed primary (and kept in its `ltx/diverged/`). A Consul that
/// keeps its state does not give the lease away before the old session ends and its
/// lock-delay runs out.
const CONSUL_FORGETS: Duration = Duration::from_millis(2500);
/// `http.auth-token` of every node: every request between them carries it.
const TOKEN: &str = "campaign-secret";
/// Longer than the lease's hold (its health check's TTL, 2.5 s) and its lock-delay (1 s).
const PAUSE: Duration = Duration::from_secs(5);

/// Where a client finds a node.
#[derive(Clone, Debug)]
struct Endpoint {
    /// The node's API port.
    port: u16,
    mnt: PathBuf,
}

impl Endpoint {
    /// Whether the node says it is the primary (`GET /info`), asked with a short timeout.
    fn is_primary(&self) -> bool {
        let Ok(mut tcp) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(300),
        ) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
        let req = format!(
            "GET /info HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        if tcp.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        answer.contains("\"isPrimary\":true")
    }
}

/// The index of the node that says it is the primary, if one does.
fn find_primary(nodes: &[Endpoint]) -> Option<usize> {
    nodes.iter().position(Endpoint::is_primary)
}

/// Lets the test hold the writers still while it compares the nodes.
#[derive(Default, Debug)]
struct Gate {
    held: AtomicBool,
    /// Writers inside a transaction.
    busy: std::sync::atomic::AtomicUsize,
}

impl Gate {
    /// Waits while the gate is held, then counts the caller in.
    fn enter(&self, stop: &AtomicBool) -> bool {
        loop {
            self.busy.fetch_add(1, Ordering::SeqCst);
            if !self.held.load(Ordering::SeqCst) {
                return true;
            }
            self.busy.fetch_sub(1, Ordering::SeqCst);
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn leave(&self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }

    /// Holds new transactions back and waits for the running ones to end.
    fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(60);
        while self.busy.load(Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < until,
                "a writer stayed in a transaction for 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }
}

/// What the clients saw.
#[derive(Default, Debug)]
struct Record {
    /// Append ids acknowledged, with the node that acknowledged each and when.
    acked: BTreeMap<i64, (usize, Instant)>,
    /// Every append id a client tried to write.
    attempted: BTreeSet<i64>,
    transfers: u64,
    failed_writes: u64,
    /// Bank reads whose total was not [`TOTAL`] (node, total seen).
    bad_totals: Vec<(usize, i64)>,
    bank_reads: u64,
}

fn open(ep: &Endpoint, db: &str) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(ep.mnt.join(db))?;
    c.busy_timeout(Duration::from_secs(2))?;
    Ok(c)
}

/// One append client: ids `client * 1e9 + n`, each in its own transaction, on whichever node
/// is the primary.
fn append_client(
    client: u64,
    nodes: Vec<Endpoint>,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    rec: Arc<Mutex<Record>>,
) {
    let mut n = 0i64;
    let mut conn: Option<(usize, rusqlite::Connection)> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = find_primary(&nodes).and_then(|i| open(&nodes[i], APPEND).ok().map(|c| (i, c)));
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        }
        let Some((node, c)) = conn.as_ref() else {
            continue;
        };
        n += 1;
        let id = i64::try_from(client).unwrap() * 1_000_000_000 + n;
        if !gate.enter(&stop) {
            break;
        }
        rec.lock().unwrap().attempted.insert(id);
        let done = c.execute(
            "INSERT INTO a (id, client) VALUES (?1, ?2)",
            (id, client as i64),
        );
        gate.leave();
        match done {
            Ok(_) => {
                rec.lock()
                    .unwrap()
                    .acked
                    .insert(id, (*node, Instant::now()));
            }
            Err(_) => {
                rec.lock().unwrap().failed_writes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A connection a transaction (see `bank_client`).
        conn = None;
    }
}

/// Runs the bank's SQL for a test thread in a Python process of its own, one command a line:
/// `transfer PATH FROM TO AMOUNT` (answers `ok` or `err WHY`) and `total PATH` (answers
/// `total SUM COUNT`). The bank database is in WAL mode, so SQLite maps the node's `-shm`
/// file; a node killed while a transaction has it mapped faults the process that mapped it
/// (SIGBUS), which must be this worker, not the test.
const BANK_WORKER: &str = r#"
import sqlite3, sys
for line in sys.stdin:
    cmd, path, *args = line.split()
    try:
        c = sqlite3.connect(path, timeout=2, isolation_level=None)
        try:
            if cmd == "transfer":
                frm, to, amount = map(int, args)
                c.execute("BEGIN IMMEDIATE")
                (balance,) = c.execute("SELECT balance FROM accounts WHERE id = ?", (frm,)).fetchone()
                amount = min(amount, balance)
                c.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, frm))
                c.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, to))
                c.execute("COMMIT")
                print("ok", flush=True)
            else:
                total, count = c.execute("SELECT SUM(balance), COUNT(*) FROM accounts").fetchone()
                print("total", "none" if total is None else total, count, flush=True)
        finally:
            c.close()
    except Exception as e:
        print("err", str(e).replace("\n", " "), flush=True)
"#;

/// A [`BANK_WORKER`] process, started again when it died.
struct Worker {
    child: Option<(
        std::process::Child,
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    )>,
}

impl Worker {
    fn new() -> Worker {
        Worker { child: None }
    }

    /// Sends one command; its answer, or `None` if the worker died on it.
    fn call(&mut self, cmd: &str) -> Option<String> {
        if self.child.is_none() {
            let mut child = std::process::Command::new("python3")
                .args(["-c", BANK_WORKER])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("run python3");
            let stdin = child.stdin.take().unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            self.child = Some((child, stdin, stdout));
        }
        let (_, stdin, stdout) = self.child.as_mut()?;
        let mut answer = String::new();
        let ok = writeln!(stdin, "{cmd}").is_ok()
            && std::io::BufRead::read_line(stdout, &mut answer).is_ok_and(|n| n > 0);
        if !ok {
            if let Some((mut child, _, _)) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            return None;
        }
        Some(answer.trim_end().to_owned())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some((mut child, stdin, _)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// One bank client: a transfer between two random accounts per transaction, on whichever
/// node is the primary.
fn bank_client(
    seed: u64,
    nodes: Vec<Endpoint>,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    rec: Arc<Mutex<Record>>,
) {
    let mut rng = Rng::seeded(seed);
    let mut worker = Worker::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(node) = find_primary(&nodes) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let from = rng.range(0, ACCOUNTS as u64 - 1);
        let to = (from + 1 + rng.range(0, ACCOUNTS as u64 - 2)) % ACCOUNTS as u64;
        let amount = rng.range(1, 50);
        if !gate.enter(&stop) {
            break;
        }
        let done = worker.call(&format!(
            "transfer {} {from} {to} {amount}",
            nodes[node].mnt.join(BANK).display()
        ));
        gate.leave();
        if done.as_deref() == Some("ok") {
            rec.lock().unwrap().transfers += 1;
        } else {
            rec.lock().unwrap().failed_writes += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads the bank's total on one node over and over; every total must be [`TOTAL`].
fn bank_reader(node: usize, ep: Endpoint, stop: Arc<AtomicBool>, rec: Arc<Mutex<Record>>) {
    let mut worker = Worker::new();
    let cmd = format!("total {}", ep.mnt.join(BANK).display());
    while !stop.load(Ordering::Relaxed) {
        let answer = worker.call(&cmd).unwrap_or_default();
        let mut parts = answer.split(' ');
        if let (Some("total"), Some(Ok(total)), Some(Ok(ACCOUNTS))) = (
            parts.next(),
            parts.next().map(str::parse::<i64>),
            parts.next().map(str::parse::<i64>),
        ) {
            let mut r = rec.lock().unwrap();
            r.bank_reads += 1;
            if total != TOTAL {
                r.bad_totals.push((node, total));
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillPrimary,
    KillReplica,
    TermPrimary,
    PausePrimary,
    RestartConsul,
    /// The primary cut off from its peers and from Consul for longer than the lease's hold
    /// (its application still reaches it, as on the same machine).
    PartitionPrimary,
    /// The replicas cut off from the primary (the primary keeps its lease) for a few seconds.
    CutReplication,
    /// The primary's data directory full for a few seconds.
    DiskFullPrimary,
    /// A replica's data directory full for a few seconds.
    DiskFullReplica,
    /// The primary's disk fails (its file system turns read-only under it): the primary gives
    /// its lease up and another node takes it; a second or two later the node is stopped
    /// (SIGTERM), the file system checked and mounted again, and the node started again.
    DiskFailsPrimary,
    /// The same on a replica.
    DiskFailsReplica,
}

const FAULTS: [Fault; 11] = [
    Fault::KillPrimary,
    Fault::KillReplica,
    Fault::TermPrimary,
    Fault::PausePrimary,
    Fault::RestartConsul,
    Fault::PartitionPrimary,
    Fault::CutReplication,
    Fault::DiskFullPrimary,
    Fault::DiskFullReplica,
    Fault::DiskFailsPrimary,
    Fault::DiskFailsReplica,
];

/// Each node's data directory: an ext4 file system of this size (MiB), which a fault fills or
/// fails. The LTX files are capped well below it (`data.retention-max-size`), so that only a
/// fault fills it.
const DISK_MIB: u64 = 128;

/// A node's links to the others: its API as its peers reach it, and its way to Consul.
#[derive(Debug)]
struct Links {
    api: Link,
    consul: Link,
}

/// A candidate whose peers, and whose Consul, are reached through links the test can cut, with
/// its data directory on a tmpfs of its own.
fn start_linked(consul: &Consul) -> (MountedNode, Links, Ext4) {
    let links = Links {
        api: Link::to(0),
        consul: Link::to(consul.port()),
    };
    let mut opts = support::cluster::candidate(consul);
    opts.role = support::mount::Role::Consul {
        consul_port: links.consul.port(),
        candidate: true,
    };
    opts.advertise_port = Some(links.api.port());
    opts.auth_token = Some(TOKEN);
    opts.retention = Some("1m");
    opts.retention_monitor_interval = Some("5s");
    opts.retention_max_size = Some("8MiB");
    let mut disk = None;
    let node = MountedNode::start_prepared(opts, |data| disk = Some(Ext4::mount(data, DISK_MIB)));
    links.api.set_target(node.port());
    (node, links, disk.expect("the data directory's file system"))
}

/// Fails node `n`'s disk and lets it run on it for a while: a primary gives its lease up
/// within the election's deadline, and another node takes it. Then stops the node, repairs
/// the disk and starts the node again.
fn fail_disk(nodes: &mut [MountedNode], n: usize, disk: &Ext4, rng: &mut Rng) {
    let was_primary = support::cluster::is_primary(&nodes[n]);
    disk.fail();
    let since = Instant::now();
    if was_primary {
        let refs: Vec<&MountedNode> = nodes.iter().collect();
        loop {
            let now = support::cluster::primaries(&refs);
            if matches!(now[..], [q] if q != n) {
                break;
            }
            assert!(
                since.elapsed() < support::cluster::ELECTION,
                "the primary kept its lease on a failed disk (primaries: {now:?})\n{}",
                logs(&refs)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "the primary gave its lease up, and another node took it, {:?} after its disk failed",
            since.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(rng.range(1000, 2500)));
    // It stops cleanly (the lease released, unmounted), saying so if its files could not all
    // be made durable.
    nodes[n].stop_on_failed_disk();
    disk.repair();
    nodes[n].start_again();
}

/// Fills `disk` for a while (the workload goes on), then frees it.
fn fill_for(disk: &Ext4, rng: &mut Rng) {
    let filler = disk.fill();
    std::thread::sleep(Duration::from_millis(rng.range(1000, 3000)));
    std::fs::remove_file(&filler).unwrap();
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a child of this process that
    // is still running.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), sig) };
}

/// Waits until one node is the primary, every node has caught up with it on both databases, and
/// every node is consistent; returns the primary's index.
fn settle(nodes: &[MountedNode]) -> usize {
    let refs: Vec<&MountedNode> = nodes.iter().collect();
    let p = wait_one_primary(&refs);
    let others: Vec<&MountedNode> = refs
        .iter()
        .copied()
        .filter(|n| n.port() != nodes[p].port())
        .collect();
    for db in [BANK, APPEND] {
        wait_caught_up(&nodes[p], &others, db);
    }
    p
}

/// Every node at the same position, each consistent. The primary's WAL is checkpointed first
/// (the clients keep connections open, so SQLite does not do it), so that its database file
/// holds what its position says.
///
/// After a fault the lease may still move once (Consul coming back, a keep-alive that was
/// late): the checkpoint needs a primary that keeps its lease, so the cluster is settled again
/// until one does (up to 5 tries). The comparisons themselves are made once, on that cluster.
fn check_all(nodes: &[MountedNode], p: usize) {
    let mut p = p;
    for attempt in 0.. {
        let done = [BANK, APPEND].iter().try_for_each(|db| {
            support::mount::Client::Cli
                .run(
                    &nodes[p].db_path(db),
                    None,
                    "PRAGMA wal_checkpoint(TRUNCATE);",
                )
                .map(|_| ())
        });
        match done {
            Ok(()) => break,
            Err(e) if attempt < 5 => {
                eprintln!(
                    "checkpoint on node-{}: {e}; settling again",
                    nodes[p].port()
                );
                std::thread::sleep(Duration::from_millis(500));
                p = settle(nodes);
            }
            Err(e) => panic!("checkpoint on node-{}: {e}", nodes[p].port()),
        }
    }
    for db in [BANK, APPEND] {
        let positions: Vec<_> = nodes.iter().map(|n| consistent(n, db)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] == w[1]),
            "{db}: nodes at different positions {positions:?}"
        );
    }
}

/// [`MountedNode::check_consistent`], except on a node whose WAL still holds transactions (a
/// former primary whose checkpoint was refused as it lost the lease; it copies them into its
/// database file before it applies the next transaction): there the database file is behind
/// its position by design, and the LTX chain and `integrity_check` are checked.
fn consistent(node: &MountedNode, db: &str) -> litefs_ltx::Pos {
    let wal = node.db_data_dir(db).join("wal");
    let frames = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 32)
        && std::fs::read(&wal).is_ok_and(|b| b.get(..4).is_some_and(|m| m != [0u8; 4]));
    if !frames {
        return node.check_consistent(db);
    }
    eprintln!(
        "node-{}: {db} has WAL frames; its file is checked at the next apply",
        node.port()
    );
    let pos = node.pos(db);
    node.check_ltx_chain(db, pos);
    let ic: String = rusqlite::Connection::open(node.db_path(db))
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(ic, "ok", "integrity_check of {db} on node-{}", node.port());
    pos
}

/// Files set aside as diverged on a node (its transactions the cluster did not keep).
fn diverged_files(node: &MountedNode) -> usize {
    [BANK, APPEND]
        .iter()
        .map(|db| {
            let dir = node.db_data_dir(db).join("ltx").join("diverged");
            walk(&dir)
        })
        .sum()
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn faults_under_bank_and_append_workloads_keep_every_invariant() {
    let cycles: usize = std::env::var("LITEFS_CAMPAIGN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FAULTS.len());
    let mut rng = Rng::from_env_or_time();
    let mut consul = Consul::start();
    // The disks are dropped (unmounted) after the nodes have stopped.
    let mut disks: Vec<Ext4> = Vec::new();
    let mut nodes: Vec<MountedNode> = Vec::new();
    let mut links: Vec<Links> = Vec::new();
    for _ in 0..3 {
        let (n, l, d) = start_linked(&consul);
        nodes.push(n);
        links.push(l);
        disks.push(d);
    }
    let p = settle(&nodes);
    support::cluster::sql(
        &nodes[p],
        BANK,
        Some("wal"),
        &format!(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);\
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i < {last})\
             INSERT INTO accounts SELECT i, {each} FROM n;",
            last = ACCOUNTS - 1,
            each = TOTAL / ACCOUNTS
        ),
    );
    support::cluster::sql(
        &nodes[p],
        APPEND,
        None,
        "CREATE TABLE a (id INTEGER, client INTEGER);",
    );
    settle(&nodes);

    let endpoints: Vec<Endpoint> = nodes
        .iter()
        .map(|n| Endpoint {
            port: n.port(),
            mnt: n.mnt(),
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Gate::default());
    let rec = Arc::new(Mutex::new(Record::default()));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let (eps, st, gt, rc) = (endpoints.clone(), stop.clone(), gate.clone(), rec.clone());
        threads.push(std::thread::spawn(move || {
            append_client(c + 1, eps, st, gt, rc)
        }));
        let (eps, st, gt, rc) = (endpoints.clone(), stop.clone(), gate.clone(), rec.clone());
        let seed = rng.next_u64();
        threads.push(std::thread::spawn(move || {
            bank_client(seed, eps, st, gt, rc)
        }));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let (ep, st, rc) = (ep.clone(), stop.clone(), rec.clone());
        threads.push(std::thread::spawn(move || bank_reader(i, ep, st, rc)));
    }

    // Nodes whose acknowledged writes may be lost: killed or paused while primary, with when,
    // and how long after that they may still have acknowledged writes (see
    // [`CONSUL_FORGETS`]).
    let mut deposed: Vec<(usize, Instant, Duration, Fault)> = Vec::new();
    let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut faults_at: Vec<(Instant, Fault, usize)> = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        // Let the workload run on a settled cluster first.
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
        let p = wait_one_primary(&nodes.iter().collect::<Vec<_>>());
        // Every kind once first (when there are cycles enough), then at random.
        let fault = if let Some(&f) = FAULTS.get(cycle).filter(|_| cycles >= FAULTS.len()) {
            f
        } else {
            FAULTS[usize::try_from(rng.range(0, FAULTS.len() as u64 - 1)).unwrap()]
        };
        *counts.entry(fault).or_default() += 1;
        faults_at.push((Instant::now(), fault, p));
        eprintln!(
            "cycle {cycle}: {fault:?} (primary node-{})",
            nodes[p].port()
        );
        match fault {
            Fault::KillPrimary => {
                deposed.push((p, Instant::now(), Duration::ZERO, fault));
                nodes[p].kill9();
                nodes[p].start_again();
            }
            Fault::KillReplica => {
                let r = (p + 1 + usize::try_from(rng.range(0, 1)).unwrap()) % 3;
                nodes[r].kill9();
                nodes[r].start_again();
            }
            Fault::TermPrimary => {
                nodes[p].stop();
                nodes[p].start_again();
            }
            Fault::PausePrimary => {
                let pid = nodes[p].pid().unwrap();
                // A commit its writer had begun before the pause may be acknowledged as the
                // process resumes (the check that it may write was made before).
                deposed.push((p, Instant::now(), PAUSE + Duration::from_secs(1), fault));
                signal(pid, libc::SIGSTOP);
                std::thread::sleep(PAUSE);
                signal(pid, libc::SIGCONT);
            }
            Fault::RestartConsul => {
                deposed.push((p, Instant::now(), CONSUL_FORGETS, fault));
                consul.stop();
                std::thread::sleep(Duration::from_millis(rng.range(500, 3000)));
                consul.start_again();
            }
            Fault::PartitionPrimary => {
                // Its writes stop at its fence, 1.5 s after its last keep-alive; none of them
                // reached a replica.
                deposed.push((p, Instant::now(), CONSUL_FORGETS, fault));
                links[p].api.cut();
                links[p].consul.cut();
                std::thread::sleep(PAUSE);
                links[p].api.heal();
                links[p].consul.heal();
            }
            Fault::CutReplication => {
                links[p].api.cut();
                std::thread::sleep(Duration::from_millis(rng.range(1000, 4000)));
                links[p].api.heal();
            }
            Fault::DiskFullPrimary => fill_for(&disks[p], &mut rng),
            Fault::DiskFullReplica => {
                let r = (p + 1 + usize::try_from(rng.range(0, 1)).unwrap()) % 3;
                fill_for(&disks[r], &mut rng);
            }
            Fault::DiskFailsPrimary => fail_disk(&mut nodes, p, &disks[p], &mut rng),
            Fault::DiskFailsReplica => {
                let r = (p + 1 + usize::try_from(rng.range(0, 1)).unwrap()) % 3;
                fail_disk(&mut nodes, r, &disks[r], &mut rng);
            }
        }
        // The writers are held still while the nodes are compared.
        wait_one_primary(&nodes.iter().collect::<Vec<_>>());
        gate.hold();
        let p = settle(&nodes);
        check_all(&nodes, p);
        gate.release();
        let r = rec.lock().unwrap();
        assert!(
            r.bad_totals.is_empty(),
            "a bank read saw a wrong total: {:?}",
            r.bad_totals
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    gate.hold();
    stop.store(true, Ordering::Relaxed);
    gate.release();
    for t in threads {
        t.join().unwrap();
    }
    let p = settle(&nodes);
    check_all(&nodes, p);

    // The append invariants.
    let rows: Vec<i64> = {
        let c = rusqlite::Connection::open(nodes[p].db_path(APPEND)).unwrap();
        let mut st = c.prepare("SELECT id FROM a").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let present: BTreeSet<i64> = rows.iter().copied().collect();
    let rec = rec.lock().unwrap();
    assert_eq!(rows.len(), present.len(), "an id appears more than once");
    let unknown: Vec<_> = present.difference(&rec.attempted).collect();
    assert!(unknown.is_empty(), "ids nobody wrote: {unknown:?}");
    let mut lost_unreplicated = 0usize;
    let mut lost_by_event: BTreeMap<(usize, Fault), usize> = BTreeMap::new();
    let mut lost = Vec::new();
    for (id, (node, at)) in &rec.acked {
        if present.contains(id) {
            continue;
        }
        // Allowed only for a primary deposed by a crash, a pause or a partition after it
        // acknowledged the write (or by a Consul that forgot its lease, see `CONSUL_FORGETS`),
        // and only as transactions it set aside as diverged. The fault that deposed it is the
        // first such one of that node at or after the write.
        let excused = deposed
            .iter()
            .enumerate()
            .find(|(_, (n, when, grace, _))| n == node && *when + *grace >= *at)
            .filter(|_| diverged_files(&nodes[*node]) > 0);
        if let Some((event, (_, _, _, fault))) = excused {
            lost_unreplicated += 1;
            *lost_by_event.entry((event, *fault)).or_default() += 1;
        } else {
            let next = faults_at.iter().find(|(t, _, _)| t >= at);
            eprintln!(
                "lost: id {id} acknowledged by node {node} (node-{}); the next fault: {:?}",
                nodes[*node].port(),
                next.map(|(t, f, p)| (f, *p, t.duration_since(*at)))
            );
            lost.push(*id);
        }
    }
    let totals: i64 = {
        let c = rusqlite::Connection::open(nodes[p].db_path(BANK)).unwrap();
        c.query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0))
            .unwrap()
    };
    eprintln!(
        "campaign: {cycles} cycles in {:?}, faults {counts:?}, appends acknowledged {}, transfers \
         {}, failed writes {}, bank reads {}, acknowledged writes lost with their unreplicated \
         primary {lost_unreplicated} (by fault: {}; at most {} at one fault), other acknowledged \
         writes lost {}, integrity failures 0",
        started.elapsed(),
        rec.acked.len(),
        rec.transfers,
        rec.failed_writes,
        rec.bank_reads,
        {
            let mut by: BTreeMap<Fault, usize> = BTreeMap::new();
            for ((_, f), n) in &lost_by_event {
                *by.entry(*f).or_default() += n;
            }
            format!("{by:?}")
        },
        lost_by_event.values().max().copied().unwrap_or(0),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged ids lost without their primary crashing: {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        logs(&nodes.iter().collect::<Vec<_>>())
    );
    assert_eq!(totals, TOTAL);
    assert!(
        rec.acked.len() > 100 && rec.transfers > 100,
        "the workload barely ran"
    );
}
