//! The record of published inodes confirmed to hold what the manifest says:
//! `(device, inode) -> (ctime, size, digest)`, where the digest is a file's
//! SHA-256 or a directory's listing hash ([`listing_digest`]).
//!
//! Published files and directories are read-only, so changing one needs a
//! chmod (or root), and every write, chmod, link or unlink moves the inode's
//! ctime, which no user can set. An inode whose stamp still matches its record
//! is therefore what it was when it was confirmed; any other is read again
//! ([`crate::audit`]). The record is a cache: without it everything is re-read,
//! never trusted.
//!
//! On disk: a magic line, then fixed 56-byte records sorted by (device, inode).

use sha2::{Digest, Sha256};

use crate::hash::Sha256Digest;

const MAGIC: &[u8; 16] = b"attune-stamps 1\n";
const RECORD: usize = 8 * 4 + 32;

/// One confirmed inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// What it holds: a file's SHA-256, a directory's listing hash.
    pub digest: Sha256Digest,
    /// Its link count when stat'ed (not stored: a count above 1 means another
    /// object shares the inode, so a link or unlink there moves its ctime).
    pub nlink: u64,
}

/// Records, sorted by (device, inode).
#[derive(Debug, Default)]
pub struct Stamps {
    records: Vec<Record>,
}

impl Stamps {
    /// Parses a stamps file; damage or another version is an empty record.
    pub fn from_bytes(bytes: &[u8]) -> Stamps {
        let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Stamps::default();
        };
        if body.len() % RECORD != 0 {
            return Stamps::default();
        }
        let records: Vec<Record> = body
            .chunks_exact(RECORD)
            .map(|r| {
                let u = |i: usize| u64::from_le_bytes(r[8 * i..8 * i + 8].try_into().unwrap());
                Record {
                    dev: u(0),
                    ino: u(1),
                    ctime_ns: u(2) as i64,
                    size: u(3),
                    digest: Sha256Digest(r[32..64].try_into().unwrap()),
                    nlink: 0,
                }
            })
            .collect();
        if !records.is_sorted_by_key(|r| (r.dev, r.ino)) {
            return Stamps::default();
        }
        Stamps { records }
    }

    /// Reads the stamps file at `path` (missing or unreadable: empty).
    pub fn load(path: &std::path::Path) -> Stamps {
        std::fs::read(path).map_or_else(|_| Stamps::default(), |b| Stamps::from_bytes(&b))
    }

    /// The bytes of a stamps file holding `records` (sorted here).
    pub fn bytes(mut records: Vec<Record>) -> Vec<u8> {
        records.sort_by_key(|r| (r.dev, r.ino));
        records.dedup_by_key(|r| (r.dev, r.ino));
        let mut out = Vec::with_capacity(MAGIC.len() + records.len() * RECORD);
        out.extend_from_slice(MAGIC);
        for r in &records {
            for v in [r.dev, r.ino, r.ctime_ns as u64, r.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&r.digest.0);
        }
        out
    }

    /// Whether the inode stat'ed as `now` was confirmed to hold `digest` and
    /// has not changed since.
    pub fn confirms(&self, now: &Record, digest: &Sha256Digest) -> bool {
        self.records
            .binary_search_by_key(&(now.dev, now.ino), |r| (r.dev, r.ino))
            .ok()
            .map(|i| &self.records[i])
            .is_some_and(|r| {
                r.ctime_ns == now.ctime_ns && r.size == now.size && r.digest == *digest
            })
    }

    /// How many inodes are recorded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The digest of a directory's listing: its children's names and types, in
/// name order (what an added, removed or replaced entry changes).
pub fn listing_digest<'a>(children: impl Iterator<Item = (&'a str, bool)>) -> Sha256Digest {
    let mut h = Sha256::new();
    for (name, is_dir) in children {
        h.update(if is_dir { b"d\0" } else { b"f\0" });
        h.update(name.as_bytes());
        h.update(b"\n");
    }
    Sha256Digest(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ino: u64, ctime: i64) -> Record {
        Record {
            dev: 1,
            ino,
            ctime_ns: ctime,
            size: 3,
            digest: Sha256Digest([ino as u8; 32]),
            nlink: 1,
        }
    }

    #[test]
    fn round_trips_and_confirms_only_unchanged_inodes() {
        let s = Stamps::from_bytes(&Stamps::bytes(vec![rec(9, 5), rec(2, 7), rec(2, 7)]));
        assert_eq!(s.len(), 2);
        assert!(s.confirms(&rec(2, 7), &Sha256Digest([2; 32])));
        // Another ctime, another size, another digest, another inode: not confirmed.
        assert!(!s.confirms(&rec(2, 8), &Sha256Digest([2; 32])));
        assert!(!s.confirms(
            &Record {
                size: 4,
                ..rec(2, 7)
            },
            &Sha256Digest([2; 32])
        ));
        assert!(!s.confirms(&rec(2, 7), &Sha256Digest([3; 32])));
        assert!(!s.confirms(&rec(3, 7), &Sha256Digest([3; 32])));
        // Damage is an empty record, never an error.
        let mut bytes = Stamps::bytes(vec![rec(1, 1)]);
        bytes.pop();
        assert!(Stamps::from_bytes(&bytes).is_empty());
        assert!(Stamps::from_bytes(b"nonsense").is_empty());
    }

    #[test]
    fn a_listing_digest_covers_names_and_types() {
        let a = listing_digest([("x", false), ("y", true)].into_iter());
        assert_ne!(a, listing_digest([("x", false), ("y", false)].into_iter()));
        assert_ne!(a, listing_digest([("x", false)].into_iter()));
        assert_eq!(a, listing_digest([("x", false), ("y", true)].into_iter()));
    }
}
