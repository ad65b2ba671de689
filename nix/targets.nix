# The architectures we build for: Rust target, Docker name, Nix system, and the
# C toolchain (linker, TARGET_CC and TARGET_AR for the bundled SQLite) of the musl
# target. What the worker image only copies (bash, coreutils, python3) comes from
# nixpkgs' own package set of that system, which the binary cache holds, not from
# a cross build.
{ pkgs, nixpkgs }:
{
  x86_64 = {
    arch = "x86_64";
    docker = "amd64";
    system = "x86_64-linux";
    rustTarget = "x86_64-unknown-linux-musl";
    cc = pkgs.pkgsCross.musl64.stdenv.cc;
    # Packages that run inside the worker image (bash, coreutils, python3).
    runtime = nixpkgs.legacyPackages.x86_64-linux;
  };
  aarch64 = {
    arch = "aarch64";
    docker = "arm64";
    system = "aarch64-linux";
    rustTarget = "aarch64-unknown-linux-musl";
    cc = pkgs.pkgsCross.aarch64-multiplatform-musl.stdenv.cc;
    runtime = nixpkgs.legacyPackages.aarch64-linux;
  };
}
