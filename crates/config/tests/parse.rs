//! Parsing `litefs.yml` text: keys, defaults, value forms, errors and the YAML round trip.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use litefs_config::{BackupType, Config, ConfigError, Duration, ExecCommand, LeaseType, LogFormat};

fn parse(text: &str) -> Config {
    Config::from_yaml_str(text, "litefs.yml", None).unwrap()
}

fn parse_err(text: &str) -> ConfigError {
    Config::from_yaml_str(text, "litefs.yml", None).unwrap_err()
}

#[test]
fn empty_text_gives_litefs_defaults() {
    for text in ["", "\n", "# nothing but a comment\n", "{}"] {
        assert_eq!(parse(text), Config::default(), "{text:?}");
    }
}

#[test]
fn defaults_match_litefs() {
    let c = Config::default();
    assert!(c.exit_on_error);
    assert!(!c.skip_sync);
    assert!(!c.strict_verify);
    assert!(c.exec.is_empty());

    assert_eq!(c.data.dir, Path::new("/var/lib/litefs"));
    assert!(c.data.compress);
    assert_eq!(c.data.retention, Duration::from_secs(600));
    assert_eq!(c.data.retention_monitor_interval, Duration::from_secs(60));

    assert_eq!(c.fuse.dir, Path::new("/litefs"));
    assert!(!c.fuse.allow_other);
    assert!(!c.fuse.debug);

    assert_eq!(c.http.addr, ":20202");
    assert_eq!(c.http.snapshot_timeout, Duration::ZERO);
    assert_eq!(c.http.auth_token, "");

    assert_eq!(c.proxy.addr, "");
    assert_eq!(c.proxy.target, "");
    assert_eq!(c.proxy.db, "");
    assert_eq!(c.proxy.max_lag, Duration::from_secs(10));
    assert!(!c.proxy.debug);
    assert!(c.proxy.passthrough.is_empty());
    assert!(c.proxy.always_forward.is_empty());
    assert_eq!(c.proxy.primary_redirect_timeout, Duration::from_secs(5));
    assert_eq!(c.proxy.read_timeout, Duration::ZERO);
    assert_eq!(c.proxy.read_header_timeout, Duration::from_secs(10));
    assert_eq!(c.proxy.write_timeout, Duration::ZERO);
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(30));

    assert_eq!(c.lease.kind, None);
    assert_eq!(c.lease.hostname, "");
    assert_eq!(c.lease.advertise_url, "");
    assert!(c.lease.candidate);
    assert!(!c.lease.promote);
    assert_eq!(c.lease.reconnect_delay, Duration::from_secs(1));
    assert_eq!(c.lease.demote_delay, Duration::from_secs(10));
    assert!(c.lease.databases.is_empty());
    assert_eq!(c.lease.consul.url, "");
    assert_eq!(c.lease.consul.key, "");
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(10));
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(1));

    assert_eq!(c.backup.kind, BackupType::None);
    assert_eq!(c.backup.path, Path::new(""));
    assert_eq!(c.backup.url, "");
    assert_eq!(c.backup.cluster, "");
    assert_eq!(c.backup.auth_token, "");

    assert_eq!(c.log.format, LogFormat::Text);
    assert!(!c.log.timestamp);
    assert!(!c.log.debug);

    assert!(c.tracing.enabled);
    assert_eq!(c.tracing.path, Path::new(""));
    assert_eq!(c.tracing.max_size, 64);
    assert_eq!(c.tracing.max_count, 8);
    assert!(c.tracing.compress);
}

#[test]
fn absent_keys_keep_defaults_inside_a_section() {
    let c = parse("data:\n  dir: /data\nlease:\n  type: consul\n  consul:\n    key: k\n");
    assert_eq!(c.data.dir, Path::new("/data"));
    assert!(c.data.compress);
    assert_eq!(c.data.retention, Duration::from_secs(600));
    assert!(c.lease.candidate);
    assert_eq!(c.lease.consul.key, "k");
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(10));
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(1));
}

