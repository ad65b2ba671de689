//! Whether an image has the packs image's layout ([`crate::image_layout`],
//! docker/IMAGE-LAYOUT.md), whoever built it (`packs-assemble check-image`). The
//! one assertion of that layout, for the images of docker/build-packs-image
//! and of the flake alike: it reads a docker archive (a file, or stdin: the
//! output of `docker save` or of `export`) or an OCI image layout, recomputes
//! every layer's digest, and compares the config and every entry of every
//! layer with the layout. Each difference is a diagnostic; nothing is
//! extracted, and memory holds the JSON, the few files it compares by
//! contents, and one record per entry.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use attune_pack::{Arch, Diagnostic, Diagnostics, check_native, is_pack_ref};
use attune_volume::error::{Error, IoContext};
use attune_volume::hash::Sha256Digest;
use attune_volume::scan::Kind;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::image::media;
use crate::image_layout::{self as layout, BASE, Body};

/// JSON files (configs, manifests) larger than this are refused.
const JSON_LIMIT: u64 = 16 << 20;
/// The assembler is read whole to be inspected; larger is refused.
const ASSEMBLER_LIMIT: u64 = 512 << 20;

/// One entry of a layer, as read.
#[derive(Clone, Debug)]
struct TarItem {
    /// Without `./`, a leading `/` or a trailing `/`.
    path: String,
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    /// Whether it names a user or a group.
    names: bool,
    /// PAX records other than `path`.
    pax: Vec<String>,
    /// Contents, for the files compared by contents.
    data: Option<Vec<u8>>,
}

/// One layer, as read.
#[derive(Debug)]
struct LayerRead {
    diff_id: Sha256Digest,
    items: Vec<TarItem>,
}

