//! The halt lock on the primary: `POST /halt?name=&id=` gives the replica named by the
//! `Litefs-Id` header SQLite's write lock on one database (local writers wait, readers go on)
//! and answers the position to write from, `POST /tx?name=&lockID=` applies a transaction that
//! replica wrote under it (the LTX file as the body), and `DELETE /halt?name=&id=` releases it.
//! A lock that is not renewed (`POST /halt` again with the same id) or used within
//! [`HALT_TTL`] expires. Unlike LiteFS, `/tx` is refused unless the caller holds the lock it
//! names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use litefs_ltx::NodeId;
use litefs_replication::replica::{Received, ID_HEADER};

use super::{db_name_param, query_param, text, Api, ApiBody};
use crate::apply::{ApplyError, MountApplier, WriterLock};

/// How long a halt lock lasts without being renewed or used.
pub const HALT_TTL: Duration = Duration::from_secs(30);
/// How long `POST /halt` waits for the lock (another replica's, or a local writer's).
pub const HALT_ACQUIRE: Duration = Duration::from_secs(10);
/// The largest `/tx` body: the LTX file of one transaction written under the halt lock (a
/// migration rewriting a database of about that size). Larger is refused with 413, from its
/// `Content-Length` before anything is read, or as soon as a body without one passes it.
pub const MAX_TX_BODY: u64 = 1 << 30;

/// One database's halt lock.
#[derive(Debug)]
struct Held {
    id: i64,
    peer: NodeId,
    expires: Instant,
    /// SQLite's write lock; `None` while the database has no file. Locked by `/tx` while it
    /// applies, so that a release waits for the apply.
    lock: Arc<Mutex<Option<WriterLock>>>,
}

impl Held {
    fn renew(&mut self) {
        self.expires = Instant::now() + HALT_TTL;
    }
}

/// The halt locks this primary gave out.
#[derive(Debug, Default)]
pub(crate) struct Halts {
    held: Mutex<HashMap<String, Held>>,
    /// One acquisition at a time (it may wait for SQLite's lock).
    acquiring: Mutex<()>,
    /// Numbers the temporary files of `/tx` bodies.
    next_tmp: std::sync::atomic::AtomicU64,
}

impl Halts {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the locks past their time; returns how many.
    pub(crate) fn expire(&self) -> usize {
        let now = Instant::now();
        let mut held = self.held();
        let before = held.len();
        held.retain(|name, h| {
            let live = h.expires > now;
            if !live {
                tracing::warn!(db = %name, peer = %h.peer, id = h.id, "halt lock expired");
            }
            live
        });
        before - held.len()
    }

    /// Releases every lock (the node is no longer the primary, or stops).
    pub(crate) fn clear(&self) {
        let all: Vec<Held> = self.held().drain().map(|(_, h)| h).collect();
        if !all.is_empty() {
            tracing::info!(count = all.len(), "halt locks released");
        }
        drop(all);
    }
}

/// The `Litefs-Id` of the caller, or the 400 answer.
#[allow(clippy::result_large_err)] // a cold path
pub(crate) fn peer_of<B>(req: &Request<B>, me: NodeId) -> Result<NodeId, Response<ApiBody>> {
    match req
        .headers()
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::parse::<NodeId>)
    {
        Some(Ok(id)) if id == me => Err(text(
            StatusCode::BAD_REQUEST,
            "the halt lock is for other nodes than the primary",
        )),
        Some(Ok(id)) => Ok(id),
        Some(Err(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("bad {ID_HEADER} header: {e}"),
        )),
        None => Err(text(
            StatusCode::BAD_REQUEST,
            format!("missing {ID_HEADER} header"),
        )),
    }
}

