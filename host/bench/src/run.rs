//! The run itself: producer and consumer tasks, pacing, warm-up, draining, and the tally.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::progress::Progress;
use super::report::{Lag, Latency, Report};
use super::workload::{Mode, Workload};
use super::{Consumer, Producer, Target};

/// A producer or consumer gives up after this many failures in a row.
const FAILURES_IN_A_ROW_MAX: u32 = 50;
/// Pause after a failed call before the next.
const FAILURE_PAUSE: Duration = Duration::from_millis(20);
/// Histograms cover 1 µs to 100 s with 3 significant digits.
const LATENCY_US_MAX: u64 = 100_000_000;

/// Counters every task shares.
#[derive(Debug, Default)]
struct Tally {
    /// Messages claimed for sending, so that `--count` is never exceeded.
    claimed: AtomicU64,
    /// Messages acknowledged by the broker.
    sent: AtomicU64,
    /// Messages acknowledged after the warm-up.
    sent_measured: AtomicU64,
    received: AtomicU64,
    received_measured: AtomicU64,
    /// When the last message arrived, in nanoseconds since the start: a drained queue stops the
    /// consume clock, not the end of the run.
    last_received_ns: AtomicU64,
    errors: AtomicU64,
    /// Producers are done (time or count reached).
    producing_done: AtomicBool,
    /// Everything is to stop now.
    stop: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, error: &anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{error:#}"));
        }
    }
}

