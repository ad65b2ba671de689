//! `attune-fs`: the filesystem layer under the packs volume and the images.
//!
//! - Trees from outside (pack sources, binaries, root filesystems) are
//!   untrusted: [`scan`] lists them without following a link, refuses what is
//!   not a directory, regular file or (where allowed) link, and records each
//!   file's inode stamp.
//! - [`hash`] digests files (SHA-256), with a cache keyed by those stamps; a
//!   stamp within the racy window of the scan is never trusted.
//! - Every mutation of a volume goes through [`fsops`], where [`crashpoint`]
//!   lets the crash tests kill the process at any numbered step (a clippy
//!   rule forbids the `std::fs` mutations anywhere else).
//! - The writer's own files in a volume root are opened by [`bookkeeping`]:
//!   never through a link, never blocking, no further than their size.
//! - [`parallel`] maps work over the cores; [`progress`] shows long work on a
//!   terminal; [`error`] is the error type whose kinds map to exit codes.

#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod bookkeeping;
pub mod crashpoint;
pub mod error;
pub mod fsops;
pub mod hash;
pub mod parallel;
pub mod progress;
pub mod scan;

pub use crate::{
    error::{Error, IoContext, exit},
    hash::{HashCache, Sha256Digest},
    progress::Progress,
    scan::Kind,
};
