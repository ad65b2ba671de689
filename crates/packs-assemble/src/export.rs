//! `export`: the packs image of an assembled volume, the one writer of it for
//! every builder (docker/build-packs-image, the flake). One base layer (the
//! assembler, `/etc/passwd`, `/etc/group`, `/tmp`, the mount points), then one
//! layer per pack in name order, as a docker archive (a file, or stdout for
//! `| docker load`) or an OCI image layout (a directory). The layout is
//! [`crate::image_layout`]'s, which [`crate::check_image`] asserts.
//!
//! The same volume and assembler give the same bytes: entries in path order,
//! every mtime `SOURCE_DATE_EPOCH` (else 1), owners 0:0 but the mount points,
//! no user or group names, layers uncompressed, JSON written from structs.
//! The tag, unless given, is the first 16 hex digits of the config's digest
//! (the image id), so that different contents never share a tag.
//!
//! The volume must verify for the architecture first; then it is read as its
//! services read it (its manifest, then `VOL/<pack>/...`), and every file is
//! checked against the manifest as it is copied. Each layer is written twice:
//! once to learn its digest and size (the config and the archive's headers
//! need them first), then into the output, which must give the same digest.
//! Memory holds the assembler and one buffer, however large the packs. The
//! index (`manifest.json`, `index.json`) is written last: an output cut short
//! is never a loadable image, and a failed export removes what it wrote.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use attune_pack::{Arch, Diagnostic, Diagnostics};
use serde::Serialize;
use sha2::Digest as _;

use crate::cli::{ExportArgs, ImageFormat};
use crate::error::{Error, IoContext, exit};
use crate::fsops;
use crate::hash::Sha256Digest;
use crate::image_layout::{self as layout, BASE, Body as BaseBody};
use crate::manifest::{Entry, MANIFEST_NAME, Manifest};
use crate::output::{Output, plural};
use crate::scan::Kind;
use crate::tarstream::{self, Digesting, Header};
use crate::volume::{Volume, exists};

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

/// The contents of one layer entry.
#[derive(Debug)]
enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// A published file, with what the manifest records of it.
    File {
        path: PathBuf,
        size: u64,
        sha256: Option<Sha256Digest>,
    },
}

#[derive(Debug)]
struct Item<'a> {
    path: String,
    kind: Kind,
    mode: u32,
    owner: (u32, u32),
    body: Body<'a>,
}

impl Item<'_> {
    fn size(&self) -> u64 {
        match &self.body {
            Body::None => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { size, .. } => *size,
        }
    }
}

/// One layer, described: its bytes are produced on demand.
#[derive(Debug)]
struct Layer<'a> {
    what: String,
    items: Vec<Item<'a>>,
}

/// A layer's digest (its diff id: layers are uncompressed) and size.
#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    /// `base`, or `pack <name>`.
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
fn digest_of(bytes: &[u8]) -> String {
    sha256_ref(&Sha256Digest(sha2::Sha256::digest(bytes).into()))
}

fn base_layer(assembler: &[u8]) -> Layer<'_> {
    let items = BASE
        .iter()
        .map(|e| Item {
            path: e.path.to_string(),
            kind: e.kind,
            mode: e.mode,
            owner: e.owner,
            body: match e.body {
                BaseBody::None => Body::None,
                BaseBody::Text(t) => Body::Bytes(t.as_bytes()),
                BaseBody::Assembler => Body::Bytes(assembler),
            },
        })
        .collect();
    Layer {
        what: "base".to_string(),
        items,
    }
}

/// Whether a manifest path is a plain relative path (no `..`, `.`, empty or absolute part).
fn is_plain(path: &str) -> bool {
    path.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        && !path.contains('\0')
}

