//! Publishing a plan into a volume, as numbered steps (like Kubernetes'
//! `AtomicWriter.Write()`): one decision (up to date, reuse a kept generation,
//! or write a new one), then prepare, write, commit and collect. See
//! [`crate::store`] for the layout and the crate documentation for why a kill
//! at any moment is safe.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::{Audit, How, audit_files, audit_pack};
use crate::error::{Error, IoContext};
use crate::fsops::{self, Seal};
use crate::hash::Sha256Digest;
use crate::manifest::{Entry, EntryReader, MANIFEST_NAME, MODE_DIR, MODE_FILE, Manifest};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::scan::Kind;
use crate::staging::{ObjectJob, Source, write_objects};
use crate::stamps::{Record, Stamps};
use crate::store::{
    OBJECTS_NAME, Objects, PackTree, SEQUENCE_NAME, link_target, object_id, objects_bytes,
    pack_trees, read_objects, sequence_bytes,
};
use crate::volume::{
    DATA_LINK, RootEntry, STAMPS_NAME, STORE_DIR, Volume, VolumeLock, classify, exists,
    generation_id_of, generation_name, tmp_name,
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
    /// Compute the difference only; write nothing.
    pub dry_run: bool,
    /// Publish a fresh copy of every file even when the root hash is unchanged
    /// (nothing is reused or hard-linked from what is published).
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
    /// Nothing was written: the volume already held this root hash, confirmed.
    pub up_to_date: bool,
    /// A kept older generation with this root hash was made current again.
    pub reused: bool,
    /// The difference to the previous generation.
    #[serde(flatten)]
    pub diff: Diff,
    /// Files of new objects hard-linked from confirmed published files.
    pub hardlinked: usize,
    /// Files of new objects copied from the inputs.
    pub copied: usize,
    /// Pack objects written to the store.
    pub objects_written: usize,
    /// Pack objects reused whole (unchanged packs).
    pub objects_shared: usize,
    /// Published files read again because their stamp had moved.
    pub rehashed: usize,
    /// Published entries found damaged (and repaired from the inputs).
    pub repaired: Vec<String>,
    /// Old generations removed (beyond `--keep`) and leftovers of interrupted runs.
    pub removed_generations: Vec<String>,
    /// Objects removed from the store (no kept generation reached them).
    pub removed_objects: usize,
}

/// The decision of step 4.
enum Decision {
    UpToDate,
    Reuse(String),
    Write(String),
}

/// Where each pack of the new generation comes from.
enum PackChoice {
    /// An object the store holds, confirmed whole.
    Reuse(String),
    /// A new object.
    New,
}

