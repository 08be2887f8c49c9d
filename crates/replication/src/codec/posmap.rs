//! The pos-map body of `POST /stream`: the replica's position of every database it has.

use std::collections::{btree_map, BTreeMap};
use std::io::{self, Write};

use litefs_ltx::{Checksum, Pos, TXID};

use super::wire::{put_str, put_u32, put_u64, Cursor};
use super::{CodecError, MAX_POS_MAP_COUNT};

/// Database name → replication position, ordered by name (bytewise, as LiteFS sorts them).
///
/// On the wire: `u32 count`, then for each database in name order `u32 nameLen`, name,
/// `u64 TXID`, `u64 PostApplyChecksum`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PosMap(BTreeMap<String, Pos>);

impl PosMap {
    /// An empty map.
    pub fn new() -> PosMap {
        PosMap::default()
    }

    /// Sets a database's position, returning the previous one.
    pub fn insert(&mut self, name: impl Into<String>, pos: Pos) -> Option<Pos> {
        self.0.insert(name.into(), pos)
    }

    /// A database's position.
    pub fn get(&self, name: &str) -> Option<Pos> {
        self.0.get(name).copied()
    }

    /// Removes a database, returning its position.
    pub fn remove(&mut self, name: &str) -> Option<Pos> {
        self.0.remove(name)
    }

    /// The number of databases.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the map holds no database.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The databases and positions, in name order.
    pub fn iter(&self) -> btree_map::Iter<'_, String, Pos> {
        self.0.iter()
    }

    /// The underlying map.
    pub fn as_map(&self) -> &BTreeMap<String, Pos> {
        &self.0
    }

    /// Unwraps the underlying map.
    pub fn into_map(self) -> BTreeMap<String, Pos> {
        self.0
    }

    /// The length of the encoded body.
    pub fn encoded_len(&self) -> usize {
        4 + self.0.keys().map(|name| 4 + name.len() + 16).sum::<usize>()
    }

    /// The encoded body. Names are written as they are; the decoder refuses names longer than
    /// [`MAX_NAME_LEN`](super::MAX_NAME_LEN) and maps of more than [`MAX_POS_MAP_COUNT`]
    /// databases.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        put_u32(&mut out, u32::try_from(self.0.len()).unwrap_or(u32::MAX));
        for (name, pos) in &self.0 {
            put_str(&mut out, name);
            put_u64(&mut out, pos.txid.get());
            put_u64(&mut out, pos.post_apply_checksum.get());
        }
        out
    }

    /// Writes the encoded body to `w`.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.encode())
    }

    /// Decodes a whole body, which must hold exactly one pos map. Entries need not be in name
    /// order (LiteFS reads them into a hash map), but a name may appear only once.
    pub fn decode(body: &[u8]) -> Result<PosMap, CodecError> {
        let mut c = Cursor::new(body);
        let count = c.u32().ok_or(CodecError::Truncated("pos map count"))?;
        if count > MAX_POS_MAP_COUNT {
            return Err(CodecError::PosMapCountTooLarge { count });
        }
        let truncated = CodecError::Truncated("pos map entry");
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let name = c.name("pos map")?.ok_or_else(|| truncated.clone())?;
            let txid = c.u64().ok_or_else(|| truncated.clone())?;
            let checksum = c.u64().ok_or_else(|| truncated.clone())?;
            match map.entry(name) {
                btree_map::Entry::Occupied(e) => {
                    return Err(CodecError::PosMapDuplicateName(e.key().clone()))
                }
                btree_map::Entry::Vacant(e) => {
                    e.insert(Pos::new(TXID::new(txid), Checksum::new(checksum)));
                }
            }
        }
        match c.remaining() {
            0 => Ok(PosMap(map)),
            n => Err(CodecError::PosMapTrailingBytes(n)),
        }
    }
}

impl From<BTreeMap<String, Pos>> for PosMap {
    fn from(map: BTreeMap<String, Pos>) -> PosMap {
        PosMap(map)
    }
}

impl From<PosMap> for BTreeMap<String, Pos> {
    fn from(map: PosMap) -> BTreeMap<String, Pos> {
        map.0
    }
}

impl<S: Into<String>> FromIterator<(S, Pos)> for PosMap {
    fn from_iter<I: IntoIterator<Item = (S, Pos)>>(iter: I) -> PosMap {
        PosMap(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<S: Into<String>> Extend<(S, Pos)> for PosMap {
    fn extend<I: IntoIterator<Item = (S, Pos)>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|(k, v)| (k.into(), v)));
    }
}

impl IntoIterator for PosMap {
    type Item = (String, Pos);
    type IntoIter = btree_map::IntoIter<String, Pos>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PosMap {
    type Item = (&'a String, &'a Pos);
    type IntoIter = btree_map::Iter<'a, String, Pos>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_map() {
        assert_eq!(PosMap::new().encode(), [0, 0, 0, 0]);
        assert_eq!(PosMap::decode(&[0, 0, 0, 0]), Ok(PosMap::new()));
    }

    #[test]
    fn sorted_on_encode_any_order_on_decode() {
        let pos = Pos::new(TXID::new(1), Checksum::new(2));
        let map: PosMap = [("b", pos), ("a", pos)].into_iter().collect();
        let bytes = map.encode();
        assert_eq!(bytes.len(), map.encoded_len());
        assert_eq!(&bytes[4..9], &[0, 0, 0, 1, b'a']);
        // Swap the two 21-byte entries: still decodes to the same map.
        let mut swapped = bytes[..4].to_vec();
        swapped.extend_from_slice(&bytes[25..]);
        swapped.extend_from_slice(&bytes[4..25]);
        assert_eq!(PosMap::decode(&swapped), Ok(map.clone()));
        let mut w = Vec::new();
        map.write_to(&mut w).unwrap();
        assert_eq!(w, bytes);
    }
}
