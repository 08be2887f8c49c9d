//! Unknown peers and hostile input at the internal API, end to end: `http.auth-token` (every
//! route refused without it, replication, halt-lock writes and the commands with it), and
//! database names no database can have, refused with 400 and leaving nothing behind. Real
//! `litefs-rs mount` processes on 127.0.0.1 with the static lease, real SQLite clients, `curl`
//! for the API and the `export` / `import` / `run` commands as a user runs them.
//!
//! Every test runs as root (FUSE). Waits poll with a deadline; nothing sleeps a fixed time
//! before asserting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::{metrics, sql, wait_caught_up, CATCH_UP};
use support::mount::{Client, MountedNode, NodeOptions, Role};
use support::Ran;

const TOKEN: &str = "s3cret-cluster-token";

fn node(role: Role, token: &'static str) -> MountedNode {
    MountedNode::start_with(NodeOptions {
        role,
        auth_token: Some(token),
        ..NodeOptions::default()
    })
}

/// The status and the body of a request made with `curl` (`--max-time 2`: a streaming answer
/// is cut, its status and first bytes kept).
fn curl(args: &[&str]) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    Command::new("curl")
        .args(["-s", "-m", "2", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .status()
        .expect("run curl");
    let head = fs::read_to_string(&head).unwrap_or_default();
    // The last status line (HTTP/2 prior knowledge has no interim answers, 1.1 may have 100).
    let status = head
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, fs::read_to_string(&body).unwrap_or_default())
}

/// Every route of the internal API, with the method and `curl` arguments it needs.
const ROUTES: &[(&str, &str, &[&str])] = &[
    (
        "POST",
        "/stream",
        &["--http2-prior-knowledge", "--data-binary", ""],
    ),
    ("GET", "/info", &[]),
    ("GET", "/metrics", &[]),
    ("GET", "/export?name=db", &[]),
    ("POST", "/import?name=db", &["--data-binary", ""]),
    ("GET", "/events", &[]),
    ("POST", "/handoff", &[]),
    ("POST", "/promote", &[]),
    ("POST", "/halt", &[]),
    ("DELETE", "/halt", &[]),
    ("POST", "/tx", &[]),
];

/// A request to `route` on `node` with these extra headers.
fn call(
    node: &MountedNode,
    method: &str,
    route: &str,
    extra: &[&str],
    headers: &[&str],
) -> (u16, String) {
    let url = format!("{}{route}", node.url());
    let mut args = vec!["-X", method, url.as_str()];
    args.extend_from_slice(extra);
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    curl(&args)
}

#[test]
fn with_a_token_on_both_nodes_replication_works_and_every_route_needs_it() {
    support::mount::require_root();
    let p = node(Role::Primary, TOKEN);
    let r = node(Role::Replica(p.port()), TOKEN);
    sql(
        &p,
        "db",
        None,
        "CREATE TABLE t (v); INSERT INTO t VALUES ('hello');",
    );
    wait_caught_up(&p, &[&r], "db");
    assert_eq!(sql(&r, "db", None, "SELECT v FROM t;"), "hello\n");

    let good = format!("Authorization: Bearer {TOKEN}");
    let wrong = "Authorization: Bearer not-the-token";
    for n in [&p, &r] {
        for (method, route, extra) in ROUTES {
            let what = format!("{method} {route} on {}", n.url());
            let (status, body) = call(n, method, route, extra, &[]);
            assert_eq!(status, 401, "{what} without a token: {body}");
            assert!(body.starts_with("missing auth token"), "{what}: {body}");
            for h in [wrong, "Authorization: Basic czNjcmV0"] {
                let (status, body) = call(n, method, route, extra, &[h]);
                assert_eq!(status, 401, "{what} with {h:?}: {body}");
                assert!(!body.contains(TOKEN), "{what} echoes the token: {body}");
            }
            let (_, body) = call(n, method, route, extra, &[wrong]);
            assert!(body.starts_with("wrong auth token"), "{what}: {body}");
            let (status, body) = call(n, method, route, extra, &[&good]);
            assert!(
                status != 0 && status != 401,
                "{what} with the token: {status} {body}"
            );
        }
        // The routes that succeed without parameters do.
        for route in ["/info", "/metrics", "/export?name=db"] {
            let (status, body) = call(n, "GET", route, &[], &[&good]);
            assert_eq!(status, 200, "GET {route} on {}: {body}", n.url());
        }
    }
    // The replica still follows after all of that, and each node warned once, not per request.
    sql(&p, "db", None, "INSERT INTO t VALUES ('again');");
    wait_caught_up(&p, &[&r], "db");
    assert_eq!(sql(&r, "db", None, "SELECT count(*) FROM t;"), "2\n");
    for n in [&p, &r] {
        let warned = n.log().matches("refused an API request").count();
        assert_eq!(warned, 1, "one warning per peer a minute:\n{}", n.log());
    }
}

