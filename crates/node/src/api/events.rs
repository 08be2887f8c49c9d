//! `GET /events`: an NDJSON stream of what happens on this node, in LiteFS's format.
//!
//! The first line is `{"type":"init","data":{"isPrimary":BOOL,"hostname":STRING}}`, then one
//! `{"type":"tx","db":NAME,"data":{"txID":"%016x","postApplyChecksum":"%016x","pageSize":N,
//! "commit":N,"timestamp":RFC3339}}` line per transaction that becomes readable on this node
//! (its LTX file written on the primary, applied on a replica). Events wait in a buffer of 1024;
//! a client that lets it fill is disconnected (the stream ends), as LiteFS does.
//!
//! Differences from LiteFS:
//! - Events are found by comparing each database's published position whenever one moves, and
//!   read from the LTX files: one event per LTX file, as LiteFS sends one per file it applies
//!   (a snapshot that a replica receives is one event). A transaction whose LTX file is already
//!   gone (retention) or that is inside a range file gets no event of its own; the newest one
//!   always gets one, from the database's state if its file is gone.
//! - A database that was deleted gives a `tx` event with `commit` 0, as its LTX file says.
//! - On the primary, `hostname` is the machine's hostname (`/proc/sys/kernel/hostname`): the API
//!   is not told `lease.hostname`. On a replica it is the primary's hostname (`.primary`).
//! - No `primaryChange` events: with the static lease the primary never changes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use litefs_ltx::header::{HEADER_SIZE, TRAILER_SIZE};
use litefs_ltx::{format_filename, Header, PageSize, Pos, Trailer, TXID};
use litefs_store::{Db, FileKind, Store};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::watch;

use super::{text, Api, ApiBody, ChannelBody};

/// Events a client may have waiting before it is disconnected (LiteFS's buffer size).
const EVENT_BUFFER: usize = 1024;

/// Positions of the databases last reported to one client.
type Seen = HashMap<String, Pos>;

