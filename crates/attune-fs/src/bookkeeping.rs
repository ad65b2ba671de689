//! Opening the writer's own files in the volume root (caches, stamps, facts,
//! sequence numbers, the lock) without trusting them: never through a link,
//! never blocking, regular files only, read no further than their size.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Bookkeeping files (the caches and the stamps) are at most this large; a
/// larger one is damage, read as a missing cache.
pub const BOOKKEEPING_LIMIT: u64 = 1 << 30;

/// The flags every open of a name in the volume root uses: a final link is
/// never followed (`ELOOP`), and a FIFO or device never blocks the open.
pub fn root_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32
}

/// Opens the bookkeeping file `path` to read it, with its size: never through
/// a link, never blocking, a regular file only. Anything else (a link, a FIFO,
/// a device, a directory) is a missing cache: `None`, said in the log.
pub fn open_bookkeeping(path: &Path) -> Option<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(root_flags())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot be read as a cache ({e}); treated as missing");
            return None;
        }
    };
    let meta = f.metadata().ok()?;
    if !meta.file_type().is_file() {
        tracing::warn!(path = %path.display(), "is not a regular file; treated as a missing cache");
        return None;
    }
    Some((f, meta.len()))
}

/// Reads the bookkeeping file `path` whole ([`open_bookkeeping`]): no more
/// than the size its descriptor gave, and `None` above `limit`.
pub fn read_bookkeeping(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let (f, len) = open_bookkeeping(path)?;
    if len > limit {
        tracing::warn!(path = %path.display(), "holds {len} bytes, more than {limit}; treated as a missing cache");
        return None;
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut out).ok()?;
    Some(out)
}
