//! The gRPC port's accept loop. A client controls how many sockets it opens and when it speaks on
//! them, so both are bounded:
//!
//! * at most `connections_max` connections at once — more wait in the kernel's accept queue, so
//!   idle sockets cannot take every file descriptor the broker has;
//! * a connection that sends nothing within `first_bytes_ms` is closed before HTTP/2 sees it;
//! * a failed accept (out of file descriptors above all) backs off instead of spinning, and is
//!   logged at most once per [`ACCEPT_WARN_EVERY`] with how many failed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Pauses after a failed accept: the first, and the longest.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);
/// Failed accepts are logged at most this often.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);
/// Admitted connections waiting for the server to take them.
const HANDOFF_QUEUE_MAX: usize = 64;

/// A connection that holds one of the listener's slots until it closes.
#[derive(Debug)]
pub struct Admitted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections of `listener`, admitted under the bounds above, as a stream for the server.
/// The accept task ends when the server drops the stream (it stops taking connections).
pub fn incoming(
    listener: TcpListener,
    connections_max: usize,
    first_bytes: Duration,
) -> ReceiverStream<io::Result<Admitted>> {
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE_MAX);
    let slots = Arc::new(Semaphore::new(connections_max));
    tokio::spawn(async move {
        let mut failures = Failures::default();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        drop(slot);
                        tokio::time::sleep(failures.failed(&err)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            failures.accepted();
            // Without TCP_NODELAY a small answer written after a large request waits for the
            // peer's delayed ACK (40 ms on Linux).
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            tokio::spawn(async move {
                // A client that opens a socket and says nothing holds a slot only this long.
                // `peek` waits for a byte (or the end) to be there, not only for a readiness event.
                let mut first = [0u8; 1];
                if tokio::time::timeout(first_bytes, stream.peek(&mut first)).await.is_err() {
                    return;
                }
                let _ = tx.send(Ok(Admitted { stream, _slot: slot })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Failed accepts since the last success: how long to pause, and when to say so.
#[derive(Debug, Default)]
struct Failures {
    count: u64,
    retry: Duration,
    warned: Option<Instant>,
}

impl Failures {
    fn failed(&mut self, err: &io::Error) -> Duration {
        self.count += 1;
        self.retry = if self.retry.is_zero() { ACCEPT_RETRY_FIRST } else { (self.retry * 2).min(ACCEPT_RETRY_MAX) };
        if self.warned.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
            tracing::warn!(%err, failures = self.count, retry_ms = self.retry.as_millis() as u64,
                "gRPC accept failed (out of file descriptors?); pausing before the next");
            self.warned = Some(Instant::now());
        }
        self.retry
    }

    fn accepted(&mut self) {
        if self.count > 0 {
            tracing::info!(failures = self.count, "gRPC accepts again");
        }
        *self = Failures { warned: self.warned, ..Failures::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_to_a_ceiling_and_reset_on_success() {
        let mut failures = Failures::default();
        let emfile = io::Error::other("too many open files");
        let pauses: Vec<Duration> = (0..10).map(|_| failures.failed(&emfile)).collect();
        assert_eq!(pauses[0], ACCEPT_RETRY_FIRST);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses[9], ACCEPT_RETRY_MAX);
        failures.accepted();
        assert_eq!(failures.failed(&emfile), ACCEPT_RETRY_FIRST);
    }
}
