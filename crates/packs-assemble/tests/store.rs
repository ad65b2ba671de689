//! The object store that generations share: damage is found and repaired,
//! objects an interrupted run named are never trusted, garbage collection
//! never frees what a kept generation uses, and deep trees stay readable.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use attune_volume::hash::hash_file;
use attune_volume::manifest::Manifest;
use attune_volume::scan::Kind;

use crate::util::Fixture;

/// The objects in the store, and those some generation lists.
fn objects(f: &Fixture) -> (BTreeSet<String>, BTreeSet<String>) {
    let store = f.vol().join("..store");
    let present = fs::read_dir(&store)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("..tmp-"))
                .collect()
        })
        .unwrap_or_default();
    let mut listed = BTreeSet::new();
    for g in f.generations() {
        if let Ok(text) = fs::read_to_string(f.vol().join(&g).join(".attune-objects")) {
            listed.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(' ').map(|(_, o)| o.to_string())),
            );
        }
    }
    (present, listed)
}

/// Damages a published file: overwrites its inode (`in_place`, which every
/// object holding it shares), or replaces it in its directory with another
/// inode (what a power cut can leave of a file written just before).
fn damage(path: &Path, in_place: bool) {
    let real = fs::canonicalize(path.parent().unwrap()).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
    if in_place {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    } else {
        fs::remove_file(path).unwrap();
    }
    fs::write(path, "damaged\n").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o555)).unwrap();
}

/// Every kept generation, not only the current one, holds exactly its manifest.
fn assert_every_generation_complete(f: &Fixture, context: &str) {
    for g in f.generations() {
        let dir = f.vol().join(&g);
        let m = Manifest::read(&dir.join(".attune-manifest.json"))
            .unwrap_or_else(|e| panic!("{context}: {g}: {e}"));
        for e in &m.contents.entries {
            let p = dir.join(&e.path);
            let meta =
                fs::metadata(&p).unwrap_or_else(|err| panic!("{context}: {g}/{}: {err}", e.path));
            match e.kind {
                Kind::Dir => assert!(meta.is_dir(), "{context}: {g}/{}", e.path),
                Kind::File => assert_eq!(
                    Some(hash_file(&p).unwrap().sha256),
                    e.sha256,
                    "{context}: {g}/{}",
                    e.path
                ),
            }
        }
    }
}

#[test]
fn verify_finds_a_damaged_shared_object_and_force_repairs_it() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho v2\n");
    let second = f.assemble_ok();
    // The file is one inode shared by both generations: damage it once.
    let victim = f.published("core/triggers/intervaltimer.yaml");
    assert!(victim.is_file());
    damage(&victim, true);
    let (code, out, err) = f.verify();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("intervaltimer.yaml")
            && err.contains("sha256 mismatch")
            && err.contains("--force"),
        "{err}"
    );
    // --force publishes fresh objects, none linked from the damaged ones.
    let forced = f.assemble().args(["--force", "--json"]).assert().success();
    let r: serde_json::Value = serde_json::from_slice(&forced.get_output().stdout).unwrap();
    assert_eq!(r["hardlinked"], 0, "{r}");
    assert_eq!(r["objects_shared"], 0, "{r}");
    assert_ne!(r["generation"], second["generation"]);
    f.assert_verifies();
    // Later runs share with the repaired copy, never with the damaged one.
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho v3\n");
    let later = f.assemble_ok();
    assert_eq!(
        later["hardlinked"].as_u64().unwrap(),
        later["files"].as_u64().unwrap() - 1,
        "{later}"
    );
    f.assert_verifies();
    assert_ne!(
        fs::read(f.published("core/triggers/intervaltimer.yaml")).unwrap(),
        b"damaged\n"
    );
}

#[test]
fn an_object_an_interrupted_run_named_is_never_reused() {
    let setup = || {
        let f = Fixture::new();
        f.fresh_sensor("v1");
        f.assemble_ok();
        f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho v2\n");
        f
    };
    let steps = setup().assemble_ok()["steps"].as_u64().unwrap();
    let mut hit = 0;
    for n in 1..=steps {
        let f = setup();
        f.assemble_killed_at(n);
        let (present, listed) = objects(&f);
        let Some(orphan) = present.difference(&listed).next() else {
            continue;
        };
        // A power cut could leave such an object named but empty: damage it
        // and check that the next run does not publish it.
        hit += 1;
        let dir = f.vol().join("..store").join(orphan);
        let file = walkdir::WalkDir::new(&dir)
            .into_iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_type().is_file())
            .expect("an object with a file")
            .into_path();
        damage(&file, false);
        f.assemble_ok();
        f.assert_verifies();
        let (present, listed) = objects(&f);
        assert_eq!(present, listed, "step {n}: unreachable objects stay");
    }
    assert!(
        hit > 0,
        "no step left a named object that no generation lists"
    );
}

