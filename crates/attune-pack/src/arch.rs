//! Target architectures of pack binaries, and every name each one goes by,
//! from `arches.tsv` at the repository root: the one table the scripts
//! (`scripts/lib/arch.sh`) and the flake (`nix/targets.nix`) read too.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// `arches.tsv`, compiled in (the Nix builds' source keeps it: nix/rust.nix).
const TABLE: &str = include_str!("../../../arches.tsv");

/// The table's columns, in order: its first line that is not a comment.
const COLUMNS: [&str; 8] = [
    "arch",
    "machine",
    "rust_musl",
    "rust_gnu",
    "zig",
    "nix_system",
    "elf_machine",
    "aliases",
];

/// An architecture a volume is assembled for. Its names are the row of
/// `arches.tsv` at its position in [`Arch::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86_64 (`amd64` in Docker, `x86_64` in Rust and Nix).
    Amd64,
    /// AArch64 (`arm64` in Docker, `aarch64` in Rust and Nix).
    Arm64,
}

/// One architecture's names, as the table gives them (the Zig target and the
/// Nix system are the flake's alone).
#[derive(Debug, PartialEq, Eq)]
struct Row {
    arch: &'static str,
    machine: &'static str,
    rust_musl: &'static str,
    rust_gnu: &'static str,
    elf_machine: u16,
    aliases: Vec<&'static str>,
}

/// The rows of a table in `arches.tsv`'s format, or what is wrong with it.
fn parse(table: &'static str) -> Result<Vec<Row>, String> {
    let mut lines = table
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
    let (n, header) = lines
        .next()
        .ok_or("arches.tsv: no line names the columns")?;
    let header: Vec<&str> = header.split_whitespace().collect();
    if header != COLUMNS {
        return Err(format!(
            "arches.tsv:{n}: the columns are {header:?}, expected {COLUMNS:?}"
        ));
    }
    lines
        .map(|(n, line)| {
            let f: Vec<&'static str> = line.split_whitespace().collect();
            if f.len() != COLUMNS.len() {
                return Err(format!(
                    "arches.tsv:{n}: {} fields, expected {} ({COLUMNS:?})",
                    f.len(),
                    COLUMNS.len()
                ));
            }
            Ok(Row {
                arch: f[0],
                machine: f[1],
                rust_musl: f[2],
                rust_gnu: f[3],
                elf_machine: f[6].parse().map_err(|_| {
                    format!("arches.tsv:{n}: elf_machine `{}` is not a number", f[6])
                })?,
                aliases: match f[7] {
                    "-" => Vec::new(),
                    list => list.split(',').collect(),
                },
            })
        })
        .collect()
}

/// The table's rows, one per [`Arch::ALL`] entry and in its order (checked
/// once, here, and by this module's tests).
fn rows() -> &'static [Row] {
    static ROWS: OnceLock<Vec<Row>> = OnceLock::new();
    ROWS.get_or_init(|| {
        let rows = parse(TABLE).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = rows.iter().map(|r| r.arch).collect();
        let variants: Vec<String> = Arch::ALL.iter().map(|a| variant_name(*a)).collect();
        assert!(
            names == variants,
            "arches.tsv lists {names:?}, attune_pack::Arch {variants:?}: add or remove the variant"
        );
        rows
    })
}

/// A variant's own name, lowercased (as serde writes it).
fn variant_name(arch: Arch) -> String {
    format!("{arch:?}").to_lowercase()
}

