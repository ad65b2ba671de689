//! The subcommands, each from parsed arguments to printed result and exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attune_pack::{Arch, Diagnostics};
use serde::Serialize;

use crate::cli::{AssembleArgs, CheckArgs, HistoryArgs, InspectArgs, RollbackArgs, VerifyArgs};
use attune_volume::error::{Error, exit};
use attune_volume::fsops;
use attune_volume::hash::HashCache;
use crate::output::{Output, counts, human_bytes, plural};
use attune_volume::plan::{Inputs, plan};
use attune_volume::progress::Progress;
use attune_volume::publish::{self, Outcome};
use attune_volume::scan::Kind;
use attune_volume::volume::{CACHE_NAME, LOCK_NAME, STORE_DIR, Volume, exists, tmp_name};

fn arch_or_host(arch: Option<Arch>) -> Result<Arch, Error> {
    arch.or_else(Arch::host).ok_or_else(|| {
        Error::Usage("this machine is neither amd64 nor arm64; pass --arch".to_string())
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[derive(Serialize)]
struct AssembleResult<'a> {
    ok: bool,
    dry_run: bool,
    volume: String,
    arch: Arch,
    packs: Vec<String>,
    files: usize,
    bytes: u64,
    root_hash: &'a str,
    #[serde(flatten)]
    outcome: Option<&'a Outcome>,
    elapsed_ms: u128,
    /// Filesystem mutations made (for crash tests).
    steps: u64,
    diagnostics: &'a Diagnostics,
    /// YAML files parsed (the others' validation facts were cached).
    yaml_parsed: usize,
    /// With --verify: what verification found.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<&'a Diagnostics>,
}

/// `assemble`.
pub fn assemble(args: &AssembleArgs, out: Output, progress: &Progress) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let scan_started = now_ns();
    let arch = arch_or_host(args.arch)?;
    let mtime = attune_volume::source_date_epoch()?;
    let vol = Volume::new(&args.out);
    // The lock is held from before the first byte is written into the volume
    // (staged copies included) until the publish ends.
    let created = !args.dry_run && !exists(&vol.root);
    let lock = if args.dry_run {
        None
    } else {
        if created {
            fsops::create_dir_all(&vol.root)?;
        }
        Some(vol.lock(Duration::from_secs(args.lock_timeout))?)
    };
    // Into a cold volume every file is copied: copy each as it is hashed.
    let cold = lock.is_some() && vol.current()?.is_none();
    let inputs = Inputs {
        packs: args.packs.clone(),
        binaries: args.binaries.clone(),
        deps: args.deps.clone(),
        arch,
        mtime,
        owner: args.chown,
        stage: cold.then(|| vol.root.join(STORE_DIR)),
        sources_only: false,
    };
    let cache = HashCache::load(&vol.root.join(CACHE_NAME));
    let mut facts = attune_volume::facts::load(&vol.root);
    let facts_loaded = facts.len();
    let mut plan = plan(&inputs, &cache, &mut facts, progress)?;
    if args.strict {
        plan.diagnostics.promote_warnings();
    }
    out.diagnostics(&plan.diagnostics);
    let files: Vec<_> = plan
        .manifest
        .contents
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    let bytes = files.iter().filter_map(|e| e.size).sum();
    let mut result = AssembleResult {
        ok: false,
        dry_run: args.dry_run,
        volume: vol.root.display().to_string(),
        arch,
        packs: plan.manifest.packs().map(str::to_string).collect(),
        files: files.len(),
        bytes,
        root_hash: &plan.manifest.root_hash,
        outcome: None,
        elapsed_ms: 0,
        steps: 0,
        diagnostics: &plan.diagnostics,
        yaml_parsed: facts.parsed(),
        verify: None,
    };
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
        let count = plan.diagnostics.errors().count();
        result.elapsed_ms = started.elapsed().as_millis();
        out.result(&result, || {
            format!(
                "{}; nothing was published to {}",
                counts(&plan.diagnostics),
                vol.root.display()
            )
        });
        return Err(Error::Invalid {
            count,
            consequence: "nothing was published",
        });
    }
    let opts = publish::Options {
        keep: usize::from(args.keep),
        adopt: args.adopt,
        sync: !args.no_sync,
        dry_run: args.dry_run,
        force: args.force,
    };
    let outcome = publish::publish(&vol, lock.as_ref(), &plan, &opts, progress)?;
    // The cache changes only when a file it will now hold had to be read
    // (files changed within the racy window are read, never cached), or one
    // it held disappeared.
    let cache_stale = plan.cache_unmatched
        || plan
            .hashed
            .iter()
            .any(|&i| !attune_volume::hash::is_racy(&plan.nodes[i].stamp, scan_started));
    if !args.dry_run && cache_stale {
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
        )?;
    }
    if !args.dry_run && attune_volume::facts::changed(&facts, facts_loaded) {
        fsops::write_atomic(
            &vol.root.join(attune_volume::volume::FACTS_NAME),
            &vol.root.join(tmp_name("facts")),
            &attune_volume::facts::bytes(&facts),
            None,
        )?;
    }
    // With --verify the result is printed after verification, so that its
    // `ok` agrees with the exit code.
    let report = match args.verify && !args.dry_run {
        true => Some(attune_volume::verify::verify(&vol, Some(arch))?),
        false => None,
    };
    let failed = report
        .as_ref()
        .map_or(0, |r| r.diagnostics.errors().count());
    result.ok = failed == 0;
    result.outcome = Some(&outcome);
    result.elapsed_ms = started.elapsed().as_millis();
    result.steps = attune_volume::crashpoint::steps();
    result.verify = report.as_ref().map(|r| &r.diagnostics);
    if let Some(r) = &report {
        out.diagnostics(&r.diagnostics);
    }
    out.result(&result, || human_assemble(&result, &outcome));
    if failed > 0 {
        return Err(Error::Invalid {
            count: failed,
            consequence: "the published volume is not fit for services",
        });
    }
    if let Some(r) = &report {
        tracing::info!(files = r.files, "verified the published volume");
    }
    // Freeing a plan of 100,000 entries one by one takes milliseconds the
    // process is about to give back whole.
    std::mem::forget(plan);
    Ok(ExitCode::from(exit::OK))
}

