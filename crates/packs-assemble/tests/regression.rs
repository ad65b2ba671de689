//! Regressions of the copy script that packs-assemble replaces. Each test is
//! named after the outage it guards against.

use std::fs;

use attune_pack::Arch;
use attune_pack::fixtures::ElfSpec;
use predicates::prelude::*;

use crate::util::{Fixture, SENSOR, mode, stderr_of};

/// `cp -rf` overwrote the fresh static sensor with a stale dynamic one left in
/// the host's source tree, and the sensor died with "failed to open elf at
/// /lib64/ld-linux-x86-64.so.2".
#[test]
fn stale_host_binary_in_sources_never_replaces_the_fresh_static_one() {
    let f = Fixture::new();
    f.write_elf(&format!("packs/{SENSOR}"), ElfSpec::dynamic(Arch::Amd64));
    let fresh = f.fresh_sensor("v1");
    let out = f.assemble().output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        fs::read(f.published(SENSOR)).unwrap(),
        fs::read(&fresh).unwrap()
    );
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("packs/{SENSOR}: warning: is a stale binary")),
        "the stale file is named: {err}"
    );
    assert!(
        err.contains("stale binary")
            && err.contains("dynamic")
            && err.contains("ld-linux-x86-64.so.2"),
        "{err}"
    );
    f.assert_verifies();
}

/// The volume kept an old binary after an upgrade because the copy skipped it.
#[test]
fn upgrade_replaces_the_binary_in_an_existing_volume() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let v2 = f.fresh_sensor("v2");
    let r = f.assemble_ok();
    assert_eq!(r["changed"], serde_json::json!([SENSOR]));
    assert_eq!(
        fs::read(f.published(SENSOR)).unwrap(),
        fs::read(&v2).unwrap()
    );
    f.assert_verifies();
}

/// Removed files stayed in the volume ("changes not visible, recreate the volume").
#[test]
fn deleted_file_disappears_from_the_volume() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    assert!(f.published("core/actions/sleep.sh").exists());
    fs::remove_file(f.packs().join("core/actions/sleep.sh")).unwrap();
    fs::remove_file(f.packs().join("core/actions/sleep.yaml")).unwrap();
    let r = f.assemble_ok();
    let removed: Vec<&str> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        removed,
        ["core/actions/sleep.sh", "core/actions/sleep.yaml"]
    );
    assert!(!f.published("core/actions/sleep.sh").exists());
    f.assert_verifies();
}

/// A binary copied without its execute bit failed with "permission denied".
#[test]
fn native_entry_point_without_exec_bit_is_published_executable() {
    let f = Fixture::new();
    let src = f.write_elf(&format!("packs/{SENSOR}"), ElfSpec::static_exe(Arch::Amd64));
    fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = f
        .cmd()
        .args([
            "assemble",
            "--packs",
            "packs",
            "--arch",
            "amd64",
            "--out",
            "vol",
            "--no-sync",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("not executable in the sources; published as 0555"));
    assert_eq!(mode(&f.published(SENSOR)), 0o555);
    f.assert_verifies();
}

/// The copy script exited 0 when packs failed to load; errors must fail the run.
#[test]
fn invalid_pack_exits_1_and_publishes_nothing() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/core/actions/broken.yaml",
        "ref: core.broken\nlabel: Broken\nrunner_type: shell\nentry_point: [not, a, string]\n",
    );
    f.assemble()
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "packs/core/actions/broken.yaml:4:",
        ))
        .stderr(predicate::str::contains("nothing was published"));
    assert!(!f.vol().join("..data").exists());
}
