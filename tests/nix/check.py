"""Assertions of the Nix wiring test (see tests/nix/run)."""
import json
import os
import re
import subprocess
import sys

ROOT = os.getcwd()
NIX = ["nix", "--extra-experimental-features", "nix-command", "--extra-experimental-features", "flakes"]
STUBS = []
for name in ("nixpkgs", "crane", "fenix"):
    STUBS += ["--override-input", name, f"path:{ROOT}/tests/nix/{name}"]
STUBS.append("--no-write-lock-file")

passed = failed = 0

# arches.tsv, the one table of the architectures (Rust, scripts and nix/targets.nix read it).
_lines = [l.split() for l in open(os.path.join(ROOT, "arches.tsv")) if l.strip() and not l.lstrip().startswith("#")]
ARCHES = [dict(zip(_lines[0], row)) for row in _lines[1:]]
# crates/attune-image/services.json, the one layout of the service images
# (packs-assemble export-rootfs --service NAME writes it, nix/images.nix reads it).
LAYOUT = json.load(open(os.path.join(ROOT, "crates/attune-image/services.json")))
IMAGES = ("api", "worker", "sensor", "packs-init", "agent")


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name} {detail}")


def nix(*args):
    r = subprocess.run(NIX + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"nix {' '.join(args[:3])} failed:\n{r.stderr}")
    return r.stdout


def eval_json(attr, apply):
    return json.loads(nix("eval", "--json", f".#{attr}", "--apply", apply, *STUBS))


# 1. Every .nix file parses.
tracked = subprocess.run(["git", "ls-files", "*.nix"], capture_output=True, text=True, check=True).stdout.split()
bad = [f for f in tracked if subprocess.run(["nix-instantiate", "--parse", f], capture_output=True).returncode != 0]
check(f"all {len(tracked)} .nix files parse", not bad, bad)

# 2. flake.lock pins exactly the shared revisions and hashes.
pins = json.load(open(os.path.join(ROOT, "../shared/nix-pins.json")))
lock = json.load(open("flake.lock"))
for name in ("nixpkgs", "crane", "fenix", "rust-analyzer-src"):
    locked = lock["nodes"][name]["locked"]
    want = {k: pins[name][k] for k in ("rev", "narHash", "lastModified", "owner", "repo")}
    check(f"flake.lock pins {name} as nix-pins.json", {k: locked.get(k) for k in want} == want, locked)
check("fenix follows the flake's nixpkgs", lock["nodes"]["fenix"]["inputs"]["nixpkgs"] == ["nixpkgs"])

# 3. Every output evaluates, for the four build systems.
SYSTEMS = ("x86_64-linux", "aarch64-linux", "aarch64-darwin", "x86_64-darwin")
show = json.loads(nix("flake", "show", "--json", *STUBS))
want_packages = {
    "pack-binaries-amd64", "pack-binaries-arm64", "services-amd64", "services-arm64",
    "pack-binaries-x86_64", "pack-binaries-aarch64", "pack-binaries", "default", "services-x86_64", "services-aarch64",
    "packs-volume-amd64", "packs-volume-arm64", "packs-image-amd64", "packs-image-arm64",
} | {f"image-{n}-{a}" for n in IMAGES for a in ("amd64", "arm64")}
for system in SYSTEMS:
    check(f"packages.{system} lists every package", want_packages <= set(show["packages"][system]), sorted(want_packages - set(show["packages"][system])))
    # flake show fails ("not an app definition") if apps come from callPackage, whose
    # stub adds override/overrideDerivation as the real one does.
    check(f"apps.{system}: up, up-amd64, up-arm64, down, logs, publish and nothing else", set(show["apps"][system]) == {"up", "up-amd64", "up-arm64", "down", "logs", "publish"}, sorted(show["apps"][system]))
    checks = set(show["checks"][system])
    want_checks = {"clippy", "fmt", "deny", "packs-check", "verify-volume-amd64", "verify-volume-arm64"} | want_packages
    runs_linux = {"nextest", "arm64-smoke"}
    if system.endswith("-linux"):
        want_checks |= runs_linux
    else:
        check(f"checks.{system}: nothing that runs Linux binaries (nextest, arm64-smoke)", not (runs_linux & checks), sorted(runs_linux & checks))
    check(f"checks.{system} include every package and check", want_checks <= checks, sorted(want_checks - checks))
    check(f"devShells.{system}.default and formatter", "default" in show["devShells"][system] and system in show["formatter"])

