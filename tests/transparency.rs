#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The mount behaves like a plain local directory: files that are not databases, directories,
//! databases made by `cp`, `dd`, `mv` and `os.replace`, SQLite's locking between processes,
//! WAL checkpoints, page size changes and `statfs`.
//!
//! Every test runs the same steps on a plain temporary directory and on the mount and asserts
//! the same outcome (rows, command outputs, errors, recursive listings), then checks what only
//! the mount has: positions (`<db>-pos`), LTX files and where the data directory keeps things.
//!
//! Nothing here sleeps for a fixed time: processes are waited for with deadlines, and every
//! child process is killed (by its PID) if the test fails while it runs.

mod support;

use std::fmt::Debug;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, PermissionsExt as _};
use std::os::unix::io::AsRawFd as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use support::mount::{line_channel, wait_deadline, MountedNode};

/// How long any one command may run before the test gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// How long a helper process may take to report a step on its standard output.
const LINE_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A child process that is killed (by its PID) and reaped when dropped, so that a failing
/// assert leaks nothing.
#[derive(Debug)]
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        ChildGuard(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned by its guard")
    }

    /// Waits for the child with a deadline, then returns what it printed. Panics (and kills
    /// the child) when the deadline passes.
    fn finish(mut self, what: &str, dir: &Path) -> Outcome {
        let child = self.child();
        let Some(status) = wait_deadline(child, COMMAND_DEADLINE) else {
            panic!("{what} did not finish within {COMMAND_DEADLINE:?}");
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut stderr).unwrap();
        }
        self.0 = None;
        Outcome::new(status.code(), &stdout, &stderr, dir)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a finished command did, with the directory it ran on written as `<dir>` so that the
