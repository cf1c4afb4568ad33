//! A real OTLP/HTTP trace receiver for the telemetry specs: it decodes what Rowguard exports with
//! the official OpenTelemetry protobuf definitions (`opentelemetry-proto`) and keeps every span,
//! plus the raw request bodies (so a marker cannot hide in a field the decoder skips).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};
use prost::Message;

/// One received span.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub attributes: Vec<(String, String)>,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    raw: Vec<u8>,
    /// Every string in every decoded request: resource, scope, span and event attributes, names.
    strings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OtlpReceiver {
    address: SocketAddr,
    received: Arc<Mutex<Received>>,
}

fn text(value: Option<&Any>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn traces(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static str {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return "";
    };
    let mut received = received.lock().expect("receiver lock");
    received.raw.extend_from_slice(&body);
    for resource_spans in &request.resource_spans {
        if let Some(resource) = &resource_spans.resource {
            for (k, v) in pairs(&resource.attributes) {
                received.strings.extend([k, v]);
            }
        }
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let attributes = pairs(&span.attributes);
                received.strings.push(span.name.clone());
                for (k, v) in &attributes {
                    received.strings.extend([k.clone(), v.clone()]);
                }
                for event in &span.events {
                    received.strings.push(event.name.clone());
                    for (k, v) in pairs(&event.attributes) {
                        received.strings.extend([k, v]);
                    }
                }
                received.spans.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes,
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                });
            }
        }
    }
    ""
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver port");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        OtlpReceiver { address, received }
    }

    /// The base URL to give Rowguard as `ROWGUARD_OTEL_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().expect("receiver lock").spans.clone()
    }

    /// The spans of `trace_id` once a span of every name in `names` has arrived (or panics
    /// after 30 s). The SDK exports in batches, so a trace's spans can arrive in several.
    pub async fn trace(&self, trace_id: &str, names: &[&str]) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<ReceivedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if names
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
            {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "not every span of {names:?} arrived for trace {trace_id}: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `marker` appears anywhere in what was received: decoded strings or raw bytes.
    pub fn contains(&self, marker: &str) -> bool {
        let received = self.received.lock().expect("receiver lock");
        received.strings.iter().any(|s| s.contains(marker))
            || received
                .raw
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
    }
}
