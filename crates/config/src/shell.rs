//! Splitting an `exec` command line into program and arguments, shell style but without a
//! shell: no variables, globs, pipes or redirections.

use crate::ConfigError;

/// Splits `line` into words the way a POSIX shell would quote them.
///
/// * Words are separated by unquoted spaces, tabs, carriage returns and newlines.
/// * `'...'` keeps everything inside literally (a backslash is an ordinary character there).
/// * `"..."` keeps spaces and quotes of the other kind; a backslash inside takes the next
///   character literally.
/// * Outside quotes, a backslash takes the next character literally (`a\ b` is one word).
/// * Quoted and unquoted parts next to each other form one word (`--name="a b"` gives
///   `--name=a b`), and `""` or `''` alone is an empty word.
///
/// Errors: an unterminated quote, a trailing backslash, or an unquoted shell operator
/// (`;`, `&`, `|`, `<`, `>`). LiteFS's splitter (go-shellwords) silently drops everything
/// from such an operator on; here it is an error so the command does not half-run. Wrap
/// such commands in `sh -c '...'`. Unlike go-shellwords, `\t` and `\n` are not turned into a
/// tab or a newline: a backslash always keeps the next character as is.
pub fn split_args(line: &str) -> Result<Vec<String>, ConfigError> {
    let error = |reason: &str| ConfigError::InvalidCommand {
        command: line.to_owned(),
        reason: reason.to_owned(),
    };

    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
    }

    let mut args = Vec::new();
    let mut word = String::new();
    // Whether a word has started, even if empty (`""` makes an empty word).
    let mut in_word = false;
    let mut state = State::Plain;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match state {
            State::Single => {
                if c == '\'' {
                    state = State::Plain;
                } else {
                    word.push(c);
                }
            }
            State::Double => match c {
                '"' => state = State::Plain,
                '\\' => word.push(
                    chars
                        .next()
                        .ok_or_else(|| error("unterminated double quote"))?,
                ),
                _ => word.push(c),
            },
            State::Plain => match c {
                ' ' | '\t' | '\r' | '\n' => {
                    if in_word {
                        args.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                '\'' => {
                    state = State::Single;
                    in_word = true;
                }
                '"' => {
                    state = State::Double;
                    in_word = true;
                }
                '\\' => {
                    word.push(chars.next().ok_or_else(|| error("trailing backslash"))?);
                    in_word = true;
                }
                ';' | '&' | '|' | '<' | '>' => {
                    return Err(error(&format!(
                        "shell operator {c:?} is not supported (quote it, or run the command \
                         through sh -c '...')"
                    )));
                }
                _ => {
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    match state {
        State::Single => return Err(error("unterminated single quote")),
        State::Double => return Err(error("unterminated double quote")),
        State::Plain => {}
    }
    if in_word {
        args.push(word);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_args(s).unwrap()
    }

    #[test]
    fn whitespace_separates_words() {
        assert_eq!(split("myapp -addr :8081"), ["myapp", "-addr", ":8081"]);
        assert_eq!(split("  a \t b\n c\r\n"), ["a", "b", "c"]);
        assert!(split("").is_empty());
        assert!(split("   ").is_empty());
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(
            split("sh -c 'echo $HOME; ls | wc'"),
            ["sh", "-c", "echo $HOME; ls | wc"]
        );
        assert_eq!(split(r"'a\b'"), [r"a\b"]);
        assert_eq!(split(r#"'say "hi"'"#), [r#"say "hi""#]);
    }

    #[test]
    fn double_quotes_allow_backslash_escapes() {
        assert_eq!(split(r#""a b" c"#), ["a b", "c"]);
        assert_eq!(split(r#""say \"hi\"""#), [r#"say "hi""#]);
        assert_eq!(split(r#""back\\slash""#), [r"back\slash"]);
        assert_eq!(split(r#""it's""#), ["it's"]);
        assert_eq!(split(r#""a\nb""#), ["anb"]);
    }

    #[test]
    fn backslash_escapes_outside_quotes() {
        assert_eq!(split(r"a\ b c"), ["a b", "c"]);
        assert_eq!(split(r"\'x"), ["'x"]);
        assert_eq!(split(r"x\;y"), ["x;y"]);
    }

    #[test]
    fn adjacent_parts_join_and_empty_quotes_make_words() {
        assert_eq!(split(r#"--name="a b"x'y z'"#), ["--name=a bxy z"]);
        assert_eq!(split(r#"a "" b ''"#), ["a", "", "b", ""]);
    }

    #[test]
    fn quoted_operators_are_fine() {
        assert_eq!(
            split(r#"curl "http://x/?a=1&b=2" '>'"#),
            ["curl", "http://x/?a=1&b=2", ">"]
        );
    }

    #[test]
    fn errors_name_the_command() {
        for (bad, reason) in [
            ("echo 'oops", "unterminated single quote"),
            ("echo \"oops", "unterminated double quote"),
            ("echo \"oops\\", "unterminated double quote"),
            ("echo oops\\", "trailing backslash"),
            ("migrate && serve", "shell operator '&'"),
            ("a; b", "shell operator ';'"),
            ("a | b", "shell operator '|'"),
            ("a > log", "shell operator '>'"),
        ] {
            let msg = split_args(bad).unwrap_err().to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(reason), "{msg}");
        }
    }
}
