//! `ferrymq plugin test --bench`: what a plugin costs the broker, measured in the broker's own
//! engine and limits — a new instance's first call, and the cost per message on a warm instance.

use std::time::{Duration, Instant};

use anyhow::Context;

use ferrymq_plugin::{FilterPlugin, Grant, Loaded, PluginEngine, PluginLimits, RoutePlugin, TxCheckPlugin, World};
use ferrymq_proto::plugin_batch::PluginMessage;

use super::samples::Sample;

/// Rounds per figure; the median is reported with the range.
const ROUNDS: usize = 9;
/// Each round calls until this much time has passed.
const ROUND_TIME: Duration = Duration::from_millis(100);
/// Fresh instances timed for the first-call figure.
const FIRST_CALLS: usize = 5;
/// Filter batch sizes measured: the broker's receive batch and a large one.
const FILTER_BATCHES: [usize; 2] = [32, 256];

/// Median and range of `rounds`, in nanoseconds.
fn summary(mut rounds: Vec<f64>) -> (f64, f64, f64) {
    rounds.sort_by(f64::total_cmp);
    (rounds[rounds.len() / 2], rounds[0], rounds[rounds.len() - 1])
}

/// Times `call` (which handles `per_call` messages) over [`ROUNDS`] rounds: ns per message.
fn rounds(per_call: usize, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64, f64)> {
    call()?; // warm: the instance exists and has run once
    let mut out = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < ROUND_TIME {
            call()?;
            calls += 1;
        }
        out.push(started.elapsed().as_nanos() as f64 / (calls as f64 * per_call as f64));
    }
    Ok(summary(out))
}

pub fn run(
    engine: &PluginEngine,
    loaded: &Loaded,
    limits: &PluginLimits,
    grant: &Grant,
    samples: &[Sample],
) -> anyhow::Result<()> {
    // Measure the plugin, not the terminal: its log lines are dropped (and counted) while measuring.
    let limits = PluginLimits { log_lines_per_s_max: 0, ..limits.clone() };
    let grant = Grant { inherit_stderr: false, ..grant.clone() };
    let one = [samples[0].as_plugin_message(loaded.world == World::Filter, 0)];
    let mut rows = Vec::new();

    // A new instance's first call: what the broker pays once per instance (the pool keeps them).
    let mut first = Vec::with_capacity(FIRST_CALLS);
    for _ in 0..FIRST_CALLS {
        let started = Instant::now();
        call_once(engine, loaded, &limits, &grant, &one[0])?;
        first.push(started.elapsed().as_nanos() as f64);
    }
    rows.push(("first call of a new instance".to_owned(), 1, summary(first)));

    match loaded.world {
        World::Filter => {
            let plugin = FilterPlugin::new(engine, "bench", loaded, limits, grant)?;
            let bodies: std::sync::Arc<Vec<Vec<u8>>> =
                std::sync::Arc::new(samples.iter().map(|s| s.body.clone()).collect());
            for batch in FILTER_BATCHES {
                let messages: Vec<PluginMessage<'_>> =
                    samples.iter().cycle().take(batch).map(|s| s.as_plugin_message(false, 1)).collect();
                let figure = rounds(batch, || {
                    // As the broker's: a body is copied only when the plugin asks for it.
                    let bodies = bodies.clone();
                    let source = Box::new(move |i: u32| bodies.get(i as usize % bodies.len()).cloned());
                    plugin.filter(&messages, source).map(drop).context("a filter call failed")
                });
                // A batch size the plugin cannot judge within its time limit is a finding, not an end.
                match figure {
                    Ok(figure) => rows.push((format!("filter, batches of {batch}"), batch, figure)),
                    Err(err) => eprintln!("filter, batches of {batch}: {err:#}"),
                }
            }
        }
        World::Route => {
            let plugin = RoutePlugin::new(engine, "bench", loaded, limits, grant)?;
            let messages: Vec<PluginMessage<'_>> = samples.iter().map(|s| s.as_plugin_message(true, 0)).collect();
            let mut next = messages.iter().cycle();
            let figure = rounds(1, || {
                let m = next.next().context("a message")?;
                plugin.route(m).map(drop).context("a route call failed")
            })?;
            rows.push(("route, one message a call".to_owned(), 1, figure));
        }
        World::TxCheck => {
            let plugin = TxCheckPlugin::new(engine, "bench", loaded, limits, grant)?;
            let messages: Vec<PluginMessage<'_>> = samples.iter().map(|s| s.as_plugin_message(true, 0)).collect();
            let mut next = messages.iter().cycle();
            let figure = rounds(1, || {
                let m = next.next().context("a message")?;
                plugin.check("bench", m).map(drop).context("a tx-check call failed")
            })?;
            rows.push(("tx-check, one message a call".to_owned(), 1, figure));
        }
    }
    eprintln!("\n{:<32} {:>9} {:>14} {:>22}", "measured", "per call", "ns/message", "range over rounds");
    for (what, per_call, (median, low, high)) in rows {
        eprintln!("{what:<32} {per_call:>9} {median:>14.0} {:>22}", format!("{low:.0}-{high:.0}"));
    }
    eprintln!(
        "(median of {ROUNDS} rounds of {} ms; the first call: {FIRST_CALLS} fresh instances)",
        ROUND_TIME.as_millis()
    );
    Ok(())
}

/// Binds the component anew and calls it once: instantiation plus one call.
fn call_once(
    engine: &PluginEngine,
    loaded: &Loaded,
    limits: &PluginLimits,
    grant: &Grant,
    message: &PluginMessage<'_>,
) -> anyhow::Result<()> {
    match loaded.world {
        World::Filter => {
            let plugin = FilterPlugin::new(engine, "bench-first", loaded, limits.clone(), grant.clone())?;
            plugin.filter(std::slice::from_ref(message), Box::new(|_| None)).map(drop)?;
        }
        World::Route => {
            RoutePlugin::new(engine, "bench-first", loaded, limits.clone(), grant.clone())?.route(message).map(drop)?;
        }
        World::TxCheck => {
            TxCheckPlugin::new(engine, "bench-first", loaded, limits.clone(), grant.clone())?
                .check("bench", message)
                .map(drop)?;
        }
    }
    Ok(())
}
