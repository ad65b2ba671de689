//! The publish path against what an adversarial run found: each test is named
//! after what it guards, and each failed on the layout and publish path of
//! 67fc385 (directory objects linked by symlinks, pid-named temporaries,
//! stat-only "up to date").

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{Fixture, remove_tree, stderr_of};

/// Overwrites a published file in place, same size, its mode put back (what
/// root, or a chmod and a chmod back, can do to a read-only file).
fn damage_in_place(path: &Path) {
    let real = fs::canonicalize(path).unwrap();
    let meta = fs::metadata(&real).unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&real, "!".repeat(meta.len() as usize)).unwrap();
    fs::set_permissions(&real, meta.permissions()).unwrap();
}

/// Every entry below `root`, walked without following links: (path, is_dir).
fn no_follow_walk(root: &Path) -> Vec<(String, bool)> {
    let mut v = vec![];
    for e in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let e = e.unwrap();
        assert!(
            !e.file_type().is_symlink(),
            "{} is a link below the pack root",
            e.path().display()
        );
        v.push((
            e.path().strip_prefix(root).unwrap().display().to_string(),
            e.file_type().is_dir(),
        ));
    }
    v.sort();
    v
}

fn write_pack(f: &Fixture, name: &str, files: usize) {
    f.write(
        &format!("packs/{name}/pack.yaml"),
        format!("ref: {name}\nlabel: {name}\nversion: 1.0.0\n"),
    );
    for i in 0..files {
        f.write(
            &format!("packs/{name}/data/d{}/f{i}.txt", i % 3),
            format!("{name} {i}\n"),
        );
    }
}

#[test]
fn below_a_pack_root_there_are_only_real_directories_and_files() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let canonical = fs::canonicalize(f.vol().join("core")).unwrap();
    assert!(canonical.ends_with("core"), "{}", canonical.display());
    assert!(canonical.starts_with(fs::canonicalize(f.vol()).unwrap()));
    // What a reader walking without links sees is what the sources hold.
    let published = no_follow_walk(&canonical);
    let sources = no_follow_walk(&f.packs().join("core"));
    let mut with_sensor = sources.clone();
    if !with_sensor
        .iter()
        .any(|(p, _)| p == "sensors/attune-core-timer-sensor")
    {
        with_sensor.push(("sensors/attune-core-timer-sensor".into(), false));
        with_sensor.sort();
    }
    assert_eq!(published, with_sensor);
}

#[test]
fn an_unchanged_pack_is_reused_whole_and_only_the_changed_one_is_written() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    write_pack(&f, "alpha", 30);
    write_pack(&f, "beta", 30);
    f.assemble_ok();
    let before = |p: &str| fs::canonicalize(f.vol().join(p)).unwrap();
    let (core0, alpha0, beta0) = (before("core"), before("alpha"), before("beta"));
    f.write("packs/alpha/data/d0/f0.txt", "changed\n");
    let r = f.assemble_ok();
    assert_eq!(r["objects_written"], 1, "{r}");
    assert_eq!(r["objects_shared"], 2, "{r}");
    assert_eq!(r["copied"], 1, "{r}");
    assert_eq!(r["hardlinked"], 30, "{r}");
    assert_eq!(before("core"), core0);
    assert_eq!(before("beta"), beta0);
    assert_ne!(before("alpha"), alpha0);
    no_follow_walk(&before("alpha"));
    f.assert_verifies();
}

