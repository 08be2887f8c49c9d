//! `litefs-rs`: the command line. Parses arguments (accepting LiteFS's single-dash long flags),
//! runs one command, and maps its outcome to an exit code: 0 on success, 1 on failure, 2 for bad
//! usage or an invalid configuration.

mod args;
mod ltx_cmd;

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
    /// Tools for LTX files and SQLite database files.
    #[command(subcommand)]
    Ltx(ltx_cmd::LtxCommand),
}

/// Exit code for bad usage and invalid configuration, as LiteFS uses.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
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

fn print_config(path: Option<PathBuf>, no_expand_env: bool) -> ExitCode {
    let opts = LoadOptions {
        expand_env: !no_expand_env,
        ..LoadOptions::default()
    };
    let loaded = Config::load(path.as_deref(), opts).and_then(|(path, config)| {
        config.validate()?;
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
