//! Faults and hostile input found by trying to break the tool: each test is
//! named after what it guards, and each failed on the code before its fix.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

use crate::util::{Fixture, SENSOR, copy_tree, stderr_of};

/// The three input states used below: v1, v2 and v3 differ in the sensor, an
/// action's text, an added file and a removed action.
fn set_inputs(f: &Fixture, v: u32) {
    let repo_core = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs/core");
    f.fresh_sensor(&format!("v{v}"));
    let echo = if v == 1 {
        fs::read(repo_core.join("actions/echo.sh")).unwrap()
    } else {
        format!("#!/bin/sh\necho v{v}\n").into_bytes()
    };
    f.write("packs/core/actions/echo.sh", echo);
    let new = f.packs().join("core/actions/new.sh");
    let sleep = f.packs().join("core/actions/sleep.yaml");
    if v == 3 {
        f.write("packs/core/actions/new.sh", "#!/bin/sh\n");
        let _ = fs::remove_file(&sleep);
        let _ = fs::remove_file(f.packs().join("core/actions/sleep.sh"));
    } else {
        let _ = fs::remove_file(&new);
        for name in ["sleep.yaml", "sleep.sh"] {
            fs::copy(
                repo_core.join("actions").join(name),
                f.packs().join("core/actions").join(name),
            )
            .unwrap();
        }
    }
}

/// Publishes v1 then v2; returns v1's generation.
fn two_generations() -> (Fixture, String) {
    let f = Fixture::new();
    set_inputs(&f, 1);
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    set_inputs(&f, 2);
    f.assemble_ok();
    (f, g1)
}

/// Killed while an old generation was being deleted (`--keep`), the next run
/// with that old generation's inputs called the half-deleted tree "a kept
/// generation with the same contents" and published it. Removal now renames
/// the generation to a tombstone first, and reuse checks completeness; the
/// hook fires inside every removal, file by file.
#[test]
fn killed_inside_a_removal_a_half_deleted_generation_is_never_published() {
    let probe = two_generations().0;
    set_inputs(&probe, 3);
    let steps = probe.assemble_ok()["steps"].as_u64().unwrap();
    for n in 1..=steps {
        let (f, g1) = two_generations();
        set_inputs(&f, 3);
        f.assemble_killed_at(n);
        f.assert_verifies();
        // Back to v1's inputs: whatever is left of ..g1 must not be taken for it.
        set_inputs(&f, 1);
        let r = f.assemble_ok();
        assert_eq!(r["generation"], g1.as_str(), "step {n}");
        let (code, out, err) = f.verify();
        assert_eq!(code, 0, "step {n}: {out}{err}");
        assert!(out.contains("0 errors, 0 warnings"), "step {n}: {out}{err}");
    }
}

/// A kept generation damaged by hand (a file deleted) is written afresh, not reused.
#[test]
fn an_incomplete_kept_generation_is_rewritten_not_reused() {
    let (f, g1) = two_generations();
    let victim = f.vol().join(&g1).join("core/actions");
    fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::remove_file(victim.join("echo.sh")).unwrap();
    set_inputs(&f, 1);
    let r = f.assemble_ok();
    assert_eq!(r["reused"], false, "{r}");
    assert_eq!(r["generation"], g1.as_str());
    f.assert_verifies();
    assert!(f.published("core/actions/echo.sh").is_file());
}

/// With the current generation's directory deleted, `assemble` said "up to
/// date; nothing written" while `verify` failed; only `--force` repaired it.
#[test]
fn a_deleted_current_generation_is_republished() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let g = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    crate::util::remove_tree(&f.vol().join(&g));
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], false, "{r}");
    f.assert_verifies();
    // And a current generation whose manifest is damaged gets a fresh copy too.
    let g = f.current_generation().unwrap();
    let mf = f.vol().join(&g).join(".attune-manifest.json");
    fs::set_permissions(
        f.vol().join(&g),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::remove_file(&mf).unwrap();
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], false, "{r}");
    assert_ne!(
        r["generation"],
        g.as_str(),
        "a fresh name beside the damaged copy"
    );
    f.assert_verifies();
    assert!(!f.vol().join(&g).exists(), "the damaged copy is collected");
}

/// A complete generation renamed into place but never committed (the disk
/// filled up before `..data` moved) stayed until a later run succeeded, so a
/// retry on a full disk failed again. It is now removed before writing.
#[test]
fn an_uncommitted_generation_is_removed_before_the_next_write() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let g1 = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    let stray = "..0123456789abcdef0123456789abcdef";
    copy_tree(&f.vol().join(&g1), &f.vol().join(stray));
    f.fresh_sensor("v2");
    // Killed after its first filesystem step: the stray is already out of the way.
    let out = f
        .assemble()
        .env("PACKS_ASSEMBLE_CRASH_AFTER", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!f.vol().join(stray).exists(), "{:?}", f.generations());
    f.assert_verifies();
    f.assemble_ok();
    f.assert_verifies();
}

