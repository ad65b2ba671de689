//! The plan: pack sources overlaid with binaries trees, validated, hashed and
//! sealed into the manifest of the generation that would be published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use attune_pack::{
    Arch, Diagnostic, Diagnostics, ElfFacts, LoadCache, PackSummary, RunnerType, check_native,
    load_pack_summary_cached, references_of,
};

use crate::error::{Error, IoContext};
use crate::fsops::Seal;
use crate::hash::{FileHash, HashCache, hash_all, read_only};
use crate::manifest::{
    Contents, Entry, FORMAT, MODE_DIR, MODE_EXEC, MODE_FILE, Manifest, mode_string,
};
use crate::progress::Progress;
use crate::scan::{Kind, Node, Origin, Stamp, scan, scan_all};
use crate::staging::Stage;

/// What to plan from.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `--packs` directories: each holds packs, or is one pack.
    pub packs: Vec<PathBuf>,
    /// `--binaries` trees: `<pack>/<path>` overlaying the sources.
    pub binaries: Vec<PathBuf>,
    /// `--deps` trees: `<pack>/<path>` added to the sources, never replacing
    /// a file (a pack's dependencies, built for `arch`).
    pub deps: Vec<PathBuf>,
    /// Target architecture.
    pub arch: Arch,
    /// Modification time of every published entry.
    pub mtime: i64,
    /// `UID:GID` for every published entry.
    pub owner: Option<(u32, u32)>,
    /// The store of the volume, to stage files in while they are hashed (a
    /// cold volume: every file will be copied, so each byte is read once;
    /// see [`crate::staging`]).
    pub stage: Option<PathBuf>,
    /// `check` mode: a native entry point absent from the sources is expected
    /// to come from a binaries tree when none is given.
    pub sources_only: bool,
}

/// A pack found in a `--packs` directory.
#[derive(Clone, Debug)]
pub struct FoundPack {
    /// Directory name (and, when valid, the ref).
    pub name: String,
    /// The pack directory.
    pub dir: PathBuf,
}

/// The result of planning.
#[derive(Debug)]
pub struct Plan {
    /// The manifest of the generation to publish.
    pub manifest: Manifest,
    /// Where each manifest entry comes from, in the manifest's order (their
    /// paths moved into the manifest: see [`Plan::source`]).
    pub nodes: Vec<Node>,
    /// Content hashes of the files (`None` for directories), in the same order.
    pub hashes: Vec<Option<FileHash>>,
    /// The packs, by name, summarised (what the checks across files need).
    pub packs: Vec<PackSummary>,
    /// Files whose contents had to be read (not in the hash cache), as
    /// indices into `nodes`.
    pub hashed: Vec<usize>,
    /// Whether the hash cache knows files that are gone.
    pub cache_unmatched: bool,
    /// Which files were copied into the stage while hashed, aligned with `nodes`.
    staged: Vec<bool>,
    /// The stage of a cold volume (see [`crate::staging::Stage`]).
    pub stage: Option<Stage>,
    /// Everything found wrong or worth knowing.
    pub diagnostics: Diagnostics,
}

fn owner_string(owner: Option<(u32, u32)>) -> Option<String> {
    owner.map(|(u, g)| format!("{u}:{g}"))
}

impl Plan {
    /// Whether file `i` was copied (and sealed) into the stage while it was hashed.
    pub fn staged(&self, i: usize) -> bool {
        self.staged[i]
    }

    /// Where manifest entry `i` comes from on disk.
    pub fn source(&self, i: usize) -> PathBuf {
        self.nodes[i].abs_of(&self.manifest.contents.entries[i].path)
    }
}

impl crate::staging::Inputs for Plan {
    fn input(&self, i: usize) -> (PathBuf, Stamp) {
        (self.source(i), self.nodes[i].stamp)
    }
}

