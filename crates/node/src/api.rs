//! The internal HTTP API (LiteFS's port 20202): `/stream` for replicas, `/info`, `/metrics`,
//! `/export` and `/import` (a database as a plain SQLite file, see [`transfer`]) and `/events`
//! (see [`events`]). HTTP/1.1 and HTTP/2 without TLS (prior knowledge) on the same port, as
//! LiteFS serves it. With `http.auth-token`, every request on every route must carry it
//! (`Api::authorize`).

mod events;
pub(crate) mod halt;
mod transfer;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use litefs_ltx::NodeId;
use litefs_replication::primary::{self, StreamOptions};
use litefs_replication::replica::{CLUSTER_ID_HEADER, ID_HEADER};
use litefs_replication::{AuthToken, PosMap};
use litefs_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest position map a replica may send (about 1 KiB per database).
const MAX_POS_MAP_BODY: usize = 64 << 20;

/// What the API serves from.
#[derive(Debug)]
pub struct Api {
    pub(crate) store: Arc<Store>,
    /// True while this node is the primary.
    pub(crate) primary: watch::Receiver<bool>,
    /// Moves whenever a database's published position does.
    pub(crate) changes: watch::Receiver<u64>,
    pub(crate) compress: bool,
    pub(crate) candidate: bool,
    /// The static lease cannot be handed over.
    pub(crate) static_lease: bool,
    pub(crate) mount_dir: String,
    /// Tells the kernel what an import changed.
    pub(crate) invalidator: litefs_fuse::Invalidator,
    /// What the streams send, built once per LTX file.
    pub(crate) file_cache: Arc<primary::FileCache>,
    /// Replicas streaming now, by node id, with the way to hand the lease to each.
    pub(crate) streams: Mutex<HashMap<NodeId, mpsc::Sender<primary::Handoff>>>,
    /// Ends the streams when this node stops being the primary (replaced at each term).
    pub(crate) primary_term: Mutex<CancellationToken>,
    /// The cluster id, once known.
    pub(crate) cluster_id: Arc<Mutex<Option<String>>>,
    /// The primary's advertise URL while following it.
    pub(crate) primary_url: Arc<Mutex<Option<String>>>,
    /// Asks the role loop to hand the lease to a replica.
    pub(crate) handoffs: mpsc::Sender<HandoffRequest>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Applies what replicas write under the halt lock (set once the node runs).
    pub(crate) applier: std::sync::OnceLock<crate::apply::MountApplier>,
    /// The halt locks given out while primary.
    pub(crate) halts: halt::Halts,
    /// `http.auth-token`: every request must carry it (`None`: the API is open).
    pub(crate) auth_token: Option<AuthToken>,
    /// When each peer was last warned about for a refused request.
    pub(crate) refused: Refused,
}

/// How often a peer whose requests are refused for their token is logged.
const REFUSED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The most peers remembered for [`REFUSED_LOG_EVERY`] (past it, the oldest go).
const REFUSED_PEERS: usize = 1024;

/// The peers refused for their token, and when each was last logged: one warning per peer
/// every [`REFUSED_LOG_EVERY`], not one per request.
#[derive(Debug, Default)]
pub(crate) struct Refused(Mutex<HashMap<std::net::IpAddr, std::time::Instant>>);

impl Refused {
    /// Whether a refusal of `peer` now should be logged.
    fn should_log(&self, peer: std::net::IpAddr) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < REFUSED_LOG_EVERY)
        {
            return false;
        }
        if last.len() >= REFUSED_PEERS {
            last.retain(|_, t| now.duration_since(*t) < REFUSED_LOG_EVERY);
            if last.len() >= REFUSED_PEERS {
                last.clear();
            }
        }
        last.insert(peer, now);
        true
    }
}

/// `POST /handoff`: hand the lease to this replica; the answer says whether it was done.
#[derive(Debug)]
pub(crate) struct HandoffRequest {
    pub(crate) peer: NodeId,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// How long `/handoff` and `/promote` wait for the hand-off.
const HANDOFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

type ApiBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, msg: impl Into<String>) -> Response<ApiBody> {
    let mut body = msg.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A response body fed through a channel by a task or a thread: it ends when the sender is
/// dropped. With a length, a body that ends short is an error (the client sees a cut response).
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    len: Option<u64>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.len.map_or_else(
            hyper::body::SizeHint::default,
            hyper::body::SizeHint::with_exact,
        )
    }
}

