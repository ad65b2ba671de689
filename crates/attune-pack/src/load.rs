//! The loader: reads a pack directory into a [`Pack`], collecting every problem
//! with its file, line and column rather than stopping at the first.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use serde_json::Value;

use crate::cache::{ComponentFacts, Facts, Key, LoadCache, MetaFacts, sha256};
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Action, Known, Loaded, Pack, PackMeta, Rule, Sensor, Trigger};
use crate::summary::{Brief, PackSummary};
use crate::validate::{self, FileChecks};

/// Directories upstream packs hold beyond the four component kinds: carried
/// into the volume as they are, each YAML file checked for form and a `ref`.
pub const CARRIED_KINDS: &[&str] = &["workflows", "runtimes", "permission_sets"];

/// The file that makes a directory a pack.
pub const PACK_FILE: &str = "pack.yaml";

/// YAML files larger than this are refused (a pack definition is a few KiB).
pub const MAX_YAML_BYTES: u64 = 1 << 20;

/// The result of loading one pack: the pack when it has no errors, and every diagnostic.
#[derive(Debug, PartialEq)]
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
    load_pack_cached(dir, &|_| None, &mut LoadCache::new())
}

/// [`load_pack`], taking what an earlier load found for each YAML file whose
/// contents have not changed from `cache` instead of reading and parsing it again.
///
/// `known(path)` is the SHA-256 of the contents of the regular file at `path`
/// (`dir` joined with the file's path in the pack, as the loader would read
/// it) as the caller knows them, or `None`, and then the file is read and not
/// cached. A file with a known hash that the cache does not hold is read,
/// parsed, checked and added under the hash of the bytes actually read. The
/// checks that span files (a ref defined twice) run on every load, from the
/// cached facts; [`references`](crate::references) across packs is the caller's,
/// as after [`load_pack`].
///
/// The outcome is exactly [`load_pack`]'s (the same pack, the same diagnostics
/// in the same order, naming the same paths), cached or not, provided `known`
/// tells the truth.
pub fn load_pack_cached(
    dir: &Path,
    known: &dyn Fn(&Path) -> Option<[u8; 32]>,
    cache: &mut LoadCache,
) -> LoadOutcome {
    let (parts, diagnostics) = load_parts::<Full>(dir, known, cache);
    LoadOutcome {
        pack: parts.map(|(meta, [actions, sensors, triggers, rules])| Pack {
            dir: dir.to_path_buf(),
            meta,
            actions: actions.into_iter().map(Kinded::into_action).collect(),
            sensors: sensors.into_iter().map(Kinded::into_sensor).collect(),
            triggers: triggers.into_iter().map(Kinded::into_trigger).collect(),
            rules: rules.into_iter().map(Kinded::into_rule).collect(),
        }),
        diagnostics,
    }
}

/// What [`load_pack_summary_cached`] gives: [`LoadOutcome`], the pack summarised.
#[derive(Debug, PartialEq)]
pub struct SummaryOutcome {
    /// The pack summarised ([`Pack::summary`]), present when no diagnostic is an error.
    pub pack: Option<PackSummary>,
    /// Errors and warnings, in file order.
    pub diagnostics: Diagnostics,
}

/// [`load_pack_cached`], the pack summarised ([`Pack::summary`]): the cache
/// keeps each file's summary instead of its model (its own entries, beside
/// those of [`load_pack_cached`]), so that a warm load reads back a few dozen
/// bytes a component. The outcome is exactly [`load_pack`]'s, its pack
/// summarised, cached or not, provided `known` tells the truth.
pub fn load_pack_summary_cached(
    dir: &Path,
    known: &dyn Fn(&Path) -> Option<[u8; 32]>,
    cache: &mut LoadCache,
) -> SummaryOutcome {
    let (parts, diagnostics) = load_parts::<Lean>(dir, known, cache);
    let loaded = |all: Vec<Kinded<Brief>>| -> Vec<Loaded<Brief>> {
        all.into_iter()
            .map(|k| Loaded {
                file: k.file,
                spec: k.spec,
            })
            .collect()
    };
    SummaryOutcome {
        pack: parts.map(
            |(pack_ref, [actions, sensors, triggers, rules])| PackSummary {
                dir: dir.to_path_buf(),
                pack_ref,
                actions: loaded(actions),
                sensors: loaded(sensors),
                triggers: loaded(triggers),
                rules: loaded(rules),
            },
        ),
        diagnostics,
    }
}

