//! QueryRoute and QueryAssignment: where a topic's queues are and which a consumer should read.

use ferrymq_broker::metadata::{DLQ_TOPIC_PREFIX, RETRY_TOPIC_PREFIX, TopicConfig, TopicType, is_system_topic};
use ferrymq_proto::grpc::v2::{self as pb, Code};

use super::GrpcState;
use super::status::{ok, status};

fn accepted_types(message_type: TopicType) -> Vec<i32> {
    let all = [pb::MessageType::Normal, pb::MessageType::Fifo, pb::MessageType::Delay, pb::MessageType::Transaction];
    let types: Vec<pb::MessageType> = match message_type {
        TopicType::Normal => vec![pb::MessageType::Normal],
        TopicType::Fifo => vec![pb::MessageType::Fifo],
        TopicType::Delay => vec![pb::MessageType::Delay],
        TopicType::Transaction => vec![pb::MessageType::Transaction],
        TopicType::Mixed => all.to_vec(),
    };
    types.into_iter().map(|t| t as i32).collect()
}

impl GrpcState {
    /// Where clients reach this broker: the address they used, else the configured one.
    pub fn endpoints(&self, asked: Option<&pb::Endpoints>) -> pb::Endpoints {
        if let Some(asked) = asked.filter(|e| !e.addresses.is_empty()) {
            return asked.clone();
        }
        let (host, port) = self.advertised();
        endpoints(host, port)
    }

