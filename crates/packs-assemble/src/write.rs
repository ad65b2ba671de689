//! Writing published files: each is created new (never following or
//! replacing anything), filled by a copy (`copy_file_range`, which the kernel
//! turns into a reflink where the filesystem offers one) or by a copy that
//! hashes as it reads, and sealed with the published mode, mtime and owner
//! through its open descriptor.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crashpoint::step;
use crate::error::{Error, IoContext};
use crate::hash::{FileHash, hash_chunks};
use crate::scan::Stamp;

/// The mtime and owner every published entry gets.
#[derive(Clone, Copy, Debug)]
pub struct Seal {
    /// Modification (and access) time.
    pub mtime: SystemTime,
    /// `(uid, gid)`, when `--chown` was given.
    pub owner: Option<(u32, u32)>,
}

impl Seal {
    /// The seal for `mtime` (seconds since the epoch) and an owner `UID:GID`.
    pub fn new(mtime: i64, owner: Option<&str>) -> Seal {
        let owner = owner.and_then(|o| {
            let (u, g) = o.split_once(':')?;
            Some((u.parse().ok()?, g.parse().ok()?))
        });
        Seal {
            mtime: UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64),
            owner,
        }
    }

    /// Seals an open file written at `path` (named in errors).
    pub fn file(&self, f: &File, mode: u32, path: &Path) -> Result<(), Error> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::fchown(f, Some(uid), Some(gid)).ctx("change owner of", path)?;
        }
        f.set_permissions(Permissions::from_mode(mode))
            .ctx("set mode of", path)?;
        f.set_times(
            fs::FileTimes::new()
                .set_modified(self.mtime)
                .set_accessed(self.mtime),
        )
        .ctx("set times of", path)
    }

    /// Seals the file or directory at `path`.
    pub fn path(&self, path: &Path, mode: u32) -> Result<(), Error> {
        let f = File::open(path).ctx("open", path)?;
        self.file(&f, mode, path)
    }

    /// Gives a symbolic link the owner and times of published entries.
    pub fn link(&self, path: &Path) -> Result<(), Error> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).ctx("change owner of", path)?;
        }
        let secs = self
            .mtime
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as i64;
        let t = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
        .ctx("set times of", path)
    }
}

/// Creates `dst`, which must not exist (a link there is not followed).
fn create_new(dst: &Path) -> Result<File, Error> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(dst)
        .ctx("create", dst)?;
    step();
    Ok(f)
}

/// Fails if `src` is no longer what was planned.
fn still(src: &Path, stamp: &Stamp) -> Result<(), Error> {
    if Stamp::read(src).ctx("read", src)? != *stamp {
        return Err(Error::Environment(format!(
            "{} changed while it was being published; nothing was committed. Run again once the sources are still",
            src.display()
        )));
    }
    Ok(())
}

/// Copies `src` (planned with `stamp`) to a new file `dst` and seals it;
/// fails if `src` changed meanwhile.
pub fn copy_file(
    src: &Path,
    stamp: &Stamp,
    dst: &Path,
    mode: u32,
    seal: &Seal,
) -> Result<(), Error> {
    let mut from = File::open(src).ctx("open", src)?;
    let mut to = create_new(dst)?;
    io::copy(&mut from, &mut to).ctx("copy", src)?;
    still(src, stamp)?;
    seal.file(&to, mode, dst)
}

/// Copies `src` to a new file `dst` while hashing what it reads (each byte is
/// read once), seals it, and returns the hash; fails if `src` changed meanwhile.
pub fn copy_hashing(
    src: &Path,
    stamp: &Stamp,
    dst: &Path,
    mode: u32,
    seal: &Seal,
) -> Result<FileHash, Error> {
    let mut from = File::open(src).ctx("open", src)?;
    let mut to = create_new(dst)?;
    let hash = hash_chunks(
        |buf| from.read(buf).ctx("read", src),
        |chunk| to.write_all(chunk).ctx("write", dst),
    )?;
    still(src, stamp)?;
    seal.file(&to, mode, dst)?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_hash_and_seal_through_the_descriptor() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::write(&src, "abc").unwrap();
        let stamp = Stamp::read(&src).unwrap();
        let seal = Seal::new(7, None);
        let h = copy_hashing(&src, &stamp, &tmp.path().join("a"), 0o444, &seal).unwrap();
        assert_eq!(h, crate::hash::hash_file(&src).unwrap());
        copy_file(&src, &stamp, &tmp.path().join("b"), 0o555, &seal).unwrap();
        for (name, mode) in [("a", 0o444), ("b", 0o555)] {
            let m = fs::metadata(tmp.path().join(name)).unwrap();
            assert_eq!((m.mode() & 0o7777, m.mtime()), (mode, 7), "{name}");
            assert_eq!(fs::read(tmp.path().join(name)).unwrap(), b"abc");
        }
        // Never onto something that is there, never through a link.
        assert!(copy_file(&src, &stamp, &tmp.path().join("a"), 0o444, &seal).is_err());
        std::os::unix::fs::symlink(&src, tmp.path().join("l")).unwrap();
        assert!(copy_hashing(&src, &stamp, &tmp.path().join("l"), 0o444, &seal).is_err());
        // A source that changes while it is copied fails the copy.
        fs::write(&src, "abcd").unwrap();
        let err = copy_file(&src, &stamp, &tmp.path().join("c"), 0o444, &seal).unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
    }
}
