//! Content hashes of input files, computed in parallel and cached by file
//! identity and change time, so a run over unchanged inputs reads no contents.
//!
//! The cache is a text file sorted by path, read as a stream beside the sorted
//! list of files (a merge join): it costs no memory per file.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext};
use crate::scan::{Node, Stamp};

/// A SHA-256 digest; written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Sha256Digest> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks(2).enumerate() {
            let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
            out[i] = d(pair[0])? << 4 | d(pair[1])?;
        }
        Some(Sha256Digest(out))
    }

    /// Writes the 64 hex digits into `out`.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in self.0 {
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = Vec::with_capacity(64);
        self.write_hex(&mut v);
        f.write_str(std::str::from_utf8(&v).expect("hex is ASCII"))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sha256Digest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("expected 64 lowercase hex digits"))
    }
}

/// The cache file's name in the volume root (not part of any generation).
pub const CACHE_NAME: &str = ".attune-assemble-cache";

/// First line of the cache file; another first line means "no cache".
const CACHE_HEADER: &str = "attune-assemble-cache 1";

/// Files changed this close (in ns) to the start of the scan are not cached:
/// timestamps are coarse, so a write just after hashing could keep the same ctime.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// What is known of one file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// SHA-256 of the contents.
    pub sha256: Sha256Digest,
    /// Whether it starts with the ELF magic.
    pub elf: bool,
}

/// Hashes of input files by volume path, valid while the file's identity and
/// change stamp are the same (another source directory has other inodes).
///
/// One line per file, sorted by path: `sha256 elf dev ino size mtime_ns ctime_ns path`.
#[derive(Debug, Default)]
pub struct HashCache {
    path: Option<PathBuf>,
}

impl HashCache {
    /// The cache in the volume root; a missing or unreadable cache is empty.
    pub fn load(volume: &Path) -> HashCache {
        HashCache {
            path: Some(volume.join(CACHE_NAME)),
        }
    }

    /// A reader of the cache's lines after its header, or none when there is
    /// no cache of this format.
    fn reader(&self) -> Option<BufReader<File>> {
        let mut r = BufReader::with_capacity(256 * 1024, File::open(self.path.as_ref()?).ok()?);
        let mut first = String::new();
        r.read_line(&mut first).ok()?;
        if first.trim_end() != CACHE_HEADER {
            tracing::warn!("ignoring a hash cache of another format");
            return None;
        }
        Some(r)
    }

    /// Replaces the cache with `files`' hashes (sorted by path), leaving out
    /// racy ones, and writes it atomically into the volume root.
    pub fn save(
        volume: &Path,
        files: &[(&Node, &FileHash)],
        scan_started_ns: i64,
    ) -> Result<(), Error> {
        let path = volume.join(CACHE_NAME);
        let tmp = volume.join(format!("{CACHE_NAME}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).ctx("write hash cache", &tmp)?;
        let mut w = io::BufWriter::with_capacity(256 * 1024, file);
        let mut line = Vec::with_capacity(256);
        let mut write = || -> io::Result<()> {
            writeln!(w, "{CACHE_HEADER}")?;
            for (n, h) in files {
                let s = &n.stamp;
                if is_racy(s, scan_started_ns) || n.rel.contains('\n') {
                    continue;
                }
                line.clear();
                h.sha256.write_hex(&mut line);
                writeln!(
                    line,
                    " {} {} {} {} {} {} {}",
                    u8::from(h.elf),
                    s.dev,
                    s.ino,
                    s.size,
                    s.mtime_ns,
                    s.ctime_ns,
                    n.rel
                )?;
                w.write_all(&line)?;
            }
            w.flush()
        };
        write().ctx("write hash cache", &tmp)?;
        std::fs::rename(&tmp, &path).ctx("write hash cache", &path)
    }
}

/// Whether a file changed so close to the scan that a later write could keep
/// its stamp: such a file is never cached.
pub fn is_racy(stamp: &Stamp, scan_started_ns: i64) -> bool {
    stamp.ctime_ns.max(stamp.mtime_ns) + RACY_WINDOW_NS >= scan_started_ns
}

fn parse_line(line: &str) -> Option<(&str, Stamp, FileHash)> {
    let mut f = line.splitn(8, ' ');
    let sha256 = Sha256Digest::from_hex(f.next()?)?;
    let elf = f.next()? == "1";
    let mut num = || f.next()?.parse::<i64>().ok();
    let (dev, ino, size, mtime_ns, ctime_ns) = (num()?, num()?, num()?, num()?, num()?);
    let rel = f.next()?;
    let stamp = Stamp {
        dev: dev as u64,
        ino: ino as u64,
        size: size as u64,
        mtime_ns,
        ctime_ns,
    };
    Some((rel, stamp, FileHash { sha256, elf }))
}

/// Reads a file and returns its hash and whether it is an ELF.
pub fn hash_file(path: &Path) -> io::Result<FileHash> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = true;
    let mut elf = false;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if first {
            elf = attune_pack::is_elf(&buf[..n]);
            first = false;
        }
        hasher.update(&buf[..n]);
    }
    Ok(FileHash {
        sha256: Sha256Digest(hasher.finalize().into()),
        elf,
    })
}