/// A component of either shape, with its file (the kind is its list's).
struct Kinded<X> {
    file: PathBuf,
    spec: X,
}

impl Kinded<Any> {
    fn into_action(self) -> Loaded<Action> {
        let Any::Action(spec) = self.spec else {
            unreachable!("an action's list")
        };
        Loaded {
            file: self.file,
            spec,
        }
    }
    fn into_sensor(self) -> Loaded<Sensor> {
        let Any::Sensor(spec) = self.spec else {
            unreachable!("a sensor's list")
        };
        Loaded {
            file: self.file,
            spec,
        }
    }
    fn into_trigger(self) -> Loaded<Trigger> {
        let Any::Trigger(spec) = self.spec else {
            unreachable!("a trigger's list")
        };
        Loaded {
            file: self.file,
            spec,
        }
    }
    fn into_rule(self) -> Loaded<Rule> {
        let Any::Rule(spec) = self.spec else {
            unreachable!("a rule's list")
        };
        Loaded {
            file: self.file,
            spec,
        }
    }
}

/// A whole component of any kind.
#[derive(Clone)]
enum Any {
    Action(Action),
    Sensor(Sensor),
    Trigger(Trigger),
    Rule(Rule),
}

/// What a load keeps of `pack.yaml` and of each component, and how it is cached.
trait Shape {
    /// Of `pack.yaml`.
    type Meta: Clone;
    /// Of a component.
    type Comp: Clone;
    /// Whether its cache entries are summaries.
    const BRIEF: bool;
    fn meta(meta: PackMeta) -> Self::Meta;
    fn pack_ref(meta: &Self::Meta) -> &str;
    fn wrap_meta(facts: MetaFacts<Self::Meta>) -> Facts;
    fn unwrap_meta(facts: Facts) -> Option<MetaFacts<Self::Meta>>;
    fn comp<T: Component>(spec: T) -> Self::Comp;
    fn comp_ref(comp: &Self::Comp) -> &str;
    fn wrap<T: Component>(facts: ComponentFacts<Self::Comp>) -> Facts;
    fn unwrap<T: Component>(facts: Facts) -> Option<ComponentFacts<Self::Comp>>;
}

/// The whole model.
struct Full;

impl Shape for Full {
    type Meta = PackMeta;
    type Comp = Any;
    const BRIEF: bool = false;
    fn meta(meta: PackMeta) -> PackMeta {
        meta
    }
    fn pack_ref(meta: &PackMeta) -> &str {
        &meta.pack_ref
    }
    fn wrap_meta(facts: MetaFacts) -> Facts {
        Facts::Meta(facts)
    }
    fn unwrap_meta(facts: Facts) -> Option<MetaFacts> {
        match facts {
            Facts::Meta(m) => Some(m),
            _ => None,
        }
    }
    fn comp<T: Component>(spec: T) -> Any {
        spec.any()
    }
    fn comp_ref(comp: &Any) -> &str {
        match comp {
            Any::Action(a) => a.component_ref(),
            Any::Sensor(s) => s.component_ref(),
            Any::Trigger(t) => t.component_ref(),
            Any::Rule(r) => r.component_ref(),
        }
    }
    fn wrap<T: Component>(facts: ComponentFacts<Any>) -> Facts {
        T::wrap(ComponentFacts {
            read: facts.read,
            found: facts
                .found
                .map(|(c, checks)| (T::from_any(c).expect("a component of its kind"), checks)),
        })
    }
    fn unwrap<T: Component>(facts: Facts) -> Option<ComponentFacts<Any>> {
        let f = T::unwrap(facts)?;
        Some(ComponentFacts {
            read: f.read,
            found: f.found.map(|(c, checks)| (c.any(), checks)),
        })
    }
}

/// The summary ([`Brief`]).
struct Lean;

impl Shape for Lean {
    type Meta = String;
    type Comp = Brief;
    const BRIEF: bool = true;
    fn meta(meta: PackMeta) -> String {
        meta.pack_ref
    }
    fn pack_ref(meta: &String) -> &str {
        meta
    }
    fn wrap_meta(facts: MetaFacts<String>) -> Facts {
        Facts::MetaRef(facts)
    }
    fn unwrap_meta(facts: Facts) -> Option<MetaFacts<String>> {
        match facts {
            Facts::MetaRef(m) => Some(m),
            _ => None,
        }
    }
    fn comp<T: Component>(spec: T) -> Brief {
        spec.brief()
    }
    fn comp_ref(comp: &Brief) -> &str {
        &comp.component_ref
    }
    fn wrap<T: Component>(facts: ComponentFacts<Brief>) -> Facts {
        Facts::Brief(facts)
    }
    fn unwrap<T: Component>(facts: Facts) -> Option<ComponentFacts<Brief>> {
        match facts {
            Facts::Brief(b) => Some(b),
            _ => None,
        }
    }
}