/// The value of query parameter `key` (the first one), percent-decoded, with `+` as a space
/// (as Go's `url.Query` reads it).
pub(crate) fn query_param(uri: &Uri, key: &str) -> Result<Option<String>, String> {
    for kv in uri.query().unwrap_or("").split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if percent_decode(k)? == key {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The database named by the `name` query parameter, or the 400 response saying what is wrong
/// with it.
#[allow(clippy::result_large_err)] // a cold path; the response is built once
pub(crate) fn db_name_param(uri: &Uri) -> Result<String, Response<ApiBody>> {
    match query_param(uri, "name") {
        Err(e) => Err(text(StatusCode::BAD_REQUEST, format!("bad query: {e}"))),
        Ok(None) => Err(text(StatusCode::BAD_REQUEST, "name required")),
        Ok(Some(name)) => match litefs_store::validate_name(&name) {
            Ok(()) => Ok(name),
            Err(e) => Err(text(StatusCode::BAD_REQUEST, e.to_string())),
        },
    }
}

/// A response body fed by a stream task; leaves the set of connected replicas when dropped.
struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    api: Arc<Api>,
    peer: NodeId,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.api
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.peer);
    }
}

impl Api {
    /// Asks the stream of `peer` to send everything and then the lease; the receiver is told
    /// once the Handoff frame is queued. `None` if that replica is not streaming.
    pub(crate) fn hand_off(
        &self,
        peer: NodeId,
        lease_id: String,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let tx = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned()?;
        let (sent, rx) = tokio::sync::oneshot::channel();
        tx.try_send(primary::Handoff {
            lease_id: Some(lease_id),
            sent,
        })
        .ok()?;
        Some(rx)
    }

