//! The issuer's signing keys: discovered over HTTP, cached, refreshed on a schedule and, at most
//! once per cooldown, when a token names a key we do not know.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::{HttpRequest, HttpResponse, IssuerUrl, reqwest};

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

    /// Refreshes unless another fetch started within the cooldown. Returns whether it is worth
    /// looking for the key again: a fetch ran and succeeded, or the key set differs from `seen`
    /// (the one the caller looked in) because a fetch finished while this one waited for it.
    pub async fn refresh_for_unknown_key(&self, seen: Option<&Arc<CoreJsonWebKeySet>>) -> bool {
        let mut last = self.last_fetch.lock().await;
        // When a provider rotates, every request with a new token arrives at once: one fetches,
        // the others wait on the lock, and then find the cooldown running. The set that fetch
        // loaded may hold their key (before, they were refused 401 with the key already loaded).
        let now = self.current();
        let changed = match (now.as_ref(), seen) {
            (Some(now), Some(seen)) => !Arc::ptr_eq(now, seen),
            (now, seen) => now.is_some() != seen.is_some(),
        };
        if changed {
            return true;
        }
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
        // The client is a handle: each call owns one, so its future borrows nothing.
        let http = self.http.clone();
        let bounded = move |request| bounded_call(http.clone(), request);
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &bounded).await;
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

/// The largest discovery document or key set read from the issuer. Both are a few kilobytes;
/// read whole, a gigabyte-long document (a broken or hostile issuer, or anything answering on
/// its address) took gigabytes of memory, at start and again at every refresh.
const LARGEST_ISSUER_DOCUMENT: usize = 1 << 20;

/// One request to the issuer, its answer read up to [`LARGEST_ISSUER_DOCUMENT`].
async fn bounded_call(
    http: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, std::io::Error> {
    let too_large = || {
        std::io::Error::other(format!(
            "the issuer's answer is larger than {LARGEST_ISSUER_DOCUMENT} bytes"
        ))
    };
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    if response
        .content_length()
        .is_some_and(|length| length > LARGEST_ISSUER_DOCUMENT as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(std::io::Error::other)? {
        if bytes.len() + chunk.len() > LARGEST_ISSUER_DOCUMENT {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut answer = HttpResponse::new(bytes);
    *answer.status_mut() = response.status();
    *answer.headers_mut() = std::mem::take(response.headers_mut());
    Ok(answer)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `body` once per connection at a loopback address, returning its URL.
    async fn serve(body: Vec<u8>, with_length: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = socket.read(&mut head).await;
                    let header = if with_length {
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                    } else {
                        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned()
                    };
                    let _ = socket.write_all(header.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                });
            }
        });
        url
    }

    fn get(url: &str) -> HttpRequest {
        let mut request = HttpRequest::new(Vec::new());
        *request.uri_mut() = url.parse().expect("uri");
        request
    }

    #[tokio::test]
    async fn an_issuer_document_over_a_megabyte_is_refused_with_or_without_a_length() {
        let http = reqwest::Client::new();
        for with_length in [true, false] {
            let url = serve(vec![b' '; LARGEST_ISSUER_DOCUMENT + 1], with_length).await;
            let refused = bounded_call(http.clone(), get(&url)).await;
            assert!(
                refused.is_err_and(|e| e.to_string().contains("larger than")),
                "with_length: {with_length}"
            );
        }
        let url = serve(b"{}".to_vec(), true).await;
        let answer = bounded_call(http.clone(), get(&url))
            .await
            .expect("a small answer");
        assert_eq!(
            (answer.status().as_u16(), answer.body().as_slice()),
            (200, &b"{}"[..])
        );
    }
}
