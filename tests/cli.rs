//! The `litefs-rs` command line, run as a user runs it: LTX tools on LiteFS's own files, the
//! `config` command on upstream and example configuration files, and the single-dash flag
//! spellings Dockerfiles use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::{fixtures, litefs, litefs_in, sqlite3};

fn all_fixture_ltx_files() -> Vec<PathBuf> {
    let mut files = vec![fixtures().join("ltx-v1/000000000000000d-000000000000000d.ltx")];
    for db in ["rollback.db", "wal.db"] {
        let dir = fixtures()
            .join("litefs-0.5.14-data/dbs")
            .join(db)
            .join("ltx");
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        files.extend(names);
    }
    files
}

fn db_ltx_files(db: &str) -> Vec<PathBuf> {
    all_fixture_ltx_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&format!("/{db}/")))
        .collect()
}

#[test]
fn version_prints_name_and_version() {
    let ran = litefs(&["version"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.starts_with("litefs-rs "), "{}", ran.stdout);
    assert!(ran.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn ltx_verify_prints_ok_for_every_fixture() {
    let files = all_fixture_ltx_files();
    assert_eq!(files.len(), 17);
    let ran = litefs(&[&["ltx".into(), "verify".into()], &files[..]].concat());
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), files.len());
    for (line, file) in lines.iter().zip(&files) {
        assert_eq!(*line, format!("{}: ok", file.display()));
    }
}

#[test]
fn ltx_verify_names_the_damage_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixtures().join("ltx-v1/000000000000000d-000000000000000d.ltx");
    let bad = dir.path().join("bad.ltx");
    let mut bytes = fs::read(&good).unwrap();
    bytes[5000] ^= 0x40;
    fs::write(&bad, &bytes).unwrap();
    let short = dir.path().join("short.ltx");
    fs::write(&short, &bytes[..50]).unwrap();
    let ran = litefs(&[
        "ltx".as_ref(),
        "verify".as_ref(),
        good.as_os_str(),
        bad.as_os_str(),
        short.as_os_str(),
    ]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(lines[0].ends_with(": ok"));
    assert!(lines[1].contains("file checksum mismatch"), "{}", lines[1]);
    assert!(
        lines[2].contains("truncated") && lines[2].contains("header"),
        "{}",
        lines[2]
    );
}

#[test]
fn ltx_checksum_of_fixture_database() {
    let db = fixtures().join("ltx-v1/database");
    let ran = litefs(&["ltx".as_ref(), "checksum".as_ref(), db.as_os_str()]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout, "fe3831a381c602b9\n");
}

#[test]
fn ltx_dump_shows_header_pages_and_trailer() {
    let file = fixtures().join("ltx-v1/000000000000000d-000000000000000d.ltx");
    let ran = litefs(&["ltx".as_ref(), "dump".as_ref(), file.as_os_str()]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let out = &ran.stdout;
    assert!(out.contains("Commit:            10"), "{out}");
    assert!(out.contains("Pre-apply:         9c74a15b4e4f246c"));
    assert!(out.contains("pgno=1 checksum=adf3e188cb5dc241"));
    assert!(out.contains("pgno=7 checksum=eaf0947b2055d648"));
    assert!(out.contains("pgno=8 checksum=9a7407c73d4bb9da"));
    assert!(out.contains("Post-apply:        fe3831a381c602b9"));
    assert!(out.contains("File checksum:     9496a29358326fb5"));
}

/// Replaying LiteFS's files with `ltx apply` (upstream's `-db` spelling) rebuilds the databases
/// that the sqlite3 CLI wrote through LiteFS.
#[test]
fn ltx_apply_replays_litefs_databases() {
    let dir = tempfile::tempdir().unwrap();
    let expected =
        fs::read_to_string(fixtures().join("litefs-0.5.14-data/expected-pos.txt")).unwrap();
    for (db, rows) in [("rollback.db", "13|6007|1|14"), ("wal.db", "5")] {
        let out = dir.path().join(db);
        let files = db_ltx_files(db);
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "ltx".as_ref(),
            "apply".as_ref(),
            "-db".as_ref(),
            out.as_os_str(),
        ];
        args.extend(files.iter().map(|p| p.as_os_str()));
        let ran = litefs(&args);
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let last = ran.stdout.lines().last().unwrap();
        let pos = last.rsplit(' ').next().unwrap();
        assert!(expected.contains(&format!("{db} {pos}")), "{db}: {last}");

        let query = if db == "rollback.db" {
            "SELECT count(*), sum(length(x)), min(id), max(id) FROM t"
        } else {
            "SELECT count(*) FROM t"
        };
        assert_eq!(sqlite3(&out, query).trim(), rows, "{db}");
        assert_eq!(sqlite3(&out, "PRAGMA integrity_check").trim(), "ok");
    }
    // In rollback mode the database file LiteFS left is exactly the replay's result.
    let replayed = fs::read(dir.path().join("rollback.db")).unwrap();
    let original =
        fs::read(fixtures().join("litefs-0.5.14-data/dbs/rollback.db/database")).unwrap();
    assert!(
        replayed == original,
        "replayed rollback.db differs from LiteFS's database file"
    );
}

#[test]
fn ltx_apply_refuses_a_file_out_of_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    let files = db_ltx_files("rollback.db");
    let ran = litefs(&[
        "ltx".as_ref(),
        "apply".as_ref(),
        "--db".as_ref(),
        out.as_os_str(),
        files[0].as_os_str(),
        files[2].as_os_str(),
    ]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("pre-apply checksum"), "{}", ran.stderr);
    assert!(ran.stderr.contains("0000000000000003-0000000000000003.ltx"));
}