/// A reader that hashes what it reads.
struct Hashing<R> {
    inner: R,
    sha: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

fn normalize(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = s.trim_start_matches("./").trim_start_matches('/');
    s.trim_end_matches('/').to_string()
}

/// Reads one uncompressed layer: its digest and its entries.
fn read_layer(r: impl Read) -> io::Result<LayerRead> {
    let mut h = Hashing {
        inner: r,
        sha: Sha256::new(),
    };
    let mut items = vec![];
    {
        let mut a = tar::Archive::new(&mut h);
        for e in a.entries()? {
            let mut e = e?;
            let path = normalize(&e.path_bytes());
            let mut pax = vec![];
            if let Some(exts) = e.pax_extensions()? {
                for ext in exts {
                    let key = String::from_utf8_lossy(ext?.key_bytes()).into_owned();
                    if key != "path" {
                        pax.push(key);
                    }
                }
            }
            let t = e.header();
            let kind = t.entry_type();
            let item = TarItem {
                kind,
                mode: t.mode()?,
                owner: (t.uid()?, t.gid()?),
                mtime: t.mtime()?,
                names: t.username_bytes().is_some_and(|u| !u.is_empty())
                    || t.groupname_bytes().is_some_and(|g| !g.is_empty()),
                pax,
                data: None,
                path,
            };
            let wanted =
                [layout::ASSEMBLER, "etc/passwd", "etc/group"].contains(&item.path.as_str());
            let data = if wanted && kind == tar::EntryType::Regular && e.size() <= ASSEMBLER_LIMIT {
                let mut v = vec![];
                e.read_to_end(&mut v)?;
                Some(v)
            } else {
                None
            };
            items.push(TarItem { data, ..item });
        }
    }
    io::copy(&mut h, &mut io::sink())?;
    Ok(LayerRead {
        diff_id: Sha256Digest(h.sha.finalize().into()),
        items,
    })
}

/// A file of a docker archive.
enum Member {
    /// JSON (or small), kept whole.
    Bytes(Vec<u8>),
    /// A layer, read as it streamed by.
    Layer(LayerRead),
    /// Something that is not an uncompressed tar.
    Unreadable(String),
}

/// What an image is made of, however it was stored.
struct Parts {
    config: Option<Vec<u8>>,
    tags: Vec<String>,
    layers: Vec<Result<LayerRead, String>>,
}

fn is_gzip_or_zstd(first: &[u8]) -> bool {
    first.starts_with(&[0x1f, 0x8b]) || first.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

const COMPRESSED: &str = "is compressed; check the image as a docker archive, whose layers are not: `docker save REF`, or `skopeo copy docker://REF docker-archive:FILE`";

/// `a/b/../c` -> `a/c`, for the targets of links in an archive.
fn join_relative(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        vec![]
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Wraps the errors of reading a docker archive: a file that is not a tar
/// archive is the wrong input (a usage error), other failures are the
/// environment's.
trait OrNotArchive<T> {
    fn or_not_archive(self, name: &Path) -> Result<T, Error>;
}

impl<T> OrNotArchive<T> for io::Result<T> {
    fn or_not_archive(self, name: &Path) -> Result<T, Error> {
        self.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => Error::Usage(format!(
                "{} is not a docker archive (a tar archive): {e}; give an archive from `docker save` or `packs-assemble export`, or an OCI layout directory",
                name.display()
            )),
            _ => Error::Io {
                action: "read archive",
                path: name.to_path_buf(),
                source: e,
            },
        })
    }
}

/// Reads a docker archive, in whatever order its files come.
fn read_docker_archive(r: impl Read, name: &Path) -> Result<Parts, Error> {
    let mut a = tar::Archive::new(r);
    let mut members: HashMap<String, Member> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for e in a.entries().or_not_archive(name)? {
        let e = e.or_not_archive(name)?;
        let path = normalize(&e.path_bytes());
        match e.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned());
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let target = match e.header().entry_type() {
                    tar::EntryType::Link => normalize(target.unwrap_or_default().as_bytes()),
                    _ => join_relative(dir, &target.unwrap_or_default()),
                };
                links.insert(path, target);
            }
            tar::EntryType::Regular => {
                let size = e.size();
                let mut br = BufReader::with_capacity(64 * 1024, e);
                let first = br.fill_buf().or_not_archive(name)?.to_vec();
                let member = if is_gzip_or_zstd(&first) {
                    Member::Unreadable(COMPRESSED.to_string())
                } else if matches!(first.first(), Some(b'{' | b'[')) || path.ends_with(".json") {
                    if size > JSON_LIMIT {
                        Member::Unreadable(format!(
                            "holds {size} bytes of JSON, more than {JSON_LIMIT}"
                        ))
                    } else {
                        let mut v = vec![];
                        br.read_to_end(&mut v).or_not_archive(name)?;
                        Member::Bytes(v)
                    }
                } else {
                    match read_layer(&mut br) {
                        Ok(l) => Member::Layer(l),
                        Err(e) => Member::Unreadable(format!("is not a tar archive: {e}")),
                    }
                };
                members.insert(path, member);
            }
            _ => {}
        }
    }
    let mut take = |n: &str| {
        let mut n = normalize(n.as_bytes());
        for _ in 0..8 {
            match links.get(&n) {
                Some(t) => n = t.clone(),
                None => break,
            }
        }
        members.remove(&n).ok_or(n)
    };
    let manifest = match take("manifest.json") {
        Ok(Member::Bytes(b)) => b,
        _ => {
            return Err(Error::Usage(format!(
                "{} is not a docker archive: it holds no manifest.json (give an archive from `docker save` or `packs-assemble export`, or an OCI layout directory)",
                name.display()
            )));
        }
    };
    let images: Vec<Value> = serde_json::from_slice(&manifest).map_err(|e| {
        Error::Usage(format!(
            "{}: manifest.json is not a list of images: {e}",
            name.display()
        ))
    })?;
    let [image] = images.as_slice() else {
        return Err(Error::Usage(format!(
            "{}: manifest.json lists {} images; check an archive of one (`docker save attune/packs:TAG`)",
            name.display(),
            images.len()
        )));
    };
    let mut parts = Parts {
        config: None,
        tags: strings(&image["RepoTags"]),
        layers: vec![],
    };
    if let Some(c) = image["Config"].as_str() {
        parts.config = match take(c) {
            Ok(Member::Bytes(b)) => Some(b),
            _ => None,
        };
    }
    for l in strings(&image["Layers"]) {
        parts.layers.push(match take(&l) {
            Ok(Member::Layer(layer)) => Ok(layer),
            Ok(Member::Bytes(b)) => {
                read_layer(b.as_slice()).map_err(|e| format!("{l} is not a tar archive: {e}"))
            }
            Ok(Member::Unreadable(why)) => Err(format!("{l} {why}")),
            Err(n) => Err(format!(
                "{n} is listed in manifest.json but not in the archive"
            )),
        });
    }
    Ok(parts)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The file of blob `digest` in the OCI layout `dir`.
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| Sha256Digest::from_hex(h).is_some())
        .ok_or_else(|| format!("`{digest}` is not a sha256 digest"))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

/// Opens a file of an OCI layout to read it: never through a link, never
/// blocking (a FIFO), a regular file only, holding exactly `size` bytes when
/// its descriptor gives a size, and read no further than that.
fn open_blob(path: &Path, size: Option<u64>) -> Result<io::Take<File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            format!(
                "{}: {e} (blobs are regular files, not links)",
                path.display()
            )
        })?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{} is a {:?}, not a regular file",
            path.display(),
            meta.file_type()
        ));
    }
    if let Some(want) = size.filter(|w| *w != meta.len()) {
        return Err(format!(
            "{} holds {} bytes, its descriptor says {want}",
            path.display(),
            meta.len()
        ));
    }
    Ok(f.take(meta.len()))
}

