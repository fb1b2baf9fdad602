//! A run's figures: printed as a short table, or as JSON for scripts (`--json`).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Everything a run measured. Rates count only what happened after the warm-up.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: &'static str,
    pub size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub batch: usize,
    /// Target rate (msg/s), 0 for as fast as possible.
    pub rate: u64,
    pub elapsed_s: f64,
    pub warmup_s: f64,
    /// Messages the broker acknowledged.
    pub sent: u64,
    pub received: u64,
    /// Failed calls (each failed send counts once, whatever its batch).
    pub errors: u64,
    pub last_error: Option<String>,
    pub send_msg_per_s: f64,
    pub send_mb_per_s: f64,
    pub receive_msg_per_s: f64,
    /// From a request's start (its planned start when it was held back) to its acknowledgement, one
    /// sample per message.
    pub send_latency_us: Option<Latency>,
    /// From a message's send to its receipt by a consumer.
    pub e2e_latency_us: Option<Latency>,
    pub lag: Option<Lag>,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub mean: f64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            samples: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// Messages sent but not yet received, sampled once a second while producers run.
#[derive(Clone, Debug, Serialize)]
pub struct Lag {
    pub samples: Vec<u64>,
    pub first_third_mean: f64,
    pub last_third_mean: f64,
    /// The lag of the last third of the run is no more than twice that of the first third plus
    /// what is normally in flight: consumers keep up.
    pub keeps_up: bool,
}

impl Lag {
    pub fn of(samples: Vec<u64>, in_flight: u64) -> Lag {
        let third = samples.len() / 3;
        let mean = |s: &[u64]| if s.is_empty() { 0.0 } else { s.iter().sum::<u64>() as f64 / s.len() as f64 };
        let (first, last) = if third == 0 {
            (mean(&samples), mean(&samples))
        } else {
            (mean(&samples[..third]), mean(&samples[samples.len() - third..]))
        };
        Lag {
            keeps_up: last <= 2.0 * first + in_flight as f64,
            first_third_mean: first,
            last_third_mean: last,
            samples,
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} {}: {} B messages, {} producers × batch {}, {} consumers, rate {}",
            self.target,
            self.mode,
            self.size,
            self.producers,
            self.batch,
            self.consumers,
            if self.rate == 0 { "unlimited".to_owned() } else { format!("{} msg/s", self.rate) },
        )?;
        writeln!(f, "  elapsed     {:.1} s (first {:.1} s not counted)", self.elapsed_s, self.warmup_s)?;
        if self.producers > 0 {
            writeln!(
                f,
                "  sent        {} messages, {:.0} msg/s, {:.1} MB/s",
                self.sent, self.send_msg_per_s, self.send_mb_per_s
            )?;
        }
        if self.consumers > 0 {
            writeln!(f, "  received    {} messages, {:.0} msg/s", self.received, self.receive_msg_per_s)?;
        }
        if let Some(l) = &self.send_latency_us {
            writeln!(f, "  ack latency {l}")?;
        }
        if let Some(l) = &self.e2e_latency_us {
            writeln!(f, "  e2e latency {l}")?;
        }
        if let Some(lag) = &self.lag {
            writeln!(
                f,
                "  lag         {:.0} → {:.0} messages (first → last third): {}",
                lag.first_third_mean,
                lag.last_third_mean,
                if lag.keeps_up { "consumers keep up" } else { "consumers fall behind" }
            )?;
        }
        if self.errors > 0 {
            writeln!(f, "  errors      {} (last: {})", self.errors, self.last_error.as_deref().unwrap_or("?"))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs", self.p50, self.p99, self.p999, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_that_grows_beyond_the_in_flight_window_means_consumers_fall_behind() {
        assert!(Lag::of(vec![100, 120, 90, 110, 100, 95], 64).keeps_up);
        assert!(!Lag::of(vec![100, 200, 400, 800, 1600, 3200], 64).keeps_up);
        assert!(Lag::of(vec![], 64).keeps_up, "no sample, nothing grew");
    }

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).expect("histogram");
        for v in 1..=1000 {
            h.record(v).expect("record");
        }
        let l = Latency::of(&h).expect("samples");
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50, 500);
        assert_eq!(l.p99, 990);
        assert_eq!(l.max, 1000);
        assert!(Latency::of(&Histogram::<u64>::new(3).expect("histogram")).is_none());
    }
}
