//! The halt lock on a replica: what a lock on `<db>-lock` does (see [`litefs_fuse::HaltLocks`]).
//!
//! The node asks the primary for the lock (`POST /halt`), waits until it has the primary's
//! position, and then lets SQLite write the database: every transaction is sent to the
//! primary (`POST /tx`) before it commits here, and fails here if the primary does not take
//! it. The lock is renewed while held, and released (`DELETE /halt`) when the application
//! unlocks or closes the file. On the primary there is nothing to take.
//!
//! The requests are plain HTTP/1.1 on their own connections, from the threads that need them
//! (a FUSE request thread for `/tx`): they never wait on the async runtime.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use litefs_fuse::HaltErrno as Errno;
use litefs_ltx::{NodeId, Pos};
use litefs_replication::replica::ID_HEADER;
use litefs_replication::AuthToken;
use litefs_store::Store;

use crate::api::halt::{HALT_ACQUIRE, MAX_TX_BODY};
use crate::api::Api;

/// How often a held lock is renewed (it lasts [`crate::api::halt::HALT_TTL`]).
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a release or a renewal may take.
const SHORT_REQUEST: Duration = Duration::from_secs(5);
/// How long sending one transaction may take.
const TX_REQUEST: Duration = Duration::from_secs(60);

/// A request's outcome: the status and the body, or why there was none.
type Answer = Result<(u16, String), String>;

/// `http://host:port` of `url`.
fn authority(url: &str) -> Result<&str, String> {
    url.strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| format!("primary URL {url:?} is not http://host:port"))
}

/// Percent-encodes a query value.
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 request to `url` (`Connection: close`), with the body from `body` if any.
fn request(
    url: &str,
    method: &str,
    target: &str,
    me: NodeId,
    token: Option<&AuthToken>,
    body: Option<&Path>,
    timeout: Duration,
) -> Answer {
    let host = authority(url)?;
    let what = format!("{method} {url}{target}");
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{what}: resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{what}: {host} has no address"))?;
    let deadline = Instant::now() + timeout;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))
        .map_err(|e| format!("{what}: connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.set_write_timeout(Some(timeout))
        .and_then(|()| tcp.set_read_timeout(Some(timeout)))
        .map_err(|e| format!("{what}: {e}"))?;
    let mut file = match body {
        Some(p) => {
            Some(std::fs::File::open(p).map_err(|e| format!("{what}: open {}: {e}", p.display()))?)
        }
        None => None,
    };
    let len = match &file {
        Some(f) => f
            .metadata()
            .map(|m| m.len())
            .map_err(|e| format!("{what}: {e}"))?,
        None => 0,
    };
    let auth = token.map_or_else(String::new, |t| {
        format!("{}: {}\r\n", hyper::header::AUTHORIZATION, t.header_value())
    });
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{ID_HEADER}: {me}\r\n{auth}Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes())
        .map_err(|e| format!("{what}: send: {e}"))?;
    if let Some(f) = file.as_mut() {
        std::io::copy(f, &mut tcp).map_err(|e| format!("{what}: send the body: {e}"))?;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if Instant::now() > deadline {
            return Err(format!("{what}: no answer within {timeout:?}"));
        }
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{what}: read the answer: {e}")),
        }
        if answer.len() > 1 << 20 {
            return Err(format!("{what}: the answer is too long"));
        }
    }
    parse_answer(&what, &answer)
}

/// The status and trimmed body of the HTTP/1.1 answer `answer` (read to the end of the
/// connection) to the request `what`.
pub(crate) fn parse_answer(what: &str, answer: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{what}: not an HTTP answer"))?;
    Ok((status, body.trim().to_owned()))
}

/// A random lock id (positive, as LiteFS's `int63`).
fn random_id() -> i64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    i64::try_from(h.finish() >> 1).unwrap_or(1).max(1)
}

/// The position in `POST /halt`'s answer.
pub(crate) fn halt_pos(body: &str) -> Result<Pos, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("bad answer {body:?}: {e}"))?;
    let field = |k: &str| {
        v.get("pos")
            .and_then(|p| p.get(k))
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("answer {body:?} has no pos.{k}"))
    };
    let txid = field("TXID")?
        .parse()
        .map_err(|e| format!("pos.TXID: {e}"))?;
    let sum = field("PostApplyChecksum")?
        .parse()
        .map_err(|e| format!("pos.PostApplyChecksum: {e}"))?;
    Ok(Pos::new(txid, sum))
}

/// A lock this node holds.
#[derive(Debug)]
struct Holding {
    db: String,
    url: String,
    /// Stops the renewals when dropped.
    _renewing: mpsc::Sender<()>,
}

/// Takes the halt lock for the applications of this node.
#[derive(Debug)]
pub(crate) struct Halter {
    store: Arc<Store>,
    api: Arc<Api>,
    held: Mutex<HashMap<u64, Holding>>,
}