/// plain directory and the mount compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn new(code: Option<i32>, stdout: &str, stderr: &str, dir: &Path) -> Outcome {
        let d = dir.to_str().expect("utf-8 path");
        Outcome {
            code,
            stdout: stdout.replace(d, "<dir>"),
            stderr: stderr.replace(d, "<dir>"),
        }
    }

    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` in `dir` (stdin empty) with a deadline.
/// A program that cannot be started (say, a script the kernel will not execute) is an
/// outcome too: no exit code, and the errno as its error output.
fn run(dir: &Path, cmd: &mut Command) -> Outcome {
    let what = format!("{cmd:?}");
    let spawned = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match spawned {
        Ok(child) => ChildGuard(Some(child)).finish(&what, dir),
        Err(e) => Outcome::new(
            None,
            "",
            &format!("cannot start: {}", io_outcome::<()>(Err(e))),
            dir,
        ),
    }
}

/// Runs `sh -c SCRIPT` in `dir`.
fn sh(dir: &Path, script: &str) -> Outcome {
    run(dir, Command::new("sh").arg("-c").arg(script))
}

/// Runs the `sqlite3` CLI (`-bail`) in `dir` on database `db` (relative to `dir`).
fn sql(dir: &Path, db: &str, script: &str) -> Outcome {
    run(
        dir,
        Command::new("sqlite3").arg("-bail").arg(db).arg(script),
    )
}

/// Like [`sql`], but the reference run must succeed: returns its standard output.
fn sql_ok(dir: &Path, db: &str, script: &str) -> String {
    let out = sql(dir, db, script);
    assert!(
        out.ok(),
        "sqlite3 {db} {script:?} in {}: {out:?}",
        dir.display()
    );
    out.stdout
}

/// An `io::Result` as it is compared: the value, or the errno.
fn io_outcome<T: Debug>(r: io::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err errno={:?} kind={:?}", e.raw_os_error(), e.kind()),
    }
}

/// The errno of a failed `io::Result`, `None` if it succeeded.
fn errno<T>(r: io::Result<T>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// The steps one run took and what each did, in order.
#[derive(Debug, Default)]
struct Trace(Vec<(String, String)>);

impl Trace {
    /// What step `step` did (its first occurrence).
    fn get(&self, step: &str) -> &str {
        self.0
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, what)| what.as_str())
            .unwrap_or_else(|| panic!("no step {step:?} in {self:?}"))
    }

    fn note(&mut self, step: &str, what: impl Debug) {
        self.0.push((step.to_owned(), format!("{what:?}")));
    }

    /// Records an `io::Result` (value or errno) and hands the value on.
    fn io<T: Debug + Clone>(&mut self, step: &str, r: io::Result<T>) -> Option<T> {
        let kept = r.as_ref().ok().cloned();
        self.0.push((step.to_owned(), io_outcome(r)));
        kept
    }
}

/// Asserts that the mount's run did what the plain directory's did, naming the first step
/// that differs.
fn assert_same_trace(plain: &Trace, mount: &Trace) {
    for (i, (p, m)) in plain.0.iter().zip(&mount.0).enumerate() {
        assert_eq!(
            m, p,
            "step {i} ({}) differs: mount (left) vs plain directory (right)",
            p.0
        );
    }
    assert_eq!(
        mount.0.len(),
        plain.0.len(),
        "the mount's run took {} steps, the plain directory's {}",
        mount.0.len(),
        plain.0.len()
    );
}

/// Runs `f` on the plain directory, then on the mount, and asserts the same result.
fn same<T: PartialEq + Debug>(
    plain: &Path,
    node: &MountedNode,
    what: &str,
    f: impl Fn(&Path) -> T,
) -> T {
    let on_plain = f(plain);
    let on_mount = f(&node.mnt());
    assert_eq!(
        on_mount, on_plain,
        "{what}: mount (left) vs plain directory (right)"
    );
    on_mount
}

/// Every entry under `root`, recursively, as sorted relative paths; directories end in `/`.
/// Dot files at the top (the mount's `.lag`) are left out.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        let dir = root.join(rel);
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let name = entry.file_name().into_string().expect("utf-8 name");
            if rel.as_os_str().is_empty() && name.starts_with('.') {
                continue;
            }
            let path = rel.join(&name);
            let shown = path.to_str().expect("utf-8 path").to_owned();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{shown}/"));
                walk(root, &path, out);
            } else {
                out.push(shown);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out.sort();
    out
}

/// Every file under `root` (as [`listing`]) but those named in `skip`, with its contents.
fn contents(root: &Path, skip: &[&str]) -> Vec<(String, String)> {
    listing(root)
        .into_iter()
        .filter(|p| !p.ends_with('/') && !skip.contains(&p.as_str()))
        .map(|p| {
            let bytes = fs::read(root.join(&p))
                .unwrap_or_else(|e| panic!("read {}: {e}", root.join(&p).display()));
            (p, String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

/// `flock(2)` on an open file: `Ok` or the errno.
fn flock(file: &fs::File, op: libc::c_int) -> Result<(), Option<i32>> {
    // SAFETY: the descriptor belongs to `file`, which outlives the call; flock has no other
    // preconditions.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error().raw_os_error())
    }
}

/// `statvfs(3)` of a path: (f_blocks, f_bsize, f_frsize).
fn statvfs(path: &Path) -> (libc::fsblkcnt_t, libc::c_ulong, libc::c_ulong) {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs is plain old data, for which all-zero bytes are a valid value.
    #[allow(unsafe_code)]
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs, both live for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    (st.f_blocks, st.f_bsize, st.f_frsize)
}

/// Reads `<db>-pos` through the mount; exactly 34 bytes.
fn read_pos(node: &MountedNode, db: &str) -> String {
    let path = node.mnt().join(format!("{db}-pos"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(text.len(), 34, "{} is {text:?}", path.display());
    text
}

/// Asserts that `<db>-pos` does not exist in the mount (ENOENT).
fn assert_no_pos(node: &MountedNode, name: &str) {
    let path = node.mnt().join(format!("{name}-pos"));
    assert_eq!(
        errno(fs::metadata(&path)),
        Some(libc::ENOENT),
        "{} should not exist: {name} is not a database",
        path.display()
    );
}

/// Creates a database of `rows` rows of `randomblob(size)` at `path`.
fn make_source(path: &Path, rows: u32, size: u32) {
    support::sqlite3(
        path,
        &format!(
            "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c \
             WHERE i < {rows}) INSERT INTO t SELECT randomblob({size}) FROM c;"
        ),
    );
}

/// Waits for the next line from a helper process, with a deadline.
fn expect_line(lines: &Receiver<String>, want: &str, who: &str) {
    match lines.recv_timeout(LINE_DEADLINE) {
        Ok(line) => assert_eq!(line, want, "{who}"),
        Err(e) => panic!("{who}: no {want:?} within {LINE_DEADLINE:?} ({e})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Files that are not databases (logs, configuration, scripts, lock files, a text file named
/// `*.db`) work as in a local directory beside a real database: writes, appends, truncation,
/// renames, removal, `flock`, unaligned writes, executing a script. They are kept on this node
/// (`data.dir/files/`), never as databases, and survive a restart.
#[test]
fn non_database_files_like_a_local_directory() {
    let mut node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();

    let steps = |dir: &Path| -> Trace {
        let mut t = Trace::default();
        let p = |n: &str| dir.join(n);

        // A log: write, then append.
        t.io("write app.log", fs::write(p("app.log"), "line 1\n"));
        let appended = fs::OpenOptions::new()
            .append(true)
            .open(p("app.log"))
            .and_then(|mut f| f.write_all(b"line 2\n"));
        t.io("append app.log", appended);
        t.io("read app.log", fs::read_to_string(p("app.log")));

        t.io(
            "write config.json",
            fs::write(p("config.json"), "{\"a\": 1}\n"),
        );

        // A script, made executable and run directly.
        t.io(
            "write run.sh",
            fs::write(p("run.sh"), "#!/bin/sh\necho ran\n"),
        );
        t.io(
            "chmod run.sh",
            fs::set_permissions(p("run.sh"), fs::Permissions::from_mode(0o755)),
        );
        t.io(
            "mode of run.sh",
            fs::metadata(p("run.sh")).map(|m| m.permissions().mode() & 0o7777),
        );
        t.note("execute run.sh", run(dir, &mut Command::new(p("run.sh"))));

        // A text file named like a database.
        t.io(
            "write notes.db",
            fs::write(p("notes.db"), "these are notes, not SQLite\n"),
        );
        t.io("read notes.db", fs::read_to_string(p("notes.db")));
        match fs::OpenOptions::new().write(true).open(p("notes.db")) {
            Ok(f) => {
                t.note("open notes.db", "ok");
                t.io("truncate notes.db to 10", f.set_len(10));
                t.io("read notes.db", fs::read_to_string(p("notes.db")));
                t.io("extend notes.db to 40", f.set_len(40));
                t.io("read notes.db", fs::read_to_string(p("notes.db")));
            }
            Err(e) => t.note("open notes.db", io_outcome::<()>(Err(e))),
        }
        t.io(
            "size of notes.db",
            fs::metadata(p("notes.db")).map(|m| m.len()),
        );

        // Renames: to a new name, and over an existing file.
        t.io("rename app.log", fs::rename(p("app.log"), p("app.log.1")));
        t.io("read app.log", fs::read_to_string(p("app.log")));
        t.io("read app.log.1", fs::read_to_string(p("app.log.1")));
        t.io(
            "write config.json.new",
            fs::write(p("config.json.new"), "{\"a\": 2}\n"),
        );
        t.io(
            "rename config.json.new over config.json",
            fs::rename(p("config.json.new"), p("config.json")),
        );
        t.io("read config.json", fs::read_to_string(p("config.json")));
        t.io(
            "read config.json.new",
            fs::read_to_string(p("config.json.new")),
        );

        // Removal.
        t.io("write scratch.txt", fs::write(p("scratch.txt"), "scratch"));
        t.io("remove scratch.txt", fs::remove_file(p("scratch.txt")));
        t.io(
            "stat scratch.txt",
            fs::metadata(p("scratch.txt")).map(|m| m.len()),
        );
        t.io(
            "remove scratch.txt again",
            fs::remove_file(p("scratch.txt")),
        );

        // flock between two open file descriptions.
        let first = fs::File::create(p("app.lock"));
        let second = fs::File::open(p("app.lock"));
        match (first, second) {
            (Ok(first), Ok(second)) => {
                t.note("flock first", flock(&first, libc::LOCK_EX | libc::LOCK_NB));
                t.note(
                    "flock second while held",
                    flock(&second, libc::LOCK_EX | libc::LOCK_NB),
                );
                t.note("unlock first", flock(&first, libc::LOCK_UN));
                t.note(
                    "flock second",
                    flock(&second, libc::LOCK_EX | libc::LOCK_NB),
                );
                t.note("unlock second", flock(&second, libc::LOCK_UN));
            }
            (first, second) => {
                t.io("create app.lock", first.map(|_| ()));
                t.io("open app.lock", second.map(|_| ()));
            }
        }

        // A write at an unaligned offset inside a file.
        t.io("write data.bin", fs::write(p("data.bin"), "0123456789"));
        let patched = fs::OpenOptions::new()
            .write(true)
            .open(p("data.bin"))
            .and_then(|f| f.write_all_at(b"abcde", 3));
        t.io("write 5 bytes at offset 3 of data.bin", patched);
        t.io("read data.bin", fs::read_to_string(p("data.bin")));

        // A real database beside them: CREATE, then INSERT (two transactions).
        t.note("create real.db", sql(dir, "real.db", "CREATE TABLE t(x);"));
        t.note(
            "insert into real.db",
            sql(dir, "real.db", "INSERT INTO t VALUES (1), (2), (3);"),
        );
        t.note(
            "query real.db",
            sql(dir, "real.db", "SELECT x FROM t ORDER BY x;"),
        );

        t.note("listing", listing(dir));
        t.note("contents", contents(dir, &["real.db"]));
        t
    };
    let on_plain = steps(plain.path());
    assert_eq!(
        on_plain.get("flock second while held"),
        format!("{:?}", Err::<(), _>(Some(libc::EWOULDBLOCK))),
        "a second LOCK_EX|LOCK_NB on the plain directory"
    );
    assert!(
        on_plain
            .get("execute run.sh")
            .contains(r#"stdout: "ran\n""#),
        "run.sh on the plain directory: {}",
        on_plain.get("execute run.sh")
    );
    let on_mount = steps(&node.mnt());
    assert_same_trace(&on_plain, &on_mount);

    // notes.db is a file, not a database.
    assert_no_pos(&node, "notes.db");
    let notes_db_dir = node.data().join("dbs/notes.db");
    assert!(
        !notes_db_dir.exists(),
        "{} exists: a text file was taken for a database",
        notes_db_dir.display()
    );
    // Local files are kept under data.dir/files/.
    let config = node.data().join("files/config.json");
    assert!(
        config.is_file(),
        "{} does not exist; data.dir holds {:?}",
        config.display(),
        listing(&node.data())
    );
    // The real database: CREATE and INSERT, one transaction each.
    assert_eq!(node.txid("real.db"), 2);
    node.check_consistent("real.db");

    // A restart keeps everything as it was.
    let listed = listing(&node.mnt());
    let files = contents(&node.mnt(), &["real.db"]);
    let rows = sql_ok(&node.mnt(), "real.db", "SELECT x FROM t ORDER BY x;");
    node.restart();
    assert_eq!(listing(&node.mnt()), listed, "listing after restart");
    assert_eq!(
        contents(&node.mnt(), &["real.db"]),
        files,
        "files after restart"
    );
    assert_eq!(
        fs::metadata(node.mnt().join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755,
        "mode of run.sh after restart"
    );
    assert_eq!(
        run(&node.mnt(), &mut Command::new(node.mnt().join("run.sh"))),
        run(plain.path(), &mut Command::new(plain.path().join("run.sh"))),
        "run.sh after restart"
    );
    assert_eq!(
        sql_ok(&node.mnt(), "real.db", "SELECT x FROM t ORDER BY x;"),
        rows,
        "real.db after restart"
    );
    assert_eq!(node.txid("real.db"), 2);
    node.check_consistent("real.db");
}

/// Directories work as in a local directory: `mkdir`, `mkdir -p`, databases and files inside
/// them, `rmdir` of a non-empty and then an empty directory, renaming a directory of files.
/// A database in a subdirectory is a database like any other, with its own position and LTX
/// files under `data.dir/dbs/<path>/`, and survives a restart.
#[test]
fn subdirectories_like_a_local_directory() {
    let mut node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();

    let steps = |dir: &Path| -> Trace {
        let mut t = Trace::default();
        let p = |n: &str| dir.join(n);
        t.io("mkdir tenants", fs::create_dir(p("tenants")));
        t.io("mkdir -p a/b", fs::create_dir_all(p("a/b")));
        for (db, name) in [("tenants/acme.db", "acme"), ("a/b/c.db", "c")] {
            t.note(&format!("create {db}"), sql(dir, db, "CREATE TABLE t(x);"));
            t.note(
                &format!("insert into {db}"),
                sql(dir, db, &format!("INSERT INTO t VALUES ('{name}');")),
            );
        }
        t.io(
            "write a/readme.txt",
            fs::write(p("a/readme.txt"), "read me\n"),
        );
        t.note("listing", listing(dir));
        for db in ["tenants/acme.db", "a/b/c.db"] {
            t.note(&format!("query {db}"), sql(dir, db, "SELECT x FROM t;"));
        }
        t.io("read a/readme.txt", fs::read_to_string(p("a/readme.txt")));

        t.io("rmdir tenants (not empty)", fs::remove_dir(p("tenants")));
        t.note("rm -f tenants/acme.db*", sh(dir, "rm -f tenants/acme.db*"));
        t.note("listing after rm", listing(dir));
        t.io("rmdir tenants", fs::remove_dir(p("tenants")));
        t.io(
            "stat tenants",
            fs::metadata(p("tenants")).map(|m| m.is_dir()),
        );

        // A directory holding only local files can be renamed.
        t.io("mkdir a2", fs::create_dir(p("a2")));
        t.io("write a2/x.txt", fs::write(p("a2/x.txt"), "x\n"));
        t.io("rename a2 to a3", fs::rename(p("a2"), p("a3")));
        t.io("read a3/x.txt", fs::read_to_string(p("a3/x.txt")));
        t.io("read a2/x.txt", fs::read_to_string(p("a2/x.txt")));
        t.note("listing at the end", listing(dir));
        t
    };
    let on_plain = steps(plain.path());
    assert_eq!(
        on_plain.get("rmdir tenants (not empty)"),
        io_outcome::<()>(Err(io::Error::from_raw_os_error(libc::ENOTEMPTY))),
        "rmdir of a non-empty directory on the plain directory"
    );
    assert_eq!(
        on_plain.get("rmdir tenants"),
        "ok ()",
        "rmdir of an empty directory on the plain directory"
    );
    let on_mount = steps(&node.mnt());
    assert_same_trace(&on_plain, &on_mount);

    // The database in a subdirectory.
    read_pos(&node, "a/b/c.db");
    assert_eq!(node.txid("a/b/c.db"), 2);
    node.check_consistent("a/b/c.db");
    let ltx_dir = node.data().join("dbs/a/b/c.db/ltx");
    assert!(
        ltx_dir.is_dir(),
        "{} is not a directory; data.dir holds {:?}",
        ltx_dir.display(),
        listing(&node.data())
    );
    assert_eq!(
        node.ltx_files("a/b/c.db").len(),
        2,
        "LTX files in {}",
        ltx_dir.display()
    );

    // After a restart.
    let listed = listing(&node.mnt());
    node.restart();
    assert_eq!(
        sql(&node.mnt(), "a/b/c.db", "SELECT x FROM t;"),
        sql(plain.path(), "a/b/c.db", "SELECT x FROM t;"),
        "a/b/c.db after restart"
    );
    assert_eq!(listing(&node.mnt()), listed, "listing after restart");
    assert_eq!(listing(&node.mnt()), listing(plain.path()));
    assert_eq!(node.txid("a/b/c.db"), 2);
    node.check_consistent("a/b/c.db");
}

/// Copying a database file into the mount (`cp`, `dd` with writes that are not page-aligned,
/// `cp` over an existing database) gives a working database with the same rows as on a plain
/// directory, recorded as one transaction per copy.
#[test]
fn cp_into_the_mount_makes_a_database() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let first = src.path().join("src.db");
    let second = src.path().join("src2.db");
    make_source(&first, 500, 300);
    make_source(&second, 200, 1000);
    const CHECK: &str = "SELECT count(*), sum(length(x)) FROM t; PRAGMA integrity_check;";

    // (a) cp to a new name.
    let out = same(plain.path(), &node, "cp src.db copy.db", |dir| {
        let cp = run(dir, Command::new("cp").arg(&first).arg("copy.db"));
        (cp, sql(dir, "copy.db", CHECK))
    });
    assert!(out.0.ok(), "cp on the plain directory: {out:?}");
    assert_eq!(out.1.stdout, "500|150000\nok\n");
    assert_eq!(node.txid("copy.db"), 1, "cp is one snapshot transaction");
    node.check_consistent("copy.db");

    // (b) dd in 1000-byte writes.
    let out = same(plain.path(), &node, "dd bs=1000", |dir| {
        let dd = run(
            dir,
            Command::new("dd")
                .arg(format!("if={}", first.display()))
                .arg("of=dd.db")
                .arg("bs=1000")
                .arg("status=none"),
        );
        (dd, sql(dir, "dd.db", CHECK))
    });
    assert!(out.0.ok(), "dd on the plain directory: {out:?}");
    assert_eq!(out.1.stdout, "500|150000\nok\n");
    assert_eq!(node.txid("dd.db"), 1, "dd is one snapshot transaction");
    node.check_consistent("dd.db");

    // (c) cp over an existing database.
    let before = node.txid("copy.db");
    let out = same(plain.path(), &node, "cp src2.db over copy.db", |dir| {
        let cp = run(dir, Command::new("cp").arg(&second).arg("copy.db"));
        (cp, sql(dir, "copy.db", CHECK))
    });
    assert!(out.0.ok(), "cp on the plain directory: {out:?}");
    assert_eq!(out.1.stdout, "200|200000\nok\n");
    assert_eq!(
        node.txid("copy.db"),
        before + 1,
        "cp over a database is one transaction"
    );
    node.check_consistent("copy.db");

    // The copy is a database SQLite writes to as usual.
    let before = node.txid("copy.db");
    same(plain.path(), &node, "insert into copy.db", |dir| {
        sql(
            dir,
            "copy.db",
            "INSERT INTO t VALUES (randomblob(10)); SELECT count(*) FROM t;",
        )
    });
    assert_eq!(node.txid("copy.db"), before + 1);
    node.check_consistent("copy.db");
    same(plain.path(), &node, "listing", listing);
}

/// `mv tmp.db app.db` (and Python's `os.replace`) replaces a database in one step, as
/// applications that rebuild a database beside the live one do: the rows are the new file's,
/// the replaced database records it as one transaction, and the temporary name is gone. A
/// rename to a new name makes a database under that name.
#[test]
fn mv_replaces_a_database_atomically() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let ten = src.path().join("ten.db");
    let twenty = src.path().join("twenty.db");
    support::sqlite3(
        &ten,
        "CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10);",
    );
    make_source(&twenty, 20, 10);
    let vacuum_into = |from: &Path, dir: &Path, name: &str| {
        let into = dir.join(name);
        sql(
            dir,
            from.to_str().unwrap(),
            &format!("VACUUM INTO '{}';", into.display()),
        )
    };

    same(plain.path(), &node, "app.db in WAL mode", |dir| {
        sql(
            dir,
            "app.db",
            "PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3); \
             SELECT count(*) FROM t;",
        )
    });

    // mv over an existing database.
    let before = node.txid("app.db");
    let out = same(plain.path(), &node, "mv tmp.db app.db", |dir| {
        let vacuum = vacuum_into(&ten, dir, "tmp.db");
        let mv = run(dir, Command::new("mv").args(["tmp.db", "app.db"]));
        (
            vacuum,
            mv,
            sql(dir, "app.db", "SELECT count(*) FROM t;"),
            listing(dir),
        )
    });
    assert!(out.1.ok(), "mv on the plain directory: {out:?}");
    assert_eq!(out.2.stdout, "10\n");
    assert_eq!(out.3, ["app.db"]);
    assert_eq!(
        node.txid("app.db"),
        before + 1,
        "mv over app.db is one transaction of app.db"
    );
    node.check_consistent("app.db");
    assert_no_pos(&node, "tmp.db");

    // mv to a name that does not exist yet.
    let out = same(plain.path(), &node, "mv tmp2.db fresh.db", |dir| {
        let vacuum = vacuum_into(&ten, dir, "tmp2.db");
        let mv = run(dir, Command::new("mv").args(["tmp2.db", "fresh.db"]));
        (
            vacuum,
            mv,
            sql(dir, "fresh.db", "SELECT count(*) FROM t;"),
            listing(dir),
        )
    });
    assert_eq!(out.2.stdout, "10\n");
    assert_eq!(out.3, ["app.db", "fresh.db"]);
    node.check_consistent("fresh.db");
    assert_no_pos(&node, "tmp2.db");

    // os.replace over an existing database.
    let before = node.txid("app.db");
    let out = same(plain.path(), &node, "os.replace(tmp3.db, app.db)", |dir| {
        let vacuum = vacuum_into(&twenty, dir, "tmp3.db");
        let replace = run(
            dir,
            Command::new("python3")
                .arg("-c")
                .arg("import os, sys; os.replace(sys.argv[1], sys.argv[2])")
                .args(["tmp3.db", "app.db"]),
        );
        (
            vacuum,
            replace,
            sql(dir, "app.db", "SELECT count(*) FROM t;"),
            listing(dir),
        )
    });
    assert!(out.1.ok(), "os.replace on the plain directory: {out:?}");
    assert_eq!(out.2.stdout, "20\n");
    assert_eq!(out.3, ["app.db", "fresh.db"]);
    assert_eq!(
        node.txid("app.db"),
        before + 1,
        "os.replace over app.db is one transaction of app.db"
    );
    node.check_consistent("app.db");
    assert_no_pos(&node, "tmp3.db");
}

/// Holds a write transaction open: `BEGIN IMMEDIATE` and an INSERT, prints `locked`, then
/// commits when a line arrives on stdin and prints `committed`.
const HOLDER: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
con.execute("BEGIN IMMEDIATE")
con.execute("INSERT INTO t VALUES ('held')")
print("locked", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
con.close()
print("committed", flush=True)
"#;

/// SQLite's locking between processes is the kernel's, as on a local disk: while another
/// process holds the write lock, a writer with no busy timeout fails at once with "database is
/// locked", and a writer with a busy timeout waits and then succeeds. Rollback and WAL modes.
#[test]
fn busy_timeout_across_processes_like_a_local_directory() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    for mode in ["delete", "wal"] {
        let db = format!("busy-{mode}.db");
        let out = same(plain.path(), &node, &format!("{mode}: contention"), |dir| {
            let setup = sql(
                dir,
                &db,
                &format!("PRAGMA journal_mode={mode}; CREATE TABLE t(x);"),
            );
            let mut holder = ChildGuard::spawn(
                Command::new("python3")
                    .arg("-c")
                    .arg(HOLDER)
                    .arg(&db)
                    .current_dir(dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit()),
            );
            let lines = line_channel(holder.child());
            expect_line(
                &lines,
                "locked",
                &format!("{mode} holder in {}", dir.display()),
            );

            // No busy timeout: fails at once.
            let nowait = run(
                dir,
                Command::new("sqlite3")
                    .args(["-cmd", ".timeout 0"])
                    .arg(&db)
                    .arg("INSERT INTO t VALUES ('nowait');"),
            );
            // A busy timeout: waits for the holder to commit.
            let waiter = ChildGuard::spawn(
                Command::new("sqlite3")
                    .args(["-cmd", ".timeout 10000"])
                    .arg(&db)
                    .arg("INSERT INTO t VALUES ('waited');")
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            );
            writeln!(holder.child().stdin.as_mut().unwrap()).unwrap();
            expect_line(
                &lines,
                "committed",
                &format!("{mode} holder in {}", dir.display()),
            );
            let holder_done = holder.finish("python3 holder", dir);
            let waited = waiter.finish("sqlite3 with .timeout 10000", dir);
            let rows = sql(dir, &db, "SELECT x FROM t ORDER BY rowid;");
            (setup, nowait, holder_done, waited, rows)
        });
        let (_, nowait, holder_done, waited, rows) = &out;
        assert!(
            !nowait.ok() && nowait.stderr.contains("database is locked"),
            "{mode}: the writer without a busy timeout on the plain directory: {nowait:?}"
        );
        assert!(holder_done.ok(), "{mode}: holder: {holder_done:?}");
        assert!(waited.ok(), "{mode}: the waiting writer: {waited:?}");
        assert_eq!(rows.stdout, "held\nwaited\n", "{mode}");
        node.check_consistent(&db);
    }
}

/// Every `wal_checkpoint` mode reports what it reports on a local disk, and a page size change
/// (`PRAGMA page_size` then VACUUM) in rollback mode gives the same database.
#[test]
fn wal_checkpoint_modes_and_page_size_like_a_local_directory() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let insert = |n: u32| {
        format!(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < {n}) \
             INSERT INTO t SELECT randomblob(500) FROM c;"
        )
    };

    same(plain.path(), &node, "wal.db setup", |dir| {
        sql(
            dir,
            "wal.db",
            &format!(
                "PRAGMA journal_mode=wal; CREATE TABLE t(x); {} SELECT count(*) FROM t;",
                insert(50)
            ),
        )
    });
    for mode in ["PASSIVE", "FULL", "RESTART", "TRUNCATE"] {
        let out = same(
            plain.path(),
            &node,
            &format!("wal_checkpoint({mode})"),
            |dir| {
                sql(
                    dir,
                    "wal.db",
                    &format!(
                        "{} {} PRAGMA wal_checkpoint({mode}); {} SELECT count(*) FROM t; \
                     PRAGMA wal_checkpoint({mode}); SELECT count(*) FROM t;",
                        insert(20),
                        insert(5),
                        insert(3),
                    ),
                )
            },
        );
        assert!(out.ok(), "{mode} on the plain directory: {out:?}");
    }
    same(plain.path(), &node, "wal.db at the end", |dir| {
        sql(
            dir,
            "wal.db",
            "SELECT count(*), sum(length(x)) FROM t; PRAGMA integrity_check;",
        )
    });
    node.check_consistent("wal.db");

    same(plain.path(), &node, "rb.db setup", |dir| {
        sql(dir, "rb.db", &format!("CREATE TABLE t(x); {}", insert(300)))
    });
    same(plain.path(), &node, "page_size=8192; VACUUM", |dir| {
        sql(dir, "rb.db", "PRAGMA page_size=8192; VACUUM;")
    });
    let out = same(plain.path(), &node, "rb.db after VACUUM", |dir| {
        sql(
            dir,
            "rb.db",
            "PRAGMA page_size; SELECT count(*), sum(length(x)) FROM t; PRAGMA integrity_check;",
        )
    });
    assert_eq!(out.stdout, "8192\n300|150000\nok\n");
    node.check_consistent("rb.db");
    same(plain.path(), &node, "listing", listing);
}

/// `df` on the mount reports the data directory's filesystem, and `ls` shows what a local
/// directory would (no `<db>-pos` or `<db>-lock`), while `<db>-pos` stays readable by name.
#[test]
fn statfs_reports_the_data_directory_filesystem() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();

    let on_mount = statvfs(&node.mnt());
    let on_data = statvfs(&node.data());
    assert_eq!(
        on_mount, on_data,
        "statvfs (f_blocks, f_bsize, f_frsize): mount (left) vs data directory (right)"
    );
    let stat_f = |dir: &Path| {
        run(
            dir,
            Command::new("stat").args(["-f", "-c", "%b %S %s"]).arg("."),
        )
    };
    assert_eq!(
        stat_f(&node.mnt()),
        stat_f(&node.data()),
        "stat -f (blocks, fundamental block size, block size): mount vs data directory"
    );

    let out = same(plain.path(), &node, "ls after creating a database", |dir| {
        let create = sql(dir, "s.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
        (create, run(dir, &mut Command::new("ls")), listing(dir))
    });
    assert_eq!(out.1.stdout, "s.db\n");
    assert!(
        !out.1.stdout.contains("-pos") && !out.1.stdout.contains("-lock"),
        "{out:?}"
    );
    read_pos(&node, "s.db");
    assert_eq!(
        errno(fs::read(plain.path().join("s.db-pos"))),
        Some(libc::ENOENT)
    );
    node.check_consistent("s.db");
}

/// `mv` of a directory that holds databases: the mount answers the rename with EXDEV (a
/// database's history belongs to its name), and `mv` then copies and deletes, as it does across
/// filesystems. Same listing and rows as on a plain directory; the databases under the new
/// name are recorded, the old names are gone.
#[test]
fn mv_of_a_directory_with_databases_like_a_local_directory() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    same(plain.path(), &node, "mv tenants customers", |dir| {
        fs::create_dir(dir.join("tenants")).unwrap();
        let made = sql(
            dir,
            "tenants/acme.db",
            "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);",
        );
        fs::write(dir.join("tenants/notes.txt"), "hello\n").unwrap();
        let mv = run(dir, Command::new("mv").args(["tenants", "customers"]));
        (
            made,
            mv,
            sql(dir, "customers/acme.db", "SELECT count(*) FROM t;"),
            listing(dir),
        )
    });
    node.check_consistent("customers/acme.db");
    assert_no_pos(&node, "tenants/acme.db");
    // The copy is a database SQLite writes to as usual.
    let before = node.txid("customers/acme.db");
    same(plain.path(), &node, "insert", |dir| {
        sql(
            dir,
            "customers/acme.db",
            "INSERT INTO t VALUES (3); SELECT count(*) FROM t;",
        )
    });
    assert_eq!(node.txid("customers/acme.db"), before + 1);
    node.check_consistent("customers/acme.db");
}

/// A plain file unlinked while open stays readable and writable through the open handle, and
/// a new file of the same name is another file, as on a local disk (the usual temporary file
/// pattern).
#[test]
fn unlinked_open_file_like_a_local_directory() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    same(plain.path(), &node, "unlink while open", |dir| {
        let path = dir.join("scratch.tmp");
        fs::write(&path, b"old content").unwrap();
        let mut old = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"new").unwrap();
        old.write_all_at(b"OLD", 0).unwrap();
        let mut through_old = String::new();
        old.read_to_string(&mut through_old).unwrap();
        drop(old);
        (
            through_old,
            fs::read_to_string(&path).unwrap(),
            listing(dir),
        )
    });
}

/// `rm -rf` of a directory of 2000 files (it lists the directory while it deletes from it):
/// nothing skipped, the directory is gone.
#[test]
fn rm_rf_of_a_large_directory_like_a_local_directory() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    same(plain.path(), &node, "rm -rf many", |dir| {
        let many = dir.join("many");
        fs::create_dir(&many).unwrap();
        for i in 0..2000 {
            fs::write(many.join(format!("file-with-a-long-name-{i:05}.txt")), b"x").unwrap();
        }
        let count = fs::read_dir(&many).unwrap().count();
        let rm = run(dir, Command::new("rm").args(["-rf", "many"]));
        (count, rm, listing(dir))
    });
}

/// A copy whose name ends like a database's other files (`-lock`, `-wal`) stays a plain file:
/// it is not taken for a control file or a WAL, and reads back as written.
#[test]
fn database_copies_under_companion_names_stay_plain_files() {
    let node = MountedNode::start();
    let plain = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("src.db");
    make_source(&source, 50, 100);
    let original = fs::read(&source).unwrap();
    let out = same(plain.path(), &node, "cp and mv to companion names", |dir| {
        let cp = run(dir, Command::new("cp").arg(&source).arg("notes-lock"));
        let cp2 = run(dir, Command::new("cp").arg(&source).arg("a.db"));
        let mv = run(dir, Command::new("mv").args(["a.db", "b.db-wal"]));
        (
            cp,
            cp2,
            mv,
            fs::read(dir.join("notes-lock")).unwrap() == original,
            fs::read(dir.join("b.db-wal")).unwrap() == original,
            listing(dir),
        )
    });
    assert!(out.3 && out.4, "{out:?}");
    assert_no_pos(&node, "notes");
    assert_no_pos(&node, "b.db");
}

/// While a copy tool is still writing a database, a reader that opens and closes it records
/// nothing (only the writer's own close does): one transaction, of the whole copy.
#[test]
fn a_reader_closing_during_a_copy_records_nothing() {
    let node = MountedNode::start();
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("src.db");
    make_source(&source, 500, 300);
    let bytes = fs::read(&source).unwrap();
    support::sqlite3(&node.db_path("copy.db"), "CREATE TABLE t(x);");
    let before = node.txid("copy.db");
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(node.db_path("copy.db"))
        .unwrap();
    // Half the file: whole pages and a valid header, so it would pass for a database.
    let half = bytes.len() / 2 / 4096 * 4096;
    writer.write_all(&bytes[..half]).unwrap();
    let mut head = vec![0u8; 100];
    fs::File::open(node.db_path("copy.db"))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(
        node.txid("copy.db"),
        before,
        "a reader's close recorded the copy"
    );
    writer.write_all(&bytes[half..]).unwrap();
    drop(writer);
    assert_eq!(node.txid("copy.db"), before + 1);
    assert_eq!(
        support::sqlite3(&node.db_path("copy.db"), "SELECT count(*) FROM t;").trim(),
        "500"
    );
    node.check_consistent("copy.db");
}

/// Copying over a WAL-mode database while a connection keeps frames in its WAL would leave the
/// WAL's pages over the copied file (on a local disk, a corrupt database): the mount refuses
/// the write with EBUSY and the database is unchanged.
#[test]
fn copy_over_a_database_with_wal_frames_is_refused() {
    let node = MountedNode::start();
    let src = tempfile::tempdir().unwrap();
    let source = src.path().join("src.db");
    make_source(&source, 10, 10);
    let db = node.db_path("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let before = node.pos("app.db");
    let cp = Command::new("cp").arg(&source).arg(&db).output().unwrap();
    assert!(!cp.status.success(), "{cp:?}");
    assert!(
        String::from_utf8_lossy(&cp.stderr).contains("busy"),
        "{cp:?}"
    );
    let count: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    drop(conn);
    assert_eq!(node.pos("app.db").txid, before.txid);
    node.check_consistent("app.db");
}
