//! Stopping a service gracefully (a drain), the same way in the api, the
//! worker and the sensor service:
//!
//! 1. SIGTERM or SIGINT sets a flag ([`StopSignal`]; the api awaits the same
//!    signals with tokio). The service stops taking new work: the api closes
//!    its listener, the worker stops claiming, the sensor service stops
//!    (re)starting sensors and forwards SIGTERM to the ones it runs.
//! 2. The work in flight gets `--drain-timeout` seconds ([`crate::DrainArgs`],
//!    [`crate::env::DRAIN_TIMEOUT`], default [`crate::env::DEFAULT_DRAIN_TIMEOUT`])
//!    to finish. [`Drain`] logs how much there is when the stop begins, and
//!    how it ended.
//! 3. At the deadline what is left is cut: the api closes the connections, the
//!    worker kills the actions' process groups and reports those executions
//!    `failed` ("worker stopped"), the sensor service SIGKILLs the sensors'
//!    process groups.
//! 4. The service exits 0 either way (stopping was asked for, and done); the
//!    log says what the deadline cut, as a warning with `cut = <n>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Parses `--drain-timeout`: a non-negative number of seconds, fractions
/// allowed (`0` cuts at once).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds; give one like 10 or 2.5"))
}

/// Set once SIGTERM or SIGINT has arrived (for the services that run threads;
/// the api awaits the same signals with tokio).
#[derive(Clone, Debug)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Installs the handlers of SIGTERM and SIGINT.
    pub fn install() -> std::io::Result<StopSignal> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, flag.clone())?;
        }
        Ok(StopSignal(flag))
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for code that takes a `&AtomicBool` to give up on.
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

/// Waits until `left()` is 0, checking every 20 ms, or until `deadline`;
/// returns what `left()` said last.
pub fn wait_until(deadline: Instant, mut left: impl FnMut() -> usize) -> usize {
    loop {
        let n = left();
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One drain: its deadline, and its two log lines.
#[derive(Debug)]
pub struct Drain {
    noun: &'static str,
    timeout: Duration,
    deadline: Instant,
}

/// `1 request`, `2 requests`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

impl Drain {
    /// Begins a drain of `in_flight` pieces of work, each a `noun`
    /// (`request`, `action`, `sensor`), that may take `timeout`; logs it.
    pub fn begin(noun: &'static str, in_flight: usize, timeout: Duration) -> Drain {
        tracing::info!(
            in_flight,
            drain_timeout_s = timeout.as_secs_f64(),
            "stopping: waiting up to {timeout:?} for {} in flight",
            count(in_flight, noun)
        );
        Drain {
            noun,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// When what is still in flight is cut.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// [`wait_until`] this drain's deadline.
    pub fn wait(&self, left: impl FnMut() -> usize) -> usize {
        wait_until(self.deadline, left)
    }

    /// Logs the end: everything finished (`cut` is 0), or `cut` pieces were
    /// `how` (`closed`, `killed`) at the deadline.
    pub fn end(self, cut: usize, how: &str) {
        if cut == 0 {
            tracing::info!(cut, "stopped: everything in flight finished");
        } else {
            tracing::warn!(
                cut,
                drain_timeout_s = self.timeout.as_secs_f64(),
                "stopped: the drain deadline of {:?} passed; {} {how}",
                self.timeout,
                count(cut, self.noun)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_timeouts_are_non_negative_seconds() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds(" 2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "ten", "", "inf", "NaN", "1e30"] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("seconds"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_drain_waits_for_the_work_or_the_deadline() {
        let drain = Drain::begin("action", 2, Duration::from_secs(30));
        let mut left = 3;
        assert_eq!(
            drain.wait(|| {
                left -= 1;
                left
            }),
            0
        );
        let drain = Drain::begin("action", 1, Duration::ZERO);
        assert_eq!(drain.wait(|| 1), 1);
        drain.end(1, "killed");
    }
}
