//! The gRPC port's accept loop. A client controls how many sockets it opens and when it speaks on
//! them, so both are bounded:
//!
//! * at most `connections_max` connections at once — more wait in the kernel's accept queue, so
//!   idle sockets cannot take every file descriptor the broker has;
//! * a connection that sends nothing within `first_bytes_ms` is closed before HTTP/2 sees it;
//! * a failed accept (out of file descriptors above all) backs off instead of spinning, and is
//!   logged at most once per `ferrymq_http::accept::WARN_EVERY` with how many failed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferrymq_http::accept::AcceptFailures;
use ferrymq_proto::limit::Limit;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

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
        let mut failures = AcceptFailures::new("gRPC");
        loop {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    Limit::GrpcConnections.reached();
                    let Ok(slot) = slots.clone().acquire_owned().await else { return };
                    slot
                }
            };
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
                    Limit::GrpcFirstBytes.reached();
                    return;
                }
                let _ = tx.send(Ok(Admitted { stream, _slot: slot })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
