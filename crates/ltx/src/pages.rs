//! The page-order rules shared by the encoder and the decoder.

use crate::header::Header;
use crate::types::PageNum;

/// Why a page may not come next in a file.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PageOrderError {
    /// Page number zero inside the page block.
    #[error("page number 0 is not a page")]
    Zero,
    /// A page past the database size.
    #[error("page {pgno} is past the commit size of {commit} pages")]
    PastCommit {
        /// The page.
        pgno: u32,
        /// The header's commit.
        commit: u32,
    },
    /// The lock page.
    #[error("page {0} is the lock page, which is never stored")]
    LockPage(PageNum),
    /// Not strictly ascending.
    #[error("page {pgno} out of order: previous page was {prev}")]
    OutOfOrder {
        /// The page.
        pgno: u32,
        /// The page before it.
        prev: PageNum,
    },
    /// A snapshot that skips a page.
    #[error("snapshot page {pgno} out of order: expected page {expected}")]
    SnapshotGap {
        /// The page.
        pgno: u32,
        /// The page the snapshot needed next.
        expected: PageNum,
    },
    /// A snapshot that ends before its last page.
    #[error("snapshot ends after page {last} but the database has {commit} pages")]
    SnapshotIncomplete {
        /// The last page seen (0 if none).
        last: u32,
        /// The header's commit.
        commit: u32,
    },
}

/// Tracks the pages of one file and checks each against the header's rules: ascending, within
/// `commit`, never the lock page; a snapshot holds exactly pages 1..=commit but the lock page.
#[derive(Debug, Clone)]
pub(crate) struct PageOrder {
    commit: u32,
    lock_pgno: PageNum,
    snapshot: bool,
    prev: Option<PageNum>,
}

impl PageOrder {
    pub(crate) fn new(header: &Header) -> Self {
        PageOrder {
            commit: header.commit,
            lock_pgno: header.lock_pgno(),
            snapshot: header.is_snapshot(),
            prev: None,
        }
    }

    /// The page a snapshot must hold after `prev`.
    fn snapshot_next(&self) -> Option<PageNum> {
        let mut next = match self.prev {
            None => PageNum::ONE,
            Some(p) => p.next()?,
        };
        if next == self.lock_pgno {
            next = next.next()?;
        }
        Some(next)
    }

    /// Accepts `pgno` as the next page, or says why not.
    pub(crate) fn push(&mut self, pgno: u32) -> Result<PageNum, PageOrderError> {
        let page = PageNum::new(pgno).ok_or(PageOrderError::Zero)?;
        if pgno > self.commit {
            return Err(PageOrderError::PastCommit {
                pgno,
                commit: self.commit,
            });
        }
        if page == self.lock_pgno {
            return Err(PageOrderError::LockPage(page));
        }
        if self.snapshot {
            match self.snapshot_next() {
                Some(expected) if expected == page => {}
                Some(expected) => return Err(PageOrderError::SnapshotGap { pgno, expected }),
                None => {
                    return Err(PageOrderError::PastCommit {
                        pgno,
                        commit: self.commit,
                    })
                }
            }
        } else if let Some(prev) = self.prev {
            if page <= prev {
                return Err(PageOrderError::OutOfOrder { pgno, prev });
            }
        }
        self.prev = Some(page);
        Ok(page)
    }

    /// Checks that a snapshot held all its pages.
    pub(crate) fn finish(&self) -> Result<(), PageOrderError> {
        if !self.snapshot {
            return Ok(());
        }
        let complete = match self.snapshot_next() {
            Some(next) => next.get() > self.commit,
            None => true,
        };
        if complete {
            Ok(())
        } else {
            Err(PageOrderError::SnapshotIncomplete {
                last: self.prev.map_or(0, PageNum::get),
                commit: self.commit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Checksum, PageSize, TXID};

    fn order(min: u64, commit: u32, page_size: u32) -> PageOrder {
        let mut h = Header::new(
            PageSize::new(page_size).unwrap(),
            commit,
            TXID::new(min),
            TXID::new(min),
        );
        if min > 1 {
            h.pre_apply_checksum = Checksum::from_crc(1);
        }
        PageOrder::new(&h)
    }

    #[test]
    fn incremental_pages_ascend_within_commit() {
        let mut o = order(2, 10, 4096);
        assert!(o.push(1).is_ok());
        assert!(o.push(7).is_ok());
        assert_eq!(
            o.push(7),
            Err(PageOrderError::OutOfOrder {
                pgno: 7,
                prev: PageNum::new(7).unwrap()
            })
        );
        assert_eq!(
            o.push(11),
            Err(PageOrderError::PastCommit {
                pgno: 11,
                commit: 10
            })
        );
        assert_eq!(o.push(0), Err(PageOrderError::Zero));
        assert!(o.finish().is_ok());
    }

    #[test]
    fn snapshot_skips_only_the_lock_page() {
        // 65536-byte pages put the lock page at 16385, small enough to walk.
        let lock = 16385;
        let mut o = order(1, lock + 1, 65536);
        for p in 1..lock {
            o.push(p).unwrap();
        }
        assert!(matches!(o.push(lock), Err(PageOrderError::LockPage(_))));
        assert!(matches!(
            o.finish(),
            Err(PageOrderError::SnapshotIncomplete { .. })
        ));
        o.push(lock + 1).unwrap();
        o.finish().unwrap();

        let mut o = order(1, 3, 4096);
        o.push(1).unwrap();
        assert!(matches!(o.push(3), Err(PageOrderError::SnapshotGap { .. })));
    }
}