type Parts<S> = (<S as Shape>::Meta, [Vec<Kinded<<S as Shape>::Comp>>; 4]);

/// The load itself, keeping what `S` keeps: the parts (meta; actions,
/// sensors, triggers, rules) when no diagnostic is an error, and the diagnostics.
fn load_parts<S: Shape>(
    dir: &Path,
    known: &dyn Fn(&Path) -> Option<[u8; 32]>,
    cache: &mut LoadCache,
) -> (Option<Parts<S>>, Diagnostics) {
    let mut loader = Loader {
        dir,
        known,
        cache,
        brief: S::BRIEF,
    };
    let mut diags = Diagnostics::default();
    let pack_file = dir.join(PACK_FILE);
    let scope = dir.file_name().and_then(|n| n.to_str());
    let meta = loader.facts(
        &pack_file,
        Some(PACK_FILE.to_string()),
        scope,
        S::unwrap_meta,
        S::wrap_meta,
        |mut read, text| {
            let found = text.and_then(|text| {
                let mut meta = parse_yaml::<PackMeta>(&pack_file, &text, None, &mut read)?;
                // Upstream's registry reads `name` where `label` is missing.
                if meta.label.trim().is_empty() {
                    meta.label = meta.name.clone().unwrap_or_else(|| meta.pack_ref.clone());
                }
                let mut checks = Diagnostics::default();
                validate::pack_meta(dir, &pack_file, &text, &meta, &mut checks);
                Some((S::meta(meta), checks))
            });
            MetaFacts { read, found }
        },
    );
    diags.extend(meta.read);
    let Some((meta, meta_checks)) = meta.found else {
        return (None, diags);
    };
    diags.extend(meta_checks);

    // Each file's own checks, reported after every file is read, in file order.
    let pack_ref = S::pack_ref(&meta).to_string();
    let mut checks = vec![];
    let actions = loader.kind::<Action, S>(&pack_ref, &mut checks, &mut diags);
    let sensors = loader.kind::<Sensor, S>(&pack_ref, &mut checks, &mut diags);
    let triggers = loader.kind::<Trigger, S>(&pack_ref, &mut checks, &mut diags);
    let rules = loader.kind::<Rule, S>(&pack_ref, &mut checks, &mut diags);
    for kind in CARRIED_KINDS {
        loader.carried(kind, &mut diags);
    }
    let mut seen = BTreeSet::new();
    for c in checks {
        diags.extend(c.checks.head);
        validate::duplicate(
            c.kind,
            &c.file,
            &c.component_ref,
            c.checks.ref_place,
            &mut seen,
            &mut diags,
        );
        diags.extend(c.checks.tail);
    }
    let parts = (!diags.has_errors()).then_some((meta, [actions, sensors, triggers, rules]));
    (parts, diags)
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

/// A label derived from the ref where there is none, as upstream labels it.
fn label(l: &mut String, r: &str) {
    if l.trim().is_empty() {
        *l = label_from_ref(r);
    }
}

/// A kind of component file: where it lives, how upstream completes it, what
/// is checked in it alone, and how its facts are cached.
trait Component: DeserializeOwned + Serialize + Known + Clone + Sized {
    /// The directory of such files in a pack.
    const DIR: &'static str;
    /// The kind's name in messages.
    const KIND: &'static str;
    /// Fills in what upstream derives: labels from refs, full refs in rules, a
    /// sensor's single `trigger_type` merged into `trigger_types`.
    fn normalize(&mut self, pack: &str);
    /// The checks on this file alone (`text` is its YAML).
    fn checks(&self, pack: &str, file: &Path, text: &str) -> FileChecks;
    /// Its ref.
    fn component_ref(&self) -> &str;
    /// Its facts as a cache entry.
    fn wrap(facts: ComponentFacts<Self>) -> Facts;
    /// Its facts from a cache entry, if the entry is of this kind.
    fn unwrap(facts: Facts) -> Option<ComponentFacts<Self>>;
    /// Its summary.
    fn brief(&self) -> Brief;
    /// It, as a component of any kind.
    fn any(self) -> Any;
    /// A component of any kind, if it is of this one.
    fn from_any(any: Any) -> Option<Self>;
}

impl Component for Action {
    const DIR: &'static str = "actions";
    const KIND: &'static str = "action";
    fn normalize(&mut self, _pack: &str) {
        label(&mut self.label, &self.action_ref);
    }
    fn checks(&self, pack: &str, file: &Path, text: &str) -> FileChecks {
        validate::action(pack, file, text, self)
    }
    fn component_ref(&self) -> &str {
        &self.action_ref
    }
    fn wrap(facts: ComponentFacts<Self>) -> Facts {
        Facts::Action(facts)
    }
    fn unwrap(facts: Facts) -> Option<ComponentFacts<Self>> {
        match facts {
            Facts::Action(f) => Some(f),
            _ => None,
        }
    }
    fn brief(&self) -> Brief {
        Brief::of_action(self)
    }
    fn any(self) -> Any {
        Any::Action(self)
    }
    fn from_any(any: Any) -> Option<Self> {
        match any {
            Any::Action(c) => Some(c),
            _ => None,
        }
    }
}

impl Component for Sensor {
    const DIR: &'static str = "sensors";
    const KIND: &'static str = "sensor";
    fn normalize(&mut self, _pack: &str) {
        label(&mut self.label, &self.sensor_ref);
        if let Some(t) = self.trigger_type.take()
            && !self.trigger_types.contains(&t)
        {
            self.trigger_types.push(t);
        }
    }
    fn checks(&self, pack: &str, file: &Path, text: &str) -> FileChecks {
        validate::sensor(pack, file, text, self)
    }
    fn component_ref(&self) -> &str {
        &self.sensor_ref
    }
    fn wrap(facts: ComponentFacts<Self>) -> Facts {
        Facts::Sensor(facts)
    }
    fn unwrap(facts: Facts) -> Option<ComponentFacts<Self>> {
        match facts {
            Facts::Sensor(f) => Some(f),
            _ => None,
        }
    }
    fn brief(&self) -> Brief {
        Brief::of_sensor(self)
    }
    fn any(self) -> Any {
        Any::Sensor(self)
    }
    fn from_any(any: Any) -> Option<Self> {
        match any {
            Any::Sensor(c) => Some(c),
            _ => None,
        }
    }
}

impl Component for Trigger {
    const DIR: &'static str = "triggers";
    const KIND: &'static str = "trigger";
    fn normalize(&mut self, _pack: &str) {
        label(&mut self.label, &self.trigger_ref);
    }
    fn checks(&self, pack: &str, file: &Path, text: &str) -> FileChecks {
        validate::trigger(pack, file, text, self)
    }
    fn component_ref(&self) -> &str {
        &self.trigger_ref
    }
    fn wrap(facts: ComponentFacts<Self>) -> Facts {
        Facts::Trigger(facts)
    }
    fn unwrap(facts: Facts) -> Option<ComponentFacts<Self>> {
        match facts {
            Facts::Trigger(f) => Some(f),
            _ => None,
        }
    }
    fn brief(&self) -> Brief {
        Brief::of_trigger(self)
    }
    fn any(self) -> Any {
        Any::Trigger(self)
    }
    fn from_any(any: Any) -> Option<Self> {
        match any {
            Any::Trigger(c) => Some(c),
            _ => None,
        }
    }
}

impl Component for Rule {
    const DIR: &'static str = "rules";
    const KIND: &'static str = "rule";
    fn normalize(&mut self, pack: &str) {
        self.rule_ref = qualify(pack, &self.rule_ref);
        self.trigger_ref = qualify(pack, &self.trigger_ref);
        self.action_ref = qualify(pack, &self.action_ref);
        label(&mut self.label, &self.rule_ref);
    }
    fn checks(&self, pack: &str, file: &Path, text: &str) -> FileChecks {
        validate::rule(pack, file, text, self)
    }
    fn component_ref(&self) -> &str {
        &self.rule_ref
    }
    fn wrap(facts: ComponentFacts<Self>) -> Facts {
        Facts::Rule(facts)
    }
    fn unwrap(facts: Facts) -> Option<ComponentFacts<Self>> {
        match facts {
            Facts::Rule(f) => Some(f),
            _ => None,
        }
    }
    fn brief(&self) -> Brief {
        Brief::of_rule(self)
    }
    fn any(self) -> Any {
        Any::Rule(self)
    }
    fn from_any(any: Any) -> Option<Self> {
        match any {
            Any::Rule(c) => Some(c),
            _ => None,
        }
    }
}

/// One component file's own checks, waiting for the check that spans the pack.
struct Pending {
    kind: &'static str,
    file: PathBuf,
    component_ref: String,
    checks: FileChecks,
}

/// One load of one pack, with the caller's hashes and cache.
struct Loader<'a> {
    dir: &'a Path,
    known: &'a dyn Fn(&Path) -> Option<[u8; 32]>,
    cache: &'a mut LoadCache,
    /// Its cache entries are summaries.
    brief: bool,
}

