//! A real Consul agent for a test: `consul agent -dev` (in memory, a single server) on free
//! loopback ports, stopped by its PID when the test ends. The binary is `LITEFS_CONSUL_BIN`, or
//! `.cache/consul/usr/bin/consul` where `scripts/deps.sh` puts Debian's package; a test that
//! needs Consul and cannot find it fails.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mount::{free_port, wait_deadline};

/// How long the agent may take to elect itself leader.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One `consul agent -dev`.
#[derive(Debug)]
pub struct Consul {
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: u16,
    serf_lan: u16,
    serf_wan: u16,
    server: u16,
}

fn consul_bin() -> PathBuf {
    let bin = std::env::var_os("LITEFS_CONSUL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo().join(".cache/consul/usr/bin/consul"));
    assert!(
        bin.is_file(),
        "no Consul agent at {} (set LITEFS_CONSUL_BIN, or run scripts/deps.sh, which installs \
         Debian's consul there)",
        bin.display()
    );
    bin
}

impl Consul {
    /// Starts an agent and waits until it is the leader.
    pub fn start() -> Consul {
        let mut c = Consul {
            dir: tempfile::Builder::new()
                .prefix("litefs-consul-")
                .tempdir()
                .unwrap(),
            child: None,
            http: free_port(),
            serf_lan: free_port(),
            serf_wan: free_port(),
            server: free_port(),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("consul.log"))
            .unwrap();
        let child = Command::new(consul_bin())
            .args([
                "agent",
                "-dev",
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
            ])
            .args(["-http-port", &self.http.to_string()])
            .args(["-serf-lan-port", &self.serf_lan.to_string()])
            .args(["-serf-wan-port", &self.serf_wan.to_string()])
            .args(["-server-port", &self.server.to_string()])
            .args([
                "-dns-port",
                "-1",
                "-grpc-port",
                "-1",
                "-node",
                "litefs-test",
            ])
            .args(["-log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start consul: {e}"));
        self.child = Some(child);
        let until = Instant::now() + START_DEADLINE;
        loop {
            if let Some(leader) = self.get("/v1/status/leader") {
                if leader.contains("127.0.0.1:") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("consul exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "consul elected no leader within {START_DEADLINE:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("consul.log")).unwrap_or_default()
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.http
    }

    /// The HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// GET `path`; the body on 200, `None` otherwise (or if the agent is down).
    pub fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-s", "-f", "-m", "5", &format!("{}{path}", self.url())])
            .output()
            .expect("run curl");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The raw value of KV key `key`, if set.
    pub fn kv(&self, key: &str) -> Option<String> {
        self.get(&format!("/v1/kv/{key}?raw"))
    }

    /// Stops the agent (SIGTERM, then SIGKILL), by its PID.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            if wait_deadline(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts it again on the same ports (a dev agent starts empty).
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- consul log ---\n{}", self.log());
        }
        self.stop();
    }
}
