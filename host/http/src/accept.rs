//! What an accept loop does when accepting fails (out of file descriptors above all): pause,
//! longer each time up to a ceiling, instead of spinning on the error; and say so at most once per
//! [`WARN_EVERY`], with how many failed, instead of once per failure.

use std::io;
use std::time::{Duration, Instant};

/// Pauses after a failed accept: the first, and the longest.
pub const RETRY_FIRST: Duration = Duration::from_millis(10);
pub const RETRY_MAX: Duration = Duration::from_secs(1);
/// Failed accepts are logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Failed accepts since the last success: how long to pause, and when to say so.
#[derive(Debug)]
pub struct AcceptFailures {
    /// The listener, in log lines.
    what: &'static str,
    count: u64,
    retry: Duration,
    warned: Option<Instant>,
}

impl AcceptFailures {
    pub fn new(what: &'static str) -> Self {
        Self { what, count: 0, retry: Duration::ZERO, warned: None }
    }

    /// Counts a failed accept; returns how long to pause before the next.
    pub fn failed(&mut self, err: &io::Error) -> Duration {
        self.count += 1;
        self.retry = if self.retry.is_zero() { RETRY_FIRST } else { (self.retry * 2).min(RETRY_MAX) };
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(%err, server = self.what, failures = self.count, retry_ms = self.retry.as_millis() as u64,
                "accept failed (out of file descriptors?); pausing before the next");
            self.warned = Some(Instant::now());
        }
        self.retry
    }

    /// A connection was accepted: the next failure starts over.
    pub fn accepted(&mut self) {
        if self.count > 0 {
            tracing::info!(server = self.what, failures = self.count, "accepting again");
        }
        self.count = 0;
        self.retry = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_to_a_ceiling_and_reset_on_success() {
        let mut failures = AcceptFailures::new("test");
        let emfile = io::Error::other("too many open files");
        let pauses: Vec<Duration> = (0..10).map(|_| failures.failed(&emfile)).collect();
        assert_eq!(pauses[0], RETRY_FIRST);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[9], RETRY_MAX);
        failures.accepted();
        assert_eq!(failures.failed(&emfile), RETRY_FIRST);
    }
}