impl Arch {
    /// Both, in a stable order: the table's.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    fn row(self) -> &'static Row {
        &rows()[self as usize]
    }

    /// The Docker name: `amd64` or `arm64`.
    pub fn docker_name(self) -> &'static str {
        self.row().arch
    }

    /// The Rust/Nix name (`uname -m`): `x86_64` or `aarch64`.
    pub fn rust_name(self) -> &'static str {
        self.row().machine
    }

    /// The Rust target of the static binaries, e.g. `aarch64-unknown-linux-musl`.
    pub fn musl_target(self) -> &'static str {
        self.row().rust_musl
    }

    /// The Rust target of a glibc build for this architecture, e.g.
    /// `x86_64-unknown-linux-gnu` (static with `+crt-static`).
    pub fn gnu_target(self) -> &'static str {
        self.row().rust_gnu
    }

    /// The ELF `e_machine` value (`EM_X86_64` = 62, `EM_AARCH64` = 183).
    pub fn elf_machine(self) -> u16 {
        self.row().elf_machine
    }

    /// The architecture of an ELF `e_machine`, when it is one of ours.
    pub fn from_elf_machine(machine: u16) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.elf_machine() == machine)
    }

    /// The architecture this program was compiled for, if it is one of ours.
    pub fn host() -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.rust_name() == std::env::consts::ARCH)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.docker_name())
    }
}

/// The error for a name that is not an architecture we build.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture `{0}`: expected {expected}", expected = expected())]
pub struct UnknownArch(String);

/// `amd64 (x86_64) or arm64 (aarch64)`.
fn expected() -> String {
    Arch::ALL
        .map(|a| format!("{} ({})", a.docker_name(), a.rust_name()))
        .join(" or ")
}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// The Docker name, the Rust name or an alias of the table.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| {
                let row = a.row();
                row.arch == s || row.machine == s || row.aliases.contains(&s)
            })
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_and_rust_names() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("x86-64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        let err = "riscv64".parse::<Arch>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown architecture `riscv64`: expected amd64 (x86_64) or arm64 (aarch64)"
        );
        // The table's "none" is no name.
        assert!("-".parse::<Arch>().is_err());
    }

    #[test]
    fn elf_machine_round_trips() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_elf_machine(a.elf_machine()), Some(a));
        }
        assert_eq!(Arch::from_elf_machine(3), None); // EM_386
    }

    /// arches.tsv has one row per variant, in `ALL`'s order, named as serde
    /// names the variant; and what it says agrees with goblin and rustc.
    #[test]
    fn the_table_is_the_enum() {
        let rows = parse(TABLE).unwrap();
        assert_eq!(rows.len(), Arch::ALL.len());
        for (a, row) in Arch::ALL.into_iter().zip(&rows) {
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", row.arch)
            );
            assert_eq!(a.to_string(), row.arch);
            assert_eq!(
                a.musl_target(),
                format!("{}-unknown-linux-musl", row.machine)
            );
            assert_eq!(a.gnu_target(), format!("{}-unknown-linux-gnu", row.machine));
        }
        assert_eq!(Arch::Amd64.elf_machine(), goblin::elf::header::EM_X86_64);
        assert_eq!(Arch::Arm64.elf_machine(), goblin::elf::header::EM_AARCH64);
        let host = Arch::host().map(|a| a.rust_name());
        assert!(host.is_none_or(|m| m == std::env::consts::ARCH), "{host:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Arch::host(), Some(Arch::Amd64));
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Arch::host(), Some(Arch::Arm64));
    }

    #[test]
    fn a_table_with_moved_columns_or_missing_fields_is_refused() {
        let moved =
            "# c\narch\trust_musl\tmachine\trust_gnu\tzig\tnix_system\telf_machine\taliases\n";
        assert!(
            parse(moved)
                .unwrap_err()
                .contains("arches.tsv:2: the columns are")
        );
        let short =
            "arch machine rust_musl rust_gnu zig nix_system elf_machine aliases\namd64 x86_64\n";
        assert_eq!(
            parse(short).unwrap_err(),
            format!("arches.tsv:2: 2 fields, expected 8 ({COLUMNS:?})")
        );
        let word = "arch machine rust_musl rust_gnu zig nix_system elf_machine aliases\na m r g z n sixty -\n";
        assert!(
            parse(word)
                .unwrap_err()
                .contains("elf_machine `sixty` is not a number")
        );
    }
}
