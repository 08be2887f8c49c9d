//! A real `litefs-rs mount` in a temporary directory, driven as a user drives it: a config
//! file, a child process, signals. Every node gets its own mount point and data directory, so
//! tests can run in parallel.
//!
//! The harness never sleeps for a fixed time: it polls with a deadline and, when the deadline
//! passes or the process dies, fails with the mount's log.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use litefs_ltx::{Checksum, Pos, TXID};

/// How long a mount may take to appear or to go away.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stop (SIGTERM) may take before the harness gives up on it.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Fails the test at once, with a clear message, unless it runs as root (FUSE mounts need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the mount tests need root (FUSE mounts through /dev/fuse and fusermount3); \
         run them as root, as CI does"
    );
}

/// What goes into the node's `litefs.yml` beyond the mount point and the data directory.
#[derive(Clone, Copy, Debug)]
pub struct NodeOptions {
    pub strict_verify: bool,
    pub compress: bool,
    /// Pass `--debug` (debug-level log).
    pub debug: bool,
    /// `data.retention` (a Go duration such as `"1s"`); `None` leaves LiteFS's default (10m).
    pub retention: Option<&'static str>,
    /// `data.retention-monitor-interval`; `None` leaves LiteFS's default (1m).
    pub retention_monitor_interval: Option<&'static str>,
    /// `data.retention-max-size`; `None` leaves the default (256MiB).
    pub retention_max_size: Option<&'static str>,
    /// The primary, or a replica of the primary on this 127.0.0.1 port (static lease).
    pub role: Role,
    /// `lease.databases`: what a replica follows (all when empty).
    pub databases: &'static [&'static str],
    /// `lease.promote` (Consul lease).
    pub promote: bool,
    /// `lease.stale-timeout` (Consul lease), e.g. `"30s"`.
    pub stale_timeout: Option<&'static str>,
    /// The proxy: its port and the application's (`proxy.db: db`, `max-lag: 1s`,
    /// `primary-redirect-timeout: 1s`).
    pub proxy: Option<(u16, u16)>,
    /// `skip-sync`.
    pub skip_sync: bool,
    /// `proxy.forward` (with `proxy`).
    pub proxy_forward: bool,
    /// The port peers reach this node's API on, when not its own (a link the test can cut,
    /// see `support::netcut`); Consul lease only.
    pub advertise_port: Option<u16>,
    /// `http.auth-token`.
    pub auth_token: Option<&'static str>,
}

/// A node's role with the static lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `candidate: true`.
    Primary,
    /// `candidate: false`, following the primary whose API listens on this port.
    Replica(u16),
    /// The Consul lease, with the agent on this HTTP port.
    Consul {
        /// The agent's HTTP port.
        consul_port: u16,
        /// `lease.candidate`.
        candidate: bool,
    },
}

/// A port nothing listens on now (the kernel's pick for a socket bound and closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            strict_verify: true,
            compress: false,
            debug: false,
            retention: None,
            retention_monitor_interval: None,
            retention_max_size: None,
            role: Role::Primary,
            databases: &[],
            promote: false,
            stale_timeout: None,
            proxy: None,
            skip_sync: false,
            proxy_forward: false,
            advertise_port: None,
            auth_token: None,
        }
    }
}

/// One running (or stopped) `litefs-rs mount`.
#[derive(Debug)]
pub struct MountedNode {
    dir: tempfile::TempDir,
    opts: NodeOptions,
    child: Option<Child>,
    starts: u32,
    /// The internal API's port (kept across restarts).
    port: u16,
}

/// Sends `sig` to `pid`.
fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's, which we
    // have not reaped yet, so it cannot have been reused.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::kill(pid, sig) };
}