/// A small JSON file of an OCI layout (`oci-layout`, `index.json`), read
/// through [`open_blob`]; `None` when it is not one.
fn small_json(path: &Path) -> Option<Value> {
    let mut bytes = vec![];
    open_blob(path, None)
        .ok()?
        .take(JSON_LIMIT)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JSON blob of the layout, its size (when its descriptor gives one) and
/// digest checked.
fn json_blob(dir: &Path, digest: &str, size: Option<u64>) -> Result<(Vec<u8>, Value), String> {
    let path = blob_path(dir, digest)?;
    let f = open_blob(&path, size)?;
    if f.limit() > JSON_LIMIT {
        return Err(format!(
            "{} holds {} bytes, more than {JSON_LIMIT}",
            path.display(),
            f.limit()
        ));
    }
    let mut bytes = vec![];
    f.take(JSON_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if format!("sha256:{}", Sha256Digest(Sha256::digest(&bytes).into())) != digest {
        return Err(format!(
            "{} does not have the digest it is named by",
            path.display()
        ));
    }
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    Ok((bytes, v))
}

/// Reads an OCI image layout: the image of `arch` (or the only one).
fn read_oci(dir: &Path, arch: Option<Arch>) -> Result<Parts, Error> {
    let usage = |what: String| Error::Usage(format!("{}: {what}", dir.display()));
    let layout: Value = small_json(&dir.join("oci-layout")).ok_or_else(|| {
        usage("is not an OCI image layout: it has no readable oci-layout file".to_string())
    })?;
    if layout["imageLayoutVersion"] != "1.0.0" {
        return Err(usage(format!(
            "has imageLayoutVersion {}, not 1.0.0",
            layout["imageLayoutVersion"]
        )));
    }
    let index: Value = small_json(&dir.join("index.json"))
        .ok_or_else(|| usage("has no readable index.json".to_string()))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let fits = |m: &&Value| {
        arch.is_none_or(|a| {
            m["platform"]["architecture"]
                .as_str()
                .is_none_or(|x| x == a.docker_name())
        })
    };
    let chosen: Vec<&Value> = manifests.iter().filter(fits).collect();
    let [m] = chosen.as_slice() else {
        return Err(usage(format!(
            "index.json lists {} images{}; check a layout of one",
            chosen.len(),
            arch.map_or(String::new(), |a| format!(" for {a}"))
        )));
    };
    let digest = m["digest"].as_str().unwrap_or_default();
    let (_, manifest) = json_blob(dir, digest, m["size"].as_u64()).map_err(usage)?;
    let mut parts = Parts {
        config: None,
        tags: m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(|t| vec![t.to_string()])
            .unwrap_or_default(),
        layers: vec![],
    };
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let config_size = manifest["config"]["size"].as_u64();
    parts.config = Some(json_blob(dir, config_digest, config_size).map_err(usage)?.0);
    for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
        let digest = l["digest"].as_str().unwrap_or_default().to_string();
        let media_type = l["mediaType"].as_str().unwrap_or_default();
        parts.layers.push((|| {
            if ![media::LAYER, "application/vnd.docker.image.rootfs.diff.tar"].contains(&media_type)
            {
                return Err(format!("layer {digest} ({media_type}) {COMPRESSED}"));
            }
            let path = blob_path(dir, &digest)?;
            let f = open_blob(&path, l["size"].as_u64())?;
            let layer = read_layer(BufReader::with_capacity(256 * 1024, f))
                .map_err(|e| format!("{} is not a tar archive: {e}", path.display()))?;
            // Uncompressed, a layer's digest is its diff id.
            if format!("sha256:{}", layer.diff_id) != digest {
                return Err(format!(
                    "{} does not have the digest it is named by",
                    path.display()
                ));
            }
            Ok(layer)
        })());
    }
    Ok(parts)
}

/// What the check found.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Whether the image has the layout.
    pub ok: bool,
    /// The image checked.
    pub image: String,
    /// `docker-archive` or `oci`.
    pub format: &'static str,
    /// Its tags (`RepoTags`, or the OCI `ref.name`).
    pub tags: Vec<String>,
    /// The architecture checked against.
    pub arch: Option<Arch>,
    /// The config's digest: the image id.
    pub config_digest: Option<String>,
    /// The packs, in layer order.
    pub packs: Vec<String>,
    /// The layers' diff ids.
    pub layers: Vec<String>,
    /// Every difference from the layout.
    pub diagnostics: Diagnostics,
}

