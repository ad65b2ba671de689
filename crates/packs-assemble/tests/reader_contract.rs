//! The reader contract (ARCHITECTURE.md, "The packs volume"): upstream Attune's
//! readers see in a published volume exactly what they see in a `cp -a` copy of
//! the packs, and upstream's sentinel in the volume root survives every publish.
//!
//! Each reader is replayed here from upstream's behaviour (AndroxxTraxxon/attune;
//! the file and function are named above each replay), written for this test,
//! not copied. Every replay runs on two sides and must give the same lines:
//! - the published volume, read through `VOL/<pack>` as services read it;
//! - a copy made with the real `cp -a` of the same inputs: the pack sources with
//!   the binaries tree copied over them (what a copy script gives a reader).
//!
//! A replay reports a refusal as a line starting with `error:`; the `cp -a` side
//! must have none, so a replay that refuses everything cannot pass by agreeing.
//! `the_replays_agree_on_a_hand_made_plain_volume` runs every replay on volumes
//! laid out by hand as the contract says (a real tree at `..<gen>/<pack>`, or
//! `..<gen>/<pack> -> ../..store/<obj>/<pack>` with a real tree there), to show
//! that the replays pass where the contract holds.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::util::{Fixture, stderr_of};

/// The sentinel upstream's api writes into the volume root at every start.
const SENTINEL: &str = ".attune-packs-sentinel";

/// A second pack beside the core pack: a workflow action laid out as upstream's
/// docs say (`docs/agent-personas/workflow-author.md`: `actions/<name>.yaml`
/// with `workflow_file` relative to `actions/`, the graph in
/// `actions/workflows/<name>.workflow.yaml`), a standalone workflow in
/// `workflows/`, entry points in nested directories, a directory several
/// levels deep and an empty one.
const DEPLOY_PACK: &[(&str, &str)] = &[
    (
        "pack.yaml",
        "ref: deploy\nlabel: Deploy\ndescription: Deploys applications.\nversion: 1.0.0\n",
    ),
    (
        "actions/deploy_app.yaml",
        "ref: deploy.deploy_app\nlabel: Deploy App\ndescription: Build and roll out an app.\n\
         enabled: true\nworkflow_file: workflows/deploy_app.workflow.yaml\n\
         parameters:\n  app_name:\n    type: string\n    required: true\n\
         \x20 version:\n    type: string\n    default: latest\n\
         output:\n  status:\n    type: string\ntags:\n  - workflow\n",
    ),
    (
        "actions/workflows/deploy_app.workflow.yaml",
        "version: \"1.0.0\"\nvars:\n  built: false\ntasks:\n  - name: build\n    action: deploy.build\n\
         \x20   input:\n      app_name: \"{{ parameters.app_name }}\"\n    next:\n\
         \x20     - when: \"{{ succeeded() }}\"\n        do:\n          - retry\n\
         \x20 - name: retry\n    action: deploy.retry\noutput_map:\n  status: done\n",
    ),
    (
        "actions/build.yaml",
        "ref: deploy.build\nlabel: Build\nrunner_type: shell\nentry_point: lib/build.sh\n\
         parameters:\n  app_name:\n    type: string\n    required: true\n",
    ),
    (
        "actions/lib/build.sh",
        "#!/bin/sh\necho \"building $ATTUNE_APP_NAME\"\n",
    ),
    (
        "actions/retry.yaml",
        "ref: deploy.retry\nlabel: Retry\nrunner_type: shell\nentry_point: lib/net/http/retry.sh\n",
    ),
    ("actions/lib/net/http/retry.sh", "#!/bin/sh\necho retried\n"),
    (
        "workflows/rollback.yaml",
        "ref: deploy.rollback\nlabel: Rollback\nversion: \"1.0.0\"\ntasks:\n  - name: undo\n    action: deploy.retry\n",
    ),
    (
        "files/templates/nginx/sites/default.conf",
        "server { listen 80; }\n",
    ),
    ("files/templates/nginx/mime.types", "text/html html;\n"),
];

/// Empty directories of the second pack (a `cp -a` copy keeps them).
const DEPLOY_EMPTY_DIRS: &[&str] = &["actions/workflows/drafts"];

