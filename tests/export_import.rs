//! `litefs-rs export` / `import` and the API's `/export`, `/import` and `/events`, end to end:
//! real `litefs-rs mount` processes on 127.0.0.1 with the static lease (a primary and a replica
//! following it), real SQLite clients, the commands run as a user runs them, and `curl` for
//! what the commands do not cover.
//!
//! Every test runs as root (FUSE). Waits poll with a deadline; nothing sleeps a fixed time
//! before asserting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use litefs_ltx::Pos;
use support::cluster::{pos_or_zero, primary, replica_of, sql, wait_caught_up, CATCH_UP};
use support::mount::{line_channel, Client, MountedNode};
use support::Ran;

/// Runs SQL on a plain file with the sqlite3 CLI.
fn sql_file(path: &Path, sql: &str) -> String {
    Client::Cli
        .run(path, None, sql)
        .unwrap_or_else(|e| panic!("sqlite3 {}: {sql}\n{e}", path.display()))
}

/// `litefs-rs export -name NAME -url URL PATH`.
fn export(node: &MountedNode, name: &str, to: &Path) -> Ran {
    cli("export", &node.url(), name, to)
}

/// `litefs-rs import -name NAME -url URL PATH`.
fn import(node: &MountedNode, name: &str, from: &Path) -> Ran {
    cli("import", &node.url(), name, from)
}

fn cli(cmd: &str, url: &str, name: &str, path: &Path) -> Ran {
    let args: Vec<OsString> = vec![
        cmd.into(),
        "-name".into(),
        name.into(),
        "-url".into(),
        url.into(),
        path.into(),
    ];
    support::litefs(&args)
}

fn assert_ok(ran: &Ran, node: &MountedNode) {
    assert_eq!(
        ran.code,
        Some(0),
        "{ran:?}\n--- node log ---\n{}",
        node.log()
    );
}

/// The status code of a request made with `curl`.
fn curl_status(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The temporary files of a node's API (`<data>/tmp/`).
fn api_temp_files(node: &MountedNode) -> Vec<PathBuf> {
    match fs::read_dir(node.data().join("tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("list tmp: {e}"),
    }
}

/// Every name in the mount's top directory, dot files included.
fn ls_all(node: &MountedNode) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(node.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A scratch directory for files outside the mounts.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("litefs-export-")
        .tempdir()
        .unwrap()
}

/// The rows of `t` as text, and the schema, of a database (in a mount or a plain file).
fn dump(path: &Path) -> String {
    sql_file(path, ".dump")
}

/// An export is the database from one consistent point, what is in the WAL included, and the
/// same bytes from the primary and from a replica; the command writes it atomically (leftover
/// `-wal` of the file it replaces removed) and leaves no temporary files on the node.
#[test]
fn export_gives_the_database_with_its_wal_from_any_node() {
    let p = primary();
    let r = replica_of(&p);
    sql(
        &p,
        "app.db",
        Some("wal"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); \
         INSERT INTO t (v) VALUES ('one'), ('two');",
    );
    // An open connection keeps the WAL from being checkpointed when the writers close.
    let hold = rusqlite::Connection::open(p.db_path("app.db")).unwrap();
    let n: i64 = hold
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    for i in 0..20 {
        sql(
            &p,
            "app.db",
            None,
            &format!("INSERT INTO t (v) VALUES ('row {i} ' || hex(randomblob(300)));"),
        );
    }
    let wal = p.db_data_dir("app.db").join("wal");
    assert!(
        fs::metadata(&wal).map_or(0, |m| m.len()) > 0,
        "the WAL should hold frames"
    );

    let out = scratch();
    let from_primary = out.path().join("primary.db");
    // What the export replaces: a database with a WAL of its own, which must not survive.
    fs::write(&from_primary, b"old").unwrap();
    fs::write(out.path().join("primary.db-wal"), b"stale wal").unwrap();
    assert_ok(&export(&p, "app.db", &from_primary), &p);
    assert!(!out.path().join("primary.db-wal").exists());
    assert!(!out.path().join("primary.db.tmp").exists());
    assert_eq!(
        sql_file(&from_primary, "PRAGMA integrity_check;").trim(),
        "ok"
    );
    assert_eq!(
        sql_file(&from_primary, "SELECT count(*) FROM t;").trim(),
        "22"
    );
    assert_eq!(dump(&from_primary), dump(&p.db_path("app.db")));
    drop(hold);

    let pos = wait_caught_up(&p, &[&r], "app.db");
    let from_replica = out.path().join("replica.db");
    assert_ok(&export(&r, "app.db", &from_replica), &r);
    assert_eq!(
        fs::read(&from_replica).unwrap(),
        fs::read(&from_primary).unwrap(),
        "the replica's export differs from the primary's"
    );
    // Exporting changes nothing.
    assert_eq!(pos_or_zero(&p, "app.db"), pos);
    assert_eq!(pos_or_zero(&r, "app.db"), pos);
    assert!(api_temp_files(&p).is_empty(), "{:?}", api_temp_files(&p));
    assert!(api_temp_files(&r).is_empty(), "{:?}", api_temp_files(&r));
}

/// Unknown databases are 404 with a message, missing or invalid names 400; the command fails
/// with the server's message and leaves nothing behind.
#[test]
fn export_errors_name_the_problem() {
    let p = primary();
    sql(&p, "app.db", None, "CREATE TABLE t (x);");
    let out = scratch();
    let to = out.path().join("x.db");
    let ran = export(&p, "nope.db", &to);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("404") && ran.stderr.contains("\"nope.db\" not found"),
        "{ran:?}"
    );
    assert!(!to.exists());
    assert!(!out.path().join("x.db.tmp").exists());

    let url = p.url();
    assert_eq!(curl_status(&[&format!("{url}/export")]), "400");
    assert_eq!(curl_status(&[&format!("{url}/export?name=")]), "400");
    assert_eq!(
        curl_status(&[&format!("{url}/export?name=..%2Fetc%2Fpasswd")]),
        "400"
    );
    assert_eq!(curl_status(&[&format!("{url}/export?name=%zz")]), "400");
    assert_eq!(curl_status(&[&format!("{url}/export?name=app.db")]), "200");
    assert_eq!(
        curl_status(&["-X", "POST", &format!("{url}/export?name=app.db")]),
        "405"
    );

    let ran = cli("export", "http://127.0.0.1:1", "app.db", &to);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("connect"), "{ran:?}");
}

