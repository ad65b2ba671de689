//! Untrusted sources: nothing escapes the pack, nothing dangerous is published,
//! and every refusal names the file.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use attune_pack::Arch;
use attune_pack::fixtures::ElfSpec;

use crate::util::{Fixture, SENSOR, mode, stderr_of};

fn refused(f: &Fixture, needle: &str) -> String {
    let existed = f.vol().exists();
    let out = f.assemble().output().unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    assert!(!f.vol().join("..data").exists(), "nothing may be published");
    assert!(
        existed || !f.vol().exists(),
        "a refused run leaves no volume behind"
    );
    err
}

#[test]
fn symlink_escape_is_rejected_with_its_path() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    symlink("/etc", f.packs().join("core/actions/etc")).unwrap();
    symlink(
        "../../../../etc/passwd",
        f.packs().join("core/actions/passwd.sh"),
    )
    .unwrap();
    let err = refused(
        &f,
        "packs/core/actions/etc: error: is a symbolic link (to /etc)",
    );
    assert!(
        err.contains(
            "packs/core/actions/passwd.sh: error: is a symbolic link (to ../../../../etc/passwd)"
        ),
        "{err}"
    );
}

#[test]
fn entry_point_leaving_the_pack_is_rejected_with_its_line() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/core/actions/escape.yaml",
        "ref: core.escape\nlabel: Escape\nrunner_type: shell\nentry_point: ../../../bin/sh\n",
    );
    refused(
        &f,
        "packs/core/actions/escape.yaml:4:14: error: field `entry_point`: `../../../bin/sh` leaves its directory",
    );
}

#[test]
fn hard_link_to_a_file_outside_is_rejected() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let outside = f.write("secret", "s3cret");
    fs::hard_link(outside, f.packs().join("core/actions/looks-innocent.txt")).unwrap();
    refused(
        &f,
        "packs/core/actions/looks-innocent.txt: error: has 2 hard links",
    );
}

#[test]
fn fifo_and_devices_are_rejected() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let fifo = f.packs().join("core/actions/pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    refused(&f, "packs/core/actions/pipe: error: is a FIFO");
    fs::remove_file(&fifo).unwrap();
    // Creating a device node needs CAP_MKNOD; where it is granted, it must be refused too.
    let dev = f.packs().join("core/actions/null");
    if std::process::Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
    {
        refused(&f, "packs/core/actions/null: error: is a device file");
    }
}

#[test]
fn setuid_and_setgid_bits_never_reach_the_volume() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let p = f.packs().join("core/actions/echo.sh");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o6755)).unwrap();
    let q = f.packs().join("core/actions/echo.yaml");
    fs::set_permissions(&q, fs::Permissions::from_mode(0o2644)).unwrap();
    f.assemble_ok();
    assert_eq!(mode(&f.published("core/actions/echo.sh")), 0o555);
    assert_eq!(mode(&f.published("core/actions/echo.yaml")), 0o444);
    f.assert_verifies();
}

#[test]
fn binaries_for_the_wrong_machine_are_refused() {
    let f = Fixture::new();
    f.write_elf(&format!("bins/{SENSOR}"), ElfSpec::static_exe(Arch::Arm64));
    let err = refused(&f, "exec format error");
    assert!(
        err.contains(&format!(
            "bins/{SENSOR}: error: binary is ELF 64-bit AARCH64"
        )),
        "{err}"
    );
    assert!(
        err.contains("AARCH64 (arm64)") && err.contains("pack-binaries-amd64"),
        "{err}"
    );
}

#[test]
fn dynamic_binary_is_refused_with_its_loader_and_the_fix() {
    let f = Fixture::new();
    // No binaries tree: the dynamic host build in the sources would be published.
    f.write_elf(&format!("packs/{SENSOR}"), ElfSpec::dynamic(Arch::Amd64));
    let out = f
        .cmd()
        .args([
            "assemble", "--packs", "packs", "--arch", "amd64", "--out", "vol",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!(
            "packs/{SENSOR}: error: native entry point of core.timer_sensor"
        )),
        "{err}"
    );
    assert!(
        err.contains("interpreter /lib64/ld-linux-x86-64.so.2"),
        "{err}"
    );
    assert!(
        err.contains("hint: build it static for amd64: without Nix `scripts/build-pack-binaries --arch amd64`"),
        "{err}"
    );
}

#[test]
fn missing_native_entry_point_is_an_error_when_assembling() {
    let f = Fixture::new();
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!(
            "packs/{SENSOR}: error: native entry point of core.timer_sensor"
        )),
        "{err}"
    );
    assert!(err.contains("is missing"), "{err}");
}

#[test]
fn script_without_shebang_as_native_entry_point_is_refused() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write("packs/core/sensors/poll.yaml", "ref: core.poll\nlabel: Poll\nrunner_type: native\nentry_point: poll\ntrigger_types: [core.intervaltimer]\n");
    let p = f.write("packs/core/sensors/poll", "while true; do sleep 1; done\n");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    refused(
        &f,
        "packs/core/sensors/poll: error: native entry point of core.poll (declared in",
    );
}

#[test]
fn every_error_names_its_file() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/core/actions/a.yaml",
        "ref: other.a\nlabel: A\nrunner_type: shell\nentry_point: a.sh\n",
    );
    f.write(
        "packs/core/pack.yaml",
        "ref: core\nlabel: Core\nversion: one\n",
    );
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 2, "{err}");
    for line in errors {
        assert!(
            line.starts_with("packs/core/") || line.starts_with("bins/"),
            "no file named: {line}"
        );
    }
}

#[test]
fn rule_referring_to_a_missing_trigger_names_the_rule_file_and_line() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        "packs/core/rules/r.yaml",
        "ref: core.r\nlabel: R\ntrigger_ref: core.nosuch\naction_ref: core.echo\n",
    );
    refused(
        &f,
        "packs/core/rules/r.yaml:3:14: error: field `trigger_ref`: trigger `core.nosuch` does not exist in pack `core`",
    );
}
