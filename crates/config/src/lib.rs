//! The `litefs.yml` configuration of LiteFS 0.5, as plain data.
//!
//! This crate reads the file and the environment and nothing else: it has no behaviour. It
//! offers:
//!
//! * [`Config`] and its sections, a serde model with LiteFS's key names and defaults. Unknown
//!   keys are errors that name the key and its line ([`ConfigError::UnknownKey`]).
//! * [`Duration`], Go's duration syntax (`10s`, `1m30s`, `500ms`) in both directions.
//! * [`expand_env`], LiteFS's `${VAR}` / `${A == B}` expansion of the raw text.
//! * [`Config::load`], which finds the file (`-config PATH`, else `./litefs.yml`,
//!   `~/litefs.yml`, `/etc/litefs.yml`), expands it and parses it.
//! * [`Config::validate`], the checks to run before starting a node.
//! * [`Config::to_yaml`], the effective configuration printed with the same key names.
//!
//! ```
//! use litefs_config::{Config, LeaseType};
//!
//! let text = "fuse:\n  dir: /litefs\nlease:\n  type: static\n";
//! let config = Config::from_yaml_str(text, "litefs.yml", None)?;
//! assert_eq!(config.lease.kind, Some(LeaseType::Static));
//! assert_eq!(config.data.dir.to_str(), Some("/var/lib/litefs")); // the default
//! config.validate()?;
//! # Ok::<(), litefs_config::ConfigError>(())
//! ```
//!
//! Where this model reads a file differently from LiteFS, it is noted on the item concerned.

mod de;
mod duration;
mod env;
mod error;
mod load;
mod shell;
mod size;
mod validate;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use duration::Duration;
pub use env::{expand_env, process_env, EnvLookup};
pub use error::ConfigError;
pub use load::{find_config_file, search_paths, LoadOptions};
pub use shell::split_args;
pub use size::ByteSize;

/// The whole `litefs.yml`.
///
/// Every key may be left out, in which case it keeps the LiteFS default shown on each field
/// ([`Config::default`] is the configuration of an empty file). A key written without a value
/// (`key:`, `key: ~`) also keeps its default, as in LiteFS. Unknown keys are errors.
///
/// The file is read as LiteFS's YAML library reads it, with these differences:
///
/// * Booleans accept `true`/`false` in any of YAML's spellings plus the YAML 1.1 words
///   `yes`/`no`/`on`/`off`/`y`/`n` (as LiteFS does), and also quoted `"true"`/`"false"`.
/// * An empty file (or one with only comments) gives the defaults; LiteFS reports an error.
/// * `exec: ""` means no command; LiteFS keeps one empty command, which cannot run.
/// * An unknown `lease.type`, `log.format` or `backup.type` is a parse error with a line
///   number rather than a start-up error.
/// * Merge keys (`<<: *anchor`) and files with several YAML documents are not supported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Config {
    /// `exit-on-error` (default `true`): exit with an error when the node fails at run time.
    /// When false the process stays up (with the proxy closed) so it can be inspected.
    #[serde(deserialize_with = "de::bool")]
    pub exit_on_error: bool,

    /// `skip-sync` (default `false`): start the proxy and the `exec` commands without waiting
    /// for this node to become primary or catch up with the primary.
    #[serde(deserialize_with = "de::bool")]
    pub skip_sync: bool,

    /// `strict-verify` (default `false`): recompute the whole database checksum from disk
    /// after every commit. Slow; meant for tests.
    #[serde(deserialize_with = "de::bool")]
    pub strict_verify: bool,

    /// `exec` (default: none): commands to run once the node is ready. Written either as one
    /// string or as a list of `{cmd, if-candidate}` items; see [`ExecCommand`]. An empty
    /// string, an empty list or no value means no command. The CLI's `-- CMD ARGS` replaces it.
    #[serde(deserialize_with = "de_exec")]
    pub exec: Vec<ExecCommand>,

    /// `data`: where LiteFS keeps its own files.
    #[serde(deserialize_with = "de::or_default")]
    pub data: DataConfig,

    /// `fuse`: the mount the application opens its databases through.
    #[serde(deserialize_with = "de::or_default")]
    pub fuse: FuseConfig,

    /// `http`: the internal API that nodes use to talk to each other.
    #[serde(deserialize_with = "de::or_default")]
    pub http: HttpConfig,

    /// `proxy`: the optional HTTP proxy in front of the application.
    #[serde(deserialize_with = "de::or_default")]
    pub proxy: ProxyConfig,

    /// `lease`: how the primary is chosen.
    #[serde(deserialize_with = "de::or_default")]
    pub lease: LeaseConfig,

    /// `backup`: the optional backup service.
    #[serde(deserialize_with = "de::or_default")]
    pub backup: BackupConfig,

    /// `log`: logging to stderr.
    #[serde(deserialize_with = "de::or_default")]
    pub log: LogConfig,

    /// `tracing`: the optional rolling on-disk trace log.
    #[serde(deserialize_with = "de::or_default")]
    pub tracing: TracingConfig,
}

