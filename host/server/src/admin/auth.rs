//! Who may call the admin API: bearer tokens map to principals with roles.
//!
//! - `admin`: everything;
//! - `department:<name>`: read everything; push, delete and dry-run plugins named `<name>/…`; bind
//!   them (and activate, roll back, unbind) only on topics of the department (`<name>`, `<name>-…`,
//!   `<name>_…`);
//! - `viewer`: read everything.
//!
//! With no tokens configured the API is open and every caller is `admin` (the listener is on
//! loopback by default); the broker says so in its log at start.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One `[[admin.tokens]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who the token stands for, as the audit log names them.
    pub principal: String,
    /// The token itself, or (better) only its SHA-256 in `token_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// `admin`, `viewer` or `department:<name>`.
    pub roles: Vec<String>,
}

impl TokenConfig {
    /// The same token named by its SHA-256 only, so that it can be shown (`ferrymq config check`).
    pub fn hidden(&self) -> TokenConfig {
        let token_sha256 = match (&self.token, &self.token_sha256) {
            (Some(token), _) => Some(ferrymq_proto::hex::sha256(token.as_bytes())),
            (None, digest) => digest.clone(),
        };
        TokenConfig { token: None, token_sha256, ..self.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Department(String),
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => match s.strip_prefix("department:") {
                Some(d) if ferrymq_policy::registry::check_plugin_name(&format!("{d}/x")).is_ok() => {
                    Ok(Role::Department(d.to_owned()))
                }
                _ => Err(format!(
                    "role {s:?} is not admin, viewer or department:<name> (lowercase letters, digits, '-', '_')"
                )),
            },
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
}

impl Principal {
    /// The caller when authentication is off.
    pub fn open() -> Self {
        Principal { name: "anonymous".into(), roles: vec![Role::Admin] }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether this principal may change the plugin `plugin` (`<department>/<name>`).
    pub fn owns_plugin(&self, plugin: &str) -> bool {
        self.is_admin()
            || plugin.split_once('/').is_some_and(|(d, _)| self.roles.contains(&Role::Department(d.to_owned())))
    }

    /// Whether this principal may bind plugins on `topic`.
    pub fn owns_topic(&self, topic: &str) -> bool {
        self.is_admin()
            || self.roles.iter().any(|r| match r {
                Role::Department(d) => {
                    topic == d
                        || topic
                            .strip_prefix(d.as_str())
                            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('_'))
                }
                _ => false,
            })
    }
}

/// The configured tokens, ready to check.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    /// (SHA-256 of the token, principal).
    entries: Vec<([u8; 32], Principal)>,
}

/// Why a request is not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let bytes = ferrymq_proto::hex::decode(s)?;
    bytes.try_into().ok()
}

impl Tokens {
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(tokens.len());
        for t in tokens {
            let hash = match (&t.token, &t.token_sha256) {
                (Some(token), None) if token.len() >= 16 => sha256(token.as_bytes()),
                (Some(_), None) => return Err(format!("admin token of {}: at least 16 characters", t.principal)),
                (None, Some(hex)) => parse_hex32(hex)
                    .ok_or_else(|| format!("admin token of {}: token_sha256 is not 64 hex digits", t.principal))?,
                _ => return Err(format!("admin token of {}: give exactly one of token and token_sha256", t.principal)),
            };
            if t.principal.is_empty() || t.roles.is_empty() {
                return Err("every admin token needs a principal and at least one role".into());
            }
            let roles = t.roles.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>, _>>()?;
            if entries.iter().any(|(h, _)| *h == hash) {
                return Err(format!("admin token of {} is also given to another principal", t.principal));
            }
            entries.push((hash, Principal { name: t.principal.clone(), roles }));
        }
        Ok(Self { entries })
    }

    /// Whether callers must authenticate.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The principal of an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal::open());
        }
        let token = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(AuthError::Missing)?;
        let hash = sha256(token.as_bytes());
        // Compare every entry in full so the time taken does not say how much of a hash matched.
        let mut found = None;
        for (h, principal) in &self.entries {
            let same = h.iter().zip(hash.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(principal: &str, token: &str, roles: &[&str]) -> TokenConfig {
        TokenConfig {
            principal: principal.into(),
            token: Some(token.into()),
            token_sha256: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn tokens_name_principals_and_refuse_strangers() {
        let tokens = Tokens::from_config(&[token("ops", "0123456789abcdef-ops", &["admin"])]).expect("valid");
        assert_eq!(tokens.authenticate(Some("Bearer 0123456789abcdef-ops")).expect("known").name, "ops");
        assert_eq!(tokens.authenticate(Some("Bearer nope-nope-nope-nope")), Err(AuthError::Unknown));
        assert_eq!(tokens.authenticate(None), Err(AuthError::Missing));
        assert_eq!(tokens.authenticate(Some("Basic abc")), Err(AuthError::Missing));
        assert!(Tokens::default().authenticate(None).expect("open").is_admin());
        assert!(Tokens::from_config(&[token("x", "short", &["admin"])]).is_err());
        assert!(Tokens::from_config(&[token("x", "0123456789abcdef", &["root"])]).is_err());
    }

    #[test]
    fn departments_own_their_plugins_and_topics_only() {
        let tax = Principal { name: "t".into(), roles: vec![Role::parse("department:tax").expect("role")] };
        assert!(tax.owns_plugin("tax/inbox") && !tax.owns_plugin("customs/inbox") && !tax.owns_plugin("tax"));
        assert!(tax.owns_topic("tax") && tax.owns_topic("tax-inbox") && tax.owns_topic("tax_x"));
        assert!(!tax.owns_topic("taxes") && !tax.owns_topic("customs-tax"));
        assert!(Principal::open().owns_topic("anything"));
    }
}