/// The packs in `dir`: `dir` itself when it holds `pack.yaml`, else each
/// subdirectory that does. Other subdirectories are reported and skipped. A
/// pack directory that is a symbolic link, or whose name is not UTF-8, is an
/// error (nothing inside `--packs` is followed, and the name becomes a path
/// in the manifest), never a silent skip that would publish without the pack.
pub fn discover(dir: &Path, diags: &mut Diagnostics) -> Result<Vec<FoundPack>, Error> {
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!("{} does not exist", dir.display())));
        }
        other => other.ctx("read packs directory", dir)?,
    };
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if dir.join(attune_pack::PACK_FILE).exists() {
        let canonical = dir.canonicalize().ctx("resolve", dir)?;
        let Some(name) = canonical.file_name().and_then(|n| n.to_str()) else {
            diags.push(not_utf8(dir));
            return Ok(vec![]);
        };
        return Ok(vec![FoundPack {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        }]);
    }
    let mut found = vec![];
    for e in sorted_entries(dir, "read packs directory")? {
        let path = e.path();
        let file_name = e.file_name();
        let lossy = file_name.to_string_lossy();
        let Ok(kind) = e.file_type() else { continue };
        if lossy.starts_with('.') {
            continue;
        }
        let has_pack_file = path.join(attune_pack::PACK_FILE).exists();
        if kind.is_symlink() {
            if has_pack_file {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                diags.push(
                    Diagnostic::error(&path, format!("is a symbolic link to a pack directory ({target})"))
                        .hint("links inside --packs are never followed; pass the pack directory itself with --packs, or replace the link with the directory"),
                );
            }
            continue;
        }
        if !kind.is_dir() {
            continue;
        }
        let Some(name) = file_name.to_str() else {
            diags.push(not_utf8(&path));
            continue;
        };
        if !has_pack_file {
            diags.push(
                Diagnostic::warning(&path, "has no pack.yaml; skipped")
                    .hint("add a pack.yaml with ref, label and version to make it a pack"),
            );
            continue;
        }
        found.push(FoundPack {
            name: name.to_string(),
            dir: path,
        });
    }
    Ok(found)
}

fn not_utf8(path: &Path) -> Diagnostic {
    Diagnostic::error(path, "pack directory name is not valid UTF-8")
        .hint("rename the directory to the pack's ref (lowercase letters, digits, `_` and `-`)")
}

