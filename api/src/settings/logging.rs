//! Logging and the async runtime: read before anything else starts.

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
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}