impl Default for Config {
    /// LiteFS's defaults (`NewConfig`). Not valid on its own: `lease.type` has no default.
    fn default() -> Self {
        Config {
            exit_on_error: true,
            skip_sync: false,
            strict_verify: false,
            exec: Vec::new(),
            data: DataConfig::default(),
            fuse: FuseConfig::default(),
            http: HttpConfig::default(),
            proxy: ProxyConfig::default(),
            lease: LeaseConfig::default(),
            backup: BackupConfig::default(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

/// One `exec` command.
///
/// All commands but the last run one after another and must succeed (migrations, say); the
/// last one is the application, which runs for as long as the node does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ExecCommand {
    /// `cmd`: the command line, kept as written; [`ExecCommand::args`] splits it.
    #[serde(deserialize_with = "de::or_default")]
    pub cmd: String,

    /// `if-candidate` (default `false`): run this command only on nodes that may become
    /// primary (`lease.candidate: true`), e.g. for migrations.
    #[serde(deserialize_with = "de::bool")]
    pub if_candidate: bool,
}

impl ExecCommand {
    /// A command that runs on every node.
    pub fn new(cmd: impl Into<String>) -> Self {
        ExecCommand {
            cmd: cmd.into(),
            if_candidate: false,
        }
    }

    /// The program and its arguments, split with shell quoting rules (see [`split_args`]).
    pub fn args(&self) -> Result<Vec<String>, ConfigError> {
        split_args(&self.cmd)
    }
}

/// Reads `exec` as a single command string, a list of commands, or nothing.
///
/// An empty string gives no command (LiteFS would keep one empty command, which cannot run).
fn de_exec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ExecCommand>, D::Error> {
    struct ExecVisitor;

    impl<'de> serde::de::Visitor<'de> for ExecVisitor {
        type Value = Vec<ExecCommand>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a command string or a list of {cmd, if-candidate} items")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() {
                Ok(Vec::new())
            } else {
                Ok(vec![ExecCommand::new(v)])
            }
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<ExecCommand>()? {
                out.push(item);
            }
            Ok(out)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    deserializer.deserialize_option(ExecVisitor)
}

/// `data`: LiteFS's internal storage (databases, LTX transaction files, cluster ID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct DataConfig {
    /// `data.dir` (default `/var/lib/litefs`): the directory for internal data. Required, and
    /// must not be the FUSE mount directory.
    #[serde(deserialize_with = "de::or_default")]
    pub dir: PathBuf,

    /// `data.compress` (default `true`): LZ4-compress the LTX files written to disk.
    #[serde(deserialize_with = "de::bool")]
    pub compress: bool,

    /// `data.retention` (default `10m`): how old an LTX file must be before it may be deleted.
    /// The newest file of each database is always kept.
    #[serde(deserialize_with = "de::or_default")]
    pub retention: Duration,

    /// `data.retention-monitor-interval` (default `1m`): how often old LTX files are looked
    /// for. Zero turns the clean-up off.
    #[serde(deserialize_with = "de::or_default")]
    pub retention_monitor_interval: Duration,

    /// `data.retention-max-size` (default `256MiB`; not a LiteFS setting): the most bytes the
    /// LTX files of one database may take. Beyond it the oldest files are deleted even if they
    /// are younger than `data.retention` (the newest file is always kept; a replica further
    /// behind gets a snapshot). Zero means no limit.
    #[serde(deserialize_with = "de::or_default")]
    pub retention_max_size: ByteSize,
}

/// The default `data.retention-max-size`.
pub const DEFAULT_RETENTION_MAX_SIZE: ByteSize = ByteSize::from_bytes(256 << 20);

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("/var/lib/litefs"),
            compress: true,
            retention: Duration::from_secs(10 * 60),
            retention_monitor_interval: Duration::from_secs(60),
            retention_max_size: DEFAULT_RETENTION_MAX_SIZE,
        }
    }
}

