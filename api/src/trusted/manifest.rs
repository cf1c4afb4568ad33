//! The persisted-operation manifest in Apollo's format (as `@apollo/generate-persisted-query-
//! manifest` writes it), with one optional addition per operation: `roles`, the application
//! roles that may run it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use apollo_compiler::executable::OperationType;
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::normalize::normalize;
use crate::principal::AppRole;

pub const FORMAT: &str = "apollo-persisted-query-manifest";

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub format: String,
    pub version: u32,
    pub operations: Vec<ManifestEntry>,
}

/// One operation of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub body: String,
    /// Rowguard's addition: the roles that may run it (absent: every role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// One trusted operation.
#[derive(Debug, Clone)]
pub struct TrustedOperation {
    pub id: String,
    pub name: String,
    /// `None`: every role may run it.
    pub roles: Option<Vec<AppRole>>,
}

impl TrustedOperation {
    pub fn allows(&self, role: AppRole) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|roles| roles.contains(&role))
    }
}

/// A listed operation and its body as the manifest gives it.
type Listed = (Arc<TrustedOperation>, Arc<str>);

/// The loaded manifest: operations by id, and by the digest of their normalized body.
#[derive(Debug, Default)]
pub struct Manifest {
    by_id: HashMap<String, Listed>,
    by_body: HashMap<[u8; 32], Listed>,
}

/// Why a manifest was refused: the file and, where it is one entry's fault, which.
#[derive(Debug, thiserror::Error)]
#[error("trusted documents {path}: {problem}")]
pub struct ManifestError {
    pub path: String,
    pub problem: String,
}

fn body_digest(body: &str) -> [u8; 32] {
    Sha256::digest(normalize(body).as_bytes()).into()
}

impl Manifest {
    /// Reads and checks `path`: the format, and every entry's body against `schema` (it must
    /// hold exactly the named operation of the stated type, and validate).
    pub fn load(path: &Path, schema: &Valid<Schema>) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let error = |problem: String| ManifestError {
            path: shown.clone(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let file: ManifestFile =
            serde_json::from_str(&text).map_err(|e| error(format!("not a manifest: {e}")))?;
        if file.format != FORMAT || file.version != 1 {
            return Err(error(format!(
                "format must be \"{FORMAT}\", version 1 (found \"{}\", version {})",
                file.format, file.version
            )));
        }
        Self::from_entries(&file.operations, schema).map_err(|(index, name, problem)| {
            error(format!("operations[{index}] ({name:?}): {problem}"))
        })
    }

    fn from_entries(
        entries: &[ManifestEntry],
        schema: &Valid<Schema>,
    ) -> Result<Self, (usize, String, String)> {
        let mut manifest = Self::default();
        for (index, entry) in entries.iter().enumerate() {
            let fail = |problem: String| (index, entry.name.clone(), problem);
            if entry.id.trim().is_empty() || entry.id.len() > 200 {
                return Err(fail("id must be 1 to 200 characters".into()));
            }
            check_body(entry, schema).map_err(&fail)?;
            let roles = entry
                .roles
                .as_ref()
                .map(|roles| {
                    roles
                        .iter()
                        .map(|r| {
                            AppRole::ALL
                                .into_iter()
                                .find(|a| a.as_str() == r)
                                .ok_or_else(|| {
                                    fail(format!(
                                        "unknown role {r:?} (roles are clinician, coordinator, auditor)"
                                    ))
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let operation = Arc::new(TrustedOperation {
                id: entry.id.clone(),
                name: entry.name.clone(),
                roles,
            });
            let listed: Listed = (operation, Arc::from(entry.body.as_str()));
            if manifest
                .by_id
                .insert(entry.id.clone(), listed.clone())
                .is_some()
            {
                return Err(fail(format!("id {:?} is listed twice", entry.id)));
            }
            // Two entries whose bodies differ only in formatting are one operation to a client
            // sending its text: their role lists must agree, or which one applied would depend
            // on the order of the file.
            let roles = listed.0.roles.clone();
            if let Some((earlier, _)) = manifest.by_body.insert(body_digest(&entry.body), listed)
                && earlier.roles != roles
            {
                return Err(fail(format!(
                    "ids {:?} and {:?} are the same document with different roles",
                    earlier.id, entry.id
                )));
            }
        }
        Ok(manifest)
    }

    /// The operation with this id, and its body.
    pub fn by_id(&self, id: &str) -> Option<(&Arc<TrustedOperation>, &Arc<str>)> {
        self.by_id
            .get(id)
            .map(|(operation, body)| (operation, body))
    }

    /// The operation whose body this document is (formatting aside), and its body as listed.
    pub fn by_body(&self, document: &str) -> Option<(&Arc<TrustedOperation>, &Arc<str>)> {
        self.by_body
            .get(&body_digest(document))
            .map(|(operation, body)| (operation, body))
    }

    /// The names of the listed operations.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_id
            .values()
            .map(|(operation, _)| operation.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The body must validate against the schema and hold exactly the named operation, of the
/// stated type.
fn check_body(entry: &ManifestEntry, schema: &Valid<Schema>) -> Result<(), String> {
    let document = ExecutableDocument::parse_and_validate(schema, entry.body.as_str(), &entry.name)
        .map_err(|e| format!("body does not validate against the schema: {}", e.errors))?;
    let operations: Vec<_> = document.operations.iter().collect();
    let [operation] = operations.as_slice() else {
        return Err(format!(
            "body must hold exactly one operation (it holds {})",
            operations.len()
        ));
    };
    if operation.name.as_ref().map(|n| n.as_str()) != Some(entry.name.as_str()) {
        return Err("body's operation is not the one named".into());
    }
    let kind = match operation.operation_type {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    if kind != entry.kind {
        return Err(format!("type is {:?} but the body is a {kind}", entry.kind));
    }
    Ok(())
}

/// The served schema, for checking documents.
pub fn served_schema() -> Valid<Schema> {
    // The schema is generated by this very binary, so it is valid.
    Schema::parse_and_validate(crate::graphql::sdl(), "schema.graphql")
        .unwrap_or_else(|invalid| Valid::assume_valid(invalid.partial))
}
