//! Verifying a published volume: the troubleshooting tool. Every problem it
//! finds is a diagnostic with the cause and the fix.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use attune_pack::{
    Arch, Diagnostic, Diagnostics, NativeProblem, RunnerType, check_native, load_pack,
};
use serde::Serialize;

use crate::error::{Error, IoContext};
use crate::hash::hash_file;
use crate::manifest::{MANIFEST_NAME, Manifest, root_hash};
use crate::scan::Kind;
use crate::volume::{DATA_LINK, RootEntry, Volume, classify, generation_id_of};

const REASSEMBLE: &str = "run `packs-assemble assemble --force` for this volume: it publishes a fresh copy of every file";

/// What verification found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The volume root.
    pub volume: String,
    /// The generation `..data` points at.
    pub generation: Option<String>,
    /// Its root hash, as recorded.
    pub root_hash: Option<String>,
    /// The architecture checked against.
    pub arch: Option<Arch>,
    /// Files checked.
    pub files: usize,
    /// Problems, errors and warnings.
    pub diagnostics: Diagnostics,
}

/// Verifies the volume at `vol` for `arch` (default: the manifest's).
pub fn verify(vol: &Volume, arch: Option<Arch>) -> Result<Report, Error> {
    let mut report = Report {
        volume: vol.root.display().to_string(),
        generation: None,
        root_hash: None,
        arch,
        files: 0,
        diagnostics: Diagnostics::default(),
    };
    let d = &mut report.diagnostics;
    if !crate::volume::exists(&vol.root) {
        return Err(Error::Usage(format!(
            "{} does not exist",
            vol.root.display()
        )));
    }
    if !vol.root.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            vol.root.display()
        )));
    }
    let Some(current) = vol.current()? else {
        d.push(
            Diagnostic::error(
                vol.root.join(DATA_LINK),
                "is missing: nothing has been published to this volume",
            )
            .hint("run `packs-assemble assemble --packs DIR --binaries DIR --arch A --out VOL`"),
        );
        return Ok(report);
    };
    let gen_dir = vol.root.join(&current);
    if current.contains('/')
        || classify(&current, false) != Some(RootEntry::Generation)
        || !gen_dir.is_dir()
    {
        d.push(
            Diagnostic::error(
                vol.root.join(DATA_LINK),
                format!("points at `{current}`, which is not a generation of this volume"),
            )
            .hint(REASSEMBLE),
        );
        return Ok(report);
    }
    report.generation = Some(current.clone());
    let manifest_path = gen_dir.join(MANIFEST_NAME);
    let manifest = match Manifest::read(&manifest_path) {
        Ok(m) => m,
        Err(e) => {
            d.push(Diagnostic::error(&manifest_path, e.to_string()).hint(REASSEMBLE));
            return Ok(report);
        }
    };
    report.root_hash = Some(manifest.root_hash.clone());
    if root_hash(&manifest.contents) != manifest.root_hash {
        d.push(
            Diagnostic::error(
                &manifest_path,
                "root hash does not match its entries: the manifest was edited",
            )
            .hint(REASSEMBLE),
        );
    }
    if generation_id_of(current.trim_start_matches("..")) != Some(manifest.generation_id()) {
        d.push(
            Diagnostic::error(
                &gen_dir,
                "directory name does not match the manifest's root hash",
            )
            .hint(REASSEMBLE),
        );
    }
    let arch = arch.unwrap_or(manifest.contents.arch);
    report.arch = Some(arch);
    if arch != manifest.contents.arch {
        d.push(
            Diagnostic::error(
                &manifest_path,
                format!(
                    "the volume was assembled for {}, not {arch}",
                    manifest.contents.arch
                ),
            )
            .hint(format!(
                "assemble it with `--arch {arch}` and the {arch} binaries tree"
            )),
        );
    }

    report.files = check_tree(&gen_dir, &manifest, d)?;
    check_root(vol, &manifest, d)?;
    check_packs(&gen_dir, &manifest, arch, d);
    Ok(report)
}

