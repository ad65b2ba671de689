//! The one image writer, shared by the packs image (`packs_image`) and the
//! service images (`rootfs`): layers described entry by entry, their config,
//! and the two formats, a docker archive (a file, or stdout for `| docker
//! load`) or an OCI image layout (a directory).
//!
//! The same layers give the same bytes: every entry has the path, mode, owner
//! and mtime it is given (no user or group names, no device numbers), layers
//! are uncompressed, and JSON is written from structs, fields in a fixed
//! order. The tag, unless given, is the first 16 hex digits of the config's
//! digest (the image id), so that different contents never share a tag.
//!
//! Each layer is written twice: once to learn its digest and size (the config
//! and the archive's headers need them first), then into the output, which
//! must give the same digest, so a source that changes between the two passes
//! fails the write. Memory holds one buffer and what the entries hold in
//! memory, however large the files. The index (`manifest.json`,
//! `index.json`) is written last: an output cut short is never a loadable
//! image, and a failed write removes what it wrote.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use attune_pack::{Arch, Diagnostic, Diagnostics};
use attune_volume::error::{Error, IoContext};
use attune_volume::fsops;
use attune_volume::hash::Sha256Digest;
use attune_volume::volume::exists;
use serde::Serialize;
use sha2::Digest as _;

use crate::image_layout as layout;
use crate::tarstream::{self, Digesting, Header, Type};

/// What to write: a docker archive or an OCI image layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImageFormat {
    /// A docker archive: a tar file for `docker load` (or `-`, stdout).
    DockerArchive,
    /// An OCI image layout: a directory for `skopeo copy oci:DIR ...`.
    Oci,
}

impl ImageFormat {
    /// `docker-archive` or `oci`, as results name it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Oci => "oci",
            ImageFormat::DockerArchive => "docker-archive",
        }
    }
}

/// Media types of what an OCI layout holds.
pub mod media {
    /// An image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
}

/// What one layer entry is, and what it holds.
#[derive(Debug)]
pub(crate) enum Body<'a> {
    /// A directory.
    Dir,
    /// A regular file with these bytes.
    Bytes(&'a [u8]),
    /// A regular file copied from `path`, which must still be `size` bytes
    /// (and hash to `sha256`, when it is known) as it is copied.
    File {
        path: PathBuf,
        size: u64,
        sha256: Option<Sha256Digest>,
    },
    /// A symbolic link to this target.
    Symlink(String),
}

/// One layer entry.
#[derive(Debug)]
pub(crate) struct Item<'a> {
    /// Relative, `/`-separated, no trailing `/`.
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// `(uid, gid)`.
    pub owner: (u32, u32),
    pub body: Body<'a>,
}

impl Item<'_> {
    fn size(&self) -> u64 {
        match &self.body {
            Body::Dir | Body::Symlink(_) => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { size, .. } => *size,
        }
    }

    fn kind(&self) -> Type<'_> {
        match &self.body {
            Body::Dir => Type::Dir,
            Body::Bytes(_) | Body::File { .. } => Type::File,
            Body::Symlink(target) => Type::Symlink(target),
        }
    }
}

/// One layer, described: its bytes are produced on demand.
#[derive(Debug)]
pub(crate) struct Layer<'a> {
    /// What it holds, for the history and the result: `base`, `pack <name>`, ...
    pub what: String,
    /// Its entries, in the order they are written.
    pub items: Vec<Item<'a>>,
}

/// A layer's digest (its diff id: layers are uncompressed) and size.
#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    /// What it holds: `base`, `pack <name>`, `rootfs`.
    pub what: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

fn sha256_ref(d: &Sha256Digest) -> String {
    format!("sha256:{d}")
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    sha256_ref(&Sha256Digest(sha2::Sha256::digest(bytes).into()))
}

/// `<hex>` of `sha256:<hex>`.
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// The error for a source that changed while the image was written.
pub(crate) fn changed(what: &Path) -> Error {
    Error::Environment(format!(
        "{} changed while it was exported (it no longer matches what was read of it first); nothing was written. \
         Export again once nothing writes to it (for a volume: once no assemble runs on it)",
        what.display()
    ))
}

