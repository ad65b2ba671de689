//! The volume contract: layout, incremental generations, determinism, locking.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use predicates::prelude::*;

use crate::util::{Fixture, SENSOR, mode, stderr_of};

#[test]
fn publishes_the_atomic_writer_layout() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let r = f.assemble_ok();
    let generation = r["generation"].as_str().unwrap();
    assert_eq!(f.current_generation().as_deref(), Some(generation));
    assert_eq!(
        fs::read_link(f.vol().join("core")).unwrap().to_str(),
        Some("..data/core")
    );
    assert_eq!(
        fs::read_link(f.vol().join(".attune-manifest.json"))
            .unwrap()
            .to_str(),
        Some("..data/.attune-manifest.json")
    );
    assert_eq!(mode(&f.published("core/actions/echo.yaml")), 0o444);
    assert_eq!(mode(&f.published("core/actions/echo.sh")), 0o555);
    assert_eq!(mode(&f.published("core/actions")), 0o755);
    assert_eq!(mode(&f.published(SENSOR)), 0o555);
    assert_eq!(
        fs::metadata(f.published("core/pack.yaml")).unwrap().mtime(),
        1
    );
    assert_eq!(r["packs"], serde_json::json!(["core"]));
    f.assert_verifies();
}

#[test]
fn second_run_with_unchanged_inputs_writes_nothing() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let snapshot = |f: &Fixture| -> Vec<(String, i64, i64, u64)> {
        let mut v: Vec<_> = fs::read_dir(f.vol())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = fs::symlink_metadata(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.ctime_nsec() + m.ctime() * 1_000_000_000,
                    m.ino(),
                )
            })
            .collect();
        v.sort();
        v
    };
    // Let racy-timestamp entries settle so the cache covers every file.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = snapshot(&f);
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], true);
    assert_eq!(
        snapshot(&f),
        before,
        "the volume root changed on a no-op run"
    );
}

/// Only the objects on the path from the change to the pack are written; the
/// other directories are shared, and the new objects hard-link unchanged files.
#[test]
fn changed_file_makes_a_generation_that_shares_the_rest() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let first = f.assemble_ok();
    f.write("packs/core/actions/echo.sh", "#!/bin/sh\necho changed\n");
    let second = f.assemble_ok();
    assert_ne!(first["generation"], second["generation"]);
    assert_eq!(
        second["changed"],
        serde_json::json!(["core/actions/echo.sh"])
    );
    assert_eq!(second["copied"], 1);
    // The changed pack is one new object; its other files are hard-linked.
    assert_eq!(second["objects_written"], 1, "{second}");
    assert_eq!(
        second["hardlinked"].as_u64().unwrap(),
        second["files"].as_u64().unwrap() - 1,
        "{second}"
    );
    let old = f
        .vol()
        .join(first["generation"].as_str().unwrap())
        .join("core/pack.yaml");
    let new = f.published("core/pack.yaml");
    assert_eq!(
        fs::metadata(old).unwrap().ino(),
        fs::metadata(new).unwrap().ino()
    );
    f.assert_verifies();
}

#[test]
fn keeps_at_most_keep_generations_and_reuses_a_kept_one() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let mut gens = vec![];
    for i in 0..4 {
        f.write(
            "packs/core/actions/noop.sh",
            format!("#!/bin/sh\n# {i}\nexit 0\n"),
        );
        gens.push(f.assemble_ok()["generation"].as_str().unwrap().to_string());
    }
    assert_eq!(f.generations(), {
        let mut g = vec![gens[2].clone(), gens[3].clone()];
        g.sort();
        g
    });
    // Going back to the previous contents reuses the kept generation.
    f.write("packs/core/actions/noop.sh", "#!/bin/sh\n# 2\nexit 0\n");
    let r = f.assemble_ok();
    assert_eq!(r["generation"], gens[2].as_str());
    assert_eq!(r["reused"], true);
    f.assert_verifies();
}

