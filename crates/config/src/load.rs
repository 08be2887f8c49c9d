//! Finding, reading and parsing `litefs.yml`, and writing it back out.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::{expand_env, process_env, BackupType, Config, ConfigError, EnvLookup};

/// The file name looked for in each search directory.
const FILE_NAME: &str = "litefs.yml";

/// How [`Config::load`] reads the file.
#[derive(Clone, Copy)]
pub struct LoadOptions<'a> {
    /// Expand `${VAR}` and `${A == B}` in the file before parsing it (default `true`; the
    /// CLI's `-no-expand-env` turns it off).
    pub expand_env: bool,

    /// Where environment variables come from: `None` (the default) reads the process
    /// environment. Used for expansion, for `$HOME` in the search path, and for the
    /// `LITEFS_CLOUD_*` overrides.
    pub env: Option<&'a EnvLookup<'a>>,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            expand_env: true,
            env: None,
        }
    }
}

impl fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("expand_env", &self.expand_env)
            .field(
                "env",
                &if self.env.is_some() {
                    "custom"
                } else {
                    "process"
                },
            )
            .finish()
    }
}

/// The places searched when no `-config` path is given, in order: `litefs.yml` in `cwd`,
/// then in `home`, then `/etc/litefs.yml`. A missing `cwd` leaves the first path relative;
/// a missing `home` leaves the second one out.
pub fn search_paths(cwd: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = vec![match cwd {
        Some(dir) => dir.join(FILE_NAME),
        None => PathBuf::from(FILE_NAME),
    }];
    if let Some(home) = home.filter(|h| !h.as_os_str().is_empty()) {
        paths.push(home.join(FILE_NAME));
    }
    paths.push(Path::new("/etc").join(FILE_NAME));
    paths
}