/// A pack directory that is a symlink inside `--packs` was skipped silently;
/// when it was the only pack, an empty volume was published with exit 0.
#[test]
fn a_symlinked_pack_directory_is_an_error_not_an_empty_volume() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    fs::rename(f.packs().join("core"), f.path("real-core")).unwrap();
    symlink(f.path("real-core"), f.packs().join("core")).unwrap();
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("packs/core: error: is a symbolic link to a pack directory"),
        "{err}"
    );
    assert!(!f.vol().join("..data").exists(), "nothing was published");
}

/// An empty `--packs` directory would publish a volume without any pack.
#[test]
fn no_pack_at_all_is_an_error() {
    let f = Fixture::new();
    fs::create_dir_all(f.path("empty")).unwrap();
    let out = f
        .cmd()
        .args([
            "assemble", "--packs", "empty", "--arch", "amd64", "--out", "vol",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("no pack found in empty"));
}

/// A pack directory whose name is not UTF-8 was published, then failed
/// `verify`, and every later run exited 3; named directly with `--packs`, it
/// made the manifest's paths absolute (`/pack.yaml`).
#[test]
fn a_pack_directory_name_that_is_not_utf8_is_refused() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let bad = f.packs().join(OsStr::from_bytes(b"bad\xff"));
    copy_tree(&f.packs().join("core"), &bad);
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("pack directory name is not valid UTF-8"));
    let out = f
        .cmd()
        .arg("assemble")
        .arg("--packs")
        .arg(&bad)
        .args(["--arch", "amd64", "--out", "vol"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(!f.vol().join("..data").exists());
}

/// `entry_point: ./echo.sh` was reported missing although the file exists.
#[test]
fn an_entry_point_with_a_leading_dot_slash_is_found() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let yaml = f.packs().join("core/actions/echo.yaml");
    let text = fs::read_to_string(&yaml).unwrap();
    assert!(text.contains("entry_point: echo.sh"));
    fs::write(
        &yaml,
        text.replace("entry_point: echo.sh", "entry_point: ./echo.sh"),
    )
    .unwrap();
    let out = f.assemble().output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    f.assert_verifies();
}

/// Diagnostics printed raw newline, NUL and ESC bytes from file names, so a
/// hostile name could forge output lines or drive the terminal.
#[test]
fn control_characters_in_file_names_are_escaped_in_diagnostics() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    symlink("/etc/passwd", f.packs().join("core/evil\n\x1b[31mname")).unwrap();
    let out = f.assemble().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.contains("evil\\n\\u{1b}[31mname"), "{err}");
    assert!(f.published(SENSOR).symlink_metadata().is_err());
}

/// `inspect` exited 3 and `verify` 2 for the same missing path.
#[test]
fn a_missing_path_is_a_usage_error_for_inspect_and_verify_alike() {
    let f = Fixture::new();
    for cmd in ["inspect", "verify"] {
        let out = f.cmd().args([cmd, "nowhere"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains("nowhere does not exist"), "{cmd}");
    }
}

// ---------------------------------------------------------------------------
// Adversarial round 4 (issue 25)
// ---------------------------------------------------------------------------

/// `cmd` bounded in time: a run that hangs fails the test instead of the suite.
fn bounded(mut cmd: assert_cmd::Command) -> std::process::Output {
    cmd.timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap_or_else(|e| panic!("the run did not finish: {e}"))
}

/// Waits until process `pid` is stopped (SIGSTOP); panics if it ends first.
fn wait_stopped(child: &mut std::process::Child) {
    for _ in 0..6000 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it stopped: {status}");
        }
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let state = stat.rsplit_once(") ").unwrap().1.split(' ').next().unwrap();
        if state == "T" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the run never stopped");
}

/// Overwrites the published file `path` in place with as many `!` (same size).
fn edit_in_place(path: &std::path::Path) {
    let real = fs::canonicalize(path).unwrap();
    let len = fs::metadata(&real).unwrap().len() as usize;
    let mut f = fs::OpenOptions::new().write(true).open(&real).unwrap();
    std::io::Write::write_all(&mut f, "!".repeat(len).as_bytes()).unwrap();
}

