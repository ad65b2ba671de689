//! The pack registry: every pack of the volume and of packs.dev, loaded with
//! `attune-pack`. A dev pack overrides the volume's pack of the same ref; a
//! broken pack is reported (file and line) and the others stay available.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attune_pack::{
    Action, Diagnostic, Loaded, Pack, Rule, Severity, find_packs, load_pack, references,
    volume_generation,
};
use serde::Serialize;
use serde_json::{Value, json};

/// Where a pack was loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The packs volume.
    Volume,
    /// packs.dev.
    Dev,
}

/// One registered pack.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The pack.
    pub pack: Pack,
    /// Where it came from.
    pub source: Source,
}

/// Everything loaded from the pack directories at one moment.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// Packs by ref.
    pub packs: BTreeMap<String, Registered>,
    /// Errors and warnings found while loading.
    pub problems: Vec<Diagnostic>,
    /// The volume generation (`..data` target) loaded.
    pub generation: Option<String>,
    /// The directories searched, volume first.
    pub dirs: Vec<PathBuf>,
    /// Each rule's integer id (stable across reloads and restarts: the
    /// store keeps them), the sensor contract's rule id.
    pub rule_ids: BTreeMap<String, i64>,
}

/// What `packs-assemble` would refuse in a dev pack's native entry points:
/// a binary that is missing, dynamic (in a container without its loader it
/// fails with a bare ENOENT), for another machine, or not executable; each
/// with the file, what is wrong and what to run. packs.dev is not assembled,
/// so this is its check, on every load and reload.
fn native_problems(pack: &Pack) -> Vec<Diagnostic> {
    let Some(arch) = attune_pack::Arch::host() else {
        return vec![];
    };
    let mut out = vec![];
    for ep in pack.entry_points() {
        if ep.runner != attune_pack::RunnerType::Native || !ep.enabled {
            continue;
        }
        let path = pack.dir.join(&ep.path);
        let problems = match attune_pack::check_native_file(&path, arch) {
            Ok(problems) => problems,
            Err(_) if ep.may_be_absent() => vec![],
            Err(_) => vec![attune_pack::NativeProblem::Missing],
        };
        for p in problems {
            out.push(
                Diagnostic::error(
                    &path,
                    format!(
                        "native entry point of {} (declared in {}) {}",
                        ep.component,
                        ep.declared_in.display(),
                        p.cause()
                    ),
                )
                .hint(p.fix(arch)),
            );
        }
    }
    out
}