/// Query parameter `key` as a lock id, or the 400 answer.
#[allow(clippy::result_large_err)] // a cold path
pub(crate) fn id_param(uri: &hyper::Uri, key: &str) -> Result<i64, Response<ApiBody>> {
    match query_param(uri, key) {
        Ok(Some(v)) => v.parse::<i64>().map_err(|_| {
            text(
                StatusCode::BAD_REQUEST,
                format!("{key} {v:?} is not a decimal integer"),
            )
        }),
        Ok(None) => Err(text(StatusCode::BAD_REQUEST, format!("{key} required"))),
        Err(e) => Err(text(StatusCode::BAD_REQUEST, format!("bad query: {e}"))),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ApiBody> {
    let mut resp =
        Response::new(http_body_util::Full::new(bytes::Bytes::from(value.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn apply_status(e: &ApplyError) -> StatusCode {
    match e {
        ApplyError::Store(litefs_store::Error::PosMismatch { .. }) => StatusCode::CONFLICT,
        ApplyError::Store(litefs_store::Error::Decode { .. }) => StatusCode::BAD_REQUEST,
        ApplyError::Mount { source, .. } if source.raw_os_error() == Some(libc::EAGAIN) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Api {
    /// What `/halt` and `/tx` are asked: the database, the lock id (query parameter
    /// `id_key`) and the caller, on a primary that is running; or the answer that says what is
    /// wrong.
    #[allow(clippy::result_large_err)] // a cold path
    fn halt_request<B>(
        &self,
        req: &Request<B>,
        id_key: &str,
    ) -> Result<(String, i64, NodeId, MountApplier), Response<ApiBody>> {
        let name = db_name_param(req.uri())?;
        let id = id_param(req.uri(), id_key)?;
        let peer = peer_of(req, self.store.node_id())?;
        if !*self.primary.borrow() {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is not the primary",
            ));
        }
        let applier = self
            .applier
            .get()
            .cloned()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "the node is starting"))?;
        Ok((name, id, peer, applier))
    }

    /// `POST /halt?name=&id=`.
    pub(crate) async fn post_halt(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let (name, id, peer, applier) = match self.halt_request(&req, "id") {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let renew = matches!(query_param(req.uri(), "renew"), Ok(Some(v)) if v == "true");
        let me = self.clone();
        let got =
            tokio::task::spawn_blocking(move || me.acquire_halt(&applier, &name, id, peer, renew))
                .await
                .unwrap_or_else(|e| {
                    Err((StatusCode::INTERNAL_SERVER_ERROR, format!("acquire: {e}")))
                });
        match got {
            Ok(v) => json(StatusCode::OK, &v),
            Err((status, msg)) => text(status, msg),
        }
    }

    fn acquire_halt(
        &self,
        applier: &MountApplier,
        name: &str,
        id: i64,
        peer: NodeId,
        renew: bool,
    ) -> Result<serde_json::Value, (StatusCode, String)> {
        let deadline = Instant::now() + HALT_ACQUIRE;
        let answer = |db: &litefs_store::Db| {
            let pos = db.pos();
            let expires = SystemTime::now() + HALT_TTL;
            let ms = expires
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            serde_json::json!({
                "id": id,
                "pos": {
                    "TXID": pos.txid.to_string(),
                    "PostApplyChecksum": pos.post_apply_checksum.to_string(),
                },
                "expires": super::events::rfc3339_ms(ms),
            })
        };
        let db = self
            .store
            .create_db(name)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        if renew {
            // Only a lock this node holds is renewed: never taken again after it expired.
            let mut held = self.halts.held();
            return match held.get_mut(name) {
                Some(h) if h.id == id && h.peer == peer => {
                    h.renew();
                    Ok(answer(&db))
                }
                _ => Err((
                    StatusCode::NOT_FOUND,
                    format!("node {peer} does not hold halt lock {id} on {name}"),
                )),
            };
        }
        let _one = self
            .halts
            .acquiring
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            self.halts.expire();
            {
                let mut held = self.halts.held();
                match held.get_mut(name) {
                    // The same request again (a retry), or a renewal.
                    Some(h) if h.id == id && h.peer == peer => {
                        h.renew();
                        return Ok(answer(&db));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            if Instant::now() >= deadline {
                return Err((
                    StatusCode::CONFLICT,
                    format!("another node holds the halt lock on {name}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let lock = applier.lock_writers(name, deadline).map_err(|e| {
            (
                apply_status(&e),
                format!(
                    "SQLite's write lock on {name}: {}",
                    litefs_store::error_chain(&e)
                ),
            )
        })?;
        if !*self.primary.borrow() {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is no longer the primary".to_owned(),
            ));
        }
        let value = answer(&db);
        self.halts.held().insert(
            name.to_owned(),
            Held {
                id,
                peer,
                expires: Instant::now() + HALT_TTL,
                lock: Arc::new(Mutex::new(lock)),
            },
        );
        tracing::info!(db = %name, %peer, id, pos = %db.pos(), "halt lock taken");
        Ok(value)
    }

    /// `DELETE /halt?name=&id=` (it may wait for a `/tx` that is applying: off the runtime).
    pub(crate) async fn delete_halt(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.release_halt(&req))
            .await
            .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("release: {e}")))
    }

    fn release_halt(&self, req: &Request<Incoming>) -> Response<ApiBody> {
        let name = match db_name_param(req.uri()) {
            Ok(n) => n,
            Err(resp) => return resp,
        };
        let id = match id_param(req.uri(), "id") {
            Ok(id) => id,
            Err(resp) => return resp,
        };
        let removed = {
            let mut held = self.halts.held();
            match held.get(&name) {
                Some(h) if h.id == id => held.remove(&name),
                _ => None,
            }
        };
        match removed {
            Some(h) => {
                // Waits for a `/tx` that is applying.
                let lock = h.lock.clone();
                drop(h);
                let released = lock.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(released);
                tracing::info!(db = %name, id, "halt lock released");
                text(StatusCode::OK, "released")
            }
            None => text(StatusCode::OK, "not held"),
        }
    }

    /// `POST /tx?name=&lockID=`.
    pub(crate) async fn post_tx(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let (name, id, peer, applier) = match self.halt_request(&req, "lockID") {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        self.halts.expire();
        let lock = {
            let mut held = self.halts.held();
            match held.get_mut(&name) {
                Some(h) if h.id == id && h.peer == peer => {
                    h.renew();
                    h.lock.clone()
                }
                _ => {
                    return text(
                        StatusCode::CONFLICT,
                        format!("node {peer} does not hold halt lock {id} on {name}"),
                    )
                }
            }
        };
        if let Some(len) = content_length(&req).filter(|&n| n > MAX_TX_BODY) {
            return too_large(len);
        }
        let db = match self.store.create_db(&name) {
            Ok(db) => db,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        // The body goes to a file in the database's LTX folder (start-up removes what a crash
        // leaves there), up to MAX_TX_BODY.
        let n = self
            .halts
            .next_tmp
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = db.ltx_dir().join(format!("tx-{peer}-{id}-{n}.tmp"));
        let mut file = match std::fs::File::create(&tmp) {
            Ok(f) => f,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("create {}: {e}", tmp.display()),
                )
            }
        };
        let written = write_capped(req.into_body(), &mut file, MAX_TX_BODY).await;
        drop(file);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return match e {
                BodyError::Read(e) => text(StatusCode::BAD_REQUEST, format!("read the body: {e}")),
                BodyError::TooLarge(n) => too_large(n),
                BodyError::Write(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("write {}: {e}", tmp.display()),
                ),
            };
        }
        // The next transaction of the database, and nothing else (a snapshot only for a
        // database that has none).
        let next = db.pos().txid.get() + 1;
        let starts = std::fs::File::open(&tmp).ok().and_then(|f| {
            let mut h = [0u8; litefs_ltx::header::HEADER_SIZE];
            litefs_store::fsutil::read_full_at(&f, &mut h, 0)
                .ok()
                .filter(|&n| n == h.len())
                .and_then(|_| litefs_ltx::Header::from_bytes(&h).ok())
        });
        match starts {
            Some(h) if h.min_txid.get() == next => {}
            Some(h) => {
                let _ = std::fs::remove_file(&tmp);
                return text(
                    StatusCode::CONFLICT,
                    format!(
                        "{name} is at TXID {}; the transaction starts at {}",
                        next - 1,
                        h.min_txid
                    ),
                );
            }
            None => {
                let _ = std::fs::remove_file(&tmp);
                return text(StatusCode::BAD_REQUEST, "the body is not an LTX file");
            }
        }
        let present = db.is_present();
        let applied = tokio::task::spawn_blocking(move || {
            let held = lock.lock().unwrap_or_else(|e| e.into_inner());
            if held.is_none() && present {
                // Taken when the database had no file: SQLite's write lock was never held.
                let _ = std::fs::remove_file(&tmp);
                return Err(ApplyError::Mount {
                    op: "lock",
                    path: tmp.clone(),
                    source: std::io::Error::from_raw_os_error(libc::EAGAIN),
                });
            }
            let received = vec![Received::File(tmp.clone())];
            let (mut done, err) = applier.apply_batch_under(&name, received, held.as_ref());
            let _ = std::fs::remove_file(&tmp);
            match (done.pop(), err) {
                (_, Some(e)) => Err(e),
                (Some(a), None) => Ok(a),
                (None, None) => Err(ApplyError::Store(litefs_store::Error::NotFound(name))),
            }
        })
        .await;
        match applied {
            Ok(Ok(a)) => {
                tracing::debug!(%peer, pos = %a.pos, "applied a transaction written under the halt lock");
                text(StatusCode::OK, a.pos.to_string())
            }
            Ok(Err(e)) => text(apply_status(&e), litefs_store::error_chain(&e)),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("apply: {e}")),
        }
    }
}

/// The request's `Content-Length`, if it has a valid one.
fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The 413 of a `/tx` body of (at least) `len` bytes.
fn too_large(len: u64) -> Response<ApiBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the transaction's LTX file is {len} bytes or more; /tx takes at most {MAX_TX_BODY}"
        ),
    )
}

