//! The checks a configuration must pass before a node starts.

use std::path::{Component, Path, PathBuf};

use crate::{BackupType, Config, ConfigError, Duration, LeaseType};

/// Consul refuses session TTLs below 10 seconds.
const CONSUL_MIN_TTL: Duration = Duration::from_secs(10);
/// Consul refuses session TTLs above 24 hours.
const CONSUL_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Consul refuses session lock delays above 60 seconds.
const CONSUL_MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

impl Config {
    /// Checks the rules a node needs before it starts, returning the first broken one.
    ///
    /// LiteFS's own checks:
    ///
    /// * `fuse.dir` and `data.dir` are set and are not the same directory (compared after
    ///   lexical clean-up: `a/./b/` equals `a/b`).
    /// * `lease.type`, when set, is `static` or `consul` (other values are already parse
    ///   errors). Whether it is set at all is checked by [`Config::lease_type`], which the
    ///   commands that start a node call: LiteFS also loads files without a lease section (its
    ///   `exec` test files) and only refuses them when it starts the lease.
    /// * `lease.databases` is only set when `lease.candidate` is false.
    ///
    /// Checks LiteFS makes later, at start-up, or never, made here so a bad file fails at once:
    ///
    /// * `data.dir` is not inside `fuse.dir` (the mount would hide it).
    /// * `http.addr` is set.
    /// * `http.auth-token`, when set, is printable ASCII without spaces (it travels in an HTTP
    ///   header).
    /// * Every `exec` command is non-empty and splits into arguments ([`crate::split_args`]).
    /// * `lease.advertise-url`, when set, is an `http://` or `https://` URL.
    /// * consul: `lease.consul.url` (an `http://` or `https://` URL) and `lease.consul.key` are
    ///   set; `lease.consul.ttl` is between 10s and 24h and `lease.consul.lock-delay` at most
    ///   60s, the limits Consul itself enforces when the session is created.
    /// * static: a node with `candidate: false` sets `lease.advertise-url`, since it is the
    ///   only way a replica learns where the primary is.
    /// * `proxy.target` set requires `proxy.addr` and `proxy.db`.
    /// * `backup.type: file` requires `backup.path`; `litefs-cloud` requires
    ///   `backup.auth-token` (or `LITEFS_CLOUD_TOKEN`, see [`Config::apply_env_overrides`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_dirs()?;

        if self.http.addr.trim().is_empty() {
            return Err(ConfigError::invalid(
                "http.addr",
                "is required (LiteFS uses \":20202\")",
            ));
        }

        if let Some(c) = self.http.auth_token.chars().find(|c| !c.is_ascii_graphic()) {
            // The character, never the token.
            return Err(ConfigError::invalid(
                "http.auth-token",
                format!(
                    "must be printable ASCII without spaces (it travels in an HTTP header); \
                     it holds {c:?}"
                ),
            ));
        }

        for (i, exec) in self.exec.iter().enumerate() {
            let key = format!("exec[{i}].cmd");
            match exec.args() {
                Ok(args) if args.is_empty() => {
                    return Err(ConfigError::invalid(key, "command is empty"))
                }
                Ok(_) => {}
                Err(ConfigError::InvalidCommand { command, reason }) => {
                    return Err(ConfigError::invalid(
                        key,
                        format!("cannot split {command:?}: {reason}"),
                    ));
                }
                Err(e) => return Err(ConfigError::invalid(key, e.to_string())),
            }
        }

