//! Pull consumption and offsets over gRPC (PullMessage, UpdateOffset, GetOffset, QueryOffset), which
//! the official 5.x clients used elsewhere here do not call; driven with ferrymq's own generated client.

use ferrymq_proto::grpc::v2::{
    self as pb, messaging_service_client::MessagingServiceClient, pull_message_response::Content,
};
use tonic::Request;

use crate::clients::Client;
use crate::support::Node;

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.into() })
}

fn queue(topic: &str, id: i32) -> Option<pb::MessageQueue> {
    Some(pb::MessageQueue { topic: resource(topic), id, ..pb::MessageQueue::default() })
}

fn with_client_id<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-mq-client-id", "pull-test".parse().expect("header"));
    request
}

#[test]
fn pull_consumers_read_from_their_own_offsets_and_commit_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_for_clients(&dir.path().join("data"));
    node.admin(&["topic", "create", "ledger", "--type", "normal", "--queues", "1"]);
    let sent = Client::Python
        .run(node.grpc, &["produce", "--topic", "ledger", "--count", "5", "--prefix", "l"], crate::compat_limit())
        .ok()
        .sent();
    assert_eq!(sent.len(), 5);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut client = MessagingServiceClient::connect(format!("http://{}", node.grpc)).await.expect("connect");
        let pull = |offset: i64| pb::PullMessageRequest {
            group: resource("pullers"),
            message_queue: queue("ledger", 0),
            offset,
            batch_size: 3,
            filter_expression: None,
            long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        };
        let read = |responses: Vec<pb::PullMessageResponse>| {
            let mut bodies = Vec::new();
            let mut next = None;
            let mut code = None;
            for r in responses {
                match r.content {
                    Some(Content::Status(s)) => code = Some(s.code),
                    Some(Content::Message(m)) => bodies.push(String::from_utf8_lossy(&m.body).into_owned()),
                    Some(Content::NextOffset(n)) => next = Some(n),
                    None => {}
                }
            }
            (code, bodies, next)
        };
        let collect = |stream: tonic::Streaming<pb::PullMessageResponse>| async move {
            let mut stream = stream;
            let mut out = Vec::new();
            while let Some(item) = stream.message().await.expect("stream item") {
                out.push(item);
            }
            out
        };

        let first = collect(client.pull_message(with_client_id(pull(0))).await.expect("pull").into_inner()).await;
        assert_eq!(read(first), (Some(pb::Code::Ok as i32), vec!["l0".into(), "l1".into(), "l2".into()], Some(3)));
        let rest = collect(client.pull_message(with_client_id(pull(3))).await.expect("pull").into_inner()).await;
        assert_eq!(read(rest), (Some(pb::Code::Ok as i32), vec!["l3".into(), "l4".into()], Some(5)));
        let empty = collect(client.pull_message(with_client_id(pull(5))).await.expect("pull").into_inner()).await;
        assert_eq!(read(empty), (Some(pb::Code::MessageNotFound as i32), vec![], Some(5)));
        let past = collect(client.pull_message(with_client_id(pull(99))).await.expect("pull").into_inner()).await;
        assert_eq!(read(past).0, Some(pb::Code::IllegalOffset as i32));

        let get = pb::GetOffsetRequest { group: resource("pullers"), message_queue: queue("ledger", 0) };
        let none = client.get_offset(with_client_id(get.clone())).await.expect("get").into_inner();
        assert_eq!(none.status.map(|s| s.code), Some(pb::Code::OffsetNotFound as i32));
        let update =
            pb::UpdateOffsetRequest { group: resource("pullers"), message_queue: queue("ledger", 0), offset: 3 };
        let updated = client.update_offset(with_client_id(update)).await.expect("update").into_inner();
        assert_eq!(updated.status.map(|s| s.code), Some(pb::Code::Ok as i32));
        let got = client.get_offset(with_client_id(get)).await.expect("get").into_inner();
        assert_eq!(got.offset, 3);

        let query = |policy: pb::QueryOffsetPolicy, timestamp: Option<prost_types::Timestamp>| pb::QueryOffsetRequest {
            message_queue: queue("ledger", 0),
            query_offset_policy: policy as i32,
            timestamp,
        };
        let begin =
            client.query_offset(with_client_id(query(pb::QueryOffsetPolicy::Beginning, None))).await.expect("query");
        assert_eq!(begin.into_inner().offset, 0);
        let end = client.query_offset(with_client_id(query(pb::QueryOffsetPolicy::End, None))).await.expect("query");
        assert_eq!(end.into_inner().offset, 5);
        let future = prost_types::Timestamp { seconds: i64::from(u32::MAX), nanos: 0 };
        let by_time = client
            .query_offset(with_client_id(query(pb::QueryOffsetPolicy::Timestamp, Some(future))))
            .await
            .expect("query");
        assert_eq!(by_time.into_inner().offset, 5, "nothing was stored after that time");
    });
}

#[test]
fn a_group_cannot_pull_another_groups_retry_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"), &[]);
    node.admin(&["topic", "create", "ledger", "--type", "normal", "--queues", "1"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = MessagingServiceClient::connect(format!("http://{}", node.grpc)).await.expect("connect");
        let pull = |group: &str, topic: &str| pb::PullMessageRequest {
            group: resource(group),
            message_queue: queue(topic, 0),
            offset: 0,
            batch_size: 1,
            filter_expression: None,
            long_polling_timeout: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        };
        let code = |responses: Vec<pb::PullMessageResponse>| {
            responses.into_iter().find_map(|r| match r.content {
                Some(Content::Status(s)) => Some(s.code),
                _ => None,
            })
        };
        let first = |request| {
            let mut client = client.clone();
            async move {
                let mut stream = client.pull_message(with_client_id(request)).await.expect("pull").into_inner();
                let mut out = Vec::new();
                while let Some(item) = stream.message().await.expect("stream item") {
                    out.push(item);
                }
                out
            }
        };
        let foreign = first(pull("thief", "%RETRY%owners_ledger")).await;
        assert_eq!(code(foreign), Some(pb::Code::Forbidden as i32), "another group's redeliveries");
        let own = first(pull("owners", "%RETRY%owners_ledger")).await;
        assert_ne!(code(own), Some(pb::Code::Forbidden as i32), "its own retry topic it may read");
    });
}
