//! CLI tests of `packs-assemble`, built into one test binary.

mod assemble;
mod crash;
mod hardening;
mod inspect;
mod regression;
mod security;
mod store;
mod upstream;
mod util;
mod verify;