    /// Before the primary stops: has every replica's stream send everything the primary has,
    /// and waits (up to `wait`) until their connections took it, so that what the primary
    /// acknowledged reaches a replica that may take over.
    pub(crate) async fn drain_streams(&self, wait: std::time::Duration) {
        let senders: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut waits = Vec::new();
        for tx in senders {
            let (sent, rx) = tokio::sync::oneshot::channel();
            if tx
                .try_send(primary::Handoff {
                    lease_id: None,
                    sent,
                })
                .is_ok()
            {
                waits.push(rx);
            }
        }
        let all = async {
            for rx in waits {
                let _ = rx.await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!("a replica did not take everything before this node stopped");
        }
    }

    /// Starts a term as the primary: streams opened from now on end with [`Api::end_term`].
    pub(crate) fn begin_term(&self) {
        let mut term = self.primary_term.lock().unwrap_or_else(|e| e.into_inner());
        term.cancel();
        *term = self.cancel.child_token();
    }

    /// Ends the streams of this term (the node is no longer the primary), and its halt locks.
    pub(crate) fn end_term(&self) {
        self.halts.clear();
        self.primary_term
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel();
    }

    /// Serves connections from `listener` until `cancel` fires.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, remote) = tokio::select! {
                () = self.cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept on the API port failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let api = self.clone();
            let cancel = self.cancel.clone();
            self.tracker.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req, remote).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
                tokio::select! {
                    () = cancel.cancelled() => {}
                    res = conn => {
                        if let Err(e) = res {
                            tracing::debug!(%remote, "API connection ended: {e}");
                        }
                    }
                }
            });
        }
    }

    /// Refuses a request without this node's `http.auth-token` (every route, `/metrics`
    /// included): 401 saying whether the token is missing or wrong.
    #[allow(clippy::result_large_err)] // a cold path; the response is built once
    fn authorize(
        &self,
        req: &Request<Incoming>,
        remote: std::net::SocketAddr,
    ) -> Result<(), Response<ApiBody>> {
        let Some(token) = &self.auth_token else {
            return Ok(());
        };
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(hyper::header::HeaderValue::as_bytes);
        token.check(header).map_err(|e| {
            if self.refused.should_log(remote.ip()) {
                tracing::warn!(
                    peer = %remote,
                    path = req.uri().path(),
                    "refused an API request: {e} (logged once a minute per peer)"
                );
            }
            let mut resp = text(StatusCode::UNAUTHORIZED, e.to_string());
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            resp
        })
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: std::net::SocketAddr,
    ) -> Response<ApiBody> {
        if let Err(resp) = self.authorize(&req, remote) {
            return resp;
        }
        let mut resp = match (req.method(), req.uri().path()) {
            (&Method::POST, "/stream") => self.clone().stream(req).await,
            (&Method::GET, "/info") => self.info(),
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/export") => self.clone().export(req).await,
            (&Method::POST, "/import") => self.clone().import(req).await,
            (&Method::GET, "/events") => self.clone().events(),
            (&Method::POST, "/handoff") => self.clone().handoff(req).await,
            (&Method::POST, "/promote") => self.clone().promote().await,
            (&Method::POST, "/halt") => self.clone().post_halt(req).await,
            (&Method::DELETE, "/halt") => self.clone().delete_halt(req).await,
            (&Method::POST, "/tx") => self.clone().post_tx(req).await,
            (
                _,
                "/stream" | "/info" | "/metrics" | "/export" | "/import" | "/events" | "/handoff"
                | "/promote" | "/halt" | "/tx",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            (_, path) => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        };
        if let Ok(v) = hyper::header::HeaderValue::from_str(&self.store.node_id().to_string()) {
            resp.headers_mut().insert(ID_HEADER, v);
        }
        if let Some(id) = self.cluster_id() {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
                resp.headers_mut().insert(CLUSTER_ID_HEADER, v);
            }
        }
        resp
    }

    async fn stream(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        if req.version() != Version::HTTP_2 {
            return text(
                StatusCode::UPGRADE_REQUIRED,
                "/stream needs HTTP/2 (prior knowledge, without TLS)",
            );
        }
        // The body first: an HTTP/2 answer before the request is read resets its stream, and
        // the client would not see why.
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_POS_MAP_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("read the position map: {e}"),
                )
            }
        };
        let req = Request::from_parts(parts, ());
        if !*self.primary.borrow() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is not the primary",
            );
        }
        let peer = match req
            .headers()
            .get(ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::parse::<NodeId>)
        {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("bad {ID_HEADER} header: {e}"),
                )
            }
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("missing {ID_HEADER} header"),
                )
            }
        };
        if peer == self.store.node_id() {
            return text(
                StatusCode::BAD_REQUEST,
                "refusing to stream to this node itself",
            );
        }
        let filter: Vec<String> = req
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|kv| kv.strip_prefix("filter="))
            .flat_map(|v| v.split(','))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(e) = filter
            .iter()
            .find_map(|f| litefs_store::validate_name(f).err())
        {
            return text(StatusCode::BAD_REQUEST, format!("bad filter: {e}"));
        }
        let positions = match PosMap::decode(&body) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad position map: {e}")),
        };
        let (handoff_tx, handoff_rx) = mpsc::channel(1);
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            if streams.contains_key(&peer) {
                return text(
                    StatusCode::CONFLICT,
                    format!("node {peer} is already streaming from this node"),
                );
            }
            streams.insert(peer, handoff_tx);
        }
        let term = self
            .primary_term
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .child_token();
        tracing::info!(%peer, databases = positions.len(), "replica connected");
        let rx = primary::spawn(
            self.store.clone(),
            positions,
            StreamOptions {
                compress: self.compress,
                filter,
                peer: peer.to_string(),
                cache: self.file_cache.clone(),
            },
            self.changes.clone(),
            handoff_rx,
            term,
            &self.tracker,
        );
        Response::new(
            StreamBody {
                rx,
                api: self.clone(),
                peer,
            }
            .boxed(),
        )
    }

    fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `POST /handoff?nodeID=<hex>`: on the primary, hands the lease to that connected replica.
    async fn handoff(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let peer = match query_param(req.uri(), "nodeID") {
            Ok(Some(v)) => match v.parse::<NodeId>() {
                Ok(id) => id,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad nodeID {v:?}: {e}")),
            },
            Ok(None) => return text(StatusCode::BAD_REQUEST, "nodeID required"),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
        };
        if !*self.primary.borrow() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is not the primary",
            );
        }
        if !self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&peer)
        {
            return text(
                StatusCode::BAD_REQUEST,
                format!("node {peer} is not streaming from this node"),
            );
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self
            .handoffs
            .send(HandoffRequest { peer, reply })
            .await
            .is_err()
        {
            return text(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
        }
        match tokio::time::timeout(HANDOFF_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => text(StatusCode::OK, format!("handed the lease to {peer}")),
            Ok(Ok(Err(e))) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
            Ok(Err(_)) => text(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down"),
            Err(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no hand-off within {HANDOFF_TIMEOUT:?}"),
            ),
        }
    }

    /// `POST /promote`: on a candidate replica, asks the primary to hand its lease to this node,
    /// and answers once this node is the primary.
    async fn promote(self: Arc<Self>) -> Response<ApiBody> {
        if !self.candidate {
            return text(
                StatusCode::CONFLICT,
                "this node is not a candidate (lease.candidate: false): it cannot become primary",
            );
        }
        if *self.primary.borrow() {
            return text(StatusCode::OK, "this node is already the primary");
        }
        if self.static_lease {
            return text(
                StatusCode::BAD_REQUEST,
                "the static lease cannot be handed over (lease.type: static)",
            );
        }
        let Some(url) = self
            .primary_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no primary known to hand the lease over",
            );
        };
        match request_handoff(&url, self.store.node_id(), self.auth_token.as_ref()).await {
            Ok(()) => {}
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
        let mut primary = self.primary.clone();
        let became = tokio::time::timeout(HANDOFF_TIMEOUT, async {
            primary.wait_for(|p| *p).await.is_ok()
        })
        .await;
        match became {
            Ok(true) => text(StatusCode::OK, "this node is the primary"),
            _ => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the primary handed the lease over, but this node did not become primary within {HANDOFF_TIMEOUT:?}"),
            ),
        }
    }

    fn info(&self) -> Response<ApiBody> {
        let primary = self.store.status().primary();
        let info = serde_json::json!({
            "clusterID": self.cluster_id().unwrap_or_default(),
            "isPrimary": *self.primary.borrow(),
            // The primary takes writes now (not fenced: its lease is confirmed, and it is not
            // waiting out a former primary's fence or handing its lease over).
            "writable": *self.primary.borrow() && self.store.accepts_writes(),
            "candidate": self.candidate,
            "path": self.mount_dir,
            "primary": primary.map(|h| serde_json::json!({ "hostname": h })),
        });
        let mut resp = Response::new(Full::new(Bytes::from(info.to_string())).boxed());
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        resp
    }

    fn metrics(&self) -> Response<ApiBody> {
        let mut out = String::new();
        let dbs = self.store.dbs();
        let status = self.store.status();
        let primary = *self.primary.borrow();
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner()).len();
        let lag = status.lag_ms().map_or(-1.0, |ms| ms as f64 / 1000.0);
        let sizes: Vec<(u64, u64)> = dbs.iter().map(|db| ltx_usage(db.ltx_dir())).collect();
        let node: [(&str, &str, &str, String); 6] = [
            (
                "litefs_db_count",
                "gauge",
                "Number of databases.",
                dbs.iter().filter(|d| d.is_present()).count().to_string(),
            ),
            (
                "litefs_is_primary",
                "gauge",
                "1 if this node is the primary.",
                u8::from(primary).to_string(),
            ),
            (
                "litefs_subscriber_count",
                "gauge",
                "Replicas streaming from this node.",
                streams.to_string(),
            ),
            (
                "litefs_http_stream_count",
                "gauge",
                "Open /stream responses on this node.",
                streams.to_string(),
            ),
            (
                "litefs_lag_seconds",
                "gauge",
                "Replication lag in seconds (-1 before the node is ready).",
                lag.to_string(),
            ),
            (
                "litefs_replica_queued_count",
                "gauge",
                "On a replica, transactions received and waiting to be applied (a local read \
                 transaction holds them up).",
                status.queued_applies().to_string(),
            ),
        ];
        for (name, kind, help, value) in node {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let now = litefs_store::status::now_ms();
        let per_db: [PerDb<'_>; 7] = [
            (
                "litefs_db_txid",
                "gauge",
                "The database's transaction id.",
                &|i| dbs[i].pos().txid.get().to_string(),
            ),
            (
                "litefs_db_published_txid",
                "gauge",
                "The transaction id whose LTX file was written last (what replicas can receive).",
                &|i| dbs[i].published().txid.get().to_string(),
            ),
            (
                "litefs_db_commit_count",
                "counter",
                "Transactions committed or applied since the node started.",
                &|i| dbs[i].commit_count().to_string(),
            ),
            (
                "litefs_db_ltx_count",
                "gauge",
                "LTX files kept for the database.",
                &|i| sizes[i].0.to_string(),
            ),
            (
                "litefs_db_ltx_bytes",
                "gauge",
                "Bytes of the LTX files kept for the database.",
                &|i| sizes[i].1.to_string(),
            ),
            (
                "litefs_db_lag_seconds",
                "gauge",
                "On a replica, seconds since the primary committed the newest transaction applied.",
                &|i| {
                    let ts = dbs[i].timestamp();
                    let lag = if primary || ts == 0 {
                        0.0
                    } else {
                        (now - ts).max(0) as f64 / 1000.0
                    };
                    lag.to_string()
                },
            ),
            (
                "litefs_db_present",
                "gauge",
                "1 while the database exists in the mount.",
                &|i| u8::from(dbs[i].is_present()).to_string(),
            ),
        ];
        for (name, kind, help, value) in per_db {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, db) in dbs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{db=\"{}\"}} {}",
                    escape_label(db.name()),
                    value(i)
                );
            }
        }
        let mut resp = Response::new(Full::new(Bytes::from(out)).boxed());
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        resp
    }
}