#[test]
fn every_key_is_read() {
    let text = r#"
exit-on-error: false
skip-sync: true
strict-verify: true
exec: "app serve"
data:
  dir: /d
  compress: false
  retention: 1h
  retention-monitor-interval: 30s
fuse:
  dir: /f
  allow-other: true
  debug: true
http:
  addr: "127.0.0.1:1"
  snapshot-timeout: 2m
proxy:
  addr: ":8080"
  target: "localhost:8081"
  db: "my.db"
  max-lag: 3s
  debug: true
  passthrough: ["/debug/*", "*.png"]
  always-forward: ["/admin/*"]
  primary-redirect-timeout: 7s
  read-timeout: 1s
  read-header-timeout: 2s
  write-timeout: 3s
  idle-timeout: 4s
lease:
  type: consul
  hostname: h
  advertise-url: "http://h:20202"
  candidate: false
  promote: true
  reconnect-delay: 100ms
  demote-delay: 20s
  databases: ["a.db", "b.db"]
  consul:
    url: "http://consul:8500"
    key: "litefs/x"
    ttl: 15s
    lock-delay: 2s
backup:
  type: file
  path: /backup
  url: "https://b"
  cluster: c
  auth-token: t
log:
  format: json
  timestamp: true
  debug: true
tracing:
  enabled: false
  path: /t.log
  max-size: 1
  max-count: 2
  compress: false
"#;
    let c = parse(text);
    assert!(!c.exit_on_error && c.skip_sync && c.strict_verify);
    assert_eq!(c.exec, [ExecCommand::new("app serve")]);
    assert_eq!(c.data.dir, Path::new("/d"));
    assert!(!c.data.compress);
    assert_eq!(c.data.retention, Duration::from_secs(3600));
    assert_eq!(c.data.retention_monitor_interval, Duration::from_secs(30));
    assert_eq!(c.fuse.dir, Path::new("/f"));
    assert!(c.fuse.allow_other && c.fuse.debug);
    assert_eq!(c.http.addr, "127.0.0.1:1");
    assert_eq!(c.http.snapshot_timeout, Duration::from_secs(120));
    assert_eq!(c.proxy.addr, ":8080");
    assert_eq!(c.proxy.target, "localhost:8081");
    assert_eq!(c.proxy.db, "my.db");
    assert_eq!(c.proxy.max_lag, Duration::from_secs(3));
    assert!(c.proxy.debug);
    assert_eq!(c.proxy.passthrough, ["/debug/*", "*.png"]);
    assert_eq!(c.proxy.always_forward, ["/admin/*"]);
    assert_eq!(c.proxy.primary_redirect_timeout, Duration::from_secs(7));
    assert_eq!(c.proxy.read_timeout, Duration::from_secs(1));
    assert_eq!(c.proxy.read_header_timeout, Duration::from_secs(2));
    assert_eq!(c.proxy.write_timeout, Duration::from_secs(3));
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(4));
    assert_eq!(c.lease.kind, Some(LeaseType::Consul));
    assert_eq!(c.lease.hostname, "h");
    assert_eq!(c.lease.advertise_url, "http://h:20202");
    assert!(!c.lease.candidate && c.lease.promote);
    assert_eq!(c.lease.reconnect_delay, Duration::from_millis(100));
    assert_eq!(c.lease.demote_delay, Duration::from_secs(20));
    assert_eq!(c.lease.databases, ["a.db", "b.db"]);
    assert_eq!(c.lease.consul.url, "http://consul:8500");
    assert_eq!(c.lease.consul.key, "litefs/x");
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(15));
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(2));
    assert_eq!(c.backup.kind, BackupType::File);
    assert_eq!(c.backup.path, Path::new("/backup"));
    assert_eq!(c.backup.url, "https://b");
    assert_eq!(c.backup.cluster, "c");
    assert_eq!(c.backup.auth_token, "t");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.timestamp && c.log.debug);
    assert!(!c.tracing.enabled);
    assert_eq!(c.tracing.path, Path::new("/t.log"));
    assert_eq!(c.tracing.max_size, 1);
    assert_eq!(c.tracing.max_count, 2);
    assert!(!c.tracing.compress);

    // Everything set to a non-default value round-trips too.
    assert_eq!(parse(&c.to_yaml().unwrap()), c);
}

