//! Generates the RocketMQ v2 gRPC code from `proto/` with a pure-Rust protobuf compiler, so building
//! needs no `protoc` on the machine. Skipped unless the `grpc` feature is on.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return Ok(());
    }
    let files = protox::compile(["apache/rocketmq/v2/service.proto"], ["proto"])?;
    // Malformed request bytes answer INVALID_ARGUMENT (`grpc::codec`), not tonic's INTERNAL.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::grpc::codec::ProtobufCodec")
        .compile_fds(files)?;
    Ok(())
}