/// Why a body was not written whole.
#[derive(Debug)]
enum BodyError {
    /// Reading it failed.
    Read(Box<dyn std::error::Error + Send + Sync>),
    /// It passed the limit (at this many bytes): the rest is not read.
    TooLarge(u64),
    /// Writing it failed.
    Write(std::io::Error),
}

/// Writes `body` to `out` chunk by chunk, up to `cap` bytes; returns how many it wrote.
async fn write_capped<B>(body: B, out: &mut impl std::io::Write, cap: u64) -> Result<u64, BodyError>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(f) => f.into_data().unwrap_or_default(),
            Err(e) => return Err(BodyError::Read(e.into())),
        };
        n += chunk.len() as u64;
        if n > cap {
            return Err(BodyError::TooLarge(n));
        }
        out.write_all(&chunk).map_err(BodyError::Write)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of these chunks.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl hyper::body::Body for Chunks {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>>
        {
            let next = self.0.pop_front();
            std::task::Poll::Ready(
                next.map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::from_static(c)))),
            )
        }
    }

    fn write(chunks: &[&'static [u8]], cap: u64) -> (Result<u64, BodyError>, Vec<u8>, usize) {
        let mut body = Chunks(chunks.iter().copied().collect());
        let mut out = Vec::new();
        let r = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(write_capped(&mut body, &mut out, cap));
        (r, out, body.0.len())
    }

    #[test]
    fn tx_bodies_are_capped_as_they_arrive() {
        let (r, out, _) = write(&[b"abc", b"def"], 6);
        assert_eq!(r.expect("within the cap"), 6);
        assert_eq!(out, b"abcdef");
        // The chunk that passes the cap is not written, and nothing after it is read.
        let (r, out, unread) = write(&[b"abc", b"def", b"g"], 5);
        assert!(matches!(r, Err(BodyError::TooLarge(6))), "{r:?}");
        assert_eq!(out, b"abc");
        assert_eq!(unread, 1);
        let (r, _, _) = write(&[], 0);
        assert_eq!(r.expect("empty"), 0);
    }
}