/// The first of `candidates` that exists.
///
/// A candidate that exists but cannot be opened (a directory, no permission) is an error
/// rather than skipped, as in LiteFS. When none exists the error lists them all.
pub fn find_config_file(candidates: &[PathBuf]) -> Result<PathBuf, ConfigError> {
    for path in candidates {
        match std::fs::File::open(path) {
            Ok(_) => return Ok(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Err(ConfigError::NotFound {
        searched: candidates.to_vec(),
    })
}

impl Config {
    /// Finds, reads and parses the configuration file.
    ///
    /// `path` is the `-config PATH` argument: when given, only that file is read. Otherwise the
    /// first existing file of [`search_paths`] (current directory, `$HOME`, `/etc`) is used.
    /// The text is expanded unless `opts.expand_env` is false, then parsed, and finally the
    /// `LITEFS_CLOUD_TOKEN` / `LITEFS_CLOUD_ENDPOINT` overrides are applied (see
    /// [`Config::apply_env_overrides`]). The result is not validated: call
    /// [`Config::validate`]. Returns the path that was read along with the configuration.
    pub fn load(
        path: Option<&Path>,
        opts: LoadOptions<'_>,
    ) -> Result<(PathBuf, Config), ConfigError> {
        let lookup: &EnvLookup<'_> = match opts.env {
            Some(env) => env,
            None => &process_env,
        };
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let cwd = std::env::current_dir().ok();
                let home = lookup("HOME").map(PathBuf::from);
                find_config_file(&search_paths(cwd.as_deref(), home.as_deref()))?
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let name = path.display().to_string();
        let mut config = Config::from_yaml_str(&text, &name, opts.expand_env.then_some(lookup))?;
        config.apply_env_overrides(lookup);
        Ok((path, config))
    }

    /// Parses configuration text.
    ///
    /// `source` names the text in error messages (usually the file path). When `env` is given
    /// the text is first expanded with it ([`expand_env`]); `None` parses the text as is.
    /// Line numbers in errors refer to the expanded text, which differs from the file only if
    /// a variable's value spans several lines.
    pub fn from_yaml_str(
        text: &str,
        source: &str,
        env: Option<&EnvLookup<'_>>,
    ) -> Result<Config, ConfigError> {
        let expanded;
        let text = match env {
            Some(lookup) => {
                expanded = expand_env(text, lookup);
                expanded.as_str()
            }
            None => text,
        };
        let config: Config = serde_yaml::from_str(text).map_err(|e| yaml_error(source, &e))?;
        restore_defaults(config, text, source)
    }

    /// The configuration as YAML, with LiteFS's key names and Go-style durations. Parsing the
    /// output gives back an equal `Config`. An unset `lease.type` is left out.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// Applies LiteFS's environment overrides for the backup service:
    ///
    /// * `LITEFS_CLOUD_TOKEN`, when set and non-empty, replaces `backup.auth-token`, and sets
    ///   `backup.type` to `litefs-cloud` if no type was configured.
    /// * `LITEFS_CLOUD_ENDPOINT`, when set and non-empty, replaces `backup.url`.
    ///
    /// [`Config::load`] calls this; call it yourself after [`Config::from_yaml_str`].
    pub fn apply_env_overrides(&mut self, env: &EnvLookup<'_>) {
        if let Some(token) = env("LITEFS_CLOUD_TOKEN").filter(|v| !v.is_empty()) {
            self.backup.auth_token = token;
            if self.backup.kind == BackupType::None {
                self.backup.kind = BackupType::LitefsCloud;
            }
        }
        if let Some(url) = env("LITEFS_CLOUD_ENDPOINT").filter(|v| !v.is_empty()) {
            self.backup.url = url;
        }
    }
}

/// Turns a serde_yaml error into a `ConfigError` that names the file, the key and the line.
fn yaml_error(source: &str, err: &serde_yaml::Error) -> ConfigError {
    let location = err.location();
    let (line, column) = (
        location.as_ref().map(|l| l.line()),
        location.as_ref().map(|l| l.column()),
    );
    let mut message = err.to_string();
    if let (Some(l), Some(c)) = (line, column) {
        let suffix = format!(" at line {l} column {c}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }

    if let (Some(line), Some(column), Some((key, expected))) =
        (line, column, unknown_field(&message))
    {
        return ConfigError::UnknownKey {
            file: source.to_owned(),
            key,
            line,
            column,
            expected,
        };
    }
    ConfigError::Parse {
        file: source.to_owned(),
        line,
        column,
        message,
    }
}

/// Recognises serde's "unknown field" message (with serde_yaml's optional `path: ` prefix)
/// and returns the full dotted key and the list of expected keys.
fn unknown_field(message: &str) -> Option<(String, String)> {
    const MARK: &str = "unknown field `";
    let (path, rest) = match message.strip_prefix(MARK) {
        Some(rest) => ("", rest),
        None => {
            let (path, rest) = message.split_once(": ")?;
            if path.contains(' ') {
                return None;
            }
            (path, rest.strip_prefix(MARK)?)
        }
    };
    let (name, expected) = rest.split_once('`')?;
    let expected = expected.trim_start_matches(',').trim().to_owned();
    let key = if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    };
    Some((key, expected))
}

/// Puts back LiteFS's default for every setting written as `key:` with no value.
///
/// yaml.v3 leaves a field untouched when its value is null, so such a key keeps its default.
/// The serde helpers read a null as the type's zero value; for the settings whose default is
/// not zero (`exit-on-error`, `data.dir`, most durations, ...) this copies the default back.
/// Only chains of mappings are walked: null items inside lists (`exec`) keep zero values,
/// which are their defaults anyway.
fn restore_defaults(config: Config, text: &str, source: &str) -> Result<Config, ConfigError> {
    let Ok(tree) = serde_yaml::from_str::<Value>(text) else {
        return Ok(config);
    };
    let mut nulls = Vec::new();
    collect_null_keys(&tree, &mut Vec::new(), &mut nulls);
    if nulls.is_empty() {
        return Ok(config);
    }

    let internal = |e: serde_yaml::Error| ConfigError::Parse {
        file: source.to_owned(),
        line: None,
        column: None,
        message: format!("cannot restore defaults of empty keys: {e}"),
    };
    let defaults = serde_yaml::to_value(Config::default()).map_err(internal)?;
    let mut current = serde_yaml::to_value(&config).map_err(internal)?;
    let mut changed = false;
    for path in &nulls {
        if let (Some(default), Some(slot)) =
            (lookup(&defaults, path), lookup_mut(&mut current, path))
        {
            if slot != default {
                *slot = default.clone();
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(config);
    }
    serde_yaml::from_value(current).map_err(internal)
}

fn collect_null_keys(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Value::Mapping(map) = value else { return };
    for (key, child) in map {
        let Some(key) = key.as_str() else { continue };
        path.push(key.to_owned());
        match child {
            Value::Null => out.push(path.clone()),
            Value::Mapping(_) => collect_null_keys(child, path, out),
            _ => {}
        }
        path.pop();
    }
}

fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key.as_str()))
}

fn lookup_mut<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter()
        .try_fold(value, |v, key| v.get_mut(key.as_str()))
}
