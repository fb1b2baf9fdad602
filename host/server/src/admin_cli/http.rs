//! A minimal blocking HTTP/1.1 client for the admin API: one request per connection, JSON bodies.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

/// Largest response the CLI reads.
const RESPONSE_BYTES_MAX: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request; returns the status code and the parsed JSON body.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let addr = address
        .to_socket_addrs()
        .with_context(|| format!("resolve the admin address {address}"))?
        .next()
        .with_context(|| format!("the admin address {address} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| {
        format!("connect to the broker's admin endpoint at {address} (is ferrymq running? see --admin-addr)")
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut raw = Vec::new();
    stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw).context("read the admin response")?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("malformed admin response from {address}") };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("malformed status line from {address}"))?;
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).context("parse the admin response")?
    };
    Ok((status, json))
}
