//! The layout of the stack's service images, read from `services.json` (the
//! one source: `nix/images.nix` reads the same file, `tests/nix/run` asserts
//! the flake's images against it, docker/IMAGE-LAYOUT.md documents it and a
//! test below compares the document): what every image holds (passwd and
//! group, /tmp, the mount points owned by uid 1000), its config (User,
//! WorkingDir, Env, labels) and each service's entrypoint, cmd, extra mount
//! points and where dynamic ELFs are accepted. `export-rootfs --service NAME`
//! writes it; the packs image shares the common part ([`crate::image_layout`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use attune_pack::Arch;
use serde::Deserialize;

/// The file, compiled in.
pub const SOURCE: &str = include_str!("../services.json");

/// What every service image has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// `User`.
    pub user: String,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `Env`.
    pub env: Vec<String>,
    /// Where the service binaries are (the entrypoints' directory).
    pub bin_dir: String,
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
    /// The world-writable, sticky temporary directory.
    pub tmp: String,
    /// Mount points, owned by [`Common::mount_owner`] (a new named volume
    /// takes the ownership of the directory it covers).
    pub mounts: Vec<String>,
    /// `[uid, gid]` of the mount points; every other entry is 0:0.
    pub mount_owner: (u32, u32),
    /// The label that names the architecture.
    pub label_arch: String,
    /// The label that names the image (`attune <name>`).
    pub label_title: String,
}

/// One service image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    /// Mount points beyond the common ones.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Absolute paths below which executable ELFs may be dynamic (of the
    /// image's architecture): a runtime's own programs and libraries.
    #[serde(default)]
    pub dynamic_ok: Vec<String>,
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// What the file is (a sentence for its readers).
    pub about: String,
    /// What every image has.
    pub common: Common,
    /// Each service image, by name (`attune/<name>`).
    pub services: BTreeMap<String, Service>,
}

/// `{arch}` in the file is the image's architecture as Docker names it.
fn subst(args: &[String], arch: Arch) -> Vec<String> {
    args.iter()
        .map(|a| a.replace("{arch}", arch.docker_name()))
        .collect()
}

impl Service {
    /// `Entrypoint` for `arch`.
    pub fn entrypoint(&self, arch: Arch) -> Vec<String> {
        subst(&self.entrypoint, arch)
    }

    /// `Cmd` for `arch`, if it has one.
    pub fn cmd(&self, arch: Arch) -> Option<Vec<String>> {
        self.cmd.as_deref().map(|c| subst(c, arch))
    }
}

impl Layout {
    /// The service called `name`, or the names there are.
    pub fn service(&self, name: &str) -> Result<&Service, String> {
        self.services.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.services.keys().map(String::as_str).collect();
            format!(
                "`{name}` is not a service image; the service images are {}",
                names.join(", ")
            )
        })
    }

    /// Every mount point of `service`: the common ones, then its own.
    pub fn mounts<'a>(&'a self, service: &'a Service) -> impl Iterator<Item = &'a str> {
        self.common
            .mounts
            .iter()
            .chain(&service.mounts)
            .map(String::as_str)
    }
}

/// The layout, parsed once.
pub fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        serde_json::from_str(SOURCE)
            .unwrap_or_else(|e| panic!("crates/attune-image/services.json: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_parses_and_every_path_is_absolute() {
        let l = layout();
        assert!(l.services.contains_key("api") && l.services.contains_key("packs-init"));
        for (name, s) in &l.services {
            let paths = s
                .entrypoint
                .first()
                .map(String::as_str)
                .into_iter()
                .chain(l.mounts(s))
                .chain(s.dynamic_ok.iter().map(String::as_str));
            for p in paths {
                assert!(p.starts_with('/'), "{name}: {p}");
            }
        }
        assert_eq!(l.common.mount_owner, (1000, 1000));
    }

    #[test]
    fn arch_is_substituted() {
        let init = layout().service("packs-init").unwrap();
        let cmd = init.cmd(Arch::Arm64).unwrap().join(" ");
        assert!(cmd.contains("--arch arm64") && !cmd.contains('{'), "{cmd}");
        let err = layout().service("nope").unwrap_err();
        assert!(err.contains("api") && err.contains("nope"), "{err}");
    }

    /// docker/IMAGE-LAYOUT.md's table of the service images says what the file says.
    #[test]
    fn image_layout_md_documents_the_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docker/IMAGE-LAYOUT.md");
        let doc = std::fs::read_to_string(path).expect("docker/IMAGE-LAYOUT.md");
        let doc = doc.as_str();
        let l = layout();
        for (name, s) in &l.services {
            let row = doc
                .lines()
                .find(|r| r.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docker/IMAGE-LAYOUT.md has no row for `{name}`"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let code = |v: &[String]| format!("`{}`", v.join(" "));
            assert_eq!(cells[2], code(&s.entrypoint), "{name}: entrypoint");
            assert_eq!(
                cells[3],
                s.cmd.as_deref().map_or("".to_string(), code),
                "{name}: cmd"
            );
            let extra: Vec<String> = s.mounts.iter().map(|m| format!("`{m}`")).collect();
            assert_eq!(cells[4], extra.join(", "), "{name}: mount points");
            let dynamic: Vec<String> = s.dynamic_ok.iter().map(|m| format!("`{m}`")).collect();
            assert_eq!(cells[5], dynamic.join(", "), "{name}: dynamic ELFs");
        }
        let c = &l.common;
        for want in [
            format!("`User` is `{}`", c.user),
            format!("`WorkingDir` is `{}`", c.working_dir),
            format!("`Env` is `{}`", c.env.join(" ")),
            format!("`{}=<arch>`", c.label_arch),
            format!("`{}` (`attune <name>`)", c.label_title),
        ] {
            assert!(
                doc.contains(&want),
                "docker/IMAGE-LAYOUT.md does not say {want}"
            );
        }
        for m in &c.mounts {
            assert!(
                doc.contains(&format!("`{m}`")),
                "docker/IMAGE-LAYOUT.md does not name {m}"
            );
        }
    }
}
