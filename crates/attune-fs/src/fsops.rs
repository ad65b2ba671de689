//! Every filesystem mutation of a volume, in one small layer: each function
//! does one mutation and then fires the crash point ([`crate::crashpoint`]), so
//! the crash tests reach every mutation, including any added later (clippy's
//! `disallowed-methods`, in this crate's `clippy.toml`, refuses `std::fs`
//! mutations anywhere else).
//!
//! Files are created new (never following or replacing anything), filled by a
//! copy (`copy_file_range`, a reflink where the filesystem offers one) or by a
//! copy that hashes as it reads, and sealed with the published mode, mtime
//! and owner through their open descriptor.
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crashpoint::step;
use crate::error::{Error, IoContext};
use crate::hash::{FileHash, hash_chunks};
use crate::scan::Stamp;

/// Creates the directory `path` (its parent must exist).
pub fn create_dir(path: &Path) -> Result<(), Error> {
    fs::create_dir(path).ctx("create directory", path)?;
    step();
    Ok(())
}

/// Creates the directory `path` and its missing parents.
pub fn create_dir_all(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).ctx("create directory", path)?;
    step();
    Ok(())
}

/// Creates the symbolic link `link` -> `target`.
pub fn symlink(target: &str, link: &Path) -> Result<(), Error> {
    std::os::unix::fs::symlink(target, link).ctx("create link", link)?;
    step();
    Ok(())
}

/// Gives `link` the name `path` atomically, replacing what is there: a link
/// is created under the temporary name `tmp` first, then renamed.
pub fn replace_link(target: &str, tmp: &Path, path: &Path) -> Result<(), Error> {
    symlink(target, tmp)?;
    rename(tmp, path)
}

/// Renames `from` to `to` (rename(2): atomic, replaces a file or an empty directory).
pub fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).ctx("rename into place", to)?;
    step();
    Ok(())
}

/// Creates the hard link `dst` to `src`; `Ok(false)` when the file has as many
/// links as the filesystem allows (EMLINK) or `src` is on another filesystem,
/// so that the caller copies instead.
pub fn hard_link(src: &Path, dst: &Path) -> Result<bool, Error> {
    match fs::hard_link(src, dst) {
        Ok(()) => {
            step();
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => Ok(false),
        Err(e) => Err(e).ctx("hard-link", dst),
    }
}

/// Removes the file or link `path`.
pub fn remove_file(path: &Path) -> Result<(), Error> {
    fs::remove_file(path).ctx("remove", path)?;
    step();
    Ok(())
}

/// Removes the empty directory `path`.
pub fn remove_dir(path: &Path) -> Result<(), Error> {
    fs::remove_dir(path).ctx("remove", path)?;
    step();
    Ok(())
}

/// Sets the mode of `path` (a directory being deleted is made writable).
pub fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, Permissions::from_mode(mode)).ctx("set mode of", path)?;
    step();
    Ok(())
}

/// Writes `bytes` to `path` through the temporary name `tmp` (renamed over
/// `path` once complete), sealed read-only with `seal` when given.
pub fn write_atomic(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    seal: Option<(&Seal, u32)>,
) -> Result<(), Error> {
    let mut f = create_new(tmp)?;
    f.write_all(bytes).ctx("write", tmp)?;
    if let Some((seal, mode)) = seal {
        seal.file(&f, mode, tmp)?;
    }
    drop(f);
    rename(tmp, path)
}

/// Writes a new file `path` with what `fill` writes into it, sealed with `seal`.
pub fn write_new(
    path: &Path,
    seal: &Seal,
    mode: u32,
    fill: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> Result<(), Error> {
    let f = create_new(path)?;
    let mut w = io::BufWriter::with_capacity(256 * 1024, f);
    fill(&mut w).and_then(|()| w.flush()).ctx("write", path)?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx("write", path)?;
    seal.file(&f, mode, path)
}

/// Flushes the whole filesystem that holds `dir` (syncfs(2) on Linux, where
/// volumes are published; elsewhere, such as a Mac building the packs image,
/// sync(2), which flushes every filesystem).
pub fn sync_fs(dir: &Path) -> Result<(), Error> {
    let f = File::open(dir).ctx("open", dir)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let synced = rustix::fs::syncfs(&f).map_err(io::Error::from);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let synced = {
        rustix::fs::sync();
        f.sync_all()
    };
    synced.ctx("sync filesystem of", dir)
}

/// Flushes a directory's entries (a rename in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|f| f.sync_all()).ctx("sync", dir)
}

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

    /// Seals an open file or directory that is at `path` (named in errors).
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
        .ctx("set times of", path)?;
        step();
        Ok(())
    }

    /// Seals the file or directory at `path` (not following a final link).
    pub fn path(&self, path: &Path, mode: u32) -> Result<(), Error> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .ctx("open", path)?;
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
        .ctx("set times of", path)?;
        step();
        Ok(())
    }
}

/// Creates `dst`, which must not exist (a link there is not followed).
fn create_new(dst: &Path) -> Result<File, Error> {
    create_file(dst, 0o600)
}

/// Creates the file `dst` with `mode` (less the umask) for the caller to fill:
/// a new file only, never through a link (for outputs other than volumes,
/// such as the image files of `export`).
pub fn create_file(dst: &Path, mode: u32) -> Result<File, Error> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
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

/// Deletes a file, link or read-only directory tree in place (only ever a
/// tombstone or unfinished work: something no reader can take for content).
/// Links are removed, never followed; files go on all cores.
pub fn delete_tree(path: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("read", path),
    };
    if !meta.is_dir() {
        return remove_file(path);
    }
    // Published directories are 0555: make them writable, remove the files on
    // all cores, then the directories, deepest first. walkdir holds at most a
    // few descriptors open, however wide or deep the tree.
    let mut dirs = vec![];
    let mut files = vec![];
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let entry = entry.map_err(io::Error::from).ctx("read", path)?;
        if entry.file_type().is_dir() {
            if entry
                .metadata()
                .map_err(io::Error::from)
                .ctx("read", entry.path())?
                .permissions()
                .mode()
                & 0o700
                != 0o700
            {
                set_mode(entry.path(), 0o755)?;
            }
            dirs.push(entry.into_path());
        } else {
            files.push(entry.into_path());
        }
    }
    crate::parallel::try_map(&files, |f| remove_file(f))?;
    for d in dirs.iter().rev() {
        remove_dir(d)?;
    }
    Ok(())
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

    #[test]
    fn deletes_read_only_trees_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        fs::write(&keep, "k").unwrap();
        let t = tmp.path().join("t");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&keep, t.join("a/l")).unwrap();
        for d in ["t/a/b", "t/a", "t"] {
            fs::set_permissions(tmp.path().join(d), Permissions::from_mode(0o555)).unwrap();
        }
        delete_tree(&t).unwrap();
        assert!(!t.exists() && keep.exists());
    }
}
