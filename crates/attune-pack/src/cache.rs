//! The load cache: what loading each pack YAML file found, keyed by the file's
//! content hash, so that a file that has not changed is not read or parsed again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Action, PackMeta, Rule, Sensor, Trigger};
use crate::summary::Brief;
use crate::validate::FileChecks;

/// The version of the byte format; [`LoadCache::from_bytes`] reads no other.
const FORMAT: u32 = 2;

/// The first line of the bytes, before the fingerprint line and the entries.
const MAGIC: &str = "attune-pack load cache";

/// Facts of loaded pack YAML files, keyed by content hash, carried from one run to the next.
///
/// [`load_pack_cached`](crate::load_pack_cached) looks up every YAML file whose
/// content hash the caller knows, uses what an earlier load found when the
/// entry is there, and adds an entry for each file it had to parse. Save it
/// with [`to_bytes`](LoadCache::to_bytes) after a run and read it back with
/// [`from_bytes`](LoadCache::from_bytes) before the next one.
///
/// An entry depends on the file's path inside the pack, its contents and, for
/// a component, the pack's ref (for `pack.yaml`, the directory's name); the
/// bytes also carry a fingerprint of the loader and validation code, so a
/// cache written by another build of this crate reads as empty.
#[derive(Debug, Default)]
pub struct LoadCache {
    entries: HashMap<Key, Slot>,
    reused: usize,
    parsed: usize,
}

#[derive(Debug)]
struct Slot {
    /// The facts as JSON with no path in them, as stored: a hit parses them
    /// once, and saving copies them as they are.
    facts: Box<str>,
    /// Looked up or inserted since the cache was made: saved by `to_bytes`.
    used: bool,
}

/// What an entry is found by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Key {
    /// The file's path inside the pack, `/`-separated: `pack.yaml`, `actions/echo.yaml`.
    pub rel: String,
    /// The pack's ref for a component file, the directory's name for
    /// `pack.yaml`, nothing for a carried file: what its checks depend on beside the file.
    pub scope: Option<String>,
    /// SHA-256 of the file's contents.
    #[serde(serialize_with = "hex_out", deserialize_with = "hex_in")]
    pub sha256: [u8; 32],
    /// The entry holds the file's summary ([`crate::summary`]), not its model.
    #[serde(default, skip_serializing_if = "is_false")]
    pub brief: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What loading one component file found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ComponentFacts<T> {
    /// Problems reading and parsing it, in order.
    pub read: Diagnostics,
    /// The component, normalised, and its own checks; none when it was skipped or did not parse.
    pub found: Option<(T, FileChecks)>,
}

/// What loading `pack.yaml` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetaFacts<M = PackMeta> {
    /// Problems reading and parsing it, in order.
    pub read: Diagnostics,
    /// The pack's metadata (its label filled in; or, summarised, its ref)
    /// and the problems checking it.
    pub found: Option<(M, Diagnostics)>,
}

/// What loading one file found, by kind of file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Facts {
    /// `pack.yaml`.
    Meta(MetaFacts),
    /// `actions/*.yaml`.
    Action(ComponentFacts<Action>),
    /// `sensors/*.yaml`.
    Sensor(ComponentFacts<Sensor>),
    /// `triggers/*.yaml`.
    Trigger(ComponentFacts<Trigger>),
    /// `rules/*.yaml`.
    Rule(ComponentFacts<Rule>),
    /// A YAML file of a carried kind (`workflows/`, ...): its problems.
    Carried(Diagnostics),
    /// `pack.yaml`, summarised: its ref.
    MetaRef(MetaFacts<String>),
    /// A component file, summarised ([`Brief`]).
    Brief(ComponentFacts<Brief>),
}

impl Facts {
    /// Every diagnostic, in no particular order.
    fn diagnostics_mut(&mut self) -> Vec<&mut Diagnostic> {
        fn component<T>(c: &mut ComponentFacts<T>) -> Vec<&mut Diagnostic> {
            let mut all: Vec<&mut Diagnostic> = c.read.0.iter_mut().collect();
            if let Some((_, checks)) = &mut c.found {
                all.extend(checks.head.0.iter_mut());
                all.extend(checks.tail.0.iter_mut());
            }
            all
        }
        fn meta<M>(m: &mut MetaFacts<M>) -> Vec<&mut Diagnostic> {
            let mut all: Vec<&mut Diagnostic> = m.read.0.iter_mut().collect();
            if let Some((_, checks)) = &mut m.found {
                all.extend(checks.0.iter_mut());
            }
            all
        }
        match self {
            Facts::Meta(m) => meta(m),
            Facts::MetaRef(m) => meta(m),
            Facts::Brief(c) => component(c),
            Facts::Action(c) => component(c),
            Facts::Sensor(c) => component(c),
            Facts::Trigger(c) => component(c),
            Facts::Rule(c) => component(c),
            Facts::Carried(d) => d.0.iter_mut().collect(),
        }
    }

