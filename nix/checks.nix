# `nix flake check`: every package builds, plus clippy, fmt, nextest and deny on
# the shared cargoArtifacts, the core pack check, verify of both volumes, an
# arm64 smoke test under qemu, and each image's architecture. On darwin, what
# would run Linux binaries (nextest, the smoke test) is left out: a Mac proves
# the builds, a Linux system runs them.
{
  pkgs,
  lib,
  rust,
  root,
  packages,
  packs-assemble,
  qemuAarch64,
}:
let
  host = rust;
  # What nextest reads in the sandbox beyond Cargo files: insta snapshots and
  # fixtures under crates/ and tests/, the core pack in packs/, and the table
  # of architectures that attune-pack compiles in.
  testSrc = import ./source.nix { inherit lib root; } "attune-test-source" [
    "Cargo.toml"
    "Cargo.lock"
    "crates"
    "tests"
    "packs"
    "arches.tsv"
    # Documents the tests hold against the code (the image layout).
    "docker/IMAGE-LAYOUT.md"
  ];
  run =
    name: script:
    pkgs.runCommand name { } ''
      ${script}
      touch $out
    '';
  imageArch =
    name: image: arch:
    pkgs.runCommand "image-arch-${name}" { nativeBuildInputs = [ pkgs.jq pkgs.gnutar ]; } ''
      ${image} > image.tar
      tar -xf image.tar manifest.json
      config=$(jq -r '.[0].Config' manifest.json)
      tar -xf image.tar "$config"
      jq -e --arg arch ${arch} '.architecture == $arch' "$config"
      touch $out
    '';
  pa = "${packs-assemble}/bin/packs-assemble";
  runsLinux = pkgs.stdenv.isLinux;
in
packages
// {
  clippy = host.craneLib.cargoClippy (
    host.commonArgs
    // {
      inherit (host) cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets --all-features -- --deny warnings";
    }
  );
  fmt = host.craneLib.cargoFmt {
    inherit (host) src;
    inherit (host.commonArgs) pname version;
  };
  deny = host.craneLib.cargoDeny {
    inherit (host) src;
    inherit (host.commonArgs) pname version;
    cargoDenyChecks = "bans licenses sources";
  };
  packs-check = run "packs-check" "${pa} check --arch ${host.docker} ${root + "/packs"}";
  verify-volume-amd64 = run "verify-volume-amd64" "${pa} verify --arch amd64 ${packages.packs-volume-amd64}/volume";
  verify-volume-arm64 = run "verify-volume-arm64" "${pa} verify --arch arm64 ${packages.packs-volume-arm64}/volume";
}
// lib.optionalAttrs runsLinux {
  nextest = host.craneLib.cargoNextest (
    host.commonArgs
    // {
      inherit (host) cargoArtifacts;
      src = testSrc;
      # The stack tests run nested cargo builds and the Docker test needs an engine:
      # both need more than the sandbox has; CI runs them outside Nix.
      cargoNextestExtraArgs = "--workspace --exclude attune-stack-tests";
      doCheck = true;
      # The worker's timeout test looks for leftover processes with pgrep.
      nativeBuildInputs = [ pkgs.procps ];
    }
  );
  arm64-smoke = run "arm64-smoke" ''
    for bin in ${packages.services-aarch64}/bin/* ${packages.pack-binaries-aarch64}/core/sensors/attune-core-timer-sensor; do
      ${qemuAarch64} "$bin" --version
    done
  '';
}
// lib.listToAttrs (
  lib.concatMap (
    arch:
    map (name: {
      name = "image-arch-${name}-${arch}";
      value = imageArch "${name}-${arch}" packages."image-${name}-${arch}" arch;
    }) [ "api" "worker" "sensor" "packs-init" "agent" ]
  ) [ "amd64" "arm64" ]
)
