//! A service image of a root filesystem directory, the writer of the stack's
//! service images (packs-init, api, sensor, worker; `packs-assemble
//! export-rootfs`) for docker/build-images, in place of `docker build`, whose every build stamps
//! another time into the config and the layers. One layer holds the
//! directory's entries, written by [`crate::image`] (a docker archive or an
//! OCI layout): the same directory gives the same bytes, on any machine.
//!
//! - Entries in path order (byte order of the whole path): directories,
//!   regular files and symbolic links (kept as links, the target as read).
//!   Any other kind (device, fifo, socket) and any setuid or setgid bit is
//!   refused: an image from a directory runs nothing with another user's
//!   rights and creates no device.
//! - Modes as on disk (a sticky `/tmp` keeps its 1777), links 0777; every
//!   mtime `SOURCE_DATE_EPOCH` (else 1); owners 0:0 but the entries given
//!   with `--owner` (the mount points, whose ownership a new named volume
//!   takes); numeric owners only. A hard-linked file is written whole at each
//!   of its paths.
//! - Every executable ELF must run in an empty container of `--arch` (static,
//!   for that machine); below a `--dynamic-ok` path (a runtime image's own
//!   libraries and programs) it may be dynamic, still for that machine. The entrypoint must be an executable file of the
//!   directory: an image that could not start is not written.
//! - Config: the stack's `User`, `WorkingDir` and `Env`
//!   ([`crate::image_layout`], docker/IMAGE-LAYOUT.md), the labels
//!   `io.attune.arch` (`--arch`) and `org.opencontainers.image.title`
//!   (`attune <last part of --name>` unless a `--label` gives it), and
//!   `created` the entries' mtime.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use attune_pack::{Arch, Diagnostic, Diagnostics};
use attune_volume::error::{Error, IoContext};
use serde::Serialize;

use crate::image::{self, Body, Dest, ImageFormat, ImageResult, Item, Layer, RunConfig, Spec};
use crate::image_layout as layout;

/// What to write: `packs-assemble export-rootfs`'s options, whose flags
/// usage errors name.
#[derive(Clone, Debug)]
pub struct RootfsOptions {
    /// `--rootfs`: the directory whose entries become the image's.
    pub rootfs: PathBuf,
    /// `--arch`: the image's architecture; every ELF in the directory must be for it.
    pub arch: Arch,
    /// `--name`: the repository name, for example attune/api.
    pub name: String,
    /// `--tag` [default: the first 16 hex digits of the image id].
    pub tag: Option<String>,
    /// `--entrypoint`: at least the program, an executable file of the directory.
    pub entrypoint: Vec<String>,
    /// `--cmd`.
    pub cmd: Option<Vec<String>>,
    /// `--label`s; `io.attune.arch` is `arch`'s.
    pub labels: Vec<(String, String)>,
    /// `--owner`s: layer paths ([`image_path`]) and their owners; every other
    /// entry is owned by 0:0.
    pub owners: Vec<(String, (u32, u32))>,
    /// `--dynamic-ok`: layer paths ([`image_path`]; the empty path is every
    /// entry) below which an executable ELF may be dynamic.
    pub dynamic_ok: Vec<String>,
    /// `--format`.
    pub format: ImageFormat,
    /// `--out`: a file (docker-archive; `-` for stdout) or a directory (oci),
    /// which must not exist.
    pub out: PathBuf,
    /// `--service`: the image is this service image of [`crate::services`],
    /// whose common entries (passwd, group, /tmp, the mount points) the layer
    /// holds with the layout's modes and owners, written when the directory
    /// lacks them ([`RootfsOptions::service`] fills in the rest).
    pub service: Option<String>,
}

