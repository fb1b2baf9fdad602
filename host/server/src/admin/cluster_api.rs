//! `GET /v1/cluster`: this broker's place in its cluster and every broker the name servers know.

use serde_json::{Value, json};

use super::AdminState;

/// One row per broker for `ferrymq admin cluster`: its set, role and addresses; for a slave, its
/// replication lag in bytes and seconds.
pub fn cluster_rows(view: &ferrymq_cluster::ClusterView) -> Vec<Value> {
    view.brokers
        .iter()
        .map(|m| {
            let r = &m.registration;
            let slave = r.role == ferrymq_cluster::Role::Slave;
            let only = |is: bool, v: Value| if is { v } else { Value::Null };
            json!({
                "cluster": r.cluster,
                "set": r.broker_set,
                "id": r.broker_id,
                "role": r.role,
                "grpc": r.grpc,
                "admin": r.admin,
                "replication": only(!slave, json!(r.replication)),
                "log_end": r.log_end,
                "lag_bytes": only(slave, json!(view.lag_bytes(r))),
                "lag_seconds": only(slave, json!(r.lag_ms as f64 / 1000.0)),
                "master_reachable": only(slave, json!(r.master_reachable)),
                "slaves": only(!slave, json!(r.slaves_connected)),
                "heartbeat_age_ms": m.age_ms,
            })
        })
        .collect()
}

/// This broker's place in the cluster and, when it has name servers, every broker they know.
pub fn cluster_json(state: &AdminState) -> Value {
    let cluster = &state.cluster;
    let (host, port) = state.grpc.advertised();
    let addresses = ferrymq_cluster::registration::Addresses {
        grpc: format!("{host}:{port}"),
        admin: String::new(),
        ha: cluster.config.ha_advertised_address.clone().unwrap_or_default(),
    };
    let this = ferrymq_cluster::registration::registration(cluster, &state.broker, &addresses);
    let view = cluster.view().unwrap_or_else(|| ferrymq_cluster::ClusterView {
        brokers: vec![ferrymq_cluster::view::Member { registration: this.clone(), age_ms: 0 }],
    });
    let brokers = cluster_rows(&view);
    let written = state.broker.store().log_end();
    let slaves: Vec<Value> = cluster
        .slaves()
        .into_iter()
        .map(|s| {
            let lag_bytes = written.saturating_sub(s.acked);
            let lag_ms = if lag_bytes == 0 { 0 } else { s.caught_up_at.elapsed().as_millis() as u64 };
            json!({ "broker_id": s.broker_id, "peer": s.peer, "acked": s.acked, "lag_bytes": lag_bytes,
                    "lag_seconds": lag_ms as f64 / 1000.0 })
        })
        .collect();
    json!({
        "this": {
            "set": cluster.broker_set,
            "id": cluster.config.broker_id,
            "role": cluster.role(),
            "replication": cluster.config.replication,
            "log_end": written,
            "serving_reads": cluster.serving_reads(),
            "master": cluster.master_addr(),
            "master_reachable": this.master_reachable,
            "lag_bytes": this.lag_bytes,
            "lag_seconds": this.lag_ms as f64 / 1000.0,
            "slaves": slaves,
        },
        "brokers": brokers,
    })
}
