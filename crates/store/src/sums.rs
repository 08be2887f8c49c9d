//! The logical database's page checksums and their rolling sum, kept up to date page by page so
//! that a commit costs time in proportion to the pages it touched.

use litefs_ltx::{Checksum, PageNum, RollingChecksum};

/// Per-page checksums (index `pgno - 1`, zero for a page never seen or the lock page) and the
/// rolling checksum of pages `1..=len`.
///
/// The table holds entries up to the highest page set, never more: a size read from a file (an
/// LTX header's commit, a database header's page count) only moves `len`, so a hostile size
/// cannot make it allocate. Pages past the table and within `len` count as zero.
#[derive(Debug, Default, Clone)]
pub(crate) struct PageSums {
    pages: Vec<Checksum>,
    len: u32,
    sum: RollingChecksum,
}

impl PageSums {
    /// Number of pages tracked.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The checksum of one page, zero if unknown.
    pub(crate) fn get(&self, pgno: PageNum) -> Checksum {
        self.pages
            .get(pgno.get() as usize - 1)
            .copied()
            .unwrap_or(Checksum::ZERO)
    }

    /// Records a page's new checksum, growing the table if needed.
    pub(crate) fn set(&mut self, pgno: PageNum, checksum: Checksum) {
        let i = pgno.get() as usize - 1;
        if i >= self.pages.len() {
            self.pages.resize(i + 1, Checksum::ZERO);
        }
        self.len = self.len.max(pgno.get());
        let old = self.pages[i];
        if !old.is_zero() {
            self.sum.toggle(old);
        }
        if !checksum.is_zero() {
            self.sum.toggle(checksum);
        }
        self.pages[i] = checksum;
    }

    /// Sets the database size in pages: pages past it leave the sum.
    pub(crate) fn set_len(&mut self, pages: u32) {
        let n = pages as usize;
        while self.pages.len() > n {
            if let Some(old) = self.pages.pop() {
                if !old.is_zero() {
                    self.sum.toggle(old);
                }
            }
        }
        self.len = pages;
    }

    /// The rolling checksum of the database.
    pub(crate) fn total(&self) -> Checksum {
        self.sum.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_size_does_not_grow_the_table() {
        let mut sums = PageSums::default();
        let one = PageNum::ONE;
        let c = Checksum::from_crc(7);
        sums.set(one, c);
        // An LTX header's commit of u32::MAX pages once sized the table: 32 GiB.
        sums.set_len(u32::MAX);
        assert_eq!(sums.len(), u32::MAX);
        assert_eq!(sums.pages.len(), 1);
        assert_eq!(sums.total(), RollingChecksum::new().get().xor(c));
        let last = PageNum::new(u32::MAX).unwrap_or(one);
        assert_eq!(sums.get(last), Checksum::ZERO);
        // Shrinking still drops the pages past the new size from the sum.
        sums.set_len(0);
        assert_eq!(sums.len(), 0);
        assert_eq!(sums.total(), RollingChecksum::new().get());
        sums.set(PageNum::new(3).unwrap_or(one), c);
        assert_eq!(sums.len(), 3);
    }
}
