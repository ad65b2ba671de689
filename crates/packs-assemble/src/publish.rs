//! Publishing a plan into a volume: write a complete generation beside the
//! current one (hard-linking unchanged files), commit it by renaming `..data`,
//! update the per-pack links, and remove old generations.
//!
//! A kill at any moment leaves `..data` pointing at a complete generation:
//! a generation is renamed into place only once complete, and `..data` is
//! replaced by rename(2), never rewritten.
//!
//! Invariants that make this hold across removals and reuse:
//! - A name `..<id>` is only ever given to a complete generation. Removal
//!   first renames a generation to a tombstone `..tmp-trash-*` (one rename(2),
//!   so it stops being reachable and recognisable at once), then deletes the
//!   tombstone; a kill half-way through leaves only a tombstone, which the next
//!   run deletes. A half-deleted tree is never called a generation again.
//! - Reusing a kept generation (same root hash) first checks it against the
//!   plan's manifest (its manifest bytes, and every entry's type, size and
//!   mode); an incomplete one is moved to a tombstone and written afresh.
//! - The current generation is "up to date" only while its directory and its
//!   manifest are there and equal to the plan's; otherwise a fresh copy is
//!   written under a new name and committed.
//! - Before a new generation is written, generations that would not survive
//!   this publish's garbage collection are removed (a complete but never
//!   committed generation left by a full disk among them), so a retry has the
//!   room the failed run had.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::crashpoint::step;
use crate::error::{Error, IoContext};
use crate::manifest::{Entry, MANIFEST_NAME, MODE_EXEC, MODE_FILE, Manifest};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::scan::{Kind, Stamp};
use crate::volume::{
    DATA_LINK, RootEntry, TMP_PREFIX, Volume, classify, exists, generation_id_of, generation_name,
};

/// How to publish.
#[derive(Clone, Debug)]
pub struct Options {
    /// Generations to keep, the current one included (at least 1).
    pub keep: usize,
    /// Remove entries in the volume root that this tool did not write.
    pub adopt: bool,
    /// Flush the filesystem before the commit point.
    pub sync: bool,
    /// How long to wait for another run's lock.
    pub lock_timeout: Duration,
    /// Compute the difference only; write nothing.
    pub dry_run: bool,
    /// Publish a fresh copy of every file even when the root hash is unchanged
    /// (repairs a damaged generation; nothing is hard-linked from it).
    pub force: bool,
}

/// Paths that differ between the current generation and the new one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Files in the new generation only.
    pub added: Vec<String>,
    /// Files whose contents or mode changed.
    pub changed: Vec<String>,
    /// Files in the current generation only.
    pub removed: Vec<String>,
}

/// What publishing did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// The generation `..data` points at now (or would, for a dry run).
    pub generation: String,
    /// The generation it pointed at before, if any.
    pub previous: Option<String>,
    /// Nothing was written: the volume already held this root hash.
    pub up_to_date: bool,
    /// A kept older generation with this root hash was made current again.
    pub reused: bool,
    /// The difference to the previous generation.
    #[serde(flatten)]
    pub diff: Diff,
    /// Files hard-linked from the previous generation.
    pub hardlinked: usize,
    /// Files copied from the inputs.
    pub copied: usize,
    /// Old generations removed (beyond `--keep`) and leftovers of interrupted runs.
    pub removed_generations: Vec<String>,
}

