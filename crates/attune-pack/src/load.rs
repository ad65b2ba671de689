//! The loader: reads a pack directory into a [`Pack`], collecting every problem
//! with its file, line and column rather than stopping at the first.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Known, Loaded, Pack, PackMeta};
use crate::validate;

/// Directories upstream packs hold beyond the four component kinds: carried
/// into the volume as they are, each YAML file checked for form and a `ref`.
pub const CARRIED_KINDS: &[&str] = &["workflows", "runtimes", "permission_sets"];

/// The file that makes a directory a pack.
pub const PACK_FILE: &str = "pack.yaml";

/// YAML files larger than this are refused (a pack definition is a few KiB).
pub const MAX_YAML_BYTES: u64 = 1 << 20;

/// The result of loading one pack: the pack when it has no errors, and every diagnostic.
#[derive(Debug)]
pub struct LoadOutcome {
    /// The pack, present when no diagnostic is an error.
    pub pack: Option<Pack>,
    /// Errors and warnings, in file order.
    pub diagnostics: Diagnostics,
}

/// Loads and validates the pack in `dir` (the directory holding `pack.yaml`).
///
/// Component files are `actions/*.yaml`, `sensors/*.yaml`, `triggers/*.yaml` and
/// `rules/*.yaml` (`.yml` too). Entry points are checked for form here; whether
/// they exist is for the caller, who knows which tree supplies them (see
/// [`Pack::entry_points`]).
pub fn load_pack(dir: &Path) -> LoadOutcome {
    let mut diags = Diagnostics::default();
    let pack_file = dir.join(PACK_FILE);
    let Some((mut meta, meta_text)) = read_yaml::<PackMeta>(&pack_file, false, &mut diags) else {
        return LoadOutcome {
            pack: None,
            diagnostics: diags,
        };
    };
    // Upstream's registry reads `name` where `label` is missing.
    if meta.label.trim().is_empty() {
        meta.label = meta.name.clone().unwrap_or_else(|| meta.pack_ref.clone());
    }
    validate::pack_meta(dir, &pack_file, &meta_text, &meta, &mut diags);

    let mut pack = Pack {
        dir: dir.to_path_buf(),
        meta,
        actions: vec![],
        sensors: vec![],
        triggers: vec![],
        rules: vec![],
    };
    // Each file is read once; its text stays here for the line numbers of diagnostics.
    let mut texts = HashMap::new();
    pack.actions = read_kind(dir, "actions", &mut texts, &mut diags);
    pack.sensors = read_kind(dir, "sensors", &mut texts, &mut diags);
    pack.triggers = read_kind(dir, "triggers", &mut texts, &mut diags);
    pack.rules = read_kind(dir, "rules", &mut texts, &mut diags);
    normalize(&mut pack);
    for kind in CARRIED_KINDS {
        check_carried(dir, kind, &mut diags);
    }
    validate::components(&pack, &texts, &mut diags);

    LoadOutcome {
        pack: (!diags.has_errors()).then_some(pack),
        diagnostics: diags,
    }
}

