//! Automatic persisted queries (Apollo's APQ): a client sends a query's SHA-256 instead of the
//! query; the first time, the server does not know it and answers `PERSISTED_QUERY_NOT_FOUND`,
//! and the client sends both, which the server checks and remembers.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Request, ServerResult, Value};
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};

/// The persisted-query store, shared by every request of a process.
#[derive(Clone)]
pub struct PersistedQueries {
    queries: Arc<Cache<String, Arc<str>>>,
}

impl std::fmt::Debug for PersistedQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistedQueries")
            .field("len", &self.queries.len())
            .finish()
    }
}

impl PersistedQueries {
    pub fn new(capacity: usize) -> Self {
        Self {
            queries: Arc::new(Cache::new(capacity.max(1))),
        }
    }
}

/// The `sha256Hash` of a request's `persistedQuery` extension, if it has one of version 1.
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
        (Some(Value::Number(version)), Some(Value::String(hash)))
            if version.as_u64() == Some(1)
                && hash.len() == 64
                && hash.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(Some(hash.to_ascii_lowercase()))
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

impl ExtensionFactory for PersistedQueries {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for PersistedQueries {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let hash = requested_hash(&request).map_err(ApiError::into_server_error)?;
        if let Some(hash) = hash {
            if request.query.is_empty() {
                match self.queries.get(&hash) {
                    Some(query) => request.query = query.to_string(),
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::PersistedQueryNotFound,
                            "PersistedQueryNotFound",
                        )
                        .into_server_error());
                    }
                }
            } else if query_hash(&request.query) == hash {
                self.queries.insert(hash, Arc::from(request.query.as_str()));
            } else {
                return Err(ApiError::bad_input(
                    "extensions.persistedQuery.sha256Hash",
                    "does not match the query",
                )
                .into_server_error());
            }
        }
        next.run(ctx, request).await
    }
}