#[test]
fn a_replica_with_a_wrong_token_never_follows() {
    support::mount::require_root();
    let p = node(Role::Primary, TOKEN);
    sql(
        &p,
        "db",
        None,
        "CREATE TABLE t (v); INSERT INTO t VALUES ('secret data');",
    );
    let r = node(Role::Replica(p.port()), "another-token");
    // The replica is told why, once per attempt, and keeps trying with its back-off.
    let until = Instant::now() + CATCH_UP;
    let attempts = |log: &str| {
        log.lines()
            .filter(|l| l.contains("replication stream failed") && l.contains("401"))
            .count()
    };
    while attempts(&r.log()) < 3 {
        assert!(
            Instant::now() < until,
            "the replica did not retry its refused stream three times\n--- replica ---\n{}\n\
             --- primary ---\n{}",
            r.log(),
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = r.log();
    let refused = log
        .lines()
        .find(|l| l.contains("replication stream failed"))
        .unwrap();
    assert!(refused.contains("wrong auth token"), "{refused}");
    assert!(
        !log.contains(TOKEN),
        "the replica's log shows the primary's token:\n{log}"
    );
    // The primary answered 401 and logged the peer once.
    let plog = p.log();
    assert_eq!(
        plog.matches("refused an API request: wrong auth token")
            .count(),
        1,
        "{plog}"
    );
    assert!(plog.contains("peer=127.0.0.1:"), "{plog}");
    // Nothing of the primary's reached the replica, which says it is not connected.
    assert!(!r.mnt().join("db").exists(), "{:?}", r.ls());
    assert!(!r.db_data_dir("db").exists());
    let m = metrics(&r);
    assert!(m.lines().any(|l| l == "litefs_lag_seconds -1"), "{m}");
    assert!(m.lines().any(|l| l == "litefs_is_primary 0"), "{m}");
}

/// `litefs-rs ARGS`, with `LITEFS_AUTH_TOKEN` set to `env_token` (unset with `None`).
fn cli(args: &[&OsString], env_token: Option<&str>) -> Ran {
    let mut cmd = Command::new(support::bin());
    cmd.args(args).env_remove("LITEFS_AUTH_TOKEN");
    if let Some(t) = env_token {
        cmd.env("LITEFS_AUTH_TOKEN", t);
    }
    cmd.output().expect("run litefs-rs").into()
}

#[test]
fn export_and_import_send_the_token() {
    support::mount::require_root();
    let p = node(Role::Primary, TOKEN);
    sql(
        &p,
        "db",
        None,
        "CREATE TABLE t (v); INSERT INTO t VALUES (1);",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let os = |s: &str| OsString::from(s);
    let url = os(&p.url());
    let export = |extra: &[OsString], env: Option<&str>| {
        let mut args = vec![os("export"), os("-name"), os("db"), os("-url"), url.clone()];
        args.extend_from_slice(extra);
        args.push(out.clone().into());
        cli(&args.iter().collect::<Vec<_>>(), env)
    };
    let import = |name: &str, from: &Path, extra: &[OsString], env: Option<&str>| {
        let mut args = vec![os("import"), os("-name"), os(name), os("-url"), url.clone()];
        args.extend_from_slice(extra);
        args.push(from.into());
        cli(&args.iter().collect::<Vec<_>>(), env)
    };

    // Without it, both fail naming the 401.
    let ran = export(&[], None);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("401") && ran.stderr.contains("missing auth token"),
        "{ran:?}"
    );
    assert!(!out.exists());
    let ran = export(&[], Some("wrong"));
    assert!(
        ran.stderr.contains("401") && ran.stderr.contains("wrong auth token"),
        "{ran:?}"
    );

    // From the environment, and from the node's own configuration file.
    let ran = export(&[], Some(TOKEN));
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(support::sqlite3(&out, "SELECT v FROM t;"), "1\n");
    fs::remove_file(&out).unwrap();
    let config = [os("-config"), p.config_path().into()];
    let ran = export(&config, None);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    support::sqlite3(&out, "INSERT INTO t VALUES (2);");

    let ran = import("copy.db", &out, &[], None);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("401"), "{ran:?}");
    // A file far larger than what the connection buffers: the refusal still comes back whole.
    let big = dir.path().join("big.db");
    support::sqlite3(
        &big,
        "CREATE TABLE b (x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
         WHERE i < 32) INSERT INTO b SELECT randomblob(1048576) FROM n;",
    );
    let ran = import("big.db", &big, &[], None);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("401") && ran.stderr.contains("missing auth token"),
        "{ran:?}"
    );
    assert!(!p.db_data_dir("big.db").exists());
    // (Looked for in the data directory: a look-up through the mount would leave the kernel a
    // cached "no such file" that the import's invalidation, sent after its answer, may not
    // have undone when the next open comes.)
    assert!(!p.db_data_dir("copy.db").exists());
    let ran = import("copy.db", &out, &[], Some(TOKEN));
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", p.log());
    assert_eq!(sql(&p, "copy.db", None, "SELECT count(*) FROM t;"), "2\n");
    let ran = import("copy2.db", &out, &config, None);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", p.log());
    assert_eq!(sql(&p, "copy2.db", None, "SELECT count(*) FROM t;"), "2\n");
}