/// A per-database metric: name, type, help, and its value for the database at an index.
type PerDb<'a> = (&'a str, &'a str, &'a str, &'a dyn Fn(usize) -> String);

/// How many LTX files a database keeps, and their total size.
fn ltx_usage(dir: &std::path::Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".ltx")))
        .fold((0, 0), |(n, b), e| {
            (n + 1, b + e.metadata().map_or(0, |m| m.len()))
        })
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Asks the primary at `url` to hand its lease to node `me` (`POST /handoff`).
pub(crate) async fn request_handoff(
    url: &str,
    me: NodeId,
    token: Option<&AuthToken>,
) -> Result<(), String> {
    let authority = url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| format!("primary URL {url:?} is not http://host:port"))?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| format!("connect to {url}: timed out"))?
    .map_err(|e| format!("connect to {url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("/handoff?nodeID={me}"))
        .header(hyper::header::HOST, authority)
        .header(ID_HEADER, me.to_string());
    if let Some(token) = token {
        req = req.header(hyper::header::AUTHORIZATION, token.header_value());
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        Ok::<_, String>((status, body))
    };
    let result = tokio::time::timeout(
        HANDOFF_TIMEOUT + std::time::Duration::from_secs(1),
        exchange,
    )
    .await
    .map_err(|_| format!("{url}/handoff: no answer"))?;
    conn.abort();
    let (status, body) = result?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url}/handoff answered {status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of a response built in full.
    fn body(resp: Response<ApiBody>) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(resp.into_body().collect())
            .expect("a full body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn hostile_name_parameters_get_400_naming_the_problem() {
        let long = "a".repeat(10_000);
        for (query, why) in [
            ("name=..", "a `.` or `..` path component"),
            ("name=..%2F..%2Fetc%2Fx", "a `.` or `..` path component"),
            ("name=a%00b", "contains NUL"),
            (&format!("name={long}"), "longer than 1024 bytes"),
            ("name=%2Fetc%2Fx", "an absolute path"),
            ("name=app.db-wal", "ends in -journal"),
            ("name=", "empty"),
            ("name=%zz", "bad percent-encoding"),
            ("other=x", "name required"),
        ] {
            let uri: Uri = format!("/export?{query}").parse().expect("a URI");
            let resp = db_name_param(&uri).expect_err(query);
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query:.40}");
            let msg = body(resp);
            assert!(msg.contains(why), "{query:.40}: {msg}");
            assert!(msg.len() < 300, "{msg:.300}");
        }
        let uri: Uri = "/export?name=a%2Fb".parse().expect("a URI");
        assert_eq!(db_name_param(&uri).ok().as_deref(), Some("a/b"));
    }
}