/// The layer of `pack`: the parents, then its entries as the volume publishes them.
fn pack_layer<'a>(vol: &Volume, pack: &str, entries: &[&Entry]) -> Result<Layer<'a>, Error> {
    let mut items: Vec<Item> = layout::PACK_PARENTS
        .iter()
        .map(|p| Item {
            path: p.to_string(),
            kind: Kind::Dir,
            mode: layout::PARENT_MODE,
            owner: layout::ROOT,
            body: Body::None,
        })
        .collect();
    for e in entries {
        if !is_plain(&e.path) {
            return Err(Error::Environment(format!(
                "{}: the manifest lists `{}`, which is not a plain relative path; refusing to export it. Reassemble the volume",
                vol.root.join(MANIFEST_NAME).display(),
                e.path.escape_debug()
            )));
        }
        items.push(Item {
            path: format!("{}/{}", layout::PACKS_SRC, e.path),
            kind: e.kind,
            mode: e.mode_bits(),
            owner: layout::ROOT,
            body: match e.kind {
                Kind::Dir => Body::None,
                Kind::File => Body::File {
                    path: vol.root.join(&e.path),
                    size: e.size.unwrap_or(0),
                    sha256: e.sha256,
                },
            },
        });
    }
    Ok(Layer {
        what: format!("pack {pack}"),
        items,
    })
}

/// The error for a volume that changed under the export.
fn changed(what: &Path) -> Error {
    Error::Environment(format!(
        "{} changed while it was exported (it no longer matches the volume's manifest); nothing was written. \
         Export again once no assemble runs on the volume",
        what.display()
    ))
}

/// Streams `path` (recorded as `size` bytes with `sha256`) into `w`, checking both.
fn copy_checked(
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
            kind: item.kind,
            mode: item.mode,
            owner: item.owner,
            size: item.size(),
            mtime,
        };
        tarstream::write_header(w, &h).ctx("write", out)?;
        match &item.body {
            Body::None => {}
            Body::Bytes(b) => w.write_all(b).ctx("write", out)?,
            Body::File { path, size, sha256 } => copy_checked(path, *size, *sha256, w, out)?,
        }
        tarstream::pad(w, h.size).ctx("write", out)?;
    }
    tarstream::finish(w).ctx("write", out)
}

/// The first pass: the digest and size of `layer`.
fn measure(layer: &Layer, mtime: u64) -> Result<(Sha256Digest, u64), Error> {
    let mut d = Digesting::new(io::sink());
    write_layer(layer, mtime, &mut d, Path::new("(digest)"))?;
    let (_, digest, size) = d.finish();
    Ok((digest, size))
}

