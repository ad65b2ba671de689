//! CLI tests of `packs-assemble`, built into one test binary.
// Tests build fixtures with std::fs directly; only the crate's own code must
// go through its fsops layer (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod assemble;
mod check_errors;
mod crash;
mod deps;
mod export;
mod hardening;
mod inspect;
mod publish;
mod reader_contract;
mod regression;
mod rootfs_image;
mod security;
mod store;
mod upstream;
mod util;
mod verify;
