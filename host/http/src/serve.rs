//! One HTTP/1.1 accept loop for the servers ferrymq runs (the admin endpoint, the name server).
//!
//! * At most `connections_max` connections at once; more wait in the accept queue.
//! * Beyond those, [`SPARE_CONNECTIONS`] more are served only their `light_paths` (`/healthz`,
//!   `/metrics`) and answered 503 otherwise, one request each: clients that hold every regular slot
//!   (a slow upload, a trickled body) cannot blind the operators' monitoring.
//! * A client has `header_timeout` to send its request headers; [`read_body`] bounds its body in
//!   size and time, and refuses a declared length over the limit before reading a byte (so that
//!   `Expect: 100-continue` is answered 413, not 100).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_proto::limit::Limit;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::accept::AcceptFailures;
use crate::response::error;

/// Connections served beyond `connections_max`, for the light paths only.
pub const SPARE_CONNECTIONS: usize = 4;
/// Header time of a connection on a spare slot.
const SPARE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The bounds of one server.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Regular connections at once.
    pub connections_max: usize,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Paths still answered on a spare slot when every regular one is taken (cheap reads only).
    pub light_paths: &'static [&'static str],
}

/// A connection's place: held until it closes.
struct Slot {
    spare: bool,
    _permit: OwnedSemaphorePermit,
}

/// Serves `handle` on `listener` until `shutdown` turns true; `what` names the server in logs.
///
/// # Cancel safety
/// Meant to run as its own task; dropping it stops accepting and abandons open connections.
pub async fn serve<H, F>(
    what: &'static str,
    listener: TcpListener,
    bounds: Bounds,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let regular = Arc::new(Semaphore::new(bounds.connections_max));
    let spare = Arc::new(Semaphore::new(SPARE_CONNECTIONS));
    let mut failures = AcceptFailures::new(what);
    loop {
        let slot = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            permit = regular.clone().acquire_owned() => match permit {
                Ok(permit) => Slot { spare: false, _permit: permit },
                Err(_) => return,
            },
            permit = spare.clone().acquire_owned() => match permit {
                Ok(permit) => Slot { spare: true, _permit: permit },
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    failures.accepted();
                    accepted
                }
                Err(err) => {
                    drop(slot);
                    tokio::time::sleep(failures.failed(&err)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let light_only = slot.spare;
            if light_only {
                Limit::AdminConnections.reached();
            }
            let service = service_fn(move |request: Request<Incoming>| {
                let refused = light_only && !bounds.light_paths.contains(&request.uri().path());
                let answer = (!refused).then(|| handle(request));
                async move {
                    Ok::<_, std::convert::Infallible>(match answer {
                        Some(answer) => answer.await,
                        None => error(StatusCode::SERVICE_UNAVAILABLE, "every connection slot is taken; try again"),
                    })
                }
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new());
            if light_only {
                builder.header_read_timeout(SPARE_HEADER_TIMEOUT).keep_alive(false);
            } else {
                builder.header_read_timeout(bounds.header_timeout);
            }
            if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, %err, server = what, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Reads a request's body: at most `limit` bytes (a larger declared length is refused before
/// reading), within `deadline`. The error is the answer to send; it names the limit as
/// `limit_name` (the setting that changes it, or what it bounds).
///
/// # Cancel safety
/// Dropping the future abandons the body half read.
pub async fn read_body(
    request: Request<Incoming>,
    limit: usize,
    limit_name: &str,
    deadline: Duration,
) -> Result<(http::request::Parts, Bytes), Response<Full<Bytes>>> {
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let size = declared.map_or_else(|| "a request body".to_owned(), |n| format!("a request body of {n} bytes"));
        error(StatusCode::PAYLOAD_TOO_LARGE, format!("{size} is over the limit of {limit} bytes ({limit_name})"))
    };
    if declared.is_some_and(|n| n > limit as u64) {
        Limit::AdminBodyBytes.reached();
        return Err(too_large());
    }
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok((parts, collected.to_bytes())),
        Ok(Err(_)) => {
            Limit::AdminBodyBytes.reached();
            Err(too_large())
        }
        Err(_) => {
            Limit::AdminBodyTimeout.reached();
            Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} ms", deadline.as_millis()),
            ))
        }
    }
}
