//! The packs image of an assembled volume, the one writer of it for every
//! builder (docker/build-packs-image, the flake, through `packs-assemble
//! export`). One base layer (the assembler, `/etc/passwd`, `/etc/group`,
//! `/tmp`, the mount points), then one layer per pack in name order, written
//! by [`crate::image`] (a docker archive or an OCI layout, the same bytes for
//! the same inputs). The layout is [`crate::image_layout`]'s, which
//! `check_image` asserts.
//!
//! Every mtime is `SOURCE_DATE_EPOCH` (else 1), owners are 0:0 but the mount
//! points. The volume must verify for the architecture first; then it is read
//! as its services read it (its manifest, then `VOL/<pack>/...`), and every
//! file is checked against the manifest as it is copied. Memory holds the
//! assembler and one buffer, however large the packs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attune_pack::{Arch, Diagnostics};
use attune_volume::error::Error;
use attune_volume::manifest::{Entry, MANIFEST_NAME, Manifest};
use attune_volume::scan::Kind;
use attune_volume::volume::{Volume, exists};
use serde::Serialize;

use crate::image::{self, Body, Dest, ImageFormat, ImageResult, Item, Layer, RunConfig, Spec};
use crate::image_layout::{self as layout, BASE, Body as BaseBody};

fn base_layer(assembler: &[u8]) -> Layer<'_> {
    let items = BASE
        .iter()
        .map(|e| Item {
            path: e.path.to_string(),
            mode: e.mode,
            owner: e.owner,
            body: match e.body {
                BaseBody::None => Body::Dir,
                BaseBody::Passwd | BaseBody::Group => {
                    Body::Bytes(e.body.text().unwrap_or_default().as_bytes())
                }
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
            mode: layout::PARENT_MODE,
            owner: layout::ROOT,
            body: Body::Dir,
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
            mode: e.mode_bits(),
            owner: layout::ROOT,
            body: match e.kind {
                Kind::Dir => Body::Dir,
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

fn run_config(arch: Arch, manifest: &Manifest, packs: &[&str]) -> RunConfig {
    let labels = BTreeMap::from([
        (
            layout::label_arch().to_string(),
            arch.docker_name().to_string(),
        ),
        (layout::LABEL_PACKS.to_string(), packs.join(" ")),
        (
            layout::LABEL_ROOT_HASH.to_string(),
            manifest.root_hash.clone(),
        ),
        (
            layout::label_title().0.to_string(),
            layout::label_title().1.to_string(),
        ),
    ]);
    RunConfig::stack(layout::entrypoint(arch), Some(layout::cmd()), labels)
}

/// What `export` wrote.
#[derive(Debug, Serialize)]
pub struct ExportResult {
    /// The image.
    #[serde(flatten)]
    pub image: ImageResult,
    /// The volume manifest's root hash.
    pub root_hash: Option<String>,
    /// The packs, one layer each.
    pub packs: Vec<String>,
}

/// Reads the assembler and checks that it runs in an empty container of
/// `arch` (as `inspect --arch` does); the bytes checked are the bytes exported.
fn assembler(path: &Path, arch: Arch, d: &mut Diagnostics) -> Result<Vec<u8>, Error> {
    let (bytes, executable) = attune_volume::inspect::read(path).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(format!("--assembler {m}")),
        e => e,
    })?;
    let hint = format!(
        "give the static packs-assemble built for {arch}: `scripts/build-pack-binaries --arch {arch}` writes \
         target/musl/{}-unknown-linux-musl/release/packs-assemble",
        arch.rust_name()
    );
    image::check_runs(
        path,
        &bytes,
        executable,
        arch,
        "the image's packs-assemble",
        hint,
        d,
    );
    Ok(bytes)
}

/// What to export: `packs-assemble export`'s options, whose flags usage
/// errors name.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// `--volume`: the assembled volume (for `arch`).
    pub volume: PathBuf,
    /// `--assembler`: the static packs-assemble for `arch` that the image runs.
    pub assembler: PathBuf,
    /// `--arch`: the image's architecture.
    pub arch: Arch,
    /// `--format`.
    pub format: ImageFormat,
    /// `--name`: the repository name ([`layout::DEFAULT_NAME`] by default).
    pub name: String,
    /// `--tag` [default: the first 16 hex digits of the image id].
    pub tag: Option<String>,
    /// `--out`: a file (docker-archive; `-` for stdout) or a directory (oci),
    /// which must not exist.
    pub out: PathBuf,
}

/// Writes the packs image of `opts.volume`. A volume or an assembler unfit
/// for the image is a result with `ok` false and nothing written; wrong
/// options are [`Error::Usage`].
pub fn export(opts: &ExportOptions) -> Result<ExportResult, Error> {
    let (name, tag) = (&opts.name, opts.tag.as_deref());
    let dest = Dest::checked(opts.format, &opts.out, name, tag)?;
    if !exists(&opts.volume) {
        return Err(Error::Usage(format!(
            "--volume {} does not exist",
            opts.volume.display()
        )));
    }
    let mtime = attune_volume::source_date_epoch()? as u64;
    let arch = opts.arch;
    let mut result = ExportResult {
        image: ImageResult::new(arch, opts.format, &opts.out),
        root_hash: None,
        packs: vec![],
    };
    let assembler = assembler(&opts.assembler, arch, &mut result.image.diagnostics)?;
    let vol = Volume::new(&opts.volume);
    let report = attune_volume::verify::verify(&vol, Some(arch))?;
    result.image.diagnostics.0.extend(report.diagnostics.0);
    if result.image.diagnostics.has_errors() {
        return Ok(result);
    }
    // Read as services read it: the manifest through the root's link, then
    // `VOL/<pack>/...`; it must still be the generation just verified.
    let manifest_path = vol.root.join(MANIFEST_NAME);
    let manifest = Manifest::read(&manifest_path)?;
    if report.root_hash.as_deref() != Some(manifest.root_hash.as_str()) {
        return Err(image::changed(&vol.root));
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
    let spec = Spec {
        layers: &layers,
        mtime,
        run: run_config(arch, &manifest, &packs),
        created_by: "packs-assemble export",
        name,
        tag,
        arch,
        source: &vol.root,
    };
    image::write(spec, dest, &mut result.image)?;
    result.image.ok = true;
    result.root_hash = Some(manifest.root_hash.clone());
    result.packs = packs.iter().map(|p| p.to_string()).collect();
    Ok(result)
}

/// A small volume and an exported image of it, for the tests of `export` and `check-image`.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use attune_pack::Arch;
    use attune_pack::fixtures::{ElfSpec, elf_bytes};
    use attune_volume::assemble::Request;
    use attune_volume::error::Error;
    use attune_volume::plan::Inputs;
    use attune_volume::progress::Progress;
    use attune_volume::publish;

    use super::{ExportOptions, ExportResult};
    use crate::image::ImageFormat;

    fn write(path: &Path, text: &str, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Publishes the packs of `packs` for `arch` into a new volume `vol`, as
    /// `packs-assemble assemble --no-sync` does.
    fn assemble(packs: &Path, arch: Arch, vol: &Path) {
        let req = Request {
            inputs: Inputs {
                packs: vec![packs.to_path_buf()],
                binaries: vec![],
                deps: vec![],
                arch,
                mtime: attune_volume::source_date_epoch().unwrap(),
                owner: None,
                stage: None,
                sources_only: false,
            },
            volume: vol.to_path_buf(),
            lock_timeout: Duration::from_secs(60),
            strict: false,
            publish: publish::Options {
                keep: 2,
                adopt: false,
                sync: false,
                dry_run: false,
                force: false,
            },
        };
        let done = attune_volume::assemble::assemble(&req, &Progress::new(true)).unwrap();
        assert!(done.outcome.is_some(), "{:?}", done.plan.diagnostics);
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
        assemble(&dir.join("packs"), Arch::Amd64, &vol);
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
        let r = export(dir, Arch::Amd64, format, &out).unwrap();
        assert!(r.image.ok, "{:?}", r.image.diagnostics);
        out
    }

    /// `export` of `dir/vol` with the `assembler` arch's ELF, as `format`, to `out`.
    pub fn export(
        dir: &Path,
        assembler: Arch,
        format: ImageFormat,
        out: &Path,
    ) -> Result<ExportResult, Error> {
        super::export(&ExportOptions {
            volume: dir.join("vol"),
            assembler: dir.join(format!("pa-{assembler}")),
            arch: Arch::Amd64,
            format,
            name: crate::image_layout::DEFAULT_NAME.to_string(),
            tag: None,
            out: out.to_path_buf(),
        })
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
    use crate::image::{digest_of, hex_of, media};
    use crate::tarstream::{Member, assert_listing, read_members as members};

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
        assert_listing(
            &layers[0],
            &[
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
            ],
        );
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
        for m in &layers[1] {
            let mode = match m.name.as_str() {
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
        crate::image::assert_stack_config(c);
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
        let r = export(tmp.path(), Arch::Arm64, ImageFormat::DockerArchive, &out).unwrap();
        assert!(!r.image.ok);
        assert_eq!(
            r.image.diagnostics.errors().count(),
            1,
            "{:?}",
            r.image.diagnostics
        );
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
        let r = export(tmp.path(), Arch::Amd64, ImageFormat::DockerArchive, &out).unwrap();
        assert!(!r.image.ok && r.image.diagnostics.has_errors());
        assert!(!out.exists(), "nothing was written");
    }

    #[test]
    fn manifest_paths_that_are_not_plain_are_refused() {
        for bad in ["../x", "a/../b", "/a", "a//b", "a/.", ""] {
            assert!(!is_plain(bad), "{bad}");
        }
        assert!(is_plain("core/actions/echo.yaml"));
    }
}
