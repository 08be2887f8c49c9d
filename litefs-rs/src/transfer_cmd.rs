//! `litefs-rs export` and `litefs-rs import`: a database out of a node, or into the primary,
//! over the node's internal API (`GET /export`, `POST /import`), with a small HTTP/1.1 client.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// The API URL LiteFS's commands use by default.
pub const DEFAULT_URL: &str = "http://localhost:20202";

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest error message read from the server.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Chunks of an imported file.
const CHUNK: usize = 256 << 10;

/// Where the API is: `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug)]
struct Endpoint {
    host: String,
    port: u16,
    /// `HOST[:PORT]` as given, for the `Host` header.
    authority: String,
    /// Path prefix without the trailing slash.
    prefix: String,
    /// The `Authorization` header the node's `http.auth-token` needs.
    auth: Option<String>,
}

/// The API at `url`, reached with `token` (the node's `http.auth-token`; `None` or empty when
/// it has none).
fn endpoint(url: &str, token: Option<&str>) -> Result<Endpoint> {
    let mut ep = parse_url(url)?;
    ep.auth = token
        .filter(|t| !t.is_empty())
        .map(|t| format!("Bearer {t}"));
    Ok(ep)
}

fn parse_url(url: &str) -> Result<Endpoint> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| anyhow!("{url}: unclosed [ in the host"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, parse_port(url, p)?),
            None if after.is_empty() => (host, 80),
            None => bail!("{url}: bad host"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(url, p)?),
            None => (authority, 80),
        }
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        prefix: format!("/{}", path.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_owned(),
        auth: None,
    })
}

fn parse_port(url: &str, p: &str) -> Result<u16> {
    p.parse().with_context(|| format!("{url}: bad port {p:?}"))
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Refuses a `-name` that cannot name a database before asking the node (which would refuse
/// it too).
fn check_name(name: &str) -> Result<()> {
    litefs_store::validate_name(name).map_err(|e| anyhow!("-name: {e}"))
}

/// Sends one request on a new connection and returns the response (its body still to read).
async fn send<B>(ep: &Endpoint, method: Method, path: &str, body: B) -> Result<Response<Incoming>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = (ep.host.as_str(), ep.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {}: timed out", ep.authority))?
        .with_context(|| format!("connect to {}", ep.authority))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        // Its error, if any, is the request's too.
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", ep.prefix))
        .header(hyper::header::HOST, &ep.authority);
    if let Some(auth) = &ep.auth {
        req = req.header(hyper::header::AUTHORIZATION, auth);
    }
    if let Some(len) = body.size_hint().exact() {
        req = req.header(hyper::header::CONTENT_LENGTH, len);
    }
    let req = req.body(body).context("build the request")?;
    sender.send_request(req).await.context("send the request")
}

/// The error a non-200 response stands for: its status and the server's message.
async fn server_error(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status();
    let msg = match Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
        Err(e) => format!("(unreadable message: {e})"),
    };
    if msg.is_empty() {
        anyhow!("{status}")
    } else {
        anyhow!("{status}: {msg}")
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// `PATH` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Downloads database `name` to `path`: written to `PATH.tmp`, synced, the `-journal`, `-wal`
/// and `-shm` files beside `PATH` removed (they belong to the file being replaced), renamed
/// over `PATH`, and the directory synced.
pub fn export(url: &str, token: Option<&str>, name: &str, path: &Path) -> Result<()> {
    check_name(name)?;
    let ep = endpoint(url, token)?;
    let tmp = with_suffix(path, ".tmp");
    let result = runtime()?.block_on(async {
        let resp = send(
            &ep,
            Method::GET,
            &format!("/export?name={}", encode(name)),
            Empty::<Bytes>::new(),
        )
        .await?;
        if !resp.status().is_success() {
            return Err(server_error(resp).await);
        }
        let mut file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("read the database from the server")?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data)
                    .with_context(|| format!("write {}", tmp.display()))?;
            }
        }
        file.sync_all()
            .with_context(|| format!("sync {}", tmp.display()))?;
        Ok(())
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("export {name} from {url}")));
    }
    for suffix in ["-journal", "-wal", "-shm"] {
        let side = with_suffix(path, suffix);
        match fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", side.display())),
        }
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))?;
    Ok(())
}

/// A request body read from a file by a thread, in chunks.
struct FileBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    len: u64,
}

impl FileBody {
    fn open(path: &Path) -> Result<FileBody> {
        let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        let (tx, rx) = mpsc::channel(4);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; CHUNK];
            let item = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        });
        Ok(FileBody { rx, len })
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}

