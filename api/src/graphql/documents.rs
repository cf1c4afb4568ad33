//! Which document a request runs, and whether it may: automatic persisted queries (Apollo's
//! APQ: a client sends a query's SHA-256 instead of the query; the first time, the server
//! answers `PERSISTED_QUERY_NOT_FOUND` and the client sends both), ids from the trusted
//! documents manifest, and the trusted-documents check itself (`log` or `enforce`), with the
//! roles a listed operation is restricted to. All of it runs before any database work. Each
//! distinct document is parsed once per person (a trusted document once for everyone): later
//! requests reuse the parsed form.

use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{Request, ServerResult, Value};
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::principal::Principal;
use crate::trusted::{TrustMode, TrustedDocuments, TrustedOperation};

/// How much query text the parsed documents kept may add up to: an application has tens of
/// operations of a few hundred bytes, kept once per person who sends them; a client sending a
/// new document each time only churns the cache (each is then parsed, as without it).
const PARSED_TEXT_BYTES: u64 = 2 * 1024 * 1024;
/// Documents longer than this are parsed each time rather than kept, and parsed off the
/// runtime's worker threads: a megabyte of text takes long enough to parse to stall every
/// other request on the same thread.
const LARGEST_KEPT: usize = 16 * 1024;

/// The persisted-query store, the parsed documents and the trusted documents, shared by every
/// request of a process.
pub struct Documents {
    /// Automatic persisted queries, by the person who registered them and the hash: shared by
    /// everyone, a hit for a hash someone else registered would tell that somebody sent that
    /// exact text (a literal search term in it is PHI).
    persisted: Cache<[u8; 32], Arc<str>>,
    /// Documents already parsed (a hit saves the parse), by the person who sent them and the
    /// text, or by the text alone for a trusted document: shared by everyone, a hit's shorter
    /// answer would tell that somebody sent that exact text, as a shared persisted-query store
    /// would.
    parsed: Cache<[u8; 32], Parsed, ParsedWeight>,
    trusted: Arc<TrustedDocuments>,
    introspection: bool,
}

/// A parsed document and the length of its text (its weight in the cache).
#[derive(Clone)]
struct Parsed {
    document: ExecutableDocument,
    text_len: u64,
}

#[derive(Clone)]
struct ParsedWeight;

impl quick_cache::Weighter<[u8; 32], Parsed> for ParsedWeight {
    fn weight(&self, _key: &[u8; 32], parsed: &Parsed) -> u64 {
        parsed.text_len.max(1)
    }
}

/// What [`Documents::resolve`] settled for a request that may run: where its parsed form is
/// kept, and the persisted query to register once the request is admitted.
#[derive(Debug)]
pub struct Settled {
    parsed_key: [u8; 32],
    register: Option<[u8; 32]>,
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
            parsed: Cache::with_weighter(1024, PARSED_TEXT_BYTES, ParsedWeight),
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
    /// Settles which document `request` runs and whether `principal` may run it.
    pub fn resolve(&self, request: &mut Request, principal: &Principal) -> ServerResult<Settled> {
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
        let parsed_key = match &trusted {
            Some(_) => digest(&[b"trusted", request.query.as_bytes()]),
            None => digest(&[
                b"person",
                principal.issuer.as_bytes(),
                principal.subject.as_bytes(),
                request.query.as_bytes(),
            ]),
        };
        Ok(Settled {
            parsed_key,
            register,
        })
    }

    /// Attaches the parsed document of a settled request: from the cache when its sender (or,
    /// for a trusted document, anybody) sent this text before.
    pub async fn parse(&self, request: &mut Request, settled: &Settled) -> ServerResult<()> {
        if let Some(parsed) = self.parsed.get(&settled.parsed_key) {
            request.set_parsed_query(parsed.document);
            return Ok(());
        }
        let document = if request.query.len() <= LARGEST_KEPT {
            let document = parse(&request.query)?;
            self.parsed.insert(
                settled.parsed_key,
                Parsed {
                    document: document.clone(),
                    text_len: request.query.len() as u64,
                },
            );
            document
        } else {
            let text = request.query.clone();
            tokio::task::spawn_blocking(move || parse(&text))
                .await
                .map_err(|_| ApiError::internal("parsing the query failed").into_server_error())??
        };
        request.set_parsed_query(document);
        Ok(())
    }