fn encode_db_round_trip(compress: bool) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    sqlite3(
        &src,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 300)
         INSERT INTO t(v) SELECT randomblob(700) FROM n;",
    );
    let ltx = dir.path().join("snap.ltx");
    let mut args: Vec<&std::ffi::OsStr> = vec!["ltx".as_ref(), "encode-db".as_ref()];
    if compress {
        args.push("-c".as_ref());
    }
    args.extend(["-o".as_ref(), ltx.as_os_str(), src.as_os_str()]);
    let ran = litefs(&args);
    assert_eq!(ran.code, Some(0), "{ran:?}");

    let ran = litefs(&["ltx".as_ref(), "verify".as_ref(), ltx.as_os_str()]);
    assert_eq!(ran.stdout.trim(), format!("{}: ok", ltx.display()));
    let (header, trailer, _) = litefs_ltx::verify(fs::File::open(&ltx).unwrap()).unwrap();
    assert_eq!(header.flags.is_compressed(), compress);
    assert!(header.is_snapshot());
    let (_, sum) = litefs_ltx::dbfile::checksum_file(&src).unwrap();
    assert_eq!(trailer.post_apply_checksum, sum);

    let copy = dir.path().join("copy.db");
    let ran = litefs(&[
        "ltx".as_ref(),
        "apply".as_ref(),
        "-db".as_ref(),
        copy.as_os_str(),
        ltx.as_os_str(),
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(fs::read(&copy).unwrap() == fs::read(&src).unwrap());
    assert_eq!(sqlite3(&copy, "SELECT count(*) FROM t").trim(), "300");
}

#[test]
fn ltx_encode_db_uncompressed_round_trip() {
    encode_db_round_trip(false);
}

#[test]
fn ltx_encode_db_compressed_round_trip() {
    encode_db_round_trip(true);
}

#[test]
fn ltx_tools_report_missing_files_by_name() {
    let ran = litefs(&["ltx", "checksum", "/nonexistent/litefs-rs.db"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("/nonexistent/litefs-rs.db"),
        "{}",
        ran.stderr
    );
}

fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn config_loads_every_upstream_fixture() {
    let files = config_files(&fixtures().join("litefs-0.5.14-config"));
    assert_eq!(files.len(), 4);
    for file in files {
        let ran = litefs(&["config".as_ref(), "-config".as_ref(), file.as_os_str()]);
        assert_eq!(ran.code, Some(0), "{}: {ran:?}", file.display());
        assert!(ran.stdout.contains("lease:"), "{}", ran.stdout);
    }
}

#[test]
fn config_prints_effective_configuration_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("litefs.yml"),
        "fuse:\n  dir: /mnt/litefs\ndata:\n  dir: /var/lib/x\nlease:\n  type: static\n",
    )
    .unwrap();
    // Found by the search order (./litefs.yml first), with defaults filled in.
    let ran = litefs_in(dir.path(), &["config"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let out = &ran.stdout;
    assert!(out.contains("dir: /mnt/litefs"), "{out}");
    assert!(out.contains("retention: 10m"), "{out}");
    assert!(out.contains("addr: :20202"), "{out}");
    assert!(out.contains("exit-on-error: true"), "{out}");
}

#[test]
fn config_unknown_key_exits_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    fs::write(
        &path,
        "fuse:\n  dir: /mnt/litefs\ndata:\n  dir: /var/lib/x\n  retension: 1m\nlease:\n  type: static\n",
    )
    .unwrap();
    let ran = litefs(&["config".as_ref(), "-config".as_ref(), path.as_os_str()]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("retension"), "{}", ran.stderr);
    assert!(ran.stderr.contains("line 5"), "{}", ran.stderr);
}

#[test]
fn config_invalid_value_exits_2_with_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yml");
    fs::write(
        &path,
        "fuse:\n  dir: /same\ndata:\n  dir: /same\nlease:\n  type: static\n",
    )
    .unwrap();
    let ran = litefs(&["config", "--config", path.to_str().unwrap()]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("data.dir"), "{}", ran.stderr);

    let ran = litefs(&["config", "-config", "/nonexistent/litefs.yml"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(
        ran.stderr.contains("/nonexistent/litefs.yml"),
        "{}",
        ran.stderr
    );
}

#[test]
fn config_expands_environment_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.yml");
    fs::write(
        &path,
        "fuse:\n  dir: /mnt/${LFS_TEST_NAME}\ndata:\n  dir: /var/lib/x\nlease:\n  type: static\n  candidate: ${LFS_TEST_REGION == LFS_TEST_PRIMARY}\n  advertise-url: http://primary:20202\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["config", "-config"])
        .arg(&path)
        .env("LFS_TEST_NAME", "app")
        .env("LFS_TEST_REGION", "ord")
        .env("LFS_TEST_PRIMARY", "lhr")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("dir: /mnt/app"), "{stdout}");
    assert!(stdout.contains("candidate: false"), "{stdout}");

    let ran = litefs(&[
        "config".as_ref(),
        "-no-expand-env".as_ref(),
        "-config".as_ref(),
        path.as_os_str(),
    ]);
    // Without expansion `${LFS_TEST_REGION == ...}` is not a boolean.
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert!(ran.stderr.contains("candidate"), "{}", ran.stderr);
}

#[test]
fn example_configs_in_repo_load() {
    let mut files = config_files(&support::repo().join("config"));
    assert!(files.iter().any(|f| f.ends_with("litefs.yml")), "{files:?}");
    let cluster = config_files(&support::repo().join("config/local-cluster"));
    assert_eq!(cluster.len(), 3, "{cluster:?}");
    files.extend(cluster);
    let fly = config_files(&support::repo().join("config/fly"));
    assert_eq!(fly.len(), 1, "{fly:?}");
    files.extend(fly);
    for file in files {
        let out = std::process::Command::new(support::bin())
            .args(["config", "-config"])
            .arg(&file)
            .env("FLY_REGION", "ord")
            .env("PRIMARY_REGION", "ord")
            .env("FLY_APP_NAME", "myapp")
            .env("HOSTNAME", "host1")
            .env("FLY_CONSUL_URL", "http://:token@127.0.0.1:8500/myapp/")
            .env("LITEFS_CONSUL_URL", "http://127.0.0.1:8500")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", file.display());
    }
}

#[test]
fn the_fly_deployment_files_agree_with_each_other() {
    let dir = support::repo().join("config/fly");
    let toml = fs::read_to_string(dir.join("fly.toml")).unwrap();
    let docker = fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["config", "-config"])
        .arg(dir.join("litefs.yml"))
        .env("FLY_REGION", "ord")
        .env("PRIMARY_REGION", "ord")
        .env("FLY_APP_NAME", "myapp")
        .env("HOSTNAME", "host1")
        .env("FLY_CONSUL_URL", "http://:token@127.0.0.1:8500/myapp/")
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    // The edge sends traffic to the proxy, the volume holds the data directory, the image
    // carries this litefs.yml and starts litefs-rs.
    assert!(toml.contains("internal_port = 8080"), "{toml}");
    assert!(effective.contains("addr: :8080"), "{effective}");
    assert!(toml.contains("destination = \"/var/lib/litefs\""), "{toml}");
    assert!(effective.contains("dir: /var/lib/litefs"), "{effective}");
    assert!(toml.contains("path = \"/litefs/health\""), "{toml}");
    assert!(
        docker.contains("COPY config/fly/litefs.yml /etc/litefs.yml"),
        "{docker}"
    );
    assert!(docker.contains("ENTRYPOINT [\"litefs-rs\"]"), "{docker}");
    assert!(
        effective.contains("advertise-url: http://host1.vm.myapp.internal:20202"),
        "{effective}"
    );
}
