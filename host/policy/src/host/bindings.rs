//! What a binding is: where it came from, the versions it keeps, and the immutable set of every
//! binding that the hooks read (swapped whole on each change).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use ferrymq_plugin::{FilterPlugin, PluginStats, RoutePlugin, TxCheckPlugin};

use crate::config::{FailurePolicy, LimitsConfig, PluginKind, Shape};

/// Where a binding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[plugins.bindings]]` in the configuration file: fixed until restart.
    Config,
    /// The admin API: changed at run time, recorded in the plugins topic.
    Admin,
}

/// What the admin API and metrics show of a binding.
#[derive(Clone, Debug)]
pub struct BindingInfo {
    pub name: String,
    pub kind: PluginKind,
    pub topic: String,
    pub group: Option<String>,
    pub policy: FailurePolicy,
    pub source: Source,
    /// The component file (configuration bindings).
    pub component: Option<PathBuf>,
    /// The plugin and version (admin bindings).
    pub plugin: Option<String>,
    pub version: Option<u32>,
    /// SHA-256 of the active component.
    pub digest: String,
    /// Commit-log position from which the active version decides.
    pub position: u64,
    /// Filters: the versions kept for older messages, oldest first, as (version, position).
    pub history: Vec<(Option<u32>, u64)>,
    /// The parameters the plugin reads (without the ones the broker sets, `ferrymq.…`).
    pub params: BTreeMap<String, String>,
    /// The limits as the binding sets them.
    pub limits: LimitsConfig,
}

/// One version of a binding's plugin and the log position from which it decides.
pub(super) struct Version<P> {
    pub(super) plugin: P,
    pub(super) version: Option<u32>,
    pub(super) position: u64,
}

/// A bound plugin: the active version last; filters keep earlier versions for the messages stored
/// before each later one took over.
pub(super) struct Bound<P> {
    pub(super) info: BindingInfo,
    pub(super) versions: Vec<Version<P>>,
    /// The counters of this binding's versions that are no longer in `versions` (replaced by an
    /// activation or a rollback, or trimmed from a filter's history): a binding's counters add up
    /// over its version swaps.
    pub(super) retired: PluginStats,
}

/// A bound plugin of any world, for its counters.
pub(super) trait Counted {
    fn stats(&self) -> PluginStats;
}

impl Counted for FilterPlugin {
    fn stats(&self) -> PluginStats {
        FilterPlugin::stats(self)
    }
}

impl Counted for RoutePlugin {
    fn stats(&self) -> PluginStats {
        RoutePlugin::stats(self)
    }
}

impl Counted for TxCheckPlugin {
    fn stats(&self) -> PluginStats {
        TxCheckPlugin::stats(self)
    }
}

/// `total` with the counters of `more` added (the states, quarantine and workers, are `total`'s).
pub(super) fn add_counts(total: PluginStats, more: PluginStats) -> PluginStats {
    PluginStats {
        calls: total.calls + more.calls,
        failures: total.failures + more.failures,
        call_ns_total: total.call_ns_total + more.call_ns_total,
        log_lines_dropped: total.log_lines_dropped + more.log_lines_dropped,
        worker_calls: total.worker_calls + more.worker_calls,
        ..total
    }
}

impl<P> Bound<P> {
    pub(super) fn active(&self) -> &P {
        // Never empty: built with one version and only ever grown or trimmed from the front.
        &self.versions[self.versions.len() - 1].plugin
    }
}

impl<P: Counted> Bound<P> {
    /// The binding's counters: those of every version it ran since it was bound, with the active
    /// version's state (quarantined, on the workers).
    pub(super) fn stats(&self) -> PluginStats {
        let active = self.active().stats();
        let earlier = self.versions[..self.versions.len() - 1].iter().map(|v| v.plugin.stats());
        let counts = earlier.fold(add_counts(self.retired, active), add_counts);
        PluginStats { quarantined: active.quarantined, on_workers: active.on_workers, ..counts }
    }

    /// The counters a successor carries over when it keeps the last `kept` of these versions: the
    /// retired ones and those of every version it lets go.
    pub(super) fn carried(&self, kept: usize) -> PluginStats {
        let dropped = self.versions.len().saturating_sub(kept);
        let counts = self.versions[..dropped].iter().map(|v| v.plugin.stats()).fold(self.retired, add_counts);
        PluginStats { quarantined: false, on_workers: false, ..counts }
    }
}

/// One consistent set of bindings; replaced whole, so a call sees one set from start to end.
#[derive(Default, Clone)]
pub(super) struct BindingSet {
    /// topic → group → filter.
    pub(super) filters: HashMap<String, HashMap<String, Arc<Bound<FilterPlugin>>>>,
    pub(super) routes: HashMap<String, Arc<Bound<RoutePlugin>>>,
    pub(super) tx_checks: HashMap<String, Arc<Bound<TxCheckPlugin>>>,
}

impl BindingSet {
    pub(super) fn infos(&self) -> impl Iterator<Item = &BindingInfo> {
        self.filters
            .values()
            .flat_map(HashMap::values)
            .map(|b| &b.info)
            .chain(self.routes.values().map(|b| &b.info))
            .chain(self.tx_checks.values().map(|b| &b.info))
    }

    /// Removes the binding named `name`; whether there was one.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        let before = self.infos().count();
        for groups in self.filters.values_mut() {
            groups.retain(|_, b| b.info.name != name);
        }
        self.filters.retain(|_, groups| !groups.is_empty());
        self.routes.retain(|_, b| b.info.name != name);
        self.tx_checks.retain(|_, b| b.info.name != name);
        self.infos().count() != before
    }
}

/// A plugin to bind (or a new version of a bound one).
#[derive(Debug)]
pub struct Install<'a> {
    /// Where it is bound and under which rules.
    pub shape: Shape<'a>,
    pub source: Source,
    pub component: Option<PathBuf>,
    pub plugin: Option<&'a str>,
    pub version: Option<u32>,
    pub bytes: &'a [u8],
    /// Commit-log position from which this version decides.
    pub position: u64,
    /// Keep the binding's earlier versions for messages stored before `position` (a filter's new
    /// version); otherwise this version decides for every message (a new binding or new parameters).
    pub keep_history: bool,
}

/// A plugin loaded and checked, ready to swap in.
pub struct Prepared {
    pub(super) info: BindingInfo,
    pub(super) plugin: Built,
    pub(super) keep_history: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("binding", &self.info.name).finish_non_exhaustive()
    }
}

pub(super) enum Built {
    Filter(FilterPlugin),
    Route(RoutePlugin),
    TxCheck(TxCheckPlugin),
}