impl Halter {
    pub(crate) fn new(store: Arc<Store>, api: Arc<Api>) -> Self {
        Halter {
            store,
            api,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn me(&self) -> NodeId {
        self.store.node_id()
    }

    fn release_remote(&self, url: &str, db: &str, id: i64) {
        let target = format!("/halt?name={}&id={id}", query_value(db));
        match request(
            url,
            "DELETE",
            &target,
            self.me(),
            self.api.auth_token.as_ref(),
            None,
            SHORT_REQUEST,
        ) {
            Ok((200, _)) => {}
            Ok((status, body)) => {
                tracing::warn!(%db, id, status, "the primary did not release the halt lock: {body}");
            }
            Err(e) => tracing::warn!(%db, id, "could not release the halt lock: {e}"),
        }
    }

    /// Releases every lock this node holds (it stops).
    pub(crate) fn close(&self) {
        let all: Vec<(u64, Holding)> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (token, h) in all {
            if let Some(db) = self.store.db(&h.db) {
                db.clear_halt_forward(token);
            }
            self.release_remote(&h.url, &h.db, i64::try_from(token).unwrap_or(0));
        }
    }

    /// Renews lock `id` on `db` every [`RENEW_EVERY`] until `stop` is dropped.
    fn renew(&self, url: String, db: String, id: i64, stop: mpsc::Receiver<()>) {
        let me = self.me();
        let token = self.api.auth_token.clone();
        let store = self.store.clone();
        std::thread::spawn(move || loop {
            match stop.recv_timeout(RENEW_EVERY) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let target = format!("/halt?name={}&id={id}&renew=true", query_value(&db));
            match request(
                &url,
                "POST",
                &target,
                me,
                token.as_ref(),
                None,
                SHORT_REQUEST,
            ) {
                Ok((200, _)) => {}
                Ok((status, body)) => {
                    tracing::warn!(%db, id, status, "the primary refused to renew the halt lock ({body}): writes are refused again");
                    if let Some(d) = store.db(&db) {
                        d.clear_halt_forward(u64::try_from(id).unwrap_or(0));
                    }
                    return;
                }
                Err(e) => tracing::warn!(%db, id, "could not renew the halt lock: {e}"),
            }
        });
    }
}

impl litefs_fuse::HaltLocks for Halter {
    fn halt(&self, name: &str) -> Result<u64, Errno> {
        if *self.api.primary.borrow() {
            return Ok(0);
        }
        let url = self
            .api
            .primary_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(url) = url else {
            tracing::warn!(db = %name, "halt lock: no primary known");
            return Err(Errno::EAGAIN);
        };
        let db = self.store.create_db(name).map_err(|e| {
            tracing::warn!(db = %name, "halt lock: {e}");
            Errno::EINVAL
        })?;
        let id = random_id();
        let target = format!("/halt?name={}&id={id}", query_value(name));
        let answer = request(
            &url,
            "POST",
            &target,
            self.me(),
            self.api.auth_token.as_ref(),
            None,
            HALT_ACQUIRE + Duration::from_secs(2),
        );
        let want = match answer {
            Ok((200, body)) => halt_pos(&body).map_err(|e| {
                tracing::warn!(db = %name, "halt lock: {e}");
                self.release_remote(&url, name, id);
                Errno::EIO
            })?,
            Ok((status, body)) => {
                tracing::warn!(db = %name, status, "the primary did not give the halt lock: {body}");
                return Err(if status == 400 {
                    Errno::EINVAL
                } else {
                    Errno::EAGAIN
                });
            }
            Err(e) => {
                tracing::warn!(db = %name, "halt lock: {e}");
                self.release_remote(&url, name, id);
                return Err(Errno::EAGAIN);
            }
        };
        // This node writes from exactly the primary's position.
        let deadline = Instant::now() + HALT_ACQUIRE;
        loop {
            let have = db.pos();
            if have == want {
                break;
            }
            let past = have.txid > want.txid || (have.txid == want.txid && have != want);
            if past || Instant::now() >= deadline {
                tracing::warn!(db = %name, %have, %want, "halt lock: this node is not at the primary's position");
                self.release_remote(&url, name, id);
                return Err(if past { Errno::EIO } else { Errno::EAGAIN });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let me = self.me();
        let auth = self.api.auth_token.clone();
        let (tx_url, tx_name) = (url.clone(), name.to_owned());
        let token = u64::try_from(id).unwrap_or(0);
        db.set_halt_forward(Some((
            token,
            Arc::new(move |ltx: &Path| {
                // The primary would refuse it (413) once sent.
                let len = std::fs::metadata(ltx).map_or(0, |m| m.len());
                if len > MAX_TX_BODY {
                    return Err(format!(
                        "the transaction's LTX file is {len} bytes; the primary takes at most {MAX_TX_BODY} under the halt lock"
                    ));
                }
                let target = format!("/tx?name={}&lockID={id}", query_value(&tx_name));
                match request(
                    &tx_url,
                    "POST",
                    &target,
                    me,
                    auth.as_ref(),
                    Some(ltx),
                    TX_REQUEST,
                )? {
                    (200, _) => Ok(()),
                    (status, body) => Err(format!("{status}: {body}")),
                }
            }),
        )));
        let (stop, stopped) = mpsc::channel();
        self.renew(url.clone(), name.to_owned(), id, stopped);
        self.held.lock().unwrap_or_else(|e| e.into_inner()).insert(
            token,
            Holding {
                db: name.to_owned(),
                url,
                _renewing: stop,
            },
        );
        tracing::info!(db = %name, id, pos = %want, "halt lock held: writes go to the primary");
        Ok(token)
    }

    fn unhalt(&self, name: &str, token: u64) {
        if token == 0 {
            return;
        }
        let Some(h) = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token)
        else {
            return;
        };
        if let Some(db) = self.store.db(name) {
            db.clear_halt_forward(token);
        }
        self.release_remote(&h.url, &h.db, i64::try_from(token).unwrap_or(0));
        tracing::info!(db = %name, id = token, "halt lock released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(query_value("db.sqlite-x_y~"), "db.sqlite-x_y~");
    }

    #[test]
    fn the_halt_answer_gives_the_position() {
        let body = r#"{"id":7,"pos":{"TXID":"0000000000000003","PostApplyChecksum":"8000000000000001"},"expires":"2026-01-01T00:00:00Z"}"#;
        let pos = halt_pos(body).unwrap();
        assert_eq!(pos.to_string(), "0000000000000003/8000000000000001");
        assert!(halt_pos(r#"{"id":7}"#).is_err());
        assert!(halt_pos("nope").is_err());
    }
}
