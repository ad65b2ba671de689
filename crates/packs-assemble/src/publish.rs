//! Publishing a plan into a volume: write the directory objects the store
//! lacks (see [`crate::store`] for the layout and its crash argument), then a
//! generation that links to them, commit it by renaming `..data`, update the
//! per-pack links, and remove old generations and unreachable objects.
//!
//! A kill at any moment leaves `..data` pointing at a complete generation:
//! objects and generations are renamed into place only once complete, and
//! `..data` is replaced by rename(2), never rewritten.
//!
//! Invariants that make this hold across removals and reuse:
//! - A name `..<id>` (or an object's name in the store) is only ever given to
//!   something complete. Removal renames to a tombstone first
//!   ([`crate::remove`]).
//! - Reusing a kept generation (same root hash) first checks it against the
//!   plan's manifest (its manifest bytes, and every entry's type, size and
//!   mode); an incomplete one is moved to a tombstone and written afresh.
//! - The current generation is "up to date" only while its directory, its
//!   manifest and its packs' objects are there and the manifest equals the
//!   plan's; otherwise a fresh copy is written under a new name and committed.
//! - Before anything is written, generations that would not survive this
//!   publish's garbage collection are removed (a complete but never committed
//!   generation left by a full disk among them), and with them the objects no
//!   remaining generation reaches, so a retry has the room the failed run had.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::crashpoint::step;
use crate::error::{Error, IoContext};
use crate::manifest::{Entry, EntryReader, MANIFEST_NAME, MODE_EXEC, MODE_FILE, Manifest};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::remove::{remove_leftovers, remove_tree, sweep_objects, sync_dir};
use crate::scan::{Kind, Stamp};
use crate::store::{
    Dir, OBJECTS_NAME, STORE_DIR, Tree, base_name, objects_file_bytes, reachable, read_objects_file,
};
use crate::volume::{
    DATA_LINK, RootEntry, TMP_PREFIX, Volume, VolumeLock, classify, exists, generation_id_of,
    generation_name,
};
use crate::write::{Seal, copy_file};

/// How to publish.
#[derive(Clone, Debug)]
pub struct Options {
    /// Generations to keep, the current one included (at least 1).
    pub keep: usize,
    /// Remove entries in the volume root that this tool did not write.
    pub adopt: bool,
    /// Flush the filesystem before the commit point.
    pub sync: bool,
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
    /// Files of new objects hard-linked from the previous generation.
    pub hardlinked: usize,
    /// Files of new objects copied from the inputs.
    pub copied: usize,
    /// Directory objects written to the store.
    pub objects_written: usize,
    /// Directory objects the store already held (shared with kept generations).
    pub objects_shared: usize,
    /// Old generations removed (beyond `--keep`) and leftovers of interrupted runs.
    pub removed_generations: Vec<String>,
    /// Objects removed from the store (no kept generation reached them).
    pub removed_objects: usize,
}

/// Publishes `plan` into `vol`, whose lock the caller holds (`None` only for a dry run).
pub fn publish(
    vol: &Volume,
    lock: Option<&VolumeLock>,
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
    assert!(
        opts.dry_run || lock.is_some(),
        "publishing without the volume lock"
    );
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
    // A current generation whose directory, manifest or pack objects are gone
    // cannot be "up to date".
    let current_intact = current
        .as_deref()
        .is_some_and(|c| generation_intact(&vol.root.join(c), manifest));
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
    phase("up-to-date check");
    let previous = current
        .as_ref()
        .filter(|_| current_intact || !same)
        .map(|c| vol.root.join(c).join(MANIFEST_NAME));
    let linkable;
    (out.diff, linkable) = diff(previous.as_deref(), manifest, !fresh)?;
    phase("diff");
    if opts.dry_run {
        return Ok(out);
    }
    out.removed_generations.extend(remove_leftovers(vol)?);
    // Make room first: what this publish's GC would remove anyway goes now,
    // and with it every object no remaining generation reaches (among them
    // any that an interrupted run named but never flushed).
    let protected: Vec<&str> = current.iter().map(String::as_str).collect();
    out.removed_generations.extend(collect_garbage(
        vol,
        &protected,
        &new_name,
        opts.keep.saturating_sub(2),
    )?);
    out.removed_objects += sweep_objects(vol, &reachable(vol)?)?;
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
        let mut fresh = fresh;
        if exists(&kept) {
            tracing::warn!(generation = %new_name, "a kept generation with this root hash is incomplete; writing it afresh");
            remove_tree(vol, &new_name)?;
            out.removed_generations.push(new_name.clone());
            // Its objects are suspect: share none of them.
            fresh = true;
        }
        // Later runs keep the current salt, so they share its objects; a fresh
        // copy takes a salt of its own, so it shares nothing with a damaged one.
        let salt = if fresh {
            format!(
                "{:x}-{}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
                std::process::id()
            )
        } else {
            current
                .as_deref()
                .and_then(|c| read_objects_file(&vol.root.join(c)).ok())
                .map(|(salt, _)| salt)
                .unwrap_or_default()
        };
        let tree = Tree::new(manifest, &salt);
        phase("object names");
        let from = current.as_deref().filter(|_| !fresh);
        write_objects(vol, plan, &tree, from, &linkable, progress, &mut out)?;
        phase("objects");
        write_generation(vol, manifest, &tree, &salt, &new_name, opts)?;
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
    out.removed_objects += sweep_objects(vol, &reachable(vol)?)?;
    phase("garbage collection");
    Ok(out)
}

