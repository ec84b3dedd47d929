//! The shared secret and the handshake's challenge-response.
//!
//! Each side sends a fresh random nonce (the server in its challenge, the client in its
//! greeting). The client proves it holds the secret with an HMAC-SHA256 over both nonces
//! and its greeting's fields; the server answers with its own HMAC over both nonces and
//! its answer's fields, so a client that holds a secret never talks to a server that does
//! not. MACs are compared in constant time (`Mac::verify_slice`). A server without a
//! secret is open: it accepts every greeting's MAC (and a client with a secret refuses
//! it).

use crate::wire::{Greeting, MAC_LEN, NONCE_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use zerocopy::IntoBytes;

type HmacSha256 = Hmac<Sha256>;

/// What is wrong with a secret file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// It could not be read.
    #[error("reading the secret file: {0}")]
    Io(#[from] std::io::Error),
    /// It holds nothing (once surrounding whitespace is trimmed).
    #[error("the secret file is empty")]
    Empty,
}

/// A shared secret: the bytes of a file, surrounding ASCII whitespace trimmed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret of `bytes` (trimmed of surrounding ASCII whitespace).
    pub fn new(bytes: &[u8]) -> Result<Secret, SecretError> {
        let t = bytes.trim_ascii();
        if t.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(t.to_vec()))
    }

    /// The secret held in the file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Secret, SecretError> {
        Secret::new(&std::fs::read(path)?)
    }

    fn mac(&self, label: &[u8], server_nonce: &[u8], g: &Greeting) -> HmacSha256 {
        // A key of any length is accepted by HMAC: `new_from_slice` cannot fail here,
        // and a failure would only make every MAC check fail.
        let mut m = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => HmacSha256::new(&Default::default()),
        };
        let mut g = *g;
        g.mac = [0; MAC_LEN];
        m.update(label);
        m.update(server_nonce);
        m.update(g.as_bytes());
        m
    }

    /// The MAC of a greeting `g` (its `mac` field left out) sent by the client
    /// (`from_client`) or by the server, in the handshake of `server_nonce`.
    pub fn sign(
        &self,
        from_client: bool,
        server_nonce: &[u8; NONCE_LEN],
        g: &Greeting,
    ) -> [u8; 32] {
        let m = self.mac(label(from_client), server_nonce, g);
        m.finalize().into_bytes().into()
    }

    /// Whether `g.mac` is the MAC of `g` (constant time).
    pub fn verify(&self, from_client: bool, server_nonce: &[u8; NONCE_LEN], g: &Greeting) -> bool {
        let m = self.mac(label(from_client), server_nonce, g);
        m.verify_slice(&g.mac).is_ok()
    }
}

fn label(from_client: bool) -> &'static [u8] {
    if from_client {
        b"scoutfs-net client greeting v1"
    } else {
        b"scoutfs-net server greeting v1"
    }
}

/// A fresh random nonce.
pub fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut n).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(n)
}

/// A fresh random u64 (server terms), never 0.
pub fn random_u64() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(b).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_secret_nonce_direction_and_fields() {
        let s = Secret::new(b"  hunter2\n").unwrap();
        let t = Secret::new(b"hunter3").unwrap();
        let n = [7u8; NONCE_LEN];
        let mut g = Greeting {
            nonce: [9; NONCE_LEN],
            rid: 5.into(),
            ..Default::default()
        };
        g.mac = s.sign(true, &n, &g);
        assert!(s.verify(true, &n, &g));
        assert!(!t.verify(true, &n, &g), "another secret");
        assert!(!s.verify(false, &n, &g), "the other direction");
        assert!(
            !s.verify(true, &[8u8; NONCE_LEN], &g),
            "another server nonce"
        );
        let mut h = g;
        h.rid = 6.into();
        assert!(!s.verify(true, &n, &h), "a changed field");
        assert!(matches!(Secret::new(b" \n"), Err(SecretError::Empty)));
    }
}
