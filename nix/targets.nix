# The architectures we build for: Rust target, Zig target, Docker name and Nix
# system. The C toolchain of every musl target is Zig's (nix/zig.nix), from any
# build system. What the worker image only copies (bash, coreutils, python3)
# comes from nixpkgs' own package set of that Linux system, which the binary
# cache holds (a Mac substitutes it), not from a cross build.
{ nixpkgs }:
{
  x86_64 = {
    arch = "x86_64";
    docker = "amd64";
    system = "x86_64-linux";
    rustTarget = "x86_64-unknown-linux-musl";
    zigTarget = "x86_64-linux-musl";
    # Packages that run inside the worker image (bash, coreutils, python3).
    runtime = nixpkgs.legacyPackages.x86_64-linux;
  };
  aarch64 = {
    arch = "aarch64";
    docker = "arm64";
    system = "aarch64-linux";
    rustTarget = "aarch64-unknown-linux-musl";
    zigTarget = "aarch64-linux-musl";
    runtime = nixpkgs.legacyPackages.aarch64-linux;
  };
}