/// A replica writes under the halt lock (`litefs-rs run -with-halt-lock-on`): its `/halt`,
/// `/tx` and release requests to the primary carry the token, and `run` sends it to the
/// replica's API (`-config`).
#[test]
fn halt_lock_writes_from_a_replica_carry_the_token() {
    support::mount::require_root();
    let p = node(Role::Primary, TOKEN);
    let r = node(Role::Replica(p.port()), TOKEN);
    sql(&p, "db", Some("wal"), "CREATE TABLE t (v);");
    wait_caught_up(&p, &[&r], "db");
    let run = |config: bool| {
        let mut cmd = Command::new(support::bin());
        cmd.env_remove("LITEFS_AUTH_TOKEN")
            .args(["run", "-url", &r.url(), "-if-candidate"]);
        if config {
            cmd.arg("-config").arg(r.config_path());
        }
        let out = cmd
            .arg("-with-halt-lock-on")
            .arg(r.db_path("db"))
            .arg("--")
            .arg("sqlite3")
            .arg(r.db_path("db"))
            .arg("INSERT INTO t VALUES ('from the replica');")
            .output()
            .unwrap();
        Ran::from(out)
    };
    // Without the token, `run` cannot ask the replica whether it is a candidate.
    let ran = run(false);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("401"), "{ran:?}");
    // With it: a replica is no candidate, so -if-candidate does not run the command...
    let ran = run(true);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", r.log());
    assert_eq!(sql(&p, "db", None, "SELECT count(*) FROM t;"), "0\n");
    // ...and without -if-candidate the write goes through the primary.
    let out = Command::new(support::bin())
        .env("LITEFS_AUTH_TOKEN", TOKEN)
        .args(["run", "-url", &r.url(), "-with-halt-lock-on"])
        .arg(r.db_path("db"))
        .arg("--")
        .arg("sqlite3")
        .arg(r.db_path("db"))
        .arg("INSERT INTO t VALUES ('from the replica');")
        .output()
        .unwrap();
    let ran = Ran::from(out);
    assert_eq!(
        ran.code,
        Some(0),
        "{ran:?}\n--- replica ---\n{}\n--- primary ---\n{}",
        r.log(),
        p.log()
    );
    assert_eq!(
        sql(&p, "db", None, "SELECT v FROM t;"),
        "from the replica\n"
    );
    wait_caught_up(&p, &[&r], "db");
    assert!(!p.log().contains("refused an API request"), "{}", p.log());
}

