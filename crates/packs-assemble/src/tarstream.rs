//! Deterministic tar streams, the writer of image layers and docker archives:
//! ustar headers in which every field is the caller's or fixed (no user or
//! group names, no device numbers), a PAX `path` record for a name that does
//! not fit, and the padding and end of archive. Equal entries give equal
//! bytes; [`Digesting`] hashes and counts what goes through it.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::hash::Sha256Digest;
use crate::scan::Kind;

/// The tar block size.
pub const BLOCK: u64 = 512;

/// The header of one entry.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// Relative, `/`-separated, without a trailing `/` (directories get one).
    pub path: &'a str,
    /// Directory or regular file.
    pub kind: Kind,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
    /// `(uid, gid)`.
    pub owner: (u32, u32),
    /// Bytes of the body (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

/// The name a header stores: directories end in `/`.
fn stored_name(h: &Header) -> String {
    match h.kind {
        Kind::Dir => format!("{}/", h.path),
        Kind::File => h.path.to_string(),
    }
}

/// A ustar header block storing `prefix` and `name` (each within its field).
fn block(h: &Header, name: &[u8], prefix: &[u8], kind: tar::EntryType, size: u64) -> [u8; 512] {
    let mut t = tar::Header::new_ustar();
    {
        let u = t.as_ustar_mut().expect("a ustar header");
        u.name[..name.len()].copy_from_slice(name);
        u.prefix[..prefix.len()].copy_from_slice(prefix);
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

/// A PAX record `"<len> path=<name>\n"`, its length counting its own digits.
fn pax_path_record(name: &str) -> Vec<u8> {
    let rest = format!(" path={name}\n");
    let mut digits = 1;
    while (rest.len() + digits).to_string().len() != digits {
        digits += 1;
    }
    format!("{}{rest}", rest.len() + digits).into_bytes()
}

/// Writes the header of `h` (a PAX header first when the name does not fit ustar).
pub fn write_header(w: &mut impl Write, h: &Header) -> io::Result<()> {
    let name = stored_name(h);
    let kind = match h.kind {
        Kind::Dir => tar::EntryType::Directory,
        Kind::File => tar::EntryType::Regular,
    };
    if let Some((prefix, short)) = split(name.as_bytes()) {
        return w.write_all(&block(h, short, prefix, kind, h.size));
    }
    let record = pax_path_record(&name);
    let pax = Header {
        mode: 0o644,
        owner: (0, 0),
        ..*h
    };
    w.write_all(&block(
        &pax,
        b"././@PaxHeader",
        &[],
        tar::EntryType::XHeader,
        record.len() as u64,
    ))?;
    w.write_all(&record)?;
    pad(w, record.len() as u64)?;
    // Readers take the name from the record; the header keeps its last 100 bytes.
    let tail = &name.as_bytes()[name.len() - 100..];
    w.write_all(&block(h, tail, &[], kind, h.size))
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
                body,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: Kind, size: u64) -> Header<'_> {
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
        write_entry(&mut out, &header("etc", Kind::Dir, 0), b"").unwrap();
        write_entry(&mut out, &header("etc/passwd", Kind::File, 3), b"abc").unwrap();
        write_entry(&mut out, &header(&long_dir, Kind::Dir, 0), b"").unwrap();
        write_entry(&mut out, &header(&very_long, Kind::File, 1), b"x").unwrap();
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
    fn pax_record_length_counts_its_own_digits() {
        for n in [1, 80, 89, 90, 991, 1000] {
            let name = "x".repeat(n);
            let r = pax_path_record(&name);
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