/// The pack directories directly inside `dir`: subdirectories (or links to
/// them) holding a `pack.yaml`, hidden names skipped, sorted by name.
pub fn find_packs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.join(PACK_FILE).is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// `Name Of Thing` from the last part of a ref (`core.http_request`), as
/// upstream labels a component that has none.
fn label_from_ref(r: &str) -> String {
    let name = r.rsplit('.').next().unwrap_or(r);
    name.split(['_', '-'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `x` becomes `<pack>.x`; a ref with a dot is kept.
fn qualify(pack: &str, r: &str) -> String {
    if r.contains('.') || r.is_empty() {
        r.to_string()
    } else {
        format!("{pack}.{r}")
    }
}

/// Fills in what upstream derives: labels from refs, full refs in rules, a
/// sensor's single `trigger_type` merged into `trigger_types`.
fn normalize(pack: &mut Pack) {
    let name = pack.meta.pack_ref.clone();
    let label = |l: &mut String, r: &str| {
        if l.trim().is_empty() {
            *l = label_from_ref(r);
        }
    };
    for a in &mut pack.actions {
        label(&mut a.spec.label, &a.spec.action_ref);
    }
    for s in &mut pack.sensors {
        label(&mut s.spec.label, &s.spec.sensor_ref);
        if let Some(t) = s.spec.trigger_type.take()
            && !s.spec.trigger_types.contains(&t)
        {
            s.spec.trigger_types.push(t);
        }
    }
    for t in &mut pack.triggers {
        label(&mut t.spec.label, &t.spec.trigger_ref);
    }
    for r in &mut pack.rules {
        r.spec.rule_ref = qualify(&name, &r.spec.rule_ref);
        r.spec.trigger_ref = qualify(&name, &r.spec.trigger_ref);
        r.spec.action_ref = qualify(&name, &r.spec.action_ref);
        label(&mut r.spec.label, &r.spec.rule_ref);
    }
}

/// `dir/<kind>/*.yaml` of a carried kind: each must parse, and should have a `ref`.
fn check_carried(dir: &Path, kind: &str, diags: &mut Diagnostics) {
    let Ok(entries) = fs::read_dir(dir.join(kind)) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p))
        .collect();
    files.sort();
    for file in files {
        let Some(text) = read_text(&file, diags) else {
            continue;
        };
        match serde_saphyr::from_str::<Value>(&text) {
            Err(e) => diags.push(yaml_diagnostic(&file, &e)),
            Ok(v)
                if v.get("ref")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty) =>
            {
                diags.push(
                    Diagnostic::warning(
                        &file,
                        format!(
                            "has no `ref`; upstream Attune skips this {} file",
                            kind.trim_end_matches('s')
                        ),
                    )
                    .hint("add `ref: <pack>.<name>`"),
                )
            }
            Ok(_) => {}
        }
    }
}

/// The YAML files directly inside `dir/<kind>/`, sorted by name, parsed as `T`;
/// their texts go into `texts`. A file without `ref` is skipped with a
/// warning, as upstream skips it.
fn read_kind<T: DeserializeOwned + Known>(
    dir: &Path,
    kind: &str,
    texts: &mut HashMap<PathBuf, String>,
    diags: &mut Diagnostics,
) -> Vec<Loaded<T>> {
    let kind_dir = dir.join(kind);
    let entries = match fs::read_dir(&kind_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
        Err(e) => {
            diags.push(Diagnostic::error(
                &kind_dir,
                format!("cannot read directory: {e}"),
            ));
            return vec![];
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|file| {
            let (spec, text) = read_yaml::<T>(&file, true, diags)?;
            texts.insert(file.clone(), text);
            Some(Loaded { file, spec })
        })
        .collect()
}

/// Whether `path` names a YAML file by its extension.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Reads a pack YAML file as text: a regular file, within the size limit, UTF-8.
fn read_text(file: &Path, diags: &mut Diagnostics) -> Option<String> {
    let meta = match fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            diags.push(
                Diagnostic::error(file, "file not found")
                    .hint("every pack directory needs a pack.yaml with ref, label and version"),
            );
            return None;
        }
        Err(e) => {
            diags.push(Diagnostic::error(file, format!("cannot read: {e}")));
            return None;
        }
    };
    if !meta.file_type().is_file() {
        diags.push(
            Diagnostic::error(file, "not a regular file")
                .hint("pack definitions must be regular files, not symlinks or devices"),
        );
        return None;
    }
    if meta.len() > MAX_YAML_BYTES {
        diags.push(Diagnostic::error(
            file,
            format!(
                "file is {} bytes; pack YAML files are limited to {MAX_YAML_BYTES}",
                meta.len()
            ),
        ));
        return None;
    }
    match fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) => {
            diags.push(Diagnostic::error(
                file,
                format!("cannot read as UTF-8 text: {e}"),
            ));
            None
        }
    }
}

