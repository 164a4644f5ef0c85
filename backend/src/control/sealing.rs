//! Prediction tokens sealed at rest. A service's token cannot be stored as
//! a one-way hash like the other tokens: the EAS SDK signs requests with an
//! HMAC keyed by it, so the server must be able to read it. It is stored
//! sealed instead (AES-256-GCM, ring): whoever reads the database — a
//! backup, another tenant of the PostgreSQL — gets no token without the
//! key, which lives in the data folder (`DATA/secret-key`, 0600) or, for
//! nodes that share a database, in the file `--secret-key-file` names (the
//! same on every node).

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// What marks a sealed value (anything else was stored before sealing, in
/// the clear, and is sealed at the next start).
const PREFIX: &str = "sealed1:";

/// The file in the data folder that holds the key, when no
/// `--secret-key-file` is given.
pub const KEY_FILE: &str = "secret-key";

pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The key in `path` (64 hex digits), made (0600) when `create` and the
    /// file does not exist.
    pub fn from_file(path: &Path, create: bool) -> Result<Sealer, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let hex = Sealer::new_key()?;
                write_private(path, &hex)
                    .map_err(|e| format!("writing the secret key {}: {e}", path.display()))?;
                hex
            }
            Err(e) => return Err(format!("reading the secret key {}: {e}", path.display())),
        };
        Sealer::from_hex(&text).map_err(|_| {
            format!(
                "{}: expected a secret key of 64 hex digits (32 bytes), as `openssl rand -hex 32` writes",
                path.display()
            )
        })
    }

    /// The key given as 64 hex digits (`--secret-key`, `WHET_SECRET_KEY`).
    pub fn from_hex(hex_key: &str) -> Result<Sealer, String> {
        let key = hex::decode(hex_key.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                "--secret-key: expected 64 hex digits (32 bytes), as `openssl rand -hex 32` writes"
                    .to_string()
            })?;
        Sealer::from_key(&key)
    }

    /// A new random key, as 64 hex digits.
    pub fn new_key() -> Result<String, String> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| "no randomness for a new secret key".to_string())?;
        Ok(hex::encode(key))
    }

    fn from_key(key: &[u8]) -> Result<Sealer, String> {
        let key =
            UnboundKey::new(&AES_256_GCM, key).map_err(|_| "a bad AES-256 key".to_string())?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `value` sealed: a fresh nonce, then the ciphertext and its tag.
    pub fn seal(&self, value: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        ))
    }

    /// A stored value read back: opened when sealed, as it is when it was
    /// stored before sealing. A value sealed with another key is an error
    /// that says so.
    pub fn open(&self, stored: &str) -> Result<String, String> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let wrong = || {
            "a prediction token was sealed with another secret key: give every node the same --secret-key-file".to_string()
        };
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| wrong())?;
        if raw.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }

    /// Whether `stored` is sealed (rather than kept in the clear by an
    /// older server).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::from_file(&dir.path().join("a"), true).unwrap();
        let b = Sealer::from_file(&dir.path().join("b"), true).unwrap();
        let sealed = a.seal("the-token-1234567890").unwrap();
        assert!(Sealer::is_sealed(&sealed) && !sealed.contains("the-token"));
        // A fresh nonce every time.
        assert_ne!(sealed, a.seal("the-token-1234567890").unwrap());
        assert_eq!(a.open(&sealed).unwrap(), "the-token-1234567890");
        assert!(b.open(&sealed).unwrap_err().contains("another secret key"));
        // A value stored before sealing reads as it is.
        assert_eq!(a.open("plain-old-token").unwrap(), "plain-old-token");
        // The same file gives the same key; the file is private.
        let again = Sealer::from_file(&dir.path().join("a"), false).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "the-token-1234567890");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A tampered value or a bad key file is refused, saying what.
        let mut bad = sealed.clone();
        bad.pop();
        assert!(a.open(&bad).is_err());
        std::fs::write(dir.path().join("c"), "not hex").unwrap();
        assert!(Sealer::from_file(&dir.path().join("c"), false)
            .unwrap_err()
            .contains("64 hex digits"));
    }
}
