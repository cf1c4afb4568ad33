//! Which document a request runs, and whether it may: automatic persisted queries (Apollo's
//! APQ: a client sends a query's SHA-256 instead of the query; the first time, the server
//! answers `PERSISTED_QUERY_NOT_FOUND` and the client sends both), ids from the trusted
//! documents manifest, and the trusted-documents check itself (`log` or `enforce`), with the
//! roles a listed operation is restricted to. All of it runs before any database work. Each
//! distinct document is parsed once: later requests reuse the parsed form.

use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{Request, ServerResult, Value};
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::principal::Principal;
use crate::trusted::{TrustMode, TrustedDocuments, TrustedOperation};

/// How many parsed documents are kept: an application has tens of operations; a client sending
/// a new document each time only churns the cache (each is then parsed, as without it).
const PARSED_DOCUMENTS: usize = 256;
/// Documents longer than this are parsed each time rather than kept.
const LARGEST_KEPT: usize = 16 * 1024;

/// The persisted-query store, the parsed documents and the trusted documents, shared by every
/// request of a process.
pub struct Documents {
    /// Automatic persisted queries, by the person who registered them and the hash: shared by
    /// everyone, a hit for a hash someone else registered would tell that somebody sent that
    /// exact text (a literal search term in it is PHI).
    persisted: Cache<[u8; 32], Arc<str>>,
    /// Documents already parsed, by their text (a hit saves the parse).
    parsed: Cache<String, ExecutableDocument>,
    trusted: Arc<TrustedDocuments>,
    introspection: bool,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("persisted", &self.persisted.len())
            .field("trust", &self.trusted.mode())
            .finish()
    }
}

impl Documents {
    pub fn new(capacity: usize, trusted: Arc<TrustedDocuments>, introspection: bool) -> Self {
        Self {
            persisted: Cache::new(capacity.max(1)),
            parsed: Cache::new(PARSED_DOCUMENTS),
            trusted,
            introspection,
        }
    }

    /// The trusted documents in force.
    pub fn trusted(&self) -> &TrustedDocuments {
        &self.trusted
    }
}

/// The id in a request's `persistedQuery` extension (version 1): a SHA-256 for APQ, or any
/// manifest id.
pub fn requested_hash(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(persisted) = request.extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_input(
            "extensions.persistedQuery",
            "is not a version 1 persisted query",
        )
    };
    let Value::Object(fields) = persisted else {
        return Err(invalid());
    };
    match (fields.get("version"), fields.get("sha256Hash")) {
        (Some(Value::Number(version)), Some(Value::String(id)))
            if version.as_u64() == Some(1)
                && !id.is_empty()
                && id.len() <= 200
                && id.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(Some(id.clone()))
        }
        _ => Err(invalid()),
    }
}