impl Loader<'_> {
    /// What loading `file` (`rel` inside the pack, `None` when that is not
    /// UTF-8 and so not cached) finds, its checks depending on `scope` too:
    /// from the cache when its hash is known and cached (`unwrap` gives the
    /// facts of the right kind), else from `make(problems reading it, its text)`,
    /// then cached (`wrap` makes the entry) when its hash is known.
    fn facts<X: Clone>(
        &mut self,
        file: &Path,
        rel: Option<String>,
        scope: Option<&str>,
        unwrap: fn(Facts) -> Option<X>,
        wrap: fn(X) -> Facts,
        make: impl FnOnce(Diagnostics, Option<String>) -> X,
    ) -> X {
        let key = rel.and_then(|rel| {
            Some(Key {
                rel,
                scope: scope.map(str::to_string),
                sha256: (self.known)(file)?,
                brief: self.brief,
            })
        });
        if let Some(key) = &key
            && let Some(found) = self.cache.get(key, file).and_then(unwrap)
        {
            return found;
        }
        self.cache.count_parsed();
        let mut read = Diagnostics::default();
        let (text, sha256) = read_text(file, key.is_some(), &mut read);
        let facts = make(read, text);
        if let (Some(key), Some(sha256)) = (key, sha256) {
            // Under the hash of what was read, which may differ from the one
            // the caller knew if the file changed since: never a wrong entry.
            self.cache
                .insert(Key { sha256, ..key }, file, wrap(facts.clone()));
        }
        facts
    }

    /// The YAML files directly inside `dir/<T::DIR>/`, sorted by name, parsed
    /// as `T` and completed; their own checks go to `checks`. A file without
    /// `ref` is completed from its `name` or skipped ([`missing_ref`]).
    fn kind<T: Component, S: Shape>(
        &mut self,
        pack: &str,
        checks: &mut Vec<Pending>,
        diags: &mut Diagnostics,
    ) -> Vec<Kinded<S::Comp>> {
        let Some(files) = yaml_files(self.dir, T::DIR, diags, true) else {
            return vec![];
        };
        let mut loaded = vec![];
        for file in files {
            let rel = rel_path(T::DIR, &file);
            let facts = self.facts(
                &file,
                rel,
                Some(pack),
                S::unwrap::<T>,
                S::wrap::<T>,
                |mut read, text| {
                    let found = text.and_then(|text| {
                        let mut spec =
                            parse_yaml::<T>(&file, &text, Some((pack, T::KIND)), &mut read)?;
                        spec.normalize(pack);
                        let checks = spec.checks(pack, &file, &text);
                        Some((S::comp(spec), checks))
                    });
                    ComponentFacts { read, found }
                },
            );
            diags.extend(facts.read);
            if let Some((spec, c)) = facts.found {
                checks.push(Pending {
                    kind: T::KIND,
                    file: file.clone(),
                    component_ref: S::comp_ref(&spec).to_string(),
                    checks: c,
                });
                loaded.push(Kinded { file, spec });
            }
        }
        loaded
    }

    /// `dir/<kind>/*.yaml` of a carried kind: each must parse, and should have a `ref`.
    fn carried(&mut self, kind: &str, diags: &mut Diagnostics) {
        let Some(files) = yaml_files(self.dir, kind, diags, false) else {
            return;
        };
        for file in files {
            let rel = rel_path(kind, &file);
            let found = self.facts(
                &file,
                rel,
                None,
                |f| match f {
                    Facts::Carried(d) => Some(d),
                    _ => None,
                },
                Facts::Carried,
                |mut read, text| {
                    if let Some(text) = text {
                        check_carried(&file, kind, &text, &mut read);
                    }
                    read
                },
            );
            diags.extend(found);
        }
    }
}

