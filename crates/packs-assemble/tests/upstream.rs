//! Upstream Attune's own packs (`../shared/attune-upstream/packs`: its `core`
//! pack and `test_pack`, data only) check, assemble and verify. They were
//! refused whole (`unknown field system`, `unknown field name`, ...).
//!
//! The shared copy holds YAML, not scripts: the test writes a placeholder for
//! each script entry point `check` reports missing, and supplies the static
//! timer sensor from a binaries tree, as a user would.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{Fixture, copy_tree, stderr_of};

/// The upstream packs, or `None` (with a message) when `../shared` is absent;
/// under CI their absence fails the test.
fn upstream() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    attune_pack::shared_input::shared_input(&repo, "attune-upstream/packs")
}

/// A workspace with the upstream packs in `packs/` (no core pack of ours)
/// and the static sensor in `bins/`.
fn workspace(src: &Path) -> Fixture {
    let f = Fixture::new();
    crate::util::remove_tree(&f.packs());
    copy_tree(src, &f.packs());
    f.fresh_sensor("upstream");
    f
}

fn check_json(f: &Fixture, extra: &[&str]) -> (Option<i32>, Value, String) {
    let out = f
        .cmd()
        .args([
            "check",
            "packs",
            "--binaries",
            "bins",
            "--arch",
            "amd64",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), v, stderr_of(&out))
}

fn diagnostics(v: &Value) -> Vec<Value> {
    v["diagnostics"].as_array().cloned().unwrap_or_default()
}

#[test]
fn upstream_packs_check_assemble_and_verify() {
    let Some(src) = upstream() else { return };
    let f = workspace(&src);
    // Placeholders for the scripts the data-only copy lacks.
    let (_, v, _) = check_json(&f, &[]);
    let mut written = 0;
    for d in diagnostics(&v) {
        if d["severity"] == "error" && d["message"].as_str().unwrap_or("").ends_with("is missing") {
            let path = f.tmp.path().join(d["path"].as_str().unwrap());
            // test_pack's echo.yaml names `actions/echo.py`, inside actions/.
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(
                &path,
                "#!/bin/sh\n# placeholder written by the test\nexit 0\n",
            )
            .unwrap();
            written += 1;
        }
    }
    assert!(
        written >= 5,
        "expected the upstream scripts to be missing: {v}"
    );

    let (code, v, err) = check_json(&f, &[]);
    assert_eq!(code, Some(0), "{err}\n{v}");
    assert_eq!(v["packs"], serde_json::json!(["core", "test_pack"]));
    for d in diagnostics(&v) {
        assert_eq!(d["severity"], "warning", "{d}");
        let path = d["path"].as_str().unwrap();
        assert!(
            path.starts_with("packs/"),
            "every warning names its file: {d}"
        );
    }

    let out = f.assemble().output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    f.assert_verifies();
    // Carried as they are: workflows, runtimes, permission sets, package files.
    for rel in [
        "core/workflows/install_packs.yaml",
        "core/runtimes/shell.yaml",
        "core/permission_sets/admin.yaml",
        "test_pack/package.json",
        "test_pack/requirements.txt",
    ] {
        assert!(f.published(rel).is_file(), "{rel} is in the volume");
    }

    // --strict makes the same warnings errors.
    let (code, v, _) = check_json(&f, &["--strict"]);
    assert_eq!(code, Some(1), "{v}");
    assert!(diagnostics(&v).iter().all(|d| d["severity"] == "error"));
    let out = f.assemble().arg("--strict").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Each refusal named in the compatibility report, one file each: all are
/// accepted, and `--strict` refuses the unknown key.
#[test]
fn keys_upstream_reads_are_accepted_and_unknown_ones_are_warnings() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/extra/pack.yaml",
        "ref: extra\nname: Extra\nversion: 1.0.0\nsystem: false\nmeta: {category: x}\ntesting: {enabled: true}\ndependencies: [core]\nbogus_key: 1\n",
    );
    f.write(
        "packs/extra/actions/go.yaml",
        "ref: extra.go\nrunner_type: bash\nentry_point: go.sh\ntags: [a]\noutput: {type: object}\noutput_format: yaml\nparameters:\n  items: {type: array, items: {type: string}, minItems: 1}\n  n: {type: integer, minimum: 0, maximum: 9}\n",
    );
    f.write("packs/extra/actions/go.sh", "#!/bin/bash\necho 'a: 1'\n");
    f.write(
        "packs/extra/actions/ask.yaml",
        "ref: extra.ask\nrunner_type: native\nentry_point: ask\n",
    );
    f.write(
        "packs/extra/rules/r.yaml",
        "ref: r\npack_ref: extra\ntrigger_ref: core.intervaltimer\ntrigger_params: {interval: 5}\naction_ref: go\npermission_set_refs: [extra.p]\n",
    );
    f.write(
        "packs/extra/permission_sets/p.yaml",
        "ref: extra.p\ngrants: []\n",
    );
    let out = f.assemble().output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("packs/extra/pack.yaml:8:1: warning: field `bogus_key`: unknown key `bogus_key`; ignored"),
        "{err}"
    );
    f.assert_verifies();
    let out = f.assemble().arg("--strict").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("error: field `bogus_key`"));
}