#[test]
fn identical_files_are_shared_by_hard_link_across_packs() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::new();
    f.fresh_sensor("v1");
    write_pack(&f, "alpha", 3);
    f.write("packs/alpha/same.txt", "the same bytes\n");
    f.write(
        "packs/beta/pack.yaml",
        "ref: beta\nlabel: beta\nversion: 1.0.0\n",
    );
    f.write("packs/beta/same.txt", "the same bytes\n");
    f.assemble_ok();
    let ino = |p: &str| fs::metadata(f.published(p)).unwrap().ino();
    assert_eq!(ino("alpha/same.txt"), ino("beta/same.txt"));
    // A later pack with the same file links to the published one.
    f.write(
        "packs/gamma/pack.yaml",
        "ref: gamma\nlabel: gamma\nversion: 1.0.0\n",
    );
    f.write("packs/gamma/copy.txt", "the same bytes\n");
    let r = f.assemble_ok();
    assert_eq!(r["copied"], 1, "only gamma/pack.yaml is new: {r}");
    assert_eq!(ino("gamma/copy.txt"), ino("alpha/same.txt"));
    f.assert_verifies();
}

/// A file damaged in place (same size) was reported "up to date",
/// hard-linked into the next generation and served again, with exit 0.
#[test]
fn a_file_damaged_in_place_is_repaired_never_reported_up_to_date_or_linked() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let good = fs::read(f.packs().join("core/actions/echo.yaml")).unwrap();
    damage_in_place(&f.published("core/actions/echo.yaml"));
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], false, "{r}");
    assert_eq!(r["repaired"], serde_json::json!(["core/actions/echo.yaml"]));
    assert_eq!(
        fs::read(f.published("core/actions/echo.yaml")).unwrap(),
        good
    );
    f.assert_verifies();
    // Damaged again, then another file changes: the damaged inode is not
    // hard-linked into the new generation.
    damage_in_place(&f.published("core/actions/echo.yaml"));
    f.write("packs/core/actions/noop.sh", "#!/bin/sh\n# v2\nexit 0\n");
    let r = f.assemble_ok();
    assert_eq!(r["repaired"], serde_json::json!(["core/actions/echo.yaml"]));
    assert_eq!(
        fs::read(f.published("core/actions/echo.yaml")).unwrap(),
        good
    );
    f.assert_verifies();
    // Files just written, or read within the settle window of their ctime,
    // are read again by the next run; once read after it (here a window of
    // 0 ms), everything is confirmed from the record, nothing read again.
    let settled = || {
        let out = f
            .assemble()
            .env("PACKS_ASSEMBLE_SETTLE_WINDOW_MS", "0")
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = settled();
    assert!(r["rehashed"].as_u64().unwrap() > 0, "{r}");
    let r = settled();
    assert_eq!(
        (r["up_to_date"].as_bool(), r["rehashed"].as_u64()),
        (Some(true), Some(0)),
        "{r}"
    );
}

/// A kept generation whose file was damaged was made current again by a run
/// with its inputs.
#[test]
fn a_damaged_kept_generation_is_never_made_current_again() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    let echo = fs::read(f.packs().join("core/actions/echo.sh")).unwrap();
    let v1_pack = fs::canonicalize(f.vol().join("core")).unwrap();
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho v2\n");
    f.assemble_ok();
    damage_in_place(&v1_pack.join("actions/echo.yaml"));
    f.write("packs/core/actions/echo.sh", echo);
    let r = f.assemble_ok();
    assert_eq!(r["reused"], false, "{r}");
    assert_eq!(r["generation"], g1.as_str());
    assert_eq!(
        fs::read(f.published("core/actions/echo.yaml")).unwrap(),
        fs::read(f.packs().join("core/actions/echo.yaml")).unwrap()
    );
    f.assert_verifies();
}