/// Uploads the SQLite file at `path` as database `name` (created or replaced on the primary).
/// Prints the server's answer.
pub fn import(url: &str, token: Option<&str>, name: &str, path: &Path) -> Result<()> {
    check_name(name)?;
    import_file(url, token, name, path)
        .with_context(|| format!("import {} as {name} into {url}", path.display()))
}

fn import_file(url: &str, token: Option<&str>, name: &str, path: &Path) -> Result<()> {
    let ep = endpoint(url, token)?;
    let body = FileBody::open(path)?;
    runtime()?.block_on(async {
        // A node that refuses the request's token answers before it reads the body; to a
        // client still sending a large file that answer can arrive as a reset connection.
        // Asking first, with an empty request, gets such a refusal back whole.
        node_info(&ep).await?;
        let resp = send(
            &ep,
            Method::POST,
            &format!("/import?name={}", encode(name)),
            body,
        )
        .await?;
        if !resp.status().is_success() {
            return Err(server_error(resp).await);
        }
        let msg = Limited::new(resp.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("read the answer: {e}"))?
            .to_bytes();
        let msg = String::from_utf8_lossy(&msg);
        if !msg.trim().is_empty() {
            println!("{}", msg.trim());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused_before_asking_the_node() {
        let long = "a".repeat(10_000);
        for bad in ["..", "a\0b", long.as_str(), "../../x", "/a"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("-name: invalid database name"), "{e:.200}");
            assert!(e.len() < 300, "{e:.300}");
            // Refused before any connection (nothing listens on port 1).
            let e = export("http://127.0.0.1:1", None, bad, Path::new("/nonexistent/x"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("-name:"), "{e:.200}");
            let e = import("http://127.0.0.1:1", None, bad, Path::new("/nonexistent/x"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("-name:"), "{e:.200}");
        }
        check_name("a/b").expect("a database in a subdirectory");
    }

    #[test]
    fn halt_lock_paths_need_a_database_file_name() {
        assert_eq!(
            halt_lock_path(Path::new("/mnt/a/b")).unwrap(),
            Path::new("/mnt/a/b-lock")
        );
        assert_eq!(
            halt_lock_path(Path::new("../mnt/app.db")).unwrap(),
            Path::new("../mnt/app.db-lock")
        );
        let long = format!("/mnt/{}", "a".repeat(10_000));
        let nul = std::ffi::OsString::from("/mnt/a\0b");
        for bad in [
            Path::new("/mnt/.."),
            Path::new(nul.as_os_str()),
            Path::new(&long),
            Path::new("/mnt/app.db-wal"),
            Path::new("/"),
        ] {
            let e = halt_lock_path(bad).unwrap_err().to_string();
            assert!(e.starts_with("-with-halt-lock-on"), "{e:.200}");
            assert!(e.len() < 300, "{e:.300}");
        }
        let e = halt_lock_path(Path::new(&format!("/mnt/{}", "a".repeat(252))))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no room for its -lock file"), "{e}");
    }

    #[test]
    fn urls_and_query_values() {
        let ep = parse_url("http://localhost:20202").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("localhost", 20202));
        assert_eq!(ep.prefix, "");
        let ep = parse_url("http://127.0.0.1/api/").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("127.0.0.1", 80));
        assert_eq!(ep.prefix, "/api");
        let ep = parse_url("http://[::1]:8080").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("::1", 8080));
        assert_eq!(ep.authority, "[::1]:8080");
        assert!(parse_url("https://x").is_err());
        assert!(parse_url("http://x:port").is_err());
        let ep = parse_url("http://[::1]").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("::1", 80));
        assert_eq!(encode("a/b c.db"), "a%2Fb%20c.db");
    }
}

/// What `litefs-rs run` does before running its command.
#[derive(Debug, Clone)]
pub struct RunFlags {
    /// `-promote`: make the local node the primary first.
    pub promote: bool,
    /// `-if-candidate`: run only on a node that may become primary.
    pub if_candidate: bool,
    /// `-v`: say what happens.
    pub verbose: bool,
    /// `-with-halt-lock-on DBPATH`: hold the cluster's halt lock on that database (a path in
    /// the mount) while the command runs, so that it may write on a replica.
    pub halt_lock_on: Option<std::path::PathBuf>,
}

