//! Writing pack objects: each is built under a temporary name in the store
//! (`..store/..tmp-*/<pack>/`), as real directories and regular files, its
//! files hard-linked from confirmed published ones or copied from the inputs,
//! sealed (modes, mtime, owner) deepest first, and renamed to its name once
//! complete, the way ostree checks out a commit.
//!
//! Into a cold volume every file is copied, so the plan copies each one while
//! it hashes it ([`Stage`]): the stage of a pack is already its object's
//! temporary directory, and each byte is read once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::fsops::{self, Seal};
use crate::hash::FileHash;
use crate::manifest::{Entry, MODE_DIR};
use crate::progress::Progress;
use crate::scan::{Kind, Node, Stamp};
use crate::store::PackTree;
use crate::volume::tmp_name;

/// The stage of a cold volume: one temporary object directory per pack, with
/// the pack's directories created, that files are copied into while hashed.
#[derive(Debug)]
pub struct Stage {
    roots: BTreeMap<String, PathBuf>,
}

impl Stage {
    /// Creates, in `store`, a temporary object directory for each pack of
    /// `nodes` (sorted by path) and every directory of the nodes in it.
    pub fn create(store: &Path, nodes: &[Node]) -> Result<Stage, Error> {
        if !crate::volume::exists(store) {
            fsops::create_dir(store)?;
        }
        let mut roots = BTreeMap::new();
        for n in nodes.iter().filter(|n| n.kind == Kind::Dir) {
            let pack = n.rel.split('/').next().unwrap_or(&n.rel);
            if !n.rel.contains('/') {
                let root = store.join(tmp_name("stage"));
                fsops::create_dir(&root)?;
                roots.insert(pack.to_string(), root);
            }
            if let Some(root) = roots.get(pack) {
                fsops::create_dir(&root.join(&n.rel))?;
            }
        }
        Ok(Stage { roots })
    }

    /// Where the staged copy of the entry at volume path `rel` goes.
    pub fn path_of(&self, rel: &str) -> Option<PathBuf> {
        let pack = rel.split('/').next()?;
        Some(self.roots.get(pack)?.join(rel))
    }

    /// The temporary object directory of `pack`.
    pub fn root(&self, pack: &str) -> Option<&Path> {
        self.roots.get(pack).map(PathBuf::as_path)
    }

    /// Copies node `n` into the stage while hashing it.
    pub fn copy_hashing(&self, n: &Node, mode: u32, seal: &Seal) -> Result<FileHash, Error> {
        let dst = self.path_of(&n.rel).expect("every pack has a stage");
        fsops::copy_hashing(&n.abs(), &n.stamp, &dst, mode, seal)
    }

    /// Deletes what was staged (nothing was published).
    pub fn discard(self) -> Result<(), Error> {
        for root in self.roots.values() {
            fsops::delete_tree(root)?;
        }
        Ok(())
    }
}

/// Where one file of a new object comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Copied into the stage while it was hashed: already in place.
    Staged,
    /// A confirmed published file with the same contents and mode (the
    /// caller's number for it, turned into a path by `link`): hard-linked, or
    /// copied from the inputs when it has as many links as allowed.
    Link(usize),
    /// Copied from the inputs.
    Copy,
    /// The same contents and mode as the file of entry `.0` in this run's new
    /// objects: hard-linked to it once it is written (a staged copy of it is
    /// replaced by the link).
    Same(usize),
}

/// One object to write.
#[derive(Debug)]
pub struct ObjectJob<'a> {
    /// Its pack.
    pub pack: &'a PackTree,
    /// Its name in the store.
    pub name: String,
    /// The directory it is built in (a stage root, or a new temporary name).
    pub tmp: PathBuf,
    /// Whether `tmp` is a stage whose directories exist.
    pub staged: bool,
}

