//! Who is the primary. A [`Leaser`] is either the static lease (the primary is fixed by
//! configuration) or the Consul lease, laid out as LiteFS 0.5 lays it out so that a litefs-rs
//! node and a LiteFS node can share one key:
//!
//! - a session (name `litefs`, TTL `lease.consul.ttl`, lock-delay `lease.consul.lock-delay`,
//!   behaviour `delete`) holds the KV key `<prefix>/<key>`, whose value is the holder's
//!   [`PrimaryInfo`] as JSON;
//! - the cluster id is at `<prefix>/<key>/clusterid`;
//! - a clean shutdown releases the key (which clears its value, so the others see no primary at
//!   once, without the lock-delay), then destroys the session.
//!
//! Beyond LiteFS:
//!
//! - the session is also bound to a TTL health check of this node's own ([`ConsulLeaser`]
//!   explains why), so that a primary that dies loses the key within seconds instead of the
//!   session TTL (which Consul stretches up to twice its value);
//! - the primary publishes what it has committed at `<prefix>/<key>/position`
//!   ([`ClusterPosition`]), so that a candidate that is behind does not take the lease while a
//!   fresher node may come back.

mod consul;

use std::collections::BTreeMap;
use std::time::Duration;

pub use consul::{ConsulLeaser, ConsulOptions};

/// The value of the lease key: who the primary is and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrimaryInfo {
    /// The primary's name (`.primary`, `fly-replay`).
    pub hostname: String,
    /// The primary's internal API URL.
    #[serde(rename = "advertise-url")]
    pub advertise_url: String,
    /// The primary's HTTP proxy (`http://host:port`), where replicas forward writes with
    /// `proxy.forward: true`. Not a LiteFS field (LiteFS ignores it); absent without a proxy.
    #[serde(
        rename = "proxy-url",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub proxy_url: String,
}

/// What the cluster has committed, as the primary last published it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterPosition {
    /// The primary that published it (node id, `%016X`).
    pub node: String,
    /// Its hostname.
    pub hostname: String,
    /// Milliseconds since the epoch when it was published.
    pub timestamp: i64,
    /// Each database's position.
    pub dbs: BTreeMap<String, DbPosition>,
}

/// One database's position: its TXID and the database checksum after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbPosition {
    /// The TXID.
    pub txid: u64,
    /// The checksum after it, 16 hex digits.
    pub checksum: String,
}

/// A candidate about to take a free lease, as it announces itself: the others defer to one
/// that has more of the cluster's transactions.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// Its hostname.
    pub hostname: String,
    /// Its advertise URL.
    #[serde(rename = "advertise-url")]
    pub advertise_url: String,
    /// Milliseconds since the epoch when it announced itself.
    pub timestamp: i64,
    /// Its databases' positions.
    pub dbs: BTreeMap<String, DbPosition>,
}

impl Candidate {
    /// True if this candidate has at least `other`'s TXID in every database and more in one
    /// (a database missing counts as TXID 0).
    pub fn fresher_than(&self, other: &BTreeMap<String, DbPosition>) -> bool {
        let txid = |m: &BTreeMap<String, DbPosition>, n: &str| m.get(n).map_or(0, |p| p.txid);
        let names = self.dbs.keys().chain(other.keys());
        let mut more = false;
        for n in names {
            let (a, b) = (txid(&self.dbs, n), txid(other, n));
            if a < b {
                return false;
            }
            more |= a > b;
        }
        more
    }
}

/// What looking at the lease found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The primary and its lease id (the Consul session), if a node holds the lease.
    pub primary: Option<(PrimaryInfo, String)>,
    /// Consul's index for a blocking query that returns once this changes (0: none).
    pub index: u64,
}

/// A held lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (the Consul session id; empty for the static lease).
    pub id: String,
    /// How long the lease surely stays held after a successful [`Leaser::keep_alive`], counted
    /// from when that call started.
    pub hold: Duration,
    /// How often to call [`Leaser::keep_alive`].
    pub keep_alive_every: Duration,
}

