//! Runs one operation in one RLS scope and ends the scope. The operation runs on a task of its
//! own, so a caller that goes away mid-request cannot cut a database call short (which could
//! return a connection with an open transaction to the pool); the task always ends its
//! transaction, rolling back if the caller is gone.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Value;
use prometheus_client::metrics::counter::Counter;
use tracing::Instrument;

use super::caller::Caller;
use super::incoming::Incoming;
use crate::audit::record::AuditContext;
use crate::error::{ApiError, ErrorCode};
use crate::graphql::documents::requested_hash;
use crate::graphql::{self, RequestBudget, RequestDb};
use crate::principal::AppRole;
use crate::state::AppState;

/// How long past its deadline a request's answer is awaited before the caller is told it timed
/// out (the transaction is cancelled at the deadline; this covers its rollback).
const DEADLINE_GRACE: Duration = Duration::from_secs(1);
/// The longest a request past its point of commit waits for each of its record and its commit
/// after the deadline before its answer says the outcome is unknown (the statement timeout, at
/// most this).
const COMMIT_WAIT_CAP: Duration = Duration::from_secs(30);

/// An executed operation: the GraphQL response and its serialized body.
pub struct Executed {
    /// The client's correlation id (logged with the outcome, never traced).
    pub correlation_id: Option<String>,
    pub response: async_graphql::Response,
    /// The quota decision, for the `RateLimit` headers.
    pub quota: Option<crate::quota::Decision>,
    pub body: Vec<u8>,
    pub operation: String,
    pub role: AppRole,
}

pub async fn run(
    state: &AppState,
    caller: Caller,
    incoming: Incoming,
) -> Result<Executed, ApiError> {
    let Caller { principal, slot } = caller;
    let Incoming {
        request,
        over_get,
        ids,
        name,
    } = incoming;
    let role = principal.role;
    let correlation_id = ids.correlation_id.clone();
    let limits = state.limits;
    let audit = limits.audit.then(|| AuditContext {
        operation_name: request.operation_name.as_ref().map(|_| name.clone()),
        persisted_query_hash: requested_hash(&request)
            .ok()
            .flatten()
            .filter(|id| id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|id| id.to_ascii_lowercase()),
        client_id: principal.client_id.clone(),
        failures: state.metrics.shared.audit_write_failures.clone(),
    });
    let db = Arc::new(RequestDb::new(
        state.db.clone(),
        principal,
        !over_get,
        ids,
        audit,
        RequestBudget::starting_now(
            limits.max_statements,
            limits.max_response_bytes,
            limits.request_timeout,
        ),
    ));
    let mut request = graphql::attach(request, db.clone());
    // Trace spans name only operations the server knows (the trusted documents').
    let traced = crate::telemetry::enabled().then(|| state.metrics.label(&name));

    let in_flight = state.metrics.shared.requests_in_flight.clone();
    in_flight.inc();
    let schema = state.schema.clone();
    let gate = state.gate.clone();
    let task_db = db.clone();
    // Spans opened in the task belong to the request's span; found once here rather than
    // looked up in the subscriber for each.
    let parent = crate::telemetry::spans::parent();
    let execution = tokio::spawn(
        crate::telemetry::spans::within(parent, async move {
            let prepared = crate::telemetry::spans::while_open(
                graphql::spans::parse(traced.as_deref().unwrap_or("other")),
                gate.prepare(&mut request, &task_db, over_get),
            )
            .await;
            let executed = match prepared {
                Ok(()) => {
                    execute(
                        schema,
                        request,
                        task_db,
                        limits.max_response_bytes,
                        traced.as_deref(),
                    )
                    .await
                }
                Err(refused) => {
                    finish(
                        async_graphql::Response::from_errors(vec![refused]),
                        task_db,
                        limits.max_response_bytes,
                        None,
                    )
                    .await
                }
            };
            in_flight.dec();
            // The person's slot is theirs until the transaction has ended, even if they left.
            drop(slot);
            executed
        })
        .instrument(tracing::Span::current()),
    );
    let mut abandon = AbandonOnDrop(Some((
        db.clone(),
        state.metrics.shared.requests_abandoned.clone(),
    )));
    let mut execution = execution;
    let mut finished = tokio::time::timeout(db.remaining() + DEADLINE_GRACE, &mut execution).await;
    let mut committing = false;
    if finished.is_err() && !db.cut_off() {
        // The request went ahead with its commit before the deadline cut it off: its answer
        // is what the commit and its record did (a 503 "cancelled" must mean that nothing was
        // written). Each is bounded by the statement timeout on the server, which cannot
        // fire while the server or the network stalls: past twice that, the outcome is
        // unknown, and the answer says so.
        committing = true;
        let commit_and_record =
            2 * Duration::from_millis(state.db.statement_timeout_ms()).min(COMMIT_WAIT_CAP);
        finished = tokio::time::timeout(commit_and_record + DEADLINE_GRACE, &mut execution).await;
    }
    abandon.0 = None;
    let (response, body) = match finished {
        Ok(Ok(executed)) => executed.map_err(|e| e.with_quota(db.quota()))?,
        Ok(Err(join)) => return Err(ApiError::internal(format!("request task failed: {join}"))),
        Err(_) if committing => {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the database did not confirm the request's commit in time: whether it took effect is unknown; read before retrying",
            )
            .with_quota(db.quota()));
        }
        Err(_) => {
            let timeout = ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the request took longer than the server allows and was cancelled",
            );
            db.stop(timeout.clone());
            return Err(timeout.with_quota(db.quota()));
        }
    };
    Ok(Executed {
        correlation_id,
        quota: db.quota(),
        response,
        body,
        operation: name,
        role,
    })
}

