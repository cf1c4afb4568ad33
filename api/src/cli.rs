//! The `rowguard` command line: parse, set up logging, dispatch. `main.rs` only calls [`main`].

use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

use crate::db::Database;
use crate::migrate::{self, MigrateAction};
use crate::settings::{
    DatabaseSettings, DevSettings, LogFormat, LogSettings, MigrationSettings, ServeSettings,
};

#[derive(Debug, Parser)]
#[command(
    name = "rowguard",
    version,
    about = "GraphQL gateway guarded by PostgreSQL row level security"
)]
struct Cli {
    #[command(flatten)]
    log: LogSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try Rowguard locally: embedded PostgreSQL, demo data, a development identity provider
    /// and the playground. Never use it for real data.
    Dev {
        #[command(flatten)]
        settings: Box<DevSettings>,
    },
    /// Serve the GraphQL API (production).
    Serve {
        #[command(flatten)]
        settings: Box<ServeSettings>,
    },
    /// Apply, revert or list the database migrations (connects as the schema owner).
    Migrate {
        #[arg(value_enum, default_value_t = MigrateAction::Up)]
        action: MigrateAction,
        #[command(flatten)]
        settings: MigrationSettings,
    },
    /// Print the GraphQL schema (SDL), as committed in schema.graphql.
    Schema,
    /// Audit-trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Trusted-documents tools.
    Operations {
        #[command(subcommand)]
        command: OperationsCommand,
    },
    /// Run the startup self-check against DATABASE_URL and report what would stop `serve`.
    Check {
        #[command(flatten)]
        settings: DatabaseSettings,
    },
}

/// Formats of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    /// FHIR R4 AuditEvent resources as NDJSON.
    FhirNdjson,
}

