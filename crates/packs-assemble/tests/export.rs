//! `export` and `check-image` from the command line: the packs image of a
//! volume in both formats and on stdout, the same bytes every time, accepted
//! by the layout check that every packs image (the flake's too) must pass;
//! the refusals and their exit codes; and docker/IMAGE-LAYOUT.md's section on
//! the packs image, which must say what the check asserts.

use std::fs;
use std::io::Read;
use std::path::Path;

use attune_image::image_layout::{self as layout, BASE, Body};
use attune_pack::Arch;
use attune_pack::fixtures::ElfSpec;
use attune_volume::manifest::{MODE_EXEC, MODE_FILE};
use attune_volume::scan::Kind;
use serde_json::Value;

use crate::util::{Fixture, stderr_of};

/// A fixture with an assembled amd64 volume and static assemblers of both arches.
fn fixture() -> Fixture {
    let f = Fixture::new();
    f.fresh_sensor("v1");
    f.assemble().arg("-q").assert().success();
    f.write_elf("pa-amd64", ElfSpec::static_pie(Arch::Amd64));
    f.write_elf("pa-arm64", ElfSpec::static_pie(Arch::Arm64));
    f
}

/// `export` of the fixture's volume for amd64 to `out`, which must succeed.
fn export_to(f: &Fixture, out: &str) -> assert_cmd::assert::Assert {
    f.cmd().args(EXPORT).args(["--out", out]).assert().success()
}

const EXPORT: [&str; 7] = [
    "export",
    "--volume",
    "vol",
    "--assembler",
    "pa-amd64",
    "--arch",
    "amd64",
];

/// The members of a tar archive by name.
pub(crate) fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut body = vec![];
            e.read_to_end(&mut body).unwrap();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                body,
            )
        })
        .collect()
}

/// The config of a docker archive.
fn config_of(archive: &[u8]) -> Value {
    let m = members(archive);
    let get = |n: &str| m.iter().find(|(name, _)| name == n).unwrap().1.clone();
    let manifest: Value = serde_json::from_slice(&get("manifest.json")).unwrap();
    serde_json::from_slice(&get(manifest[0]["Config"].as_str().unwrap())).unwrap()
}

fn check_image_json(f: &Fixture, image: &str, stdin: Option<Vec<u8>>) -> (i32, Value) {
    let mut c = f.cmd();
    c.args(["check-image", "--json", "--arch", "amd64", image]);
    if let Some(bytes) = stdin {
        c.write_stdin(bytes);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

#[test]
fn export_writes_one_image_that_check_image_accepts_in_every_form() {
    let f = fixture();
    let out = export_to(&f, "img.tar");
    let reference = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        reference.starts_with("attune/packs:")
            && reference.trim().len() == "attune/packs:".len() + 16,
        "{reference}"
    );
    let file = fs::read(f.path("img.tar")).unwrap();
    // The same bytes again, and on stdout.
    export_to(&f, "again.tar");
    assert_eq!(fs::read(f.path("again.tar")).unwrap(), file);
    let piped = export_to(&f, "-");
    assert_eq!(
        piped.get_output().stdout,
        file,
        "--out - writes the same archive to stdout"
    );
    f.cmd()
        .args(EXPORT)
        .args(["--format", "oci", "--out", "oci"])
        .assert()
        .success();

    let (code, archive) = check_image_json(&f, "img.tar", None);
    assert_eq!(code, 0, "{archive:#}");
    assert_eq!(archive["ok"], true);
    assert_eq!(archive["packs"], serde_json::json!(["core"]));
    assert_eq!(archive["tags"], serde_json::json!([reference.trim()]));
    let (code, oci) = check_image_json(&f, "oci", None);
    assert_eq!(code, 0, "{oci:#}");
    let (code, stdin) = check_image_json(&f, "-", Some(file));
    assert_eq!(code, 0, "{stdin:#}");
    for other in [&oci, &stdin] {
        assert_eq!(
            (&other["config_digest"], &other["layers"]),
            (&archive["config_digest"], &archive["layers"])
        );
    }
    assert_eq!(
        archive["layers"].as_array().unwrap().len(),
        2,
        "the base and core"
    );
}

#[test]
fn source_date_epoch_sets_every_time_in_the_image() {
    let f = fixture();
    export_to(&f, "default.tar");
    f.cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(EXPORT)
        .args(["--out", "dated.tar"])
        .assert()
        .success();
    let dated = fs::read(f.path("dated.tar")).unwrap();
    let config = config_of(&dated);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        config_of(&fs::read(f.path("default.tar")).unwrap())["created"],
        "1970-01-01T00:00:01Z"
    );
    // Every entry carries that time (check-image compares each with `created`).
    let (code, r) = check_image_json(&f, "dated.tar", None);
    assert_eq!(code, 0, "{r:#}");
    let layer = members(&dated)
        .into_iter()
        .find(|(n, _)| n.ends_with(".tar"))
        .unwrap()
        .1;
    let mut a = tar::Archive::new(layer.as_slice());
    for e in a.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 1_700_000_000);
    }
}

