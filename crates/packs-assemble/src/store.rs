//! The object store `..store/`: immutable directories that generations share,
//! named by a hash of their contents (a Merkle tree, as in git or the Nix store).
//!
//! Layout of a volume:
//!
//! ```text
//! ..data -> ..<gen>                       the commit point
//! ..<gen>/.attune-manifest.json           every entry, its mode, size, sha256
//! ..<gen>/.attune-objects                 the objects this generation reaches
//! ..<gen>/<pack> -> ../..store/<obj>      one link per pack
//! ..store/<obj>/<file>                    files: regular, read-only, hard-linked
//!                                         between the objects that hold them
//! ..store/<obj>/<dir> -> ../<obj>         subdirectories: links to their objects
//! <pack> -> ..data/<pack>                 what services open
//! ```
//!
//! An object's name is the first 128 bits of SHA-256 over its listing: each
//! file's name, mode and content hash, each subdirectory's name and hash, and a
//! header with the generation's mtime and owner (they are the inodes' too) and
//! the store's salt. Equal directories get equal names, so a new generation
//! writes only the objects on the path from a change to its pack's root; every
//! other directory is the object the previous generation already links to.
//! Readers see plain paths: every link is relative and stays inside the volume.
//! Below [`INLINE_DEPTH`] levels, an object holds its whole subtree as real
//! directories, so that no path resolves through more than about 20 links
//! (Linux follows at most 40 in one lookup).
//!
//! Why a kill at any moment is safe (the publisher holds the volume lock):
//! - An object is written under `..store/..tmp-*` and renamed to its name only
//!   once complete (files, links, modes), after its children: a name in the
//!   store is always a complete object whose subdirectories exist.
//! - Objects are renamed into place before the filesystem is flushed, so a
//!   power cut could leave one named but not durable. Such an object is
//!   reachable from no generation (a generation is renamed into place after the
//!   flush), and every run that writes first removes each object no generation
//!   lists: an object is reused only when a generation reaches it, that is when
//!   it was flushed before.
//! - A generation lists its objects in `.attune-objects`, written before the
//!   generation is renamed into place, so garbage collection never frees what
//!   a kept generation (committed or not) reaches. An object is removed by
//!   renaming it to a tombstone first (see [`crate::remove`]).
//! - `--force` publishes with a fresh salt: every object name is new, nothing is
//!   linked from what might be damaged, and later runs keep the current
//!   generation's salt (recorded in `.attune-objects`), so they share with the
//!   repaired copy and never with the damaged one.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext};
use crate::hash::Sha256Digest;
use crate::manifest::{Manifest, hex};
use crate::scan::Kind;
use crate::volume::{RootEntry, Volume, classify};

/// The store directory in the volume root.
pub const STORE_DIR: &str = "..store";
/// The list of objects a generation reaches, inside the generation.
pub const OBJECTS_NAME: &str = ".attune-objects";
/// Directories this deep below their pack (the pack is 0) hold their subtree
/// as real directories instead of links.
pub const INLINE_DEPTH: usize = 16;
/// First word of [`OBJECTS_NAME`]; the salt follows it.
const OBJECTS_HEADER: &str = "attune-objects 1";

/// Whether `name` can be an object's name: 32 lowercase hex digits.
pub fn is_object_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One directory of a manifest.
#[derive(Clone, Debug)]
pub struct Dir {
    /// Its index in the manifest's entries.
    pub entry: usize,
    /// 0 for a pack, 1 for its subdirectories, and so on.
    pub depth: usize,
    /// Its children's entry indices, in name order.
    pub children: Vec<usize>,
    hash: [u8; 32],
}

impl Dir {
    /// Whether it is an object of its own (else it is inside its ancestor's).
    pub fn is_object(&self) -> bool {
        self.depth <= INLINE_DEPTH
    }

    /// Whether its subdirectories are real directories inside it, not links.
    pub fn inlines_children(&self) -> bool {
        self.depth >= INLINE_DEPTH
    }

    /// Its object's name.
    pub fn object(&self) -> String {
        hex(&self.hash[..16])
    }
}

/// The directories of a manifest with their object names.
#[derive(Debug)]
pub struct Tree {
    /// Directories, in manifest order.
    pub dirs: Vec<Dir>,
    /// For each manifest entry, its index in `dirs` (`u32::MAX` for files).
    dir_index: Vec<u32>,
}

