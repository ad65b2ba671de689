//! Validation rules on loaded YAML: refs, versions, entry points, parameters and
//! references between components. Each rule reports the file, line and field.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{
    Action, PARAMETER_TYPES, Pack, PackMeta, Parameter, Rule, RunnerType, Sensor, Trigger,
};
use crate::summary::PackSummary;

/// Whether `s` is a valid pack ref: `^[a-z][a-z0-9_-]*$`.
pub fn is_pack_ref(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// Splits a component ref `<pack>.<name>` into its parts, if well formed.
pub fn split_ref(s: &str) -> Option<(&str, &str)> {
    let (pack, name) = s.split_once('.')?;
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    (is_pack_ref(pack) && name_ok).then_some((pack, name))
}

/// Whether `s` is a semantic version `MAJOR.MINOR.PATCH[-pre][+build]`.
pub fn is_semver(s: &str) -> bool {
    let (core, _build) = s.split_once('+').unwrap_or((s, ""));
    let (core, _pre) = core.split_once('-').unwrap_or((core, ""));
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

/// The line and column of a top-level `key:` in YAML text (1-based; column of the value).
pub fn key_place(text: &str, key: &str) -> Option<(u32, u32)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.strip_prefix(key)?;
        let after = rest.trim_start();
        let value = after.strip_prefix(':')?;
        let col = line.len() - value.trim_start().len() + 1;
        Some((i as u32 + 1, col as u32))
    })
}

/// Why an entry point path is unacceptable, if it is.
pub fn entry_point_problem(entry: &str) -> Option<&'static str> {
    let path = Path::new(entry);
    if entry.is_empty() {
        return Some("is empty");
    }
    if path.is_absolute() {
        return Some("is an absolute path; it must be relative to its directory");
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Some("leaves its directory (`..`); it must stay inside the pack");
    }
    None
}

pub(crate) fn pack_meta(
    dir: &Path,
    file: &Path,
    text: &str,
    meta: &PackMeta,
    diags: &mut Diagnostics,
) {
    let place = |key| key_place(text, key);
    if !is_pack_ref(&meta.pack_ref) {
        diags.push(
            Diagnostic::error(file, format!("`{}` is not a valid pack ref", meta.pack_ref))
                .at_opt(place("ref"))
                .field("ref")
                .hint(
                    "use lowercase letters, digits, `_` and `-`, starting with a letter, no dots",
                ),
        );
    } else if let Some(name) = dir.file_name().and_then(|n| n.to_str())
        && name != meta.pack_ref
    {
        diags.push(
            Diagnostic::error(
                file,
                format!(
                    "ref `{}` differs from the directory name `{name}`",
                    meta.pack_ref
                ),
            )
            .at_opt(place("ref"))
            .field("ref")
            .hint(format!(
                "rename the directory to `{}` or change the ref to `{name}`",
                meta.pack_ref
            )),
        );
    }
    if !is_semver(&meta.version) {
        diags.push(
            Diagnostic::error(
                file,
                format!("`{}` is not a semantic version", meta.version),
            )
            .at_opt(place("version"))
            .field("version")
            .hint("write MAJOR.MINOR.PATCH, for example 1.0.0"),
        );
    }
    if meta.label.trim().is_empty() {
        diags.push(
            Diagnostic::error(file, "is empty")
                .at_opt(place("label"))
                .field("label"),
        );
    }
}

/// What the checks of one component file found, split around the one check
/// that spans the pack's files (a ref defined twice): the loader runs that one
/// on every load, from `ref_place`, so a cached file needs no text to be checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileChecks {
    /// The form of the file's `ref`, reported before a duplicate.
    pub head: Diagnostics,
    /// Everything else, reported after a duplicate.
    pub tail: Diagnostics,
    /// Line and column of the `ref` value.
    pub ref_place: Option<(u32, u32)>,
}