/// Publishes `plan` into `vol`.
pub fn publish(
    vol: &Volume,
    plan: &Plan,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, Error> {
    let started = std::time::Instant::now();
    let phase = |name: &str| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "publish: {name} done"
        )
    };
    let manifest = &plan.manifest;
    let mut new_name = generation_name(manifest.generation_id());
    if !opts.dry_run {
        fs::create_dir_all(&vol.root).ctx("create volume", &vol.root)?;
    }
    let _lock = if opts.dry_run || !vol.root.exists() {
        None
    } else {
        Some(vol.lock(opts.lock_timeout)?)
    };
    let exists_now = vol.root.exists();
    let current = if exists_now { vol.current()? } else { None };
    let mut out = Outcome {
        generation: new_name.clone(),
        previous: current.clone(),
        ..Outcome::default()
    };

    let unmanaged: Vec<String> = if exists_now {
        vol.root_entries()?
            .into_iter()
            .filter(|(n, link)| classify(n, *link).is_none())
            .map(|(n, _)| n)
            .collect()
    } else {
        vec![]
    };
    if !unmanaged.is_empty() && !opts.adopt {
        return Err(Error::Environment(format!(
            "{} holds entries that packs-assemble did not write: {}. It looks like a volume filled by copying; \
             recreate the volume, or pass --adopt to delete them",
            vol.root.display(),
            unmanaged.join(", ")
        )));
    }

    let same = current
        .as_deref()
        .and_then(|c| generation_id_of(c.trim_start_matches("..")))
        == Some(manifest.generation_id());
    // A current generation whose directory or manifest is gone cannot be "up to date".
    let current_intact = current
        .as_deref()
        .is_some_and(|c| manifest_matches(&vol.root.join(c), manifest));
    if same && !current_intact {
        tracing::warn!(
            generation = current.as_deref().unwrap_or_default(),
            "the current generation is damaged or missing; publishing a fresh copy"
        );
    }
    let fresh = opts.force || (same && !current_intact);
    if same && current_intact && !opts.force {
        out.up_to_date = true;
        out.generation = current.clone().unwrap_or_default();
        if !opts.dry_run && links_need_repair(vol, manifest)? {
            update_links(vol, manifest)?;
        }
        return Ok(out);
    }
    let previous = current
        .as_ref()
        .filter(|_| current_intact || !same)
        .and_then(|c| Manifest::read(&vol.root.join(c).join(MANIFEST_NAME)).ok());
    out.diff = diff(previous.as_ref(), manifest);
    phase("diff");
    if opts.dry_run {
        return Ok(out);
    }

    out.removed_generations.extend(remove_leftovers(vol)?);
    // Make room first: what this publish's GC would remove anyway goes now.
    let protected: Vec<&str> = current.iter().map(String::as_str).collect();
    out.removed_generations.extend(collect_garbage(
        vol,
        &protected,
        &new_name,
        opts.keep.saturating_sub(2),
    )?);
    if fresh {
        // A fresh name beside any damaged copy, which GC then removes.
        let base = new_name.clone();
        let mut n = 1;
        while vol.root.join(&new_name).exists() {
            n += 1;
            new_name = format!("{base}-{n}");
        }
        out.generation = new_name.clone();
    }
    let kept = vol.root.join(&new_name);
    if kept.is_dir() && generation_complete(&kept, manifest) {
        out.reused = true;
        tracing::info!(generation = %new_name, "a kept generation has this root hash; making it current again");
    } else {
        if exists(&kept) {
            tracing::warn!(generation = %new_name, "a kept generation with this root hash is incomplete; writing it afresh");
            remove_tree(vol, &new_name)?;
            out.removed_generations.push(new_name.clone());
        }
        let previous = if fresh { None } else { previous.as_ref() };
        write_generation(
            vol,
            plan,
            &new_name,
            current.as_deref(),
            previous,
            opts,
            progress,
            &mut out,
        )?;
    }

    phase("generation");
    // The commit point.
    let tmp_link = vol
        .root
        .join(format!("{TMP_PREFIX}data-{}", std::process::id()));
    symlink(&new_name, &tmp_link).ctx("create link", &tmp_link)?;
    step();
    fs::rename(&tmp_link, vol.root.join(DATA_LINK)).ctx("replace", &vol.root.join(DATA_LINK))?;
    step();
    sync_dir(&vol.root)?;

    for name in &unmanaged {
        remove_tree(vol, name)?;
    }
    update_links(vol, manifest)?;
    phase("commit");
    // A damaged former current generation is worth nothing as a kept one.
    if let Some(damaged) = current
        .as_ref()
        .filter(|c| same && !current_intact && **c != new_name)
    {
        remove_tree(vol, damaged)?;
        out.removed_generations.push(damaged.clone());
    }
    out.removed_generations.extend(collect_garbage(
        vol,
        &[],
        &new_name,
        opts.keep.saturating_sub(1),
    )?);
    phase("garbage collection");
    Ok(out)
}

fn diff(previous: Option<&Manifest>, new: &Manifest) -> Diff {
    let mut d = Diff::default();
    let files = |m: &Manifest| -> Vec<(String, String)> {
        m.contents
            .entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| (e.path.clone(), format!("{:?}{}", e.sha256, e.mode)))
            .collect()
    };
    let old: std::collections::BTreeMap<String, String> = previous
        .map(files)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new_files = files(new);
    let new_paths: BTreeSet<&str> = new_files.iter().map(|(p, _)| p.as_str()).collect();
    for (p, v) in &new_files {
        match old.get(p) {
            None => d.added.push(p.clone()),
            Some(o) if o != v => d.changed.push(p.clone()),
            Some(_) => {}
        }
    }
    d.removed = old
        .keys()
        .filter(|p| !new_paths.contains(p.as_str()))
        .cloned()
        .collect();
    d
}

