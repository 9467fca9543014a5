//! Secrets at rest: the key (parsed from `SECRETS_ENCRYPTION_KEY` exactly as docs/workspaces.md
//! §4.7 orders it), the keyring used during rotation, and sealing/opening of one value
//! (AES-256-GCM, random 96-bit nonce, AAD binding scope + workspace + key). Pure: no I/O, and it
//! never logs or returns key material or plaintext.

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, Generate, KeyInit, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

/// `encryption_version` of a row written without a key (legacy; we never write it).
pub const PLAINTEXT: i32 = 0;
/// AES-256-GCM without associated data, as the reference platform writes it.
pub const AES_GCM_UNBOUND: i32 = 1;
/// Ours: AES-256-GCM whose associated data binds the row's scope, workspace and key, so a
/// ciphertext copied to another row fails to open.
pub const AES_GCM_BOUND: i32 = 2;

const NONCE_LEN: usize = 12;

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

    /// The `key_version` rows sealed under this key carry: a 31-bit fingerprint, so every
    /// replica names a key the same way without coordinating a counter.
    pub fn version(&self) -> i32 {
        let digest = Sha256::new_with_prefix(b"molecule/secrets-key-version\0")
            .chain_update(self.0)
            .finalize();
        i32::from_be_bytes([digest[0] & 0x7f, digest[1], digest[2], digest[3]])
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

/// Which row a value belongs to; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Global,
    Workspace(&'a str),
}

impl Scope<'_> {
    pub fn name(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Workspace(_) => "workspace",
        }
    }

    fn associated_data(self, key: &str) -> Vec<u8> {
        let workspace = match self {
            Self::Global => "",
            Self::Workspace(id) => id,
        };
        // The key comes last, so the NUL separators cannot be forged by any field.
        format!("molecule/secret/v2\0{}\0{workspace}\0{key}", self.name()).into_bytes()
    }
}

/// A value as stored: `nonce ‖ ciphertext ‖ tag`, and the versions needed to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub blob: Vec<u8>,
    pub encryption_version: i32,
    pub key_version: i32,
}

/// Why a stored value could not be opened. Never carries plaintext or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unknown encryption_version={0}; platform upgrade required")]
    UnknownEncryptionVersion(i32),
    #[error("sealed under key_version={0}, which is not configured")]
    UnknownKey(i32),
    #[error("authentication failed (wrong key, or the row was tampered with or moved)")]
    Rejected,
}

/// The current key, which seals every write, and during a rotation the previous one, which
/// still opens rows not yet re-encrypted.
pub struct Keyring {
    current: (i32, Aes256Gcm),
    previous: Option<(i32, Aes256Gcm)>,
    /// What replicas show each other (one per key, current first); see
    /// [`Keyring::replica_credentials`].
    replica_credentials: Vec<String>,
}

/// Replica credentials are MACs of this label, so they reveal nothing about the key and are
/// useless for anything but replica-to-replica calls.
const REPLICA_LABEL: &[u8] = b"molecule/replica-relay/v1";

