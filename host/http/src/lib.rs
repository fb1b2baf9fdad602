//! HTTP/1 plumbing shared by ferrymq's servers and tools.
//!
//! * [`accept`] — what an accept loop does when accepting fails (shared with the gRPC port).
//! * [`serve`] — the accept loop of every HTTP server ferrymq runs (the admin endpoint, the name
//!   server): a bound on connections and on the time to send request headers, and a stop signal.
//! * [`response`] — JSON responses and JSON errors in one shape.
//! * [`exposure`] — what an admin endpoint without tokens accepts (no cross-site or rebound requests).
//! * [`client`] — a blocking client for ferrymq's own JSON endpoints, used by the `ferrymq admin` and
//!   `ferrymq plugin` commands, by brokers registering with name servers, and by the gateway.
//!
//! Deliberately absent: routing, TLS, keep-alive in the client. Each server matches its own paths.

pub mod accept;
pub mod client;
pub mod exposure;
pub mod response;
mod serve;

pub use client::{HttpError, Request, request};
pub use serve::{Bounds, SPARE_CONNECTIONS, read_body, serve};