#[test]
fn export_refuses_with_an_exit_code_that_says_why() {
    let f = fixture();
    f.write("exists.tar", "x");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--assembler", "pa-arm64", "--out", "a.tar"],
            1,
            "would not run in an empty amd64 container",
        ),
        (
            &["--volume", "nope", "--out", "a.tar"],
            2,
            "--volume nope does not exist",
        ),
        (
            &["--assembler", "nope", "--out", "a.tar"],
            2,
            "--assembler nope does not exist",
        ),
        (&["--out", "exists.tar"], 2, "--out exists.tar exists"),
        (
            &["--format", "oci", "--out", "-"],
            2,
            "only a docker archive",
        ),
        (
            &["--json", "--out", "-"],
            2,
            "--json prints the result on stdout",
        ),
        (&["--tag", ".x", "--out", "a.tar"], 2, "is not a docker tag"),
        (
            &["--name", "Attune/Packs", "--out", "a.tar"],
            2,
            "is not a docker repository name",
        ),
    ];
    for (extra, code, message) in cases {
        let mut args: Vec<&str> = EXPORT.to_vec();
        // Later flags replace earlier ones for --volume and --assembler.
        for pair in extra.chunks(2) {
            if let Some(i) = args.iter().position(|a| *a == pair[0]) {
                args.drain(i..=i + 1);
            }
        }
        let out = f.cmd().args(&args).args(*extra).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{extra:?}: {}",
            stderr_of(&out)
        );
        assert!(
            stderr_of(&out).contains(message),
            "{extra:?}: {}",
            stderr_of(&out)
        );
        assert!(!f.path("a.tar").exists(), "{extra:?}: nothing was written");
    }
    // A volume that does not verify: nothing is written, exit 1.
    let published = f.published("core/pack.yaml");
    let store_dir = fs::canonicalize(published.parent().unwrap()).unwrap();
    fs::set_permissions(
        &store_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::remove_file(&published).unwrap();
    fs::write(
        store_dir.join("pack.yaml"),
        "ref: core\nlabel: Tampered\nversion: 1.0.0\n",
    )
    .unwrap();
    let out = f
        .cmd()
        .args(EXPORT)
        .args(["--out", "a.tar"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no image was written"),
        "{}",
        stderr_of(&out)
    );
    assert!(!f.path("a.tar").exists());
}

#[test]
fn check_image_fails_an_incomplete_archive_with_exit_1() {
    let f = fixture();
    export_to(&f, "img.tar");
    // The same archive without its last layer (core's).
    let all = members(&fs::read(f.path("img.tar")).unwrap());
    let manifest: Value =
        serde_json::from_slice(&all.iter().find(|(n, _)| n == "manifest.json").unwrap().1).unwrap();
    let dropped = manifest[0]["Layers"][1].as_str().unwrap().to_string();
    let mut b = tar::Builder::new(vec![]);
    for (name, body) in all.iter().filter(|(n, _)| *n != dropped) {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_slice()).unwrap();
    }
    fs::write(f.path("broken.tar"), b.into_inner().unwrap()).unwrap();
    let out = f
        .cmd()
        .args(["check-image", "broken.tar"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(&format!(
            "{dropped} is listed in manifest.json but not in the archive"
        )),
        "{}",
        stderr_of(&out)
    );
}

/// docker/IMAGE-LAYOUT.md's rows for the base layer, from the layout itself.
fn base_table() -> String {
    let mut t = "| path | type | mode | owner | holds |\n|---|---|---|---|---|\n".to_string();
    for e in BASE {
        let kind = if e.kind == Kind::Dir { "dir" } else { "file" };
        let holds = match e.body {
            Body::None => " ".to_string(),
            Body::Passwd | Body::Group => {
                let text = e.body.text().unwrap_or_default();
                let lines: Vec<String> = text.lines().map(|l| format!("`{l}`")).collect();
                format!(" {} ", lines.join(", "))
            }
            Body::Assembler => {
                " the static packs-assemble of the image's architecture ".to_string()
            }
        };
        t.push_str(&format!(
            "| `/{}` | {kind} | {:04o} | {}:{} |{holds}|\n",
            e.path, e.mode, e.owner.0, e.owner.1
        ));
    }
    t
}

/// The layout is asserted once (`check-image`, from attune-image's src/image_layout.rs) for
/// the images of both builders; the document must say the same.
#[test]
fn image_layout_md_says_what_check_image_asserts() {
    let doc = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker/IMAGE-LAYOUT.md"),
    )
    .unwrap();
    let doc = doc
        .split("## The packs image")
        .nth(1)
        .expect("IMAGE-LAYOUT.md has a section `## The packs image`");
    let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        doc.contains(&base_table()),
        "the base layer's table differs from attune-image's src/image_layout.rs; it is:\n{}",
        base_table()
    );
    let parents: Vec<String> = layout::PACK_PARENTS
        .iter()
        .map(|p| format!("`/{p}`"))
        .collect();
    let entrypoint = layout::entrypoint(Arch::Amd64)
        .join(" ")
        .replace("amd64", "<arch>");
    let (title, title_value) = layout::label_title();
    for want in [
        format!(
            "the directories {} ({:04o}, 0:0)",
            parents.join(", "),
            layout::PARENT_MODE
        ),
        format!("`/{}/<pack>/...`", layout::PACKS_SRC),
        format!(
            "directories {:04o}, files {MODE_FILE:04o} or {MODE_EXEC:04o}, owner 0:0",
            layout::PACK_DIR_MODE
        ),
        format!(
            "`User` `{}`, `WorkingDir` `{}`, `Env` `{}`",
            layout::user(),
            layout::working_dir(),
            layout::env().join(" ")
        ),
        format!(
            "`Entrypoint` `{entrypoint}`, `Cmd` `{}`",
            layout::cmd().join(" ")
        ),
        format!("`{}` (`<arch>`)", layout::label_arch()),
        format!(
            "`{}` (the packs, space-separated, in layer order)",
            layout::LABEL_PACKS
        ),
        format!(
            "`{}` (the volume manifest's root hash)",
            layout::LABEL_ROOT_HASH
        ),
        format!("`{title}` (`{title_value}`)"),
        format!(
            "`created` the entries' mtime (`{}` by default)",
            layout::created(1)
        ),
    ] {
        assert!(flat.contains(&want), "IMAGE-LAYOUT.md does not say: {want}");
    }
}

