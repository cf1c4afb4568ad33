//! Liveness and readiness probes. They never reveal data, only which dependency is missing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus metrics. No PHI and bounded labels; expose it to your monitoring network only.
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let text = state
        .metrics
        .render(state.db.open_connections(), state.db.statements_executed());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Ready to serve: the issuer's keys are loaded and the database answers.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let keys = state.auth.is_ready();
    let database = state.db.ping().await.is_ok();
    let self_check = !state.db.self_check_failing();
    let status = if keys && database && self_check {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    // A lagging sealer is reported, not made a reason to stop serving: taking every replica out
    // of rotation would not seal anything faster. Monitor `rowguard_audit_unsealed_age_seconds`.
    let sealer = &state.metrics.shared.sealer;
    let sealing = if !state.limits.audit {
        "off"
    } else if sealer.is_failing() {
        "failing"
    } else if sealer.unsealed_age() > state.limits.seal_lag_alert {
        "lagging"
    } else {
        "ok"
    };
    // A Redis outage is reported, not a reason to stop serving: each replica then enforces its
    // own budgets (see `quota::shared`).
    let quota = match (state.quotas.mode(), state.quotas.sharing()) {
        (crate::quota::QuotaMode::Off, _) => "off",
        (_, None) => "local",
        (_, Some(true)) => "shared",
        (_, Some(false)) => "local (redis unreachable)",
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not ready" },
            "checks": {
                "identity_provider_keys": word(keys),
                "database": word(database),
                "self_check": if self_check { "ok" } else { "failing" },
                "audit_sealing": sealing,
                "audit_unsealed_age_secs": sealer.unsealed_age().as_secs(),
                "audit_checkpoints": match (sealer.is_signing(), sealer.checkpoints_unwritten()) {
                    (false, _) => "unsigned",
                    (true, false) => "signed",
                    (true, true) => "not written",
                },
                "quota": quota,
            }
        })),
    )
}
