//! What a client without credentials can hold on the gRPC port, at its limits: idle sockets take at
//! most `connections_max` slots and lose them after `first_bytes_ms`, the admin endpoint stays
//! reachable meanwhile, and one connection opens at most `streams_per_connection_max` requests even
//! when it ignores the setting. Malformed request bytes are the caller's mistake (INVALID_ARGUMENT).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferrymq_proto::grpc::v2::{self as pb, messaging_service_client::MessagingServiceClient};

use crate::support::Node;

fn start_with(dir: &tempfile::TempDir, grpc: &str) -> Node {
    let config = dir.path().join("ferrymq.toml");
    std::fs::write(&config, format!("[grpc]\n{grpc}")).expect("write config");
    Node::start(&dir.path().join("data"), &["--config", config.to_str().expect("utf-8 path")])
}

/// A QueryRoute answered within `wait`, or `None`.
fn route_within(runtime: &tokio::runtime::Runtime, node: &Node, wait: Duration) -> Option<i32> {
    runtime.block_on(async {
        let call = async {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc)).ok()?;
            let mut client = MessagingServiceClient::new(endpoint.connect().await.ok()?);
            let mut request = tonic::Request::new(pb::QueryRouteRequest {
                topic: Some(pb::Resource { name: "nowhere".into(), ..Default::default() }),
                endpoints: None,
            });
            request.metadata_mut().insert("x-mq-client-id", "limits-test".parse().ok()?);
            let answer = client.query_route(request).await.ok()?;
            answer.into_inner().status.map(|s| s.code)
        };
        tokio::time::timeout(wait, call).await.ok().flatten()
    })
}

#[test]
fn idle_sockets_take_at_most_connections_max_slots_and_lose_them_when_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir, "connections_max = 3\nfirst_bytes_ms = 60000\n");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    assert!(route_within(&runtime, &node, Duration::from_secs(10)).is_some(), "served with free slots");

    let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(node.grpc).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(route_within(&runtime, &node, Duration::from_secs(2)), None, "every slot is held by an idle socket");
    assert_eq!(node.get("/healthz").0, 200, "the admin endpoint is not behind the gRPC slots");
    assert!(node.metric(r#"ferrymq_limit_reached_total{limit="grpc.connections_max"}"#) >= 1.0);
    idle.pop();
    assert!(route_within(&runtime, &node, Duration::from_secs(10)).is_some(), "a freed slot serves again");
    drop(idle);

    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir, "connections_max = 3\nfirst_bytes_ms = 500\n");
    let _silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(node.grpc).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        route_within(&runtime, &node, Duration::from_secs(10)).is_some(),
        "sockets that said nothing for first_bytes_ms were closed"
    );
    assert_eq!(node.metric(r#"ferrymq_limit_reached_total{limit="grpc.first_bytes_ms"}"#), 3.0);
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The next frame from `stream`: (type, flags, stream id, payload).
fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some((head[3], head[4], u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff, payload))
}

#[test]
fn one_connection_opens_at_most_streams_per_connection_max_requests_even_when_it_ignores_the_setting() {
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const GOAWAY: u8 = 0x7;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir, "streams_per_connection_max = 2\n");
    let mut stream = TcpStream::connect(node.grpc).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("preface");
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).expect("settings");
    // The server's SETTINGS name the limit (MAX_CONCURRENT_STREAMS, id 3); acknowledge them.
    let (kind, _, _, payload) = read_frame(&mut stream).expect("server settings");
    assert_eq!(kind, SETTINGS);
    let limit = payload.chunks(6).find(|s| s[..2] == [0, 3]).map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(limit, Some(2), "advertised limit");
    stream.write_all(&frame(SETTINGS, 0x1, 0, &[])).expect("settings ack");
    // Three SendMessage requests whose bodies never come: a client that ignores the limit.
    let path = b"/apache.rocketmq.v2.MessagingService/SendMessage";
    let mut block = vec![0x83, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x5f, 16]);
    block.extend_from_slice(b"application/grpc");
    for id in [1, 3, 5] {
        stream.write_all(&frame(HEADERS, 0x4, id, &block)).expect("headers");
    }
    let refused = std::iter::from_fn(|| read_frame(&mut stream))
        .take(50)
        .find(|(kind, _, id, _)| (*kind == RST_STREAM && *id == 5) || *kind == GOAWAY);
    let (kind, _, _, payload) = refused.expect("the third stream is refused");
    if kind == RST_STREAM {
        assert_eq!(payload, 7u32.to_be_bytes(), "REFUSED_STREAM");
    }
}