/// What upstream's api writes (`write_packs_sentinel`: pretty JSON, api_url and timestamp).
fn sentinel_bytes() -> Vec<u8> {
    serde_json::to_string_pretty(&serde_json::json!({
        "api_url": "http://attune-api:8080",
        "timestamp": "2025-06-01T12:00:00.123456789+00:00",
    }))
    .unwrap()
    .into_bytes()
}

/// An action as registered from the sources: what upstream's database holds
/// after loading, and so what its worker and loader look up later.
#[derive(Debug)]
struct Action {
    pack: String,
    action_ref: String,
    entry_point: String,
    workflow_file: Option<String>,
}

/// The inputs, a published volume, and a `cp -a` copy of the same inputs.
struct World {
    f: Fixture,
    copy: tempfile::TempDir,
    packs: Vec<String>,
    actions: Vec<Action>,
}

impl World {
    /// Core pack + the deploy pack with its Python dependencies (a
    /// `--deps` tree: `lib/python3.11/site-packages`, a compiled module
    /// among them), published; the sentinel written into the volume as
    /// upstream's api does once it starts; and the `cp -a` copy.
    fn new() -> World {
        let f = Fixture::new();
        f.fresh_sensor("v1");
        write_deploy_pack(&f);
        let site = "deps/deploy/lib/python3.11/site-packages";
        f.write(&format!("{site}/dep/__init__.py"), "from ._c import *\n");
        f.write(
            &format!("{site}/dep/_c.cpython-311-x86_64-linux-gnu.so"),
            attune_pack::fixtures::elf_bytes(attune_pack::fixtures::ElfSpec::dynamic(
                attune_pack::Arch::Amd64,
            )),
        );
        f.write(
            &format!("{site}/dep-1.0.dist-info/RECORD"),
            "dep/__init__.py,,\n",
        );
        let out = f.assemble().args(["--deps", "deps"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        fs::write(f.vol().join(SENTINEL), sentinel_bytes()).unwrap();

        let copy = tempfile::tempdir().unwrap();
        cp_a(&f.packs(), &copy.path().join("packs"));
        // The binaries tree over the sources, as `assemble --binaries` overlays
        // it, and the dependencies beside them, as `--deps` adds them.
        cp_a(&f.bins().join("."), &copy.path().join("packs"));
        cp_a(&f.path("deps").join("."), &copy.path().join("packs"));

        let mut packs = vec![];
        let mut actions = vec![];
        for dir in attune_pack::find_packs(&f.packs()).unwrap() {
            let outcome = attune_pack::load_pack(&dir);
            let pack = outcome
                .pack
                .unwrap_or_else(|| panic!("{}: {:?}", dir.display(), outcome.diagnostics));
            for a in &pack.actions {
                actions.push(Action {
                    pack: pack.meta.pack_ref.clone(),
                    action_ref: a.spec.action_ref.clone(),
                    entry_point: a.spec.entry_point.clone(),
                    workflow_file: a.spec.workflow_file.clone(),
                });
            }
            packs.push(pack.meta.pack_ref);
        }
        assert_eq!(packs, ["core", "deploy"]);
        assert!(
            actions.iter().any(|a| a.workflow_file.is_some()),
            "{actions:?}"
        );
        World {
            f,
            copy,
            packs,
            actions,
        }
    }

    /// The directory services open as `packs_base_dir`: the volume.
    fn published(&self) -> PathBuf {
        self.f.vol()
    }

    /// The `cp -a` copy, as `packs_base_dir`.
    fn copied(&self) -> PathBuf {
        self.copy.path().join("packs")
    }

    /// Runs `replay` on both sides: the `cp -a` side must have no refusal, and
    /// the published side must give the same lines.
    fn assert_same(&self, what: &str, replay: Replay) {
        assert_agree(what, &self.published(), &self.copied(), self, replay);
    }
}

fn write_deploy_pack(f: &Fixture) {
    for (rel, text) in DEPLOY_PACK {
        let p = f.write(&format!("packs/deploy/{rel}"), text);
        if rel.ends_with(".sh") {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for rel in DEPLOY_EMPTY_DIRS {
        fs::create_dir_all(f.packs().join("deploy").join(rel)).unwrap();
    }
}

/// The real `cp -a FROM TO`.
fn cp_a(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {}", stderr_of(&out));
}

/// A replay: what one upstream reader sees, given `packs_base_dir`, as lines.
type Replay = fn(&Path, &World) -> Vec<String>;

fn assert_agree(what: &str, published: &Path, copied: &Path, w: &World, replay: Replay) {
    let copy = replay(copied, w);
    let refused: Vec<&String> = copy.iter().filter(|l| l.starts_with("error:")).collect();
    assert!(
        refused.is_empty(),
        "{what}: the replay refuses even the cp -a copy (the replay is wrong): {refused:#?}"
    );
    assert!(!copy.is_empty(), "{what}: the replay saw nothing");
    let vol = replay(published, w);
    if vol != copy {
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (vol.iter().collect(), copy.iter().collect());
        assert!(
            a != b,
            "{what}: the same lines in another order\nvolume: {vol:#?}\ncp -a copy: {copy:#?}"
        );
        panic!(
            "{what}: the published volume ({}) differs from a cp -a copy\n\
             only in the volume: {:#?}\nonly in the cp -a copy: {:#?}",
            published.display(),
            a.difference(&b).collect::<Vec<_>>(),
            b.difference(&a).collect::<Vec<_>>(),
        );
    }
}

// ---------------------------------------------------------------------------
// Replays of upstream's readers
// ---------------------------------------------------------------------------

/// Upstream `crates/common/src/pack_registry/loader.rs`, `resolve_pack_relative_path`:
/// canonicalise the pack root and the base directory, join the relative path
/// to the canonical base and normalise it lexically (`normalize_path_from_base`),
/// and refuse it unless it starts with the canonical pack root.
fn resolve_pack_relative_path(
    pack_root: &Path,
    base_dir: &Path,
    relative_path: &str,
) -> Result<PathBuf, String> {
    let canonical_pack_root = pack_root
        .canonicalize()
        .map_err(|e| format!("Failed to resolve pack root '{}': {e}", pack_root.display()))?;
    let canonical_base_dir = base_dir.canonicalize().map_err(|e| {
        format!(
            "Failed to resolve base directory '{}': {e}",
            base_dir.display()
        )
    })?;
    let mut candidate = PathBuf::new();
    for c in canonical_base_dir.join(relative_path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                candidate.pop();
            }
            other => candidate.push(other.as_os_str()),
        }
    }
    if !candidate.starts_with(&canonical_pack_root) {
        return Err(format!(
            "Resolved path '{}' escapes pack root '{}'",
            candidate.display(),
            canonical_pack_root.display()
        ));
    }
    Ok(candidate)
}

/// Upstream `crates/common/src/pack_registry/loader.rs`, `load_workflow_for_action`
/// (its `load_actions` calls it for an action's `workflow_file`, with
/// `pack_dir/actions` as the actions dir): the pack root is the actions dir's
/// parent, the file is resolved by `resolve_pack_relative_path`, must exist,
/// and is read.
fn rust_loader_workflow_files(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for a in &w.actions {
        let Some(wf) = &a.workflow_file else { continue };
        let actions_dir = base.join(&a.pack).join("actions");
        let pack_root = actions_dir.parent().unwrap();
        let line = resolve_pack_relative_path(pack_root, &actions_dir, wf).and_then(|full| {
            if !full.exists() {
                return Err(format!(
                    "Workflow file '{wf}' not found at '{}'",
                    full.display()
                ));
            }
            read_below(pack_root, &full)
        });
        lines.push(match line {
            Ok(l) => format!("{}: {l}", a.action_ref),
            Err(e) => format!("error: {}: {e}", a.action_ref),
        });
    }
    lines
}

/// `file` read, named relative to the canonical `pack_root`, with its contents' hash.
fn read_below(pack_root: &Path, file: &Path) -> Result<String, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let root = pack_root.canonicalize().map_err(|e| e.to_string())?;
    let rel = file.strip_prefix(&root).map_err(|e| e.to_string())?;
    Ok(format!(
        "{} ({} bytes, sha256 {})",
        rel.display(),
        text.len(),
        hex(&Sha256::digest(text.as_bytes()))
    ))
}

/// Python's `os.path.realpath(path, strict=False)`, which `pathlib.Path.resolve()`
/// uses: components left to right, each symlink replaced by its target (a
/// relative target from the link's directory), `..` applied to the path
/// resolved so far, missing components kept as they are.
fn python_resolve(path: &Path) -> PathBuf {
    assert!(path.is_absolute(), "{}", path.display());
    let mut todo: Vec<OsString> = path
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut out = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop() {
        match Path::new(&name).components().next() {
            None | Some(Component::RootDir | Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                out.pop();
                continue;
            }
            _ => {}
        }
        let next = out.join(&name);
        match fs::read_link(&next) {
            Ok(target) => {
                links += 1;
                assert!(links < 100, "a symlink loop at {}", next.display());
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                todo.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
            }
            Err(_) => out = next,
        }
    }
    out
}

/// Upstream `scripts/load_core_pack.py`, `PackLoader.resolve_pack_relative_path`
/// (~line 111), as `upsert_workflow_definition` calls it for `workflow_file`
/// with `pack_dir / "actions"`: `(base_dir / relative_path).resolve()` must be
/// `is_relative_to(pack_dir.resolve())`, then exist, then it is loaded.
fn python_loader_workflow_files(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for a in &w.actions {
        let Some(wf) = &a.workflow_file else { continue };
        let pack_dir = base.join(&a.pack);
        let candidate = python_resolve(&pack_dir.join("actions").join(wf));
        let pack_root = python_resolve(&pack_dir);
        let line = if !candidate.starts_with(&pack_root) {
            Err(format!(
                "Resolved path '{}' escapes pack root '{}'",
                candidate.display(),
                pack_root.display()
            ))
        } else if !candidate.exists() {
            Err(format!(
                "Workflow file '{wf}' not found at {}",
                candidate.display()
            ))
        } else {
            read_below(&pack_dir, &candidate)
        };
        lines.push(match line {
            Ok(l) => format!("{}: {l}", a.action_ref),
            Err(e) => format!("error: {}: {e}", a.action_ref),
        });
    }
    lines
}

/// Upstream `crates/common/src/pack_registry/storage.rs`, `calculate_directory_checksum`:
/// `WalkDir::new(path).sort_by_file_name()` (links below the root not followed),
/// only entries whose `file_type().is_file()`, each hashing its path relative to
/// the root (lossy UTF-8 bytes) then its contents, into one SHA-256.
fn calculate_directory_checksum(path: &Path) -> Result<(String, Vec<String>), String> {
    if !path.exists() {
        return Err(format!("Path does not exist: {}", path.display()));
    }
    if !path.is_dir() {
        return Err(format!("Path is not a directory: {}", path.display()));
    }
    let mut hasher = Sha256::new();
    let mut files = vec![];
    for entry in WalkDir::new(path).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("Failed to walk directory: {e}"))?;
        if entry.file_type().is_file() {
            files.push(entry.path().to_path_buf());
        }
    }
    let mut hashed = vec![];
    for file in files {
        let rel = file.strip_prefix(path).map_err(|e| e.to_string())?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hashed.push(rel.to_string_lossy().into_owned());
        let mut f = fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut buffer = [0u8; 8192];
        loop {
            let n = f
                .read(&mut buffer)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok((hex(&hasher.finalize()), hashed))
}

/// `calculate_directory_checksum` of every `packs_base_dir/<pack>`, with the
/// files it hashed (so that a difference names them).
fn directory_checksums(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for pack in &w.packs {
        match calculate_directory_checksum(&base.join(pack)) {
            Ok((sum, hashed)) => {
                lines.push(format!(
                    "{pack}: checksum {sum} over {} files",
                    hashed.len()
                ));
                lines.extend(hashed.iter().map(|h| format!("{pack}: hashed {h}")));
            }
            Err(e) => lines.push(format!("error: {pack}: {e}")),
        }
    }
    lines
}

/// Whether a name in the volume root belongs to the writer or to Attune
/// (ARCHITECTURE.md: `..*` and `.attune-*`; readers skip them).
fn writer_owned(name: &str) -> bool {
    name.starts_with("..") || name.starts_with(".attune-")
}

/// Upstream `crates/common/src/workflow/loader.rs`, `scan_pack_directories`, and
/// `crates/common/src/pack_registry/storage.rs`, `PackStorage::list_installed`
/// (the same reader): `read_dir(packs_base_dir)`, every entry whose
/// `path.is_dir()` (links followed) is a pack.
/// Filtered here, unlike upstream: names starting with `..` or `.attune-` (the
/// writer's `..data`, `..<gen>`, `..store`, and the bookkeeping files), which
/// the contract says readers skip; upstream would list `..data`, `..<gen>` and
/// `..store` as directories too and find no pack files in them.
fn root_listing(base: &Path, _: &World) -> Vec<String> {
    let mut packs: Vec<String> = fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !writer_owned(n))
        .map(|n| format!("pack dir {n}"))
        .collect();
    packs.sort();
    packs
}

