//! Plugin signatures: an ed25519 signature over the component's bytes, by a key trusted for the
//! plugin's department, sent in the `x-ferrymq-signature` header (hex). With `enforce` on, an
//! unsigned or wrongly signed upload is refused; with it off, a signature that is given must still
//! verify.

use anyhow::Context;
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Reads a signing key file written by `ferrymq plugin keygen` (the secret key, 64 hex digits).
pub fn read_signing_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read the key {}", path.display()))?;
    let bytes: [u8; 32] = ferrymq_proto::hex::decode(text.trim())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is not a key from `ferrymq plugin keygen`", path.display()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Parses an ed25519 public key written as 64 hex digits.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = ferrymq_proto::hex::decode(hex.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a public key is 64 hex digits".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

/// Why an upload's signature is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not a signature at all: a bad request rather than a forbidden one.
    #[error("malformed signature: x-ferrymq-signature must be 128 hex digits")]
    Malformed,
    #[error("plugin signatures are enforced: sign {plugin} with a key trusted for {department}")]
    Required { plugin: String, department: String },
    #[error("the signature of {plugin} does not verify with any key trusted for department {department}")]
    Untrusted { plugin: String, department: String },
}

/// `[admin.signatures]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Refuse plugin versions without a valid signature.
    pub enforce: bool,
    pub keys: Vec<TrustedKey>,
}

/// A public key trusted to sign a department's plugins.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub department: String,
    /// The ed25519 public key, 64 hex digits (`ferrymq plugin keygen` prints it).
    pub public_key: String,
}

/// The trusted keys, parsed.
#[derive(Clone, Debug, Default)]
pub struct Signatures {
    enforce: bool,
    keys: Vec<(String, VerifyingKey)>,
}

impl Signatures {
    pub fn from_config(config: &SignaturesConfig) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for k in &config.keys {
            let key = parse_public_key(&k.public_key)
                .map_err(|e| format!("signing key of {}: public_key: {e}", k.department))?;
            keys.push((k.department.clone(), key));
        }
        Ok(Self { enforce: config.enforce, keys })
    }

    /// The department whose key signed `bytes` of `plugin` (`None`: unsigned and allowed), or why the
    /// upload is refused.
    pub fn check(&self, plugin: &str, bytes: &[u8], signature: Option<&str>) -> Result<Option<String>, SignatureError> {
        let department = plugin.split_once('/').map_or(plugin, |(d, _)| d);
        let named = || (plugin.to_owned(), department.to_owned());
        let Some(signature) = signature else {
            let (plugin, department) = named();
            return if self.enforce { Err(SignatureError::Required { plugin, department }) } else { Ok(None) };
        };
        let signature: [u8; 64] =
            ferrymq_proto::hex::decode(signature).and_then(|b| b.try_into().ok()).ok_or(SignatureError::Malformed)?;
        let signature = Signature::from_bytes(&signature);
        let mut trusted = self.keys.iter().filter(|(d, _)| d == department);
        if trusted.any(|(_, key)| key.verify(bytes, &signature).is_ok()) {
            Ok(Some(department.to_owned()))
        } else {
            let (plugin, department) = named();
            Err(SignatureError::Untrusted { plugin, department })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn only_a_trusted_departments_signature_passes_under_enforcement() {
        let tax = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[9; 32]);
        let config = SignaturesConfig {
            enforce: true,
            keys: vec![TrustedKey {
                department: "tax".into(),
                public_key: ferrymq_proto::hex::encode(tax.verifying_key().as_bytes()),
            }],
        };
        let signatures = Signatures::from_config(&config).expect("valid");
        let bytes = b"component";
        let good = ferrymq_proto::hex::encode(&tax.sign(bytes).to_bytes());
        assert_eq!(signatures.check("tax/inbox", bytes, Some(&good)), Ok(Some("tax".into())));
        assert!(signatures.check("tax/inbox", b"tampered", Some(&good)).is_err(), "bytes changed after signing");
        assert!(signatures.check("customs/inbox", bytes, Some(&good)).is_err(), "key of another department");
        let forged = ferrymq_proto::hex::encode(&other.sign(bytes).to_bytes());
        assert!(signatures.check("tax/inbox", bytes, Some(&forged)).is_err(), "untrusted key");
        assert!(matches!(signatures.check("tax/inbox", bytes, None), Err(SignatureError::Required { .. })), "unsigned");
        assert_eq!(signatures.check("tax/inbox", bytes, Some("zz")), Err(SignatureError::Malformed));
        let relaxed = Signatures::from_config(&SignaturesConfig { enforce: false, ..config }).expect("valid");
        assert_eq!(relaxed.check("tax/inbox", bytes, None), Ok(None));
        let refused = relaxed.check("tax/inbox", bytes, Some(&forged));
        assert!(matches!(refused, Err(SignatureError::Untrusted { .. })), "a given signature must verify");
    }
}