    /// Registers a settled request's persisted query: only once the request was admitted, so
    /// that refused requests (over quota, over a limit) cannot fill the store and push out
    /// what others registered.
    pub fn register(&self, request: &Request, settled: Settled) {
        if let Some(key) = settled.register {
            self.persisted
                .insert(key, Arc::from(request.query.as_str()));
        }
    }
}

/// The longest name a document may spell: a field, an alias, an argument, an operation, a
/// fragment, a variable, a directive, a type or an enum value. The engine's validation quotes
/// names in its messages, once per conflict or per use: a 480 KB field name spread through 240
/// fragments made half a gigabyte of messages, and a 250 KB operation name with a thousand
/// undefined variables a quarter of one, before the answer's size was checked. No name of the
/// schema comes near it.
pub(super) const LONGEST_NAME: usize = 128;

/// Parses a query. A syntax error says what was expected and where, without quoting the
/// document (the parser's own message repeats the offending line, which can be a megabyte long
/// and holds whatever the caller typed).
fn parse(query: &str) -> ServerResult<ExecutableDocument> {
    let document = parse_text(query)?;
    if let Some(pos) = overlong_name(query) {
        return Err(async_graphql::ServerError::new(
            format!(
                "names (of fields, aliases, arguments, operations, fragments, variables, types and enum \
                 values) are at most {LONGEST_NAME} characters"
            ),
            Some(pos),
        ));
    }
    Ok(document)
}

/// Where the first name longer than [`LONGEST_NAME`] starts, reading the (already parsed)
/// document token by token: strings and comments are skipped, so a long search term is not a
/// name.
fn overlong_name(query: &str) -> Option<async_graphql::Pos> {
    let mut found = None;
    for_each_name(query, |name| {
        if name.text.len() > LONGEST_NAME {
            found = Some(async_graphql::Pos {
                line: name.line,
                column: query[name.line_start..name.start].chars().count() + 1,
            });
            return false;
        }
        true
    });
    found
}

/// How many times each variable is written in `query` (declarations included), in one pass:
/// asked once per variable, a request with 60,000 variables scanned its document 60,000 times.
pub(super) fn variable_uses(query: &str) -> std::collections::HashMap<&str, usize> {
    let mut uses = std::collections::HashMap::new();
    for_each_name(query, |name| {
        if name.variable {
            *uses.entry(name.text).or_insert(0) += 1;
        }
        true
    });
    uses
}

/// A name token of a document.
struct NameToken<'q> {
    text: &'q str,
    /// Written as `$name`.
    variable: bool,
    start: usize,
    line: usize,
    line_start: usize,
}

/// Calls `visit` with every name token of `query` (an already parsed document) until it
/// returns false; strings, block strings and comments are skipped.
fn for_each_name<'q>(query: &'q str, mut visit: impl FnMut(NameToken<'q>) -> bool) {
    let bytes = query.as_bytes();
    let (mut i, mut line, mut line_start) = (0, 1, 0);
    // A `$` read, and only ignored tokens since (`$ name` and `$#…\nname` are variables too).
    let mut dollar = false;
    while i < bytes.len() {
        match bytes[i] {
            b'$' => {
                dollar = true;
                i += 1;
            }
            b'\n' => {
                line += 1;
                line_start = i + 1;
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                dollar = false;
                // A block string ends at the first `"""` not escaped as `\"""`.
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    if bytes[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                    } else {
                        if bytes[i] == b'\n' {
                            line += 1;
                            line_start = i + 1;
                        }
                        i += 1;
                    }
                }
                i += 3;
            }
            b'"' => {
                dollar = false;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                let token = NameToken {
                    text: &query[start..i],
                    variable: std::mem::take(&mut dollar),
                    start,
                    line,
                    line_start,
                };
                if !visit(token) {
                    return;
                }
            }
            // A number's exponent (`1e5`) is part of the number, not a name.
            b'0'..=b'9' | b'-' => {
                dollar = false;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
            }
            other => {
                // Spaces, commas and a byte-order mark are ignored tokens; anything else ends it.
                dollar &= matches!(other, b' ' | b'\t' | b'\r' | b',' | 0xEF | 0xBB | 0xBF);
                i += 1;
            }
        }
    }
}

