//! Removing from a volume without ever exposing a half-deleted generation or
//! object: whatever goes is first renamed to a tombstone `..tmp-trash-*` in
//! the volume root (one rename(2)), then deleted; a kill in between leaves a
//! tombstone, which the next run deletes.

use std::collections::HashSet;
use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::crashpoint::step;
use crate::error::{Error, IoContext};
use crate::store::{STORE_DIR, is_object_name};
use crate::volume::{RootEntry, TMP_PREFIX, Volume, classify, exists};

/// The start of the names of this run's staging directories in the store
/// (`..tmp-stage-<pid>-<n>`): files are copied into them while hashed, and
/// each is renamed into an object in the same directory (a rename within one
/// directory needs no write permission on the directory moved, so a sealed
/// one moves as uid 1000 too).
pub fn stage_prefix() -> String {
    format!("{TMP_PREFIX}stage-{}-", std::process::id())
}

/// Removes what an interrupted run left: `..tmp-*` in the root (tombstones
/// included) and in the store (this run's staging directories excepted).
pub fn remove_leftovers(vol: &Volume) -> Result<Vec<String>, Error> {
    let mut removed = vec![];
    let ours = stage_prefix();
    for (name, _) in vol.root_entries()? {
        if classify(&name, false) == Some(RootEntry::Tmp) {
            delete_tree(&vol.root.join(&name))?;
            step();
            removed.push(name);
        }
    }
    for name in store_entries(vol)? {
        if name.starts_with(TMP_PREFIX) && !name.starts_with(&ours) {
            delete_tree(&vol.root.join(STORE_DIR).join(&name))?;
            step();
            removed.push(format!("{STORE_DIR}/{name}"));
        }
    }
    Ok(removed)
}

/// Removes this run's staging directories (see [`stage_prefix`]), what is left
/// of them once their objects moved into place.
pub fn remove_stage(vol: &Volume) -> Result<(), Error> {
    let prefix = stage_prefix();
    for name in store_entries(vol)? {
        if name.starts_with(&prefix) {
            delete_tree(&vol.root.join(STORE_DIR).join(name))?;
        }
    }
    Ok(())
}

/// Removes every object of the store that no generation reaches (`keep`);
/// returns how many went.
pub fn sweep_objects(vol: &Volume, keep: &HashSet<String>) -> Result<usize, Error> {
    let mut removed = 0;
    for name in store_entries(vol)? {
        if is_object_name(&name) && !keep.contains(&name) {
            remove_tree(vol, &format!("{STORE_DIR}/{name}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The names in the store, or none when there is no store yet.
fn store_entries(vol: &Volume) -> Result<Vec<String>, Error> {
    let store = vol.root.join(STORE_DIR);
    match fs::read_dir(&store) {
        Ok(entries) => Ok(entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).ctx("read", &store),
    }
}

/// Removes `name` (relative to the volume root): first renamed to a tombstone
/// `..tmp-trash-*` in the root, so that from that instant nothing can take
/// what is left of it for a generation, an object or a pack, then deleted.
pub fn remove_tree(vol: &Volume, name: &str) -> Result<(), Error> {
    let path = vol.root.join(name);
    if !exists(&path) {
        return Ok(());
    }
    let tomb = vol.root.join(format!(
        "{TMP_PREFIX}trash-{}-{}",
        name.replace('/', "-").trim_start_matches('.'),
        std::process::id()
    ));
    fs::rename(&path, &tomb).ctx("move aside", &path)?;
    step();
    sync_dir(path.parent().unwrap_or(&vol.root))?;
    delete_tree(&tomb)?;
    step();
    Ok(())
}

/// Flushes a directory's entries (a rename in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|f| f.sync_all()).ctx("sync", dir)
}

/// Deletes a file, link or read-only directory tree in place (only ever a
/// tombstone or unfinished work: something no reader can take for content).
/// Links are removed, never followed.
pub fn delete_tree(path: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("read", path),
    };
    if !meta.is_dir() {
        return fs::remove_file(path).ctx("remove", path);
    }
    // Published directories are 0555: make them writable, remove the files on
    // all cores, then the directories, deepest first.
    let mut dirs = vec![];
    let mut files = vec![];
    for entry in walkdir::WalkDir::new(path).follow_links(false) {
        let entry = entry.map_err(io::Error::from).ctx("read", path)?;
        if entry.file_type().is_dir() {
            fs::set_permissions(entry.path(), Permissions::from_mode(0o755))
                .ctx("set mode of", entry.path())?;
            dirs.push(entry.into_path());
        } else {
            files.push(entry.into_path());
        }
    }
    crate::parallel::try_map(&files, |f| {
        fs::remove_file(f).ctx("remove", f)?;
        step();
        Ok(())
    })?;
    for d in dirs.iter().rev() {
        fs::remove_dir(d).ctx("remove", d)?;
    }
    Ok(())
}
