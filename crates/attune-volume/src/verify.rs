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
use crate::store::{OBJECTS_NAME, Objects, SEQUENCE_NAME, link_target, read_objects};
use crate::volume::{DATA_LINK, RootEntry, STORE_DIR, Volume, classify, generation_id_of};

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

    report.files = check_tree(vol, &gen_dir, &manifest, d)?;
    check_root(vol, &manifest, d)?;
    check_packs(&gen_dir, &manifest, arch, d);
    Ok(report)
}

/// The generation holds the manifest, its objects list and one link per pack
/// into the store; below each pack root every entry is a real directory or a
/// regular file that matches the manifest (contents re-read: this is the
/// troubleshooting tool, it trusts no record), and nothing else is there.
fn check_tree(
    vol: &Volume,
    gen_dir: &Path,
    manifest: &Manifest,
    d: &mut Diagnostics,
) -> Result<usize, Error> {
    let store = vol.root.join(STORE_DIR);
    let packs: BTreeSet<&str> = manifest.packs().collect();
    let list = gen_dir.join(OBJECTS_NAME);
    let objects = match read_objects(gen_dir) {
        Ok(Objects::Packs(m)) => m,
        Ok(Objects::Legacy(_)) | Err(_) if manifest.contents.format < crate::manifest::FORMAT => {
            d.push(
                Diagnostic::error(gen_dir, format!("was published by an older packs-assemble (manifest format {}): its directories are links, which upstream Attune's readers refuse", manifest.contents.format))
                    .hint("run `packs-assemble assemble` for this volume: it upgrades it in place"),
            );
            return Ok(0);
        }
        Ok(Objects::Legacy(_)) => {
            d.push(Diagnostic::error(&list, "is of the previous layout").hint(REASSEMBLE));
            return Ok(0);
        }
        Err(e) => {
            d.push(Diagnostic::error(&list, format!("cannot be read: {e}")).hint(REASSEMBLE));
            return Ok(0);
        }
    };
    if objects.keys().map(String::as_str).ne(packs.iter().copied()) {
        d.push(
            Diagnostic::error(&list, "does not name exactly the packs of the manifest; garbage collection could free what the generation uses")
                .hint(REASSEMBLE),
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(gen_dir)
        .ctx("read", gen_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .ctx("read", gen_dir)?;
    names.sort();
    for name in &names {
        if name == MANIFEST_NAME || name == OBJECTS_NAME || name == SEQUENCE_NAME {
            continue;
        }
        let path = gen_dir.join(name);
        if !packs.contains(name.as_str()) {
            d.push(
                Diagnostic::error(&path, "is a stray entry: not a pack of the manifest").hint(
                    format!("something wrote into a published generation; {REASSEMBLE}"),
                ),
            );
            continue;
        }
        let want = objects.get(name).map(|o| link_target(name, o));
        match std::fs::read_link(&path) {
            Ok(t) if want.as_deref().is_some_and(|w| t == Path::new(w)) => {}
            Ok(t) => d.push(
                Diagnostic::error(
                    &path,
                    format!("links to {}, not to its pack object", t.display()),
                )
                .hint(REASSEMBLE),
            ),
            Err(_) => d.push(
                Diagnostic::error(&path, "is not a link to its pack object").hint(REASSEMBLE),
            ),
        }
    }
    let mut w = Walk {
        manifest,
        seen: BTreeSet::new(),
        files: 0,
    };
    for pack in &packs {
        let Some(obj) = objects.get(*pack) else {
            continue;
        };
        let disk = store.join(obj).join(pack);
        let logical = gen_dir.join(pack);
        match std::fs::symlink_metadata(&disk) {
            Ok(m) if m.is_dir() => {}
            _ => {
                d.push(
                    Diagnostic::error(
                        &logical,
                        format!("its object {STORE_DIR}/{obj}/{pack} is not a directory"),
                    )
                    .hint(REASSEMBLE),
                );
                continue;
            }
        }
        // The canonical path of VOL/<pack> ends in /<pack>: readers that
        // canonicalise and compare (upstream's loader) accept its files.
        if let Ok(c) = std::fs::canonicalize(vol.root.join(pack))
            && c.file_name().and_then(|n| n.to_str()) != Some(*pack)
        {
            d.push(
                Diagnostic::error(
                    vol.root.join(pack),
                    format!("resolves to {}, whose name is not the pack's", c.display()),
                )
                .hint(REASSEMBLE),
            );
        }
        w.seen.insert(pack.to_string());
        w.check_mode(&disk, &logical, pack, d)?;
        w.dir(&disk, &logical, pack, d)?;
    }
    for e in &manifest.contents.entries {
        if !w.seen.contains(&e.path) {
            d.push(
                Diagnostic::error(gen_dir.join(&e.path), "is missing from the generation")
                    .hint(REASSEMBLE),
            );
        }
    }
    Ok(w.files)
}

struct Walk<'a> {
    manifest: &'a Manifest,
    seen: BTreeSet<String>,
    files: usize,
}

impl Walk<'_> {
    /// The pack root's own mode (its entries are checked by [`Walk::dir`]).
    fn check_mode(
        &self,
        disk: &Path,
        logical: &Path,
        rel: &str,
        d: &mut Diagnostics,
    ) -> Result<(), Error> {
        if let Some(e) = self.manifest.get(rel) {
            let meta = std::fs::symlink_metadata(disk).ctx("read", logical)?;
            if let Some(p) = mode_problem(&meta, e, logical) {
                d.push(p);
            }
        }
        Ok(())
    }

    /// Checks the entries of the directory at `disk`, shown as `logical` (the
    /// path through the generation) and `rel` in the manifest. Nothing is followed.
    fn dir(
        &mut self,
        disk: &Path,
        logical: &Path,
        rel: &str,
        d: &mut Diagnostics,
    ) -> Result<(), Error> {
        let mut names: Vec<_> = std::fs::read_dir(disk)
            .ctx("read", logical)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .ctx("read", logical)?;
        names.sort();
        for name in names {
            let name_str = name.to_string_lossy();
            let child_rel = format!("{rel}/{name_str}");
            let path = logical.join(&name);
            let on_disk = disk.join(&name);
            let meta = std::fs::symlink_metadata(&on_disk).ctx("read", &path)?;
            if meta.file_type().is_symlink() {
                d.push(
                    Diagnostic::error(&path, "is a symbolic link below the pack root; readers that canonicalise or walk without following links would not see a copy of the pack")
                        .hint(REASSEMBLE),
                );
                continue;
            }
            let Some(e) = self.manifest.get(&child_rel) else {
                d.push(
                    Diagnostic::error(&path, "is a stray file: not in the manifest").hint(format!(
                        "something wrote into a published generation; {REASSEMBLE}"
                    )),
                );
                continue;
            };
            self.seen.insert(child_rel.clone());
            let kind = if meta.is_dir() {
                Kind::Dir
            } else if meta.is_file() {
                Kind::File
            } else {
                d.push(
                    Diagnostic::error(&path, "is neither a file nor a directory").hint(REASSEMBLE),
                );
                continue;
            };
            if kind != e.kind {
                d.push(
                    Diagnostic::error(
                        &path,
                        format!("is a {kind:?} but the manifest says {:?}", e.kind),
                    )
                    .hint(REASSEMBLE),
                );
                continue;
            }
            if let Some(p) = mode_problem(&meta, e, &path) {
                d.push(p);
            }
            if kind == Kind::Dir {
                self.dir(&on_disk, &path, &child_rel, d)?;
                continue;
            }
            self.files += 1;
            let h = hash_file(&on_disk).ctx("read", &path)?;
            if Some(meta.size()) != e.size || Some(&h.sha256) != e.sha256.as_ref() {
                d.push(
                    Diagnostic::error(&path, "contents differ from the manifest (sha256 mismatch)")
                        .hint(REASSEMBLE),
                );
            }
        }
        Ok(())
    }
}

/// An error when `meta`'s mode is not the one the manifest gives `e`.
fn mode_problem(
    meta: &std::fs::Metadata,
    e: &crate::manifest::Entry,
    path: &Path,
) -> Option<Diagnostic> {
    let mode = meta.permissions().mode() & 0o7777;
    (mode != e.mode_bits()).then(|| {
        Diagnostic::error(
            path,
            format!("has mode {mode:04o}, the manifest says {}", e.mode),
        )
        .hint(REASSEMBLE)
    })
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
            Some(RootEntry::Store) => {
                for name in crate::gc::store_entries(vol)? {
                    if name.starts_with(crate::volume::TMP_PREFIX) {
                        d.push(
                            Diagnostic::warning(path.join(&name), "is left over from an interrupted run; readers never see it")
                                .hint("the next `packs-assemble assemble` removes it"),
                        );
                    }
                }
            }
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
                Diagnostic::error(
                    vol.root.join(name),
                    format!("is missing: services do not see it (it is reachable only as {DATA_LINK}/{name})"),
                )
                .hint("run `packs-assemble assemble` for this volume: it creates the link"),
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
