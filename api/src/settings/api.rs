//! The API's limits and browser-facing options.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::playground::{AssetSource, Playground};

/// The API's limits and browser-facing options.
#[derive(Debug, Clone, Args)]
pub struct ApiSettings {
    /// Largest page a client may ask for (`first`).
    #[arg(long, env = "ROWGUARD_MAX_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_page_size: i32,

    /// Deepest query accepted.
    #[arg(long, env = "ROWGUARD_MAX_DEPTH", default_value_t = 12, value_parser = clap::value_parser!(u64).range(2..=100))]
    pub max_depth: u64,

    /// Highest cost accepted: every field that returns records counts once per record it can
    /// return (lists by their `first`, nested lists multiplied), fragments expanded.
    #[arg(long, env = "ROWGUARD_MAX_COMPLEXITY", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub max_complexity: u64,

    /// Most field selections in one operation, fragments expanded where they are spread.
    #[arg(long, env = "ROWGUARD_MAX_FIELDS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_fields: u64,

    /// Most aliases accepted in one operation, fragments expanded (alias bombs).
    #[arg(long, env = "ROWGUARD_MAX_ALIASES", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub max_aliases: u64,

    /// Most root fields accepted in one operation, fragments expanded.
    #[arg(long, env = "ROWGUARD_MAX_ROOT_FIELDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_root_fields: u64,

    /// Most SQL statements the resolvers of one request may run; past it the request is
    /// stopped and rolled back.
    #[arg(long, env = "ROWGUARD_MAX_STATEMENTS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_statements: u64,

    /// Largest answer in bytes (row data loaded for it is held to the same bound).
    #[arg(long, env = "ROWGUARD_MAX_RESPONSE_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_response_bytes: u64,

    /// Longest a request may take, in milliseconds (at most 5 minutes); then its transaction is
    /// cancelled and the caller gets SERVICE_UNAVAILABLE. No statement may run longer either.
    /// The audit trail's emergency split counts on no request running longer (migration 0016).
    #[arg(long, env = "ROWGUARD_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=300_000))]
    pub request_timeout_ms: u64,

    /// Longest a connection may wait, in seconds, for a complete request head: from when it
    /// opens, and from each answer while it is kept alive. Then it is closed, so clients that
    /// stay silent or trickle headers do not hold sockets. Keep it above the idle timeout of a
    /// load balancer in front (AWS ALB: 60 s), which would otherwise reuse closed connections.
    #[arg(long, env = "ROWGUARD_REQUEST_HEAD_TIMEOUT_SECS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_head_timeout_secs: u64,

    /// Most client connections held open at once. Past it, new connections wait in the
    /// listen queue until one closes, so clients can never take the file descriptors the
    /// gateway needs for its database pool, the audit sealer and its checkpoint files. Unset:
    /// the process's open-file limit (raised to its hard limit at start) minus what the gateway
    /// keeps for itself; a larger value is lowered to that.
    #[arg(long, env = "ROWGUARD_MAX_CLIENT_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_client_connections: Option<u32>,

    /// The trusted-documents manifest (Apollo's persisted-query manifest format): the
    /// operations a reviewed front end may send. Reloaded when the file changes and on SIGHUP.
    #[arg(long, env = "ROWGUARD_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<std::path::PathBuf>,

    /// What happens to an operation that is not in the manifest: `enforce` (refused before any
    /// database work), `log` (run, logged and counted: the shadow mode to start with) or `off`.
    /// Only consulted when `ROWGUARD_TRUSTED_DOCUMENTS` is set.
    #[arg(long, env = "ROWGUARD_TRUSTED_DOCUMENTS_MODE", value_enum, default_value_t = TrustMode::Enforce)]
    pub trusted_documents_mode: TrustMode,

    /// Automatic persisted queries remembered (least recently used first out).
    #[arg(long, env = "ROWGUARD_PERSISTED_QUERY_CACHE_SIZE", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub persisted_query_cache_size: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ROWGUARD_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Browser origins allowed to call the API, comma-separated (CORS), e.g.
    /// `https://app.example-hospital.org`.
    #[arg(long, env = "ROWGUARD_CORS_ORIGINS", value_delimiter = ',', value_parser = browser_origin)]
    pub cors_origins: Vec<String>,

    /// Serve the schema to introspection queries.
    #[arg(long, env = "ROWGUARD_INTROSPECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub introspection: bool,

    /// Append every PHI access to the audit trail (HIPAA §164.312(b)). Turn off only to
    /// measure its cost.
    #[arg(long, env = "ROWGUARD_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit: bool,

    /// Length of a break-glass grant, in seconds (at most 24 hours).
    #[arg(long, env = "ROWGUARD_EMERGENCY_ACCESS_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub emergency_access_secs: u64,

    /// Serve the GraphiQL playground to browsers at GET /graphql.
    #[arg(long, env = "ROWGUARD_PLAYGROUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub playground: bool,

    /// Where browsers load the playground's GraphiQL and React files from: `embedded` (served
    /// by Rowguard from its own binary; works air-gapped) or `cdn` (the same pinned versions from
    /// unpkg, with Subresource Integrity).
    #[arg(long, env = "ROWGUARD_PLAYGROUND_ASSETS", value_enum, default_value_t = PlaygroundAssets::Embedded)]
    pub playground_assets: PlaygroundAssets,
}

