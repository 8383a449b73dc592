//! `google.rpc.Status`: the body of OTLP/HTTP errors (ours, and what destinations answer) and the
//! details of gRPC statuses (where `google.rpc.RetryInfo` travels).

use prost::Message;
use serde::Serialize;

#[derive(Clone, PartialEq, Message, Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message, Serialize)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
