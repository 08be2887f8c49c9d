//! Loading real files: LiteFS 0.5.14's own config files, our examples in `config/`, and the
//! search order of `Config::load`.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use litefs_config::{
    find_config_file, search_paths, BackupType, Config, ConfigError, Duration, ExecCommand,
    LeaseType, LoadOptions,
};

/// LiteFS 0.5.14's config files, kept unchanged in the shared fixtures.
fn upstream(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/litefs-0.5.14-config")
        .join(name)
}

/// The example files of this repository.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// An environment with nothing set, so tests never depend on the real one.
fn no_env(_: &str) -> Option<String> {
    None
}

fn load(path: &Path) -> Config {
    let (read, config) = Config::load(
        Some(path),
        LoadOptions {
            expand_env: true,
            env: Some(&no_env),
        },
    )
    .unwrap();
    assert_eq!(read, path);
    config
}

#[test]
fn upstream_fixtures_exist() {
    for name in [
        "litefs.yml",
        "multi_exec.yml",
        "single_exec.yml",
        "tests-litefs.yml",
    ] {
        assert!(
            upstream(name).is_file(),
            "missing fixture {}",
            upstream(name).display()
        );
    }
}

#[test]
fn upstream_sample_litefs_yml() {
    let c = load(&upstream("litefs.yml"));
    // The values LiteFS's TestUnmarshalConfig checks on this file.
    assert_eq!(c.data.dir, Path::new("/var/lib/litefs"));
    assert_eq!(c.fuse.dir, Path::new("/litefs"));
    assert!(!c.fuse.debug);
    assert_eq!(c.http.addr, ":20202");
    assert_eq!(c.lease.kind, Some(LeaseType::Consul));
    assert_eq!(c.lease.hostname, "myhost");
    assert_eq!(c.lease.advertise_url, "http://myhost:20202");
    assert_eq!(c.lease.consul.url, "http://myhost:8500");
    assert_eq!(c.lease.consul.key, "litefs/primary");
    assert_eq!(c.lease.consul.ttl, Duration::from_secs(10));
    assert_eq!(c.lease.consul.lock_delay, Duration::from_secs(1));
    assert!(c.lease.candidate);
    // And a few more.
    assert!(!c.exit_on_error);
    assert_eq!(c.exec, [ExecCommand::new("myapp -addr :8081")]);
    assert_eq!(c.exec[0].args().unwrap(), ["myapp", "-addr", ":8081"]);
    assert_eq!(c.proxy.target, "localhost:8081");
    assert_eq!(c.proxy.passthrough, ["/debug/*", "*.png"]);
    assert_eq!(c.tracing.path, Path::new("/var/log/lifefs/trace.log"));
    assert_eq!(c.tracing.max_count, 10);
    // Its placeholders are well-formed, so it also validates.
    c.validate().unwrap();
}

#[test]
fn upstream_tests_litefs_yml() {
    let c = load(&upstream("tests-litefs.yml"));
    assert_eq!(c.fuse.dir, Path::new("/home/build/litefs"));
    assert!(c.fuse.debug);
    assert_eq!(c.data.dir, Path::new("/home/build/lib/litefs"));
    assert_eq!(c.lease.kind, Some(LeaseType::Static));
    assert!(c.lease.candidate);
    assert!(c.exec.is_empty());
    c.validate().unwrap();
}

#[test]
fn upstream_single_exec_yml() {
    let c = load(&upstream("single_exec.yml"));
    assert_eq!(c.exec, [ExecCommand::new("run me")]);
    // Only an exec list: it validates, but names no lease type, so no node can start from it.
    c.validate().unwrap();
    let err = c.lease_type().unwrap_err();
    assert!(
        matches!(err, ConfigError::Invalid { ref key, .. } if key == "lease.type"),
        "{err}"
    );
}

#[test]
fn upstream_multi_exec_yml() {
    let c = load(&upstream("multi_exec.yml"));
    assert_eq!(
        c.exec,
        [
            ExecCommand {
                cmd: "run me".into(),
                if_candidate: true
            },
            ExecCommand {
                cmd: "run me too".into(),
                if_candidate: false
            },
        ]
    );
    assert_eq!(c.exec[1].args().unwrap(), ["run", "me", "too"]);
    c.validate().unwrap();
    assert!(c.lease_type().is_err());
}

#[test]
fn upstream_files_round_trip() {
    for name in [
        "litefs.yml",
        "multi_exec.yml",
        "single_exec.yml",
        "tests-litefs.yml",
    ] {
        let c = load(&upstream(name));
        let again = Config::from_yaml_str(&c.to_yaml().unwrap(), name, None).unwrap();
        assert_eq!(again, c, "{name}");
    }
}

