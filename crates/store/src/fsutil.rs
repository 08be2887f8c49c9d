//! Small durability helpers.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Flushes a directory's entries (new, renamed and removed names) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written to the filesystem holding `path` (`syncfs`).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: `dir` is an open file descriptor for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the directory `dir` still takes writes: creates, writes and removes a small file
/// in it. Fails as the file system does (`EROFS` once the kernel turned it read-only after a
/// disk error, even where the mount still says `rw`; `EIO`; `ENOSPC` on a full disk).
pub fn probe_writable(dir: &Path) -> io::Result<()> {
    let path = dir.join(".disk-check");
    let res = fs::File::create(&path).and_then(|mut f| io::Write::write_all(&mut f, b"ok"));
    let removed = remove_if_exists(&path);
    res.and(removed)
}

/// Renames `from` to `to`; with `durable`, syncs the file before and the directory after, so
/// the new name and its contents survive a power loss.
pub fn rename(from: &Path, to: &Path, file: &File, durable: bool) -> io::Result<()> {
    if durable {
        file.sync_data()?;
    }
    fs::rename(from, to)?;
    if durable {
        if let Some(dir) = to.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Makes sure the first `len` bytes of `file` have disk space (`fallocate`, keeping its size
/// and content: space past its end is reserved for writes that will grow it). On a full disk this fails with
/// ENOSPC before anything was written. A filesystem without `fallocate` gets no reservation.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    let Ok(len) = libc::off_t::try_from(len) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: `file` is an open file descriptor for the duration of the call.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(file),
                libc::FALLOC_FL_KEEP_SIZE,
                0,
                len,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EOPNOTSUPP) => return Ok(()),
            _ => return Err(e),
        }
    }
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens a file for reading, or `None` if it does not exist.
pub fn open_if_exists(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
