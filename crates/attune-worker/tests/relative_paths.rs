//! The `attune-worker` binary started with relative packs directories, against
//! a stand-in API on 127.0.0.1 that hands out claims and collects the results.
//!
//! A relative `--packs-dir` (or `ATTUNE_PACKS_DIR`) failed every action: the
//! action ran in the pack directory and the relative entry point was resolved
//! from there. Paths are now made absolute once, at startup.

mod support;

use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{claim, fake_api};

/// What every test action prints: `$PWD`, the physical working directory,
/// `$0`, and a file of the pack read by a path relative to its directory.
const SCRIPT: &str = "#!/bin/sh\necho \"$PWD\"\npwd -P\necho \"$0\"\ncat data.txt\n";

/// A pack `demo` at `dir/demo` in a published volume's layout:
/// `demo -> ..data/demo`, `..data -> ..g1`, `..g1/demo -> ../..store/o1/demo`,
/// and a real tree below `..store/o1/demo`. Returns the real pack directory.
fn volume(dir: &Path) -> PathBuf {
    let real = dir.join("..store/o1/demo");
    pack(&real, "volume");
    std::fs::create_dir_all(dir.join("..g1")).unwrap();
    symlink("../..store/o1/demo", dir.join("..g1/demo")).unwrap();
    symlink("..g1", dir.join("..data")).unwrap();
    symlink("..data/demo", dir.join("demo")).unwrap();
    real
}

/// A plain pack directory with `actions/a.sh`, `actions/lib/x.sh` and `data.txt`.
fn pack(dir: &Path, data: &str) {
    std::fs::create_dir_all(dir.join("actions/lib")).unwrap();
    std::fs::write(dir.join("actions/a.sh"), SCRIPT).unwrap();
    std::fs::write(dir.join("actions/lib/x.sh"), SCRIPT).unwrap();
    std::fs::write(dir.join("data.txt"), format!("{data} data\n")).unwrap();
}

/// Runs the worker in `cwd` with `args` and `envs` until it has reported
/// `claims.len()` results; returns them by execution id.
fn run_worker(cwd: &Path, args: &[&str], envs: &[(&str, &str)], claims: Vec<Value>) -> Vec<Value> {
    let n = claims.len();
    let (url, results) = fake_api(claims);
    let mut child = support::worker(&url)
        .current_dir(cwd)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = vec![];
    while got.len() < n {
        match results.recv_timeout(Duration::from_secs(20)) {
            Ok(r) => got.push(r),
            Err(_) => {
                let _ = child.kill();
                panic!("the worker reported {} of {n} results", got.len());
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    got.sort_by_key(|(id, _)| *id);
    got.into_iter().map(|(_, r)| r).collect()
}

/// The stdout expected of [`SCRIPT`] run as `pack/actions/<ep>`, whose real directory is `real`.
fn expected(pack: &Path, real: &Path, ep: &str, data: &str) -> String {
    format!(
        "{}\n{}\n{}\n{data} data\n",
        pack.display(),
        real.display(),
        pack.join("actions").join(ep).display()
    )
}

#[test]
fn a_relative_packs_dir_flag_runs_actions_in_the_pack_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // The worker's current directory as it reads it (the physical path).
    let cwd = tmp.path().canonicalize().unwrap();
    let real = volume(&cwd.join("vol"));
    pack(&cwd.join("dev/demo"), "dev");
    let reports = run_worker(
        &cwd,
        &["--packs-dir", "vol", "--packs-dev-dir", "./dev"],
        &[],
        vec![
            claim(1, "a.sh", "volume"),
            claim(2, "lib/x.sh", "volume"),
            claim(3, "lib/x.sh", "dev"),
        ],
    );
    let vol_pack = cwd.join("vol/demo");
    let dev_pack = cwd.join("dev/demo");
    for (r, ep, pack, real, data) in [
        (&reports[0], "a.sh", &vol_pack, &real, "volume"),
        (&reports[1], "lib/x.sh", &vol_pack, &real, "volume"),
        (&reports[2], "lib/x.sh", &dev_pack, &dev_pack, "dev"),
    ] {
        assert_eq!(r["status"], "succeeded", "{ep} from {data}: {r}");
        assert_eq!(
            r["stdout"].as_str().unwrap(),
            expected(pack, real, ep, data),
            "{r}"
        );
    }
}

#[test]
fn a_relative_packs_dir_from_the_environment_runs_actions_in_the_pack_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().canonicalize().unwrap();
    std::fs::create_dir(cwd.join("run")).unwrap();
    let real = volume(&cwd.join("vol"));
    let reports = run_worker(
        &cwd.join("run"),
        &[],
        &[("ATTUNE_PACKS_DIR", "../vol")],
        vec![claim(1, "lib/x.sh", "volume")],
    );
    let r = &reports[0];
    assert_eq!(r["status"], "succeeded", "{r}");
    // A leading `..` is taken against the (physical) current directory.
    let pack = cwd.join("vol/demo");
    assert_eq!(
        r["stdout"].as_str().unwrap(),
        expected(&pack, &real, "lib/x.sh", "volume"),
        "{r}"
    );
}

/// With a relative `TMPDIR`, actions were given it as `HOME`, relative to
/// the worker's directory, not theirs; the parameter file is in it too.
#[test]
fn a_relative_tmpdir_gives_actions_an_absolute_home_and_parameter_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().canonicalize().unwrap();
    std::fs::create_dir(cwd.join("tmp")).unwrap();
    let real = volume(&cwd.join("vol"));
    std::fs::write(
        real.join("actions/file.sh"),
        "#!/bin/sh\necho \"$HOME\"\ncat \"$ATTUNE_PARAMETER_FILE\"\n",
    )
    .unwrap();
    let mut c = claim(1, "file.sh", "volume");
    c["action"]["parameter_delivery"] = json!("file");
    c["execution"]["parameters"] = json!({"m": "hi"});
    // The packs directory absolute: only TMPDIR is relative.
    let reports = run_worker(
        &cwd,
        &["--packs-dir", cwd.join("vol").to_str().unwrap()],
        &[("TMPDIR", "tmp")],
        vec![c],
    );
    let r = &reports[0];
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        r["stdout"].as_str().unwrap(),
        format!("{}\n{{\"m\":\"hi\"}}", cwd.join("tmp").display()),
        "{r}"
    );
}

/// A relative path cannot be made absolute without a current directory: the
/// worker says which path, and exits 3 (environment) at once.
#[test]
fn an_unreadable_current_directory_is_an_environment_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("cd \"$1\" && rmdir \"$1\" && exec \"$2\" --token t --packs-dir vol-here")
        .arg("sh")
        .arg(&gone)
        .arg(env!("CARGO_BIN_EXE_attune-worker"))
        .env_remove("ATTUNE_PACKS_DIR")
        .env_remove("ATTUNE_PACKS_DEV_DIR")
        .env("ATTUNE_API_URL", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the worker kept running without a current directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("--packs-dir") && stderr.contains("vol-here"),
        "{stderr}"
    );
    assert!(stderr.contains("current directory"), "{stderr}");
}
