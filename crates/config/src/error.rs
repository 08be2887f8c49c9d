//! The one error type of this crate.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Everything that can go wrong while finding, reading, parsing or validating `litefs.yml`.
///
/// Each message says what was being done and names the file, the key (dotted, e.g.
/// `lease.consul.ttl`) and the line where they are known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file exists (or was named with `-config`) but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// No `-config` path was given and none of the search paths holds a file.
    #[error(
        "config file not found: searched {} (use -config PATH to name one)",
        list_paths(searched)
    )]
    NotFound {
        /// The paths that were tried, in order.
        searched: Vec<PathBuf>,
    },

    /// The file has a key that LiteFS does not know (LiteFS rejects these too).
    #[error("{file}: unknown key \"{key}\" at line {line} column {column} ({expected})")]
    UnknownKey {
        /// The file (or source name) being parsed.
        file: String,
        /// The full dotted key, e.g. `lease.consul.foo` or `exec[0].foo`.
        key: String,
        /// 1-based line of the key.
        line: usize,
        /// 1-based column of the key.
        column: usize,
        /// The keys allowed at that place, as serde lists them.
        expected: String,
    },

    /// The file is not valid YAML, or a value has the wrong type or format.
    #[error("{file}: {}{message}", at(*line, *column))]
    Parse {
        /// The file (or source name) being parsed.
        file: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// What is wrong; starts with the dotted key when the problem is inside a value.
        message: String,
    },

    /// A duration string is not in Go's `time.ParseDuration` syntax, or is negative.
    #[error("invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// The text that was being parsed.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A size is not a number of bytes, with or without a unit.
    #[error("invalid size {value:?}: {reason}")]
    InvalidSize {
        /// The text that was being parsed.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// An `exec` command line cannot be split into arguments.
    #[error("invalid command {command:?}: {reason}")]
    InvalidCommand {
        /// The command line as written.
        command: String,
        /// Why it cannot be split.
        reason: String,
    },

    /// The configuration parsed but breaks a rule (see `Config::validate`).
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The dotted key at fault, e.g. `lease.consul.url`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The configuration could not be turned into YAML.
    #[error("cannot write configuration as YAML: {0}")]
    Serialize(String),
}

impl ConfigError {
    /// Shorthand for a validation error on `key`.
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("line {line} column {column}: "),
        (Some(line), None) => format!("line {line}: "),
        _ => String::new(),
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    let mut out = String::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", p.display());
    }
    out
}