# 4. What the builds were asked to do, from each build system.
P = """p: let
  rd = d: d.recorded;
  img = name: arch: let r = rd p."image-${name}-${arch}"; in {
    inherit (r) architecture created name tag fakeRootCommands;
    user = r.config.User; entrypoint = r.config.Entrypoint; cmd = r.config.Cmd; env = r.config.Env;
    workdir = r.config.WorkingDir; labels = r.config.Labels;
    contents = map (c: c.name) r.contents;
    systems = map (c: c.system) r.contents;
  };
  build = d: let r = rd d; in {
    inherit (r) CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS TARGET_CC TARGET_AR HOST_CC cargoExtraArgs doCheck;
    cc = r."CC_${r.CARGO_BUILD_TARGET}"; ar = r."AR_${r.CARGO_BUILD_TARGET}";
    depsDoCheck = (rd r.cargoArtifacts).doCheck or "crane default";
    linker = builtins.head (map (k: r.${k}) (builtins.filter (k: builtins.match "CARGO_TARGET_.*_LINKER" k != null) (builtins.attrNames r)));
    profile = r.CARGO_PROFILE or "release";
    toolchain = r.toolchain.recorded.components;
    deps = r.cargoArtifacts.drvPath;
    depsTarget = (rd r.cargoArtifacts).CARGO_BUILD_TARGET;
  };
in {
  sensorA = build p.pack-binaries-aarch64.sensor;
  sensorX = build p.pack-binaries-x86_64.sensor;
  servicesA = build p.services-aarch64;
  servicesX = build p.services-x86_64;
  servicesAPath = p.services-aarch64.outPath;
  servicesXPath = p.services-x86_64.outPath;
  binsA = { refs = (rd p.pack-binaries-aarch64).allowedReferences; script = (rd p.pack-binaries-aarch64).script; path = p.pack-binaries-aarch64.outPath; };
  hostBinsX = p.pack-binaries.outPath == p.pack-binaries-x86_64.outPath && p.default.outPath == p.pack-binaries-x86_64.outPath;
  aliases = p.pack-binaries-amd64.outPath == p.pack-binaries-x86_64.outPath && p.pack-binaries-arm64.outPath == p.pack-binaries-aarch64.outPath
    && p.services-amd64.outPath == p.services-x86_64.outPath && p.services-arm64.outPath == p.services-aarch64.outPath;
  hostBinsA = p.pack-binaries.outPath == p.pack-binaries-aarch64.outPath && p.default.outPath == p.pack-binaries-aarch64.outPath;
  tool = let r = rd p.packs-assemble; in { path = p.packs-assemble.outPath; target = r.CARGO_BUILD_TARGET or null; args = r.cargoExtraArgs or null; };
  volumeA = { script = (rd p.packs-volume-arm64).script; tools = map (t: t.outPath) (rd p.packs-volume-arm64).nativeBuildInputs; };
  images = builtins.listToAttrs (builtins.concatMap (a: map (n: { name = "${n}-${a}"; value = img n a; }) ["api" "worker" "sensor" "packs-init" "agent"]) ["amd64" "arm64"]);
}"""
def builds(system):
    """The build assertions of one build system; check names start with it."""
    host = "aarch64" if system.startswith("aarch64") else "x86_64"
    check = lambda name, ok, detail="": globals()["check"](f"{system}: {name}", ok, detail)
    v = eval_json(f"packages.{system}", P)
    sa, sx = v["sensorA"], v["sensorX"]
    check("aarch64 pack binaries: target aarch64-unknown-linux-musl", sa["CARGO_BUILD_TARGET"] == "aarch64-unknown-linux-musl", sa)
    check("aarch64 pack binaries: +crt-static", "target-feature=+crt-static" in sa["CARGO_BUILD_RUSTFLAGS"], sa)
    for name, bld, zt in (("aarch64 sensor", sa, "aarch64-linux-musl"), ("x86_64 sensor", sx, "x86_64-linux-musl"), ("aarch64 services", v["servicesA"], "aarch64-linux-musl"), ("x86_64 services", v["servicesX"], "x86_64-linux-musl")):
        check(f"{name}: Zig is linker, TARGET_CC and CC_<target> ({zt}), no cross GCC", bld["linker"].endswith(f"-zig-cc-{zt}") and bld["TARGET_CC"] == bld["cc"] == bld["linker"] and "musl-cc" not in bld["linker"], bld)
        check(f"{name}: zig ar is TARGET_AR and AR_<target>", bld["TARGET_AR"].endswith(f"-zig-ar-{zt}") and bld["ar"] == bld["TARGET_AR"], bld)
        check(f"{name}: musl C runtime from Zig (link-self-contained=no), build scripts by this system's cc", "link-self-contained=no" in bld["CARGO_BUILD_RUSTFLAGS"] and bld["HOST_CC"].endswith("/bin/cc"), bld)
    check("x86_64 pack binaries: target x86_64-unknown-linux-musl, +crt-static", sx["CARGO_BUILD_TARGET"] == "x86_64-unknown-linux-musl" and "+crt-static" in sx["CARGO_BUILD_RUSTFLAGS"], sx)
    check("the sensor builds with the pack-binary profile, alone, --locked", sa["profile"] == "pack-binary" and sa["cargoExtraArgs"] == "--locked -p core-timer-sensor", sa)
    want_tc = {"stable-cargo", "stable-rustc", "stable-clippy", "stable-rustfmt"} | {f"{a['rust_musl']}-stable-rust-std" for a in ARCHES}
    check("toolchain: fenix combine of stable cargo/rustc/clippy/rustfmt + the musl rust-std of every arches.tsv row", set(sa["toolchain"]) == want_tc, sa["toolchain"])
    check("dependencies built per target, the sensor's in its own profile", len({sa["deps"], sx["deps"], v["servicesA"]["deps"], v["servicesX"]["deps"]}) == 4 and sa["depsTarget"] == "aarch64-unknown-linux-musl")
    check("services: the four binaries, --locked, tests left to nextest", v["servicesA"]["cargoExtraArgs"] == "--locked -p packs-assemble -p attune-api -p attune-worker -p attune-sensor" and v["servicesA"]["doCheck"] is False, v["servicesA"])
    check("the shared dependency build keeps crane's doCheck (dev-dependencies for clippy and nextest)", v["servicesA"]["depsDoCheck"] == "crane default", v["servicesA"]["depsDoCheck"])
    b = v["binsA"]
    check("pack-binaries-aarch64: no store references, core/sensors layout", b["refs"] == [] and "$out/core/sensors" in b["script"] and "/bin/attune-core-timer-sensor" in b["script"], b)
    check(f"pack-binaries and default are the host's ({host})", v["hostBinsA" if host == "aarch64" else "hostBinsX"])
    check("pack-binaries-amd64/-arm64 and services-amd64/-arm64 are the x86_64/aarch64 packages (one naming, the old names aliases)", v["aliases"])
    tool = v["tool"]
    if system.endswith("-linux"):
        host_services = v["servicesAPath"] if host == "aarch64" else v["servicesXPath"]
        check("packs-assemble at build time: this system's static build", tool["path"] == host_services, tool)
    else:
        check("packs-assemble at build time: a native build for the Mac (no Linux target)", tool["target"] is None and tool["args"] == "--locked -p packs-assemble" and tool["path"] not in (v["servicesAPath"], v["servicesXPath"]), tool)
    vol = v["volumeA"]
    check("packs-volume-arm64: packs-assemble of this system over arm64 binaries, verified", "--arch arm64" in vol["script"] and b["path"] in vol["script"] and "verify" in vol["script"] and vol["tools"] == [tool["path"]], vol)
    imgs = v["images"]
    for key, i in imgs.items():
        arch = key.rsplit("-", 1)[1]
        check(f"image {key}: architecture {arch}, uid 1000, fixed created, name and tag", i["architecture"] == arch and i["user"] == "1000:1000" and i["created"].startswith("1970") and i["name"] == "attune/" + key.rsplit("-", 1)[0] and len(i["tag"]) == 16, i)
        check(f"image {key}: holds no packs", not any("packs" == c or c.endswith("-packs") for c in i["contents"]), i["contents"])
    svc_a = v["servicesAPath"]
    common = LAYOUT["common"]
    for key, i in imgs.items():
        name, arch = key.rsplit("-", 1)
        lay = LAYOUT["services"][name]
        sub = lambda xs: [arch if x == "{arch}" else x for x in xs]
        check(f"image {key}: the layout's config (services.json): Entrypoint, Cmd, User, WorkingDir, Env, labels",
              i["entrypoint"] == sub(lay["entrypoint"]) and i["cmd"] == sub(lay.get("cmd", [])) and i["user"] == common["user"]
              and i["workdir"] == common["working_dir"] and i["env"] == common["env"]
              and i["labels"] == {common["label_arch"]: arch, common["label_title"]: f"attune {name}"}, i)
        roles = ["worker", "runtime-python"] if name == "worker" else [name]
        mounts = common["mounts"] + [m for r in roles for m in LAYOUT["services"][r].get("mounts", []) if m not in common["mounts"]]
        dirs = " ".join(f"'{m[1:]}'" for m in mounts)
        frc = i["fakeRootCommands"]
        check(f"image {key}: the layout's mount points, owned by 1000 and nothing else; passwd and group with root and attune; /tmp 1777",
              f"mkdir -p {dirs} " in frc and f"chown 1000:1000 {dirs}\n" in frc and "chown -R" not in frc
              and "printf '%s' '" + common["passwd"] + "' > etc/passwd" in frc and "printf '%s' '" + common["group"] + "' > etc/group" in frc
              and "chmod 1777 tmp" in frc, frc)
    w = imgs["worker-arm64"]
    runtime = {c: sys_ for c, sys_ in zip(w["contents"], w["systems"]) if c in ("bash", "coreutils", "python3")}
    check("arm64 worker image: bash, coreutils, python3 of nixpkgs' aarch64-linux set (cached, not cross-built)", runtime == {"bash": "aarch64-linux", "coreutils": "aarch64-linux", "python3": "aarch64-linux"}, runtime)
    pi = imgs["packs-init-arm64"]
    check("arm64 packs-init assembles /source/packs with the aarch64 binaries tree at /opt/attune/pack-binaries", pi["entrypoint"] == ["/usr/local/bin/packs-assemble"] and pi["cmd"][:3] == ["assemble", "--packs", "/source/packs"] and "/opt/attune/pack-binaries" in pi["cmd"] and f"ln -s {b['path']} opt/attune/pack-binaries" in pi["fakeRootCommands"] and "arm64" in pi["cmd"], pi)
    # The compose file's healthcheck and docker/IMAGE-LAYOUT.md: binaries at /usr/local/bin.
    compose = open("compose.yaml").read()
    health = [l for l in compose.splitlines() if "healthcheck" in l or "--healthcheck" in l]
    check("compose's healthcheck calls /usr/local/bin/attune-api", any('"/usr/local/bin/attune-api", "--healthcheck"' in l for l in health), health)
    for key, i in imgs.items():
        svc = v["servicesAPath"] if key.endswith("arm64") else v["servicesXPath"]
        links = f"for bin in {svc}/bin/*; do" in i["fakeRootCommands"] and 'ln -s "$bin" usr/local/bin/' in i["fakeRootCommands"]
        check(f"image {key}: every service binary also at /usr/local/bin, first on PATH", links and i["env"][0].startswith("PATH=/usr/local/bin:"), (i["fakeRootCommands"], i["env"]))
    for key in ("worker-arm64", "agent-amd64"):
        check(f"image {key}: /opt/attune/agent a mount point of uid 1000 (the agent volume takes its owner)", "'opt/attune/agent'" in imgs[key]["fakeRootCommands"].split("\n")[0], imgs[key]["fakeRootCommands"])
    pk = eval_json(f"packages.{system}", """p: let r = p.packs-image-arm64.recorded; in {
      inherit (r) script SOURCE_DATE_EPOCH; tools = map (t: t.outPath) r.nativeBuildInputs;
      tag = p.packs-image-arm64.imageTag; volume = p.packs-volume-arm64.outPath;
    }""")
    want_export = f"packs-assemble -q export --volume {pk['volume']}/volume \\\n  --assembler {svc_a}/bin/packs-assemble --arch arm64"
    check("packs-image-arm64: written by the one writer, packs-assemble export (this system's), from the arm64 volume with the aarch64 assembler",
          want_export in pk["script"] and pk["tools"] == [v["tool"]["path"]] and "--format docker-archive --out $out" in pk["script"], pk)
    check("packs-image-arm64: checked by packs-assemble check-image, fixed SOURCE_DATE_EPOCH, 16-hex tag",
          "packs-assemble -q check-image --arch arm64 $out" in pk["script"] and pk["SOURCE_DATE_EPOCH"] == "1" and len(pk["tag"]) == 16 and f"--tag {pk['tag']}" in pk["script"], pk)
    check("images of one arch share one content-derived tag", len({imgs[f"{n}-arm64"]["tag"] for n in IMAGES}) == 1 and imgs["api-arm64"]["tag"] != imgs["api-amd64"]["tag"])


