//! Tools over plain SQLite database files: their rolling checksum, a snapshot LTX of one, and
//! applying LTX files to one. These back the `ltx` subcommands; they read whole files and are
//! not the store's commit path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::checksum::{checksum_page, RollingChecksum};
use crate::decoder::{DecodeError, Decoder};
use crate::encoder::{EncodeError, Encoder};
use crate::header::{Flags, Header, Trailer};
use crate::types::{Checksum, NodeId, PageNum, PageSize, Pos, TXID};

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Why a database file could not be read, snapshotted or updated.
#[derive(thiserror::Error, Debug)]
pub enum DbFileError {
    /// The file does not start with SQLite's magic string.
    #[error("{0}: not a SQLite database (bad header)")]
    NotSqlite(PathBuf),
    /// The header's page size field is not a valid page size.
    #[error("{path}: invalid page size {value} in the database header")]
    PageSize {
        /// The database.
        path: PathBuf,
        /// The raw header field.
        value: u32,
    },
    /// The file's length is not a whole number of pages.
    #[error("{path}: size {len} is not a multiple of the page size {page_size}")]
    Size {
        /// The database.
        path: PathBuf,
        /// File length.
        len: u64,
        /// Page size.
        page_size: PageSize,
    },
    /// The LTX file's page size differs from the database's.
    #[error("{ltx}: page size {ltx_page_size} differs from the database's {db_page_size}")]
    PageSizeMismatch {
        /// The LTX file.
        ltx: PathBuf,
        /// Its page size.
        ltx_page_size: PageSize,
        /// The database's page size.
        db_page_size: PageSize,
    },
    /// The database is not at the state the LTX file applies to.
    #[error("{ltx}: pre-apply checksum {expected} does not match database checksum {actual}")]
    PreApplyChecksum {
        /// The LTX file.
        ltx: PathBuf,
        /// The LTX file's pre-apply checksum.
        expected: Checksum,
        /// The database's checksum.
        actual: Checksum,
    },
    /// After applying, the database does not have the checksum the LTX file promises.
    #[error("{ltx}: database checksum {actual} after apply does not match post-apply checksum {expected}")]
    PostApplyChecksum {
        /// The LTX file.
        ltx: PathBuf,
        /// The LTX file's post-apply checksum.
        expected: Checksum,
        /// The database's checksum.
        actual: Checksum,
    },
    /// The LTX file is invalid.
    #[error("{path}: decode ltx file")]
    Decode {
        /// The LTX file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The snapshot could not be encoded.
    #[error("encode snapshot of {path}")]
    Encode {
        /// The database.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: EncodeError,
    },
    /// An I/O error.
    #[error("{path}: {op}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> DbFileError + 'a {
    move |source| DbFileError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The shape of a database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbInfo {
    /// Page size from the header; `None` for an empty file.
    pub page_size: Option<PageSize>,
    /// Number of pages in the file.
    pub page_count: u32,
}

/// Reads the page size from the first 100 bytes of a database (offset 16, big-endian u16, where
/// 1 means 65536).
pub fn page_size_from_header(path: &Path, header: &[u8]) -> Result<PageSize, DbFileError> {
    if header.len() < 100 || &header[..16] != SQLITE_MAGIC {
        return Err(DbFileError::NotSqlite(path.to_owned()));
    }
    let value = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u32::from(n),
    };
    PageSize::new(value).ok_or(DbFileError::PageSize {
        path: path.to_owned(),
        value,
    })
}

/// Reads a database file's page size and page count.
pub fn inspect(path: &Path, file: &mut File) -> Result<DbInfo, DbFileError> {
    let len = file.metadata().map_err(io_err(path, "stat"))?.len();
    if len == 0 {
        return Ok(DbInfo {
            page_size: None,
            page_count: 0,
        });
    }
    let mut header = [0u8; 100];
    file.seek(SeekFrom::Start(0))
        .map_err(io_err(path, "seek"))?;
    file.read_exact(&mut header).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DbFileError::NotSqlite(path.to_owned()),
        _ => io_err(path, "read header")(e),
    })?;
    let page_size = page_size_from_header(path, &header)?;
    let size_error = || DbFileError::Size {
        path: path.to_owned(),
        len,
        page_size,
    };
    if len % u64::from(page_size.get()) != 0 {
        return Err(size_error());
    }
    let page_count = u32::try_from(len / u64::from(page_size.get())).map_err(|_| size_error())?;
    Ok(DbInfo {
        page_size: Some(page_size),
        page_count,
    })
}

/// Computes the rolling checksum of a database file (lock page excluded). An empty file has the
/// checksum of an empty database.
pub fn checksum_file(path: &Path) -> Result<(DbInfo, Checksum), DbFileError> {
    let mut file = File::open(path).map_err(io_err(path, "open"))?;
    checksum_open_file(path, &mut file)
}

fn checksum_open_file(path: &Path, file: &mut File) -> Result<(DbInfo, Checksum), DbFileError> {
    let info = inspect(path, file)?;
    let Some(page_size) = info.page_size else {
        return Ok((info, Checksum::EMPTY_DATABASE));
    };
    file.seek(SeekFrom::Start(0))
        .map_err(io_err(path, "seek"))?;
    let sum = crate::checksum::checksum_database(
        BufReader::with_capacity(1 << 20, &mut *file),
        page_size,
        info.page_count,
    )
    .map_err(io_err(path, "read pages"))?;
    Ok((info, sum))
}

