//! Garbage collection: leftovers of interrupted runs, generations beyond
//! `--keep`, and store objects that no generation links to.
//!
//! Whatever goes is first renamed to a tombstone `..tmp-*-trash-*` beside it
//! (one rename(2)), then deleted: from that instant nothing can
//! take what is left of it for a generation or an object, and a kill in
//! between leaves a tombstone, which the next run sweeps. Leftovers are swept
//! at the start of every run that holds the lock (up-to-date runs included):
//! under the lock, every `..tmp-*` belongs to a run that is dead.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

use crate::error::{Error, IoContext};
use crate::fsops;
use crate::scan::Stamp;
use crate::store::{is_object_name, read_objects, read_sequence};
use crate::volume::{
    RootEntry, STORE_DIR, TMP_PREFIX, Volume, classify, exists, is_ours, tmp_name,
};

/// Removes every `..tmp-*` of the root (tombstones included) and of the store
/// but this run's own (its stage); returns their names.
pub fn sweep_leftovers(vol: &Volume) -> Result<Vec<String>, Error> {
    let mut removed = vec![];
    for (name, _) in vol.root_entries()? {
        if classify(&name, false) == Some(RootEntry::Tmp) && !is_ours(&name) {
            fsops::delete_tree(&vol.root.join(&name))?;
            removed.push(name);
        }
    }
    // A sequence number being rewritten inside a generation.
    for (generation, link) in vol.root_entries()? {
        if classify(&generation, link) != Some(RootEntry::Generation) {
            continue;
        }
        let dir = vol.root.join(&generation);
        for entry in fs::read_dir(&dir).ctx("read", &dir)? {
            let name = entry
                .ctx("read", &dir)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.starts_with(TMP_PREFIX) && !is_ours(&name) {
                fsops::delete_tree(&dir.join(&name))?;
                removed.push(format!("{generation}/{name}"));
            }
        }
    }
    for name in store_entries(vol)? {
        if name.starts_with(TMP_PREFIX) && !is_ours(&name) {
            fsops::delete_tree(&vol.root.join(STORE_DIR).join(&name))?;
            removed.push(format!("{STORE_DIR}/{name}"));
        }
    }
    Ok(removed)
}

/// Removes `name` (relative to the volume root) through a tombstone in the
/// same directory (moving a sealed directory to another parent rewrites its
/// `..`, which a publisher without root may not do).
pub fn remove(vol: &Volume, name: &str) -> Result<(), Error> {
    let path = vol.root.join(name);
    if !exists(&path) {
        return Ok(());
    }
    let tomb = path.parent().unwrap_or(&vol.root).join(tmp_name("trash"));
    fsops::rename(&path, &tomb)?;
    fsops::sync_dir(path.parent().unwrap_or(&vol.root))?;
    fsops::delete_tree(&tomb)
}

/// The generations of `vol` with their ctimes (when they were written, for
/// people), newest first by their sequence numbers
/// ([`crate::store::SEQUENCE_NAME`]), never by a time: a chmod moves a ctime.
pub fn generations(vol: &Volume) -> Result<Vec<(i64, String)>, Error> {
    let mut out = vec![];
    for (name, link) in vol.root_entries()? {
        if classify(&name, link) == Some(RootEntry::Generation) {
            let path = vol.root.join(&name);
            let stamp = Stamp::read(&path).ctx("read", &path)?;
            out.push((read_sequence(&path), stamp.ctime_ns, name));
        }
    }
    out.sort_by(|a, b| (b.0, &b.2).cmp(&(a.0, &a.2)));
    Ok(out.into_iter().map(|(_, t, n)| (t, n)).collect())
}

/// The sequence number for a generation written or made current now: one
/// more than any generation's in `vol`.
pub fn next_sequence(vol: &Volume) -> Result<u64, Error> {
    let mut max = 0;
    for (name, link) in vol.root_entries()? {
        if classify(&name, link) == Some(RootEntry::Generation) {
            max = max.max(read_sequence(&vol.root.join(&name)));
        }
    }
    Ok(max + 1)
}

/// Removes the generations not in `spare` beyond the `others` newest of them;
/// returns their names.
pub fn collect_generations(
    vol: &Volume,
    spare: &[&str],
    others: usize,
) -> Result<Vec<String>, Error> {
    let mut removed = vec![];
    let old = generations(vol)?
        .into_iter()
        .filter(|(_, n)| !spare.contains(&n.as_str()));
    for (_, name) in old.skip(others) {
        remove(vol, &name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// Removes every object of the store that no generation links to; returns how many went.
pub fn sweep_objects(vol: &Volume) -> Result<usize, Error> {
    let keep = reachable(vol)?;
    let mut removed = 0;
    for name in store_entries(vol)? {
        if is_object_name(&name) && !keep.contains(&name) {
            remove(vol, &format!("{STORE_DIR}/{name}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The objects some generation of `vol` links to (kept or current, committed
/// or not): each generation's list, or, for a generation without a readable
/// one, the objects its links lead to.
pub fn reachable(vol: &Volume) -> Result<HashSet<String>, Error> {
    let mut all = HashSet::new();
    for (name, link) in vol.root_entries()? {
        if classify(&name, link) != Some(RootEntry::Generation) {
            continue;
        }
        let dir = vol.root.join(&name);
        match read_objects(&dir) {
            Ok(objects) => all.extend(objects.names().into_iter().map(str::to_string)),
            Err(e) => {
                tracing::debug!(generation = %name, "no objects list ({e}); following its links");
                walk_links(&vol.root.join(STORE_DIR), &dir, &mut all)?;
            }
        }
    }
    Ok(all)
}

/// Adds the objects reachable through the links in `dir` (a generation, or an
/// object of the previous layout, whose subdirectories were links too).
fn walk_links(store: &Path, dir: &Path, seen: &mut HashSet<String>) -> Result<(), Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("read", dir),
    };
    for entry in entries {
        let entry = entry.ctx("read", dir)?;
        if !entry.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        // `../..store/<obj>/<pack>`, `../..store/<obj>` or, inside an object, `../<obj>`.
        let Some(name) = target
            .to_str()
            .and_then(|t| t.split('/').find(|c| is_object_name(c)))
        else {
            continue;
        };
        if seen.insert(name.to_string()) {
            walk_links(store, &store.join(name), seen)?;
        }
    }
    Ok(())
}

/// The names in the store, or none when there is no store yet.
pub fn store_entries(vol: &Volume) -> Result<Vec<String>, Error> {
    let store = vol.root.join(STORE_DIR);
    match fs::read_dir(&store) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).ctx("read", &store),
    }
}