/// The checks, against the layout; `at` names the image in diagnostics.
struct Checker<'a> {
    at: &'a str,
    d: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn config(&mut self, field: &str, message: impl Into<String>) {
        self.d.push(
            Diagnostic::error(self.at, message)
                .field(field)
                .hint("the packs image's layout is docker/IMAGE-LAYOUT.md's; `packs-assemble export` writes it"),
        );
    }

    /// A problem of entry `path` of layer `layer` (0: the base), named as
    /// IMAGE-LAYOUT.md counts layers (1: the base).
    fn entry(&mut self, layer: usize, path: &str, message: impl Into<String>) {
        self.d.push(Diagnostic::error(
            format!("{} (layer {}) /{path}", self.at, layer + 1),
            message,
        ));
    }

    fn expect(&mut self, field: &str, got: &Value, want: &Value) {
        if got != want {
            self.config(field, format!("is {got}, not {want}"));
        }
    }

    /// What every entry of every layer must be.
    fn common(&mut self, n: usize, layer: &LayerRead, created: Option<&str>) {
        let mut last: Option<&str> = None;
        for it in &layer.items {
            let p = it.path.as_str();
            if last.is_some_and(|l| l >= p) {
                self.entry(
                    n,
                    p,
                    format!(
                        "comes after /{}: entries are in path order, each once",
                        last.unwrap_or_default()
                    ),
                );
            }
            last = Some(p);
            if p.is_empty() || p.split('/').any(|c| c == ".." || c == ".") {
                self.entry(n, p, "is not a plain relative path");
            }
            if !matches!(it.kind, tar::EntryType::Regular | tar::EntryType::Directory) {
                self.entry(
                    n,
                    p,
                    format!(
                        "is of tar type {:?}: the layout holds only directories and regular files",
                        it.kind
                    ),
                );
            }
            if let Some(created) = created
                && attune_volume::history::utc(it.mtime as i64) != created
            {
                self.entry(
                    n,
                    p,
                    format!(
                        "has mtime {}, not the image's created time {created}",
                        attune_volume::history::utc(it.mtime as i64)
                    ),
                );
            }
            if it.names {
                self.entry(
                    n,
                    p,
                    "names a user or group: the layout has numeric owners only",
                );
            }
            if !it.pax.is_empty() {
                self.entry(
                    n,
                    p,
                    format!(
                        "has PAX records {}: only `path` is allowed",
                        it.pax.join(", ")
                    ),
                );
            }
        }
    }

    fn kind_mode_owner(
        &mut self,
        n: usize,
        it: &TarItem,
        kind: Kind,
        modes: &[u32],
        owner: (u32, u32),
    ) {
        let want_kind = match kind {
            Kind::Dir => tar::EntryType::Directory,
            Kind::File => tar::EntryType::Regular,
        };
        if it.kind != want_kind {
            self.entry(
                n,
                &it.path,
                format!(
                    "is not a {}",
                    if kind == Kind::Dir {
                        "directory"
                    } else {
                        "regular file"
                    }
                ),
            );
        }
        if !modes.contains(&(it.mode & 0o7777)) {
            let want: Vec<String> = modes.iter().map(|m| format!("{m:04o}")).collect();
            self.entry(
                n,
                &it.path,
                format!(
                    "has mode {:04o}, not {}",
                    it.mode & 0o7777,
                    want.join(" or ")
                ),
            );
        }
        if it.owner != (u64::from(owner.0), u64::from(owner.1)) {
            self.entry(
                n,
                &it.path,
                format!(
                    "is owned by {}:{}, not {}:{}",
                    it.owner.0, it.owner.1, owner.0, owner.1
                ),
            );
        }
    }

    /// The base layer: exactly [`BASE`].
    fn base(&mut self, layer: &LayerRead, arch: Arch) {
        for want in BASE {
            let Some(it) = layer.items.iter().find(|i| i.path == want.path) else {
                self.entry(0, want.path, "is missing from the base layer");
                continue;
            };
            self.kind_mode_owner(0, it, want.kind, &[want.mode], want.owner);
            match want.body {
                Body::None => {}
                Body::Passwd | Body::Group => {
                    let t = want.body.text().unwrap_or_default();
                    if it.data.as_deref() != Some(t.as_bytes()) {
                        self.entry(0, want.path, format!("does not hold exactly {t:?}"));
                    }
                }
                Body::Assembler => match &it.data {
                    None => self.entry(
                        0,
                        want.path,
                        format!(
                            "is not a regular file of at most {} MiB",
                            ASSEMBLER_LIMIT >> 20
                        ),
                    ),
                    Some(bytes) => {
                        let problems = check_native(bytes, it.mode & 0o111 != 0, arch);
                        if !problems.is_empty() {
                            let causes: Vec<String> = problems.iter().map(|p| p.cause()).collect();
                            self.entry(
                                0,
                                want.path,
                                format!(
                                    "would not run in an empty {arch} container: it {}",
                                    causes.join("; it ")
                                ),
                            );
                        }
                    }
                },
            }
        }
        for it in &layer.items {
            if !BASE.iter().any(|b| b.path == it.path) {
                self.entry(0, &it.path, "is not in the layout's base layer");
            }
        }
    }

    /// A pack layer: the parents, then one pack. Returns the pack's name.
    fn pack(&mut self, n: usize, layer: &LayerRead, previous: Option<&str>) -> Option<String> {
        let (parents, rest) = layer
            .items
            .split_at(layout::PACK_PARENTS.len().min(layer.items.len()));
        if parents
            .iter()
            .map(|i| i.path.as_str())
            .ne(layout::PACK_PARENTS)
        {
            self.entry(
                n,
                "",
                format!(
                    "does not start with the directories {}",
                    layout::PACK_PARENTS.map(|p| format!("/{p}")).join(", ")
                ),
            );
        }
        for it in parents {
            self.kind_mode_owner(n, it, Kind::Dir, &[layout::PARENT_MODE], layout::ROOT);
        }
        let prefix = format!("{}/", layout::PACKS_SRC);
        let Some(root) = rest.first() else {
            self.entry(
                n,
                layout::PACKS_SRC,
                "holds no pack: layers after the first hold one pack each",
            );
            return None;
        };
        let pack = root
            .path
            .strip_prefix(&prefix)
            .unwrap_or(&root.path)
            .to_string();
        if root.path != format!("{prefix}{pack}") || !is_pack_ref(&pack) {
            self.entry(
                n,
                &root.path,
                format!("is not a pack directory /{prefix}<pack>"),
            );
            return None;
        }
        let inside = format!("{prefix}{pack}/");
        for it in rest {
            if it.path != root.path && !it.path.starts_with(&inside) {
                self.entry(
                    n,
                    &it.path,
                    format!("is not in pack {pack}: each layer after the first holds one pack"),
                );
                continue;
            }
            match it.kind {
                tar::EntryType::Directory => {
                    self.kind_mode_owner(n, it, Kind::Dir, &[layout::PACK_DIR_MODE], layout::ROOT)
                }
                _ => {
                    self.kind_mode_owner(n, it, Kind::File, &layout::PACK_FILE_MODES, layout::ROOT)
                }
            }
        }
        let yaml = format!("{inside}pack.yaml");
        if !rest
            .iter()
            .any(|i| i.path == yaml && i.kind == tar::EntryType::Regular)
        {
            self.entry(n, &yaml, "is missing: a pack has a pack.yaml");
        }
        if let Some(p) = previous
            && p >= pack.as_str()
        {
            self.entry(
                n,
                &root.path,
                format!("comes after pack {p}: the packs are one layer each, in name order"),
            );
        }
        Some(pack)
    }
}

