//! ferrymq's wire and on-disk formats: codecs only, no IO.
//!
//! The crate holds the byte layouts that several crates or processes must agree on: the commit-log
//! record (written by the store, shipped verbatim by replication) and the message property encoding.
//! Nothing here touches files, sockets or clocks.

#[cfg(feature = "grpc")]
pub mod grpc;
pub mod name;
pub mod plugin_batch;
pub mod properties;
pub mod record;
pub mod tag;

pub use properties::{PropertiesError, Property};
pub use record::{Entry, RecordError, RecordMeta, RecordRef, Verify};