/// Publishes `plan` into `vol`, whose lock the caller holds (`None` only for a dry run).
pub fn publish(
    vol: &Volume,
    lock: Option<&VolumeLock>,
    plan: &Plan,
    opts: &Options,
    progress: &Progress,
) -> Result<Outcome, Error> {
    assert!(
        opts.dry_run || lock.is_some(),
        "publishing without the volume lock"
    );
    let started = std::time::Instant::now();
    let phase = |name: &str| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "publish: {name} done"
        )
    };
    let manifest = &plan.manifest;
    let entries = &manifest.contents.entries;
    let packs = pack_trees(manifest);
    let store = vol.root.join(STORE_DIR);
    let current = if vol.root.exists() {
        vol.current()?
    } else {
        None
    };
    let mut out = Outcome {
        generation: generation_name(manifest.generation_id()),
        previous: current.clone(),
        ..Outcome::default()
    };

    // (1) Entries in the root that this tool did not write are refused unless
    // --adopt (a volume filled by copying); upstream's sentinel is not one.
    let unmanaged = unmanaged(vol)?;
    if !unmanaged.is_empty() && !opts.adopt {
        return Err(Error::Environment(format!(
            "{} holds entries that packs-assemble did not write: {}. It looks like a volume filled by copying; \
             recreate the volume, or pass --adopt to delete them",
            vol.root.display(),
            unmanaged.join(", ")
        )));
    }

    // (2) Leftovers of interrupted runs go, on every run: under the lock they
    // are dead, and nothing of theirs is ever trusted.
    if !opts.dry_run {
        out.removed_generations
            .extend(crate::gc::sweep_leftovers(vol)?);
    }

    // (3) The current generation: its manifest, its objects, the difference.
    let cur_dir = current.as_ref().map(|c| vol.root.join(c));
    let same_manifest = cur_dir
        .as_ref()
        .is_some_and(|d| manifest.matches_file(&d.join(MANIFEST_NAME)));
    // The current generation has this root hash (it may still be damaged).
    let same_id = current
        .as_deref()
        .and_then(|c| generation_id_of(c.trim_start_matches("..")))
        == Some(manifest.generation_id());
    let cur_objects: BTreeMap<String, String> = match cur_dir.as_deref().map(read_objects) {
        Some(Ok(Objects::Packs(m))) => m,
        _ => BTreeMap::new(),
    };
    let linkable = if same_manifest {
        vec![false; entries.len()]
    } else {
        let previous = cur_dir.as_ref().map(|d| d.join(MANIFEST_NAME));
        let (d, linkable) = diff(previous.as_deref(), manifest, !opts.force)?;
        out.diff = d;
        linkable
    };
    phase("read the current generation");
    if opts.dry_run {
        out.up_to_date = same_manifest;
        if same_manifest {
            out.generation = current.unwrap_or_default();
        }
        return Ok(out);
    }

    // (4) Confirm what this run would trust (nothing under --force): each pack
    // whose object is unchanged, whole; of each changed pack, the files that
    // would be hard-linked. Then the one decision.
    let stamps = Stamps::load(&vol.root.join(STAMPS_NAME));
    let mut trust = Trust::new(&store, manifest, &stamps);
    let mut choices: Vec<PackChoice> = vec![];
    for p in &packs {
        let choice = match cur_objects.get(&p.name) {
            _ if opts.force => PackChoice::New,
            Some(o) if object_id(o) == p.id => {
                if trust.pack(o, p)? {
                    PackChoice::Reuse(o.clone())
                } else {
                    PackChoice::New
                }
            }
            Some(o) => {
                let files: Vec<usize> = p.below.clone().filter(|&i| linkable[i]).collect();
                trust.files(o, &files)?;
                PackChoice::New
            }
            None => PackChoice::New,
        };
        choices.push(choice);
    }
    out.rehashed = trust.audit.rehashed;
    out.repaired = trust
        .audit
        .damaged
        .iter()
        .map(|(i, why)| {
            tracing::warn!(path = %entries[*i].path, "published entry is damaged: {why}; repairing it from the inputs");
            entries[*i].path.clone()
        })
        .collect();
    let all_reused = choices.iter().all(|c| matches!(c, PackChoice::Reuse(_)));
    let gen_ok = cur_dir
        .as_ref()
        .is_some_and(|d| generation_links_ok(d, &packs, &choices));
    let decision = if same_manifest && all_reused && gen_ok && !opts.force {
        Decision::UpToDate
    } else if opts.force {
        Decision::Write(free_generation_name(current.as_deref(), &out.generation))
    } else {
        let target = vol.root.join(&out.generation);
        match kept_generation(&target, manifest, &packs, &mut trust)? {
            Some(objects) if Some(&out.generation) != current.as_ref() => {
                for (c, o) in choices.iter_mut().zip(objects) {
                    *c = PackChoice::Reuse(o);
                }
                Decision::Reuse(out.generation.clone())
            }
            _ => Decision::Write(free_generation_name(current.as_deref(), &out.generation)),
        }
    };
    phase("confirm and decide");

    if let Decision::UpToDate = decision {
        out.up_to_date = true;
        out.generation = current.clone().unwrap_or_default();
        for name in &unmanaged {
            crate::gc::remove(vol, name)?; // --adopt
        }
        // Links an interrupted run left wrong (each call changes only those).
        add_links(vol, &packs)?;
        drop_stale_links(vol, &packs)?;
        if trust.audit.rehashed + trust.audit.relisted > 0 {
            save_stamps(vol, trust.records())?;
        }
        return Ok(out);
    }

    // (5) Prepare: make room. What this publish's garbage collection would
    // remove goes first (a complete generation never committed among them),
    // then every object no remaining generation links to (among them any that
    // an interrupted run renamed into place but never flushed).
    let mut spare: Vec<&str> = current.iter().map(String::as_str).collect();
    if let Decision::Reuse(name) = &decision {
        spare.push(name);
    }
    let target = match &decision {
        Decision::Reuse(n) | Decision::Write(n) => n.clone(),
        Decision::UpToDate => unreachable!(),
    };
    if let Decision::Write(name) = &decision
        && exists(&vol.root.join(name))
    {
        // An incomplete or damaged kept generation with this name: rewritten.
        crate::gc::remove(vol, name)?;
        out.removed_generations.push(name.clone());
    }
    // A current generation with this manifest but damaged is removed after
    // the commit, so it does not count among the kept ones.
    let others = match same_id {
        true => opts.keep.saturating_sub(1),
        false => opts.keep.saturating_sub(2),
    };
    out.removed_generations
        .extend(crate::gc::collect_generations(vol, &spare, others)?);
    out.removed_objects += crate::gc::sweep_objects(vol)?;
    phase("prepare");

    // (6) Write the pack objects the generation lacks.
    let seal = Seal::new(manifest.contents.mtime, manifest.contents.owner.as_deref());
    let mut objects: BTreeMap<String, String> = BTreeMap::new();
    let mut new_objects: Vec<usize> = vec![];
    let mut link_sources = HashSet::new();
    if let Decision::Write(_) = decision {
        let alive: HashSet<String> = crate::gc::store_entries(vol)?.into_iter().collect();
        let sources;
        (sources, link_sources) = trust.sources(&packs, &choices, plan, &alive);
        let mut jobs = vec![];
        for (k, (p, c)) in packs.iter().zip(&choices).enumerate() {
            match c {
                PackChoice::Reuse(o) => {
                    objects.insert(p.name.clone(), o.clone());
                }
                PackChoice::New => {
                    let name = free_object_name(&store, &p.id);
                    let stage = plan.stage.as_ref().and_then(|s| s.root(&p.name));
                    jobs.push(ObjectJob {
                        pack: p,
                        name: name.clone(),
                        tmp: stage
                            .map_or_else(|| store.join(tmp_name("object")), Path::to_path_buf),
                        staged: stage.is_some(),
                    });
                    objects.insert(p.name.clone(), name);
                    new_objects.push(k);
                }
            }
        }
        if !jobs.is_empty() && !exists(&store) {
            fsops::create_dir(&store)?;
        }
        let link = |k: usize| trust.path_of(k);
        let written = write_objects(
            &store, entries, &jobs, &sources, &link, plan, &seal, progress,
        )?;
        out.hardlinked = written.hardlinked;
        out.copied = written.copied;
        out.objects_written = jobs.len();
        out.objects_shared = packs.len() - jobs.len();
        phase("write objects");

        // (7) Write the generation: manifest, objects list, one link per pack;
        // flush the filesystem; rename it into place.
        write_generation(vol, manifest, &objects, &target, opts.sync, &seal)?;
        phase("write the generation");
    } else {
        out.reused = true;
        out.objects_shared = packs.len();
        for (p, c) in packs.iter().zip(&choices) {
            if let PackChoice::Reuse(o) = c {
                objects.insert(p.name.clone(), o.clone());
            }
        }
        // It becomes the newest: its sequence number is the next one, so that
        // `rollback` goes back to the generation current before it.
        let dir = vol.root.join(&target);
        fsops::write_atomic(
            &dir.join(SEQUENCE_NAME),
            &dir.join(tmp_name("sequence")),
            &sequence_bytes(crate::gc::next_sequence(vol)?),
            Some((&seal, MODE_FILE)),
        )?;
        tracing::info!(generation = %target, "a kept generation has this root hash; making it current again");
    }

    // (8) Commit: links for new packs first (dangling until the swap), then
    // `..data` is replaced by rename(2), then links of packs that are gone go.
    // (--adopt: what a copy left goes first, each entry by one rename, so
    // that the pack links can take its place.)
    for name in &unmanaged {
        crate::gc::remove(vol, name)?;
    }
    commit(vol, &target, &packs)?;
    out.generation = target.clone();
    phase("commit");

    // (9) Collect garbage: a damaged former current generation, generations
    // beyond --keep, and the objects no remaining generation links to.
    if let Some(c) = &current
        && same_id
        && *c != target
    {
        crate::gc::remove(vol, c)?;
        out.removed_generations.push(c.clone());
    }
    out.removed_generations
        .extend(crate::gc::collect_generations(
            vol,
            &[&target],
            opts.keep.saturating_sub(1),
        )?);
    out.removed_objects += crate::gc::sweep_objects(vol)?;
    phase("collect garbage");

    // (10) Record the stamps of what is now published: links and unlinks above
    // moved the ctimes of shared inodes, so those are stat'ed again.
    let mut records = trust.refreshed(&objects, &packs, &link_sources)?;
    drop(trust);
    drop(stamps);
    for &k in &new_objects {
        let p = &packs[k];
        let dir = store.join(&objects[&p.name]);
        let a = audit_pack(&dir, manifest, p, &Stamps::default(), How::Record)?;
        records.extend(a.confirmed.into_iter().map(|(_, r)| r));
    }
    save_stamps(vol, records)?;
    phase("record stamps");
    Ok(out)
}

