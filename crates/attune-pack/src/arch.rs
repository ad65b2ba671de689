//! Target architectures of pack binaries, by their Docker and Rust names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An architecture a volume is assembled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86_64 (`amd64` in Docker, `x86_64` in Rust and Nix).
    Amd64,
    /// AArch64 (`arm64` in Docker, `aarch64` in Rust and Nix).
    Arm64,
}

impl Arch {
    /// Both, in a stable order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The Docker name: `amd64` or `arm64`.
    pub fn docker_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The Rust/Nix name: `x86_64` or `aarch64`.
    pub fn rust_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The ELF `e_machine` value (`EM_X86_64` = 62, `EM_AARCH64` = 183).
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => goblin::elf::header::EM_X86_64,
            Arch::Arm64 => goblin::elf::header::EM_AARCH64,
        }
    }

    /// The architecture of an ELF `e_machine`, when it is one of ours.
    pub fn from_elf_machine(machine: u16) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.elf_machine() == machine)
    }

    /// The architecture this program was compiled for, if it is one of ours.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.docker_name())
    }
}

/// The error for a name that is not an architecture we build.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture `{0}`: expected amd64 (x86_64) or arm64 (aarch64)")]
pub struct UnknownArch(String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "amd64" | "x86_64" | "x86-64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_and_rust_names() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        let err = "riscv64".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("riscv64") && err.contains("amd64"), "{err}");
    }

    #[test]
    fn elf_machine_round_trips() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_elf_machine(a.elf_machine()), Some(a));
        }
        assert_eq!(Arch::from_elf_machine(3), None); // EM_386
    }
}
