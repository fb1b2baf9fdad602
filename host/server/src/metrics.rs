//! Prometheus text exposition of the broker's state.

use std::fmt::Write;
use std::time::Duration;

use ferrymq_store::{RecoveryReport, StoreStats};

/// Everything `/metrics` reports, gathered at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub store: StoreStats,
    pub recovery: RecoveryReport,
    pub uptime: Duration,
    pub clients: usize,
    pub in_flight: usize,
    pub timer_pending: usize,
    pub filter_errors: u64,
    pub topics: usize,
    pub groups: usize,
    /// Requests per gRPC method.
    pub rpcs: Vec<(&'static str, u64)>,
    pub transactions: ferrymq_broker::transaction::TransactionStats,
    /// Messages route plugins dropped.
    pub dropped_by_policy: u64,
    /// Per plugin binding: name, kind and counters.
    pub plugins: Vec<(String, &'static str, ferrymq_plugin::PluginStats)>,
    pub replication: ferrymq_cluster::ReplicationStats,
    /// Messages retention deleted before a group consumed them: (group, cause, count).
    pub messages_lost: Vec<(String, &'static str, u64)>,
    pub dedup: ferrymq_broker::dedup::DedupStats,
}

struct Writer(String);

impl Writer {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// Renders a snapshot in the Prometheus text format, version 0.0.4.
pub fn render(s: &Snapshot) -> String {
    let mut w = Writer(String::new());
    let _ = writeln!(
        w.0,
        "# HELP ferrymq_build_info Version of the running broker.\n# TYPE ferrymq_build_info gauge\nferrymq_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    w.metric("ferrymq_uptime_seconds", "gauge", "Seconds since the broker started.", s.uptime.as_secs_f64());
    let st = &s.store;
    w.metric("ferrymq_store_min_offset_bytes", "gauge", "First commit-log offset still stored.", st.min_offset);
    w.metric("ferrymq_store_written_bytes", "counter", "End of the written commit log.", st.written);
    w.metric("ferrymq_store_flushed_bytes", "counter", "End of the durable commit log.", st.flushed);
    w.metric("ferrymq_store_visible_bytes", "counter", "End of the commit log consumers may read.", st.visible);
    w.metric(
        "ferrymq_store_dispatched_bytes",
        "counter",
        "End of the log covered by consume queues and index.",
        st.dispatched,
    );
    w.metric("ferrymq_store_segments", "gauge", "Commit-log segment files.", st.segments);
    w.metric("ferrymq_store_queues", "gauge", "Consume queues.", st.queues);
    w.metric(
        "ferrymq_store_disk_full",
        "gauge",
        "1 while appends are refused because the disk is full.",
        u8::from(st.disk_full),
    );
    w.metric("ferrymq_store_disk_own_bytes", "gauge", "Bytes of the store's own files.", st.own_bytes);
    w.metric(
        "ferrymq_store_disk_budget_bytes",
        "gauge",
        "What the store's own files may take (disk_bytes_max, or disk_usage_max_ratio of the file system).",
        st.budget_bytes,
    );
    w.metric(
        "ferrymq_store_pressure_deleted_segments_total",
        "counter",
        "Log segments deleted because the store's files were over their budget (disk_pressure = delete_oldest).",
        st.pressure_deleted_segments,
    );
    w.metric(
        "ferrymq_store_fatal",
        "gauge",
        "1 after a fatal I/O error stopped the store.",
        u8::from(st.fatal.is_some()),
    );
    w.metric(
        "ferrymq_store_index_skipped_total",
        "counter",
        "Keys not indexed for lack of disk space.",
        st.index_skipped,
    );
    w.metric("ferrymq_clients", "gauge", "RocketMQ clients known to the broker.", s.clients);
    w.metric("ferrymq_topics", "gauge", "Topics created.", s.topics);
    w.metric("ferrymq_groups", "gauge", "Consumer groups.", s.groups);
    let _ = writeln!(
        w.0,
        "# HELP ferrymq_limit_reached_total Times clients reached a bound, by the setting that moves it.\n# TYPE ferrymq_limit_reached_total counter"
    );
    for limit in ferrymq_proto::limit::Limit::ALL {
        let _ = writeln!(w.0, "ferrymq_limit_reached_total{{limit=\"{}\"}} {}", limit.setting(), limit.count());
    }
    w.metric(
        "ferrymq_log_lines_suppressed_total",
        "counter",
        "Repeating warnings left out of the log by their rate limits.",
        ferrymq_proto::throttle::suppressed_total(),
    );
    w.metric("ferrymq_deliveries_in_flight", "gauge", "Messages delivered and not yet acknowledged.", s.in_flight);
    w.metric("ferrymq_timer_pending", "gauge", "Delay messages waiting for their delivery time.", s.timer_pending);
    w.metric("ferrymq_filter_errors_total", "counter", "SQL92 filter evaluations that failed.", s.filter_errors);
    let _ = writeln!(
        w.0,
        "# HELP ferrymq_grpc_requests_total gRPC requests served, per method.\n# TYPE ferrymq_grpc_requests_total counter"
    );
    for (rpc, n) in &s.rpcs {
        let _ = writeln!(w.0, "ferrymq_grpc_requests_total{{rpc=\"{rpc}\"}} {n}");
    }
    let t = &s.transactions;
    w.metric("ferrymq_transactions_pending", "gauge", "Half messages awaiting commit or rollback.", t.pending);
    w.metric("ferrymq_transaction_checks_total", "counter", "Check-back requests sent to producers.", t.checks_sent);
    w.metric("ferrymq_transaction_commits_total", "counter", "Transactions committed.", t.commits);
    w.metric("ferrymq_transaction_rollbacks_total", "counter", "Transactions rolled back.", t.rollbacks);
    w.metric(
        "ferrymq_transaction_discards_total",
        "counter",
        "Transactions discarded after too many checks.",
        t.discards,
    );
    w.metric("ferrymq_route_dropped_total", "counter", "Messages route plugins dropped.", s.dropped_by_policy);
    let _ = writeln!(
        w.0,
        "# HELP ferrymq_group_messages_lost_total Messages retention deleted before the group consumed them, by cause (age, disk_pressure).\n\
         # TYPE ferrymq_group_messages_lost_total counter"
    );
    let d = &s.dedup;
    w.metric(
        "ferrymq_dedup_duplicates_total",
        "counter",
        "Sends answered with the first copy's receipt: their message id was stored within the window.",
        d.duplicates,
    );
    w.metric(
        "ferrymq_dedup_remembered",
        "gauge",
        "Message ids the de-duplication window holds in memory.",
        d.remembered,
    );
    w.metric(
        "ferrymq_dedup_store_lookups_total",
        "counter",
        "Sends checked against the store's message-id index (memory could not tell).",
        d.store_lookups,
    );
    for (group, cause, n) in &s.messages_lost {
        let group = group.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(w.0, "ferrymq_group_messages_lost_total{{group=\"{group}\",cause=\"{cause}\"}} {n}");
    }
    plugin_metrics(&mut w, &s.plugins);
    replication_metrics(&mut w, &s.replication);
    let r = &s.recovery;
    w.metric("ferrymq_store_recovery_clean", "gauge", "1 if the last start found a clean shutdown.", u8::from(r.clean));
    w.metric("ferrymq_store_recovery_scanned_bytes", "gauge", "Log bytes verified at the last start.", r.scanned_bytes);
    w.0
}

fn replication_metrics(w: &mut Writer, r: &ferrymq_cluster::ReplicationStats) {
    w.metric("ferrymq_cluster_slave", "gauge", "1 on a slave, 0 on a master or standalone node.", u8::from(r.slave));
    w.metric("ferrymq_replication_slaves_connected", "gauge", "Slaves connected to this master.", r.slaves_connected);
    w.metric(
        "ferrymq_replication_lag_bytes",
        "gauge",
        "A slave: log bytes it lacks; a master: what its furthest-behind slave lacks.",
        r.lag_bytes,
    );
    w.metric(
        "ferrymq_replication_lag_seconds",
        "gauge",
        "Seconds since the lagging side last held everything its master had.",
        r.lag_seconds,
    );
    w.metric(
        "ferrymq_replication_serving_reads",
        "gauge",
        "1 while this broker hands out messages (a slave: while its master is down).",
        u8::from(r.serving_reads),
    );
    w.metric(
        "ferrymq_replication_master_reachable",
        "gauge",
        "A slave: 1 while connected to its master.",
        u8::from(r.master_reachable),
    );
    let _ = writeln!(
        w.0,
        "# HELP ferrymq_replication_sync_failures_total Sync-replicated writes not confirmed by a slave, by reason.\n\
         # TYPE ferrymq_replication_sync_failures_total counter\n\
         ferrymq_replication_sync_failures_total{{reason=\"timeout\"}} {}\n\
         ferrymq_replication_sync_failures_total{{reason=\"no_slave\"}} {}",
        r.sync_timeouts, r.sync_no_slave
    );
}

fn plugin_metrics(w: &mut Writer, plugins: &[(String, &'static str, ferrymq_plugin::PluginStats)]) {
    type Field = fn(&ferrymq_plugin::PluginStats) -> f64;
    let families: [(&str, &str, &str, Field); 7] = [
        ("ferrymq_plugin_calls_total", "counter", "Calls into a plugin.", |p| p.calls as f64),
        (
            "ferrymq_plugin_failures_total",
            "counter",
            "Plugin calls that trapped, ran out of time or memory, or answered wrongly.",
            |p| p.failures as f64,
        ),
        ("ferrymq_plugin_call_seconds_total", "counter", "Time spent in plugin calls.", |p| {
            p.call_ns_total as f64 / 1e9
        }),
        (
            "ferrymq_plugin_quarantined",
            "gauge",
            "1 while a plugin is quarantined and its failure policy applies.",
            |p| f64::from(u8::from(p.quarantined)),
        ),
        (
            "ferrymq_plugin_worker_calls_total",
            "counter",
            "Plugin calls run on the low-priority workers (after a fault or slow calls) rather than inline.",
            |p| p.worker_calls as f64,
        ),
        ("ferrymq_plugin_on_workers", "gauge", "1 while a plugin's calls go to the low-priority workers.", |p| {
            f64::from(u8::from(p.on_workers))
        }),
        ("ferrymq_plugin_log_lines_dropped_total", "counter", "Plugin log lines over the rate limit.", |p| {
            p.log_lines_dropped as f64
        }),
    ];
    for (name, kind, help, field) in families {
        let _ = writeln!(w.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (plugin, world, stats) in plugins {
            let _ = writeln!(w.0, "{name}{{plugin=\"{plugin}\",kind=\"{world}\"}} {}", field(stats));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_help_and_type_and_a_numeric_value() {
        let snapshot = Snapshot {
            store: StoreStats {
                min_offset: 0,
                written: 4096,
                flushed: 2048,
                visible: 4096,
                dispatched: 4096,
                segments: 1,
                queues: 3,
                disk_full: false,
                disk_full_reason: None,
                own_bytes: 1 << 20,
                budget_bytes: 1 << 30,
                pressure_deleted_segments: 0,
                fatal: None,
                index_skipped: 0,
            },
            recovery: RecoveryReport { clean: true, scanned_bytes: 0, log_end: 0, rebuilt_from: 0 },
            uptime: Duration::from_millis(1500),
            clients: 2,
            in_flight: 5,
            timer_pending: 1,
            filter_errors: 0,
            topics: 3,
            groups: 1,
            rpcs: vec![("QueryRoute", 3)],
            transactions: Default::default(),
            dropped_by_policy: 0,
            plugins: vec![("inbox".into(), "filter", ferrymq_plugin::PluginStats { calls: 7, ..Default::default() })],
            replication: ferrymq_cluster::ReplicationStats {
                slaves_connected: 1,
                sync_timeouts: 2,
                ..Default::default()
            },
            messages_lost: vec![("billing".into(), "disk_pressure", 12)],
            dedup: ferrymq_broker::dedup::DedupStats { duplicates: 3, ..Default::default() },
        };
        let text = render(&snapshot);
        assert!(text.contains("\nferrymq_store_written_bytes 4096\n"), "{text}");
        assert!(text.contains("\nferrymq_store_recovery_clean 1\n"), "{text}");
        assert!(text.contains("\nferrymq_grpc_requests_total{rpc=\"QueryRoute\"} 3\n"), "{text}");
        assert!(text.contains("\nferrymq_plugin_calls_total{plugin=\"inbox\",kind=\"filter\"} 7\n"), "{text}");
        assert!(text.contains("\nferrymq_replication_slaves_connected 1\n"), "{text}");
        assert!(text.contains("\nferrymq_store_disk_own_bytes 1048576\n"), "{text}");
        assert!(
            text.contains("\nferrymq_group_messages_lost_total{group=\"billing\",cause=\"disk_pressure\"} 12\n"),
            "{text}"
        );
        assert!(text.contains("\nferrymq_dedup_duplicates_total 3\n"), "{text}");
        assert!(text.contains("\nferrymq_replication_sync_failures_total{reason=\"timeout\"} 2\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let base = name.split('{').next().expect("name");
            assert!(text.contains(&format!("# TYPE {base} ")), "{base} has no TYPE");
        }
    }
}
