//! The contracts written once in `attune-contract`, held against the whole
//! checkout: every `ATTUNE_*` name in any file is one of its documented
//! constants, Rust code names them only by constant, and the tables of
//! docs/reference.md and every binary's `--help` say what it says. These tests live here, not
//! in `attune-contract`, because they read the whole checkout (README,
//! `docker/`, `deploy/`, `scripts/`), which the Nix test sandbox does not hold
//! (it runs this crate's tests outside, as CI does).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use attune_service::{env, exit};
use attune_stack_tests::{bins, repo};

/// Files where every name must be a constant, parameters or not: what
/// configures and documents the system. Elsewhere (tests, benchmarks, packs,
/// comments in Rust, whose code the next test holds to the constants)
/// `ATTUNE_<NAME>` may be an action's parameter `<name>`.
const STRICT: &[&str] = &[
    "README.md",
    "docs/",
    "compose.yaml",
    "deploy/",
    "docker/",
    "nix/",
    "scripts/",
    ".ci/",
];

/// Rust files not converted to the constants yet, because another branch
/// edits them (parameter limits, secrets at rest): convert each after merging
/// it, then remove it here (the test says when one is clean).
const PENDING: &[&str] = &[];

/// Names tests use precisely because they are not settings.
const NOT_SETTINGS: &[(&str, &str)] = &[(
    "crates/core-timer-sensor/tests/config.rs",
    // A near miss of the token's name on stdin, which must be refused.
    concat!("ATTUNE", "_TOKEN"),
)];

/// Every file of the checkout that git tracks or would track, with its text
/// (binary files left out).
fn checkout() -> Vec<(String, String)> {
    let out = Command::new("git")
        .current_dir(repo())
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .expect("git runs: these tests read the checkout that git lists");
    assert!(
        out.status.success(),
        "git ls-files failed in {}",
        repo().display()
    );
    let mut files = vec![];
    for rel in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel = String::from_utf8(rel.to_vec()).expect("UTF-8 paths");
        // Listed but deleted in the work tree: not part of the checkout.
        let Ok(bytes) = std::fs::read(repo().join(&rel)) else {
            continue;
        };
        if let Ok(text) = String::from_utf8(bytes) {
            files.push((rel, text));
        }
    }
    assert!(files.len() > 100, "only {} files listed", files.len());
    files
}

/// `(line, name)` of every `ATTUNE_*` word in `text`, prefixes (`ATTUNE_`,
/// `ATTUNE_IMAGE_`, followed by `$`, `*`, `<`, `{` ...) included.
fn names(text: &str) -> Vec<(usize, &str)> {
    let mut found = vec![];
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("ATTUNE_") {
            let word = &rest[at..];
            let len = word
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(word.len());
            let before = rest[..at].chars().next_back();
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                found.push((n + 1, &word[..len]));
            }
            rest = &word[len..];
        }
    }
    found
}

/// Whether `text` declares a parameter `key`: the word followed by `:` (a
/// YAML key) or `":` (a JSON one).
fn declares(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = &text[at + key.len()..];
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && (after.starts_with(':') || after.starts_with("\":"))
    })
}

/// The parameters of the packs in `packs/`.
fn pack_parameters(files: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (rel, text) in files {
        if !(rel.starts_with("packs/") && rel.contains("/actions/") && rel.ends_with(".yaml")) {
            continue;
        }
        let mut inside = false;
        for line in text.lines() {
            if !line.starts_with(' ') {
                inside = line.trim_end() == "parameters:";
            } else if inside
                && line.starts_with("  ")
                && !line.starts_with("   ")
                && let Some((key, _)) = line.trim().split_once(':')
            {
                out.insert(key.to_string());
            }
        }
    }
    out
}

/// A shell script, compose file, manifest, README or Rust file that names a
/// variable attune-contract does not define would be a contract written
/// twice, or not at all: it must be a documented constant.
#[test]
fn every_attune_env_name_in_the_repo_is_a_documented_constant() {
    let files = checkout();
    let documented: BTreeSet<&str> = env::all().map(|v| v.name).collect();
    let parameters = pack_parameters(&files);
    assert!(parameters.contains("message"), "{parameters:?}");
    let mut wrong = vec![];
    let mut seen = 0;
    for (rel, text) in &files {
        let strict = STRICT
            .iter()
            .any(|s| rel == s || (s.ends_with('/') && rel.starts_with(s)));
        for (line, name) in names(text) {
            seen += 1;
            if documented.contains(name) || NOT_SETTINGS.contains(&(rel.as_str(), name)) {
                continue;
            }
            let parameter = name
                .strip_prefix(env::PARAMETER_PREFIX)
                .map(str::to_ascii_lowercase)
                .filter(|p| !p.is_empty() && !name.ends_with('_'));
            if let Some(p) = parameter.filter(|_| !strict)
                && (parameters.contains(&p) || declares(text, &p))
            {
                continue;
            }
            wrong.push(format!("{rel}:{line}: {name}"));
        }
    }
    assert!(seen > 300, "only {seen} names found: is the scan broken?");
    assert!(
        wrong.is_empty(),
        "names that are not constants of crates/attune-contract/src/env.rs; add each there \
         with what it means (or use the name that is):\n{}",
        wrong.join("\n")
    );
}

