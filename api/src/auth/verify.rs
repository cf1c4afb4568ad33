//! Turns a bearer token into verified claims. Signature, issuer and expiry checks are
//! openidconnect's; this module adds what RFC 9068 access tokens and a gateway need on top:
//! choosing ID-token or access-token rules from the `typ` header, `nbf`, a maximum lifetime,
//! audience lists, clock skew and the roles claim.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenClaims, IssuerUrl,
    JsonWebTokenType, SignatureVerificationError,
};
use serde::Deserialize;
use serde_json::Value;

use crate::principal::AppRole;
use crate::settings::{OidcSettings, TokenKind};

/// Claims beyond the standard ones, kept whole so the roles claim can be any path.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ExtraClaims(HashMap<String, Value>);

impl AdditionalClaims for ExtraClaims {}

type Token = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// What a verified token says about the caller.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: String,
    /// The app roles the token's role values map to, in precedence order.
    pub roles: Vec<AppRole>,
    /// The OAuth client the token was issued to (`azp`, or `client_id` for access tokens).
    pub client_id: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused. `client_message` goes to the caller (RFC 6750
/// `error_description`); `Display` is the operator's version for the log, never containing the
/// token itself.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Invalid(RejectReason),
    /// The token names a signing key the issuer does not (or no longer) publish.
    #[error("no published key matches the token's key id and algorithm")]
    UnknownKey,
}

#[derive(Debug)]
pub struct RejectReason {
    pub client_message: &'static str,
    pub detail: String,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.client_message, self.detail)
    }
}

fn reject(client_message: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection::Invalid(RejectReason {
        client_message,
        detail: detail.into(),
    })
}

/// The verification rules derived from settings, built once.
#[derive(Debug, Clone)]
pub struct Rules {
    issuer: IssuerUrl,
    audiences: Vec<String>,
    client_ids: Vec<String>,
    required_scopes: Vec<String>,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    accept_id: bool,
    accept_access: bool,
    skew: TimeDelta,
    max_age: TimeDelta,
    roles_claim: Vec<String>,
    role_map: crate::settings::RoleMap,
}

