//! Log lines that can repeat once per message or per request, bounded: a [`Throttle`] admits a few
//! lines per window and counts the rest, so that a client who can make the broker warn cannot make
//! it write its disk full of warnings or hide everything else in the log.
//!
//! ```
//! use ferrymq_proto::throttle::Throttle;
//! static UNREADABLE: Throttle = Throttle::per_second(5);
//! if let Some(suppressed) = UNREADABLE.admit() {
//!     // log the line, with `suppressed` lines left out since the last one that was written
//!     # let _ = suppressed;
//! }
//! ```

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Lines left out by every throttle of the process since it started (`ferrymq_log_lines_suppressed_total`).
static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Lines every throttle of the process left out so far.
pub fn suppressed_total() -> u64 {
    SUPPRESSED_TOTAL.load(Ordering::Relaxed)
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// At most `lines` admitted per `window_ms`; meant to be a `static` beside the line it guards.
#[derive(Debug)]
pub struct Throttle {
    lines: u32,
    window_ms: u64,
    /// Start of the current window, in ms since the process's first use of a throttle, plus one
    /// (0: no window yet).
    window_start: AtomicU64,
    admitted: AtomicU32,
    /// Left out since the last admitted line.
    suppressed: AtomicU64,
}

impl Throttle {
    /// At most `lines` per `window_ms`.
    pub const fn new(lines: u32, window_ms: u64) -> Self {
        Self {
            lines,
            window_ms,
            window_start: AtomicU64::new(0),
            admitted: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// At most `lines` per second.
    pub const fn per_second(lines: u32) -> Self {
        Self::new(lines, 1_000)
    }

    /// `Some(n)` when this line may be written, `n` being how many were left out since the last one
    /// written (say so in the line); `None` when it must be left out (it is counted).
    pub fn admit(&self) -> Option<u64> {
        let now = now_ms() + 1;
        let start = self.window_start.load(Ordering::Acquire);
        if start == 0 || now.saturating_sub(start) >= self.window_ms {
            // One caller opens the new window; the others count against it.
            if self.window_start.compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.admitted.store(0, Ordering::Release);
            }
        }
        if self.admitted.fetch_add(1, Ordering::AcqRel) < self.lines {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_its_lines_per_window_counts_the_rest_and_reports_them_with_the_next_line() {
        let throttle = Throttle::new(3, 200);
        let before = suppressed_total();
        let admitted: Vec<_> = (0..10).map(|_| throttle.admit()).collect();
        assert_eq!(&admitted[..3], &[Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none), "{admitted:?}");
        assert!(suppressed_total() >= before + 7);
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(throttle.admit(), Some(7), "the next window's first line says how many were left out");
        assert_eq!(throttle.admit(), Some(0));
    }

    #[test]
    fn many_threads_together_get_no_more_than_the_window_allows() {
        let throttle = Throttle::new(5, 60_000);
        let admitted = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        if throttle.admit().is_some() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 5);
    }
}