/// The difference between the previous manifest (read as a stream) and the
/// new one, and for each new entry whether the previous generation holds the
/// same file (contents, mode, mtime and owner) at the same path, so that it
/// can be hard-linked from there (`link` false: never).
fn diff(previous: Option<&Path>, new: &Manifest, link: bool) -> Result<(Diff, Vec<bool>), Error> {
    let entries = &new.contents.entries;
    let mut d = Diff::default();
    let mut linkable = vec![false; entries.len()];
    let Some(path) = previous else {
        d.added = files(entries.iter()).map(|e| e.path.clone()).collect();
        return Ok((d, linkable));
    };
    let (old, mtime, owner) = match EntryReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(
                "the previous generation's manifest is unreadable ({e}); publishing every file afresh"
            );
            d.added = files(entries.iter()).map(|e| e.path.clone()).collect();
            return Ok((d, linkable));
        }
    };
    // Hard links share the inode, so its mtime and owner must match too.
    let link = link && mtime == new.contents.mtime && owner == new.contents.owner;
    let mut old = old.peekable();
    let mut next_old = |until: Option<&str>, d: &mut Diff| -> Result<Option<Entry>, Error> {
        // Entries of the old manifest before `until` were removed.
        while let Some(item) = old.peek() {
            let e = item.as_ref().map_err(|e| {
                Error::Environment(format!("{}: {e}; run with --force", path.display()))
            })?;
            match until.map(|u| e.path.as_str().cmp(u)) {
                Some(std::cmp::Ordering::Greater) => return Ok(None),
                Some(std::cmp::Ordering::Equal) => {
                    return Ok(old.next().and_then(Result::ok));
                }
                _ => {
                    if e.kind == Kind::File {
                        d.removed.push(e.path.clone());
                    }
                    old.next();
                }
            }
        }
        Ok(None)
    };
    for (i, e) in entries.iter().enumerate() {
        let prev = next_old(Some(&e.path), &mut d)?;
        if e.kind != Kind::File {
            if prev.as_ref().is_some_and(|p| p.kind == Kind::File) {
                d.removed.push(e.path.clone());
            }
            continue;
        }
        match prev {
            Some(p) if p.kind == Kind::File => {
                if p.sha256 == e.sha256 && p.mode == e.mode {
                    linkable[i] = link;
                } else {
                    d.changed.push(e.path.clone());
                }
            }
            _ => d.added.push(e.path.clone()),
        }
    }
    next_old(None, &mut d)?;
    d.removed.sort();
    Ok((d, linkable))
}

fn files<'a>(entries: impl Iterator<Item = &'a Entry>) -> impl Iterator<Item = &'a Entry> {
    entries.filter(|e| e.kind == Kind::File)
}