impl Rules {
    pub fn new(settings: &OidcSettings, issuer: IssuerUrl) -> Self {
        let secs = |d: Duration| {
            TimeDelta::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2_000))
        };
        Self {
            issuer,
            audiences: settings.audiences.clone(),
            client_ids: non_empty(&settings.client_ids),
            required_scopes: non_empty(&settings.required_scopes),
            algorithms: settings.algorithms.clone(),
            accept_id: settings.token_types.contains(&TokenKind::Id),
            accept_access: settings.token_types.contains(&TokenKind::Access),
            skew: secs(settings.clock_skew()),
            max_age: secs(Duration::from_secs(settings.max_token_age_secs)),
            roles_claim: settings.roles_claim.split('.').map(str::to_owned).collect(),
            role_map: settings.role_map.clone(),
        }
    }

    /// Verifies `token` against `keys`.
    pub fn verify(
        &self,
        token: &str,
        keys: &CoreJsonWebKeySet,
    ) -> Result<VerifiedToken, Rejection> {
        let kind = self.kind_of(token)?;
        let parsed: Token = token.parse().map_err(|_| {
            // The parser's message quotes the offending claim value: text of the sender's choice,
            // unverified, so only the category is logged.
            reject(
                "the token is not a well-formed JWT",
                "unparseable JWT: its header or claims do not decode",
            )
        })?;

        let verifier = self.verifier(kind, keys.clone());
        // Fail fast (and tell the caller to refresh keys) when no published key fits.
        match parsed.signing_key(&verifier) {
            Ok(_) => {}
            Err(SignatureVerificationError::NoMatchingKey) => return Err(Rejection::UnknownKey),
            Err(e) => return Err(signature_rejection(e)),
        }
        // ID tokens presented to an API carry no nonce we issued; replay is bounded by `exp`.
        let claims = parsed
            .into_claims(&verifier, |_: Option<&openidconnect::Nonce>| Ok(()))
            .map_err(claims_rejection)?;
        self.check_claims(kind, &claims)
    }

    /// Routes by the `typ` header: RFC 9068 requires access tokens to say `at+jwt`, and only a
    /// token that says so is checked as one. Reading the header is not trusting it: the same
    /// verification follows either way.
    fn kind_of(&self, token: &str) -> Result<TokenKind, Rejection> {
        let segments: Vec<&str> = token.split('.').collect();
        if segments.len() != 3 {
            return Err(reject(
                "opaque tokens are not accepted; send a signed JWT (an ID token or an RFC 9068 access token)",
                format!("token has {} dot-separated segments, not 3", segments.len()),
            ));
        }
        // RFC 7515's compact form is canonical base64url. The JWT parser upstream ignores the
        // unused low bits of a segment's last character, so one issued token could be sent as
        // up to 16 strings, each accepted (and each its own verified-token cache entry, past any
        // deny-list keyed on the token's text). This engine refuses those bits.
        if segments[1..]
            .iter()
            .any(|segment| URL_SAFE_NO_PAD.decode(segment).is_err())
        {
            return Err(reject(
                "the token is not a well-formed JWT",
                "payload or signature is not canonical base64url",
            ));
        }
        #[derive(Deserialize)]
        struct Header {
            typ: Option<String>,
        }
        let header: Header = URL_SAFE_NO_PAD
            .decode(segments[0])
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                reject(
                    "the token is not a well-formed JWT",
                    "JOSE header is not base64url JSON",
                )
            })?;
        let typ = header.typ.map(|t| t.to_ascii_lowercase());
        let kind = match typ
            .as_deref()
            .map(|t| t.strip_prefix("application/").unwrap_or(t))
        {
            None | Some("jwt") => TokenKind::Id,
            Some("at+jwt") => TokenKind::Access,
            Some(_) => {
                return Err(reject(
                    "unsupported token type",
                    "typ is neither JWT nor at+jwt",
                ));
            }
        };
        match kind {
            TokenKind::Id if !self.accept_id => Err(reject(
                "ID tokens are not accepted here; send an RFC 9068 access token",
                "ID token presented but ROWGUARD_OIDC_TOKEN_TYPES excludes `id`",
            )),
            TokenKind::Access if !self.accept_access => Err(reject(
                "access tokens are not accepted here; send an ID token",
                "access token presented but ROWGUARD_OIDC_TOKEN_TYPES excludes `access`",
            )),
            kind => Ok(kind),
        }
    }

    fn verifier(&self, kind: TokenKind, keys: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
        let skew = self.skew;
        let types = match kind {
            TokenKind::Id => vec!["application/jwt", "application/jose"],
            TokenKind::Access => vec!["application/at+jwt"],
        };
        // The client id is unused: audiences are checked below against the whole accepted list.
        CoreIdTokenVerifier::new_public_client(
            ClientId::new(String::new()),
            self.issuer.clone(),
            keys,
        )
        .require_audience_match(false)
        .set_allowed_algs(self.algorithms.iter().cloned())
        .set_allowed_jose_types(
            types
                .into_iter()
                .filter_map(|t| JsonWebTokenType::new(t.to_owned()).normalize().ok()),
        )
        // openidconnect compares `exp` with this clock; running it `skew` behind tolerates an
        // issuer whose clock is ahead of ours by up to `skew`.
        .set_time_fn(move || Utc::now() - skew)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > Utc::now() + skew {
                // openidconnect reports this as `Expired`; the marker tells the two apart.
                Err(ISSUED_IN_THE_FUTURE.to_owned())
            } else {
                Ok(())
            }
        })
    }

    fn check_claims(
        &self,
        kind: TokenKind,
        claims: &IdTokenClaims<ExtraClaims, CoreGenderClaim>,
    ) -> Result<VerifiedToken, Rejection> {
        let audiences: Vec<&str> = claims.audiences().iter().map(|a| a.as_str()).collect();
        if !audiences
            .iter()
            .any(|a| self.audiences.iter().any(|ok| ok == a))
        {
            return Err(reject(
                "the token was issued for another audience",
                format!(
                    "aud {audiences:?} names none of ROWGUARD_OIDC_AUDIENCES {:?}",
                    self.audiences
                ),
            ));
        }
        let now = Utc::now();
        let extra = &claims.additional_claims().0;
        if let Some(nbf) = extra.get("nbf") {
            let nbf = nbf
                .as_i64()
                .and_then(|s| DateTime::from_timestamp(s, 0))
                .ok_or_else(|| {
                    reject(
                        "the token is not a well-formed JWT",
                        "nbf is not a timestamp",
                    )
                })?;
            if nbf > now + self.skew {
                return Err(reject(
                    "the token is not valid yet",
                    format!("nbf {nbf} is after now {now} plus skew"),
                ));
            }
        }
        // A sender-constrained token (RFC 9449 DPoP, RFC 8705 mutual TLS) may only be used with
        // a proof of its key, which a bearer request does not carry and Rowguard does not check:
        // accepted as a bearer token, a stolen one would work here as if it were not bound.
        if extra.contains_key("cnf") {
            return Err(reject(
                "the token is bound to a key (cnf) and this server accepts bearer tokens only",
                "the token carries a cnf (confirmation) claim",
            ));
        }
        let lifetime = claims.expiration() - claims.issue_time();
        if lifetime > self.max_age {
            return Err(reject(
                "the token's lifetime is longer than this server accepts",
                format!(
                    "exp - iat = {}s exceeds ROWGUARD_OIDC_MAX_TOKEN_AGE_SECS = {}s",
                    lifetime.num_seconds(),
                    self.max_age.num_seconds()
                ),
            ));
        }
        let subject = claims.subject().as_str();
        if subject.is_empty() {
            return Err(reject("the token has no subject", "sub is empty"));
        }
        // PostgreSQL cannot hold or compare a NUL; refused here, it is an unusable token (401)
        // rather than a refused value once the request's transaction has begun.
        if subject.contains('\0') {
            return Err(reject(
                "the token's subject is not usable",
                "sub contains a NUL character",
            ));
        }
        let client_id = client_of(kind, claims, &audiences);
        if !self.client_ids.is_empty()
            && !client_id
                .as_deref()
                .is_some_and(|c| self.client_ids.iter().any(|ok| ok == c))
        {
            return Err(reject(
                "the token was issued to another application",
                format!(
                    "client {client_id:?} is not in ROWGUARD_OIDC_CLIENT_IDS {:?}",
                    self.client_ids
                ),
            ));
        }
        if !self.required_scopes.is_empty() {
            let scopes = scopes(extra);
            if let Some(missing) = self
                .required_scopes
                .iter()
                .find(|s| !scopes.contains(&s.as_str()))
            {
                return Err(reject(
                    "the token lacks a scope this API requires",
                    format!("scope {missing:?} of ROWGUARD_OIDC_REQUIRED_SCOPES is missing"),
                ));
            }
        }

        Ok(VerifiedToken {
            issuer: claims.issuer().as_str().to_owned(),
            subject: subject.to_owned(),
            roles: self.roles(extra),
            client_id,
            expires_at: claims.expiration(),
        })
    }

    /// The app roles granted by the roles claim, in precedence order (clinician first).
    fn roles(&self, extra: &HashMap<String, Value>) -> Vec<AppRole> {
        // A claim whose name itself contains dots (Auth0's namespaced claims such as
        // `https://example.org/roles`) is taken whole; otherwise the dots are a path. A token
        // carrying both grants nothing: which one the provider meant cannot be told, and the
        // other may be a claim a user can set (a copied profile attribute).
        let whole = (self.roles_claim.len() > 1)
            .then(|| extra.get(&self.roles_claim.join(".")))
            .flatten();
        let nested = {
            let mut path = self.roles_claim.iter();
            path.next().and_then(|first| {
                path.try_fold(extra.get(first)?, |value, segment| value.get(segment))
            })
        };
        // The path counts as present as soon as its first claim is, whatever lies beneath: a
        // provider that sends `realm_access` without roles (a user with none) must not let a
        // claim named `realm_access.roles` speak for it.
        let path_present = self
            .roles_claim
            .first()
            .is_some_and(|first| extra.contains_key(first));
        let value = match (whole, nested) {
            (Some(_), _) if path_present => None,
            (whole, nested) => whole.or(nested),
        };
        let granted: Vec<AppRole> = match value {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|v| self.role_map.get(v))
                .collect(),
            // One value, matched whole: a single-valued attribute ("former coordinator", a job
            // title) is not a list of roles.
            Some(Value::String(s)) => self.role_map.get(s).into_iter().collect(),
            _ => Vec::new(),
        };
        AppRole::ALL
            .into_iter()
            .filter(|r| granted.contains(r))
            .collect()
    }
}