/// Why a lease operation failed.
#[derive(thiserror::Error, Debug)]
pub enum LeaseError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// Consul could not be reached, or answered with an error.
    #[error("consul: {op}")]
    Consul {
        /// What was asked.
        op: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Consul did not answer in time.
    #[error("consul: {op}: no answer within {after:?}")]
    Timeout {
        /// What was asked.
        op: String,
        /// How long it waited.
        after: Duration,
    },
    /// The lease is gone (the session expired or was destroyed).
    #[error("the lease {0} is gone")]
    Expired(String),
    /// A value in Consul does not decode.
    #[error("consul: bad value at {key}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The static lease cannot do this.
    #[error("the static lease cannot {0}")]
    Unsupported(&'static str),
}

/// The result type of this crate.
pub type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// The static lease: the node with `lease.candidate: true` is the primary for good; every
/// other node follows the configured one.
#[derive(Clone, Debug)]
pub struct StaticLeaser {
    /// True on the primary.
    pub is_primary: bool,
    /// The primary (on every node, the primary's hostname and URL).
    pub primary: PrimaryInfo,
}

/// Who decides the primary.
#[derive(Debug)]
pub enum Leaser {
    /// A fixed primary.
    Static(StaticLeaser),
    /// An elected primary.
    Consul(Box<ConsulLeaser>),
}

impl Leaser {
    /// `static` or `consul`.
    pub fn kind(&self) -> &'static str {
        match self {
            Leaser::Static(_) => "static",
            Leaser::Consul(_) => "consul",
        }
    }

    /// What this node writes into the lease when it holds it.
    pub fn own_info(&self) -> PrimaryInfo {
        match self {
            Leaser::Static(s) => s.primary.clone(),
            Leaser::Consul(c) => c.own_info().clone(),
        }
    }

    /// Who holds the lease. With `wait`, a Consul blocking query: returns when the key changes
    /// past `index`, or after the wait.
    pub async fn lookup(&self, wait: Option<(u64, Duration)>) -> Result<Lookup> {
        match self {
            Leaser::Static(s) if s.is_primary => Ok(Lookup::default()),
            Leaser::Static(s) => {
                // Nothing to watch: a wait is a pause (before reconnecting).
                if let Some((_, wait)) = wait {
                    tokio::time::sleep(wait).await;
                }
                Ok(Lookup {
                    primary: Some((s.primary.clone(), String::new())),
                    index: 0,
                })
            }
            Leaser::Consul(c) => c.lookup(wait).await,
        }
    }

    /// Tries to take the lease: `None` if another node holds it (or Consul's lock-delay still
    /// protects it).
    pub async fn acquire(&self) -> Result<Option<Lease>> {
        match self {
            Leaser::Static(s) if s.is_primary => Ok(Some(Lease {
                id: String::new(),
                hold: Duration::from_secs(u64::from(u32::MAX)),
                keep_alive_every: Duration::from_secs(3600),
            })),
            Leaser::Static(_) => Ok(None),
            Leaser::Consul(c) => c.acquire().await,
        }
    }

    /// Takes over the lease `id` that the primary handed to this node; `None` if it is gone.
    pub async fn acquire_existing(&self, id: &str) -> Result<Option<Lease>> {
        match self {
            Leaser::Static(_) => Err(LeaseError::Unsupported("hand the lease over")),
            Leaser::Consul(c) => c.acquire_existing(id).await,
        }
    }

    /// Keeps a held lease alive; [`LeaseError::Expired`] once it is gone. Returns the instant
    /// from which the lease's hold counts (the lease is surely held until then plus
    /// [`Lease::hold`]).
    pub async fn keep_alive(&self, lease: &Lease) -> Result<std::time::Instant> {
        match self {
            Leaser::Static(_) => Ok(std::time::Instant::now()),
            Leaser::Consul(c) => c.keep_alive(lease).await,
        }
    }

    /// Gives the lease up at once (another candidate can take it without the lock-delay).
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        match self {
            Leaser::Static(_) => Ok(()),
            Leaser::Consul(c) => c.release(lease).await,
        }
    }

    /// The cluster id, if a primary set one.
    pub async fn cluster_id(&self) -> Result<Option<String>> {
        match self {
            Leaser::Static(_) => Ok(None),
            Leaser::Consul(c) => c.cluster_id().await,
        }
    }

    /// Sets the cluster id (the first primary does).
    pub async fn set_cluster_id(&self, id: &str) -> Result<()> {
        match self {
            Leaser::Static(_) => Ok(()),
            Leaser::Consul(c) => c.set_cluster_id(id).await,
        }
    }

    /// What the cluster has committed, as last published.
    pub async fn cluster_position(&self) -> Result<Option<ClusterPosition>> {
        match self {
            Leaser::Static(_) => Ok(None),
            Leaser::Consul(c) => c.cluster_position().await,
        }
    }

    /// Publishes what the cluster has committed (the primary does, while `lease` holds the
    /// key).
    pub async fn publish_position(&self, lease: &Lease, pos: &ClusterPosition) -> Result<()> {
        match self {
            Leaser::Static(_) => Ok(()),
            Leaser::Consul(c) => c.publish_position(lease, pos).await,
        }
    }

    /// Announces this node as a candidate about to take a free lease.
    pub async fn announce(&self, me: &Candidate) -> Result<()> {
        match self {
            Leaser::Static(_) => Ok(()),
            Leaser::Consul(c) => c.announce(me).await,
        }
    }

    /// The candidates announced so far (their latest announcements).
    pub async fn candidates(&self) -> Result<Vec<Candidate>> {
        match self {
            Leaser::Static(_) => Ok(Vec::new()),
            Leaser::Consul(c) => c.candidates().await,
        }
    }

    /// Forgets the published position: any candidate may take the lease again. For an operator
    /// whose freshest node is gone for good.
    pub async fn forget_position(&self) -> Result<()> {
        match self {
            Leaser::Static(_) => Err(LeaseError::Unsupported("keep a cluster position")),
            Leaser::Consul(c) => c.forget_position().await,
        }
    }

    /// At start: removes what a previous run of this node left in Consul (its health check,
    /// which ends that run's session at once). At shutdown: removes what this run registered.
    pub async fn close(&self) {
        if let Leaser::Consul(c) = self {
            c.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbs(v: &[(&str, u64)]) -> BTreeMap<String, DbPosition> {
        v.iter()
            .map(|(n, t)| {
                (
                    (*n).to_owned(),
                    DbPosition {
                        txid: *t,
                        checksum: String::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_candidate_is_fresher_only_with_more_and_nowhere_less() {
        let c = Candidate {
            dbs: dbs(&[("a", 5), ("b", 3)]),
            ..Candidate::default()
        };
        assert!(c.fresher_than(&dbs(&[("a", 4), ("b", 3)])));
        assert!(c.fresher_than(&dbs(&[("a", 5)])));
        assert!(!c.fresher_than(&dbs(&[("a", 5), ("b", 3)])), "equal");
        assert!(!c.fresher_than(&dbs(&[("a", 4), ("b", 4)])), "mixed");
        assert!(!c.fresher_than(&dbs(&[("a", 5), ("b", 3), ("c", 1)])));
    }

    #[test]
    fn primary_info_is_litefs_json() {
        let info = PrimaryInfo {
            hostname: "node1".into(),
            advertise_url: "http://node1:20202".into(),
            proxy_url: String::new(),
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"hostname":"node1","advertise-url":"http://node1:20202"}"#
        );
    }
}