#[test]
fn unknown_top_level_key_names_key_and_line() {
    let err = parse_err("fuse:\n  dir: /litefs\nfoo: 1\n");
    match &err {
        ConfigError::UnknownKey {
            file,
            key,
            line,
            column,
            ..
        } => {
            assert_eq!(file, "litefs.yml");
            assert_eq!(key, "foo");
            assert_eq!((*line, *column), (3, 1));
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("litefs.yml: unknown key \"foo\" at line 3 column 1"),
        "{msg}"
    );
    assert!(
        msg.contains("`exit-on-error`"),
        "lists the allowed keys: {msg}"
    );
}

#[test]
fn unknown_nested_key_names_dotted_key_and_line() {
    // LiteFS's own ErrUnknownField case.
    let msg = parse_err("data:\n  bar: 123").to_string();
    assert!(
        msg.starts_with("litefs.yml: unknown key \"data.bar\" at line 2 column 3"),
        "{msg}"
    );

    let msg =
        parse_err("lease:\n  type: consul\n  consul:\n    url: x\n    tll: 10s\n").to_string();
    assert!(
        msg.starts_with("litefs.yml: unknown key \"lease.consul.tll\" at line 5 column 5"),
        "{msg}"
    );
    assert!(msg.contains("`ttl`"), "{msg}");

    let msg = parse_err("exec:\n  - cmd: a\n  - cmd: b\n    if_candidate: true\n").to_string();
    assert!(
        msg.starts_with("litefs.yml: unknown key \"exec[1].if_candidate\" at line 4 column 5"),
        "{msg}"
    );
}

#[test]
fn keys_are_case_and_spelling_sensitive() {
    assert!(matches!(
        parse_err("Fuse:\n  dir: /x\n"),
        ConfigError::UnknownKey { .. }
    ));
    assert!(matches!(
        parse_err("exit_on_error: true\n"),
        ConfigError::UnknownKey { .. }
    ));
}

#[test]
fn syntax_and_type_errors_name_file_and_line() {
    let msg = parse_err("fuse:\n  dir: [unclosed\n").to_string();
    assert!(msg.starts_with("litefs.yml: line "), "{msg}");

    let err = parse_err("tracing:\n  max-size: big\n");
    let msg = err.to_string();
    assert!(
        matches!(err, ConfigError::Parse { line: Some(2), .. }),
        "{err:?}"
    );
    assert!(msg.contains("tracing.max-size"), "{msg}");

    let msg = parse_err("fuse:\n  debug: maybe\n").to_string();
    assert!(
        msg.contains("line 2") && msg.contains("fuse.debug"),
        "{msg}"
    );

    let msg = parse_err("proxy:\n  passthrough: \"/x\"\n").to_string();
    assert!(msg.contains("proxy.passthrough"), "{msg}");

    let msg = parse_err("data: [1]\n").to_string();
    assert!(msg.contains("line 1") && msg.contains("data"), "{msg}");
}

#[test]
fn invalid_durations_name_key_value_and_line() {
    let err = parse_err("lease:\n  type: consul\n  consul:\n    ttl: 10\n");
    let msg = err.to_string();
    assert!(
        matches!(err, ConfigError::Parse { line: Some(4), .. }),
        "{err:?}"
    );
    assert!(msg.contains("lease.consul.ttl"), "{msg}");
    assert!(
        msg.contains("\"10\"") && msg.contains("missing unit"),
        "{msg}"
    );

    let msg = parse_err("data:\n  retention: -5m\n").to_string();
    assert!(
        msg.contains("data.retention") && msg.contains("\"-5m\"") && msg.contains("negative"),
        "{msg}"
    );

    let msg = parse_err("proxy:\n  max-lag: 10 seconds\n").to_string();
    assert!(
        msg.contains("proxy.max-lag") && msg.contains("\"10 seconds\""),
        "{msg}"
    );
}

#[test]
fn durations_accept_go_forms() {
    let c = parse(
        "data:\n  retention: 1h30m\n  retention-monitor-interval: \"0\"\nproxy:\n  max-lag: 1.5s\n  read-timeout: 0\n  write-timeout: 500ms\n  idle-timeout: 100us\n",
    );
    assert_eq!(c.data.retention, Duration::from_secs(5400));
    assert_eq!(c.data.retention_monitor_interval, Duration::ZERO);
    assert_eq!(c.proxy.max_lag, Duration::from_millis(1500));
    assert_eq!(c.proxy.read_timeout, Duration::ZERO);
    assert_eq!(c.proxy.write_timeout, Duration::from_millis(500));
    assert_eq!(
        c.proxy.idle_timeout,
        Duration::from_std(std::time::Duration::from_micros(100))
    );
}

#[test]
fn exec_forms() {
    // LiteFS's TestConfig cases.
    assert!(parse("exec:\n").exec.is_empty());
    assert_eq!(parse("exec: \"run me\"").exec, [ExecCommand::new("run me")]);
    assert_eq!(parse("exec: run me").exec, [ExecCommand::new("run me")]);

    // Empty string and empty list: no command.
    assert!(parse("exec: \"\"").exec.is_empty());
    assert!(parse("exec: []").exec.is_empty());

    let c = parse("exec:\n  - cmd: \"migrate up\"\n    if-candidate: true\n  - cmd: serve\n");
    assert_eq!(
        c.exec,
        [
            ExecCommand {
                cmd: "migrate up".into(),
                if_candidate: true
            },
            ExecCommand {
                cmd: "serve".into(),
                if_candidate: false
            },
        ]
    );
    assert_eq!(c.exec[0].args().unwrap(), ["migrate", "up"]);

    // Flow style works too.
    let c = parse("exec: [{cmd: a}, {cmd: 'b c', if-candidate: yes}]");
    assert_eq!(
        c.exec[1],
        ExecCommand {
            cmd: "b c".into(),
            if_candidate: true
        }
    );

    // Anything else is an error naming `exec`.
    let msg = parse_err("exec: 5\n").to_string();
    assert!(
        msg.contains("exec") && msg.contains("command string or a list"),
        "{msg}"
    );
    let msg = parse_err("exec:\n  cmd: a\n").to_string();
    assert!(msg.contains("exec"), "{msg}");
}

#[test]
fn exec_args_split_like_a_shell() {
    let cmd = ExecCommand::new(r#"myapp -addr :8081 --name "my app" 'x y'"#);
    assert_eq!(
        cmd.args().unwrap(),
        ["myapp", "-addr", ":8081", "--name", "my app", "x y"]
    );
    let err = ExecCommand::new("myapp 'oops").args().unwrap_err();
    assert!(
        err.to_string().contains("unterminated single quote"),
        "{err}"
    );
}

#[test]
fn lease_type_values() {
    assert_eq!(
        parse("lease:\n  type: static\n").lease.kind,
        Some(LeaseType::Static)
    );
    assert_eq!(
        parse("lease:\n  type: \"consul\"\n").lease.kind,
        Some(LeaseType::Consul)
    );
    assert_eq!(parse("lease:\n  type: \"\"\n").lease.kind, None);
    assert_eq!(parse("lease:\n  type:\n").lease.kind, None);
    assert_eq!(parse("lease: {}\n").lease.kind, None);

    let err = parse_err("lease:\n  type: etcd\n");
    let msg = err.to_string();
    assert!(
        matches!(err, ConfigError::Parse { line: Some(2), .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("lease.type") && msg.contains("\"etcd\""),
        "{msg}"
    );
    // Case matters, as in LiteFS.
    assert!(Config::from_yaml_str("lease:\n  type: Consul\n", "x", None).is_err());
}

#[test]
fn log_and_backup_type_values() {
    assert_eq!(parse("log:\n  format: json\n").log.format, LogFormat::Json);
    assert_eq!(parse("log:\n  format: \"\"\n").log.format, LogFormat::Text);
    assert!(parse_err("log:\n  format: xml\n")
        .to_string()
        .contains("log.format"));

    assert_eq!(
        parse("backup:\n  type: litefs-cloud\n").backup.kind,
        BackupType::LitefsCloud
    );
    assert_eq!(
        parse("backup:\n  type: \"\"\n").backup.kind,
        BackupType::None
    );
    assert!(parse_err("backup:\n  type: s3\n")
        .to_string()
        .contains("backup.type"));
}

#[test]
fn bools_accept_yaml_1_1_spellings_like_yaml_v3() {
    for (text, want) in [
        ("yes", true),
        ("on", true),
        ("Y", true),
        ("True", true),
        ("no", false),
        ("off", false),
        ("FALSE", false),
    ] {
        let c = parse(&format!("skip-sync: {text}\nlease:\n  candidate: {text}\n"));
        assert_eq!(c.skip_sync, want, "{text}");
        assert_eq!(c.lease.candidate, want, "{text}");
    }
}

#[test]
fn scalars_are_read_as_strings_where_strings_are_expected() {
    let c = parse("proxy:\n  db: 123\n  target: true\nlease:\n  hostname: 1.10\n");
    assert_eq!(c.proxy.db, "123");
    assert_eq!(c.proxy.target, "true");
    assert_eq!(c.lease.hostname, "1.10");
}

#[test]
fn keys_without_values_keep_their_defaults() {
    // yaml.v3 leaves a field alone when its value is null; so do we.
    let text = "exit-on-error:\ndata:\n  dir:\n  compress: ~\n  retention: null\nfuse:\nhttp:\n  addr:\nproxy:\n  max-lag:\n  passthrough:\nlease:\n  type: static\n  candidate:\n  hostname:\n  consul:\n    ttl:\nlog:\n  format:\ntracing:\n  max-size:\n  enabled:\n";
    let mut want = Config::default();
    want.lease.kind = Some(LeaseType::Static);
    assert_eq!(parse(text), want);
}

#[test]
fn null_keys_next_to_set_keys() {
    let c = parse("data:\n  dir: /x\n  retention:\nlease:\n  type: static\n  candidate: false\n  reconnect-delay:\n");
    assert_eq!(c.data.dir, Path::new("/x"));
    assert_eq!(c.data.retention, Duration::from_secs(600));
    assert!(!c.lease.candidate);
    assert_eq!(c.lease.reconnect_delay, Duration::from_secs(1));
}

#[test]
fn expansion_happens_before_parsing() {
    let vars: HashMap<&str, &str> = [
        ("FLY_REGION", "ams"),
        ("PRIMARY_REGION", "ams"),
        ("HOSTNAME", "abc123"),
        ("FLY_APP_NAME", "myapp"),
        ("TTL", "20s"),
    ]
    .into_iter()
    .collect();
    let lookup = |name: &str| vars.get(name).map(|v| (*v).to_owned());
    let text = "lease:\n  type: consul\n  candidate: ${FLY_REGION == PRIMARY_REGION}\n  advertise-url: \"http://${HOSTNAME}.vm.${FLY_APP_NAME}.internal:20202\"\n  consul:\n    key: \"litefs/$FLY_APP_NAME\"\n    ttl: ${TTL}\n    lock-delay: ${UNSET_DELAY}\n";
    let c = Config::from_yaml_str(text, "fly.yml", Some(&lookup)).unwrap();
    assert!(c.lease.candidate);
    assert_eq!(
        c.lease.advertise_url,
        "http://abc123.vm.myapp.internal:20202"
    );
    assert_eq!(c.lease.consul.key, "litefs/myapp");
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(20));
    // An unset variable leaves `lock-delay:` empty, which keeps the default.
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(1));

    // Without an environment the text is parsed as written.
    let err = Config::from_yaml_str(text, "fly.yml", None).unwrap_err();
    assert!(err.to_string().contains("lease.candidate"), "{err}");
}

#[test]
fn round_trip_preserves_config_and_key_names() {
    let c = Config::default();
    let yaml = c.to_yaml().unwrap();
    assert_eq!(parse(&yaml), c);
    for key in [
        "exit-on-error: true",
        "retention: 10m0s",
        "retention-monitor-interval: 1m0s",
        "dir: /var/lib/litefs",
        "addr: :20202",
        "max-lag: 10s",
        "primary-redirect-timeout: 5s",
        "read-header-timeout: 10s",
        "idle-timeout: 30s",
        "reconnect-delay: 1s",
        "demote-delay: 10s",
        "lock-delay: 1s",
        "format: text",
        "max-size: 64",
        "max-count: 8",
    ] {
        assert!(yaml.contains(key), "{key:?} missing from:\n{yaml}");
    }
    // An unset lease type is left out rather than written as null.
    assert!(!yaml.contains("type: null"), "{yaml}");

    let mut c = parse("exec:\n  - cmd: a b\n    if-candidate: true\n  - cmd: c\nlease:\n  type: consul\n  consul:\n    ttl: 1h1m1.5s\nbackup:\n  type: litefs-cloud\n");
    c.proxy.idle_timeout = Duration::from_std(std::time::Duration::from_nanos(1_500));
    let yaml = c.to_yaml().unwrap();
    assert!(
        yaml.contains("type: consul") && yaml.contains("ttl: 1h1m1.5s"),
        "{yaml}"
    );
    assert_eq!(parse(&yaml), c);
}

#[test]
fn env_overrides_for_backup() {
    let mut c = Config::default();
    c.apply_env_overrides(&|name| match name {
        "LITEFS_CLOUD_TOKEN" => Some("tok".into()),
        "LITEFS_CLOUD_ENDPOINT" => Some("https://example.test".into()),
        _ => None,
    });
    assert_eq!(c.backup.kind, BackupType::LitefsCloud);
    assert_eq!(c.backup.auth_token, "tok");
    assert_eq!(c.backup.url, "https://example.test");

    // An explicit type is kept; empty variables change nothing.
    let mut c = parse("backup:\n  type: file\n  path: /b\n");
    c.apply_env_overrides(&|name| (name == "LITEFS_CLOUD_TOKEN").then(|| "tok".to_owned()));
    assert_eq!(c.backup.kind, BackupType::File);
    assert_eq!(c.backup.auth_token, "tok");
    let mut c = Config::default();
    c.apply_env_overrides(&|_| Some(String::new()));
    assert_eq!(c, Config::default());
}

#[test]
fn http_auth_token_is_read_expanded_and_off_by_default() {
    // A LiteFS file has no such key: it loads with the token off.
    assert_eq!(parse("http:\n  addr: \":20202\"\n").http.auth_token, "");
    assert_eq!(
        parse("http:\n  auth-token: s3cret-Token_1\n")
            .http
            .auth_token,
        "s3cret-Token_1"
    );
    assert_eq!(parse("http:\n  auth-token:\n").http.auth_token, "");
    let lookup = |name: &str| (name == "API_TOKEN").then(|| "from-env".to_owned());
    let c = Config::from_yaml_str(
        "http:\n  auth-token: \"${API_TOKEN}\"\n",
        "litefs.yml",
        Some(&lookup),
    )
    .unwrap();
    assert_eq!(c.http.auth_token, "from-env");
    // An unset variable leaves it off.
    let c = Config::from_yaml_str(
        "http:\n  auth-token: \"${UNSET_TOKEN}\"\n",
        "litefs.yml",
        Some(&lookup),
    )
    .unwrap();
    assert_eq!(c.http.auth_token, "");
    // It survives the YAML round trip.
    let c = parse("http:\n  auth-token: abc\n");
    assert_eq!(
        Config::from_yaml_str(&c.to_yaml().unwrap(), "again", None).unwrap(),
        c
    );
}