/// `fuse`: the FUSE mount through which the application reads and writes its databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct FuseConfig {
    /// `fuse.dir` (default `/litefs`): the mount point. Required.
    #[serde(deserialize_with = "de::or_default")]
    pub dir: PathBuf,

    /// `fuse.allow-other` (default `false`): let users other than the one running LiteFS use
    /// the mount (FUSE `allow_other`; needs `user_allow_other` in `/etc/fuse.conf`).
    #[serde(deserialize_with = "de::bool")]
    pub allow_other: bool,

    /// `fuse.debug` (default `false`): log every FUSE call. Very verbose.
    #[serde(deserialize_with = "de::bool")]
    pub debug: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            dir: PathBuf::from("/litefs"),
            allow_other: false,
            debug: false,
        }
    }
}

/// `http`: the internal API server (replication stream, handoff, import/export, metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// `http.addr` (default `:20202`): the address to listen on, Go style (`:PORT` means every
    /// interface).
    #[serde(deserialize_with = "de::or_default")]
    pub addr: String,

    /// `http.snapshot-timeout` (default `0`, meaning "use `data.retention`"): the longest a
    /// snapshot may take to send to a replica.
    #[serde(deserialize_with = "de::or_default")]
    pub snapshot_timeout: Duration,

    /// `http.auth-token` (default empty, meaning off; not a LiteFS key): a secret every request
    /// to the internal API must carry as `Authorization: Bearer <token>`, and that this node
    /// sends on every request it makes to a peer's API (the replication stream, halt locks,
    /// hand-offs) and that the `export`, `import` and `run` commands send. Every route needs
    /// it, `/metrics` included (a Prometheus scrape job sends it with
    /// `authorization: {type: Bearer, credentials: ...}`). All nodes of a cluster must have
    /// the same one. Write it as `${VAR}` to take it from the environment rather than from the
    /// file. Off, the API is open to whoever reaches its port, as LiteFS's is.
    #[serde(deserialize_with = "de::or_default")]
    pub auth_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: ":20202".to_owned(),
            snapshot_timeout: Duration::ZERO,
            auth_token: String::new(),
        }
    }
}

/// `proxy`: an HTTP proxy in front of the application that sends writes to the primary and
/// holds reads until this replica has caught up with the client's last write. Off unless
/// `proxy.target` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ProxyConfig {
    /// `proxy.addr` (default empty): the address the proxy listens on, e.g. `:8080`.
    #[serde(deserialize_with = "de::or_default")]
    pub addr: String,

    /// `proxy.target` (default empty): the application's `host:port`. Empty disables the proxy.
    #[serde(deserialize_with = "de::or_default")]
    pub target: String,

    /// `proxy.db` (default empty): the database whose transaction ID is tracked per client.
    #[serde(deserialize_with = "de::or_default")]
    pub db: String,

    /// `proxy.max-lag` (default `10s`): `/litefs/health` fails when replication lags more than
    /// this. Zero disables the check.
    #[serde(deserialize_with = "de::or_default")]
    pub max_lag: Duration,

    /// `proxy.debug` (default `false`): log every proxied request.
    #[serde(deserialize_with = "de::bool")]
    pub debug: bool,

    /// `proxy.passthrough` (default none): path patterns (`*` is the only wildcard) sent
    /// straight to the application with no consistency handling.
    #[serde(deserialize_with = "de::or_default")]
    pub passthrough: Vec<String>,

    /// `proxy.always-forward` (default none): path patterns whose GET and HEAD requests are
    /// treated as writes and so sent to the primary.
    #[serde(deserialize_with = "de::or_default")]
    pub always_forward: Vec<String>,

    /// `proxy.primary-redirect-timeout` (default `5s`): how long a write waits for a primary
    /// to be known before failing with 503.
    #[serde(deserialize_with = "de::or_default")]
    pub primary_redirect_timeout: Duration,

    /// `proxy.read-timeout` (default `0`, none): limit on reading a whole request.
    #[serde(deserialize_with = "de::or_default")]
    pub read_timeout: Duration,

    /// `proxy.read-header-timeout` (default `10s`): limit on reading request headers.
    #[serde(deserialize_with = "de::or_default")]
    pub read_header_timeout: Duration,

    /// `proxy.write-timeout` (default `0`, none): limit on writing a response.
    #[serde(deserialize_with = "de::or_default")]
    pub write_timeout: Duration,

    /// `proxy.idle-timeout` (default `30s`): how long an idle keep-alive connection stays open.
    #[serde(deserialize_with = "de::or_default")]
    pub idle_timeout: Duration,

    /// `proxy.forward` (default `false`; not a LiteFS key): on a replica, forward writes to the
    /// primary's proxy and stream its answer back, instead of answering `fly-replay` (which only
    /// Fly.io's edge acts on). The primary advertises its proxy in the lease (Consul lease).
    #[serde(deserialize_with = "de::bool")]
    pub forward: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            addr: String::new(),
            target: String::new(),
            db: String::new(),
            max_lag: Duration::from_secs(10),
            debug: false,
            passthrough: Vec::new(),
            always_forward: Vec::new(),
            primary_redirect_timeout: Duration::from_secs(5),
            read_timeout: Duration::ZERO,
            read_header_timeout: Duration::from_secs(10),
            write_timeout: Duration::ZERO,
            idle_timeout: Duration::from_secs(30),
            forward: false,
        }
    }
}