/// Streams `path` (recorded as `size` bytes, with `sha256` if known) into `w`, checking both.
pub(crate) fn copy_checked(
    path: &Path,
    size: u64,
    sha256: Option<Sha256Digest>,
    w: &mut impl Write,
    out: &Path,
) -> Result<(), Error> {
    let mut f = File::open(path).ctx("read", path)?;
    let mut d = Digesting::new(w);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        if d.written() + n as u64 > size {
            return Err(changed(path));
        }
        d.write_all(&buf[..n]).ctx("write", out)?;
    }
    let (_, digest, len) = d.finish();
    if len != size || sha256.is_some_and(|s| s != digest) {
        return Err(changed(path));
    }
    Ok(())
}

/// Writes the bytes of `layer` into `w` (`out` names `w` in errors).
fn write_layer(layer: &Layer, mtime: u64, w: &mut impl Write, out: &Path) -> Result<(), Error> {
    for item in &layer.items {
        let h = Header {
            path: &item.path,
            kind: item.kind(),
            mode: item.mode,
            owner: item.owner,
            size: item.size(),
            mtime,
        };
        tarstream::write_header(w, &h).ctx("write", out)?;
        match &item.body {
            Body::Dir | Body::Symlink(_) => {}
            Body::Bytes(b) => w.write_all(b).ctx("write", out)?,
            Body::File { path, size, sha256 } => copy_checked(path, *size, *sha256, w, out)?,
        }
        tarstream::pad(w, h.size).ctx("write", out)?;
    }
    tarstream::finish(w).ctx("write", out)
}

/// The first pass: the digest and size of every layer.
pub(crate) fn measure(layers: &[Layer], mtime: u64) -> Result<Vec<LayerInfo>, Error> {
    layers
        .iter()
        .map(|layer| {
            let mut d = Digesting::new(io::sink());
            write_layer(layer, mtime, &mut d, Path::new("(digest)"))?;
            let (_, digest, size) = d.finish();
            Ok(LayerInfo {
                what: layer.what.clone(),
                digest: sha256_ref(&digest),
                size,
            })
        })
        .collect()
}

/// What the image runs, as its config says.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RunConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    entrypoint: Vec<String>,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
    user: String,
    working_dir: String,
}

impl RunConfig {
    /// `entrypoint` and `cmd` as the stack's images run them: `User`,
    /// `WorkingDir` and `Env` from [`crate::image_layout`].
    pub fn stack(
        entrypoint: Vec<String>,
        cmd: Option<Vec<String>>,
        labels: BTreeMap<String, String>,
    ) -> RunConfig {
        RunConfig {
            cmd,
            entrypoint,
            env: layout::env().to_vec(),
            labels,
            user: layout::user().to_string(),
            working_dir: layout::working_dir().to_string(),
        }
    }
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
}