/// Marks the request abandoned if the caller goes away (this future is dropped) before its
/// answer is ready; the execution task then rolls back instead of committing.
struct AbandonOnDrop(Option<(Arc<RequestDb>, Counter)>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some((db, counter)) = self.0.take() {
            db.abandon();
            counter.inc();
        }
    }
}

/// Runs the operation and ends its transaction. The answer is withheld (and the transaction
/// rolled back) when the request was stopped by a limit or abandoned; a mutation with any
/// error is rolled back whole and answers no data. `traced` is the operation's label when the
/// request is traced.
async fn execute(
    schema: graphql::RowguardSchema,
    mut request: async_graphql::Request,
    db: Arc<RequestDb>,
    max_response_bytes: usize,
    traced: Option<&str>,
) -> Result<(async_graphql::Response, Vec<u8>), ApiError> {
    // The engine runs the document the gate parsed and never reads the text again; it is kept
    // for typing the nulls of fields that fail.
    let operation = graphql::error_nulls::Operation {
        variables: (request.query.contains("@skip") || request.query.contains("@include"))
            .then(|| request.variables.clone()),
        query: std::mem::take(&mut request.query),
        name: request.operation_name.clone(),
    };
    let response = match traced {
        Some(label) => {
            let span = graphql::spans::execute(label);
            db.validating(graphql::spans::validate(&span, label));
            let response = span.run(schema.execute(request)).await;
            db.validated();
            response
        }
        None => schema.execute(request).await,
    };
    finish(response, db, max_response_bytes, Some(&operation)).await
}

/// Ends the request's transaction for `response` (committing only a clean answer) and
/// serializes the answer. `operation` is the document that ran, if the engine ran one.
async fn finish(
    mut response: async_graphql::Response,
    db: Arc<RequestDb>,
    max_response_bytes: usize,
    operation: Option<&graphql::error_nulls::Operation>,
) -> Result<(async_graphql::Response, Vec<u8>), ApiError> {
    code_every_error(&mut response);
    // A query's root fields resolve concurrently and their errors arrive as they finish: in the
    // order of the document instead, so a request whose root fields all fail gets the same
    // first error (whose status it takes) and the same list every time. Errors of the request
    // itself, which have no location, stay first. A mutation's fields run one after another,
    // and its errors already come in that order.
    if !db.is_mutation() {
        response
            .errors
            .sort_by_key(|error| error.locations.first().map(|at| (at.line, at.column)));
    }
    if let Some(operation) = operation
        && !response.errors.is_empty()
        && !db.is_mutation()
    {
        graphql::error_nulls::place(&mut response.data, &response.errors, operation);
    }
    let nothing_shown = match &response.data {
        Value::Null => true,
        Value::Object(fields) => fields.values().all(|field| *field == Value::Null),
        _ => false,
    };
    if operation.is_some() && nothing_shown && !response.errors.is_empty() && !db.is_mutation() {
        // A query whose every root field failed, or was nulled by a failing Non-Null field
        // below it: what its fields read was never shown.
        db.answer_empty();
    }
    let mut body = serde_json::to_vec(&response).map_err(ApiError::internal)?;
    if body.len() > max_response_bytes {
        db.stop(graphql::too_large(max_response_bytes));
    }
    db.finish(!response.errors.is_empty()).await?;
    if let Some(reason) = db.stopped() {
        return Err(reason);
    }
    if db.abandoned() {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the client went away",
        ));
    }
    if db.is_mutation() && !response.errors.is_empty() && response.data != Value::Null {
        // Rolled back: whatever the earlier fields returned was never written.
        response.data = Value::Null;
        body = serde_json::to_vec(&response).map_err(ApiError::internal)?;
    }
    Ok((response, body))
}

/// Gives every error an `extensions.code`: the engine's own (parse, validation) errors carry
/// none and are the caller's to fix. A field that could not run because an earlier field's
/// failure ended the transaction takes that failure's code (a forbidden field makes the fields
/// after it forbidden too, not a server error).
fn code_every_error(response: &mut async_graphql::Response) {
    let not_run = |error: &async_graphql::ServerError| {
        ApiError::behind(error).is_some_and(ApiError::is_after_earlier_failure)
    };
    // The failure that ended the transaction is a failed statement's (a refusal made before
    // any statement, such as a malformed id, ends nothing); the first one, since statements
    // run one at a time on the request's connection and any after it could not run.
    let from_statement = |e: &async_graphql::ServerError| {
        ApiError::behind(e).is_some_and(|api| api.is_from_statement())
    };
    let cause = response
        .errors
        .iter()
        .find(|e| !not_run(e) && from_statement(e))
        .or_else(|| response.errors.iter().find(|e| !not_run(e)))
        .map_or(ErrorCode::InternalServerError, |e| ApiError::of(e).0);
    for error in &mut response.errors {
        if not_run(error) {
            let replaced = ApiError::after_earlier_failure(cause).into_server_error();
            error.source = replaced.source;
            error.extensions = replaced.extensions;
        }
        let (code, _) = ApiError::of(error);
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code.as_str());
    }
}
