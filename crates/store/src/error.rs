//! The store's error type.

use std::io;
use std::path::PathBuf;

use litefs_ltx::{Checksum, Pos, TXID};

/// What can go wrong in the store. The FUSE adapter maps each variant to one errno.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// An I/O error on a file of the data directory.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No such database or file.
    #[error("database {0:?} does not exist")]
    NotFound(String),
    /// A database name that cannot be stored.
    #[error("invalid database name {name}: {reason}", name = shown_name(.0), reason = .1)]
    InvalidName(String, &'static str),
    /// A write to the database file that is not whole pages at page boundaries.
    #[error("database {db}: write of {len} bytes at offset {offset} is not whole pages of {page_size} bytes")]
    UnalignedWrite {
        /// The database.
        db: String,
        /// Write offset.
        offset: u64,
        /// Write length.
        len: usize,
        /// Page size.
        page_size: u32,
    },
    /// A write or transaction that would grow the database by more pages than allowed at once.
    #[error("database {db}: growing to {pages} pages at once is refused (limit {limit})")]
    Growth {
        /// The database.
        db: String,
        /// The size asked for.
        pages: u32,
        /// The largest size allowed.
        limit: u32,
    },
    /// A whole-file operation (rename over it, or of it) on a database that a SQLite
    /// transaction is using: a hot journal or WAL frames not yet checkpointed.
    #[error("database {db}: {why}")]
    Busy {
        /// The database.
        db: String,
        /// What is in the way.
        why: &'static str,
    },
    /// An LTX file that does not continue the database's position.
    #[error("database {db}: at {have}, an LTX file for {want} does not apply")]
    PosMismatch {
        /// The database.
        db: String,
        /// Its position.
        have: Pos,
        /// The position the file applies to.
        want: Pos,
    },
    /// The database kept changing while a snapshot of it was read.
    #[error("database {db}: changed during every attempt to snapshot it")]
    SnapshotMoved {
        /// The database.
        db: String,
    },
    /// A write on a node that is not the primary.
    #[error("database {0}: read-only on a replica (writes go to the primary)")]
    ReadOnly(String),
    /// A transaction written under the halt lock was not accepted by the primary: it is not
    /// committed here either.
    #[error("database {db}: the primary did not take the transaction written under the halt lock: {why}")]
    Forward {
        /// The database.
        db: String,
        /// What the primary answered, or why it could not be reached.
        why: String,
    },
    /// A file offered as a database's new content is not a SQLite database.
    #[error("{path}: not a SQLite database ({why})")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A write over WAL frames that were already committed and captured.
    #[error("database {db}: write at WAL offset {offset} overlaps committed frames ending at {committed_end}")]
    WalOverwrite {
        /// The database.
        db: String,
        /// Write offset.
        offset: u64,
        /// End of the committed frames.
        committed_end: u64,
    },
    /// The database does not match its last transaction and is not served.
    #[error(
        "database {db}: checksum {actual} on TXID {txid} does not match LTX post-apply checksum {expected}; \
         the database is not served"
    )]
    ChecksumMismatch {
        /// The database.
        db: String,
        /// Its TXID.
        txid: TXID,
        /// The database's checksum.
        actual: Checksum,
        /// What the last LTX file says.
        expected: Checksum,
    },
    /// The database was refused at start and is not served.
    #[error("database {db} is not served: {reason}")]
    Unavailable {
        /// The database.
        db: String,
        /// Why.
        reason: String,
    },
    /// An LTX file could not be written.
    #[error("database {db}: encode ltx file")]
    Encode {
        /// The database.
        db: String,
        /// What went wrong.
        #[source]
        source: litefs_ltx::EncodeError,
    },
    /// An LTX file could not be read.
    #[error("database {db}: decode {path}")]
    Decode {
        /// The database.
        db: String,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: litefs_ltx::DecodeError,
    },
    /// A page's content does not match the checksum recorded when it was written.
    #[error("database {db}: page {pgno} on disk has checksum {actual}, expected {expected}")]
    PageChecksum {
        /// The database.
        db: String,
        /// The page.
        pgno: u32,
        /// On disk.
        actual: Checksum,
        /// Recorded.
        expected: Checksum,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// Result type of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, `: `-separated, for logs and messages read by people.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The longest part of a refused name an error message shows.
const SHOWN_NAME: usize = 64;

/// A name for an error message, quoted: cut after [`SHOWN_NAME`] bytes (at a character
/// boundary) with its length, so that a name of 10 000 bytes does not fill the log.
fn shown_name(name: &str) -> String {
    if name.len() <= SHOWN_NAME {
        return format!("{name:?}");
    }
    let mut end = SHOWN_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}
