//! `litefs.yml` from bytes: environment expansion (`$VAR`, `${VAR}`, `${A == B}`) over a fixed
//! environment, YAML parsing with LiteFS's defaults, validation, and writing it back out, which
//! must parse to the same configuration; Go durations, which must print back to the same value;
//! and the shell-like splitting of `exec` commands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use litefs_config::{expand_env, split_args, Config, Duration};

fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/root".into()),
        "FLY_REGION" | "PRIMARY_REGION" => Some("ord".into()),
        "PORT" => Some("20202".into()),
        "MULTI" => Some("a\nb: c".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 4 {
        0 | 1 => {
            let lookup = if mode % 4 == 0 {
                Some(&env as &litefs_config::EnvLookup<'_>)
            } else {
                None
            };
            let Ok(config) = Config::from_yaml_str(text, "fuzz.yml", lookup) else {
                return;
            };
            let _ = config.validate();
            let _ = config.lease_type();
            let yaml = config.to_yaml().expect("a parsed config writes out");
            let again = Config::from_yaml_str(&yaml, "fuzz.yml", None)
                .unwrap_or_else(|e| panic!("written config does not parse: {e}\n{yaml}"));
            assert_eq!(again, config, "written config parses differently:\n{yaml}");
        }
        2 => {
            if let Ok(d) = Duration::parse(text) {
                let printed = d.to_string();
                let back = Duration::parse(&printed)
                    .unwrap_or_else(|e| panic!("{printed:?} (from {text:?}) does not parse: {e}"));
                assert_eq!(back, d, "{text:?} prints as {printed:?}");
            }
        }
        _ => {
            let _ = expand_env(text, &env);
            let _ = split_args(text);
        }
    }
});
