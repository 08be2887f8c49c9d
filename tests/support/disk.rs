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
        fill_dir(&self.dir)
    }
}

/// Writes `dir/filler` until its file system is full; returns its path.
fn fill_dir(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut at_4k = false;
    loop {
        let part = if at_4k { &chunk[..4096] } else { &chunk[..] };
        match f.write_all(part) {
            Ok(()) => {}
            // Down to the last blocks in small writes.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && !at_4k => at_4k = true,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("write {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.remount("rw");
        unmount_node_disk(&self.dir);
    }
}

/// Unmounts the file system at a node's data directory (lazily if it is busy), then removes the
/// node's temporary directory, which could not remove its mount point itself.
fn unmount_node_disk(dir: &Path) {
    let ok = Command::new("umount")
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
    let _ = fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir_all(parent);
    }
}

/// Starts a node whose data directory is a tmpfs of `size`. Keep the tmpfs declared before
/// the node, so that the node stops before its filesystem is unmounted.
pub fn node_on_tmpfs(opts: NodeOptions, size: &str, tmpfs: &mut Option<Tmpfs>) -> MountedNode {
    MountedNode::start_prepared(opts, |data| *tmpfs = Some(Tmpfs::mount(data, size)))
}

/// An ext4 file system in an image file under `/dev/shm` (so that its writes cost no disk
/// I/O), loop-mounted at a directory with `errors=remount-ro` for the life of the value: a
/// disk that can fill up, and fail the way a disk does, going read-only under its files.
#[derive(Debug)]
pub struct Ext4 {
    dir: PathBuf,
    image: tempfile::TempPath,
}

impl Ext4 {
    pub fn mount(dir: &Path, size_mib: u64) -> Ext4 {
        fs::create_dir_all(dir).unwrap();
        let image = tempfile::Builder::new()
            .prefix("litefs-disk-")
            .suffix(".img")
            .tempfile_in("/dev/shm")
            .expect("create a disk image in /dev/shm")
            .into_temp_path();
        fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", "-m", "0"], &image);
        let disk = Ext4 {
            dir: dir.to_owned(),
            image,
        };
        disk.attach();
        disk
    }

    fn attach(&self) {
        let status = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&*self.image)
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount an ext4 image at {}",
            self.dir.display()
        );
    }

    /// The loop device's name (`loop3`).
    fn device(&self) -> String {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE", "--target"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let source = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        source.rsplit('/').next().unwrap_or_default().to_owned()
    }

    /// Writes a filler file until the file system is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        fill_dir(&self.dir)
    }

    /// Fails the file system as a disk error does: ext4 aborts its journal and turns
    /// read-only under the open files (`errors=remount-ro`); it stays so until it is repaired.
    pub fn fail(&self) {
        let trigger = format!("/sys/fs/ext4/{}/trigger_fs_error", self.device());
        fs::write(&trigger, "campaign: the disk fails\n")
            .unwrap_or_else(|e| panic!("write {trigger}: {e}"));
    }

    /// Unmounts, checks (`e2fsck -fy`: whatever it repairs is the disk's business, not the
    /// node's) and mounts the file system again. The node using it must be stopped.
    pub fn repair(&self) {
        let status = Command::new("umount").arg(&self.dir).status().unwrap();
        assert!(status.success(), "unmount {}", self.dir.display());
        let status = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&*self.image)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        // 0: clean; 1: errors corrected.
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "e2fsck of {}: {status}",
            self.dir.display()
        );
        self.attach();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        unmount_node_disk(&self.dir);
    }
}

fn run(cmd: &str, args: &[&str], path: &Path) {
    let status = Command::new(cmd)
        .args(args)
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        status.success(),
        "{cmd} {args:?} {}: {status}",
        path.display()
    );
}
