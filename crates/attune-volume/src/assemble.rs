//! One assemble run, the whole volume lifecycle: create the volume if it is
//! missing, take its lock, plan from the inputs (with the hash cache and the
//! validation facts the volume keeps), publish, and save the caches. A plan
//! with errors publishes nothing and leaves no trace of a volume this run
//! created. `check` plans without a volume.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::fsops;
use crate::hash::HashCache;
use crate::plan::{Inputs, Plan, plan};
use crate::progress::Progress;
use crate::publish::{self, Outcome};
use crate::trust::Early;
use crate::volume::{CACHE_NAME, FACTS_NAME, LOCK_NAME, STORE_DIR, Volume, exists, tmp_name};

/// What to assemble, and where.
#[derive(Clone, Debug)]
pub struct Request {
    /// The inputs (`stage` is set here, for a cold volume).
    pub inputs: Inputs,
    /// The volume.
    pub volume: PathBuf,
    /// How long to wait for another publisher's lock.
    pub lock_timeout: Duration,
    /// Warnings are errors.
    pub strict: bool,
    /// How to publish (`dry_run`: nothing is written, not even the volume).
    pub publish: publish::Options,
}

/// What an assemble run did.
#[derive(Debug)]
pub struct Assembled {
    /// The plan: the manifest and the diagnostics of the inputs.
    pub plan: Plan,
    /// What publishing did; `None` when the plan had errors (nothing published).
    pub outcome: Option<Outcome>,
    /// YAML files parsed (the others' validation facts were cached).
    pub yaml_parsed: usize,
}

/// Runs one assemble: see the module doc. The lock is held from before the
/// first byte is written into the volume (staged copies included) until the
/// caches are saved.
pub fn assemble(req: &Request, progress: &Progress) -> Result<Assembled, Error> {
    let scan_started = crate::stamps::now_ns();
    let dry_run = req.publish.dry_run;
    let vol = Volume::new(&req.volume);
    let created = !dry_run && !exists(&vol.root);
    let lock = if dry_run {
        None
    } else {
        if created {
            fsops::create_dir_all(&vol.root)?;
        }
        Some(vol.lock(req.lock_timeout)?)
    };
    // Into a cold volume every file is copied: copy each as it is hashed.
    let cold = lock.is_some() && vol.current()?.is_none();
    let inputs = Inputs {
        stage: cold.then(|| vol.root.join(STORE_DIR)),
        ..req.inputs.clone()
    };
    let cache = HashCache::load(&vol.root.join(CACHE_NAME));
    let mut facts = crate::facts::load(&vol.root);
    let facts_loaded = facts.len();
    // The audit of the current generation by stat depends on the volume
    // alone: it runs beside the plan, under the lock, and its confirmations
    // are used only if the plan's manifest turns out to be the one audited.
    let audit_early = lock.is_some() && !cold && !req.publish.force;
    let (plan, early) = std::thread::scope(|s| {
        let early = audit_early.then(|| s.spawn(|| Early::confirm_current(&vol)));
        let plan = plan(&inputs, &cache, &mut facts, progress);
        let early = early.and_then(|h| h.join().ok()).flatten();
        (plan, early)
    });
    let mut plan = plan?;
    if req.strict {
        plan.diagnostics.promote_warnings();
    }
    let yaml_parsed = facts.parsed();
    if plan.diagnostics.has_errors() {
        // Nothing is published: a volume this run created goes again.
        if let Some(stage) = plan.stage.take() {
            stage.discard()?;
        }
        drop(lock);
        if created {
            let _ = fsops::remove_dir(&vol.root.join(STORE_DIR));
            let _ = fsops::remove_file(&vol.root.join(LOCK_NAME));
            let _ = fsops::remove_dir(&vol.root);
        }
        return Ok(Assembled {
            plan,
            outcome: None,
            yaml_parsed,
        });
    }
    let outcome = publish::publish_with(&vol, lock.as_ref(), &plan, &req.publish, progress, early)?;
    if !dry_run {
        save_hash_cache(&vol, &plan, scan_started)?;
        if crate::facts::changed(&facts, facts_loaded) {
            fsops::write_atomic(
                &vol.root.join(FACTS_NAME),
                &vol.root.join(tmp_name("facts")),
                &crate::facts::bytes(&facts),
                None,
            )?;
        }
    }
    Ok(Assembled {
        plan,
        outcome: Some(outcome),
        yaml_parsed,
    })
}

/// `check`: plans `inputs` without a volume (no cache, no facts, nothing
/// written); the plan holds the diagnostics.
pub fn check(inputs: &Inputs, strict: bool) -> Result<Plan, Error> {
    let mut plan = plan(
        inputs,
        &HashCache::default(),
        &mut attune_pack::LoadCache::new(),
        &Progress::hidden(),
    )?;
    if strict {
        plan.diagnostics.promote_warnings();
    }
    Ok(plan)
}

/// Saves the hash cache when it changed: when a file it will now hold had to
/// be read (files changed within the racy window are read, never cached), or
/// one it held disappeared.
fn save_hash_cache(vol: &Volume, plan: &Plan, scan_started: i64) -> Result<(), Error> {
    let stale = plan.cache_unmatched
        || plan
            .hashed
            .iter()
            .any(|&i| !crate::hash::is_racy(&plan.nodes[i].stamp, scan_started));
    if !stale {
        return Ok(());
    }
    let pairs: Vec<_> = plan
        .nodes
        .iter()
        .zip(&plan.hashes)
        .zip(&plan.manifest.contents.entries)
        .filter_map(|((n, h), e)| Some((e.path.as_str(), &n.stamp, h.as_ref()?)))
        .collect();
    fsops::write_atomic(
        &vol.root.join(CACHE_NAME),
        &vol.root.join(tmp_name("cache")),
        &HashCache::bytes(&pairs, scan_started),
        None,
    )
}
