//! LiteFS spells its long flags with one dash (`-config PATH`), as Go's flag package does, and
//! Dockerfiles carry those spellings. Before clap sees the arguments, a single-dash spelling of a
//! known long flag is rewritten to the double-dash one. Short flags (`-c`, `-o`) are untouched,
//! and so is everything after `--`.

use std::ffi::OsString;

/// Long flags that may be written with a single dash.
const LONG_FLAGS: &[&str] = &[
    "config",
    "no-expand-env",
    "skip-unmount",
    "fuse.debug",
    "debug",
    "tracing",
    "name",
    "url",
    "promote",
    "if-candidate",
    "with-halt-lock-on",
    "db",
    "txid",
    "help",
    "version",
];

/// Rewrites `-flag` and `-flag=value` to `--flag` and `--flag=value` for the flags above.
pub fn normalize<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for arg in args {
        if passthrough {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let rest = s.strip_prefix('-')?;
            if rest.starts_with('-') {
                return None;
            }
            let name = rest.split_once('=').map_or(rest, |(n, _)| n);
            LONG_FLAGS
                .contains(&name)
                .then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&[
                "litefs-rs",
                "mount",
                "-config",
                "/etc/litefs.yml",
                "-skip-unmount"
            ]),
            [
                "litefs-rs",
                "mount",
                "--config",
                "/etc/litefs.yml",
                "--skip-unmount"
            ]
        );
        assert_eq!(norm(&["x", "-config=/a.yml"]), ["x", "--config=/a.yml"]);
        assert_eq!(norm(&["x", "--config", "a"]), ["x", "--config", "a"]);
    }

    #[test]
    fn short_flags_unknown_flags_and_passthrough_are_kept() {
        assert_eq!(
            norm(&["x", "ltx", "encode-db", "-c", "-o", "out", "db"]),
            ["x", "ltx", "encode-db", "-c", "-o", "out", "db"]
        );
        assert_eq!(norm(&["x", "-bogus"]), ["x", "-bogus"]);
        assert_eq!(
            norm(&["x", "run", "--", "app", "-config", "-"]),
            ["x", "run", "--", "app", "-config", "-"]
        );
    }
}
