//! Faults and hostile input found by trying to break the tool: each test is
//! named after what it guards, and each failed on the code before its fix.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use crate::util::{Fixture, SENSOR, copy_tree, stderr_of};

/// The three input states used below: v1, v2 and v3 differ in the sensor, an
/// action's text, an added file and a removed action.
fn set_inputs(f: &Fixture, v: u32) {
    let repo_core = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs/core");
    f.fresh_sensor(&format!("v{v}"));
    let echo = if v == 1 {
        fs::read(repo_core.join("actions/echo.sh")).unwrap()
    } else {
        format!("#!/bin/sh\necho v{v}\n").into_bytes()
    };
    f.write("packs/core/actions/echo.sh", echo);
    let new = f.packs().join("core/actions/new.sh");
    let sleep = f.packs().join("core/actions/sleep.yaml");
    if v == 3 {
        f.write("packs/core/actions/new.sh", "#!/bin/sh\n");
        let _ = fs::remove_file(&sleep);
        let _ = fs::remove_file(f.packs().join("core/actions/sleep.sh"));
    } else {
        let _ = fs::remove_file(&new);
        for name in ["sleep.yaml", "sleep.sh"] {
            fs::copy(
                repo_core.join("actions").join(name),
                f.packs().join("core/actions").join(name),
            )
            .unwrap();
        }
    }
}

/// Publishes v1 then v2; returns v1's generation.
fn two_generations() -> (Fixture, String) {
    let f = Fixture::new();
    set_inputs(&f, 1);
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    set_inputs(&f, 2);
    f.assemble_ok();
    (f, g1)
}

/// Killed while an old generation was being deleted (`--keep`), the next run
/// with that old generation's inputs called the half-deleted tree "a kept
/// generation with the same contents" and published it. Removal now renames
/// the generation to a tombstone first, and reuse checks completeness; the
/// hook fires inside every removal, file by file.
#[test]
fn killed_inside_a_removal_a_half_deleted_generation_is_never_published() {
    let probe = two_generations().0;
    set_inputs(&probe, 3);
    let steps = probe.assemble_ok()["steps"].as_u64().unwrap();
    for n in 1..=steps {
        let (f, g1) = two_generations();
        set_inputs(&f, 3);
        f.assemble_killed_at(n);
        f.assert_verifies();
        // Back to v1's inputs: whatever is left of ..g1 must not be taken for it.
        set_inputs(&f, 1);
        let r = f.assemble_ok();
        assert_eq!(r["generation"], g1.as_str(), "step {n}");
        let (code, out, err) = f.verify();
        assert_eq!(code, 0, "step {n}: {out}{err}");
        assert!(out.contains("0 errors, 0 warnings"), "step {n}: {out}{err}");
    }
}

/// A kept generation damaged by hand (a file deleted) is written afresh, not reused.
#[test]
fn an_incomplete_kept_generation_is_rewritten_not_reused() {
    let (f, g1) = two_generations();
    let victim = f.vol().join(&g1).join("core/actions");
    fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::remove_file(victim.join("echo.sh")).unwrap();
    set_inputs(&f, 1);
    let r = f.assemble_ok();
    assert_eq!(r["reused"], false, "{r}");
    assert_eq!(r["generation"], g1.as_str());
    f.assert_verifies();
    assert!(f.published("core/actions/echo.sh").is_file());
}

/// With the current generation's directory deleted, `assemble` said "up to
/// date; nothing written" while `verify` failed; only `--force` repaired it.
#[test]
fn a_deleted_current_generation_is_republished() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let g = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    crate::util::remove_tree(&f.vol().join(&g));
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], false, "{r}");
    f.assert_verifies();
    // And a current generation whose manifest is damaged gets a fresh copy too.
    let g = f.current_generation().unwrap();
    let mf = f.vol().join(&g).join(".attune-manifest.json");
    fs::set_permissions(
        f.vol().join(&g),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::remove_file(&mf).unwrap();
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], false, "{r}");
    assert_ne!(
        r["generation"],
        g.as_str(),
        "a fresh name beside the damaged copy"
    );
    f.assert_verifies();
    assert!(!f.vol().join(&g).exists(), "the damaged copy is collected");
}

