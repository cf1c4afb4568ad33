//! The issuer's signing keys: discovered over HTTP, cached, refreshed on a schedule and, at most
//! once per cooldown, when a token names a key we do not know.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::{IssuerUrl, reqwest};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::ReasonLabel;
use crate::settings::OidcSettings;

/// Why keys could not be (re)loaded. Logged for operators; never shown to callers.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("ROWGUARD_OIDC_ISSUER {0:?} is not a valid URL")]
    InvalidIssuer(String),
    #[error("could not build the HTTP client for the issuer: {0}")]
    Client(String),
    #[error("discovery or JWKS fetch from the issuer failed: {0}")]
    Fetch(String),
}

/// The current key set, replaced whole on every successful fetch.
#[derive(Debug)]
pub struct KeyStore {
    issuer: IssuerUrl,
    http: reqwest::Client,
    cooldown: Duration,
    keys: RwLock<Option<Arc<CoreJsonWebKeySet>>>,
    fetches: Family<ReasonLabel, Counter>,
    // Serialises fetches and remembers when the last one started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl KeyStore {
    pub fn new(
        settings: &OidcSettings,
        fetches: Family<ReasonLabel, Counter>,
    ) -> Result<Self, KeyLoadError> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|_| KeyLoadError::InvalidIssuer(settings.issuer.clone()))?;
        let http = reqwest::Client::builder()
            // Following redirects would let a compromised discovery document point us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.http_timeout())
            .build()
            .map_err(|e| KeyLoadError::Client(e.to_string()))?;
        Ok(Self {
            issuer,
            http,
            cooldown: settings.jwks_cooldown(),
            keys: RwLock::new(None),
            fetches,
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &IssuerUrl {
        &self.issuer
    }

    /// The cached key set, if one was ever loaded.
    pub fn current(&self) -> Option<Arc<CoreJsonWebKeySet>> {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Fetches discovery and the JWKS now, replacing the cached set on success. On failure the
    /// previous keys stay in use: an issuer outage must not stop verification with known keys.
    pub async fn refresh(&self) -> Result<(), KeyLoadError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch().await
    }

    /// Refreshes unless another fetch started within the cooldown. Returns whether a fetch ran
    /// and succeeded, i.e. whether it is worth looking for the key again.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "refreshing keys for an unknown key id failed");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<(), KeyLoadError> {
        // Discovery also validates that the document's `issuer` equals ours exactly.
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await;
        let outcome = if metadata.is_ok() { "ok" } else { "failed" };
        self.fetches
            .get_or_create(&ReasonLabel {
                reason: outcome.into(),
            })
            .inc();
        let metadata = metadata.map_err(|e| KeyLoadError::Fetch(error_chain(&e)))?;
        // The issuer's own URL was checked at start; the key set's comes from its discovery
        // document, and keys fetched in the clear could be anybody's.
        if !crate::settings::oidc::is_protected(metadata.jwks_uri().url()) {
            return Err(KeyLoadError::Fetch(
                "the provider's jwks_uri is not https (plain http only to a loopback IP): its keys are not used"
                    .into(),
            ));
        }
        let keys = metadata.jwks().clone();
        let count = keys.keys().len();
        if let Ok(mut slot) = self.keys.write() {
            // An unchanged set keeps its `Arc`, so the verified-token cache (which drops a
            // token verified against any other set) survives the routine refresh.
            if slot.as_ref().is_none_or(|old| old.keys() != keys.keys()) {
                *slot = Some(Arc::new(keys));
            }
        }
        tracing::info!(issuer = %self.issuer.as_str(), keys = count, "loaded issuer signing keys");
        Ok(())
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Keeps keys fresh for the life of the process: retries quickly until the first load succeeds
/// (the server starts even when the issuer is down), then refreshes on the configured interval.
pub async fn keep_fresh(store: Arc<KeyStore>, refresh_every: Duration) {
    let mut retry = Duration::from_millis(250);
    loop {
        match store.refresh().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "issuer keys not loaded yet");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
    loop {
        tokio::time::sleep(refresh_every).await;
        if let Err(e) = store.refresh().await {
            tracing::warn!(error = %e, "routine key refresh failed; keeping the cached keys");
        }
    }
}
