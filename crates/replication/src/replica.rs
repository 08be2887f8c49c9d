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
}

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
    file: File,
}

/// Follows the primary at `opts.url` over one connection. Calls `on_ready` once the primary
/// says this node has caught up, and `on_heartbeat` with the primary's clock at every
/// heartbeat and applied transaction.
pub async fn follow(
    store: Arc<Store>,
    opts: &FollowOptions,
    applier: Arc<dyn Applier>,
    mut on_event: impl FnMut(FollowEvent<'_>) + Send,
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
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
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
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(ID_HEADER, opts.node_id.to_string())
        .body(Full::new(Bytes::from(positions.encode())))
        .map_err(|e| connect_err(Box::new(e)))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| connect_err(Box::new(e)))?;
    let status = resp.status();
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
    tracing::info!(primary = %url, "connected to the primary");

    let mut decoder = StreamDecoder::new();
    let mut receiving: Option<Receiving> = None;
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => return Ok(Ended::Cancelled),
            frame = body.frame() => frame,
        };
        let Some(frame) = frame else {
            decoder.finish().map_err(|source| FollowError::Codec {
                url: url.clone(),
                source,
            })?;
            return Ok(Ended::Closed);
        };
        let frame = frame.map_err(|e| connect_err(Box::new(e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        decoder.feed(&data);
        while let Some(event) = decoder.next().map_err(|source| FollowError::Codec {
            url: url.clone(),
            source,
        })? {
            match event {
                Event::Frame(Frame::Ltx { name }) => {
                    litefs_store::validate_name(&name)?;
                    if !opts.filter.is_empty() && !opts.filter.contains(&name) {
                        tracing::warn!(db = %name, "the primary sent a database outside the filter");
                    }
                    let db = store.create_db(&name)?;
                    let path = db.ltx_dir().join("receiving.tmp");
                    let file = File::create(&path).map_err(|source| FollowError::Write {
                        path: path.clone(),
                        source,
                    })?;
                    receiving = Some(Receiving { name, path, file });
                }
                Event::LtxData(bytes) => {
                    if let Some(r) = receiving.as_mut() {
                        r.file
                            .write_all(&bytes)
                            .map_err(|source| FollowError::Write {
                                path: r.path.clone(),
                                source,
                            })?;
                    }
                }
                Event::LtxEnd => {
                    let Some(r) = receiving.take() else {
                        continue;
                    };
                    drop(r.file);
                    let applier = applier.clone();
                    let (name, path) = (r.name.clone(), r.path.clone());
                    let applied = tokio::task::spawn_blocking(move || applier.apply(&name, &path))
                        .await
                        .map_err(|e| FollowError::Apply {
                            db: r.name.clone(),
                            source: Box::new(e),
                        })?
                        .map_err(|source| FollowError::Apply {
                            db: r.name.clone(),
                            source,
                        })?;
                    tracing::debug!(db = %r.name, pos = %applied.pos, snapshot = applied.snapshot, "applied");
                    on_event(FollowEvent::Applied {
                        name: &r.name,
                        applied: &applied,
                    });
                }
                Event::Frame(Frame::Ready) => on_event(FollowEvent::Ready),
                Event::Frame(Frame::Heartbeat { timestamp_ms }) => {
                    on_event(FollowEvent::Heartbeat { timestamp_ms })
                }
                Event::Frame(Frame::End) => return Ok(Ended::Closed),
                Event::Frame(Frame::Handoff { lease_id }) => return Ok(Ended::Handoff(lease_id)),
                Event::Frame(Frame::Hwm { .. } | Frame::DropDb { .. }) => {}
            }
        }
    }
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
}
