//! Secrets at rest: access-key secrets and session credentials are sealed
//! with ChaCha20-Poly1305 under a per-installation key before they reach
//! the store, so a copy of the database alone (a backup, a leaked file)
//! reveals no usable credential. They cannot be hashed: SigV4 needs the
//! secret itself to recompute signatures.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "sealed:v1:";

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box for this 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// `sealed:v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        // A failing OS random source would repeat nonces; getrandom only
        // fails on systems where nothing here could run.
        let _ = getrandom::fill(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_else(|_| {
                unreachable!("ChaCha20-Poly1305 encryption of a short string cannot fail")
            });
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// The plain text of a sealed value; a value stored before sealing
    /// existed (no prefix) is returned as is.
    pub fn open(&self, stored: &str) -> Result<String, String> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string())?;
        if raw.len() < 12 {
            return Err("sealed value too short".into());
        }
        let (nonce, body) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| "sealed value does not open with this installation's key".to_string())?;
        String::from_utf8(plain).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_other_keys() {
        let a = SecretBox::new(&[1; 32]);
        let sealed = a.seal("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("wJalr"), "the secret is not visible");
        assert_ne!(a.seal("x"), a.seal("x"), "fresh nonce each time");
        assert_eq!(
            a.open(&sealed).unwrap(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        );
        assert!(SecretBox::new(&[2; 32]).open(&sealed).is_err());
        assert_eq!(a.open("legacy-plain").unwrap(), "legacy-plain");
    }
}