#[derive(Clone, Debug)]
struct Clock {
    start: Instant,
    warm_end: Instant,
    end: Instant,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("latency histogram")
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Runs `mode` against `target` and returns the figures. `progress` draws a progress line on stderr.
pub async fn run<T: Target>(target: Arc<T>, mode: Mode, workload: &Workload, progress: bool) -> anyhow::Result<Report> {
    workload.check()?;
    let producers = if mode == Mode::Consume { 0 } else { workload.producers };
    let consumers = if mode == Mode::Produce { 0 } else { workload.consumers };
    anyhow::ensure!(mode == Mode::Consume || producers > 0, "{} needs at least one producer", mode.as_str());
    anyhow::ensure!(mode == Mode::Produce || consumers > 0, "{} needs at least one consumer", mode.as_str());

    // Connect everything before the clock starts.
    let mut producer_handles = Vec::with_capacity(producers);
    for i in 0..producers {
        producer_handles.push(target.producer(i).await.with_context(|| format!("starting producer {i}"))?);
    }
    let mut consumer_handles = Vec::with_capacity(consumers);
    for i in 0..consumers {
        consumer_handles.push(target.consumer(i).await.with_context(|| format!("starting consumer {i}"))?);
    }

    let limit = workload.time_limit();
    let start = Instant::now();
    let warmup = workload.warmup();
    let clock = Clock { start, warm_end: start + warmup, end: start + limit };
    let tally = Arc::new(Tally::default());
    let progress = Progress::start(progress, mode, workload, tally_view(&tally), clock.start, limit);

    let mut producer_tasks = tokio::task::JoinSet::new();
    for (i, p) in producer_handles.into_iter().enumerate() {
        let (tally, clock, workload) = (tally.clone(), clock.clone(), workload.clone());
        producer_tasks.spawn(produce(p, i, workload, clock, tally));
    }
    let mut consumer_tasks = tokio::task::JoinSet::new();
    for c in consumer_handles {
        let (tally, clock, workload) = (tally.clone(), clock.clone(), workload.clone());
        consumer_tasks.spawn(consume(c, mode, workload, clock, tally));
    }
    // Messages in flight between a producer and a consumer are not lag.
    let in_flight = (workload.producers * workload.batch) as u64;
    let sampler = (mode == Mode::E2e).then(|| tokio::spawn(sample_lag(tally.clone(), clock.clone(), in_flight)));

    let mut send_latency = histogram()?;
    let mut first_error = None;
    while let Some(joined) = producer_tasks.join_next().await {
        match joined.context("a producer task panicked")? {
            Ok(h) => send_latency.add(h).context("merging histograms")?,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let producing_end = Instant::now();
    tally.producing_done.store(true, Ordering::Release);

    let mut e2e_latency = histogram()?;
    while let Some(joined) = consumer_tasks.join_next().await {
        match joined.context("a consumer task panicked")? {
            Ok(h) => e2e_latency.add(h).context("merging histograms")?,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let consuming_end = Instant::now();
    tally.stop.store(true, Ordering::Release);
    let lag = match sampler {
        Some(task) => Some(task.await.context("the lag sampler panicked")?),
        None => None,
    };
    progress.finish().await;

    let sent = tally.sent.load(Ordering::Acquire);
    let received = tally.received.load(Ordering::Acquire);
    if let Some(e) = first_error
        && sent == 0
        && received == 0
    {
        return Err(e);
    }
    let produce_s = producing_end.saturating_duration_since(clock.warm_end).as_secs_f64();
    let last_received = clock.start + Duration::from_nanos(tally.last_received_ns.load(Ordering::Acquire));
    let consume_s = last_received.min(consuming_end).saturating_duration_since(clock.warm_end).as_secs_f64();
    let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let send_per_s = per_s(tally.sent_measured.load(Ordering::Acquire), produce_s);
    let last_error = tally.last_error.lock().ok().and_then(|l| l.clone());
    Ok(Report {
        target: target.name(),
        mode: mode.as_str(),
        size: workload.size,
        producers,
        consumers,
        batch: workload.batch,
        rate: workload.rate,
        elapsed_s: consuming_end.duration_since(clock.start).as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        sent,
        received,
        errors: tally.errors.load(Ordering::Acquire),
        last_error,
        send_msg_per_s: send_per_s,
        send_mb_per_s: send_per_s * workload.size as f64 / 1e6,
        receive_msg_per_s: per_s(tally.received_measured.load(Ordering::Acquire), consume_s),
        send_latency_us: (producers > 0).then(|| Latency::of(&send_latency)).flatten(),
        e2e_latency_us: (mode == Mode::E2e).then(|| Latency::of(&e2e_latency)).flatten(),
        lag,
    })
}

/// What the progress line shows.
pub(super) struct TallyView {
    tally: Arc<Tally>,
}

impl TallyView {
    pub(super) fn sent(&self) -> u64 {
        self.tally.sent.load(Ordering::Relaxed)
    }
    pub(super) fn received(&self) -> u64 {
        self.tally.received.load(Ordering::Relaxed)
    }
    pub(super) fn errors(&self) -> u64 {
        self.tally.errors.load(Ordering::Relaxed)
    }
    pub(super) fn stopped(&self) -> bool {
        self.tally.stop.load(Ordering::Relaxed)
    }
}

fn tally_view(tally: &Arc<Tally>) -> TallyView {
    TallyView { tally: tally.clone() }
}

/// One producer's loop; returns its acknowledgement-latency histogram (µs, one sample per message).
async fn produce<P: Producer>(
    mut producer: P,
    index: usize,
    workload: Workload,
    clock: Clock,
    tally: Arc<Tally>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = histogram()?;
    let mut template = vec![0u8; workload.size];
    for (i, byte) in template.iter_mut().enumerate().skip(8) {
        *byte = b'a' + (i % 26) as u8;
    }
    // With a rate, each producer sends a batch every `interval`, the producers staggered evenly.
    let interval = (workload.rate > 0)
        .then(|| Duration::from_secs_f64(workload.batch as f64 * workload.producers as f64 / workload.rate as f64));
    let mut next =
        clock.start + interval.map_or(Duration::ZERO, |i| i.mul_f64(index as f64 / workload.producers as f64));
    let mut failures = Failures::default();
    loop {
        if tally.stop.load(Ordering::Relaxed) || Instant::now() >= clock.end {
            break;
        }
        let n = match workload.count {
            Some(count) => {
                let claimed = tally.claimed.fetch_add(workload.batch as u64, Ordering::Relaxed);
                if claimed >= count {
                    break;
                }
                (count - claimed).min(workload.batch as u64) as usize
            }
            None => workload.batch,
        };
        let planned = match interval {
            Some(interval) => {
                if next >= clock.end {
                    break;
                }
                // A request that could start on time is timed from when it started: the timer wakes
                // up to a millisecond late, and that is not the broker's doing. One held back by the
                // previous acknowledgement is timed from when it should have started.
                let late = Instant::now() > next;
                tokio::time::sleep_until(next).await;
                let planned = if late { next } else { Instant::now() };
                next += interval;
                planned
            }
            None => Instant::now(),
        };
        let stamp = now_ns().to_le_bytes();
        let bodies = (0..n)
            .map(|_| {
                let mut body = template.clone();
                body[..8].copy_from_slice(&stamp);
                body
            })
            .collect();
        match producer.send(bodies).await {
            Ok(()) => {
                failures.succeeded();
                let done = Instant::now();
                tally.sent.fetch_add(n as u64, Ordering::Relaxed);
                if planned >= clock.warm_end {
                    tally.sent_measured.fetch_add(n as u64, Ordering::Relaxed);
                    let us = done.duration_since(planned).as_micros().clamp(1, u128::from(LATENCY_US_MAX)) as u64;
                    latency.record_n(us, n as u64).context("recording a latency")?;
                }
            }
            Err(e) => failures.failed(e, &tally, || format!("producer {index}")).await?,
        }
    }
    Ok(latency)
}

/// One consumer's loop; returns its end-to-end latency histogram (µs).
async fn consume<C: Consumer>(
    mut consumer: C,
    mode: Mode,
    workload: Workload,
    clock: Clock,
    tally: Arc<Tally>,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = histogram()?;
    let mut stamps = Vec::with_capacity(64);
    let mut failures = Failures::default();
    let mut drain_end: Option<Instant> = None;
    loop {
        let received = tally.received.load(Ordering::Relaxed);
        match mode {
            Mode::Consume => {
                if workload.count.is_some_and(|c| received >= c) || Instant::now() >= clock.end {
                    break;
                }
            }
            _ => {
                if tally.producing_done.load(Ordering::Acquire) {
                    // Drain what was sent, for at most --drain.
                    let drain_end = *drain_end.get_or_insert_with(|| Instant::now() + workload.drain);
                    if received >= tally.sent.load(Ordering::Acquire) || Instant::now() >= drain_end {
                        break;
                    }
                }
            }
        }
        stamps.clear();
        match consumer.receive(&mut stamps).await {
            Ok(()) => {
                failures.succeeded();
                let n = stamps.len() as u64;
                tally.received.fetch_add(n, Ordering::Relaxed);
                let now = Instant::now();
                if n > 0 {
                    let since_start = now.duration_since(clock.start).as_nanos() as u64;
                    tally.last_received_ns.fetch_max(since_start, Ordering::Relaxed);
                }
                if now >= clock.warm_end {
                    tally.received_measured.fetch_add(n, Ordering::Relaxed);
                    if mode == Mode::E2e {
                        let wall = now_ns();
                        for &sent in &stamps {
                            let us = (wall.saturating_sub(sent) / 1_000).clamp(1, LATENCY_US_MAX);
                            latency.record(us).context("recording a latency")?;
                        }
                    }
                }
            }
            Err(e) => failures.failed(e, &tally, || "a consumer".to_owned()).await?,
        }
    }
    Ok(latency)
}

/// Failures in a row of one producer or consumer.
#[derive(Default)]
struct Failures {
    in_a_row: u32,
}

impl Failures {
    fn succeeded(&mut self) {
        self.in_a_row = 0;
    }

    /// Counts `error`, then pauses; gives up (with the error) after too many in a row.
    async fn failed(
        &mut self,
        error: anyhow::Error,
        tally: &Tally,
        who: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        tally.fail(&error);
        self.in_a_row += 1;
        if self.in_a_row >= FAILURES_IN_A_ROW_MAX {
            return Err(error.context(format!("{} failed {} times in a row", who(), self.in_a_row)));
        }
        tokio::time::sleep(FAILURE_PAUSE).await;
        Ok(())
    }
}

/// Samples sent − received once a second while producers run (e2e).
async fn sample_lag(tally: Arc<Tally>, clock: Clock, in_flight: u64) -> Lag {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(clock.warm_end, Duration::from_secs(1));
    loop {
        tick.tick().await;
        if tally.producing_done.load(Ordering::Acquire) || tally.stop.load(Ordering::Acquire) {
            break;
        }
        let sent = tally.sent.load(Ordering::Acquire);
        samples.push(sent.saturating_sub(tally.received.load(Ordering::Acquire)));
    }
    Lag::of(samples, in_flight)
}