/// A complete generation renamed into place but never committed (the disk
/// filled up before `..data` moved) stayed until a later run succeeded, so a
/// retry on a full disk failed again. It is now removed before writing.
#[test]
fn an_uncommitted_generation_is_removed_before_the_next_write() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    let stray = "..0123456789abcdef0123456789abcdef";
    copy_tree(&f.vol().join(&g1), &f.vol().join(stray));
    f.fresh_sensor("v2");
    // Killed after its first filesystem step: the stray is already out of the way.
    let out = f
        .assemble()
        .env("PACKS_ASSEMBLE_CRASH_AFTER", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!f.vol().join(stray).exists(), "{:?}", f.generations());
    f.assert_verifies();
    f.assemble_ok();
    f.assert_verifies();
}

/// A pack directory that is a symlink inside `--packs` was skipped silently;
/// when it was the only pack, an empty volume was published with exit 0.
#[test]
fn a_symlinked_pack_directory_is_an_error_not_an_empty_volume() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    fs::rename(f.packs().join("core"), f.path("real-core")).unwrap();
    symlink(f.path("real-core"), f.packs().join("core")).unwrap();
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("packs/core: error: is a symbolic link to a pack directory"),
        "{err}"
    );
    assert!(!f.vol().join("..data").exists(), "nothing was published");
}

/// An empty `--packs` directory would publish a volume without any pack.
#[test]
fn no_pack_at_all_is_an_error() {
    let f = Fixture::new();
    fs::create_dir_all(f.path("empty")).unwrap();
    let out = f
        .cmd()
        .args([
            "assemble", "--packs", "empty", "--arch", "amd64", "--out", "vol",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("no pack found in empty"));
}

/// A pack directory whose name is not UTF-8 was published, then failed
/// `verify`, and every later run exited 3; named directly with `--packs`, it
/// made the manifest's paths absolute (`/pack.yaml`).
#[test]
fn a_pack_directory_name_that_is_not_utf8_is_refused() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let bad = f.packs().join(OsStr::from_bytes(b"bad\xff"));
    copy_tree(&f.packs().join("core"), &bad);
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("pack directory name is not valid UTF-8"));
    let out = f
        .cmd()
        .arg("assemble")
        .arg("--packs")
        .arg(&bad)
        .args(["--arch", "amd64", "--out", "vol"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(!f.vol().join("..data").exists());
}

/// `entry_point: ./echo.sh` was reported missing although the file exists.
#[test]
fn an_entry_point_with_a_leading_dot_slash_is_found() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let yaml = f.packs().join("core/actions/echo.yaml");
    let text = fs::read_to_string(&yaml).unwrap();
    assert!(text.contains("entry_point: echo.sh"));
    fs::write(
        &yaml,
        text.replace("entry_point: echo.sh", "entry_point: ./echo.sh"),
    )
    .unwrap();
    let out = f.assemble().output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    f.assert_verifies();
}

/// Diagnostics printed raw newline, NUL and ESC bytes from file names, so a
/// hostile name could forge output lines or drive the terminal.
#[test]
fn control_characters_in_file_names_are_escaped_in_diagnostics() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    symlink("/etc/passwd", f.packs().join("core/evil\n\x1b[31mname")).unwrap();
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.contains("evil\\n\\u{1b}[31mname"), "{err}");
    assert!(f.published(SENSOR).symlink_metadata().is_err());
}

/// `inspect` exited 3 and `verify` 2 for the same missing path.
#[test]
fn a_missing_path_is_a_usage_error_for_inspect_and_verify_alike() {
    let f = Fixture::new();
    for cmd in ["inspect", "verify"] {
        let out = f.cmd().args([cmd, "nowhere"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains("nowhere does not exist"), "{cmd}");
    }
}
