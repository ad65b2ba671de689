//! `inspect`: facts and a verdict per file; the wording people read is snapshotted.

use attune_pack::Arch;
use attune_pack::fixtures::ElfSpec;

use crate::util::Fixture;

fn fixtures(f: &Fixture) {
    f.write_elf("static-amd64", ElfSpec::static_exe(Arch::Amd64));
    f.write_elf("static-pie-arm64", ElfSpec::static_pie(Arch::Arm64));
    f.write_elf("dynamic-amd64", ElfSpec::dynamic(Arch::Amd64));
    f.write("script.sh", "#!/bin/bash\necho hi\n");
    f.write("notes.txt", "hello\n");
}

#[test]
fn inspect_report_for_amd64() {
    let f = Fixture::new();
    fixtures(&f);
    let out = f
        .cmd()
        .args([
            "inspect",
            "--arch",
            "amd64",
            "static-amd64",
            "static-pie-arm64",
            "dynamic-amd64",
            "script.sh",
            "notes.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "some files would not run on amd64"
    );
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn inspect_json_and_exit_0_when_all_run() {
    let f = Fixture::new();
    fixtures(&f);
    let out = f
        .cmd()
        .args(["inspect", "--json", "--arch", "arm64", "static-pie-arm64"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["elf"]["linkage"], "static-pie");
    assert_eq!(v[0]["elf"]["arch"], "arm64");
    assert_eq!(v[0]["problems"], serde_json::json!([]));
}

/// A missing path on the command line is a usage error (2), as for `verify`
/// and `--packs` (see `hardening::a_missing_path_is_a_usage_error_...`).
#[test]
fn inspect_missing_file_is_a_usage_error() {
    let f = Fixture::new();
    f.cmd()
        .args(["inspect", "nope"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("nope does not exist"));
}