/// `litefs-rs run`: asks the node at `url` about itself, promotes it if asked, then runs `cmd`
/// and returns its exit code (0 without running it on a non-candidate with `-if-candidate`).
pub fn run(
    url: &str,
    token: Option<&str>,
    flags: RunFlags,
    cmd: &[std::ffi::OsString],
) -> Result<i32> {
    let ep = endpoint(url, token)?;
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command to run (litefs-rs run [flags] -- CMD [ARGS...])");
    };
    if flags.promote && flags.halt_lock_on.is_some() {
        bail!("-promote and -with-halt-lock-on do not go together");
    }
    let rt = runtime()?;
    if flags.if_candidate || flags.promote {
        let info = rt.block_on(node_info(&ep))?;
        let candidate = info["candidate"].as_bool().unwrap_or(false);
        let primary = info["isPrimary"].as_bool().unwrap_or(false);
        if flags.if_candidate && !candidate {
            if flags.verbose {
                eprintln!("litefs-rs run: {url} is not a candidate; not running the command");
            }
            return Ok(0);
        }
        if flags.promote && !primary {
            if flags.verbose {
                eprintln!("litefs-rs run: promoting {url}");
            }
            rt.block_on(async {
                let resp = send(&ep, Method::POST, "/promote", Empty::<Bytes>::new()).await?;
                if resp.status() != hyper::StatusCode::OK {
                    return Err(server_error(resp).await.context("promote"));
                }
                Ok(())
            })?;
            if flags.verbose {
                eprintln!("litefs-rs run: {url} is the primary");
            }
        }
    }
    drop(rt);
    let halt = match &flags.halt_lock_on {
        Some(db) => {
            let lock = halt(db)?;
            if flags.verbose {
                eprintln!("litefs-rs run: holding the halt lock on {}", db.display());
            }
            Some(lock)
        }
        None => None,
    };
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("run {}", program.to_string_lossy()))?;
    if let Some(lock) = halt {
        // Closing the lock file releases the lock; unlocking first says so in the error if it
        // fails.
        set_halt_lock(&lock, libc::F_UNLCK).context("release the halt lock")?;
        drop(lock);
        if flags.verbose {
            eprintln!("litefs-rs run: released the halt lock");
        }
    }
    Ok(status.code().unwrap_or(1))
}

/// Takes the halt lock on database `db` (a path in the mount): an OFD write lock on byte 72 of
/// `<db>-lock`, which waits until the node holds the cluster's write lock.
fn halt(db: &Path) -> Result<std::fs::File> {
    let path = halt_lock_path(db)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| {
            format!(
                "open {} (is {} a database in a litefs-rs mount?)",
                path.display(),
                db.display()
            )
        })?;
    set_halt_lock(&file, libc::F_WRLCK)
        .with_context(|| format!("take the halt lock on {}", db.display()))?;
    Ok(file)
}

/// `<db>-lock` beside the database file `db` of `-with-halt-lock-on`, once its file name is
/// one a database can have (and its `-lock` file too: at most 255 bytes).
fn halt_lock_path(db: &Path) -> Result<PathBuf> {
    let name = db
        .file_name()
        .ok_or_else(|| anyhow!("-with-halt-lock-on {}: not a database file", db.display()))?;
    let name = name.to_str().ok_or_else(|| {
        anyhow!(
            "-with-halt-lock-on {}: the file name is not UTF-8",
            db.display()
        )
    })?;
    litefs_store::validate_name(name).map_err(|e| anyhow!("-with-halt-lock-on: {e}"))?;
    if name.len() + "-lock".len() > 255 {
        bail!(
            "-with-halt-lock-on: a file name of {} bytes leaves no room for its -lock file (255 bytes at most)",
            name.len()
        );
    }
    Ok(with_suffix(db, "-lock"))
}

/// The byte of `<db>-lock` whose lock is the halt lock (as in LiteFS).
const HALT_BYTE: libc::off_t = 72;

/// Sets (`F_WRLCK`, waiting) or clears (`F_UNLCK`) the OFD lock on the halt byte of `file`.
fn set_halt_lock(file: &std::fs::File, kind: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd as _;
    let mut fl = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: HALT_BYTE,
        l_len: 1,
        l_pid: 0,
    };
    let cmd = if kind == libc::F_UNLCK {
        libc::F_OFD_SETLK
    } else {
        libc::F_OFD_SETLKW
    };
    loop {
        // SAFETY: the descriptor is open for the call and `fl` is a valid flock.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `GET /info`.
async fn node_info(ep: &Endpoint) -> Result<serde_json::Value> {
    let resp = send(ep, Method::GET, "/info", Empty::<Bytes>::new()).await?;
    if resp.status() != hyper::StatusCode::OK {
        return Err(server_error(resp).await.context("GET /info"));
    }
    let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map_err(|e| anyhow!("read /info: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).context("/info is not JSON")
}