/// The YAML files directly inside `dir/<kind>/`, sorted; `None` when there is
/// no such directory, or (reported when `report`) it cannot be read.
fn yaml_files(
    dir: &Path,
    kind: &str,
    diags: &mut Diagnostics,
    report: bool,
) -> Option<Vec<PathBuf>> {
    let kind_dir = dir.join(kind);
    let entries = match fs::read_dir(&kind_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || !report => return None,
        Err(e) => {
            diags.push(Diagnostic::error(
                &kind_dir,
                format!("cannot read directory: {e}"),
            ));
            return None;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p))
        .collect();
    files.sort();
    Some(files)
}

/// `<kind>/<file name>`, the cache's name of a file, when the name is UTF-8.
fn rel_path(kind: &str, file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    Some(format!("{kind}/{name}"))
}

/// A carried file's text: it must parse, and should have a `ref`.
fn check_carried(file: &Path, kind: &str, text: &str, diags: &mut Diagnostics) {
    match serde_saphyr::from_str::<Value>(text) {
        Err(e) => diags.push(yaml_diagnostic(file, text, &e)),
        Ok(v)
            if v.get("ref")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            let message = if kind == "workflows" {
                format!(
                    "has no `ref`; {PYTHON_LOADER} and {RUST_LOADER} both load a workflow only through the action whose `workflow_file` names it, and give it that action's ref"
                )
            } else {
                format!(
                    "has no `ref`; skipped, as {PYTHON_LOADER} and {RUST_LOADER} both skip a {} without one",
                    kind.trim_end_matches('s').replace('_', " ")
                )
            };
            diags.push(Diagnostic::warning(file, message).hint("add `ref: <pack>.<name>`"))
        }
        Ok(_) => {}
    }
}