/// Makes generation `name` (complete, in the root) current: links for its new
/// packs (dangling until the swap), the swap of `..data`, then the removal of
/// links to packs it does not hold.
pub fn commit(vol: &Volume, name: &str, packs: &[PackTree]) -> Result<(), Error> {
    add_links(vol, packs)?;
    fsops::replace_link(
        name,
        &vol.root.join(tmp_name("data")),
        &vol.root.join(DATA_LINK),
    )?;
    fsops::sync_dir(&vol.root)?;
    drop_stale_links(vol, packs)
}

/// Confirmations of this run, shared by the decisions that need them.
struct Trust<'a> {
    store: &'a Path,
    manifest: &'a Manifest,
    stamps: &'a Stamps,
    /// The objects audited, by index.
    names: Vec<String>,
    /// Object name -> whether it was confirmed whole.
    whole: HashMap<String, bool>,
    /// Every confirmed entry: (object index, entry index, record); a few
    /// dozen bytes each, so that 100,000 of them stay small.
    confirmed: Vec<(u32, u32, Record)>,
    /// What was found, counted (and the damage).
    audit: Audit,
}

impl<'a> Trust<'a> {
    fn new(store: &'a Path, manifest: &'a Manifest, stamps: &'a Stamps) -> Trust<'a> {
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
        self.confirmed.reserve_exact(a.confirmed.len());
        self.confirmed
            .extend(a.confirmed.into_iter().map(|(i, r)| (o, i as u32, r)));
        self.audit.rehashed += a.rehashed;
        self.audit.relisted += a.relisted;
        self.audit.damaged.extend(a.damaged);
        ok
    }

    /// The records confirmed.
    fn records(&self) -> Vec<Record> {
        self.confirmed.iter().map(|(_, _, r)| *r).collect()
    }

    /// The path of confirmed entry `k`.
    fn path_of(&self, k: usize) -> PathBuf {
        let (o, i, _) = &self.confirmed[k];
        self.store
            .join(&self.names[*o as usize])
            .join(&self.manifest.contents.entries[*i as usize].path)
    }

    /// Whether object `o` holds pack `p` exactly (audited once per object).
    fn pack(&mut self, o: &str, p: &PackTree) -> Result<bool, Error> {
        if let Some(ok) = self.whole.get(o) {
            return Ok(*ok);
        }
        let a = audit_pack(
            &self.store.join(o),
            self.manifest,
            p,
            self.stamps,
            How::Confirm,
        )?;
        let ok = self.take(o, a);
        self.whole.insert(o.to_string(), ok);
        Ok(ok)
    }

    /// Confirms `files` (entries of the new manifest) at their paths in object `o`.
    fn files(&mut self, o: &str, files: &[usize]) -> Result<(), Error> {
        if files.is_empty() {
            return Ok(());
        }
        let a = audit_files(
            &self.store.join(o),
            self.manifest,
            files,
            self.stamps,
            How::Confirm,
        )?;
        self.take(o, a);
        Ok(())
    }

    /// Where each file of the new objects comes from: a confirmed published
    /// file with the same contents and mode (at the same path first), the
    /// stage, another new file with the same contents, or the inputs. Also
    /// which confirmed entries are link sources (their ctime moves).
    fn sources(
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
    fn refreshed(
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
fn kept_generation(
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
fn generation_links_ok(dir: &Path, packs: &[PackTree], choices: &[PackChoice]) -> bool {
    let objects: Option<Vec<String>> = choices
        .iter()
        .map(|c| match c {
            PackChoice::Reuse(o) => Some(o.clone()),
            PackChoice::New => None,
        })
        .collect();
    objects.is_some_and(|o| generation_entries(dir, packs, &o).is_ok())
}

/// `name`, or `name-<n>` for the first `n` free (another copy of the same
/// contents, beside a damaged one that is still current).
fn free_generation_name(current: Option<&str>, name: &str) -> String {
    let mut candidate = name.to_string();
    let mut n = 1;
    while current == Some(candidate.as_str()) {
        n += 1;
        candidate = format!("{name}-{n}");
    }
    candidate
}

/// `id`, or `id-<n>` for the first `n` free in the store.
fn free_object_name(store: &Path, id: &str) -> String {
    let mut candidate = id.to_string();
    let mut n = 1;
    while exists(&store.join(&candidate)) {
        n += 1;
        candidate = format!("{id}-{n}");
    }
    candidate
}

/// Writes the generation `name`: under a temporary name, the manifest, the
/// objects list and one link per pack, sealed; the filesystem flushed (unless
/// told not to); then renamed into place.
fn write_generation(
    vol: &Volume,
    manifest: &Manifest,
    objects: &BTreeMap<String, String>,
    name: &str,
    sync: bool,
    seal: &Seal,
) -> Result<(), Error> {
    let tmp = vol.root.join(tmp_name("generation"));
    fsops::create_dir(&tmp)?;
    fsops::write_new(&tmp.join(MANIFEST_NAME), seal, MODE_FILE, |w| {
        manifest.write_to(w)
    })?;
    fsops::write_new(&tmp.join(OBJECTS_NAME), seal, MODE_FILE, |w| {
        std::io::Write::write_all(w, &objects_bytes(objects))
    })?;
    let sequence = sequence_bytes(crate::gc::next_sequence(vol)?);
    fsops::write_new(&tmp.join(SEQUENCE_NAME), seal, MODE_FILE, |w| {
        std::io::Write::write_all(w, &sequence)
    })?;
    for (pack, object) in objects {
        let link = tmp.join(pack);
        fsops::symlink(&link_target(pack, object), &link)?;
        seal.link(&link)?;
    }
    seal.path(&tmp, MODE_DIR)?;
    if sync {
        fsops::sync_fs(&tmp)?;
    }
    fsops::rename(&tmp, &vol.root.join(name))
}

/// Names in the root that this tool did not write (and that are not upstream's sentinel).
fn unmanaged(vol: &Volume) -> Result<Vec<String>, Error> {
    if !vol.root.exists() {
        return Ok(vec![]);
    }
    Ok(vol
        .root_entries()?
        .into_iter()
        .filter(|(n, link)| classify(n, *link).is_none())
        .map(|(n, _)| n)
        .collect())
}

/// The names that should be links in the root: one per pack, and the manifest.
fn link_names(packs: &[PackTree]) -> Vec<String> {
    packs
        .iter()
        .map(|p| p.name.clone())
        .chain([MANIFEST_NAME.to_string()])
        .collect()
}

/// Points `<pack>` and the manifest link through `..data`, atomically each.
fn add_links(vol: &Volume, packs: &[PackTree]) -> Result<(), Error> {
    for name in link_names(packs) {
        let path = vol.root.join(&name);
        let target = format!("{DATA_LINK}/{name}");
        if std::fs::read_link(&path).ok().as_deref() == Some(Path::new(&target)) {
            continue;
        }
        fsops::replace_link(&target, &vol.root.join(tmp_name("link")), &path)?;
    }
    Ok(())
}

/// Removes links of packs the current generation does not hold.
fn drop_stale_links(vol: &Volume, packs: &[PackTree]) -> Result<(), Error> {
    let wanted = link_names(packs);
    for (name, link) in vol.root_entries()? {
        if classify(&name, link) == Some(RootEntry::Link) && !wanted.contains(&name) {
            fsops::remove_file(&vol.root.join(&name))?;
        }
    }
    Ok(())
}

/// Writes the stamps record (unless it already holds exactly these records).
pub(crate) fn save_stamps(vol: &Volume, records: Vec<Record>) -> Result<(), Error> {
    let path = vol.root.join(STAMPS_NAME);
    let bytes = Stamps::bytes(records);
    if crate::volume::read_bookkeeping(&path, crate::volume::BOOKKEEPING_LIMIT).as_ref()
        == Some(&bytes)
    {
        return Ok(());
    }
    fsops::write_atomic(&path, &vol.root.join(tmp_name("stamps")), &bytes, None)
}

/// The difference between the previous manifest (read as a stream) and the
/// new one, and for each new entry whether the previous generation holds the
/// same file (contents, mode, mtime and owner) at the same path, so that it
/// can be hard-linked from there once confirmed (`link` false: never).
fn diff(previous: Option<&Path>, new: &Manifest, link: bool) -> Result<(Diff, Vec<bool>), Error> {
    let entries = &new.contents.entries;
    let mut d = Diff::default();
    let mut linkable = vec![false; entries.len()];
    let Some(path) = previous else {
        d.added = files(entries.iter()).map(|e| e.path.clone()).collect();
        return Ok((d, linkable));
    };
    // A manifest damaged anywhere (its header, or cut short) is a missing one:
    // every file is published afresh from the inputs, nothing linked from it.
    let afresh = |why: String| {
        tracing::warn!(
            "the previous generation's manifest {} is damaged ({why}); publishing every file afresh from the inputs",
            path.display()
        );
        let d = Diff {
            added: files(entries.iter()).map(|e| e.path.clone()).collect(),
            ..Diff::default()
        };
        (d, vec![false; entries.len()])
    };
    let (old, mtime, owner) = match EntryReader::open(path) {
        Ok(r) => r,
        Err(e) => return Ok(afresh(e.to_string())),
    };
    // Hard links share the inode, so its mtime and owner must match too.
    let link = link && mtime == new.contents.mtime && owner == new.contents.owner;
    let mut old = old.peekable();
    let mut next_old = |until: Option<&str>, d: &mut Diff| -> Result<Option<Entry>, String> {
        // Entries of the old manifest before `until` were removed.
        while let Some(item) = old.peek() {
            let e = item.as_ref().map_err(|e| e.to_string())?;
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
        let prev = match next_old(Some(&e.path), &mut d) {
            Ok(p) => p,
            Err(why) => return Ok(afresh(why)),
        };
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
    if let Err(why) = next_old(None, &mut d) {
        return Ok(afresh(why));
    }
    d.removed.sort();
    Ok((d, linkable))
}

fn files<'a>(entries: impl Iterator<Item = &'a Entry>) -> impl Iterator<Item = &'a Entry> {
    entries.filter(|e| e.kind == Kind::File)
}