/// An import replaces a database as one transaction that replicates: the primary's mount and
/// the replica show the new content (a different page size too), a connection the replica kept
/// open sees the new schema, and a new database (in a subdirectory, in WAL mode) is created
/// with exactly the file's bytes.
#[test]
fn import_replaces_a_database_and_replicates() {
    let p = primary();
    let r = replica_of(&p);
    sql(
        &p,
        "app.db",
        Some("delete"),
        "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b'), ('c');",
    );
    wait_caught_up(&p, &[&r], "app.db");
    // Both mounts have the old database cached; the replica keeps a connection open.
    assert_eq!(
        sql(&p, "app.db", None, "SELECT group_concat(v) FROM t;"),
        "a,b,c\n"
    );
    let kept = rusqlite::Connection::open(r.db_path("app.db")).unwrap();
    let old: String = kept
        .query_row("SELECT group_concat(v) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(old, "a,b,c");
    // And the primary too.
    let kept_on_primary = rusqlite::Connection::open(p.db_path("app.db")).unwrap();
    let old: String = kept_on_primary
        .query_row("SELECT group_concat(v) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(old, "a,b,c");

    let out = scratch();
    let file = out.path().join("new.db");
    sql_file(
        &file,
        "PRAGMA page_size = 8192; CREATE TABLE u (id INTEGER PRIMARY KEY, x BLOB); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
         INSERT INTO u (x) SELECT randomblob(500) FROM n;",
    );
    let before = pos_or_zero(&p, "app.db");
    let ran = import(&p, "app.db", &file);
    assert_ok(&ran, &p);
    assert!(ran.stdout.contains("imported app.db"), "{ran:?}");
    let after = p.pos("app.db");
    assert_eq!(after.txid.get(), before.txid.get() + 1, "one transaction");

    for node in [&p, &r] {
        if std::ptr::eq(node, &r) {
            wait_caught_up(&p, &[&r], "app.db");
        }
        assert_eq!(
            sql(
                node,
                "app.db",
                None,
                "SELECT count(*), sum(length(x)) FROM u;"
            ),
            "100|50000\n"
        );
        assert_eq!(
            sql(node, "app.db", None, "SELECT name FROM sqlite_master;"),
            "u\n"
        );
        assert_eq!(sql(node, "app.db", None, "PRAGMA page_size;"), "8192\n");
        node.check_consistent("app.db");
    }
    let n: i64 = kept
        .query_row("SELECT count(*) FROM u", [], |r| r.get(0))
        .expect("the replica's open connection sees the imported schema");
    assert_eq!(n, 100);
    drop(kept);
    let n: i64 = kept_on_primary
        .query_row("SELECT count(*) FROM u", [], |r| r.get(0))
        .expect("the primary's open connection sees the imported schema");
    assert_eq!(n, 100);
    drop(kept_on_primary);
    assert_eq!(dump(&p.db_path("app.db")), dump(&file));

    // A new database, in a subdirectory, from a file in WAL mode.
    let wal_file = out.path().join("wal.db");
    sql_file(
        &wal_file,
        "PRAGMA journal_mode = wal; CREATE TABLE w (v); INSERT INTO w VALUES (42);",
    );
    assert!(!out.path().join("wal.db-wal").exists());
    assert_ok(&import(&p, "tenants/acme.db", &wal_file), &p);
    assert_eq!(sql(&p, "tenants/acme.db", None, "SELECT v FROM w;"), "42\n");
    wait_caught_up(&p, &[&r], "tenants/acme.db");
    assert_eq!(sql(&r, "tenants/acme.db", None, "SELECT v FROM w;"), "42\n");
    r.check_consistent("tenants/acme.db");
    p.check_consistent("tenants/acme.db");
    let exported = out.path().join("acme.db");
    assert_ok(&export(&r, "tenants/acme.db", &exported), &r);
    assert_eq!(fs::read(&exported).unwrap(), fs::read(&wal_file).unwrap());
    // And replaced in its subdirectory.
    assert_ok(&import(&p, "tenants/acme.db", &file), &p);
    wait_caught_up(&p, &[&r], "tenants/acme.db");
    for node in [&p, &r] {
        assert_eq!(
            sql(node, "tenants/acme.db", None, "SELECT count(*) FROM u;"),
            "100\n"
        );
        node.check_consistent("tenants/acme.db");
    }

    assert!(api_temp_files(&p).is_empty(), "{:?}", api_temp_files(&p));
    assert!(
        !ls_all(&p).iter().any(|n| n.starts_with(".litefs-import")),
        "{:?}",
        ls_all(&p)
    );
}

/// Export and import round trip in every journal mode: a database exported from a replica is
/// the primary's; a file made in the same mode, imported on the primary, replaces it as one
/// transaction, replicates, and exports back from the replica with the same rows.
#[test]
fn export_and_import_round_trip_in_every_journal_mode() {
    let p = primary();
    let r = replica_of(&p);
    let out = scratch();
    for mode in ["delete", "truncate", "persist", "wal"] {
        let db = format!("{mode}.db");
        sql(
            &p,
            &db,
            Some(mode),
            "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b');",
        );
        wait_caught_up(&p, &[&r], &db);
        let exported = out.path().join(format!("{mode}-exported.db"));
        assert_ok(&export(&r, &db, &exported), &r);
        assert_eq!(dump(&exported), dump(&p.db_path(&db)), "{mode}");

        let file = out.path().join(format!("{mode}-new.db"));
        sql_file(
            &file,
            &format!(
                "PRAGMA journal_mode = {mode}; CREATE TABLE u (x BLOB); \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) \
                 INSERT INTO u (x) SELECT randomblob(700) FROM n;"
            ),
        );
        let before = p.pos(&db);
        assert_ok(&import(&p, &db, &file), &p);
        assert_eq!(p.pos(&db).txid.get(), before.txid.get() + 1, "{mode}");
        wait_caught_up(&p, &[&r], &db);
        let back = out.path().join(format!("{mode}-back.db"));
        assert_ok(&export(&r, &db, &back), &r);
        assert_eq!(dump(&back), dump(&file), "{mode}");
        assert_eq!(
            sql_file(&back, "PRAGMA integrity_check;").trim(),
            "ok",
            "{mode}"
        );
        for node in [&p, &r] {
            assert_eq!(dump(&node.db_path(&db)), dump(&file), "{mode}");
            node.check_consistent(&db);
        }
    }
}

/// A file that fails `PRAGMA integrity_check`, one that is not a database, and an empty body
/// are refused with 400 and a message saying why; nothing changes, not even a new name.
#[test]
fn a_corrupt_or_foreign_file_is_refused_and_changes_nothing() {
    let p = primary();
    sql(
        &p,
        "app.db",
        None,
        "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept');",
    );
    let pos = p.pos("app.db");
    let ltx = p.ltx_files("app.db");

    let out = scratch();
    let corrupt = out.path().join("corrupt.db");
    sql_file(
        &corrupt,
        "PRAGMA page_size = 4096; CREATE TABLE c (id INTEGER PRIMARY KEY, x BLOB); \
         CREATE INDEX cx ON c (x); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
         INSERT INTO c (x) SELECT randomblob(300) FROM n;",
    );
    // Scribble over the middle of a few pages past the first (the header stays valid).
    let mut bytes = fs::read(&corrupt).unwrap();
    assert!(bytes.len() >= 6 * 4096);
    for page in 2..6 {
        let at = page * 4096 + 600;
        bytes[at..at + 1000].fill(0x5a);
    }
    fs::write(&corrupt, &bytes).unwrap();
    let foreign = out.path().join("foreign.db");
    fs::write(&foreign, "this is not a database\n".repeat(500)).unwrap();
    let empty = out.path().join("empty.db");
    fs::write(&empty, b"").unwrap();

    for (file, why) in [
        (&corrupt, "integrity_check"),
        (&foreign, "not a SQLite database"),
        (&empty, "empty"),
    ] {
        for name in ["app.db", "fresh.db"] {
            let ran = import(&p, name, file);
            assert_eq!(ran.code, Some(1), "{name} {file:?}: {ran:?}");
            assert!(
                ran.stderr.contains("400") && ran.stderr.contains(why),
                "{name} {file:?}: {ran:?}"
            );
        }
    }
    assert_eq!(p.pos("app.db"), pos);
    assert_eq!(p.ltx_files("app.db"), ltx);
    assert_eq!(sql(&p, "app.db", None, "SELECT v FROM t;"), "kept\n");
    p.check_consistent("app.db");
    assert!(!p.mnt().join("fresh.db").exists());
    assert!(!p.db_data_dir("fresh.db").exists());
    assert!(api_temp_files(&p).is_empty(), "{:?}", api_temp_files(&p));
    let names = ls_all(&p);
    assert!(
        !names
            .iter()
            .any(|n| n.contains("import") || n.contains("fresh")),
        "{names:?}"
    );

    let ran = import(&p, "app.db", &out.path().join("missing.db"));
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("missing.db"), "{ran:?}");

    let url = p.url();
    assert_eq!(
        curl_status(&["--data-binary", "@/dev/null", &format!("{url}/import")]),
        "400"
    );
    assert_eq!(curl_status(&[&format!("{url}/import?name=app.db")]), "405");
}

/// An import waits for a write transaction in progress on the database, which commits as
/// usual; then the import replaces the database.
#[test]
fn an_import_waits_for_a_transaction_in_progress() {
    let p = primary();
    sql(
        &p,
        "app.db",
        Some("delete"),
        "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('first');",
    );
    let before = p.pos("app.db");
    let out = scratch();
    let file = out.path().join("new.db");
    sql_file(
        &file,
        "CREATE TABLE u (x); INSERT INTO u VALUES ('imported');",
    );

    let writer = rusqlite::Connection::open(p.db_path("app.db")).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES ('second');")
        .unwrap();
    let importing = {
        let (url, file) = (p.url(), file.clone());
        std::thread::spawn(move || cli("import", &url, "app.db", &file))
    };
    let until = Instant::now() + CATCH_UP;
    while !p.log().contains("waiting for the transactions in progress") {
        assert!(
            Instant::now() < until,
            "the import did not wait\n--- log ---\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    writer
        .execute_batch("COMMIT;")
        .expect("the transaction commits while the import waits");
    drop(writer);
    let ran = importing.join().unwrap();
    assert_ok(&ran, &p);
    assert_eq!(p.pos("app.db").txid.get(), before.txid.get() + 2);
    assert_eq!(sql(&p, "app.db", None, "SELECT x FROM u;"), "imported\n");
    p.check_consistent("app.db");
}

/// An import sent to a replica is refused with 503 and a message naming the primary; nothing
/// changes on either node.
#[test]
fn import_on_a_replica_is_refused_naming_the_primary() {
    let p = primary();
    let r = replica_of(&p);
    sql(
        &p,
        "app.db",
        None,
        "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept');",
    );
    let pos = wait_caught_up(&p, &[&r], "app.db");
    let out = scratch();
    let file = out.path().join("new.db");
    sql_file(&file, "CREATE TABLE u (x); INSERT INTO u VALUES (1);");
    for name in ["app.db", "other.db"] {
        let ran = import(&r, name, &file);
        assert_eq!(ran.code, Some(1), "{ran:?}");
        assert!(
            ran.stderr.contains("503") && ran.stderr.contains(&format!("primary-{}", p.port())),
            "{ran:?}"
        );
    }
    assert_eq!(pos_or_zero(&p, "app.db"), pos);
    assert_eq!(pos_or_zero(&r, "app.db"), pos);
    assert_eq!(pos_or_zero(&p, "other.db"), Pos::ZERO);
    assert_eq!(sql(&r, "app.db", None, "SELECT v FROM t;"), "kept\n");
    assert!(api_temp_files(&r).is_empty(), "{:?}", api_temp_files(&r));
}

/// `curl -sN URL/events`, with its output lines on a channel.
fn follow_events(node: &MountedNode) -> (Child, Receiver<String>) {
    let mut child = Command::new("curl")
        .args(["-sN", &format!("{}/events", node.url())])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run curl");
    let rx = line_channel(&mut child);
    (child, rx)
}

fn next_event(rx: &Receiver<String>, node: &MountedNode) -> serde_json::Value {
    let line = rx.recv_timeout(CATCH_UP).unwrap_or_else(|e| {
        panic!(
            "no event within {CATCH_UP:?} ({e})\n--- log ---\n{}",
            node.log()
        )
    });
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("event {line:?}: {e}"))
}

/// Waits for the `tx` event of `db` at `pos`; checks every `tx` event of `db` on the way.
fn wait_tx_event(rx: &Receiver<String>, node: &MountedNode, db: &str, pos: Pos) {
    loop {
        let ev = next_event(rx, node);
        assert_eq!(ev["type"], "tx", "{ev}");
        if ev["db"] != db {
            continue;
        }
        let data = &ev["data"];
        assert_eq!(data["pageSize"], 4096, "{ev}");
        assert!(data["commit"].as_u64().unwrap() >= 1, "{ev}");
        let ts = data["timestamp"].as_str().unwrap();
        assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ev}");
        let txid = data["txID"].as_str().unwrap();
        assert_eq!(txid.len(), 16, "{ev}");
        if txid == pos.txid.to_string() {
            assert_eq!(
                data["postApplyChecksum"].as_str().unwrap(),
                pos.post_apply_checksum.to_string(),
                "{ev}"
            );
            return;
        }
    }
}

/// `/events` starts with an `init` event (role and primary), then gives a `tx` event for every
/// transaction, on the primary and on a replica; the nodes stop cleanly with clients connected,
/// which ends their streams.
#[test]
fn events_show_init_then_transactions() {
    let mut p = primary();
    let mut r = replica_of(&p);
    let (mut p_curl, p_events) = follow_events(&p);
    let (mut r_curl, r_events) = follow_events(&r);

    let init = next_event(&p_events, &p);
    assert_eq!(init["type"], "init", "{init}");
    assert_eq!(init["data"]["isPrimary"], true, "{init}");
    assert!(init["data"]["hostname"].is_string(), "{init}");
    let init = next_event(&r_events, &r);
    assert_eq!(init["type"], "init", "{init}");
    assert_eq!(init["data"]["isPrimary"], false, "{init}");
    assert_eq!(
        init["data"]["hostname"],
        format!("primary-{}", p.port()),
        "{init}"
    );

    sql(&p, "app.db", None, "CREATE TABLE t (v TEXT);");
    let first = p.pos("app.db");
    assert_eq!(first.txid.get(), 1);
    wait_tx_event(&p_events, &p, "app.db", first);
    sql(&p, "app.db", None, "INSERT INTO t VALUES ('x');");
    let second = p.pos("app.db");
    assert_eq!(second.txid.get(), 2);
    wait_tx_event(&p_events, &p, "app.db", second);

    wait_caught_up(&p, &[&r], "app.db");
    wait_tx_event(&r_events, &r, "app.db", second);

    r.stop();
    p.stop();
    for curl in [&mut p_curl, &mut r_curl] {
        let status = support::mount::wait_deadline(curl, CATCH_UP);
        if status.is_none() {
            let _ = curl.kill();
            let _ = curl.wait();
            panic!("curl /events did not end when its node stopped");
        }
    }
}
