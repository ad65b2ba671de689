//! The `attune-core-timer-sensor` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    core_timer_sensor::main_with_args(&args)
}