fn non_empty(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The OAuth client a token was issued to, as named by `client_id` (RFC 9068), `azp`
/// (Keycloak, Auth0, Entra ID v2, and ID tokens), `cid` (Okta) or `appid` (Entra ID v1),
/// whatever the token's `typ`: Okta's access tokens carry none and Entra ID v1's say `JWT`, so
/// they look like ID tokens. Only an ID token that names none of them, issued to a single
/// audience, is taken to be that audience's. A client claim that is not text, or two that
/// name different clients, leave the client unknown (refused where clients are listed) rather
/// than picking one.
fn client_of(
    kind: TokenKind,
    claims: &IdTokenClaims<ExtraClaims, CoreGenderClaim>,
    audiences: &[&str],
) -> Option<String> {
    let extra = &claims.additional_claims().0;
    let mut named: Vec<Option<&str>> = ["client_id", "cid", "appid"]
        .iter()
        .filter_map(|claim| extra.get(*claim).map(Value::as_str))
        .collect();
    if let Some(azp) = claims.authorized_party() {
        named.push(Some(azp.as_str()));
    }
    match named.split_first() {
        Some((first, rest)) => {
            let client = (*first)?;
            rest.iter()
                .all(|other| *other == Some(client))
                .then(|| client.to_owned())
        }
        None => match (kind, audiences) {
            (TokenKind::Id, [only]) => Some((*only).to_owned()),
            _ => None,
        },
    }
}

/// The scopes a token carries: `scope` (space-separated, RFC 9068) or `scp` (a list or a
/// string, Okta and Entra ID).
fn scopes(extra: &HashMap<String, Value>) -> Vec<&str> {
    let mut found = Vec::new();
    for claim in ["scope", "scp"] {
        match extra.get(claim) {
            // RFC 6749 §3.3: scopes are separated by U+0020 alone; `x\u{a0}rowguard.api` is one
            // (unknown) scope, not two.
            Some(Value::String(s)) => found.extend(s.split(' ').filter(|scope| !scope.is_empty())),
            Some(Value::Array(items)) => found.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    found
}

fn signature_rejection(e: SignatureVerificationError) -> Rejection {
    let message = match e {
        SignatureVerificationError::NoSignature => "unsigned tokens are not accepted",
        SignatureVerificationError::DisallowedAlg(_)
        | SignatureVerificationError::UnsupportedAlg(_) => {
            "the token's signature algorithm is not accepted"
        }
        _ => "the token's signature is invalid",
    };
    // Only the kind of failure: the messages can quote the unverified header.
    let detail = match e {
        SignatureVerificationError::NoSignature => "signature check failed: no signature",
        SignatureVerificationError::DisallowedAlg(_) => {
            "signature check failed: algorithm not in ROWGUARD_OIDC_ALGORITHMS"
        }
        SignatureVerificationError::UnsupportedAlg(_) => {
            "signature check failed: unsupported algorithm"
        }
        SignatureVerificationError::AmbiguousKeyId(_) => {
            "signature check failed: several published keys fit"
        }
        SignatureVerificationError::CryptoError(_) => {
            "signature check failed: the signature does not verify"
        }
        _ => "signature check failed",
    };
    reject(message, detail)
}

/// What the issue-time check answers for a token issued in the future.
const ISSUED_IN_THE_FUTURE: &str = "issued in the future";

fn claims_rejection(e: ClaimsVerificationError) -> Rejection {
    let message = match &e {
        ClaimsVerificationError::Expired(m) if m == ISSUED_IN_THE_FUTURE => {
            "the token was issued in the future (check the issuer's clock)"
        }
        ClaimsVerificationError::Expired(_) => "the token has expired",
        ClaimsVerificationError::InvalidIssuer(_) => "the token was issued by an untrusted issuer",
        ClaimsVerificationError::InvalidAudience(_) => "the token was issued for another audience",
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => {
            return Rejection::UnknownKey;
        }
        ClaimsVerificationError::SignatureVerification(_) => "the token's signature is invalid",
        ClaimsVerificationError::Unsupported(_) => "unsupported token type",
        _ => "the token is invalid",
    };
    // Only the kind of failure: openidconnect checks the issuer and audience before the
    // signature, and its messages quote the token's (so far unverified) values.
    let detail = match &e {
        ClaimsVerificationError::Expired(m) if m == ISSUED_IN_THE_FUTURE => {
            "claims check failed: iat in the future"
        }
        ClaimsVerificationError::Expired(_) => "claims check failed: expired",
        ClaimsVerificationError::InvalidIssuer(_) => {
            "claims check failed: iss is not ROWGUARD_OIDC_ISSUER (compare them byte for byte, trailing slash included)"
        }
        ClaimsVerificationError::InvalidAudience(_) => "claims check failed: audience",
        ClaimsVerificationError::Unsupported(_) => "claims check failed: unsupported token type",
        ClaimsVerificationError::SignatureVerification(_) => "claims check failed: signature",
        _ => "claims check failed",
    };
    reject(message, detail)
}