/// `lease`: how the cluster decides which node is the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct LeaseConfig {
    /// `lease.type` (no default, required): `static` or `consul`. `None` when absent or empty.
    #[serde(
        rename = "type",
        deserialize_with = "de_lease_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<LeaseType>,

    /// `lease.hostname` (default empty, meaning the machine's host name): the name other nodes
    /// and the application see for this node (the `.primary` file, `fly-replay`).
    #[serde(deserialize_with = "de::or_default")]
    pub hostname: String,

    /// `lease.advertise-url` (default empty): the URL of this node's API as other nodes should
    /// reach it. With `consul` an empty value becomes `http://HOSTNAME:PORT`; with `static` it
    /// is the primary's URL and replicas must set it.
    #[serde(deserialize_with = "de::or_default")]
    pub advertise_url: String,

    /// `lease.candidate` (default `true`): whether this node may become primary. With
    /// `static`, true means "this node is the primary".
    #[serde(deserialize_with = "de::bool")]
    pub candidate: bool,

    /// `lease.promote` (default `false`): once synced with the current primary, ask it to hand
    /// the lease over to this node (candidates only).
    #[serde(deserialize_with = "de::bool")]
    pub promote: bool,

    /// `lease.reconnect-delay` (default `1s`): pause between attempts to get the lease or to
    /// reconnect to the primary.
    #[serde(deserialize_with = "de::or_default")]
    pub reconnect_delay: Duration,

    /// `lease.demote-delay` (default `10s`): after being demoted on request, how long to wait
    /// before trying to become primary again.
    #[serde(deserialize_with = "de::or_default")]
    pub demote_delay: Duration,

    /// `lease.stale-timeout` (default `0`, never; not a LiteFS key): how long a candidate that
    /// is behind what the cluster committed (the position the primary publishes in Consul)
    /// waits, while nobody holds the lease, for a fresher node to come back before it takes the
    /// lease anyway and the cluster continues from its data. With `0` it never does: an
    /// operator decides (`litefs-rs forget-position`).
    #[serde(deserialize_with = "de::or_default")]
    pub stale_timeout: Duration,

    /// `lease.databases` (default: all): replicate only these databases. Only allowed on
    /// nodes that cannot become primary (`candidate: false`).
    #[serde(deserialize_with = "de::or_default")]
    pub databases: Vec<String>,

    /// `lease.consul`: settings used when `lease.type` is `consul`.
    #[serde(deserialize_with = "de::or_default")]
    pub consul: ConsulConfig,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            kind: None,
            hostname: String::new(),
            advertise_url: String::new(),
            candidate: true,
            promote: false,
            reconnect_delay: Duration::from_secs(1),
            demote_delay: Duration::from_secs(10),
            stale_timeout: Duration::ZERO,
            databases: Vec::new(),
            consul: ConsulConfig::default(),
        }
    }
}

fn de_lease_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LeaseType>, D::Error> {
    de::str_value(d, "\"static\" or \"consul\"", |s| {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    })
}

/// `lease.consul`: the Consul lease (a session plus a key held by the primary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ConsulConfig {
    /// `lease.consul.url` (required for consul): Consul's base URL. A password in the URL is
    /// used as the ACL token.
    #[serde(deserialize_with = "de::or_default")]
    pub url: String,

    /// `lease.consul.key` (required for consul): the KV key of the lease; unique per cluster.
    #[serde(deserialize_with = "de::or_default")]
    pub key: String,

    /// `lease.consul.ttl` (default `10s`, at least `10s`): the session TTL. A primary that
    /// dies is replaced after roughly this long (Consul may take up to twice as long).
    #[serde(deserialize_with = "de::or_default")]
    pub ttl: Duration,

    /// `lease.consul.lock-delay` (default `1s`, at most `60s`): after a session is lost, how
    /// long Consul keeps the key from being taken again.
    #[serde(deserialize_with = "de::or_default")]
    pub lock_delay: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            url: String::new(),
            key: String::new(),
            ttl: Duration::from_secs(10),
            lock_delay: Duration::from_secs(1),
        }
    }
}