/// The lower-case hex SHA-256 of a query text.
pub fn query_hash(query: &str) -> String {
    Sha256::digest(query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The client's operation name if it looks like a GraphQL name (chosen by developers, not
/// patients); anything else is not logged.
pub fn loggable_name(name: Option<&str>) -> Option<&str> {
    name.filter(|n| {
        !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

impl Documents {
    /// Settles which document `request` runs and whether `principal` may run it, then attaches
    /// the parsed document (from the cache when this text was seen before).
    pub fn resolve(&self, request: &mut Request, principal: &Principal) -> ServerResult<()> {
        let role = principal.role;
        let id = requested_hash(request).map_err(ApiError::into_server_error)?;
        let mode = self.trusted.mode();
        let manifest = (mode != TrustMode::Off).then(|| self.trusted.current());
        let mut trusted: Option<Arc<TrustedOperation>> = None;
        let mut register = None;
        if let Some(id) = id {
            if request.query.is_empty() {
                if let Some((operation, body)) = manifest.as_ref().and_then(|m| m.by_id(&id)) {
                    request.query = body.to_string();
                    trusted = Some(operation.clone());
                } else if let Some(query) = self.persisted.get(&persisted_key(principal, &id)) {
                    request.query = query.to_string();
                } else if mode == TrustMode::Enforce {
                    self.trusted.record_untrusted(operation_label(request));
                    return Err(ApiError::new(
                        ErrorCode::PersistedQueryNotInList,
                        "this persisted query id is not in the trusted documents",
                    )
                    .into_server_error());
                } else {
                    // Apollo clients recognise this message and code, then send the full query.
                    return Err(ApiError::new(
                        ErrorCode::PersistedQueryNotFound,
                        "PersistedQueryNotFound",
                    )
                    .into_server_error());
                }
            } else if query_hash(&request.query) == id.to_ascii_lowercase() {
                register = Some(persisted_key(principal, &id));
            } else {
                return Err(ApiError::bad_input(
                    "extensions.persistedQuery.sha256Hash",
                    "does not match the query",
                )
                .into_server_error());
            }
        }
        if let Some(manifest) = &manifest {
            if trusted.is_none()
                && let Some((operation, body)) = manifest.by_body(&request.query)
            {
                // What runs is the manifest's text, not the client's: matching ignores
                // formatting, so the two are only known to be equivalent, and only the
                // manifest's was reviewed.
                request.query = body.to_string();
                trusted = Some(operation.clone());
            }
            if trusted.is_none() && !(self.introspection && is_introspection(&request.query)) {
                self.trusted.record_untrusted(operation_label(request));
                if mode == TrustMode::Enforce {
                    return Err(ApiError::new(
                        ErrorCode::QueryNotInSafelist,
                        "this operation is not in the trusted documents",
                    )
                    .into_server_error());
                }
            }
        }
        if let Some(operation) = &trusted
            && !operation.allows(role)
        {
            return Err(ApiError::forbidden(format!(
                "{} is not available to your role",
                operation.name
            ))
            .into_server_error());
        }
        if let Some(key) = register {
            self.persisted
                .insert(key, Arc::from(request.query.as_str()));
        }
        let document = match self.parsed.get(&request.query) {
            Some(document) => document,
            None => {
                let document = async_graphql::parser::parse_query(&request.query)
                    .map_err(async_graphql::ServerError::from)?;
                if request.query.len() <= LARGEST_KEPT {
                    self.parsed.insert(request.query.clone(), document.clone());
                }
                document
            }
        };
        request.set_parsed_query(document);
        Ok(())
    }
}

/// One person's registration of a persisted query: issuer, subject and hash, each
/// length-prefixed so that no two different triples give the same input.
fn persisted_key(principal: &Principal, id: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [
        principal.issuer.as_bytes(),
        principal.subject.as_bytes(),
        id.to_ascii_lowercase().as_bytes(),
    ] {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

fn operation_label(request: &Request) -> &str {
    loggable_name(request.operation_name.as_deref()).unwrap_or("<unnamed>")
}

/// Whether every operation of the document asks for introspection only (`__schema`, `__type`,
/// `__typename`): introspection is governed by its own setting, not the manifest.
fn is_introspection(query: &str) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    document.operations.iter().all(|(_, operation)| {
        operation.node.ty == OperationType::Query
            && operation.node.selection_set.node.items.iter().all(|item| {
                matches!(&item.node, Selection::Field(field)
                    if field.node.name.node.starts_with("__"))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn introspection_only_documents_are_recognised() {
        assert!(is_introspection("{ __schema { types { name } } }"));
        assert!(is_introspection(
            "query I { __type(name: \"Patient\") { name } __typename }"
        ));
        assert!(!is_introspection(
            "{ __schema { types { name } } patients { edges { node { id } } } }"
        ));
        assert!(!is_introspection("mutation { __typename }"));
        assert!(!is_introspection("not graphql"));
    }

    #[test]
    fn only_graphql_names_are_loggable() {
        assert_eq!(loggable_name(Some("PatientList_2")), Some("PatientList_2"));
        for name in ["", "Jane Doe", "a-b", "é", &"x".repeat(65)] {
            assert_eq!(loggable_name(Some(name)), None, "{name:?}");
        }
        assert_eq!(loggable_name(None), None);
    }
}
