//! `load_pack_cached` gives exactly `load_pack`'s outcome, cold or warm, and a
//! warm cache reads no YAML file whose hash is unchanged.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use attune_pack::{
    LoadCache, LoadOutcome, Pack, SummaryOutcome, is_yaml, load_pack, load_pack_cached,
    load_pack_summary_cached,
};
use sha2::{Digest, Sha256};

/// The SHA-256 of every regular file below `dir`, by path: what a caller such
/// as packs-assemble knows before it validates.
fn hashes(dir: &Path) -> HashMap<PathBuf, [u8; 32]> {
    let mut out = HashMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                todo.push(p);
            } else if t.is_file() {
                out.insert(p.clone(), Sha256::digest(fs::read(&p).unwrap()).into());
            }
        }
    }
    out
}

/// The YAML files `load_pack` reads in `dir`.
fn yaml_count(dir: &Path) -> usize {
    let kinds = [
        "actions",
        "sensors",
        "triggers",
        "rules",
        "workflows",
        "runtimes",
        "permission_sets",
    ];
    let in_kind = |k: &str| {
        fs::read_dir(dir.join(k))
            .map(|es| es.filter(|e| is_yaml(&e.as_ref().unwrap().path())).count())
            .unwrap_or(0)
    };
    1 + kinds.iter().map(|k| in_kind(k)).sum::<usize>()
}

fn cached(dir: &Path, known: &HashMap<PathBuf, [u8; 32]>, cache: &mut LoadCache) -> LoadOutcome {
    load_pack_cached(dir, &|p| known.get(p).copied(), cache)
}

/// `load_pack_summary_cached` gives `want` summarised, cold and warm (through
/// bytes), and warm it parses no YAML file.
fn check_summary(
    dir: &Path,
    known: &HashMap<PathBuf, [u8; 32]>,
    want: &LoadOutcome,
    warm_counts: (usize, usize),
) {
    let want = SummaryOutcome {
        pack: want.pack.as_ref().map(Pack::summary),
        diagnostics: want.diagnostics.clone(),
    };
    let summarised =
        |cache: &mut LoadCache| load_pack_summary_cached(dir, &|p| known.get(p).copied(), cache);
    let mut cold = LoadCache::new();
    assert_eq!(summarised(&mut cold), want, "summary, cold");
    let bytes = cold.to_bytes();
    let mut warm = LoadCache::from_bytes(&bytes);
    let got = summarised(&mut warm);
    assert_eq!(got, want, "summary, warm");
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    assert_eq!((warm.reused(), warm.parsed()), warm_counts, "summary, warm");
    assert_eq!(
        warm.to_bytes(),
        bytes,
        "a no-change run saves the same bytes"
    );
}