/// A `..tmp-link-<pid>` left between the commit and a pack link's rename
/// wedged every later run with the same pid ("File exists", exit 3): in a
/// container the publisher is pid 1 every time. Leftovers are swept by every
/// run, up-to-date ones too, and verify reports them.
#[test]
fn leftovers_of_a_killed_run_never_wedge_the_next_and_every_run_sweeps_them() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    // What a run killed at any moment can leave, whatever its pid was.
    for name in [
        "..tmp-link-1",
        "..tmp-data-1",
        "..tmp-1-0-link-0",
        "..tmp-trash-x-1",
    ] {
        std::os::unix::fs::symlink("..data/core", f.vol().join(name)).unwrap();
    }
    fs::create_dir_all(f.vol().join("..store/..tmp-1-0-object-3/core/actions")).unwrap();
    fs::write(f.vol().join(".attune-assemble-cache.tmp-1"), "x").unwrap();
    let (code, out, err) = f.verify();
    assert_eq!(code, 0, "leftovers are warnings: {out}{err}");
    assert!(
        err.contains("..tmp-link-1") && err.contains("left over"),
        "{err}"
    );
    assert!(err.contains("..tmp-1-0-object-3"), "{err}");
    // An up-to-date run sweeps them too.
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], true, "{r}");
    let left: Vec<String> = fs::read_dir(f.vol())
        .unwrap()
        .chain(fs::read_dir(f.vol().join("..store")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (_, out, err) = f.verify();
    assert!(out.contains("0 errors, 0 warnings"), "{out}{err}");
    // And a writing run after a leftover of its own kind succeeds.
    std::os::unix::fs::symlink("..data/core", f.vol().join("..tmp-link-1")).unwrap();
    f.write("packs/core/actions/new.sh", "#!/bin/sh\n");
    f.assemble_ok();
    f.assert_verifies();
}

/// `verify` passed with a pack's link missing (services did not see the pack).
#[test]
fn verify_fails_when_a_pack_link_is_missing() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    fs::remove_file(f.vol().join("core")).unwrap();
    let (code, out, err) = f.verify();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("vol/core: error: is missing: services do not see it"),
        "{err}"
    );
    assert_eq!(f.assemble_ok()["up_to_date"], true);
    f.assert_verifies();
}

/// A pack with 3,000 sibling directories failed under `ulimit -n 1024`:
/// every child directory was held open while queued.
#[test]
fn a_pack_with_3000_sibling_directories_publishes_under_ulimit_n_64() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/wide/pack.yaml",
        "ref: wide\nlabel: Wide\nversion: 1.0.0\n",
    );
    for i in 0..3000 {
        f.write(&format!("packs/wide/d{i:04}/x/f.txt"), format!("{i}\n"));
    }
    let bin = assert_cmd::cargo::cargo_bin("packs-assemble");
    for round in 0..2 {
        if round == 1 {
            f.write("packs/wide/d0007/x/f.txt", "changed\n");
        }
        let out = std::process::Command::new("sh")
            .current_dir(f.tmp.path())
            .args([
                "-c",
                "ulimit -n 64 && \"$0\" assemble --packs packs --binaries bins --arch amd64 --out vol --no-sync -q && exec \"$0\" verify vol -q",
                bin.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "round {round}: {}", stderr_of(&out));
    }
}