/// Every file and directory below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Names no database can have, percent-encoded for a query, and what the answer must say.
fn hostile_queries() -> Vec<(String, &'static str)> {
    vec![
        ("..".into(), "a `.` or `..` path component"),
        ("..%2F..%2Fescaped".into(), "a `.` or `..` path component"),
        ("a%00b".into(), "contains NUL"),
        ("a".repeat(10_000), "longer than 1024 bytes"),
        ("%2Fetc%2Fescaped".into(), "an absolute path"),
        ("a%2F%2Fb".into(), "an empty path component"),
        (
            "db-wal".into(),
            "ends in -journal, -wal, -shm, -pos or -lock",
        ),
    ]
}

#[test]
fn hostile_database_names_get_400_and_leave_nothing_behind() {
    support::mount::require_root();
    let p = MountedNode::start();
    let r = MountedNode::start_with(NodeOptions {
        role: Role::Replica(p.port()),
        ..NodeOptions::default()
    });
    sql(
        &p,
        "db",
        None,
        "CREATE TABLE t (v); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(&p, &[&r], "db");
    let before: Vec<_> = [&p, &r].iter().map(|n| tree(n.root())).collect();
    let id = format!("{}: 0000000000000001", "Litefs-Id");
    for n in [&p, &r] {
        for (name, why) in hostile_queries() {
            let requests: [(&str, String, Vec<&str>); 6] = [
                ("GET", format!("/export?name={name}"), vec![]),
                (
                    "POST",
                    format!("/import?name={name}"),
                    vec!["--data-binary", "SQLite format 3"],
                ),
                ("POST", format!("/halt?name={name}&id=1"), vec![]),
                ("DELETE", format!("/halt?name={name}&id=1"), vec![]),
                (
                    "POST",
                    format!("/tx?name={name}&lockID=1"),
                    vec!["--data-binary", "LTX1"],
                ),
                (
                    "POST",
                    format!("/stream?filter={name}"),
                    vec![
                        "--http2-prior-knowledge",
                        "--data-binary",
                        "",
                        "-H",
                        id.as_str(),
                    ],
                ),
            ];
            for (method, route, extra) in requests {
                let what = format!("{method} {:.60} on {}", route, n.url());
                let (status, body) = call(n, method, &route, &extra, &[]);
                // /stream's filter is not percent-decoded (a replica sends its names as they
                // are), so only the names hostile as written are hostile there.
                if route.starts_with("/stream") && name.contains('%') {
                    continue;
                }
                // /stream on the replica answers that it is not the primary first.
                if route.starts_with("/stream") && n.port() == r.port() {
                    assert_eq!(status, 503, "{what}: {body}");
                    continue;
                }
                assert_eq!(status, 400, "{what}: {body}");
                assert!(body.contains("invalid database name"), "{what}: {body}");
                assert!(body.contains(why), "{what}: {body}");
                assert!(
                    body.len() < 300,
                    "{what}: the answer echoes the whole name: {body:.300}"
                );
            }
        }
    }
    // Nothing new in either node's directory (config, log, mount, data), nor beside them.
    for (n, before) in [&p, &r].iter().zip(before) {
        let now = tree(n.root());
        let log = n.root().join("litefs.log").display().to_string();
        let strip = |t: Vec<String>| -> Vec<String> {
            t.into_iter()
                .filter(|f| !log.ends_with(f.as_str()))
                .collect()
        };
        assert_eq!(strip(now), strip(before), "{}", n.log());
    }
    for n in [&p, &r] {
        assert!(!n.root().parent().unwrap().join("escaped").exists());
    }
    assert!(!Path::new("/etc/escaped").exists());
    // Through the mount: a component past 255 bytes is refused by the kernel, and a database
    // moved to a path past 1024 bytes gets ENAMETOOLONG too.
    let e = fs::File::create(p.mnt().join("a".repeat(256))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG), "{e}");
    let deep: std::path::PathBuf = (0..5).map(|i| format!("{i}{}", "d".repeat(220))).collect();
    fs::create_dir_all(p.mnt().join(&deep)).unwrap();
    let e = fs::rename(p.db_path("db"), p.mnt().join(&deep).join("x.db")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENAMETOOLONG),
        "{e}\n{}",
        p.log()
    );
    fs::remove_dir_all(p.mnt().join("0".to_owned() + &"d".repeat(220))).unwrap();
    // The nodes still work.
    sql(&p, "db", None, "INSERT INTO t VALUES (2);");
    wait_caught_up(&p, &[&r], "db");
    assert_eq!(sql(&r, "db", None, "SELECT count(*) FROM t;"), "2\n");
}