#[derive(Debug, Subcommand)]
enum OperationsCommand {
    /// Write the trusted-documents manifest (Apollo's persisted-query manifest format) for the
    /// `.graphql` files in DIR, after validating every document against the served schema. A
    /// `# roles: coordinator, auditor` comment line restricts a file's operations to those roles.
    Manifest {
        /// Directory of `.graphql` files (operations and fragments).
        dir: std::path::PathBuf,
        /// Where to write the manifest (default: standard output).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Prove the trail: recompute every link from the events, check every checkpoint's
    /// signature and that the chain still extends the newest one. Exits non-zero, naming each
    /// problem, on an altered, deleted, inserted, reordered or long-unsealed event, a cut-off
    /// tail, a re-hashed chain, or a forged or missing checkpoint. Connects with
    /// ROWGUARD_MIGRATION_DATABASE_URL as the schema owner.
    Verify {
        #[command(flatten)]
        settings: MigrationSettings,
        /// Public key(s) whose checkpoints are trusted (PEM files): the current key and any
        /// earlier one still signing part of the trail.
        #[arg(
            long = "public-key",
            env = "ROWGUARD_AUDIT_PUBLIC_KEYS",
            value_delimiter = ',',
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        public_keys: Vec<std::path::PathBuf>,
        /// The external copy of the checkpoints (ROWGUARD_AUDIT_CHECKPOINT_DIR of the sealers).
        #[arg(long = "checkpoints", env = "ROWGUARD_AUDIT_CHECKPOINT_DIR")]
        checkpoints: Option<std::path::PathBuf>,
        /// Seconds an event may wait to be sealed before it counts as a problem.
        #[arg(long = "max-seal-lag-secs", default_value_t = 300)]
        max_seal_lag_secs: u64,
    },
    /// Retire one past month of the trail: verify the whole trail, export the month's events
    /// with their links to FILE, sign a statement of what was archived (stored in the database
    /// and the checkpoint directory) and detach the month's partition. The rest of the trail
    /// keeps verifying; `audit verify` accounts for the month through the signed statement.
    Archive {
        #[command(flatten)]
        settings: MigrationSettings,
        /// The month to archive, `YYYY-MM` (UTC).
        #[arg(long)]
        month: String,
        /// Where to write the export (refuses to overwrite).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The audit signing key (signs the archive statement).
        #[arg(
            long = "signing-key",
            env = "ROWGUARD_AUDIT_SIGNING_KEY",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        signing_key: std::path::PathBuf,
        /// Earlier public keys whose checkpoints are still part of the trail.
        #[arg(
            long = "public-key",
            env = "ROWGUARD_AUDIT_PUBLIC_KEYS",
            value_delimiter = ',',
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        public_keys: Vec<std::path::PathBuf>,
        /// The checkpoint directory (checked, and given the archive statement).
        #[arg(long = "checkpoints", env = "ROWGUARD_AUDIT_CHECKPOINT_DIR")]
        checkpoints: Option<std::path::PathBuf>,
    },
    /// Export the sealed trail as FHIR R4 AuditEvent resources (NDJSON, IHE BALP shape), one per
    /// event and patient, for an audit repository or SIEM. The whole trail is verified first; a
    /// trail that does not verify exports nothing. Each resource carries its chain link, so
    /// `--resume` continues after the last link the file holds. Connects with
    /// ROWGUARD_MIGRATION_DATABASE_URL as the schema owner.
    Export {
        #[command(flatten)]
        settings: MigrationSettings,
        /// Only events at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Output format (FHIR R4 AuditEvent, one JSON resource per line).
        #[arg(long = "format", id = "export_format", value_enum, default_value_t = ExportFormat::FhirNdjson)]
        format: ExportFormat,
        /// Write here (a new file, or with --resume the file to continue); default stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Continue the export in --out after the last chain link it holds.
        #[arg(long, default_value_t = false)]
        resume: bool,
        /// At most this many events this run (continue with --resume).
        #[arg(long)]
        limit: Option<u64>,
        /// Public key(s) whose checkpoints are trusted (as for `audit verify`).
        #[arg(
            long = "public-key",
            env = "ROWGUARD_AUDIT_PUBLIC_KEYS",
            value_delimiter = ',',
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        public_keys: Vec<std::path::PathBuf>,
        /// The external copy of the checkpoints.
        #[arg(long = "checkpoints", env = "ROWGUARD_AUDIT_CHECKPOINT_DIR")]
        checkpoints: Option<std::path::PathBuf>,
    },
    /// Create an Ed25519 signing key for audit checkpoints: writes the private key to FILE
    /// (mode 0600) and the public key to FILE.pub, and prints the public key.
    Keygen {
        /// Where to write the private key (refuses to overwrite).
        file: std::path::PathBuf,
    },
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let args = match crate::settings::file::with_config_file(
        &Cli::command(),
        std::env::args_os().collect(),
    ) {
        Ok(args) => args,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{}", explain(&e));
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.log.worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, Command::Serve { .. } | Command::Dev { .. });
    runtime.block_on(async {
        // The trace exporter needs the runtime, so logging starts inside it.
        let telemetry = match init_logging(
            &cli.log,
            matches!(cli.command, Command::Serve { .. }),
            serving,
        ) {
            Ok(telemetry) => telemetry,
            Err(message) => {
                let _ = writeln!(std::io::stderr(), "{message}");
                return ExitCode::from(2);
            }
        };
        let outcome = run(cli.command).await;
        // Flushes the spans still waiting to be exported.
        drop(telemetry);
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure { message, status }) => {
                tracing::error!("{message}");
                ExitCode::from(status)
            }
        }
    })
}

/// A command's failure: what to say, and the exit status that says it to a script (1 unless the
/// command distinguishes more).
struct Failure {
    message: String,
    status: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, status: 1 }
    }
}

