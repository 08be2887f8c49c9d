//! The HTTP proxy in front of the application (LiteFS's `proxy` section).
//!
//! - `GET /litefs/health`: 200 `OK`, or 503 when replication lags more than `max-lag`.
//! - A path matching a `passthrough` pattern goes straight to the application.
//! - `GET` and `HEAD` are reads, and so is a CORS preflight (`OPTIONS` with
//!   `Access-Control-Request-Method`, which LiteFS treats as a write); a path matching an
//!   `always-forward` pattern is a write whatever its method; every other request is a write.
//! - A read with the `__txid` cookie waits until the local databases have reached the
//!   transactions it names (up to 5 s, then 504), so a client always reads its own writes.
//! - A write on the primary goes to the application, and the response sets `__txid`: as in
//!   LiteFS, the transaction id of `proxy.db` after it (16 hex digits); when the write moved
//!   other databases too (or only others), `name:txid` for each, joined by `&` (names
//!   percent-encoded), which only litefs-rs's proxy reads. On a replica it is answered with
//!   `fly-replay: instance=<primary's hostname>`, which Fly.io's edge replays on the primary.
//!   With no known primary it waits up to `primary-redirect-timeout`, then answers 503.
//!
//! Bodies are streamed both ways, frame by frame (no size limit, server-sent events flushed as
//! they come), and upgrades (WebSocket) pass through. `X-Forwarded-For` and
//! `X-Forwarded-Proto` are set.
//!
//! When the application does not accept the connection, the client gets 502 with
//! `Proxy error: the application is unreachable at <target>: <reason>`. How long a request
//! first retries a refused connection depends on what the proxy knows of the application:
//!
//! - While it is starting (litefs-rs started it with `exec`, and it has not accepted a
//!   connection yet), a request waits for it up to [`ProxyOptions::target_start_wait`]
//!   (30 s, as LiteFS waits for every request), so the first requests after a start are served
//!   rather than refused.
//! - Otherwise (it was reached before and stopped listening, it is not litefs-rs's to start,
//!   or it did not come up within the start wait) nothing is listening: a request waits only
//!   [`ProxyOptions::target_down_wait`] (1 s, enough for a quick restart), then gets its 502.
//!   LiteFS holds every such request for 30 s, which looks like a hung site.
//!
//! A write a replica forwards to the primary's proxy (`proxy.forward`) gets the short wait
//! too, and 502 naming the primary's proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, COOKIE, HOST, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use litefs_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The cookie carrying the client's last write's transaction id (16 hex digits).
pub const TXID_COOKIE: &str = "__txid";
/// Marks a request a replica's proxy forwarded to the primary's.
const FORWARDED_HEADER: &str = "litefs-forwarded";
/// How long the cookie lives.
const COOKIE_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a read waits for the local database to reach the client's transaction.
pub const TXID_WAIT: Duration = Duration::from_secs(5);
/// How long a request waits for an application that is starting (LiteFS's dial timeout).
pub const TARGET_START_WAIT: Duration = Duration::from_secs(30);
/// How long a request waits for an application that refuses connections otherwise.
pub const TARGET_DOWN_WAIT: Duration = Duration::from_secs(1);
/// The application has not accepted a connection yet.
const APP_STARTING: u8 = 0;
/// The application accepted the last connection.
const APP_UP: u8 = 1;
/// The application refused connections for a whole wait.
const APP_DOWN: u8 = 2;

/// The proxy's settings (`proxy.*`).
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// `proxy.target`: the application's `host:port`.
    pub target: String,
    /// `proxy.db`: the database whose transaction id is tracked per client.
    pub db: String,
    /// `proxy.max-lag` (zero: no check).
    pub max_lag: Duration,
    /// `proxy.passthrough` patterns.
    pub passthrough: Vec<String>,
    /// `proxy.always-forward` patterns.
    pub always_forward: Vec<String>,
    /// `proxy.primary-redirect-timeout`.
    pub primary_redirect_timeout: Duration,
    /// `proxy.debug`: log every request.
    pub debug: bool,
    /// `proxy.forward`: on a replica, forward writes to the primary's proxy instead of
    /// answering `fly-replay`.
    pub forward: bool,
    /// Until the application first accepts a connection, how long a request retries a refused
    /// connection ([`TARGET_START_WAIT`] when litefs-rs starts the application).
    pub target_start_wait: Duration,
    /// After that, or for the primary's proxy, how long a request retries a refused
    /// connection before the 502 ([`TARGET_DOWN_WAIT`]).
    pub target_down_wait: Duration,
}