/// Upstream `crates/common/src/workflow/loader.rs`, `scan_workflow_files`, for the
/// two directories its `load_pack_workflows` scans (`<pack>/workflows`, then
/// `<pack>/actions/workflows`, where they exist): `read_dir`, every entry whose
/// `path.is_file()` and whose extension is yaml or yml is workflow
/// `<pack>.<stem without .workflow>`.
fn workflow_scan(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for pack in &w.packs {
        for dir in ["workflows", "actions/workflows"] {
            let workflows_dir = base.join(pack).join(dir);
            if !workflows_dir.exists() {
                continue;
            }
            let mut found = vec![];
            for e in fs::read_dir(&workflows_dir).unwrap() {
                let path = e.unwrap().path();
                let yaml = matches!(
                    path.extension().and_then(|x| x.to_str()),
                    Some("yaml" | "yml")
                );
                if path.is_file() && yaml {
                    let stem = path.file_stem().unwrap().to_string_lossy();
                    let name = stem.strip_suffix(".workflow").unwrap_or(&stem);
                    found.push(format!("{pack}/{dir}: workflow {pack}.{name}"));
                }
            }
            found.sort();
            lines.extend(found);
        }
    }
    lines
}

/// Upstream `crates/common/src/pack_registry/loader.rs`, `read_yaml_files`, as
/// `load_actions` (and the sensor, trigger, rule loaders) call it on
/// `<pack>/<kind>`: `read_dir`, entries whose `path.is_file()` with a yaml or
/// yml extension, sorted, read.
fn component_files(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for pack in &w.packs {
        for kind in ["actions", "sensors", "triggers", "rules"] {
            let dir = base.join(pack).join(kind);
            if !dir.exists() {
                continue;
            }
            let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            paths.sort();
            for p in paths {
                let text = fs::read(&p).unwrap();
                lines.push(format!(
                    "{pack}/{kind}/{}: sha256 {}",
                    p.file_name().unwrap().to_string_lossy(),
                    hex(&Sha256::digest(&text))
                ));
            }
        }
    }
    lines
}

