# The architectures we build for: Rust target, Docker name, Nix system, and the
# C toolchain (linker, TARGET_CC for the bundled SQLite) of the musl target.
{ pkgs }:
{
  x86_64 = {
    arch = "x86_64";
    docker = "amd64";
    system = "x86_64-linux";
    rustTarget = "x86_64-unknown-linux-musl";
    cc = pkgs.pkgsCross.musl64.stdenv.cc;
    # Packages that run inside the worker image (bash, coreutils, python3).
    runtime = if pkgs.stdenv.hostPlatform.system == "x86_64-linux" then pkgs else pkgs.pkgsCross.gnu64;
  };
  aarch64 = {
    arch = "aarch64";
    docker = "arm64";
    system = "aarch64-linux";
    rustTarget = "aarch64-unknown-linux-musl";
    cc = pkgs.pkgsCross.aarch64-multiplatform-musl.stdenv.cc;
    runtime =
      if pkgs.stdenv.hostPlatform.system == "aarch64-linux" then pkgs else pkgs.pkgsCross.aarch64-multiplatform;
  };
}
