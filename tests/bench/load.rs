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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MyPatients,
    PatientWithCareTeam,
    UpdatePatient,
}

pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "patients(first: 20)",
        audit: true,
        kind: Kind::MyPatients,
    },
    Scenario {
        name: "patients(first: 20), audit off",
        audit: false,
        kind: Kind::MyPatients,
    },
    Scenario {
        name: "patient(id) + careTeam",
        audit: true,
        kind: Kind::PatientWithCareTeam,
    },
    Scenario {
        name: "updatePatient",
        audit: true,
        kind: Kind::UpdatePatient,
    },
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
    pub pgbench: Measured,
    pub cpu_us_per_request: f64,
    pub max_rss_mb: f64,
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
    let port = rowguard::dev::postgres::free_port().expect("port");
    let mut command = Command::new(binary);
    if let Ok(threads) = std::env::var("BENCH_WORKER_THREADS") {
        command.env("ROWGUARD_WORKER_THREADS", threads);
    }
    // Stopped when this function returns or panics (a failed pgbench run must not leave it).
    let child = StopOnDrop(
        command
            .arg("serve")
            // Budgets this load never reaches: it measures other things.
            .env("ROWGUARD_QUOTA_RATE", "10000000")
            .env("ROWGUARD_QUOTA_BURST", "10000000")
            .env("DATABASE_URL", &db.gateway_url)
            .env("ROWGUARD_OIDC_ISSUER", issuer.url())
            .env("ROWGUARD_OIDC_AUDIENCES", SPA_CLIENT_ID)
            .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWGUARD_METRICS_LISTEN", "127.0.0.1:0")
            .env("ROWGUARD_DB_MAX_CONNECTIONS", concurrency.to_string())
            .env("ROWGUARD_AUDIT", scenario.audit.to_string())
            .env("ROWGUARD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting rowguard"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;

    let dir = std::env::temp_dir().join(format!("rowguard-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("load dir");
    let script = dir.join("load.lua");
    std::fs::write(&script, wrk_script(issuer, db, scenario, concurrency)).expect("lua");
    check_one_request(issuer, db, scenario, &base).await;

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
    std::fs::write(&sql, pgbench_script(scenario)).expect("pgbench script");
    // Rowguard and pgbench take turns, `rounds` times each, and each side reports its median
    // run: on a shared 2-core machine single runs drift by ±10%, which would swamp the ratio.
    let (mut rowguard_runs, mut pgbench_runs) = (Vec::new(), Vec::new());
    let (mut cpu, mut requests) = (0u64, 0.0);
    for _ in 0..rounds.max(1) {
        let cpu_before = cpu_ticks(child.0.id());
        let run = wrk(&load, duration);
        cpu += cpu_ticks(child.0.id()) - cpu_before;
        requests += run.rps * duration.as_secs_f64();
        let replay = pgbench(&sql, db, issuer, concurrency, duration, &dir);
        eprintln!(
            "  {}: Rowguard {:.0} req/s, pgbench {:.0} tps",
            scenario.name, run.rps, replay.rps
        );
        rowguard_runs.push(run);
        pgbench_runs.push(replay);
    }
    let max_rss_mb = peak_rss_kb(child.0.id()) as f64 / 1024.0;
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        rowguard: median(rowguard_runs),
        pgbench: median(pgbench_runs),
        cpu_us_per_request: cpu as f64 * 1_000_000.0 / clock_ticks() / requests.max(1.0),
        max_rss_mb,
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
        Kind::PatientWithCareTeam => {
            json!({ "query": "query PatientDetail($id: ID!) { patient(id: $id) { mrn careTeam { careRole clinician { displayName } } } }", "operationName": "PatientDetail", "variables": { "id": patient } })
        }
        Kind::UpdatePatient => {
            json!({ "query": "mutation UpdatePatient($id: ID!, $v: Int!) { updatePatient(input: { id: $id, expectedVersion: $v, clinicalNotes: \"benchmark note\" }) { version } }", "operationName": "UpdatePatient", "variables": { "id": patient, "v": version.parse::<i64>().unwrap_or(1) } })
        }
    };
    body.to_string()
}

fn patient_uuid(n: u64) -> String {
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

/// The tokens and request bodies, spread over many clinicians. For updates each wrk thread
/// (one connection each) owns one patient and follows its version from the responses.
fn wrk_script(issuer: &TestIssuer, db: &Dataset, scenario: Scenario, concurrency: u32) -> String {
    let mut lua = String::from("local pairs_ = {\n");
    let count = if scenario.kind == Kind::UpdatePatient {
        u64::from(concurrency)
    } else {
        200
    };
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
        let template = graphql_body(scenario.kind, "PATIENT", "1")
            .replace('\\', "\\\\")
            .replace('\'', "\\'");
        let _ = write!(
            lua,
            r#"local template = '{template}'
-- Every request is formatted once, up front: the load generator shares the 2 cores with Rowguard
-- and PostgreSQL, so its own per-request work must be as small as pgbench's.
local requests = {{}}
for i, pair in ipairs(pairs_) do
  local body = string.gsub(template, "PATIENT", pair[2])
  requests[i] = wrk.format("POST", "/graphql", {{ ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. pair[1] }}, body)
end
local n = 0
function request()
  n = n + 1
  return requests[(n % #requests) + 1]
end
"#
        );
    }
    lua
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
struct Load<'a> {
    script: &'a Path,
    base: &'a str,
    threads: u32,
    connections: u32,
    allowed_errors: u64,
}

/// pgbench's `-j`: its worker threads.
const PGBENCH_THREADS: u32 = 2;

fn wrk(load: &Load<'_>, duration: Duration) -> Measured {
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

/// The SQL Rowguard issues for the scenario, statement for statement.
fn pgbench_script(scenario: Scenario) -> String {
    match scenario.kind {
        Kind::MyPatients => replay::my_patients(scenario.audit),
        Kind::PatientWithCareTeam => replay::patient_with_care_team(),
        Kind::UpdatePatient => replay::update_patient(),
    }
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
                "127.0.0.1",
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

fn cpu_ticks(pid: u32) -> u64 {
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
