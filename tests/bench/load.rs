//! One scenario: Rowguard under `wrk`, then the same transaction under `pgbench`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use serde_json::json;

use crate::dataset::Dataset;
use crate::replay;
use md5::{Digest, Md5};
use nix::unistd::{SysconfVar, sysconf};
use rowguard_tests::process::StopOnDrop;

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    audit: bool,
    kind: Kind,
    /// What differs in the gateway's settings from the default run.
    variant: Variant,
    /// Concurrent clients, when not the run's `--concurrency`.
    clients: Option<u32>,
    /// Whether PostGraphile serves the same page in the same rounds.
    pub peer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MyPatients,
    /// A page of 100 patients with their care teams: how cost grows with the response.
    MyPatientsWithCareTeams,
    PatientWithCareTeam,
    UpdatePatient,
}

/// The settings a scenario changes (all else is `serve`'s defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Default,
    QuotasOff,
    /// Quotas shared through a real Redis.
    QuotasInRedis,
    /// Every request traced (sample ratio 1.0) to an OTLP endpoint that discards what it gets.
    Tracing,
    /// The audit batch writer writes whatever has queued at once, without waiting for reads in
    /// flight to join the batch.
    NoAuditBatchWait,
}

const fn scenario(name: &'static str, kind: Kind) -> Scenario {
    Scenario {
        name,
        audit: true,
        kind,
        variant: Variant::Default,
        clients: None,
        peer: false,
    }
}

pub const SCENARIOS: [Scenario; 10] = [
    scenario("patients(first: 20)", Kind::MyPatients),
    Scenario {
        audit: false,
        peer: true,
        ..scenario("patients(first: 20), audit off", Kind::MyPatients)
    },
    Scenario {
        variant: Variant::QuotasOff,
        ..scenario("patients(first: 20), quotas off", Kind::MyPatients)
    },
    Scenario {
        variant: Variant::QuotasInRedis,
        ..scenario("patients(first: 20), quotas in Redis", Kind::MyPatients)
    },
    Scenario {
        variant: Variant::Tracing,
        ..scenario("patients(first: 20), tracing 100%", Kind::MyPatients)
    },
    Scenario {
        clients: Some(64),
        ..scenario("patients(first: 20), 64 clients", Kind::MyPatients)
    },
    scenario(
        "patients(first: 100) + careTeam",
        Kind::MyPatientsWithCareTeams,
    ),
    scenario("patient(id) + careTeam", Kind::PatientWithCareTeam),
    scenario("updatePatient", Kind::UpdatePatient),
    Scenario {
        variant: Variant::NoAuditBatchWait,
        ..scenario("patients(first: 20), no audit batch wait", Kind::MyPatients)
    },
];

/// What a feature costs: each pair measured side by side (with it, without it).
pub const COSTS: [[Scenario; 2]; 4] = [
    [SCENARIOS[0], SCENARIOS[2]],
    [SCENARIOS[3], SCENARIOS[2]],
    [SCENARIOS[4], SCENARIOS[0]],
    [SCENARIOS[9], SCENARIOS[0]],
];

#[derive(Debug, Default, Clone, Copy)]
pub struct Measured {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug)]
pub struct Row {
    pub rowguard: Measured,
    /// The same transactions replayed by pgbench (none for scenarios without a replay).
    pub pgbench: Option<Measured>,
    /// PostGraphile serving the same page, and its CPU per request.
    pub peer: Option<(Measured, f64)>,
    pub cpu_us_per_request: f64,
    pub max_rss_mb: f64,
    /// p99 of the oldest unsealed audit event's age, sampled while Rowguard ran.
    pub seal_lag_p99_s: Option<f64>,
}

/// `rowguard serve` configured for a scenario, with what its variant needs beside it; all of it
/// stopped when dropped (a failed run must not leave it).
pub struct Gateway {
    process: StopOnDrop,
    base: String,
    metrics_port: u16,
    _sidecars: Sidecars,
}

