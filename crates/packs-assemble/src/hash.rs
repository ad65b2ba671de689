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
pub const CACHE_NAME: &str = ".attune-assemble-cache.json";

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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cached {
    stamp: Stamp,
    hash: FileHash,
}

/// Hashes of files by absolute path, valid while their stamp is unchanged.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HashCache {
    files: HashMap<String, Cached>,
}

impl HashCache {
    /// Loads the cache from the volume root; a missing or unreadable cache is empty.
    pub fn load(volume: &Path) -> HashCache {
        let path = volume.join(CACHE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "ignoring unreadable hash cache: {e}");
                HashCache::default()
            }),
            Err(_) => HashCache::default(),
        }
    }

    fn lookup(&self, node: &Node) -> Option<&FileHash> {
        let cached = self.files.get(node.abs.to_str()?)?;
        (cached.stamp == node.stamp).then_some(&cached.hash)
    }

    /// Replaces the cache with `files`' hashes, leaving out racy ones, and writes it
    /// atomically into the volume root.
    pub fn save(
        volume: &Path,
        files: &[(&Node, &FileHash)],
        scan_started_ns: i64,
    ) -> Result<(), Error> {
        let cache = HashCache {
            files: files
                .iter()
                .filter(|(n, _)| {
                    n.stamp.ctime_ns.max(n.stamp.mtime_ns) + RACY_WINDOW_NS < scan_started_ns
                })
                .filter_map(|(n, h)| {
                    let key = n.abs.to_str()?.to_string();
                    Some((
                        key,
                        Cached {
                            stamp: n.stamp,
                            hash: (*h).clone(),
                        },
                    ))
                })
                .collect(),
        };
        let path = volume.join(CACHE_NAME);
        let tmp = volume.join(format!("{CACHE_NAME}.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(&cache).expect("cache serializes");
        std::fs::write(&tmp, bytes).ctx("write hash cache", &tmp)?;
        std::fs::rename(&tmp, &path).ctx("write hash cache", &path)
    }
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

/// Hashes of `nodes` (regular files), in order: from the cache where the stamp
/// matches, read in parallel otherwise. `progress` is called with each finished count.
pub fn hash_all(
    nodes: &[&Node],
    cache: &HashCache,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<FileHash>, Error> {
    let mut out: Vec<Option<FileHash>> = nodes.iter().map(|n| cache.lookup(n).cloned()).collect();
    let misses: Vec<usize> = (0..nodes.len()).filter(|i| out[*i].is_none()).collect();
    tracing::debug!(files = nodes.len(), to_read = misses.len(), "hashing");
    let done = AtomicUsize::new(nodes.len() - misses.len());
    progress(done.load(Ordering::Relaxed));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = misses.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<(usize, FileHash)>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = misses
            .chunks(chunk)
            .map(|idx| {
                let done = &done;
                s.spawn(move || {
                    idx.iter()
                        .map(|&i| {
                            let h = hash_file(&nodes[i].abs).ctx("read", &nodes[i].abs)?;
                            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                            Ok((i, h))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hash thread panicked"))
            .collect()
    });
    for r in results {
        for (i, h) in r? {
            out[i] = Some(h);
        }
    }
    Ok(out
        .into_iter()
        .map(|h| h.expect("every file hashed"))
        .collect())
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
            hash_all(&[&n], &cache, &|_| {}).unwrap()[0].sha256,
            "cached"
        );
        // The file changes: its stamp differs and it is read again.
        std::fs::write(&f, "abcd").unwrap();
        let n2 = node(&f);
        assert_ne!(
            hash_all(&[&n2], &cache, &|_| {}).unwrap()[0].sha256,
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
            hash_all(&[&n], &cache, &|_| {}).unwrap()[0].sha256,
            "cached"
        );
    }
}
