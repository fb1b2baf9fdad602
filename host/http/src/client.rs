//! A small blocking HTTP/1.1 client for ferrymq's own JSON endpoints: one request per connection,
//! bounded in time and in the size of the response it reads.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response read; a longer one is cut there (and then fails to parse as JSON).
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Connect and read timeout of a request to the admin API unless the request says otherwise.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Why a request got no answer that could be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("resolve {address}")]
    Resolve {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{address} resolves to no address")]
    NoAddress { address: String },
    #[error("connect to {address} (is ferrymq running there?)")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("exchange a request with {address}")]
    Exchange {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed response from {address}: {what}")]
    Malformed { address: String, what: &'static str },
    #[error("the response from {address} is not JSON")]
    NotJson {
        address: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One request: a method and path, and what goes with them.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, already escaped.
    pub path: &'a str,
    pub body: &'a [u8],
    pub content_type: &'a str,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<&'a str>,
    /// Further headers.
    pub headers: &'a [(&'a str, String)],
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl<'a> Request<'a> {
    /// A request without body, token or headers, with the default timeouts.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            body: &[],
            content_type: "application/json",
            token: None,
            headers: &[],
            connect_timeout: TIMEOUT_DEFAULT,
            read_timeout: TIMEOUT_DEFAULT,
        }
    }

    /// Sends the request to `address` (`host:port`); returns the status code and the JSON body
    /// (`null` when the body is empty).
    pub fn send(&self, address: &str) -> Result<(u16, serde_json::Value), HttpError> {
        let addr = address
            .to_socket_addrs()
            .map_err(|source| HttpError::Resolve { address: address.to_owned(), source })?
            .next()
            .ok_or_else(|| HttpError::NoAddress { address: address.to_owned() })?;
        let mut stream = TcpStream::connect_timeout(&addr, self.connect_timeout)
            .map_err(|source| HttpError::Connect { address: address.to_owned(), source })?;
        let raw = self
            .exchange(&mut stream, address)
            .map_err(|source| HttpError::Exchange { address: address.to_owned(), source })?;
        parse_response(&raw, address)
    }

    fn exchange(&self, stream: &mut TcpStream, address: &str) -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(self.read_timeout))?;
        stream.set_write_timeout(Some(self.connect_timeout))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.content_type,
            self.body.len()
        );
        if let Some(token) = self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(self.body)?;
        let mut raw = Vec::new();
        stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw)?;
        Ok(raw)
    }
}

/// Sends `body` as JSON (or no body) with an optional bearer token and the default timeouts.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value), HttpError> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    Request { body: payload.as_bytes(), token, ..Request::new(method, path) }.send(address)
}

fn parse_response(raw: &[u8], address: &str) -> Result<(u16, serde_json::Value), HttpError> {
    let malformed = |what| HttpError::Malformed { address: address.to_owned(), what };
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| malformed("no end of headers"))?;
    let status: u16 =
        head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| malformed("no status code"))?;
    let json = if body.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).map_err(|source| HttpError::NotJson { address: address.to_owned(), source })?
    };
    Ok((status, json))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A server on loopback that reads one request and answers `answer` whatever it was asked.
    fn answering(answer: &'static [u8]) -> (String, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return Vec::new() };
            let mut asked = vec![0u8; 4096];
            let read = stream.read(&mut asked).unwrap_or(0);
            asked.truncate(read);
            let _ = stream.write_all(answer);
            asked
        });
        (address, server)
    }

    #[test]
    fn a_json_answer_is_parsed_with_its_status() {
        let (address, server) = answering(b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"ok\":true}");
        let (status, body) =
            request(&address, "POST", "/v1/topics", Some(&serde_json::json!({"name": "t"})), Some("k"))
                .expect("request");
        assert_eq!((status, body), (201, serde_json::json!({ "ok": true })));
        let asked = String::from_utf8(server.join().expect("server")).expect("utf-8");
        assert!(asked.starts_with("POST /v1/topics HTTP/1.1\r\n"), "{asked}");
        assert!(asked.contains("Authorization: Bearer k\r\n"), "{asked}");
        assert!(asked.ends_with("{\"name\":\"t\"}"), "{asked}");
    }

    #[test]
    fn garbage_and_refusals_are_typed_errors() {
        let (address, _server) = answering(b"nonsense");
        assert!(matches!(request(&address, "GET", "/", None, None), Err(HttpError::Malformed { .. })));
        let (address, _server) = answering(b"HTTP/1.1 200 OK\r\n\r\nnot json");
        assert!(matches!(request(&address, "GET", "/", None, None), Err(HttpError::NotJson { .. })));
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").to_string();
        assert!(matches!(request(&closed, "GET", "/", None, None), Err(HttpError::Connect { .. })));
    }
}
