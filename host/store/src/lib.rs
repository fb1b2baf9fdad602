//! ferrymq's storage engine: a RocketMQ-shaped commit log with consume queues and a message index.
//!
//! # Shape
//! * The **commit log** is a run of fixed-size segment files holding every message as one record
//!   (`ferrymq_proto::record`). One writer thread appends; records are never changed afterwards.
//! * A **flusher** thread makes the log durable: under `flush = "sync"` an append is acknowledged only
//!   after its batch is flushed, and concurrent appends share one flush (group commit).
//! * A **dispatcher** thread follows the log and builds a **consume queue** per (topic, queue id) and
//!   the **index** by key and message id. Both are derived and can always be rebuilt from the log.
//! * **Checkpoints** record how far the log and the derived data are durable; after a crash, recovery
//!   scans the log from there, cuts a torn tail, repairs the derived data and dispatches again.
//! * **Retention** deletes old segments by age and, only under `disk_pressure = "delete_oldest"`,
//!   when the store's own files are over their budget; otherwise, and whenever the file system is
//!   full, appends are refused until space returns.
//!
//! # Invariants
//! * No async runtime and no wasm here: callers get completions through callbacks.
//! * Consumers only see records at least as durable as their producer was told (`Shared::visible`).
//! * A failed flush is fatal: the store refuses further appends until reopened, which recovers. Lack
//!   of space, descriptors or maps is not: the operation fails or waits, and is tried again.
//! * All file access goes through `io::Storage`, so faults can be injected under the whole engine.

pub mod bounds;
mod checkpoint;
mod checkpointer;
pub mod clock;
mod config;
mod disk;
mod dispatcher;
mod error;
mod flusher;
mod index;
pub mod io;
mod log;
mod queue;
mod retention;
mod shared;
mod store;
mod sync;
mod warmer;
mod writer;

pub use config::{DiskPressure, FlushMode, StoreConfig};
pub use dispatcher::DispatchHook;
pub use error::{BudgetHold, DiskFull, FatalCause, OverBudget, Result, StoreError};
pub use log::StoredRecord;
pub use queue::QueueEntry;
pub use retention::{QueueRemoval, Removal, RemovalCause, RemovalHook};
pub use shared::FatalHook;
pub use store::{QueueInfo, RecoveryReport, Store, StoreOptions, StoreStats};
pub use writer::{AppendDone, Appended, BatchDone, NewMessage, RawDone, TOPIC_BYTES_MAX, validate_topic};
