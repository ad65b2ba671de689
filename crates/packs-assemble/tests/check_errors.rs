//! What `check` tells a user about the mistakes a newcomer makes, as a user
//! reads it (snapshots of the human output): a YAML syntax error with a hint,
//! an unknown key at its own place with the key it is probably meant to be,
//! and a tree with no pack.

use crate::util::{Fixture, stderr_of};

/// `check packs --arch amd64`: exit code and stderr, the workspace's path removed.
fn check(f: &Fixture) -> (Option<i32>, String) {
    let out = f
        .cmd()
        .args(["check", "packs", "--arch", "amd64"])
        .output()
        .unwrap();
    let err = stderr_of(&out).replace(&f.tmp.path().display().to_string(), "<tmp>");
    (out.status.code(), err)
}

#[test]
fn a_yaml_syntax_error_names_the_place_and_the_usual_cause() {
    let f = Fixture::new();
    f.write(
        "packs/core/actions/broken.yaml",
        "ref: core.broken\nlabel: Broken\ndescription: Runs: this\nrunner_type: shell\nentry_point: echo.sh\n",
    );
    let (code, err) = check(&f);
    assert_eq!(code, Some(1), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn a_tab_in_the_indentation_is_named() {
    let f = Fixture::new();
    f.write(
        "packs/core/actions/tabs.yaml",
        "ref: core.tabs\nlabel: Tabs\nrunner_type: shell\nentry_point: echo.sh\nparameters:\n\tmessage: {type: string}\n",
    );
    let (code, err) = check(&f);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("hint: YAML indents with spaces only"), "{err}");
}

#[test]
fn an_unknown_key_points_at_itself_and_names_the_nearest_known_key() {
    let f = Fixture::new();
    f.write(
        "packs/core/actions/typo.yaml",
        "ref: core.typo\nlabel: Typo\nrunner_type: shell\nentry_point: echo.sh\nentry_pont: echo.sh\n",
    );
    let (code, err) = check(&f);
    // A warning, as upstream's loaders ignore keys they do not know (--strict: an error).
    assert_eq!(code, Some(0), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn a_tree_without_packs_says_so_and_exits_1() {
    let f = Fixture::new();
    std::fs::remove_dir_all(f.packs().join("core")).unwrap();
    let (code, err) = check(&f);
    assert_eq!(code, Some(1), "{err}");
    insta::assert_snapshot!(err);
}

/// In a container the packs are at /source/packs; its user knows them as
/// ./packs: the stack's init-packs sets ATTUNE_SHOW_PATH_AS, and every file
/// is named as the user knows it.
#[test]
fn paths_are_named_as_the_user_knows_them_from_a_container() {
    let f = Fixture::new();
    f.write(
        "packs/core/actions/broken.yaml",
        "ref: core.broken\nlabel: Broken\ndescription: Runs: this\nrunner_type: shell\nentry_point: echo.sh\n",
    );
    let out = f
        .cmd()
        .arg("check")
        .arg(f.packs())
        .args(["--arch", "amd64"])
        .env(
            "ATTUNE_SHOW_PATH_AS",
            format!("{}=./my-packs", f.packs().display()),
        )
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("./my-packs/core/actions/broken.yaml:3:18: error:"),
        "{err}"
    );
    assert!(!err.contains(&f.packs().display().to_string()), "{err}");
}