/// Waits for a child with a deadline; `None` if it is still running then.
pub fn wait_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True while `dir` is a mount point (as listed in /proc/self/mounts).
pub fn is_mounted(dir: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    let want = dir.to_str().expect("utf-8 path").replace(' ', "\\040");
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// Aborts the FUSE connection of the mount at `dir` (through fusectl, mounted at
/// /sys/fs/fuse/connections if it is not yet): every request waiting on it fails at once.
pub fn abort_fuse_connection(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let want = dir.to_str().unwrap_or_default().replace(' ', "\\040");
    // Fields: id, parent, major:minor, root, mount point, ...
    let Some(minor) = info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&want.as_str()))
            .then(|| {
                f.get(2)
                    .and_then(|d| d.split_once(':'))
                    .map(|(_, m)| m.to_owned())
            })
            .flatten()
    }) else {
        return;
    };
    let conns = Path::new("/sys/fs/fuse/connections");
    if !conns.join(&minor).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status();
    }
    let _ = fs::write(conns.join(minor).join("abort"), "1");
}

/// Where each thread of process `pid` waits in the kernel (`wchan`, and the kernel stack when
/// readable).
pub fn thread_stacks(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.filter_map(Result::ok) {
        let dir = t.path();
        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
        out.push_str(&format!(
            "{} {} wchan={}\n{}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
        ));
    }
    out
}

