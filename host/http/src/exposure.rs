//! What an admin endpoint without tokens (the broker's, a gateway's) accepts: the operator's own
//! tools on this host, not a web page that a browser on this host happens to show. Without tokens nothing but the network stands
//! between a caller and every admin action, so a request must look like it came from a tool:
//!
//! * its `Host` names an IP address or `localhost` — a DNS name there means the browser was led to
//!   this port through a name the attacker controls (DNS rebinding);
//! * its `Origin`, if any (browsers send one), is this host or a loopback address — another origin
//!   is a page making a cross-site request;
//! * a request that changes something says `Content-Type: application/json` (or
//!   `application/wasm` for an upload) — the content types a page may send cross-site without asking
//!   first (`text/plain`, forms) are refused, and the preflight a page would need is never answered.
//!
//! With tokens configured none of this applies: a browser cannot attach the bearer token.

use std::net::IpAddr;

/// The headers the rules look at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Headers<'a> {
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// Why a request to an admin API without tokens is refused, if it is; `changes` says whether the
/// request would change something.
pub fn refusal(call: &Headers<'_>, changes: bool) -> Option<String> {
    let Some(host) = call.host else {
        return Some("a request to an admin API without tokens needs a Host header".into());
    };
    let host_name = hostname(host);
    if !is_ip_or_localhost(host_name) {
        return Some(format!(
            "Host {host:?} is a DNS name: an admin API without tokens answers only requests addressed to an IP address or localhost"
        ));
    }
    if let Some(origin) = call.origin {
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let origin_name = hostname(origin_host);
        if !(is_loopback(origin_name) || origin_name.eq_ignore_ascii_case(host_name)) {
            return Some(format!(
                "Origin {origin:?} is another site: an admin API without tokens refuses cross-site requests"
            ));
        }
    }
    if changes {
        let content_type = call.content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if !matches!(content_type.as_deref(), Some("application/json" | "application/wasm")) {
            return Some(
                "a change through an admin API without tokens must be sent as application/json (application/wasm for an upload)"
                    .into(),
            );
        }
    }
    None
}

/// The host part of `host[:port]`, `[v6]:port` or `v6`.
fn hostname(authority: &str) -> &str {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match authority.rsplit_once(':') {
        // More than one colon: a bare IPv6 address.
        Some((name, _)) if !name.contains(':') => name,
        _ => authority,
    }
}

fn is_ip_or_localhost(name: &str) -> bool {
    name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost")
}

fn is_loopback(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(host: Option<&'a str>, origin: Option<&'a str>, content_type: Option<&'a str>) -> Headers<'a> {
        Headers { host, origin, content_type }
    }

    #[test]
    fn the_operators_tools_pass() {
        for host in ["127.0.0.1:8082", "localhost:8082", "[::1]:8082", "198.18.0.2:8082", "::1"] {
            assert_eq!(refusal(&call(Some(host), None, Some("application/json")), true), None, "{host}");
        }
        let same_origin =
            call(Some("127.0.0.1:8082"), Some("http://127.0.0.1:8082"), Some("application/json; charset=utf-8"));
        assert_eq!(refusal(&same_origin, true), None);
        assert_eq!(refusal(&call(Some("127.0.0.1:8082"), None, None), false), None, "a read needs no content type");
    }

    #[test]
    fn a_browser_page_on_another_site_is_refused() {
        let rebinding = call(Some("evil.example:8082"), None, Some("application/json"));
        assert!(refusal(&rebinding, true).is_some_and(|r| r.contains("DNS name")));
        let cross_site = call(Some("127.0.0.1:8082"), Some("http://evil.example"), Some("application/json"));
        assert!(refusal(&cross_site, true).is_some_and(|r| r.contains("cross-site")));
        let ip_site = call(Some("127.0.0.1:8082"), Some("http://203.0.113.9"), Some("application/json"));
        assert!(refusal(&ip_site, false).is_some(), "another host's page, even by address");
        let simple = call(Some("127.0.0.1:8082"), None, Some("text/plain"));
        assert!(refusal(&simple, true).is_some_and(|r| r.contains("application/json")));
        assert!(refusal(&call(None, None, Some("application/json")), true).is_some(), "no Host");
    }
}
