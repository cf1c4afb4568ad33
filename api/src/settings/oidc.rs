//! OpenID Connect: which issuer to trust, for which audiences and clients, and how its claims
//! map to Rowguard's application roles.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use openidconnect::core::CoreJwsSigningAlgorithm;

use crate::principal::AppRole;

pub const DEFAULT_ALGORITHMS: &str = "RS256,PS256,ES256,EdDSA";
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
pub const DEFAULT_MAX_TOKEN_AGE_SECS: u64 = 3600;
pub const DEFAULT_ROLES_CLAIM: &str = "roles";
pub const DEFAULT_ROLE_MAP: &str = "clinician=clinician,coordinator=coordinator,auditor=auditor";
pub const DEFAULT_TOKEN_TYPES: &str = "id,access";
pub const DEFAULT_JWKS_COOLDOWN_SECS: u64 = 30;
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 900;
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;

/// How bearer tokens are verified.
#[derive(Debug, Clone, Args)]
pub struct OidcSettings {
    /// Issuer URL, exactly as the tokens' `iss` claim spells it (trailing slash included);
    /// discovery is read from `<issuer>/.well-known/openid-configuration`.
    #[arg(long = "oidc-issuer", env = "ROWGUARD_OIDC_ISSUER")]
    pub issuer: String,

    /// Accepted audiences, comma-separated: the SPA's client id for ID tokens and/or the API's
    /// audience for RFC 9068 access tokens. A token must name at least one.
    #[arg(
        long = "oidc-audiences",
        env = "ROWGUARD_OIDC_AUDIENCES",
        value_delimiter = ',',
        value_parser = listed_value,
        required = true
    )]
    pub audiences: Vec<String>,

    /// OAuth clients whose tokens are accepted, comma-separated: `azp` (or, for an ID token
    /// issued to one client, its `aud`) for ID tokens, `client_id` for RFC 9068 access tokens
    /// (also `azp`, Okta's `cid` and Entra ID v1's `appid`). When set, a token from any other
    /// client is refused with 401, even if its audience matches. Set it whenever several apps
    /// share an audience (Okta's `api://default`).
    #[arg(
        long = "oidc-client-ids",
        env = "ROWGUARD_OIDC_CLIENT_IDS",
        value_delimiter = ',',
        value_parser = listed_value
    )]
    pub client_ids: Vec<String>,

    /// Scopes every token must carry (space-separated `scope` or a `scp` list), comma-separated,
    /// e.g. `rowguard.api`. ID tokens carry no scopes, so setting this accepts access tokens only.
    #[arg(
        long = "oidc-required-scopes",
        env = "ROWGUARD_OIDC_REQUIRED_SCOPES",
        value_delimiter = ',',
        value_parser = listed_value
    )]
    pub required_scopes: Vec<String>,

    /// Accepted signature algorithms. `none` and HMAC algorithms are always refused.
    #[arg(long = "oidc-algorithms", env = "ROWGUARD_OIDC_ALGORITHMS", value_delimiter = ',',
          default_value = DEFAULT_ALGORITHMS, value_parser = parse_algorithm)]
    pub algorithms: Vec<CoreJwsSigningAlgorithm>,

    /// Which token kinds are accepted: `id` (OpenID Connect ID tokens) and/or `access` (RFC 9068
    /// JWT access tokens, header `typ: at+jwt`).
    #[arg(long = "oidc-token-types", env = "ROWGUARD_OIDC_TOKEN_TYPES", value_delimiter = ',',
          default_value = DEFAULT_TOKEN_TYPES, value_parser = parse_token_kind)]
    pub token_types: Vec<TokenKind>,

    /// Allowed clock difference with the issuer, in seconds, for `exp`, `nbf` and `iat`.
    /// At most 300: a larger leeway would accept long-expired tokens.
    #[arg(long = "oidc-clock-skew-secs", env = "ROWGUARD_OIDC_CLOCK_SKEW_SECS", default_value_t = DEFAULT_CLOCK_SKEW_SECS,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub clock_skew_secs: u64,

    /// Longest accepted token lifetime (`exp - iat`), in seconds: short tokens keep sessions
    /// short (automatic logoff). At most a day.
    #[arg(long = "oidc-max-token-age-secs", env = "ROWGUARD_OIDC_MAX_TOKEN_AGE_SECS", default_value_t = DEFAULT_MAX_TOKEN_AGE_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_token_age_secs: u64,

    /// Dotted path of the claim that holds the person's roles, e.g. `roles`,
    /// `realm_access.roles` (Keycloak), `groups`, `cognito:groups`.
    #[arg(long = "oidc-roles-claim", env = "ROWGUARD_OIDC_ROLES_CLAIM", default_value = DEFAULT_ROLES_CLAIM)]
    pub roles_claim: String,

    /// `idp-value=app-role` pairs, comma-separated; app roles are clinician, coordinator, auditor.
    #[arg(long = "oidc-role-map", env = "ROWGUARD_OIDC_ROLE_MAP", default_value = DEFAULT_ROLE_MAP,
          value_parser = parse_role_map)]
    pub role_map: RoleMap,

    /// Minimum seconds between two JWKS fetches triggered by tokens with an unknown key id (at
    /// least 1: with none, every such token would fetch).
    #[arg(long = "oidc-jwks-cooldown-secs", env = "ROWGUARD_OIDC_JWKS_COOLDOWN_SECS", default_value_t = DEFAULT_JWKS_COOLDOWN_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub jwks_cooldown_secs: u64,

    /// Seconds between routine refreshes of discovery and keys (10 to 86,400: zero fetched in a
    /// tight loop).
    #[arg(long = "oidc-jwks-refresh-secs", env = "ROWGUARD_OIDC_JWKS_REFRESH_SECS", default_value_t = DEFAULT_JWKS_REFRESH_SECS,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub jwks_refresh_secs: u64,

    /// Timeout of each request to the issuer, in seconds (1 to 60).
    #[arg(long = "oidc-http-timeout-secs", env = "ROWGUARD_OIDC_HTTP_TIMEOUT_SECS", default_value_t = DEFAULT_HTTP_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub http_timeout_secs: u64,

    /// How many verified tokens to remember (never past their `exp`).
    #[arg(long = "oidc-token-cache-size", env = "ROWGUARD_OIDC_TOKEN_CACHE_SIZE", default_value_t = DEFAULT_TOKEN_CACHE_SIZE)]
    pub token_cache_size: usize,
}