    fn queue(
        &self,
        topic: &TopicConfig,
        id: i32,
        permission: pb::Permission,
        endpoints: &pb::Endpoints,
    ) -> pb::MessageQueue {
        pb::MessageQueue {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.name.clone() }),
            id,
            permission: permission as i32,
            broker: Some(pb::Broker {
                name: self.config.broker_name.clone(),
                id: 0,
                endpoints: Some(endpoints.clone()),
            }),
            accept_message_types: accepted_types(topic.message_type),
        }
    }

    /// A topic clients may address by name: known, and not the broker's own timer topic.
    pub(super) fn routable(&self, topic: Option<&pb::Resource>) -> Result<TopicConfig, pb::Status> {
        let name = topic.map(|t| t.name.as_str()).unwrap_or_default();
        // The broker's own topics (timer, transactions) are not for clients; retry and dead-letter
        // topics can be read.
        let readable_system = name.starts_with(RETRY_TOPIC_PREFIX) || name.starts_with(DLQ_TOPIC_PREFIX);
        if name.is_empty() || (is_system_topic(name) && !readable_system) {
            return Err(status(Code::IllegalTopic, format!("topic {name:?} cannot be addressed")));
        }
        self.broker
            .metadata()
            .topic(name)
            .ok_or_else(|| status(Code::TopicNotFound, format!("topic {name:?} does not exist")))
    }

    /// A clustered broker's route for `topic`: the queues of every broker set that holds it, each
    /// pointing at the set's master, or while the master is down at its slave (read only). `None`
    /// when this broker has no cluster view (standalone, or no name server answered yet).
    fn cluster_queues(
        &self,
        topic: Option<&pb::Resource>,
        per_queue: bool,
    ) -> Option<Result<Vec<pb::MessageQueue>, pb::Status>> {
        if !self.cluster.clustered() {
            return None;
        }
        let view = self.cluster.view()?;
        let name = topic.map(|t| t.name.as_str()).unwrap_or_default();
        let readable_system = name.starts_with(RETRY_TOPIC_PREFIX) || name.starts_with(DLQ_TOPIC_PREFIX);
        if name.is_empty() || (is_system_topic(name) && !readable_system) {
            return Some(Err(status(Code::IllegalTopic, format!("topic {name:?} cannot be addressed"))));
        }
        let mut queues = Vec::new();
        for (set, held) in view.routes_of(name) {
            let Some(endpoints) = endpoints_of(&set.serving.grpc) else { continue };
            let message_type = serde_json::from_value(serde_json::Value::String(held.message_type.clone()))
                .unwrap_or(TopicType::Normal);
            let permission =
                if set.writable && !is_system_topic(name) { pb::Permission::ReadWrite } else { pb::Permission::Read };
            let broker =
                pb::Broker { name: set.name.to_owned(), id: set.serving.broker_id as i32, endpoints: Some(endpoints) };
            let ids: Vec<i32> = if per_queue { (0..held.queues as i32).collect() } else { vec![-1] };
            queues.extend(ids.into_iter().map(|id| pb::MessageQueue {
                topic: Some(pb::Resource { resource_namespace: String::new(), name: name.to_owned() }),
                id,
                permission: permission as i32,
                broker: Some(broker.clone()),
                accept_message_types: accepted_types(message_type),
            }));
        }
        if queues.is_empty() {
            return Some(Err(status(Code::TopicNotFound, format!("topic {name:?} does not exist in the cluster"))));
        }
        Some(Ok(queues))
    }

    pub fn query_route(&self, request: &pb::QueryRouteRequest) -> pb::QueryRouteResponse {
        if let Some(route) = self.cluster_queues(request.topic.as_ref(), true) {
            return match route {
                Ok(message_queues) => pb::QueryRouteResponse { status: Some(ok()), message_queues },
                Err(status) => pb::QueryRouteResponse { status: Some(status), message_queues: Vec::new() },
            };
        }
        let topic = match self.routable(request.topic.as_ref()) {
            Ok(topic) => topic,
            Err(status) => return pb::QueryRouteResponse { status: Some(status), message_queues: Vec::new() },
        };
        let endpoints = self.endpoints(request.endpoints.as_ref());
        // Retry and dead-letter topics can be read, not written.
        let permission = if is_system_topic(&topic.name) { pb::Permission::Read } else { pb::Permission::ReadWrite };
        let message_queues =
            (0..topic.queues as i32).map(|id| self.queue(&topic, id, permission, &endpoints)).collect();
        pb::QueryRouteResponse { status: Some(ok()), message_queues }
    }

    pub fn query_assignment(&self, request: &pb::QueryAssignmentRequest) -> pb::QueryAssignmentResponse {
        let fail = |status| pb::QueryAssignmentResponse { status: Some(status), assignments: Vec::new() };
        let topic = match self.routable(request.topic.as_ref()) {
            Ok(topic) => topic,
            Err(status) => return fail(status),
        };
        let group = match self.group(request.group.as_ref()) {
            Ok(group) => group,
            Err(status) => return fail(status),
        };
        if let Some(route) = self.cluster_queues(request.topic.as_ref(), group.fifo) {
            return match route {
                Ok(queues) => pb::QueryAssignmentResponse {
                    status: Some(ok()),
                    assignments: queues.into_iter().map(|q| pb::Assignment { message_queue: Some(q) }).collect(),
                },
                Err(status) => fail(status),
            };
        }
        let endpoints = self.endpoints(request.endpoints.as_ref());
        // The broker hands out messages from every queue to any receive, so one assignment suffices for
        // ordinary groups (queue -1 means "any queue"); FIFO groups get one per queue.
        let ids: Vec<i32> = if group.fifo { (0..topic.queues as i32).collect() } else { vec![-1] };
        let assignments = ids
            .into_iter()
            .map(|id| pb::Assignment {
                message_queue: Some(self.queue(&topic, id, pb::Permission::ReadWrite, &endpoints)),
            })
            .collect();
        pb::QueryAssignmentResponse { status: Some(ok()), assignments }
    }
}

/// `host:port` as route endpoints.
fn endpoints_of(addr: &str) -> Option<pb::Endpoints> {
    let (host, port) = addr.rsplit_once(':')?;
    Some(endpoints(host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

fn endpoints(host: String, port: i32) -> pb::Endpoints {
    let scheme = if host.parse::<std::net::Ipv4Addr>().is_ok() {
        pb::AddressScheme::IPv4
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        pb::AddressScheme::IPv6
    } else {
        pb::AddressScheme::DomainName
    };
    pb::Endpoints { scheme: scheme as i32, addresses: vec![pb::Address { host, port }] }
}