#[derive(Serialize)]
struct RootFs {
    diff_ids: Vec<String>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The image config (the same JSON for both formats); fields in a fixed order.
#[derive(Serialize)]
struct Config {
    architecture: &'static str,
    config: RunConfig,
    created: String,
    history: Vec<History>,
    os: &'static str,
    rootfs: RootFs,
}

/// The config's bytes: `created` and every history entry's time is `mtime`,
/// each layer's history says `<created_by>: <what>`.
fn config_bytes(
    arch: Arch,
    mtime: u64,
    run: RunConfig,
    created_by: &str,
    layers: &[LayerInfo],
) -> Vec<u8> {
    let created = layout::created(mtime);
    let config = Config {
        architecture: arch.docker_name(),
        config: run,
        created: created.clone(),
        history: layers
            .iter()
            .map(|l| History {
                created: created.clone(),
                created_by: format!("{created_by}: {}", l.what),
            })
            .collect(),
        os: "linux",
        rootfs: RootFs {
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
            kind: "layers",
        },
    };
    serde_json::to_vec(&config).expect("the config serializes")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn descriptor(media_type: &'static str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type,
        digest: digest.to_string(),
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// A docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut c = tag.chars();
    tag.len() <= 128
        && c.next()
            .is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
}

/// A docker repository name: lowercase path components joined by `/`, the
/// first of several optionally a registry `host[:port]`.
fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let component = |p: &str| {
        p.split(['.', '_', '-']).all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    };
    // Docker's rule: a first part with a `.` or a `:`, or `localhost`, is a registry.
    let host = |p: &str| {
        let (h, port) = p.split_once(':').unwrap_or((p, "0"));
        (p.contains(['.', ':']) || p == "localhost")
            && !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
    };
    parts
        .iter()
        .enumerate()
        .all(|(i, p)| component(p) || (i == 0 && parts.len() > 1 && host(p)))
}

/// Checks that `bytes`, the contents of `path`, run as a program in an empty
/// container of `arch` (as `inspect --arch` does); says why not as an error
/// naming `what` it was to be, with `hint`.
pub(crate) fn check_runs(
    path: &Path,
    bytes: &[u8],
    executable: bool,
    arch: Arch,
    what: &str,
    hint: String,
    d: &mut Diagnostics,
) {
    let report = attune_volume::inspect::report(path, bytes, executable, Some(arch));
    if !report.runs() {
        let causes: Vec<String> = report.problems.iter().map(|p| p.cause()).collect();
        d.push(
            Diagnostic::error(
                path,
                format!(
                    "cannot be {what}: it would not run in an empty {arch} container: it {}",
                    causes.join("; it ")
                ),
            )
            .hint(hint),
        );
    }
}

/// Where the image goes, from `--format` and `--out`.
#[derive(Clone, Copy, Debug)]
pub enum Dest<'a> {
    /// A docker archive on stdout.
    Stdout,
    /// A docker archive file.
    File(&'a Path),
    /// An OCI layout directory.
    Dir(&'a Path),
}

impl<'a> Dest<'a> {
    /// Where `format` goes for `out` (`-`: stdout, a docker archive only).
    pub fn new(format: ImageFormat, out: &'a Path) -> Result<Dest<'a>, Error> {
        let to_stdout = out == Path::new("-");
        Ok(match (format, to_stdout) {
            (ImageFormat::Oci, true) => {
                return Err(Error::Usage(
                    "--out - writes to stdout, which only a docker archive can be: give --format docker-archive, or --out DIR for an OCI layout".to_string(),
                ));
            }
            (ImageFormat::DockerArchive, true) => Dest::Stdout,
            (ImageFormat::DockerArchive, false) => Dest::File(out),
            (ImageFormat::Oci, false) => Dest::Dir(out),
        })
    }

    /// [`Dest::new`], then the options every image writer shares: `--out`
    /// (which must not exist), `--name` and `--tag`.
    pub(crate) fn checked(
        format: ImageFormat,
        out: &'a Path,
        name: &str,
        tag: Option<&str>,
    ) -> Result<Dest<'a>, Error> {
        let dest = Dest::new(format, out)?;
        if !dest.is_stdout() && exists(out) {
            return Err(Error::Usage(format!(
                "--out {} exists; remove it or give another path",
                out.display()
            )));
        }
        if !valid_name(name) {
            return Err(Error::Usage(format!(
                "--name `{name}` is not a docker repository name (lowercase letters, digits and . _ - in /-separated parts, e.g. attune/packs)"
            )));
        }
        if let Some(t) = tag.filter(|t| !valid_tag(t)) {
            return Err(Error::Usage(format!(
                "--tag `{t}` is not a docker tag (up to 128 letters, digits, _ . -, not starting with . or -)"
            )));
        }
        Ok(dest)
    }

    /// Whether the image goes to stdout, where no result can be printed.
    pub fn is_stdout(self) -> bool {
        matches!(self, Dest::Stdout)
    }
}

/// What every image writer reports. Inputs unfit for an image are not an
/// error but this result with `ok` false, the reasons in `diagnostics`, and
/// nothing written.
#[derive(Debug, Serialize)]
pub struct ImageResult {
    /// Whether an image was written.
    pub ok: bool,
    /// `NAME:TAG`.
    pub image: Option<String>,
    /// The architecture.
    pub arch: Arch,
    /// `oci` or `docker-archive`.
    pub format: &'static str,
    /// Where it went (`-`: stdout).
    pub out: String,
    /// The config's digest: the image id.
    pub config_digest: Option<String>,
    /// The OCI manifest's digest (oci only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Every layer, in order.
    pub layers: Vec<LayerInfo>,
    /// What was wrong with the inputs.
    pub diagnostics: Diagnostics,
}

impl ImageResult {
    /// Nothing written yet, for `arch` as `format` to `out`.
    pub(crate) fn new(arch: Arch, format: ImageFormat, out: &Path) -> ImageResult {
        ImageResult {
            ok: false,
            image: None,
            arch,
            format: format.name(),
            out: out.display().to_string(),
            config_digest: None,
            manifest_digest: None,
            layers: vec![],
            diagnostics: Diagnostics::default(),
        }
    }
}

/// An image to write: its layers and what its config says of them.
pub(crate) struct Spec<'a> {
    /// The layers, in order.
    pub layers: &'a [Layer<'a>],
    /// Their entries' mtime and the config's `created`.
    pub mtime: u64,
    /// What the image runs.
    pub run: RunConfig,
    /// The history's `created_by`, before each layer's `what`.
    pub created_by: &'a str,
    /// The repository name.
    pub name: &'a str,
    /// The tag, if given.
    pub tag: Option<&'a str>,
    /// The architecture.
    pub arch: Arch,
    /// What the layers are read from, named when it changes under the write.
    pub source: &'a Path,
}