fn fly_env(region: &str) -> HashMap<&'static str, String> {
    [
        ("FLY_REGION", region.to_owned()),
        ("PRIMARY_REGION", "ams".to_owned()),
        ("HOSTNAME", "e2865d45c54d86".to_owned()),
        ("FLY_APP_NAME", "myapp".to_owned()),
        (
            "FLY_CONSUL_URL",
            "https://:secret@consul-fra.fly-shared.net/myapp-abc/".to_owned(),
        ),
    ]
    .into_iter()
    .collect()
}

fn load_with(path: &Path, vars: &HashMap<&'static str, String>) -> Config {
    let lookup = |name: &str| vars.get(name).cloned();
    Config::load(
        Some(path),
        LoadOptions {
            expand_env: true,
            env: Some(&lookup),
        },
    )
    .unwrap()
    .1
}

#[test]
fn every_example_file_loads_and_validates() {
    let mut names = Vec::new();
    for entry in fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            let c = load_with(&path, &fly_env("ams"));
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let again = Config::from_yaml_str(&c.to_yaml().unwrap(), "again", None).unwrap();
            assert_eq!(again, c, "{}", path.display());
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "consul-primary.yml",
            "consul-replica.yml",
            "fly.yml",
            "litefs.yml",
            "static-primary.yml"
        ]
    );
}

#[test]
fn reference_file_is_a_single_static_primary() {
    let c = load(&examples_dir().join("litefs.yml"));
    assert_eq!(c.lease.kind, Some(LeaseType::Static));
    assert!(c.lease.candidate);
    assert_eq!(c.fuse.dir, Path::new(".litefs/mnt"));
    assert_eq!(c.data.dir, Path::new(".litefs/data"));
    assert_eq!(c.http.addr, "127.0.0.1:20202");
    assert!(c.exec.is_empty());
    assert_eq!(c.backup.kind, BackupType::None);
    // Everything else it sets is spelled out at its default value.
    let mut defaults = Config::default();
    defaults.lease.kind = c.lease.kind;
    defaults.lease.advertise_url = c.lease.advertise_url.clone();
    defaults.fuse.dir = c.fuse.dir.clone();
    defaults.data.dir = c.data.dir.clone();
    defaults.http.addr = c.http.addr.clone();
    assert_eq!(c, defaults);
}

#[test]
fn reference_file_mentions_every_key() {
    let text = fs::read_to_string(examples_dir().join("litefs.yml")).unwrap();
    // Every key that Config writes out appears in the reference, set or commented out.
    let mut c = Config::default();
    c.lease.kind = Some(LeaseType::Static);
    for line in c.to_yaml().unwrap().lines() {
        let key = line.trim_start().split(':').next().unwrap();
        let pattern = format!("{key}:");
        assert!(
            text.contains(&pattern),
            "reference litefs.yml does not mention {key:?}"
        );
    }
}

#[test]
fn static_and_consul_examples() {
    let c = load(&examples_dir().join("static-primary.yml"));
    assert_eq!(c.lease.kind, Some(LeaseType::Static));
    assert!(c.lease.candidate);
    assert_eq!(c.http.addr, "127.0.0.1:20202");

    let p = load(&examples_dir().join("consul-primary.yml"));
    let r = load(&examples_dir().join("consul-replica.yml"));
    assert_eq!(p.lease.kind, Some(LeaseType::Consul));
    assert_eq!(r.lease.kind, Some(LeaseType::Consul));
    assert!(p.lease.candidate);
    assert!(!r.lease.candidate);
    assert_eq!(p.lease.consul.key, r.lease.consul.key);
    assert_ne!(p.fuse.dir, r.fuse.dir);
    assert_ne!(p.data.dir, r.data.dir);
    assert_ne!(p.http.addr, r.http.addr);
}

#[test]
fn fly_example_follows_the_environment() {
    let path = examples_dir().join("fly.yml");
    let primary = load_with(&path, &fly_env("ams"));
    assert!(primary.lease.candidate);
    assert_eq!(
        primary.lease.advertise_url,
        "http://e2865d45c54d86.vm.myapp.internal:20202"
    );
    assert_eq!(
        primary.lease.consul.url,
        "https://:secret@consul-fra.fly-shared.net/myapp-abc/"
    );
    assert_eq!(primary.lease.consul.key, "litefs/myapp");
    assert_eq!(primary.proxy.target, "localhost:8081");
    assert_eq!(primary.exec.len(), 2);
    assert!(primary.exec[0].if_candidate);

    let replica = load_with(&path, &fly_env("ord"));
    assert!(!replica.lease.candidate);
    replica.validate().unwrap();

    // With -no-expand-env the expression stays literal and is not a boolean.
    let err = Config::load(
        Some(&path),
        LoadOptions {
            expand_env: false,
            env: Some(&no_env),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("lease.candidate"), "{err}");
}

#[test]
fn load_names_the_file_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("litefs.yml");
    fs::write(&path, "fuse:\n  dir: /x\n  mount: /y\n").unwrap();
    let err = Config::load(Some(&path), LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: unknown key \"fuse.mount\" at line 3 column 3",
            path.display()
        )),
        "{msg}"
    );

    let missing = dir.path().join("nope.yml");
    let err = Config::load(Some(&missing), LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.yml"), "{err}");
}

