//! Content hashes of input files, computed in parallel and cached by file
//! identity and change time, so a run over unchanged inputs reads no contents.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext};
use crate::manifest::hex;
use crate::scan::{Node, Stamp};

/// The cache file's name in the volume root (not part of any generation).
pub const CACHE_NAME: &str = ".attune-assemble-cache";

/// First line of the cache file; another first line means "no cache".
const CACHE_HEADER: &str = "attune-assemble-cache 1";

/// Files changed this close (in ns) to the start of the scan are not cached:
/// timestamps are coarse, so a write just after hashing could keep the same ctime.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// What is known of one file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Whether it starts with the ELF magic.
    pub elf: bool,
}

/// Hashes of input files by volume path, valid while the file's identity and
/// change stamp are the same (another source directory has other inodes).
///
/// One line per file: `sha256 elf dev ino size mtime_ns ctime_ns path`.
#[derive(Debug, Default)]
pub struct HashCache {
    files: HashMap<String, (Stamp, FileHash)>,
}

impl HashCache {
    /// Loads the cache from the volume root; a missing or unreadable cache is empty.
    pub fn load(volume: &Path) -> HashCache {
        let path = volume.join(CACHE_NAME);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return HashCache::default();
        };
        let mut lines = text.lines();
        if lines.next() != Some(CACHE_HEADER) {
            tracing::warn!(path = %path.display(), "ignoring a hash cache of another format");
            return HashCache::default();
        }
        let files = lines.filter_map(parse_line).collect();
        HashCache { files }
    }

    /// How many files it knows.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn lookup(&self, node: &Node) -> Option<&FileHash> {
        let (stamp, hash) = self.files.get(node.rel.as_str())?;
        (*stamp == node.stamp).then_some(hash)
    }

    /// Replaces the cache with `files`' hashes, leaving out racy ones, and writes it
    /// atomically into the volume root (unless it is unchanged).
    pub fn save(
        volume: &Path,
        files: &[(&Node, &FileHash)],
        scan_started_ns: i64,
    ) -> Result<(), Error> {
        use std::fmt::Write;
        let mut text = String::with_capacity(files.len() * 160);
        text.push_str(CACHE_HEADER);
        text.push('\n');
        for (n, h) in files {
            let s = &n.stamp;
            if s.ctime_ns.max(s.mtime_ns) + RACY_WINDOW_NS >= scan_started_ns
                || n.rel.contains('\n')
            {
                continue;
            }
            let _ = writeln!(
                text,
                "{} {} {} {} {} {} {} {}",
                h.sha256,
                u8::from(h.elf),
                s.dev,
                s.ino,
                s.size,
                s.mtime_ns,
                s.ctime_ns,
                n.rel
            );
        }
        let path = volume.join(CACHE_NAME);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(()); // unchanged inputs write nothing, not even the cache
        }
        let tmp = volume.join(format!("{CACHE_NAME}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, text).ctx("write hash cache", &tmp)?;
        std::fs::rename(&tmp, &path).ctx("write hash cache", &path)
    }
}

fn parse_line(line: &str) -> Option<(String, (Stamp, FileHash))> {
    let mut f = line.splitn(8, ' ');
    let sha256 = f.next()?.to_string();
    let elf = f.next()? == "1";
    let mut num = || f.next()?.parse::<i64>().ok();
    let (dev, ino, size, mtime_ns, ctime_ns) = (num()?, num()?, num()?, num()?, num()?);
    let rel = f.next()?.to_string();
    let stamp = Stamp {
        dev: dev as u64,
        ino: ino as u64,
        size: size as u64,
        mtime_ns,
        ctime_ns,
    };
    Some((rel, (stamp, FileHash { sha256, elf })))
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
        sha256: hex(&hasher.finalize()),
        elf,
    })
}

/// Hashes of `nodes` (regular files), in order, and how many had to be read:
/// from the cache where the stamp matches, read in parallel otherwise.
/// `progress` is called with each finished count.
pub fn hash_all(
    nodes: &[&Node],
    cache: &HashCache,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<FileHash>, usize), Error> {
    let mut out: Vec<Option<FileHash>> = nodes.iter().map(|n| cache.lookup(n).cloned()).collect();
    let misses: Vec<usize> = (0..nodes.len()).filter(|i| out[*i].is_none()).collect();
    tracing::debug!(files = nodes.len(), to_read = misses.len(), "hashing");
    let done = AtomicUsize::new(nodes.len() - misses.len());
    progress(done.load(Ordering::Relaxed));
    let read = crate::parallel::try_map(&misses, |&i| {
        let h = hash_file(&nodes[i].abs).ctx("read", &nodes[i].abs)?;
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
    Ok((hashes, misses.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Kind, Origin};

    fn node(path: &Path) -> Node {
        Node {
            rel: "p/f".into(),
            abs: path.to_path_buf(),
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
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!h.elf);
    }

    #[test]
    fn cache_is_used_only_while_the_stamp_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let n = node(&f);
        let fake = FileHash {
            sha256: "cached".into(),
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
            hash_all(&[&n], &cache, &|_| {}).unwrap().0[0].sha256,
            "cached"
        );
        // The file changes: its stamp differs and it is read again.
        std::fs::write(&f, "abcd").unwrap();
        let n2 = node(&f);
        assert_ne!(
            hash_all(&[&n2], &cache, &|_| {}).unwrap().0[0].sha256,
            "cached"
        );
    }

    #[test]
    fn racy_entries_are_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let n = node(&f);
        let fake = FileHash {
            sha256: "cached".into(),
            elf: false,
        };
        HashCache::save(tmp.path(), &[(&n, &fake)], n.stamp.ctime_ns).unwrap();
        let cache = HashCache::load(tmp.path());
        assert_ne!(
            hash_all(&[&n], &cache, &|_| {}).unwrap().0[0].sha256,
            "cached"
        );
    }
}
