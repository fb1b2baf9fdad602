//! The RocketMQ v2 gRPC protocol (`apache.rocketmq.v2`), generated from `proto/` at build time.
//!
//! Message, service and field names follow the public schema so the official clients interoperate.

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod v2 {
    tonic::include_proto!("apache.rocketmq.v2");
}

/// The protobuf codec of every generated service and client: tonic's, except that a request whose
/// bytes are not valid protobuf (a truncated field, a string that is not UTF-8, a bad wire type) is
/// the caller's mistake and answers `INVALID_ARGUMENT`, not `INTERNAL`.
pub mod codec {
    use std::marker::PhantomData;

    use prost::Message;
    use tonic::Status;
    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
    use tonic_prost::ProstEncoder;

    /// Encodes `T`, decodes `U`.
    #[derive(Debug, Clone)]
    pub struct ProtobufCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for ProtobufCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for ProtobufCodec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProtobufDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(BufferSettings::default())
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProtobufDecoder(PhantomData)
        }
    }

    /// Decodes one `U`; malformed bytes are an `INVALID_ARGUMENT` naming what was wrong.
    #[derive(Debug, Clone)]
    pub struct ProtobufDecoder<U>(PhantomData<U>);

    impl<U: Message + Default> Decoder for ProtobufDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            U::decode(buf).map(Some).map_err(|err| Status::invalid_argument(format!("malformed protobuf: {err}")))
        }

        fn buffer_settings(&self) -> BufferSettings {
            BufferSettings::default()
        }
    }
}