impl OidcSettings {
    /// Settings for `issuer` and `audiences`, everything else at its default.
    pub fn new(issuer: impl Into<String>, audiences: &[&str]) -> Self {
        let issuer = issuer.into();
        let audiences = audiences.join(",");
        match super::from_args(&["--oidc-issuer", &issuer, "--oidc-audiences", &audiences]) {
            Ok(settings) => settings,
            Err(e) => panic!("OIDC settings for {issuer:?}: {e}"),
        }
    }

    /// Checks the issuer URL: HTTPS, or plain HTTP only to a loopback IP literal (a test or
    /// development provider on this machine). A host *name*, even `localhost` or one starting
    /// with `127.`, could be resolved elsewhere.
    pub fn check_issuer(&self) -> Result<(), String> {
        let issuer = self.issuer.trim();
        if issuer.is_empty() {
            return Err(
                "ROWGUARD_OIDC_ISSUER is required: the URL of your identity provider".into(),
            );
        }
        // Parsed as openidconnect will use it: the host is what the URL parser finds, not the
        // text after `//` (`http://[::1]@evil.example` is evil.example, with user info).
        let url = openidconnect::url::Url::parse(issuer)
            .map_err(|e| format!("ROWGUARD_OIDC_ISSUER {issuer:?} is not a URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_protected(&url) => {}
            "http" => {
                return Err(format!(
                    "ROWGUARD_OIDC_ISSUER {issuer:?} uses plain http: tokens and keys would cross the network \
                     unprotected. Use https (plain http is accepted only for a loopback IP address such as \
                     http://127.0.0.1:8081)"
                ));
            }
            _ => {
                return Err(format!(
                    "ROWGUARD_OIDC_ISSUER must be an https URL, not {issuer:?}"
                ));
            }
        }
        Ok(())
    }

    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_secs)
    }

    pub fn jwks_cooldown(&self) -> Duration {
        Duration::from_secs(self.jwks_cooldown_secs)
    }

    pub fn jwks_refresh(&self) -> Duration {
        Duration::from_secs(self.jwks_refresh_secs)
    }

    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_secs)
    }
}

