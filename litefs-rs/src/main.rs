//! `litefs-rs`: the command line. Parses arguments (accepting LiteFS's single-dash long flags),
//! runs one command, and maps its outcome to an exit code: 0 on success, 1 on failure, 2 for bad
//! usage or an invalid configuration.

mod args;
mod exec;
mod guard;
mod ltx_cmd;
mod mount_cmd;
mod transfer_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use litefs_config::{Config, LoadOptions};

/// A LiteFS-compatible distributed SQLite replicator.
#[derive(Debug, Parser)]
#[command(name = "litefs-rs", disable_version_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// Load, expand and validate the configuration, then print it with every default filled in.
    Config {
        /// Configuration file (default: the first of ./litefs.yml, ~/litefs.yml, /etc/litefs.yml).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Do not expand $VAR and ${...} in the configuration file.
        #[arg(long = "no-expand-env")]
        no_expand_env: bool,
    },
    /// Mount the FUSE filesystem and serve the databases until SIGINT or SIGTERM.
    Mount {
        /// Configuration file (default: the first of ./litefs.yml, ~/litefs.yml, /etc/litefs.yml).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Do not expand $VAR and ${...} in the configuration file.
        #[arg(long = "no-expand-env")]
        no_expand_env: bool,
        /// Do not unmount a stale mount at fuse.dir before mounting.
        #[arg(long = "skip-unmount")]
        skip_unmount: bool,
        /// Log every FUSE operation.
        #[arg(long = "fuse.debug")]
        fuse_debug: bool,
        /// Log at debug level.
        #[arg(long = "debug")]
        debug: bool,
        /// The application to run once the node is ready (instead of the configuration's
        /// exec), after `--`.
        #[arg(last = true)]
        exec: Vec<String>,
    },
    /// With the node stopped, record databases whose files were changed while it was down as
    /// they are, as new transactions (instead of having them repaired from, or refused for not
    /// matching, their LTX files).
    Adopt {
        /// Configuration file (default: the first of ./litefs.yml, ~/litefs.yml, /etc/litefs.yml).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Do not expand $VAR and ${...} in the configuration file.
        #[arg(long = "no-expand-env")]
        no_expand_env: bool,
        /// The databases (names in the mount).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// When the freshest node of a Consul cluster is gone for good: forget the position the
    /// primary published, so that a candidate behind it may take the lease (and the cluster
    /// continues from that node's data; what only the lost node had is lost).
    ForgetPosition {
        /// The configuration file (its lease.consul section is used).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Do not expand $VAR and ${...} in the configuration file.
        #[arg(long = "no-expand-env")]
        no_expand_env: bool,
    },
    /// Run a command against the local node: only on a candidate (`-if-candidate`), or after
    /// making it the primary (`-promote`), e.g. for migrations. Exits with the command's code.
    Run {
        /// The node's internal API.
        #[arg(long = "url", value_name = "URL", default_value = transfer_cmd::DEFAULT_URL)]
        url: String,
        /// Read the node's http.auth-token from this configuration file (default: the
        /// LITEFS_AUTH_TOKEN environment variable, or none).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Make the node the primary first (a hand-off from the current primary).
        #[arg(long = "promote")]
        promote: bool,
        /// Run the command only if the node is a candidate (exit 0 otherwise).
        #[arg(long = "if-candidate")]
        if_candidate: bool,
        /// Run the command holding the halt lock of this database (writes from a replica).
        #[arg(long = "with-halt-lock-on", value_name = "DBPATH")]
        with_halt_lock_on: Option<PathBuf>,
        /// Say what happens.
        #[arg(short = 'v')]
        verbose: bool,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Download a database from a node as a SQLite file (written atomically to PATH).
    Export {
        /// The database (its name in the mount).
        #[arg(long = "name", value_name = "NAME")]
        name: String,
        /// The node's internal API.
        #[arg(long = "url", value_name = "URL", default_value = transfer_cmd::DEFAULT_URL)]
        url: String,
        /// Read the node's http.auth-token from this configuration file (default: the
        /// LITEFS_AUTH_TOKEN environment variable, or none).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Where to write the database.
        path: PathBuf,
    },
    /// Upload a SQLite file as a database (created or replaced) to the primary.
    Import {
        /// The database (its name in the mount).
        #[arg(long = "name", value_name = "NAME")]
        name: String,
        /// The primary's internal API.
        #[arg(long = "url", value_name = "URL", default_value = transfer_cmd::DEFAULT_URL)]
        url: String,
        /// Read the node's http.auth-token from this configuration file (default: the
        /// LITEFS_AUTH_TOKEN environment variable, or none).
        #[arg(long = "config", value_name = "PATH")]
        config: Option<PathBuf>,
        /// The SQLite file to upload.
        path: PathBuf,
    },
    /// Tools for LTX files and SQLite database files.
    #[command(subcommand)]
    Ltx(ltx_cmd::LtxCommand),
}

/// Exit code for bad usage and invalid configuration, as LiteFS uses.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let mut raw = std::env::args_os();
    if raw.nth(1).is_some_and(|a| a == guard::GUARD_ARG) {
        // The FUSE guard a node starts for itself (see guard.rs), not a command.
        let dirs: Vec<PathBuf> = raw.map(PathBuf::from).collect();
        return ExitCode::from(u8::try_from(guard::run(&dirs)).unwrap_or(1));
    }
    let cli = Cli::parse_from(args::normalize(std::env::args_os()));
    match cli.command {
        Command::Version => {
            println!(
                "litefs-rs {} (LTX format 1, compatible with LiteFS 0.5)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Command::Config {
            config,
            no_expand_env,
        } => print_config(config, no_expand_env),
        Command::Mount {
            config,
            no_expand_env,
            skip_unmount,
            fuse_debug,
            debug,
            exec,
        } => {
            let config = match load_config(config, no_expand_env) {
                Ok((_, config)) => config,
                Err(code) => return code,
            };
            init_logging(debug || config.log.debug || config.fuse.debug || fuse_debug);
            let flags = mount_cmd::Flags {
                skip_unmount,
                fuse_debug,
                exec,
            };
            match mount_cmd::run(config, flags) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Adopt {
            config,
            no_expand_env,
            names,
        } => {
            let config = match load_config(config, no_expand_env) {
                Ok((_, config)) => config,
                Err(code) => return code,
            };
            init_logging(config.log.debug);
            match mount_cmd::adopt(config, &names) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ForgetPosition {
            config,
            no_expand_env,
        } => {
            let config = match load_config(config, no_expand_env) {
                Ok((_, config)) => config,
                Err(code) => return code,
            };
            exit_with(mount_cmd::forget_position(&config))
        }
        Command::Run {
            url,
            config,
            promote,
            if_candidate,
            with_halt_lock_on,
            verbose,
            cmd,
        } => {
            let flags = transfer_cmd::RunFlags {
                promote,
                if_candidate,
                verbose,
                halt_lock_on: with_halt_lock_on,
            };
            let token = match auth_token(config) {
                Ok(t) => t,
                Err(code) => return code,
            };
            match transfer_cmd::run(&url, token.as_deref(), flags, &cmd) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Export {
            name,
            url,
            config,
            path,
        } => match auth_token(config) {
            Ok(token) => exit_with(transfer_cmd::export(&url, token.as_deref(), &name, &path)),
            Err(code) => code,
        },
        Command::Import {
            name,
            url,
            config,
            path,
        } => match auth_token(config) {
            Ok(token) => exit_with(transfer_cmd::import(&url, token.as_deref(), &name, &path)),
            Err(code) => code,
        },
        Command::Ltx(cmd) => match ltx_cmd::run(cmd) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Exit code of a command that succeeds or prints its error.
fn exit_with(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration for a command that runs a node: on error, prints it and returns
/// the usage exit code.
fn load_config(path: Option<PathBuf>, no_expand_env: bool) -> Result<(PathBuf, Config), ExitCode> {
    read_config(path, no_expand_env).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// The environment variable the `run`, `export` and `import` commands take the node's
/// `http.auth-token` from when no configuration file is given.
const AUTH_TOKEN_ENV: &str = "LITEFS_AUTH_TOKEN";

/// The token the API commands send: `http.auth-token` of the file `-config` names, else
/// `LITEFS_AUTH_TOKEN`, else none.
fn auth_token(config: Option<PathBuf>) -> Result<Option<String>, ExitCode> {
    match config {
        Some(path) => load_config(Some(path), false)
            .map(|(_, c)| Some(c.http.auth_token).filter(|t| !t.is_empty())),
        None => Ok(std::env::var(AUTH_TOKEN_ENV).ok().filter(|t| !t.is_empty())),
    }
}

/// Loads, expands and validates the configuration.
fn read_config(
    path: Option<PathBuf>,
    no_expand_env: bool,
) -> Result<(PathBuf, Config), litefs_config::ConfigError> {
    let opts = LoadOptions {
        expand_env: !no_expand_env,
        ..LoadOptions::default()
    };
    let (path, config) = Config::load(path.as_deref(), opts)?;
    config.validate()?;
    Ok((path, config))
}

/// Logs to stderr; `RUST_LOG` overrides the level.
fn init_logging(debug: bool) {
    // The Consul client logs every request, and a 404 (an absent key, which the lease reads
    // routinely) as an error; the lease reports what matters itself.
    let default = if debug {
        "debug,consulrs=warn,rustify=off"
    } else {
        "info,consulrs=warn,rustify=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn print_config(path: Option<PathBuf>, no_expand_env: bool) -> ExitCode {
    let loaded = read_config(path, no_expand_env).and_then(|(path, config)| {
        let yaml = config.to_yaml()?;
        Ok((path, config, yaml))
    });
    match loaded {
        Ok((path, config, yaml)) => {
            println!("# {}", path.display());
            print!("{yaml}");
            if let Err(e) = config.lease_type() {
                eprintln!("note: {e}; a node cannot start from this file");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
