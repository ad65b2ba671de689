//! What a publish trusts of the volume, and why: the confirmations of the
//! current and kept generations' objects (each entry against its recorded
//! stamp, or read again), and where each file of a new object comes from.
//! Nothing published is reused, linked from or served as up to date unless
//! it was confirmed here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::audit::{Audit, How, audit_files, audit_pack};
use crate::error::{Error, IoContext};
use crate::hash::Sha256Digest;
use crate::manifest::{MANIFEST_NAME, Manifest};
use crate::plan::Plan;
use crate::scan::Kind;
use crate::staging::Source;
use crate::stamps::{Record, Stamps};
use crate::store::{
    OBJECTS_NAME, Objects, PackTree, SEQUENCE_NAME, link_target, object_id, read_objects,
};

/// Where each pack of the new generation comes from.
pub(crate) enum PackChoice {
    /// An object the store holds, confirmed whole.
    Reuse(String),
    /// A new object.
    New,
}

/// Confirmations of this run, shared by the decisions that need them.
pub(crate) struct Trust<'a> {
    store: PathBuf,
    manifest: &'a Manifest,
    stamps: Stamps,
    /// The objects audited, by index.
    names: Vec<String>,
    /// Object name -> whether it was confirmed whole.
    whole: HashMap<String, bool>,
    /// Every confirmed entry: (object index, entry index, record); a few
    /// dozen bytes each, so that 100,000 of them stay small.
    confirmed: Vec<(u32, u32, Record)>,
    /// What was found, counted (and the damage).
    pub(crate) audit: Audit,
}

