//! The manifest: every entry of a generation with its type, mode, size and hash,
//! and a root hash over all of it. Equal inputs give byte-identical manifests.
//!
//! On disk it is JSON with one entry per line (format 2), so that it can be
//! written, compared and read back as a stream: a volume of 100,000 files never
//! holds its manifest's bytes in memory. Any JSON parser reads it whole.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use attune_pack::Arch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext};
use crate::hash::Sha256Digest;
use crate::scan::{Kind, Origin};

/// The manifest's file name, inside each generation (and linked from the volume root).
pub const MANIFEST_NAME: &str = ".attune-manifest.json";

/// The manifest format this program writes: 3 since generations share pack
/// objects that are real trees (2: directory objects linked by symlinks; 1: a
/// self-contained tree per generation).
pub const FORMAT: u32 = 3;

/// The end of a format-2 manifest's first line: entries follow, one a line.
const ENTRIES_OPEN: &str = "\"entries\":[";

/// Mode of published regular files.
pub const MODE_FILE: u32 = 0o444;
/// Mode of published executables.
pub const MODE_EXEC: u32 = 0o555;
/// Mode of published directories: writable by their owner, as in a `cp -a`
/// copy, because readers copy them with their modes and then write into the
/// copies (upstream's worker unpacks an archive of a pack as uid 1000, and a
/// directory created 0555 takes no entries). See the crate doc, "Sharing".
pub const MODE_DIR: u32 = 0o755;

/// One published entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path inside the generation, `/`-separated.
    pub path: String,
    /// `dir` or `file`.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Octal mode: `0444` or `0555` (files), `0755` (directories).
    pub mode: Mode,
    /// Size in bytes (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the contents (files), in lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    /// Which input supplied it.
    pub origin: Origin,
}

impl Entry {
    /// The mode as a number.
    pub fn mode_bits(&self) -> u32 {
        self.mode.0
    }
}

/// A permission mode; written as four octal digits (`"0444"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mode(pub u32);

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u32::from_str_radix(&s, 8)
            .ok()
            .filter(|m| s.len() == 4 && *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| serde::de::Error::custom("expected four octal digits"))
    }
}

impl Mode {
    /// Appends the four octal digits.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for shift in [9, 6, 3, 0] {
            out.push(b'0' + ((self.0 >> shift) & 7) as u8);
        }
    }
}

/// Appends `v` in decimal (without the formatting machinery: this runs for
/// every entry of every manifest written or compared).
fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The mode of a mode number.
pub fn mode_string(mode: u32) -> Mode {
    Mode(mode)
}

/// Everything the root hash covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// Manifest format.
    pub format: u32,
    /// The architecture the binaries are for.
    pub arch: Arch,
    /// Modification time of every entry, seconds since the epoch.
    pub mtime: i64,
    /// `UID:GID` of every entry, when `--chown` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Entries sorted by path.
    pub entries: Vec<Entry>,
}

/// A generation's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `sha256:<hex>` over the contents (see [`root_hash`]).
    pub root_hash: String,
    /// The contents.
    #[serde(flatten)]
    pub contents: Contents,
}

impl Manifest {
    /// Seals `contents` with its root hash (entries are sorted first).
    pub fn new(mut contents: Contents) -> Manifest {
        contents.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest::from_sorted(contents)
    }

    /// Seals `contents`, whose entries are sorted by path already.
    pub fn from_sorted(contents: Contents) -> Manifest {
        debug_assert!(contents.entries.is_sorted_by(|a, b| a.path < b.path));
        let root_hash = root_hash(&contents);
        Manifest {
            root_hash,
            contents,
        }
    }

    /// The generation id derived from the root hash: 32 hex digits (128 bits).
    pub fn generation_id(&self) -> &str {
        let hex = self.root_hash.trim_start_matches("sha256:");
        &hex[..32.min(hex.len())]
    }