impl From<crate::audit::verify::VerifyFailure> for Failure {
    fn from(failure: crate::audit::verify::VerifyFailure) -> Self {
        use crate::audit::verify::VerifyFailure;
        match failure {
            VerifyFailure::NotIntact(message) => Self { message, status: 1 },
            VerifyFailure::CouldNotCheck(message) => Self { message, status: 2 },
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    let outcome: Result<(), String> = match command {
        #[cfg(feature = "dev")]
        Command::Dev { settings } => crate::dev::run(&settings, shutdown_signal()).await,
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => Err(
            "this build of rowguard was made without the `dev` feature (production builds leave \
             it out); run `cargo run --release -- dev` from a checkout"
                .to_owned(),
        ),
        Command::Serve { settings } => crate::server::serve(&settings, shutdown_signal())
            .await
            .map_err(|e| e.to_string()),
        Command::Migrate { action, settings } => migrate::run(&settings, action)
            .await
            .map_err(|e| format!("migration failed: {e}")),
        // The SDL is the command's output, so it goes to stdout (logs go to stderr).
        Command::Operations {
            command: OperationsCommand::Manifest { dir, out },
        } => crate::trusted::generate::run_command(&dir, out.as_deref()),
        Command::Schema => std::io::stdout()
            .write_all(crate::graphql::sdl().as_bytes())
            .map_err(|e| format!("writing the schema: {e}")),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    settings,
                    public_keys,
                    checkpoints,
                    max_seal_lag_secs,
                },
        } => {
            return crate::audit::verify::run_command(
                &settings,
                &public_keys,
                checkpoints,
                max_seal_lag_secs,
            )
            .await
            .map_err(Failure::from);
        }
        Command::Audit {
            command:
                AuditCommand::Archive {
                    settings,
                    month,
                    out,
                    signing_key,
                    public_keys,
                    checkpoints,
                },
        } => crate::audit::archive::run_command(
            &settings,
            &month,
            &out,
            &signing_key,
            &public_keys,
            checkpoints,
        )
        .await
        .map(|summary| {
            let _ = std::io::stdout().write_all(summary.as_bytes());
        }),
        Command::Audit {
            command:
                AuditCommand::Export {
                    settings,
                    since,
                    until,
                    format: ExportFormat::FhirNdjson,
                    out,
                    resume,
                    limit,
                    public_keys,
                    checkpoints,
                },
        } => crate::audit::export::run_command(
            &settings,
            crate::audit::export::ExportRange {
                since,
                until,
                after_link: 0,
                limit,
                redo_link: None,
            },
            out,
            resume,
            &public_keys,
            checkpoints,
        )
        .await
        // The export may be on stdout: the summary goes to stderr.
        .map(|summary| {
            let _ = std::io::stderr().write_all(summary.as_bytes());
        }),
        Command::Audit {
            command: AuditCommand::Keygen { file },
        } => crate::audit::keys::write_new_key(&file).map(|public| {
            let _ = std::io::stdout().write_all(public.as_bytes());
        }),
        Command::Check { settings } => {
            let db = Database::connect(&settings)
                .await
                .map_err(|e| e.to_string())?;
            db.self_check().await.map_err(|e| e.to_string())?;
            tracing::info!("self-check passed: row level security is enforced for this login");
            Ok(())
        }
    };
    outcome.map_err(Failure::from)
}

/// Structured JSON logs for `serve` (ROWGUARD_LOG_FORMAT=text for humans); text elsewhere.
/// Logs carry request ids, operation names, codes and durations, never PHI.
/// Logs to stderr (JSON for `serve`), and exports traces when a collector is configured (for
/// the serving commands only).
fn init_logging(
    settings: &LogSettings,
    json_by_default: bool,
    serving: bool,
) -> Result<Option<crate::telemetry::Telemetry>, String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let (kept, dropped) = capped_targets_removed(&settings.filter);
    let filter = phi_safe_filter(
        tracing_subscriber::EnvFilter::try_new(&kept)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    let json = match settings.format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => json_by_default,
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let registry = tracing_subscriber::registry().with(logs.with_filter(filter));
    let report_dropped = move || {
        if !dropped.is_empty() {
            tracing::warn!(
                ignored = ?dropped,
                "log directives for libraries that could log PHI (or naming no target) are ignored; \
                 those libraries stay at their ceilings"
            );
        }
    };
    let telemetry = if serving {
        crate::telemetry::start(settings)?
    } else {
        None
    };
    match telemetry {
        Some((telemetry, traces)) => {
            registry
                .with(traces.with_filter(tracing_subscriber::filter::filter_fn(
                    crate::telemetry::exported,
                )))
                .init();
            report_dropped();
            Ok(Some(telemetry))
        }
        None => {
            registry.init();
            report_dropped();
            Ok(None)
        }
    }
}

