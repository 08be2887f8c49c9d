//! The Consul lease, on `consulrs`.
//!
//! **The health check.** A Consul session lives at least its TTL (10 s at the least) after its
//! last renewal, and in practice up to twice that, so a primary that dies would hold the key for
//! up to 20 s. A session can also be bound to health checks, and is invalidated the moment one
//! of them turns critical. So before creating its session, the node registers a TTL check of its
//! own on the agent (`litefs-<node id>`, TTL a quarter of the session TTL, at least 1 s) and
//! passes it every fifth of that; the session is bound to it (and to `serfHealth`, Consul's
//! default). A dead primary's check turns critical within the check TTL, Consul deletes the key,
//! and after the lock-delay a replica takes it. The primary counts its lease as held only for
//! the check TTL after its last successful pass, so it stops taking writes before Consul could
//! have given the key to anyone else. If the agent refuses the check (an ACL without
//! `agent:write`), the lease falls back to the session TTL alone, as LiteFS does.
//!
//! **Hand-off.** The session a primary hands over is bound to the old primary's check, which
//! stops being passed. The new holder therefore creates a session of its own and moves the key
//! to it in one Consul transaction (unlock with the old session, lock with the new one), which
//! consulrs does not offer: that one call goes through reqwest, which consulrs already uses.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use consulrs::api::check::requests::RegisterCheckRequest;
use consulrs::api::kv::requests::{ReadKeyRequest, SetKeyRequest};
use consulrs::api::session::requests::CreateSessionRequest;
use consulrs::api::Features;
use consulrs::client::{ConsulClient, ConsulClientSettingsBuilder};
use consulrs::error::ClientError;

use crate::{Candidate, ClusterPosition, Lease, LeaseError, Lookup, PrimaryInfo, Result};

/// How long one request to Consul may take (a blocking query: this beyond its wait).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The session's name, as LiteFS names it.
const SESSION_NAME: &str = "litefs";

/// Where and how to hold the lease.
#[derive(Clone, Debug)]
pub struct ConsulOptions {
    /// `lease.consul.url`: `http://[:TOKEN@]host:port[/key-prefix]`.
    pub url: String,
    /// `lease.consul.key`.
    pub key: String,
    /// `lease.consul.ttl` (at least 10 s).
    pub ttl: Duration,
    /// `lease.consul.lock-delay`.
    pub lock_delay: Duration,
    /// What this node writes into the key when it holds it (its advertise URL also names its
    /// health check, so that a restarted node finds the check of its previous run).
    pub info: PrimaryInfo,
}

/// The parts of `lease.consul.url`.
#[derive(Debug, PartialEq, Eq)]
struct ConsulUrl {
    /// `scheme://host:port`.
    base: String,
    token: Option<String>,
    /// The URL's path without its slashes: a prefix for every key.
    prefix: String,
}

fn parse_url(url: &str) -> Result<ConsulUrl> {
    let bad = |why: &str| LeaseError::Config(format!("lease.consul.url {url:?}: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected http://host:port"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let token = userinfo
        .and_then(|u| u.split_once(':').map(|(_, p)| p))
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    let path = path.split(['?', '#']).next().unwrap_or("");
    Ok(ConsulUrl {
        base: format!("{scheme}://{host}"),
        token,
        prefix: path.trim_matches('/').to_owned(),
    })
}

/// The health check's id: `litefs-` and the advertise URL with every other character than a
/// letter or digit as `-`.
fn check_id(advertise_url: &str) -> String {
    let name: String = advertise_url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("litefs-{name}")
}

/// A Go duration string Consul parses.
fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The Consul lease.
pub struct ConsulLeaser {
    client: ConsulClient,
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The lease key, prefix included.
    key: String,
    info: PrimaryInfo,
    ttl: Duration,
    lock_delay: Duration,
    check_id: String,
    check_ttl: Duration,
    /// Whether the agent took this node's health check (else: session TTL alone).
    check_ok: Mutex<bool>,
    /// When the session was last renewed.
    renewed: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for ConsulLeaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulLeaser")
            .field("base", &self.base)
            .field("key", &self.key)
            .field("info", &self.info)
            .field("ttl", &self.ttl)
            .field("lock_delay", &self.lock_delay)
            .field("check_id", &self.check_id)
            .field("check_ttl", &self.check_ttl)
            .finish_non_exhaustive()
    }
}

/// Maps a consulrs error, with what was asked.
fn consul_err(op: impl Into<String>) -> impl FnOnce(ClientError) -> LeaseError {
    let op = op.into();
    move |e| {
        let detail = match &e {
            ClientError::APIError { code, message } => {
                format!("status {code}: {}", message.as_deref().unwrap_or("").trim())
            }
            _ => e.to_string(),
        };
        LeaseError::Consul {
            op,
            source: detail.into(),
        }
    }
}

/// True for Consul's "not found".
fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::APIError { code: 404, .. })
}

