//! ferrymq's wire and on-disk formats: codecs only, no IO.
//!
//! The crate holds the byte layouts that several crates or processes must agree on: the commit-log
//! record (written by the store, shipped verbatim by replication) and the message property encoding.
//! Nothing here touches files, sockets or clocks. Two small helpers every crate above needs live here
//! too, so that they are written once: [`hex`] (and the SHA-256 names of things) and [`sync`] (locks
//! that survive a panic elsewhere).

#[cfg(feature = "grpc")]
pub mod grpc;
pub mod hex;
pub mod limit;
pub mod name;
pub mod plugin_batch;
pub mod properties;
pub mod record;
pub mod sync;
pub mod tag;
pub mod throttle;

#[cfg(test)]
mod fuzz_tests;

pub use properties::{PropertiesError, Property};
pub use record::{Entry, RecordError, RecordMeta, RecordRef, Verify};
