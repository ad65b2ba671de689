//! A test hook that aborts the process after its N-th filesystem mutation, so
//! tests can prove that a kill at *every* step leaves a volume `verify` accepts.
//!
//! Set `PACKS_ASSEMBLE_CRASH_AFTER=N` (documented for tests only). Unset, it costs
//! one relaxed atomic add per step.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that arms the hook.
pub const CRASH_AFTER_ENV: &str = "PACKS_ASSEMBLE_CRASH_AFTER";

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Marks one completed filesystem mutation; aborts (like SIGKILL: no cleanup)
/// when the armed count is reached.
pub fn step() {
    let limit = LIMIT.get_or_init(|| std::env::var(CRASH_AFTER_ENV).ok()?.parse().ok());
    let done = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
    if limit.is_some_and(|limit| done >= limit) {
        std::process::abort();
    }
}

/// How many steps have completed (reported with `--json` so tests know the range).
pub fn steps() -> u64 {
    STEPS.load(Ordering::Relaxed)
}