/// Checks `parts` against the layout.
fn check(
    at: &str,
    parts: &Parts,
    want: Option<Arch>,
    d: &mut Diagnostics,
) -> (Option<Arch>, Vec<String>) {
    let mut c = Checker { at, d };
    for l in &parts.layers {
        if let Err(why) = l {
            c.config("rootfs", format!("a layer cannot be checked: {why}"));
        }
    }
    let Some(config) = parts
        .config
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
    else {
        c.config("config", "the image config is missing or is not JSON");
        return (want, vec![]);
    };
    let named = config["architecture"].as_str().unwrap_or_default();
    let arch = match (want, named.parse::<Arch>()) {
        (Some(w), _) => {
            if named != w.docker_name() {
                c.config("architecture", format!("is `{named}`, not `{w}`"));
            }
            w
        }
        (None, Ok(a)) if a.docker_name() == named => a,
        _ => {
            c.config("architecture", format!("is `{named}`, not amd64 or arm64"));
            return (None, vec![]);
        }
    };
    c.expect("os", &config["os"], &Value::from("linux"));
    let run = &config["config"];
    c.expect("config.User", &run["User"], &Value::from(layout::user()));
    c.expect(
        "config.WorkingDir",
        &run["WorkingDir"],
        &Value::from(layout::working_dir()),
    );
    c.expect(
        "config.Env",
        &run["Env"],
        &Value::from(layout::env().to_vec()),
    );
    c.expect(
        "config.Entrypoint",
        &run["Entrypoint"],
        &Value::from(layout::entrypoint(arch)),
    );
    c.expect("config.Cmd", &run["Cmd"], &Value::from(layout::cmd()));
    let labels = &run["Labels"];
    c.expect(
        &format!("config.Labels.{}", layout::label_arch()),
        &labels[layout::label_arch()],
        &Value::from(arch.docker_name()),
    );
    let (title, title_value) = layout::label_title();
    c.expect(
        &format!("config.Labels.{title}"),
        &labels[title],
        &Value::from(title_value),
    );
    let root_hash = labels[layout::LABEL_ROOT_HASH].as_str().unwrap_or_default();
    if root_hash
        .strip_prefix("sha256:")
        .and_then(Sha256Digest::from_hex)
        .is_none()
    {
        c.config(
            &format!("config.Labels.{}", layout::LABEL_ROOT_HASH),
            format!("is `{root_hash}`, not the volume's root hash sha256:<64 hex>"),
        );
    }
    let created = config["created"].as_str();
    if created.is_none() {
        c.config("created", "is missing: it is the time of every entry");
    }
    c.expect(
        "rootfs.type",
        &config["rootfs"]["type"],
        &Value::from("layers"),
    );
    let read: Vec<&LayerRead> = parts
        .layers
        .iter()
        .filter_map(|l| l.as_ref().ok())
        .collect();
    let diff_ids: Vec<String> = read
        .iter()
        .map(|l| format!("sha256:{}", l.diff_id))
        .collect();
    if read.len() == parts.layers.len() {
        c.expect(
            "rootfs.diff_ids",
            &config["rootfs"]["diff_ids"],
            &Value::from(diff_ids),
        );
    }
    let history = config["history"].as_array().map_or(0, Vec::len);
    if history != parts.layers.len() {
        c.config(
            "history",
            format!("has {history} entries for {} layers", parts.layers.len()),
        );
    }
    let mut packs: Vec<String> = vec![];
    if read.len() < parts.layers.len() {
        // The layers that could not be read are reported above; the rest
        // cannot be compared with the layout's order.
        return (Some(arch), packs);
    }
    let Some((base, rest)) = read.split_first() else {
        c.config("rootfs", "the image has no layer");
        return (Some(arch), packs);
    };
    c.common(0, base, created);
    c.base(base, arch);
    for (i, l) in rest.iter().enumerate() {
        c.common(i + 1, l, created);
        if let Some(p) = c.pack(i + 1, l, packs.last().map(String::as_str)) {
            packs.push(p);
        }
    }
    c.expect(
        &format!("config.Labels.{}", layout::LABEL_PACKS),
        &labels[layout::LABEL_PACKS],
        &Value::from(packs.join(" ")),
    );
    (Some(arch), packs)
}