/// Equal as values and as printed, diagnostics included, in order.
fn assert_same(got: &LoadOutcome, want: &LoadOutcome, what: &str) {
    assert_eq!(got, want, "{what}");
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{what}");
    let text = |o: &LoadOutcome| {
        o.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(text(got), text(want), "{what}");
}

/// Copies the tree `from` to `to` (regular files and directories).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if t.is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The whole contract on the pack in `dir`: cold and warm loads equal
/// `load_pack`; a warm load elsewhere reads no YAML (its files are wrecked
/// on disk while the hashes still say they are unchanged) and names the new
/// paths; a changed file is parsed again, and only it.
fn check_pack(dir: &Path) {
    let name = dir.file_name().unwrap();
    let want = load_pack(dir);
    let known = hashes(dir);
    let files = yaml_count(dir);

    // (a) An empty cache.
    let mut cold = LoadCache::new();
    assert_same(&cached(dir, &known, &mut cold), &want, "cold");
    assert_eq!(
        (cold.reused(), cold.parsed()),
        (0, files),
        "cold: every file parsed"
    );

    check_summary(dir, &known, &want, (files, 0));

    // (b) A warm cache, through bytes.
    let bytes = cold.to_bytes();
    let mut warm = LoadCache::from_bytes(&bytes);
    assert!(!warm.is_empty());
    assert_same(&cached(dir, &known, &mut warm), &want, "warm");
    assert_eq!(
        (warm.reused(), warm.parsed()),
        (files, 0),
        "warm: no file parsed"
    );
    assert_eq!(
        warm.to_bytes(),
        bytes,
        "a no-change run saves the same bytes"
    );

    // The same pack in another directory, its YAML wrecked while the hashes
    // say it is unchanged: the outcome is the copy's, so nothing was read.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join(name);
    copy_tree(dir, &copy);
    let want_copy = load_pack(&copy);
    let moved: HashMap<PathBuf, [u8; 32]> = known
        .iter()
        .map(|(p, h)| (copy.join(p.strip_prefix(dir).unwrap()), *h))
        .collect();
    for p in moved.keys().filter(|p| is_yaml(p)) {
        fs::write(p, "{ wrecked: [").unwrap();
    }
    let mut warm = LoadCache::from_bytes(&bytes);
    assert_same(
        &cached(&copy, &moved, &mut warm),
        &want_copy,
        "moved, wrecked",
    );
    assert_eq!(warm.parsed(), 0);

    // A changed hash: that file, and only it, is parsed again.
    copy_tree(dir, &copy);
    let pick = want_copy.pack.as_ref().and_then(|p| {
        let files = p.actions.iter().map(|a| &a.file);
        let files = files.chain(p.sensors.iter().map(|s| &s.file));
        let files = files.chain(p.triggers.iter().map(|t| &t.file));
        files.chain(p.rules.iter().map(|r| &r.file)).next().cloned()
    });
    if let Some(pick) = pick {
        let mut text = fs::read_to_string(&pick).unwrap();
        text.push_str("\nbrand_new_key: 1\n");
        fs::write(&pick, text).unwrap();
        let mut warm = LoadCache::from_bytes(&bytes);
        let got = cached(&copy, &hashes(&copy), &mut warm);
        let want_changed = load_pack(&copy);
        assert_same(&got, &want_changed, "one file changed");
        assert_eq!(warm.parsed(), 1, "only {} parsed", pick.display());
        assert!(
            got.diagnostics
                .iter()
                .any(|d| d.path == pick && d.message.contains("brand_new_key")),
            "the change is seen: {:#?}",
            got.diagnostics
        );
        // Its old entry was not used, so it is not saved.
        assert_eq!(LoadCache::from_bytes(&warm.to_bytes()).len(), files);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_core_pack_loads_the_same_cached() {
    let core = repo().join("packs/core");
    assert!(load_pack(&core).pack.is_some());
    check_pack(&core);
}

#[test]
fn upstream_packs_load_the_same_cached() {
    let Some(root) = attune_pack::shared_input::shared_input(&repo(), "attune-upstream/packs")
    else {
        return;
    };
    let entries = fs::read_dir(&root).unwrap();
    let mut seen = 0;
    for e in entries {
        let dir = e.unwrap().path();
        if dir.join("pack.yaml").is_file() {
            check_pack(&dir);
            seen += 1;
        }
    }
    assert!(seen > 0);
}

fn write(dir: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// A pack with one of every problem the loader reports from a file alone, and
/// those that span files (a ref defined twice).
fn invalid_pack(dir: &Path) {
    write(dir, "pack.yaml", "ref: demo\nversion: 1.0\nsurprise: 1\n");
    write(
        dir,
        "actions/bad_yaml.yaml",
        "ref: demo.bad_yaml\nlabel: [unclosed\n",
    );
    write(
        dir,
        "actions/typo.yaml",
        "ref: demo.typo\nrunner_type: cobol\nentrypoint: x.sh\nentry_point: ../x.sh\ntimeout: 0\nparameters:\n  bad-name: {type: strin}\n",
    );
    write(
        dir,
        "actions/wrong_pack.yaml",
        "ref: other.wrong_pack\nentry_point: x.sh\n",
    );
    write(
        dir,
        "actions/not_a_ref.yaml",
        "ref: not_a_ref\nentry_point: x.sh\n",
    );
    write(
        dir,
        "actions/mismatch.yaml",
        "ref: demo.other_name\nentry_point: x.sh\n",
    );
    write(
        dir,
        "actions/twice.yaml",
        "ref: demo.dup\nentry_point: x.sh\n",
    );
    write(dir, "actions/no_entry.yaml", "ref: demo.no_entry\n");
    write(
        dir,
        "actions/timeout_type.yaml",
        "ref: demo.timeout_type\nentry_point: x\ntimeout: soon\n",
    );
    write(
        dir,
        "actions/noref.yaml",
        "name: noref\nentry_point: x.py\n",
    );
    write(
        dir,
        "actions/latin1.yaml",
        b"ref: demo.latin1\nlabel: caf\xe9\n",
    );
    write(dir, "actions/huge.yaml", vec![b'#'; (1 << 20) + 1]);
    write(
        dir,
        "sensors/dup.yaml",
        "ref: demo.dup\nentry_point: s\ntrigger_types: []\n",
    );
    write(
        dir,
        "sensors/no_entry.yaml",
        "ref: demo.no_entry_sensor\ntrigger_type: t\n",
    );
    write(
        dir,
        "sensors/s.yaml",
        "ref: demo.s\nentry_point: s\ntrigger_type: demo.t\nrunner_type: standalone\n",
    );
    write(dir, "triggers/t.yaml", "ref: demo.t\nweird: true\n");
    write(
        dir,
        "rules/r.yaml",
        "ref: r\ntrigger_ref: core.intervaltimer\naction_ref: missing\ntrigger_params: {interval: 0}\n",
    );
    write(
        dir,
        "rules/bad_ref.yaml",
        "ref: bad_ref\ntrigger_ref: a.b.c\naction_ref: demo.typo\n",
    );
    write(
        dir,
        "rules/no_action.yaml",
        "ref: no_action\ntrigger_ref: t\n",
    );
    write(dir, "workflows/w.yaml", "tasks: []\n");
    write(dir, "workflows/broken.yaml", "tasks: [\n");
    write(dir, "runtimes/rt.yaml", "ref: demo.rt\n");
}

#[test]
fn invalid_packs_report_the_same_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    invalid_pack(&dir);
    let want = load_pack(&dir);
    assert!(want.pack.is_none());
    let shown: Vec<String> = want.diagnostics.iter().map(|d| d.to_string()).collect();
    for expected in [
        "unknown key `surprise`",
        "is not a semantic version",
        "bad_yaml.yaml:2",
        "unknown key `entrypoint`",
        "runner type `cobol`",
        "leaves its directory",
        "must be at least 1 second",
        "unknown type `strin`",
        "belongs to pack `other`",
        "`not_a_ref` is not a valid action ref",
        "does not match the file name",
        "ref `demo.dup` is defined twice",
        "no_entry.yaml: error: field `entry_point`: is missing",
        "timeout_type.yaml:3",
        "has no `ref`; registered as `demo.noref` from its `name`",
        "cannot read as UTF-8 text",
        "pack YAML files are limited",
        "a sensor emits at least one trigger type",
        "unknown key `weird`",
        "`interval` must be a whole number",
        "`a.b.c` is not a ref",
        "give it that action's ref",
        "broken.yaml:",
    ] {
        assert!(
            shown.iter().any(|s| s.contains(expected)),
            "no `{expected}` in {shown:#?}"
        );
    }
    // Every file but the oversized one (not read, so not cached) is reused.
    let known = hashes(&dir);
    let files = yaml_count(&dir);
    let mut cold = LoadCache::new();
    assert_same(&cached(&dir, &known, &mut cold), &want, "cold");
    let mut warm = LoadCache::from_bytes(&cold.to_bytes());
    assert_same(&cached(&dir, &known, &mut warm), &want, "warm");
    assert_eq!((warm.reused(), warm.parsed()), (files - 1, 1));
    check_summary(&dir, &known, &want, (files - 1, 1));
}

/// A file's checks depend on the pack's ref (and pack.yaml's on the
/// directory's name): a warm cache made for another one is not used for them.
#[test]
fn a_new_pack_ref_or_directory_name_checks_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    write(
        &dir,
        "pack.yaml",
        "ref: demo\nlabel: Demo\nversion: 1.0.0\n",
    );
    write(&dir, "actions/a.yaml", "ref: demo.a\nentry_point: a.sh\n");
    write(
        &dir,
        "rules/r.yaml",
        "ref: r\ntrigger_ref: t\naction_ref: a\n",
    );
    let mut cache = LoadCache::new();
    cached(&dir, &hashes(&dir), &mut cache);
    let bytes = cache.to_bytes();

    // Renamed directory, same files: pack.yaml is checked again (its ref
    // differs from the name now), the components are not.
    let renamed = tmp.path().join("renamed");
    fs::rename(&dir, &renamed).unwrap();
    let mut warm = LoadCache::from_bytes(&bytes);
    let got = cached(&renamed, &hashes(&renamed), &mut warm);
    assert_same(&got, &load_pack(&renamed), "renamed");
    assert!(
        got.diagnostics
            .iter()
            .any(|d| d.message.contains("differs from the directory name"))
    );
    assert_eq!(warm.parsed(), 1);

    // A new pack ref: every component is checked again under it.
    let other = tmp.path().join("other");
    fs::rename(&renamed, &other).unwrap();
    write(
        &other,
        "pack.yaml",
        "ref: other\nlabel: Other\nversion: 1.0.0\n",
    );
    let mut warm = LoadCache::from_bytes(&bytes);
    let got = cached(&other, &hashes(&other), &mut warm);
    assert_same(&got, &load_pack(&other), "new ref");
    assert_eq!(warm.parsed(), 3);
    let rule = &got.diagnostics;
    assert!(
        rule.iter()
            .any(|d| d.message.contains("belongs to pack `demo`"))
    );
}

/// Files whose hash the caller does not know are read and not cached.
#[test]
fn unknown_hashes_are_read_and_not_cached() {
    let dir = repo().join("packs/core");
    let mut cache = LoadCache::new();
    let got = load_pack_cached(&dir, &|_| None, &mut cache);
    assert_same(&got, &load_pack(&dir), "no hashes");
    assert!(cache.is_empty());
    assert_eq!(cache.parsed(), yaml_count(&dir));
}

/// A cache from a damaged or foreign file is an empty one, and loads as usual.
#[test]
fn a_damaged_cache_is_an_empty_cache() {
    let dir = repo().join("packs/core");
    let known = hashes(&dir);
    let mut cache = LoadCache::new();
    cached(&dir, &known, &mut cache);
    let bytes = cache.to_bytes();
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut wrong_version = bytes.clone();
    wrong_version[newline - 1] = b'0';
    for damaged in [
        &bytes[..bytes.len() / 2],
        &bytes[..newline],
        &wrong_version[..],
        b"garbage",
        b"",
    ] {
        let mut c = LoadCache::from_bytes(damaged);
        assert!(c.is_empty());
        assert_same(&cached(&dir, &known, &mut c), &load_pack(&dir), "damaged");
    }
}
