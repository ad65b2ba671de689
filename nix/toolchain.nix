# One stable Rust toolchain with the standard library of every musl target
# (nix/targets.nix, from arches.tsv).
# No rust-toolchain.toml: rustup would try to download on offline machines.
{ fenix, targets }:
fenix.combine (
  [
    fenix.stable.cargo
    fenix.stable.rustc
    fenix.stable.clippy
    fenix.stable.rustfmt
  ]
  ++ map (t: fenix.targets.${t.rustTarget}.stable.rust-std) (builtins.attrValues targets)
)