impl Tree {
    /// Names every directory of `manifest` under `salt`.
    pub fn new(manifest: &Manifest, salt: &str) -> Tree {
        let c = &manifest.contents;
        let entries = &c.entries;
        let mut dirs = vec![];
        let mut dir_index = vec![u32::MAX; entries.len()];
        let mut by_path = std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.kind == Kind::Dir {
                dir_index[i] = dirs.len() as u32;
                by_path.insert(e.path.as_str(), dirs.len());
                dirs.push(Dir {
                    entry: i,
                    depth: e.path.matches('/').count(),
                    children: vec![],
                    hash: [0; 32],
                });
            }
        }
        // Entries are sorted by path, so siblings arrive in name order.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.path.rsplit_once('/')
                && let Some(&d) = by_path.get(parent)
            {
                dirs[d].children.push(i);
            }
        }
        drop(by_path);
        let mut order: Vec<usize> = (0..dirs.len()).collect();
        order.sort_by_key(|&d| std::cmp::Reverse(dirs[d].depth));
        let owner = c.owner.as_deref().unwrap_or("-");
        let mut line = Vec::with_capacity(256);
        for d in order {
            let layout = if dirs[d].inlines_children() {
                "inline"
            } else {
                "links"
            };
            let mut h = Sha256::new();
            h.update(format!(
                "attune-store 1\0{}\0{owner}\0{salt}\0{layout}\n",
                c.mtime
            ));
            for &child in &dirs[d].children {
                // `f\0<name>\0<mode>\0<sha256>\n` or `d\0<name>\0<hash>\n`,
                // built in one buffer: this runs for every entry of every publish.
                let e = &entries[child];
                line.clear();
                line.extend_from_slice(if e.kind == Kind::File { b"f\0" } else { b"d\0" });
                line.extend_from_slice(base_name(&e.path).as_bytes());
                line.push(0);
                match e.kind {
                    Kind::File => {
                        e.mode.write_to(&mut line);
                        line.push(0);
                        match &e.sha256 {
                            Some(sha) => sha.write_hex(&mut line),
                            None => line.push(b'-'),
                        }
                    }
                    Kind::Dir => {
                        Sha256Digest(dirs[dir_index[child] as usize].hash).write_hex(&mut line)
                    }
                }
                line.push(b'\n');
                h.update(&line);
            }
            dirs[d].hash = h.finalize().into();
        }
        Tree { dirs, dir_index }
    }

    /// The directory of manifest entry `entry`.
    pub fn dir(&self, entry: usize) -> &Dir {
        &self.dirs[self.dir_index[entry] as usize]
    }

    /// The packs (top-level directories) with their objects' names.
    pub fn packs<'a>(&'a self, manifest: &'a Manifest) -> impl Iterator<Item = (&'a str, String)> {
        self.dirs
            .iter()
            .filter(|d| d.depth == 0)
            .map(|d| (manifest.contents.entries[d.entry].path.as_str(), d.object()))
    }

    /// Every object this tree reaches, sorted.
    pub fn objects(&self) -> BTreeSet<String> {
        self.dirs
            .iter()
            .filter(|d| d.is_object())
            .map(Dir::object)
            .collect()
    }
}

/// The last component of a `/`-separated path.
pub fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// Writes `.attune-objects`: the header with the salt, then one name a line.
pub fn objects_file_bytes(salt: &str, objects: &BTreeSet<String>) -> Vec<u8> {
    let mut s = format!(
        "{OBJECTS_HEADER} {}\n",
        if salt.is_empty() { "-" } else { salt }
    );
    for o in objects {
        s.push_str(o);
        s.push('\n');
    }
    s.into_bytes()
}

/// Reads a generation's `.attune-objects`: its salt and its objects.
pub fn read_objects_file(generation: &Path) -> io::Result<(String, Vec<String>)> {
    let text = fs::read_to_string(generation.join(OBJECTS_NAME))?;
    let mut lines = text.lines();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an objects list");
    let salt = lines
        .next()
        .and_then(|l| l.strip_prefix(OBJECTS_HEADER))
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(bad)?;
    let salt = if salt == "-" { "" } else { salt }.to_string();
    let objects: Vec<String> = lines.map(str::to_string).collect();
    if !objects.iter().all(|o| is_object_name(o)) {
        return Err(bad());
    }
    Ok((salt, objects))
}

