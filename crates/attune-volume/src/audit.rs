//! Confirming that published entries are what the manifest says before a run
//! trusts them (says "up to date", reuses an object, or hard-links a file into
//! a new one): a stat per entry, compared with the stamps record
//! ([`crate::stamps`]); an entry whose stamp moved is read again. Whatever does
//! not match is reported as damaged, for the caller to repair.
//!
//! Each directory is opened once (`O_NOFOLLOW`, relative checks through its
//! descriptor) and closed before the next, on all cores: descriptors stay few
//! however wide the tree.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::error::{Error, IoContext};
use crate::hash::{Sha256Digest, hash_file};
use crate::manifest::{Entry, Manifest};
use crate::scan::Kind;
use crate::stamps::{Record, Stamps, listing_digest};
use crate::store::{PackTree, base_name};

/// What auditing found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Entries confirmed, with their inodes' records.
    pub confirmed: Vec<(usize, Record)>,
    /// Entries that are not what the manifest says, each with the reason.
    pub damaged: Vec<(usize, String)>,
    /// Files read again because their stamp had moved.
    pub rehashed: usize,
    /// Directories listed again because their stamp had moved.
    pub relisted: usize,
}

impl Audit {
    fn merge(&mut self, other: Audit) {
        self.confirmed.extend(other.confirmed);
        self.damaged.extend(other.damaged);
        self.rehashed += other.rehashed;
        self.relisted += other.relisted;
    }
}

/// Whether to confirm against the record (re-reading what moved), or only to
/// record the stamps of entries this run has just written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Confirm: the stamp must match the record, or the contents are read again.
    Confirm,
    /// Record: the entries were written by this run; take their stamps.
    Record,
}

/// One directory to look at: its own entry (when its listing is checked too)
/// and the children to stat.
struct Job {
    dir: Option<usize>,
    rel: String,
    children: Vec<usize>,
}

/// Audits every entry of `pack` in the object directory `object` (the
/// directory holding `<pack>/`), directory listings included.
pub fn audit_pack(
    object: &Path,
    manifest: &Manifest,
    pack: &PackTree,
    stamps: &Stamps,
    how: How,
) -> Result<Audit, Error> {
    let entries = &manifest.contents.entries;
    let mut jobs: Vec<Job> = vec![];
    let mut by_path: HashMap<&str, usize> = HashMap::new();
    for i in pack.entries() {
        let e = &entries[i];
        if i != pack.root
            && let Some((parent, _)) = e.path.rsplit_once('/')
            && let Some(&j) = by_path.get(parent)
        {
            jobs[j].children.push(i);
        }
        if e.kind == Kind::Dir {
            by_path.insert(&e.path, jobs.len());
            jobs.push(Job {
                dir: Some(i),
                rel: e.path.clone(),
                children: vec![],
            });
        }
    }
    run(object, entries, jobs, stamps, how)
}

/// Audits the files `files` (entry indices) at their paths in the object
/// directory `object`, without their directories' listings.
pub fn audit_files(
    object: &Path,
    manifest: &Manifest,
    files: &[usize],
    stamps: &Stamps,
    how: How,
) -> Result<Audit, Error> {
    let entries = &manifest.contents.entries;
    let mut jobs: Vec<Job> = vec![];
    let mut by_parent: HashMap<&str, usize> = HashMap::new();
    for &i in files {
        let parent = entries[i].path.rsplit_once('/').map_or("", |(p, _)| p);
        let j = *by_parent.entry(parent).or_insert_with(|| {
            jobs.push(Job {
                dir: None,
                rel: parent.to_string(),
                children: vec![],
            });
            jobs.len() - 1
        });
        jobs[j].children.push(i);
    }
    run(object, entries, jobs, stamps, how)
}

fn run(
    object: &Path,
    entries: &[Entry],
    jobs: Vec<Job>,
    stamps: &Stamps,
    how: How,
) -> Result<Audit, Error> {
    // Each directory's confirmations go straight into one vector sized for
    // them all, so that they are never held twice (merging the parts after
    // held 2 x 8.8 MB at 100,000 entries); sorted by entry after.
    let most = jobs
        .iter()
        .map(|j| j.children.len() + usize::from(j.dir.is_some()))
        .sum();
    // The files to read again likewise (pages of a vector never written to
    // are not resident: sizing both for every entry costs nothing).
    let sink = std::sync::Mutex::new(Vec::with_capacity(most));
    let again = std::sync::Mutex::new(Vec::with_capacity(most));
    let parts = crate::parallel::try_map(&jobs, |job| {
        let (mut a, r) = one_dir(object, entries, job, stamps, how)?;
        let confirmed = std::mem::take(&mut a.confirmed);
        sink.lock().expect("audit sink").extend(confirmed);
        again.lock().expect("audit sink").extend(r);
        Ok(a)
    })?;
    let mut audit = Audit {
        confirmed: sink.into_inner().expect("audit sink"),
        ..Audit::default()
    };
    audit.confirmed.sort_unstable_by_key(|&(i, _)| i);
    let mut reread: Reread = again.into_inner().expect("audit sink");
    reread.sort_unstable_by_key(|&(i, _)| i);
    for a in parts {
        audit.merge(a);
    }
    audit.rehashed = reread.len();
    let window = crate::stamps::settle_window_ns(object);
    // In slices, so that the results of 100,000 reads are never held at once
    // (each read's path is made when it is read, for the same reason).
    for slice in reread.chunks(4096) {
        let results = crate::parallel::try_map(slice, |(i, rec)| {
            let want = entries[*i].sha256.expect("files have a hash");
            // Read after its ctime by more than the settle window: no write
            // that moved no time can come after this read.
            let read_ns = crate::stamps::now_ns();
            Ok(match hash_file(&object.join(&entries[*i].path)) {
                Ok(h) if h.sha256 == want => Ok((
                    *i,
                    Record {
                        digest: want,
                        settled: crate::stamps::settles(rec.ctime_ns, read_ns, window),
                        ..*rec
                    },
                )),
                Ok(_) => Err((
                    *i,
                    "contents differ from the manifest (sha256 mismatch)".into(),
                )),
                Err(e) => Err((*i, format!("cannot be read: {e}"))),
            })
        })?;
        for r in results {
            match r {
                Ok(c) => audit.confirmed.push(c),
                Err(d) => audit.damaged.push(d),
            }
        }
    }
    Ok(audit)
}

