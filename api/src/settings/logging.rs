//! Logging, traces and the async runtime: read before anything else starts.

use clap::{Args, ValueEnum};

/// Log output and runtime size, shared by every command.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log filter (`info`, `debug`, `rowguard=debug`, ...). Libraries that could log statements,
    /// headers or bodies are capped at `info`/`warn` whatever this says.
    #[arg(
        long = "log",
        env = "ROWGUARD_LOG",
        default_value = "info",
        global = true
    )]
    pub filter: String,

    /// `json` (one object per line) or `text`; `serve` defaults to JSON, other commands to text.
    #[arg(
        long = "log-format",
        env = "ROWGUARD_LOG_FORMAT",
        value_enum,
        global = true
    )]
    pub format: Option<LogFormat>,

    /// Async runtime threads (default: one per core). The database often shares the machine's
    /// cores, and fewer gateway threads mean fewer context switches.
    #[arg(long = "worker-threads", env = "ROWGUARD_WORKER_THREADS", global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// OpenTelemetry collector to send traces to, over OTLP/HTTP (e.g. `http://127.0.0.1:4318`,
    /// the collector agent next to Rowguard). Unset: no tracing, at no cost.
    #[arg(
        long = "otel-endpoint",
        env = "ROWGUARD_OTEL_ENDPOINT",
        global = true,
        hide_env_values = true
    )]
    pub otel_endpoint: Option<String>,

    /// The `service.name` of exported traces.
    #[arg(
        long = "otel-service-name",
        env = "ROWGUARD_OTEL_SERVICE_NAME",
        default_value = "rowguard",
        global = true
    )]
    pub otel_service_name: String,

    /// Share of new traces to record (0.0–1.0); a client's sampled `traceparent` is always
    /// followed.
    #[arg(
        long = "otel-sample-ratio",
        env = "ROWGUARD_OTEL_SAMPLE_RATIO",
        default_value_t = 1.0,
        global = true
    )]
    pub otel_sample_ratio: f64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}
