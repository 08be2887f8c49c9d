//! The Consul lease, end to end: real `consul agent -dev` processes, real `litefs-rs mount`
//! nodes on 127.0.0.1, real SQLite clients writing through the mounts. Election, failover after
//! SIGKILL and SIGTERM, hand-off and promotion, fencing while Consul is away, the rule that a
//! stale node never takes over while a fresher one may come back, and cluster ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::cluster::{
    candidate, info, is_primary, logs, pos_or_zero, primaries, sql, start_candidate,
    wait_caught_up, wait_one_primary, ELECTION,
};
use support::consul::Consul;
use support::mount::{Client, MountedNode, NodeOptions, Role};

/// Writes one row until it succeeds (the new primary may still be getting ready), with a
/// deadline.
fn write_eventually(node: &MountedNode, db: &str, sql_text: &str) {
    let until = Instant::now() + ELECTION;
    loop {
        match Client::Cli.run(&node.db_path(db), None, sql_text) {
            Ok(_) => return,
            Err(e) => assert!(
                Instant::now() < until,
                "write on node-{} kept failing: {e}\n{}",
                node.port(),
                node.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn count(node: &MountedNode, db: &str) -> u64 {
    sql(node, db, None, "SELECT COUNT(*) FROM t;")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn three_candidates_elect_exactly_one_primary() {
    let consul = Consul::start();
    let nodes: Vec<MountedNode> = (0..3).map(|_| start_candidate(&consul)).collect();
    let refs: Vec<&MountedNode> = nodes.iter().collect();
    let p = wait_one_primary(&refs);
    let primary = &nodes[p];
    // The lease key holds the primary's LiteFS-format value.
    let value: serde_json::Value =
        serde_json::from_str(&consul.kv("litefs/primary").unwrap()).unwrap();
    assert_eq!(value["hostname"], format!("node-{}", primary.port()));
    assert_eq!(value["advertise-url"], primary.url());
    // The first primary set the cluster id, in Consul and in every data directory.
    let cluster = consul.kv("litefs/primary/clusterid").unwrap();
    assert!(
        cluster.starts_with("LFSC") && cluster.len() == 20,
        "{cluster}"
    );
    sql(
        primary,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    let others: Vec<&MountedNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != p)
        .map(|(_, n)| n)
        .collect();
    wait_caught_up(primary, &others, "db");
    for n in &nodes {
        assert_eq!(count(n, "db"), 1);
        let id = std::fs::read_to_string(n.data().join("clusterid")).unwrap();
        assert_eq!(id, format!("{cluster}\n"));
        assert_eq!(info(n).unwrap()["clusterID"], cluster.as_str());
    }
    for r in &others {
        let err = Client::Cli
            .run(&r.db_path("db"), None, "INSERT INTO t VALUES (2);")
            .unwrap_err();
        assert!(err.contains("readonly"), "{err}");
    }
    // Still one primary a while later (nobody flip-flops).
    for _ in 0..20 {
        assert_eq!(primaries(&refs), vec![p]);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_of_the_primary_under_writes_keeps_every_replicated_write() {
    let consul = Consul::start();
    let mut nodes: Vec<MountedNode> = (0..3).map(|_| start_candidate(&consul)).collect();
    let p = wait_one_primary(&nodes.iter().collect::<Vec<_>>());
    sql(
        &nodes[p],
        "db",
        Some("wal"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
    );
    // A stream of writes, each acknowledged by the primary.
    let db = nodes[p].db_path("db");
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut acked = 0u64;
        while stop_rx.try_recv().is_err() {
            match conn.execute(
                "INSERT INTO t (id, v) VALUES (?1, randomblob(100))",
                [acked + 1],
            ) {
                Ok(_) => acked += 1,
                Err(_) => break,
            }
        }
        acked
    });
    // Let the replicas receive a good part of it, then kill the primary mid-stream.
    let until = Instant::now() + ELECTION;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    while replicas
        .iter()
        .any(|&i| pos_or_zero(&nodes[i], "db").txid.get() < 200)
    {
        assert!(Instant::now() < until, "replicas did not receive 200 txns");
        std::thread::sleep(Duration::from_millis(5));
    }
    let replicated_before: u64 = replicas
        .iter()
        .map(|&i| count(&nodes[i], "db"))
        .min()
        .unwrap();
    nodes[p].kill9();
    let _ = stop_tx.send(());
    let acked = writer.join().unwrap();
    let survivors: Vec<&MountedNode> = replicas.iter().map(|&i| &nodes[i]).collect();
    let q = replicas[wait_one_primary(&survivors)];
    write_eventually(
        &nodes[q],
        "db",
        "INSERT INTO t (id, v) VALUES (1000000, x'00');",
    );
    let other = replicas.iter().copied().find(|&i| i != q).unwrap();
    wait_caught_up(&nodes[q], &[&nodes[other]], "db");
    // Every row a replica had before the kill is on the new primary, and the rows form one
    // gap-free history (ids 1..=n), whatever the killed primary acknowledged on top.
    let rows = sql(
        &nodes[q],
        "db",
        None,
        "SELECT COUNT(*), MAX(id) FROM t WHERE id < 1000000;",
    );
    let (n, max) = rows.trim().split_once('|').unwrap();
    let (n, max): (u64, u64) = (n.parse().unwrap(), max.parse().unwrap());
    assert_eq!(n, max, "a gap in the ids: {rows}");
    assert!(
        n >= replicated_before,
        "the new primary has {n} rows; a replica had {replicated_before} before the kill (the \
         old primary acknowledged {acked})"
    );
    assert_eq!(
        sql(&nodes[q], "db", None, "PRAGMA integrity_check;").trim(),
        "ok"
    );
    // The killed node comes back as a replica and converges on the new primary's history.
    nodes[p].start_again();
    wait_caught_up(&nodes[q], &[&nodes[p]], "db");
    assert!(!is_primary(&nodes[p]));
    nodes[p].check_consistent("db");
    // The new primary was a replica that applied transactions: it dies at once on SIGKILL too
    // (the harness fails if it does not), and the two others elect one of them.
    nodes[q].kill9();
    let rest = [&nodes[p], &nodes[other]];
    let r = wait_one_primary(&rest);
    write_eventually(
        rest[r],
        "db",
        "INSERT INTO t (id, v) VALUES (1000001, x'00');",
    );
    wait_caught_up(rest[r], &[rest[1 - r]], "db");
}

#[test]
fn after_a_crash_the_freshest_replica_takes_over() {
    let consul = Consul::start();
    let mut nodes: Vec<MountedNode> = (0..3).map(|_| start_candidate(&consul)).collect();
    let p = wait_one_primary(&nodes.iter().collect::<Vec<_>>());
    let (r1, r2) = match p {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    sql(
        &nodes[p],
        "db",
        Some("wal"),
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(&nodes[p], &[&nodes[r1], &nodes[r2]], "db");
    // r1 is away while the primary commits five more (r2 gets them), then the primary dies
    // before it could publish them as the cluster's position: r1 is not behind that position,
    // but it is behind r2.
    nodes[r1].stop();
    let db = nodes[p].db_path("db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        for i in 2..=6 {
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
    }
    wait_caught_up(&nodes[p], &[&nodes[r2]], "db");
    nodes[p].kill9();
    nodes[r1].start_again();
    let survivors = [&nodes[r1], &nodes[r2]];
    let until = Instant::now() + ELECTION;
    while primaries(&survivors).is_empty() {
        assert!(Instant::now() < until, "no primary\n{}", logs(&survivors));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        primaries(&survivors),
        vec![1],
        "the replica with fewer transactions took over\n{}",
        logs(&survivors)
    );
    wait_caught_up(&nodes[r2], &[&nodes[r1]], "db");
    assert_eq!(count(&nodes[r1], "db"), 6);
    assert_eq!(count(&nodes[r2], "db"), 6);
}

#[test]
fn sigterm_of_the_primary_hands_the_lease_over_at_once() {
    let consul = Consul::start();
    let mut nodes = [start_candidate(&consul), start_candidate(&consul)];
    let p = wait_one_primary(&[&nodes[0], &nodes[1]]);
    let [first, second] = &mut nodes;
    let (primary, replica) = if p == 0 {
        (first, &*second)
    } else {
        (second, &*first)
    };
    sql(
        primary,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(primary, &[replica], "db");
    let started = Instant::now();
    primary.stop();
    write_eventually(replica, "db", "INSERT INTO t VALUES (2);");
    let took = started.elapsed();
    // The lease was released (no lock-delay, no TTL): the survivor took it at once. The bound
    // is loose (a shared, noisy machine); the benchmark measures it.
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}\n{}",
        replica.log()
    );
    assert_eq!(count(replica, "db"), 2);
    // The old primary comes back as a replica of the new one.
    primary.start_again();
    wait_caught_up(replica, &[&*primary], "db");
    assert!(!is_primary(primary));
    assert_eq!(count(primary, "db"), 2);
}

fn post(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "20", "-X", "POST", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// `/info`'s node id of a node (from the `Litefs-Id` header of any response).
fn node_id(node: &MountedNode) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{}/info", node.url()),
        ])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("litefs-id:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap()
}

#[test]
fn handoff_and_promote_move_the_primary_without_losing_writes() {
    let consul = Consul::start();
    let a = start_candidate(&consul);
    let b = start_candidate(&consul);
    let c = MountedNode::start_with(NodeOptions {
        role: Role::Consul {
            consul_port: consul.port(),
            candidate: false,
        },
        ..NodeOptions::default()
    });
    let all = [&a, &b, &c];
    assert_eq!(wait_one_primary(&all), 0);
    sql(
        &a,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(&a, &[&b, &c], "db");

    // Hand-off from the primary to a named replica.
    let (code, body) = post(&format!("{}/handoff?nodeID={}", a.url(), node_id(&b)));
    assert_eq!(code, 200, "{body}\n{}", logs(&all));
    assert_eq!(wait_one_primary(&all), 1);
    write_eventually(&b, "db", "INSERT INTO t VALUES (2);");
    wait_caught_up(&b, &[&a, &c], "db");

    // Promotion from the replica's side, as a deploy script does it: `run -promote`.
    let ran = support::litefs(&[
        "run",
        "-promote",
        "-url",
        a.url().as_str(),
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(ran.code, Some(7), "{ran:?}\n{}", logs(&all));
    assert!(
        is_primary(&a),
        "run -promote ran the command before a was primary"
    );
    assert_eq!(wait_one_primary(&all), 0);
    write_eventually(&a, "db", "INSERT INTO t VALUES (3);");
    wait_caught_up(&a, &[&b, &c], "db");
    for n in all {
        assert_eq!(count(n, "db"), 3);
    }

    // `run -if-candidate` runs the command on a candidate only.
    let ran = support::litefs(&[
        "run",
        "-if-candidate",
        "-url",
        c.url().as_str(),
        "--",
        "false",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let ran = support::litefs(&[
        "run",
        "-if-candidate",
        "-url",
        b.url().as_str(),
        "--",
        "false",
    ]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    // `/promote` on the primary itself is a no-op.
    let (code, body) = post(&format!("{}/promote", a.url()));
    assert_eq!(code, 200, "{body}");
    // A non-candidate refuses, and a hand-off to a node that is not streaming is refused.
    let (code, body) = post(&format!("{}/promote", c.url()));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("not a candidate"), "{body}");
    let (code, body) = post(&format!("{}/handoff?nodeID=00000000000000AB", a.url()));
    assert_eq!(code, 400, "{body}");
    let (code, _) = post(&format!("{}/handoff?nodeID={}", b.url(), node_id(&c)));
    assert_eq!(code, 503, "a replica cannot hand off");
    assert_eq!(wait_one_primary(&all), 0);
}

#[test]
fn the_primary_flip_flops_by_hand_off_under_writes_without_losing_any() {
    let consul = Consul::start();
    let a = start_candidate(&consul);
    let b = start_candidate(&consul);
    let nodes = [&a, &b];
    let mut p = wait_one_primary(&nodes);
    sql(
        nodes[p],
        "db",
        Some("wal"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
    );
    let mut rng = support::mount::Rng::from_env_or_time();
    let mut rows = 0;
    for _ in 0..6 {
        let n = rng.range(1, 20);
        for _ in 0..n {
            rows += 1;
            write_eventually(
                nodes[p],
                "db",
                &format!("INSERT INTO t VALUES ({rows}, randomblob(200));"),
            );
        }
        let q = 1 - p;
        wait_caught_up(nodes[p], &[nodes[q]], "db");
        let (code, body) = post(&format!(
            "{}/handoff?nodeID={}",
            nodes[p].url(),
            node_id(nodes[q])
        ));
        assert_eq!(code, 200, "{body}\n{}", logs(&nodes));
        p = wait_one_primary(&nodes);
        assert_eq!(p, q);
    }
    wait_caught_up(nodes[p], &[nodes[1 - p]], "db");
    for n in nodes {
        assert_eq!(count(n, "db"), rows);
        assert_eq!(sql(n, "db", None, "PRAGMA integrity_check;").trim(), "ok");
    }
}

#[test]
fn an_empty_candidate_with_promote_catches_up_before_it_takes_over() {
    let consul = Consul::start();
    let a = start_candidate(&consul);
    assert_eq!(wait_one_primary(&[&a]), 0);
    sql(&a, "db", None, "CREATE TABLE t (x);");
    for i in 0..50 {
        sql(&a, "db", None, &format!("INSERT INTO t VALUES ({i});"));
    }
    // A new, empty machine asks for the lease as soon as it has caught up.
    let b = MountedNode::start_with(NodeOptions {
        promote: true,
        ..candidate(&consul)
    });
    let until = Instant::now() + ELECTION;
    while !is_primary(&b) {
        assert!(
            Instant::now() < until,
            "b never became primary\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(wait_one_primary(&[&a, &b]), 1);
    // The cluster's data is intact on both: the new primary had it all before it took over.
    assert_eq!(count(&b, "db"), 50);
    write_eventually(&b, "db", "INSERT INTO t VALUES (50);");
    wait_caught_up(&b, &[&a], "db");
    assert_eq!(count(&a, "db"), 51);
}

#[test]
fn a_non_candidate_never_becomes_primary() {
    let consul = Consul::start();
    let mut a = start_candidate(&consul);
    let b = MountedNode::start_with(NodeOptions {
        role: Role::Consul {
            consul_port: consul.port(),
            candidate: false,
        },
        ..NodeOptions::default()
    });
    assert_eq!(wait_one_primary(&[&a, &b]), 0);
    sql(
        &a,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(&a, &[&b], "db");
    a.kill9();
    // Well past the time a candidate would have taken over (health check + lock-delay):
    // still no primary, and the replica keeps serving reads.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert!(
            !is_primary(&b),
            "a non-candidate became primary\n{}",
            b.log()
        );
        assert_eq!(count(&b, "db"), 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(consul.kv("litefs/primary").is_none_or(|v| v.is_empty()));
}

/// `a` is the primary and `b` its replica; `b` goes away, `a` commits `more` transactions and
/// publishes them as what the cluster has. Returns `a` (running) and `b` (stopped, behind).
fn b_falls_behind(consul: &Consul, more: u64) -> (MountedNode, MountedNode) {
    let a = start_candidate(consul);
    let mut b = start_candidate(consul);
    assert_eq!(wait_one_primary(&[&a, &b]), 0);
    sql(
        &a,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(&a, &[&b], "db");
    b.stop();
    for i in 0..more {
        sql(
            &a,
            "db",
            None,
            &format!("INSERT INTO t VALUES ({});", i + 2),
        );
    }
    let txid = a.txid("db");
    let until = Instant::now() + ELECTION;
    loop {
        let published = consul.kv("litefs/primary/position").unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&published).unwrap_or_default();
        if v["dbs"]["db"]["txid"].as_u64() == Some(txid) {
            return (a, b);
        }
        assert!(
            Instant::now() < until,
            "position not published: {published}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`b_falls_behind`] with one more transaction, after which `a` goes away for good.
fn stale_survivor(consul: &Consul) -> MountedNode {
    let (a, b) = b_falls_behind(consul, 1);
    drop(a);
    b
}

#[test]
fn a_stale_node_does_not_take_over_while_a_fresher_one_comes_back() {
    let consul = Consul::start();
    let (mut a, mut b) = b_falls_behind(&consul, 9);
    a.stop();
    // b comes back alone (an autostarted old machine): it must not take over, since a node
    // with newer data may come back.
    b.set_opts(|o| o.stale_timeout = Some("60s"));
    b.start_again();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(!is_primary(&b), "the stale node took over\n{}", b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        b.log().contains("behind what the cluster committed"),
        "{}",
        b.log()
    );
    // The fresher node comes back and wins; the stale one follows it and gets everything.
    a.start_again();
    assert_eq!(wait_one_primary(&[&a, &b]), 0);
    wait_caught_up(&a, &[&b], "db");
    assert_eq!(count(&b, "db"), 10);
    assert_eq!(count(&a, "db"), 10);
}

fn wait_primary(node: &MountedNode) {
    let until = Instant::now() + ELECTION;
    while !is_primary(node) {
        assert!(
            Instant::now() < until,
            "never became primary\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stale_node_takes_over_after_the_stale_timeout() {
    let consul = Consul::start();
    let mut b = stale_survivor(&consul);
    b.set_opts(|o| o.stale_timeout = Some("2s"));
    b.start_again();
    let started = Instant::now();
    wait_primary(&b);
    // It waited out the stale timeout (counted from its first look, just before `started`).
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(b.log().contains("no fresher node came back"), "{}", b.log());
    assert_eq!(count(&b, "db"), 1);
}

#[test]
fn forget_position_lets_an_operator_accept_a_stale_node() {
    let consul = Consul::start();
    let mut b = stale_survivor(&consul);
    b.start_again();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(!is_primary(&b), "the stale node took over\n{}", b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let ran = support::litefs(&[
        "forget-position".as_ref(),
        "-config".as_ref(),
        b.config_path().as_os_str(),
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("db: TXID 3"), "{}", ran.stdout);
    wait_primary(&b);
    write_eventually(&b, "db", "INSERT INTO t VALUES (3);");
    assert_eq!(count(&b, "db"), 2);
}

#[test]
fn a_node_of_another_cluster_refuses_to_join_and_keeps_its_data() {
    let consul = Consul::start();
    let a = start_candidate(&consul);
    assert_eq!(wait_one_primary(&[&a]), 0);
    sql(
        &a,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    let cluster = consul.kv("litefs/primary/clusterid").unwrap();
    // A node whose data belongs to another cluster.
    let other_consul = Consul::start();
    let mut other = start_candidate(&other_consul);
    assert_eq!(wait_one_primary(&[&other]), 0);
    sql(
        &other,
        "db",
        None,
        "CREATE TABLE t (y); INSERT INTO t VALUES (7), (8);",
    );
    other.stop();
    let other_cluster = std::fs::read_to_string(other.data().join("clusterid")).unwrap();
    assert_ne!(other_cluster.trim(), cluster);
    other.set_opts(|o| {
        o.role = Role::Consul {
            consul_port: consul.port(),
            candidate: true,
        }
    });
    other.start_again();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(!is_primary(&other));
        let i = info(&other).unwrap();
        assert_eq!(i["clusterID"], other_cluster.trim());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        other.log().contains("belongs to another cluster"),
        "{}",
        other.log()
    );
    // It kept its own data, and the cluster kept its primary.
    assert_eq!(count(&other, "db"), 2);
    assert_eq!(wait_one_primary(&[&a]), 0);
    assert_eq!(count(&a, "db"), 1);
}

#[test]
fn consul_away_for_30s_fences_writes_keeps_reads_and_recovers() {
    let mut consul = Consul::start();
    let a = start_candidate(&consul);
    let b = start_candidate(&consul);
    let all = [&a, &b];
    let p = wait_one_primary(&all);
    let (primary, replica) = (all[p], all[1 - p]);
    sql(
        primary,
        "db",
        None,
        "CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(primary, &[replica], "db");
    consul.stop();
    let away = Instant::now();
    // The primary stops taking writes within its lease's hold (2.5 s), long before Consul
    // could give the key to anyone; the replica serves reads all along. (The write probe is one
    // transaction that leaves the table as it was.)
    let mut fenced_after = None;
    while away.elapsed() < Duration::from_secs(30) {
        assert!(primaries(&all).len() <= 1);
        assert_eq!(count(replica, "db"), 1, "reads on the replica");
        if fenced_after.is_none()
            && Client::Cli
                .run(
                    &primary.db_path("db"),
                    None,
                    "BEGIN; INSERT INTO t VALUES (9); DELETE FROM t WHERE x = 9; COMMIT;",
                )
                .is_err_and(|e| e.contains("readonly"))
        {
            fenced_after = Some(away.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let fenced_after = fenced_after.expect("the primary kept taking writes without Consul");
    assert!(fenced_after < Duration::from_secs(5), "{fenced_after:?}");
    assert!(primaries(&all).is_empty(), "a primary without Consul");
    consul.start_again();
    let q = wait_one_primary(&all);
    write_eventually(all[q], "db", "INSERT INTO t VALUES (2);");
    wait_caught_up(all[q], &[all[1 - q]], "db");
    for n in all {
        assert_eq!(count(n, "db"), 2);
    }
}

#[test]
fn a_node_stops_cleanly_and_soon_while_consul_is_away() {
    let mut consul = Consul::start();
    let mut nodes = [start_candidate(&consul), start_candidate(&consul)];
    wait_one_primary(&[&nodes[0], &nodes[1]]);
    consul.stop();
    // Neither can release anything: each still exits 0, unmounted, soon.
    for n in &mut nodes {
        let started = Instant::now();
        n.stop();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
