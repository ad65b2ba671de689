//! The Attune pack format: the one place where a rule about packs is written.
//!
//! A *pack* is a directory named by its ref, holding `pack.yaml` and the YAML
//! definitions of its actions, sensors, triggers and rules, plus the scripts and
//! binaries those run. This crate reads and checks packs; it does not copy or
//! publish them (that is `packs-assemble`) and does not run them (the services).
//!
//! - [`load_pack`] reads a pack directory into a [`Pack`] and returns every
//!   problem as a [`Diagnostic`] naming the file, line, column and field;
//!   [`load_pack_cached`] gives the same outcome without parsing again the
//!   YAML files whose content hash a [`LoadCache`] already holds;
//!   [`load_pack_summary_cached`] gives it summarised ([`PackSummary`]: refs,
//!   runner types, entry points), from cache entries that hold only that.
//! - [`references`] (or [`references_of`], on summaries) checks references
//!   across packs (rules to actions and triggers).
//! - [`Pack::entry_points`] lists the files components run; [`check_native`]
//!   decides whether a native one will run in a container of an [`Arch`].
//! - [`ElfFacts`] says what a binary is: machine, class, static or dynamic.
//!
//! ```
//! use attune_pack::{Arch, load_pack};
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("demo");
//! # std::fs::create_dir(&dir).unwrap();
//! # std::fs::write(dir.join("pack.yaml"), "ref: demo\nlabel: Demo\nversion: 1.0.0\n").unwrap();
//! let outcome = load_pack(&dir);
//! for d in outcome.diagnostics.iter() {
//!     eprintln!("{d}"); // path:line:column: error: field `x`: what; hint: what to do
//! }
//! let pack = outcome.pack.expect("no errors");
//! assert_eq!(pack.meta.pack_ref, "demo");
//! assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
//! ```
#![deny(missing_docs)]

mod arch;
mod cache;
mod diag;
mod elf;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod load;
mod model;
mod native;
#[cfg(any(test, feature = "fixtures"))]
pub mod shared_input;
mod summary;
mod validate;
mod volume;

pub use arch::{Arch, UnknownArch};
pub use cache::LoadCache;
pub use diag::{Diagnostic, Diagnostics, Severity, escape_controls};
pub use elf::{ElfError, ElfFacts, Linkage, is_elf, shebang};
pub use load::{
    LoadOutcome, MAX_YAML_BYTES, PACK_FILE, SummaryOutcome, find_packs, is_yaml, load_pack,
    load_pack_cached, load_pack_summary_cached,
};
pub use model::{
    Action, Loaded, OutputFormat, PARAMETER_TYPES, Pack, PackMeta, Parameter, ParameterDelivery,
    ParameterFormat, Rule, RunnerType, Sensor, Trigger,
};
pub use native::{ComponentKind, EntryPoint, NativeProblem, check_native, check_native_file};
pub use summary::{Brief, PackSummary};
pub use validate::{
    entry_point_problem, is_pack_ref, is_semver, key_place, references, references_of, split_ref,
};
pub use volume::{DATA_LINK, volume_generation};