/// A reader that lists every directory with `read_dir` and tells directories
/// from files by `path.is_dir()` / `path.is_file()` (links followed), as the
/// upstream listers above do, recursively below every pack root.
fn recursive_listing(base: &Path, w: &World) -> Vec<String> {
    fn list(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut names: Vec<OsString> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let rel = format!("{rel}/{}", name.to_string_lossy());
            if path.is_dir() {
                out.push(format!("{rel}/"));
                list(&path, &rel, out);
            } else if path.is_file() {
                out.push(format!(
                    "{rel} ({} bytes)",
                    fs::metadata(&path).unwrap().len()
                ));
            } else {
                out.push(format!("error: {rel} is neither a directory nor a file"));
            }
        }
    }
    let mut lines = vec![];
    for pack in &w.packs {
        list(&base.join(pack), pack, &mut lines);
    }
    lines
}

/// Upstream `crates/worker/src/executor.rs` (~line 660, the code path of a pack
/// action): `packs_base_dir.join(pack_ref).join("actions").join(entry_point)`
/// must exist, else the action fails with "Action file not found".
fn worker_entry_points(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for a in w.actions.iter().filter(|a| a.workflow_file.is_none()) {
        let path = base.join(&a.pack).join("actions").join(&a.entry_point);
        lines.push(if path.exists() {
            format!(
                "{}: actions/{} ({} bytes)",
                a.action_ref,
                a.entry_point,
                fs::read(&path).unwrap().len()
            )
        } else {
            format!(
                "error: {}: Action file not found: expected_path={}",
                a.action_ref,
                path.display()
            )
        });
    }
    lines
}

