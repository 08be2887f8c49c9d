//! `http.auth-token`: the shared secret of the internal API. Every request to a node's API
//! carries it as `Authorization: Bearer <token>` when the cluster has one; the server checks
//! it in constant time.

use std::fmt;
use std::sync::Arc;

/// The scheme of the `Authorization` header.
const BEARER: &str = "Bearer ";

/// A configured token (never empty). Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Arc<str>);

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request has no `Authorization: Bearer` header.
    #[error("missing auth token: this node's API needs `Authorization: Bearer <token>` (http.auth-token)")]
    Missing,
    /// The request has one, with another token.
    #[error("wrong auth token: the request's bearer token is not this node's http.auth-token")]
    Wrong,
}

impl AuthToken {
    /// The token of `http.auth-token`, or `None` when it is empty (the API is open).
    pub fn new(token: &str) -> Option<AuthToken> {
        (!token.is_empty()).then(|| AuthToken(token.into()))
    }

    /// The value of the `Authorization` header that carries it.
    pub fn header_value(&self) -> String {
        format!("{BEARER}{}", self.0)
    }

    /// Checks the `Authorization` header of a request (`None` when it has none).
    pub fn check(&self, header: Option<&[u8]>) -> Result<(), AuthError> {
        let given = header
            .and_then(|h| h.strip_prefix(BEARER.as_bytes()))
            .ok_or(AuthError::Missing)?;
        if constant_time_eq(given, self.0.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }
}

/// Whether `given` equals `expected`, in a time that depends on their lengths only: every byte
/// of `expected` is compared, whatever differs first.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_token_is_off() {
        assert!(AuthToken::new("").is_none());
    }

    #[test]
    fn header_is_checked() {
        let t = AuthToken::new("s3cret").expect("a token");
        assert_eq!(t.header_value(), "Bearer s3cret");
        assert_eq!(t.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(t.check(None), Err(AuthError::Missing));
        assert_eq!(t.check(Some(b"Basic czNjcmV0")), Err(AuthError::Missing));
        assert_eq!(t.check(Some(b"s3cret")), Err(AuthError::Missing));
        for wrong in [
            &b"Bearer "[..],
            b"Bearer s3cre",
            b"Bearer s3cret ",
            b"Bearer s3creT",
            b"Bearer S3cret",
            b"Bearer s3cret\0",
        ] {
            assert_eq!(t.check(Some(wrong)), Err(AuthError::Wrong), "{wrong:?}");
        }
    }

    #[test]
    fn messages_and_debug_never_show_the_token() {
        let t = AuthToken::new("s3cret").expect("a token");
        assert!(!format!("{t:?}").contains("s3cret"));
        for e in [AuthError::Missing, AuthError::Wrong] {
            assert!(!e.to_string().contains("s3cret"));
        }
        assert!(AuthError::Missing.to_string().starts_with("missing"));
        assert!(AuthError::Wrong.to_string().starts_with("wrong"));
    }

    #[test]
    fn equality_compares_every_byte() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"\0\0\0", b"abc"));
    }
}