for system in SYSTEMS:
    builds(system)


# 5. Checks: what each one runs.
C = """c: let r = d: d.recorded; in {
  clippy = (r c.clippy).cargoClippyExtraArgs;
  clippyTarget = (r c.clippy).CARGO_BUILD_TARGET;
  nextest = (r c.nextest).cargoNextestExtraArgs;
  nextestTools = map (t: t.name) (r c.nextest).nativeBuildInputs;
  nextestSameDeps = (r c.nextest).cargoArtifacts.drvPath == (r c.clippy).cargoArtifacts.drvPath
    && (r c.clippy).cargoArtifacts.drvPath == (r c.services-x86_64).cargoArtifacts.drvPath;
  deny = (r c.deny).cargoDenyChecks;
  named = map (n: (r c.${n}).pname or null) [ "fmt" "deny" ];
  testSrcKeeps = let s = (r c.nextest).src; root = toString s.stubCleanSourceWith.src; in
    map (p: s.filter "${root}/${p}" "regular") [ "crates/packs-assemble/tests/snapshots/x.snap" "packs/core/pack.yaml" "Cargo.lock" "arches.tsv" "docker/IMAGE-LAYOUT.md" ];
  srcKeeps = let s = (r c.clippy).src; root = toString s.stubCleanSourceWith.src; in
    map (p: s.filter "${root}/${p}" "regular") [ "arches.tsv" "crates/attune-pack/src/arch.rs" "Cargo.lock" "crates/attune-pack/Cargo.toml" "crates/attune-image/services.json" ];
  srcDrops = let s = (r c.clippy).src; root = toString s.stubCleanSourceWith.src; in
    map (p: s.filter "${root}/${p}" "regular") [ "docker/stack" "README.md" "crates/arches.tsv" ];
  testSrcDrops = let s = (r c.nextest).src; root = toString s.stubCleanSourceWith.src; in
    map (p: s.filter "${root}/${p}" "regular") [ "target/x" "docker/stack" ];
  smoke = (r c.arm64-smoke).script;
  packsCheck = (r c.packs-check).script;
  verifyArm = (r c.verify-volume-arm64).script;
  imageArch = (r c.image-arch-worker-arm64).script;
}"""
c = eval_json("checks.x86_64-linux", C)
check("clippy: whole workspace, all targets, --deny warnings", "--all-targets" in c["clippy"] and "--deny warnings" in c["clippy"], c["clippy"])
check("clippy, nextest share the host target's cargoArtifacts", c["nextestSameDeps"] and c["clippyTarget"] == "x86_64-unknown-linux-musl")
check("nextest: workspace without the nested-cargo stack tests", "--workspace" in c["nextest"] and "--exclude attune-stack-tests" in c["nextest"], c["nextest"])
check("nextest: pgrep available in the sandbox", "procps" in c["nextestTools"], c["nextestTools"])
check("cargo-deny offline checks: bans licenses sources", c["deny"] == "bans licenses sources", c["deny"])
check("fmt and deny carry pname and version (no crane warning)", c["named"] == ["attune", "attune"], c["named"])
check("nextest's source keeps snapshots, packs, Cargo files, arches.tsv and docker/IMAGE-LAYOUT.md (the tests read it), not target/", all(c["testSrcKeeps"]) and not any(c["testSrcDrops"]), (c["testSrcKeeps"], c["testSrcDrops"]))
check("the cargo builds' source: crane's Cargo sources, arches.tsv and services.json (attune-pack's and attune-image's include_str!), nothing else", all(c["srcKeeps"]) and not any(c["srcDrops"]), (c["srcKeeps"], c["srcDrops"]))
check("arm64 smoke runs the aarch64 binaries' --version under qemu-user's qemu-aarch64", "-qemu-user/bin/qemu-aarch64" in c["smoke"] and "--version" in c["smoke"] and "attune-core-timer-sensor" in c["smoke"], c["smoke"])
check("packs-check runs packs-assemble check on ./packs", " check " in c["packsCheck"] and c["packsCheck"].splitlines()[0].endswith("-packs"), c["packsCheck"])
check("verify-volume-arm64 runs verify --arch arm64", "verify --arch arm64" in c["verifyArm"], c["verifyArm"])
check("image architecture check reads the image config", "architecture == $arch" in c["imageArch"] and "arm64" in c["imageArch"], c["imageArch"])