/// Writes `spec` to `dest`, into `result` (`image`, `config_digest`,
/// `manifest_digest`, `layers`; `ok` is the caller's); returns `NAME:TAG`.
pub(crate) fn write(spec: Spec, dest: Dest, result: &mut ImageResult) -> Result<String, Error> {
    let infos = measure(spec.layers, spec.mtime)?;
    let config = config_bytes(spec.arch, spec.mtime, spec.run, spec.created_by, &infos);
    let config_digest = digest_of(&config);
    let tag = spec
        .tag
        .map_or_else(|| hex_of(&config_digest)[..16].to_string(), str::to_string);
    let reference = format!("{}:{tag}", spec.name);
    let image = Image {
        layers: spec.layers,
        infos: &infos,
        config: &config,
        config_digest: &config_digest,
        reference: &reference,
        tag: &tag,
        arch: spec.arch,
        mtime: spec.mtime,
        source: spec.source,
    };
    let manifest_digest = match dest {
        Dest::Stdout => {
            let stdout = io::stdout().lock();
            let mut w = BufWriter::with_capacity(256 * 1024, stdout);
            let name = Path::new("stdout");
            image.docker_archive(&mut w, name)?;
            w.flush().ctx("write", name)?;
            None
        }
        Dest::File(path) => cleanup_on_error(path, || {
            let f = fsops::create_file(path, 0o644)?;
            let mut w = BufWriter::with_capacity(256 * 1024, f);
            image.docker_archive(&mut w, path)?;
            w.flush().ctx("write", path)?;
            Ok(None)
        })?,
        Dest::Dir(dir) => cleanup_on_error(dir, || image.oci_layout(dir).map(Some))?,
    };
    result.image = Some(reference.clone());
    result.config_digest = Some(config_digest);
    result.manifest_digest = manifest_digest;
    result.layers = infos;
    Ok(reference)
}

/// Runs `write`; on failure removes what it left at `path`.
fn cleanup_on_error<T>(path: &Path, write: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    write().inspect_err(|_| {
        if exists(path) {
            let _ = fsops::delete_tree(path);
        }
    })
}

/// An image ready to be written: its layers, measured, and its config.
struct Image<'a> {
    layers: &'a [Layer<'a>],
    infos: &'a [LayerInfo],
    config: &'a [u8],
    config_digest: &'a str,
    reference: &'a str,
    tag: &'a str,
    arch: Arch,
    mtime: u64,
    source: &'a Path,
}

