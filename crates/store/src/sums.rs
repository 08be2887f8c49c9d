//! The logical database's page checksums and their rolling sum, kept up to date page by page so
//! that a commit costs time in proportion to the pages it touched.

use litefs_ltx::{Checksum, PageNum, RollingChecksum};

/// Per-page checksums (index `pgno - 1`, zero for a page never seen or the lock page) and the
/// rolling checksum of pages `1..=len`.
#[derive(Debug, Default, Clone)]
pub(crate) struct PageSums {
    pages: Vec<Checksum>,
    sum: RollingChecksum,
}

impl PageSums {
    /// Number of pages tracked.
    pub(crate) fn len(&self) -> u32 {
        self.pages.len() as u32
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
        self.pages.resize(n, Checksum::ZERO);
    }

    /// The rolling checksum of the database.
    pub(crate) fn total(&self) -> Checksum {
        self.sum.get()
    }
}