/// The contract's first clause, seen by a reader that canonicalises: the
/// canonical path of `packs_base_dir/<pack>` ends in `/<pack>`.
fn canonical_pack_roots(base: &Path, w: &World) -> Vec<String> {
    w.packs
        .iter()
        .map(|pack| {
            let real = fs::canonicalize(base.join(pack)).unwrap();
            if real.file_name().is_some_and(|n| n == pack.as_str()) {
                format!("{pack}: canonical path ends in /{pack}")
            } else {
                format!(
                    "error: {pack}: canonical path {} does not end in /{pack}",
                    real.display()
                )
            }
        })
        .collect()
}

/// The contract's first clause, seen by a walk that does not follow links
/// (walkdir's defaults, as `calculate_directory_checksum` walks): below the pack
/// root every entry is a directory or a regular file.
fn no_follow_walk(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for pack in &w.packs {
        let mut dirs = 0;
        let mut files = 0;
        for e in WalkDir::new(base.join(pack))
            .min_depth(1)
            .sort_by_file_name()
        {
            let e = e.unwrap();
            let t = e.file_type();
            if t.is_dir() {
                dirs += 1;
            } else if t.is_file() {
                files += 1;
            } else {
                let rel = e.path().strip_prefix(base).unwrap().display().to_string();
                match fs::read_link(e.path()) {
                    Ok(target) => lines.push(format!(
                        "error: {rel} is a symlink (-> {})",
                        target.display()
                    )),
                    Err(_) => lines.push(format!("error: {rel} is {t:?}")),
                }
            }
        }
        lines.push(format!(
            "{pack}: {dirs} directories, {files} files, nothing else"
        ));
    }
    lines
}

