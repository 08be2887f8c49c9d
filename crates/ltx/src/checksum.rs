//! CRC-64/GO-ISO checksums: of one page, of a whole database (the rolling checksum) and of an LTX
//! file. Every stored checksum has bit 63 set (see [`Checksum::FLAG`]).

use std::io::{self, Read};

use crate::types::{Checksum, PageNum, PageSize};

/// CRC-64 with the ISO polynomial as Go's `hash/crc64` computes it (reflected, init and xorout all
/// ones). Slice-by-16 tables: checksumming pages is on the commit path.
pub(crate) static CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_GO_ISO);

/// A running CRC-64/GO-ISO digest.
pub(crate) type Digest = crc::Digest<'static, u64, crc::Table<16>>;

/// The checksum of one page: `FLAG | crc64(be32(pgno) ++ data)`.
pub fn checksum_page(pgno: PageNum, data: &[u8]) -> Checksum {
    let mut digest = CRC64.digest();
    digest.update(&pgno.get().to_be_bytes());
    digest.update(data);
    Checksum::from_crc(digest.finalize())
}

/// The rolling checksum of a set of pages, built up one page at a time. The result does not
/// depend on the order pages are added, and the lock page must never be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollingChecksum(Checksum);

impl Default for RollingChecksum {
    fn default() -> Self {
        RollingChecksum(Checksum::EMPTY_DATABASE)
    }
}

impl RollingChecksum {
    /// The checksum of a database without pages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or, applied a second time, removes) one page's checksum.
    pub fn toggle(&mut self, page: Checksum) {
        self.0 = self.0.xor(page);
    }

    /// The checksum so far.
    pub fn get(self) -> Checksum {
        self.0
    }
}

/// Computes the rolling checksum of a database file of `page_count` pages read from `r`, skipping
/// the lock page. Fails with `UnexpectedEof` if the reader holds fewer pages.
pub fn checksum_database<R: Read>(
    mut r: R,
    page_size: PageSize,
    page_count: u32,
) -> io::Result<Checksum> {
    let mut sum = RollingChecksum::new();
    let mut page = vec![0u8; page_size.bytes()];
    let lock_pgno = page_size.lock_pgno();
    for n in 1..=page_count {
        r.read_exact(&mut page)?;
        let Some(pgno) = PageNum::new(n) else {
            continue;
        };
        if pgno != lock_pgno {
            sum.toggle(checksum_page(pgno, &page));
        }
    }
    Ok(sum.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_go_iso() {
        // The check value of the CRC-64/GO-ISO parameter set.
        assert_eq!(CRC64.checksum(b"123456789"), 0xb90956c775a41001);
    }

    #[test]
    fn rolling_checksum_is_order_independent() {
        let p1 = checksum_page(PageNum::ONE, &[1u8; 512]);
        let p2 = checksum_page(PageNum::new(2).unwrap(), &[2u8; 512]);
        let mut a = RollingChecksum::new();
        a.toggle(p1);
        a.toggle(p2);
        let mut b = RollingChecksum::new();
        b.toggle(p2);
        b.toggle(p1);
        assert_eq!(a, b);
        b.toggle(p2);
        b.toggle(p1);
        assert_eq!(b.get(), Checksum::EMPTY_DATABASE);
    }

    #[test]
    fn database_checksum_reads_every_page() {
        let ps = PageSize::new(512).unwrap();
        let data: Vec<u8> = (0..1536u32).map(|i| (i % 251) as u8).collect();
        let mut expect = RollingChecksum::new();
        for (i, page) in data.chunks(512).enumerate() {
            expect.toggle(checksum_page(PageNum::new(i as u32 + 1).unwrap(), page));
        }
        assert_eq!(checksum_database(&data[..], ps, 3).unwrap(), expect.get());
        let err = checksum_database(&data[..], ps, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