#[allow(clippy::too_many_arguments)]
fn write_generation(
    vol: &Volume,
    plan: &Plan,
    name: &str,
    current: Option<&str>,
    previous: Option<&Manifest>,
    opts: &Options,
    progress: &Progress,
    out: &mut Outcome,
) -> Result<(), Error> {
    let manifest = &plan.manifest;
    let contents = &manifest.contents;
    let tmp = vol.root.join(format!(
        "{TMP_PREFIX}{}-{}",
        manifest.generation_id(),
        std::process::id()
    ));
    fs::create_dir(&tmp).ctx("create generation", &tmp)?;
    step();
    let mtime = UNIX_EPOCH + Duration::from_secs(contents.mtime.max(0) as u64);
    let owner = parse_owner(contents.owner.as_deref());
    // Hard links share the inode, so its mode, mtime and owner must match too.
    let linkable = previous
        .filter(|p| p.contents.mtime == contents.mtime && p.contents.owner == contents.owner);
    let bar = progress.bar("writing", contents.entries.len() as u64);

    // Directories first (a parent sorts before its children), then files on all cores.
    for e in contents.entries.iter().filter(|e| e.kind == Kind::Dir) {
        let dst = tmp.join(&e.path);
        fs::create_dir(&dst).ctx("create directory", &dst)?;
        step();
    }
    let files: Vec<&Entry> = contents
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    let done = AtomicU64::new(0);
    let linked = crate::parallel::try_map(&files, |e| {
        let dst = tmp.join(&e.path);
        let prev = linkable
            .and_then(|p| p.get(&e.path))
            .filter(|p| p.kind == Kind::File && p.sha256 == e.sha256 && p.mode == e.mode);
        let linked = match (prev, current) {
            (Some(_), Some(cur)) => fs::hard_link(vol.root.join(cur).join(&e.path), &dst).is_ok(),
            _ => false,
        };
        if !linked {
            let node = &plan.nodes[&e.path];
            copy_file(&node.abs, &node.stamp, &dst, e.mode_bits(), mtime, owner)?;
        }
        step();
        bar.set(done.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(linked)
    })?;
    out.hardlinked = linked.iter().filter(|l| **l).count();
    out.copied = linked.len() - out.hardlinked;
    bar.finish();

    let mf = tmp.join(MANIFEST_NAME);
    fs::write(&mf, manifest.to_bytes()).ctx("write manifest", &mf)?;
    finish(&mf, MODE_FILE, mtime, owner)?;
    step();
    // Directories last, deepest first, so each is sealed after its children.
    for e in contents
        .entries
        .iter()
        .rev()
        .filter(|e| e.kind == Kind::Dir)
    {
        finish(&tmp.join(&e.path), MODE_EXEC, mtime, owner)?;
    }
    finish(&tmp, MODE_EXEC, mtime, owner)?;
    step();
    if opts.sync {
        let dir = File::open(&tmp).ctx("open", &tmp)?;
        rustix::fs::syncfs(&dir)
            .map_err(io::Error::from)
            .ctx("sync filesystem of", &tmp)?;
    }
    let target = vol.root.join(name);
    fs::rename(&tmp, &target).ctx("rename generation into place", &target)?;
    step();
    Ok(())
}

/// Copies `src` to a new file `dst` (never following or replacing anything),
/// then fails if `src` changed while being copied.
fn copy_file(
    src: &Path,
    stamp: &Stamp,
    dst: &Path,
    mode: u32,
    mtime: SystemTime,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    let mut from = File::open(src).ctx("open", src)?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(dst)
        .ctx("create", dst)?;
    step();
    io::copy(&mut from, &mut to).ctx("copy", src)?;
    if Stamp::read(src).ctx("read", src)? != *stamp {
        return Err(Error::Environment(format!(
            "{} changed while it was being published; nothing was committed. Run again once the sources are still",
            src.display()
        )));
    }
    drop(to);
    finish(dst, mode, mtime, owner)
}

/// Sets the final mode, mtime and owner of a published path.
fn finish(
    path: &Path,
    mode: u32,
    mtime: SystemTime,
    owner: Option<(u32, u32)>,
) -> Result<(), Error> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).ctx("change owner of", path)?;
    }
    fs::set_permissions(path, Permissions::from_mode(mode)).ctx("set mode of", path)?;
    let f = File::open(path).ctx("open", path)?;
    f.set_times(fs::FileTimes::new().set_modified(mtime).set_accessed(mtime))
        .ctx("set times of", path)
}

fn parse_owner(owner: Option<&str>) -> Option<(u32, u32)> {
    let (u, g) = owner?.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|f| f.sync_all()).ctx("sync", dir)
}

/// The names that should be links in the root: one per pack, and the manifest.
fn link_names(manifest: &Manifest) -> Vec<String> {
    manifest
        .packs()
        .chain([MANIFEST_NAME])
        .map(str::to_string)
        .collect()
}