# 6. `up` drives docker/stack with the images of one architecture only.
expr = f"""let
  lib = import {ROOT}/tests/nix/nixpkgs/lib.nix;
  one = name: arch: {{ imageTag = "it-${{name}}-${{arch}}"; outPath = "/${{name}}-${{arch}}"; }};
  img = arch: {{ tag = "tag-${{arch}}"; names = [ "packs-init" "api" "worker" "sensor" "agent" ]; agent = one "agent" arch; api = one "api" arch; worker = one "worker" arch; sensor = one "sensor" arch; packs-init = one "init" arch; packs = one "packs" arch; }};
  apps = import {ROOT}/nix/apps.nix {{
    inherit lib;
    writeShellScript = name: text: text;
    images = {{ amd64 = img "amd64"; arm64 = img "arm64"; }};
    docker = "/the/docker/dir";
    hostArch = "amd64";
    packs-assemble = "/the/packs-assemble";
  }};
in builtins.mapAttrs (_: a: {{ inherit (a) type program; }}) apps"""
apps = json.loads(nix("eval", "--json", "--impure", "--expr", expr))
up = apps["up"]["program"]
check("up: type app, runs docker/stack up", apps["up"]["type"] == "app" and "exec /the/docker/dir/stack up " in up, up)
check("up: this system's images only (never builds the other architecture)", "'attune/api:tag-amd64=/api-amd64'" in up and "arm64" not in up.split("ATTUNE_IMAGE_TAG")[1], up)
check("up-arm64: the arm64 images, ATTUNE_ARCH=arm64", "'attune/packs-init:tag-arm64=/init-arm64'" in apps["up-arm64"]["program"] and "ATTUNE_ARCH=arm64" in apps["up-arm64"]["program"] and "-amd64'" not in apps["up-arm64"]["program"])
pub = apps["publish"]["program"]
check("publish: loads every image of both architectures, the packs image included, then docker/publish", all(f"'{n}:it-{n2}-{a}=/{n2}-{a}'" in pub for a in ("amd64", "arm64") for n, n2 in (("api", "api"), ("packs", "packs"), ("packs-init", "init"))) and 'PACKS_ASSEMBLE=/the/packs-assemble/bin/packs-assemble exec /the/docker/dir/publish "$1" "$tag"' in pub and 'docker load -i "$src"' in pub, pub)
check("up: another ATTUNE_ARCH is refused with the app to use", "nix run .#up-$ATTUNE_ARCH" in up)
check("up: the user's packs, packs.dev and .env", "$PWD/packs}" in up and "$PWD/.env}" in up)
check("up: the Nix agent image fills the agent volume, the Nix worker image is the Python runtime (compose.yaml's agent-init, worker-python, sensor)", "ATTUNE_AGENT_IMAGE=${ATTUNE_AGENT_IMAGE:-attune/agent:tag-amd64}" in up and "'attune/agent:tag-amd64=/agent-amd64'" in up and "ATTUNE_PYTHON_IMAGE=${ATTUNE_PYTHON_IMAGE:-attune/worker:tag-amd64}" in up, up)
check("down and logs run docker/stack", "stack down" in apps["down"]["program"] and "stack logs" in apps["logs"]["program"])