impl RootfsOptions {
    /// The options of service image `service` for `arch` ([`crate::services`]):
    /// its name `attune/<service>`, entrypoint, cmd, mount points owned by
    /// uid 1000 and where dynamic ELFs are accepted. `Error::Usage` names the
    /// service images when there is no such one.
    pub fn service(
        service: &str,
        arch: Arch,
        rootfs: PathBuf,
        format: ImageFormat,
        out: PathBuf,
    ) -> Result<RootfsOptions, Error> {
        let l = crate::services::layout();
        let s = l
            .service(service)
            .map_err(|e| Error::Usage(format!("--service: {e}")))?;
        let rel = |p: &str| image_path(p).unwrap_or_default();
        Ok(RootfsOptions {
            rootfs,
            arch,
            name: format!("attune/{service}"),
            tag: None,
            entrypoint: s.entrypoint(arch),
            cmd: s.cmd(arch),
            labels: vec![],
            owners: l
                .mounts(s)
                .map(|m| (rel(m), l.common.mount_owner))
                .collect(),
            dynamic_ok: s.dynamic_ok.iter().map(|p| rel(p)).collect(),
            format,
            out,
            service: Some(service.to_string()),
        })
    }
}

/// One entry a service image's layout gives: layer path, mode, and the text
/// of a file (`None`: a directory).
type Laid = (String, u32, Option<&'static str>);

/// The entries service image `service` holds ([`crate::services`]), by
/// layer path: its mount points, the binaries' directory and /tmp (with their
/// parents), and the two text files, each with the layout's mode; owners come
/// from the options (the mount points').
fn skeleton(service: &str) -> Result<Vec<Laid>, Error> {
    let l = crate::services::layout();
    let c = &l.common;
    let s = l
        .service(service)
        .map_err(|e| Error::Usage(format!("--service: {e}")))?;
    let mut dirs: Vec<String> = vec![];
    for d in l.mounts(s).chain([c.bin_dir.as_str(), c.tmp.as_str()]) {
        let rel = image_path(d).unwrap_or_default();
        let mut at = String::new();
        for part in rel.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if !dirs.contains(&at) {
                dirs.push(at.clone());
            }
        }
    }
    let tmp = image_path(&c.tmp).unwrap_or_default();
    let mut out: Vec<Laid> = dirs
        .into_iter()
        .map(|d| {
            let mode = if d == tmp { 0o1777 } else { 0o755 };
            (d, mode, None)
        })
        .collect();
    out.push(("etc".to_string(), 0o755, None));
    out.push(("etc/passwd".to_string(), 0o644, Some(c.passwd.as_str())));
    out.push(("etc/group".to_string(), 0o644, Some(c.group.as_str())));
    Ok(out)
}

/// The layer path of the absolute image path `path` (`/opt/x` -> `opt/x`), if plain.
pub fn image_path(path: &str) -> Option<String> {
    let rel = path.strip_prefix('/')?.trim_end_matches('/');
    let plain = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    plain.then(|| rel.to_string())
}

/// One entry of the directory, as read.
struct Found {
    /// The layer path.
    rel: String,
    /// Where it is.
    path: PathBuf,
    meta: fs::Metadata,
}

/// Every entry below `root`, in path order; what cannot be an image entry
/// (a name that is not UTF-8, a device, fifo or socket) goes to `d` instead.
fn walk(root: &Path, d: &mut Diagnostics) -> Result<Vec<Found>, Error> {
    let mut found = vec![];
    let mut dirs = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = dirs.pop() {
        for entry in fs::read_dir(&dir).ctx("read", &dir)? {
            let entry = entry.ctx("read", &dir)?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                d.push(
                    Diagnostic::error(
                        &path,
                        "its name is not UTF-8, which an image entry's must be",
                    )
                    .hint("rename it"),
                );
                continue;
            };
            let meta = fs::symlink_metadata(&path).ctx("read", &path)?;
            let t = meta.file_type();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let other = [
                (t.is_block_device(), "a block device"),
                (t.is_char_device(), "a character device"),
                (t.is_fifo(), "a fifo"),
                (t.is_socket(), "a socket"),
            ];
            if let Some((_, what)) = other.iter().find(|(is, _)| *is) {
                d.push(
                    Diagnostic::error(
                        &path,
                        format!("is {what}: an image holds only directories, regular files and symbolic links"),
                    )
                    .hint("remove it from the root filesystem"),
                );
                continue;
            }
            if t.is_dir() {
                dirs.push((path.clone(), rel.clone()));
            }
            found.push(Found { rel, path, meta });
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

/// Whether `path` starts with the ELF magic.
fn is_elf_file(path: &Path) -> Result<bool, Error> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).ctx("read", path)?;
    let n = f.read(&mut magic).ctx("read", path)?;
    Ok(attune_pack::is_elf(&magic[..n]))
}

