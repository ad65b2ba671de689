# The workspace built static for one musl target with crane, linked by Zig
# (nix/zig.nix) from any build system: one commonArgs and one cargoArtifacts
# (dependencies only) shared by every build and check of that target; the timer
# sensor's own profile has its own dependency build.
{
  pkgs,
  crane,
  toolchain,
  root,
  target,
}:
let
  craneLib = (crane.mkLib pkgs).overrideToolchain (_: toolchain);
  src = import ./cargo-source.nix {
    inherit (pkgs) lib;
    inherit craneLib root;
  };
  zig = pkgs.callPackage ./zig.nix { inherit target; };
  commonArgs = zig.env // {
    inherit src;
    pname = "attune";
    version = "0.1.0";
    strictDeps = true;
    dontStrip = true;
  };
  # With crane's default doCheck, the dependency build also compiles the
  # dev-dependencies (`cargo test --no-run`), so clippy --all-targets and
  # nextest find them in cargoArtifacts instead of rebuilding them.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;
  # The sensor's size-tuned profile compiles dependencies differently
  # (opt-level, LTO, panic), so release artifacts cannot serve it.
  sensorArgs = {
    CARGO_PROFILE = "pack-binary";
    # cargoExtraArgs replaces crane's default `--locked`: keep it.
    cargoExtraArgs = "--locked -p core-timer-sensor";
  };
  # It serves only the sensor's own build (no tests in that profile).
  sensorArtifacts = craneLib.buildDepsOnly (commonArgs // sensorArgs // { doCheck = false; });
  build =
    args:
    craneLib.buildPackage (
      commonArgs
      // {
        inherit cargoArtifacts;
        # Tests run once, in the nextest check.
        doCheck = false;
      }
      // args
    );
in
{
  inherit
    zig
    craneLib
    commonArgs
    cargoArtifacts
    src
    ;

  # The timer sensor: size-tuned profile, no C code.
  timer-sensor = build (
    sensorArgs
    // {
      pname = "attune-core-timer-sensor";
      cargoArtifacts = sensorArtifacts;
    }
  );

  # packs-assemble and the services.
  services = build {
    pname = "attune-services";
    cargoExtraArgs = "--locked -p packs-assemble -p attune-api -p attune-worker -p attune-sensor";
  };
}
