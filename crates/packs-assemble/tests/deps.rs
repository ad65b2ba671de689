//! `--deps`: a pack's dependencies, built for the architecture, added to the
//! pack in the volume; never replacing a pack's file, never of another machine.

use attune_pack::Arch;
use attune_pack::fixtures::{ElfSpec, elf_bytes};

use crate::util::{Fixture, stderr_of};

const SITE: &str = "core/lib/python3.11/site-packages";

fn assemble_with_deps(f: &Fixture) -> std::process::Output {
    f.assemble().args(["--deps", "deps"]).output().unwrap()
}

#[test]
fn dependencies_for_the_arch_are_published_in_the_pack_with_their_origin() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        &format!("deps/{SITE}/yaml/__init__.py"),
        "from ._yaml import *\n",
    );
    // A compiled extension is a dynamic shared object: data for the
    // interpreter, not a program, so dynamic is fine; its machine must match.
    f.write(
        &format!("deps/{SITE}/yaml/_yaml.cpython-311-x86_64-linux-gnu.so"),
        elf_bytes(ElfSpec::dynamic(Arch::Amd64)),
    );
    let out = assemble_with_deps(&f);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let lib = f.vol().join(SITE).join("yaml");
    assert!(lib.join("__init__.py").is_file());
    assert!(lib.join("_yaml.cpython-311-x86_64-linux-gnu.so").is_file());
    let manifest = std::fs::read_to_string(f.vol().join(".attune-manifest.json")).unwrap();
    assert!(
        manifest.contains(&format!(
            "\"path\":\"{SITE}/yaml/__init__.py\",\"type\":\"file\""
        )) && manifest.contains("\"origin\":\"deps\""),
        "{manifest}"
    );
    f.assert_verifies();
}

#[test]
fn a_dependency_built_for_another_machine_is_refused_naming_the_file_and_the_fix() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write(
        &format!("deps/{SITE}/yaml/_yaml.cpython-311-aarch64-linux-gnu.so"),
        elf_bytes(ElfSpec::dynamic(Arch::Arm64)),
    );
    let out = assemble_with_deps(&f);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "_yaml.cpython-311-aarch64-linux-gnu.so: error: is an ELF for machine 0xb7, not amd64"
        ),
        "{err}"
    );
    assert!(
        err.contains("scripts/build-pack-deps --arch amd64"),
        "{err}"
    );
    assert!(!f.vol().join("..data").exists());
}

#[test]
fn a_dependency_never_replaces_a_file_of_the_pack() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.write("packs/core/lib/helper.py", "X = 1\n");
    f.write("deps/core/lib/helper.py", "X = 2\n");
    let out = assemble_with_deps(&f);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("deps/core/lib/helper.py: error: would replace")
            && err.contains("packs/core/lib/helper.py"),
        "{err}"
    );
}