/// A cold publish of the sensor `v1`, stopped (SIGSTOP) after its `n`-th step.
fn stopped_at(n: u64) -> (Fixture, std::process::Child) {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("packs-assemble"))
        .current_dir(f.tmp.path())
        .args(crate::util::ASSEMBLE)
        .args(["--no-sync", "-q"])
        .env_remove("PACKS_ASSEMBLE_CRASH_AFTER")
        .env("PACKS_ASSEMBLE_STOP_AFTER", n.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_stopped(&mut child);
    (f, child)
}

fn resume(child: &mut std::process::Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::CONT,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Step 10 recorded the stamps of the files the run had just written without
/// reading them again: a file edited in place after its object was sealed and
/// before the run ended was recorded as confirmed, and every later run said
/// "up to date" and served the edit.
#[test]
fn a_file_edited_while_its_run_publishes_is_read_again_and_repaired() {
    let probe = Fixture::new();
    probe.fresh_sensor("v1");
    let steps = probe.assemble_ok()["steps"].as_u64().unwrap();
    // The first step after which the stamps record exists (its rename).
    let stamps = |f: &Fixture| f.vol().join(".attune-assemble-stamps").exists();
    let (mut lo, mut hi) = (1, steps);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (f, mut child) = stopped_at(mid);
        let written = stamps(&f);
        resume(&mut child);
        if written { hi = mid } else { lo = mid + 1 }
    }
    // Stopped before the stamps' temporary file is created: after the commit.
    let (f, mut child) = stopped_at(lo - 2);
    assert!(f.current_generation().is_some(), "stopped after the commit");
    assert!(!stamps(&f), "stopped before the stamps are written");
    edit_in_place(&f.published("core/actions/echo.yaml"));
    resume(&mut child);
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], false, "{r}");
    assert_eq!(r["repaired"], serde_json::json!(["core/actions/echo.yaml"]));
    assert_eq!(
        fs::read(f.published("core/actions/echo.yaml")).unwrap(),
        fs::read(f.packs().join("core/actions/echo.yaml")).unwrap()
    );
    f.assert_verifies();
}

/// Writes through a shared writable mapping fault (and move the file's times)
/// only once per page until writeback cleans it: a run that read the file
/// after the first write recorded its stamp, the next write through the same
/// mapping moved nothing, and the run after said "up to date, every file
/// confirmed", exit 0, serving the edit.
#[test]
fn writes_through_a_shared_mapping_are_never_confirmed_up_to_date() {
    use std::io::{BufRead, Write};
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let path = f.published("core/actions/echo.yaml");
    let real = fs::canonicalize(&path).unwrap();
    // A writer holding a shared writable mapping (python3's mmap: this crate
    // forbids unsafe code): a write of the same first byte, then on request
    // the whole file overwritten through the same mapping.
    let script = "import mmap, sys\n\
f = open(sys.argv[1], 'r+b')\n\
m = mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n\
m[0:1] = m[0:1]\n\
print('mapped', flush=True)\n\
sys.stdin.readline()\n\
m[:] = b'!' * len(m)\n\
print('written', flush=True)\n\
sys.stdin.readline()\n";
    let mut writer = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&real)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the mapping writer");
    let mut to = writer.stdin.take().unwrap();
    let mut from = std::io::BufReader::new(writer.stdout.take().unwrap());
    let mut line = String::new();
    from.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "mapped");
    // The first write faulted and moved the times; the contents are the same.
    let r = f.assemble_ok();
    assert_eq!(r["up_to_date"], true, "{r}");
    let ctime = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let before = ctime(&real);
    writeln!(to).unwrap();
    line.clear();
    from.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "written");
    assert_eq!(
        ctime(&real),
        before,
        "the second write through the mapping moved no time"
    );
    let r = f.assemble_ok();
    writeln!(to).unwrap();
    writer.wait().unwrap();
    assert_eq!(r["up_to_date"], false, "{r}");
    assert_eq!(r["repaired"], serde_json::json!(["core/actions/echo.yaml"]));
    assert_eq!(
        fs::read(&path).unwrap(),
        fs::read(f.packs().join("core/actions/echo.yaml")).unwrap()
    );
    f.assert_verifies();
}

/// A current manifest cut short stopped every run with exit 3 ("run with
/// --force"), so an init container failed every start; an unreadable header
/// republished. Damage anywhere in it is now a missing manifest.
#[test]
fn a_truncated_current_manifest_is_republished_from_the_inputs() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let mf = f
        .vol()
        .join(f.current_generation().unwrap())
        .join(".attune-manifest.json");
    let bytes = fs::read(&mf).unwrap();
    fs::write(&mf, &bytes[..bytes.len() / 2]).unwrap();
    let out = bounded({
        let mut c = f.assemble();
        c.arg("--json");
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["up_to_date"], false, "{r}");
    assert!(
        stderr_of(&out).contains(".attune-manifest.json"),
        "the damaged manifest is named: {}",
        stderr_of(&out)
    );
    f.assert_verifies();
}

