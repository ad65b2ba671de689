//! `inspect`: the facts of files as a person deciding "will this run in the
//! container?" needs them, like `file(1)` but with a verdict.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use attune_pack::{Arch, ElfFacts, NativeProblem, check_native, is_elf, shebang};
use serde::Serialize;

use crate::error::{Error, IoContext};

/// What one file is.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// `elf`, `script` or `other`.
    pub kind: &'static str,
    /// ELF facts, for ELF files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfFacts>,
    /// Why it is not a readable ELF, when it claims to be one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf_error: Option<String>,
    /// The `#!` interpreter, for scripts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Whether any execute bit is set.
    pub executable: bool,
    /// The architecture the verdict is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// Problems as a native entry point for `arch` (empty: it will run).
    pub problems: Vec<NativeProblem>,
}

impl FileReport {
    /// Whether it runs as a native entry point in an empty container of `arch`.
    pub fn runs(&self) -> bool {
        self.problems.is_empty()
    }

    /// One or two lines for people.
    pub fn human(&self) -> String {
        let what = match (&self.elf, &self.elf_error, &self.interpreter) {
            (Some(f), _, _) => f.summary(),
            (None, Some(e), _) => format!("ELF, unreadable: {e}"),
            (None, None, Some(i)) => format!("script for {i}"),
            _ => "not a program (no ELF header, no #! line)".to_string(),
        };
        let exec = if self.executable {
            "executable"
        } else {
            "NOT executable"
        };
        let mut s = format!("{}: {what}, {exec}", self.path.display());
        if let Some(arch) = self.arch {
            if self.runs() {
                s.push_str(&format!("\n  runs in an empty {arch} container: yes"));
            } else {
                let causes: Vec<String> = self.problems.iter().map(|p| p.cause()).collect();
                s.push_str(&format!(
                    "\n  runs in an empty {arch} container: no: it {}",
                    causes.join("; it ")
                ));
                s.push_str(&format!("\n  fix: {}", self.problems[0].fix(arch)));
            }
        }
        s
    }
}

/// Inspects `path`; the verdict is for `arch` (the host's when `None` and the host is one of ours).
pub fn inspect(path: &Path, arch: Option<Arch>) -> Result<FileReport, Error> {
    let (bytes, executable) = read(path)?;
    Ok(report(path, &bytes, executable, arch))
}

/// The contents of the file `path` and whether any execute bit is set.
pub fn read(path: &Path) -> Result<(Vec<u8>, bool), Error> {
    if !crate::volume::exists(path) {
        // A path on the command line that is not there is a usage error, as for `verify`.
        return Err(Error::Usage(format!("{} does not exist", path.display())));
    }
    let bytes = std::fs::read(path).ctx("read", path)?;
    let executable = std::fs::metadata(path)
        .ctx("read", path)?
        .permissions()
        .mode()
        & 0o111
        != 0;
    Ok((bytes, executable))
}

/// The report on `bytes`, the contents of `path`, for `arch` (as [`inspect`]).
pub fn report(path: &Path, bytes: &[u8], executable: bool, arch: Option<Arch>) -> FileReport {
    let (elf, elf_error) = if is_elf(bytes) {
        match ElfFacts::parse(bytes) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let interpreter = if elf.is_none() { shebang(bytes) } else { None };
    let kind = if is_elf(bytes) {
        "elf"
    } else if interpreter.is_some() {
        "script"
    } else {
        "other"
    };
    let arch = arch.or_else(Arch::host);
    let problems = arch
        .map(|a| check_native(bytes, executable, a))
        .unwrap_or_default();
    FileReport {
        path: path.to_path_buf(),
        kind,
        elf,
        elf_error,
        interpreter,
        executable,
        arch,
        problems,
    }
}
