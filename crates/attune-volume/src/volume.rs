//! The names in a volume's root (Kubernetes AtomicWriter): generations `..<id>`,
//! the `..data` link swapped by rename(2), per-pack links, the object store
//! `..store` (see [`crate::store`]), temporary names, bookkeeping files,
//! upstream Attune's sentinel, and the publish lock.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext};
use crate::manifest::MANIFEST_NAME;

/// The link whose rename is the commit point (the readers' contract, in attune-pack).
pub use attune_pack::DATA_LINK;
/// The lock file that serialises publishers.
pub const LOCK_NAME: &str = ".attune-lock";
/// Prefix of everything being written or removed (left over only by a killed run).
pub const TMP_PREFIX: &str = "..tmp-";
/// The store of pack objects that generations link to.
pub const STORE_DIR: &str = "..store";
/// Upstream Attune's api writes this at every start: its workers and sensors use
/// the shared volume only while it is there. Never ours to remove.
pub const SENTINEL_NAME: &str = ".attune-packs-sentinel";
/// The hash cache of input files (see [`crate::hash`]).
pub const CACHE_NAME: &str = ".attune-assemble-cache";
/// The record of published inodes confirmed against the manifest (see [`crate::stamps`]).
pub const STAMPS_NAME: &str = ".attune-assemble-stamps";
/// The cache of validation facts by content hash (see [`crate::facts`]).
pub const FACTS_NAME: &str = ".attune-assemble-facts";

/// A temporary name for `what`, unique across runs (not the pid alone: in a
/// container the publisher is pid 1 every time) and within this run.
pub fn tmp_name(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}{what}-{}",
        run_prefix(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `..tmp-<pid>-<start time>-`: the start of this run's temporary names.
fn run_prefix() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{TMP_PREFIX}{}-{nanos:x}-", std::process::id())
    })
}

/// Whether a temporary name is this run's own.
pub fn is_ours(name: &str) -> bool {
    name.starts_with(run_prefix())
}

/// What a name in the volume root is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootEntry {
    /// `..data`.
    Data,
    /// `..<id>`: a complete generation.
    Generation,
    /// `..tmp-*`: unfinished work of an interrupted run.
    Tmp,
    /// `..store`: the directory objects that generations link to.
    Store,
    /// The lock and the caches: bookkeeping, not content.
    Bookkeeping,
    /// Upstream Attune's `.attune-packs-sentinel`: kept, never content.
    Sentinel,
    /// A pack link or the manifest link.
    Link,
}

/// Classifies a name in the volume root; `None` for names this tool never writes.
pub fn classify(name: &str, is_symlink: bool) -> Option<RootEntry> {
    if name == DATA_LINK {
        Some(RootEntry::Data)
    } else if name == STORE_DIR && !is_symlink {
        Some(RootEntry::Store)
    } else if name.starts_with(TMP_PREFIX) || name.starts_with(&format!("{CACHE_NAME}.tmp-")) {
        Some(RootEntry::Tmp)
    } else if let Some(id) = name.strip_prefix("..") {
        generation_id_of(id).map(|_| RootEntry::Generation)
    } else if name == SENTINEL_NAME && !is_symlink {
        Some(RootEntry::Sentinel)
    } else if [LOCK_NAME, CACHE_NAME, STAMPS_NAME, FACTS_NAME].contains(&name) {
        Some(RootEntry::Bookkeeping)
    } else if is_symlink && (name == MANIFEST_NAME || attune_pack::is_pack_ref(name)) {
        Some(RootEntry::Link)
    } else {
        None
    }
}

/// The directory name of generation `id`.
pub fn generation_name(id: &str) -> String {
    format!("..{id}")
}

/// The root-hash id of a generation directory name without its `..`:
/// `<32 hex>`, or `<32 hex>-<n>` for a forced rebuild of the same contents.
pub fn generation_id_of(name: &str) -> Option<&str> {
    let (id, copy) = name.split_once('-').unwrap_or((name, "1"));
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let n = !copy.is_empty() && copy.bytes().all(|b| b.is_ascii_digit());
    (hex && n).then_some(id)
}

/// A packs volume directory.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Its root.
    pub root: PathBuf,
}

