//! A test hook that aborts the process after its N-th filesystem mutation, so
//! tests can prove that a kill at *every* step leaves a volume `verify` accepts.
//!
//! Set `PACKS_ASSEMBLE_CRASH_AFTER=N` (documented for tests only). Unset, it costs
//! one relaxed atomic add per step. `PACKS_ASSEMBLE_STOP_AFTER=N` (tests only
//! too) stops the process with SIGSTOP after its N-th mutation instead, so that
//! a test can change the volume while a run is in the middle of publishing,
//! then let it go on with SIGCONT.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that arms the hook.
pub const CRASH_AFTER_ENV: &str = "PACKS_ASSEMBLE_CRASH_AFTER";

/// The variable that stops the process (SIGSTOP) after its N-th mutation.
pub const STOP_AFTER_ENV: &str = "PACKS_ASSEMBLE_STOP_AFTER";

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static STOP: OnceLock<Option<u64>> = OnceLock::new();
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Marks one completed filesystem mutation; aborts (like SIGKILL: no cleanup)
/// when the armed count is reached.
pub fn step() {
    let limit = LIMIT.get_or_init(|| std::env::var(CRASH_AFTER_ENV).ok()?.parse().ok());
    let done = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
    if limit.is_some_and(|limit| done >= limit) {
        std::process::abort();
    }
    let stop = STOP.get_or_init(|| std::env::var(STOP_AFTER_ENV).ok()?.parse().ok());
    if *stop == Some(done) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    }
}

/// How many steps have completed (reported with `--json` so tests know the range).
pub fn steps() -> u64 {
    STEPS.load(Ordering::Relaxed)
}
