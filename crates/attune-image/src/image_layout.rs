//! The layouts of the images, in one place: the packs image, what
//! `packs_image` writes and what `check_image` asserts of any packs image,
//! whoever built it (docker/build-packs-image, the flake), and the config the
//! service images share with it (`User`, `WorkingDir`, `Env`, the labels).
//! docker/IMAGE-LAYOUT.md documents them, and packs-assemble's
//! `tests/export.rs` checks that the document lists exactly these entries and
//! this config.

use attune_pack::Arch;
use attune_volume::manifest::{MODE_DIR, MODE_EXEC, MODE_FILE};
use attune_volume::scan::Kind;

/// The image's default repository name.
pub const DEFAULT_NAME: &str = "attune/packs";
/// Owner of every entry but the mount points.
pub const ROOT: (u32, u32) = (0, 0);
/// `attune`, the user the image runs as, and the owner of the mount points.
pub const ATTUNE: (u32, u32) = (1000, 1000);
/// The packs, one layer each: `PACKS_SRC/<pack>/...`.
pub const PACKS_SRC: &str = "opt/attune/packs-src";
/// The assembler, the entrypoint.
pub const ASSEMBLER: &str = "usr/local/bin/packs-assemble";
/// Where the entrypoint publishes (the packs volume's mount point).
pub const VOLUME: &str = "/opt/attune/packs";

/// `/etc/passwd`, as every image of the stack has it ([`crate::services`]).
pub fn passwd() -> &'static str {
    &crate::services::layout().common.passwd
}
/// `/etc/group`, likewise.
pub fn group() -> &'static str {
    &crate::services::layout().common.group
}

/// What a base entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Nothing (a directory).
    None,
    /// `/etc/passwd` ([`passwd`]).
    Passwd,
    /// `/etc/group` ([`group`]).
    Group,
    /// The static packs-assemble of the image's architecture.
    Assembler,
}

/// One entry of the base layer.
#[derive(Clone, Copy, Debug)]
pub struct BaseEntry {
    /// Relative path, no trailing `/`.
    pub path: &'static str,
    /// Directory or file.
    pub kind: Kind,
    /// Mode bits.
    pub mode: u32,
    /// `(uid, gid)`.
    pub owner: (u32, u32),
    /// Contents.
    pub body: Body,
}

const fn dir(path: &'static str, mode: u32, owner: (u32, u32)) -> BaseEntry {
    BaseEntry {
        path,
        kind: Kind::Dir,
        mode,
        owner,
        body: Body::None,
    }
}

const fn file(path: &'static str, mode: u32, body: Body) -> BaseEntry {
    BaseEntry {
        path,
        kind: Kind::File,
        mode,
        owner: ROOT,
        body,
    }
}

/// The base layer, the image's first, entry by entry in path order. The mount
/// points are owned by 1000 (a new named volume takes the ownership of the
/// directory it covers).
pub const BASE: &[BaseEntry] = &[
    dir("etc", 0o755, ROOT),
    file("etc/group", 0o644, Body::Group),
    file("etc/passwd", 0o644, Body::Passwd),
    dir("opt", 0o755, ROOT),
    dir("opt/attune", 0o755, ROOT),
    dir("opt/attune/data", 0o755, ATTUNE),
    dir("opt/attune/logs", 0o755, ATTUNE),
    dir("opt/attune/packs", 0o755, ATTUNE),
    dir(PACKS_SRC, 0o755, ROOT),
    dir("opt/attune/packs.dev", 0o755, ATTUNE),
    dir("tmp", 0o1777, ROOT),
    dir("usr", 0o755, ROOT),
    dir("usr/local", 0o755, ROOT),
    dir("usr/local/bin", 0o755, ROOT),
    file(ASSEMBLER, 0o755, Body::Assembler),
];

