//! `verify`: the troubleshooting tool finds tampering, strays and unrunnable
//! binaries, each with cause and fix; the report people read is snapshotted.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::{Fixture, SENSOR};

fn published() -> Fixture {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    f
}

fn writable(p: &std::path::Path) {
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn report(f: &Fixture) -> String {
    let (code, out, err) = f.verify();
    assert_eq!(code, 1, "{out}{err}");
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\.\.[0-9a-f]{32}", "..[generation]");
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[root]");
    settings.bind(|| format!("{err}{out}"))
}

#[test]
fn verify_finds_tampering_and_strays() {
    let f = published();
    let gen_dir = f.vol().join(f.current_generation().unwrap());
    let echo = gen_dir.join("core/actions/echo.sh");
    writable(&gen_dir.join("core/actions"));
    writable(&echo);
    fs::write(&echo, "#!/bin/sh\nrm -rf /\n").unwrap();
    fs::write(gen_dir.join("core/actions/dropped.sh"), "x").unwrap();
    fs::set_permissions(
        gen_dir.join("core/actions"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(f.vol().join("leftover.txt"), "x").unwrap();
    let text = report(&f);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\.\.[0-9a-f]{32}", "..[generation]");
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[root]");
    settings.bind(|| insta::assert_snapshot!(text));
}

#[test]
fn verify_finds_a_binary_that_lost_its_exec_bit() {
    let f = published();
    let gen_dir = f.vol().join(f.current_generation().unwrap());
    fs::set_permissions(gen_dir.join(SENSOR), fs::Permissions::from_mode(0o444)).unwrap();
    let text = report(&f);
    assert!(
        text.contains("has mode 0444, the manifest says 0555"),
        "{text}"
    );
    assert!(text.contains("is not executable (no x bit)"), "{text}");
}

#[test]
fn verify_against_another_arch_explains_exec_format_error() {
    let f = published();
    let out = f
        .cmd()
        .args(["verify", "vol", "--arch", "arm64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the volume was assembled for amd64, not arm64"),
        "{err}"
    );
    assert!(err.contains("exec format error"), "{err}");
}

#[test]
fn verify_of_an_empty_directory_says_what_to_run() {
    let f = Fixture::new();
    fs::create_dir(f.vol()).unwrap();
    let (code, _, err) = f.verify();
    assert_eq!(code, 1);
    assert!(
        err.contains("nothing has been published") && err.contains("packs-assemble assemble"),
        "{err}"
    );
}

#[test]
fn verify_json_reports_ok() {
    let f = published();
    let out = f.cmd().args(["verify", "vol", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["arch"], "amd64");
    assert_eq!(v["diagnostics"], serde_json::json!([]));
    assert!(v["files"].as_u64().unwrap() >= 13);
}

#[test]
fn force_repairs_what_verify_found() {
    let f = published();
    let gen_dir = f.vol().join(f.current_generation().unwrap());
    let echo = gen_dir.join("core/actions/echo.sh");
    writable(&echo);
    fs::write(&echo, "#!/bin/sh\nrm -rf /\n").unwrap();
    assert_eq!(f.verify().0, 1);
    // Same inputs: --force republishes every file.
    let r: serde_json::Value = serde_json::from_slice(
        &f.assemble()
            .args(["--force", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(r["hardlinked"], 0);
    assert!(r["generation"].as_str().unwrap().ends_with("-2"), "{r}");
    f.assert_verifies();
    assert_eq!(
        fs::read(f.published("core/actions/echo.sh")).unwrap(),
        fs::read(f.packs().join("core/actions/echo.sh")).unwrap()
    );
    assert_eq!(f.assemble_ok()["up_to_date"], true);
}
