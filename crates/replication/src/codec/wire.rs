//! Big-endian primitives shared by the frame and pos-map codecs: a bounds-checked cursor for
//! reading and `put_*` helpers for writing.

use super::CodecError;

/// A read position in a borrowed buffer. Every read returns `None`, without moving, when the
/// buffer holds too few bytes.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N).and_then(|b| b.try_into().ok())
    }

    /// A big-endian `u32`.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// A big-endian `i64`.
    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// A `u32` length and that many bytes of UTF-8. The length is checked against `max` as soon
    /// as it is read, before any of the bytes it announces are needed, so an oversized length
    /// fails at once whatever follows. `Ok(None)`: the buffer ends before the string does.
    pub(crate) fn string(
        &mut self,
        max: usize,
        too_long: impl FnOnce(u32) -> CodecError,
        bad_utf8: impl FnOnce(String) -> CodecError,
    ) -> Result<Option<String>, CodecError> {
        let Some(len) = self.u32() else {
            return Ok(None);
        };
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        if n > max {
            return Err(too_long(len));
        }
        let Some(bytes) = self.bytes(n) else {
            return Ok(None);
        };
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(bad_utf8(String::from_utf8_lossy(bytes).into_owned())),
        }
    }

    /// A database name (at most [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes of UTF-8);
    /// `context` names the frame or body it is in, for errors.
    pub(crate) fn name(&mut self, context: &'static str) -> Result<Option<String>, CodecError> {
        self.string(
            super::MAX_NAME_LEN,
            |len| CodecError::NameTooLong { len, context },
            |name| CodecError::InvalidUtf8Name { name, context },
        )
    }
}

/// Appends a big-endian `u32`.
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u64`.
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `i64`.
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a `u32` length and the string's bytes. A string of 4 GiB or more (which no decoder
/// accepts anyway) gets the length `u32::MAX`.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, u32::try_from(s.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_and_stops_at_the_end() {
        let mut c = Cursor::new(&[0, 0, 0, 7, 1, 2]);
        assert_eq!(c.u32(), Some(7));
        assert_eq!(c.u32(), None);
        assert_eq!(c.position(), 4);
        assert_eq!(c.remaining(), 2);
        assert_eq!(c.bytes(2), Some(&[1u8, 2][..]));
        assert_eq!(c.bytes(usize::MAX), None);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn string_checks_length_before_data() {
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            c.name("test"),
            Err(CodecError::NameTooLong {
                len: u32::MAX,
                context: "test"
            })
        );
        let mut c = Cursor::new(&[0, 0, 0, 3, b'a']);
        assert_eq!(c.name("test"), Ok(None));
    }
}