/// Lazily unmounts `dir` with `fusermount3 -u -z` if it is still mounted.
pub fn force_unmount(dir: &Path) {
    if is_mounted(dir) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes ANSI colour escapes (in case the logger colours a file anyway).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl MountedNode {
    /// Starts a node with the default options (`strict-verify: true`, no compression).
    pub fn start() -> MountedNode {
        MountedNode::start_with(NodeOptions::default())
    }

    /// Writes the config into a fresh temporary directory and starts the node.
    pub fn start_with(opts: NodeOptions) -> MountedNode {
        Self::start_prepared(opts, |_| {})
    }

    fn write_config(&self) {
        let mut retention = String::new();
        if let Some(r) = self.opts.retention {
            writeln!(retention, "  retention: {r}").unwrap();
        }
        if let Some(i) = self.opts.retention_monitor_interval {
            writeln!(retention, "  retention-monitor-interval: {i}").unwrap();
        }
        if let Some(m) = self.opts.retention_max_size {
            writeln!(retention, "  retention-max-size: {m}").unwrap();
        }
        let lease = match self.opts.role {
            Role::Primary | Role::Replica(_) => {
                let (candidate, primary_port) = match self.opts.role {
                    Role::Replica(port) => (false, port),
                    _ => (true, self.port),
                };
                format!(
                    "  type: static\n  candidate: {candidate}\n  hostname: primary-{primary_port}\n  \
                     advertise-url: http://127.0.0.1:{primary_port}\n"
                )
            }
            Role::Consul {
                consul_port,
                candidate,
            } => {
                let mut l = format!(
                    "  type: consul\n  candidate: {candidate}\n  promote: {promote}\n  \
                     hostname: node-{port}\n  advertise-url: http://127.0.0.1:{advertise}\n  \
                     demote-delay: 1s\n  consul:\n    url: http://127.0.0.1:{consul_port}\n    \
                     key: litefs/primary\n",
                    promote = self.opts.promote,
                    port = self.port,
                    advertise = self.opts.advertise_port.unwrap_or(self.port),
                );
                if let Some(t) = self.opts.stale_timeout {
                    writeln!(l, "  stale-timeout: {t}").unwrap();
                }
                l
            }
        };
        let mut databases = String::new();
        if !self.opts.databases.is_empty() {
            databases.push_str("  databases:\n");
            for db in self.opts.databases {
                writeln!(databases, "    - \"{db}\"").unwrap();
            }
        }
        let yaml = format!(
            "fuse:\n  dir: {mnt}\ndata:\n  dir: {data}\n  compress: {compress}\n{retention}\
             strict-verify: {strict}\nhttp:\n  addr: 127.0.0.1:{port}\nlease:\n{lease}  \
             reconnect-delay: 100ms\n{databases}",
            mnt = self.mnt().display(),
            data = self.data().display(),
            compress = self.opts.compress,
            strict = self.opts.strict_verify,
            port = self.port,
        );
        let mut yaml = yaml;
        if let Some((proxy, app)) = self.opts.proxy {
            writeln!(
                yaml,
                "proxy:\n  addr: 127.0.0.1:{proxy}\n  target: 127.0.0.1:{app}\n  db: db\n  \
                 max-lag: 1s\n  primary-redirect-timeout: 1s\n  forward: {}",
                self.opts.proxy_forward
            )
            .unwrap();
        }
        if self.opts.skip_sync {
            yaml.push_str("skip-sync: true\n");
        }
        if let Some(token) = self.opts.auth_token {
            let http = format!("http:\n  addr: 127.0.0.1:{}\n", self.port);
            yaml = yaml.replace(&http, &format!("{http}  auth-token: \"{token}\"\n"));
        }
        fs::write(self.config_path(), yaml).unwrap();
    }

    /// The internal API's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The internal API's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `curl` arguments that send the node's `http.auth-token`, if it has one.
    pub fn curl_auth(&self) -> Vec<String> {
        self.opts
            .auth_token
            .map(|t| vec!["-H".to_owned(), format!("Authorization: Bearer {t}")])
            .unwrap_or_default()
    }

    /// The temporary directory holding the config, the log, the mount point and the data.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The FUSE mount point (`fuse.dir`).
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// The data directory (`data.dir`).
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("litefs.yml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("litefs.log")
    }

    /// The mount's log so far (all runs, each started with a `=== start N ===` line).
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A database as the application sees it, through the mount.
    pub fn db_path(&self, name: &str) -> PathBuf {
        self.mnt().join(name)
    }

    /// The data directory of one database.
    pub fn db_data_dir(&self, name: &str) -> PathBuf {
        self.data().join("dbs").join(name)
    }

    /// Reads `<db>-pos` through the mount: exactly 34 bytes, `%016x/%016x\n`.
    pub fn pos(&self, name: &str) -> Pos {
        let path = self.mnt().join(format!("{name}-pos"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("read {}: {e}\n--- log ---\n{}", path.display(), self.log())
        });
        assert_eq!(text.len(), 34, "{} is {text:?}", path.display());
        assert!(text.ends_with('\n'), "{} is {text:?}", path.display());
        text.trim_end()
            .parse()
            .unwrap_or_else(|e| panic!("parse {} {text:?}: {e}", path.display()))
    }

    /// The TXID in `<db>-pos`.
    pub fn txid(&self, name: &str) -> u64 {
        self.pos(name).txid.get()
    }

    /// The TXID in `<db>-pos`, or 0 while the database does not exist (a new file is a plain
    /// file until SQLite writes to it, and has no `-pos`).
    pub fn txid_or_zero(&self, name: &str) -> u64 {
        match fs::metadata(self.mnt().join(format!("{name}-pos"))) {
            Ok(_) => self.txid(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("stat {name}-pos: {e}"),
        }
    }

    /// The LTX files of a database in the data directory, sorted by name (temporary files are
    /// left out).
    pub fn ltx_files(&self, name: &str) -> Vec<PathBuf> {
        let dir = self.db_data_dir(name).join("ltx");
        let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(rd) => rd
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", dir.display()),
        };
        files.sort();
        files
    }

    /// Checks the LTX files of a database: they are exactly `i-i.ltx` for `i` in `1..=txid`,
    /// each verifies, each one's pre-apply checksum is the previous one's post-apply checksum,
    /// and the last one ends at `pos`. Returns the number of files. With a retention set in
    /// the node's options (which deletes the oldest files), the chain may start at any TXID.
    pub fn check_ltx_chain(&self, name: &str, pos: Pos) -> u64 {
        // Files cover 1..=TXID without gaps: one file per transaction, or one file for a range
        // of them (start-up recovery writes the transactions a crash left without files so).
        let files = self.ltx_files(name);
        let pruned =
            self.opts.retention.is_some() || self.opts.retention_max_size.is_some_and(|m| m != "0");
        let mut next = 1u64;
        let mut prev_post = Checksum::ZERO;
        for (i, path) in files.iter().enumerate() {
            let f = match fs::File::open(path) {
                Ok(f) => f,
                // Retention deleted the oldest files meanwhile: the chain starts later now.
                Err(e) if pruned && e.kind() == std::io::ErrorKind::NotFound => {
                    return self.check_ltx_chain(name, pos);
                }
                Err(e) => panic!("open {}: {e}", path.display()),
            };
            let (hdr, trailer, _pages) = litefs_ltx::verify(std::io::BufReader::new(f))
                .unwrap_or_else(|e| panic!("verify {}: {e}", path.display()));
            if i == 0 && pruned {
                next = hdr.min_txid.get();
                prev_post = hdr.pre_apply_checksum;
            }
            assert_eq!(
                hdr.min_txid,
                TXID::new(next),
                "LTX files of {name} do not cover 1..={} without gaps: {} (pos {pos})",
                pos.txid,
                path.display()
            );
            let expected_name = format!(
                "{:016x}-{:016x}.ltx",
                hdr.min_txid.get(),
                hdr.max_txid.get()
            );
            assert_eq!(
                path.file_name().unwrap().to_string_lossy(),
                expected_name,
                "file name and header disagree"
            );
            next = hdr.max_txid.get() + 1;
            assert_eq!(
                hdr.pre_apply_checksum,
                prev_post,
                "{}: pre-apply checksum is not the previous post-apply checksum",
                path.display()
            );
            assert_eq!(
                hdr.flags.is_compressed(),
                self.opts.compress,
                "{}: compression flag",
                path.display()
            );
            prev_post = trailer.post_apply_checksum;
        }
        assert_eq!(
            next - 1,
            pos.txid.get(),
            "LTX files of {name} end before {pos}"
        );
        if pos.txid.get() > 0 {
            assert_eq!(
                prev_post, pos.post_apply_checksum,
                "last LTX file's post-apply checksum != {name}-pos"
            );
        }
        files.len() as u64
    }

    /// The rolling checksum of the database as read through the mount. Read by another
    /// process (`litefs-rs ltx checksum`): POSIX locks belong to a process, and closing any
    /// descriptor of a file drops all of that process's locks on it, including those of a
    /// SQLite connection this test holds open.
    pub fn db_checksum(&self, name: &str) -> Checksum {
        let path = self.db_path(name);
        let out = Command::new(super::bin())
            .args(["ltx", "checksum"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("run litefs-rs ltx checksum: {e}"));
        assert!(
            out.status.success(),
            "checksum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("checksum {}: {e}", path.display()))
    }

    /// The full consistency check of a database with no open connection (and, in WAL mode,
    /// checkpointed): `-pos` equals the checksum of the file through the mount, the LTX files
    /// are `1..=TXID` and verify, and `PRAGMA integrity_check` is ok. Returns the position.
    pub fn check_consistent(&self, name: &str) -> Pos {
        let pos = self.pos(name);
        let sum = self.db_checksum(name);
        assert_eq!(
            pos.post_apply_checksum,
            sum,
            "{name}-pos {pos} != checksum of the database through the mount {sum}\n--- log ---\n{}",
            self.log()
        );
        self.check_ltx_chain(name, pos);
        let ic = rusqlite::Connection::open(self.db_path(name))
            .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
            .unwrap_or_else(|e| panic!("integrity_check {name}: {e}\n--- log ---\n{}", self.log()));
        assert_eq!(ic, "ok", "integrity_check of {name}");
        // integrity_check reads only; closing may checkpoint, which changes nothing logical.
        assert_eq!(
            self.pos(name),
            pos,
            "a read-only connection moved {name}-pos"
        );
        pos
    }

    /// `ls` of the mount point (without dot files), one name per entry.
    pub fn ls(&self) -> Vec<String> {
        let out = Command::new("ls").arg(self.mnt()).output().unwrap();
        assert!(out.status.success(), "ls: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        self.starts += 1;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        {
            use std::io::Write;
            writeln!(log, "=== start {} ===", self.starts).unwrap();
        }
        let mut cmd = Command::new(super::bin());
        cmd.arg("mount").arg("-config").arg(self.config_path());
        if self.opts.debug {
            cmd.arg("--debug");
        }
        let child = cmd
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", super::bin().display()));
        self.child = Some(child);
        self.wait_mounted();
    }

    fn wait_mounted(&mut self) {
        let until = Instant::now() + MOUNT_DEADLINE;
        loop {
            // Listed and answering: a dead mount left by a crash is listed too, until the new
            // process has replaced it.
            if is_mounted(&self.mnt()) && fs::metadata(self.mnt().join(".lag")).is_ok() {
                return;
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!(
                    "litefs-rs mount exited with {status} before mounting\n--- log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() >= until {
                let log = self.log();
                self.terminate();
                panic!(
                    "{} did not appear in /proc/self/mounts within {MOUNT_DEADLINE:?}\n\
                     --- log ---\n{log}",
                    self.mnt().display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Changes the options (the config is rewritten; a running node sees it at its next start).
    pub fn set_opts(&mut self, change: impl FnOnce(&mut NodeOptions)) {
        change(&mut self.opts);
        self.write_config();
    }

    /// Starts the node again on the same data directory (after `stop` or `kill9`).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// A clean restart: SIGTERM, wait for exit code 0 and the unmount, start again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILL the process, reap it, and lazily unmount the dead mount.
    /// `kill -9` and leave the dead mount in place, as a crash does: the next start must
    /// unmount it by itself.
    /// Lazily unmounts the node's mounts (the main one and the halt lock's) if they are still
    /// mounted.
    pub fn force_unmount(&self) {
        force_unmount(&self.mnt());
        force_unmount(&self.data().join("locks"));
    }

    pub fn kill9_leaving_mount(&mut self) {
        let mut child = self.child.take().expect("node is running");
        signal(child.id(), libc::SIGKILL);
        assert!(
            wait_deadline(&mut child, MOUNT_DEADLINE).is_some(),
            "litefs-rs did not die within {MOUNT_DEADLINE:?} of SIGKILL\n--- log ---\n{}",
            self.log()
        );
        assert!(
            is_mounted(&self.mnt()),
            "a killed node's mount should still be listed"
        );
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("node is running");
        signal(child.id(), libc::SIGKILL);
        if wait_deadline(&mut child, MOUNT_DEADLINE).is_none() {
            // Stuck in the kernel (e.g. closing a file of its own dead mount): say where each
            // thread waits, free it by aborting its FUSE connection, then fail.
            let stacks = thread_stacks(child.id());
            eprintln!("--- threads of the process that did not die ---\n{stacks}");
            abort_fuse_connection(&self.mnt());
            let _ = wait_deadline(&mut child, MOUNT_DEADLINE);
            self.force_unmount();
            panic!(
                "litefs-rs did not die within {MOUNT_DEADLINE:?} of SIGKILL\n--- log ---\n{}",
                self.log()
            );
        }
        self.force_unmount();
        assert!(!is_mounted(&self.mnt()), "dead mount still mounted");
    }

    /// SIGTERM, then wait (with a deadline) for exit code 0 and the mount to be gone.
    pub fn stop(&mut self) {
        self.stop_with(&[0]);
    }

    /// As [`MountedNode::stop`], for a node whose disk failed: it exits 0, or 1 when it could
    /// not make its last files durable (and says so).
    pub fn stop_on_failed_disk(&mut self) {
        self.stop_with(&[0, 1]);
    }

    fn stop_with(&mut self, codes: &[i32]) {
        let mut child = self.child.take().expect("node is running");
        signal(child.id(), libc::SIGTERM);
        let Some(status) = wait_deadline(&mut child, STOP_DEADLINE) else {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
            self.force_unmount();
            panic!(
                "litefs-rs did not exit within {STOP_DEADLINE:?} of SIGTERM\n--- log ---\n{}",
                self.log()
            );
        };
        let mounted = is_mounted(&self.mnt());
        if mounted {
            self.force_unmount();
        }
        assert!(
            status.code().is_some_and(|c| codes.contains(&c)),
            "litefs-rs exited with {status} after SIGTERM\n--- log ---\n{}",
            self.log()
        );
        assert!(
            !mounted,
            "{} still mounted after litefs-rs exited\n--- log ---\n{}",
            self.mnt().display(),
            self.log()
        );
    }

    /// Stops the process without asserting anything (used by Drop and on failures).
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            if wait_deadline(&mut child, STOP_DEADLINE).is_none() {
                signal(child.id(), libc::SIGKILL);
                let _ = child.wait();
            }
        }
        self.force_unmount();
    }
}

impl Drop for MountedNode {
    fn drop(&mut self) {
        self.terminate();
        if std::thread::panicking() {
            eprintln!(
                "--- litefs-rs log ({}) ---\n{}",
                self.log_path().display(),
                self.log()
            );
            // LITEFS_TEST_KEEP=1 keeps the data directory and log of a failed test.
            if std::env::var_os("LITEFS_TEST_KEEP").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("kept {} (LITEFS_TEST_KEEP)", self.dir.path().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite clients: the sqlite3 CLI, rusqlite in this process, Python's sqlite3 module.
// ---------------------------------------------------------------------------------------------

/// A real SQLite client program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Cli,
    Rusqlite,
    Python,
}

impl Client {
    pub const ALL: [Client; 3] = [Client::Cli, Client::Rusqlite, Client::Python];

    /// Opens one connection to `db`, sets `PRAGMA journal_mode=<mode>` (output discarded) when
    /// given, runs `sql` (several statements), prints every result row as `a|b|c` (NULL as
    /// empty), closes the connection. The first failing statement stops the script and its
    /// error is returned.
    pub fn run(self, db: &Path, mode: Option<&str>, sql: &str) -> Result<String, String> {
        match self {
            Client::Cli => run_cli(db, mode, sql),
            Client::Rusqlite => run_rusqlite(db, mode, sql),
            Client::Python => run_python(db, mode, sql),
        }
    }
}

fn run_cli(db: &Path, mode: Option<&str>, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new("sqlite3");
    // As rusqlite and Python do by default: wait for another process's lock rather than fail.
    cmd.args(["-bail", "-cmd", ".timeout 5000"]);
    if let Some(mode) = mode {
        cmd.args([
            "-cmd",
            ".output /dev/null",
            "-cmd",
            &format!("PRAGMA journal_mode={mode}"),
            "-cmd",
            ".output stdout",
        ]);
    }
    let out = cmd
        .arg(db)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run sqlite3 (is it installed? scripts/deps.sh does): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "sqlite3 exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        ))
    }
}

fn value_text(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn run_rusqlite(db: &Path, mode: Option<&str>, sql: &str) -> Result<String, String> {
    let conn = rusqlite::Connection::open(db).map_err(|e| format!("open: {e}"))?;
    if let Some(mode) = mode {
        conn.query_row(&format!("PRAGMA journal_mode={mode}"), [], |_| Ok(()))
            .map_err(|e| format!("journal_mode: {e}"))?;
    }
    let out = rusqlite_script(&conn, sql);
    conn.close().map_err(|(_, e)| format!("close: {e}"))?;
    out
}

/// Runs a multi-statement script on an open rusqlite connection, printing rows like the CLI.
pub fn rusqlite_script(conn: &rusqlite::Connection, sql: &str) -> Result<String, String> {
    use rusqlite::fallible_iterator::FallibleIterator as _;
    let mut out = String::new();
    let mut batch = rusqlite::Batch::new(conn, sql);
    while let Some(mut stmt) = batch.next().map_err(|e| e.to_string())? {
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let cols: Vec<String> = (0..n)
                .map(|i| value_text(row.get_ref(i).expect("column")))
                .collect();
            writeln!(out, "{}", cols.join("|")).unwrap();
        }
    }
    Ok(out)
}

/// Python: split the script into statements with `sqlite3.complete_statement`, run each in
/// autocommit mode (`isolation_level=None`, so BEGIN/COMMIT are the script's own).
const PY_RUNNER: &str = r#"
import sqlite3, sys
db, mode, sql = sys.argv[1], sys.argv[2], sys.argv[3]
con = sqlite3.connect(db, isolation_level=None, timeout=5)
if mode:
    con.execute("PRAGMA journal_mode=" + mode).fetchall()
stmt = ""
try:
    for line in sql.splitlines(keepends=True) or [""]:
        for ch in line:
            stmt += ch
            if ch == ";" and sqlite3.complete_statement(stmt):
                for row in con.execute(stmt):
                    print("|".join("" if v is None else str(v) for v in row))
                stmt = ""
    if stmt.strip():
        for row in con.execute(stmt):
            print("|".join("" if v is None else str(v) for v in row))
except sqlite3.Error as e:
    sys.stdout.flush()
    print("python sqlite3: %s: %s" % (type(e).__name__, e), file=sys.stderr)
    sys.exit(1)
con.close()
"#;

fn run_python(db: &Path, mode: Option<&str>, sql: &str) -> Result<String, String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_RUNNER)
        .arg(db)
        .arg(mode.unwrap_or(""))
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "python3 exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        ))
    }
}

/// Reads lines from a child's stdout on a thread and hands them over a channel, so that the
/// reader can wait with a deadline.
pub fn line_channel(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A small deterministic PRNG (xorshift64*), seeded per test and printed for reproduction.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds from `LITEFS_TEST_SEED` if set, else from the clock and PID.
    pub fn from_env_or_time() -> Rng {
        let seed = std::env::var("LITEFS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                t ^ (u64::from(std::process::id()) << 32)
            });
        eprintln!("random seed: {seed} (LITEFS_TEST_SEED={seed} to repeat)");
        Rng(seed | 1)
    }

    /// A generator with this seed (derived from another one's, say).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

impl MountedNode {
    /// Like [`MountedNode::start_with`], but `prepare` runs on the (not yet existing) data
    /// directory path before the first start, e.g. to copy in a data directory LiteFS wrote.
    pub fn start_prepared(opts: NodeOptions, prepare: impl FnOnce(&Path)) -> MountedNode {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("litefs-mount-")
            .tempdir()
            .expect("create tempdir");
        let mut node = MountedNode {
            dir,
            opts,
            child: None,
            starts: 0,
            port: free_port(),
        };
        fs::create_dir_all(node.mnt()).unwrap();
        node.write_config();
        prepare(&node.data());
        node.spawn();
        node
    }
}

/// Commits `n` autocommit single-row inserts of 100 random bytes into table `t` (`v BLOB`) of
/// the database at `db`, back to back on one rusqlite connection with `synchronous=NORMAL`.
pub fn insert_burst(db: &Path, n: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA synchronous = NORMAL;").unwrap();
    for i in 0..n {
        conn.execute("INSERT INTO t (v) VALUES (randomblob(100))", [])
            .unwrap_or_else(|e| panic!("insert {i} into {}: {e}", db.display()));
    }
}