        self.validate_lease()?;
        self.validate_proxy()?;
        self.validate_backup()
    }

    fn validate_dirs(&self) -> Result<(), ConfigError> {
        if self.fuse.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "fuse.dir",
                "is required (the mount directory)",
            ));
        }
        if self.data.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "data.dir",
                "is required (the internal data directory)",
            ));
        }
        let fuse = clean_path(&self.fuse.dir);
        let data = clean_path(&self.data.dir);
        if fuse == data {
            return Err(ConfigError::invalid(
                "data.dir",
                format!("must differ from fuse.dir (both are {})", fuse.display()),
            ));
        }
        if data.starts_with(&fuse) {
            return Err(ConfigError::invalid(
                "data.dir",
                format!(
                    "must not be inside fuse.dir ({} is inside {}; the mount would hide it)",
                    data.display(),
                    fuse.display()
                ),
            ));
        }
        Ok(())
    }

    /// The lease type, which a node needs to start: `static` or `consul`.
    pub fn lease_type(&self) -> Result<LeaseType, ConfigError> {
        self.lease.kind.ok_or_else(|| {
            ConfigError::invalid("lease.type", "is required: \"static\" or \"consul\"")
        })
    }

    fn validate_lease(&self) -> Result<(), ConfigError> {
        let lease = &self.lease;
        if lease.candidate && !lease.databases.is_empty() {
            return Err(ConfigError::invalid(
                "lease.databases",
                "can only be set on non-candidate nodes (set lease.candidate: false)",
            ));
        }
        if !lease.advertise_url.is_empty() && !is_http_url(&lease.advertise_url) {
            return Err(ConfigError::invalid(
                "lease.advertise-url",
                format!(
                    "must be an http:// or https:// URL, not {:?}",
                    lease.advertise_url
                ),
            ));
        }
        match lease.kind {
            None => {}
            Some(LeaseType::Static) if !lease.candidate && lease.advertise_url.is_empty() => {
                return Err(ConfigError::invalid(
                    "lease.advertise-url",
                    "is required for a static replica (lease.candidate: false): it is the \
                     primary's API URL",
                ));
            }
            Some(LeaseType::Static) => {}
            Some(LeaseType::Consul) => {
                let consul = &lease.consul;
                if consul.url.is_empty() {
                    return Err(ConfigError::invalid(
                        "lease.consul.url",
                        "is required for lease.type consul",
                    ));
                }
                if !is_http_url(&consul.url) {
                    return Err(ConfigError::invalid(
                        "lease.consul.url",
                        format!("must be an http:// or https:// URL, not {:?}", consul.url),
                    ));
                }
                if consul.key.is_empty() {
                    return Err(ConfigError::invalid(
                        "lease.consul.key",
                        "is required for lease.type consul",
                    ));
                }
                if consul.ttl < CONSUL_MIN_TTL || consul.ttl > CONSUL_MAX_TTL {
                    return Err(ConfigError::invalid(
                        "lease.consul.ttl",
                        format!("must be between {CONSUL_MIN_TTL} and {CONSUL_MAX_TTL} (Consul's limits), not {}", consul.ttl),
                    ));
                }
                if consul.lock_delay > CONSUL_MAX_LOCK_DELAY {
                    return Err(ConfigError::invalid(
                        "lease.consul.lock-delay",
                        format!(
                            "must be at most {CONSUL_MAX_LOCK_DELAY} (Consul's limit), not {}",
                            consul.lock_delay
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_proxy(&self) -> Result<(), ConfigError> {
        let proxy = &self.proxy;
        if proxy.target.is_empty() {
            return Ok(());
        }
        if proxy.addr.is_empty() {
            return Err(ConfigError::invalid(
                "proxy.addr",
                "is required when proxy.target is set",
            ));
        }
        if proxy.db.is_empty() {
            return Err(ConfigError::invalid(
                "proxy.db",
                "is required when proxy.target is set",
            ));
        }
        Ok(())
    }

    fn validate_backup(&self) -> Result<(), ConfigError> {
        let backup = &self.backup;
        match backup.kind {
            BackupType::None => Ok(()),
            BackupType::File if backup.path.as_os_str().is_empty() => Err(ConfigError::invalid(
                "backup.path",
                "is required for backup.type file",
            )),
            BackupType::File => Ok(()),
            BackupType::LitefsCloud if backup.auth_token.is_empty() => Err(ConfigError::invalid(
                "backup.auth-token",
                "is required for backup.type litefs-cloud (or set LITEFS_CLOUD_TOKEN)",
            )),
            BackupType::LitefsCloud => Ok(()),
        }
    }
}

fn is_http_url(s: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        s.len() > scheme.len()
            && s.get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
    })
}

/// Lexical clean-up like Go's `filepath.Clean`: drops `.` parts and repeated or trailing
/// slashes, and resolves `..` against the part before it where there is one.
fn clean_path(path: &Path) -> PathBuf {
    let mut parts: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => parts.push(component),
            },
            _ => parts.push(component),
        }
    }
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_is_lexical() {
        let c = |s: &str| clean_path(Path::new(s)).display().to_string();
        assert_eq!(c("/litefs/"), "/litefs");
        assert_eq!(c("/a/./b//c/"), "/a/b/c");
        assert_eq!(c("/a/b/../c"), "/a/c");
        assert_eq!(c("/../a"), "/a");
        assert_eq!(c("./.litefs/mnt"), ".litefs/mnt");
        assert_eq!(c("../x/../y"), "../y");
        assert_eq!(c("."), ".");
        assert_eq!(c("a/.."), ".");
    }

    #[test]
    fn http_url_check() {
        assert!(is_http_url("http://x:20202"));
        assert!(is_http_url("HTTPS://consul.example"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("consul:8500"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("htt\u{e9}://x"));
    }
}