/// The entries of `dir`, sorted by name (so every report comes in a stable order).
fn sorted_entries(dir: &Path, action: &'static str) -> Result<Vec<std::fs::DirEntry>, Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ctx(action, dir)?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Builds the plan. Input problems go into `Plan::diagnostics`; only
/// environment failures are `Err`. `facts` holds the validation facts of
/// earlier runs ([`crate::facts`]) and gets this run's.
pub fn plan(
    inputs: &Inputs,
    cache: &HashCache,
    facts: &mut LoadCache,
    progress: &Progress,
) -> Result<Plan, Error> {
    let mut diags = Diagnostics::default();
    let started = std::time::Instant::now();
    let phase = |name: &str| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "plan: {name} done"
        )
    };

    // 1. Packs, each name once across all --packs directories.
    let mut found: BTreeMap<String, FoundPack> = BTreeMap::new();
    for dir in &inputs.packs {
        for fp in discover(dir, &mut diags)? {
            if let Some(first) = found.get(&fp.name) {
                diags.push(
                    Diagnostic::error(
                        &fp.dir,
                        format!("pack `{}` is also in {}", fp.name, first.dir.display()),
                    )
                    .hint("each pack may come from one --packs directory only; remove one of them"),
                );
                continue;
            }
            found.insert(fp.name.clone(), fp);
        }
    }
    if found.is_empty() && !diags.has_errors() {
        // Publishing no pack would remove every pack from the volume.
        let dirs: Vec<String> = inputs
            .packs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        diags.push(
            Diagnostic::error(
                inputs.packs.first().map_or(Path::new("."), PathBuf::as_path),
                format!("no pack found in {}", dirs.join(", ")),
            )
            .hint("a pack is a directory holding pack.yaml (ref, label, version); pass a directory of packs, or one pack"),
        );
    }

    // 2. Source trees, in one walk, sorted by path; binaries trees overlay
    // them. (Their diagnostics are reported after the packs'.)
    let mut tree_diags = Diagnostics::default();
    let roots: Vec<(&Path, &str)> = found
        .values()
        .map(|fp| (fp.dir.as_path(), fp.name.as_str()))
        .collect();
    let mut nodes = scan_all(&roots, Origin::Source, false, &mut tree_diags)?;
    let mut from_binaries: BTreeMap<String, PathBuf> = BTreeMap::new();
    for root in &inputs.binaries {
        overlay(
            root,
            inputs.arch,
            &found,
            &mut nodes,
            &mut from_binaries,
            &mut tree_diags,
        )?;
    }
    for root in &inputs.deps {
        add_deps(root, inputs.arch, &found, &mut nodes, &mut tree_diags)?;
    }
    phase("scan");

    // 3. What the hash cache knows of the files, by stamp (nothing is read).
    let file_index: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.kind == Kind::File)
        .map(|(i, _)| i)
        .collect();
    let files: Vec<&Node> = file_index.iter().map(|&i| &nodes[i]).collect();
    let known = crate::hash::known(&files, cache);

    // 4. Load and validate each pack, then references across them. A YAML
    // file whose hash is known and whose facts were saved is not parsed again.
    let mut packs = vec![];
    for fp in found.values() {
        let hash_of = |path: &Path| -> Option<[u8; 32]> {
            let below = path.strip_prefix(&fp.dir).ok()?.to_str()?;
            let rel = format!("{}/{below}", fp.name);
            let at = files.binary_search_by(|n| n.rel.as_str().cmp(&rel)).ok()?;
            // Only a source file's own hash (not a binary laid over it).
            (files[at].origin == Origin::Source)
                .then(|| known.hashes[at].map(|h| h.sha256.0))
                .flatten()
        };
        let outcome = load_pack_summary_cached(&fp.dir, &hash_of, facts);
        diags.extend(outcome.diagnostics);
        packs.extend(outcome.pack);
    }
    diags.extend(references_of(&packs));
    diags.extend(tree_diags);
    phase("load packs");

    // 5. Entry points: present, and native ones runnable on the target (this
    // decides the published modes, which staged copies get at once).
    let mut force_exec = BTreeSet::new();
    for pack in &packs {
        entry_points(
            pack,
            inputs,
            &nodes,
            &from_binaries,
            &mut force_exec,
            &mut diags,
        )?;
    }
    let mode_of = |n: &Node| match () {
        _ if n.kind == Kind::Dir => MODE_DIR,
        _ if n.executable || force_exec.contains(&n.rel) => MODE_EXEC,
        _ => MODE_FILE,
    };
    phase("entry points");

    // 6. Hash every file the cache did not know; into a cold volume, copy
    // each one read while hashing it.
    let modes: Vec<u32> = files.iter().map(|n| mode_of(n)).collect();
    let seal = Seal::new(inputs.mtime, owner_string(inputs.owner).as_deref());
    // Staged in the layout of the pack objects, so that each pack's stage is
    // renamed into the store whole.
    let stage = match &inputs.stage {
        Some(store) if !diags.has_errors() => Some(Stage::create(store, &nodes)?),
        _ => None,
    };
    let bar = progress.bar("hashing", files.len() as u64);
    let hashed = match &stage {
        Some(st) => hash_all(
            &files,
            known,
            &|f, n| st.copy_hashing(n, modes[f], &seal),
            &|done| bar.set(done as u64),
        ),
        None => hash_all(&files, known, &read_only, &|done| bar.set(done as u64)),
    };
    bar.finish();
    let hashed = match hashed {
        Ok(h) => h,
        Err(e) => {
            if let Some(st) = stage {
                let _ = st.discard();
            }
            return Err(e);
        }
    };
    drop(files);
    let read: Vec<usize> = hashed.read.iter().map(|&f| file_index[f]).collect();
    let mut staged = vec![false; nodes.len()];
    if stage.is_some() {
        for &i in &read {
            staged[i] = true;
        }
    }
    let mut file_hashes = hashed.hashes.into_iter();
    let hashes: Vec<Option<FileHash>> = nodes
        .iter()
        .map(|n| match n.kind {
            Kind::File => file_hashes.next(),
            Kind::Dir => None,
        })
        .collect();

    phase("hash");

    // 7. The manifest (sorted already: nodes are).
    let entries = nodes
        .iter_mut()
        .zip(&hashes)
        .map(|(n, hash)| {
            let mode = mode_string(mode_of(n));
            Entry {
                path: std::mem::take(&mut n.rel),
                kind: n.kind,
                mode,
                size: hash.map(|_| n.stamp.size),
                sha256: hash.map(|h| h.sha256),
                origin: n.origin,
            }
        })
        .collect();
    let manifest = Manifest::from_sorted(Contents {
        format: FORMAT,
        arch: inputs.arch,
        mtime: inputs.mtime,
        owner: owner_string(inputs.owner),
        entries,
    });
    phase("manifest");
    Ok(Plan {
        manifest,
        nodes,
        hashes,
        packs,
        hashed: read,
        cache_unmatched: hashed.cache_unmatched,
        staged,
        stage,
        diagnostics: diags,
    })
}

/// The node at volume path `rel` in `nodes` (sorted by path).
fn find<'a>(nodes: &'a [Node], rel: &str) -> Option<&'a Node> {
    nodes
        .binary_search_by(|n| n.rel.as_str().cmp(rel))
        .ok()
        .map(|i| &nodes[i])
}

