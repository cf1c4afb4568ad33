//! Request limits checked on the parsed document before anything executes: mutations only over
//! POST, and the operation's shape (depth, fields, aliases, root fields and cost, with fragments
//! expanded where they are spread; see [`super::shape`]), then the caller's quota, charged by that
//! cost. Runs after the document is resolved (persisted queries, trusted documents), so
//! hash-only requests are checked too; nothing here touches the database.

use std::sync::Arc;

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, OperationType};
use async_graphql::{Request, ServerError, ServerResult};

use super::context::RequestDb;
use super::shape::{ShapeLimits, measure};
use crate::error::{ApiError, ErrorCode};
use crate::quota::Quotas;
use crate::settings::ApiLimits;

/// The message of the error for a mutation sent over GET (the HTTP layer answers it with 405).
const MUTATION_OVER_GET: &str = "mutations must be sent with POST";

/// The request policy: the limits every operation is measured against, and the quotas it is
/// charged to.
#[derive(Debug)]
pub struct RequestPolicy {
    pub limits: ApiLimits,
    pub quotas: Arc<Quotas>,
}

impl RequestPolicy {
    /// Checks the (already resolved) document of `request` for `db`'s caller: mutations only
    /// over POST, its shape within the limits, its cost within the caller's quota.
    pub async fn check(
        &self,
        request: &mut Request,
        db: &RequestDb,
        over_get: bool,
    ) -> ServerResult<()> {
        let verdict = self.measure(request, over_get);
        // A request refused here was parsed and walked all the same, as was one naming no
        // operation its document holds (the engine then refuses it): each is charged one unit,
        // so refusals cannot be repeated free of charge.
        let cost = match &verdict {
            Ok(Some((cost, mutation))) => {
                db.set_mutation(*mutation);
                *cost
            }
            _ => 1,
        };
        self.charge(db, cost).await?;
        verdict.map(|_| ())
    }

    /// Charges one unit for a request refused before it could be measured.
    pub async fn charge_refusal(&self, db: &RequestDb) -> ServerResult<()> {
        self.charge(db, 1).await
    }

    async fn charge(&self, db: &RequestDb, cost: u64) -> ServerResult<()> {
        if let Some(decision) = self.quotas.charge(db.principal(), cost).await {
            db.set_quota(decision);
            if !decision.allowed {
                return Err(ApiError::over_quota(&decision).into_server_error());
            }
        }
        Ok(())
    }

    /// The cost of the operation `request` runs and whether it is a mutation; `None` when the
    /// document holds no operation by the name asked for (or several and no name).
    fn measure(&self, request: &mut Request, over_get: bool) -> ServerResult<Option<(u64, bool)>> {
        let operation_name = request.operation_name.clone();
        // Taken out while the document is borrowed, coerced, and given back at the end.
        let mut variables = std::mem::take(&mut request.variables);
        {
            let doc = request.parsed_query()?;
            let operation = selected_operation(doc, operation_name.as_deref());
            super::variables::coerce(operation, &mut variables);
        }
        let written_too_often = super::variables::written_too_often(&request.query, &variables);
        let doc = request.parsed_query()?;
        if over_get && is_mutation(doc, operation_name.as_deref()) {
            return Err(ApiError::new(ErrorCode::BadUserInput, MUTATION_OVER_GET)
                .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
                .into_server_error());
        }
        let operation = selected_operation(doc, operation_name.as_deref());
        if let Some(names) = written_too_often {
            return Err(bad_input(format!(
                "variables {names} have large values and are written many times; pass a large \
                 value to one argument only"
            )));
        }
        if let Some((name, ty)) =
            operation.and_then(|op| super::variables::missing_required(op, &variables))
        {
            return Err(bad_input(format!(
                "variable ${name} of required type {ty} was not provided (or was null)"
            )));
        }
        if let Some(name) =
            operation.and_then(|op| super::variables::overlong_value(op, &variables))
        {
            return Err(bad_input(format!(
                "variable ${name} holds an enum value or an input field name longer than {} characters, \
                 which no type of the schema has",
                super::documents::LONGEST_NAME
            )));
        }
        let limits = ShapeLimits {
            max_depth: self.limits.max_depth,
            max_fields: self.limits.max_fields,
            max_aliases: self.limits.max_aliases,
            max_root_fields: self.limits.max_root_fields,
            max_cost: self.limits.max_complexity as u64,
            default_page_size: u64::try_from(super::connection::DEFAULT_PAGE_SIZE).unwrap_or(20),
            max_page_size: u64::try_from(self.limits.max_page_size).unwrap_or(100),
        };
        let shape = measure(doc, operation, &variables, &limits)
            .map_err(|too_large| bad_input(too_large.to_string()))?;
        // With introspection off the engine answers `__schema` and `__type` with a silent null,
        // which tools read as an empty schema: they are told why instead.
        if shape.introspects && !self.limits.introspection {
            return Err(bad_input(
                "introspection is turned off on this server (ROWGUARD_INTROSPECTION); the schema is \
                 published as schema.graphql"
                    .to_owned(),
            ));
        }
        // The engine reports a missing or ambiguous operation (after validating every
        // operation, which the measure above has bounded).
        let verdict = operation.map(|op| (shape.cost, op.ty == OperationType::Mutation));
        request.variables = variables;
        Ok(verdict)
    }
}

fn bad_input(message: String) -> ServerError {
    ApiError::new(ErrorCode::BadUserInput, message).into_server_error()
}

fn selected_operation<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    match name {
        Some(name) => doc
            .operations
            .iter()
            .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| &op.node),
        None => doc.operations.iter().next().map(|(_, op)| &op.node),
    }
}

fn is_mutation(doc: &ExecutableDocument, name: Option<&str>) -> bool {
    // With no name and several operations the engine reports the ambiguity; refuse writes
    // over GET if any candidate is a mutation.
    match selected_operation(doc, name) {
        Some(op) if name.is_some() || doc.operations.iter().count() == 1 => {
            op.ty == OperationType::Mutation
        }
        _ => doc
            .operations
            .iter()
            .any(|(_, op)| op.node.ty == OperationType::Mutation),
    }
}