/// Every replay, for the self-test on a plain volume.
const REPLAYS: &[(&str, Replay)] = &[
    (
        "loader.rs resolve_pack_relative_path (workflow_file)",
        rust_loader_workflow_files,
    ),
    (
        "load_core_pack.py resolve_pack_relative_path (workflow_file)",
        python_loader_workflow_files,
    ),
    (
        "storage.rs calculate_directory_checksum",
        directory_checksums,
    ),
    ("scan_pack_directories / list_installed", root_listing),
    ("workflow/loader.rs scan_workflow_files", workflow_scan),
    ("pack_registry/loader.rs read_yaml_files", component_files),
    (
        "read_dir + is_dir/is_file below each pack",
        recursive_listing,
    ),
    ("worker executor entry point", worker_entry_points),
    ("canonical pack root", canonical_pack_roots),
    ("no-follow walk below the pack root", no_follow_walk),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Readers see what a cp -a copy gives them
// ---------------------------------------------------------------------------

#[test]
fn rust_loader_accepts_a_published_workflow_file_inside_its_pack() {
    World::new().assert_same(
        "loader.rs resolve_pack_relative_path (workflow_file)",
        rust_loader_workflow_files,
    );
}

#[test]
fn python_loader_accepts_a_published_workflow_file_inside_its_pack() {
    World::new().assert_same(
        "load_core_pack.py resolve_pack_relative_path (workflow_file)",
        python_loader_workflow_files,
    );
}

/// The variable that makes the test binary a helper that unpacks an archive
/// from stdin into the directory it names (see [`unpack_helper`]).
const UNPACK_INTO: &str = "PACKS_ASSEMBLE_TEST_UNPACK_INTO";

/// The uid (and gid) upstream's images run as.
const UPSTREAM_UID: u32 = 1000;

/// Upstream's api, `GET /api/v1/packs/<ref>/archive` (`tar::Builder::append_dir_all`
/// of `packs_base_dir/<pack>` under the pack's name: modes from disk), then its
/// worker syncing the pack into its own packs directory as uid 1000 (its images'
/// user): an archive read entry by entry with `set_preserve_permissions(false)`,
/// each entry unpacked in turn ([`unpack_helper`], run as a process of that uid
/// when this test runs as root), failing the pack at its first error as
/// upstream's "Failed to extract pack" does. The lines: every unpacked entry
/// with its type, contents hash and whether its owner may run it.
fn archive_and_unpack_as_uid_1000(base: &Path, w: &World) -> Vec<String> {
    let mut lines = vec![];
    for pack in &w.packs {
        let mut b = tar::Builder::new(vec![]);
        b.append_dir_all(pack, base.join(pack)).unwrap();
        let archive = b.into_inner().unwrap();
        // The worker's packs directory: its own, below a directory it can reach.
        let home = tempfile::tempdir().unwrap();
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dest = home.path().join("packs");
        fs::create_dir(&dest).unwrap();
        let mut helper = Command::new(std::env::current_exe().unwrap());
        helper
            .args([
                "reader_contract::unpack_helper",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(UNPACK_INTO, &dest)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&dest, Some(UPSTREAM_UID), Some(UPSTREAM_UID)).unwrap();
            std::os::unix::process::CommandExt::uid(&mut helper, UPSTREAM_UID);
            std::os::unix::process::CommandExt::gid(&mut helper, UPSTREAM_UID);
        }
        let mut child = helper.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &archive).unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            lines.push(format!(
                "error: Failed to extract pack '{pack}': {}",
                stderr_of(&out).trim()
            ));
            continue;
        }
        for e in WalkDir::new(dest.join(pack)).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(&dest).unwrap().display().to_string();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            lines.push(if meta.is_dir() {
                format!("{rel}/")
            } else if meta.is_file() {
                let sha = hex(&Sha256::digest(fs::read(e.path()).unwrap()));
                let exec = meta.permissions().mode() & 0o100 != 0;
                format!("{rel} {sha} exec={exec}")
            } else {
                format!("error: {rel} is a {:?}", meta.file_type())
            });
        }
    }
    lines
}

