//! End-to-end tests of `attune-core-timer-sensor` against a fake API on 127.0.0.1.

mod config;
mod delivery;
mod timers;
mod util;
