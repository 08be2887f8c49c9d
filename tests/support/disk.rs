//! A tmpfs for a node's data directory, mounted for the life of the value: a small disk the
//! tests can fill, or remount.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::mount::{MountedNode, NodeOptions};

/// A tmpfs mounted at a directory for the life of the value.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", dir.display());
        Tmpfs {
            dir: dir.to_owned(),
        }
    }

    /// `mount -o remount,OPTS`; whether it succeeded.
    pub fn remount(&self, opts: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Writes a filler file until the filesystem is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = fs::File::create(&path).unwrap();
        let chunk = vec![0x5au8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("write {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.remount("rw");
        let ok = Command::new("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        // The node's temporary directory could not remove its mount point.
        let _ = fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir_all(parent);
        }
    }
}

/// Starts a node whose data directory is a tmpfs of `size`. Keep the tmpfs declared before
/// the node, so that the node stops before its filesystem is unmounted.
pub fn node_on_tmpfs(opts: NodeOptions, size: &str, tmpfs: &mut Option<Tmpfs>) -> MountedNode {
    MountedNode::start_prepared(opts, |data| *tmpfs = Some(Tmpfs::mount(data, size)))
}