/// Runs a request with a deadline.
async fn timed<T>(
    op: &str,
    after: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| LeaseError::Timeout {
            op: op.to_owned(),
            after,
        })
}

impl ConsulLeaser {
    /// Checks the options and builds the client (no request is sent).
    pub fn new(opts: ConsulOptions) -> Result<ConsulLeaser> {
        if opts.key.is_empty() {
            return Err(LeaseError::Config("lease.consul.key is required".into()));
        }
        if opts.info.hostname.is_empty() || opts.info.advertise_url.is_empty() {
            return Err(LeaseError::Config(
                "the Consul lease needs this node's hostname and advertise URL".into(),
            ));
        }
        if opts.ttl < Duration::from_secs(10) {
            return Err(LeaseError::Config(format!(
                "lease.consul.ttl is {:?}; Consul needs at least 10s",
                opts.ttl
            )));
        }
        let url = parse_url(&opts.url)?;
        // Without a token in the URL, consulrs takes CONSUL_HTTP_TOKEN, as Consul's own tools do.
        let mut settings = ConsulClientSettingsBuilder::default();
        settings
            .address(url.base.clone())
            .verify(true)
            .ca_certs(Vec::new());
        if let Some(token) = &url.token {
            settings.token(token.clone());
        }
        let settings = settings
            .build()
            .map_err(|e| LeaseError::Config(format!("consul client settings: {e}")))?;
        let client = ConsulClient::new(settings).map_err(consul_err("build the client"))?;
        let key = if url.prefix.is_empty() {
            opts.key.trim_matches('/').to_owned()
        } else {
            format!("{}/{}", url.prefix, opts.key.trim_matches('/'))
        };
        let check_ttl = (opts.ttl / 4).max(Duration::from_secs(1));
        let info_url = opts.info.advertise_url.clone();
        Ok(ConsulLeaser {
            client,
            http: reqwest::Client::new(),
            base: url.base,
            token: url.token,
            key,
            info: opts.info,
            ttl: opts.ttl,
            lock_delay: opts.lock_delay,
            check_id: check_id(&info_url),
            check_ttl,
            check_ok: Mutex::new(false),
            renewed: Mutex::new(None),
        })
    }

