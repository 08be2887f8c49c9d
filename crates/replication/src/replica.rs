//! The replica's side of `/stream`: connect to the primary (HTTP/2 without TLS, as LiteFS),
//! send this node's positions, and apply every LTX file that comes back, in order, through an
//! [`Applier`]. One call is one connection; the caller reconnects (with a backoff) after it
//! ends.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use litefs_ltx::NodeId;
use litefs_store::{Applied, Store};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::codec::{CodecError, Event, Frame, PosMap, StreamDecoder};

/// How long connecting to the primary may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the stream may stay silent before the primary counts as gone (it sends a heartbeat
/// every second when it has nothing else to send).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that carries a node's id (`%016X`).
pub const ID_HEADER: &str = "Litefs-Id";
/// The header that carries the cluster id.
pub const CLUSTER_ID_HEADER: &str = "Litefs-Cluster-Id";

/// Applies a received LTX file to a database (blocking: it may wait for local readers).
pub trait Applier: Send + Sync + 'static {
    /// Applies the LTX file at `path` (in the database's LTX folder, which it may move) to
    /// database `name`, creating the database if needed.
    fn apply(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<Applied, Box<dyn std::error::Error + Send + Sync>>;

    /// Applies several received files to database `name`, in order, returning what each
    /// changed until the first failure (and that failure). The default applies them one by
    /// one (writing those received into memory to a file first); an applier may do better
    /// (lock once, sync once, no file to read back).
    fn apply_batch(&self, name: &str, received: Vec<Received>) -> (Vec<Applied>, Option<BoxError>) {
        let mut done = Vec::new();
        for r in received {
            let path = match r {
                Received::File(path) => path,
                Received::Memory { data, spill } => {
                    if let Err(e) = std::fs::write(&spill, &data) {
                        return (done, Some(Box::new(e)));
                    }
                    spill
                }
            };
            match self.apply(name, &path) {
                Ok(a) => done.push(a),
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }
}

/// An error from an [`Applier`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An LTX file as received from the primary.
#[derive(Debug)]
pub enum Received {
    /// Written to this temporary file (in the database's LTX folder).
    File(PathBuf),
    /// Held in memory (a small file); `spill` is where to write it if it must be a file.
    Memory {
        /// The file's bytes.
        data: Vec<u8>,
        /// A temporary path in the database's LTX folder.
        spill: PathBuf,
    },
}

impl Received {
    fn discard(self) {
        if let Received::File(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Received LTX files up to this size stay in memory until applied.
pub const IN_MEMORY_LTX: usize = 1 << 20;

/// The most received files of one database applied together (one lock, one sync).
pub const APPLY_BATCH: usize = 64;

/// Applies to the store alone (no mount to coordinate with).
#[derive(Debug)]
pub struct StoreApplier(pub Arc<Store>);

impl Applier for StoreApplier {
    fn apply(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<Applied, Box<dyn std::error::Error + Send + Sync>> {
        let db = self.0.create_db(name)?;
        Ok(db.apply_ltx(path)?)
    }
}

/// Where and how to follow.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    /// The primary's advertise URL (`http://host:port`).
    pub url: String,
    /// This node's id (the primary refuses its own).
    pub node_id: NodeId,
    /// Only these databases; all when empty (`lease.databases`).
    pub filter: Vec<String>,
    /// This node's cluster id: a primary that names another one is refused.
    pub cluster_id: Option<String>,
    /// `http.auth-token`, sent to the primary.
    pub auth_token: Option<crate::AuthToken>,
}

/// How a connection ended without an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The primary closed the stream (an End frame, or the end of the body).
    Closed,
    /// The primary handed its lease to this node (a Handoff frame with the lease id).
    Handoff(String),
    /// `cancel` fired.
    Cancelled,
}

/// Why following failed.
#[derive(thiserror::Error, Debug)]
pub enum FollowError {
    /// The advertise URL is not `http://host:port`.
    #[error("advertise URL {0:?} is not http://host:port")]
    Url(String),
    /// Connecting or the HTTP exchange failed.
    #[error("connect to {url}")]
    Connect {
        /// The primary.
        url: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The primary answered with an error status.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The primary.
        url: String,
        /// The status.
        status: StatusCode,
        /// The body.
        message: String,
    },
    /// The stream does not decode.
    #[error("bad stream from {url}")]
    Codec {
        /// The primary.
        url: String,
        /// What was wrong.
        #[source]
        source: CodecError,
    },
    /// The primary belongs to another cluster.
    #[error(
        "{url} belongs to cluster {theirs}, this node to cluster {ours}: refusing to replicate"
    )]
    OtherCluster {
        /// The primary.
        url: String,
        /// The primary's cluster id.
        theirs: String,
        /// This node's.
        ours: String,
    },
    /// Nothing came from the primary for too long (it sends a heartbeat every second).
    #[error("nothing from {url} for {after:?}")]
    Silent {
        /// The primary.
        url: String,
        /// How long.
        after: Duration,
    },
    /// A frame names a database that cannot be stored.
    #[error(transparent)]
    Store(#[from] litefs_store::Error),
    /// Writing a received file failed.
    #[error("write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Applying a transaction failed.
    #[error("apply an LTX file to {db}")]
    Apply {
        /// The database.
        db: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `host:port` of an `http://host:port[/]` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let host = rest.trim_end_matches('/');
    (!host.is_empty() && !host.contains('/')).then_some(host)
}

/// This node's positions, as the primary wants them (every database, zero positions included).
pub fn local_positions(store: &Store, filter: &[String]) -> PosMap {
    store
        .dbs()
        .iter()
        .filter(|db| filter.is_empty() || filter.iter().any(|f| f == db.name()))
        .map(|db| (db.name().to_owned(), db.pos()))
        .collect()
}

/// An LTX file being received.
struct Receiving {
    name: String,
    path: PathBuf,
    /// The file, once what was received outgrew memory.
    file: Option<File>,
    data: Vec<u8>,
}

/// Follows the primary at `opts.url` over one connection. Calls `on_ready` once the primary
/// says this node has caught up, and `on_heartbeat` with the primary's clock at every
/// heartbeat and applied transaction.
pub async fn follow(
    store: Arc<Store>,
    opts: &FollowOptions,
    applier: Arc<dyn Applier>,
    on_event: EventHandler,
    cancel: &CancellationToken,
) -> Result<Ended, FollowError> {
    let url = opts.url.clone();
    let addr = authority(&url).ok_or_else(|| FollowError::Url(url.clone()))?;
    let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| FollowError::Connect {
        url: url.clone(),
        source,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|e| connect_err(Box::new(e)))?
        .map_err(|e| connect_err(Box::new(e)))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)),
    )
    .await
    .map_err(|e| connect_err(Box::new(e)))?
    .map_err(|e| connect_err(Box::new(e)))?;
    let conn_task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("stream connection ended: {e}");
        }
    });
    let _abort = AbortOnDrop(conn_task);

    let positions = local_positions(&store, &opts.filter);
    let mut uri = format!("http://{addr}/stream");
    if !opts.filter.is_empty() {
        uri.push_str("?filter=");
        uri.push_str(&opts.filter.join(","));
    }
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(ID_HEADER, opts.node_id.to_string());
    if let Some(token) = &opts.auth_token {
        req = req.header(hyper::header::AUTHORIZATION, token.header_value());
    }
    let req = req
        .body(Full::new(Bytes::from(positions.encode())))
        .map_err(|e| connect_err(Box::new(e)))?;
    // The primary answers with its headers at once; the frames follow.
    let resp = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|e| connect_err(Box::new(e)))?
        .map_err(|e| connect_err(Box::new(e)))?;
    let status = resp.status();
    let resp_cluster_id = resp
        .headers()
        .get(CLUSTER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let message = match body.collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        return Err(FollowError::Status {
            url,
            status,
            message,
        });
    }
    if let (Some(ours), Some(theirs)) = (
        &opts.cluster_id,
        resp_cluster_id.as_deref().filter(|c| !c.is_empty()),
    ) {
        if ours != theirs {
            return Err(FollowError::OtherCluster {
                url,
                theirs: theirs.to_owned(),
                ours: ours.clone(),
            });
        }
    }
    tracing::info!(primary = %url, "connected to the primary");

    let mut decoder = StreamDecoder::new();
    let mut receiving: Option<Receiving> = None;
    let mut received: u64 = 0;
    // Received files are applied in order by a worker, so that a local reader holding up an
    // apply does not hold up receiving (up to APPLY_QUEUE files).
    let (queue_tx, queue_rx) = tokio::sync::mpsc::channel::<Item>(APPLY_QUEUE);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let applier = applier.clone();
        let stop = stop.clone();
        let on_event = on_event.clone();
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            apply_worker(
                queue_rx,
                done_tx,
                &*applier,
                &*on_event,
                store.status(),
                &stop,
            )
        })
    };
    let mut queue_tx = Some(queue_tx);
    let result = loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => break Ok(Ended::Cancelled),
            done = done_rx.recv() => {
                match done {
                    Some(Done::Failed(name, source)) => {
                        break Err(FollowError::Apply { db: name, source });
                    }
                    None => break Ok(Ended::Closed),
                }
            }
            frame = tokio::time::timeout(SILENCE_TIMEOUT, body.frame()) => match frame {
                Ok(f) => f,
                Err(_) => break Err(FollowError::Silent { url: url.clone(), after: SILENCE_TIMEOUT }),
            },
        };
        let Some(frame) = frame else {
            if let Err(source) = decoder.finish() {
                break Err(FollowError::Codec {
                    url: url.clone(),
                    source,
                });
            }
            break Ok(Ended::Closed);
        };
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => break Err(connect_err(Box::new(e))),
        };
        decoder.feed(&data);
        let handled = handle_events(
            &mut decoder,
            &store,
            opts,
            &url,
            &mut receiving,
            &mut received,
            &mut queue_tx,
        )
        .await;
        match handled {
            Ok(None) => {}
            Ok(Some(ended)) => break Ok(ended),
            Err(e) => break Err(e),
        }
    };
    // Nothing more is received. On a clean end, what was received is applied before
    // returning (the next connection sends this node's positions); otherwise it is dropped.
    if let Some(r) = receiving.take() {
        if r.file.is_some() {
            let _ = std::fs::remove_file(&r.path);
        }
    }
    if !matches!(result, Ok(Ended::Closed | Ended::Handoff(_))) {
        stop.store(true, std::sync::atomic::Ordering::Release);
    }
    drop(queue_tx);
    let mut result = result;
    while let Some(Done::Failed(name, source)) = done_rx.recv().await {
        if result.is_ok() {
            result = Err(FollowError::Apply { db: name, source });
        }
    }
    let _ = worker.await;
    store.status().clear_queued();
    result
}