/// A FIFO at `.attune-assemble-facts` or `.attune-assemble-stamps` hung the
/// run while it held the lock (and a link to /dev/zero read forever):
/// bookkeeping files are opened without following links, without blocking,
/// regular files only, bounded; anything else is a missing cache.
#[test]
fn a_fifo_or_a_link_at_a_bookkeeping_name_is_a_missing_cache_never_a_hang() {
    for name in [
        ".attune-assemble-facts",
        ".attune-assemble-stamps",
        ".attune-assemble-cache",
    ] {
        for fifo in [true, false] {
            let f = Fixture::new();
            f.fresh_sensor("v1");
            f.assemble_ok();
            let p = f.vol().join(name);
            let _ = fs::remove_file(&p);
            if fifo {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
            } else {
                symlink("/dev/zero", &p).unwrap();
            }
            let out = bounded({
                let mut c = f.assemble();
                c.arg("--json");
                c
            });
            assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr_of(&out));
            f.assert_verifies();
        }
    }
}

/// `.attune-lock` as a symbolic link made the run create the link's target
/// outside the volume (and a FIFO there hung it): the lock is opened without
/// following links or blocking, and anything but a regular file is refused
/// with exit 3, naming it.
#[test]
fn the_lock_is_never_taken_through_a_link_or_a_fifo() {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble_ok();
    let lock = f.vol().join(".attune-lock");
    let outside = f.path("outside/made-by-the-lock");
    fs::create_dir_all(outside.parent().unwrap()).unwrap();
    fs::remove_file(&lock).unwrap();
    symlink(&outside, &lock).unwrap();
    let out = bounded(f.assemble());
    assert!(!outside.exists(), "the link's target was created");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(".attune-lock"),
        "{}",
        stderr_of(&out)
    );
    fs::remove_file(&lock).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &lock,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let out = bounded(f.assemble());
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(".attune-lock"),
        "{}",
        stderr_of(&out)
    );
}

/// `rollback` confirmed a generation's objects but not its own pack links: a
/// link pointing outside the volume was committed with exit 0 ("2 files
/// confirmed") and served.
#[test]
fn rollback_refuses_a_generation_whose_pack_link_leaves_the_store() {
    let (f, g1) = two_generations();
    let current = f.current_generation().unwrap();
    let link = f.vol().join(&g1).join("core");
    let outside = f.path("outside/core");
    copy_tree(&fs::canonicalize(&link).unwrap(), &outside);
    fs::remove_file(&link).unwrap();
    symlink(&outside, &link).unwrap();
    let out = bounded({
        let mut c = f.cmd();
        c.args(["rollback", "vol", &g1]);
        c
    });
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("core"), "{}", stderr_of(&out));
    assert_eq!(f.current_generation().unwrap(), current);
}

/// Generation order came from directory ctimes: after publishing A, B, A,
/// `rollback` said there was no older generation, and a no-op `chmod` of a
/// kept generation changed which one it picked.
#[test]
fn rollback_follows_the_publish_order_not_directory_times() {
    let f = Fixture::new();
    set_inputs(&f, 1);
    let a = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    set_inputs(&f, 2);
    let b = f.assemble_ok()["generation"].as_str().unwrap().to_string();
    set_inputs(&f, 1);
    assert_eq!(f.assemble_ok()["generation"], a.as_str());
    let out = bounded({
        let mut c = f.cmd();
        c.args(["rollback", "vol"]);
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(f.current_generation().unwrap(), b);

    let f = Fixture::new();
    let mut gens = vec![];
    for v in 1..=3 {
        set_inputs(&f, v);
        let out = bounded({
            let mut c = f.assemble();
            c.args(["--keep", "3", "--json"]);
            c
        });
        assert!(out.status.success(), "{}", stderr_of(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        gens.push(r["generation"].as_str().unwrap().to_string());
    }
    // A chmod that changes nothing but the directory's ctime.
    let b_dir = f.vol().join(&gens[1]);
    let m = fs::metadata(&b_dir).unwrap().permissions();
    fs::set_permissions(&b_dir, m).unwrap();
    let out = bounded({
        let mut c = f.cmd();
        c.args(["rollback", "vol"]);
        c
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(f.current_generation().unwrap(), gens[1]);
}
