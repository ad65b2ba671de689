//! The subcommands, each from parsed arguments to printed result and exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attune_pack::{Arch, Diagnostics};
use serde::Serialize;

use crate::cli::{AssembleArgs, CheckArgs, InspectArgs, VerifyArgs};
use crate::error::{Error, IoContext, exit};
use crate::hash::HashCache;
use crate::output::{Output, counts, human_bytes, plural};
use crate::plan::{Inputs, plan};
use crate::progress::Progress;
use crate::publish::{self, Outcome};
use crate::scan::Kind;
use crate::volume::Volume;

/// The variable that fixes every published mtime (reproducible builds convention).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The mtime for published files: `SOURCE_DATE_EPOCH`, else 1.
pub fn source_date_epoch() -> Result<i64, Error> {
    match std::env::var(SOURCE_DATE_EPOCH) {
        Err(_) => Ok(1),
        Ok(v) => v.trim().parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
            Error::Usage(format!("{SOURCE_DATE_EPOCH}=`{v}` is not a number of seconds since 1970; unset it or give e.g. 1700000000"))
        }),
    }
}

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

/// The staging directories `..store/..tmp-stage-<pid>-<n>` that files are
/// copied into while they are hashed (see [`crate::remove::stage_prefix`]);
/// what is left of them is removed when dropped (what a killed run leaves is a
/// `..tmp-*` leftover, which the next run removes).
struct StageDir(Volume);

impl StageDir {
    fn create(vol: &Volume) -> Result<StageDir, Error> {
        let store = vol.root.join(crate::store::STORE_DIR);
        if !crate::volume::exists(&store) {
            std::fs::create_dir(&store).ctx("create", &store)?;
            crate::crashpoint::step();
        }
        // Leftovers of a run that had this pid: we hold the lock, so it is dead.
        crate::remove::remove_stage(vol)?;
        Ok(StageDir(vol.clone()))
    }
}

impl Drop for StageDir {
    fn drop(&mut self) {
        if let Err(e) = crate::remove::remove_stage(&self.0) {
            tracing::warn!("{e}; the next run removes it");
        }
    }
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
}

/// `assemble`.
pub fn assemble(args: &AssembleArgs, out: Output, progress: &Progress) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let scan_started = now_ns();
    let arch = arch_or_host(args.arch)?;
    let mtime = source_date_epoch()?;
    let vol = Volume::new(&args.out);
    // The lock is held from before the first byte is written into the volume
    // (staged copies included) until the publish ends.
    let created = !args.dry_run && !crate::volume::exists(&vol.root);
    let lock = if args.dry_run {
        None
    } else {
        std::fs::create_dir_all(&vol.root).ctx("create volume", &vol.root)?;
        Some(vol.lock(Duration::from_secs(args.lock_timeout))?)
    };
    // Into a cold volume every file is copied: copy each as it is hashed.
    let stage = match &lock {
        Some(_) if vol.current()?.is_none() => Some(StageDir::create(&vol)?),
        _ => None,
    };
    let inputs = Inputs {
        packs: args.packs.clone(),
        binaries: args.binaries.clone(),
        arch,
        mtime,
        owner: args.chown,
        stage: stage
            .as_ref()
            .map(|s| s.0.root.join(crate::store::STORE_DIR)),
        sources_only: false,
    };
    let cache = HashCache::load(&vol.root);
    let mut plan = plan(&inputs, &cache, progress)?;
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
    };
    if plan.diagnostics.has_errors() {
        // Nothing is published: a volume this run created goes again.
        drop(stage);
        drop(lock);
        if created {
            let _ = std::fs::remove_dir(vol.root.join(crate::store::STORE_DIR));
            let _ = std::fs::remove_file(vol.root.join(crate::volume::LOCK_NAME));
            let _ = std::fs::remove_dir(&vol.root);
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
    drop(stage);
    // The cache changes only when a file it will now hold had to be read
    // (files changed within the racy window are read, never cached), or one
    // it held disappeared.
    let cache_stale = plan.cache_unmatched
        || plan
            .hashed
            .iter()
            .any(|&i| !crate::hash::is_racy(&plan.nodes[i].stamp, scan_started));
    if !args.dry_run && cache_stale {
        let pairs: Vec<_> = plan
            .nodes
            .iter()
            .zip(&plan.hashes)
            .zip(&plan.manifest.contents.entries)
            .filter_map(|((n, h), e)| Some((e.path.as_str(), &n.stamp, h.as_ref()?)))
            .collect();
        HashCache::save(&vol.root, &pairs, scan_started)?;
    }
    result.ok = true;
    result.outcome = Some(&outcome);
    result.elapsed_ms = started.elapsed().as_millis();
    result.steps = crate::crashpoint::steps();
    out.result(&result, || human_assemble(&result, &outcome));
    if args.verify && !args.dry_run {
        let report = crate::verify::verify(&vol, Some(arch))?;
        out.diagnostics(&report.diagnostics);
        let count = report.diagnostics.errors().count();
        if count > 0 {
            return Err(Error::Invalid {
                count,
                consequence: "the published volume is not fit for services",
            });
        }
        tracing::info!(files = report.files, "verified the published volume");
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
        return format!(
            "{} is up to date: {packs} for {}, {size}, {}; nothing written ({secs:.2}s)",
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
            " ({} copied, {} hard-linked from the previous generation; {} {} written, {} shared)",
            o.copied,
            o.hardlinked,
            o.objects_written,
            if o.objects_written == 1 {
                "directory"
            } else {
                "directories"
            },
            o.objects_shared
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
        arch,
        mtime: 1,
        owner: None,
        stage: None,
        sources_only: true,
    };
    let mut plan = plan(&inputs, &HashCache::default(), &Progress::hidden())?;
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
    out.result(&result, || {
        format!(
            "checked {} {} ({}) for {arch}: {}",
            result.packs.len(),
            plural(result.packs.len(), "pack"),
            result.packs.join(", "),
            counts(&plan.diagnostics)
        )
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
    let report = crate::verify::verify(&Volume::new(&args.volume), args.arch)?;
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
        .map(|f| crate::inspect::inspect(f, args.arch))
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
