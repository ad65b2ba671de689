//! Publishing a plan into a volume, as numbered steps (like Kubernetes'
//! `AtomicWriter.Write()`): one decision (up to date, reuse a kept generation,
//! or write a new one), then prepare, write, commit and collect. See
//! [`crate::store`] for the layout and the crate documentation for why a kill
//! at any moment is safe.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::audit::{How, audit_pack};
use crate::error::Error;
use crate::fsops::{self, Seal};
use crate::manifest::{Entry, EntryReader, MANIFEST_NAME, MODE_DIR, MODE_FILE, Manifest};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::scan::Kind;
use crate::staging::{ObjectJob, write_objects};
use crate::stamps::{Record, Stamps};
use crate::store::{
    OBJECTS_NAME, Objects, PackTree, SEQUENCE_NAME, link_target, object_id, objects_bytes,
    pack_trees, read_objects, sequence_bytes,
};
use crate::trust::{Early, PackChoice, Trust, generation_links_ok, kept_generation};
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
    /// The current generation is this manifest, every entry confirmed.
    UpToDate,
    /// A kept generation is this manifest, confirmed: it becomes current.
    Reuse(String),
    /// A new generation, of this name.
    Write(String),
}

/// Publishes `plan` into `vol`, whose lock the caller holds (`None` only for a
/// dry run): one call per step, each step's why at its definition.
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
    publish_with(vol, lock, plan, opts, progress, None)
}

/// [`publish`], taking the confirmations of the current generation made
/// while the plan was made ([`Early`]); they are used only when the current
/// generation and its manifest are still the ones audited and the plan's.
pub(crate) fn publish_with(
    vol: &Volume,
    lock: Option<&VolumeLock>,
    plan: &Plan,
    opts: &Options,
    progress: &Progress,
    early: Option<Early>,
) -> Result<Outcome, Error> {
    assert!(
        opts.dry_run || lock.is_some(),
        "publishing without the volume lock"
    );
    let mut run = Publish::new(vol, plan, opts, progress)?;
    run.early = early;
    run.refuse_unmanaged()?; // (1)
    run.sweep_leftovers()?; // (2)
    run.read_current()?; // (3)
    if opts.dry_run {
        return Ok(run.dry_run());
    }
    let decision = run.confirm_and_decide()?; // (4)
    if let Decision::UpToDate = decision {
        return run.touch_up(); // (4') nothing published: links and stamps only
    }
    run.prepare(&decision)?; // (5)
    run.write_objects(&decision)?; // (6)
    run.write_generation(&decision)?; // (7)
    run.commit(&decision)?; // (8)
    run.collect_garbage()?; // (9)
    run.record_stamps() // (10)
}

/// One publish in progress: what the steps learn and hand on.
struct Publish<'a> {
    vol: &'a Volume,
    plan: &'a Plan,
    opts: &'a Options,
    progress: &'a Progress,
    started: std::time::Instant,
    /// One per pack of the new manifest.
    packs: Vec<PackTree>,
    store: PathBuf,
    /// The current generation's name, if any.
    current: Option<String>,
    /// Root entries this tool did not write (removed only under --adopt).
    unmanaged: Vec<String>,
    /// The current generation's manifest is this one, byte for byte.
    same_manifest: bool,
    /// The current generation has this root hash (it may still be damaged).
    same_id: bool,
    /// The current generation's objects, by pack.
    cur_objects: BTreeMap<String, String>,
    /// Whether each new entry is the same file as the current generation's at its path.
    linkable: Vec<bool>,
    trust: Trust<'a>,
    /// Confirmations made while the plan was made, for step (4).
    early: Option<Early>,
    /// Where each pack comes from, after step (4).
    choices: Vec<PackChoice>,
    /// Pack -> object of the new generation, after step (6).
    objects: BTreeMap<String, String>,
    /// Packs whose objects step (6) wrote.
    new_objects: Vec<usize>,
    /// Confirmed entries that new objects hard-link (their ctime moves).
    link_sources: HashSet<usize>,
    seal: Seal,
    out: Outcome,
}