/// One component's ref, checked against its pack and file name.
fn ref_form(pack: &str, kind: &str, file: &Path, text: &str, value: &str) -> FileChecks {
    let place = key_place(text, "ref");
    let mut head = Diagnostics::default();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    match split_ref(value) {
        None => head.push(
            Diagnostic::error(file, format!("`{value}` is not a valid {kind} ref"))
                .at_opt(place)
                .field("ref")
                .hint(format!("write `{pack}.{stem}`")),
        ),
        Some((p, _)) if p != pack => head.push(
            Diagnostic::error(
                file,
                format!("`{value}` belongs to pack `{p}`, but this file is in pack `{pack}`"),
            )
            .at_opt(place)
            .field("ref")
            .hint(format!("write `{pack}.{stem}`")),
        ),
        Some((_, name)) if name != stem => head.push(
            Diagnostic::warning(
                file,
                format!("ref `{value}` does not match the file name `{stem}`"),
            )
            .at_opt(place)
            .field("ref")
            .hint(format!(
                "rename the file to `{name}.yaml` so the ref is easy to find"
            )),
        ),
        Some(_) => {}
    }
    FileChecks {
        head,
        tail: Diagnostics::default(),
        ref_place: place,
    }
}

/// A component ref seen before in the same pack (`seen` holds the refs of the
/// pack's components so far, actions, sensors, triggers then rules).
pub(crate) fn duplicate(
    kind: &str,
    file: &Path,
    value: &str,
    place: Option<(u32, u32)>,
    seen: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) {
    if !seen.insert(value.to_string()) {
        diags.push(
            Diagnostic::error(
                file,
                format!("{kind} ref `{value}` is defined twice in this pack"),
            )
            .at_opt(place)
            .field("ref"),
        );
    }
}

fn parameters<'a>(
    file: &Path,
    text: &str,
    params: impl IntoIterator<Item = (&'a String, &'a Parameter)>,
    diags: &mut Diagnostics,
) {
    for (name, p) in params {
        if let Some(t) = &p.param_type
            && !PARAMETER_TYPES.contains(&t.as_str())
        {
            diags.push(
                Diagnostic::error(file, format!("parameter `{name}` has unknown type `{t}`"))
                    .at_opt(key_place(text, "parameters"))
                    .field(format!("parameters.{name}.type"))
                    .hint(format!("use one of: {}", PARAMETER_TYPES.join(", "))),
            );
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            diags.push(
                Diagnostic::error(
                    file,
                    format!("parameter name `{name}` cannot become an environment variable"),
                )
                .at_opt(key_place(text, "parameters"))
                .field(format!("parameters.{name}"))
                .hint("use letters, digits and `_` only"),
            );
        }
    }
}

fn entry_point(file: &Path, text: &str, field: &str, entry: &str, diags: &mut Diagnostics) {
    if entry.is_empty() && key_place(text, field).is_none() {
        diags.push(
            Diagnostic::error(file, "is missing")
                .field(field)
                .hint("name the file to run, relative to the component's directory"),
        );
    } else if let Some(problem) = entry_point_problem(entry) {
        diags.push(
            Diagnostic::error(file, format!("`{entry}` {problem}"))
                .at_opt(key_place(text, field))
                .field(field),
        );
    }
}

/// A runner type this project does not run is carried, with a warning.
fn runner(file: &Path, text: &str, runner: RunnerType, diags: &mut Diagnostics) {
    if runner == RunnerType::Other {
        let place = key_place(text, "runner_type");
        let value = place
            .and_then(|(line, col)| text.lines().nth(line as usize - 1)?.get(col as usize - 1..))
            .map(|v| {
                v.split('#')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\''])
            })
            .unwrap_or("?");
        diags.push(
            Diagnostic::warning(file, format!("runner type `{value}` is not one this project's worker runs; carried as it is"))
                .at_opt(place)
                .field("runner_type")
                .hint("shell, bash, sh, python, python3, node, nodejs, native, builtin, standalone, or core.<runtime>"),
        );
    }
}

fn reference(file: &Path, text: &str, field: &str, value: &str, diags: &mut Diagnostics) {
    if split_ref(value).is_none() {
        diags.push(
            Diagnostic::error(
                file,
                format!("`{value}` is not a ref of the form `<pack>.<name>`"),
            )
            .at_opt(key_place(text, field))
            .field(field),
        );
    }
}

/// The checks of one action file (`text` is its YAML) in pack `pack`.
pub(crate) fn action(pack: &str, file: &Path, text: &str, a: &Action) -> FileChecks {
    let mut c = ref_form(pack, "action", file, text, &a.action_ref);
    let diags = &mut c.tail;
    match &a.workflow_file {
        // Upstream's executor runs the workflow; the file must stay inside the pack.
        Some(wf) => entry_point(file, text, "workflow_file", wf, diags),
        None => entry_point(file, text, "entry_point", &a.entry_point, diags),
    }
    runner(file, text, a.runner_type, diags);
    parameters(file, text, &a.parameters, diags);
    if a.timeout == Some(0) {
        diags.push(
            Diagnostic::error(file, "must be at least 1 second")
                .at_opt(key_place(text, "timeout"))
                .field("timeout"),
        );
    }
    c
}

