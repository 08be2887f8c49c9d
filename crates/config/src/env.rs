//! `${VAR}` expansion of the raw config text, with LiteFS's `${A == B}` comparisons.
//!
//! The scanner follows Go's `os.Expand` byte for byte, and the mapping follows LiteFS's
//! `ExpandEnv`, so a file expands here exactly as it does under LiteFS:
//!
//! * `$NAME` takes the longest run of ASCII letters, digits and `_` after the `$`.
//! * `$` followed by one of `* # $ @ ! ? -` or a digit names that one character (`$1`, `$$`);
//!   such names are never set in practice, so they expand to nothing.
//! * `${...}` takes everything up to the first `}`; `${*}`-style one-character specials too.
//! * `${}` and an unterminated `${` are dropped (Go's "bad syntax": the characters are eaten).
//! * A `$` followed by anything else, or at the very end, is kept as is.
//!
//! The text between the braces (or the bare name) is trimmed and then read as:
//!
//! 1. `NAME == 'text'` or `NAME != 'text'`: compares the variable with the quoted text;
//! 2. the same with double quotes;
//! 3. `NAME == OTHER` or `NAME != OTHER`: compares two variables;
//! 4. anything else: the value of the variable with that name.
//!
//! Comparisons give the words `true` or `false`, so `candidate: ${FLY_REGION == PRIMARY_REGION}`
//! becomes a YAML boolean. An unset variable reads as the empty string in all four forms. No
//! escaping is offered: LiteFS has none, and a literal `$` followed by a name cannot be written.

/// A source of environment variables: returns a variable's value, or `None` when it is unset.
///
/// [`process_env`] reads the real environment; tests pass a closure over a map.
pub type EnvLookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Expands `$VAR`, `${VAR}` and `${A == B}`-style comparisons in `text`.
///
/// `lookup` returns a variable's value, or `None` when it is unset; pass [`process_env`] for
/// the real environment, or a closure over a map in tests.
pub fn expand_env(text: &str, lookup: &EnvLookup<'_>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // `start` is the first byte not yet copied to `out`. Every index we cut at is either a
    // `$`, `{`, `}` or the byte after an ASCII name character, so it is a char boundary.
    let mut start = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[start..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                Some(name) => out.push_str(&expand_one(name, lookup)),
                // Bad syntax (`${}` or an unterminated `${`): the characters are dropped.
                None if width > 0 => {}
                // `$` not followed by a name: keep the dollar sign.
                None => out.push('$'),
            }
            j += width;
            start = j + 1;
        }
        j += 1;
    }
    out.push_str(&text[start.min(text.len())..]);
    out
}

/// Looks `name` up in the process environment (the default source for [`expand_env`]).
///
/// Names that no environment can hold (empty, or containing `=` or NUL) read as unset, and
/// so does a value that is not valid UTF-8.
pub fn process_env(name: &str) -> Option<String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return None;
    }
    std::env::var(name).ok()
}

/// Go's `isShellSpecialVar`.
fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