fn human_assemble(r: &AssembleResult, o: &Outcome) -> String {
    let packs = format!(
        "{} {} ({})",
        r.packs.len(),
        plural(r.packs.len(), "pack"),
        r.packs.join(", ")
    );
    let secs = r.elapsed_ms as f64 / 1000.0;
    let size = format!(
        "{} {}, {}",
        r.files,
        plural(r.files, "file"),
        human_bytes(r.bytes)
    );
    let changes = format!(
        "{} added, {} changed, {} removed",
        o.diff.added.len(),
        o.diff.changed.len(),
        o.diff.removed.len()
    );
    if o.up_to_date {
        let reread = match o.rehashed {
            0 => String::new(),
            n => format!(" ({n} {} read again to confirm)", plural(n, "file")),
        };
        return format!(
            "{} is up to date: {packs} for {}, {size}, {}; every file confirmed{reread}, nothing written ({secs:.2}s)",
            r.volume, r.arch, r.root_hash
        );
    }
    if r.dry_run {
        let mut s = format!(
            "dry run: would publish generation {} into {}: {packs} for {}, {size}; {changes}",
            o.generation, r.volume, r.arch
        );
        for (mark, paths) in [
            ("+", &o.diff.added),
            ("~", &o.diff.changed),
            ("-", &o.diff.removed),
        ] {
            for p in paths {
                s.push_str(&format!("\n  {mark} {p}"));
            }
        }
        return s;
    }
    let mut s = format!(
        "assembled {packs} for {} into {} in {secs:.2}s\n  generation {} ({})\n  {size}: {changes}",
        r.arch, r.volume, o.generation, r.root_hash
    );
    if o.reused {
        s.push_str("\n  a kept generation with the same contents was made current again");
    } else {
        s.push_str(&format!(
            " ({} copied, {} hard-linked from confirmed published files; {} {} written, {} reused whole)",
            o.copied,
            o.hardlinked,
            o.objects_written,
            plural(o.objects_written, "pack"),
            o.objects_shared
        ));
    }
    if !o.repaired.is_empty() {
        s.push_str(&format!(
            "\n  repaired {} damaged published {}: {}",
            o.repaired.len(),
            plural(o.repaired.len(), "entry").replace("entrys", "entries"),
            o.repaired.join(", ")
        ));
    }
    if !o.removed_generations.is_empty() {
        s.push_str(&format!("\n  removed {}", o.removed_generations.join(", ")));
    }
    s
}

#[derive(Serialize)]
struct CheckResult<'a> {
    ok: bool,
    arch: Arch,
    packs: Vec<&'a str>,
    diagnostics: &'a Diagnostics,
}