/// The checks of one sensor file.
pub(crate) fn sensor(pack: &str, file: &Path, text: &str, s: &Sensor) -> FileChecks {
    let mut c = ref_form(pack, "sensor", file, text, &s.sensor_ref);
    let diags = &mut c.tail;
    entry_point(file, text, "entry_point", &s.entry_point, diags);
    runner(file, text, s.runner_type, diags);
    parameters(file, text, &s.parameters, diags);
    if s.trigger_types.is_empty() {
        diags.push(
            Diagnostic::error(file, "is empty; a sensor emits at least one trigger type")
                .at_opt(key_place(text, "trigger_types"))
                .field("trigger_types"),
        );
    }
    for tt in &s.trigger_types {
        reference(file, text, "trigger_types", tt, diags);
    }
    c
}

/// The checks of one trigger file.
pub(crate) fn trigger(pack: &str, file: &Path, text: &str, t: &Trigger) -> FileChecks {
    ref_form(pack, "trigger", file, text, &t.trigger_ref)
}

/// The checks of one rule file (its refs already qualified with the pack's name).
pub(crate) fn rule(pack: &str, file: &Path, text: &str, r: &Rule) -> FileChecks {
    let mut c = ref_form(pack, "rule", file, text, &r.rule_ref);
    let diags = &mut c.tail;
    reference(file, text, "trigger_ref", &r.trigger_ref, diags);
    reference(file, text, "action_ref", &r.action_ref, diags);
    if r.trigger_ref == "core.intervaltimer" {
        interval_params(file, text, &r.trigger_params, diags);
    }
    c
}

/// The longest interval the timer sensor accepts (about 100 years, in seconds).
pub const MAX_INTERVAL_SECS: u64 = 100 * 366 * 86_400;

/// `core.intervaltimer` parameters the timer sensor would refuse: caught here,
/// so `check` names the rule instead of the sensor skipping it at run time.
fn interval_params(
    file: &Path,
    text: &str,
    params: &std::collections::BTreeMap<String, serde_json::Value>,
    diags: &mut Diagnostics,
) {
    let Some(interval) = params.get("interval") else {
        return;
    };
    let scale = match params
        .get("unit")
        .and_then(|u| u.as_str())
        .unwrap_or("seconds")
    {
        "seconds" | "second" | "s" => 1,
        "minutes" | "minute" | "m" => 60,
        "hours" | "hour" | "h" => 3600,
        "days" | "day" | "d" => 86_400,
        other => {
            diags.push(
                Diagnostic::error(
                    file,
                    format!("`unit` `{other}` is not seconds, minutes, hours or days"),
                )
                .at_opt(key_place(text, "unit"))
                .field("trigger_params.unit"),
            );
            return;
        }
    };
    let secs = interval
        .as_u64()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale));
    let problem = match secs {
        None if interval.as_u64().is_some_and(|n| n > 0) => Some("is too large".to_string()),
        None => Some("must be a whole number of at least 1".to_string()),
        Some(s) if s > MAX_INTERVAL_SECS => Some(format!(
            "is {s} seconds; the timer sensor accepts at most {MAX_INTERVAL_SECS} (about 100 years)"
        )),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        diags.push(
            Diagnostic::error(file, format!("`interval` {problem}"))
                .at_opt(key_place(text, "interval"))
                .field("trigger_params.interval"),
        );
    }
}

/// References across packs: every sensor's trigger types and every rule's trigger
/// and action must exist. A ref into a pack that is present but lacks the
/// component is an error; a ref into a pack that is absent is a warning (it may
/// be installed separately).
pub fn references<'a>(packs: impl IntoIterator<Item = &'a Pack> + Clone) -> Diagnostics {
    let summaries: Vec<PackSummary> = packs.into_iter().map(Pack::summary).collect();
    references_of(&summaries)
}

