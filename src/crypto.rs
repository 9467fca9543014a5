//! The secrets encryption key: parsing `SECRETS_ENCRYPTION_KEY` exactly as the contract orders
//! it (§4.7), so existing values keep decrypting. It never logs or returns key material.

use base64::{Engine, engine::general_purpose::STANDARD};

/// A 256-bit AES key.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

impl SecretsKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The form written to `<data dir>/secrets.key`: standard base64 with padding.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Standard padded base64 of 32 bytes first; otherwise exactly 32 raw bytes. A 32-character
    /// string of base64 characters decodes to 24 bytes and is rejected, never used raw.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        if raw.is_empty() {
            return Ok(None);
        }
        match STANDARD.decode(raw) {
            Ok(decoded) => <[u8; 32]>::try_from(decoded.as_slice())
                .map(|key| Some(Self(key)))
                .map_err(|_| format!("decoded to {} bytes (expected 32)", decoded.len())),
            Err(_) => <[u8; 32]>::try_from(raw.as_bytes())
                .map(|key| Some(Self(key)))
                .map_err(|_| "not base64 of 32 bytes nor 32 raw bytes".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_in_the_documented_order() {
        assert!(SecretsKey::parse("").unwrap().is_none());
        let key = SecretsKey::generate();
        assert_eq!(
            SecretsKey::parse(&key.to_base64())
                .unwrap()
                .unwrap()
                .bytes(),
            key.bytes()
        );
        // 32 raw bytes that are not valid base64.
        let raw = "0123456789!abcdefghijklmnopqrstu";
        assert_eq!(
            SecretsKey::parse(raw).unwrap().unwrap().bytes(),
            raw.as_bytes()
        );
        // 32 base64 characters decode to 24 bytes: rejected, not used raw.
        let err = SecretsKey::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap_err();
        assert_eq!(err, "decoded to 24 bytes (expected 32)");
        assert!(SecretsKey::parse("short").is_err());
    }
}