/// `check`.
pub fn check(args: &CheckArgs, out: Output) -> Result<ExitCode, Error> {
    let arch = arch_or_host(args.arch)?;
    let inputs = Inputs {
        packs: args.dirs.clone(),
        binaries: args.binaries.clone(),
        deps: args.deps.clone(),
        arch,
        mtime: 1,
        owner: None,
        stage: None,
        sources_only: true,
    };
    let mut plan = plan(
        &inputs,
        &HashCache::default(),
        &mut attune_pack::LoadCache::new(),
        &Progress::hidden(),
    )?;
    if args.strict {
        plan.diagnostics.promote_warnings();
    }
    out.diagnostics(&plan.diagnostics);
    let result = CheckResult {
        ok: !plan.diagnostics.has_errors(),
        arch,
        packs: plan
            .packs
            .iter()
            .map(|p| p.meta.pack_ref.as_str())
            .collect(),
        diagnostics: &plan.diagnostics,
    };
    out.result(&result, || match result.packs.len() {
        0 => format!("checked no pack for {arch}: {}", counts(&plan.diagnostics)),
        n => format!(
            "checked {n} {} ({}) for {arch}: {}",
            plural(n, "pack"),
            result.packs.join(", "),
            counts(&plan.diagnostics)
        ),
    });
    match plan.diagnostics.errors().count() {
        0 => Ok(ExitCode::from(exit::OK)),
        count => Err(Error::Invalid {
            count,
            consequence: "fix them before assembling",
        }),
    }
}

/// `verify`.
pub fn verify(args: &VerifyArgs, out: Output) -> Result<ExitCode, Error> {
    let report = attune_volume::verify::verify(&Volume::new(&args.volume), args.arch)?;
    out.diagnostics(&report.diagnostics);
    out.result(&report, || {
        let what = match (&report.generation, &report.root_hash, report.arch) {
            (Some(g), Some(h), Some(a)) => {
                format!("generation {g} ({h}), {} files, for {a}", report.files)
            }
            _ => "no generation".to_string(),
        };
        let verdict = if report.diagnostics.has_errors() {
            "FAILED"
        } else {
            "ok"
        };
        format!(
            "{}: {verdict}: {what}; {}",
            report.volume,
            counts(&report.diagnostics)
        )
    });
    match report.diagnostics.errors().count() {
        0 => Ok(ExitCode::from(exit::OK)),
        count => Err(Error::Invalid {
            count,
            consequence: "the volume is not fit for services",
        }),
    }
}

/// `inspect`.
pub fn inspect(args: &InspectArgs, out: Output) -> Result<ExitCode, Error> {
    let reports = args
        .files
        .iter()
        .map(|f| attune_volume::inspect::inspect(f, args.arch))
        .collect::<Result<Vec<_>, _>>()?;
    out.result(&reports, || {
        reports
            .iter()
            .map(|r| r.human())
            .collect::<Vec<_>>()
            .join("\n")
    });
    let failing = reports.iter().filter(|r| !r.runs()).count();
    if args.arch.is_some() && failing > 0 {
        return Err(Error::Invalid {
            count: failing,
            consequence: "they would not run there",
        });
    }
    Ok(ExitCode::from(exit::OK))
}

/// The volume at `path`, which must exist (a usage error otherwise, as for `verify`).
fn existing_volume(path: &std::path::Path) -> Result<Volume, Error> {
    if !exists(path) {
        return Err(Error::Usage(format!("{} does not exist", path.display())));
    }
    Ok(Volume::new(path))
}

/// `history`.
pub fn history(args: &HistoryArgs, out: Output) -> Result<ExitCode, Error> {
    let vol = existing_volume(&args.volume)?;
    let gens = attune_volume::history::history(&vol)?;
    out.result(&gens, || {
        if gens.is_empty() {
            return format!("{}: no generation", vol.root.display());
        }
        gens.iter()
            .map(|g| {
                let mark = if g.current { "*" } else { " " };
                let mut what = vec![];
                for (sign, packs) in [("+", &g.added), ("~", &g.changed), ("-", &g.removed)] {
                    what.extend(packs.iter().map(|p| format!("{sign}{p}")));
                }
                format!(
                    "{mark} {} {} {} {}",
                    g.name,
                    g.time_utc,
                    g.root_hash.as_deref().unwrap_or("(manifest unreadable)"),
                    if what.is_empty() {
                        "(no pack changed)".to_string()
                    } else {
                        what.join(" ")
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::from(exit::OK))
}

/// `rollback`.
pub fn rollback(args: &RollbackArgs, out: Output) -> Result<ExitCode, Error> {
    let vol = existing_volume(&args.volume)?;
    let lock = vol.lock(Duration::from_secs(args.lock_timeout))?;
    attune_volume::gc::sweep_leftovers(&vol)?;
    let r = attune_volume::history::rollback(&vol, &lock, args.generation.as_deref())?;
    out.result(&r, || {
        format!(
            "{}: rolled back to {} ({} files confirmed); it was {}",
            vol.root.display(),
            r.generation,
            r.files,
            r.previous.as_deref().unwrap_or("empty")
        )
    });
    Ok(ExitCode::from(exit::OK))
}