impl Image<'_> {
    fn file_header<'h>(&self, path: &'h str, size: u64) -> Header<'h> {
        Header {
            path,
            kind: Type::File,
            mode: 0o644,
            owner: (0, 0),
            size,
            mtime: self.mtime,
        }
    }

    /// The second pass: `layer` into `w`, which must give what the first pass measured.
    fn write_measured(
        &self,
        layer: &Layer,
        info: &LayerInfo,
        w: &mut impl Write,
        out: &Path,
    ) -> Result<(), Error> {
        let mut d = Digesting::new(w);
        write_layer(layer, self.mtime, &mut d, out)?;
        let (_, digest, size) = d.finish();
        if sha256_ref(&digest) != info.digest || size != info.size {
            return Err(changed(self.source));
        }
        Ok(())
    }

    /// A docker archive (`docker load`, `skopeo copy docker-archive:`): the
    /// config, the layers as `<hex>.tar`, then `manifest.json`.
    fn docker_archive(&self, w: &mut impl Write, out: &Path) -> Result<(), Error> {
        let config_name = format!("{}.json", hex_of(self.config_digest));
        tarstream::write_entry(
            w,
            &self.file_header(&config_name, self.config.len() as u64),
            self.config,
        )
        .ctx("write", out)?;
        let mut names = vec![];
        for (layer, info) in self.layers.iter().zip(self.infos) {
            let name = format!("{}.tar", hex_of(&info.digest));
            tarstream::write_header(w, &self.file_header(&name, info.size)).ctx("write", out)?;
            self.write_measured(layer, info, w, out)?;
            tarstream::pad(w, info.size).ctx("write", out)?;
            names.push(name);
        }
        let manifest = serde_json::to_vec(&[ArchiveManifest {
            config: config_name,
            repo_tags: vec![self.reference.to_string()],
            layers: names,
        }])
        .expect("the manifest serializes");
        tarstream::write_entry(
            w,
            &self.file_header("manifest.json", manifest.len() as u64),
            &manifest,
        )
        .ctx("write", out)?;
        tarstream::finish(w).ctx("write", out)
    }

    /// An OCI image layout (`skopeo copy oci:DIR`): `oci-layout`, the blobs,
    /// then `index.json`. Returns the manifest's digest.
    fn oci_layout(&self, dir: &Path) -> Result<String, Error> {
        let blobs = dir.join("blobs/sha256");
        fsops::create_dir_all(&blobs)?;
        let write_small = |path: &Path, bytes: &[u8]| -> Result<(), Error> {
            let mut f = fsops::create_file(path, 0o644)?;
            f.write_all(bytes).ctx("write", path)
        };
        write_small(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        write_small(&blobs.join(hex_of(self.config_digest)), self.config)?;
        for (layer, info) in self.layers.iter().zip(self.infos) {
            let path = blobs.join(hex_of(&info.digest));
            if exists(&path) {
                // Two layers with the same bytes are one blob.
                continue;
            }
            let mut w = BufWriter::with_capacity(256 * 1024, fsops::create_file(&path, 0o644)?);
            self.write_measured(layer, info, &mut w, &path)?;
            w.flush().ctx("write", &path)?;
        }
        let manifest = serde_json::to_vec(&OciManifest {
            schema_version: 2,
            media_type: media::MANIFEST,
            config: descriptor(media::CONFIG, self.config_digest, self.config.len() as u64),
            layers: self
                .infos
                .iter()
                .map(|l| descriptor(media::LAYER, &l.digest, l.size))
                .collect(),
        })
        .expect("the manifest serializes");
        let manifest_digest = digest_of(&manifest);
        write_small(&blobs.join(hex_of(&manifest_digest)), &manifest)?;
        let mut entry = descriptor(media::MANIFEST, &manifest_digest, manifest.len() as u64);
        entry.platform = Some(Platform {
            architecture: self.arch.docker_name(),
            os: "linux",
        });
        entry.annotations = BTreeMap::from([
            ("io.containerd.image.name", self.reference.to_string()),
            ("org.opencontainers.image.ref.name", self.tag.to_string()),
        ]);
        let index = serde_json::to_vec(&OciIndex {
            schema_version: 2,
            media_type: media::INDEX,
            manifests: vec![entry],
        })
        .expect("the index serializes");
        write_small(&dir.join("index.json"), &index)?;
        Ok(manifest_digest)
    }
}