/// The two kinds of JWT a client may present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An OpenID Connect ID token (no `typ`, or `typ: JWT`).
    Id,
    /// An RFC 9068 JWT access token (`typ: at+jwt`).
    Access,
}

/// Identity-provider role values and the app role each one grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap(pub BTreeMap<String, AppRole>);

impl RoleMap {
    pub fn get(&self, idp_value: &str) -> Option<AppRole> {
        self.0.get(idp_value).copied()
    }
}

/// One entry of a comma-separated list of names (audiences, client ids, scopes), trimmed. An
/// empty entry is refused rather than dropped: `ROWGUARD_OIDC_CLIENT_IDS=` left empty by a
/// deployment template must not quietly turn the client allow-list off, and `"spa,"` must not
/// accept an empty audience.
fn listed_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(
            "an empty entry: list at least one value, comma-separated, or leave the setting out"
                .into(),
        );
    }
    Ok(value.to_owned())
}

fn parse_algorithm(value: &str) -> Result<CoreJwsSigningAlgorithm, String> {
    use CoreJwsSigningAlgorithm as A;
    let alg = match value.trim() {
        "RS256" => A::RsaSsaPkcs1V15Sha256,
        "RS384" => A::RsaSsaPkcs1V15Sha384,
        "RS512" => A::RsaSsaPkcs1V15Sha512,
        "PS256" => A::RsaSsaPssSha256,
        "PS384" => A::RsaSsaPssSha384,
        "PS512" => A::RsaSsaPssSha512,
        "ES256" => A::EcdsaP256Sha256,
        "ES384" => A::EcdsaP384Sha384,
        "ES512" => A::EcdsaP521Sha512,
        "EdDSA" => A::EdDsa,
        "none" | "HS256" | "HS384" | "HS512" => {
            return Err(format!(
                "{value} is never accepted: unsigned and shared-secret tokens can be forged by clients"
            ));
        }
        other => return Err(format!("unknown signature algorithm {other:?}")),
    };
    Ok(alg)
}

fn parse_token_kind(value: &str) -> Result<TokenKind, String> {
    match value.trim() {
        "id" => Ok(TokenKind::Id),
        "access" => Ok(TokenKind::Access),
        other => Err(format!(
            "unknown token type {other:?} (expected id or access)"
        )),
    }
}

/// Whether keys fetched from `url` arrive protected: over https, or over plain http only from
/// a loopback IP literal with no user info (a host *name*, even `localhost`, could be resolved
/// elsewhere; the host is what the URL parser finds, not the text after `//`).
pub fn is_protected(url: &openidconnect::url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => {
            let loopback = match url.host() {
                Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
                _ => false,
            };
            loopback && url.username().is_empty() && url.password().is_none()
        }
        _ => false,
    }
}

