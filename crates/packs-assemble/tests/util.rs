//! A temporary workspace with the real core pack, a binaries tree and a volume,
//! and a wrapper around the built `packs-assemble` binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use attune_pack::Arch;
use attune_pack::fixtures::{ElfSpec, elf_bytes};
use serde_json::Value;

/// `assemble` from the workspace's `packs` and `bins` into `vol`, for amd64.
pub const ASSEMBLE: [&str; 9] = [
    "assemble",
    "--packs",
    "packs",
    "--binaries",
    "bins",
    "--arch",
    "amd64",
    "--out",
    "vol",
];

/// The sensor binary's path inside the core pack.
pub const SENSOR: &str = "core/sensors/attune-core-timer-sensor";

pub struct Fixture {
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    /// `packs/core` (a copy of the repository's core pack), an empty binaries tree, no volume.
    pub fn new() -> Fixture {
        let f = Fixture {
            tmp: tempfile::tempdir().unwrap(),
        };
        let repo_core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs/core");
        copy_tree(&repo_core, &f.packs().join("core"));
        // A compiled sensor left in a developer's checkout must not leak into tests.
        let _ = fs::remove_file(f.packs().join(SENSOR));
        fs::create_dir_all(f.bins()).unwrap();
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    pub fn packs(&self) -> PathBuf {
        self.path("packs")
    }
    pub fn bins(&self) -> PathBuf {
        self.path("bins")
    }
    pub fn vol(&self) -> PathBuf {
        self.path("vol")
    }

    /// Writes a file under the workspace, creating parents.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        p
    }

    /// Writes an executable ELF fixture.
    pub fn write_elf(&self, rel: &str, spec: ElfSpec) -> PathBuf {
        let p = self.write(rel, elf_bytes(spec));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// The fresh static amd64 sensor in the binaries tree, tagged `version`.
    pub fn fresh_sensor(&self, version: &str) -> PathBuf {
        self.write_elf(
            &format!("bins/{SENSOR}"),
            ElfSpec::static_pie(Arch::Amd64).with_payload(version),
        )
    }

    /// `packs-assemble` with a clean environment, run in the workspace.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("packs-assemble").unwrap();
        c.current_dir(self.tmp.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("ATTUNE_LOG_FORMAT")
            .env_remove("PACKS_ASSEMBLE_CRASH_AFTER")
            .env_remove("PACKS_ASSEMBLE_STOP_AFTER")
            .env_remove("PACKS_ASSEMBLE_SETTLE_WINDOW_MS");
        c
    }

    /// `assemble --packs packs --binaries bins --arch amd64 --out vol --no-sync`.
    pub fn assemble(&self) -> Command {
        let mut c = self.cmd();
        c.args(ASSEMBLE).arg("--no-sync");
        c
    }

    /// `assemble` with the crash hook armed to abort after step `n`; asserts that it fired.
    pub fn assemble_killed_at(&self, n: u64) -> std::process::Output {
        let out = self
            .assemble()
            .env("PACKS_ASSEMBLE_CRASH_AFTER", n.to_string())
            .arg("-q")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "step {n}: the crash hook did not fire"
        );
        out
    }

    /// The same as a background process (quiet, stdout discarded), with `extra` flags.
    pub fn spawn_assemble(&self, extra: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("packs-assemble"))
            .current_dir(self.tmp.path())
            .args(ASSEMBLE)
            .args(extra)
            .arg("-q")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs `assemble --json`, expecting success, and returns the result.
    pub fn assemble_ok(&self) -> Value {
        let out = self
            .assemble()
            .arg("--json")
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    }

    /// Runs `verify vol`; returns (exit code, stdout, stderr).
    pub fn verify(&self) -> (i32, String, String) {
        let out = self.cmd().args(["verify", "vol"]).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Asserts that `verify` accepts the volume with no errors.
    pub fn assert_verifies(&self) {
        let (code, out, err) = self.verify();
        assert_eq!(code, 0, "verify failed:\n{out}\n{err}");
    }

    /// Deletes the volume, read-only generations included.
    pub fn remove_volume(&self) {
        if self.vol().exists() {
            remove_tree(&self.vol());
        }
    }

    /// The published file through the pack link.
    pub fn published(&self, rel: &str) -> PathBuf {
        self.vol().join(rel)
    }

    /// The generation `..data` points at.
    pub fn current_generation(&self) -> Option<String> {
        fs::read_link(self.vol().join("..data"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The generation directories in the volume.
    pub fn generations(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.vol())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != "..data" && n != "..store")
            .collect();
        v.sort();
        v
    }
}

/// Deletes a tree whose directories may be read-only.
pub fn remove_tree(path: &Path) {
    for e in walkdir::WalkDir::new(path).follow_links(false) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    fs::remove_dir_all(path).unwrap();
}

/// The mode of what a reader opens at `path` (published directories are links into the store).
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}