impl<'a> Publish<'a> {
    fn new(
        vol: &'a Volume,
        plan: &'a Plan,
        opts: &'a Options,
        progress: &'a Progress,
    ) -> Result<Publish<'a>, Error> {
        let manifest = &plan.manifest;
        let store = vol.root.join(STORE_DIR);
        let current = if vol.root.exists() {
            vol.current()?
        } else {
            None
        };
        Ok(Publish {
            vol,
            plan,
            opts,
            progress,
            started: std::time::Instant::now(),
            packs: pack_trees(manifest),
            trust: Trust::new(store.clone(), manifest, Stamps::default()),
            early: None,
            store,
            out: Outcome {
                generation: generation_name(manifest.generation_id()),
                previous: current.clone(),
                ..Outcome::default()
            },
            current,
            unmanaged: vec![],
            same_manifest: false,
            same_id: false,
            cur_objects: BTreeMap::new(),
            linkable: vec![],
            choices: vec![],
            objects: BTreeMap::new(),
            new_objects: vec![],
            link_sources: HashSet::new(),
            seal: Seal::new(manifest.contents.mtime, manifest.contents.owner.as_deref()),
        })
    }

    fn phase(&self, name: &str) {
        tracing::debug!(
            elapsed_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "publish: {name} done"
        );
    }

    fn manifest(&self) -> &'a Manifest {
        &self.plan.manifest
    }

    /// (1) Entries in the root that this tool did not write are refused unless
    /// --adopt (a volume filled by copying); upstream's sentinel is not one.
    fn refuse_unmanaged(&mut self) -> Result<(), Error> {
        self.unmanaged = unmanaged(self.vol)?;
        if !self.unmanaged.is_empty() && !self.opts.adopt {
            return Err(Error::Environment(format!(
                "{} holds entries that packs-assemble did not write: {}. It looks like a volume filled by copying; \
                 recreate the volume, or pass --adopt to delete them",
                self.vol.root.display(),
                self.unmanaged.join(", ")
            )));
        }
        Ok(())
    }

    /// (2) Leftovers of interrupted runs go, on every run: under the lock they
    /// are dead, and nothing of theirs is ever trusted.
    fn sweep_leftovers(&mut self) -> Result<(), Error> {
        if !self.opts.dry_run {
            let swept = crate::gc::sweep_leftovers(self.vol)?;
            self.out.removed_generations.extend(swept);
        }
        Ok(())
    }

    /// (3) The current generation: its manifest, its objects, the difference.
    fn read_current(&mut self) -> Result<(), Error> {
        let manifest = self.manifest();
        let cur_dir = self.current.as_ref().map(|c| self.vol.root.join(c));
        self.same_manifest = cur_dir
            .as_ref()
            .is_some_and(|d| manifest.matches_file(&d.join(MANIFEST_NAME)));
        self.same_id = self
            .current
            .as_deref()
            .and_then(|c| generation_id_of(c.trim_start_matches("..")))
            == Some(manifest.generation_id());
        if let Some(Ok(Objects::Packs(m))) = cur_dir.as_deref().map(read_objects) {
            self.cur_objects = m;
        }
        let entries = manifest.contents.entries.len();
        self.linkable = if self.same_manifest {
            vec![false; entries]
        } else {
            let previous = cur_dir.as_ref().map(|d| d.join(MANIFEST_NAME));
            let (d, linkable) = diff(previous.as_deref(), manifest, !self.opts.force)?;
            self.out.diff = d;
            linkable
        };
        self.phase("read the current generation");
        Ok(())
    }

    /// What a dry run reports: the difference, and whether it is up to date
    /// (by the manifest alone: nothing is confirmed).
    fn dry_run(mut self) -> Outcome {
        self.out.up_to_date = self.same_manifest;
        if self.same_manifest {
            self.out.generation = self.current.unwrap_or_default();
        }
        self.out
    }

    /// (4) Confirms what this run would trust (nothing under --force): each
    /// pack whose object is unchanged, whole; of each changed pack, the files
    /// that would be hard-linked. Then the one decision.
    fn confirm_and_decide(&mut self) -> Result<Decision, Error> {
        let manifest = self.manifest();
        let entries = &manifest.contents.entries;
        // Confirmations made during the plan stand when they were made of
        // this very manifest in the generation still current (the lock is
        // held throughout); otherwise everything is confirmed here.
        let early = self.early.take().filter(|e| {
            self.same_manifest && !self.opts.force && e.matches(self.current.as_deref(), manifest)
        });
        self.trust = match early {
            Some(e) => Trust::from_early(self.store.clone(), manifest, e),
            None => Trust::new(
                self.store.clone(),
                manifest,
                Stamps::load(&self.vol.root.join(STAMPS_NAME)),
            ),
        };
        for p in &self.packs {
            let choice = match self.cur_objects.get(&p.name) {
                _ if self.opts.force => PackChoice::New,
                Some(o) if object_id(o) == p.id => {
                    if self.trust.pack(o, p)? {
                        PackChoice::Reuse(o.clone())
                    } else {
                        PackChoice::New
                    }
                }
                Some(o) => {
                    let files: Vec<usize> = p.below.clone().filter(|&i| self.linkable[i]).collect();
                    self.trust.files(o, &files)?;
                    PackChoice::New
                }
                None => PackChoice::New,
            };
            self.choices.push(choice);
        }
        self.out.rehashed = self.trust.audit.rehashed;
        self.out.repaired = self
            .trust
            .audit
            .damaged
            .iter()
            .map(|(i, why)| {
                tracing::warn!(path = %entries[*i].path, "published entry is damaged: {why}; repairing it from the inputs");
                entries[*i].path.clone()
            })
            .collect();
        let all_reused = self
            .choices
            .iter()
            .all(|c| matches!(c, PackChoice::Reuse(_)));
        let gen_ok = self.current.as_ref().is_some_and(|c| {
            generation_links_ok(&self.vol.root.join(c), &self.packs, &self.choices)
        });
        let current = self.current.as_deref();
        let decision = if self.same_manifest && all_reused && gen_ok && !self.opts.force {
            Decision::UpToDate
        } else if self.opts.force {
            Decision::Write(free_generation_name(current, &self.out.generation))
        } else {
            let target = self.vol.root.join(&self.out.generation);
            match kept_generation(&target, manifest, &self.packs, &mut self.trust)? {
                Some(objects) if Some(&self.out.generation) != self.current.as_ref() => {
                    for (c, o) in self.choices.iter_mut().zip(objects) {
                        *c = PackChoice::Reuse(o);
                    }
                    Decision::Reuse(self.out.generation.clone())
                }
                _ => Decision::Write(free_generation_name(current, &self.out.generation)),
            }
        };
        self.phase("confirm and decide");
        Ok(decision)
    }

    /// (4') Up to date: nothing is published. What --adopt removes goes, links
    /// an interrupted run left wrong are made right (each call changes only
    /// those), and the stamps of files read again are recorded.
    fn touch_up(mut self) -> Result<Outcome, Error> {
        self.out.up_to_date = true;
        self.out.generation = self.current.clone().unwrap_or_default();
        for name in &self.unmanaged {
            crate::gc::remove(self.vol, name)?; // --adopt
        }
        add_links(self.vol, &self.packs)?;
        drop_stale_links(self.vol, &self.packs)?;
        if self.trust.audit.rehashed + self.trust.audit.relisted > 0 {
            save_stamps(self.vol, self.trust.records())?;
        }
        Ok(self.out)
    }

    /// (5) Prepare: make room. What this publish's garbage collection would
    /// remove goes first (a complete generation never committed among them),
    /// then every object no remaining generation links to (among them any
    /// that an interrupted run renamed into place but never flushed).
    fn prepare(&mut self, decision: &Decision) -> Result<(), Error> {
        let mut spare: Vec<&str> = self.current.iter().map(String::as_str).collect();
        match decision {
            Decision::Reuse(name) => spare.push(name),
            Decision::Write(name) if exists(&self.vol.root.join(name)) => {
                // An incomplete or damaged kept generation with this name: rewritten.
                crate::gc::remove(self.vol, name)?;
                self.out.removed_generations.push(name.clone());
            }
            _ => {}
        }
        // A current generation with this manifest but damaged is removed
        // after the commit, so it does not count among the kept ones.
        let others = match self.same_id {
            true => self.opts.keep.saturating_sub(1),
            false => self.opts.keep.saturating_sub(2),
        };
        let removed = crate::gc::collect_generations(self.vol, &spare, others)?;
        self.out.removed_generations.extend(removed);
        self.out.removed_objects += crate::gc::sweep_objects(self.vol)?;
        self.phase("prepare");
        Ok(())
    }

    /// (6) Writes the pack objects the generation lacks (none when a kept
    /// generation is reused): each under a temporary name, renamed when whole.
    fn write_objects(&mut self, decision: &Decision) -> Result<(), Error> {
        let reuse = matches!(decision, Decision::Reuse(_));
        for (k, (p, c)) in self.packs.iter().zip(&self.choices).enumerate() {
            let object = match c {
                PackChoice::Reuse(o) => o.clone(),
                PackChoice::New if reuse => unreachable!("a kept generation reuses every object"),
                PackChoice::New => {
                    self.new_objects.push(k);
                    free_object_name(&self.store, &p.id)
                }
            };
            self.objects.insert(p.name.clone(), object);
        }
        self.out.objects_written = self.new_objects.len();
        self.out.objects_shared = self.packs.len() - self.new_objects.len();
        if reuse {
            self.out.reused = true;
            return Ok(());
        }
        let alive: HashSet<String> = crate::gc::store_entries(self.vol)?.into_iter().collect();
        let sources;
        (sources, self.link_sources) =
            self.trust
                .sources(&self.packs, &self.choices, self.plan, &alive);
        let jobs: Vec<ObjectJob> = self
            .new_objects
            .iter()
            .map(|&k| {
                let p = &self.packs[k];
                let stage = self.plan.stage.as_ref().and_then(|s| s.root(&p.name));
                ObjectJob {
                    pack: p,
                    name: self.objects[&p.name].clone(),
                    tmp: stage
                        .map_or_else(|| self.store.join(tmp_name("object")), Path::to_path_buf),
                    staged: stage.is_some(),
                }
            })
            .collect();
        if !jobs.is_empty() && !exists(&self.store) {
            fsops::create_dir(&self.store)?;
        }
        let link = |k: usize| self.trust.path_of(k);
        let written = write_objects(
            &self.store,
            &self.manifest().contents.entries,
            &jobs,
            &sources,
            &link,
            self.plan,
            &self.seal,
            self.progress,
        )?;
        self.out.hardlinked = written.hardlinked;
        self.out.copied = written.copied;
        self.phase("write objects");
        Ok(())
    }

    /// (7) Writes the generation: manifest, objects list, one link per pack,
    /// flushed and renamed into place. A kept generation reused instead gets
    /// the next sequence number, so that `rollback` goes back to the
    /// generation current before it.
    fn write_generation(&mut self, decision: &Decision) -> Result<(), Error> {
        match decision {
            Decision::Write(name) => write_generation(
                self.vol,
                self.manifest(),
                &self.objects,
                name,
                self.opts.sync,
                &self.seal,
            )?,
            Decision::Reuse(name) => {
                let dir = self.vol.root.join(name);
                fsops::write_atomic(
                    &dir.join(SEQUENCE_NAME),
                    &dir.join(tmp_name("sequence")),
                    &sequence_bytes(crate::gc::next_sequence(self.vol)?),
                    Some((&self.seal, MODE_FILE)),
                )?;
                tracing::info!(generation = %name, "a kept generation has this root hash; making it current again");
            }
            Decision::UpToDate => unreachable!("step (4') handles an up-to-date volume"),
        }
        self.phase("write the generation");
        Ok(())
    }

    /// (8) Commit: links for new packs first (dangling until the swap), then
    /// `..data` is replaced by rename(2), then links of packs that are gone
    /// go. (--adopt: what a copy left goes first, each entry by one rename, so
    /// that the pack links can take its place.)
    fn commit(&mut self, decision: &Decision) -> Result<(), Error> {
        let (Decision::Reuse(target) | Decision::Write(target)) = decision else {
            unreachable!("step (4') handles an up-to-date volume");
        };
        for name in &self.unmanaged {
            crate::gc::remove(self.vol, name)?;
        }
        commit(self.vol, target, &self.packs)?;
        self.out.generation = target.clone();
        self.phase("commit");
        Ok(())
    }

    /// (9) Collects garbage: a damaged former current generation, generations
    /// beyond --keep, and the objects no remaining generation links to.
    fn collect_garbage(&mut self) -> Result<(), Error> {
        let target = &self.out.generation;
        if let Some(c) = &self.current
            && self.same_id
            && c != target
        {
            crate::gc::remove(self.vol, c)?;
            self.out.removed_generations.push(c.clone());
        }
        let keep = self.opts.keep.saturating_sub(1);
        let removed = crate::gc::collect_generations(self.vol, &[target], keep)?;
        self.out.removed_generations.extend(removed);
        self.out.removed_objects += crate::gc::sweep_objects(self.vol)?;
        self.phase("collect garbage");
        Ok(())
    }

    /// (10) Records the stamps of what is now published: links and unlinks
    /// above moved the ctimes of shared inodes, so those are stat'ed again;
    /// the new objects' files are stat'ed (never recorded unread).
    fn record_stamps(mut self) -> Result<Outcome, Error> {
        let manifest = self.manifest();
        // The confirmations and the stamps read go before the new objects
        // are stat'ed (at 100,000 files each is several MB).
        let trust = std::mem::replace(
            &mut self.trust,
            Trust::new(self.store.clone(), manifest, Stamps::default()),
        );
        let mut records = trust.refreshed(&self.objects, &self.packs, &self.link_sources)?;
        drop(trust);
        for &k in &self.new_objects {
            let p = &self.packs[k];
            let dir = self.store.join(&self.objects[&p.name]);
            let a = audit_pack(&dir, manifest, p, &Stamps::default(), How::Record)?;
            let these = a.confirmed.into_iter().map(|(_, r)| r);
            if records.is_empty() {
                records = these.collect(); // in place: never held twice
            } else {
                records.reserve_exact(these.len());
                records.extend(these);
            }
        }
        save_stamps(self.vol, records)?;
        self.phase("record stamps");
        Ok(self.out)
    }
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
    if crate::bookkeeping::read_bookkeeping(&path, crate::bookkeeping::BOOKKEEPING_LIMIT).as_ref()
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