#[test]
fn garbage_collection_never_frees_what_a_kept_generation_uses() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..40 {
        // A random change: write, rewrite or delete a file in a random directory.
        let path = format!("packs/core/extra/d{}/f{}.txt", next(4), next(6));
        match next(3) {
            0 => {
                let _ = fs::remove_file(f.path(&path));
            }
            _ => {
                f.write(&path, format!("{round} {}\n", next(3)));
            }
        }
        let keep = 1 + next(4);
        let out = f
            .assemble()
            .args(["--keep", &keep.to_string(), "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let context = format!("round {round}, --keep {keep}");
        // An up-to-date run writes nothing, so it collects nothing either.
        if r["up_to_date"] == false {
            assert!(
                f.generations().len() as u64 <= keep,
                "{context}: {:?}",
                f.generations()
            );
        }
        assert_every_generation_complete(&f, &context);
        let (present, listed) = objects(&f);
        assert_eq!(
            present, listed,
            "{context}: the store holds exactly what generations list"
        );
    }
    f.assert_verifies();
}

#[test]
fn a_tree_deeper_than_the_link_limit_is_published_and_readable() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let deep: String = (0..45).map(|i| format!("l{i}/")).collect();
    f.write(&format!("packs/core/{deep}leaf.txt"), "deep\n");
    f.assemble_ok();
    f.assert_verifies();
    // 45 directory levels: without inlining this path would resolve through
    // more than Linux's 40 links.
    assert_eq!(
        fs::read(f.published(&format!("core/{deep}leaf.txt"))).unwrap(),
        b"deep\n"
    );
    f.write(&format!("packs/core/{deep}leaf.txt"), "deeper\n");
    let r = f.assemble_ok();
    assert_eq!(r["copied"], 1, "{r}");
    assert_eq!(
        fs::read(f.published(&format!("core/{deep}leaf.txt"))).unwrap(),
        b"deeper\n"
    );
    f.assert_verifies();
}

/// A cold volume copies files while hashing them; one whose hash cache
/// survived (its generations were deleted) copies the cached files instead,
/// beside the staged ones in the same directory.
#[test]
fn a_cold_volume_with_a_warm_cache_mixes_staged_and_copied_files() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let first = f.assemble_ok();
    assert_eq!(first["copied"], first["files"], "{first}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    f.assemble_ok(); // the cache now holds every file
    for e in fs::read_dir(f.vol()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() == ".attune-assemble-cache" {
            continue;
        }
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            crate::util::remove_tree(&p);
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho staged\n");
    let r = f.assemble_ok();
    assert_eq!(r["copied"], r["files"], "{r}");
    f.assert_verifies();
    assert_eq!(
        fs::read(f.published("core/actions/echo.sh")).unwrap(),
        b"#!/bin/sh\necho staged\n"
    );
    let leftovers: Vec<_> = fs::read_dir(f.vol())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The Docker and Kubernetes init containers publish as uid 1000, and then a
/// sealed (0555) directory can be renamed only within its own parent (moving it
/// to another one rewrites its `..`). Run as root, this test drops to uid 1000.
#[test]
fn a_publisher_without_root_publishes_cold_and_incrementally() {
    use std::os::unix::process::CommandExt;
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let root = rustix::process::geteuid().is_root();
    let run = || {
        if root {
            for e in walkdir::WalkDir::new(f.tmp.path()) {
                std::os::unix::fs::lchown(e.unwrap().path(), Some(1000), Some(1000)).unwrap();
            }
        }
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("packs-assemble"));
        cmd.current_dir(f.tmp.path())
            .args(crate::util::ASSEMBLE)
            .args(["--no-sync", "--json"])
            .env_remove("PACKS_ASSEMBLE_CRASH_AFTER");
        if root {
            cmd.uid(1000).gid(1000);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let cold = run();
    assert_eq!(cold["copied"], cold["files"], "{cold}");
    f.assert_verifies();
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho v2\n");
    let again = run();
    assert_eq!(again["copied"], 1, "{again}");
    f.assert_verifies();
    // Beyond --keep, old generations and their objects are collected: a
    // sealed object must be moved aside within the store, not to the root.
    for v in 3..6 {
        f.write(
            "packs/core/actions/echo.sh",
            format!("#!/bin/sh\necho v{v}\n"),
        );
        let r = run();
        assert_eq!(r["copied"], 1, "{r}");
    }
    f.assert_verifies();
    assert_eq!(f.generations().len(), 2);
}