/// Reads one YAML file as `T`, with its text; problems become diagnostics naming
/// the file and place. Keys `T` does not know are warnings; a component
/// (`component` true) without `ref` is skipped with a warning.
fn read_yaml<T: DeserializeOwned + Known>(
    file: &Path,
    component: bool,
    diags: &mut Diagnostics,
) -> Option<(T, String)> {
    let text = read_text(file, diags)?;
    let raw = match serde_saphyr::from_str::<Value>(&text) {
        Ok(v) => v,
        Err(e) => {
            diags.push(yaml_diagnostic(file, &e));
            return None;
        }
    };
    if component
        && raw
            .get("ref")
            .and_then(Value::as_str)
            .is_none_or(|r| r.trim().is_empty())
    {
        diags.push(
            Diagnostic::warning(file, "has no `ref`; skipped, as upstream Attune skips it")
                .field("ref")
                .hint("add `ref: <pack>.<name>`"),
        );
        return None;
    }
    if let Value::Object(map) = &raw {
        for key in map.keys().filter(|k| !T::KEYS.contains(&k.as_str())) {
            diags.push(
                Diagnostic::warning(file, format!("unknown key `{key}`; ignored"))
                    .at_opt(validate::key_place(&text, key))
                    .field(key.clone())
                    .hint(format!("known keys: {}", T::KEYS.join(", "))),
            );
        }
    }
    match serde_saphyr::from_str::<T>(&text) {
        Ok(v) => Some((v, text)),
        Err(e) => {
            diags.push(yaml_diagnostic(file, &e));
            None
        }
    }
}