/// `backup`: an external backup service that receives every transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// `backup.type` (default empty, no backup): `file` or `litefs-cloud`.
    #[serde(rename = "type", deserialize_with = "de::or_default")]
    pub kind: BackupType,

    /// `backup.path` (required for `file`): the directory backups are written to.
    #[serde(deserialize_with = "de::or_default")]
    pub path: PathBuf,

    /// `backup.url` (`litefs-cloud` only; empty means `https://litefs.fly.io`). The
    /// `LITEFS_CLOUD_ENDPOINT` variable overrides it.
    #[serde(deserialize_with = "de::or_default")]
    pub url: String,

    /// `backup.cluster` (`litefs-cloud` only): the cluster name at the service.
    #[serde(deserialize_with = "de::or_default")]
    pub cluster: String,

    /// `backup.auth-token` (`litefs-cloud` only): the service's token. The
    /// `LITEFS_CLOUD_TOKEN` variable overrides it.
    #[serde(deserialize_with = "de::or_default")]
    pub auth_token: String,
}

/// `log`: the process log on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct LogConfig {
    /// `log.format` (default `text`): `text` or `json`.
    #[serde(deserialize_with = "de::or_default")]
    pub format: LogFormat,

    /// `log.timestamp` (default `false`): start each line with the time.
    #[serde(deserialize_with = "de::bool")]
    pub timestamp: bool,

    /// `log.debug` (default `false`): include debug-level messages.
    #[serde(deserialize_with = "de::bool")]
    pub debug: bool,
}

/// `tracing`: a rolling on-disk log of every database operation, for debugging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct TracingConfig {
    /// `tracing.enabled` (default `true`): write the trace log, if `tracing.path` is set.
    #[serde(deserialize_with = "de::bool")]
    pub enabled: bool,

    /// `tracing.path` (default empty, no trace log): the trace log file.
    #[serde(deserialize_with = "de::or_default")]
    pub path: PathBuf,

    /// `tracing.max-size` (default `64`): megabytes per file before it is rotated.
    #[serde(deserialize_with = "de::or_default")]
    pub max_size: u64,

    /// `tracing.max-count` (default `8`): rotated files kept.
    #[serde(deserialize_with = "de::or_default")]
    pub max_count: u64,

    /// `tracing.compress` (default `true`): gzip rotated files.
    #[serde(deserialize_with = "de::bool")]
    pub compress: bool,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: true,
            path: PathBuf::new(),
            max_size: 64,
            max_count: 8,
            compress: true,
        }
    }
}

/// Implements `as_str`, `Display`, `FromStr` and serde (as the plain string) for a
/// string-valued enum. `aliases` are extra spellings accepted when parsing.
macro_rules! string_enum {
    ($name:ident, $expecting:literal, { $($variant:ident => $text:literal,)+ } aliases { $($alias:literal => $avariant:ident,)* }) => {
        impl $name {
            /// The spelling used in `litefs.yml`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    $($alias => Ok($name::$avariant),)*
                    _ => Err(format!("unknown value {s:?}, expected {}", $expecting)),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(de::StrVisitor::new($expecting, |s| s.parse()))
            }
        }
    };
}

/// `lease.type`: how the primary is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseType {
    /// `static`: a fixed primary (the node with `candidate: true`); never fails over.
    Static,
    /// `consul`: an elected primary holding a Consul lease; fails over automatically.
    Consul,
}

string_enum!(LeaseType, "\"static\" or \"consul\"", {
    Static => "static",
    Consul => "consul",
} aliases {});

/// `log.format`: how log lines are written. An empty value reads as `text`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `text` (the default): `key=value` lines.
    #[default]
    Text,
    /// `json`: one JSON object per line.
    Json,
}

string_enum!(LogFormat, "\"text\" or \"json\"", {
    Text => "text",
    Json => "json",
} aliases {
    "" => Text,
});

/// `backup.type`: which backup service, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BackupType {
    /// Empty (the default): no backup.
    #[default]
    None,
    /// `file`: copies to a local directory (`backup.path`); meant for testing.
    File,
    /// `litefs-cloud`: Fly.io's LiteFS Cloud service.
    LitefsCloud,
}

string_enum!(BackupType, "\"\", \"file\" or \"litefs-cloud\"", {
    None => "",
    File => "file",
    LitefsCloud => "litefs-cloud",
} aliases {});