/// Options for [`encode_snapshot`].
#[derive(Clone, Copy, Debug)]
pub struct SnapshotOptions {
    /// Compress the body with LZ4.
    pub compress: bool,
    /// The transaction id the snapshot brings the database to.
    pub max_txid: TXID,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The writing node.
    pub node_id: NodeId,
}

/// Writes a snapshot LTX file (every page but the lock page) of the database at `path`, streaming
/// page by page.
pub fn encode_snapshot<W: Write>(
    path: &Path,
    w: W,
    opts: SnapshotOptions,
) -> Result<(Header, Trailer), DbFileError> {
    let mut file = File::open(path).map_err(io_err(path, "open"))?;
    let info = inspect(path, &mut file)?;
    let page_size = info
        .page_size
        .ok_or_else(|| DbFileError::NotSqlite(path.to_owned()))?;
    let mut header = Header::new(page_size, info.page_count, TXID::ONE, opts.max_txid);
    if opts.compress {
        header.flags = Flags::COMPRESS_LZ4;
    }
    header.timestamp = opts.timestamp;
    header.node_id = opts.node_id;
    let encode_err = |source| DbFileError::Encode {
        path: path.to_owned(),
        source,
    };
    let mut enc = Encoder::new(w, &header).map_err(encode_err)?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err(path, "seek"))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut page = vec![0u8; page_size.bytes()];
    let mut sum = RollingChecksum::new();
    let lock_pgno = page_size.lock_pgno();
    for n in 1..=info.page_count {
        r.read_exact(&mut page).map_err(io_err(path, "read page"))?;
        let Some(pgno) = PageNum::new(n) else {
            continue;
        };
        if pgno == lock_pgno {
            continue;
        }
        sum.toggle(checksum_page(pgno, &page));
        enc.encode_page(pgno, &page).map_err(encode_err)?;
    }
    let (trailer, _) = enc.finish(sum.get()).map_err(encode_err)?;
    Ok((header, trailer))
}

/// Applies one LTX file to the database at `db_path` (created if missing), after verifying the
/// whole file and that the database is at the file's pre-apply checksum. Returns the new
/// position. The database is synced before returning.
pub fn apply_ltx(db_path: &Path, ltx_path: &Path) -> Result<Pos, DbFileError> {
    let decode_err = |source| DbFileError::Decode {
        path: ltx_path.to_owned(),
        source,
    };
    let open_ltx = || -> Result<Decoder<BufReader<File>>, DbFileError> {
        let f = File::open(ltx_path).map_err(io_err(ltx_path, "open"))?;
        Decoder::new(BufReader::with_capacity(1 << 20, f)).map_err(decode_err)
    };

    // First pass: the file is whole and valid before any page reaches the database.
    let mut dec = open_ltx()?;
    let trailer = dec.finish().map_err(decode_err)?;
    let header = *dec.header();

    let mut db = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(db_path)
        .map_err(io_err(db_path, "open"))?;
    let (info, before) = checksum_open_file(db_path, &mut db)?;
    if let Some(db_page_size) = info.page_size {
        if db_page_size != header.page_size && !header.is_snapshot() {
            return Err(DbFileError::PageSizeMismatch {
                ltx: ltx_path.to_owned(),
                ltx_page_size: header.page_size,
                db_page_size,
            });
        }
    }
    if !header.is_snapshot() && before != header.pre_apply_checksum {
        return Err(DbFileError::PreApplyChecksum {
            ltx: ltx_path.to_owned(),
            expected: header.pre_apply_checksum,
            actual: before,
        });
    }

    // Second pass: write the pages.
    let mut dec = open_ltx()?;
    let mut page = vec![0u8; header.page_size.bytes()];
    {
        let mut w = BufWriter::with_capacity(1 << 20, &mut db);
        let mut at = None;
        while let Some(pgno) = dec.next_page(&mut page).map_err(decode_err)? {
            let offset = header.page_size.offset_of(pgno);
            if at != Some(offset) {
                w.seek(SeekFrom::Start(offset))
                    .map_err(io_err(db_path, "seek"))?;
            }
            w.write_all(&page).map_err(io_err(db_path, "write page"))?;
            at = Some(offset + page.len() as u64);
        }
        w.flush().map_err(io_err(db_path, "write page"))?;
    }
    dec.finish().map_err(decode_err)?;
    db.set_len(u64::from(header.commit) * u64::from(header.page_size.get()))
        .map_err(io_err(db_path, "truncate"))?;
    db.sync_all().map_err(io_err(db_path, "sync"))?;

    let (_, after) = checksum_open_file(db_path, &mut db)?;
    if after != trailer.post_apply_checksum {
        return Err(DbFileError::PostApplyChecksum {
            ltx: ltx_path.to_owned(),
            expected: trailer.post_apply_checksum,
            actual: after,
        });
    }
    Ok(Pos::new(header.max_txid, after))
}