/// [`references`] of packs summarised ([`Pack::summary`]): the same diagnostics.
pub fn references_of<'a>(packs: impl IntoIterator<Item = &'a PackSummary> + Clone) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let pack_names: BTreeSet<&str> = packs
        .clone()
        .into_iter()
        .map(|p| p.pack_ref.as_str())
        .collect();
    let triggers: BTreeSet<&str> = packs
        .clone()
        .into_iter()
        .flat_map(|p| p.triggers.iter().map(|t| t.spec.component_ref.as_str()))
        .collect();
    let actions: BTreeSet<&str> = packs
        .clone()
        .into_iter()
        .flat_map(|p| p.actions.iter().map(|a| a.spec.component_ref.as_str()))
        .collect();
    let mut check = |file: &Path, field: &str, kind: &str, value: &str, known: &BTreeSet<&str>| {
        if known.contains(value) {
            return;
        }
        let t = fs::read_to_string(file).unwrap_or_default();
        let pack = value.split('.').next().unwrap_or_default();
        let d = if pack_names.contains(pack) {
            Diagnostic::error(
                file,
                format!("{kind} `{value}` does not exist in pack `{pack}`"),
            )
            .hint(format!(
                "check the spelling, or add {kind}s/{}.yaml to pack `{pack}`",
                value.split('.').nth(1).unwrap_or_default()
            ))
        } else {
            Diagnostic::warning(
                file,
                format!("{kind} `{value}` is in pack `{pack}`, which is not among the packs given"),
            )
            .hint(format!(
                "install pack `{pack}` too, or the {kind} will be missing at run time"
            ))
        };
        diags.push(d.at_opt(key_place(&t, field)).field(field));
    };
    for p in packs {
        for s in &p.sensors {
            for tt in &s.spec.refs {
                check(&s.file, "trigger_types", "trigger", tt, &triggers);
            }
        }
        for r in &p.rules {
            let [trigger_ref, action_ref] = r.spec.refs.as_slice() else {
                continue; // a rule's brief holds both (see `Brief::of_rule`)
            };
            check(&r.file, "trigger_ref", "trigger", trigger_ref, &triggers);
            check(&r.file, "action_ref", "action", action_ref, &actions);
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_refs() {
        for ok in ["core", "my_pack", "a1-b2"] {
            assert!(is_pack_ref(ok), "{ok}");
        }
        for bad in ["", "Core", "1pack", "a.b", "a b", "-x"] {
            assert!(!is_pack_ref(bad), "{bad}");
        }
    }

    #[test]
    fn component_refs() {
        assert_eq!(split_ref("core.echo"), Some(("core", "echo")));
        assert_eq!(
            split_ref("core.http_request"),
            Some(("core", "http_request"))
        );
        assert_eq!(split_ref("core"), None);
        assert_eq!(split_ref("core."), None);
        assert_eq!(split_ref("core.a.b"), None);
    }

    #[test]
    fn semver() {
        for ok in ["1.0.0", "0.1.10", "1.2.3-rc.1", "1.2.3+build.5"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["1.0", "1", "01.0.0", "a.b.c", "1.0.0.0", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
    }

    #[test]
    fn key_place_points_at_the_value() {
        let text = "label: x\nentry_point: ../etc/passwd\n  entry_point: nested\n";
        assert_eq!(key_place(text, "entry_point"), Some((2, 14)));
        assert_eq!(key_place(text, "missing"), None);
    }

    /// `packs-assemble check` accepted a rule whose interval panicked the sensor.
    #[test]
    fn absurd_intervals_are_refused() {
        let check = |yaml: &str| {
            let params: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_str(yaml).unwrap();
            let mut d = Diagnostics::default();
            interval_params(Path::new("r.yaml"), "", &params, &mut d);
            d.iter().map(|d| d.message.clone()).collect::<Vec<_>>()
        };
        assert!(check(r#"{"interval": 10000000000000}"#)[0].contains("at most"));
        assert!(check(r#"{"interval": 4000000000, "unit": "days"}"#)[0].contains("at most"));
        assert!(check(r#"{"interval": 0}"#)[0].contains("at least 1"));
        assert!(check(r#"{"interval": 5, "unit": "weeks"}"#)[0].contains("weeks"));
        assert!(check(r#"{"interval": 5, "unit": "minutes"}"#).is_empty());
    }

    #[test]
    fn entry_points_stay_inside() {
        assert_eq!(entry_point_problem("echo.sh"), None);
        assert_eq!(entry_point_problem("lib/run.py"), None);
        assert!(entry_point_problem("../../bin/sh").unwrap().contains(".."));
        assert!(entry_point_problem("/bin/sh").unwrap().contains("absolute"));
        assert!(entry_point_problem("").is_some());
    }
}