    /// The canonical bytes written to disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![];
        self.write_to(&mut v)
            .expect("writing to memory cannot fail");
        v
    }

    /// Writes the canonical bytes: a first line with everything but the
    /// entries, then one entry a line, then `]}`.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        struct Head<'a> {
            root_hash: &'a str,
            format: u32,
            arch: Arch,
            mtime: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            owner: Option<&'a str>,
        }
        let c = &self.contents;
        let head = serde_json::to_string(&Head {
            root_hash: &self.root_hash,
            format: c.format,
            arch: c.arch,
            mtime: c.mtime,
            owner: c.owner.as_deref(),
        })?;
        w.write_all(&head.as_bytes()[..head.len() - 1])?;
        writeln!(w, ",{ENTRIES_OPEN}")?;
        let mut line = Vec::with_capacity(256);
        for (i, e) in c.entries.iter().enumerate() {
            line.clear();
            e.write_json(&mut line);
            line.extend_from_slice(if i + 1 < c.entries.len() {
                b",\n"
            } else {
                b"\n"
            });
            w.write_all(&line)?;
        }
        w.write_all(b"]}\n")
    }

    /// Whether the file at `path` holds exactly this manifest's bytes
    /// (compared as they are produced, never held whole).
    pub fn matches_file(&self, path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let cmp = CompareWriter {
            file: BufReader::with_capacity(256 * 1024, file),
            buf: vec![],
        };
        let mut w = io::BufWriter::with_capacity(256 * 1024, cmp);
        let same = self.write_to(&mut w).is_ok() && w.flush().is_ok();
        // Equal so far, and the file holds nothing more.
        let Ok(mut cmp) = w.into_inner() else {
            return false;
        };
        same && cmp.file.fill_buf().is_ok_and(|rest| rest.is_empty())
    }

    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Manifest, Error> {
        let bytes = std::fs::read(path).ctx("read manifest", path)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Environment(format!(
                "failed to parse manifest {}: {e}; the volume was not written by this version of packs-assemble",
                path.display()
            ))
        })
    }

    /// The packs: the top-level directories, sorted.
    pub fn packs(&self) -> impl Iterator<Item = &str> {
        self.contents
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Dir && !e.path.contains('/'))
            .map(|e| e.path.as_str())
    }

    /// Entries by path (they are sorted, so this is a binary search).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let entries = &self.contents.entries;
        entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &entries[i])
    }
}

impl Entry {
    /// Appends the entry as compact JSON, keys in declaration order (what
    /// serde writes, without its per-field overhead: 100,000 of these are
    /// written or compared on every publish of a large volume).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"path\":");
        json_string(&self.path, out);
        out.extend_from_slice(match self.kind {
            Kind::Dir => b",\"type\":\"dir\",\"mode\":",
            Kind::File => b",\"type\":\"file\",\"mode\":",
        });
        out.push(b'"');
        self.mode.write_to(out);
        out.push(b'"');
        if let Some(size) = self.size {
            out.extend_from_slice(b",\"size\":");
            push_u64(out, size);
        }
        if let Some(sha) = &self.sha256 {
            out.extend_from_slice(b",\"sha256\":\"");
            sha.write_hex(out);
            out.push(b'"');
        }
        out.extend_from_slice(match self.origin {
            Origin::Source => b",\"origin\":\"source\"}",
            Origin::Binaries => b",\"origin\":\"binaries\"}",
            Origin::Deps => b",\"origin\":\"deps\"}",
        });
    }
}

/// Appends `s` as a JSON string.
fn json_string(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("a string always serializes");
    }
}

/// Compares what is written with a file's next bytes; fails at the first difference.
struct CompareWriter {
    file: BufReader<File>,
    buf: Vec<u8>,
}

impl Write for CompareWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.resize(data.len(), 0);
        self.file.read_exact(&mut self.buf)?;
        if self.buf != data {
            return Err(io::Error::other("differs"));
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The root hash of the manifest at `path`, from its first line (or the whole
/// file for the pretty-printed format 1); `None` when it cannot be read.
pub fn read_root_hash(path: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        root_hash: String,
    }
    let file = File::open(path).ok()?;
    let first = BufReader::new(file).lines().next()?.ok()?;
    if let Some(head) = first.strip_suffix(&format!(",{ENTRIES_OPEN}")) {
        return serde_json::from_str::<Head>(&format!("{head}}}"))
            .ok()
            .map(|h| h.root_hash);
    }
    Manifest::read(path).ok().map(|m| m.root_hash)
}

/// The entries of a manifest file, read one at a time (format 2), or parsed
/// whole for a manifest of another layout (format 1 was pretty-printed).
#[derive(Debug)]
pub enum EntryReader {
    /// One entry a line.
    Lines(io::Lines<BufReader<File>>),
    /// A manifest parsed whole.
    Whole(std::vec::IntoIter<Entry>),
}

impl EntryReader {
    /// Opens the manifest at `path` with its `mtime` and `owner`.
    pub fn open(path: &Path) -> Result<(EntryReader, i64, Option<String>), Error> {
        #[derive(Deserialize)]
        struct Head {
            mtime: i64,
            #[serde(default)]
            owner: Option<String>,
        }
        let file = File::open(path).ctx("read manifest", path)?;
        let mut lines = BufReader::with_capacity(256 * 1024, file).lines();
        let first = lines
            .next()
            .transpose()
            .ctx("read manifest", path)?
            .unwrap_or_default();
        if let Some(head) = first.strip_suffix(&format!(",{ENTRIES_OPEN}"))
            && let Ok(h) = serde_json::from_str::<Head>(&format!("{head}}}"))
        {
            return Ok((EntryReader::Lines(lines), h.mtime, h.owner));
        }
        let m = Manifest::read(path)?;
        let c = m.contents;
        Ok((EntryReader::Whole(c.entries.into_iter()), c.mtime, c.owner))
    }
}

impl Iterator for EntryReader {
    type Item = Result<Entry, String>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EntryReader::Whole(it) => it.next().map(Ok),
            EntryReader::Lines(lines) => {
                let line = match lines.next()? {
                    Ok(l) => l,
                    Err(e) => return Some(Err(e.to_string())),
                };
                let line = line.trim_end_matches(',');
                if line == "]}" {
                    return None;
                }
                Some(serde_json::from_str(line).map_err(|e| e.to_string()))
            }
        }
    }
}