/// The layer item of `f`, owned by `owner`; what makes it unfit goes to `d`.
fn item(
    f: Found,
    owner: (u32, u32),
    arch: Arch,
    dynamic_ok: bool,
    d: &mut Diagnostics,
) -> Result<Item<'static>, Error> {
    let mode = f.meta.permissions().mode() & 0o7777;
    let t = f.meta.file_type();
    if !t.is_symlink() && mode & 0o6000 != 0 {
        d.push(
            Diagnostic::error(
                &f.path,
                format!("is setuid or setgid (mode {mode:04o}): an image from a directory runs nothing with another user's rights"),
            )
            .hint(format!("chmod ug-s {}", f.path.display())),
        );
    }
    let body = if t.is_symlink() {
        let target = fs::read_link(&f.path).ctx("read", &f.path)?;
        match target.to_str() {
            Some(t) => Body::Symlink(t.to_string()),
            None => {
                d.push(
                    Diagnostic::error(
                        &f.path,
                        "its target is not UTF-8, which an image link's must be",
                    )
                    .hint("link it to a UTF-8 path"),
                );
                Body::Symlink(String::new())
            }
        }
    } else if t.is_dir() {
        Body::Dir
    } else {
        let program = mode & 0o111 != 0 && is_elf_file(&f.path)?;
        if program && dynamic_ok {
            // The image's own libc runs it: only its machine must be the image's.
            let (bytes, _) = attune_volume::inspect::read(&f.path)?;
            match attune_pack::ElfFacts::parse(&bytes) {
                Ok(facts) if facts.arch == Some(arch) => {}
                Ok(facts) => d.push(
                    Diagnostic::error(&f.path, format!("is {}, not {arch}: it would fail with `exec format error` in an {arch} image", facts.summary()))
                        .hint(format!("put the {arch} build there, for example the {arch} .deb's file, or remove it")),
                ),
                Err(e) => d.push(Diagnostic::error(&f.path, format!("is not a readable ELF: {e}"))),
            }
        } else if program {
            let (bytes, executable) = attune_volume::inspect::read(&f.path)?;
            image::check_runs(
                &f.path,
                &bytes,
                executable,
                arch,
                &format!("a program of an {arch} image"),
                format!(
                    "put the static {arch} build there (scripts/build-pack-binaries --arch {arch}), or remove it"
                ),
                d,
            );
        }
        Body::File {
            path: f.path,
            size: f.meta.len(),
            sha256: None,
        }
    };
    Ok(Item {
        path: f.rel,
        // A link's own mode means nothing; 0777 is what every reader expects.
        mode: if t.is_symlink() { 0o777 } else { mode },
        owner,
        body,
    })
}

/// A directory entry where the service layout has one ([`skeleton`]): of
/// the layout's kind and contents, given the layout's mode.
fn lay_out(it: &mut Item, path: &Path, mode: u32, text: Option<&'static str>, d: &mut Diagnostics) {
    let fits = match (&it.body, text) {
        (Body::Dir, None) => true,
        (Body::File { size, .. }, Some(t)) => {
            *size == t.len() as u64 && fs::read(path).is_ok_and(|b| b == t.as_bytes())
        }
        _ => false,
    };
    if fits {
        it.mode = mode;
        if let Some(t) = text {
            it.body = Body::Bytes(t.as_bytes());
        }
        return;
    }
    let want = match text {
        None => "a directory".to_string(),
        Some(t) => format!("a file holding exactly {t:?}"),
    };
    d.push(
        Diagnostic::error(path, format!("is not {want}, as the service image layout has it (crates/attune-image/services.json)"))
            .hint("remove it from the directory: export-rootfs --service writes the layout's"),
    );
}