fn parse_role_map(value: &str) -> Result<RoleMap, String> {
    let mut map = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (idp, app) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not an idp-value=app-role pair"))?;
        let role = AppRole::ALL
            .into_iter()
            .find(|r| r.as_str() == app.trim())
            .ok_or_else(|| {
                format!("{app:?} is not an app role (expected clinician, coordinator or auditor)")
            })?;
        if map.insert(idp.trim().to_owned(), role).is_some() {
            // Read as "the last one wins", a second entry would silently change what an
            // earlier line of the configuration grants.
            return Err(format!("{:?} is mapped more than once", idp.trim()));
        }
    }
    if map.is_empty() {
        return Err("the role map is empty: nobody could be granted a role".into());
    }
    Ok(RoleMap(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_map_parses_pairs() {
        let map = parse_role_map("doctor=clinician, care-coordinator=coordinator").expect("valid");
        assert_eq!(map.get("doctor"), Some(AppRole::Clinician));
        assert_eq!(map.get("care-coordinator"), Some(AppRole::Coordinator));
        assert_eq!(map.get("nurse"), None);
    }

    #[test]
    fn a_role_map_naming_one_value_twice_is_refused() {
        let refused = parse_role_map("admin=coordinator,doctor=clinician,admin=clinician");
        assert!(refused.is_err_and(|e| e.contains("\"admin\" is mapped more than once")));
    }

    #[test]
    fn role_map_rejects_unknown_app_roles() {
        assert!(parse_role_map("doctor=admin").is_err());
        assert!(parse_role_map("doctor").is_err());
        assert!(parse_role_map("").is_err());
    }

    fn parsed(args: &[&str]) -> Result<OidcSettings, clap::Error> {
        let mut all = vec![
            "--oidc-issuer",
            "https://idp.example",
            "--oidc-audiences",
            "spa",
        ];
        all.extend_from_slice(args);
        super::super::from_args(&all)
    }

    #[test]
    fn an_empty_client_list_is_refused_not_read_as_no_allow_list() {
        for empty in ["", " ", "spa,", "a,,b"] {
            assert!(
                parsed(&["--oidc-client-ids", empty]).is_err(),
                "{empty:?} accepted"
            );
            assert!(
                parsed(&["--oidc-required-scopes", empty]).is_err(),
                "{empty:?} accepted"
            );
        }
        let listed = parsed(&["--oidc-client-ids", " spa , web"]).expect("valid");
        assert_eq!(listed.client_ids, ["spa", "web"]);
        let audiences: OidcSettings = super::super::from_args(&[
            "--oidc-issuer",
            "https://idp.example",
            "--oidc-audiences",
            "spa, api",
        ])
        .expect("valid");
        assert_eq!(audiences.audiences, ["spa", "api"], "trimmed");
    }

    #[test]
    fn the_clock_leeway_and_token_age_are_bounded() {
        assert!(parsed(&["--oidc-clock-skew-secs", "301"]).is_err());
        assert!(parsed(&["--oidc-clock-skew-secs", "10000000000000"]).is_err());
        assert!(parsed(&["--oidc-clock-skew-secs", "300"]).is_ok());
        assert!(parsed(&["--oidc-max-token-age-secs", "0"]).is_err());
        assert!(parsed(&["--oidc-max-token-age-secs", "86401"]).is_err());
    }

    #[test]
    fn key_refreshes_and_issuer_timeouts_are_bounded() {
        // A review: a refresh of 0 fetched discovery and keys 2,757 times in 10 s; a cooldown
        // of 0 fetched once per token with an unknown key; a timeout of 0 never loaded keys.
        for (flag, refused, accepted) in [
            ("--oidc-jwks-refresh-secs", ["0", "9", "86401"], "10"),
            ("--oidc-jwks-cooldown-secs", ["0", "3601", "-1"], "1"),
            ("--oidc-http-timeout-secs", ["0", "61", "-1"], "60"),
        ] {
            for value in refused {
                assert!(parsed(&[flag, value]).is_err(), "{flag} {value}");
            }
            assert!(parsed(&[flag, accepted]).is_ok(), "{flag} {accepted}");
        }
    }

    #[test]
    fn unsigned_and_hmac_algorithms_are_refused() {
        for alg in ["none", "HS256", "HS384", "HS512", "XX1"] {
            assert!(parse_algorithm(alg).is_err(), "{alg} accepted");
        }
        assert!(parse_algorithm("ES256").is_ok());
    }
}
