//! The store `..store/`: pack objects that generations share, each named by
//! a hash of the pack's whole tree, and each generation's list of the objects
//! it links to.
//!
//! ```text
//! ..<gen>/<pack> -> ../..store/<obj>/<pack>   one link per pack
//! ..<gen>/.attune-objects                      `<pack> <obj>` a line
//! ..store/<obj>/<pack>/...                     the pack: real directories and
//!                                              regular files, nothing else
//! ```
//!
//! The canonical path of `VOL/<pack>` is `VOL/..store/<obj>/<pack>`: it ends
//! in `/<pack>`, and below it a reader crosses no link, as in a `cp -a` copy.
//! An object's name is the first 128 bits of SHA-256 over the pack's entries
//! (paths relative to the pack, types, modes, content hashes) and the mtime
//! and owner every inode carries, so an unchanged pack keeps its object. A
//! second copy of the same tree (the first one damaged) is named `<hash>-<n>`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, hex};
use crate::scan::Kind;
use crate::volume::{STORE_DIR, generation_id_of};

/// The list of objects a generation links to, inside the generation.
pub const OBJECTS_NAME: &str = ".attune-objects";
/// A generation's sequence number: `attune-sequence 1`, then the number, one
/// more than any other generation's when it was written or made current
/// again by a publish. Generations are ordered by it, never by a timestamp.
pub const SEQUENCE_NAME: &str = ".attune-sequence";
const SEQUENCE_HEADER: &str = "attune-sequence 1";

/// The bytes of a sequence file holding `n`.
pub fn sequence_bytes(n: u64) -> Vec<u8> {
    format!("{SEQUENCE_HEADER}\n{n}\n").into_bytes()
}

/// The sequence number of the generation at `dir`; 0 when it has none (a
/// generation of an earlier version) or it is damaged or not a regular file.
pub fn read_sequence(dir: &Path) -> u64 {
    crate::bookkeeping::read_bookkeeping(&dir.join(SEQUENCE_NAME), 64)
        .and_then(|b| {
            let text = String::from_utf8(b).ok()?;
            let n = text.strip_prefix(SEQUENCE_HEADER)?.trim();
            n.parse().ok()
        })
        .unwrap_or(0)
}

/// First line of a generation's objects list: `<pack> <object>` lines follow.
const OBJECTS_HEADER: &str = "attune-objects 2";
/// First word of the objects list of the previous layout (directory objects,
/// format-2 manifests): object names follow.
const LEGACY_HEADER: &str = "attune-objects 1";

/// Whether `name` can be an object's name: 32 lowercase hex digits, with `-<n>`
/// for a further copy of the same tree.
pub fn is_object_name(name: &str) -> bool {
    generation_id_of(name).is_some() && !name.bytes().any(|b| b.is_ascii_uppercase())
}

/// The tree hash an object name stands for (its first 32 digits).
pub fn object_id(name: &str) -> &str {
    &name[..32.min(name.len())]
}

/// One pack of a manifest: its entries and its tree hash.
#[derive(Clone, Debug)]
pub struct PackTree {
    /// The pack's name (its top-level directory).
    pub name: String,
    /// The index of the pack's own directory entry.
    pub root: usize,
    /// The indices of the entries below it (contiguous: they share `<pack>/`).
    pub below: Range<usize>,
    /// 32 hex digits over the whole tree (the object's name, without `-<n>`).
    pub id: String,
}

impl PackTree {
    /// The indices of all its entries: the pack directory, then the rest in order.
    pub fn entries(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.root).chain(self.below.clone())
    }
}

/// The packs of `manifest` with their tree hashes, sorted by name.
pub fn pack_trees(manifest: &Manifest) -> Vec<PackTree> {
    let c = &manifest.contents;
    let entries = &c.entries;
    let owner = c.owner.as_deref().unwrap_or("-");
    let mut out = vec![];
    let mut line = Vec::with_capacity(256);
    for (root, e) in entries.iter().enumerate() {
        if e.kind != Kind::Dir || e.path.contains('/') {
            continue;
        }
        let prefix = format!("{}/", e.path);
        let start = entries.partition_point(|x| x.path.as_str() < prefix.as_str());
        let end = start + entries[start..].partition_point(|x| x.path.starts_with(&prefix));
        let mut h = Sha256::new();
        h.update(format!(
            "attune-pack-object 3\0{}\0{}\0{owner}\n",
            e.path, c.mtime
        ));
        for i in std::iter::once(root).chain(start..end) {
            let x = &entries[i];
            line.clear();
            line.extend_from_slice(if x.kind == Kind::File { b"f\0" } else { b"d\0" });
            line.extend_from_slice(&x.path.as_bytes()[e.path.len()..]);
            line.push(0);
            x.mode.write_to(&mut line);
            line.push(0);
            if let Some(sha) = &x.sha256 {
                sha.write_hex(&mut line);
            }
            line.push(b'\n');
            h.update(&line);
        }
        out.push(PackTree {
            name: e.path.clone(),
            root,
            below: start..end,
            id: hex(&h.finalize()[..16]),
        });
    }
    out
}