/// The pack directories of a binaries or dependencies tree `root` (`what`,
/// read as `action` in an error), by name; an entry naming no pack of the
/// sources is a warning, and skipped.
fn tree_packs(
    root: &Path,
    (action, what): (&'static str, &str),
    found: &BTreeMap<String, FoundPack>,
    diags: &mut Diagnostics,
) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = vec![];
    for e in sorted_entries(root, action)? {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if !found.contains_key(&name) {
            diags.push(
                Diagnostic::warning(
                    &path,
                    format!("no pack `{name}` among the sources; ignored"),
                )
                .hint(format!(
                    "{what} go only into packs whose sources are given with --packs"
                )),
            );
        } else if path.is_dir() {
            out.push((name, path));
        }
    }
    Ok(out)
}

/// `nodes` with `added` laid in, sorted by path, one node per path.
fn merge(nodes: &mut Vec<Node>, added: Vec<Node>) {
    if !added.is_empty() {
        nodes.extend(added);
        nodes.sort_by(|a, b| a.rel.cmp(&b.rel));
        nodes.dedup_by(|b, a| a.rel == b.rel);
    }
}

/// Lays the binaries tree `root` over `nodes` (sorted by path, and still sorted after).
fn overlay(
    root: &Path,
    arch: Arch,
    found: &BTreeMap<String, FoundPack>,
    nodes: &mut Vec<Node>,
    from_binaries: &mut BTreeMap<String, PathBuf>,
    diags: &mut Diagnostics,
) -> Result<(), Error> {
    let mut added = vec![];
    for (name, path) in tree_packs(root, ("read binaries tree", "binaries"), found, diags)? {
        for n in scan(&path, &name, Origin::Binaries, true, diags)? {
            let at = nodes.binary_search_by(|o| o.rel.cmp(&n.rel));
            if n.kind == Kind::Dir {
                if at.is_err() {
                    added.push(n);
                }
                continue;
            }
            let abs = n.abs();
            if let Some(first) = from_binaries.get(&n.rel) {
                diags.push(Diagnostic::error(
                    &abs,
                    format!(
                        "is also supplied by {}; two binaries trees give the same path",
                        first.display()
                    ),
                ));
                continue;
            }
            let bytes = std::fs::read(&abs).ctx("read", &abs)?;
            for p in check_native(&bytes, true, arch) {
                diags.push(
                    Diagnostic::error(&abs, format!("binary {}", p.cause())).hint(p.fix(arch)),
                );
            }
            match at.map(|i| &nodes[i]) {
                Ok(old) if old.kind == Kind::Dir => {
                    diags.push(Diagnostic::error(
                        old.abs(),
                        format!(
                            "is a directory in the sources, but {} is a file at the same path",
                            abs.display()
                        ),
                    ));
                    continue;
                }
                Ok(old) => diags.push(stale(old, &n)?),
                Err(_) => {}
            }
            from_binaries.insert(n.rel.clone(), abs);
            match at {
                Ok(i) => nodes[i] = n,
                Err(_) => added.push(n),
            }
        }
    }
    merge(nodes, added);
    Ok(())
}

/// Adds the dependencies tree `root` to `nodes` (sorted by path, and still
/// sorted after). Its files are data: libraries an interpreter loads, not
/// programs, so a shared object may be dynamic; but an ELF must be for `arch`
/// (a wheel of another platform is the seed's wrong-architecture bug one layer
/// up), and no file may replace one of the pack's own or a binary's.
fn add_deps(
    root: &Path,
    arch: Arch,
    found: &BTreeMap<String, FoundPack>,
    nodes: &mut Vec<Node>,
    diags: &mut Diagnostics,
) -> Result<(), Error> {
    let mut added: Vec<Node> = vec![];
    for (name, path) in tree_packs(
        root,
        ("read dependencies tree", "dependencies"),
        found,
        diags,
    )? {
        for n in scan(&path, &name, Origin::Deps, true, diags)? {
            match nodes.binary_search_by(|o| o.rel.cmp(&n.rel)) {
                Ok(_) if n.kind == Kind::Dir => continue,
                Ok(i) => {
                    diags.push(
                        Diagnostic::error(
                            n.abs(),
                            format!(
                                "would replace {} of the pack; dependencies never replace a pack's own files",
                                nodes[i].abs().display()
                            ),
                        )
                        .hint("rename the pack's file, or drop the requirement that installs this one"),
                    );
                    continue;
                }
                Err(_) => {}
            }
            if n.kind == Kind::File
                && let Some(machine) = elf_machine(&n.abs())?
                && Arch::from_elf_machine(machine) != Some(arch)
            {
                diags.push(
                    Diagnostic::error(
                        n.abs(),
                        format!("is an ELF for machine {machine:#x}, not {arch}: the dependencies were built for another architecture"),
                    )
                    .hint(format!("build them for {arch}: `scripts/build-pack-deps --arch {arch}`")),
                );
                continue;
            }
            added.push(n);
        }
    }
    merge(nodes, added);
    Ok(())
}

