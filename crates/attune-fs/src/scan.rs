//! Walking untrusted trees: pack sources and binaries trees become a sorted list
//! of regular files and directories. Symlinks, devices, FIFOs, sockets, hard
//! links and non-UTF-8 names are refused with their path; nothing is followed.
//! The root's own mode and stamp do not matter (it is published as a directory).

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, statat};

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
    /// A `--deps` tree: a pack's dependencies, built for the architecture.
    Deps,
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
    // The field types of `stat` differ between architectures (aarch64 musl is
    // built too), so the casts are needed there even where they are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &Stat) -> Stamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000) + n;
        Stamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    /// The stamp of `path` now, not following a final symlink.
    pub fn read(path: &Path) -> std::io::Result<Stamp> {
        rustix::fs::lstat(path)
            .map(|st| Stamp::of(&st))
            .map_err(Into::into)
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

/// The directory a scan started from and the volume path it is published as;
/// shared by every node of the scan, so that a node holds no path of its own.
#[derive(Debug, PartialEq, Eq)]
pub struct Base {
    dir: PathBuf,
    prefix_len: usize,
}

impl Base {
    /// `dir`, published as `prefix`.
    pub fn new(dir: &Path, prefix: &str) -> Arc<Base> {
        Arc::new(Base {
            dir: dir.to_path_buf(),
            prefix_len: prefix.len(),
        })
    }
}

/// One accepted entry of an input tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Path inside the volume, `/`-separated, starting with the pack name.
    pub rel: String,
    /// Where its scan started.
    pub base: Arc<Base>,
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

impl Node {
    /// Where it is on disk.
    pub fn abs(&self) -> PathBuf {
        self.abs_of(&self.rel)
    }

    /// Where the entry at volume path `rel` is on disk, given that it came
    /// from this node's scan (for nodes whose `rel` moved into a manifest).
    pub fn abs_of(&self, rel: &str) -> PathBuf {
        match rel.get(self.base.prefix_len + 1..) {
            Some(below) if !below.is_empty() => self.base.dir.join(below),
            _ => self.base.dir.clone(),
        }
    }
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
/// returning its entries under `prefix` sorted by path. The root itself is
/// included as `prefix`. Refused entries become errors in `diags`, sorted too.
///
/// Directories are opened with `O_NOFOLLOW` and their entries stat'ed
/// relative to the directory's descriptor, so nothing is followed; directories
/// are read by several threads (stat dominates a walk). A queued directory
/// holds no descriptor: it is opened by its path when a thread takes it, and
/// the inode opened must be the one its parent listed (a directory swapped for
/// a link meanwhile is refused), so each thread holds one or two descriptors
/// however wide the tree (3,000 siblings once failed under `ulimit -n 1024`).
/// `allow_hard_links` is false for pack sources: a file with several links may
/// be a hard link to a file outside the tree that its author cannot read.
pub fn scan(
    root: &Path,
    prefix: &str,
    origin: Origin,
    allow_hard_links: bool,
    diags: &mut Diagnostics,
) -> Result<Vec<Node>, Error> {
    scan_all(&[(root, prefix)], origin, allow_hard_links, diags)
}

/// [`scan`] of several roots (each with its prefix) in one walk: the threads
/// are started once, however many packs there are.
pub fn scan_all(
    roots: &[(&Path, &str)],
    origin: Origin,
    allow_hard_links: bool,
    diags: &mut Diagnostics,
) -> Result<Vec<Node>, Error> {
    // A root may be reached through a symlink (`result` from nix build, a link to
    // a pack); nothing below it is followed.
    let io = |e: rustix::io::Errno| std::io::Error::from(e);
    let mut nodes = vec![];
    let mut jobs = vec![];
    for &(root, prefix) in roots {
        let fd = rustix::fs::open(root, dir_flags() - OFlags::NOFOLLOW, Mode::empty())
            .map_err(io)
            .ctx("open", root)?;
        let st = rustix::fs::fstat(&fd).map_err(io).ctx("read", root)?;
        let base = Base::new(root, prefix);
        nodes.push(Node {
            rel: prefix.to_string(),
            base: base.clone(),
            kind: Kind::Dir,
            executable: true,
            setid: false,
            stamp: Stamp::of(&st),
            origin,
        });
        jobs.push((
            DirFd::Open(fd),
            root.to_path_buf(),
            prefix.to_string(),
            base,
        ));
    }
    let queue = Queue {
        state: Mutex::new((jobs, 0)),
        ready: Condvar::new(),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let results: Vec<Result<(Vec<Node>, Diagnostics), Error>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut w = Walker {
                        origin,
                        allow_hard_links,
                        nodes: vec![],
                        diags: Diagnostics::default(),
                    };
                    while let Some((fd, abs, rel, base)) = queue.pop() {
                        let result = w.dir(fd, &abs, &rel, &base, &queue);
                        queue.done();
                        result?;
                    }
                    Ok((w.nodes, w.diags))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("scan thread panicked"))
            .collect()
    });
    let mut found = vec![];
    for r in results {
        let (n, d) = r?;
        nodes.extend(n);
        found.extend(d.0);
    }
    nodes.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    found.sort_by(|a, b| a.path.cmp(&b.path));
    for d in found {
        diags.push(d);
    }
    Ok(nodes)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A directory to read: open already (a root), or the (device, inode) its
/// parent listed, to be opened by its path.
enum DirFd {
    Open(OwnedFd),
    Listed(u64, u64),
}

type Job = (DirFd, PathBuf, String, Arc<Base>);

/// Directories left to read, and how many are being read.
struct Queue {
    state: Mutex<(Vec<Job>, usize)>,
    ready: Condvar,
}

impl Queue {
    /// The next directory, or `None` when none is left and none is being read.
    fn pop(&self) -> Option<Job> {
        let mut st = self.state.lock().expect("queue lock");
        loop {
            if let Some(job) = st.0.pop() {
                st.1 += 1;
                return Some(job);
            }
            if st.1 == 0 {
                return None;
            }
            st = self.ready.wait(st).expect("queue lock");
        }
    }

    fn push(&self, job: Job) {
        self.state.lock().expect("queue lock").0.push(job);
        self.ready.notify_one();
    }

    fn done(&self) {
        let mut st = self.state.lock().expect("queue lock");
        st.1 -= 1;
        if st.1 == 0 && st.0.is_empty() {
            // On an error the queue may still hold jobs; other workers drain them.
            self.ready.notify_all();
        }
    }
}

struct Walker {
    origin: Origin,
    allow_hard_links: bool,
    nodes: Vec<Node>,
    diags: Diagnostics,
}

impl Walker {
    fn dir(
        &mut self,
        fd: DirFd,
        abs: &Path,
        rel: &str,
        base: &Arc<Base>,
        queue: &Queue,
    ) -> Result<(), Error> {
        let io = |e: rustix::io::Errno| std::io::Error::from(e);
        let fd = match fd {
            DirFd::Open(fd) => fd,
            DirFd::Listed(dev, ino) => {
                let fd = rustix::fs::open(abs, dir_flags(), Mode::empty())
                    .map_err(io)
                    .ctx("open", abs)?;
                let st = rustix::fs::fstat(&fd).map_err(io).ctx("read", abs)?;
                #[allow(clippy::unnecessary_cast)]
                if (st.st_dev as u64, st.st_ino as u64) != (dev, ino) {
                    return Err(Error::Environment(format!(
                        "{} changed while it was being read; nothing was published. Run again once the sources are still",
                        abs.display()
                    )));
                }
                fd
            }
        };
        let entries = Dir::read_from(&fd).map_err(io).ctx("read directory", abs)?;
        for entry in entries {
            let entry = entry.map_err(io).ctx("read directory", abs)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let path = || abs.join(std::ffi::OsStr::from_bytes(name));
            let Ok(name) = std::str::from_utf8(name) else {
                self.diags.push(
                    Diagnostic::error(path(), "file name is not valid UTF-8")
                        .hint("rename it; volume paths are recorded in a JSON manifest"),
                );
                continue;
            };
            if is_excluded(name) {
                continue;
            }
            let st = statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io)
                .ctx_with("read", path)?;
            let kind = match FileType::from_raw_mode(st.st_mode as _) {
                FileType::Directory => Kind::Dir,
                FileType::RegularFile => Kind::File,
                other => {
                    self.diags.push(refusal(&path(), other));
                    continue;
                }
            };
            if kind == Kind::File && !self.allow_hard_links && st.st_nlink > 1 {
                self.diags.push(
                    Diagnostic::error(path(), format!("has {} hard links", st.st_nlink)).hint(
                        "pack sources must not share inodes with other files; copy the tree with `cp -r` first",
                    ),
                );
                continue;
            }
            let mut child_rel = String::with_capacity(rel.len() + 1 + name.len());
            child_rel.push_str(rel);
            child_rel.push('/');
            child_rel.push_str(name);
            if kind == Kind::Dir {
                #[allow(clippy::unnecessary_cast)]
                queue.push((
                    DirFd::Listed(st.st_dev as u64, st.st_ino as u64),
                    path(),
                    child_rel.clone(),
                    base.clone(),
                ));
            }
            let mode = st.st_mode as u32;
            self.nodes.push(Node {
                rel: child_rel,
                base: base.clone(),
                kind,
                executable: mode & 0o111 != 0,
                setid: mode & 0o6000 != 0,
                stamp: Stamp::of(&st),
                origin: self.origin,
            });
        }
        Ok(())
    }
}

fn refusal(path: &Path, ft: FileType) -> Diagnostic {
    if ft == FileType::Symlink {
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Diagnostic::error(path, format!("is a symbolic link (to {target})")).hint(
            "packs may hold only regular files and directories; replace the link with the file itself",
        );
    }
    let what = match ft {
        FileType::BlockDevice | FileType::CharacterDevice => "a device file",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        _ => "not a regular file",
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