/// What happens to an operation that is not in the trusted-documents manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrustMode {
    /// The manifest is not consulted.
    Off,
    /// Unknown operations run, and are logged and counted.
    Log,
    /// Unknown operations are refused.
    Enforce,
}

/// Where the playground's pinned files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlaygroundAssets {
    /// From Rowguard itself (`local` and `auto`, the names of earlier versions, mean this too).
    #[value(alias = "local", alias = "auto")]
    Embedded,
    /// From unpkg.com.
    Cdn,
}

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub max_page_size: i32,
    pub max_depth: usize,
    /// Most field selections, fragments expanded.
    pub max_fields: usize,
    /// Highest cost (see `graphql::shape::Shape::cost`).
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_body_bytes: usize,
    /// Most SQL statements resolvers may run for one request.
    pub max_statements: u64,
    /// Largest answer (and row data loaded for it), in bytes.
    pub max_response_bytes: usize,
    /// Longest a request may take, start to finish.
    pub request_timeout: std::time::Duration,
    pub persisted_query_cache_size: usize,
    pub introspection: bool,
    /// Append every PHI access to the audit trail (HIPAA §164.312(b)); on by default.
    pub audit: bool,
    /// Length of a break-glass grant.
    pub emergency_access_secs: u64,
    /// Unsealed audit events older than this are reported by `/readyz`.
    pub seal_lag_alert: std::time::Duration,
}

impl ApiLimits {
    /// Most JSON values a request's variables and extensions may hold together, counted before
    /// they are read: ten times the values an operation may pass its arguments (the request
    /// policy's bound), so no operation within its limits meets it.
    pub fn max_request_json_values(&self) -> usize {
        self.max_fields.saturating_mul(40).max(10_000)
    }
}

impl Default for ApiLimits {
    /// The limits of the default settings.
    fn default() -> Self {
        ApiSettings::default().limits()
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        super::defaults()
    }
}

impl ApiSettings {
    /// The trusted-documents mode in force: `off` without a manifest.
    pub fn trust_mode(&self) -> TrustMode {
        if self.trusted_documents.is_some() {
            self.trusted_documents_mode
        } else {
            TrustMode::Off
        }
    }

    /// The limits every request is held to.
    pub fn limits(&self) -> ApiLimits {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        ApiLimits {
            max_page_size: self.max_page_size,
            max_depth: size(self.max_depth),
            max_complexity: size(self.max_complexity),
            max_fields: size(self.max_fields),
            max_aliases: size(self.max_aliases),
            max_root_fields: size(self.max_root_fields),
            max_body_bytes: size(self.max_body_bytes),
            max_statements: self.max_statements,
            max_response_bytes: size(self.max_response_bytes),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            persisted_query_cache_size: size(self.persisted_query_cache_size),
            introspection: self.introspection,
            audit: self.audit,
            emergency_access_secs: self.emergency_access_secs,
            seal_lag_alert: Duration::from_secs(5),
        }
    }

    /// The playground as configured.
    pub fn playground(&self) -> Option<Playground> {
        self.playground.then(|| {
            Playground::new(match self.playground_assets {
                PlaygroundAssets::Embedded => AssetSource::Embedded,
                PlaygroundAssets::Cdn => AssetSource::Cdn,
            })
        })
    }
}

/// One entry of `ROWGUARD_CORS_ORIGINS`: an origin exactly as a browser sends it
/// (`scheme://host[:port]`, lower case, no path). Credentials are allowed, so neither `*` (which
/// the CORS layer cannot combine with them) nor `null` (what any sandboxed frame or local file
/// sends) may be listed, and an entry a browser could never send is refused rather than
/// silently dropped.
pub fn browser_origin(entry: &str) -> Result<String, String> {
    let refuse = |why: &str| {
        Err(format!(
            "ROWGUARD_CORS_ORIGINS entry {entry:?}: {why}; write each origin as a browser sends it, e.g. https://app.example-hospital.org"
        ))
    };
    let entry = entry.trim();
    // An empty entry (an empty variable, a trailing comma from a template) allows nothing.
    if entry.is_empty() {
        return Ok(String::new());
    }
    if entry == "*" || entry.eq_ignore_ascii_case("null") {
        return refuse(
            "a wildcard or null origin would let any site or sandboxed frame call the API with credentials",
        );
    }
    let Ok(url) = openidconnect::url::Url::parse(entry) else {
        return refuse("not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return refuse("only http and https origins exist for browsers");
    }
    let origin = url.origin().ascii_serialization();
    if origin != entry {
        return refuse(&format!(
            "not an origin (no path, user, query or trailing slash; lower case); did you mean {origin:?}?"
        ));
    }
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::browser_origin;

    #[test]
    fn a_cors_origin_must_be_written_as_a_browser_sends_it() {
        for good in [
            "https://app.example-hospital.org",
            "http://localhost:5173",
            "https://app.example.org:8443",
        ] {
            assert_eq!(browser_origin(good).as_deref(), Ok(good));
        }
        assert_eq!(
            browser_origin(" ").as_deref(),
            Ok(""),
            "an empty entry allows nothing"
        );
        for bad in [
            "*",
            "null",
            "NULL",
            "https://app.example.org/",
            "https://App.example.org",
            "https://app.example.org/path",
            "https://user@app.example.org",
            "https://app.example.org:443",
            "ftp://app.example.org",
            "app.example.org",
        ] {
            assert!(browser_origin(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