impl<'a> Trust<'a> {
    pub(crate) fn new(store: PathBuf, manifest: &'a Manifest, stamps: Stamps) -> Trust<'a> {
        Trust {
            store,
            manifest,
            stamps,
            names: vec![],
            whole: HashMap::new(),
            confirmed: vec![],
            audit: Audit::default(),
        }
    }

    fn take(&mut self, object: &str, a: Audit) -> bool {
        let ok = a.damaged.is_empty();
        let o = self.names.len() as u32;
        self.names.push(object.to_string());
        let these = a.confirmed.into_iter().map(|(i, r)| (o, i as u32, r));
        if self.confirmed.is_empty() {
            // Collected in place (the same size of item): never held twice.
            self.confirmed = these.collect();
        } else {
            self.confirmed.reserve_exact(these.len());
            self.confirmed.extend(these);
        }
        self.audit.rehashed += a.rehashed;
        self.audit.relisted += a.relisted;
        self.audit.damaged.extend(a.damaged);
        ok
    }

    /// The records confirmed.
    pub(crate) fn records(&self) -> Vec<Record> {
        self.confirmed.iter().map(|(_, _, r)| *r).collect()
    }

    /// The path of confirmed entry `k`.
    pub(crate) fn path_of(&self, k: usize) -> PathBuf {
        let (o, i, _) = &self.confirmed[k];
        self.store
            .join(&self.names[*o as usize])
            .join(&self.manifest.contents.entries[*i as usize].path)
    }

    /// Whether object `o` holds pack `p` exactly (audited once per object).
    pub(crate) fn pack(&mut self, o: &str, p: &PackTree) -> Result<bool, Error> {
        if let Some(ok) = self.whole.get(o) {
            return Ok(*ok);
        }
        let a = audit_pack(
            &self.store.join(o),
            self.manifest,
            p,
            &self.stamps,
            How::Confirm,
        )?;
        let ok = self.take(o, a);
        self.whole.insert(o.to_string(), ok);
        Ok(ok)
    }

    /// Confirms `files` (entries of the new manifest) at their paths in object `o`.
    pub(crate) fn files(&mut self, o: &str, files: &[usize]) -> Result<(), Error> {
        if files.is_empty() {
            return Ok(());
        }
        let a = audit_files(
            &self.store.join(o),
            self.manifest,
            files,
            &self.stamps,
            How::Confirm,
        )?;
        self.take(o, a);
        Ok(())
    }

    /// Where each file of the new objects comes from: a confirmed published
    /// file with the same contents and mode (at the same path first), the
    /// stage, another new file with the same contents, or the inputs. Also
    /// which confirmed entries are link sources (their ctime moves).
    pub(crate) fn sources(
        &self,
        packs: &[PackTree],
        choices: &[PackChoice],
        plan: &Plan,
        alive: &HashSet<String>,
    ) -> (Vec<(usize, Source)>, HashSet<usize>) {
        let entries = &self.manifest.contents.entries;
        let key = |i: usize| {
            (
                entries[i].sha256.unwrap_or_default(),
                entries[i].mode_bits(),
            )
        };
        // Objects of generations that step (5) removed are gone.
        let usable: Vec<bool> = self.names.iter().map(|n| alive.contains(n)).collect();
        let mut same_path = vec![u32::MAX; entries.len()];
        for (k, (o, i, _)) in self.confirmed.iter().enumerate() {
            let i = *i as usize;
            if entries[i].kind == Kind::File && usable[*o as usize] && same_path[i] == u32::MAX {
                same_path[i] = k as u32;
            }
        }
        let new_files = || {
            packs
                .iter()
                .zip(choices)
                .filter(|(_, c)| matches!(c, PackChoice::New))
                .flat_map(|(p, _)| p.below.clone())
                .filter(|&i| entries[i].kind == Kind::File)
        };
        // Contents wanted by files with no confirmed file at their path.
        let wanted: HashSet<(Sha256Digest, u32)> = new_files()
            .filter(|&i| !plan.staged(i) && same_path[i] == u32::MAX)
            .map(key)
            .collect();
        let mut by_content: HashMap<(Sha256Digest, u32), usize> = HashMap::new();
        if !wanted.is_empty() {
            for (k, (o, i, _)) in self.confirmed.iter().enumerate() {
                let i = *i as usize;
                if entries[i].kind == Kind::File && usable[*o as usize] && wanted.contains(&key(i))
                {
                    by_content.entry(key(i)).or_insert(k);
                }
            }
        }
        let mut used = HashSet::new();
        let mut first_copy: HashMap<(Sha256Digest, u32), usize> = HashMap::new();
        let mut out = vec![];
        for i in new_files() {
            let s = if plan.staged(i) {
                // Copied while hashed; a repeat of an earlier file is
                // replaced by a link to it.
                match first_copy.get(&key(i)) {
                    Some(&of) => Source::Same(of),
                    None => {
                        first_copy.insert(key(i), i);
                        Source::Staged
                    }
                }
            } else if let Some(k) = (same_path[i] != u32::MAX)
                .then_some(same_path[i] as usize)
                .or_else(|| by_content.get(&key(i)).copied())
            {
                used.insert(k);
                Source::Link(k)
            } else if let Some(&of) = first_copy.get(&key(i)) {
                Source::Same(of)
            } else {
                first_copy.insert(key(i), i);
                Source::Copy
            };
            out.push((i, s));
        }
        (out, used)
    }

    /// The records of the reused objects, with the entries whose inode another
    /// object shares (a link or unlink of this run may have moved its ctime)
    /// stat'ed again.
    pub(crate) fn refreshed(
        &self,
        objects: &BTreeMap<String, String>,
        packs: &[PackTree],
        link_sources: &HashSet<usize>,
    ) -> Result<Vec<Record>, Error> {
        let entries = &self.manifest.contents.entries;
        let reused: HashSet<&str> = packs
            .iter()
            .filter_map(|p| objects.get(&p.name))
            .map(String::as_str)
            .filter(|o| self.whole.get(*o) == Some(&true))
            .collect();
        let items: Vec<usize> = (0..self.confirmed.len())
            .filter(|&k| reused.contains(self.names[self.confirmed[k].0 as usize].as_str()))
            .collect();
        crate::parallel::try_map(&items, |&k| {
            let (_, i, r) = &self.confirmed[k];
            let touched = entries[*i as usize].kind == Kind::File
                && (r.nlink > 1 || link_sources.contains(&k));
            if !touched {
                return Ok(*r);
            }
            let path = self.path_of(k);
            let st = crate::scan::Stamp::read(&path).ctx("read", &path)?;
            // A ctime that moved since the contents were confirmed is not
            // settled: whatever moved it may have changed them too.
            Ok(Record {
                ctime_ns: st.ctime_ns,
                settled: r.settled && st.ctime_ns == r.ctime_ns,
                ..*r
            })
        })
    }
}

/// The objects of the kept generation at `dir` when it holds exactly this
/// manifest and each pack's object is confirmed whole; `None` otherwise.
pub(crate) fn kept_generation(
    dir: &Path,
    manifest: &Manifest,
    packs: &[PackTree],
    trust: &mut Trust,
) -> Result<Option<Vec<String>>, Error> {
    if !dir.is_dir() || !manifest.matches_file(&dir.join(MANIFEST_NAME)) {
        return Ok(None);
    }
    let Ok(Objects::Packs(map)) = read_objects(dir) else {
        return Ok(None);
    };
    let mut out = vec![];
    for p in packs {
        let Some(o) = map.get(&p.name).filter(|o| object_id(o) == p.id) else {
            return Ok(None);
        };
        if !trust.pack(o, p)? {
            return Ok(None);
        }
        out.push(o.clone());
    }
    Ok((map.len() == packs.len() && generation_entries(dir, packs, &out).is_ok()).then_some(out))
}

/// Confirms a kept generation's own entries, for reuse and for `rollback`
/// alike: it holds its manifest and objects list (regular files) and one link
/// per pack, each naming exactly the object chosen for it
/// (`../..store/<obj>/<pack>`), and nothing else. The reason otherwise.
pub(crate) fn generation_entries(
    dir: &Path,
    packs: &[PackTree],
    objects: &[String],
) -> Result<(), String> {
    let mut want: BTreeMap<String, Option<String>> = [MANIFEST_NAME, OBJECTS_NAME]
        .into_iter()
        .map(|n| (n.to_string(), None))
        .collect();
    // Its sequence number (generations of earlier versions have none).
    if crate::volume::exists(&dir.join(SEQUENCE_NAME)) {
        want.insert(SEQUENCE_NAME.to_string(), None);
    }
    for (p, o) in packs.iter().zip(objects) {
        want.insert(p.name.clone(), Some(link_target(&p.name, o)));
    }
    let listing = std::fs::read_dir(dir).map_err(|e| format!("cannot be listed ({e})"))?;
    let mut seen = 0;
    for entry in listing {
        let entry = entry.map_err(|e| format!("cannot be listed ({e})"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry
            .file_type()
            .map_err(|e| format!("{name}: cannot be read ({e})"))?;
        match want.get(&name) {
            None => return Err(format!("{name}: is not part of a generation")),
            Some(None) if !kind.is_file() => {
                return Err(format!("{name}: is a {kind:?}, not a regular file"));
            }
            Some(Some(target)) => {
                let got = std::fs::read_link(entry.path())
                    .map_err(|e| format!("{name}: is not a link ({e})"))?;
                if got != Path::new(target) {
                    return Err(format!(
                        "{name}: links to {}, not to its object {target}",
                        got.display()
                    ));
                }
            }
            Some(None) => {}
        }
        seen += 1;
    }
    if seen != want.len() {
        return Err("is missing entries (its manifest, objects list or a pack link)".into());
    }
    Ok(())
}

/// Whether the generation at `dir` links each pack to the object chosen for it.
pub(crate) fn generation_links_ok(dir: &Path, packs: &[PackTree], choices: &[PackChoice]) -> bool {
    let objects: Option<Vec<String>> = choices
        .iter()
        .map(|c| match c {
            PackChoice::Reuse(o) => Some(o.clone()),
            PackChoice::New => None,
        })
        .collect();
    objects.is_some_and(|o| generation_entries(dir, packs, &o).is_ok())
}

/// Confirmations of the current generation's objects made while the inputs
/// are still being planned (the audit by stat depends on the volume alone):
/// made against the manifest the current generation holds, they stand for
/// the plan's only when that manifest is the plan's (see [`Early::matches`]).
/// The largest manifest (bytes) audited early: about 25,000 entries.
const EARLY_MANIFEST_LIMIT: u64 = 4 << 20;

#[derive(Debug)]
pub(crate) struct Early {
    /// The generation audited.
    generation: String,
    /// The root hash of the entries audited, computed from them.
    root_hash: String,
    stamps: Stamps,
    names: Vec<String>,
    whole: HashMap<String, bool>,
    confirmed: Vec<(u32, u32, Record)>,
    audit: Audit,
}

impl Early {
    /// Audits, under the caller's lock, every object of the current
    /// generation of `vol` that holds its pack's tree, against the
    /// generation's own manifest; `None` when there is no current generation
    /// or anything about it does not read (the publish then confirms
    /// everything itself, as without this).
    pub(crate) fn confirm_current(vol: &crate::volume::Volume) -> Option<Early> {
        let generation = vol.current().ok()??;
        let dir = vol.root.join(&generation);
        let path = dir.join(MANIFEST_NAME);
        // The early audit holds a second manifest while the plan builds its
        // own: worth it where the manifest is small and the audit a large
        // share of the run (many packs of small files); at 100,000 entries
        // it would cost ~30 MiB of peak RSS, so there the publish audits.
        if std::fs::symlink_metadata(&path).ok()?.len() > EARLY_MANIFEST_LIMIT {
            return None;
        }
        let manifest = Manifest::read(&path).ok()?;
        // The entries audited are these, whatever the file's own root hash says.
        let root_hash = crate::manifest::root_hash(&manifest.contents);
        let Ok(Objects::Packs(objects)) = read_objects(&dir) else {
            return None;
        };
        let stamps = Stamps::load(&vol.root.join(crate::volume::STAMPS_NAME));
        let mut trust = Trust::new(vol.root.join(crate::volume::STORE_DIR), &manifest, stamps);
        for p in crate::store::pack_trees(&manifest) {
            if let Some(o) = objects.get(&p.name).filter(|o| object_id(o) == p.id) {
                trust.pack(o, &p).ok()?;
            }
        }
        let Trust {
            stamps,
            names,
            whole,
            confirmed,
            audit,
            ..
        } = trust;
        Some(Early {
            generation,
            root_hash,
            stamps,
            names,
            whole,
            confirmed,
            audit,
        })
    }

    /// Whether these confirmations stand for `manifest`: the generation
    /// audited is still `current`, and the entries audited are `manifest`'s
    /// (the same root hash, so the same entries at the same indices).
    pub(crate) fn matches(&self, current: Option<&str>, manifest: &Manifest) -> bool {
        current == Some(self.generation.as_str()) && self.root_hash == manifest.root_hash
    }
}

impl<'a> Trust<'a> {
    /// The confirmations of `early` (which [`Early::matches`] `manifest`),
    /// as this run's.
    pub(crate) fn from_early(store: PathBuf, manifest: &'a Manifest, early: Early) -> Trust<'a> {
        Trust {
            store,
            manifest,
            stamps: early.stamps,
            names: early.names,
            whole: early.whole,
            confirmed: early.confirmed,
            audit: early.audit,
        }
    }
}