impl Gateway {
    async fn start(
        binary: &Path,
        issuer: &TestIssuer,
        db: &Dataset,
        scenario: Scenario,
        concurrency: u32,
        sealer: bool,
    ) -> Self {
        let port = rowguard::dev::postgres::free_port().expect("port");
        let metrics_port = rowguard::dev::postgres::free_port().expect("port");
        let mut command = Command::new(binary);
        if let Ok(threads) = std::env::var("BENCH_WORKER_THREADS") {
            command.env("ROWGUARD_WORKER_THREADS", threads);
        }
        let mut sidecars = Sidecars::default();
        match scenario.variant {
            Variant::Default => {}
            Variant::QuotasOff => {
                command.env("ROWGUARD_QUOTA_MODE", "off");
            }
            Variant::QuotasInRedis => {
                let redis = rowguard_tests::redis::TestRedis::start();
                command.env("ROWGUARD_QUOTA_REDIS_URL", redis.url());
                sidecars._redis = Some(redis);
            }
            Variant::Tracing => {
                let (endpoint, sink, exports) = keeping_otlp_sink().await;
                command
                    .env("ROWGUARD_OTEL_ENDPOINT", endpoint)
                    .env("ROWGUARD_OTEL_SAMPLE_RATIO", "1.0");
                sidecars._sink = Some(sink);
                sidecars.exports = Some(exports);
            }
            Variant::NoAuditBatchWait => {
                command.env("ROWGUARD_AUDIT_BATCH_WAIT_MS", "0");
            }
        }
        let process = StopOnDrop(
            command
                .arg("serve")
                // Budgets this load never reaches: it measures other things.
                .env("ROWGUARD_QUOTA_RATE", "10000000")
                .env("ROWGUARD_QUOTA_BURST", "10000000")
                .env("DATABASE_URL", &db.gateway_url)
                .env("ROWGUARD_OIDC_ISSUER", issuer.url())
                .env("ROWGUARD_OIDC_AUDIENCES", SPA_CLIENT_ID)
                .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "ROWGUARD_METRICS_LISTEN",
                    format!("127.0.0.1:{metrics_port}"),
                )
                .env("ROWGUARD_DB_MAX_CONNECTIONS", concurrency.to_string())
                .env("ROWGUARD_AUDIT", scenario.audit.to_string())
                .env("ROWGUARD_AUDIT_SEALER", sealer.to_string())
                .env("ROWGUARD_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("starting rowguard"),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&base).await;
        check_one_request(issuer, db, scenario, &base).await;
        Self {
            process,
            base,
            metrics_port,
            _sidecars: sidecars,
        }
    }
}

/// Two read scenarios that differ only in the gateway's settings, measured in alternating runs
/// against two gateways running side by side (same dataset, same moment, same trail), so that a
/// difference of a few percent is not swamped by the drift between scenarios run minutes apart.
/// Neither seals: a third process under no load does, so sealing work lands on neither side, and
/// the order alternates each round. Returns each side's median run and CPU per request.
pub async fn compare(
    binary: &Path,
    issuer: &TestIssuer,
    db: &Dataset,
    pair: [Scenario; 2],
    concurrency: u32,
    duration: Duration,
    rounds: u32,
) -> [(Measured, f64); 2] {
    let dir = std::env::temp_dir().join(format!("rowguard-bench-ab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("load dir");
    let script = dir.join("load.lua");
    std::fs::write(&script, wrk_script(issuer, db, pair[0], concurrency)).expect("lua");
    let sealer = Gateway::start(binary, issuer, db, SCENARIOS[0], 1, true).await;
    let mut gateways = Vec::new();
    for scenario in pair {
        gateways.push(Gateway::start(binary, issuer, db, scenario, concurrency, false).await);
    }
    let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    let mut cpu = [(0u64, 0.0f64); 2];
    // Requests each side served outside the measured runs (the readiness check, the warm-up),
    // to compare every request with the spans its collector received.
    let mut unmeasured = [1.0f64; 2];
    // The whole machine's busy CPU during each side's runs: with everything on two cores, its
    // ratio per request estimates the throughput ratio without the drift between runs.
    let mut machine = [0u64; 2];
    for round in 0..=rounds.max(1) {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let gateway = &gateways[i];
            let load = Load {
                script: &script,
                base: &gateway.base,
                threads: PGBENCH_THREADS.min(concurrency),
                connections: concurrency,
                allowed_errors: 0,
            };
            // Round 0 warms both up.
            if round == 0 {
                unmeasured[i] += wrk(&load, Duration::from_secs(3)).rps * 3.0;
                continue;
            }
            let before = cpu_ticks(gateway.process.0.id());
            let machine_before = machine_busy_ticks();
            let run = wrk(&load, duration);
            machine[i] += machine_busy_ticks().saturating_sub(machine_before);
            cpu[i].0 += cpu_ticks(gateway.process.0.id()) - before;
            cpu[i].1 += run.rps * duration.as_secs_f64();
            eprintln!("  {}: Rowguard {:.0} req/s", pair[i].name, run.rps);
            runs[i].push(run);
        }
    }
    // A traced gateway's exporter sends what it holds within its schedule (5 s): what the
    // collector then has shows that the measured cost is every span exported, none dropped.
    if gateways.iter().any(|g| g._sidecars.exports.is_some()) {
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    for (i, gateway) in gateways.iter().enumerate() {
        if let Some(exports) = &gateway._sidecars.exports {
            let spans = exports.spans() as f64;
            let served = unmeasured[i] + cpu[i].1;
            eprintln!(
                "  {}: the collector received {spans:.0} spans for about {served:.0} requests ({:.1} per request)",
                pair[i].name,
                spans / served
            );
        }
    }
    let machine_per_request =
        |i: usize| machine[i] as f64 * 1_000_000.0 / clock_ticks() / cpu[i].1.max(1.0);
    let (with, without) = (machine_per_request(0), machine_per_request(1));
    eprintln!(
        "  the machine's CPU per request (all processes): {} {with:.0} µs, {} {without:.0} µs; without ÷ with {:.3}",
        pair[0].name,
        pair[1].name,
        without / with.max(1.0)
    );
    drop(gateways);
    drop(sealer);
    let _ = std::fs::remove_dir_all(&dir);
    let [a, b] = runs;
    let per_request = |(ticks, requests): (u64, f64)| {
        ticks as f64 * 1_000_000.0 / clock_ticks() / requests.max(1.0)
    };
    [
        (median(a), per_request(cpu[0])),
        (median(b), per_request(cpu[1])),
    ]
}

/// What runs beside the gateway for some variants, stopped when the scenario ends.
#[derive(Default)]
pub struct Sidecars {
    _redis: Option<rowguard_tests::redis::TestRedis>,
    _sink: Option<tokio::task::JoinHandle<()>>,
    /// What the tracing variant's collector received.
    exports: Option<Exports>,
}

pub async fn run(
    binary: &Path,
    issuer: &TestIssuer,
    db: &Dataset,
    scenario: Scenario,
    concurrency: u32,
    duration: Duration,
    rounds: u32,
) -> Row {
    let concurrency = scenario.clients.unwrap_or(concurrency);
    let gateway = Gateway::start(binary, issuer, db, scenario, concurrency, true).await;
    let (child, base, metrics_port) =
        (&gateway.process, gateway.base.clone(), gateway.metrics_port);

    let dir = std::env::temp_dir().join(format!("rowguard-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("load dir");
    let script = dir.join("load.lua");
    std::fs::write(&script, wrk_script(issuer, db, scenario, concurrency)).expect("lua");

    // Warm up (connections, caches, plans), then measure.
    // Update clients follow their own patient's version, one connection per wrk thread; the
    // read scenarios use two threads, like pgbench's `-j 2`.
    let (allowed, threads) = if scenario.kind == Kind::UpdatePatient {
        (u64::from(concurrency), concurrency)
    } else {
        (0, PGBENCH_THREADS.min(concurrency))
    };
    let load = Load {
        script: &script,
        base: &base,
        threads,
        connections: concurrency,
        allowed_errors: allowed,
    };
    wrk(&load, Duration::from_secs(3));
    let sql = dir.join("transaction.sql");
    let admin = rowguard_tests::connect(&db.admin_url(), 1, None).await;
    let peer = if scenario.peer {
        Some(crate::peer::PostGraphile::start(issuer, db, concurrency, &dir).await)
    } else {
        None
    };
    let (mut peer_runs, mut peer_cpu, mut peer_requests) = (Vec::new(), 0u64, 0.0);
    let lag = LagSampler::start(metrics_port);
    // Rowguard and pgbench take turns, `rounds` times each, and each side reports its median
    // run: on a shared 2-core machine single runs drift by ±10%, which would swamp the ratio.
    let (mut rowguard_runs, mut pgbench_runs) = (Vec::new(), Vec::new());
    let (mut cpu, mut requests) = (0u64, 0.0);
    let mut batch_sizes = Vec::new();
    for _ in 0..rounds.max(1) {
        let events_before = last_event(&admin).await;
        lag.measuring(true);
        let cpu_before = cpu_ticks(child.0.id());
        let run = wrk(&load, duration);
        cpu += cpu_ticks(child.0.id()) - cpu_before;
        lag.measuring(false);
        requests += run.rps * duration.as_secs_f64();
        eprintln!("  {}: Rowguard {:.0} req/s", scenario.name, run.rps);
        rowguard_runs.push(run);
        // pgbench appends the audit batches as large as the gateway's were in this round.
        let batch = events_per_write(&admin, events_before).await;
        if scenario.audit {
            eprintln!("  {}: {batch:.2} events per audit write", scenario.name);
            batch_sizes.push(batch);
        }
        if let Some(script) = pgbench_script(scenario, batch.round().max(1.0) as u32) {
            std::fs::write(&sql, script).expect("pgbench script");
            let replay = pgbench(&sql, db, issuer, concurrency, duration, &dir);
            eprintln!("  {}: pgbench {:.0} tps", scenario.name, replay.rps);
            pgbench_runs.push(replay);
        }
        if let Some(peer) = &peer {
            let cpu_before = cpu_ticks(peer.pid());
            let run = wrk(&peer.load(threads, concurrency), duration);
            peer_cpu += cpu_ticks(peer.pid()) - cpu_before;
            peer_requests += run.rps * duration.as_secs_f64();
            eprintln!("  {}: PostGraphile {:.0} req/s", scenario.name, run.rps);
            peer_runs.push(run);
        }
    }
    let max_rss_mb = peak_rss_kb(child.0.id()) as f64 / 1024.0;
    let _ = admin.close().await;
    if !batch_sizes.is_empty() {
        batch_sizes.sort_by(f64::total_cmp);
        eprintln!(
            "  {}: median {:.2} events per audit write",
            scenario.name,
            batch_sizes[batch_sizes.len() / 2]
        );
    }
    let seal_lag_p99_s = scenario.audit.then(|| lag.p99()).flatten();
    drop(gateway);
    if let Some(peer) = peer {
        peer.stop(db).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let per_request =
        |ticks: u64, requests: f64| ticks as f64 * 1_000_000.0 / clock_ticks() / requests.max(1.0);
    Row {
        rowguard: median(rowguard_runs),
        pgbench: (!pgbench_runs.is_empty()).then(|| median(pgbench_runs)),
        peer: (!peer_runs.is_empty())
            .then(|| (median(peer_runs), per_request(peer_cpu, peer_requests))),
        cpu_us_per_request: per_request(cpu, requests),
        max_rss_mb,
        seal_lag_p99_s,
    }
}

/// An OTLP/HTTP endpoint that accepts every export and keeps the bodies for counting later: the
/// benchmark measures what tracing costs the gateway, not a collector, so nothing is decoded
/// while the load runs.
async fn keeping_otlp_sink() -> (String, tokio::task::JoinHandle<()>, Exports) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("sink port");
    let endpoint = format!("http://{}", listener.local_addr().expect("sink address"));
    let exports = Exports::default();
    let kept = exports.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let kept = kept.clone();
        async move {
            kept.0.lock().expect("exports").push(body);
            ""
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, task, exports)
}

/// The OTLP export bodies a traced gateway sent.
#[derive(Debug, Default, Clone)]
pub struct Exports(std::sync::Arc<std::sync::Mutex<Vec<axum::body::Bytes>>>);

impl Exports {
    /// The spans in every export, decoded with the official protobuf definitions.
    fn spans(&self) -> u64 {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        self.0
            .lock()
            .expect("exports")
            .iter()
            .filter_map(|body| ExportTraceServiceRequest::decode(body.as_ref()).ok())
            .flat_map(|request| request.resource_spans)
            .flat_map(|r| r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum()
    }
}

/// Samples `rowguard_audit_unsealed_age_seconds` every 100 ms while a measurement runs.
struct LagSampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    measuring: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LagSampler {
    fn start(metrics_port: u16) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let measuring = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, on) = (samples.clone(), measuring.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{metrics_port}/metrics");
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !on.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let Ok(reply) = http.get(&url).send().await else {
                    continue;
                };
                let text = reply.text().await.unwrap_or_default();
                let age = text.lines().find_map(|l| {
                    l.strip_prefix("rowguard_audit_unsealed_age_seconds ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                });
                if let Some(age) = age {
                    into.lock().expect("samples").push(age);
                }
            }
        });
        Self {
            samples,
            measuring,
            task,
        }
    }

    fn measuring(&self, on: bool) {
        self.measuring
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn p99(&self) -> Option<f64> {
        let mut samples = self.samples.lock().expect("samples").clone();
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        Some(samples[((samples.len() - 1) as f64 * 0.99) as usize])
    }
}

impl Drop for LagSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The run with the median throughput (its latencies come with it).
fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    runs.swap_remove(runs.len() / 2)
}

async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    assert!(
        rowguard_tests::process::ready_within(&http, base, Duration::from_secs(60)).await,
        "rowguard did not become ready"
    );
}

fn graphql_body(kind: Kind, patient: &str, version: &str) -> String {
    let body = match kind {
        Kind::MyPatients => {
            json!({ "query": "query MyPatients { patients(first: 20) { edges { node { id mrn givenName familyName } } } }", "operationName": "MyPatients" })
        }
        Kind::MyPatientsWithCareTeams => {
            json!({ "query": "query MyPatientsWithCareTeams { patients(first: 100) { edges { node { id mrn givenName familyName careTeam { careRole clinician { displayName } } } } } }", "operationName": "MyPatientsWithCareTeams" })
        }
        Kind::PatientWithCareTeam => {
            json!({ "query": "query PatientDetail($id: ID!) { patient(id: $id) { mrn careTeam { careRole clinician { displayName } } } }", "operationName": "PatientDetail", "variables": { "id": patient } })
        }
        Kind::UpdatePatient => {
            json!({ "query": "mutation UpdatePatient($id: ID!, $v: Int!) { updatePatient(input: { id: $id, expectedVersion: $v, clinicalNotes: \"benchmark note\" }) { version } }", "operationName": "UpdatePatient", "variables": { "id": patient, "v": version.parse::<i64>().unwrap_or(1) } })
        }
    };
    body.to_string()
}

pub fn patient_uuid(n: u64) -> String {
    let digest = format!("{:032x}", md5_hex(&format!("patient{n}")));
    format!(
        "{}-{}-{}-{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    )
}

/// wrk's Lua table `pairs_`: `count` (token, patient) pairs spread over many clinicians.
pub fn token_pairs(issuer: &TestIssuer, db: &Dataset, count: u64) -> String {
    let mut lua = String::from("local pairs_ = {\n");
    for i in 0..count {
        let clinician = (i * 7919) % db.clinicians + 1;
        let token = issuer
            .token(&format!("clinician-{clinician}"))
            .times(0, 3000)
            .mint();
        let patient = patient_uuid(db.patient_of(clinician, i));
        let _ = writeln!(lua, "  {{ \"{token}\", \"{patient}\" }},");
    }
    lua.push_str("}\n");
    lua
}

/// The tokens and request bodies, spread over many clinicians. For updates each wrk thread
/// (one connection each) owns one patient and follows its version from the responses.
fn wrk_script(issuer: &TestIssuer, db: &Dataset, scenario: Scenario, concurrency: u32) -> String {
    let count = if scenario.kind == Kind::UpdatePatient {
        u64::from(concurrency)
    } else {
        200
    };
    let mut lua = token_pairs(issuer, db, count);
    if scenario.kind == Kind::UpdatePatient {
        let _ = write!(
            lua,
            r#"local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
version = 1
function request()
  local pair = pairs_[id]
  local body = '{{"query":"mutation UpdatePatient($id: ID!, $v: Int!) {{ updatePatient(input: {{ id: $id, expectedVersion: $v, clinicalNotes: \\\"benchmark note\\\" }}) {{ version }} }}","operationName":"UpdatePatient","variables":{{"id":"' .. pair[2] .. '","v":' .. version .. '}}}}'
  return wrk.format("POST", "/graphql", {{ ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. pair[1] }}, body)
end
function response(status, headers, body)
  local v = string.match(body, '"version":(%d+)') or string.match(body, 'version (%d+) is current')
  if v then version = tonumber(v) end
end
"#
        );
    } else {
        lua.push_str(&read_requests(&graphql_body(scenario.kind, "PATIENT", "1")));
    }
    lua
}

/// wrk's Lua for a read: `pairs_` (token, patient) must be defined before it; `template` is the
/// JSON body with `PATIENT` where the patient id goes.
pub fn read_requests(template: &str) -> String {
    let template = template.replace('\\', "\\\\").replace('\'', "\\'");
    format!(
        r#"local template = '{template}'
-- Every request is formatted once, up front: the load generator shares the 2 cores with Rowguard
-- and PostgreSQL, so its own per-request work must be as small as pgbench's.
local requests = {{}}
for i, pair in ipairs(pairs_) do
  local body = string.gsub(template, "PATIENT", pair[2])
  -- HTTP/1.1 requires Host (Node refuses a request without it; wrk adds none to pre-formatted requests).
  requests[i] = wrk.format("POST", "/graphql", {{ ["Host"] = "127.0.0.1", ["Content-Type"] = "application/json", ["Accept"] = "application/json", ["Authorization"] = "Bearer " .. pair[1] }}, body)
end
local n = 0
function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end
{debug}"#,
        // BENCH_DEBUG=1 prints the first failed response (parsing every response costs wrk CPU).
        debug = if std::env::var_os("BENCH_DEBUG").is_some() {
            "local shown = false\nfunction response(status, headers, body)\n  if status ~= 200 and not shown then shown = true; print(status, body) end\nend\n"
        } else {
            ""
        }
    )
}

/// One request of the scenario must return data, or the numbers would measure errors.
async fn check_one_request(issuer: &TestIssuer, db: &Dataset, scenario: Scenario, base: &str) {
    let clinician = 1;
    let token = issuer.token(&format!("clinician-{clinician}")).mint();
    let patient = patient_uuid(db.patient_of(clinician, 1_000_003));
    let body = graphql_body(scenario.kind, &patient, "1");
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        reply.get("errors").is_none() && !reply["data"].is_null(),
        "{}: {reply}",
        scenario.name
    );
}

/// How wrk drives one scenario.
pub struct Load<'a> {
    pub script: &'a Path,
    pub base: &'a str,
    pub threads: u32,
    pub connections: u32,
    pub allowed_errors: u64,
}

/// pgbench's `-j`: its worker threads.
const PGBENCH_THREADS: u32 = 2;

pub fn wrk(load: &Load<'_>, duration: Duration) -> Measured {
    let (base, allowed_errors) = (load.base, load.allowed_errors);
    let output = Command::new("wrk")
        .args([
            "-t",
            &load.threads.to_string(),
            "-c",
            &load.connections.to_string(),
            "-d",
            &format!("{}s", duration.as_secs()),
            "--latency",
            "-s",
        ])
        .arg(load.script)
        .arg(format!("{base}/graphql"))
        .output()
        .expect("running wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    let errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    // An update client's first request after a restart of wrk may hold a stale version (one
    // CONFLICT each, after which it follows the current version); nothing else may fail.
    assert!(
        errors <= allowed_errors,
        "wrk saw {errors} error responses:\n{text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let percentile = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p))
            .map(|v| duration_ms(v.trim()))
            .unwrap_or(f64::NAN)
    };
    Measured {
        rps,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
    }
}

fn duration_ms(value: &str) -> f64 {
    let (number, unit) = value.split_at(
        value
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(value.len()),
    );
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

/// The SQL Rowguard issues for the scenario, statement for statement (the 100-patient page has
/// no replay: it shows how Rowguard's own cost grows with the response).
fn pgbench_script(scenario: Scenario, batch: u32) -> Option<String> {
    match scenario.kind {
        Kind::MyPatients => Some(replay::my_patients(scenario.audit, batch)),
        Kind::MyPatientsWithCareTeams => None,
        Kind::PatientWithCareTeam => Some(replay::patient_with_care_team(batch)),
        Kind::UpdatePatient => Some(replay::update_patient()),
    }
}

/// The id of the trail's latest event (0 for none).
async fn last_event(admin: &sea_orm::DatabaseConnection) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "select coalesce(max(id), 0) as id from rowguard_audit.events",
        ))
        .await
        .expect("reading the trail's last event");
    row.and_then(|r| r.try_get::<i64>("", "id").ok())
        .unwrap_or_default()
}

/// Events per writing transaction since event `after`: the gateway's average audit batch.
async fn events_per_write(admin: &sea_orm::DatabaseConnection, after: i64) -> f64 {
    use sea_orm::ConnectionTrait;
    let row = admin
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "select coalesce(count(*)::float8 / nullif(count(distinct txid), 0), 1) as batch \
             from rowguard_audit.events where id > $1",
            [after.into()],
        ))
        .await
        .expect("reading the audit batch size");
    row.and_then(|r| r.try_get::<f64>("", "batch").ok())
        .unwrap_or(1.0)
}

