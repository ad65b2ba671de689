# The one C toolchain of the musl targets, from any build system (Linux or
# darwin): Zig, through cargo-zigbuild's own `zig cc` / `zig ar` front ends,
# which filter rustc's arguments for Zig. This is the recipe `cargo zigbuild`
# applies in scripts/build-pack-binaries: linker and CC `zig cc -target
# <arch>-linux-musl -g -fno-sanitize=all`, AR `zig ar`, and RUSTFLAGS
# `+crt-static` with `link-self-contained=no` (the musl C runtime is Zig's).
# Returns the environment of one target's cargo builds.
{
  lib,
  writeShellScript,
  zig,
  cargo-zigbuild,
  stdenv,
  target,
}:
let
  # Zig writes its caches under $HOME, which the build sandbox does not have.
  prelude = ''
    export CARGO_ZIGBUILD_ZIG_PATH=${zig}/bin/zig
    export ZIG_GLOBAL_CACHE_DIR=''${ZIG_GLOBAL_CACHE_DIR:-''${TMPDIR:-/tmp}/zig-cache}
    export ZIG_LOCAL_CACHE_DIR=''${ZIG_LOCAL_CACHE_DIR:-$ZIG_GLOBAL_CACHE_DIR}
    export CARGO_ZIGBUILD_CACHE_DIR=''${CARGO_ZIGBUILD_CACHE_DIR:-$ZIG_GLOBAL_CACHE_DIR}
  '';
  cc = writeShellScript "zig-cc-${target.zigTarget}" ''
    ${prelude}
    exec ${cargo-zigbuild}/bin/cargo-zigbuild zig cc -- -g -fno-sanitize=all -target ${target.zigTarget} "$@"
  '';
  ar = writeShellScript "zig-ar-${target.zigTarget}" ''
    ${prelude}
    exec ${cargo-zigbuild}/bin/cargo-zigbuild zig ar -- "$@"
  '';
  envTarget = lib.toUpper (builtins.replaceStrings [ "-" ] [ "_" ] target.rustTarget);
in
{
  inherit cc ar;
  env = {
    CARGO_BUILD_TARGET = target.rustTarget;
    CARGO_BUILD_RUSTFLAGS = "-C target-feature=+crt-static -C link-self-contained=no";
    "CARGO_TARGET_${envTarget}_LINKER" = "${cc}";
    # The cc crate (rusqlite's bundled SQLite) reads these for the target.
    TARGET_CC = "${cc}";
    TARGET_AR = "${ar}";
    "CC_${target.rustTarget}" = "${cc}";
    "AR_${target.rustTarget}" = "${ar}";
    # Build scripts and proc macros run on the build system, built by its own cc.
    HOST_CC = "${stdenv.cc}/bin/cc";
  };
}