/// Sends `head` (a request without its body) to `port` and returns what the server answers,
/// up to the end of the connection or 10 s.
fn raw_request(port: u16, head: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&answer).contains("/tx takes at most") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A `/tx` body larger than the cap is refused with 413 from its `Content-Length`, before any
/// of it is read; the lock holder can go on.
#[test]
fn an_oversized_tx_body_gets_413_without_being_read() {
    support::mount::require_root();
    let p = MountedNode::start();
    sql(&p, "db", None, "CREATE TABLE t (v);");
    let peer = "Litefs-Id: 0000000000000002";
    let (status, body) = call(&p, "POST", "/halt?name=db&id=7", &[], &[peer]);
    assert_eq!(status, 200, "{body}");
    let answer = raw_request(
        p.port(),
        &format!(
            "POST /tx?name=db&lockID=7 HTTP/1.1\r\nHost: x\r\n{peer}\r\n\
             Content-Length: 4294967296\r\n\r\nLTX1"
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}\n{}", p.log());
    assert!(
        answer.contains("4294967296 bytes or more; /tx takes at most 1073741824"),
        "{answer}"
    );
    let leftovers: Vec<_> = fs::read_dir(p.db_data_dir("db").join("ltx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The lock is still held by that peer, and its release lets the primary write again.
    let (status, body) = call(&p, "DELETE", "/halt?name=db&id=7", &[], &[peer]);
    assert_eq!(status, 200, "{body}");
    sql(&p, "db", None, "INSERT INTO t VALUES (1);");
}

/// Consul lease, a token on both candidates: `litefs-rs run -promote` on the replica asks it
/// for `/promote`, and it asks the primary for `/handoff`, each with the token.
#[test]
fn promotion_with_a_token_moves_the_primary() {
    support::mount::require_root();
    let consul = support::consul::Consul::start();
    let candidate = || {
        MountedNode::start_with(NodeOptions {
            auth_token: Some(TOKEN),
            ..support::cluster::candidate(&consul)
        })
    };
    let a = candidate();
    let b = candidate();
    let all = [&a, &b];
    assert_eq!(support::cluster::wait_one_primary(&all), 0);
    sql(
        &a,
        "db",
        None,
        "CREATE TABLE t (v); INSERT INTO t VALUES (1);",
    );
    wait_caught_up(&a, &[&b], "db");
    let ran: Ran = Command::new(support::bin())
        .env("LITEFS_AUTH_TOKEN", TOKEN)
        .args(["run", "-promote", "-url", &b.url(), "--", "true"])
        .output()
        .unwrap()
        .into();
    assert_eq!(
        ran.code,
        Some(0),
        "{ran:?}\n{}",
        support::cluster::logs(&all)
    );
    assert_eq!(support::cluster::wait_one_primary(&all), 1);
    // The new primary writes (once its lease is settled) and the former one follows it.
    let until = Instant::now() + CATCH_UP;
    while let Err(e) = Client::Cli.run(&b.db_path("db"), None, "INSERT INTO t VALUES (2);") {
        assert!(
            Instant::now() < until,
            "{e}\n{}",
            support::cluster::logs(&all)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_caught_up(&b, &[&a], "db");
    assert_eq!(sql(&a, "db", None, "SELECT count(*) FROM t;"), "2\n");
    for n in all {
        assert!(!n.log().contains("refused an API request"), "{}", n.log());
    }
}