/// The labels: `io.attune.arch`, the title unless given, then `--label`s.
fn labels(args: &RootfsOptions) -> Result<BTreeMap<String, String>, Error> {
    let short = args.name.rsplit('/').next().unwrap_or(&args.name);
    let mut labels = BTreeMap::from([(
        layout::label_title().0.to_string(),
        format!("attune {short}"),
    )]);
    for (k, v) in &args.labels {
        if k == layout::label_arch() {
            return Err(Error::Usage(format!(
                "--label {k}=...: {k} is --arch's ({}); drop the --label",
                args.arch
            )));
        }
        labels.insert(k.clone(), v.clone());
    }
    labels.insert(
        layout::label_arch().to_string(),
        args.arch.docker_name().to_string(),
    );
    Ok(labels)
}

/// The owner of each `--owner` path; a path given twice is a usage error.
fn owners(args: &RootfsOptions) -> Result<BTreeMap<&str, (u32, u32)>, Error> {
    let mut owners = BTreeMap::new();
    for (rel, owner) in &args.owners {
        if owners.insert(rel.as_str(), *owner).is_some() {
            return Err(Error::Usage(format!(
                "--owner /{rel} is given twice; give it once"
            )));
        }
    }
    Ok(owners)
}

/// What `export-rootfs` wrote.
#[derive(Debug, Serialize)]
pub struct RootfsResult {
    /// The image.
    #[serde(flatten)]
    pub image: ImageResult,
    /// The directory it holds.
    pub rootfs: String,
    /// How many entries its layer holds.
    pub entries: usize,
}

