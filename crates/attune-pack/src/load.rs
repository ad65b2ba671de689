//! The loader: reads a pack directory into a [`Pack`], collecting every problem
//! with its file, line and column rather than stopping at the first.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Loaded, Pack, PackMeta};
use crate::validate;

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
    let Some((meta, meta_text)) = read_yaml::<PackMeta>(&pack_file, &mut diags) else {
        return LoadOutcome {
            pack: None,
            diagnostics: diags,
        };
    };
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

/// The YAML files directly inside `dir/<kind>/`, sorted by name, parsed as `T`;
/// their texts go into `texts`.
fn read_kind<T: DeserializeOwned>(
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
            let (spec, text) = read_yaml::<T>(&file, diags)?;
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

/// Reads one YAML file as `T`, with its text; problems become diagnostics naming
/// the file and place.
fn read_yaml<T: DeserializeOwned>(file: &Path, diags: &mut Diagnostics) -> Option<(T, String)> {
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
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                file,
                format!("cannot read as UTF-8 text: {e}"),
            ));
            return None;
        }
    };
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

    #[test]
    fn loads_a_minimal_pack() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write(&dir, "pack.yaml", PACK);
        write(
            &dir,
            "actions/hello.yaml",
            "ref: demo.hello\nlabel: Hello\nrunner_type: shell\nentry_point: hello.sh\n",
        );
        let out = load_pack(&dir);
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
        let pack = out.pack.unwrap();
        assert_eq!(pack.meta.pack_ref, "demo");
        assert_eq!(pack.actions.len(), 1);
        assert_eq!(pack.actions[0].spec.entry_point, "hello.sh");
    }

    #[test]
    fn type_error_names_file_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write(&dir, "pack.yaml", PACK);
        write(
            &dir,
            "actions/bad.yaml",
            "ref: demo.bad\nlabel: Bad\nrunner_type: cobol\nentry_point: x\n",
        );
        let out = load_pack(&dir);
        assert!(out.pack.is_none());
        let d = out.diagnostics.errors().next().unwrap();
        assert!(d.path.ends_with("actions/bad.yaml"));
        assert_eq!(d.line, Some(3), "{d}");
        assert!(d.message.contains("cobol"), "{d}");
    }

    #[test]
    fn unknown_field_is_an_error_with_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write(&dir, "pack.yaml", PACK);
        write(
            &dir,
            "actions/typo.yaml",
            "ref: demo.typo\nlabel: T\nrunner_type: shell\nentrypoint: x.sh\n",
        );
        let out = load_pack(&dir);
        let d = out.diagnostics.errors().next().unwrap();
        assert_eq!(d.line, Some(4), "{d}");
        assert!(d.message.contains("entrypoint"), "{d}");
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