/// Why the proxy could not start.
#[derive(thiserror::Error, Debug)]
pub enum ProxyError {
    /// The address could not be bound.
    #[error("listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// `*` matches any run of characters; everything else matches itself; the whole path must
/// match.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == path;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut tail) = path.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = rest.split_last().map_or(("", &[][..]), |(l, m)| (*l, m));
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// What a `__txid` cookie asks a read to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    /// LiteFS's form, 16 hex digits: this transaction of `proxy.db`.
    Tracked(u64),
    /// `name:txid` pairs joined by `&`, names percent-encoded: the write touched several
    /// databases (or another than `proxy.db`).
    Each(Vec<(String, u64)>),
}

/// Percent-encodes a database name for the cookie (cookie values allow no space, comma,
/// semicolon, quote or backslash; `:` and `&` separate the parts).
fn cookie_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn cookie_name_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The cookie value for `touched` (name, TXID) after a write, `proxy.db` being `tracked`.
fn cookie_value(tracked: &str, touched: &[(String, u64)]) -> Option<String> {
    match touched {
        [] => None,
        [(name, txid)] if name == tracked => Some(format!("{txid:016x}")),
        _ => Some(
            touched
                .iter()
                .map(|(name, txid)| format!("{}:{txid:016x}", cookie_name(name)))
                .collect::<Vec<_>>()
                .join("&"),
        ),
    }
}

fn parse_wanted(v: &str) -> Option<Wanted> {
    let v = v.trim();
    if !v.contains(':') {
        return u64::from_str_radix(v, 16).ok().map(Wanted::Tracked);
    }
    v.split('&')
        .map(|part| {
            let (name, txid) = part.rsplit_once(':')?;
            // A name no database can have makes the cookie invalid (the request is not held).
            let name = cookie_name_decode(name)?;
            litefs_store::validate_name(&name).ok()?;
            Some((name, u64::from_str_radix(txid, 16).ok()?))
        })
        .collect::<Option<Vec<_>>>()
        .map(Wanted::Each)
}

/// The `__txid` cookie's value, if the request carries a valid one.
fn txid_cookie(req: &Request<Incoming>) -> Option<Wanted> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == TXID_COOKIE)
        .and_then(|(_, v)| parse_wanted(v))
}

