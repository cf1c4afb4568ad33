//! OpenTelemetry traces (OTLP over HTTP) when `ROWGUARD_OTEL_ENDPOINT` is set. Only Rowguard's
//! own spans are exported, never log events: a span's fields are chosen where it is created
//! (ids, names from fixed sets, codes, statement names), so variables, arguments, results,
//! tokens and headers cannot reach the collector. W3C `traceparent` from the client continues
//! its trace; the response carries the trace back.

pub mod spans;

use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::settings::LogSettings;

/// The exporter's HTTP client: hyper on the process's Tokio runtime. The SDK's batch processor
/// exports from a thread of its own, so each export is handed to the runtime.
#[derive(Debug, Clone)]
struct TokioHttp {
    inner: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for TokioHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.send_bytes(request).await })
            .await?
    }
}

/// The exporting tracer, for the spans made without `tracing`: all but the request's own and the
/// token check's (see [`spans`]).
static TRACER: std::sync::OnceLock<opentelemetry_sdk::trace::Tracer> = std::sync::OnceLock::new();

/// Whether traces are exported (decided once at start).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The tracer spans are exported through, when traces are exported.
pub fn tracer() -> Option<&'static opentelemetry_sdk::trace::Tracer> {
    TRACER.get()
}

/// The tracer provider, flushed and shut down on drop.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The OTLP traces URL for a configured endpoint (a collector's base URL or its traces URL).
fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    }
}

/// Starts exporting, when configured: the provider and the tracing layer that feeds it. Must
/// run inside the Tokio runtime.
/// The tracing layer that feeds the exporter.
pub type TraceLayer<S> =
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

pub fn start<S>(settings: &LogSettings) -> Result<Option<(Telemetry, TraceLayer<S>)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let Some(endpoint) = &settings.otel_endpoint else {
        return Ok(None);
    };
    let client = TokioHttp {
        inner: opentelemetry_http::hyper::HyperClient::with_default_connector(
            Duration::from_secs(10),
            None,
        ),
        runtime: tokio::runtime::Handle::current(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(Duration::from_secs(10))
        .build()
        // Neither the URL nor the exporter's message, which quotes it: it may carry credentials.
        .map_err(|_| {
            "ROWGUARD_OTEL_ENDPOINT is not a valid http(s) URL (the value is not shown: it may hold credentials)"
                .to_owned()
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.otel_sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.otel_service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("rowguard");
    // Started once per process, as the subscriber it feeds is global.
    let _ = TRACER.set(tracer.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Nothing in Rowguard reads OpenTelemetry's own current context, so spans are not activated
    // as it on every poll (that attach and detach was more than half of what tracing cost a
    // request), and spans carry no code location, thread or target: attributes nobody asked for.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false);
    Ok(Some((Telemetry { provider }, layer)))
}

/// Only Rowguard's spans go to the collector: no events (log lines) and nothing from
/// libraries, whose spans and events may carry SQL text, headers or bodies.
pub fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && metadata.target().starts_with("rowguard")
}

/// Continues the client's trace: the W3C `traceparent` header only. Its `tracestate` is
/// dropped: free text of the client's choosing, which the SDK would copy into every span it
/// exports, so a client could send PHI to the collector through it.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !enabled() {
        return;
    }
    struct Extractor<'h>(&'h HeaderMap);
    impl opentelemetry::propagation::Extractor for Extractor<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent")
                .then(|| self.0.get(key)?.to_str().ok())
                .flatten()
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let context = TraceContextPropagator::new().extract(&Extractor(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace id of `span` (32 lower-case hex digits), when it is being traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The `traceparent` header that hands `span`'s trace back to the client.
pub fn traceparent(span: &tracing::Span) -> Option<HeaderValue> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    HeaderValue::from_str(&format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    ))
    .ok()
}

/// Adds `traceparent` to the response of a traced request.
pub async fn hand_back(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    if let Some(value) = traceparent(&tracing::Span::current()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_to_a_base_url() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