impl Registry {
    /// Loads every pack of `packs_dir` then `dev_dir`.
    pub fn load(packs_dir: &Path, dev_dir: &Path) -> Registry {
        let mut r = Registry {
            generation: volume_generation(packs_dir),
            dirs: vec![packs_dir.to_path_buf(), dev_dir.to_path_buf()],
            ..Registry::default()
        };
        for (dir, source) in [(packs_dir, Source::Volume), (dev_dir, Source::Dev)] {
            let paths = match find_packs(dir) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "pack directory not readable ({e}); no packs from it");
                    continue;
                }
            };
            for path in paths {
                let outcome = load_pack(&path);
                r.problems.extend(outcome.diagnostics.0);
                let Some(pack) = outcome.pack else { continue };
                if source == Source::Dev {
                    // The volume's binaries were checked when it was assembled.
                    r.problems.extend(native_problems(&pack));
                }
                let name = pack.meta.pack_ref.clone();
                if source == Source::Dev && r.packs.contains_key(&name) {
                    tracing::warn!(pack = %name, dir = %path.display(), "the dev pack overrides the volume's pack of the same ref");
                }
                r.packs.insert(name, Registered { pack, source });
            }
        }
        r.problems
            .extend(references(r.packs.values().map(|p| &p.pack)).0);
        for reg in r.packs.values() {
            for rule in reg.pack.rules.iter().filter(|rule| {
                serde_json::to_string(&rule.spec.action_params)
                    .is_ok_and(|t| t.contains("trigger.payload"))
            }) {
                r.problems.push(
                    Diagnostic::warning(
                        &rule.file,
                        "`{{ trigger.payload.* }}` is deprecated; it still renders",
                    )
                    .field("action_params")
                    .hint("write `{{ event.payload.* }}`, as upstream Attune does"),
                );
            }
        }
        for p in &r.problems {
            match p.severity {
                Severity::Error => tracing::error!("{p}"),
                Severity::Warning => tracing::warn!("{p}"),
            }
        }
        r
    }

    /// An action by ref, with its pack.
    pub fn action(&self, action_ref: &str) -> Option<(&Registered, &Loaded<Action>)> {
        let (pack, _) = action_ref.split_once('.')?;
        let reg = self.packs.get(pack)?;
        let action = reg
            .pack
            .actions
            .iter()
            .find(|a| a.spec.action_ref == action_ref)?;
        Some((reg, action))
    }

    /// Every rule, with its pack's enabled flag applied.
    pub fn rules(&self) -> impl Iterator<Item = (&Registered, &Loaded<Rule>)> {
        self.packs
            .values()
            .flat_map(|r| r.pack.rules.iter().map(move |rule| (r, rule)))
    }

    /// Whether a rule is in force: it and its pack are enabled.
    pub fn rule_enabled(reg: &Registered, rule: &Loaded<Rule>) -> bool {
        reg.pack.meta.enabled && rule.spec.enabled
    }

    /// The rule ref that `rule_<id>` names: an integer id, or (from older
    /// sensors) the ref itself. An unknown id names no rule (an impossible
    /// ref), so its event fires nothing rather than every rule of the trigger.
    pub fn rule_of_instance(&self, id: &str) -> String {
        match id.parse::<i64>() {
            Ok(n) => self
                .rule_ids
                .iter()
                .find(|(_, v)| **v == n)
                .map_or_else(|| format!("<no rule has id {n}>"), |(k, _)| k.clone()),
            Err(_) => id.to_string(),
        }
    }

    /// Components of one kind as JSON objects, each with `pack_ref`, `source` and `file`
    /// (rules also get `id`, their integer id, as the sensor contract's rule id).
    pub fn components(&self, kind: &str) -> Vec<Value> {
        let mut out = vec![];
        for reg in self.packs.values() {
            let p = &reg.pack;
            let items: Vec<(Value, &Path, bool)> = match kind {
                "actions" => p
                    .actions
                    .iter()
                    .map(|c| (json!(c.spec), c.file.as_path(), c.spec.enabled))
                    .collect(),
                "sensors" => p
                    .sensors
                    .iter()
                    .map(|c| (json!(c.spec), c.file.as_path(), c.spec.enabled))
                    .collect(),
                "triggers" => p
                    .triggers
                    .iter()
                    .map(|c| (json!(c.spec), c.file.as_path(), true))
                    .collect(),
                "rules" => p
                    .rules
                    .iter()
                    .map(|c| (json!(c.spec), c.file.as_path(), c.spec.enabled))
                    .collect(),
                _ => vec![],
            };
            for (mut v, file, enabled) in items {
                let obj = v.as_object_mut().expect("components serialize as objects");
                obj.insert("pack_ref".into(), json!(p.meta.pack_ref));
                obj.insert("source".into(), json!(reg.source));
                obj.insert("file".into(), json!(file));
                obj.insert("enabled".into(), json!(enabled && p.meta.enabled));
                if kind == "rules" {
                    let id = obj
                        .get("ref")
                        .and_then(Value::as_str)
                        .and_then(|r| self.rule_ids.get(r))
                        .copied();
                    obj.insert("id".into(), json!(id));
                }
                out.push(v);
            }
        }
        out
    }

    /// A one-line summary per pack.
    pub fn summaries(&self) -> Vec<Value> {
        self.packs
            .values()
            .map(|r| {
                let m = &r.pack.meta;
                json!({
                    "ref": m.pack_ref, "label": m.label, "description": m.description, "version": m.version,
                    "enabled": m.enabled, "source": r.source, "dir": r.pack.dir,
                    "actions": r.pack.actions.len(), "sensors": r.pack.sensors.len(),
                    "triggers": r.pack.triggers.len(), "rules": r.pack.rules.len(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(dir: &Path, name: &str, label: &str) {
        std::fs::create_dir_all(dir.join(name).join("actions")).unwrap();
        std::fs::write(
            dir.join(name).join("pack.yaml"),
            format!("ref: {name}\nlabel: {label}\nversion: 1.0.0\n"),
        )
        .unwrap();
    }

    #[test]
    fn dev_pack_overrides_and_broken_pack_is_reported_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let (vol, dev) = (tmp.path().join("vol"), tmp.path().join("dev"));
        pack(&vol, "core", "Core");
        pack(&vol, "other", "Other");
        pack(&dev, "other", "Other (dev)");
        pack(&dev, "broken", "Broken");
        std::fs::write(dev.join("broken/pack.yaml"), "ref: broken\nlabel: [\n").unwrap();
        let r = Registry::load(&vol, &dev);
        assert_eq!(r.packs.keys().collect::<Vec<_>>(), ["core", "other"]);
        assert_eq!(r.packs["other"].source, Source::Dev);
        assert_eq!(r.packs["other"].pack.meta.label, "Other (dev)");
        let p = &r.problems[0];
        assert!(
            p.path.ends_with("broken/pack.yaml") && p.line.is_some(),
            "{p}"
        );
    }

    #[test]
    fn a_dynamic_sensor_binary_in_packs_dev_is_a_problem_naming_the_file_and_the_fix() {
        use attune_pack::fixtures::{ElfSpec, elf_bytes};
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (vol, dev) = (tmp.path().join("vol"), tmp.path().join("dev"));
        pack(&dev, "mine", "Mine");
        std::fs::create_dir_all(dev.join("mine/sensors")).unwrap();
        std::fs::write(
            dev.join("mine/sensors/s.yaml"),
            "ref: mine.s\nlabel: S\nrunner_type: native\nentry_point: s\ntrigger_types: [mine.t]\n",
        )
        .unwrap();
        let bin = dev.join("mine/sensors/s");
        let arch = attune_pack::Arch::host().unwrap();
        std::fs::write(&bin, elf_bytes(ElfSpec::dynamic(arch))).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Registry::load(&vol, &dev);
        let p = r
            .problems
            .iter()
            .find(|p| p.path == bin)
            .unwrap_or_else(|| panic!("{:?}", r.problems));
        assert_eq!(p.severity, Severity::Error);
        assert!(p.message.contains("native entry point of mine.s"), "{p}");
        assert!(p.message.contains("interpreter"), "{p}");
        let hint = p.hint.as_deref().unwrap_or_default();
        assert!(hint.contains("scripts/build-pack-binaries"), "{hint}");
        // A static one is no problem.
        std::fs::write(&bin, elf_bytes(ElfSpec::static_exe(arch))).unwrap();
        assert!(
            !Registry::load(&vol, &dev)
                .problems
                .iter()
                .any(|p| p.path == bin)
        );
    }

    #[test]
    fn deprecated_trigger_payload_templates_are_flagged() {
        let tmp = tempfile::tempdir().unwrap();
        let (vol, dev) = (tmp.path().join("vol"), tmp.path().join("dev"));
        pack(&vol, "p", "P");
        std::fs::create_dir_all(vol.join("p/rules")).unwrap();
        std::fs::write(
            vol.join("p/rules/r.yaml"),
            "ref: p.r\nlabel: R\ntrigger_ref: x.t\naction_ref: x.a\naction_params: {m: '{{ trigger.payload.n }}'}\n",
        )
        .unwrap();
        let r = Registry::load(&vol, &dev);
        assert!(
            r.problems
                .iter()
                .any(|d| d.field.as_deref() == Some("action_params")
                    && d.path.ends_with("rules/r.yaml")),
            "{:?}",
            r.problems
        );
    }
}