/// The worker's side of [`archive_and_unpack_as_uid_1000`], run by it as a
/// separate process (under uid 1000); does nothing in a normal test run.
#[test]
#[ignore = "a helper that archive_and_unpack_as_uid_1000 runs under uid 1000"]
fn unpack_helper() {
    let Some(dest) = std::env::var_os(UNPACK_INTO) else {
        return;
    };
    let mut archive = tar::Archive::new(std::io::stdin().lock());
    archive.set_preserve_permissions(false);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if let Err(e) = entry.unpack_in(&dest) {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

#[test]
fn upstream_archive_unpacks_as_uid_1000_as_from_a_cp_copy() {
    World::new().assert_same(
        "api archive (append_dir_all) + worker unpack as uid 1000",
        archive_and_unpack_as_uid_1000,
    );
}

#[test]
fn directory_checksum_of_a_published_pack_equals_a_cp_copy() {
    World::new().assert_same(
        "storage.rs calculate_directory_checksum",
        directory_checksums,
    );
}

#[test]
fn pack_listing_of_the_volume_root_equals_a_cp_copy() {
    World::new().assert_same("scan_pack_directories / list_installed", root_listing);
}

#[test]
fn read_dir_listings_below_a_published_pack_equal_a_cp_copy() {
    let w = World::new();
    w.assert_same("workflow/loader.rs scan_workflow_files", workflow_scan);
    w.assert_same("pack_registry/loader.rs read_yaml_files", component_files);
    w.assert_same(
        "read_dir + is_dir/is_file below each pack",
        recursive_listing,
    );
}

#[test]
fn worker_finds_every_published_entry_point_as_in_a_cp_copy() {
    World::new().assert_same("worker executor entry point", worker_entry_points);
}

#[test]
fn canonical_path_of_a_published_pack_ends_in_its_name() {
    World::new().assert_same("canonical pack root", canonical_pack_roots);
}

#[test]
fn no_symlink_is_crossed_below_a_published_pack_root() {
    World::new().assert_same("no-follow walk below the pack root", no_follow_walk);
}

/// A volume laid out by hand as the contract allows: `..data -> ..<gen>`,
/// `<pack> -> ..data/<pack>`, the sentinel, and each pack a real tree made
/// with `cp -a`, either in the generation (`..<gen>/<pack>`) or, with
/// `store`, in a content store (`..<gen>/<pack> -> ../..store/<obj>/<pack>`).
fn hand_made_volume(w: &World, vol: &Path, store: bool) {
    let generation = format!("..{}", "0".repeat(32));
    fs::create_dir_all(vol.join(&generation)).unwrap();
    for (i, pack) in w.packs.iter().enumerate() {
        let in_generation = vol.join(&generation).join(pack);
        if store {
            let obj = format!("{i:032x}");
            fs::create_dir_all(vol.join("..store").join(&obj)).unwrap();
            cp_a(
                &w.copied().join(pack),
                &vol.join("..store").join(&obj).join(pack),
            );
            symlink(format!("../..store/{obj}/{pack}"), &in_generation).unwrap();
        } else {
            cp_a(&w.copied().join(pack), &in_generation);
        }
        symlink(format!("..data/{pack}"), vol.join(pack)).unwrap();
    }
    symlink(&generation, vol.join("..data")).unwrap();
    fs::write(vol.join(SENTINEL), sentinel_bytes()).unwrap();
}

/// The replays themselves: on volumes laid out by hand as the contract says,
/// every replay agrees with the `cp -a` copy. A replay that failed here would
/// be wrong, not the volume.
#[test]
fn the_replays_agree_on_a_hand_made_plain_volume() {
    let w = World::new();
    let tmp = tempfile::tempdir().unwrap();
    for (name, store) in [("in-generation", false), ("in-store", true)] {
        let vol = tmp.path().join(name);
        hand_made_volume(&w, &vol, store);
        for (what, replay) in REPLAYS {
            assert_agree(&format!("{name}: {what}"), &vol, &w.copied(), &w, *replay);
        }
    }
}

// ---------------------------------------------------------------------------
// The sentinel upstream's api writes is upstream's: accepted and kept
// ---------------------------------------------------------------------------

/// A published volume with the sentinel written into its root.
fn with_sentinel() -> Fixture {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    write_deploy_pack(&f);
    f.assemble_ok();
    fs::write(f.vol().join(SENTINEL), sentinel_bytes()).unwrap();
    f
}

/// Runs `assemble` with `extra` flags: it must succeed and keep the sentinel
/// byte for byte; returns its JSON result.
fn assemble_keeps_sentinel(f: &Fixture, extra: &[&str], context: &str) -> serde_json::Value {
    let out = f.assemble().args(extra).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{context}: assemble {extra:?} failed with the sentinel in the volume root:\n{}",
        stderr_of(&out)
    );
    match fs::read(f.vol().join(SENTINEL)) {
        Err(e) => panic!("{context}: assemble {extra:?} removed the sentinel ({e})"),
        Ok(b) => assert!(
            b == sentinel_bytes(),
            "{context}: assemble {extra:?} changed the sentinel to {:?}",
            String::from_utf8_lossy(&b)
        ),
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn verify_accepts_the_sentinel_upstream_writes() {
    let f = with_sentinel();
    let (code, out, err) = f.verify();
    assert_eq!(code, 0, "verify refused upstream's sentinel:\n{out}{err}");
}

#[test]
fn publishing_unchanged_and_changed_inputs_keeps_the_sentinel() {
    let f = with_sentinel();
    let r = assemble_keeps_sentinel(&f, &[], "unchanged inputs");
    assert_eq!(r["up_to_date"], true, "{r}");
    f.write(
        "packs/deploy/actions/lib/build.sh",
        "#!/bin/sh\necho rebuilt\n",
    );
    let r = assemble_keeps_sentinel(&f, &[], "one file changed");
    assert_eq!(
        r["changed"],
        serde_json::json!(["deploy/actions/lib/build.sh"])
    );
    assert_eq!(
        fs::read(f.published("deploy/actions/lib/build.sh")).unwrap(),
        b"#!/bin/sh\necho rebuilt\n"
    );
    f.assert_verifies();
}

/// `--adopt` deletes what neither this tool nor upstream wrote, and only that.
#[test]
fn adopt_keeps_the_sentinel() {
    let f = with_sentinel();
    assemble_keeps_sentinel(&f, &["--adopt"], "--adopt, unchanged inputs");
    // With a change, so that the publish runs to its end and adopts.
    fs::write(f.vol().join("left-by-a-copy-script.txt"), "x").unwrap();
    f.write(
        "packs/deploy/files/templates/nginx/mime.types",
        "text/css css;\n",
    );
    assemble_keeps_sentinel(&f, &["--adopt"], "--adopt, one file changed");
    assert!(
        !f.vol().join("left-by-a-copy-script.txt").exists(),
        "--adopt removes what is neither ours nor upstream's"
    );
    f.assert_verifies();
}

#[test]
fn force_keeps_the_sentinel() {
    let f = with_sentinel();
    let r = assemble_keeps_sentinel(&f, &["--force"], "--force");
    assert_eq!(r["up_to_date"], false, "{r}");
    f.assert_verifies();
}

/// The api may start before the first publish: a volume that holds only the
/// sentinel is an empty volume, and the first publish keeps the sentinel.
#[test]
fn a_first_publish_into_a_volume_holding_only_the_sentinel_keeps_it() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    fs::create_dir_all(f.vol()).unwrap();
    fs::write(f.vol().join(SENTINEL), sentinel_bytes()).unwrap();
    assemble_keeps_sentinel(&f, &[], "first publish");
    f.assert_verifies();
}