/// Asserts that the run config `c` (the config's `config`) has the stack's
/// `User`, `WorkingDir` and `Env`; for tests.
#[cfg(test)]
pub(crate) fn assert_stack_config(c: &serde_json::Value) {
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/opt/attune");
    assert_eq!(c["Env"], serde_json::json!(["PATH=/usr/local/bin:/bin"]));
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_file_that_changes_while_it_is_copied_fails_the_write() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "abc").unwrap();
        let sha = Sha256Digest(sha2::Sha256::digest(b"abc").into());
        let mut sink = vec![];
        copy_checked(&f, 3, Some(sha), &mut sink, Path::new("out")).unwrap();
        assert_eq!(sink, b"abc");
        for (size, contents) in [(3, "abd"), (3, "abcd"), (4, "abc")] {
            fs::write(&f, contents).unwrap();
            let err = copy_checked(&f, size, Some(sha), &mut vec![], Path::new("out")).unwrap_err();
            assert!(
                err.to_string().contains("changed while it was exported"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_failed_write_removes_what_it_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        // A write that fails once its output exists (a file that changed
        // under the second pass, a full disk) leaves no output behind.
        let out = tmp.path().join("img.tar");
        let r = cleanup_on_error(&out, || -> Result<(), Error> {
            fs::write(&out, "partial").unwrap();
            Err(changed(&out))
        });
        assert!(r.is_err() && !out.exists());
    }

    #[test]
    fn names_and_tags_follow_docker_rules() {
        for ok in [
            "attune/packs",
            "a",
            "127.0.0.1:5000/attune/packs",
            "registry.example/a-b/c_d.e",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Attune/packs", "a//b", "a/", "-a", "a:b", "a/b:1"] {
            assert!(!valid_name(bad), "{bad}");
        }
        for ok in ["latest", "reg-amd64", "0123456789abcdef", "_x.y-z"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn a_layer_holds_its_entries_as_given() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "body").unwrap();
        let layer = Layer {
            what: "test".to_string(),
            items: vec![
                Item {
                    path: "bin".to_string(),
                    mode: 0o755,
                    owner: (0, 0),
                    body: Body::Dir,
                },
                Item {
                    path: "bin/f".to_string(),
                    mode: 0o755,
                    owner: (1000, 1000),
                    body: Body::File {
                        path: f,
                        size: 4,
                        sha256: None,
                    },
                },
                Item {
                    path: "bin/sh".to_string(),
                    mode: 0o777,
                    owner: (0, 0),
                    body: Body::Symlink("f".to_string()),
                },
            ],
        };
        let mut bytes = vec![];
        write_layer(&layer, 9, &mut bytes, Path::new("out")).unwrap();
        let info = &measure(std::slice::from_ref(&layer), 9).unwrap()[0];
        assert_eq!(
            (info.digest.clone(), info.size),
            (digest_of(&bytes), bytes.len() as u64)
        );
        let got: Vec<_> = crate::tarstream::read_members(&bytes)
            .into_iter()
            .map(|m| (m.name, m.mode, m.owner, m.mtime, m.link, m.body))
            .collect();
        assert_eq!(
            got,
            [
                ("bin/".to_string(), 0o755, (0, 0), 9, None, vec![]),
                (
                    "bin/f".to_string(),
                    0o755,
                    (1000, 1000),
                    9,
                    None,
                    b"body".to_vec()
                ),
                (
                    "bin/sh".to_string(),
                    0o777,
                    (0, 0),
                    9,
                    Some("f".to_string()),
                    vec![]
                ),
            ]
        );
    }
}
