//! What this node knows of its place in the cluster, shared by the mount (`.primary`, `.lag`)
//! and whoever runs replication.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// `primary_timestamp` before the node is ready.
pub const NOT_READY: i64 = -1;

/// The node's role and lag.
#[derive(Debug)]
pub struct Status {
    /// The primary's hostname, while this node is a replica that knows it.
    primary: RwLock<Option<String>>,
    /// [`NOT_READY`], 0 on the primary, else the primary's clock (ms since the epoch) at its
    /// last heartbeat or transaction seen.
    primary_timestamp: AtomicI64,
    /// Transactions received from the primary and not applied yet.
    queued: std::sync::atomic::AtomicU64,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            primary: RwLock::new(None),
            primary_timestamp: AtomicI64::new(NOT_READY),
            queued: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Status {
    /// The primary's hostname, on a replica that knows it.
    pub fn primary(&self) -> Option<String> {
        self.primary
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets (or clears) the primary's hostname.
    pub fn set_primary(&self, host: Option<String>) {
        *self.primary.write().unwrap_or_else(|e| e.into_inner()) = host;
    }

    /// See [`Status::set_primary_timestamp`].
    pub fn primary_timestamp(&self) -> i64 {
        self.primary_timestamp.load(Ordering::Acquire)
    }

    /// [`NOT_READY`], 0 when this node is the primary, else the primary's clock at the last
    /// heartbeat or transaction received.
    pub fn set_primary_timestamp(&self, ms: i64) {
        self.primary_timestamp.store(ms, Ordering::Release);
    }

    /// Transactions received from the primary and not applied yet.
    pub fn queued_applies(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// One more transaction received (`1`) or one applied or dropped (`-1`).
    pub fn add_queued(&self, delta: i64) {
        if delta >= 0 {
            self.queued
                .fetch_add(delta.unsigned_abs(), Ordering::AcqRel);
        } else {
            let _ = self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(delta.unsigned_abs()))
                });
        }
    }

    /// Nothing is waiting to be applied any more (the connection that received it ended).
    pub fn clear_queued(&self) {
        self.queued.store(0, Ordering::Release);
    }

    /// Replication lag in milliseconds: 0 on the primary, `None` before the node is ready.
    pub fn lag_ms(&self) -> Option<i64> {
        match self.primary_timestamp() {
            NOT_READY => None,
            0 => Some(0),
            ts => Some((now_ms() - ts).max(0)),
        }
    }
}
