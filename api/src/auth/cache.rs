//! Remembers verified tokens so a busy client does not pay a signature check per request.

use chrono::Utc;
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::verify::VerifiedToken;

/// Bounded, keyed by the SHA-256 of the token (the token itself is never stored), and an entry
/// is never used past the token's `exp`.
#[derive(Debug)]
pub struct VerifiedCache {
    entries: Cache<[u8; 32], VerifiedToken>,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity.max(1)),
        }
    }

    pub fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<VerifiedToken> {
        let hit = self.entries.get(key)?;
        if hit.expires_at <= Utc::now() {
            self.entries.remove(key);
            return None;
        }
        Some(hit)
    }

    pub fn insert(&self, key: [u8; 32], token: VerifiedToken) {
        self.entries.insert(key, token);
    }
}