/// A parse error as a diagnostic: the message without the location suffix, and the location.
fn yaml_diagnostic(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let plain = e.without_snippet().to_string();
    let message = match plain.rfind(" at line ") {
        Some(i) => plain[..i].to_string(),
        None => plain,
    };
    let place = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line() as u32, l.column() as u32));
    Diagnostic::error(file, message).at_opt(place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    const PACK: &str = "ref: demo\nlabel: Demo\nversion: 1.0.0\n";

    /// Loads pack `demo` holding only `rel` with `text`.
    fn load_one(rel: &str, text: &str) -> LoadOutcome {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write(&dir, "pack.yaml", PACK);
        write(&dir, rel, text);
        load_pack(&dir)
    }

    #[test]
    fn loads_a_minimal_pack() {
        let out = load_one(
            "actions/hello.yaml",
            "ref: demo.hello\nlabel: Hello\nrunner_type: shell\nentry_point: hello.sh\n",
        );
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
        let pack = out.pack.unwrap();
        assert_eq!(pack.meta.pack_ref, "demo");
        assert_eq!(pack.actions.len(), 1);
        assert_eq!(pack.actions[0].spec.entry_point, "hello.sh");
    }

    #[test]
    fn type_error_names_file_line_and_column() {
        let out = load_one(
            "actions/bad.yaml",
            "ref: demo.bad\nlabel: Bad\nrunner_type: shell\nentry_point: x\ntimeout: soon\n",
        );
        assert!(out.pack.is_none());
        let d = out.diagnostics.errors().next().unwrap();
        assert!(d.path.ends_with("actions/bad.yaml"));
        assert_eq!(d.line, Some(5), "{d}");
        assert!(d.message.contains("u64"), "{d}");
    }

    /// A runtime this project does not run is carried with a warning naming it.
    #[test]
    fn an_unknown_runner_type_is_a_warning_with_its_line() {
        let out = load_one(
            "actions/bad.yaml",
            "ref: demo.bad\nlabel: Bad\nrunner_type: cobol\nentry_point: x\n",
        );
        assert!(out.pack.is_some(), "{:?}", out.diagnostics);
        let d = out.diagnostics.iter().next().unwrap();
        assert!(!d.is_error());
        assert_eq!(d.line, Some(3), "{d}");
        assert!(d.message.contains("cobol"), "{d}");
    }

    /// Upstream ignores keys it does not know; a typo is still shown, with its line.
    #[test]
    fn unknown_field_is_a_warning_with_its_line() {
        let out = load_one(
            "actions/typo.yaml",
            "ref: demo.typo\nlabel: T\nrunner_type: shell\nentry_point: x.sh\nentrypoint: x.sh\n",
        );
        assert!(out.pack.is_some(), "{:?}", out.diagnostics);
        let d = out.diagnostics.iter().next().unwrap();
        assert!(!d.is_error());
        assert_eq!(d.line, Some(5), "{d}");
        assert!(d.message.contains("unknown key `entrypoint`"), "{d}");
    }

    /// Upstream's own packs: each refusal that kept them out is now accepted.
    #[test]
    fn upstream_fields_are_modelled() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write(
            &dir,
            "pack.yaml",
            "ref: demo\nname: Demo\nversion: 1.0.0\nsystem: true\nmeta: {category: x}\ntesting: {enabled: true}\ndependencies: [core]\nis_standard: false\n",
        );
        write(
            &dir,
            "actions/full.yaml",
            "ref: demo.full\nrunner_type: python3\nentry_point: full.py\ntags: [a]\noutput_format: jsonl\noutput_schema: {type: object}\nparameters:\n  type: object\n  properties:\n    items: {type: array, items: {type: string}, minItems: 1}\n    n: {type: integer, minimum: 1, maximum: 9}\n  required: [items]\n",
        );
        write(
            &dir,
            "actions/flat.yaml",
            "ref: demo.flat\nlabel: Flat\nrunner_type: node\nentry_point: flat.js\noutput_format: yaml\nparameters:\n  n: {type: integer, minimum: 1, position: 0}\n",
        );
        write(
            &dir,
            "actions/noref.yaml",
            "name: noref\nrunner_type: python\nentry_point: x.py\n",
        );
        write(
            &dir,
            "sensors/s.yaml",
            "ref: demo.s\nrunner_type: standalone\nentry_point: s\ntrigger_type: demo.t\npoll_interval: 1\nconfig: {a: 1}\nexamples: []\nmeta: {}\ntags: [x]\n",
        );
        write(
            &dir,
            "triggers/t.yaml",
            "ref: demo.t\nenabled: true\ntags: [x]\nexamples: []\noutput: {type: object}\n",
        );
        write(
            &dir,
            "rules/r.yaml",
            "ref: r\npack_ref: demo\ntrigger_ref: t\naction_ref: flat\npermission_set_refs: [demo.p]\n",
        );
        write(&dir, "workflows/w.yaml", "ref: demo.w\ntasks: []\n");
        write(&dir, "runtimes/rt.yaml", "ref: demo.rt\nname: RT\n");
        write(&dir, "permission_sets/p.yaml", "ref: demo.p\ngrants: []\n");
        let out = load_pack(&dir);
        let shown: Vec<String> = out.diagnostics.iter().map(|d| d.to_string()).collect();
        let pack = out.pack.unwrap_or_else(|| panic!("{shown:#?}"));
        assert_eq!(
            shown.len(),
            1,
            "only the ref-less action is reported: {shown:#?}"
        );
        assert!(shown[0].contains("noref.yaml") && shown[0].contains("skipped"));
        assert_eq!(pack.meta.label, "Demo");
        // Sorted by file name: flat.yaml, full.yaml.
        let full = &pack.actions[1].spec;
        assert_eq!(full.label, "Full");
        assert_eq!(full.runner_type, crate::RunnerType::Python);
        assert!(full.parameters["items"].required && !full.parameters["n"].required);
        assert_eq!(full.parameters["n"].schema["maximum"], 9);
        assert_eq!(pack.actions[0].spec.runner_type, crate::RunnerType::Node);
        assert_eq!(pack.sensors[0].spec.trigger_types, ["demo.t"]);
        assert_eq!(pack.sensors[0].spec.runner_type, crate::RunnerType::Native);
        let rule = &pack.rules[0].spec;
        assert_eq!(
            (
                rule.rule_ref.as_str(),
                rule.trigger_ref.as_str(),
                rule.action_ref.as_str()
            ),
            ("demo.r", "demo.t", "demo.flat")
        );
    }

    #[test]
    fn missing_pack_yaml_says_what_is_needed() {
        let tmp = tempfile::tempdir().unwrap();
        let out = load_pack(tmp.path());
        let d = out.diagnostics.errors().next().unwrap();
        assert!(d.path.ends_with("pack.yaml"));
        assert!(d.hint.as_deref().unwrap().contains("ref"));
    }
}