fn text(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

/// What the proxy serves from.
#[derive(Debug)]
struct Proxy {
    store: Arc<Store>,
    primary: watch::Receiver<bool>,
    /// The primary's proxy (`http://host:port`), when it advertises one.
    primary_proxy: watch::Receiver<Option<String>>,
    opts: ProxyOptions,
    /// What the proxy knows of the application: [`APP_STARTING`], [`APP_UP`], [`APP_DOWN`].
    app: AtomicU8,
    /// Kept-alive connections to each target (the application, the primary's proxy), reused
    /// once their previous response has been read.
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<Sender>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// How many connections to one target are kept for reuse.
const KEEP_CONNECTIONS: usize = 64;

impl Proxy {
    fn is_write(&self, req: &Request<Incoming>) -> bool {
        let path = req.uri().path();
        if self.opts.always_forward.iter().any(|p| glob_match(p, path)) {
            return true;
        }
        match *req.method() {
            Method::GET | Method::HEAD => false,
            // A CORS preflight only asks what is allowed.
            Method::OPTIONS => !req.headers().contains_key("access-control-request-method"),
            _ => true,
        }
    }

    fn txid_of(&self, name: &str) -> Option<u64> {
        let db = self.store.db(name)?;
        db.is_present().then(|| db.pos().txid.get())
    }

    /// The TXID of every database here.
    fn positions(&self) -> Vec<(String, u64)> {
        self.store
            .dbs()
            .iter()
            .filter(|db| db.is_present())
            .map(|db| (db.name().to_owned(), db.pos().txid.get()))
            .collect()
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let path = req.uri().path().to_owned();
        if self.opts.debug {
            tracing::info!(method = %req.method(), %path, %peer, "proxy request");
        }
        if self.opts.passthrough.iter().any(|p| glob_match(p, &path)) {
            return self.forward(req, peer, false).await;
        }
        if self.opts.forward
            && req.headers().contains_key(FORWARDED_HEADER)
            && *self.primary.borrow()
        {
            // Forwarded by a replica's proxy: a write, whatever it looks like.
            return self.forward(req, peer, true).await;
        }
        if req.method() == Method::GET && path == "/litefs/health" {
            let lag = self.store.status().lag_ms();
            let max = self.opts.max_lag;
            if !max.is_zero() && lag.is_none_or(|l| l as u128 > max.as_millis()) {
                return text(StatusCode::SERVICE_UNAVAILABLE, "Replication lag exceeded");
            }
            return text(StatusCode::OK, "OK");
        }
        if !self.is_write(&req) {
            if let Some(want) = txid_cookie(&req) {
                if !self.wait_txids(&want).await {
                    return text(StatusCode::GATEWAY_TIMEOUT, "Proxy timeout");
                }
            }
            return self.forward(req, peer, false).await;
        }
        // A write: the primary takes it; a replica sends it there.
        let deadline = tokio::time::Instant::now() + self.opts.primary_redirect_timeout;
        loop {
            if *self.primary.borrow() {
                return self.forward(req, peer, true).await;
            }
            if self.opts.forward {
                let url = self.primary_proxy.borrow().clone();
                if let Some(authority) = url.as_deref().and_then(|u| u.strip_prefix("http://")) {
                    let authority = authority.trim_end_matches('/').to_owned();
                    // The primary's proxy answers, cookie included.
                    return self.forward_to(&authority, req, peer, false).await;
                }
            }
            if let Some(host) = self.store.status().primary() {
                let mut resp = text(StatusCode::OK, "");
                *resp.body_mut() = Full::new(Bytes::new())
                    .map_err(|e: Infallible| match e {})
                    .boxed();
                if let Ok(v) = HeaderValue::from_str(&format!("instance={host}")) {
                    resp.headers_mut().insert("fly-replay", v);
                }
                return resp;
            }
            if tokio::time::Instant::now() >= deadline {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Proxy error: no primary available",
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every database the cookie names (that exists here) reaches its
    /// transaction; false after [`TXID_WAIT`].
    async fn wait_txids(&self, want: &Wanted) -> bool {
        let deadline = tokio::time::Instant::now() + TXID_WAIT;
        let reached = |name: &str, txid: u64| {
            txid == 0
                || self.store.db(name).is_none_or(|db| !db.is_present())
                || self.txid_of(name).is_some_and(|t| t >= txid)
        };
        loop {
            let done = match want {
                Wanted::Tracked(txid) => reached(&self.opts.db, *txid),
                Wanted::Each(list) => list.iter().all(|(name, txid)| reached(name, *txid)),
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends the request to the application and streams its response back; after a write,
    /// sets the `__txid` cookie.
    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        write: bool,
    ) -> Response<ProxyBody> {
        let target = self.opts.target.clone();
        self.forward_to(&target, req, peer, write).await
    }

    /// Sends the request to `target` (`host:port`: the application, or the primary's proxy)
    /// and streams the response back.
    async fn forward_to(
        &self,
        target: &str,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        write: bool,
    ) -> Response<ProxyBody> {
        if target != self.opts.target {
            req.headers_mut()
                .insert(FORWARDED_HEADER, HeaderValue::from_static("1"));
        }
        let headers = req.headers_mut();
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            headers.insert("x-forwarded-for", v);
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
        if !headers.contains_key(HOST) {
            if let Ok(v) = HeaderValue::from_str(&self.opts.target) {
                headers.insert(HOST, v);
            }
        }
        // An upgrade (WebSocket): both sides switch protocols, then bytes are copied both ways.
        let client_upgrade = req
            .headers()
            .contains_key(hyper::header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        // The databases the write touches: those whose position moves while it runs.
        let before = write.then(|| self.positions());
        let mut resp = match self.send(target, req).await {
            Ok(resp) => resp,
            Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("Proxy error: {e}")),
        };
        if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
            let app = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client, app) {
                    Ok((client, app)) => {
                        let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut app).await {
                            tracing::debug!("upgraded connection ended: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
            });
        }
        let mut resp = resp.map(|b| b.boxed());
        if let Some(before) = before {
            // `proxy.db` always (alone, the cookie is LiteFS's), and every database that
            // moved meanwhile. Another request's write may be taken for this one's: the read
            // then waits for a little more than it needs.
            let mut touched: Vec<(String, u64)> = self
                .positions()
                .into_iter()
                .filter(|(name, txid)| {
                    name == &self.opts.db || before.iter().all(|(n, t)| n != name || t < txid)
                })
                .collect();
            touched.sort();
            if let Some(value) = cookie_value(&self.opts.db, &touched) {
                let cookie = format!(
                    "{TXID_COOKIE}={value}; Path=/; Max-Age={}; HttpOnly",
                    COOKIE_MAX_AGE.as_secs()
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().append(SET_COOKIE, v);
                }
            }
        }
        resp
    }

    /// How long a request retries a refused connection to `target`.
    fn connect_wait(&self, target: &str) -> Duration {
        if target == self.opts.target && self.app.load(Ordering::Relaxed) == APP_STARTING {
            self.opts.target_start_wait
        } else {
            self.opts.target_down_wait
        }
    }

    /// Connects to `target`, retrying a refused connection for [`Proxy::connect_wait`].
    async fn connect(&self, target: &str) -> Result<tokio::net::TcpStream, String> {
        let app = target == self.opts.target;
        let wait = self.connect_wait(target);
        let deadline = tokio::time::Instant::now() + wait;
        let result = loop {
            // Each attempt is bounded too (by what is left of the wait, at least 1 s), so an
            // address that drops connection attempts does not hold the request for minutes.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = left.max(Duration::from_secs(1));
            match tokio::time::timeout(attempt, tokio::net::TcpStream::connect(target)).await {
                Ok(Ok(t)) => break Ok(t),
                Ok(Err(e))
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => break Err(e.to_string()),
                Err(_) => break Err(format!("no connection after {attempt:?}")),
            }
        };
        let what = if app {
            "the application"
        } else {
            "the primary's proxy"
        };
        match result {
            Ok(tcp) => {
                if app && self.app.swap(APP_UP, Ordering::Relaxed) == APP_DOWN {
                    tracing::info!(%target, "the application accepts connections again");
                }
                Ok(tcp)
            }
            Err(e) => {
                if app && self.app.swap(APP_DOWN, Ordering::Relaxed) != APP_DOWN {
                    tracing::warn!(%target, "the application is unreachable ({e}); requests get 502");
                }
                Err(format!(
                    "{what} is unreachable at {target}: {e} (waited {wait:?})"
                ))
            }
        }
    }

    /// A kept-alive connection to `target` that can take a request now, if there is one.
    fn reuse(&self, target: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(target)?;
        list.retain(|s| !s.is_closed());
        let i = list.iter().position(Sender::is_ready)?;
        Some(list.swap_remove(i))
    }

    /// Keeps `sender` for the next requests (it is ready again once its response is read).
    fn keep(&self, target: &str, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(target.to_owned()).or_default();
        if list.len() < KEEP_CONNECTIONS {
            list.push(sender);
        }
    }

    async fn send(
        &self,
        target: &str,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, String> {
        // An upgraded connection is taken over by the upgrade: never shared.
        let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
        if !upgrade {
            while let Some(mut sender) = self.reuse(target) {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.keep(target, sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        // Not sent (the connection had just closed): another one.
                        Some(back) => req = back,
                        None => return Err(format!("no answer from {target}: {}", e.error())),
                    },
                }
            }
        }
        let tcp = self.connect(target).await?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("connection to the application ended: {e}");
            }
        });
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("no answer from {target}: {e}"))?;
        if !upgrade {
            self.keep(target, sender);
        }
        Ok(resp)
    }
}

/// Binds `addr` (`:8080` means every interface) and serves until `cancel` fires.
pub async fn serve(
    addr: &str,
    store: Arc<Store>,
    primary: watch::Receiver<bool>,
    primary_proxy: watch::Receiver<Option<String>>,
    opts: ProxyOptions,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), ProxyError> {
    let bind = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    };
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|source| ProxyError::Listen {
            addr: bind.clone(),
            source,
        })?;
    tracing::info!(addr = %bind, target = %opts.target, "proxy listening");
    let proxy = Arc::new(Proxy {
        store,
        primary,
        primary_proxy,
        opts,
        app: AtomicU8::new(APP_STARTING),
        idle: std::sync::Mutex::default(),
    });
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("proxy accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::select! {
                () = cancel.cancelled() => {}
                res = conn => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, "proxy connection ended: {e}");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_names_every_database_a_write_touched() {
        let one = vec![("app.db".to_owned(), 5)];
        assert_eq!(
            cookie_value("app.db", &one).as_deref(),
            Some("0000000000000005")
        );
        assert_eq!(parse_wanted("0000000000000005"), Some(Wanted::Tracked(5)));
        let two = vec![("app.db".to_owned(), 5), ("sub/x y;z".to_owned(), 0x1f)];
        let v = cookie_value("app.db", &two).unwrap();
        assert_eq!(v, "app.db:0000000000000005&sub/x%20y%3Bz:000000000000001f");
        assert!(!v.contains([' ', ',', ';', '"', '\\']));
        assert_eq!(parse_wanted(&v), Some(Wanted::Each(two)));
        let other = vec![("other.db".to_owned(), 2)];
        assert_eq!(
            parse_wanted(&cookie_value("app.db", &other).unwrap()),
            Some(Wanted::Each(other))
        );
        assert_eq!(cookie_value("app.db", &[]), None);
        assert_eq!(parse_wanted("xyz"), None);
        assert_eq!(parse_wanted("a:zz"), None);
        assert_eq!(parse_wanted("a%2:01"), None);
    }

    #[test]
    fn cookies_naming_hostile_databases_are_ignored() {
        let long = "a".repeat(10_000);
        for bad in ["..", "a%00b", long.as_str(), "..%2F..%2Fx", "%2Fetc"] {
            assert_eq!(parse_wanted(&format!("{bad}:01")), None, "{bad:.40}");
            assert_eq!(
                parse_wanted(&format!("app.db:01&{bad}:02")),
                None,
                "{bad:.40}"
            );
        }
        assert_eq!(
            parse_wanted("a%2Fb:01"),
            Some(Wanted::Each(vec![("a/b".to_owned(), 1)]))
        );
    }

    #[test]
    fn globs_match_whole_paths_with_stars() {
        assert!(glob_match("/static/*", "/static/app.js"));
        assert!(glob_match("*.png", "/img/a.png"));
        assert!(glob_match("/a/*/c", "/a/b/c"));
        assert!(glob_match("/exact", "/exact"));
        assert!(!glob_match("/exact", "/exact/more"));
        assert!(!glob_match("/static/*", "/other/static/x"));
        assert!(!glob_match("*.png", "/img/a.png.txt"));
        assert!(glob_match("*", "/anything"));
        assert!(!glob_match("/a*a", "/a"));
    }
}

/// The `__txid` cookie's decoder and encoder, for the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{cookie_value, parse_wanted, Wanted};

    /// What a `__txid` cookie value says.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Cookie {
        /// LiteFS's form: this transaction of `proxy.db`.
        Tracked(u64),
        /// `(name, txid)` pairs.
        Each(Vec<(String, u64)>),
    }

    /// Parses a cookie value as a request's is parsed.
    pub fn parse(value: &str) -> Option<Cookie> {
        parse_wanted(value).map(|w| match w {
            Wanted::Tracked(t) => Cookie::Tracked(t),
            Wanted::Each(v) => Cookie::Each(v),
        })
    }

    /// The cookie value a write that moved `touched` sets, `proxy.db` being `tracked`.
    pub fn encode(tracked: &str, touched: &[(String, u64)]) -> Option<String> {
        cookie_value(tracked, touched)
    }
}
