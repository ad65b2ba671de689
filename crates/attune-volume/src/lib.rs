//! `attune-volume`: pack sources + fresh static binaries -> a packs volume,
//! and everything that reads one back (verify, inspect, history, rollback).
//!
//! The pack format itself (YAML model, validation, ELF rules) belongs to
//! `attune-pack`; this crate scans untrusted inputs ([`scan`]), hashes them
//! ([`hash`]), plans the generation and its manifest ([`plan`], [`manifest`]),
//! publishes it ([`publish`]) and checks published volumes ([`verify`]).
//! Images of a volume are `attune-image`'s; the command line is
//! `packs-assemble`'s.
//!
//! # The reader contract
//!
//! ```text
//! VOL/..data -> ..<gen>                        swapped by rename(2): the commit point
//! VOL/<pack> -> ..data/<pack>                  what services open
//! VOL/.attune-manifest.json -> ..data/.attune-manifest.json
//! VOL/.attune-packs-sentinel                   upstream Attune's api writes it: kept
//! VOL/..<gen>/<pack> -> ../..store/<obj>/<pack>
//! VOL/..store/<obj>/<pack>/...                 real directories and regular files
//! ```
//!
//! Below a pack root every entry is a real directory or a regular file; the
//! canonical path of `VOL/<pack>` ends in `/<pack>`; a reader crosses at most
//! the links above the pack root. So a reader that canonicalises and compares
//! (upstream's `resolve_pack_relative_path`), one that walks without following
//! links (`calculate_directory_checksum`) and one that lists with read_dir and
//! is_dir see exactly what a `cp -a` copy gives them. Names at the root that
//! start with `..` or `.attune-` belong to the writer or to Attune.
//!
//! # Sharing
//!
//! A pack is the unit of sharing ([`store`]): an unchanged pack keeps its
//! object, reused whole; a changed pack gets a new object, written as real
//! directories ([`staging`]) with each unchanged file hard-linked from a
//! confirmed published file (same path first, else same contents and mode, in
//! any pack), copied at the link limit. The work follows the packs that changed.
//!
//! Modes: files 0444 (0555 executable), directories 0755. Directories were
//! 0555 until issue 25; readers copy them with their modes and then write into
//! the copies (upstream's worker unpacks an api archive of a pack as uid 1000,
//! and tar sets a directory's mode before its entries), so a 0555 directory
//! refused every entry below it. The read-only modes protected what is shared:
//! files hard-linked across packs and generations, and whole objects shared by
//! generations, so that an in-place write (or an entry added or removed) could
//! never reach another generation or a kept one without a chmod first. Files
//! stay read-only (owner 0:0 or `--chown`; services mount the volume
//! read-only). A directory's entries can now change without a chmod by its
//! owner, and nothing but detection protects them: every change of an entry
//! moves the directory's ctime, so the stamps catch it, and the listing is
//! compared again before anything is reused or linked. What changed is
//! repaired from the inputs by the next run, never served with exit 0 or
//! linked into a new generation.
//!
//! # Why a kill at any moment is safe
//!
//! The publisher holds the volume lock ([`volume::Volume::lock`]); every
//! mutation goes through [`fsops`], where the crash tests kill it.
//! - An object is built under `..store/..tmp-*` and renamed to its name only
//!   when complete and sealed, so a name in the store is a whole object.
//! - Objects are renamed into place before the filesystem is flushed, so a
//!   power cut can leave one named but not durable. No generation lists such an
//!   object (a generation is renamed into place after the flush), and every run
//!   that writes first removes the objects no generation lists: an object is
//!   reused only when a durable generation lists it.
//! - A generation is written under `..tmp-*` (manifest, objects list, one link
//!   per pack), flushed and renamed into place; `..data` is then replaced by
//!   rename(2). A name `..<id>` is only ever a complete generation.
//! - Links for new packs are made before the swap (dangling until then), links
//!   of packs that are gone are removed after it: at every instant each pack of
//!   the current generation has its link.
//! - Removal renames to a tombstone `..tmp-*` first ([`gc`]), and every run
//!   that holds the lock sweeps `..tmp-*` first (up-to-date runs too):
//!   temporary names carry the pid and the start time, so a run never meets a
//!   leftover of its own name, even as pid 1 in a container.
//! - Nothing unchecked is trusted ([`audit`], [`stamps`]): before a run says
//!   "up to date", reuses an object or a kept generation, or hard-links a
//!   published file, it confirms each entry against the manifest, by a stat
//!   compared with the recorded inode stamp, or by reading it again. Damage is
//!   repaired from the inputs, never served with exit 0. The audit of the
//!   current generation may run beside the plan (under the lock): its
//!   confirmations count only for the manifest audited, when it turns out to
//!   be the plan's (the same root hash, recomputed from the entries audited).
//! - A stamp is recorded only when the contents were read at least the settle
//!   window ([`stamps::settle_window_ns`]: the kernel's writeback window,
//!   35 s by default, plus 2 s) after the inode's ctime. Files this run wrote
//!   are never recorded unread (an edit after the seal would be taken for the
//!   manifest's contents), nor is an inode whose ctime moved after it was read;
//!   the next run reads them again. A write through a shared writable mapping
//!   moves the times only when it faults, which after the first write to a page
//!   happens again only once writeback has cleaned it: within the window. The
//!   residual risk: where dirty pages are not cleaned within the window
//!   (writeback stalled, `dirty_writeback_centisecs` 0, tmpfs, whose pages are
//!   never written back) a mapping writing past it moves no time. The window is
//!   then forever for periodic writeback off and for tmpfs (nothing is recorded,
//!   every run reads every file), but a stalled writeback is not detected; a
//!   lease probe (`F_SETLEASE`, refused while any writer holds the file) would
//!   close that and is not done.
//! - Bookkeeping files (the caches, the stamps, the facts, the lock) are
//!   opened without following links and without blocking, regular files only,
//!   read no further than their size; any other is a missing cache (the lock:
//!   exit 3, naming it). A manifest damaged anywhere is a missing one: every
//!   file is published afresh from the inputs.
//! - Generations are ordered by the sequence number each holds
//!   ([`store::SEQUENCE_NAME`]), written with it and rewritten (a temporary
//!   name inside it, then a rename; leftovers swept) when a publish makes a
//!   kept one current again; never by a timestamp. A kept generation is
//!   reused or rolled back to only after its own entries (manifest, objects
//!   list, one link per pack naming its object exactly, nothing else) and all
//!   its objects are confirmed, by the same code.
//!

#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod assemble;
pub mod audit;
pub mod facts;
pub mod gc;
pub mod history;
pub mod inspect;
pub mod manifest;
pub mod plan;
pub mod publish;
pub mod staging;
pub mod stamps;
pub mod store;
mod trust;
pub mod verify;
pub mod volume;

pub use crate::{
    assemble::{Assembled, Request, assemble, check},
    error::{Error, IoContext, exit},
    hash::{HashCache, Sha256Digest},
    history::{Generation, history, rollback},
    inspect::inspect,
    manifest::{Entry, MANIFEST_NAME, Manifest},
    plan::{Inputs, plan},
    progress::Progress,
    publish::{Outcome, publish},
    scan::Kind,
    verify::{Report, verify},
    volume::{SOURCE_DATE_EPOCH, Volume, source_date_epoch},
};
pub use attune_fs::{bookkeeping, crashpoint, error, fsops, hash, parallel, progress, scan};