/// Writes the objects of `tree` that the store lacks: each under a temporary
/// name, its files on all cores (hard-linked from generation `from` where
/// `linkable` says it holds them, else copied from the inputs), then its
/// links, then sealed and renamed into place, children before parents.
fn write_objects(
    vol: &Volume,
    plan: &Plan,
    tree: &Tree,
    from: Option<&str>,
    linkable: &[bool],
    progress: &Progress,
    out: &mut Outcome,
) -> Result<(), Error> {
    let entries = &plan.manifest.contents.entries;
    let contents = &plan.manifest.contents;
    let store = vol.root.join(STORE_DIR);
    if !exists(&store) {
        fs::create_dir(&store).ctx("create", &store)?;
        step();
    }
    let seal = Seal::new(contents.mtime, contents.owner.as_deref());
    let mut named = BTreeSet::new();
    let mut todo: Vec<(&Dir, String)> = vec![];
    for d in tree.dirs.iter().filter(|d| d.is_object()) {
        let name = d.object();
        if named.insert(name.clone()) {
            if exists(&store.join(&name)) {
                out.objects_shared += 1;
            } else {
                todo.push((d, name));
            }
        }
    }
    out.objects_written = todo.len();
    todo.sort_by_key(|(d, _)| std::cmp::Reverse(d.depth));
    let pid = std::process::id();
    let tmp_of = |name: &str| store.join(format!("{TMP_PREFIX}{name}-{pid}"));

    // Directories: each object's own, and the real subdirectories of deep
    // ones; a directory whose files were staged while hashed is moved whole.
    let mut files: Vec<(usize, PathBuf)> = vec![];
    let mut links: Vec<(PathBuf, String)> = vec![];
    let mut dirs: Vec<PathBuf> = vec![];
    let place = |entry: usize, at: &Path| -> Result<bool, Error> {
        if let Some(staged) = plan.stage_dir(entry).filter(|p| exists(p)) {
            fs::rename(&staged, at).ctx("move staged directory to", at)?;
            step();
            return Ok(true);
        }
        fs::create_dir(at).ctx("create directory", at)?;
        step();
        Ok(false)
    };
    let mut roots = Vec::with_capacity(todo.len());
    for (d, name) in &todo {
        // A staged directory is finished where it is (it has a temporary name
        // already) and renamed into the store from there.
        let (root, moved) = match plan.stage_dir(d.entry).filter(|p| exists(p)) {
            Some(staged) => (staged, true),
            None => {
                let root = tmp_of(name);
                fs::create_dir(&root).ctx("create", &root)?;
                step();
                (root, false)
            }
        };
        roots.push((root.clone(), name));
        dirs.push(root.clone());
        let mut stack = vec![(*d, root, moved)];
        while let Some((dir, at, moved)) = stack.pop() {
            for &c in &dir.children {
                let e = &entries[c];
                let dst = at.join(base_name(&e.path));
                match e.kind {
                    Kind::File if moved && plan.staged(c) => out.copied += 1,
                    Kind::File => files.push((c, dst)),
                    Kind::Dir if !dir.inlines_children() => {
                        links.push((dst, format!("../{}", tree.dir(c).object())));
                    }
                    Kind::Dir => {
                        let moved = place(c, &dst)?;
                        dirs.push(dst.clone());
                        stack.push((tree.dir(c), dst, moved));
                    }
                }
            }
        }
    }

    let bar = progress.bar("writing", files.len() as u64);
    let done = AtomicU64::new(0);
    let linked = crate::parallel::try_map(&files, |(c, dst)| {
        let e = &entries[*c];
        let linked = match from {
            Some(generation) if linkable[*c] => {
                fs::hard_link(vol.root.join(generation).join(&e.path), dst).is_ok()
            }
            _ => false,
        };
        if !linked {
            let node = &plan.nodes[*c];
            copy_file(&plan.source(*c), &node.stamp, dst, e.mode_bits(), &seal)?;
        }
        step();
        bar.set(done.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(linked)
    })?;
    out.hardlinked = linked.iter().filter(|l| **l).count();
    out.copied += linked.len() - out.hardlinked;
    bar.finish();

    for (link, target) in &links {
        symlink(target, link).ctx("create link", link)?;
        seal.link(link)?;
        step();
    }
    // Sealed deepest first, so each directory is sealed after its children.
    for dir in dirs.iter().rev() {
        seal.path(dir, MODE_EXEC)?;
    }
    step();
    for (root, name) in roots {
        let target = store.join(name);
        fs::rename(&root, &target).ctx("rename object into place", &target)?;
        step();
    }
    Ok(())
}

/// Writes the generation directory `name`: the manifest, the objects list
/// and one link per pack; flushes the filesystem (unless told not to) and
/// renames it into place.
fn write_generation(
    vol: &Volume,
    manifest: &Manifest,
    tree: &Tree,
    salt: &str,
    name: &str,
    opts: &Options,
) -> Result<(), Error> {
    let contents = &manifest.contents;
    let tmp = vol.root.join(format!(
        "{TMP_PREFIX}{}-{}",
        manifest.generation_id(),
        std::process::id()
    ));
    fs::create_dir(&tmp).ctx("create generation", &tmp)?;
    step();
    let seal = Seal::new(contents.mtime, contents.owner.as_deref());

    let mf = tmp.join(MANIFEST_NAME);
    let file = File::create(&mf).ctx("write manifest", &mf)?;
    let mut w = io::BufWriter::with_capacity(256 * 1024, file);
    manifest
        .write_to(&mut w)
        .and_then(|()| w.flush())
        .ctx("write manifest", &mf)?;
    let file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx("write manifest", &mf)?;
    seal.file(&file, MODE_FILE, &mf)?;
    step();
    let objects = tmp.join(OBJECTS_NAME);
    fs::write(&objects, objects_file_bytes(salt, &tree.objects())).ctx("write", &objects)?;
    seal.path(&objects, MODE_FILE)?;
    step();
    for (pack, object) in tree.packs(manifest) {
        let link = tmp.join(pack);
        symlink(format!("../{STORE_DIR}/{object}"), &link).ctx("create link", &link)?;
        seal.link(&link)?;
        step();
    }
    seal.path(&tmp, MODE_EXEC)?;
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

/// Whether the generation at `dir` holds this manifest byte for byte and each
/// of its packs resolves to a directory (its object is there).
fn generation_intact(dir: &Path, manifest: &Manifest) -> bool {
    manifest.matches_file(&dir.join(MANIFEST_NAME))
        && manifest
            .packs()
            .all(|p| fs::metadata(dir.join(p)).is_ok_and(|m| m.is_dir()))
}

/// Whether the generation at `dir` holds exactly what `manifest` lists: the
/// same manifest bytes, and every entry with its type, size and mode (through
/// the links into the store).
fn generation_complete(dir: &Path, manifest: &Manifest) -> bool {
    if !generation_intact(dir, manifest) {
        return false;
    }
    let entries = &manifest.contents.entries;
    crate::parallel::try_map(entries, |e| {
        let ok = fs::metadata(dir.join(&e.path)).is_ok_and(|m| {
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
