//! A progress line on stderr while a run goes: elapsed time as a bar, messages so far, current rate.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use tokio::time::Instant;

use super::run::TallyView;
use super::workload::{Mode, Workload};

/// A redraw on a terminal; a plain line every few seconds into a log.
const TERMINAL_EVERY: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

pub(super) struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    terminal: bool,
}

impl Progress {
    pub(super) fn start(
        enabled: bool,
        mode: Mode,
        workload: &Workload,
        view: TallyView,
        start: Instant,
        limit: Duration,
    ) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        if !enabled {
            return Progress { task: None, terminal };
        }
        let count = workload.count;
        let every = if terminal { TERMINAL_EVERY } else { LOG_EVERY };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + every, every);
            let mut last = (Instant::now(), 0u64);
            while !view.stopped() {
                tick.tick().await;
                let done = if mode == Mode::Consume { view.received() } else { view.sent() };
                let now = Instant::now();
                let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, done);
                let elapsed = now.duration_since(start);
                let by_time = elapsed.as_secs_f64() / limit.as_secs_f64();
                let by_count = count.map_or(0.0, |c| done as f64 / c as f64);
                let fraction = by_time.max(by_count).min(1.0);
                let filled = (fraction * BAR_WIDTH as f64) as usize;
                let line = format!(
                    "[{}{}] {:5.1} s  sent {}  received {}  {:.0} msg/s{}",
                    "#".repeat(filled),
                    ".".repeat(BAR_WIDTH - filled),
                    elapsed.as_secs_f64(),
                    view.sent(),
                    view.received(),
                    rate,
                    match view.errors() {
                        0 => String::new(),
                        e => format!("  errors {e}"),
                    }
                );
                let mut err = std::io::stderr().lock();
                let _ = if terminal { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
            }
        });
        Progress { task: Some(task), terminal }
    }

    pub(super) async fn finish(self) {
        if let Some(task) = self.task {
            let _ = task.await;
            if self.terminal {
                eprintln!();
            }
        }
    }
}
