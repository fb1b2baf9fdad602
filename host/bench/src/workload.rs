//! What a benchmark run does: its shape (`--size`, `--producers`, …) and its mode.

use std::time::Duration;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Producers only: acknowledged sends per second and acknowledgement latency.
    Produce,
    /// Consumers only, draining what is already stored.
    Consume,
    /// Producers and consumers together: end-to-end latency and whether consumers keep up.
    E2e,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// The workload, the same for every target.
#[derive(Clone, Debug, clap::Args)]
pub struct Workload {
    /// Message body size in bytes (at least 8: the body starts with its send time).
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub size: usize,
    /// Concurrent producers, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub producers: usize,
    /// Concurrent consumers, each with its own connection.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub consumers: usize,
    /// Messages per send request: a producer waits for all of them to be acknowledged.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch: usize,
    /// Target rate of all producers together, in messages per second; 0 sends as fast as
    /// acknowledgements come back. A request held back by a slow acknowledgement is timed from its
    /// planned start, so a broker that falls behind the rate is charged for the wait.
    #[arg(long, default_value_t = 0, value_name = "MSG/S")]
    pub rate: u64,
    /// How long to run (10s, 500ms, 2m; a bare number is seconds). Default 10s unless --count is given.
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub duration: Option<Duration>,
    /// Stop after this many messages: sent (produce, e2e) or received (consume).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Time at the start left out of the figures while connections and caches warm up. Default 1s,
    /// or none for a run given only --count (it may end sooner).
    #[arg(long, value_parser = parse_duration, value_name = "TIME")]
    pub warmup: Option<Duration>,
    /// How long consumers may keep draining after the producers stop (e2e).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "TIME")]
    pub drain: Duration,
}

/// Left out of the figures at the start of a timed run.
pub const WARMUP_DEFAULT: Duration = Duration::from_secs(1);
/// Runs that give neither a time nor a count stop after this long.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// A run given only a count still stops after this long.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// The body starts with an 8-byte send time.
pub const SIZE_MIN: usize = 8;
pub const SIZE_MAX: usize = 4 << 20;
pub const BATCH_MAX: usize = 1024;
pub const CLIENTS_MAX: usize = 1024;

impl Workload {
    /// Checks the shape, with a message naming the flag that is wrong.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (SIZE_MIN..=SIZE_MAX).contains(&self.size),
            "--size {} is outside {SIZE_MIN}..={SIZE_MAX} bytes",
            self.size
        );
        anyhow::ensure!((1..=BATCH_MAX).contains(&self.batch), "--batch {} is outside 1..={BATCH_MAX}", self.batch);
        anyhow::ensure!(self.producers <= CLIENTS_MAX, "--producers {} is more than {CLIENTS_MAX}", self.producers);
        anyhow::ensure!(self.consumers <= CLIENTS_MAX, "--consumers {} is more than {CLIENTS_MAX}", self.consumers);
        anyhow::ensure!(self.count != Some(0), "--count must be at least 1");
        Ok(())
    }

    /// The warm-up: never more than a fifth of the run's time limit.
    pub fn warmup(&self) -> Duration {
        let asked = match (self.warmup, self.duration, self.count) {
            (Some(warmup), _, _) => warmup,
            (None, None, Some(_)) => Duration::ZERO,
            (None, _, _) => WARMUP_DEFAULT,
        };
        asked.min(self.time_limit() / 5)
    }

    /// How long the run may last.
    pub fn time_limit(&self) -> Duration {
        match (self.duration, self.count) {
            (Some(d), _) => d,
            (None, Some(_)) => DURATION_MAX,
            (None, None) => DURATION_DEFAULT,
        }
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" => value * 60.0,
        "h" => value * 3_600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(duration: Option<u64>, count: Option<u64>, warmup: Option<u64>) -> Workload {
        Workload {
            size: 1024,
            producers: 1,
            consumers: 1,
            batch: 1,
            rate: 0,
            duration: duration.map(Duration::from_secs),
            count,
            warmup: warmup.map(Duration::from_secs),
            drain: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_run_given_only_a_count_is_measured_from_its_start() {
        assert_eq!(workload(None, Some(2000), None).warmup(), Duration::ZERO);
        assert_eq!(workload(Some(20), Some(2000), None).warmup(), WARMUP_DEFAULT);
        assert_eq!(workload(None, None, None).warmup(), WARMUP_DEFAULT);
        assert_eq!(workload(None, Some(2000), Some(3)).warmup(), Duration::from_secs(3), "asked for");
        assert_eq!(workload(Some(2), None, Some(3)).warmup(), Duration::from_millis(400), "a fifth of the run at most");
    }

    #[test]
    fn durations_read_in_every_unit_and_refuse_nonsense() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