    /// The lease key, prefix included.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn own_info(&self) -> &PrimaryInfo {
        &self.info
    }

    fn sub_key(&self, name: &str) -> String {
        format!("{}/{name}", self.key)
    }

    /// Reads a key: its value and session, and the index; `None` if absent.
    async fn read(
        &self,
        key: &str,
        wait: Option<(u64, Duration)>,
        consistent: bool,
    ) -> Result<(Option<(Vec<u8>, Option<String>)>, u64)> {
        let mut features = Features::default();
        let mut after = REQUEST_TIMEOUT;
        if let Some((index, wait)) = wait {
            after += wait;
            features.blocking = Some(consulrs::api::features::Blocking {
                index,
                wait: Some(go_duration(wait)),
            });
        }
        if consistent {
            features.mode = Some(consulrs::api::features::ConsistencyMode::CONSISTENT);
        }
        let (mut pairs, index) = self.get_pairs(key, features, false, after).await?;
        let Some(pair) = pairs.pop() else {
            return Ok((None, index));
        };
        let value: Vec<u8> = match pair.value {
            Some(v) => v
                .try_into()
                .map_err(|e: ClientError| LeaseError::BadValue {
                    key: key.to_owned(),
                    reason: e.to_string(),
                })?,
            None => Vec::new(),
        };
        Ok((Some((value, pair.session)), index))
    }

    /// `GET /v1/kv/<key>` (every key under it with `recurse`): the pairs and Consul's index;
    /// none for a 404 (whose index consulrs drops: a blocking query then waits from 0, which
    /// returns at once).
    async fn get_pairs(
        &self,
        key: &str,
        features: Features,
        recurse: bool,
        after: Duration,
    ) -> Result<(Vec<consulrs::api::kv::common::KVPair>, u64)> {
        let op = format!("read {key}");
        let mut builder = ReadKeyRequest::builder();
        builder.key(key).features(features);
        if recurse {
            builder.recurse(true);
        }
        let endpoint = builder
            .build()
            .map_err(|e| LeaseError::Config(format!("{op}: {e}")))?;
        let res = timed(
            &op,
            after,
            consulrs::api::exec_with_result(&self.client, endpoint),
        )
        .await?;
        match res {
            Ok(resp) => {
                let index = resp
                    .index
                    .as_deref()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0);
                Ok((resp.response, index))
            }
            Err(e) if is_not_found(&e) => Ok((Vec::new(), 0)),
            Err(e) => Err(consul_err(op)(e)),
        }
    }

    /// Writes a key, with `acquire` or `release` for a session.
    async fn write(&self, key: &str, value: Vec<u8>, lock: Option<Lock<'_>>) -> Result<bool> {
        let op = format!("write {key}");
        let mut builder = SetKeyRequest::builder();
        builder.key(key).value(value);
        match lock {
            Some(Lock::Acquire(s)) => {
                builder.acquire(s);
            }
            Some(Lock::Release(s)) => {
                builder.release(s);
            }
            None => {}
        }
        let endpoint = builder
            .build()
            .map_err(|e| LeaseError::Config(format!("{op}: {e}")))?;
        timed(
            &op,
            REQUEST_TIMEOUT,
            consulrs::api::exec_with_result(&self.client, endpoint),
        )
        .await?
        .map(|r| r.response)
        .map_err(consul_err(op))
    }

    pub(crate) async fn lookup(&self, wait: Option<(u64, Duration)>) -> Result<Lookup> {
        let (pair, index) = self.read(&self.key, wait, false).await?;
        let primary = match pair {
            // A released key keeps existing with an empty value: no primary.
            Some((value, Some(session))) if !value.is_empty() => {
                let info: PrimaryInfo =
                    serde_json::from_slice(&value).map_err(|e| LeaseError::BadValue {
                        key: self.key.clone(),
                        reason: e.to_string(),
                    })?;
                Some((info, session))
            }
            _ => None,
        };
        Ok(Lookup { primary, index })
    }

    /// Registers (or resets to passing) this node's health check; false if the agent refuses.
    async fn register_check(&self) -> bool {
        let mut builder = RegisterCheckRequest::builder();
        builder
            .name(format!("litefs lease {}", self.info.hostname))
            .id(self.check_id.clone())
            .ttl(go_duration(self.check_ttl))
            .status("passing")
            .notes(
                "passed by litefs-rs while it may hold the lease; the lease session is bound to it",
            );
        let ok = match builder.build() {
            Ok(endpoint) => matches!(
                timed(
                    "register the health check",
                    REQUEST_TIMEOUT,
                    consulrs::api::exec_with_empty(&self.client, endpoint),
                )
                .await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        };
        let mut was = self.check_ok.lock().unwrap_or_else(|e| e.into_inner());
        if !ok && *was {
            tracing::warn!(check = %self.check_id, "consul refused the health check; the lease falls back to the session TTL");
        }
        if !ok && !*was {
            tracing::warn!(check = %self.check_id, "consul refused the health check; a dead primary is replaced only after the session TTL");
        }
        *was = ok;
        ok
    }

    async fn create_session(&self) -> Result<(String, bool)> {
        let mut check = self.register_check().await;
        if check {
            // Registering again keeps the status of a check that went critical (this node was
            // a replica, or stopped, and did not pass it): pass it, or the session is refused.
            check = matches!(self.pass_check().await, Ok(Ok(())));
        }
        let mut builder = CreateSessionRequest::builder();
        builder
            .name(SESSION_NAME)
            .behavior("delete")
            .lock_delay(go_duration(self.lock_delay))
            .ttl(go_duration(self.ttl));
        if check {
            builder.node_checks(vec!["serfHealth".to_owned(), self.check_id.clone()]);
        }
        let endpoint = builder
            .build()
            .map_err(|e| LeaseError::Config(format!("create a session: {e}")))?;
        let resp = timed(
            "create a session",
            REQUEST_TIMEOUT,
            consulrs::api::exec_with_result(&self.client, endpoint),
        )
        .await?
        .map_err(consul_err("create a session"))?;
        let id = resp.response.id;
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((id.clone(), Instant::now()));
        Ok((id, check))
    }

    fn lease(&self, id: String, check: bool) -> Lease {
        let hold = if check { self.check_ttl } else { self.ttl };
        Lease {
            id,
            hold,
            keep_alive_every: hold / 5,
        }
    }

    async fn destroy_session(&self, id: &str) {
        let res = timed(
            "destroy the session",
            REQUEST_TIMEOUT,
            consulrs::session::delete(&self.client, id, None),
        )
        .await;
        if !matches!(res, Ok(Ok(_))) {
            tracing::debug!(session = id, "could not destroy the session");
        }
    }

    fn value(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.info).map_err(|e| LeaseError::BadValue {
            key: self.key.clone(),
            reason: e.to_string(),
        })
    }

    pub(crate) async fn acquire(&self) -> Result<Option<Lease>> {
        let (id, check) = self.create_session().await?;
        match self
            .write(&self.key, self.value()?, Some(Lock::Acquire(&id)))
            .await
        {
            Ok(true) => Ok(Some(self.lease(id, check))),
            Ok(false) => {
                self.destroy_session(&id).await;
                Ok(None)
            }
            Err(e) => {
                self.destroy_session(&id).await;
                Err(e)
            }
        }
    }

    pub(crate) async fn acquire_existing(&self, old: &str) -> Result<Option<Lease>> {
        let (id, check) = self.create_session().await?;
        let value = base64::encode(self.value()?);
        let ops = serde_json::json!([
            { "KV": { "Verb": "unlock", "Key": self.key, "Session": old } },
            { "KV": { "Verb": "lock", "Key": self.key, "Value": value, "Session": id } },
        ]);
        match self
            .txn("move the handed-over lease to a new session", ops)
            .await
        {
            Ok(true) => {
                self.destroy_session(old).await;
                Ok(Some(self.lease(id, check)))
            }
            // The old session no longer holds the key.
            Ok(false) => {
                self.destroy_session(&id).await;
                Ok(None)
            }
            Err(e) => {
                self.destroy_session(&id).await;
                Err(e)
            }
        }
    }

    /// Passes the node's health check: the outer error if Consul did not answer in time, the
    /// inner one if it refused.
    async fn pass_check(&self) -> Result<std::result::Result<(), ClientError>> {
        let op = "pass the health check";
        let endpoint = consulrs::api::check::requests::TtlCheckPassRequest::builder()
            .check(self.check_id.clone())
            .build()
            .map_err(|e| LeaseError::Config(format!("{op}: {e}")))?;
        Ok(timed(
            op,
            REQUEST_TIMEOUT,
            consulrs::api::exec_with_empty(&self.client, endpoint),
        )
        .await?
        .map(|_| ()))
    }

    pub(crate) async fn keep_alive(&self, lease: &Lease) -> Result<Instant> {
        let started = Instant::now();
        let check = *self.check_ok.lock().unwrap_or_else(|e| e.into_inner());
        if check {
            let op = "pass the health check";
            match self.pass_check().await? {
                Ok(()) => {}
                // The agent forgot the check (it restarted): the session went with it.
                Err(e)
                    if is_not_found(&e) || matches!(e, ClientError::APIError { code: 500, .. }) =>
                {
                    return Err(LeaseError::Expired(lease.id.clone()))
                }
                Err(e) => return Err(consul_err(op)(e)),
            }
        }
        let last_renewal = match &*self.renewed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((id, at)) if *id == lease.id => Some(*at),
            _ => None,
        };
        let renewed = match last_renewal {
            Some(at) if at.elapsed() < self.ttl / 2 => at,
            _ => {
                let renew_started = Instant::now();
                let op = "renew the session";
                let res = timed(
                    op,
                    REQUEST_TIMEOUT,
                    consulrs::session::renew(&self.client, &lease.id, None),
                )
                .await?;
                match res {
                    Ok(r) if !r.response.is_empty() => {}
                    Ok(_) => return Err(LeaseError::Expired(lease.id.clone())),
                    Err(e) if is_not_found(&e) => {
                        return Err(LeaseError::Expired(lease.id.clone()))
                    }
                    Err(e) => return Err(consul_err(op)(e)),
                }
                *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((lease.id.clone(), renew_started));
                renew_started
            }
        };
        // The servers still give the key to this session: a consistent read goes to the leader,
        // so a pass that only reached a local agent cut off from the servers does not count.
        match self.read(&self.key, None, true).await? {
            (Some((_, Some(session))), _) if session == lease.id => {}
            _ => return Err(LeaseError::Expired(lease.id.clone())),
        }
        // The hold counts from the check pass, or (without a check) from the last renewal.
        Ok(if check { started } else { renewed })
    }

    /// Runs a Consul transaction: `Ok(false)` if it was rolled back (a check failed).
    async fn txn(&self, op: &str, ops: serde_json::Value) -> Result<bool> {
        let mut req = self
            .http
            .put(format!("{}/v1/txn", self.base))
            .header("Content-Type", "application/json")
            .body(ops.to_string());
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        let resp =
            timed(op, REQUEST_TIMEOUT, req.send())
                .await?
                .map_err(|e| LeaseError::Consul {
                    op: op.to_owned(),
                    source: Box::new(e),
                })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(true);
        }
        if status.as_u16() == 409 {
            return Ok(false);
        }
        let body = timed(op, REQUEST_TIMEOUT, resp.text())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        Err(LeaseError::Consul {
            op: op.to_owned(),
            source: format!("status {status}: {}", body.trim()).into(),
        })
    }

    pub(crate) async fn release(&self, lease: &Lease) -> Result<()> {
        let released = self
            .write(&self.key, Vec::new(), Some(Lock::Release(&lease.id)))
            .await;
        self.destroy_session(&lease.id).await;
        released.map(|_| ())
    }

    pub(crate) async fn cluster_id(&self) -> Result<Option<String>> {
        let key = self.sub_key("clusterid");
        let (pair, _) = self.read(&key, None, false).await?;
        Ok(pair
            .map(|(v, _)| String::from_utf8_lossy(&v).trim().to_owned())
            .filter(|v| !v.is_empty()))
    }

    pub(crate) async fn set_cluster_id(&self, id: &str) -> Result<()> {
        self.write(&self.sub_key("clusterid"), id.as_bytes().to_vec(), None)
            .await
            .map(|_| ())
    }

    pub(crate) async fn cluster_position(&self) -> Result<Option<ClusterPosition>> {
        let key = self.sub_key("position");
        let (pair, _) = self.read(&key, None, false).await?;
        match pair {
            Some((v, _)) if !v.is_empty() => {
                serde_json::from_slice(&v)
                    .map(Some)
                    .map_err(|e| LeaseError::BadValue {
                        key,
                        reason: e.to_string(),
                    })
            }
            _ => Ok(None),
        }
    }

    pub(crate) async fn publish_position(
        &self,
        lease: &Lease,
        pos: &ClusterPosition,
    ) -> Result<()> {
        let key = self.sub_key("position");
        let value = serde_json::to_vec(pos).map_err(|e| LeaseError::BadValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        // Only while this node's session holds the lease: a late write from a former primary
        // must not replace what the new one published.
        let ops = serde_json::json!([
            { "KV": { "Verb": "check-session", "Key": self.key, "Session": lease.id } },
            { "KV": { "Verb": "set", "Key": key, "Value": base64::encode(value) } },
        ]);
        if self.txn("publish the position", ops).await? {
            Ok(())
        } else {
            Err(LeaseError::Expired(lease.id.clone()))
        }
    }

    pub(crate) async fn announce(&self, me: &Candidate) -> Result<()> {
        let key = format!("{}/candidates/{}", self.key, self.check_id);
        let value = serde_json::to_vec(me).map_err(|e| LeaseError::BadValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.write(&key, value, None).await.map(|_| ())
    }

    pub(crate) async fn candidates(&self) -> Result<Vec<Candidate>> {
        let prefix = format!("{}/candidates/", self.key);
        let (pairs, _) = self
            .get_pairs(&prefix, Features::default(), true, REQUEST_TIMEOUT)
            .await?;
        Ok(pairs
            .into_iter()
            .filter_map(|p| {
                let bytes: Vec<u8> = p.value?.try_into().ok()?;
                // An entry that does not decode is skipped: it cannot make anyone defer.
                serde_json::from_slice(&bytes).ok()
            })
            .collect())
    }

    pub(crate) async fn forget_position(&self) -> Result<()> {
        let key = self.sub_key("position");
        timed(
            "delete the position",
            REQUEST_TIMEOUT,
            consulrs::kv::delete(&self.client, &key, None),
        )
        .await?
        .map(|_| ())
        .map_err(consul_err(format!("delete {key}")))
    }

    pub(crate) async fn close(&self) {
        let res = timed(
            "deregister the health check",
            REQUEST_TIMEOUT,
            consulrs::check::deregister(&self.client, &self.check_id, None),
        )
        .await;
        if !matches!(res, Ok(Ok(_))) {
            tracing::debug!(check = %self.check_id, "could not deregister the health check");
        }
    }
}

/// A session lock operation on a key write.
enum Lock<'a> {
    Acquire(&'a str),
    Release(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_gives_the_address_the_token_and_the_key_prefix() {
        assert_eq!(
            parse_url("http://:secret@consul.internal:8500/myapp/").ok(),
            Some(ConsulUrl {
                base: "http://consul.internal:8500".into(),
                token: Some("secret".into()),
                prefix: "myapp".into(),
            })
        );
        assert_eq!(
            parse_url("https://127.0.0.1:8501").ok(),
            Some(ConsulUrl {
                base: "https://127.0.0.1:8501".into(),
                token: None,
                prefix: String::new(),
            })
        );
        for bad in ["consul:8500", "ftp://x", "http://", "http:///prefix"] {
            let err = parse_url(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("lease.consul.url"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_go_strings() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10000ms");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2500ms");
    }
}