/// How many received LTX files may wait to be applied.
pub const APPLY_QUEUE: usize = 256;

/// Work for the apply worker, in stream order.
enum Item {
    Apply { name: String, received: Received },
    Ready,
    Heartbeat(i64),
}

/// What the apply worker reports back to the stream: only a failure (the rest goes to the
/// event handler, from the worker's thread).
enum Done {
    Failed(String, Box<dyn std::error::Error + Send + Sync>),
}

/// Told what happens on a stream, in order, from the thread that applies transactions.
pub type EventHandler = Arc<dyn Fn(FollowEvent<'_>) + Send + Sync>;

fn apply_worker(
    mut queue: tokio::sync::mpsc::Receiver<Item>,
    done: tokio::sync::mpsc::UnboundedSender<Done>,
    applier: &dyn Applier,
    on_event: &(dyn Fn(FollowEvent<'_>) + Send + Sync),
    status: &litefs_store::Status,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut failed = false;
    let mut next: Option<Item> = None;
    loop {
        let item = match next.take() {
            Some(item) => item,
            None => match queue.blocking_recv() {
                Some(item) => item,
                None => return,
            },
        };
        let stopping = failed || stop.load(std::sync::atomic::Ordering::Acquire);
        let out = match item {
            Item::Apply { received, .. } if stopping => {
                received.discard();
                status.add_queued(-1);
                continue;
            }
            Item::Apply { name, received } => {
                // What else is waiting for the same database goes with it.
                let mut batch = vec![received];
                while batch.len() < APPLY_BATCH {
                    match queue.try_recv() {
                        Ok(Item::Apply { name: n, received }) if n == name => batch.push(received),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let taken = i64::try_from(batch.len()).unwrap_or(i64::MAX);
                let (applied, err) = applier.apply_batch(&name, batch);
                status.add_queued(-taken);
                for a in applied {
                    tracing::debug!(db = %name, pos = %a.pos, snapshot = a.snapshot, "applied");
                    on_event(FollowEvent::Applied {
                        name: &name,
                        applied: &a,
                    });
                }
                match err {
                    None => continue,
                    Some(e) => {
                        failed = true;
                        Done::Failed(name, e)
                    }
                }
            }
            Item::Ready if !stopping => {
                on_event(FollowEvent::Ready);
                continue;
            }
            Item::Heartbeat(ts) if !stopping => {
                on_event(FollowEvent::Heartbeat { timestamp_ms: ts });
                continue;
            }
            Item::Ready | Item::Heartbeat(_) => continue,
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

/// Queues `item` for the apply worker; gives it back if the queue is gone.
async fn enqueue_item(
    queue: &Option<tokio::sync::mpsc::Sender<Item>>,
    item: Item,
) -> Result<(), tokio::sync::mpsc::error::SendError<Item>> {
    match queue.as_ref() {
        Some(q) => q.send(item).await,
        None => Err(tokio::sync::mpsc::error::SendError(item)),
    }
}

/// Handles the events decoded so far. Returns how the stream ended, if it did.
async fn handle_events(
    decoder: &mut StreamDecoder,
    store: &Arc<Store>,
    opts: &FollowOptions,
    url: &str,
    receiving: &mut Option<Receiving>,
    received: &mut u64,
    queue: &mut Option<tokio::sync::mpsc::Sender<Item>>,
) -> Result<Option<Ended>, FollowError> {
    let enqueue = |item: Item| async {
        match queue.as_ref() {
            Some(q) => q.send(item).await.is_ok(),
            None => false,
        }
    };
    while let Some(event) = decoder.next().map_err(|source| FollowError::Codec {
        url: url.to_owned(),
        source,
    })? {
        match event {
            Event::Frame(Frame::Ltx { name }) => {
                litefs_store::validate_name(&name)?;
                if !opts.filter.is_empty() && !opts.filter.contains(&name) {
                    tracing::warn!(db = %name, "the primary sent a database outside the filter");
                }
                let db = store.create_db(&name)?;
                *received += 1;
                let path = db.ltx_dir().join(format!("receiving-{received}.tmp"));
                *receiving = Some(Receiving {
                    name,
                    path,
                    file: None,
                    data: Vec::new(),
                });
            }
            Event::LtxData(bytes) => {
                if let Some(r) = receiving.as_mut() {
                    let write_err = |source| FollowError::Write {
                        path: r.path.clone(),
                        source,
                    };
                    if r.file.is_none() && r.data.len() + bytes.len() > IN_MEMORY_LTX {
                        // Large (a snapshot): to disk as it arrives.
                        let mut f = File::create(&r.path).map_err(write_err)?;
                        f.write_all(&r.data).map_err(write_err)?;
                        r.data = Vec::new();
                        r.file = Some(f);
                    }
                    match r.file.as_mut() {
                        Some(f) => f.write_all(&bytes).map_err(write_err)?,
                        None => r.data.extend_from_slice(&bytes),
                    }
                }
            }
            Event::LtxEnd => {
                let Some(r) = receiving.take() else {
                    continue;
                };
                let received = match r.file {
                    Some(f) => {
                        drop(f);
                        Received::File(r.path)
                    }
                    None => Received::Memory {
                        data: r.data,
                        spill: r.path,
                    },
                };
                store.status().add_queued(1);
                if let Err(tokio::sync::mpsc::error::SendError(Item::Apply { received, .. })) =
                    enqueue_item(
                        queue,
                        Item::Apply {
                            name: r.name,
                            received,
                        },
                    )
                    .await
                {
                    received.discard();
                    store.status().add_queued(-1);
                }
            }
            Event::Frame(Frame::Ready) => {
                enqueue(Item::Ready).await;
            }
            Event::Frame(Frame::Heartbeat { timestamp_ms }) => {
                enqueue(Item::Heartbeat(timestamp_ms)).await;
            }
            Event::Frame(Frame::End) => return Ok(Some(Ended::Closed)),
            Event::Frame(Frame::Handoff { lease_id }) => return Ok(Some(Ended::Handoff(lease_id))),
            Event::Frame(Frame::Hwm { .. } | Frame::DropDb { .. }) => {}
        }
    }
    Ok(None)
}

/// What happened on a stream, for the caller's bookkeeping.
#[derive(Debug)]
pub enum FollowEvent<'a> {
    /// The primary says this node has caught up.
    Ready,
    /// The primary's clock.
    Heartbeat {
        /// Milliseconds since the epoch.
        timestamp_ms: i64,
    },
    /// A transaction was applied.
    Applied {
        /// The database.
        name: &'a str,
        /// What changed.
        applied: &'a Applied,
    },
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_urls_give_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:20202"), Some("127.0.0.1:20202"));
        assert_eq!(
            authority("http://host.vm.app.internal:20202/"),
            Some("host.vm.app.internal:20202")
        );
        assert_eq!(authority("https://x:1"), None);
        assert_eq!(authority("http://"), None);
        assert_eq!(authority("http://x:1/stream"), None);
    }

    /// What `handle_events` makes of one LTX frame named `name` from the primary.
    fn receive_frame_named(store: &Arc<Store>, name: &str) -> Result<(), FollowError> {
        let mut decoder = StreamDecoder::new();
        decoder.feed(&Frame::Ltx { name: name.into() }.to_bytes());
        let opts = FollowOptions {
            url: "http://127.0.0.1:1".into(),
            node_id: NodeId::new(1),
            filter: Vec::new(),
            cluster_id: None,
            auth_token: None,
        };
        let (mut receiving, mut received) = (None, 0);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let mut queue = Some(tx);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(handle_events(
                &mut decoder,
                store,
                &opts,
                &opts.url,
                &mut receiving,
                &mut received,
                &mut queue,
            ))
            .map(|_| ())
    }

    #[test]
    fn frames_for_hostile_names_are_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let data = tmp.path().join("data");
        let store = Arc::new(
            Store::open(litefs_store::StoreOptions {
                data_dir: data.clone(),
                compress: false,
                strict_verify: true,
                adopt: Vec::new(),
                retention_max_size: 0,
            })
            .expect("open the store"),
        );
        let listing = || {
            let mut all: Vec<_> = std::fs::read_dir(data.join("dbs"))
                .expect("list dbs")
                .map(|e| e.expect("an entry").file_name())
                .collect();
            all.sort();
            all
        };
        let before = listing();
        for name in [
            "..",
            "../../etc/x",
            "a\0b",
            "/etc/x",
            "a/../../x",
            "app.db-wal",
        ] {
            match receive_frame_named(&store, name) {
                Err(FollowError::Store(litefs_store::Error::InvalidName(..))) => {}
                other => panic!("{name:?}: {other:?}"),
            }
        }
        // Longer than the decoder takes: refused before it is a name.
        match receive_frame_named(&store, &"a".repeat(10_000)) {
            Err(FollowError::Codec { .. }) => {}
            other => panic!("10 000 bytes: {other:?}"),
        }
        assert_eq!(listing(), before);
        assert!(store.dbs().is_empty());
        assert!(!tmp.path().join("etc").exists());
        // A database in a subdirectory is a name like any other.
        receive_frame_named(&store, "a/b").expect("a/b");
        assert!(store.db("a/b").is_some());
    }
}