fn replica_credential(key: &SecretsKey) -> String {
    use hmac::{KeyInit as _, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(REPLICA_LABEL);
    hex::encode(mac.finalize().into_bytes())
}

impl Keyring {
    pub fn new(current: &SecretsKey, previous: Option<&SecretsKey>) -> Self {
        let entry = |key: &SecretsKey| (key.version(), Aes256Gcm::new(&key.0.into()));
        let previous = previous.filter(|previous| previous.0 != current.0);
        Self {
            current: entry(current),
            previous: previous.map(entry),
            replica_credentials: std::iter::once(current)
                .chain(previous)
                .map(replica_credential)
                .collect(),
        }
    }

    /// The credentials this replica presents to other replicas: one per key, so during a
    /// rolling key rotation replicas on either side of it still recognise each other.
    pub fn replica_credentials(&self) -> &[String] {
        &self.replica_credentials
    }

    /// Whether any presented credential is one of ours (constant time per comparison).
    pub fn accepts_replica(&self, presented: &[&str]) -> bool {
        use subtle::ConstantTimeEq;
        presented.iter().any(|presented| {
            self.replica_credentials
                .iter()
                .any(|ours| bool::from(ours.as_bytes().ct_eq(presented.as_bytes())))
        })
    }

    pub fn current_version(&self) -> i32 {
        self.current.0
    }

    pub fn seal(&self, scope: Scope<'_>, key: &str, plaintext: &[u8]) -> Sealed {
        let nonce = Nonce::generate();
        let aad = scope.associated_data(key);
        let ciphertext = self
            .current
            .1
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Sealed {
            blob,
            encryption_version: AES_GCM_BOUND,
            key_version: self.current.0,
        }
    }

    /// Opens a stored value. Plaintext rows (version 0) are returned as they are; unbound rows
    /// (version 1, imported from the reference platform) are tried under every configured key.
    pub fn open(&self, scope: Scope<'_>, key: &str, stored: &Sealed) -> Result<Vec<u8>, OpenError> {
        match stored.encryption_version {
            PLAINTEXT => Ok(stored.blob.clone()),
            AES_GCM_UNBOUND => self
                .ciphers()
                .find_map(|cipher| decrypt(cipher, &stored.blob, b"").ok())
                .ok_or(OpenError::Rejected),
            AES_GCM_BOUND => {
                let cipher = self
                    .ciphers_with_version()
                    .find(|(version, _)| *version == stored.key_version)
                    .map(|(_, cipher)| cipher)
                    .ok_or(OpenError::UnknownKey(stored.key_version))?;
                decrypt(cipher, &stored.blob, &scope.associated_data(key))
            }
            other => Err(OpenError::UnknownEncryptionVersion(other)),
        }
    }

    /// Whether a row still needs re-encryption under the current key.
    pub fn is_current(&self, stored: &Sealed) -> bool {
        stored.encryption_version == AES_GCM_BOUND && stored.key_version == self.current.0
    }

    fn ciphers_with_version(&self) -> impl Iterator<Item = (i32, &Aes256Gcm)> {
        std::iter::once((self.current.0, &self.current.1)).chain(
            self.previous
                .as_ref()
                .map(|(version, cipher)| (*version, cipher)),
        )
    }

    fn ciphers(&self) -> impl Iterator<Item = &Aes256Gcm> {
        self.ciphers_with_version().map(|(_, cipher)| cipher)
    }
}

fn decrypt(cipher: &Aes256Gcm, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
    if blob.len() < NONCE_LEN {
        return Err(OpenError::Rejected);
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| OpenError::Rejected)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| OpenError::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &str = "8d7c3bd6-1d5f-4f44-9a34-6f1d2c2b9a10";

    #[test]
    fn sealed_values_open_only_in_their_own_row() {
        let keyring = Keyring::new(&SecretsKey::generate(), None);
        let sealed = keyring.seal(Scope::Workspace(WS), "API_KEY", b"sk-123");
        assert_eq!(sealed.blob.len(), NONCE_LEN + "sk-123".len() + 16);
        assert!(!sealed.blob.windows(6).any(|w| w == b"sk-123"));
        assert_eq!(
            keyring
                .open(Scope::Workspace(WS), "API_KEY", &sealed)
                .unwrap(),
            b"sk-123"
        );
        for (scope, key) in [
            (Scope::Workspace(WS), "OTHER"),
            (Scope::Global, "API_KEY"),
            (
                Scope::Workspace("00000000-0000-0000-0000-000000000000"),
                "API_KEY",
            ),
        ] {
            assert_eq!(keyring.open(scope, key, &sealed), Err(OpenError::Rejected));
        }
        // A fresh nonce per write.
        assert_ne!(
            keyring.seal(Scope::Global, "K", b"v").blob,
            keyring.seal(Scope::Global, "K", b"v").blob
        );
    }

    #[test]
    fn previous_key_opens_until_rotation_and_unknown_versions_fail() {
        let old = SecretsKey::generate();
        let new = SecretsKey::generate();
        let sealed = Keyring::new(&old, None).seal(Scope::Global, "K", b"v");
        let rotating = Keyring::new(&new, Some(&old));
        assert!(!rotating.is_current(&sealed));
        assert_eq!(rotating.open(Scope::Global, "K", &sealed).unwrap(), b"v");
        let after = Keyring::new(&new, None);
        assert_eq!(
            after.open(Scope::Global, "K", &sealed),
            Err(OpenError::UnknownKey(old.version()))
        );
        let resealed = rotating.seal(Scope::Global, "K", b"v");
        assert!(after.is_current(&resealed));
        let unknown = Sealed {
            encryption_version: 7,
            ..resealed
        };
        assert_eq!(
            after
                .open(Scope::Global, "K", &unknown)
                .unwrap_err()
                .to_string(),
            "unknown encryption_version=7; platform upgrade required"
        );
        let plaintext = Sealed {
            blob: b"legacy".to_vec(),
            encryption_version: PLAINTEXT,
            key_version: 0,
        };
        assert_eq!(
            after.open(Scope::Global, "K", &plaintext).unwrap(),
            b"legacy"
        );
    }

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
