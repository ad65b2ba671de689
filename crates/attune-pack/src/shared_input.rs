//! Test inputs that live beside the repository, in `../shared` (upstream
//! Attune's packs, as data): found, skipped with a message outside CI, or a
//! failure naming what is missing under CI, so an incomplete checkout can
//! never pass for a green run.

use std::path::{Path, PathBuf};

/// Whether the value of `CI` says this is a CI run: set, and not empty,
/// `false` or `0` (any case).
pub fn under_ci(ci: Option<&str>) -> bool {
    ci.map(str::trim)
        .is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `shared/<rel>` beside the repository at `repo` or beside one of its
/// parents (a worktree under the main checkout's parent). `None` outside CI
/// when absent (with a SKIPPED message); under CI a panic naming the path.
pub fn shared_input(repo: &Path, rel: &str) -> Option<PathBuf> {
    shared_input_under(std::env::var("CI").ok().as_deref(), repo, rel)
}

/// [`shared_input`] with the value of `CI` given.
pub fn shared_input_under(ci: Option<&str>, repo: &Path, rel: &str) -> Option<PathBuf> {
    let repo = repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf());
    if let Some(found) = repo
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared").join(rel))
        .find(|d| d.exists())
    {
        return Some(found);
    }
    let missing = format!("shared/{rel} (beside {} or a parent)", repo.display());
    if under_ci(ci) {
        panic!(
            "{missing} is absent, and CI={} forbids skipping this test: put ../shared beside the checkout",
            ci.unwrap_or_default()
        );
    }
    eprintln!("SKIPPED: {missing} is absent (CI is not set, so the test is skipped)");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_ci_unless_unset_empty_false_or_zero() {
        for (ci, want) in [
            (None, false),
            (Some(""), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("0"), false),
            (Some("true"), true),
            (Some("1"), true),
        ] {
            assert_eq!(under_ci(ci), want, "CI={ci:?}");
        }
    }

    /// packs-assemble's upstream test printed SKIPPED and passed under CI
    /// when `../shared` was absent.
    #[test]
    fn a_missing_shared_input_fails_under_ci_naming_it_instead_of_skipping() {
        let repo = tempfile::tempdir().unwrap();
        let inner = repo.path().join("checkout");
        std::fs::create_dir(&inner).unwrap();
        let under =
            std::panic::catch_unwind(|| shared_input_under(Some("true"), &inner, "no-such-input"));
        let message = under.expect_err("skipped under CI=true");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("shared/no-such-input"), "{text}");
        assert_eq!(
            shared_input_under(Some("false"), &inner, "no-such-input"),
            None
        );
        assert_eq!(shared_input_under(None, &inner, "no-such-input"), None);
        std::fs::create_dir_all(repo.path().join("shared/here")).unwrap();
        assert_eq!(
            shared_input_under(Some("true"), &inner, "here"),
            Some(repo.path().canonicalize().unwrap().join("shared/here"))
        );
    }
}
