//! `Config::validate`: each rule, and the key its message names.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use litefs_config::{BackupType, Config, ConfigError, Duration, ExecCommand, LeaseType};

/// A valid single static primary to break one rule at a time.
fn base() -> Config {
    Config::from_yaml_str(
        "fuse:\n  dir: .litefs/mnt\ndata:\n  dir: .litefs/data\nlease:\n  type: static\n",
        "base.yml",
        None,
    )
    .unwrap()
}

fn consul() -> Config {
    let mut c = base();
    c.lease.kind = Some(LeaseType::Consul);
    c.lease.consul.url = "http://127.0.0.1:8500".into();
    c.lease.consul.key = "litefs/test".into();
    c
}

/// Asserts that validation fails on `key` with a message containing `needle`.
#[track_caller]
fn assert_invalid(c: &Config, key: &str, needle: &str) {
    match c.validate() {
        Err(
            ref err @ ConfigError::Invalid {
                key: ref got,
                ref message,
            },
        ) => {
            assert_eq!(got, key, "{err}");
            assert!(message.contains(needle), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid configuration: {key}: ")),
                "{text}"
            );
        }
        other => panic!("expected an error on {key}, got {other:?}"),
    }
}

#[test]
fn base_configs_are_valid() {
    base().validate().unwrap();
    consul().validate().unwrap();
}

#[test]
fn fuse_and_data_dirs_are_required() {
    let mut c = base();
    c.fuse.dir = "".into();
    assert_invalid(&c, "fuse.dir", "is required");
    let mut c = base();
    c.data.dir = "".into();
    assert_invalid(&c, "data.dir", "is required");
    // Written as empty strings in the file.
    let c =
        Config::from_yaml_str("fuse:\n  dir: \"\"\nlease:\n  type: static\n", "x", None).unwrap();
    assert_invalid(&c, "fuse.dir", "is required");
}

#[test]
fn fuse_and_data_dirs_must_differ_after_cleaning() {
    for (fuse, data) in [
        ("/litefs", "/litefs"),
        ("/litefs/", "/litefs"),
        ("/a/./b", "/a/b/"),
        ("/a/x/../b", "/a/b"),
    ] {
        let mut c = base();
        c.fuse.dir = fuse.into();
        c.data.dir = data.into();
        assert_invalid(&c, "data.dir", "must differ from fuse.dir");
    }
}

#[test]
fn data_dir_must_not_be_inside_the_mount() {
    let mut c = base();
    c.fuse.dir = "/litefs".into();
    c.data.dir = "/litefs/data".into();
    assert_invalid(&c, "data.dir", "must not be inside fuse.dir");
    // The other way round is allowed, as is a shared prefix that is not a parent.
    c.fuse.dir = "/var/lib/litefs/mnt".into();
    c.data.dir = "/var/lib/litefs".into();
    c.validate().unwrap();
    c.fuse.dir = "/litefs".into();
    c.data.dir = "/litefs-data".into();
    c.validate().unwrap();
}

#[test]
fn lease_type_is_required_to_start_a_node() {
    let mut c = base();
    c.lease.kind = None;
    // A file without a lease type loads and validates (LiteFS's exec test files are such)...
    c.validate().unwrap();
    // ...but a node cannot start from it.
    let err = c.lease_type().unwrap_err();
    assert!(
        matches!(err, ConfigError::Invalid { ref key, .. } if key == "lease.type"),
        "{err}"
    );
    let c = Config::from_yaml_str("lease:\n  type: \"\"\n", "x", None).unwrap();
    let err = c.lease_type().unwrap_err();
    assert!(
        err.to_string().contains("\"static\" or \"consul\""),
        "{err}"
    );
    assert_eq!(base().lease_type().unwrap(), LeaseType::Static);
}

#[test]
fn databases_only_on_non_candidates() {
    let mut c = base();
    c.lease.databases = vec!["db".into()];
    assert_invalid(
        &c,
        "lease.databases",
        "can only be set on non-candidate nodes",
    );
    c.lease.candidate = false;
    c.lease.advertise_url = "http://primary:20202".into();
    c.validate().unwrap();
}

