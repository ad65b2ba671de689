# packs-assemble for the build system itself, for the steps that run it at build
# time (the packs volume, the packs image). On Linux the static musl build of
# this machine's architecture runs as it is; on darwin it is a native build.
{
  pkgs,
  crane,
  toolchain,
  root,
  linuxBuild,
}:
if pkgs.stdenv.isLinux then
  linuxBuild
else
  let
    craneLib = (crane.mkLib pkgs).overrideToolchain (_: toolchain);
    args = {
      src = import ./cargo-source.nix {
        inherit (pkgs) lib;
        inherit craneLib root;
      };
      pname = "packs-assemble";
      version = "0.1.0";
      strictDeps = true;
      cargoExtraArgs = "--locked -p packs-assemble";
      # Its tests run on Linux, in the nextest check.
      doCheck = false;
    };
  in
  craneLib.buildPackage (args // { cargoArtifacts = craneLib.buildDepsOnly args; })