/// The second pass: `layer` into `w`, which must give what the first pass measured.
fn write_measured(
    layer: &Layer,
    info: &LayerInfo,
    mtime: u64,
    w: &mut impl Write,
    out: &Path,
    vol: &Volume,
) -> Result<(), Error> {
    let mut d = Digesting::new(w);
    write_layer(layer, mtime, &mut d, out)?;
    let (_, digest, size) = d.finish();
    if sha256_ref(&digest) != info.digest || size != info.size {
        return Err(changed(&vol.root));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    cmd: Vec<String>,
    entrypoint: Vec<String>,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
    user: String,
    working_dir: String,
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

fn config_bytes(
    arch: Arch,
    mtime: u64,
    manifest: &Manifest,
    packs: &[&str],
    layers: &[LayerInfo],
) -> Vec<u8> {
    let created = layout::created(mtime);
    let labels = BTreeMap::from([
        (
            layout::LABEL_ARCH.to_string(),
            arch.docker_name().to_string(),
        ),
        (layout::LABEL_PACKS.to_string(), packs.join(" ")),
        (
            layout::LABEL_ROOT_HASH.to_string(),
            manifest.root_hash.clone(),
        ),
        (
            layout::LABEL_TITLE.0.to_string(),
            layout::LABEL_TITLE.1.to_string(),
        ),
    ]);
    let config = Config {
        architecture: arch.docker_name(),
        config: RunConfig {
            cmd: layout::cmd(),
            entrypoint: layout::entrypoint(arch),
            env: layout::ENV.iter().map(|s| s.to_string()).collect(),
            labels,
            user: layout::USER.to_string(),
            working_dir: layout::WORKING_DIR.to_string(),
        },
        created: created.clone(),
        history: layers
            .iter()
            .map(|l| History {
                created: created.clone(),
                created_by: format!("packs-assemble export: {}", l.what),
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

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// What `export` wrote.
#[derive(Debug, Serialize)]
pub struct ExportResult {
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
    /// The volume manifest's root hash.
    pub root_hash: Option<String>,
    /// The packs, one layer each.
    pub packs: Vec<String>,
    /// Every layer, the base first.
    pub layers: Vec<LayerInfo>,
    /// What was wrong with the volume or the assembler.
    pub diagnostics: Diagnostics,
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

/// Reads the assembler and checks that it runs in an empty container of
/// `arch` (as `inspect --arch` does); the bytes checked are the bytes exported.
fn assembler(path: &Path, arch: Arch, d: &mut Diagnostics) -> Result<Vec<u8>, Error> {
    let (bytes, executable) = crate::inspect::read(path).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(format!("--assembler {m}")),
        e => e,
    })?;
    let report = crate::inspect::report(path, &bytes, executable, Some(arch));
    if !report.runs() {
        let causes: Vec<String> = report.problems.iter().map(|p| p.cause()).collect();
        d.push(
            Diagnostic::error(
                path,
                format!(
                    "cannot be the image's packs-assemble: it would not run in an empty {arch} container: it {}",
                    causes.join("; it ")
                ),
            )
            .hint(format!(
                "give the static packs-assemble built for {arch}: `scripts/build-pack-binaries --arch {arch}` writes \
                 target/musl/{}-unknown-linux-musl/release/packs-assemble",
                arch.rust_name()
            )),
        );
    }
    Ok(bytes)
}

/// Where the image goes.
enum Dest<'a> {
    Stdout,
    File(&'a Path),
    Dir(&'a Path),
}

/// `export`.
pub fn command(args: &ExportArgs, out: Output) -> Result<ExitCode, Error> {
    let to_stdout = args.out == Path::new("-");
    let dest = match (args.format, to_stdout) {
        (ImageFormat::Oci, true) => {
            return Err(Error::Usage(
                "--out - writes to stdout, which only a docker archive can be: give --format docker-archive, or --out DIR for an OCI layout".to_string(),
            ));
        }
        (ImageFormat::DockerArchive, true) => Dest::Stdout,
        (ImageFormat::DockerArchive, false) => Dest::File(&args.out),
        (ImageFormat::Oci, false) => Dest::Dir(&args.out),
    };
    if to_stdout && out.json {
        return Err(Error::Usage(
            "--json prints the result on stdout, where --out - writes the archive: give --out FILE"
                .to_string(),
        ));
    }
    if !to_stdout && exists(&args.out) {
        return Err(Error::Usage(format!(
            "--out {} exists; remove it or give another path",
            args.out.display()
        )));
    }
    if !valid_name(&args.name) {
        return Err(Error::Usage(format!(
            "--name `{}` is not a docker repository name (lowercase letters, digits and . _ - in /-separated parts, e.g. attune/packs)",
            args.name
        )));
    }
    if let Some(t) = args.tag.as_deref().filter(|t| !valid_tag(t)) {
        return Err(Error::Usage(format!(
            "--tag `{t}` is not a docker tag (up to 128 letters, digits, _ . -, not starting with . or -)"
        )));
    }
    if !exists(&args.volume) {
        return Err(Error::Usage(format!(
            "--volume {} does not exist",
            args.volume.display()
        )));
    }
    let mtime = crate::source_date_epoch()? as u64;
    let arch = args.arch;
    let mut result = ExportResult {
        ok: false,
        image: None,
        arch,
        format: match args.format {
            ImageFormat::Oci => "oci",
            ImageFormat::DockerArchive => "docker-archive",
        },
        out: args.out.display().to_string(),
        config_digest: None,
        manifest_digest: None,
        root_hash: None,
        packs: vec![],
        layers: vec![],
        diagnostics: Diagnostics::default(),
    };
    let assembler = assembler(&args.assembler, arch, &mut result.diagnostics)?;
    let vol = Volume::new(&args.volume);
    let report = crate::verify::verify(&vol, Some(arch))?;
    result.diagnostics.0.extend(report.diagnostics.0);
    let refuse = |result: &ExportResult| {
        out.diagnostics(&result.diagnostics);
        if !to_stdout {
            out.result(result, || {
                format!("nothing was written to {}", args.out.display())
            });
        }
        Err(Error::Invalid {
            count: result.diagnostics.errors().count(),
            consequence: "no image was written",
        })
    };
    if result.diagnostics.has_errors() {
        return refuse(&result);
    }
    // Read as services read it: the manifest through the root's link, then
    // `VOL/<pack>/...`; it must still be the generation just verified.
    let manifest_path = vol.root.join(MANIFEST_NAME);
    let manifest = Manifest::read(&manifest_path)?;
    if report.root_hash.as_deref() != Some(manifest.root_hash.as_str()) {
        return Err(changed(&vol.root));
    }
    let mut by_pack: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in &manifest.contents.entries {
        let pack = e.path.split('/').next().unwrap_or_default();
        by_pack.entry(pack).or_default().push(e);
    }
    let packs: Vec<&str> = by_pack.keys().copied().collect();
    let mut layers = vec![base_layer(&assembler)];
    for (pack, entries) in &by_pack {
        layers.push(pack_layer(&vol, pack, entries)?);
    }
    let infos = layers
        .iter()
        .map(|l| {
            let (digest, size) = measure(l, mtime)?;
            Ok(LayerInfo {
                what: l.what.clone(),
                digest: sha256_ref(&digest),
                size,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let config = config_bytes(arch, mtime, &manifest, &packs, &infos);
    let config_digest = digest_of(&config);
    let tag = args
        .tag
        .clone()
        .unwrap_or_else(|| hex_of(&config_digest)[..16].to_string());
    let reference = format!("{}:{tag}", args.name);
    let image = Image {
        layers: &layers,
        infos: &infos,
        config: &config,
        config_digest: &config_digest,
        reference: &reference,
        tag: &tag,
        arch,
        mtime,
        vol: &vol,
    };
    let written = match dest {
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
    result.ok = true;
    result.image = Some(reference.clone());
    result.config_digest = Some(config_digest.clone());
    result.manifest_digest = written;
    result.root_hash = Some(manifest.root_hash.clone());
    result.packs = packs.iter().map(|p| p.to_string()).collect();
    result.layers = infos;
    out.diagnostics(&result.diagnostics);
    tracing::info!(
        "packs image {reference} ({arch}): {} pack {} ({}), config {config_digest}, volume {}; written to {}",
        packs.len(),
        plural(packs.len(), "layer"),
        packs.join(", "),
        manifest.root_hash,
        args.out.display()
    );
    if !to_stdout {
        out.result(&result, || reference.clone());
    }
    Ok(ExitCode::from(exit::OK))
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
    vol: &'a Volume,
}

impl Image<'_> {
    fn file_header<'h>(&self, path: &'h str, size: u64) -> Header<'h> {
        Header {
            path,
            kind: Kind::File,
            mode: 0o644,
            owner: layout::ROOT,
            size,
            mtime: self.mtime,
        }
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
            write_measured(layer, info, self.mtime, w, out, self.vol)?;
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
                // Two packs with the same bytes are one blob.
                continue;
            }
            let mut w = BufWriter::with_capacity(256 * 1024, fsops::create_file(&path, 0o644)?);
            write_measured(layer, info, self.mtime, &mut w, &path, self.vol)?;
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

/// A small volume and an exported image of it, for the tests of `export` and `check-image`.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use attune_pack::Arch;
    use attune_pack::fixtures::{ElfSpec, elf_bytes};
    use clap::Parser;

    use crate::cli::{Cli, ExportArgs, ImageFormat, LogFormat};
    use crate::error::Error;
    use crate::output::Output;

    fn write(path: &Path, text: &str, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Packs `beta` and `alpha` (written in that order) assembled for amd64
    /// into `dir/vol`, and a static amd64 ELF at `dir/pa-amd64` (and arm64 at `dir/pa-arm64`).
    pub fn volume(dir: &Path) -> PathBuf {
        for (pack, action) in [("beta", "run"), ("alpha", "hello")] {
            let p = dir.join("packs").join(pack);
            write(
                &p.join("pack.yaml"),
                &format!("ref: {pack}\nlabel: {pack}\nversion: 1.0.0\n"),
                0o644,
            );
            write(
                &p.join(format!("actions/{action}.yaml")),
                &format!(
                    "ref: {pack}.{action}\nlabel: {action}\nrunner_type: shell\nentry_point: {action}.sh\n"
                ),
                0o644,
            );
            write(
                &p.join(format!("actions/{action}.sh")),
                "#!/bin/sh\necho hi\n",
                0o755,
            );
        }
        for arch in Arch::ALL {
            let pa = dir.join(format!("pa-{arch}"));
            fs::write(&pa, elf_bytes(ElfSpec::static_pie(arch))).unwrap();
            fs::set_permissions(&pa, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let vol = dir.join("vol");
        let cli = Cli::try_parse_from([
            "packs-assemble".as_ref(),
            "-q".as_ref(),
            "assemble".as_ref(),
            "--packs".as_ref(),
            dir.join("packs").as_os_str(),
            "--arch".as_ref(),
            "amd64".as_ref(),
            "--no-sync".as_ref(),
            "--out".as_ref(),
            vol.as_os_str(),
        ])
        .unwrap();
        let _ = crate::run(cli);
        assert!(
            vol.join("..data").exists(),
            "the fixture volume was assembled"
        );
        vol
    }

    /// [`volume`], exported for amd64 as `format` to `dir/img.tar` or `dir/oci`.
    pub fn exported(dir: &Path, format: ImageFormat) -> PathBuf {
        volume(dir);
        let out = dir.join(match format {
            ImageFormat::DockerArchive => "img.tar",
            ImageFormat::Oci => "oci",
        });
        export(dir, Arch::Amd64, format, &out).unwrap();
        out
    }

    /// `export` of `dir/vol` with the `assembler` arch's ELF, as `format`, to `out`.
    pub fn export(
        dir: &Path,
        assembler: Arch,
        format: ImageFormat,
        out: &Path,
    ) -> Result<(), Error> {
        let args = ExportArgs {
            volume: dir.join("vol"),
            assembler: dir.join(format!("pa-{assembler}")),
            arch: Arch::Amd64,
            format,
            name: crate::image_layout::DEFAULT_NAME.to_string(),
            tag: None,
            out: out.to_path_buf(),
        };
        let out = Output {
            json: false,
            log_format: LogFormat::Human,
            quiet: true,
        };
        super::command(&args, out).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use attune_pack::Arch;
    use serde_json::Value;

    use std::os::unix::fs::PermissionsExt;

    use super::fixtures::{export, exported, volume};
    use super::*;
    use crate::tarstream::{Member, read_members as members};

    /// The exported archive: its manifest.json, its config and its layers in order.
    fn open(path: &Path) -> (Value, Value, Vec<Vec<Member>>, Vec<Vec<u8>>) {
        let outer = members(&fs::read(path).unwrap());
        let get = |n: &str| outer.iter().find(|m| m.name == n).unwrap().body.clone();
        let manifest: Value = serde_json::from_slice(&get("manifest.json")).unwrap();
        let config: Value =
            serde_json::from_slice(&get(manifest[0]["Config"].as_str().unwrap())).unwrap();
        let raw: Vec<Vec<u8>> = manifest[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| get(l.as_str().unwrap()))
            .collect();
        let layers = raw.iter().map(|l| members(l)).collect();
        (manifest, config, layers, raw)
    }

    fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                (rel, fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn two_exports_are_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let first = exported(tmp.path(), ImageFormat::DockerArchive);
        let second = tmp.path().join("again.tar");
        export(tmp.path(), Arch::Amd64, ImageFormat::DockerArchive, &second).unwrap();
        assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
        for d in ["oci1", "oci2"] {
            export(
                tmp.path(),
                Arch::Amd64,
                ImageFormat::Oci,
                &tmp.path().join(d),
            )
            .unwrap();
        }
        let (a, b) = (
            all_files(&tmp.path().join("oci1")),
            all_files(&tmp.path().join("oci2")),
        );
        assert_eq!(
            a.len(),
            7,
            "oci-layout, index.json, manifest, config, 3 layers"
        );
        assert_eq!(a, b);
    }

    #[test]
    fn one_layer_per_pack_in_name_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, _, layers, _) = open(&exported(tmp.path(), ImageFormat::DockerArchive));
        assert_eq!(layers.len(), 3, "the base, alpha, beta");
        let names = |l: &Vec<Member>| l.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        let parents = ["opt/", "opt/attune/", "opt/attune/packs-src/"];
        for (layer, pack, action) in [(&layers[1], "alpha", "hello"), (&layers[2], "beta", "run")] {
            let src = format!("opt/attune/packs-src/{pack}");
            let mut want: Vec<String> = parents.iter().map(|p| p.to_string()).collect();
            want.extend([
                format!("{src}/"),
                format!("{src}/actions/"),
                format!("{src}/actions/{action}.sh"),
                format!("{src}/actions/{action}.yaml"),
                format!("{src}/pack.yaml"),
            ]);
            assert_eq!(names(layer), want);
        }
        assert!(
            names(&layers[0])
                .iter()
                .all(|n| n == "opt/attune/packs-src/" || !n.starts_with("opt/attune/packs-src/")),
            "the base layer holds no pack"
        );
    }

    #[test]
    fn entries_have_fixed_owners_modes_and_times() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, _, layers, _) = open(&exported(tmp.path(), ImageFormat::DockerArchive));
        let base: Vec<(String, u32, (u64, u64))> = layers[0]
            .iter()
            .map(|m| (m.name.clone(), m.mode, m.owner))
            .collect();
        let want: Vec<(String, u32, (u64, u64))> = [
            ("etc/", 0o755, 0),
            ("etc/group", 0o644, 0),
            ("etc/passwd", 0o644, 0),
            ("opt/", 0o755, 0),
            ("opt/attune/", 0o755, 0),
            ("opt/attune/data/", 0o755, 1000),
            ("opt/attune/logs/", 0o755, 1000),
            ("opt/attune/packs/", 0o755, 1000),
            ("opt/attune/packs-src/", 0o755, 0),
            ("opt/attune/packs.dev/", 0o755, 1000),
            ("tmp/", 0o1777, 0),
            ("usr/", 0o755, 0),
            ("usr/local/", 0o755, 0),
            ("usr/local/bin/", 0o755, 0),
            ("usr/local/bin/packs-assemble", 0o755, 0),
        ]
        .iter()
        .map(|(n, m, o)| (n.to_string(), *m, (*o, *o)))
        .collect();
        assert_eq!(base, want);
        let passwd = &layers[0]
            .iter()
            .find(|m| m.name == "etc/passwd")
            .unwrap()
            .body;
        assert!(
            String::from_utf8_lossy(passwd)
                .contains("attune:x:1000:1000::/opt/attune:/sbin/nologin\n")
        );
        for m in layers.iter().flatten() {
            assert_eq!(
                (m.mtime, m.names.as_str()),
                (1, ""),
                "{}: mtime 1, no user or group names",
                m.name
            );
        }
        let parents = ["opt/", "opt/attune/", "opt/attune/packs-src/"];
        for m in &layers[1] {
            let mode = match m.name.as_str() {
                n if n.ends_with('/') && n.len() > parents[2].len() => 0o555,
                n if n.ends_with('/') => 0o755,
                n if n.ends_with(".sh") => 0o555,
                _ => 0o444,
            };
            assert_eq!((m.mode, m.owner), (mode, (0, 0)), "{}", m.name);
        }
    }

    #[test]
    fn config_names_the_entrypoint_user_labels_and_diff_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let path = exported(tmp.path(), ImageFormat::DockerArchive);
        let (manifest, config, _, raw) = open(&path);
        let c = &config["config"];
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["WorkingDir"], "/opt/attune");
        assert_eq!(c["Env"], serde_json::json!(["PATH=/usr/local/bin:/bin"]));
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!([
                "/usr/local/bin/packs-assemble",
                "assemble",
                "--packs",
                "/opt/attune/packs-src",
                "--arch",
                "amd64",
                "--verify"
            ])
        );
        assert_eq!(c["Cmd"], serde_json::json!(["--out", "/opt/attune/packs"]));
        assert_eq!(c["Labels"]["io.attune.arch"], "amd64");
        assert_eq!(c["Labels"]["io.attune.packs"], "alpha beta");
        let root_hash = fs::read_to_string(tmp.path().join("vol/.attune-manifest.json")).unwrap();
        let label = c["Labels"]["io.attune.packs.root-hash"].as_str().unwrap();
        assert!(
            root_hash.contains(label) && label.starts_with("sha256:"),
            "{label}"
        );
        assert_eq!(
            (config["architecture"].as_str(), config["os"].as_str()),
            (Some("amd64"), Some("linux"))
        );
        assert_eq!(config["created"], "1970-01-01T00:00:01Z");
        let diff_ids: Vec<String> = raw.iter().map(|l| digest_of(l)).collect();
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
        assert_eq!(config["history"].as_array().unwrap().len(), 3);
        // The tag is the image id's first 16 hex digits.
        let id = manifest[0]["Config"]
            .as_str()
            .unwrap()
            .trim_end_matches(".json")
            .to_string();
        let outer = members(&fs::read(&path).unwrap());
        let config_bytes = &outer
            .iter()
            .find(|m| m.name == format!("{id}.json"))
            .unwrap()
            .body;
        assert_eq!(digest_of(config_bytes), format!("sha256:{id}"));
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!([format!("attune/packs:{}", &id[..16])])
        );
    }

    #[test]
    fn oci_layout_points_at_its_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = exported(tmp.path(), ImageFormat::Oci);
        let blob = |d: &str| fs::read(dir.join("blobs/sha256").join(hex_of(d))).unwrap();
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["platform"]["architecture"], "amd64");
        let tag = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap();
        let manifest_bytes = blob(m["digest"].as_str().unwrap());
        assert_eq!(digest_of(&manifest_bytes), m["digest"].as_str().unwrap());
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        assert_eq!(digest_of(&blob(config_digest)), config_digest);
        assert_eq!(tag, &hex_of(config_digest)[..16]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for l in layers {
            let d = l["digest"].as_str().unwrap();
            assert_eq!(l["mediaType"], media::LAYER);
            assert_eq!(digest_of(&blob(d)), d);
            assert_eq!(blob(d).len() as u64, l["size"].as_u64().unwrap());
        }
    }

    #[test]
    fn refuses_an_assembler_of_another_arch() {
        let tmp = tempfile::tempdir().unwrap();
        volume(tmp.path());
        let out = tmp.path().join("img.tar");
        let err = export(tmp.path(), Arch::Arm64, ImageFormat::DockerArchive, &out).unwrap_err();
        assert!(matches!(err, Error::Invalid { count: 1, .. }), "{err}");
        assert!(!out.exists(), "nothing was written");
    }

    #[test]
    fn refuses_a_volume_that_does_not_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = volume(tmp.path());
        // Damage a published file (through the pack link, into the store).
        let f = vol.join("alpha/actions/hello.sh");
        fs::set_permissions(f.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(&f, "#!/bin/sh\necho tampered\n").unwrap();
        let out = tmp.path().join("img.tar");
        let err = export(tmp.path(), Arch::Amd64, ImageFormat::DockerArchive, &out).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(!out.exists(), "nothing was written");
    }

    #[test]
    fn a_file_that_changes_while_it_is_copied_fails_the_export() {
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
    fn a_failed_export_removes_what_it_wrote() {
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
    fn manifest_paths_that_are_not_plain_are_refused() {
        for bad in ["../x", "a/../b", "/a", "a//b", "a/.", ""] {
            assert!(!is_plain(bad), "{bad}");
        }
        assert!(is_plain("core/actions/echo.yaml"));
    }
}