#[test]
fn static_replica_needs_the_primary_url() {
    let mut c = base();
    c.lease.candidate = false;
    assert_invalid(&c, "lease.advertise-url", "static replica");
    c.lease.advertise_url = "http://primary:20202".into();
    c.validate().unwrap();
}

#[test]
fn advertise_url_must_be_http() {
    let mut c = base();
    c.lease.advertise_url = "primary:20202".into();
    assert_invalid(&c, "lease.advertise-url", "http:// or https://");
}

#[test]
fn consul_needs_url_and_key() {
    let mut c = consul();
    c.lease.consul.url.clear();
    assert_invalid(&c, "lease.consul.url", "is required");
    let mut c = consul();
    c.lease.consul.url = "127.0.0.1:8500".into();
    assert_invalid(&c, "lease.consul.url", "http:// or https://");
    let mut c = consul();
    c.lease.consul.key.clear();
    assert_invalid(&c, "lease.consul.key", "is required");
    // Static leases ignore the consul section.
    let mut c = base();
    c.lease.consul.ttl = Duration::ZERO;
    c.validate().unwrap();
}

#[test]
fn consul_ttl_and_lock_delay_limits() {
    let mut c = consul();
    c.lease.consul.ttl = Duration::from_secs(9);
    assert_invalid(&c, "lease.consul.ttl", "between 10s and 24h0m0s");
    c.lease.consul.ttl = Duration::from_secs(24 * 3600 + 1);
    assert_invalid(&c, "lease.consul.ttl", "not 24h0m1s");
    c.lease.consul.ttl = Duration::from_secs(10);
    c.lease.consul.lock_delay = Duration::from_secs(61);
    assert_invalid(&c, "lease.consul.lock-delay", "at most 1m0s");
    c.lease.consul.lock_delay = Duration::ZERO;
    c.validate().unwrap();
}

#[test]
fn http_addr_is_required() {
    let mut c = base();
    c.http.addr.clear();
    assert_invalid(&c, "http.addr", "is required");
}

#[test]
fn exec_commands_must_split() {
    let mut c = base();
    c.exec = vec![ExecCommand::new("migrate"), ExecCommand::new("serve 'oops")];
    assert_invalid(&c, "exec[1].cmd", "unterminated single quote");
    c.exec = vec![ExecCommand::new("   ")];
    assert_invalid(&c, "exec[0].cmd", "empty");
    c.exec = vec![ExecCommand::new("a && b")];
    assert_invalid(&c, "exec[0].cmd", "sh -c");
}

#[test]
fn proxy_target_needs_addr_and_db() {
    let mut c = base();
    c.proxy.target = "localhost:8081".into();
    assert_invalid(&c, "proxy.addr", "proxy.target");
    c.proxy.addr = ":8080".into();
    assert_invalid(&c, "proxy.db", "proxy.target");
    c.proxy.db = "db".into();
    c.validate().unwrap();
}

#[test]
fn backup_settings() {
    let mut c = base();
    c.backup.kind = BackupType::File;
    assert_invalid(&c, "backup.path", "is required");
    c.backup.path = "/backups".into();
    c.validate().unwrap();

    let mut c = base();
    c.backup.kind = BackupType::LitefsCloud;
    assert_invalid(&c, "backup.auth-token", "LITEFS_CLOUD_TOKEN");
    c.apply_env_overrides(&|name| (name == "LITEFS_CLOUD_TOKEN").then(|| "t".to_owned()));
    c.validate().unwrap();
}

#[test]
fn http_auth_token_must_fit_a_header() {
    let mut c = base();
    c.http.auth_token = "a-token_with.chars~0123".into();
    c.validate().unwrap();
    for bad in ["two words", "tab\there", "new\nline", "caf\u{e9}"] {
        let mut c = base();
        c.http.auth_token = bad.into();
        assert_invalid(&c, "http.auth-token", "printable ASCII");
        // The message names the character, never the token.
        let text = c.validate().unwrap_err().to_string();
        assert!(!text.contains(bad), "{text}");
    }
}