/// Every entry on disk matches the manifest, and nothing else is there.
fn check_tree(gen_dir: &Path, manifest: &Manifest, d: &mut Diagnostics) -> Result<usize, Error> {
    let mut seen = BTreeSet::new();
    let mut files = 0;
    for entry in walkdir::WalkDir::new(gen_dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(std::io::Error::from).ctx("read", gen_dir)?;
        let path = entry.path();
        let rel = path
            .strip_prefix(gen_dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        if rel == MANIFEST_NAME {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(std::io::Error::from)
            .ctx("read", path)?;
        let Some(e) = manifest.get(&rel) else {
            d.push(
                Diagnostic::error(path, "is a stray file: not in the manifest").hint(format!(
                    "something wrote into a published generation; {REASSEMBLE}"
                )),
            );
            continue;
        };
        seen.insert(rel.clone());
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File
        } else {
            d.push(Diagnostic::error(path, "is neither a file nor a directory").hint(REASSEMBLE));
            continue;
        };
        if kind != e.kind {
            d.push(
                Diagnostic::error(
                    path,
                    format!("is a {kind:?} but the manifest says {:?}", e.kind),
                )
                .hint(REASSEMBLE),
            );
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode != e.mode_bits() {
            d.push(
                Diagnostic::error(
                    path,
                    format!("has mode {mode:04o}, the manifest says {}", e.mode),
                )
                .hint(REASSEMBLE),
            );
        }
        if kind == Kind::File {
            files += 1;
            let h = hash_file(path).ctx("read", path)?;
            if Some(meta.size()) != e.size || Some(&h.sha256) != e.sha256.as_ref() {
                d.push(
                    Diagnostic::error(path, "contents differ from the manifest (sha256 mismatch)")
                        .hint(REASSEMBLE),
                );
            }
        }
    }
    for e in &manifest.contents.entries {
        if !seen.contains(&e.path) {
            d.push(
                Diagnostic::error(gen_dir.join(&e.path), "is missing from the generation")
                    .hint(REASSEMBLE),
            );
        }
    }
    Ok(files)
}

/// The root holds only what this tool writes, and its links go through `..data`.
fn check_root(vol: &Volume, manifest: &Manifest, d: &mut Diagnostics) -> Result<(), Error> {
    let packs: BTreeSet<&str> = manifest.packs().collect();
    let mut linked = BTreeSet::new();
    for (name, is_link) in vol.root_entries()? {
        let path = vol.root.join(&name);
        match classify(&name, is_link) {
            None => d.push(
                Diagnostic::error(&path, "is a stray entry in the volume root").hint(
                    "remove it; only packs-assemble writes here (services mount the volume read-only)",
                ),
            ),
            Some(RootEntry::Tmp) => d.push(
                Diagnostic::warning(&path, "is left over from an interrupted run; readers never see it")
                    .hint("the next `packs-assemble assemble` removes it"),
            ),
            Some(RootEntry::Link) => {
                let target = std::fs::read_link(&path).ctx("read link", &path)?;
                if target != Path::new(&format!("{DATA_LINK}/{name}")) {
                    d.push(
                        Diagnostic::error(&path, format!("points at {} instead of {DATA_LINK}/{name}", target.display()))
                            .hint(REASSEMBLE),
                    );
                } else if name != MANIFEST_NAME && !packs.contains(name.as_str()) {
                    d.push(
                        Diagnostic::warning(&path, format!("links to pack `{name}`, which the current generation does not hold"))
                            .hint("an interrupted run left it; the next `packs-assemble assemble` removes it"),
                    );
                }
                linked.insert(name);
            }
            Some(_) => {}
        }
    }
    for name in packs.iter().copied().chain([MANIFEST_NAME]) {
        if !linked.contains(name) {
            d.push(
                Diagnostic::warning(
                    vol.root.join(name),
                    format!("is missing; the content is reachable as {DATA_LINK}/{name}"),
                )
                .hint(
                    "an interrupted run left it so; the next `packs-assemble assemble` creates it",
                ),
            );
        }
    }
    Ok(())
}

/// The packs load, and every entry point exists; native ones run on `arch`.
fn check_packs(gen_dir: &Path, manifest: &Manifest, arch: Arch, d: &mut Diagnostics) {
    for pack in manifest.packs() {
        let dir = gen_dir.join(pack);
        let outcome = load_pack(&dir);
        d.extend(outcome.diagnostics);
        let Some(pack) = outcome.pack else { continue };
        for ep in pack.entry_points() {
            let path = dir.join(&ep.path);
            let what = format!("entry point of {}", ep.component);
            let Ok(meta) = std::fs::metadata(&path) else {
                if ep.may_be_absent() {
                    d.push(Diagnostic::warning(
                        &path,
                        format!("native {what} is absent; upstream's executor may implement it (as core.ask), this project's worker will fail it"),
                    ));
                    continue;
                }
                let p = NativeProblem::Missing;
                let hint = if ep.runner == RunnerType::Native {
                    p.fix(arch)
                } else {
                    REASSEMBLE.to_string()
                };
                d.push(Diagnostic::error(&path, format!("{what} {}", p.cause())).hint(hint));
                continue;
            };
            if ep.runner != RunnerType::Native {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for p in check_native(&bytes, meta.permissions().mode() & 0o111 != 0, arch) {
                d.push(
                    Diagnostic::error(&path, format!("native {what} {}", p.cause()))
                        .hint(p.fix(arch)),
                );
            }
        }
    }
}