# 7. What `up` starts on each build system: the images of its Linux architecture
# (Docker Desktop on Apple Silicon runs arm64; on an Intel Mac, amd64).
for system, arch in (("x86_64-linux", "amd64"), ("aarch64-linux", "arm64"), ("aarch64-darwin", "arm64"), ("x86_64-darwin", "amd64")):
    prog = json.loads(nix("eval", "--json", f".#apps.{system}.up.program", *STUBS))
    check(f"apps.{system}.up starts the {arch} images", prog.endswith(f"-attune-up-{arch}"), prog)
    shell = json.loads(nix("eval", "--json", f".#devShells.{system}.default", "--apply", "s: map (p: p.name) s.recorded.packages", *STUBS))
    check(f"devShells.{system}.default: the toolchain, Zig and cargo-zigbuild (the cross recipe of scripts/build-pack-binaries)", {"rust-toolchain", "zig", "cargo-zigbuild"} <= set(shell), shell)

# 7a. The architectures come from arches.tsv: nix/targets.nix reads it, and no
# other .nix file names a Rust target triple.
texpr = f"""builtins.mapAttrs (_: t: {{ inherit (t) arch docker system rustTarget zigTarget; runtime = t.runtime.system; }})
  (import {ROOT}/nix/targets.nix {{ nixpkgs.legacyPackages = builtins.mapAttrs (system: _: {{ inherit system; }}) {{ x86_64-linux = 1; aarch64-linux = 1; }}; }})"""