fn pgbench(
    script: &Path,
    db: &Dataset,
    issuer: &TestIssuer,
    concurrency: u32,
    duration: Duration,
    dir: &Path,
) -> Measured {
    let bin = rowguard::dev::postgres::server_bindir()
        .map(|d| d.join("pgbench"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "pgbench".into());
    let per = (db.patients / db.clinicians).max(1);
    let run = |seconds: u64, log: bool| {
        let mut command = Command::new(&bin);
        command
            .args([
                "-n",
                "-M",
                "prepared",
                "-c",
                &concurrency.to_string(),
                "-j",
                &PGBENCH_THREADS.to_string(),
                "-T",
                &seconds.to_string(),
            ])
            .args([
                "-D",
                &format!("clinicians={}", db.clinicians),
                "-D",
                &format!("per={per}"),
                "-D",
                &format!("iss={}", issuer.url()),
            ])
            .args([
                "-h",
                &db.host,
                "-p",
                &db.port.to_string(),
                "-U",
                "rowguard_gateway",
                "-f",
            ])
            .arg(script)
            .current_dir(dir);
        if log {
            command.args(["-l", "--log-prefix=pgbench_log"]);
        }
        command.arg("rowguard").output().expect("running pgbench")
    };
    run(3, false);
    let output = run(duration.as_secs(), true);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| {
            l.trim_start_matches("tps = ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN);
    let logs: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("pgbench logs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pgbench_log"))
        .map(|e| e.path())
        .collect();
    let mut latencies: Vec<u64> = logs
        .iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    // The next round's logs must not mix with this one's.
    for path in &logs {
        let _ = std::fs::remove_file(path);
    }
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    Measured {
        rps,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of /proc/pid/stat, i.e. 12 and 13 after the name.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Busy ticks of the whole machine (user, nice, system, irq, softirq) from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
}

fn clock_ticks() -> f64 {
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |ticks| ticks as f64)
}

/// The dataset's patient ids are `md5('patient' || n)::uuid`.
fn md5_hex(input: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(input.as_bytes()).into())
}
