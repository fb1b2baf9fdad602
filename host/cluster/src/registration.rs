//! A broker's heartbeat: every `heartbeat_ms` it registers with every name server and keeps the
//! cluster view the first one answers with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use ferrymq_broker::Broker;

use super::view::{ClusterView, Registration, TopicRoute};
use super::{Cluster, Role};

/// Shortest time a registration may take before the name server counts as unreachable.
const REGISTER_TIMEOUT_MIN: Duration = Duration::from_millis(500);

/// Where this broker is reached: what it registers besides its state.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub grpc: String,
    pub admin: String,
    pub ha: String,
}

/// This broker's registration now.
pub fn registration(cluster: &Cluster, broker: &Broker, addresses: &Addresses) -> Registration {
    let log_end = broker.store().log_end();
    let (lag_bytes, lag_ms) = if cluster.is_master() { (0, 0) } else { cluster.lag(log_end) };
    Registration {
        cluster: cluster.config.name.clone(),
        broker_set: cluster.broker_set.clone(),
        broker_id: cluster.config.broker_id,
        role: cluster.role(),
        grpc: addresses.grpc.clone(),
        admin: addresses.admin.clone(),
        ha: addresses.ha.clone(),
        replication: cluster.config.replication,
        topics: broker
            .metadata()
            .topics()
            .into_iter()
            .map(|t| TopicRoute { name: t.name, message_type: t.message_type.name().to_owned(), queues: t.queues })
            .collect(),
        log_end,
        master_reachable: cluster.role() == Role::Master || cluster.master_reachable(),
        lag_bytes,
        lag_ms,
        slaves_connected: cluster.slaves().len(),
    }
}

/// Registers until `stop` is set.
pub fn start(
    cluster: Arc<Cluster>,
    broker: Arc<Broker>,
    addresses: Addresses,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ferrymq-register".into())
        .spawn(move || {
            let every = Duration::from_millis(cluster.config.heartbeat_ms);
            let mut failing: Vec<bool> = vec![false; cluster.config.namesrv.len()];
            while !stop.load(Ordering::Acquire) {
                let body = match serde_json::to_value(registration(&cluster, &broker, &addresses)) {
                    Ok(body) => body,
                    Err(err) => {
                        tracing::error!(%err, "could not encode this broker's registration");
                        std::thread::sleep(every);
                        continue;
                    }
                };
                let mut views = Vec::new();
                for (i, namesrv) in cluster.config.namesrv.iter().enumerate() {
                    match register(namesrv, &body, every.max(REGISTER_TIMEOUT_MIN)) {
                        Ok(view) => {
                            if failing[i] {
                                tracing::info!(%namesrv, "registered with the name server again");
                                failing[i] = false;
                            }
                            views.push(view);
                        }
                        Err(err) => {
                            if !failing[i] {
                                tracing::warn!(%namesrv, err = format!("{err:#}"), "could not register with a name server");
                                failing[i] = true;
                            }
                        }
                    }
                }
                if !views.is_empty() {
                    cluster.set_view(ClusterView::merge(views));
                }
                std::thread::sleep(every);
            }
        })
        .context("start the registration thread")
}

fn register(namesrv: &str, body: &serde_json::Value, timeout: Duration) -> anyhow::Result<ClusterView> {
    let payload = body.to_string();
    let request = ferrymq_http::Request {
        body: payload.as_bytes(),
        connect_timeout: timeout,
        read_timeout: timeout,
        ..ferrymq_http::Request::new("POST", "/v1/brokers")
    };
    let (status, answer) = request.send(namesrv)?;
    if status != 200 {
        anyhow::bail!("HTTP {status}: {answer}");
    }
    serde_json::from_value(answer).context("decode the cluster view")
}