/// The status line's code of what `stream` answers, read until `\r\n`.
fn status_of(stream: &mut TcpStream) -> Option<u16> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).ok()?;
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn clients_trickling_bodies_into_every_admin_slot_blind_neither_health_nor_metrics_and_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ferrymq.toml");
    std::fs::write(&config, "[admin]\nconnections_max = 2\nbody_timeout_ms = 1500\n").expect("write config");
    let node = Node::start(&dir.path().join("data"), &["--config", config.to_str().expect("utf-8 path")]);
    let trickle = || {
        let mut stream = TcpStream::connect(node.admin).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let head = format!(
            "POST /v1/topics HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
            node.admin
        );
        stream.write_all(head.as_bytes()).expect("send head");
        stream
    };
    let mut slow: Vec<TcpStream> = (0..2).map(|_| trickle()).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.get("/healthz").0, 200, "health is answered on a spare slot");
    assert_eq!(node.get("/metrics").0, 200, "so are metrics");
    assert_eq!(node.get("/v1/topics").0, 503, "the API waits for a regular slot");
    for stream in &mut slow {
        assert_eq!(status_of(stream), Some(408), "a body that does not arrive in body_timeout_ms");
    }
    drop(slow);
    let freed = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        node.get("/v1/topics").0 == 200
    });
    assert!(freed, "the slots are free again");
    let reached = |limit: &str| node.metric(&format!("ferrymq_limit_reached_total{{limit=\"{limit}\"}}"));
    assert!(reached("admin.connections_max") >= 3.0, "healthz, metrics and the refused API call took spare slots");
    assert_eq!(reached("admin.body_timeout_ms"), 2.0);

    // A declared length over the limit is refused before a byte of it is read: no 100 Continue.
    let mut stream = TcpStream::connect(node.admin).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = format!(
        "POST /v1/topics HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n",
        node.admin
    );
    stream.write_all(head.as_bytes()).expect("send head");
    assert_eq!(status_of(&mut stream), Some(413));
    assert_eq!(reached("admin.body_bytes_max"), 1.0);
}

#[test]
fn new_client_ids_beyond_clients_max_are_not_remembered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir, "clients_max = 2\n");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut client = MessagingServiceClient::connect(format!("http://{}", node.grpc)).await.expect("connect");
        let mut heartbeat = async |id: &str| {
            let mut request = tonic::Request::new(pb::HeartbeatRequest::default());
            request.metadata_mut().insert("x-mq-client-id", id.parse().expect("header"));
            match client.heartbeat(request).await {
                Ok(answer) => Ok(answer.into_inner().status.map(|s| s.code)),
                Err(status) => Err(status.code()),
            }
        };
        let ok = Some(pb::Code::Ok as i32);
        assert_eq!(heartbeat("client-a").await, Ok(ok));
        assert_eq!(heartbeat("client-b").await, Ok(ok));
        assert_eq!(heartbeat("client-c").await, Ok(Some(pb::Code::TooManyRequests as i32)), "a third client id");
        assert_eq!(heartbeat("client-a").await, Ok(ok), "a known client is still heard");
        assert_eq!(heartbeat(&"x".repeat(300)).await, Err(tonic::Code::InvalidArgument), "an oversized id");
    });
    assert_eq!(node.metric("ferrymq_clients"), 2.0);
    assert!(node.metric(r#"ferrymq_limit_reached_total{limit="grpc.clients_max"}"#) >= 1.0);
}

#[test]
fn request_headers_over_header_bytes_max_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir, "header_bytes_max = 4096\n");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut client = MessagingServiceClient::connect(format!("http://{}", node.grpc)).await.expect("connect");
        let mut route = async |padding: usize| {
            let mut request = tonic::Request::new(pb::QueryRouteRequest {
                topic: Some(pb::Resource { name: "nowhere".into(), ..Default::default() }),
                endpoints: None,
            });
            request.metadata_mut().insert("x-mq-client-id", "limits-test".parse().expect("header"));
            request.metadata_mut().insert("x-padding", "p".repeat(padding).parse().expect("header"));
            client.query_route(request).await.map(|_| ()).map_err(|status| status.code())
        };
        assert_eq!(route(100).await, Ok(()), "ordinary headers");
        assert!(route(8_000).await.is_err(), "8 KB of headers against a 4 KiB bound");
        assert_eq!(route(100).await, Ok(()), "the connection still serves");
    });
}

/// Sends bytes as they are, as the body of one gRPC request.
#[derive(Clone, Default)]
struct RawRequest;

impl tonic::codec::Codec for RawRequest {
    type Encode = Vec<u8>;
    type Decode = pb::QueryRouteResponse;
    type Encoder = RawEncoder;
    type Decoder = ferrymq_proto::grpc::codec::ProtobufDecoder<pb::QueryRouteResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ferrymq_proto::grpc::codec::ProtobufCodec::<(), pb::QueryRouteResponse>::default().decoder()
    }
}

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

#[test]
fn malformed_protobuf_is_an_invalid_argument_not_an_internal_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_with(&dir, "");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/apache.rocketmq.v2.MessagingService/QueryRoute");
        // QueryRouteRequest { topic: Resource { name: <0xff 0xfe> } }: a string that is not UTF-8.
        let not_utf8 = vec![0x0a, 0x04, 0x12, 0x02, 0xff, 0xfe];
        // A length prefix running past the end of the message.
        let truncated = vec![0x0a, 0x7f, 0x12, 0x02];
        for (what, body) in [("not UTF-8", not_utf8), ("truncated", truncated)] {
            grpc.ready().await.expect("ready");
            let mut request = tonic::Request::new(body);
            request.metadata_mut().insert("x-mq-client-id", "limits-test".parse().expect("header"));
            let status = grpc.unary(request, path.clone(), RawRequest).await.expect_err(what);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
            assert!(status.message().contains("malformed protobuf"), "{what}: {}", status.message());
        }
        // The connection still serves well-formed requests.
        let well_formed = vec![0x0a, 0x09, 0x12, 0x07, b'n', b'o', b'w', b'h', b'e', b'r', b'e'];
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(well_formed);
        request.metadata_mut().insert("x-mq-client-id", "limits-test".parse().expect("header"));
        let answer = grpc.unary(request, path, RawRequest).await.expect("a well-formed request is answered");
        assert!(answer.into_inner().status.is_some(), "the answer carries a RocketMQ status");
    });
}