/// The last component of a `/`-separated path.
pub fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// The link a generation holds for `pack` in `object`, relative to the generation.
pub fn link_target(pack: &str, object: &str) -> String {
    format!("../{STORE_DIR}/{object}/{pack}")
}

/// The object a generation's link for `pack` names, if it is one of ours.
pub fn object_of_link<'a>(target: &'a str, pack: &str) -> Option<&'a str> {
    let rest = target.strip_prefix("../")?.strip_prefix(STORE_DIR)?;
    let obj = rest
        .strip_prefix('/')?
        .strip_suffix(pack)?
        .strip_suffix('/')?;
    is_object_name(obj).then_some(obj)
}

/// What a generation's objects list says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Objects {
    /// This layout: each pack's object.
    Packs(BTreeMap<String, String>),
    /// The previous layout's directory objects (never reused, only kept
    /// alive until their generation goes).
    Legacy(Vec<String>),
}

impl Objects {
    /// Every object named.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Objects::Packs(m) => m.values().map(String::as_str).collect(),
            Objects::Legacy(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The bytes of a generation's objects list.
pub fn objects_bytes(packs: &BTreeMap<String, String>) -> Vec<u8> {
    let mut s = format!("{OBJECTS_HEADER}\n");
    for (pack, obj) in packs {
        s.push_str(&format!("{pack} {obj}\n"));
    }
    s.into_bytes()
}

/// Reads the objects list of the generation at `dir`.
pub fn read_objects(dir: &Path) -> io::Result<Objects> {
    let text = fs::read_to_string(dir.join(OBJECTS_NAME))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an objects list");
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(bad)?;
    if header == OBJECTS_HEADER {
        let mut packs = BTreeMap::new();
        for l in lines {
            let (pack, obj) = l.split_once(' ').ok_or_else(bad)?;
            if !is_object_name(obj) || !attune_pack::is_pack_ref(pack) {
                return Err(bad());
            }
            packs.insert(pack.to_string(), obj.to_string());
        }
        return Ok(Objects::Packs(packs));
    }
    if header.starts_with(LEGACY_HEADER) {
        let names: Vec<String> = lines.map(str::to_string).collect();
        if names.iter().all(|o| o.len() == 32 && is_object_name(o)) {
            return Ok(Objects::Legacy(names));
        }
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::manifest::fixtures::{contents, dir, file};

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest::new(contents(entries))
    }

    #[test]
    fn a_change_renames_only_its_pack_and_packs_do_not_interleave() {
        // `core-x` sorts between `core` and `core/...`.
        let base = vec![
            dir("core"),
            file("core/a", "1"),
            dir("core-x"),
            file("core-x/b", "2"),
        ];
        let before = pack_trees(&manifest(base.clone()));
        assert_eq!(before.len(), 2);
        let core = &before[0];
        assert_eq!(core.name, "core");
        let m = manifest(base.clone());
        let paths: Vec<&str> = core
            .entries()
            .map(|i| m.contents.entries[i].path.as_str())
            .collect();
        assert_eq!(paths, ["core", "core/a"]);
        let mut changed = base.clone();
        changed[3] = file("core-x/b", "9");
        let after = pack_trees(&manifest(changed));
        assert_eq!(before[0].id, after[0].id);
        assert_ne!(before[1].id, after[1].id);
        assert!(is_object_name(&before[0].id));
        // The same tree under another pack name is another object.
        let other = pack_trees(&manifest(vec![dir("zz"), file("zz/a", "1")]));
        assert_ne!(other[0].id, before[0].id);
    }

    #[test]
    fn objects_list_round_trips_and_links_parse() {
        let tmp = tempfile::tempdir().unwrap();
        let packs: BTreeMap<String, String> = [("core".to_string(), "a".repeat(32))].into();
        fs::write(tmp.path().join(OBJECTS_NAME), objects_bytes(&packs)).unwrap();
        assert_eq!(read_objects(tmp.path()).unwrap(), Objects::Packs(packs));
        fs::write(
            tmp.path().join(OBJECTS_NAME),
            format!("attune-objects 1 salt\n{}\n", "b".repeat(32)),
        )
        .unwrap();
        assert_eq!(
            read_objects(tmp.path()).unwrap(),
            Objects::Legacy(vec!["b".repeat(32)])
        );
        fs::write(
            tmp.path().join(OBJECTS_NAME),
            "attune-objects 2\ncore ../etc\n",
        )
        .unwrap();
        assert!(read_objects(tmp.path()).is_err());
        let obj = format!("{}-2", "c".repeat(32));
        let t = link_target("core", &obj);
        assert_eq!(t, format!("../..store/{obj}/core"));
        assert_eq!(object_of_link(&t, "core"), Some(obj.as_str()));
        assert_eq!(object_of_link(&t, "other"), None);
        assert_eq!(object_id(&obj), "c".repeat(32));
    }
}