/// What writing objects did.
#[derive(Debug, Default)]
pub struct Written {
    /// Files hard-linked.
    pub hardlinked: usize,
    /// Files copied (staged ones included).
    pub copied: usize,
}

/// The inputs of a plan's entries, as the writer needs them.
pub trait Inputs: Sync {
    /// Where entry `i` comes from and its stamp when planned.
    fn input(&self, i: usize) -> (PathBuf, Stamp);
}

/// Writes `jobs` into `store`: directories, then every file on all cores
/// (`sources`: each new file's entry and source, sorted), then the files that
/// repeat one of them, then seals and renames each object into place.
#[allow(clippy::too_many_arguments)]
pub fn write_objects(
    store: &Path,
    entries: &[Entry],
    jobs: &[ObjectJob],
    sources: &[(usize, Source)],
    link: &(dyn Fn(usize) -> PathBuf + Sync),
    inputs: &dyn Inputs,
    seal: &Seal,
    progress: &Progress,
) -> Result<Written, Error> {
    // Each file's job, so that its path is made only when it is written.
    let mut job_of = vec![u32::MAX; entries.len()];
    let mut dirs: Vec<(PathBuf, u32)> = vec![];
    for (k, job) in jobs.iter().enumerate() {
        if !job.staged {
            fsops::create_dir(&job.tmp)?;
        }
        for i in job.pack.entries() {
            let e = &entries[i];
            if e.kind == Kind::Dir {
                let at = job.tmp.join(&e.path);
                if !job.staged {
                    fsops::create_dir(&at)?;
                }
                dirs.push((at, e.mode_bits()));
            } else {
                job_of[i] = k as u32;
            }
        }
    }
    let dst = |i: usize| jobs[job_of[i] as usize].tmp.join(&entries[i].path);
    let copy = |i: usize| -> Result<(), Error> {
        let (src, stamp) = inputs.input(i);
        fsops::copy_file(&src, &stamp, &dst(i), entries[i].mode_bits(), seal)
    };
    let first: Vec<(usize, &Source)> = sources
        .iter()
        .filter(|(_, s)| !matches!(s, Source::Same(_)))
        .map(|(i, s)| (*i, s))
        .collect();
    let bar = progress.bar("writing", sources.len() as u64);
    let done = AtomicU64::new(0);
    let linked = crate::parallel::try_map(&first, |&(i, s)| {
        let linked = match s {
            Source::Staged => false,
            Source::Copy => {
                copy(i)?;
                false
            }
            Source::Link(k) => {
                let ok = fsops::hard_link(&link(*k), &dst(i))?;
                if !ok {
                    copy(i)?;
                }
                ok
            }
            Source::Same(_) => unreachable!("written after the others"),
        };
        bar.set(done.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(linked)
    })?;
    let mut out = Written::default();
    out.hardlinked = linked.iter().filter(|l| **l).count();
    out.copied = linked.len() - out.hardlinked;
    let repeats: Vec<(usize, usize)> = sources
        .iter()
        .filter_map(|(i, s)| match s {
            Source::Same(of) => Some((*i, *of)),
            _ => None,
        })
        .collect();
    let again = crate::parallel::try_map(&repeats, |&(i, of)| {
        let at = dst(i);
        if crate::volume::exists(&at) {
            fsops::remove_file(&at)?; // a staged repeat
        }
        let ok = fsops::hard_link(&dst(of), &at)?;
        if !ok {
            copy(i)?;
        }
        bar.set(done.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(ok)
    })?;
    let again_linked = again.iter().filter(|l| **l).count();
    out.hardlinked += again_linked;
    out.copied += again.len() - again_linked;
    bar.finish();
    // Sealed deepest first, so that a directory is sealed after its children.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dir, mode) in &dirs {
        seal.path(dir, *mode)?;
    }
    for job in jobs {
        seal.path(&job.tmp, MODE_DIR)?;
        fsops::rename(&job.tmp, &store.join(&job.name))?;
    }
    Ok(out)
}
