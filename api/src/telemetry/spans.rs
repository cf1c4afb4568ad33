//! Spans handed to the OpenTelemetry SDK directly, rather than made as `tracing` spans.
//!
//! Only the request's own span is a `tracing` span: it also carries the request's log lines,
//! and it continues the client's trace. Every span inside it (GraphQL parse, validate and
//! execute, and each statement) goes to the SDK directly. A `tracing` span costs a registry
//! slot, each subscriber layer's `new_span`, `record` and `close`, `tracing-opentelemetry`'s
//! span builder, and an enter and an exit through both layers on every poll of the future it
//! instruments; the execute span's future is polled once per database round trip. None of
//! that is needed by a span that no log line is written in.
//!
//! A task's innermost open [`Scope`] is kept in a task-local, which a poll swaps in and out
//! without touching the subscriber; a span opened in the task is its child. Outside any scope,
//! the parent is the current `tracing` span (the request's), which the request's task looks up
//! once. With traces off, opening any of these costs one relaxed atomic load.

use std::borrow::Cow;
use std::future::Future;
use std::time::SystemTime;

use futures::future::Either;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

tokio::task_local! {
    /// Where spans opened in this task belong, while a [`Scope`] (or [`within`]) runs: never
    /// [`Parent::ViaTracing`].
    static PARENT: Parent;
}

/// Where a span opened now belongs, when traces are exported.
#[derive(Debug, Clone)]
pub enum Parent {
    /// A sampled span the exporter knows: the new span is its child.
    Exported(Context),
    /// The current `tracing` span is unknown to the exporter (a library's, kept for the logs),
    /// so its context is empty. A `tracing` span finds the nearest exported ancestor instead.
    ViaTracing,
    /// Traces are off, or this request's trace is not sampled: no span.
    None,
}

/// The parent of a span opened now in this task.
pub fn parent() -> Parent {
    if !super::enabled() {
        return Parent::None;
    }
    if let Ok(parent) = PARENT.try_with(Parent::clone) {
        return parent;
    }
    let current = tracing::Span::current();
    if !current.metadata().is_some_and(super::exported) {
        return Parent::ViaTracing;
    }
    let context = current.context();
    if context.span().span_context().is_sampled() {
        Parent::Exported(context)
    } else {
        Parent::None
    }
}

/// Runs `future` so that the spans opened in it belong to `parent` (as the caller's own task's
/// would): for work moved to another task, and to look the parent up once for a whole task.
pub fn within<F: Future>(parent: Parent, future: F) -> impl Future<Output = F::Output> {
    match parent {
        Parent::ViaTracing => Either::Right(future),
        Parent::None if !super::enabled() => Either::Right(future),
        parent => Either::Left(PARENT.scope(parent, future)),
    }
}

/// A span with others inside it (the engine's run of an operation). It starts when opened. It
/// ends, as a `tracing` span would, when it and every span opened inside it are gone: each
/// child holds its parent's context, and the SDK ends a span when the last context holding it
/// is dropped. So a data loader's task that outlives the engine's run, or the validation span
/// that ends after it, still ends inside it.
#[derive(Debug)]
#[must_use = "a scope span ends when it is dropped"]
pub struct Scope(Option<Context>);

impl Scope {
    pub fn open(name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) -> Self {
        let (Parent::Exported(parent), Some(tracer)) = (parent(), super::tracer()) else {
            return Self(None);
        };
        let span = tracer
            .span_builder(name)
            .with_attributes(attributes())
            .start_with_context(tracer, &parent);
        Self(Some(parent.with_span(span)))
    }

    /// Runs `future` inside this span.
    pub async fn run<F: Future>(self, future: F) -> F::Output {
        within(self.as_parent(), future).await
    }

    /// Where a span opened inside this one belongs.
    pub fn as_parent(&self) -> Parent {
        self.0.clone().map_or(Parent::None, Parent::Exported)
    }
}

/// A span with nothing inside it (a statement, parsing, validation): built and handed to the
/// SDK when it is dropped, with the time it was opened as its start.
#[derive(Debug)]
#[must_use = "a span ends when it is dropped"]
pub struct Leaf(State);

#[derive(Debug)]
enum State {
    Off,
    Direct(Box<Open>),
    /// Held only to be closed when dropped.
    Traced {
        _span: tracing::Span,
    },
}

#[derive(Debug)]
struct Open {
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    parent: Context,
    start: SystemTime,
}

impl Leaf {
    /// Opens a span in `parent`; `describe` gives its name and attributes, and is called only
    /// when the span is exported.
    pub fn open_in(
        parent: Parent,
        describe: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
    ) -> Self {
        match parent {
            Parent::None => Self(State::Off),
            Parent::ViaTracing => {
                let (name, attributes) = describe();
                Self(State::Traced {
                    _span: traced(&name, &attributes),
                })
            }
            Parent::Exported(parent) => {
                let (name, attributes) = describe();
                Self(State::Direct(Box::new(Open {
                    name,
                    attributes,
                    parent,
                    start: SystemTime::now(),
                })))
            }
        }
    }

    /// Opens a span in this task's current parent.
    pub fn open(describe: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>)) -> Self {
        Self::open_in(parent(), describe)
    }
}

/// Runs `work` with `span` open from its start to its end.
pub async fn while_open<F: Future>(span: Leaf, work: F) -> F::Output {
    let output = work.await;
    drop(span);
    output
}

/// The fallback `tracing` span (see [`Parent::ViaTracing`]), with the same name and attributes.
fn traced(name: &str, attributes: &[KeyValue]) -> tracing::Span {
    let span = tracing::debug_span!(
        "span",
        otel.name = name,
        db.system.name = tracing::field::Empty,
        db.operation.name = tracing::field::Empty,
        db.collection.name = tracing::field::Empty,
        graphql.operation.name = tracing::field::Empty,
    );
    for attribute in attributes {
        let value = attribute.value.as_str();
        match attribute.key.as_str() {
            "db.system.name" => span.record("db.system.name", value.as_ref()),
            "db.operation.name" => span.record("db.operation.name", value.as_ref()),
            "db.collection.name" => span.record("db.collection.name", value.as_ref()),
            "graphql.operation.name" => span.record("graphql.operation.name", value.as_ref()),
            _ => &span,
        };
    }
    span
}

/// Ends the span when its work ends, or when a request that stopped waiting drops it.
impl Drop for Leaf {
    fn drop(&mut self) {
        let State::Direct(open) = std::mem::replace(&mut self.0, State::Off) else {
            return;
        };
        let Some(tracer) = super::tracer() else {
            return;
        };
        tracer
            .span_builder(open.name)
            .with_start_time(open.start)
            .with_attributes(open.attributes)
            .start_with_context(tracer, &open.parent)
            .end();
    }
}
