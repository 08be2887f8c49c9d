//! The FUSE guard: a small child process that aborts the node's FUSE connections when the node
//! dies.
//!
//! A node reads and writes files of its own mount (to take SQLite's locks and rewrite the WAL
//! index while it applies a transaction). If it is killed (SIGKILL) while one of its threads
//! waits for the answer to such a request, and the request was already taken by one of its
//! FUSE threads, the kernel waits for that answer without end: the threads that would give it
//! are gone, and the connection only ends when the process's last file closes, which needs that
//! waiting thread to exit. The process never dies, and keeps its mount and its port.
//!
//! The guard breaks that circle from outside: started by the node's main thread with
//! `PR_SET_PDEATHSIG`, it gets SIGTERM when that thread ends, which is when the process ends
//! (or is killed), and then aborts the FUSE connection of each mount it watches that is still
//! there (`/sys/fs/fuse/connections/<n>/abort`, as `umount -f` does). A clean shutdown has
//! unmounted everything by then, and the guard finds nothing to do.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The hidden command line of the guard.
pub const GUARD_ARG: &str = "__fuse-guard";

/// Starts the guard of `dirs` (mount points). Must be called from the main thread: the guard
/// is told when the thread that started it ends.
pub fn spawn(dirs: &[PathBuf]) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()?;
    // SAFETY: only async-signal-safe calls between fork and exec (prctl, getppid).
    #[allow(unsafe_code)]
    let parent = unsafe { libc::getpid() };
    // Named as the kernel lists them (symbolic links resolved), found then without touching
    // the mounts (a dead node's mount would not answer).
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(
            |d| match (d.parent().map(std::fs::canonicalize), d.file_name()) {
                (Some(Ok(parent)), Some(name)) => parent.join(name),
                _ => d.clone(),
            },
        )
        .collect();
    let mut cmd = Command::new(exe);
    cmd.arg(GUARD_ARG)
        .args(&dirs)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe calls.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl.
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The guard itself: waits for SIGTERM (its parent's end), then aborts the FUSE connection of
/// each of `dirs` that is still mounted. Returns the exit code.
pub fn run(dirs: &[PathBuf]) -> i32 {
    // SAFETY: plain signal-mask calls on a local, initialised set.
    #[allow(unsafe_code)]
    let sig = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        sig
    };
    if sig == libc::SIGINT {
        // The terminal's Ctrl-C reaches the whole group: the node shuts down by itself.
        return run(dirs);
    }
    for dir in dirs {
        if let Some(conn) = connection_of(dir) {
            let abort = Path::new("/sys/fs/fuse/connections")
                .join(conn.to_string())
                .join("abort");
            if abort.exists() {
                let _ = std::fs::write(&abort, "1");
            }
        }
    }
    0
}

/// The FUSE connection number of the litefs-rs mount at `dir` (its device's minor number), if
/// one is mounted there.
fn connection_of(dir: &Path) -> Option<u32> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_str()?.replace(' ', "\\040");
    // Fields: id, parent, major:minor, root, mount point, options, ... - type source ...
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().skip_while(|x| **x != "-").nth(1)?;
        (f.get(4) == Some(&want.as_str()) && fstype.starts_with("fuse"))
            .then(|| f.get(2)?.split_once(':')?.1.parse().ok())
            .flatten()
    })
}