/// Checks the image at `path` (`-`: a docker archive on stdin).
pub fn check_image(path: &Path, arch: Option<Arch>) -> Result<CheckReport, Error> {
    let stdin = path == Path::new("-");
    let (format, parts) = if stdin {
        (
            "docker-archive",
            read_docker_archive(io::stdin().lock(), Path::new("stdin"))?,
        )
    } else if !attune_volume::volume::exists(path) {
        return Err(Error::Usage(format!("{} does not exist", path.display())));
    } else if path.is_dir() {
        ("oci", read_oci(path, arch)?)
    } else {
        let f = File::open(path).ctx("read", path)?;
        (
            "docker-archive",
            read_docker_archive(BufReader::with_capacity(256 * 1024, f), path)?,
        )
    };
    let at = if stdin {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    let mut diagnostics = Diagnostics::default();
    let (arch, packs) = check(&at, &parts, arch, &mut diagnostics);
    Ok(CheckReport {
        ok: !diagnostics.has_errors(),
        image: at,
        format,
        tags: parts.tags,
        arch,
        config_digest: parts
            .config
            .as_deref()
            .map(|c| format!("sha256:{}", Sha256Digest(Sha256::digest(c).into()))),
        packs,
        layers: parts
            .layers
            .iter()
            .filter_map(|l| l.as_ref().ok())
            .map(|l| format!("sha256:{}", l.diff_id))
            .collect(),
        diagnostics,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use attune_pack::Arch;
    use attune_pack::fixtures::{ElfSpec, elf_bytes};

    use super::*;
    use crate::image::ImageFormat;
    use crate::packs_image::fixtures::{export, exported};

    /// The parts of a freshly exported image (base, alpha, beta).
    fn parts(dir: &Path) -> Parts {
        let out = exported(dir, ImageFormat::DockerArchive);
        read_docker_archive(File::open(&out).unwrap(), &out).unwrap()
    }

    fn problems(p: &Parts) -> Vec<String> {
        let mut d = Diagnostics::default();
        check("img", p, Some(Arch::Amd64), &mut d);
        d.iter().map(|d| d.to_string()).collect()
    }

    fn layer(p: &mut Parts, n: usize) -> &mut LayerRead {
        p.layers[n].as_mut().unwrap()
    }

    fn item<'a>(p: &'a mut Parts, n: usize, path: &str) -> &'a mut TarItem {
        layer(p, n)
            .items
            .iter_mut()
            .find(|i| i.path == path)
            .unwrap()
    }

    fn set_config(p: &mut Parts, edit: impl FnOnce(&mut Value)) {
        let mut v: Value = serde_json::from_slice(p.config.as_ref().unwrap()).unwrap();
        edit(&mut v);
        p.config = Some(serde_json::to_vec(&v).unwrap());
    }

    #[test]
    fn accepts_what_export_writes_in_both_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let p = parts(tmp.path());
        assert_eq!(problems(&p), Vec::<String>::new());
        let dir = tmp.path().join("oci");
        export(tmp.path(), Arch::Amd64, ImageFormat::Oci, &dir).unwrap();
        let r = check_image(&dir, None).unwrap();
        assert!(r.ok, "{:?}", r.diagnostics);
        assert_eq!(
            (r.arch, r.packs.clone(), r.layers.len()),
            (Some(Arch::Amd64), vec!["alpha".into(), "beta".into()], 3)
        );
        let a = check_image(&tmp.path().join("img.tar"), Some(Arch::Amd64)).unwrap();
        assert!(a.ok);
        assert_eq!((a.config_digest, a.layers), (r.config_digest, r.layers));
    }

    /// Each difference from the layout is named, and only it.
    #[test]
    fn names_each_difference_from_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = parts(tmp.path());
        type Edit = Box<dyn Fn(&mut Parts)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|p| {
                    set_config(p, |v| {
                        v.as_object_mut().unwrap().remove("created");
                    })
                }),
                "field `created`: is missing",
            ),
            (
                Box::new(|p| set_config(p, |v| v["config"]["User"] = "0:0".into())),
                "field `config.User`: is \"0:0\", not \"1000:1000\"",
            ),
            (
                Box::new(|p| set_config(p, |v| v["config"]["Cmd"] = serde_json::json!([]))),
                "field `config.Cmd`",
            ),
            (
                Box::new(|p| {
                    set_config(p, |v| {
                        v["config"]["Labels"]["io.attune.arch"] = "arm64".into()
                    })
                }),
                "field `config.Labels.io.attune.arch`",
            ),
            (
                Box::new(|p| set_config(p, |v| v["architecture"] = "arm64".into())),
                "field `architecture`: is `arm64`, not `amd64`",
            ),
            (
                Box::new(|p| {
                    set_config(p, |v| {
                        v["config"]["Labels"]["io.attune.packs"] = "alpha".into()
                    })
                }),
                "field `config.Labels.io.attune.packs`",
            ),
            (
                Box::new(|p| layer(p, 1).diff_id = Sha256Digest::default()),
                "field `rootfs.diff_ids`",
            ),
            (
                Box::new(|p| item(p, 0, "opt/attune/packs").owner = (0, 0)),
                "img (layer 1) /opt/attune/packs: error: is owned by 0:0, not 1000:1000",
            ),
            (
                Box::new(|p| item(p, 0, "tmp").mode = 0o755),
                "/tmp: error: has mode 0755, not 1777",
            ),
            (
                Box::new(|p| {
                    item(p, 0, "etc/passwd").data = Some(b"root:x:0:0::/:/bin/sh\n".to_vec())
                }),
                "/etc/passwd: error: does not hold exactly",
            ),
            (
                Box::new(|p| {
                    item(p, 0, layout::ASSEMBLER).data =
                        Some(elf_bytes(ElfSpec::dynamic(Arch::Amd64)))
                }),
                "/usr/local/bin/packs-assemble: error: would not run in an empty amd64 container",
            ),
            (
                Box::new(|p| item(p, 1, "opt/attune/packs-src/alpha/pack.yaml").mtime = 2),
                "has mtime 1970-01-01T00:00:02Z, not the image's created time",
            ),
            (
                Box::new(|p| {
                    item(p, 1, "opt/attune/packs-src/alpha/pack.yaml").owner = (1000, 1000)
                }),
                "pack.yaml: error: is owned by 1000:1000, not 0:0",
            ),
            (
                Box::new(|p| item(p, 1, "opt/attune/packs-src/alpha/pack.yaml").names = true),
                "names a user or group",
            ),
            (
                Box::new(|p| {
                    item(p, 1, "opt/attune/packs-src/alpha/pack.yaml").pax = vec!["uname".into()]
                }),
                "has PAX records uname",
            ),
            (
                Box::new(|p| {
                    item(p, 1, "opt/attune/packs-src/alpha/pack.yaml").kind =
                        tar::EntryType::Symlink
                }),
                "is of tar type",
            ),
            (
                Box::new(|p| item(p, 1, "opt/attune/packs-src/alpha/actions").mode = 0o555),
                "actions: error: has mode 0555, not 0755",
            ),
            (
                Box::new(|p| layer(p, 2).items.retain(|i| !i.path.ends_with("pack.yaml"))),
                "/opt/attune/packs-src/beta/pack.yaml: error: is missing: a pack has a pack.yaml",
            ),
            (
                Box::new(|p| p.layers.swap(1, 2)),
                "comes after pack beta: the packs are one layer each, in name order",
            ),
            (
                Box::new(|p| {
                    let beta: Vec<TarItem> = layer(p, 2).items[3..].to_vec();
                    layer(p, 1).items.extend(beta);
                }),
                "is not in pack alpha",
            ),
            (
                Box::new(|p| layer(p, 1).items.swap(3, 4)),
                "comes after /opt/attune/packs-src/alpha/actions: entries are in path order",
            ),
            (
                Box::new(|p| layer(p, 0).items.retain(|i| i.path != "etc/group")),
                "/etc/group: error: is missing from the base layer",
            ),
            (
                Box::new(|p| {
                    let zz = TarItem {
                        path: "zz".into(),
                        ..layer(p, 0).items[0].clone()
                    };
                    layer(p, 0).items.push(zz);
                }),
                "/zz: error: is not in the layout's base layer",
            ),
            (
                Box::new(|p| p.layers[2] = Err(format!("x.tar {COMPRESSED}"))),
                "a layer cannot be checked: x.tar is compressed",
            ),
        ];
        for (edit, want) in cases {
            let mut p = Parts {
                config: fresh.config.clone(),
                tags: vec![],
                layers: fresh
                    .layers
                    .iter()
                    .map(|l| {
                        l.as_ref()
                            .map(|l| LayerRead {
                                diff_id: l.diff_id,
                                items: l.items.clone(),
                            })
                            .map_err(Clone::clone)
                    })
                    .collect(),
            };
            edit(&mut p);
            let got = problems(&p);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "want {want:?} in {got:#?}"
            );
        }
    }

    /// The archives `docker save` and `skopeo copy docker-archive:` write
    /// (layers under other names, or links to them) are read like ours.
    #[test]
    fn reads_archives_whose_layers_are_links() {
        let tmp = tempfile::tempdir().unwrap();
        let p = parts(tmp.path());
        let mut outer = tar::Builder::new(vec![]);
        let mut add = |name: &str, body: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o444);
            h.set_cksum();
            outer.append_data(&mut h, name, body).unwrap();
        };
        let original = fs::read(tmp.path().join("img.tar")).unwrap();
        let mut a = tar::Archive::new(original.as_slice());
        let mut names = vec![];
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut body = vec![];
            e.read_to_end(&mut body).unwrap();
            if name.ends_with(".tar") {
                add(&format!("blobs/{name}"), &body);
                names.push(name);
            } else if name.ends_with(".json") && name != "manifest.json" {
                add(&name, &body);
            }
        }
        let mut layers = vec![];
        for (i, n) in names.iter().enumerate() {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_cksum();
            outer
                .append_link(&mut h, format!("l{i}/layer.tar"), format!("../blobs/{n}"))
                .unwrap();
            layers.push(format!("l{i}/layer.tar"));
        }
        let config = format!(
            "{}.json",
            p.config
                .as_ref()
                .map(|c| Sha256Digest(Sha256::digest(c).into()))
                .unwrap()
        );
        let manifest =
            serde_json::json!([{"Config": config, "RepoTags": ["x:y"], "Layers": layers}])
                .to_string();
        let mut h = tar::Header::new_ustar();
        h.set_size(manifest.len() as u64);
        h.set_cksum();
        outer
            .append_data(&mut h, "manifest.json", manifest.as_bytes())
            .unwrap();
        let bytes = outer.into_inner().unwrap();
        let q = read_docker_archive(bytes.as_slice(), Path::new("saved.tar")).unwrap();
        assert_eq!(q.tags, ["x:y"]);
        assert_eq!(problems(&q), Vec::<String>::new());
    }

    #[test]
    fn an_oci_layout_with_compressed_layers_is_named_so() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = exported(tmp.path(), ImageFormat::Oci);
        // Rewrite the manifest as a registry serves it: gzip layers.
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let old = blob_path(&dir, digest).unwrap();
        let text = fs::read_to_string(&old)
            .unwrap()
            .replace(media::LAYER, "application/vnd.oci.image.layer.v1.tar+gzip");
        let new_digest = format!(
            "sha256:{}",
            Sha256Digest(Sha256::digest(text.as_bytes()).into())
        );
        fs::write(blob_path(&dir, &new_digest).unwrap(), &text).unwrap();
        let index = fs::read_to_string(dir.join("index.json"))
            .unwrap()
            .replace(digest, &new_digest)
            .replace(
                &format!("\"size\":{}", fs::metadata(&old).unwrap().len()),
                &format!("\"size\":{}", text.len()),
            );
        fs::remove_file(dir.join("index.json")).unwrap();
        fs::write(dir.join("index.json"), index).unwrap();
        let r = check_image(&dir, Some(Arch::Amd64)).unwrap();
        assert!(!r.ok);
        let all: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 3, "one per layer, nothing spurious: {all:#?}");
        assert!(
            all.iter()
                .all(|d| d.contains("is compressed") && d.contains("docker-archive:FILE")),
            "{all:#?}"
        );
    }

    #[test]
    fn something_else_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("notes.txt");
        fs::write(&f, "hello").unwrap();
        assert!(
            matches!(check_image(&f, None), Err(Error::Usage(m)) if m.contains("is not a docker archive"))
        );
        let empty_tar = tmp.path().join("empty.tar");
        fs::write(&empty_tar, [0u8; 1024]).unwrap();
        assert!(
            matches!(check_image(&empty_tar, None), Err(Error::Usage(m)) if m.contains("no manifest.json"))
        );
        assert!(
            matches!(check_image(tmp.path(), None), Err(Error::Usage(m)) if m.contains("oci-layout"))
        );
        assert!(
            matches!(check_image(&tmp.path().join("nope"), None), Err(Error::Usage(m)) if m.contains("does not exist"))
        );
    }

    #[test]
    fn links_resolve_within_the_archive() {
        assert_eq!(join_relative("a/b", "../c.tar"), "a/c.tar");
        assert_eq!(join_relative("l0", "../blobs/x"), "blobs/x");
        assert_eq!(join_relative("a", "/x/./y"), "x/y");
        assert_eq!(join_relative("", "../../x"), "x");
    }
}