/// Rust code outside attune-contract spelled names as string literals (about
/// 25 of them), so a renamed variable kept working in one binary only.
#[test]
fn rust_code_names_environment_variables_only_by_their_constants() {
    let mut wrong = vec![];
    let mut pending_clean = vec![];
    for (rel, text) in checkout() {
        let source = rel.ends_with(".rs")
            && (rel.starts_with("crates/") || rel.starts_with("tests/stack/src/"))
            && rel.contains("/src/")
            && !rel.starts_with("crates/attune-contract/");
        if !source {
            continue;
        }
        // Code, not its tests (whose literals check the constants' values)
        // and not comments (which name variables to people).
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let hits: Vec<String> = code
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with("//") && l.contains("ATTUNE_"))
            .map(|(n, l)| format!("{rel}:{}: {}", n + 1, l.trim()))
            .collect();
        if PENDING.contains(&rel.as_str()) {
            if hits.is_empty() {
                pending_clean.push(rel);
            }
        } else {
            wrong.extend(hits);
        }
    }
    assert!(
        wrong.is_empty(),
        "use the constants of attune_contract::env (attune_service::env in the services):\n{}",
        wrong.join("\n")
    );
    assert!(
        pending_clean.is_empty(),
        "converted: remove from PENDING in {}: {pending_clean:?}",
        file!()
    );
}

/// The README's table of the variables, as attune-contract documents them.
fn env_table() -> String {
    let mut out = String::new();
    for group in env::GROUPS {
        out.push_str(&one_line(group.title));
        out.push_str("\n\n| variable | meaning |\n|---|---|\n");
        for var in group.vars {
            let name = match var.name.strip_suffix('_') {
                Some(prefix) => format!("{prefix}_*"),
                None => var.name.to_string(),
            };
            out.push_str(&format!("| `{name}` | {} |\n", one_line(var.doc)));
        }
        out.push('\n');
    }
    out
}

/// The README's table of the exit codes.
fn exit_table() -> String {
    let mut out = String::from("| code | meaning |\n|---|---|\n");
    for code in exit::ALL {
        out.push_str(&format!("| {} | {} |\n", code.code, exit::meaning(code)));
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The page that holds the tables of the variables and the exit codes.
const REFERENCE: &str = "docs/reference.md";

fn reference() -> String {
    std::fs::read_to_string(repo().join(REFERENCE)).unwrap()
}

#[test]
fn readme_lists_every_environment_variable_as_the_contract_documents_it() {
    let table = env_table();
    assert!(
        reference().contains(&table),
        "{REFERENCE}'s `## Environment variables` is not attune-contract's; put this there:\n\n{table}"
    );
}

/// The README and `--help` restated packs-assemble's codes by hand, and the
/// services' `--help` said nothing of theirs.
#[test]
fn help_and_readme_exit_codes_match_the_one_definition() {
    let table = exit_table();
    assert!(
        reference().contains(&table),
        "{REFERENCE}'s `## Exit codes` is not attune-contract's; put this there:\n\n{table}"
    );
    // Every "exit N" the README and the docs mention is a code of the definition.
    let codes: Vec<String> = exit::ALL.iter().map(|c| c.code.to_string()).collect();
    let mut pages = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        pages.push(e.unwrap().path());
    }
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for (n, line) in text.lines().enumerate() {
            for word in ["exit ", "exits ", "exit code "] {
                for (at, _) in line.match_indices(word) {
                    let digits: String = line[at + word.len()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    assert!(
                        digits.is_empty() || codes.contains(&digits),
                        "{}:{}: exit {digits} is no exit code of attune-contract",
                        page.display(),
                        n + 1
                    );
                }
            }
        }
    }
    let help = exit::help();
    let b = bins();
    let binaries = [
        b.get("packs-assemble"),
        b.get("attune-api"),
        b.get("attune-worker"),
        b.get("attune-sensor"),
        b.static_sensor.clone(),
    ];
    for bin in binaries {
        // Wide enough that clap does not rewrap the lines, as at a terminal.
        let out = Command::new(&bin)
            .arg("--help")
            .env("COLUMNS", "120")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {text}", bin.display());
        assert!(
            text.contains(&help),
            "{} --help does not end with attune-contract's exit codes:\n{text}",
            name(&bin)
        );
    }
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