#[test]
fn manifest_is_identical_across_umask_and_mtimes() {
    let a = Fixture::new();
    let b = Fixture::new();
    for f in [&a, &b] {
        f.fresh_sensor("v1");
    }
    // Different mtimes and permissive vs strict modes in b's sources.
    for entry in walkdir::WalkDir::new(b.packs()) {
        let p = entry.unwrap().into_path();
        let file = fs::File::open(&p).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000))
            .unwrap();
        if p.is_file() && p.extension().is_some_and(|e| e == "yaml") {
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        }
    }
    let run = |f: &Fixture, umask: &str| {
        let bin = assert_cmd::cargo::cargo_bin("packs-assemble");
        let status = std::process::Command::new("sh")
            .current_dir(f.tmp.path())
            .args(["-c", &format!("umask {umask}; exec \"$0\" assemble --packs packs --binaries bins --arch amd64 --out vol --no-sync -q"), bin.to_str().unwrap()])
            .env_remove("SOURCE_DATE_EPOCH")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        fs::read(f.vol().join(".attune-manifest.json")).unwrap()
    };
    assert_eq!(run(&a, "022"), run(&b, "077"));
    b.assert_verifies();
}

#[test]
fn source_date_epoch_sets_mtimes() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .assert()
        .success();
    assert_eq!(
        fs::metadata(f.published("core/pack.yaml")).unwrap().mtime(),
        1_700_000_000
    );
    f.assemble()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("SOURCE_DATE_EPOCH"));
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble()
        .arg("--dry-run")
        .assert()
        .success()
        .stdout(predicate::str::contains("dry run: would publish"))
        .stdout(predicate::str::contains(format!("+ {SENSOR}")));
    assert!(!f.vol().exists());
}

#[test]
fn same_pack_in_two_packs_directories_names_both() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    crate::util::copy_tree(&f.packs().join("core"), &f.path("more/core"));
    let out = f.assemble().args(["--packs", "more"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("more/core") && err.contains("packs/core"),
        "{err}"
    );
}

#[test]
fn concurrent_runs_serialise_on_the_lock() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let children: Vec<_> = (0..4)
        .map(|i| {
            f.write(&format!("packs/core/actions/extra{i}.sh"), "#!/bin/sh\n");
            f.spawn_assemble(&["--no-sync"])
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    f.assert_verifies();
}

#[test]
fn lock_held_elsewhere_times_out_with_exit_3() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(f.vol().join(".attune-lock"))
        .unwrap();
    lock.lock().unwrap();
    f.assemble()
        .args(["--lock-timeout", "1"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "another packs-assemble is publishing",
        ));
}

#[test]
fn volume_filled_by_copying_is_refused_unless_adopted() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write("vol/core/pack.yaml", "old copy");
    f.assemble()
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--adopt"));
    f.assemble().arg("--adopt").assert().success();
    assert_eq!(
        fs::read_link(f.vol().join("core")).unwrap().to_str(),
        Some("..data/core")
    );
    f.assert_verifies();
}