/// Go's `isAlphaNum`: the characters of an unbraced name (and of `\w` in LiteFS's patterns).
fn is_name_byte(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Go's `getShellName`: the name at the start of `s` (which follows a `$`) and how many bytes
/// it spans. `(None, 0)` means "no name here"; `(None, n)` with `n > 0` means bad syntax whose
/// `n` bytes are to be dropped along with the `$`.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match b.iter().skip(1).position(|&c| c == b'}') {
            Some(0) => (None, 2),                // "${}"
            Some(n) => (Some(&s[1..=n]), n + 2), // "${name}"
            None => (None, 1),                   // "${" with no closing brace
        };
    }
    if is_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b.iter().take_while(|&&c| is_name_byte(c)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

/// LiteFS's mapping function: a comparison, or a variable's value.
fn expand_one(raw: &str, lookup: &EnvLookup<'_>) -> String {
    let v = raw.trim();
    let get = |name: &str| lookup(name).unwrap_or_default();
    if let Some((name, equal, rhs)) = split_comparison(v) {
        let right = match rhs {
            Rhs::Literal(text) => text.to_owned(),
            Rhs::Var(other) => get(other),
        };
        return ((get(name) == right) == equal).to_string();
    }
    get(v)
}

enum Rhs<'a> {
    Literal(&'a str),
    Var(&'a str),
}

/// Matches LiteFS's three patterns, tried in order on the trimmed text:
/// `^(\w+)\s*(==|!=)\s*'(.*)'$`, the same with `"`, and `^(\w+)\s*(==|!=)\s*(\w+)$`.
///
/// `\w` is `[0-9A-Za-z_]`, `\s` is `[\t\n\f\r ]` and `.` is any character but `\n` (Go's RE2
/// meanings). The three share the prefix up to the operator, which can only match one way,
/// so the patterns are tested by hand. Returns the name, whether the operator is `==`, and the
/// right-hand side.
fn split_comparison(v: &str) -> Option<(&str, bool, Rhs<'_>)> {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let name_len = v.bytes().take_while(|&b| is_name_byte(b)).count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = v.split_at(name_len);
    let rest = rest.trim_start_matches(is_space);
    let (equal, rest) = if let Some(r) = rest.strip_prefix("==") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (false, r)
    } else {
        return None;
    };
    let rest = rest.trim_start_matches(is_space);
    for quote in ['\'', '"'] {
        if rest.len() >= 2 && rest.starts_with(quote) && rest.ends_with(quote) {
            let inner = &rest[1..rest.len() - 1];
            if !inner.contains('\n') {
                return Some((name, equal, Rhs::Literal(inner)));
            }
        }
    }
    if !rest.is_empty() && rest.bytes().all(is_name_byte) {
        return Some((name, equal, Rhs::Var(rest)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expand_with(text: &str, vars: &HashMap<String, String>) -> String {
        expand_env(text, &|name| vars.get(name).cloned())
    }

    /// The variables LiteFS's own TestExpandEnv sets.
    fn litefs_env() -> HashMap<String, String> {
        env(&[
            ("LITEFS_FOO", "foo"),
            ("LITEFS_FOO2", "foo"),
            ("LITEFS_BAR", "bar baz"),
        ])
    }

    #[test]
    fn upstream_unbraced_var() {
        assert_eq!(expand_with("$LITEFS_FOO", &litefs_env()), "foo");
    }

    #[test]
    fn upstream_braced_var() {
        let e = litefs_env();
        assert_eq!(expand_with("${LITEFS_FOO}", &e), "foo");
        assert_eq!(expand_with("${ LITEFS_FOO }", &e), "foo");
    }

    #[test]
    fn upstream_single_quote_expr() {
        let e = litefs_env();
        assert_eq!(expand_with("${ LITEFS_FOO == 'foo' }", &e), "true");
        assert_eq!(expand_with("${ LITEFS_FOO != 'foo' }", &e), "false");
    }

    #[test]
    fn upstream_double_quote_expr() {
        let e = litefs_env();
        assert_eq!(expand_with(r#"${ LITEFS_BAR == "bar baz" }"#, &e), "true");
        assert_eq!(expand_with(r#"${ LITEFS_BAR != "" }"#, &e), "true");
    }

    #[test]
    fn upstream_var_expr() {
        let e = litefs_env();
        assert_eq!(expand_with("${ LITEFS_FOO == LITEFS_FOO2 }", &e), "true");
        assert_eq!(expand_with("${ LITEFS_FOO != LITEFS_BAR }", &e), "true");
    }

    #[test]
    fn fly_candidate_expression() {
        let same = env(&[("FLY_REGION", "ams"), ("PRIMARY_REGION", "ams")]);
        let differ = env(&[("FLY_REGION", "ord"), ("PRIMARY_REGION", "ams")]);
        let text = "candidate: ${FLY_REGION == PRIMARY_REGION}";
        assert_eq!(expand_with(text, &same), "candidate: true");
        assert_eq!(expand_with(text, &differ), "candidate: false");
        assert_eq!(
            expand_with("${FLY_REGION != PRIMARY_REGION}", &differ),
            "true"
        );
        // Both unset: "" == "" holds, as in LiteFS.
        assert_eq!(expand_with(text, &HashMap::new()), "candidate: true");
    }

    #[test]
    fn literal_comparisons() {
        let e = env(&[("FOO", "bar")]);
        assert_eq!(expand_with("${FOO == 'bar'}", &e), "true");
        assert_eq!(expand_with("${FOO=='bar'}", &e), "true");
        assert_eq!(expand_with("${FOO == 'baz'}", &e), "false");
        assert_eq!(expand_with("${FOO != \"bar\"}", &e), "false");
        assert_eq!(expand_with("${FOO != \"baz\"}", &e), "true");
        assert_eq!(expand_with("${UNSET == ''}", &e), "true");
        // Greedy `(.*)`: the literal runs to the last quote.
        assert_eq!(
            expand_with("${FOO == 'b'ar'}", &env(&[("FOO", "b'ar")])),
            "true"
        );
        // The literal ends at the first `}` (os.Expand stops there), so this is no comparison.
        assert_eq!(expand_with("${FOO == '}'}", &e), "'}");
    }

    #[test]
    fn not_a_comparison_falls_back_to_lookup() {
        let e = env(&[("FOO", "bar")]);
        // Unquoted text with a space is not a name: the whole text is looked up (and unset).
        assert_eq!(expand_with("[${FOO == bar baz}]", &e), "[]");
        assert_eq!(expand_with("[${FOO = 'bar'}]", &e), "[]");
        assert_eq!(expand_with("[${== 'bar'}]", &e), "[]");
        assert_eq!(expand_with("[${FOO == 'bar}]", &e), "[]");
    }

    #[test]
    fn unset_vars_expand_to_empty() {
        let e = HashMap::new();
        assert_eq!(expand_with("a${NOPE}b", &e), "ab");
        assert_eq!(expand_with("a $NOPE b", &e), "a  b");
        assert_eq!(expand_with("${NOPE}", &e), "");
    }

    #[test]
    fn unbraced_names_stop_at_non_name_bytes() {
        let e = env(&[("HOST", "h1"), ("APP", "a")]);
        assert_eq!(
            expand_with("http://$HOST.vm.$APP.internal:20202", &e),
            "http://h1.vm.a.internal:20202"
        );
        assert_eq!(expand_with("$HOST-x", &e), "h1-x");
        assert_eq!(expand_with("${HOST}x", &e), "h1x");
        assert_eq!(expand_with("$HOSTx", &e), "");
    }

    #[test]
    fn go_special_cases() {
        let e = env(&[("A", "1")]);
        // `$` followed by a non-name character, or last: kept.
        assert_eq!(expand_with("cost $ 5", &e), "cost $ 5");
        assert_eq!(expand_with("end$", &e), "end$");
        assert_eq!(expand_with("$/x", &e), "$/x");
        assert_eq!(expand_with("a$.b", &e), "a$.b");
        // Shell specials name one character and are looked up (unset here).
        assert_eq!(expand_with("[$$]", &e), "[]");
        assert_eq!(expand_with("[$1A]", &e), "[A]");
        assert_eq!(expand_with("[$-]", &e), "[]");
        assert_eq!(expand_with("[${*}]", &e), "[]");
        assert_eq!(expand_with("[$@x]", &e), "[x]");
        // `${}` is dropped; an unterminated `${` loses only the two characters.
        assert_eq!(expand_with("[${}]", &e), "[]");
        assert_eq!(expand_with("[${A", &e), "[A");
        assert_eq!(expand_with("x${", &e), "x");
        // A special looked up with a variable set for it.
        assert_eq!(expand_with("$1", &env(&[("1", "one")])), "one");
    }

    #[test]
    fn text_without_dollars_is_unchanged() {
        let text = "fuse:\n  dir: \"/litefs\" # ünïcode\n";
        assert_eq!(expand_with(text, &HashMap::new()), text);
    }

    #[test]
    fn non_ascii_around_variables() {
        let e = env(&[("A", "ä")]);
        assert_eq!(expand_with("é$A€${A}ü$", &e), "éä€äü$");
        assert_eq!(expand_with("$é", &e), "$é");
    }

    #[test]
    fn process_env_rejects_impossible_names() {
        assert_eq!(process_env(""), None);
        assert_eq!(process_env("A=B"), None);
        assert_eq!(process_env("A\0B"), None);
        assert_eq!(
            process_env("LITEFS_CONFIG_TEST_SURELY_UNSET_VARIABLE"),
            None
        );
    }
}
