//! Remembers verified tokens so a busy client does not pay a signature check per request.

use std::sync::Arc;

use chrono::Utc;
use openidconnect::core::CoreJsonWebKeySet;
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::verify::VerifiedToken;

/// Bounded, keyed by the SHA-256 of the token (the token itself is never stored). An entry is
/// never used past the token's `exp`, nor once the issuer's key set has changed: a key the
/// issuer withdrew (after a compromise, say) must stop vouching for the tokens it signed, not
/// only for new ones.
#[derive(Debug)]
pub struct VerifiedCache {
    entries: Cache<[u8; 32], Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    token: VerifiedToken,
    /// The key set the token was verified against.
    keys: Arc<CoreJsonWebKeySet>,
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

    /// The token verified under `key`, if it has not expired and was verified against
    /// `current`, the key set in use now (the same `Arc`: a refresh that finds the same keys
    /// keeps it).
    pub fn get(
        &self,
        key: &[u8; 32],
        current: Option<&Arc<CoreJsonWebKeySet>>,
    ) -> Option<VerifiedToken> {
        let hit = self.entries.get(key)?;
        let same_keys = current.is_some_and(|current| Arc::ptr_eq(current, &hit.keys));
        if !same_keys || hit.token.expires_at <= Utc::now() {
            self.entries.remove(key);
            return None;
        }
        Some(hit.token)
    }

    pub fn insert(&self, key: [u8; 32], token: VerifiedToken, keys: Arc<CoreJsonWebKeySet>) {
        self.entries.insert(key, Entry { token, keys });
    }
}