/// The record of an inode stat'ed as `st`, not yet settled.
fn record(st: &Stat, digest: Sha256Digest, size: u64) -> Record {
    #[allow(clippy::unnecessary_cast)]
    Record {
        settled: false,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        ctime_ns: (st.st_ctime as i64).saturating_mul(1_000_000_000) + st.st_ctime_nsec as i64,
        size,
        digest,
        nlink: st.st_nlink as u64,
    }
}

/// Files whose stamp moved, to read again: (entry, record of the stat).
type Reread = Vec<(usize, Record)>;

fn one_dir(
    object: &Path,
    entries: &[Entry],
    job: &Job,
    stamps: &Stamps,
    how: How,
) -> Result<(Audit, Reread), Error> {
    let mut audit = Audit::default();
    let mut reread = vec![];
    let path = object.join(&job.rel);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd: OwnedFd = match rustix::fs::open(&path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let why = format!("is not a readable directory ({})", std::io::Error::from(e));
            match job.dir {
                Some(d) => audit.damaged.push((d, why)),
                None => audit
                    .damaged
                    .extend(job.children.iter().map(|&c| (c, why.clone()))),
            }
            return Ok((audit, reread));
        }
    };
    let io = |e: rustix::io::Errno| std::io::Error::from(e);
    if let Some(d) = job.dir {
        let st = rustix::fs::fstat(&fd).map_err(io).ctx("read", &path)?;
        let names = || {
            job.children
                .iter()
                .map(|&c| (base_name(&entries[c].path), entries[c].kind == Kind::Dir))
        };
        let digest = listing_digest(names());
        let rec = record(&st, digest, 0);
        if st.st_mode as u32 & 0o7777 != entries[d].mode_bits() {
            audit.damaged.push((
                d,
                format!(
                    "has mode {:04o}, the manifest says {}",
                    st.st_mode & 0o7777,
                    entries[d].mode
                ),
            ));
        } else if how == How::Record {
            audit.confirmed.push((d, rec));
        } else if stamps.confirms(&rec, &digest) {
            audit.confirmed.push((
                d,
                Record {
                    settled: true,
                    ..rec
                },
            ));
        } else {
            audit.relisted += 1;
            let read_ns = crate::stamps::now_ns();
            let window = crate::stamps::settle_window_ns(object);
            let mut on_disk: Vec<String> = rustix::fs::Dir::read_from(&fd)
                .map_err(io)
                .ctx("read directory", &path)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "." && n != "..")
                .collect();
            on_disk.sort();
            let expected: Vec<&str> = names().map(|(n, _)| n).collect();
            if on_disk
                .iter()
                .map(String::as_str)
                .eq(expected.iter().copied())
            {
                let settled = crate::stamps::settles(rec.ctime_ns, read_ns, window);
                audit.confirmed.push((d, Record { settled, ..rec }));
            } else {
                let extra: Vec<&str> = on_disk
                    .iter()
                    .map(String::as_str)
                    .filter(|n| !expected.contains(n))
                    .collect();
                audit.damaged.push((
                    d,
                    if extra.is_empty() {
                        "is missing entries the manifest lists".to_string()
                    } else {
                        format!(
                            "holds entries the manifest does not list: {}",
                            extra.join(", ")
                        )
                    },
                ));
            }
        }
    }
    for &c in &job.children {
        let e = &entries[c];
        let name = base_name(&e.path);
        let st = match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(err) => {
                audit.damaged.push((c, format!("is missing ({})", io(err))));
                continue;
            }
        };
        let ft = FileType::from_raw_mode(st.st_mode as _);
        let mode = st.st_mode as u32 & 0o7777;
        let want_kind = match e.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        };
        if ft != want_kind {
            audit
                .damaged
                .push((c, format!("is a {ft:?}, the manifest says {:?}", e.kind)));
            continue;
        }
        if mode != e.mode_bits() {
            audit.damaged.push((
                c,
                format!("has mode {mode:04o}, the manifest says {}", e.mode),
            ));
            continue;
        }
        if e.kind == Kind::Dir {
            continue; // its own job looks inside
        }
        let size = st.st_size as u64;
        if Some(size) != e.size {
            audit.damaged.push((
                c,
                format!(
                    "has {size} bytes, the manifest says {}",
                    e.size.unwrap_or(0)
                ),
            ));
            continue;
        }
        let sha = e.sha256.expect("files have a hash");
        let rec = record(&st, sha, size);
        if how == How::Record {
            // Written by this run, never read back: not settled, so the next
            // run reads it again (an edit before now would otherwise be
            // recorded as the manifest's contents).
            audit.confirmed.push((c, rec));
        } else if stamps.confirms(&rec, &sha) {
            audit.confirmed.push((
                c,
                Record {
                    settled: true,
                    ..rec
                },
            ));
        } else {
            reread.push((c, rec));
        }
    }
    Ok((audit, reread))
}
