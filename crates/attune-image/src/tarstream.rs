//! Deterministic tar streams, the writer of image layers and docker archives:
//! ustar headers of directories, regular files and symbolic links in which
//! every field is the caller's or fixed (no user or group names, no device
//! numbers), a PAX `path` or `linkpath` record for a name or link target that
//! does not fit, and the padding and end of archive. Equal entries give equal
//! bytes; [`Digesting`] hashes and counts what goes through it.

use std::io::{self, Write};

use attune_volume::hash::Sha256Digest;
use attune_volume::scan::Kind;
use sha2::{Digest, Sha256};

/// The tar block size.
pub const BLOCK: u64 = 512;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type<'a> {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link to this target, stored as given.
    Symlink(&'a str),
}

impl From<Kind> for Type<'_> {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Dir => Type::Dir,
            Kind::File => Type::File,
        }
    }
}

/// The header of one entry.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// Relative, `/`-separated, without a trailing `/` (directories get one).
    pub path: &'a str,
    /// Directory, regular file or symbolic link.
    pub kind: Type<'a>,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
    /// `(uid, gid)`.
    pub owner: (u32, u32),
    /// Bytes of the body (0 for directories and links).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

/// The name a header stores: directories end in `/`.
fn stored_name(h: &Header) -> String {
    match h.kind {
        Type::Dir => format!("{}/", h.path),
        Type::File | Type::Symlink(_) => h.path.to_string(),
    }
}

/// The fields of a ustar header block that hold names, each within its field.
struct Names<'a> {
    name: &'a [u8],
    prefix: &'a [u8],
    link: &'a [u8],
}

/// A ustar header block storing `names`.
fn block(h: &Header, names: Names, kind: tar::EntryType, size: u64) -> [u8; 512] {
    let mut t = tar::Header::new_ustar();
    {
        let u = t.as_ustar_mut().expect("a ustar header");
        u.name[..names.name.len()].copy_from_slice(names.name);
        u.prefix[..names.prefix.len()].copy_from_slice(names.prefix);
        u.linkname[..names.link.len()].copy_from_slice(names.link);
    }
    t.set_mode(h.mode);
    t.set_uid(u64::from(h.owner.0));
    t.set_gid(u64::from(h.owner.1));
    t.set_size(size);
    t.set_mtime(h.mtime);
    t.set_entry_type(kind);
    t.set_cksum();
    *t.as_bytes()
}

/// Where `name` splits into ustar's prefix (155 bytes) and name (100 bytes), if it does.
fn split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    // The last `/` that leaves at most 100 bytes after it (a directory's own
    // trailing `/` stays in the name).
    let body = name.strip_suffix(b"/").unwrap_or(name);
    (0..body.len())
        .rev()
        .filter(|&i| body[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(p, n)| p.len() <= 155 && n.len() <= 100 && !n.is_empty())
}

/// A PAX record `"<len> <key>=<value>\n"`, its length counting its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = format!(" {key}={value}\n");
    let mut digits = 1;
    while (rest.len() + digits).to_string().len() != digits {
        digits += 1;
    }
    format!("{}{rest}", rest.len() + digits).into_bytes()
}

/// The last `n` bytes of `s` (all of it when shorter).
fn tail(s: &[u8], n: usize) -> &[u8] {
    &s[s.len().saturating_sub(n)..]
}

/// Writes the header of `h` (a PAX header first when the name or the link
/// target does not fit ustar).
pub fn write_header(w: &mut impl Write, h: &Header) -> io::Result<()> {
    let name = stored_name(h);
    let (kind, link) = match h.kind {
        Type::Dir => (tar::EntryType::Directory, ""),
        Type::File => (tar::EntryType::Regular, ""),
        Type::Symlink(target) => (tar::EntryType::Symlink, target),
    };
    let fits = split(name.as_bytes());
    let mut records = vec![];
    if fits.is_none() {
        records.extend(pax_record("path", &name));
    }
    if link.len() > 100 {
        records.extend(pax_record("linkpath", link));
    }
    if !records.is_empty() {
        let pax = Header {
            mode: 0o644,
            owner: (0, 0),
            ..*h
        };
        let names = Names {
            name: b"././@PaxHeader",
            prefix: &[],
            link: &[],
        };
        w.write_all(&block(
            &pax,
            names,
            tar::EntryType::XHeader,
            records.len() as u64,
        ))?;
        w.write_all(&records)?;
        pad(w, records.len() as u64)?;
    }
    // Readers take from the records what the header cannot hold; the header
    // keeps the last 100 bytes.
    let (prefix, short) = fits.unwrap_or((&[], tail(name.as_bytes(), 100)));
    let names = Names {
        name: short,
        prefix,
        link: tail(link.as_bytes(), 100),
    };
    w.write_all(&block(h, names, kind, h.size))
}

/// Zero bytes from the end of a body of `size` bytes to the next block.
pub fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    let n = (BLOCK - size % BLOCK) % BLOCK;
    w.write_all(&[0; BLOCK as usize][..n as usize])
}

/// A whole entry whose body is in memory.
pub fn write_entry(w: &mut impl Write, h: &Header, body: &[u8]) -> io::Result<()> {
    debug_assert_eq!(h.size, body.len() as u64);
    write_header(w, h)?;
    w.write_all(body)?;
    pad(w, h.size)
}

/// The end of an archive: two zero blocks.
pub fn finish(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0; 2 * BLOCK as usize])
}