/// The `e_machine` of the ELF at `path`, or `None` when it is no ELF (only
/// its first 20 bytes are read).
fn elf_machine(path: &Path) -> Result<Option<u16>, Error> {
    use std::io::Read;
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).ctx("read", path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).ctx("read", path)? {
            0 => break,
            k => n += k,
        }
    }
    if n < head.len() || !attune_pack::is_elf(&head) {
        return Ok(None);
    }
    let bytes = [head[18], head[19]];
    // EI_DATA: 1 little-endian, 2 big-endian.
    Ok(Some(if head[5] == 2 {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    }))
}

/// The warning for a source file that a binaries tree replaces.
fn stale(old: &Node, new: &Node) -> Result<Diagnostic, Error> {
    let old_abs = old.abs();
    let bytes = std::fs::read(&old_abs).ctx("read", &old_abs)?;
    let what = match ElfFacts::parse(&bytes) {
        Ok(f) => format!("is a stale binary ({})", f.summary()),
        Err(_) => "is shadowed".to_string(),
    };
    Ok(Diagnostic::warning(
        &old_abs,
        format!(
            "{what}; the fresh binary {} is published instead",
            new.abs().display()
        ),
    )
    .hint(
        "delete it from the sources: compiled binaries come from the binaries tree, never from git",
    ))
}

fn entry_points(
    pack: &PackSummary,
    inputs: &Inputs,
    nodes: &[Node],
    from_binaries: &BTreeMap<String, PathBuf>,
    force_exec: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Result<(), Error> {
    let arch = inputs.arch;
    for ep in pack.entry_points() {
        let rel = format!("{}/{}", pack.pack_ref, ep.path.to_string_lossy());
        let native = ep.runner == RunnerType::Native;
        let declared = format!(
            "{} (declared in {})",
            ep.component,
            ep.declared_in.display()
        );
        let Some(node) = find(nodes, &rel) else {
            let expected_path = pack.dir.join(&ep.path);
            let d = if ep.may_be_absent() {
                // Upstream's executor implements some native actions itself (core.ask).
                Diagnostic::warning(
                    &expected_path,
                    format!("native entry point of {declared} is in neither the sources nor a binaries tree; upstream's executor may implement it (as core.ask), this project's worker will fail it"),
                )
                .hint(format!("supply it in a binaries tree (`<pack>/actions/...`) for {arch} if this project's worker should run it"))
            } else if native && inputs.sources_only && inputs.binaries.is_empty() {
                Diagnostic::warning(
                    &expected_path,
                    format!("native entry point of {declared} is not in the sources; a binaries tree must supply it"),
                )
                .hint(format!("assemble with `--binaries` from `scripts/build-pack-binaries --arch {arch}` (target/pack-binaries-{arch}) or `nix build .#pack-binaries-{arch}`"))
            } else if native {
                let p = attune_pack::NativeProblem::Missing;
                Diagnostic::error(
                    &expected_path,
                    format!("native entry point of {declared} {}", p.cause()),
                )
                .hint(p.fix(arch))
            } else {
                Diagnostic::error(&expected_path, format!("entry point of {declared} is missing"))
                    .hint("create the file, or correct `entry_point` (it is relative to the component's directory)")
            };
            diags.push(d);
            continue;
        };
        let node_abs = node.abs();
        if node.kind == Kind::Dir {
            diags.push(Diagnostic::error(
                &node_abs,
                format!("entry point of {declared} is a directory"),
            ));
            continue;
        }
        if !native {
            continue;
        }
        force_exec.insert(rel.clone());
        if from_binaries.contains_key(&rel) {
            continue; // checked when overlaid
        }
        let bytes = std::fs::read(&node_abs).ctx("read", &node_abs)?;
        for p in check_native(&bytes, true, arch) {
            diags.push(
                Diagnostic::error(
                    &node_abs,
                    format!("native entry point of {declared} {}", p.cause()),
                )
                .hint(p.fix(arch)),
            );
        }
        if !node.executable {
            diags.push(
                Diagnostic::warning(&node_abs, format!("native entry point of {declared} is not executable in the sources; published as 0555"))
                    .hint("run `chmod +x` on it in the sources"),
            );
        }
    }
    Ok(())
}
