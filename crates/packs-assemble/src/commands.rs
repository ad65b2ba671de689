//! The subcommands, each from parsed arguments to printed result and exit code.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use attune_pack::{Arch, Diagnostics};
use serde::Serialize;

use attune_volume::Request;
use attune_volume::error::{Error, exit};
use attune_volume::plan::Inputs;
use attune_volume::progress::Progress;
use attune_volume::publish::{self, Outcome};
use attune_volume::scan::Kind;
use attune_volume::volume::{Volume, exists};

use crate::cli::{AssembleArgs, CheckArgs, HistoryArgs, InspectArgs, RollbackArgs, VerifyArgs};
use crate::output::{Output, counts, human_bytes, plural};

fn arch_or_host(arch: Option<Arch>) -> Result<Arch, Error> {
    arch.or_else(Arch::host).ok_or_else(|| {
        Error::Usage("this machine is neither amd64 nor arm64; pass --arch".to_string())
    })
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
    let arch = arch_or_host(args.arch)?;
    let req = Request {
        inputs: Inputs {
            packs: args.packs.clone(),
            binaries: args.binaries.clone(),
            deps: args.deps.clone(),
            arch,
            mtime: attune_volume::source_date_epoch()?,
            owner: args.chown,
            stage: None,
            sources_only: false,
        },
        volume: args.out.clone(),
        lock_timeout: Duration::from_secs(args.lock_timeout),
        strict: args.strict,
        publish: publish::Options {
            keep: usize::from(args.keep),
            adopt: args.adopt,
            sync: !args.no_sync,
            dry_run: args.dry_run,
            force: args.force,
        },
    };
    let assembled = attune_volume::assemble(&req, progress)?;
    let plan = &assembled.plan;
    out.diagnostics(&plan.diagnostics);
    let files: Vec<_> = plan
        .manifest
        .contents
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    let bytes = files.iter().filter_map(|e| e.size).sum();
    let volume = Volume::new(&args.out);
    let mut result = AssembleResult {
        ok: false,
        dry_run: args.dry_run,
        volume: volume.root.display().to_string(),
        arch,
        packs: plan.manifest.packs().map(str::to_string).collect(),
        files: files.len(),
        bytes,
        root_hash: &plan.manifest.root_hash,
        outcome: None,
        elapsed_ms: 0,
        steps: 0,
        diagnostics: &plan.diagnostics,
        yaml_parsed: assembled.yaml_parsed,
        verify: None,
    };
    let Some(outcome) = &assembled.outcome else {
        let count = plan.diagnostics.errors().count();
        result.elapsed_ms = started.elapsed().as_millis();
        out.result(&result, || {
            format!(
                "{}; nothing was published to {}",
                counts(&plan.diagnostics),
                volume.root.display()
            )
        });
        return Err(Error::Invalid {
            count,
            consequence: "nothing was published",
        });
    };
    // With --verify the result is printed after verification, so that its
    // `ok` agrees with the exit code.
    let report = match args.verify && !args.dry_run {
        true => Some(attune_volume::verify(&volume, Some(arch))?),
        false => None,
    };
    let failed = report
        .as_ref()
        .map_or(0, |r| r.diagnostics.errors().count());
    result.ok = failed == 0;
    result.outcome = Some(outcome);
    result.elapsed_ms = started.elapsed().as_millis();
    result.steps = attune_volume::crashpoint::steps();
    result.verify = report.as_ref().map(|r| &r.diagnostics);
    if let Some(r) = &report {
        out.diagnostics(&r.diagnostics);
    }
    out.result(&result, || human_assemble(&result, outcome));
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
    std::mem::forget(assembled);
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
    let plan = attune_volume::check(&inputs, args.strict)?;
    out.diagnostics(&plan.diagnostics);
    let result = CheckResult {
        ok: !plan.diagnostics.has_errors(),
        arch,
        packs: plan.packs.iter().map(|p| p.pack_ref.as_str()).collect(),
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
    let lock_timeout = Duration::from_secs(args.lock_timeout);
    let r = attune_volume::history::rollback(&vol, lock_timeout, args.generation.as_deref())?;
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