/// `check-image` on an OCI layout whose layer blob was a FIFO or a link to
/// `/dev/zero` ran forever: blobs were opened following links and read to EOF.
/// They are opened without following links or blocking, regular files only,
/// and read no further than the size their descriptor gives.
#[test]
fn check_image_never_hangs_on_a_layer_blob_that_is_a_fifo_or_a_link_to_dev_zero() {
    let f = fixture();
    f.cmd()
        .args(EXPORT)
        .args(["--format", "oci", "--out", "oci"])
        .assert()
        .success();
    let blobs = f.path("oci/blobs/sha256");
    let index: Value =
        serde_json::from_slice(&fs::read(f.path("oci/index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&fs::read(blobs.join(&m["sha256:".len()..])).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = blobs.join(&layer["sha256:".len()..]);
    for fifo in [true, false] {
        fs::remove_file(&blob).unwrap();
        if fifo {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &blob,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
        } else {
            std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
        }
        let out = f
            .cmd()
            .args(["check-image", "--json", "--arch", "amd64", "oci"])
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap_or_else(|e| panic!("check-image did not finish: {e}"));
        assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["ok"], false, "{r}");
        assert!(
            r.to_string().contains(&layer["sha256:".len()..]),
            "the blob is named: {r}"
        );
    }
}
