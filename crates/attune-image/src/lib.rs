//! `attune-image`: writes and checks the Attune container images, as docker
//! archives (`docker load`, a file or stdout) or OCI image layouts (a
//! directory for `skopeo copy oci:DIR`).
//!
//! Two kinds of image:
//! - the packs image of an assembled volume ([`export`]): one base layer (a
//!   static packs-assemble, `/etc/passwd`, `/etc/group`, `/tmp`, the mount
//!   points), then one layer per pack in name order; its entrypoint publishes
//!   the packs into the volume mounted at `/opt/attune/packs` and verifies it.
//!   The volume must verify for the architecture first.
//! - a service image of a root filesystem directory ([`export_rootfs`]):
//!   one layer of the directory's entries, every executable ELF fit to run in
//!   an empty container of the architecture.
//!
//! What it guarantees:
//! - The same inputs give the same bytes, on any machine: entries have the
//!   modes and numeric owners the layout gives them and every mtime is
//!   `SOURCE_DATE_EPOCH` (else 1), layers are uncompressed, the JSON is
//!   written from structs in a fixed field order, the tag is the image id's.
//! - The layout is [`image_layout`]'s, documented by docker/IMAGE-LAYOUT.md
//!   (packs-assemble's tests check the document against it); [`check_image()`]
//!   asserts it of any packs image, whoever built it.
//! - An image is written whole or not at all: a source that changes while
//!   it is written fails the write, and a failed write removes its output.
//!   Inputs unfit for an image are a result with `ok` false and the reasons
//!   as diagnostics; nothing is printed here (the command line is
//!   packs-assemble's).
//!
//! The modules, from the bottom: [`tarstream`] (deterministic tar entries),
//! [`image_layout`] (what the images hold), [`image`] (the writer of both
//! formats), then [`packs_image`], [`rootfs`] and [`check_image`](mod@check_image).
//!
//! # Why not oci-spec
//!
//! The OCI JSON is a few serde structs here, not `oci-spec` 0.8 (`image` only;
//! measured 2026-12 on the 2-core machine): 21 more crates in packs-assemble's
//! tree (derive_builder, darling, getset, strum, konst, regex, ...), 60-75 s
//! more per clean release build (105-118 s against 44-46 s), about 150 KiB of
//! binary; and its config and index write other field orders and `HashMap`
//! labels and annotations, which would move the pinned digests.

pub mod check_image;
pub mod image;
pub mod image_layout;
pub mod packs_image;
pub mod rootfs;
pub mod services;
pub mod tarstream;

pub use crate::{
    check_image::{CheckReport, check_image},
    image::{Dest, ImageFormat, ImageResult, LayerInfo, media},
    packs_image::{ExportOptions, ExportResult, export},
    rootfs::{RootfsOptions, RootfsResult, export_rootfs, image_path},
};
