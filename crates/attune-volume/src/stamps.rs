//! The record of published inodes confirmed to hold what the manifest says:
//! `(device, inode) -> (ctime, size, digest)`, where the digest is a file's
//! SHA-256 or a directory's listing hash ([`listing_digest`]).
//!
//! Published files are read-only, so changing one needs a chmod (or root);
//! a directory's entries change only by a link, unlink or rename in it. Each
//! of these moves the inode's ctime, which no user can set, and so does a
//! write, except through a shared writable mapping after its first write to a
//! page, until writeback cleans the page. So a record is kept only for
//! contents read at least [`settle_window_ns`] after the ctime (`settled`);
//! an inode whose stamp still matches such a record is what it was when it
//! was confirmed; any other is read again ([`crate::audit`]). The record is a
//! cache: without it everything is re-read, never trusted.
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
    /// Whether its contents were read (or confirmed from the record) at least
    /// [`settle_window_ns`] after its ctime, so that the record may be kept
    /// (not stored: only settled records are written, see [`Stamps::bytes`]).
    pub settled: bool,
}

/// The variable that sets the settle window in milliseconds (tests only).
pub const SETTLE_WINDOW_ENV: &str = "PACKS_ASSEMBLE_SETTLE_WINDOW_MS";

/// How long after an inode's last ctime its contents may still change without
/// moving any time: a write through a shared writable mapping faults (and
/// moves the times) only on the first write to a page after writeback cleaned
/// it, and timestamps are coarse. The kernel's writeback window
/// (`dirty_expire` + `dirty_writeback`, 35 s by default) plus 2 s; forever
/// (`i64::MAX`: nothing is ever recorded, everything is read again) when
/// periodic writeback is off or `dir` is on tmpfs, whose pages are never
/// cleaned. Computed once per process.
pub fn settle_window_ns(dir: &std::path::Path) -> i64 {
    static WINDOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *WINDOW.get_or_init(|| {
        if let Some(ms) = std::env::var(SETTLE_WINDOW_ENV)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            return ms.saturating_mul(1_000_000);
        }
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        #[allow(clippy::unnecessary_cast)]
        let tmpfs = rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as i64 == TMPFS_MAGIC);
        let centisecs = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
        };
        let expire = centisecs("dirty_expire_centisecs").unwrap_or(3000);
        let writeback = centisecs("dirty_writeback_centisecs").unwrap_or(500);
        if tmpfs || writeback <= 0 {
            return i64::MAX;
        }
        (expire + writeback + 200).saturating_mul(10_000_000)
    })
}

/// Whether contents read at `read_ns` (nanoseconds since the epoch) of an
/// inode whose ctime is `ctime_ns` may be recorded.
pub fn settles(ctime_ns: i64, read_ns: i64, window_ns: i64) -> bool {
    ctime_ns.saturating_add(window_ns) <= read_ns
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Records, sorted by (device, inode): the file's bytes as they are, searched
/// in place (100,000 records are 5.6 MB; parsed, they would be that again).
#[derive(Debug, Default)]
pub struct Stamps {
    body: Vec<u8>,
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
        let s = Stamps {
            body: body.to_vec(),
        };
        let sorted = (1..s.len()).all(|i| s.key(i - 1) < s.key(i));
        if sorted { s } else { Stamps::default() }
    }

    fn field(&self, i: usize, f: usize) -> u64 {
        let at = i * RECORD + 8 * f;
        u64::from_le_bytes(self.body[at..at + 8].try_into().unwrap())
    }

    fn key(&self, i: usize) -> (u64, u64) {
        (self.field(i, 0), self.field(i, 1))
    }

    /// Reads the stamps file at `path` (missing, unreadable, or anything but
    /// a regular file: empty; see [`crate::bookkeeping::read_bookkeeping`]).
    pub fn load(path: &std::path::Path) -> Stamps {
        crate::bookkeeping::read_bookkeeping(path, crate::bookkeeping::BOOKKEEPING_LIMIT)
            .map_or_else(Stamps::default, |b| Stamps::from_bytes(&b))
    }

    /// The bytes of a stamps file holding `records` (sorted here).
    pub fn bytes(mut records: Vec<Record>) -> Vec<u8> {
        // A record read too soon after its ctime is left out: read again next time.
        records.retain(|r| r.settled);
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
        let (mut lo, mut hi) = (0, self.len());
        let want = (now.dev, now.ino);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(&want) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let at = mid * RECORD + 32;
                    return self.field(mid, 2) as i64 == now.ctime_ns
                        && self.field(mid, 3) == now.size
                        && self.body[at..at + 32] == digest.0;
                }
            }
        }
        false
    }

    /// How many inodes are recorded.
    pub fn len(&self) -> usize {
        self.body.len() / RECORD
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
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
            settled: true,
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
        // A record read too soon after its ctime is never written.
        let young = Record {
            settled: false,
            ..rec(4, 7)
        };
        assert_eq!(Stamps::from_bytes(&Stamps::bytes(vec![young])).len(), 0);
        assert!(settles(1, 11, 10) && !settles(2, 11, 10));
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