/// Whether `path` names a YAML file by its extension.
pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Reads a pack YAML file as text: a regular file, within the size limit,
/// UTF-8. With `hash`, also the SHA-256 of the bytes read, when the outcome
/// depends on them alone (text, or not UTF-8) and so may be cached.
fn read_text(
    file: &Path,
    hash: bool,
    diags: &mut Diagnostics,
) -> (Option<String>, Option<[u8; 32]>) {
    let meta = match fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            diags.push(
                Diagnostic::error(file, "file not found")
                    .hint("every pack directory needs a pack.yaml with ref, label and version"),
            );
            return (None, None);
        }
        Err(e) => {
            diags.push(Diagnostic::error(file, format!("cannot read: {e}")));
            return (None, None);
        }
    };
    if !meta.file_type().is_file() {
        diags.push(
            Diagnostic::error(file, "not a regular file")
                .hint("pack definitions must be regular files, not symlinks or devices"),
        );
        return (None, None);
    }
    if meta.len() > MAX_YAML_BYTES {
        diags.push(Diagnostic::error(
            file,
            format!(
                "file is {} bytes; pack YAML files are limited to {MAX_YAML_BYTES}",
                meta.len()
            ),
        ));
        return (None, None);
    }
    let not_utf8 = |diags: &mut Diagnostics, e: std::io::Error| {
        diags.push(Diagnostic::error(
            file,
            format!("cannot read as UTF-8 text: {e}"),
        ))
    };
    if !hash {
        return match fs::read_to_string(file) {
            Ok(t) => (Some(t), None),
            Err(e) => {
                not_utf8(diags, e);
                (None, None)
            }
        };
    }
    match fs::read(file) {
        Ok(bytes) => {
            let digest = sha256(&bytes);
            match String::from_utf8(bytes) {
                Ok(t) => (Some(t), Some(digest)),
                Err(_) => {
                    // The words `read_to_string` uses, so both paths say the same.
                    let e = std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "stream did not contain valid UTF-8",
                    );
                    not_utf8(diags, e);
                    (None, Some(digest))
                }
            }
        }
        Err(e) => {
            not_utf8(diags, e);
            (None, None)
        }
    }
}

