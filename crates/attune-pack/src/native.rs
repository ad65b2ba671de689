//! Entry points and the rules for native ones: a native entry point must be a
//! self-contained ELF for the target machine (or a script with a shebang), and
//! executable. Each problem carries its cause and the command that fixes it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Arch;
use crate::elf::{ElfFacts, Linkage, is_elf, shebang};
use crate::model::RunnerType;

/// Whether an entry point belongs to an action or a sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// `actions/`.
    Action,
    /// `sensors/`.
    Sensor,
}

impl ComponentKind {
    /// The directory its entry points are relative to.
    pub fn dir(self) -> &'static str {
        match self {
            ComponentKind::Action => "actions",
            ComponentKind::Sensor => "sensors",
        }
    }
}

/// One file a component runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryPoint {
    /// The component's ref, for example `core.timer_sensor`.
    pub component: String,
    /// Action or sensor.
    pub kind: ComponentKind,
    /// How it is started.
    pub runner: RunnerType,
    /// Whether the component is enabled.
    pub enabled: bool,
    /// The file, relative to the pack directory, for example `sensors/attune-core-timer-sensor`.
    pub path: PathBuf,
    /// The YAML file that declares it.
    pub declared_in: PathBuf,
}

impl EntryPoint {
    /// Whether its absence is only a warning: a native action, which upstream's
    /// executor may implement itself (`core.ask`). A missing sensor binary, or
    /// a missing script, is always an error.
    pub fn may_be_absent(&self) -> bool {
        self.runner == RunnerType::Native && self.kind == ComponentKind::Action
    }
}

/// What is wrong with a native entry point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum NativeProblem {
    /// No file at the path.
    Missing,
    /// The file has no execute bit.
    NotExecutable,
    /// Neither an ELF nor a script with `#!`.
    NotAProgram,
    /// An ELF that cannot be parsed.
    Malformed {
        /// The parser's message.
        message: String,
    },
    /// An ELF for another machine.
    WrongMachine {
        /// What the file is.
        facts: ElfFacts,
        /// What the volume is for.
        expected: Arch,
    },
    /// An ELF that needs a loader or shared libraries, or is not a program.
    NotSelfContained {
        /// What the file is.
        facts: ElfFacts,
    },
}

impl NativeProblem {
    /// What was found, readable after the file name.
    pub fn cause(&self) -> String {
        match self {
            NativeProblem::Missing => "is missing".into(),
            NativeProblem::NotExecutable => {
                "is not executable (no x bit): the runner would fail with `permission denied`"
                    .into()
            }
            NativeProblem::NotAProgram => {
                "is neither an ELF binary nor a script with a `#!` line".into()
            }
            NativeProblem::Malformed { message } => format!("is not a readable program: {message}"),
            NativeProblem::WrongMachine { facts, expected } => format!(
                "is {}, not {expected}: it would fail with `exec format error`",
                facts.summary()
            ),
            NativeProblem::NotSelfContained { facts } => match facts.linkage {
                Linkage::NotExecutable => format!("is {}: it cannot be run", facts.summary()),
                _ => format!(
                    "is {}: it would fail in a container without {}",
                    facts.summary(),
                    facts
                        .interpreter
                        .clone()
                        .unwrap_or_else(|| facts.needed.join(", "))
                ),
            },
        }
    }

    /// What to run instead.
    pub fn fix(&self, arch: Arch) -> String {
        let build = format!(
            "build it static for {arch}: without Nix `scripts/build-pack-binaries --arch {arch}` (the tree is target/pack-binaries-{arch}), with Nix `nix build .#pack-binaries-{arch}`; pass the tree with `--binaries`",
        );
        match self {
            NativeProblem::Missing => build,
            NativeProblem::NotExecutable => {
                "run `chmod +x` on it in the source tree, then assemble again".into()
            }
            NativeProblem::NotAProgram => {
                "add a `#!` line naming its interpreter, or change `runner_type`".into()
            }
            NativeProblem::Malformed { .. } | NativeProblem::NotSelfContained { .. } => build,
            NativeProblem::WrongMachine { .. } => {
                format!("{build}; or assemble with the `--arch` of the machine it was built for")
            }
        }
    }
}

impl fmt::Display for NativeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause())
    }
}

/// [`check_native`] of the file at `path`, with its x bit: what a service
/// that runs packs it did not assemble (packs.dev) checks before or after it
/// fails to run one.
pub fn check_native_file(path: &Path, arch: Arch) -> std::io::Result<Vec<NativeProblem>> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path)?;
    let executable = std::fs::metadata(path)?.permissions().mode() & 0o111 != 0;
    Ok(check_native(&bytes, executable, arch))
}

/// Checks the bytes of a native entry point for `arch`; `executable` is the file's x bit.
///
/// A script with a shebang passes (its interpreter is the image's business); an
/// ELF must be static or static-pie and for `arch`.
pub fn check_native(bytes: &[u8], executable: bool, arch: Arch) -> Vec<NativeProblem> {
    let mut problems = vec![];
    if is_elf(bytes) {
        match ElfFacts::parse(bytes) {
            Err(e) => problems.push(NativeProblem::Malformed {
                message: e.to_string(),
            }),
            Ok(facts) => {
                if facts.arch != Some(arch) {
                    problems.push(NativeProblem::WrongMachine {
                        facts: facts.clone(),
                        expected: arch,
                    });
                }
                if !facts.linkage.is_self_contained() {
                    problems.push(NativeProblem::NotSelfContained { facts });
                }
            }
        }
    } else if shebang(bytes).is_none() {
        problems.push(NativeProblem::NotAProgram);
    }
    if !executable {
        problems.push(NativeProblem::NotExecutable);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ElfSpec, elf_bytes};

    #[test]
    fn static_binary_for_the_arch_passes() {
        for arch in Arch::ALL {
            assert!(check_native(&elf_bytes(ElfSpec::static_exe(arch)), true, arch).is_empty());
            assert!(check_native(&elf_bytes(ElfSpec::static_pie(arch)), true, arch).is_empty());
        }
        assert!(check_native(b"#!/bin/sh\nexit 0\n", true, Arch::Arm64).is_empty());
    }

    #[test]
    fn host_glibc_build_is_refused_with_the_loader_named() {
        let p = check_native(&elf_bytes(ElfSpec::dynamic(Arch::Amd64)), true, Arch::Amd64);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].cause().contains("/lib64/ld-linux-x86-64.so.2"),
            "{}",
            p[0]
        );
        assert!(
            p[0].fix(Arch::Amd64)
                .contains("nix build .#pack-binaries-amd64")
        );
    }

    #[test]
    fn wrong_machine_names_exec_format_error() {
        let p = check_native(
            &elf_bytes(ElfSpec::static_exe(Arch::Amd64)),
            true,
            Arch::Arm64,
        );
        assert!(matches!(p.as_slice(), [NativeProblem::WrongMachine { .. }]));
        assert!(p[0].cause().contains("exec format error"));
        assert!(p[0].fix(Arch::Arm64).contains("pack-binaries-arm64"));
    }

    #[test]
    fn script_without_shebang_and_missing_x_bit() {
        let p = check_native(b"echo hi\n", false, Arch::Amd64);
        assert_eq!(
            p,
            vec![NativeProblem::NotAProgram, NativeProblem::NotExecutable]
        );
    }
}
