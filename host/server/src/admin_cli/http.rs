//! A minimal blocking HTTP/1.1 client for the admin API: one request per connection, JSON bodies.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

/// Largest response the CLI reads.
const RESPONSE_BYTES_MAX: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request with a JSON body (or none); returns the status code and the parsed JSON body.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    request_raw(address, method, path, payload.as_bytes(), "application/json", token, &[])
}

/// Sends one request with `body` as given, `token` as a bearer token and `headers` besides.
pub fn request_raw(
    address: &str,
    method: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
) -> anyhow::Result<(u16, serde_json::Value)> {
    // Compiling an uploaded plugin may take a while; everything else answers at once.
    exchange(address, method, path, body, content_type, token, headers, (TIMEOUT, TIMEOUT * 10))
}

/// One JSON request between servers (a broker and its name servers): short timeouts.
pub fn request_quick(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    exchange(address, method, path, payload.as_bytes(), "application/json", None, &[], (timeout, timeout))
}

#[allow(clippy::too_many_arguments)]
fn exchange(
    address: &str,
    method: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    (connect_timeout, read_timeout): (Duration, Duration),
) -> anyhow::Result<(u16, serde_json::Value)> {
    let addr = address
        .to_socket_addrs()
        .with_context(|| format!("resolve the admin address {address}"))?
        .next()
        .with_context(|| format!("the admin address {address} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, connect_timeout)
        .with_context(|| format!("connect to {address} (is ferrymq running there? for a broker see --admin-addr)"))?;
    stream.set_read_timeout(Some(read_timeout))?;
    stream.set_write_timeout(Some(connect_timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
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
