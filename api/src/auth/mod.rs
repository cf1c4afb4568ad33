//! Authentication: a bearer token from the customer's OpenID Connect provider becomes a
//! [`Principal`], or the request is refused before any database work.

mod cache;
mod keys;
mod verify;

use std::sync::Arc;

use cache::VerifiedCache;
pub use keys::{KeyLoadError, KeyStore, keep_fresh};
pub use verify::VerifiedToken;
use verify::{Rejection, Rules};

use crate::metrics::SharedCounters;
use crate::principal::Principal;
use crate::settings::OidcSettings;

/// Why a request was not authenticated. Each maps to an HTTP status and a GraphQL error code
/// (see `crate::error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header: 401 with a bare `WWW-Authenticate: Bearer` challenge.
    Missing,
    /// The request carries credentials in a way we refuse (malformed header, token in the URL).
    InvalidRequest(&'static str),
    /// The token failed verification; the description is safe to show the caller.
    InvalidToken(&'static str),
    /// A valid token whose roles map to no app role.
    Forbidden,
    /// The issuer's keys have never been loaded, so nothing can be verified yet.
    KeysUnavailable,
}

/// Verifies bearer tokens against the configured issuer.
#[derive(Debug)]
pub struct Authenticator {
    keys: Arc<KeyStore>,
    rules: Rules,
    cache: VerifiedCache,
}

impl AuthError {
    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Forbidden => "forbidden",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl Authenticator {
    /// Builds the authenticator; keys are fetched by [`keep_fresh`], not here, so the server
    /// starts even while the issuer is down.
    pub fn new(settings: &OidcSettings, counters: &SharedCounters) -> Result<Self, KeyLoadError> {
        let keys = Arc::new(KeyStore::new(settings, counters.jwks_fetches.clone())?);
        let rules = Rules::new(settings, keys.issuer().clone());
        if settings.client_ids.is_empty() {
            // Said once at start-up: an audience several applications share (Okta's
            // `api://default`) then lets any of them replay a user's token here.
            tracing::warn!(
                "ROWGUARD_OIDC_CLIENT_IDS is not set: a token is accepted from any client of the issuer whose audience matches"
            );
        }
        Ok(Self {
            keys,
            rules,
            cache: VerifiedCache::new(settings.token_cache_size),
        })
    }

    pub fn key_store(&self) -> Arc<KeyStore> {
        self.keys.clone()
    }

    /// True once signing keys are cached (readiness).
    pub fn is_ready(&self) -> bool {
        self.keys.current().is_some()
    }

    /// Verifies `token` and picks the caller's app role.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let verified = self.verify(token).await?;
        let Some(role) = verified.roles.first().copied() else {
            tracing::info!(
                reason = "no role claim value maps to an app role",
                "request forbidden"
            );
            return Err(AuthError::Forbidden);
        };
        Ok(Principal {
            issuer: verified.issuer,
            subject: verified.subject,
            role,
            client_id: verified.client_id,
            expires_at: verified.expires_at,
        })
    }

    async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let key = VerifiedCache::key(token);
        let current = self.keys.current();
        let cached = self.cache.get(&key, current.as_ref());
        // For the trace (the caller's `verify_token` span): whether verification was needed.
        tracing::Span::current().record(
            "rowguard.token.cache",
            if cached.is_some() { "hit" } else { "miss" },
        );
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let keys = match current {
            Some(keys) => keys,
            // Not loaded yet: try now (bounded by the cooldown) rather than only waiting for the
            // background task.
            None if self.keys.refresh_for_unknown_key(None).await => {
                self.keys.current().ok_or(AuthError::KeysUnavailable)?
            }
            None => return Err(AuthError::KeysUnavailable),
        };
        let (verified, keys) = match self.rules.verify(token, &keys) {
            Err(Rejection::UnknownKey) if self.keys.refresh_for_unknown_key(Some(&keys)).await => {
                let keys = self.keys.current().ok_or(AuthError::KeysUnavailable)?;
                (self.rules.verify(token, &keys), keys)
            }
            other => (other, keys),
        };
        match verified {
            Ok(v) => {
                self.cache.insert(key, v.clone(), keys);
                Ok(v)
            }
            Err(Rejection::UnknownKey) => {
                tracing::info!(reason = %Rejection::UnknownKey, "token rejected");
                Err(AuthError::InvalidToken(
                    "the token's signing key is not recognised",
                ))
            }
            Err(Rejection::Invalid(reason)) => {
                tracing::info!(reason = %reason.detail, "token rejected");
                Err(AuthError::InvalidToken(reason.client_message))
            }
        }
    }
}