fn parse_text(query: &str) -> ServerResult<ExecutableDocument> {
    use async_graphql::parser::Error;
    async_graphql::parser::parse_query(query).map_err(|error| match &error {
        Error::Syntax { message, .. } => {
            let expected = message
                .lines()
                .rev()
                .find_map(|line| line.trim().strip_prefix("= "))
                .filter(|line| line.len() <= 200)
                .unwrap_or("not valid GraphQL");
            async_graphql::ServerError::new(
                format!("syntax error: {expected}"),
                error.positions().next(),
            )
        }
        Error::OperationDuplicated { .. } => async_graphql::ServerError::new(
            "an operation name is defined twice",
            error.positions().next(),
        ),
        Error::FragmentDuplicated { .. } => async_graphql::ServerError::new(
            "a fragment name is defined twice",
            error.positions().next(),
        ),
        _ => async_graphql::ServerError::from(error),
    })
}

/// SHA-256 of `parts`, each length-prefixed so that no two different lists give the same
/// input.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

/// One person's registration of a persisted query: issuer, subject and hash, each
/// length-prefixed so that no two different triples give the same input.
fn persisted_key(principal: &Principal, id: &str) -> [u8; 32] {
    digest(&[
        principal.issuer.as_bytes(),
        principal.subject.as_bytes(),
        id.to_ascii_lowercase().as_bytes(),
    ])
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
    fn every_kind_of_name_is_bounded_but_strings_and_comments_are_not_names() {
        let long = "n".repeat(LONGEST_NAME + 1);
        let fits = "n".repeat(LONGEST_NAME);
        for query in [
            format!("{{ me {{ {long} }} }}"),
            format!("{{ {long}: me {{ id }} }}"),
            format!("{{ me {{ id(x{long}: 1) }} }}"),
            format!(
                "{{ auditEvents(filter: {{ action: {long} }}) {{ pageInfo {{ hasNextPage }} }} }}"
            ),
            format!("{{ me @{long} {{ id }} }}"),
            format!("{{ me {{ ... on {long} {{ id }} }} }}"),
            format!("query\n  Q {{ me {{ id }} }}\n{{ me {{ __{long} }} }}"),
        ] {
            assert!(overlong_name(&query).is_some(), "{query}");
        }
        for query in [
            format!("{{ me {{ {fits} }} }}"),
            format!("{{ patients(search: \"{long}\") {{ edges {{ node {{ id }} }} }} }}"),
            format!("{{ patients(search: \"\\\" {long}\") {{ edges {{ node {{ id }} }} }} }}"),
            format!(
                "{{ patients(search: \"\"\"{long} \\\"\"\" {long}\"\"\") {{ edges {{ node {{ id }} }} }} }}"
            ),
            format!("# {long}\n{{ me {{ id }} }}"),
            format!(
                "{{ patients(first: 1e{}) {{ edges {{ node {{ id }} }} }} }}",
                "0".repeat(200)
            ),
        ] {
            assert_eq!(overlong_name(&query), None, "{query}");
        }
        assert_eq!(
            overlong_name(&format!("{{\n  me {{ {long} }} }}")),
            Some(async_graphql::Pos { line: 2, column: 8 })
        );
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