#[test]
fn usage_errors_exit_2() {
    let f = Fixture::new();
    f.cmd().args(["assemble", "--out", "vol"]).assert().code(2);
    f.cmd()
        .args([
            "assemble", "--packs", "packs", "--out", "vol", "--arch", "sparc",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("amd64"));
    f.cmd()
        .args(["assemble", "--packs", "nowhere", "--out", "vol"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nowhere"));
}

#[test]
fn check_reports_sensor_binary_as_expected_from_binaries() {
    let f = Fixture::new();
    f.cmd()
        .args(["check", "packs", "--arch", "arm64"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "checked 1 pack (core) for arm64: 0 errors, 1 warning",
        ))
        .stderr(predicate::str::contains("a binaries tree must supply it"));
}

#[test]
fn json_logs_on_request() {
    let f = Fixture::new();
    f.write("packs/core/actions/bad.yaml", "ref: core.bad\n");
    let out = f
        .cmd()
        .args(["--log-format", "json", "check", "packs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let first = stderr_of(&out).lines().next().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert!(v["path"].as_str().unwrap().ends_with("actions/bad.yaml"));
}

/// `nix build` leaves `result` as a symlink to the binaries tree, and a pack may be
/// given as a link to it: the roots given on the command line are followed
/// (nothing below them is).
#[test]
fn packs_and_binaries_given_through_symlinks() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    std::os::unix::fs::symlink(f.bins(), f.path("result")).unwrap();
    std::os::unix::fs::symlink(f.packs().join("core"), f.path("core")).unwrap();
    f.cmd()
        .args([
            "assemble",
            "--packs",
            "core",
            "--binaries",
            "result",
            "--arch",
            "amd64",
            "--out",
            "vol",
            "--no-sync",
        ])
        .assert()
        .success();
    assert_eq!(
        fs::read_link(f.vol().join("core")).unwrap().to_str(),
        Some("..data/core")
    );
    f.assert_verifies();
}

/// `--verify` re-reads what was published (init containers rely on its exit
/// code), and `--json` prints its result after verification, so that `ok`
/// agrees with the exit code (it printed `"ok": true` and exited 1).
#[test]
fn assemble_verify_checks_the_published_volume_and_json_agrees() {
    let f = crate::util::Fixture::new();
    f.fresh_sensor("v1");
    let out = f.assemble().args(["--verify", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", crate::util::stderr_of(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["ok"].as_bool(), r["verify"].as_array().map(Vec::len)),
        (Some(true), Some(0)),
        "{r}"
    );
    // A file damaged in place (same size, its mode put back): the next run
    // finds it, repairs it from the inputs, and verification then passes.
    let victim = f.published("core/actions/echo.sh");
    let len = std::fs::metadata(&victim).unwrap().len() as usize;
    let real = std::fs::canonicalize(&victim).unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&real, "x".repeat(len)).unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let out = f.assemble().args(["--verify", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", crate::util::stderr_of(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["up_to_date"], false, "{r}");
    assert_eq!(
        r["repaired"],
        serde_json::json!(["core/actions/echo.sh"]),
        "{r}"
    );
    assert_eq!(
        std::fs::read(f.published("core/actions/echo.sh")).unwrap(),
        std::fs::read(f.packs().join("core/actions/echo.sh")).unwrap()
    );
}

/// Every YAML file was parsed again on every run (on 100 packs of 49 actions
/// that was most of a no-change run). Unchanged YAML is not parsed again, and
/// references across packs are still checked on every run, from the facts.
#[test]
fn unchanged_yaml_is_not_parsed_again_and_references_are_still_checked() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/other/pack.yaml",
        "ref: other\nlabel: Other\nversion: 1.0.0\n",
    );
    f.write(
        "packs/other/rules/r.yaml",
        "ref: other.r\nlabel: R\ntrigger_ref: core.intervaltimer\naction_ref: core.noop\n",
    );
    let first = f.assemble_ok();
    assert!(first["yaml_parsed"].as_u64().unwrap() > 5, "{first}");
    // The hash cache leaves out files changed in the last two seconds.
    // (The next run hashes them for the cache, the one after records their
    // facts under those hashes.)
    std::thread::sleep(std::time::Duration::from_millis(2100));
    f.assemble_ok();
    f.assemble_ok();
    let r = f.assemble_ok();
    assert_eq!(r["yaml_parsed"], 0, "{r}");
    // One file changes: only it is parsed.
    let noop = f.packs().join("core/actions/noop.yaml");
    let text = fs::read_to_string(&noop).unwrap();
    fs::write(&noop, format!("{text}\n# changed\n")).unwrap();
    let r = f.assemble_ok();
    assert_eq!(r["yaml_parsed"], 1, "{r}");
    // The action the other pack's (cached) rule names goes: still an error.
    fs::remove_file(&noop).unwrap();
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("packs/other/rules/r.yaml")
            && stderr_of(&out).contains("core.noop"),
        "{}",
        stderr_of(&out)
    );
}
