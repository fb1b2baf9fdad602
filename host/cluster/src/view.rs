//! What a broker tells the name servers, and the cluster as they see it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ReplicationMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Slave,
}

/// A topic as one broker holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRoute {
    pub name: String,
    /// `normal`, `fifo`, `delay`, `transaction` or `mixed`.
    pub message_type: String,
    pub queues: u32,
}

/// One broker's registration (sent every heartbeat).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub cluster: String,
    pub broker_set: String,
    pub broker_id: u64,
    pub role: Role,
    /// Where RocketMQ clients reach it (`host:port`).
    pub grpc: String,
    pub admin: String,
    pub ha: String,
    pub replication: ReplicationMode,
    pub topics: Vec<TopicRoute>,
    /// End of its commit log.
    pub log_end: u64,
    /// A slave: whether it is connected to its master, and how far behind it is.
    #[serde(default)]
    pub master_reachable: bool,
    #[serde(default)]
    pub lag_bytes: u64,
    #[serde(default)]
    pub lag_ms: u64,
    /// A master: how many slaves are connected.
    #[serde(default)]
    pub slaves_connected: usize,
}

/// A live registration and how old it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    #[serde(flatten)]
    pub registration: Registration,
    /// Milliseconds since its last heartbeat.
    pub age_ms: u64,
}

/// Every live broker, as a name server answers `GET /v1/cluster`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub brokers: Vec<Member>,
}

/// One broker set as routes see it: who serves it now.
#[derive(Clone, Debug, PartialEq)]
pub struct SetRoute<'a> {
    pub name: &'a str,
    /// The broker clients talk to: the master, or while it is down, a slave (reads only).
    pub serving: &'a Registration,
    pub writable: bool,
}

impl ClusterView {
    /// One view from several name servers': every broker any of them knows, each with its freshest
    /// registration (a name server that just restarted knows only part of the cluster).
    pub fn merge(views: Vec<ClusterView>) -> ClusterView {
        let mut brokers: BTreeMap<(String, u64), Member> = BTreeMap::new();
        for member in views.into_iter().flat_map(|v| v.brokers) {
            let key = (member.registration.broker_set.clone(), member.registration.broker_id);
            match brokers.get(&key) {
                Some(known) if known.age_ms <= member.age_ms => {}
                _ => {
                    brokers.insert(key, member);
                }
            }
        }
        ClusterView { brokers: brokers.into_values().collect() }
    }

    /// Registrations by broker set, master first.
    pub fn sets(&self) -> BTreeMap<&str, Vec<&Registration>> {
        let mut sets: BTreeMap<&str, Vec<&Registration>> = BTreeMap::new();
        for m in &self.brokers {
            sets.entry(m.registration.broker_set.as_str()).or_default().push(&m.registration);
        }
        for members in sets.values_mut() {
            members.sort_by_key(|r| r.broker_id);
        }
        sets
    }

    /// How many bytes a slave lacks: what it reported, or what its master's registration shows it
    /// lacks, whichever is more (a partitioned slave cannot know what it missed).
    pub fn lag_bytes(&self, slave: &Registration) -> u64 {
        let master_end = self
            .brokers
            .iter()
            .map(|m| &m.registration)
            .find(|r| r.broker_set == slave.broker_set && r.role == Role::Master)
            .map_or(0, |m| m.log_end);
        slave.lag_bytes.max(master_end.saturating_sub(slave.log_end))
    }

    /// Who serves each set that holds `topic`, with that broker's view of the topic: the master
    /// while it is registered, else the most caught-up slave (reads only).
    pub fn routes_of(&self, topic: &str) -> Vec<(SetRoute<'_>, &TopicRoute)> {
        let mut out = Vec::new();
        for (name, members) in self.sets() {
            let serving = match members.iter().find(|r| r.role == Role::Master) {
                Some(master) => SetRoute { name, serving: master, writable: true },
                None => match members.iter().filter(|r| r.role == Role::Slave).max_by_key(|r| r.log_end) {
                    Some(slave) => SetRoute { name, serving: slave, writable: false },
                    None => continue,
                },
            };
            if let Some(t) = serving.serving.topics.iter().find(|t| t.name == topic) {
                out.push((serving, t));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(set: &str, id: u64, topics: &[(&str, u32)], log_end: u64) -> Member {
        Member {
            registration: Registration {
                cluster: "c".into(),
                broker_set: set.into(),
                broker_id: id,
                role: if id == 0 { Role::Master } else { Role::Slave },
                grpc: format!("{set}-{id}:8081"),
                admin: String::new(),
                ha: String::new(),
                replication: ReplicationMode::Async,
                topics: topics
                    .iter()
                    .map(|(n, q)| TopicRoute { name: (*n).into(), message_type: "normal".into(), queues: *q })
                    .collect(),
                log_end,
                master_reachable: id == 0,
                lag_bytes: 0,
                lag_ms: 0,
                slaves_connected: 0,
            },
            age_ms: 0,
        }
    }

    #[test]
    fn a_set_is_served_by_its_master_and_while_it_is_gone_by_its_furthest_slave() {
        let view = ClusterView {
            brokers: vec![
                reg("a", 1, &[("t", 4)], 10),
                reg("a", 0, &[("t", 4)], 10),
                reg("b", 1, &[("t", 2)], 5),
                reg("b", 2, &[("t", 2)], 9),
                reg("c", 0, &[("other", 1)], 0),
            ],
        };
        let routes = view.routes_of("t");
        let summary: Vec<(&str, &str, bool, u32)> =
            routes.iter().map(|(s, t)| (s.name, s.serving.grpc.as_str(), s.writable, t.queues)).collect();
        assert_eq!(summary, vec![("a", "a-0:8081", true, 4), ("b", "b-2:8081", false, 2)]);
        assert!(view.routes_of("missing").is_empty());
    }

    #[test]
    fn views_from_several_name_servers_merge_to_the_freshest_registration_of_each_broker() {
        let mut old = reg("a", 0, &[("t", 4)], 10);
        old.age_ms = 900;
        let mut fresh = reg("a", 0, &[("t", 4)], 99);
        fresh.age_ms = 10;
        let partial = ClusterView { brokers: vec![fresh] };
        let full = ClusterView { brokers: vec![old, reg("b", 0, &[("t", 2)], 5)] };
        let merged = ClusterView::merge(vec![partial, full]);
        let ends: Vec<(String, u64)> =
            merged.brokers.iter().map(|m| (m.registration.broker_set.clone(), m.registration.log_end)).collect();
        assert_eq!(ends, vec![("a".to_owned(), 99), ("b".to_owned(), 5)]);
    }
}