targets = json.loads(nix("eval", "--json", "--impure", "--expr", texpr))
want_targets = {a["machine"]: {"arch": a["machine"], "docker": a["arch"], "system": a["nix_system"], "rustTarget": a["rust_musl"], "zigTarget": a["zig"], "runtime": a["nix_system"]} for a in ARCHES}
check("nix/targets.nix: one target per arches.tsv row, every name from the table", targets == want_targets, (targets, want_targets))
named = [f for f in tracked if f.startswith(("nix/", "flake.nix")) and re.search(r"[a-z0-9_]+-unknown-linux-(musl|gnu)", open(f).read())]
check("no .nix file of the flake names a Rust target triple (arches.tsv does)", not named, named)

# 7b. `nix run` runs docker/stack and docker/publish from a store copy of the
# checkout's scripts: what they read (scripts/lib, arches.tsv) is beside them there, so
# they get as far as their own usage errors (exit 2; before any docker call).
drv = nix("eval", "--impure", "--raw", ".#apps.x86_64-linux.up.program", "--apply",
          "p: builtins.readFile (builtins.head (builtins.attrNames (builtins.getContext p)))", *STUBS)
m = re.search(r"(/nix/store/[0-9a-z]+-attune-scripts)/docker/stack", drv)
check("up: docker/stack from the store copy of docker/ and scripts/", m is not None, drv[:300])
if m:
    copy = m.group(1)
    check("the store copy holds scripts/lib and arches.tsv beside docker/", all(os.path.isfile(f"{copy}/{p}") for p in ("scripts/lib/exit-codes.sh", "scripts/lib/arch.sh", "arches.tsv")), copy)
    for args, env, want in ((["docker/publish"], {}, "REGISTRY/PREFIX"),
                            (["docker/stack", "ps"], {"ATTUNE_ARCH": "riscv64"}, "stack: ATTUNE_ARCH is amd64 or arm64, not 'riscv64'")):
        r = subprocess.run([f"{copy}/{args[0]}"] + args[1:], capture_output=True, text=True, env=dict(os.environ, **env))
        check(f"{' '.join(args)} run from the store copy: exit 2, its own usage error", r.returncode == 2 and want in r.stderr, (r.returncode, r.stderr[-300:]))