/// Caps libraries that log statements, parameters, headers or bodies at their verbose levels:
/// whatever `ROWGUARD_LOG` says (even `trace`), they never log below these levels, so no PHI
/// reaches the logs through them. Rowguard's own events carry ids, names and codes only.
pub fn phi_safe_filter(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    CEILINGS
        .iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, tracing_subscriber::EnvFilter::add_directive)
}

/// `filter` without its directives for the capped libraries or their modules: a directive for
/// `sqlx::query` is more specific than the `sqlx` ceiling and would win over it. A span
/// directive naming no target (`[request]=trace`) is dropped too: it would enable every
/// library's events inside that span, past the ceilings.
pub fn without_capped_targets(filter: &str) -> String {
    capped_targets_removed(filter).0
}

/// `filter` without the directives [`without_capped_targets`] drops, and those directives.
///
/// EnvFilter matches a directive's target as a plain prefix of an event's target and lets the
/// longest win, so any target that is a prefix of a capped library's name (`reqwest:`, `sqlx`)
/// or starts with it (`sqlx::query`, `sqlx_core`) could lift the ceiling; and a span directive,
/// with a target or without, enables every library's events inside the span. All are dropped.
/// A filter left with no level of its own for everything else (`sqlx=trace` alone, or only
/// `tower_http=debug`) would silence Rowguard's own warnings: it gets `warn` for the rest.
fn capped_targets_removed(filter: &str) -> (String, Vec<String>) {
    let capped = |directive: &str| {
        if directive.contains('[') {
            return true;
        }
        let target = directive.split('=').next().unwrap_or_default().trim();
        !target.is_empty()
            && !is_level(target)
            && CEILINGS.iter().any(|ceiling| {
                let library = ceiling.split('=').next().unwrap_or_default();
                // A prefix of the library's name, or the name followed by a module path
                // (`::`, or a stray `:`) or one of its own crates (`_core`).
                library.starts_with(target)
                    || target.strip_prefix(library).is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with(':') || rest.starts_with('_')
                    })
            })
    };
    let (dropped, kept): (Vec<&str>, Vec<&str>) = filter
        .split(',')
        .filter(|directive| !directive.trim().is_empty())
        .partition(|directive| capped(directive));
    let mut kept: Vec<&str> = kept;
    if !kept.iter().any(|directive| is_level(directive.trim())) {
        kept.insert(0, if kept.is_empty() { "info" } else { "warn" });
    }
    (
        kept.join(","),
        dropped.into_iter().map(str::to_owned).collect(),
    )
}

/// A directive that is a level alone (`info`), which applies to every target not named.
fn is_level(directive: &str) -> bool {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|level| directive.eq_ignore_ascii_case(level))
}

/// The most verbose level each library that could log PHI may log at.
const CEILINGS: [&str; 15] = [
    "sqlx=warn",
    "sqlx_core=warn",
    "sqlx_postgres=warn",
    // Its warnings quote an unknown connection parameter's value (`sslpassword=...`) and a
    // malformed `.pgpass` line, password included.
    "sqlx_postgres::options=error",
    "sea_orm=info",
    "sea_query=info",
    "sea_orm_migration=info",
    "async_graphql=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "reqwest=info",
    "rustls=info",
    "oauth2=info",
    "openidconnect=info",
];

