//! Request limits the GraphQL engine does not enforce itself, checked on the parsed document
//! before anything executes: mutations only over POST, and caps on aliases and root fields
//! (alias bombs). Runs after persisted-query resolution, so hash-only requests are checked too.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Request, ServerError, ServerResult};

use super::ApiLimits;
use crate::error::ErrorCode;

/// Marks a request that arrived over GET (which may only read).
#[derive(Debug, Clone, Copy)]
pub struct ArrivedOverGet;

/// The message of the error for a mutation sent over GET (the HTTP layer answers it with 405).
pub const MUTATION_OVER_GET: &str = "mutations must be sent with POST";

pub struct RequestPolicy(pub ApiLimits);

impl ExtensionFactory for RequestPolicy {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestPolicyExtension(self.0))
    }
}

struct RequestPolicyExtension(ApiLimits);

#[async_graphql::async_trait::async_trait]
impl Extension for RequestPolicyExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let over_get = ctx.data_opt::<ArrivedOverGet>().is_some();
        let operation_name = request.operation_name.clone();
        // Parsed once here; the engine reuses this document.
        let doc = request.parsed_query()?;
        if over_get && is_mutation(doc, operation_name.as_deref()) {
            return Err(bad_input(MUTATION_OVER_GET.to_owned()));
        }
        let aliases = count_aliases(doc);
        if aliases > self.0.max_aliases {
            return Err(bad_input(format!(
                "the query uses {aliases} aliases; at most {} are allowed",
                self.0.max_aliases
            )));
        }
        let root_fields = root_field_count(doc, operation_name.as_deref());
        if root_fields > self.0.max_root_fields {
            return Err(bad_input(format!(
                "the operation selects {root_fields} root fields; at most {} are allowed",
                self.0.max_root_fields
            )));
        }
        next.run(ctx, request).await
    }
}

fn bad_input(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::BadUserInput.as_str());
    error.extensions = Some(extensions);
    error
}

fn selected_operation<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d async_graphql::parser::types::OperationDefinition> {
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

fn count_in(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some()) + count_in(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => count_in(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

fn count_aliases(doc: &ExecutableDocument) -> usize {
    let in_operations: usize = doc
        .operations
        .iter()
        .map(|(_, op)| count_in(&op.node.selection_set.node))
        .sum();
    let in_fragments: usize = doc
        .fragments
        .values()
        .map(|fragment| count_in(&fragment.node.selection_set.node))
        .sum();
    in_operations + in_fragments
}

fn root_field_count(doc: &ExecutableDocument, name: Option<&str>) -> usize {
    selected_operation(doc, name).map_or(0, |op| op.selection_set.node.items.len())
}