/// The directories every pack layer starts with, as in [`BASE`], so that each
/// layer stands alone.
pub const PACK_PARENTS: [&str; 3] = ["opt", "opt/attune", PACKS_SRC];
/// Their mode.
pub const PARENT_MODE: u32 = 0o755;
/// Directories below `PACKS_SRC`, as the volume publishes them.
pub const PACK_DIR_MODE: u32 = MODE_DIR;
/// Files below `PACKS_SRC`: plain or executable, as the volume publishes them.
pub const PACK_FILE_MODES: [u32; 2] = [MODE_FILE, MODE_EXEC];

impl Body {
    /// The text a [`Body::Passwd`] or [`Body::Group`] entry holds.
    pub fn text(self) -> Option<&'static str> {
        match self {
            Body::Passwd => Some(passwd()),
            Body::Group => Some(group()),
            Body::None | Body::Assembler => None,
        }
    }
}

/// `User`: every image of the stack shares the config of [`crate::services`].
pub fn user() -> &'static str {
    &crate::services::layout().common.user
}
/// `WorkingDir`.
pub fn working_dir() -> &'static str {
    &crate::services::layout().common.working_dir
}
/// `Env`.
pub fn env() -> &'static [String] {
    &crate::services::layout().common.env
}
/// Label: the architecture.
pub fn label_arch() -> &'static str {
    &crate::services::layout().common.label_arch
}
/// Label: the packs, in layer order, separated by spaces.
pub const LABEL_PACKS: &str = "io.attune.packs";
/// Label: the volume manifest's root hash.
pub const LABEL_ROOT_HASH: &str = "io.attune.packs.root-hash";
/// Label: the title, as the other images of the stack have one: its name and value.
pub fn label_title() -> (&'static str, &'static str) {
    (
        &crate::services::layout().common.label_title,
        "attune packs",
    )
}

/// `Entrypoint`: publish the image's packs into a volume and verify it.
pub fn entrypoint(arch: Arch) -> Vec<String> {
    [
        &format!("/{ASSEMBLER}"),
        "assemble",
        "--packs",
        &format!("/{PACKS_SRC}"),
        "--arch",
        arch.docker_name(),
        "--verify",
    ]
    .map(str::to_string)
    .to_vec()
}

/// `Cmd`: into the volume mounted at [`VOLUME`].
pub fn cmd() -> Vec<String> {
    vec!["--out".to_string(), VOLUME.to_string()]
}

/// The image config's `created`, `history[].created` and every entry's mtime:
/// `mtime` (`SOURCE_DATE_EPOCH`, else 1) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn created(mtime: u64) -> String {
    attune_volume::history::utc(mtime as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_in_path_order_with_parents_first() {
        assert!(BASE.windows(2).all(|w| w[0].path < w[1].path));
        for e in BASE {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                assert!(
                    BASE.iter().any(|p| p.path == parent && p.kind == Kind::Dir),
                    "{}",
                    e.path
                );
            }
        }
        for p in PACK_PARENTS {
            assert!(
                BASE.iter()
                    .any(|e| e.path == p && e.mode == PARENT_MODE && e.owner == ROOT)
            );
        }
    }

    #[test]
    fn the_mount_points_are_the_service_images_own() {
        let common = &crate::services::layout().common;
        let mine: Vec<String> = BASE
            .iter()
            .filter(|e| e.owner == ATTUNE)
            .map(|e| format!("/{}", e.path))
            .collect();
        let mut theirs = common.mounts.clone();
        theirs.sort();
        assert_eq!(mine, theirs);
        assert_eq!(ATTUNE, common.mount_owner);
        assert!(
            BASE.iter()
                .any(|e| format!("/{}", e.path) == common.tmp && e.mode == 0o1777)
        );
    }

    #[test]
    fn entrypoint_publishes_and_verifies_into_the_volume() {
        assert_eq!(
            [entrypoint(Arch::Arm64), cmd()].concat().join(" "),
            "/usr/local/bin/packs-assemble assemble --packs /opt/attune/packs-src --arch arm64 --verify --out /opt/attune/packs"
        );
        assert_eq!(created(1), "1970-01-01T00:00:01Z");
    }
}
