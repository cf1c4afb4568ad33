use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::principal::Principal;

/// Counts requests in flight per person (issuer and subject); refuses one more than the cap.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimiter {
    cap: u32,
    // Keyed by a digest of (issuer, subject), so subjects (sometimes e-mail addresses) are not
    // kept in memory in the clear.
    in_flight: Arc<Mutex<HashMap<[u8; 32], u32>>>,
}

/// One admitted request; dropping it frees the slot.
#[derive(Debug)]
pub struct InFlight {
    key: [u8; 32],
    limiter: ConcurrencyLimiter,
}

impl ConcurrencyLimiter {
    pub fn new(cap: u32) -> Self {
        Self {
            cap: cap.max(1),
            in_flight: Arc::default(),
        }
    }

    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// The key a person's requests share.
    pub fn key(principal: &Principal) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(principal.issuer.as_bytes());
        hasher.update([0]);
        hasher.update(principal.subject.as_bytes());
        hasher.finalize().into()
    }

    /// Admits one more request for `principal`, or `None` when they already have `cap` in flight.
    pub fn try_acquire(&self, principal: &Principal) -> Option<InFlight> {
        let key = Self::key(principal);
        let mut map = self.in_flight.lock().ok()?;
        let count = map.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(InFlight {
            key,
            limiter: self.clone(),
        })
    }

    /// Requests in flight for `principal`.
    pub fn in_flight(&self, principal: &Principal) -> u32 {
        self.in_flight
            .lock()
            .ok()
            .and_then(|m| m.get(&Self::key(principal)).copied())
            .unwrap_or(0)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut map) = self.limiter.in_flight.lock()
            && let Some(count) = map.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::AppRole;

    fn person(subject: &str) -> Principal {
        Principal {
            issuer: "https://idp".into(),
            subject: subject.into(),
            role: AppRole::Clinician,
            client_id: None,
            expires_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn each_person_gets_the_cap_and_a_slot_frees_on_drop() {
        let limiter = ConcurrencyLimiter::new(2);
        let alice = person("alice");
        let first = limiter.try_acquire(&alice).expect("1");
        let _second = limiter.try_acquire(&alice).expect("2");
        assert!(limiter.try_acquire(&alice).is_none());
        assert!(
            limiter.try_acquire(&person("bob")).is_some(),
            "bob is unaffected"
        );
        drop(first);
        assert!(limiter.try_acquire(&alice).is_some());
    }
}