#[test]
fn load_applies_backup_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("litefs.yml");
    fs::write(&path, "lease:\n  type: static\n").unwrap();
    let lookup = |name: &str| (name == "LITEFS_CLOUD_TOKEN").then(|| "tok".to_owned());
    let (_, c) = Config::load(
        Some(&path),
        LoadOptions {
            expand_env: false,
            env: Some(&lookup),
        },
    )
    .unwrap();
    assert_eq!(c.backup.kind, BackupType::LitefsCloud);
    assert_eq!(c.backup.auth_token, "tok");
}

#[test]
fn search_paths_order() {
    let paths = search_paths(Some(Path::new("/work")), Some(Path::new("/home/me")));
    assert_eq!(
        paths,
        [
            PathBuf::from("/work/litefs.yml"),
            PathBuf::from("/home/me/litefs.yml"),
            PathBuf::from("/etc/litefs.yml")
        ]
    );
    assert_eq!(
        search_paths(None, None),
        [
            PathBuf::from("litefs.yml"),
            PathBuf::from("/etc/litefs.yml")
        ]
    );
    assert_eq!(search_paths(None, Some(Path::new(""))).len(), 2);
}

#[test]
fn find_config_file_takes_the_first_existing() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, home) = (dir.path().join("cwd"), dir.path().join("home"));
    fs::create_dir_all(&cwd).unwrap();
    fs::create_dir_all(&home).unwrap();
    let candidates = vec![
        cwd.join("litefs.yml"),
        home.join("litefs.yml"),
        dir.path().join("etc-litefs.yml"),
    ];

    let err = find_config_file(&candidates).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ConfigError::NotFound { ref searched } if searched == &candidates),
        "{err:?}"
    );
    for c in &candidates {
        assert!(msg.contains(&c.display().to_string()), "{msg}");
    }

    fs::write(&candidates[2], "").unwrap();
    assert_eq!(find_config_file(&candidates).unwrap(), candidates[2]);
    fs::write(&candidates[1], "").unwrap();
    assert_eq!(find_config_file(&candidates).unwrap(), candidates[1]);
    fs::write(&candidates[0], "").unwrap();
    assert_eq!(find_config_file(&candidates).unwrap(), candidates[0]);

    // A candidate that exists but is not a readable file is not skipped: it is chosen, and
    // reading it fails with an error naming it (LiteFS stops there too).
    let not_a_file = vec![cwd.clone(), candidates[1].clone()];
    assert_eq!(find_config_file(&not_a_file).unwrap(), cwd);
    let err = Config::load(Some(&cwd), LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, ConfigError::Read { ref path, .. } if path == &cwd),
        "{err:?}"
    );
}

#[test]
fn load_without_path_uses_home_from_the_given_env() {
    // The current directory and /etc are outside the test's control, so only check that a
    // file in $HOME is found when those two have none.
    let cwd_has_one = Path::new("litefs.yml").exists() || Path::new("/etc/litefs.yml").exists();
    if cwd_has_one {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("litefs.yml"), "lease:\n  type: static\n").unwrap();
    let home = dir.path().to_string_lossy().into_owned();
    let lookup = move |name: &str| (name == "HOME").then(|| home.clone());
    let (path, c) = Config::load(
        None,
        LoadOptions {
            expand_env: true,
            env: Some(&lookup),
        },
    )
    .unwrap();
    assert_eq!(path, dir.path().join("litefs.yml"));
    assert_eq!(c.lease.kind, Some(LeaseType::Static));

    let empty = tempfile::tempdir().unwrap();
    let home = empty.path().to_string_lossy().into_owned();
    let lookup = move |name: &str| (name == "HOME").then(|| home.clone());
    let err = Config::load(
        None,
        LoadOptions {
            expand_env: true,
            env: Some(&lookup),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::NotFound { ref searched } if searched.len() == 3),
        "{err:?}"
    );
}
