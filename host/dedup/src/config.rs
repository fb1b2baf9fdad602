//! `[broker.dedup]`: whether sends are de-duplicated, and the window by time and by count.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest window by time: a day. The store's index must still hold the records for a window to
/// outlive a restart, and retention keeps days, not weeks.
pub const WINDOW_MS_MAX: u64 = 24 * 3_600_000;
/// Most ids kept in memory: at about 85 bytes each (see [`crate::window`]), some 1.7 GB.
pub const WINDOW_MESSAGES_MAX: usize = 20_000_000;
/// NATS JetStream's default duplicate window.
pub const DEFAULT_WINDOW_MS: u64 = 120_000;
pub const DEFAULT_WINDOW_MESSAGES: usize = 1_000_000;

const _: () = assert!(DEFAULT_WINDOW_MS <= WINDOW_MS_MAX && DEFAULT_WINDOW_MESSAGES <= WINDOW_MESSAGES_MAX);
// Times are i64 milliseconds; the longest window must convert without loss.
const _: () = assert!(WINDOW_MS_MAX <= i64::MAX as u64);

/// De-duplication settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// Answer a send whose id the topic received within the window with the first send's receipt,
    /// and store nothing.
    pub enabled: bool,
    /// How long after the first send a second one with the same id is a duplicate.
    pub window_ms: u64,
    /// Most ids remembered in memory, broker-wide; older ones are evicted first. An evicted id is
    /// still found in the store's index until `window_ms` has passed: this bounds memory, not the
    /// window.
    pub window_messages: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self { enabled: true, window_ms: DEFAULT_WINDOW_MS, window_messages: DEFAULT_WINDOW_MESSAGES }
    }
}

/// A setting outside its limits.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("window_ms = {0} is outside 1..={WINDOW_MS_MAX}")]
    WindowMs(u64),
    #[error("window_messages = {0} is outside 1..={WINDOW_MESSAGES_MAX}")]
    WindowMessages(usize),
}

impl DedupConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=WINDOW_MS_MAX).contains(&self.window_ms) {
            return Err(ConfigError::WindowMs(self.window_ms));
        }
        if !(1..=WINDOW_MESSAGES_MAX).contains(&self.window_messages) {
            return Err(ConfigError::WindowMessages(self.window_messages));
        }
        Ok(())
    }

    /// The window by time in the milliseconds clocks give.
    pub fn window_ms_i64(&self) -> i64 {
        i64::try_from(self.window_ms.min(WINDOW_MS_MAX)).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_holds_at_its_bound_and_fails_past_it() {
        let ok = |change: fn(&mut DedupConfig)| {
            let mut config = DedupConfig::default();
            change(&mut config);
            config.validate()
        };
        assert_eq!(ok(|_| {}), Ok(()));
        assert_eq!(ok(|c| c.window_ms = 1), Ok(()));
        assert_eq!(ok(|c| c.window_ms = WINDOW_MS_MAX), Ok(()));
        assert_eq!(ok(|c| c.window_ms = 0), Err(ConfigError::WindowMs(0)));
        assert_eq!(ok(|c| c.window_ms = WINDOW_MS_MAX + 1), Err(ConfigError::WindowMs(WINDOW_MS_MAX + 1)));
        assert_eq!(ok(|c| c.window_messages = 1), Ok(()));
        assert_eq!(ok(|c| c.window_messages = WINDOW_MESSAGES_MAX), Ok(()));
        assert_eq!(ok(|c| c.window_messages = 0), Err(ConfigError::WindowMessages(0)));
        assert_eq!(
            ok(|c| c.window_messages = WINDOW_MESSAGES_MAX + 1),
            Err(ConfigError::WindowMessages(WINDOW_MESSAGES_MAX + 1))
        );
    }
}
