//! `litefs-rs ltx ...`: tools for LTX files and SQLite database files.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use litefs_ltx::dbfile::{self, SnapshotOptions};
use litefs_ltx::{checksum_page, Decoder, NodeId, TXID};

/// LTX tools.
#[derive(Debug, Subcommand)]
pub enum LtxCommand {
    /// Print an LTX file's header, pages (with their checksums) and trailer.
    Dump {
        /// The LTX file.
        file: PathBuf,
    },
    /// Check LTX files: structure, page order and checksums. Prints one line per file.
    Verify {
        /// The LTX files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the rolling checksum of a SQLite database file (lock page excluded).
    Checksum {
        /// The database file.
        db: PathBuf,
    },
    /// Apply LTX files, in the order given, to a database file (created if missing).
    Apply {
        /// The database file.
        #[arg(long = "db", value_name = "DBFILE")]
        db: PathBuf,
        /// The LTX files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write a snapshot LTX file of a database file.
    EncodeDb {
        /// Compress the body with LZ4.
        #[arg(short = 'c')]
        compress: bool,
        /// Where to write the LTX file.
        #[arg(short = 'o', value_name = "OUT")]
        out: PathBuf,
        /// The transaction id the snapshot records.
        #[arg(long = "txid", default_value_t = 1)]
        txid: u64,
        /// The database file.
        db: PathBuf,
    },
}

/// Runs one LTX tool. Returns the process exit code.
pub fn run(cmd: LtxCommand) -> Result<i32> {
    match cmd {
        LtxCommand::Dump { file } => dump(&file).map(|()| 0),
        LtxCommand::Verify { files } => Ok(verify(&files)),
        LtxCommand::Checksum { db } => {
            let (_, sum) = dbfile::checksum_file(&db)?;
            println!("{sum}");
            Ok(0)
        }
        LtxCommand::Apply { db, files } => {
            for file in &files {
                let pos = dbfile::apply_ltx(&db, file)?;
                println!("{}: applied, position {pos}", file.display());
            }
            Ok(0)
        }
        LtxCommand::EncodeDb {
            compress,
            out,
            txid,
            db,
        } => encode_db(&db, &out, compress, txid).map(|()| 0),
    }
}

fn open_decoder(path: &Path) -> Result<Decoder<BufReader<File>>> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    Decoder::new(BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("decode {}", path.display()))
}

fn dump(path: &Path) -> Result<()> {
    let mut dec = open_decoder(path)?;
    let h = *dec.header();
    let mut out = io::stdout().lock();
    writeln!(out, "# HEADER")?;
    writeln!(out, "Flags:             {:#010x}", h.flags.bits())?;
    writeln!(out, "Page size:         {}", h.page_size)?;
    writeln!(out, "Commit:            {}", h.commit)?;
    writeln!(
        out,
        "Min TXID:          {} ({})",
        h.min_txid,
        h.min_txid.get()
    )?;
    writeln!(
        out,
        "Max TXID:          {} ({})",
        h.max_txid,
        h.max_txid.get()
    )?;
    writeln!(out, "Timestamp:         {}", h.timestamp)?;
    writeln!(out, "Pre-apply:         {}", h.pre_apply_checksum)?;
    writeln!(out, "WAL offset:        {}", h.wal_offset)?;
    writeln!(out, "WAL size:          {}", h.wal_size)?;
    writeln!(
        out,
        "WAL salt:          {:08x} {:08x}",
        h.wal_salt1, h.wal_salt2
    )?;
    writeln!(out, "Node ID:           {}", h.node_id)?;
    writeln!(out)?;
    let mut buf = vec![0u8; h.page_size.bytes()];
    let mut index = 0;
    while let Some(pgno) = dec
        .next_page(&mut buf)
        .with_context(|| format!("decode {}", path.display()))?
    {
        index += 1;
        writeln!(
            out,
            "# PAGE {index}: pgno={pgno} checksum={}",
            checksum_page(pgno, &buf)
        )?;
    }
    let trailer = dec
        .finish()
        .with_context(|| format!("decode {}", path.display()))?;
    writeln!(out)?;
    writeln!(out, "# TRAILER")?;
    writeln!(out, "Post-apply:        {}", trailer.post_apply_checksum)?;
    writeln!(out, "File checksum:     {}", trailer.file_checksum)?;
    Ok(())
}

/// Verifies every file and reports each; exit code 1 if any failed.
fn verify(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for path in files {
        let res = open_decoder(path).and_then(|mut dec| {
            dec.finish()
                .with_context(|| format!("decode {}", path.display()))
        });
        match res {
            Ok(_) => println!("{}: ok", path.display()),
            Err(e) => {
                failed = true;
                println!("{}: {e:#}", path.display());
            }
        }
    }
    i32::from(failed)
}

fn encode_db(db: &Path, out: &Path, compress: bool, txid: u64) -> Result<()> {
    if txid == 0 {
        bail!("--txid must be at least 1");
    }
    let tmp = out.with_extension("ltx.tmp");
    let file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let opts = SnapshotOptions {
        compress,
        max_txid: TXID::new(txid),
        timestamp,
        node_id: NodeId::ZERO,
    };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = dbfile::encode_snapshot(db, &mut w, opts)
        .map_err(anyhow::Error::from)
        .and_then(|_| {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, out)?;
            Ok(())
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("write {}", out.display()))
}