/// A writer that hashes (SHA-256) and counts what it passes on.
#[derive(Debug)]
pub struct Digesting<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Digesting<W> {
    /// Passes what it is given on to `inner`.
    pub fn new(inner: W) -> Digesting<W> {
        Digesting {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    /// The number of bytes written so far.
    pub fn written(&self) -> u64 {
        self.len
    }

    /// The inner writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, Sha256Digest, u64) {
        (
            self.inner,
            Sha256Digest(self.sha.finalize().into()),
            self.len,
        )
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One member of an archive as the tar crate (a reader this crate did not
/// write) reads it back, for tests.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Member {
    pub name: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub owner: (u64, u64),
    pub mtime: u64,
    /// User and group names, concatenated.
    pub names: String,
    /// A link's target.
    pub link: Option<String>,
    pub body: Vec<u8>,
}

/// Every member of the archive `bytes`, for tests.
#[cfg(test)]
pub(crate) fn read_members(bytes: &[u8]) -> Vec<Member> {
    use std::io::Read;
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut body = vec![];
            e.read_to_end(&mut body).unwrap();
            Member {
                name: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                owner: (h.uid().unwrap(), h.gid().unwrap()),
                mtime: h.mtime().unwrap(),
                names: format!(
                    "{}{}",
                    h.username().unwrap().unwrap_or_default(),
                    h.groupname().unwrap().unwrap_or_default()
                ),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                body,
            }
        })
        .collect()
}

/// Asserts that `members` are `want`, in order: `(name, mode, uid)`, the gid
/// the uid; for tests.
#[cfg(test)]
pub(crate) fn assert_listing(members: &[Member], want: &[(&str, u32, u64)]) {
    let got: Vec<(&str, u32, (u64, u64))> = members
        .iter()
        .map(|m| (m.name.as_str(), m.mode, m.owner))
        .collect();
    let want: Vec<(&str, u32, (u64, u64))> = want.iter().map(|&(n, m, o)| (n, m, (o, o))).collect();
    assert_eq!(got, want);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(path: &'a str, kind: Type<'a>, size: u64) -> Header<'a> {
        Header {
            path,
            kind,
            mode: 0o1777,
            owner: (1000, 1000),
            size,
            mtime: 7,
        }
    }

    #[test]
    fn entries_read_back_with_every_field_as_given() {
        let long_dir = format!("a/{}", "d".repeat(120));
        let very_long = format!("{}/{}", "p".repeat(160), "n".repeat(120));
        let mut out = vec![];
        write_entry(&mut out, &header("etc", Type::Dir, 0), b"").unwrap();
        write_entry(&mut out, &header("etc/passwd", Type::File, 3), b"abc").unwrap();
        write_entry(&mut out, &header(&long_dir, Type::Dir, 0), b"").unwrap();
        write_entry(&mut out, &header(&very_long, Type::File, 1), b"x").unwrap();
        finish(&mut out).unwrap();
        assert_eq!(out.len() % 512, 0);
        let got = read_members(&out);
        let names: Vec<_> = got.iter().map(|g| g.name.clone()).collect();
        assert_eq!(
            names,
            [
                "etc/".to_string(),
                "etc/passwd".to_string(),
                format!("{long_dir}/"),
                very_long.clone()
            ]
        );
        assert_eq!(got[0].kind, tar::EntryType::Directory);
        assert_eq!(got[1].kind, tar::EntryType::Regular);
        for g in &got {
            assert_eq!(
                (g.mode, g.owner, g.mtime, g.names.as_str()),
                (0o1777, (1000, 1000), 7, ""),
                "{}",
                g.name
            );
        }
        assert_eq!(got[1].body, b"abc");
        assert_eq!(got[3].body, b"x");
    }

    #[test]
    fn symlinks_read_back_as_links_to_their_targets() {
        let long_target = format!("../{}", "t".repeat(150));
        let long_path = format!("{}/{}", "p".repeat(160), "l".repeat(120));
        let mut out = vec![];
        for (path, target) in [
            ("bin/sh", "busybox"),
            ("bin/far", long_target.as_str()),
            (long_path.as_str(), "/bin/busybox"),
        ] {
            write_entry(&mut out, &header(path, Type::Symlink(target), 0), b"").unwrap();
        }
        finish(&mut out).unwrap();
        let got: Vec<_> = read_members(&out)
            .into_iter()
            .map(|m| (m.name, m.kind, m.link, m.mode))
            .collect();
        let link = |p: &str, t: &str| {
            (
                p.to_string(),
                tar::EntryType::Symlink,
                Some(t.to_string()),
                0o1777,
            )
        };
        assert_eq!(
            got,
            [
                link("bin/sh", "busybox"),
                link("bin/far", &long_target),
                link(&long_path, "/bin/busybox"),
            ]
        );
    }

    #[test]
    fn pax_record_length_counts_its_own_digits() {
        for n in [1, 80, 89, 90, 991, 1000] {
            let name = "x".repeat(n);
            let r = pax_record("path", &name);
            let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{n}");
        }
    }

    #[test]
    fn digesting_hashes_what_it_passes_on() {
        let mut d = Digesting::new(vec![]);
        d.write_all(b"abc").unwrap();
        let (inner, digest, len) = d.finish();
        let mut want = [0u8; 32];
        want.copy_from_slice(&Sha256::digest(b"abc"));
        assert_eq!(
            (inner.as_slice(), digest, len),
            (&b"abc"[..], Sha256Digest(want), 3)
        );
    }
}