fn links_need_repair(vol: &Volume, manifest: &Manifest) -> Result<bool, Error> {
    let wanted = link_names(manifest);
    let ok = wanted.iter().all(|n| {
        fs::read_link(vol.root.join(n)).ok().as_deref()
            == Some(Path::new(&format!("{DATA_LINK}/{n}")))
    });
    let extra = vol
        .root_entries()?
        .into_iter()
        .any(|(n, link)| classify(&n, link) == Some(RootEntry::Link) && !wanted.contains(&n));
    Ok(!ok || extra)
}

/// Points `<pack>` and the manifest link through `..data`; removes links of packs that are gone.
fn update_links(vol: &Volume, manifest: &Manifest) -> Result<(), Error> {
    let wanted = link_names(manifest);
    for name in &wanted {
        let path = vol.root.join(name);
        let target = format!("{DATA_LINK}/{name}");
        if fs::read_link(&path).ok().as_deref() == Some(Path::new(&target)) {
            continue;
        }
        let tmp = vol
            .root
            .join(format!("{TMP_PREFIX}link-{}", std::process::id()));
        symlink(&target, &tmp).ctx("create link", &tmp)?;
        step();
        fs::rename(&tmp, &path).ctx("replace", &path)?;
        step();
    }
    for (name, link) in vol.root_entries()? {
        if classify(&name, link) == Some(RootEntry::Link) && !wanted.contains(&name) {
            let path = vol.root.join(&name);
            fs::remove_file(&path).ctx("remove stale link", &path)?;
            step();
        }
    }
    Ok(())
}

/// Whether `dir` holds a manifest byte-identical to `manifest`'s.
fn manifest_matches(dir: &Path, manifest: &Manifest) -> bool {
    fs::read(dir.join(MANIFEST_NAME)).is_ok_and(|b| b == manifest.to_bytes())
}

/// Whether the generation at `dir` holds exactly what `manifest` lists: the
/// same manifest bytes, and every entry with its type, size and mode.
fn generation_complete(dir: &Path, manifest: &Manifest) -> bool {
    if !manifest_matches(dir, manifest) {
        return false;
    }
    let entries = &manifest.contents.entries;
    crate::parallel::try_map(entries, |e| {
        let ok = fs::symlink_metadata(dir.join(&e.path)).is_ok_and(|m| {
            let kind_ok = match e.kind {
                Kind::Dir => m.is_dir(),
                Kind::File => m.is_file() && Some(m.len()) == e.size,
            };
            kind_ok && m.permissions().mode() & 0o7777 == e.mode_bits()
        });
        Ok(ok)
    })
    .is_ok_and(|all| all.into_iter().all(|ok| ok))
}

/// Removes what an interrupted run left (`..tmp-*`, tombstones included).
fn remove_leftovers(vol: &Volume) -> Result<Vec<String>, Error> {
    let mut removed = vec![];
    for (name, _) in vol.root_entries()? {
        if classify(&name, false) == Some(RootEntry::Tmp) {
            delete_tree(&vol.root.join(&name))?;
            step();
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Removes generations other than `current` and those in `protected`, keeping
/// the `others` most recent of them.
fn collect_garbage(
    vol: &Volume,
    protected: &[&str],
    current: &str,
    others: usize,
) -> Result<Vec<String>, Error> {
    let mut old: Vec<(i64, String)> = vec![];
    for (name, link) in vol.root_entries()? {
        if name != current
            && !protected.contains(&name.as_str())
            && classify(&name, link) == Some(RootEntry::Generation)
        {
            let stamp = Stamp::read(&vol.root.join(&name)).ctx("read", &vol.root.join(&name))?;
            old.push((stamp.ctime_ns, name));
        }
    }
    old.sort_by(|a, b| b.cmp(a));
    let mut removed = vec![];
    for (_, name) in old.into_iter().skip(others) {
        remove_tree(vol, &name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// Removes the root entry `name`: first renamed to a tombstone (`..tmp-trash-*`),
/// so that from that instant nothing can take what is left of it for a
/// generation or a pack, then deleted.
fn remove_tree(vol: &Volume, name: &str) -> Result<(), Error> {
    let path = vol.root.join(name);
    if !exists(&path) {
        return Ok(());
    }
    let tomb = vol.root.join(format!(
        "{TMP_PREFIX}trash-{}-{}",
        name.trim_start_matches('.'),
        std::process::id()
    ));
    fs::rename(&path, &tomb).ctx("move aside", &path)?;
    step();
    sync_dir(&vol.root)?;
    delete_tree(&tomb)?;
    step();
    Ok(())
}

/// Deletes a file, link or read-only directory tree in place (only ever a
/// tombstone or unfinished work: something no reader can take for content).
fn delete_tree(path: &Path) -> Result<(), Error> {
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
