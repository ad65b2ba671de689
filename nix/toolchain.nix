# One stable Rust toolchain with the standard library of both musl targets.
# No rust-toolchain.toml: rustup would try to download on offline machines.
{ fenix }:
fenix.combine [
  fenix.stable.cargo
  fenix.stable.rustc
  fenix.stable.clippy
  fenix.stable.rustfmt
  fenix.targets.x86_64-unknown-linux-musl.stable.rust-std
  fenix.targets.aarch64-unknown-linux-musl.stable.rust-std
]