# 8. The one cross recipe (nix/zig.nix): cargo-zigbuild's zig cc front end, as `cargo zigbuild` uses it.
zexpr = f"""let
  lib = import {ROOT}/tests/nix/nixpkgs/lib.nix;
  z = import {ROOT}/nix/zig.nix {{
    inherit lib;
    writeShellScript = name: text: {{ inherit name text; outPath = "/" + name; }};
    zig = "/zig"; cargo-zigbuild = "/czb"; stdenv.cc = "/cc";
    target = {{ rustTarget = "aarch64-unknown-linux-musl"; zigTarget = "aarch64-linux-musl"; }};
  }};
in {{ cc = z.cc.text; ar = z.ar.text; env = z.env; }}"""
z = json.loads(nix("eval", "--json", "--impure", "--expr", zexpr))
check("zig cc wrapper: cargo-zigbuild's zig cc with -target aarch64-linux-musl, -g -fno-sanitize=all (cargo zigbuild's own flags)", 'exec /czb/bin/cargo-zigbuild zig cc -- -g -fno-sanitize=all -target aarch64-linux-musl "$@"' in z["cc"], z["cc"])
check("zig wrappers: zig from nixpkgs, caches under $TMPDIR (the sandbox has no $HOME)", all("CARGO_ZIGBUILD_ZIG_PATH=/zig/bin/zig" in t and "TMPDIR" in t for t in (z["cc"], z["ar"])), z)
check("zig env: linker, CC and AR of the target; crt-static", z["env"]["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER"] == "/zig-cc-aarch64-linux-musl" and z["env"]["AR_aarch64-unknown-linux-musl"] == "/zig-ar-aarch64-linux-musl" and "+crt-static" in z["env"]["CARGO_BUILD_RUSTFLAGS"], z["env"])
build_script = open("scripts/build-pack-binaries").read()
check("scripts/build-pack-binaries uses the same recipe (cargo zigbuild, crt-static, link-self-contained=no)", "zigbuild" in build_script and 'RUSTFLAGS="-C target-feature=+crt-static -C link-self-contained=no' in build_script)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