/// What hashing found.
#[derive(Debug)]
pub struct Hashed {
    /// The hashes of the files, in order.
    pub hashes: Vec<FileHash>,
    /// The indices of those that had to be read.
    pub read: Vec<usize>,
    /// Whether the cache knows a file that is gone (or a line it cannot parse).
    pub cache_unmatched: bool,
}

/// Hashes of `nodes` (regular files, sorted by path), in order: from the
/// cache where the stamp matches, read in parallel otherwise. `progress` is
/// called with each finished count.
pub fn hash_all(
    nodes: &[&Node],
    cache: &HashCache,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Hashed, Error> {
    let mut out: Vec<Option<FileHash>> = vec![None; nodes.len()];
    let mut reader = cache.reader();
    // The next line into `line`; false at the end (or on an error: no cache).
    let mut line = String::with_capacity(256);
    let mut next = |line: &mut String| {
        line.clear();
        reader
            .as_mut()
            .is_some_and(|r| r.read_line(line).is_ok_and(|n| n > 0))
    };
    let mut cached = 0;
    let mut unmatched = false;
    let mut more = next(&mut line);
    for (i, n) in nodes.iter().enumerate() {
        while more {
            let Some((rel, stamp, hash)) = parse_line(line.trim_end_matches('\n')) else {
                unmatched = true;
                more = next(&mut line);
                continue;
            };
            match rel.cmp(n.rel.as_str()) {
                std::cmp::Ordering::Less => unmatched = true,
                std::cmp::Ordering::Equal => {
                    cached += 1;
                    if stamp == n.stamp {
                        out[i] = Some(hash);
                    }
                }
                std::cmp::Ordering::Greater => break,
            }
            more = next(&mut line);
        }
    }
    unmatched |= more;
    let misses: Vec<usize> = (0..nodes.len()).filter(|i| out[*i].is_none()).collect();
    tracing::debug!(
        files = nodes.len(),
        cached,
        to_read = misses.len(),
        "hashing"
    );
    let done = AtomicUsize::new(nodes.len() - misses.len());
    progress(done.load(Ordering::Relaxed));
    let read = crate::parallel::try_map(&misses, |&i| {
        let abs = nodes[i].abs();
        let h = hash_file(&abs).ctx("read", &abs)?;
        progress(done.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(h)
    })?;
    for (i, h) in misses.iter().zip(read) {
        out[*i] = Some(h);
    }
    let hashes = out
        .into_iter()
        .map(|h| h.expect("every file hashed"))
        .collect();
    Ok(Hashed {
        hashes,
        read: misses,
        cache_unmatched: unmatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Kind, Origin};

    fn node(path: &Path) -> Node {
        Node {
            rel: "p/f".into(),
            base: crate::scan::Base::new(path.parent().unwrap(), "p"),
            kind: Kind::File,
            executable: false,
            setid: false,
            stamp: Stamp::read(path).unwrap(),
            origin: Origin::Source,
        }
    }

    #[test]
    fn hashes_known_content() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let h = hash_file(&f).unwrap();
        assert_eq!(
            h.sha256.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Sha256Digest::from_hex(&h.sha256.to_string()),
            Some(h.sha256)
        );
        assert_eq!(Sha256Digest::from_hex("xy"), None);
        assert!(!h.elf);
    }

    #[test]
    fn cache_is_used_only_while_the_stamp_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        std::fs::rename(&f, tmp.path().join("p")).ok();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let n = node(&f);
        let fake = FileHash {
            sha256: Sha256Digest([7; 32]),
            elf: false,
        };
        // A scan that started well after the file changed: the entry is kept.
        HashCache::save(
            tmp.path(),
            &[(&n, &fake)],
            n.stamp.ctime_ns + 10 * RACY_WINDOW_NS,
        )
        .unwrap();
        let cache = HashCache::load(tmp.path());
        assert_eq!(
            hash_all(&[&n], &cache, &|_| {}).unwrap().hashes[0].sha256,
            Sha256Digest([7; 32])
        );
        // The file changes: its stamp differs and it is read again.
        std::fs::write(&f, "abcd").unwrap();
        let n2 = node(&f);
        assert_ne!(
            hash_all(&[&n2], &cache, &|_| {}).unwrap().hashes[0].sha256,
            Sha256Digest([7; 32])
        );
    }

    #[test]
    fn racy_entries_are_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        std::fs::rename(&f, tmp.path().join("p")).ok();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let n = node(&f);
        let fake = FileHash {
            sha256: Sha256Digest([7; 32]),
            elf: false,
        };
        HashCache::save(tmp.path(), &[(&n, &fake)], n.stamp.ctime_ns).unwrap();
        let cache = HashCache::load(tmp.path());
        assert_ne!(
            hash_all(&[&n], &cache, &|_| {}).unwrap().hashes[0].sha256,
            Sha256Digest([7; 32])
        );
    }
}