/// The objects some generation of `vol` reaches (kept or current, committed or not).
///
/// Each generation's list is read; a generation without one is walked through
/// its links (a format-1 generation has none: it is a tree of its own).
pub fn reachable(vol: &Volume) -> Result<HashSet<String>, Error> {
    let mut all = HashSet::new();
    for (name, link) in vol.root_entries()? {
        if classify(&name, link) != Some(RootEntry::Generation) {
            continue;
        }
        let dir = vol.root.join(&name);
        match read_objects_file(&dir) {
            Ok((_, objects)) => all.extend(objects),
            Err(e) => {
                tracing::debug!(generation = %name, "no objects list ({e}); walking its links");
                walk_links(&vol.root, &dir, &mut all)?;
            }
        }
    }
    Ok(all)
}

/// Adds the objects reachable through the links in `dir` (a generation or an object).
fn walk_links(root: &Path, dir: &Path, seen: &mut HashSet<String>) -> Result<(), Error> {
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
        let Some(name) = target.to_str().map(base_name).filter(|n| is_object_name(n)) else {
            continue;
        };
        if seen.insert(name.to_string()) {
            walk_links(root, &root.join(STORE_DIR).join(name), seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::manifest::fixtures::{contents, dir, file};

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest::new(contents(entries))
    }

    fn names(m: &Manifest, salt: &str) -> Vec<(String, String)> {
        let t = Tree::new(m, salt);
        t.dirs
            .iter()
            .map(|d| (m.contents.entries[d.entry].path.clone(), d.object()))
            .collect()
    }

    #[test]
    fn a_change_renames_only_the_directories_above_it() {
        let base = vec![
            dir("p"),
            dir("p/a"),
            file("p/a/x", "1"),
            dir("p/b"),
            file("p/b/y", "2"),
            dir("p/b-c"),
            file("p/b-c/z", "3"),
        ];
        let before = names(&manifest(base.clone()), "");
        let mut changed = base.clone();
        changed[4] = file("p/b/y", "9");
        let after = names(&manifest(changed), "");
        let differ: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0.as_str())
            .collect();
        assert_eq!(differ, ["p", "p/b"]);
        assert!(before.iter().all(|(_, n)| is_object_name(n)));
        // A salt renames everything; equal directories share a name.
        let salted = names(&manifest(base.clone()), "s");
        assert!(before.iter().zip(&salted).all(|(a, b)| a.1 != b.1));
        let twins = names(
            &manifest(vec![
                dir("p"),
                dir("p/a"),
                file("p/a/x", "1"),
                dir("q"),
                dir("q/a"),
                file("q/a/x", "1"),
            ]),
            "",
        );
        assert_eq!(twins[1].1, twins[3].1);
    }

    #[test]
    fn deep_directories_are_inlined_into_one_object() {
        let mut entries = vec![];
        let mut path = "p".to_string();
        for _ in 0..=INLINE_DEPTH + 3 {
            entries.push(dir(&path));
            path.push_str("/d");
        }
        entries.push(file(&format!("{path}/f"), "1"));
        let m = manifest(entries);
        let t = Tree::new(&m, "");
        let objects = t.dirs.iter().filter(|d| d.is_object()).count();
        assert_eq!(objects, INLINE_DEPTH + 1);
        assert_eq!(t.objects().len(), INLINE_DEPTH + 1);
        assert!(
            t.dirs
                .iter()
                .filter(|d| d.inlines_children())
                .all(|d| d.depth >= INLINE_DEPTH)
        );
    }

    #[test]
    fn objects_list_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let objects: BTreeSet<String> = ["0".repeat(32), "a".repeat(32)].into();
        fs::write(
            tmp.path().join(OBJECTS_NAME),
            objects_file_bytes("salt", &objects),
        )
        .unwrap();
        let (salt, back) = read_objects_file(tmp.path()).unwrap();
        assert_eq!((salt.as_str(), back.len()), ("salt", 2));
        fs::write(
            tmp.path().join(OBJECTS_NAME),
            "attune-objects 1 -\n../etc\n",
        )
        .unwrap();
        assert!(read_objects_file(tmp.path()).is_err());
    }
}