/// A volume published by 67fc385 (format 2: directories are links into the
/// store) upgrades in place: the next run publishes the new layout, the old
/// generation is kept as the previous one, and its objects go with it.
#[test]
fn a_volume_published_by_the_previous_release_upgrades_in_place() {
    let f = Fixture::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volume-67fc385.tar");
    let old = f.path("old");
    fs::create_dir(&old).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&fixture)
        .arg("-C")
        .arg(&old)
        .status()
        .unwrap();
    assert!(st.success());
    let vol = old.join("vol");
    let src = old.join("src");
    let cmd = |args: &[&str]| {
        let out = f.cmd().current_dir(&old).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr_of(&out),
        )
    };
    let (code, _, err) = cmd(&["verify", "vol"]);
    assert_eq!(
        code,
        Some(1),
        "the old layout breaks upstream readers: {err}"
    );
    assert!(err.contains("upgrades it in place"), "{err}");
    let assemble = [
        "assemble",
        "--packs",
        "src",
        "--arch",
        "amd64",
        "--out",
        "vol",
        "--no-sync",
        "--json",
    ];
    let (code, out, err) = cmd(&assemble);
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["previous"], "..aafaf1e1151170f85f635bae27453221", "{r}");
    let (code, out, err) = cmd(&["verify", "vol"]);
    assert_eq!(code, Some(0), "{out}{err}");
    no_follow_walk(&fs::canonicalize(vol.join("legacy")).unwrap());
    assert_eq!(
        fs::read(vol.join("legacy/actions/hello.sh")).unwrap(),
        b"#!/bin/sh\necho hello v2\n"
    );
    // The old generation stays as the previous one until the next change.
    assert!(vol.join("..aafaf1e1151170f85f635bae27453221").is_dir());
    fs::write(src.join("legacy/actions/lib/helper.txt"), "v3\n").unwrap();
    let (code, _, err) = cmd(&assemble);
    assert_eq!(code, Some(0), "{err}");
    assert!(!vol.join("..aafaf1e1151170f85f635bae27453221").exists());
    let store: Vec<String> = fs::read_dir(vol.join("..store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        store.len(),
        2,
        "the old directory objects are gone: {store:?}"
    );
    let (code, out, err) = cmd(&["verify", "vol"]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn history_lists_kept_generations_and_rollback_makes_one_current() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    write_pack(&f, "alpha", 2);
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    f.write("packs/alpha/data/d0/f0.txt", "v2\n");
    let g2 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    let out = f.cmd().args(["history", "vol", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["name"], g2.as_str());
    assert_eq!(h[0]["current"], true);
    assert_eq!(h[0]["changed"], serde_json::json!(["alpha"]));
    assert_eq!(h[1]["name"], g1.as_str());
    assert_eq!(h[1]["added"], serde_json::json!(["alpha", "core"]));
    assert!(h[1]["root_hash"].as_str().unwrap().starts_with("sha256:"));
    // Rollback (to the one before, by default) is atomic and verified.
    let out = f.cmd().args(["rollback", "vol"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(f.current_generation().as_deref(), Some(g1.as_str()));
    assert_eq!(
        fs::read(f.published("alpha/data/d0/f0.txt")).unwrap(),
        b"alpha 0\n"
    );
    f.assert_verifies();
    // A damaged kept generation is refused: exit 1, nothing changes.
    damage_in_place(&f.vol().join(&g2).join("alpha/data/d0/f0.txt"));
    let out = f.cmd().args(["rollback", "vol", &g2]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("sha256 mismatch"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(f.current_generation().as_deref(), Some(g1.as_str()));
    // An unknown generation is a usage error.
    let out = f
        .cmd()
        .args(["rollback", "vol", "..nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    // The next assemble with the newer inputs repairs and publishes them.
    let r = f.assemble_ok();
    assert_eq!(r["generation"].as_str().unwrap().trim_end_matches("-2"), g2);
    f.assert_verifies();
}

/// A kill at every mutation of a rollback leaves a volume verify accepts,
/// on the old or the new generation.
#[test]
fn killed_at_every_step_of_a_rollback_the_volume_stays_valid() {
    let setup = || {
        let f = Fixture::new();
        f.fresh_sensor("v1");
        write_pack(&f, "alpha", 2);
        let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
        remove_tree(&f.packs().join("alpha"));
        let g2 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
        (f, g1, g2)
    };
    let mut n = 1;
    loop {
        let (f, g1, g2) = setup();
        let out = f
            .cmd()
            .args(["rollback", "vol", "-q"])
            .env("PACKS_ASSEMBLE_CRASH_AFTER", n.to_string())
            .output()
            .unwrap();
        let current = f.current_generation().unwrap();
        assert!(current == g1 || current == g2, "step {n}: {current}");
        f.assert_verifies();
        if out.status.success() {
            assert_eq!(current, g1);
            break;
        }
        let out = f.cmd().args(["rollback", "vol", &g1]).output().unwrap();
        assert!(out.status.success(), "step {n}: {}", stderr_of(&out));
        f.assert_verifies();
        n += 1;
        assert!(n < 100, "a rollback of a few steps");
    }
    assert!(n > 2, "the hook fired inside the rollback ({n} steps)");
}