/// `sha256:<hex>` over a canonical encoding of `contents`: a header line
/// `attune-manifest <format> <arch> <mtime> <owner or ->`, then one line per
/// entry `<path>\0<type>\0<mode>\0<size>\0<sha256>\0<origin>` (`-` for absent
/// values). Cheaper than hashing the JSON, and independent of its formatting.
pub fn root_hash(contents: &Contents) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "attune-manifest {} {} {} {}\n",
        contents.format,
        contents.arch,
        contents.mtime,
        contents.owner.as_deref().unwrap_or("-")
    ));
    let mut line = Vec::with_capacity(256);
    for e in &contents.entries {
        let kind = match e.kind {
            Kind::Dir => "dir",
            Kind::File => "file",
        };
        let origin = match e.origin {
            Origin::Source => "source",
            Origin::Binaries => "binaries",
            Origin::Deps => "deps",
        };
        line.clear();
        for field in [e.path.as_str(), kind] {
            line.extend_from_slice(field.as_bytes());
            line.push(0);
        }
        e.mode.write_to(&mut line);
        line.push(0);
        match e.size {
            Some(s) => push_u64(&mut line, s),
            None => line.push(b'-'),
        }
        line.push(0);
        match &e.sha256 {
            Some(sha) => sha.write_hex(&mut line),
            None => line.push(b'-'),
        }
        line.push(0);
        line.extend_from_slice(origin.as_bytes());
        line.push(b'\n');
        h.update(&line);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Entries and contents for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// amd64 contents with mtime 1 and no owner.
    pub fn contents(entries: Vec<Entry>) -> Contents {
        Contents {
            format: FORMAT,
            arch: Arch::Amd64,
            mtime: 1,
            owner: None,
            entries,
        }
    }

    /// A 0444 file of one byte whose digest is `sha` repeated (one hex digit).
    pub fn file(path: &str, sha: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            mode: mode_string(MODE_FILE),
            size: Some(1),
            sha256: Sha256Digest::from_hex(&sha.repeat(64)),
            origin: Origin::Source,
        }
    }

    /// A 0755 directory.
    pub fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode: mode_string(MODE_DIR),
            size: None,
            sha256: None,
            origin: Origin::Source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{contents, file};
    use super::*;

    #[test]
    fn root_hash_ignores_input_order_but_not_content() {
        let a = Manifest::new(contents(vec![file("a", "1"), file("b", "2")]));
        let b = Manifest::new(contents(vec![file("b", "2"), file("a", "1")]));
        let c = Manifest::new(contents(vec![file("a", "1"), file("b", "3")]));
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_ne!(a.root_hash, c.root_hash);
        assert_eq!(a.generation_id().len(), 32);
        assert_eq!(
            a.get("b").unwrap().sha256,
            Sha256Digest::from_hex(&"2".repeat(64))
        );
        assert!(a.get("c").is_none());
    }

    #[test]
    fn writes_numbers_and_modes() {
        for v in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = vec![];
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        let mut out = vec![];
        Mode(0o4755).write_to(&mut out);
        assert_eq!(out, b"4755");
        assert_eq!(Mode(0o444).to_string(), "0444");
    }

    #[test]
    fn writes_what_serde_writes() {
        let mut odd = file("dir/a \"quoted\" \\ name\t", "a");
        odd.origin = Origin::Binaries;
        for e in [
            file("a", "1"),
            odd,
            Entry {
                size: None,
                sha256: None,
                kind: Kind::Dir,
                ..file("d", "0")
            },
        ] {
            let mut ours = vec![];
            e.write_json(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&e).unwrap()
            );
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = Manifest::new(contents(vec![file("core/pack.yaml", "ab")]));
        let back: Manifest = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(root_hash(&back.contents), m.root_hash);
    }

    #[test]
    fn streams_one_entry_a_line_and_reads_the_pretty_format_too() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = contents(vec![file("a", "1"), file("b/c", "2")]);
        c.owner = Some("1000:1000".into());
        let m = Manifest::new(c);
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.lines().next().unwrap().ends_with("\"entries\":["));
        let path = tmp.path().join("m.json");
        std::fs::write(&path, &bytes).unwrap();
        assert!(m.matches_file(&path));
        let (entries, mtime, owner) = EntryReader::open(&path).unwrap();
        let back: Vec<Entry> = entries.map(Result::unwrap).collect();
        assert_eq!(
            (back, mtime, owner.as_deref()),
            (m.contents.entries.clone(), 1, Some("1000:1000"))
        );
        // A pretty-printed (format 1) manifest is parsed whole.
        std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        assert!(!m.matches_file(&path));
        let (entries, _, _) = EntryReader::open(&path).unwrap();
        assert_eq!(entries.count(), 2);
    }
}