impl Api {
    /// `GET /events`.
    pub(super) fn events(self: Arc<Self>) -> Response<ApiBody> {
        let (tx, rx) = mpsc::channel::<Bytes>(EVENT_BUFFER);
        let mut changes = self.changes.clone();
        // Anything published after this moves `changes` again.
        changes.borrow_and_update();
        let seen: Seen = self
            .store
            .dbs()
            .iter()
            .map(|db| (db.name().to_owned(), db.published()))
            .collect();
        let is_primary = *self.primary.borrow();
        let hostname = if is_primary {
            machine_hostname().to_owned()
        } else {
            self.store.status().primary().unwrap_or_default()
        };
        let init = format!(
            "{{\"type\":\"init\",\"data\":{{\"isPrimary\":{is_primary},\"hostname\":{}}}}}\n",
            serde_json::Value::String(hostname)
        );
        if tx.try_send(Bytes::from(init)).is_err() {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "event stream closed");
        }
        self.tracker
            .spawn(self.clone().send_events(tx, changes, seen));
        let mut resp = Response::new(ChannelBody { rx, len: None }.boxed());
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// Sends a client the transactions published after `seen`, until it goes away, its buffer
    /// fills, or the node stops.
    async fn send_events(
        self: Arc<Self>,
        tx: mpsc::Sender<Bytes>,
        mut changes: watch::Receiver<u64>,
        mut seen: Seen,
    ) {
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tx.closed() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            let store = self.store.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                let events = scan(&store, &mut seen);
                (events, seen)
            })
            .await;
            let events;
            (events, seen) = match scanned {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("event scan failed: {e}");
                    return;
                }
            };
            for event in events {
                match tx.try_send(event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(
                            "event stream buffer of {EVENT_BUFFER} exceeded, disconnecting"
                        );
                        return;
                    }
                    Err(TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

/// The machine's hostname, read once.
fn machine_hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

/// The events of every database whose published position moved since `seen` (updated).
fn scan(store: &Store, seen: &mut Seen) -> Vec<Bytes> {
    let mut out = Vec::new();
    for db in store.dbs() {
        let now = db.published();
        let before = seen.get(db.name()).copied().unwrap_or(Pos::ZERO);
        if now == before {
            continue;
        }
        seen.insert(db.name().to_owned(), now);
        let mut last = None;
        let gap = now.txid.get().saturating_sub(before.txid.get());
        if gap > 1 && gap <= EVENT_BUFFER as u64 {
            for t in before.txid.get() + 1..now.txid.get() {
                if let Some((h, t)) = read_ltx_ends(&db, TXID::new(t), TXID::new(t)) {
                    out.push(tx_event(db.name(), &h, &t));
                    last = Some(h.max_txid);
                }
            }
        }
        // The newest: its own file, or the range file that ends with it, or the database.
        let first = match last {
            Some(t) => t.next().unwrap_or(now.txid),
            None => before
                .txid
                .next()
                .filter(|t| *t <= now.txid)
                .unwrap_or(TXID::ONE),
        };
        let found = [now.txid, first, TXID::ONE]
            .into_iter()
            .find_map(|min| read_ltx_ends(&db, min, now.txid));
        match found {
            Some((h, t)) => out.push(tx_event(db.name(), &h, &t)),
            None => out.push(state_event(&db, now)),
        }
    }
    out
}

/// The header and trailer of the LTX file `min-max` of `db`, if it is there and sound.
fn read_ltx_ends(db: &Db, min: TXID, max: TXID) -> Option<(Header, Trailer)> {
    if min > max || min.is_zero() {
        return None;
    }
    let path = db.ltx_dir().join(format_filename(min, max));
    let mut f = File::open(path).ok()?;
    let mut h = [0u8; HEADER_SIZE];
    f.read_exact(&mut h).ok()?;
    let mut t = [0u8; TRAILER_SIZE];
    f.seek(SeekFrom::End(-(TRAILER_SIZE as i64))).ok()?;
    f.read_exact(&mut t).ok()?;
    Some((Header::from_bytes(&h).ok()?, Trailer::from_bytes(&t).ok()?))
}

fn tx_event(db: &str, h: &Header, t: &Trailer) -> Bytes {
    event_line(
        db,
        h.max_txid,
        t.post_apply_checksum,
        h.page_size.get(),
        h.commit,
        h.timestamp,
    )
}

/// An event from the database's state, when its LTX file is gone.
fn state_event(db: &Db, pos: Pos) -> Bytes {
    let mut hdr = [0u8; 18];
    let page_size = match db.read(FileKind::Database, 0, &mut hdr) {
        Ok(18) => {
            let raw = u16::from_be_bytes([hdr[16], hdr[17]]);
            PageSize::new(if raw == 1 { 65536 } else { u32::from(raw) }).map_or(0, PageSize::get)
        }
        _ => 0,
    };
    event_line(
        db.name(),
        pos.txid,
        pos.post_apply_checksum,
        page_size,
        db.page_count(),
        db.timestamp(),
    )
}

fn event_line(
    db: &str,
    txid: TXID,
    checksum: litefs_ltx::Checksum,
    page_size: u32,
    commit: u32,
    timestamp_ms: i64,
) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"tx\",\"db\":{},\"data\":{{\"txID\":\"{txid}\",\"postApplyChecksum\":\"{checksum}\",\
         \"pageSize\":{page_size},\"commit\":{commit},\"timestamp\":\"{}\"}}}}\n",
        serde_json::Value::String(db.to_owned()),
        rfc3339_ms(timestamp_ms)
    ))
}

/// Milliseconds since the epoch as RFC 3339 in UTC, the fraction without trailing zeros (as
/// Go's `time.Time` marshals it).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut frac = String::new();
    if milli != 0 {
        frac = format!(".{milli:03}");
        while frac.ends_with('0') {
            frac.pop();
        }
    }
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_500), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
