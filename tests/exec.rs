//! `exec` in `litefs-rs mount`: the application's commands run once the node is ready, in
//! order, `if-candidate` ones only on candidates; the last is supervised (signals forwarded, its
//! exit code is litefs-rs's). Real mounts, real `sh` and `sqlite3` processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mount::{force_unmount, free_port, is_mounted, require_root, wait_deadline};

/// How long a node with a short-lived app may take to run it and exit.
const EXIT: Duration = Duration::from_secs(20);

/// A node's directory: its config, mount, data, log, and the scripts it runs.
struct Node {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    /// Writes `litefs.yml` (static lease: the primary, or a replica of a primary that is
    /// nowhere) with `extra` appended, and the given scripts (name, body) into the directory;
    /// `$DIR` and `$MNT` in `extra` and the scripts become the directory and the mount.
    fn new(candidate: bool, extra: &str, scripts: &[(&str, &str)]) -> Node {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("litefs-exec-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("mnt")).unwrap();
        let nobody = free_port();
        let paths = |text: &str| {
            text.replace("$MNT", &root.join("mnt").display().to_string())
                .replace("$DIR", &root.display().to_string())
        };
        let extra = paths(extra);
        let yaml = format!(
            "fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\nhttp:\n  addr: 127.0.0.1:{port}\n\
             lease:\n  type: static\n  candidate: {candidate}\n  hostname: primary\n  \
             advertise-url: http://127.0.0.1:{nobody}\n  reconnect-delay: 100ms\n{extra}",
            mnt = root.join("mnt").display(),
            data = root.join("data").display(),
            port = free_port(),
        );
        fs::write(root.join("litefs.yml"), yaml).unwrap();
        for (name, body) in scripts {
            fs::write(root.join(name), paths(body)).unwrap();
        }
        Node { dir, child: None }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&mut self, extra_args: &[&str]) {
        let log = fs::File::create(self.path("litefs.log")).unwrap();
        let child = Command::new(support::bin())
            .args(["mount", "-config"])
            .arg(self.path("litefs.yml"))
            .args(extra_args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("litefs.log")).unwrap_or_default()
    }

    /// Waits for the process to exit; its exit code. The mount must be gone.
    fn wait_exit(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        let status = wait_deadline(&mut child, EXIT);
        let Some(status) = status else {
            self.child = Some(child);
            panic!("litefs-rs still runs after {EXIT:?}\n{}", self.log());
        };
        assert!(
            !is_mounted(&self.path("mnt")),
            "still mounted after exit\n{}",
            self.log()
        );
        status.code().unwrap_or(-1)
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.as_ref().unwrap().id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        force_unmount(&self.path("mnt"));
        force_unmount(&self.path("data").join("locks"));
        if std::thread::panicking() {
            eprintln!("--- litefs-rs log ---\n{}", self.log());
        }
    }
}

fn wait_file(path: &Path, node: &Node) {
    let until = Instant::now() + EXIT;
    while !path.exists() {
        assert!(
            Instant::now() < until,
            "no {}\n{}",
            path.display(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn migrations_run_before_the_app_whose_exit_code_litefs_rs_returns() {
    let mut node = Node::new(
        true,
        "exec:\n  - cmd: \"sh $DIR/migrate.sh\"\n  - cmd: \"sh $DIR/app.sh\"\n",
        &[
            ("migrate.sh", "sqlite3 $MNT/db 'CREATE TABLE t (x)'\n"),
            (
                "app.sh",
                "sqlite3 $MNT/db 'INSERT INTO t VALUES (1)' && \
                 sqlite3 $MNT/db 'SELECT count(*) FROM t' > $DIR/out\nexit 7\n",
            ),
        ],
    );
    node.start(&[]);
    assert_eq!(node.wait_exit(), 7, "{}", node.log());
    assert_eq!(fs::read_to_string(node.path("out")).unwrap().trim(), "1");
}

#[test]
fn a_failed_migration_stops_the_node_without_running_the_app() {
    let mut node = Node::new(
        true,
        "exec:\n  - cmd: \"sh -c 'exit 4'\"\n  - cmd: \"touch $DIR/app-ran\"\n",
        &[],
    );
    node.start(&[]);
    assert_eq!(node.wait_exit(), 4, "{}", node.log());
    assert!(!node.path("app-ran").exists());
}

#[test]
fn if_candidate_commands_are_skipped_on_a_replica_and_skip_sync_does_not_wait() {
    let mut node = Node::new(
        false,
        "skip-sync: true\nexec:\n  - cmd: \"touch $DIR/ran\"\n    if-candidate: true\n  \
         - cmd: \"sh -c 'exit 3'\"\n",
        &[],
    );
    // A replica whose primary is nowhere: never ready, but skip-sync runs the commands anyway.
    node.start(&[]);
    assert_eq!(node.wait_exit(), 3, "{}", node.log());
    assert!(
        !node.path("ran").exists(),
        "an if-candidate command ran on a replica"
    );
}

#[test]
fn exec_waits_until_the_node_is_ready() {
    let mut node = Node::new(false, "exec: \"touch $DIR/ran\"\n", &[]);
    node.start(&[]);
    // A replica whose primary is nowhere never catches up: the app never starts.
    wait_file(&node.path("mnt/.lag"), &node);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            !node.path("ran").exists(),
            "exec ran before the node was ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit(), 0, "{}", node.log());
    assert!(!node.path("ran").exists());
}

#[test]
fn signals_are_forwarded_to_the_app_and_its_code_returned() {
    let mut node = Node::new(
        true,
        "",
        &[(
            "app.py",
            "import pathlib, signal, sys, time\n\
             def stop(*_):\n    pathlib.Path('$DIR/got-term').touch()\n    sys.exit(42)\n\
             signal.signal(signal.SIGTERM, stop)\n\
             pathlib.Path('$DIR/started').touch()\n\
             time.sleep(60)\n",
        )],
    );
    // `-- CMD ARGS` replaces the configuration's exec. Python keeps the signal mask it gets,
    // so this also checks that the application can receive SIGTERM at all.
    let app = node.path("app.py").display().to_string();
    node.start(&["--", "python3", &app]);
    wait_file(&node.path("started"), &node);
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit(), 42, "{}", node.log());
    assert!(node.path("got-term").exists());
}

/// Waits until the node's log contains `text`.
fn wait_log(node: &Node, text: &str) {
    let until = Instant::now() + EXIT;
    while !node.log().contains(text) {
        assert!(
            Instant::now() < until,
            "no {text:?} in the log\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `proxy` section for `litefs.yml`: the proxy on `addr`, the application on a port where
/// nothing listens.
fn proxy_section(addr: u16) -> String {
    format!(
        "proxy:\n  addr: 127.0.0.1:{addr}\n  target: 127.0.0.1:{}\n  db: db\n",
        free_port()
    )
}

/// Reads and writes through the mount with the sqlite3 CLI; the row count.
fn write_and_read(node: &Node) -> String {
    let out = Command::new("sqlite3")
        .arg(node.path("mnt/db"))
        .arg("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1); SELECT count(*) FROM t;")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sqlite3: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A started primary whose proxy's address is taken (by the listener returned, with its port):
/// the node mounts, becomes ready, then its proxy fails to bind.
fn start_with_the_proxy_address_taken(exit_on_error: bool) -> (Node, u16, std::net::TcpListener) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut node = Node::new(
        true,
        &format!("exit-on-error: {exit_on_error}\n{}", proxy_section(port)),
        &[],
    );
    node.start(&[]);
    (node, port, taken)
}

#[test]
fn with_exit_on_error_a_proxy_that_cannot_bind_stops_the_node_with_code_1() {
    let (mut node, port, _taken) = start_with_the_proxy_address_taken(true);
    assert_eq!(node.wait_exit(), 1, "{}", node.log());
    let log = node.log();
    assert!(
        log.contains(&format!(
            "the node failed: proxy: listen on 127.0.0.1:{port}: Address already in use"
        )) && log.contains("shutting down (exit-on-error: true)"),
        "{log}"
    );
    // A clean stop after the failure: the node had mounted, and stopped as on a signal.
    assert!(log.contains("mounted") && log.contains("stopped"), "{log}");
}

#[test]
fn with_exit_on_error_an_app_that_cannot_start_stops_the_node_with_code_1() {
    let mut node = Node::new(
        true,
        "exit-on-error: true\nexec: \"$DIR/no-such-app --serve\"\n",
        &[],
    );
    node.start(&[]);
    assert_eq!(node.wait_exit(), 1, "{}", node.log());
    let log = node.log();
    assert!(
        log.contains("start exec command")
            && log.contains("no-such-app --serve")
            && log.contains("shutting down (exit-on-error: true)"),
        "{log}"
    );
}

#[test]
fn without_exit_on_error_a_node_whose_proxy_cannot_bind_keeps_serving_until_sigterm() {
    let (mut node, port, _taken) = start_with_the_proxy_address_taken(false);
    wait_log(&node, "the node keeps running for debugging");
    assert!(
        node.log().contains(&format!(
            "the node failed: proxy: listen on 127.0.0.1:{port}"
        )),
        "{}",
        node.log()
    );
    // Still running, still mounted, and the databases still take reads and writes.
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "litefs-rs exited\n{}",
        node.log()
    );
    assert!(is_mounted(&node.path("mnt")));
    assert_eq!(write_and_read(&node), "1");
    assert_eq!(write_and_read(&node), "2");
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit(), 0, "{}", node.log());
}

#[test]
fn without_exit_on_error_a_failed_migration_closes_the_proxy_and_keeps_the_mount() {
    let proxy = free_port();
    // The migration fails once the proxy serves (so that closing it can be seen).
    let migrate = format!(
        "for i in $(seq 500); do\n  \
           code=$(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{proxy}/litefs/health)\n  \
           if [ \"$code\" = 200 ]; then echo $code > $DIR/health; exit 4; fi\n  \
           sleep 0.02\n\
         done\nexit 5\n"
    );
    let mut node = Node::new(
        true,
        &format!(
            "exit-on-error: false\nexec:\n  - cmd: \"sh $DIR/migrate.sh\"\n  \
             - cmd: \"touch $DIR/app-ran\"\n{}",
            proxy_section(proxy)
        ),
        &[("migrate.sh", &migrate)],
    );
    node.start(&[]);
    wait_log(&node, "the node keeps running for debugging");
    let log = node.log();
    assert!(
        log.contains("failed with exit code 4"),
        "the migration did not fail as planned\n{log}"
    );
    assert_eq!(
        fs::read_to_string(node.path("health")).unwrap().trim(),
        "200"
    );
    // The proxy goes away; the application never ran.
    let until = Instant::now() + EXIT;
    while std::net::TcpStream::connect(("127.0.0.1", proxy)).is_ok() {
        assert!(
            Instant::now() < until,
            "the proxy still accepts\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!node.path("app-ran").exists());
    assert!(is_mounted(&node.path("mnt")));
    assert_eq!(write_and_read(&node), "1");
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit(), 0, "{}", node.log());
}

#[test]
fn without_exit_on_error_a_node_that_cannot_start_stays_up_until_sigterm() {
    let mut node = Node::new(true, "exit-on-error: false\n", &[]);
    // The data directory is a file: the store cannot open.
    fs::write(node.path("data"), "not a directory").unwrap();
    node.start(&[]);
    wait_log(&node, "staying up for debugging");
    assert!(node.log().contains("open data directory"), "{}", node.log());
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "litefs-rs exited\n{}",
        node.log()
    );
    assert!(!is_mounted(&node.path("mnt")));
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit(), 0, "{}", node.log());
}

#[test]
fn the_proxy_holds_requests_while_the_app_exec_started_is_coming_up() {
    let (proxy, app) = (free_port(), free_port());
    let mut node = Node::new(
        true,
        &format!(
            "exec: \"python3 $DIR/app.py\"\nproxy:\n  addr: 127.0.0.1:{proxy}\n  \
             target: 127.0.0.1:{app}\n  db: db\n"
        ),
        &[(
            "app.py",
            &format!(
                "import http.server, os, signal, sys, time\n\
                 signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n\
                 # Comes up only once the test says so.\n\
                 deadline = time.time() + 20\n\
                 while not os.path.exists('$DIR/go') and time.time() < deadline:\n    \
                     time.sleep(0.02)\n\
                 class H(http.server.BaseHTTPRequestHandler):\n    \
                     def do_GET(self):\n        \
                         self.send_response(200)\n        \
                         self.send_header('Content-Length', '2')\n        \
                         self.end_headers()\n        \
                         self.wfile.write(b'up')\n\
                 http.server.HTTPServer(('127.0.0.1', {app}), H).serve_forever()\n"
            ),
        )],
    );
    node.start(&[]);
    let health = format!("http://127.0.0.1:{proxy}/litefs/health");
    let until = Instant::now() + EXIT;
    while Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &health])
        .status()
        .is_ok_and(|s| !s.success())
    {
        assert!(Instant::now() < until, "no proxy\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://127.0.0.1:{proxy}/");
    let request = std::thread::spawn(move || {
        let out = Command::new("curl")
            .args(["-s", "-m", "20", "-w", " %{http_code}", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    // Longer than the proxy waits for an application that is down: a proxy that did not know
    // this one is starting would have answered 502 by now.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!request.is_finished(), "{}", request.join().unwrap());
    fs::write(node.path("go"), "").unwrap();
    assert_eq!(request.join().unwrap(), "up 200");
    node.signal(libc::SIGTERM);
    assert_eq!(node.wait_exit(), 0, "{}", node.log());
}