impl Volume {
    /// The volume at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Volume {
        Volume { root: root.into() }
    }

    /// The name of the generation `..data` points at, if any.
    pub fn current(&self) -> Result<Option<String>, Error> {
        let link = self.root.join(DATA_LINK);
        match std::fs::read_link(&link) {
            Ok(target) => Ok(target.to_str().map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                Err(Error::Environment(format!(
                    "{} is not a symbolic link; this directory is not a packs volume (or it was damaged): recreate it",
                    link.display()
                )))
            }
            Err(e) => Err(e).ctx("read", &link),
        }
    }

    /// Every name in the root with whether it is a symlink, sorted.
    pub fn root_entries(&self) -> Result<Vec<(String, bool)>, Error> {
        let mut out: Vec<(String, bool)> = std::fs::read_dir(&self.root)
            .ctx("read volume", &self.root)?
            .filter_map(Result::ok)
            .map(|e| {
                let link = e.file_type().is_ok_and(|t| t.is_symlink());
                (e.file_name().to_string_lossy().into_owned(), link)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Takes the publish lock, waiting up to `timeout` for another run to finish.
    pub fn lock(&self, timeout: Duration) -> Result<VolumeLock, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(LOCK_NAME);
        let not_a_lock = |what: String| {
            Error::Environment(format!(
                "{} is {what}, not the publish lock (a regular file); remove it and run again",
                path.display()
            ))
        };
        // Never through a link (the run would create its target, wherever it
        // points), never blocking on a FIFO, a regular file only.
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .custom_flags(crate::bookkeeping::root_flags())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(not_a_lock("a symbolic link".into()));
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                return Err(not_a_lock("a FIFO".into()));
            }
            Err(e) => return Err(e).ctx("open lock", &path),
        };
        let kind = file.metadata().ctx("read", &path)?.file_type();
        if !kind.is_file() {
            return Err(not_a_lock(format!("a {kind:?}")));
        }
        let start = Instant::now();
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(VolumeLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        return Err(Error::Environment(format!(
                            "another packs-assemble is publishing to {} (it holds {}); gave up after {}s. \
                             Wait for it to finish or raise --lock-timeout",
                            self.root.display(),
                            path.display(),
                            timeout.as_secs()
                        )));
                    }
                    if !said {
                        tracing::info!(lock = %path.display(), "waiting for another packs-assemble run to finish");
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e).ctx("lock", &path),
            }
        }
    }
}

/// Held while publishing; released when dropped or when the process dies.
#[derive(Debug)]
pub struct VolumeLock {
    _file: File,
}

/// Whether `path` exists without following a final symlink.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The variable that fixes every published mtime (reproducible builds convention).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The mtime for published files: `SOURCE_DATE_EPOCH`, else 1.
pub fn source_date_epoch() -> Result<i64, Error> {
    match std::env::var(SOURCE_DATE_EPOCH) {
        Err(_) => Ok(1),
        Ok(v) => v.trim().parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
            Error::Usage(format!("{SOURCE_DATE_EPOCH}=`{v}` is not a number of seconds since 1970; unset it or give e.g. 1700000000"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_root_names() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(classify("..data", true), Some(RootEntry::Data));
        assert_eq!(
            classify(&format!("..{id}"), false),
            Some(RootEntry::Generation)
        );
        assert_eq!(classify("..tmp-abc", false), Some(RootEntry::Tmp));
        assert_eq!(classify("..store", false), Some(RootEntry::Store));
        assert_eq!(classify("..store", true), None);
        assert_eq!(classify("core", true), Some(RootEntry::Link));
        assert_eq!(classify("core", false), None);
        assert_eq!(
            classify(".attune-lock", false),
            Some(RootEntry::Bookkeeping)
        );
        assert_eq!(classify("..short", false), None);
        assert_eq!(
            classify(&format!("..{id}-2"), false),
            Some(RootEntry::Generation)
        );
        assert_eq!(classify(&format!("..{id}-x"), false), None);
        assert_eq!(generation_id_of(&format!("{id}-12")), Some(id));
        assert_eq!(
            classify(".attune-packs-sentinel", false),
            Some(RootEntry::Sentinel)
        );
        assert_eq!(classify(".attune-packs-sentinel", true), None);
        assert_eq!(classify(&tmp_name("x"), false), Some(RootEntry::Tmp));
        assert_ne!(tmp_name("x"), tmp_name("x"));
    }

    #[test]
    fn second_lock_times_out_with_a_clear_message() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Volume::new(tmp.path());
        let _held = v.lock(Duration::from_secs(1)).unwrap();
        let err = v.lock(Duration::from_millis(100)).unwrap_err().to_string();
        assert!(
            err.contains("another packs-assemble") && err.contains(".attune-lock"),
            "{err}"
        );
    }
}