/// clap's own message, led by the environment variable the setting is read from, since that is
/// how operators configure Rowguard.
fn explain(error: &clap::Error) -> String {
    // clap quotes the value it refused, and the argument it did not know: a key or a URL with
    // its password, given where it did not belong, was printed whole.
    let mut rendered = error.render().to_string();
    let mut quoted: Vec<String> = Vec::new();
    for kind in [ContextKind::InvalidValue, ContextKind::InvalidArg] {
        match error.get(kind) {
            Some(ContextValue::String(value)) => quoted.push(value.clone()),
            Some(ContextValue::Strings(values)) => quoted.extend(values.iter().cloned()),
            _ => {}
        }
    }
    for value in quoted.iter().filter(|value| may_be_secret(value)) {
        rendered = rendered.replace(value.as_str(), "<value not shown: it may be a secret>");
    }
    let args: Vec<String> = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => vec![arg.clone()],
        Some(ContextValue::Strings(args)) => args.clone(),
        _ => return rendered,
    };
    let args: Vec<String> = args
        .into_iter()
        .map(|arg| {
            if may_be_secret(&arg) {
                "<argument not shown>".to_owned()
            } else {
                arg
            }
        })
        .collect();
    let command = Cli::command();
    let named: Vec<String> = args
        .iter()
        .map(|arg| {
            let long = arg
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_start_matches("--");
            command
                .get_subcommands()
                .flat_map(|sub| sub.get_arguments())
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_env())
                .map_or_else(
                    || format!("--{long}"),
                    |env| format!("{} (--{long})", env.to_string_lossy()),
                )
        })
        .collect();
    let problem = if error.kind() == ErrorKind::MissingRequiredArgument {
        "missing"
    } else {
        "invalid"
    };
    format!("{problem}: {}\n{rendered}", named.join(", "))
}

/// Whether a value clap would quote could be a secret: key material, a URL with credentials, or
/// anything long enough to be a token or a key.
fn may_be_secret(value: &str) -> bool {
    value.contains('\n') || value.contains("-----") || value.contains('@') || value.len() >= 32
}

/// Resolves on SIGINT or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directive_for_a_module_of_a_capped_library_is_dropped() {
        // A review: `sqlx::query=trace` is more specific than the `sqlx=warn` ceiling, so it won
        // and statements were logged.
        assert_eq!(
            super::without_capped_targets(
                "trace,sqlx::query=trace,hyper::proto::h1[conn]=debug,sea_orm,rowguard=debug"
            ),
            "trace,rowguard=debug"
        );
        assert_eq!(
            super::without_capped_targets("info,sqlxy=debug"),
            "info,sqlxy=debug"
        );
    }

    #[test]
    fn a_directive_for_a_capped_librarys_own_crates_is_dropped_and_reported() {
        // A review: `sqlx_core=trace` and `sqlx_postgres=trace` are more specific than the
        // `sqlx` ceiling and were not dropped.
        let (kept, dropped) = super::capped_targets_removed(
            "trace,sqlx_core=trace,sqlx_postgres::options=debug,rowguard=debug",
        );
        assert_eq!(kept, "trace,rowguard=debug");
        assert_eq!(dropped, ["sqlx_core=trace", "sqlx_postgres::options=debug"]);
    }

    #[test]
    fn a_span_directive_is_dropped_whatever_its_target() {
        // A review: `[request]=trace` turned on every library's events inside a request; the
        // re-review: so did `rowguard[request]=trace`.
        assert_eq!(
            super::without_capped_targets("info,[request]=trace,rowguard[request]=debug"),
            "info"
        );
    }

    #[test]
    fn a_target_that_is_a_prefix_of_a_capped_library_is_dropped() {
        // The re-review: `reqwest:` is neither `reqwest` nor `reqwest::…`, but EnvFilter
        // matches it as a prefix of `reqwest::connect`, and it is longer than the cap.
        assert_eq!(
            super::without_capped_targets(
                "info,reqwest:=trace,sqlx:=trace,sq=debug,rowguard=debug"
            ),
            "info,rowguard=debug"
        );
    }

    #[test]
    fn a_filter_without_a_level_of_its_own_keeps_warnings() {
        // The re-review: `sqlx::query=trace,tower_http=debug` logged nothing at all, not even
        // the warning that a directive was ignored.
        assert_eq!(
            super::without_capped_targets("sqlx::query=trace,tower_http=debug"),
            "warn,tower_http=debug"
        );
        assert_eq!(super::without_capped_targets("sqlx=trace"), "info");
        assert_eq!(super::without_capped_targets("debug"), "debug");
    }

    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
