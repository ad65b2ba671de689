//! Walking untrusted trees: pack sources and binaries trees become a sorted list
//! of regular files and directories. Symlinks, devices, FIFOs, sockets, hard
//! links and non-UTF-8 names are refused with their path; nothing is followed.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use attune_pack::{Diagnostic, Diagnostics};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext};

/// Names skipped everywhere: VCS metadata and Python byte-code caches.
pub const EXCLUDED_NAMES: &[&str] = &[".git", "__pycache__"];

/// File extensions skipped everywhere.
pub const EXCLUDED_EXTENSIONS: &[&str] = &["pyc"];

/// Which input a file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A `--packs` directory.
    Source,
    /// A `--binaries` tree.
    Binaries,
}

/// The identity and change stamp of a file, used by the hash cache and to
/// notice a source that changes while it is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch (cannot be set by users).
    pub ctime_ns: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
        }
    }

    /// The stamp of `path` now, not following a final symlink.
    pub fn read(path: &Path) -> std::io::Result<Stamp> {
        std::fs::symlink_metadata(path).map(|m| Stamp::of(&m))
    }
}

/// A directory or a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

/// One accepted entry of an input tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Path inside the volume, `/`-separated, starting with the pack name.
    pub rel: String,
    /// Where it is on disk.
    pub abs: PathBuf,
    /// Directory or file.
    pub kind: Kind,
    /// Whether any execute bit is set in the source.
    pub executable: bool,
    /// Whether setuid or setgid was set in the source (it is never published).
    pub setid: bool,
    /// Identity and change stamp.
    pub stamp: Stamp,
    /// Which input it came from.
    pub origin: Origin,
}

/// Whether a name is skipped (see [`EXCLUDED_NAMES`], [`EXCLUDED_EXTENSIONS`]).
pub fn is_excluded(name: &str) -> bool {
    EXCLUDED_NAMES.contains(&name)
        || Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXCLUDED_EXTENSIONS.contains(&e))
}

/// Walks `root` (one pack directory, or one pack's subtree of a binaries tree),
/// returning its entries under `prefix` in sorted order. The root itself is
/// included as `prefix`. Refused entries become errors in `diags`.
///
/// `allow_hard_links` is false for pack sources: a file with several links may
/// be a hard link to a file outside the tree that the tree's author cannot read.
pub fn scan(
    root: &Path,
    prefix: &str,
    origin: Origin,
    allow_hard_links: bool,
    diags: &mut Diagnostics,
) -> Result<Vec<Node>, Error> {
    let mut nodes = vec![];
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(is_excluded));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
            Error::Io {
                action: "read",
                path,
                source,
            }
        })?;
        let path = entry.path();
        let meta = if entry.depth() == 0 {
            std::fs::metadata(path).ctx("read", path)?
        } else {
            entry
                .metadata()
                .map_err(std::io::Error::from)
                .ctx("read", path)?
        };
        let rel_tail = path.strip_prefix(root).unwrap_or(path);
        let Some(rel_tail) = rel_tail.to_str() else {
            diags.push(
                Diagnostic::error(path, "file name is not valid UTF-8")
                    .hint("rename it; volume paths are recorded in a JSON manifest"),
            );
            continue;
        };
        let rel = if rel_tail.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}/{rel_tail}")
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            diags.push(refusal(path, &ft));
            continue;
        };
        if kind == Kind::File && !allow_hard_links && meta.nlink() > 1 {
            diags.push(
                Diagnostic::error(path, format!("has {} hard links", meta.nlink())).hint(
                    "pack sources must not share inodes with other files; copy the tree with `cp -r` first",
                ),
            );
            continue;
        }
        nodes.push(Node {
            rel,
            abs: path.to_path_buf(),
            kind,
            executable: meta.mode() & 0o111 != 0,
            setid: meta.mode() & 0o6000 != 0,
            stamp: Stamp::of(&meta),
            origin,
        });
    }
    Ok(nodes)
}

fn refusal(path: &Path, ft: &std::fs::FileType) -> Diagnostic {
    if ft.is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Diagnostic::error(path, format!("is a symbolic link (to {target})")).hint(
            "packs may hold only regular files and directories; replace the link with the file itself",
        );
    }
    let what = if ft.is_block_device() || ft.is_char_device() {
        "a device file"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Diagnostic::error(path, format!("is {what}"))
        .hint("packs may hold only regular files and directories; remove it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn walks_sorted_and_refuses_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("p");
        fs::create_dir_all(root.join("b")).unwrap();
        fs::write(root.join("b/x.sh"), "x").unwrap();
        fs::set_permissions(root.join("b/x.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(root.join("a.yaml"), "a").unwrap();
        fs::create_dir_all(root.join("__pycache__")).unwrap();
        fs::write(root.join("__pycache__/m.pyc"), "c").unwrap();
        symlink("/etc/passwd", root.join("evil")).unwrap();
        fs::write(tmp.path().join("outside"), "o").unwrap();
        fs::hard_link(tmp.path().join("outside"), root.join("hard")).unwrap();

        let mut diags = Diagnostics::default();
        let nodes = scan(&root, "p", Origin::Source, false, &mut diags).unwrap();
        let rels: Vec<&str> = nodes.iter().map(|n| n.rel.as_str()).collect();
        assert_eq!(rels, ["p", "p/a.yaml", "p/b", "p/b/x.sh"]);
        assert!(nodes[3].executable && nodes[3].setid);
        let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("evil") && msgs[0].contains("symbolic link (to /etc/passwd)"));
        assert!(msgs[1].contains("hard") && msgs[1].contains("2 hard links"));
    }

    #[test]
    fn excluded_names() {
        assert!(is_excluded(".git"));
        assert!(is_excluded("x.pyc"));
        assert!(!is_excluded("x.py"));
    }
}