    /// Every diagnostic about `file` made to name no path (the form stored),
    /// or `None` when one names another path and so cannot be re-based.
    fn detached(mut self, file: &Path) -> Option<Facts> {
        for d in self.diagnostics_mut() {
            if d.path != file {
                return None;
            }
            d.path = PathBuf::new();
        }
        Some(self)
    }

    /// The stored form made to name `file` again, exactly as a fresh load would.
    fn attached(mut self, file: &Path) -> Facts {
        for d in self.diagnostics_mut() {
            d.path = file.to_path_buf();
        }
        self
    }
}

impl LoadCache {
    /// An empty cache.
    pub fn new() -> LoadCache {
        LoadCache::default()
    }

    /// The cache `bytes` (from [`to_bytes`](LoadCache::to_bytes)) hold; an empty
    /// one when they are damaged or come from another format or build.
    pub fn from_bytes(bytes: &[u8]) -> LoadCache {
        Self::parse(bytes).unwrap_or_default()
    }

    /// Bytes: `<MAGIC> <FORMAT>`, the fingerprint, the SHA-256 of the body,
    /// each on a line; then the body, one entry a line: the key as JSON, a
    /// tab, the facts as JSON (JSON text holds no raw tab or newline).
    fn parse(bytes: &[u8]) -> Option<LoadCache> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (magic, rest) = text.split_once('\n')?;
        let (print, rest) = rest.split_once('\n')?;
        let (sum, body) = rest.split_once('\n')?;
        if magic != format!("{MAGIC} {FORMAT}")
            || print != fingerprint()
            || sum != hex(&sha256(body.as_bytes()))
        {
            return None;
        }
        let mut entries = HashMap::new();
        for line in body.split_terminator('\n') {
            let (key, facts) = line.split_once('\t')?;
            let slot = Slot {
                facts: facts.into(),
                used: false,
            };
            entries.insert(serde_json::from_str(key).ok()?, slot);
        }
        Some(LoadCache {
            entries,
            ..LoadCache::default()
        })
    }

    /// The entries looked up or added since this cache was made, as bytes for
    /// [`from_bytes`](LoadCache::from_bytes): entries of files no load asked
    /// for (changed, removed, or in packs not loaded) are left out, so the
    /// cache follows the inputs instead of growing. Equal entries give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut used: Vec<(&Key, &Slot)> = self.entries.iter().filter(|(_, s)| s.used).collect();
        used.sort_by(|a, b| a.0.cmp(b.0));
        let mut body = String::new();
        for (key, slot) in used {
            body.push_str(&serde_json::to_string(key).expect("a key serialises"));
            body.push('\t');
            body.push_str(&slot.facts);
            body.push('\n');
        }
        let sum = hex(&sha256(body.as_bytes()));
        format!("{MAGIC} {FORMAT}\n{}\n{sum}\n{body}", fingerprint()).into_bytes()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many YAML files loads took from this cache instead of reading them.
    pub fn reused(&self) -> usize {
        self.reused
    }

    /// How many YAML files loads read and parsed (cached afterwards or not).
    pub fn parsed(&self) -> usize {
        self.parsed
    }

    /// The facts under `key`, made to name `file`; marks the entry used.
    pub(crate) fn get(&mut self, key: &Key, file: &Path) -> Option<Facts> {
        let slot = self.entries.get_mut(key)?;
        let Ok(facts) = serde_json::from_str::<Facts>(&slot.facts) else {
            // Checked on insert and by the body's hash: only a bug gets here.
            self.entries.remove(key);
            return None;
        };
        slot.used = true;
        self.reused += 1;
        Some(facts.attached(file))
    }

    /// Counts one file read and parsed.
    pub(crate) fn count_parsed(&mut self) {
        self.parsed += 1;
    }

    /// Keeps `facts` (whose diagnostics name `file`) under `key`, when they
    /// survive the trip through JSON unchanged; otherwise the file is parsed
    /// again next time, which is slower but never wrong.
    pub(crate) fn insert(&mut self, key: Key, file: &Path, facts: Facts) {
        let Some(facts) = facts.detached(file) else {
            return;
        };
        let Ok(json) = serde_json::to_string(&facts) else {
            return;
        };
        if serde_json::from_str::<Facts>(&json).ok().as_ref() != Some(&facts) {
            return;
        }
        let slot = Slot {
            facts: json.into(),
            used: true,
        };
        self.entries.insert(key, slot);
    }
}