/// Parses one YAML file's `text` as `T`; problems become diagnostics naming
/// the file and place. Keys `T` does not know are warnings. A component
/// (`component` is `Some((pack, kind))`) without `ref` is completed or skipped
/// as upstream's loaders do ([`missing_ref`]).
fn parse_yaml<T: DeserializeOwned + Known>(
    file: &Path,
    text: &str,
    component: Option<(&str, &str)>,
    diags: &mut Diagnostics,
) -> Option<T> {
    let mut raw = match serde_saphyr::from_str::<Value>(text) {
        Ok(v) => v,
        Err(e) => {
            diags.push(yaml_diagnostic(file, text, &e));
            return None;
        }
    };
    let mut from_name = false;
    if let Some((pack, kind)) = component
        && raw
            .get("ref")
            .and_then(Value::as_str)
            .is_none_or(|r| r.trim().is_empty())
    {
        let derived = missing_ref(file, pack, kind, &raw, diags)?;
        if let Value::Object(map) = &mut raw {
            map.insert("ref".into(), Value::String(derived));
        }
        from_name = true;
    }
    if let Value::Object(map) = &raw {
        for key in map
            .keys()
            .filter(|k| !T::KEYS.contains(&k.as_str()) && (!from_name || *k != "name"))
        {
            // Upstream's loaders read the keys they know and ignore the rest:
            // a warning (an error with --strict), at the key itself.
            let hint = match nearest(key, T::KEYS) {
                Some(k) => format!("did you mean `{k}`? (known keys: {})", T::KEYS.join(", ")),
                None => format!("known keys: {}", T::KEYS.join(", ")),
            };
            diags.push(
                Diagnostic::warning(file, format!("unknown key `{key}`; ignored"))
                    .at_opt(validate::key_place(text, key).map(|(line, _)| (line, 1)))
                    .field(key.clone())
                    .hint(hint),
            );
        }
    }
    let parsed = if from_name {
        // The text has no `ref` to read: from the completed value (without
        // line numbers in an error, which names the field).
        serde_json::from_value::<T>(raw).map_err(|e| Diagnostic::error(file, e.to_string()))
    } else {
        serde_saphyr::from_str::<T>(text).map_err(|e| yaml_diagnostic(file, text, &e))
    };
    match parsed {
        Ok(v) => Some(v),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// The loader that docker-compose's `init-packs` runs upstream.
const PYTHON_LOADER: &str =
    "upstream's Python loader (scripts/load_core_pack.py, run by docker-compose's init-packs)";
/// The loader behind upstream's pack registration through the API.
const RUST_LOADER: &str = "upstream's Rust loader (crates/common/src/pack_registry/loader.rs, packs registered through the API)";

/// A component of `kind` in `pack` whose `raw` YAML has no `ref` (absent,
/// empty or not a string): the ref upstream's Python loader gives it, with a
/// warning saying what each upstream loader does, or `None` (skipped, with a
/// warning saying why).
///
/// Upstream's Rust loader skips every component without a string `ref`. Its
/// Python loader builds `<pack>.<name>` from `name` for actions, sensors and
/// triggers (where `ref` is absent or empty), and fails the whole pack when
/// `name` is missing too; it skips a rule without `ref`. We register what
/// the Python loader registers, and skip the rest.
fn missing_ref(
    file: &Path,
    pack: &str,
    kind: &str,
    raw: &Value,
    diags: &mut Diagnostics,
) -> Option<String> {
    let warning = |message: String| Diagnostic::warning(file, message).field("ref");
    if kind == "rule" {
        diags.push(
            warning(format!(
                "has no `ref`; skipped, as {PYTHON_LOADER} and {RUST_LOADER} both skip a rule without one"
            ))
            .hint("add `ref: <pack>.<name>`"),
        );
        return None;
    }
    let unset = raw
        .get("ref")
        .is_none_or(|r| r.is_null() || r.as_str() == Some(""));
    let name = raw
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty());
    match (unset, name) {
        (true, Some(name)) => {
            let derived = format!("{pack}.{name}");
            diags.push(
                warning(format!(
                    "has no `ref`; registered as `{derived}` from its `name`, as {PYTHON_LOADER} registers it; {RUST_LOADER} skips this {kind}"
                ))
                .hint(format!("add `ref: {derived}` so that both upstream loaders register it")),
            );
            Some(derived)
        }
        (true, None) => {
            diags.push(
                warning(format!(
                    "has no `ref` and no `name`; skipped, as {RUST_LOADER} skips it; {PYTHON_LOADER} fails the whole pack on it (KeyError 'name')"
                ))
                .hint("add `ref: <pack>.<name>`"),
            );
            None
        }
        (false, _) => {
            diags.push(
                warning(format!(
                    "`ref` is not a string; skipped, as {RUST_LOADER} skips it; {PYTHON_LOADER} fails the whole pack on it"
                ))
                .hint("write `ref: <pack>.<name>`"),
            );
            None
        }
    }
}

/// The known key nearest to `key` (a typo of it: at most a third of its
/// letters changed, added, dropped or swapped), if any.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, an adjacent swap counting one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// A parse error as a diagnostic: the message without the location suffix,
/// the location, and a hint for the usual causes.
fn yaml_diagnostic(file: &Path, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let plain = e.without_snippet().to_string();
    let message = match plain.rfind(" at line ") {
        Some(i) => plain[..i].to_string(),
        None => plain,
    };
    let place = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line() as u32, l.column() as u32));
    let line = place.and_then(|(l, _)| text.lines().nth(l as usize - 1));
    let tabs = line.is_some_and(|l| l.trim_end().contains('\t'))
        || text.lines().any(|l| l.starts_with('\t'));
    let hint = if tabs {
        "YAML indents with spaces only: replace the tabs with spaces".to_string()
    } else if message.contains("mapping values are not allowed") {
        "a value that holds `: ` must be quoted (description: \"a: b\"); or this line is indented under a key that already has a value".to_string()
    } else if message.contains("did not find expected")
        || message.contains("block")
        || message.contains("indent")
    {
        "check the indentation: the keys of one mapping start in the same column, and list items under their key".to_string()
    } else if message.contains("unclosed")
        || message.contains("end of")
        || message.contains("quoted")
    {
        "close every quote and bracket the line opens".to_string()
    } else {
        "YAML: indent with spaces, quote a value that holds `: ` or ` #`, close every quote and bracket".to_string()
    };
    Diagnostic::error(file, message).at_opt(place).hint(hint)
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

    /// The warning said "skipped, as upstream Attune skips it", half true:
    /// upstream's Python loader builds `<pack>.<name>` and registers the
    /// action (test_pack's actions have `name` and no `ref`); its Rust
    /// loader skips it. We register it as the Python loader does, and say
    /// what each does.
    #[test]
    fn an_action_without_ref_is_registered_from_its_name_as_upstreams_python_loader_does() {
        let out = load_one(
            "actions/echo.yaml",
            "name: echo\nrunner_type: shell\nentry_point: echo.sh\n",
        );
        let pack = out.pack.expect("loads");
        assert_eq!(pack.actions.len(), 1);
        assert_eq!(pack.actions[0].spec.action_ref, "demo.echo");
        assert_eq!(pack.actions[0].spec.label, "Echo");
        let shown: Vec<String> = out.diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(shown.len(), 1, "{shown:#?}");
        for part in [
            "has no `ref`; registered as `demo.echo` from its `name`",
            "scripts/load_core_pack.py",
            "Rust loader",
            "skips this action",
        ] {
            assert!(shown[0].contains(part), "no `{part}` in {}", shown[0]);
        }
    }

    fn messages(out: &LoadOutcome) -> String {
        let all: Vec<String> = out.diagnostics.iter().map(|d| d.to_string()).collect();
        all.join("\n")
    }

    #[test]
    fn a_component_without_ref_or_name_or_a_rule_without_ref_is_skipped_saying_what_each_loader_does()
     {
        let out = load_one("triggers/t.yaml", "label: T\n");
        assert_eq!(out.pack.as_ref().unwrap().triggers.len(), 0);
        let shown = messages(&out);
        assert!(
            shown.contains("has no `ref` and no `name`; skipped")
                && shown.contains("fails the whole pack on it (KeyError 'name')"),
            "{shown}"
        );
        let out = load_one(
            "rules/r.yaml",
            "name: r\ntrigger_ref: core.intervaltimer\naction_ref: core.noop\n",
        );
        assert_eq!(out.pack.as_ref().unwrap().rules.len(), 0);
        let shown = messages(&out);
        assert!(shown.contains("both skip a rule without one"), "{shown}");
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
        assert!(
            shown[0].contains("noref.yaml") && shown[0].contains("registered as `demo.noref`"),
            "{}",
            shown[0]
        );
        assert_eq!(pack.meta.label, "Demo");
        // Sorted by file name: flat.yaml, full.yaml, noref.yaml.
        assert_eq!(pack.actions[2].spec.action_ref, "demo.noref");
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