/// Writes the service image of `args.rootfs`. Entries unfit for an image
/// make a result with `ok` false and nothing written; wrong options are
/// [`Error::Usage`].
pub fn export_rootfs(args: &RootfsOptions) -> Result<RootfsResult, Error> {
    let (name, tag) = (&args.name, args.tag.as_deref());
    let dest = Dest::checked(args.format, &args.out, name, tag)?;
    if !fs::metadata(&args.rootfs).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "--rootfs {} is not a directory",
            args.rootfs.display()
        )));
    }
    let labels = labels(args)?;
    let owners = owners(args)?;
    let program = args.entrypoint.first().map_or("", String::as_str);
    let entrypoint = image_path(program).ok_or_else(|| {
        Error::Usage(format!(
            "--entrypoint: `{program}` is not an absolute path without `.`, `..` or `//`; give the program's path in the image"
        ))
    })?;
    let mtime = attune_volume::source_date_epoch()? as u64;
    let arch = args.arch;
    let mut result = RootfsResult {
        image: ImageResult::new(arch, args.format, &args.out),
        rootfs: args.rootfs.display().to_string(),
        entries: 0,
    };
    let d = &mut result.image.diagnostics;
    let found = walk(&args.rootfs, d)?;
    // A service image's common entries: the layout's, whatever the directory holds.
    let skeleton = match &args.service {
        Some(service) => skeleton(service)?,
        None => vec![],
    };
    for rel in owners.keys() {
        if !found.iter().any(|f| f.rel == *rel) && !skeleton.iter().any(|(p, _, _)| p == rel) {
            return Err(Error::Usage(format!(
                "--owner /{rel}: {} has no such entry",
                args.rootfs.display()
            )));
        }
    }
    match found.iter().find(|f| f.rel == entrypoint) {
        Some(f) if f.meta.is_file() && f.meta.permissions().mode() & 0o111 != 0 => {}
        _ => d.push(
            Diagnostic::error(
                args.rootfs.join(&entrypoint),
                format!(
                    "is not an executable regular file, so the entrypoint /{entrypoint} could not start"
                ),
            )
            .hint("put the program there (a file, not a link), or give its path to --entrypoint"),
        ),
    }
    let mut items = vec![];
    for f in found {
        let owner = owners.get(f.rel.as_str()).copied().unwrap_or(layout::ROOT);
        let dynamic_ok = args
            .dynamic_ok
            .iter()
            .any(|p| p.is_empty() || f.rel == *p || f.rel.starts_with(&format!("{p}/")));
        let laid_out = skeleton.iter().find(|(p, _, _)| *p == f.rel).cloned();
        let path = f.path.clone();
        let mut it = item(f, owner, arch, dynamic_ok, d)?;
        if let Some((_, mode, text)) = laid_out {
            lay_out(&mut it, &path, mode, text, d);
        }
        items.push(it);
    }
    for (path, mode, text) in &skeleton {
        if !items.iter().any(|i| i.path == *path) {
            items.push(Item {
                path: path.clone(),
                mode: *mode,
                owner: owners.get(path.as_str()).copied().unwrap_or(layout::ROOT),
                body: text.map_or(Body::Dir, |t| Body::Bytes(t.as_bytes())),
            });
        }
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    result.entries = items.len();
    if result.image.diagnostics.has_errors() {
        return Ok(result);
    }
    let layers = [Layer {
        what: "rootfs".to_string(),
        items,
    }];
    let spec = Spec {
        layers: &layers,
        mtime,
        run: RunConfig::stack(args.entrypoint.clone(), args.cmd.clone(), labels),
        created_by: "packs-assemble export-rootfs",
        name,
        tag,
        arch,
        source: &args.rootfs,
    };
    image::write(spec, dest, &mut result.image)?;
    result.image.ok = true;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::{Path, PathBuf};

    use attune_pack::Arch;
    use attune_pack::fixtures::{ElfSpec, elf_bytes};
    use serde_json::Value;

    use super::*;
    use crate::tarstream::{Member, assert_listing, read_members};

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A service root filesystem as docker/build-images lays it out, at `dir/rootfs`.
    fn rootfs(dir: &Path) -> PathBuf {
        let r = dir.join("rootfs");
        write(&r.join("etc/passwd"), layout::passwd().as_bytes(), 0o644);
        let api = elf_bytes(ElfSpec::static_pie(Arch::Amd64));
        write(&r.join("usr/local/bin/attune-api"), &api, 0o755);
        write(&r.join("bin/busybox"), &api, 0o755);
        symlink("busybox", r.join("bin/sh")).unwrap();
        for d in ["tmp", "opt/attune/data", "opt/attune/packs.dev"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        for d in [
            "etc",
            "usr",
            "usr/local",
            "usr/local/bin",
            "bin",
            "opt",
            "opt/attune",
        ] {
            fs::set_permissions(r.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        for d in ["opt/attune/data", "opt/attune/packs.dev"] {
            fs::set_permissions(r.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        r
    }

    /// Why an export that had to fail wrote nothing.
    #[derive(Debug)]
    enum Refused {
        /// The inputs were unfit: this many errors.
        Errors(usize),
        /// The options were wrong.
        Usage(String),
    }

    /// An export of `dir/rootfs` for amd64, its options changed by `edit`
    /// (as flags would), to `dir/<out>`.
    fn export(
        dir: &Path,
        out: &str,
        edit: impl FnOnce(&mut RootfsOptions),
    ) -> Result<PathBuf, Refused> {
        let dest = dir.join(out);
        let mut opts = RootfsOptions {
            rootfs: dir.join("rootfs"),
            arch: Arch::Amd64,
            name: "attune/api".to_string(),
            tag: None,
            entrypoint: vec!["/usr/local/bin/attune-api".to_string()],
            cmd: None,
            labels: vec![],
            owners: vec![
                ("opt/attune/data".to_string(), (1000, 1000)),
                ("opt/attune/packs.dev".to_string(), (1000, 1000)),
            ],
            dynamic_ok: vec![],
            format: ImageFormat::DockerArchive,
            out: dest.clone(),
            service: None,
        };
        edit(&mut opts);
        match export_rootfs(&opts) {
            Ok(r) if r.image.ok => Ok(dest),
            Ok(r) => Err(Refused::Errors(r.image.diagnostics.errors().count())),
            Err(Error::Usage(m)) => Err(Refused::Usage(m)),
            Err(e) => panic!("{e}"),
        }
    }

    /// The archive's config and its one layer's members.
    fn open(path: &Path) -> (Value, Vec<Member>) {
        let outer = read_members(&fs::read(path).unwrap());
        let get = |n: &str| &outer.iter().find(|m| m.name == n).unwrap().body;
        let manifest: Value = serde_json::from_slice(get("manifest.json")).unwrap();
        let config = serde_json::from_slice(get(manifest[0]["Config"].as_str().unwrap())).unwrap();
        let layers = manifest[0]["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "one layer");
        (config, read_members(get(layers[0].as_str().unwrap())))
    }

    /// `--service NAME` of a directory holding only the service's programs.
    fn service(dir: &Path, name: &str, out: &str) -> Result<PathBuf, Refused> {
        let dest = dir.join(out);
        let opts = RootfsOptions::service(
            name,
            Arch::Arm64,
            dir.join("rootfs"),
            ImageFormat::DockerArchive,
            dest.clone(),
        )
        .map_err(|e| Refused::Usage(e.to_string()))?;
        match export_rootfs(&opts) {
            Ok(r) if r.image.ok => Ok(dest),
            Ok(r) => Err(Refused::Errors(r.image.diagnostics.errors().count())),
            Err(Error::Usage(m)) => Err(Refused::Usage(m)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_service_image_is_laid_out_as_services_json_has_it() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("rootfs");
        let bin = elf_bytes(ElfSpec::static_pie(Arch::Arm64));
        write(&r.join("usr/local/bin/attune-worker"), &bin, 0o755);
        write(&r.join("usr/local/bin/attune-sensor"), &bin, 0o755);
        let (config, members) = open(&service(tmp.path(), "agent", "a.tar").unwrap());
        let l = crate::services::layout();
        let c = &l.common;
        let get = |p: &str| {
            members
                .iter()
                .find(|m| m.name == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(get("etc/passwd").body, c.passwd.as_bytes());
        assert_eq!(get("etc/group").body, c.group.as_bytes());
        assert_eq!((get("tmp/").mode, get("tmp/").owner), (0o1777, (0, 0)));
        // The agent's own mount point too; another service's is not there.
        for m in c.mounts.iter().chain(&l.service("agent").unwrap().mounts) {
            let d = get(&format!("{}/", &m[1..]));
            assert_eq!((d.mode, d.owner), (0o755, (1000, 1000)), "{m}");
        }
        assert!(
            members
                .iter()
                .all(|m| m.owner == (0, 0) || m.name.starts_with("opt/attune/"))
        );
        let names: Vec<&str> = members
            .iter()
            .map(|m| m.name.trim_end_matches('/'))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "path order");
        let run = &config["config"];
        let entrypoint: Vec<String> = serde_json::from_value(run["Entrypoint"].clone()).unwrap();
        assert_eq!(
            entrypoint,
            l.service("agent").unwrap().entrypoint(Arch::Arm64)
        );
        assert_eq!(run["User"], c.user.as_str());
        assert_eq!(run["Labels"][&c.label_title], "attune agent");
        assert_eq!(run["Labels"][&c.label_arch], "arm64");
    }

    #[test]
    fn a_service_image_refuses_a_passwd_that_is_not_the_layouts() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path().join("rootfs");
        let bin = elf_bytes(ElfSpec::static_pie(Arch::Arm64));
        write(&r.join("usr/local/bin/attune-api"), &bin, 0o755);
        write(&r.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n", 0o644);
        assert!(matches!(
            service(tmp.path(), "api", "a.tar"),
            Err(Refused::Errors(1))
        ));
        assert!(!tmp.path().join("a.tar").exists());
        match service(tmp.path(), "apii", "b.tar") {
            Err(Refused::Usage(m)) => assert!(
                m.contains("`apii` is not a service image") && m.contains("api,"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_writes_are_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        rootfs(tmp.path());
        let a = export(tmp.path(), "a.tar", |_| {}).unwrap();
        // Times on disk do not reach the image.
        let f = tmp.path().join("rootfs/etc/passwd");
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        let b = export(tmp.path(), "b.tar", |_| {}).unwrap();
        assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap());
    }

    #[test]
    fn entries_in_path_order_with_modes_kept_and_owners_root_but_the_given_ones() {
        let tmp = tempfile::tempdir().unwrap();
        rootfs(tmp.path());
        let (_, members) = open(&export(tmp.path(), "a.tar", |_| {}).unwrap());
        assert_listing(
            &members,
            &[
                ("bin/", 0o755, 0),
                ("bin/busybox", 0o755, 0),
                ("bin/sh", 0o777, 0),
                ("etc/", 0o755, 0),
                ("etc/passwd", 0o644, 0),
                ("opt/", 0o755, 0),
                ("opt/attune/", 0o755, 0),
                ("opt/attune/data/", 0o755, 1000),
                ("opt/attune/packs.dev/", 0o755, 1000),
                ("tmp/", 0o1777, 0),
                ("usr/", 0o755, 0),
                ("usr/local/", 0o755, 0),
                ("usr/local/bin/", 0o755, 0),
                ("usr/local/bin/attune-api", 0o755, 0),
            ],
        );
        for m in &members {
            assert_eq!((m.mtime, m.names.as_str()), (1, ""), "{}", m.name);
        }
        let passwd = members.iter().find(|m| m.name == "etc/passwd").unwrap();
        assert_eq!(passwd.body, layout::passwd().as_bytes());
    }

    #[test]
    fn symlinks_are_kept_as_links() {
        let tmp = tempfile::tempdir().unwrap();
        let r = rootfs(tmp.path());
        // A link to a directory is not followed either.
        symlink("/opt/attune", r.join("bin/home")).unwrap();
        let (_, members) = open(&export(tmp.path(), "a.tar", |_| {}).unwrap());
        let links: Vec<_> = members
            .iter()
            .filter(|m| m.kind == tar::EntryType::Symlink)
            .map(|m| (m.name.as_str(), m.link.as_deref(), m.body.len()))
            .collect();
        assert_eq!(
            links,
            [
                ("bin/home", Some("/opt/attune"), 0),
                ("bin/sh", Some("busybox"), 0)
            ]
        );
    }

    #[test]
    fn config_names_the_entrypoint_user_labels_and_a_fixed_time() {
        let tmp = tempfile::tempdir().unwrap();
        rootfs(tmp.path());
        let path = export(tmp.path(), "a.tar", |o| {
            o.cmd = Some(vec!["--flag".to_string(), "x".to_string()]);
            o.labels.push(("a.b".to_string(), "c d".to_string()));
            o.tag = Some("t1".to_string());
        })
        .unwrap();
        let (config, _) = open(&path);
        let c = &config["config"];
        crate::image::assert_stack_config(c);
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/usr/local/bin/attune-api"])
        );
        assert_eq!(c["Cmd"], serde_json::json!(["--flag", "x"]));
        assert_eq!(
            c["Labels"],
            serde_json::json!({
                "a.b": "c d",
                "io.attune.arch": "amd64",
                "org.opencontainers.image.title": "attune api"
            })
        );
        assert_eq!(
            (&config["architecture"], &config["os"], &config["created"]),
            (
                &serde_json::json!("amd64"),
                &serde_json::json!("linux"),
                &serde_json::json!("1970-01-01T00:00:01Z")
            )
        );
        assert_eq!(
            config["history"][0]["created_by"],
            "packs-assemble export-rootfs: rootfs"
        );
        let outer = read_members(&fs::read(&path).unwrap());
        let manifest: Value = serde_json::from_slice(
            &outer
                .iter()
                .find(|m| m.name == "manifest.json")
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!(["attune/api:t1"])
        );
        // Without --cmd the config has none.
        let (config, _) = open(&export(tmp.path(), "b.tar", |_| {}).unwrap());
        assert!(config["config"].get("Cmd").is_none(), "{config}");
    }

    /// Why an export that must fail did, with nothing written.
    fn refused(dir: &Path, edit: impl FnOnce(&mut RootfsOptions)) -> Refused {
        let err = export(dir, "x.tar", edit).unwrap_err();
        assert!(!dir.join("x.tar").exists(), "nothing was written");
        err
    }

    #[test]
    fn refuses_setuid_setgid_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let r = rootfs(tmp.path());
        for (what, mode) in [("bin/busybox", 0o4755), ("opt/attune/data", 0o2755)] {
            fs::set_permissions(r.join(what), fs::Permissions::from_mode(mode)).unwrap();
            let err = refused(tmp.path(), |_| {});
            assert!(matches!(err, Refused::Errors(1)), "{what}: {err:?}");
            let plain = mode & 0o777;
            fs::set_permissions(r.join(what), fs::Permissions::from_mode(plain)).unwrap();
        }
        let fifo = r.join("tmp/fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(r.join("tmp/socket")).unwrap();
        let err = refused(tmp.path(), |_| {});
        assert!(matches!(err, Refused::Errors(2)), "{err:?}");
        // A device, where this test may make one (as root).
        fs::remove_file(&fifo).unwrap();
        fs::remove_file(r.join("tmp/socket")).unwrap();
        let null = rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        );
        if null.is_ok() {
            let err = refused(tmp.path(), |_| {});
            assert!(matches!(err, Refused::Errors(1)), "{err:?}");
        }
    }

    #[test]
    fn refuses_an_elf_of_another_arch_or_dynamic_and_a_missing_entrypoint() {
        let tmp = tempfile::tempdir().unwrap();
        let r = rootfs(tmp.path());
        write(
            &r.join("bin/busybox"),
            &elf_bytes(ElfSpec::static_pie(Arch::Arm64)),
            0o755,
        );
        write(
            &r.join("bin/dyn"),
            &elf_bytes(ElfSpec::dynamic(Arch::Amd64)),
            0o755,
        );
        // Not executable: never run, so not checked.
        write(
            &r.join("bin/data.elf"),
            &elf_bytes(ElfSpec::dynamic(Arch::Arm64)),
            0o644,
        );
        let err = refused(tmp.path(), |_| {});
        assert!(matches!(err, Refused::Errors(2)), "{err:?}");
        fs::remove_file(r.join("bin/dyn")).unwrap();
        fs::remove_file(r.join("bin/busybox")).unwrap();
        fs::remove_file(r.join("usr/local/bin/attune-api")).unwrap();
        // The entrypoint a link: refused, the program must be there.
        symlink("/bin/busybox", r.join("usr/local/bin/attune-api")).unwrap();
        let err = refused(tmp.path(), |_| {});
        assert!(matches!(err, Refused::Errors(1)), "{err:?}");
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        rootfs(tmp.path());
        type Edit = Box<dyn Fn(&mut RootfsOptions)>;
        let owner = |path: &str, owner| -> Edit {
            let path = path.to_string();
            Box::new(move |o| o.owners.push((path.clone(), owner)))
        };
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "--owner /opt/nope=1000:1000",
                owner("opt/nope", (1000, 1000)),
                "--owner /opt/nope",
            ),
            (
                "--owner /opt/attune/data=0:0",
                owner("opt/attune/data", (0, 0)),
                "given twice",
            ),
            (
                "--label io.attune.arch=arm64",
                Box::new(|o| {
                    o.labels
                        .push(("io.attune.arch".to_string(), "arm64".to_string()))
                }),
                "is --arch's",
            ),
            (
                "--tag=-bad",
                Box::new(|o| o.tag = Some("-bad".to_string())),
                "--tag",
            ),
        ];
        for (flags, edit, says) in cases {
            let err = refused(tmp.path(), edit);
            assert!(
                matches!(&err, Refused::Usage(m) if m.contains(says)),
                "{flags}: {err:?}"
            );
        }
    }
}
