//! Helpers shared by the integration tests: where the binary and the golden files are, and how
//! to run a command and look at what it did.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `litefs-rs` binary built for this test run.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_litefs-rs"))
}

/// The shared golden files (`../shared/fixtures` beside the repository).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a finished command did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `litefs-rs ARGS` to completion in `dir`, with a clean environment for config expansion.
pub fn litefs_in<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Ran {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin().display()))
        .into()
}

/// Runs `litefs-rs ARGS` to completion in the repository root.
pub fn litefs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Ran {
    litefs_in(&repo(), args)
}

/// Runs the `sqlite3` CLI on `db` with one SQL script and returns its standard output.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("run sqlite3 (is it installed? scripts/deps.sh does): {e}"));
    assert!(
        out.status.success(),
        "sqlite3 {} {sql:?}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
pub mod cluster;
pub mod consul;
pub mod disk;
pub mod mount;
pub mod netcut;