/// A digest of everything an entry's contents depend on beside its key: the
/// format, this crate's version and the source of its loader, model and
/// validation. A build that could load a file differently reads no entry.
fn fingerprint() -> &'static str {
    static PRINT: OnceLock<String> = OnceLock::new();
    PRINT.get_or_init(|| {
        let parts: [&[u8]; 8] = [
            &FORMAT.to_le_bytes(),
            env!("CARGO_PKG_VERSION").as_bytes(),
            include_bytes!("cache.rs"),
            include_bytes!("diag.rs"),
            include_bytes!("load.rs"),
            include_bytes!("model.rs"),
            include_bytes!("summary.rs"),
            include_bytes!("validate.rs"),
        ];
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        hex(&h.finalize().into())
    })
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_out<S: Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(digest))
}

fn hex_in<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom("expected 64 hex digits");
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rel: &str) -> Key {
        Key {
            rel: rel.into(),
            scope: Some("demo".into()),
            sha256: sha256(rel.as_bytes()),
            brief: false,
        }
    }

    fn one_entry() -> LoadCache {
        let mut c = LoadCache::new();
        let file = Path::new("/p/demo/workflows/w.yaml");
        let d = Diagnostics(vec![Diagnostic::warning(file, "has no `ref`").at(1, 2)]);
        c.insert(key("workflows/w.yaml"), file, Facts::Carried(d));
        c
    }

    #[test]
    fn bytes_round_trip_and_rebase_paths() {
        let c = one_entry();
        let mut back = LoadCache::from_bytes(&c.to_bytes());
        assert_eq!(back.len(), 1);
        let elsewhere = Path::new("/q/demo/workflows/w.yaml");
        let Some(Facts::Carried(d)) = back.get(&key("workflows/w.yaml"), elsewhere) else {
            panic!("entry lost");
        };
        assert_eq!(d.0[0].path, elsewhere);
        assert_eq!(d.0[0].line, Some(1));
        assert_eq!(back.reused(), 1);
    }

    #[test]
    fn damaged_or_foreign_bytes_are_an_empty_cache() {
        let good = one_entry().to_bytes();
        let other_version = String::from_utf8(good.clone()).unwrap().replacen(
            &format!("{MAGIC} {FORMAT}"),
            &format!("{MAGIC} 999"),
            1,
        );
        let other_build = {
            let s = String::from_utf8(good.clone()).unwrap();
            let (magic, rest) = s.split_once('\n').unwrap();
            let (_, body) = rest.split_once('\n').unwrap();
            format!("{magic}\n{}\n{body}", "0".repeat(64))
        };
        let mut bad_hash = String::from_utf8(good.clone()).unwrap();
        bad_hash = bad_hash.replacen("\"sha256\":\"", "\"sha256\":\"zz", 1);
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            b"\xff\xfe".to_vec(),
            good[..good.len() - 3].to_vec(),
            good[..MAGIC.len()].to_vec(),
            other_version.into_bytes(),
            other_build.into_bytes(),
            bad_hash.into_bytes(),
            b"attune-pack load cache 2\n".to_vec(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            assert!(LoadCache::from_bytes(bytes).is_empty(), "case {i}");
        }
        assert_eq!(LoadCache::from_bytes(&good).len(), 1);
    }

    /// Facts that do not parse, under a body hash that matches (a bug, not
    /// damage): the entry is a miss, and dropped.
    #[test]
    fn unreadable_facts_are_a_miss() {
        let k = key("workflows/w.yaml");
        let body = format!(
            "{}\t{{\"Carried\":7}}\n",
            serde_json::to_string(&k).unwrap()
        );
        let bytes = format!(
            "{MAGIC} {FORMAT}\n{}\n{}\n{body}",
            fingerprint(),
            hex(&sha256(body.as_bytes()))
        );
        let mut c = LoadCache::from_bytes(bytes.as_bytes());
        assert_eq!(c.len(), 1);
        assert!(c.get(&k, Path::new("/p/demo/workflows/w.yaml")).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn only_used_entries_are_saved() {
        let mut c = LoadCache::from_bytes(&one_entry().to_bytes());
        assert_eq!(c.len(), 1);
        // Not looked up in this run: not saved.
        assert!(LoadCache::from_bytes(&c.to_bytes()).is_empty());
        let file = Path::new("/p/demo/workflows/w.yaml");
        assert!(c.get(&key("workflows/w.yaml"), file).is_some());
        assert_eq!(LoadCache::from_bytes(&c.to_bytes()).len(), 1);
    }

    /// An entry whose diagnostics name another file cannot be re-based: not kept.
    #[test]
    fn facts_naming_another_path_are_not_kept() {
        let mut c = LoadCache::new();
        let d = Diagnostics(vec![Diagnostic::warning("/elsewhere", "x")]);
        c.insert(
            key("workflows/w.yaml"),
            Path::new("/p/demo/workflows/w.yaml"),
            Facts::Carried(d),
        );
        assert!(c.is_empty());
    }
}
