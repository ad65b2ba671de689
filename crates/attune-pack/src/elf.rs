//! ELF facts: what a person needs to know about a binary before shipping it in a
//! container (machine, class, static or dynamic, interpreter, needed libraries).

use std::fmt;

use goblin::elf::Elf;
use goblin::elf::dynamic::{DF_1_PIE, DT_FLAGS_1};
use goblin::elf::header::{ET_DYN, ET_EXEC, machine_to_str};
use serde::Serialize;

use crate::Arch;

/// The ELF magic number.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Whether `bytes` start like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC)
}

/// The interpreter named by a `#!` line, if `bytes` start with one.
pub fn shebang(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let interpreter = line.split_whitespace().next()?;
    Some(interpreter.to_string())
}

/// How a binary gets its libraries at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Linkage {
    /// A fixed-address executable with no interpreter and no needed libraries.
    Static,
    /// A position-independent executable that relocates itself: no interpreter, no needed libraries.
    StaticPie,
    /// Needs a loader (`PT_INTERP`) or shared libraries (`DT_NEEDED`): fails in a container without them.
    Dynamic,
    /// A shared library or object file: not a program at all.
    NotExecutable,
}

impl Linkage {
    /// Whether the binary runs with no other file present.
    pub fn is_self_contained(self) -> bool {
        matches!(self, Linkage::Static | Linkage::StaticPie)
    }
}

impl fmt::Display for Linkage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Linkage::Static => "static",
            Linkage::StaticPie => "static-pie",
            Linkage::Dynamic => "dynamic",
            Linkage::NotExecutable => "not an executable",
        })
    }
}

/// The facts of one ELF file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElfFacts {
    /// `e_machine` as a number.
    pub machine: u16,
    /// `e_machine` as goblin names it, for example `X86_64` or `AARCH64`.
    pub machine_name: String,
    /// Our architecture name, when the machine is one we build for.
    pub arch: Option<Arch>,
    /// 32 or 64.
    pub class: u8,
    /// Whether the file is little-endian.
    pub little_endian: bool,
    /// Static, static-pie, dynamic or not an executable.
    pub linkage: Linkage,
    /// The program interpreter (`PT_INTERP`), for example `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// Needed shared libraries (`DT_NEEDED`).
    pub needed: Vec<String>,
}

impl ElfFacts {
    /// Reads the facts of an ELF file from its bytes.
    pub fn parse(bytes: &[u8]) -> Result<ElfFacts, ElfError> {
        if !is_elf(bytes) {
            return Err(ElfError("not an ELF file (no \\x7fELF magic)".into()));
        }
        let elf = Elf::parse(bytes).map_err(|e| ElfError(e.to_string()))?;
        let interpreter = elf.interpreter.map(str::to_string);
        let needed: Vec<String> = elf.libraries.iter().map(|s| s.to_string()).collect();
        let pie_flag = elf.dynamic.as_ref().is_some_and(|d| {
            d.dyns
                .iter()
                .any(|e| e.d_tag == DT_FLAGS_1 && e.d_val & DF_1_PIE != 0)
        });
        let linkage = if interpreter.is_some() || !needed.is_empty() {
            Linkage::Dynamic
        } else {
            match elf.header.e_type {
                ET_EXEC => Linkage::Static,
                ET_DYN if pie_flag || elf.header.e_entry != 0 => Linkage::StaticPie,
                _ => Linkage::NotExecutable,
            }
        };
        let machine = elf.header.e_machine;
        Ok(ElfFacts {
            machine,
            machine_name: machine_to_str(machine).to_string(),
            arch: Arch::from_elf_machine(machine),
            class: if elf.is_64 { 64 } else { 32 },
            little_endian: elf.little_endian,
            linkage,
            interpreter,
            needed,
        })
    }

    /// One line, like `file(1)` but decisive: `ELF 64-bit x86_64 (amd64), dynamic, interpreter /lib64/ld-linux-x86-64.so.2, needs libc.so.6`.
    pub fn summary(&self) -> String {
        let mut s = format!("ELF {}-bit {}", self.class, self.machine_name);
        if let Some(arch) = self.arch {
            s.push_str(&format!(" ({arch})"));
        }
        s.push_str(&format!(", {}", self.linkage));
        if let Some(interp) = &self.interpreter {
            s.push_str(&format!(", interpreter {interp}"));
        }
        if !self.needed.is_empty() {
            s.push_str(&format!(", needs {}", self.needed.join(" ")));
        }
        s
    }
}

/// The error for bytes that are not a readable ELF file.
#[derive(Debug, thiserror::Error)]
#[error("malformed ELF: {0}")]
pub struct ElfError(String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ElfSpec, elf_bytes};

    #[test]
    fn static_x86_64() {
        let facts = ElfFacts::parse(&elf_bytes(ElfSpec::static_exe(Arch::Amd64))).unwrap();
        assert_eq!(facts.linkage, Linkage::Static);
        assert_eq!(facts.arch, Some(Arch::Amd64));
        assert_eq!(facts.class, 64);
        assert!(facts.interpreter.is_none() && facts.needed.is_empty());
    }

    #[test]
    fn static_pie_aarch64() {
        let facts = ElfFacts::parse(&elf_bytes(ElfSpec::static_pie(Arch::Arm64))).unwrap();
        assert_eq!(facts.linkage, Linkage::StaticPie);
        assert_eq!(facts.arch, Some(Arch::Arm64));
        assert_eq!(facts.machine_name, "AARCH64");
    }

    #[test]
    fn dynamic_glibc_names_loader_and_libraries() {
        let facts = ElfFacts::parse(&elf_bytes(ElfSpec::dynamic(Arch::Amd64))).unwrap();
        assert_eq!(facts.linkage, Linkage::Dynamic);
        assert_eq!(
            facts.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(facts.needed, vec!["libc.so.6".to_string()]);
        assert_eq!(
            facts.summary(),
            "ELF 64-bit X86_64 (amd64), dynamic, interpreter /lib64/ld-linux-x86-64.so.2, needs libc.so.6"
        );
    }

    #[test]
    fn not_elf_and_truncated() {
        assert!(ElfFacts::parse(b"#!/bin/sh\necho hi\n").is_err());
        let mut bytes = elf_bytes(ElfSpec::static_exe(Arch::Amd64));
        bytes.truncate(20);
        let err = ElfFacts::parse(&bytes).unwrap_err().to_string();
        assert!(err.starts_with("malformed ELF"), "{err}");
    }

    #[test]
    fn shebang_interpreter() {
        assert_eq!(shebang(b"#!/bin/bash -e\nx"), Some("/bin/bash".into()));
        assert_eq!(
            shebang(b"#! /usr/bin/env python3\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(shebang(b"echo hi"), None);
        assert_eq!(shebang(b"#!\n"), None);
    }
}
