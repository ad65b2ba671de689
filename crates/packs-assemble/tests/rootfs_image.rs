//! `export-rootfs` from the command line: a service image of a root
//! filesystem directory, the same bytes for the same tree wherever it lies and
//! whenever its files were written, on stdout as in a file, as an OCI layout
//! too; the refusals and their exit codes.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use attune_pack::Arch;
use attune_pack::fixtures::ElfSpec;
use serde_json::Value;

use crate::export::members;
use crate::util::{Fixture, stderr_of};

/// `root/` laid out as docker/build-images lays out the api's.
fn tree(f: &Fixture, root: &str) {
    f.write(
        &format!("{root}/etc/passwd"),
        "root:x:0:0::/:/sbin/nologin\nattune:x:1000:1000::/opt/attune:/sbin/nologin\n",
    );
    f.write_elf(
        &format!("{root}/usr/local/bin/attune-api"),
        ElfSpec::static_pie(Arch::Amd64),
    );
    f.write_elf(
        &format!("{root}/bin/busybox"),
        ElfSpec::static_pie(Arch::Amd64).with_payload("busybox"),
    );
    symlink("busybox", f.path(&format!("{root}/bin/ls"))).unwrap();
    for d in ["tmp", "opt/attune/data", "opt/attune/logs"] {
        fs::create_dir_all(f.path(&format!("{root}/{d}"))).unwrap();
    }
    fs::set_permissions(
        f.path(&format!("{root}/tmp")),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
}

const API: &str = r#"["/usr/local/bin/attune-api"]"#;

fn export(f: &Fixture, root: &str, out: &str) -> assert_cmd::Command {
    export_running(f, root, out, API)
}

/// `export-rootfs` of `root` to `out` with this `--entrypoint`.
fn export_running(f: &Fixture, root: &str, out: &str, entrypoint: &str) -> assert_cmd::Command {
    let mut c = f.cmd();
    c.args([
        "export-rootfs",
        "--rootfs",
        root,
        "--arch",
        "amd64",
        "--name",
        "attune/api",
        "--entrypoint",
        entrypoint,
        "--owner",
        "/opt/attune/data=1000:1000",
        "--owner",
        "/opt/attune/logs=1000:1000",
        "--out",
        out,
    ]);
    c
}

#[test]
fn export_rootfs_gives_the_same_bytes_wherever_and_whenever_the_tree_was_written() {
    let f = Fixture::new();
    tree(&f, "a");
    let out = export(&f, "a", "a.tar").arg("--json").assert().success();
    let result: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let archive = fs::read(f.path("a.tar")).unwrap();
    // The config's digest is the image id: the archive's config file names it.
    let id = result["config_digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let outer = members(&archive);
    let config = &outer
        .iter()
        .find(|(n, _)| *n == format!("{id}.json"))
        .unwrap()
        .1;
    let config: Value = serde_json::from_slice(config).unwrap();
    assert_eq!(config["config"]["Labels"]["io.attune.arch"], "amd64");
    assert_eq!(result["image"], format!("attune/api:{}", &id[..16]));
    assert_eq!(result["entries"], 14);

    // The same tree at a path of another length, written later: the same bytes.
    tree(&f, "another/root");
    fs::File::open(f.path("another/root/etc/passwd"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    export(&f, "another/root", "b.tar").assert().success();
    assert_eq!(fs::read(f.path("b.tar")).unwrap(), archive);
    let piped = export(&f, "a", "-").assert().success();
    assert_eq!(
        piped.get_output().stdout,
        archive,
        "--out - writes the same archive"
    );

    // SOURCE_DATE_EPOCH sets every time; the OCI layout holds the same layer.
    export(&f, "a", "oci")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["--format", "oci"])
        .assert()
        .success();
    let index: Value =
        serde_json::from_slice(&fs::read(f.path("oci/index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        fs::read(
            f.path("oci/blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut a = tar::Archive::new(layer.as_slice());
    for e in a.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 1_700_000_000);
    }
}

#[test]
fn export_rootfs_refuses_with_an_exit_code_that_says_why() {
    let f = Fixture::new();
    tree(&f, "r");
    f.write("exists.tar", "x");
    fs::set_permissions(f.path("r/bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
    let cases: &[(&str, &str, &[&str], i32, &str)] = &[
        ("r", API, &[], 1, "is setuid or setgid (mode 4755)"),
        ("nope", API, &[], 2, "--rootfs nope is not a directory"),
        ("r", "attune-api", &[], 2, "is not a JSON array of strings"),
        ("r", r#"["attune-api"]"#, &[], 2, "is not an absolute path"),
        (
            "r",
            r#"["/bin/ls"]"#,
            &[],
            1,
            "is not an executable regular file",
        ),
        (
            "r",
            API,
            &["--owner", "/opt/nope=1:1"],
            2,
            "--owner /opt/nope: r has no such entry",
        ),
    ];
    for (root, entrypoint, extra, code, message) in cases {
        let out = export_running(&f, root, "a.tar", entrypoint)
            .args(*extra)
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(*code), "{extra:?}: {err}");
        assert!(err.contains(message), "{extra:?}: {err}");
        assert!(!f.path("a.tar").exists(), "{extra:?}: nothing was written");
    }
    let out = export(&f, "r", "exists.tar").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--out exists.tar exists"));
}

/// A runtime image of Debian packages (the Python runtime) runs dynamic
/// programs with its own libc: below `--dynamic-ok` they are accepted, of the
/// image's machine only; elsewhere an executable ELF must still be static.
#[test]
fn dynamic_programs_are_accepted_below_dynamic_ok_and_only_for_the_arch() {
    let f = Fixture::new();
    tree(&f, "a");
    f.write_elf("a/usr/bin/python3.11", ElfSpec::dynamic(Arch::Amd64));
    let refused = export(&f, "a", "refused.tar").output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("usr/bin/python3.11: error: cannot be a program"));
    export(&f, "a", "ok.tar")
        .args(["--dynamic-ok", "/usr"])
        .assert()
        .success();
    f.write_elf("a/usr/lib/libx.so", ElfSpec::dynamic(Arch::Arm64));
    let wrong = export(&f, "a", "wrong.tar")
        .args(["--dynamic-ok", "/"])
        .output()
        .unwrap();
    let err = stderr_of(&wrong);
    assert_eq!(wrong.status.code(), Some(1), "{err}");
    assert!(
        err.contains("usr/lib/libx.so: error: is") && err.contains("not amd64"),
        "{err}"
    );
}
