//! The chunked encoding of LTX bodies (LiteFS `internal/chunk`): chunks of `u16` length (1 to
//! 65535) and data, ended by a `u16` 0. The LTX file's size need not be known in advance.

use std::fmt;
use std::io::{self, Write};

use super::MAX_CHUNK_LEN;

/// The chunk header of a chunk of `len` bytes (`len <= MAX_CHUNK_LEN`).
fn chunk_header(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// Appends `data` in chunked encoding to `out`: chunks of [`MAX_CHUNK_LEN`] bytes and a shorter
/// last one, then the terminating zero length. Empty `data` is just the terminator.
pub fn encode_chunks(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 2 * (data.len() / MAX_CHUNK_LEN + 2));
    for chunk in data.chunks(MAX_CHUNK_LEN) {
        out.extend_from_slice(&chunk_header(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&[0, 0]);
}

/// Writes a chunked body to an inner writer as data is written to it.
///
/// Writes are gathered into chunks of up to [`MAX_CHUNK_LEN`] bytes (a write of a full chunk or
/// more into an empty buffer goes straight through), so many small writes, such as an LTX
/// encoder's page headers and pages, do not each cost a chunk header. [`flush`](Write::flush)
/// sends the data gathered so far as one chunk; [`finish`](ChunkWriter::finish) sends it and the
/// terminator. Dropping the writer without `finish` leaves the body unterminated. After an I/O
/// error the body on the inner writer is incomplete and cannot be resumed.
pub struct ChunkWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> ChunkWriter<W> {
    /// Starts a chunked body on `inner`.
    pub fn new(inner: W) -> ChunkWriter<W> {
        ChunkWriter {
            inner,
            buf: Vec::new(),
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Bytes written but not yet sent as a chunk.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Sends the gathered data as one chunk, if there is any.
    fn send_pending(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.inner.write_all(&chunk_header(self.buf.len()))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Sends the remaining data and the terminating zero length, flushes, and returns the inner
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_pending()?;
        self.inner.write_all(&[0, 0])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            // Length 0 is the terminator: an empty write sends nothing.
            return Ok(0);
        }
        if self.buf.len() == MAX_CHUNK_LEN {
            self.send_pending()?;
        }
        if self.buf.is_empty() && data.len() >= MAX_CHUNK_LEN {
            let chunk = &data[..MAX_CHUNK_LEN];
            self.inner.write_all(&chunk_header(chunk.len()))?;
            self.inner.write_all(chunk)?;
            return Ok(chunk.len());
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(MAX_CHUNK_LEN);
        }
        let n = data.len().min(MAX_CHUNK_LEN - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()?;
        self.inner.flush()
    }
}

impl<W: Write + fmt::Debug> fmt::Debug for ChunkWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("inner", &self.inner)
            .field("pending", &self.buf.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a chunked body into its chunk lengths, checking the terminator is last.
    fn chunk_lens(mut body: &[u8]) -> Vec<usize> {
        let mut lens = Vec::new();
        loop {
            let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            body = &body[2..];
            if len == 0 {
                assert!(body.is_empty(), "bytes after the terminator");
                return lens;
            }
            lens.push(len);
            body = &body[len..];
        }
    }

    #[test]
    fn encode_chunks_splits_at_max() {
        for (len, want) in [
            (0, vec![]),
            (1, vec![1]),
            (65535, vec![65535]),
            (65536, vec![65535, 1]),
            (200_000, vec![65535, 65535, 65535, 3395]),
        ] {
            let mut out = Vec::new();
            encode_chunks(&vec![7u8; len], &mut out);
            assert_eq!(chunk_lens(&out), want, "len {len}");
            assert_eq!(out.len(), len + 2 * want.len() + 2);
        }
    }

    #[test]
    fn chunk_writer_gathers_small_writes() {
        let mut w = ChunkWriter::new(Vec::new());
        for _ in 0..1000 {
            w.write_all(&[1, 2, 3]).unwrap();
        }
        w.write_all(&[]).unwrap();
        assert_eq!(w.pending(), 3000);
        assert!(w.get_ref().is_empty());
        let out = w.finish().unwrap();
        assert_eq!(chunk_lens(&out), vec![3000]);
    }

    #[test]
    fn chunk_writer_flush_sends_a_chunk() {
        let mut w = ChunkWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.flush().unwrap();
        w.flush().unwrap();
        w.write_all(b"c").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out, [0, 2, b'a', b'b', 0, 1, b'c', 0, 0]);
    }

    #[test]
    fn chunk_writer_large_writes() {
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut w = ChunkWriter::new(Vec::new());
        w.write_all(&data[..10]).unwrap();
        w.write_all(&data[10..]).unwrap();
        let out = w.finish().unwrap();
        let lens = chunk_lens(&out);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        assert!(lens.iter().all(|&l| (1..=MAX_CHUNK_LEN).contains(&l)));
        let mut expected = Vec::new();
        encode_chunks(&data, &mut expected);
        assert_eq!(out, expected);
    }

    #[test]
    fn chunk_writer_empty_body() {
        let out = ChunkWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(out, [0, 0]);
    }
}
