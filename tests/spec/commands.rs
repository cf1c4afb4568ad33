//! `rowguard dev` and `rowguard serve` as real processes: what a newcomer and an operator run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rowguard::dev::postgres::{LocalCluster, free_port};
use rowguard_tests::TestDb;
use rowguard_tests::fixtures::{admit, assign, enroll_at, lock_patients};
use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use rowguard_tests::process::{self, Signal};
use serde_json::{Value, json};

const CLI: &str = env!("CARGO_BIN_EXE_rowguard-cli");

/// A `rowguard` process with its stdout lines collected as they arrive.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// A failed test must not leave `rowguard dev` (and its embedded PostgreSQL) running.
impl Drop for Running {
    fn drop(&mut self) {
        process::stop(&mut self.child, Signal::SIGINT, Duration::from_secs(20));
    }
}

impl Running {
    pub(crate) fn start(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting rowguard");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Drained continuously: a verbose server must never block on a full pipe.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line containing `needle`; returns it.
    pub(crate) fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    let stderr = self.stderr_text();
                    panic!(
                        "no line with {needle:?} within {timeout:?}; stdout: {:?}\nstderr: {stderr}",
                        self.seen
                    );
                }
            }
        }
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        process::signal(&self.child, signal)
            .unwrap_or_else(|e| panic!("could not send {signal}: {e}"));
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("rowguard did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn dev_command(data_dir: &PathBuf, port: u16) -> Command {
    let mut command = Command::new(CLI);
    command
        .arg("dev")
        .env_remove("DATABASE_URL")
        .env("ROWGUARD_DEV_DATA_DIR", data_dir)
        .env("ROWGUARD_DEV_LISTEN", format!("127.0.0.1:{port}"))
        .env("ROWGUARD_LOG", "warn");
    command
}

async fn patient_mrns(http: &reqwest::Client, gateway: &str, idp: &str, user: &str) -> Vec<String> {
    let token: Value = http
        .post(format!("{idp}/token/{user}"))
        .send()
        .await
        .expect("dev token endpoint")
        .json()
        .await
        .expect("token JSON");
    let token = token["id_token"].as_str().expect("id_token");
    let reply: Value = http
        .post(format!("{gateway}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ patients(first: 100) { edges { node { mrn } } } }" }))
        .send()
        .await
        .expect("graphql")
        .json()
        .await
        .expect("graphql JSON");
    reply["data"]["patients"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|e| e["node"]["mrn"].as_str().expect("mrn").to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn demo_range(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|n| format!("DEMO-{n:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_two_clinicians_their_own_patients_stops_cleanly_and_reuses_its_data() {
    let data_dir = std::env::temp_dir().join(format!("rowguard-dev-spec-{}", std::process::id()));
    let http = reqwest::Client::new();
    let mut first_ids = None;
    for run in 0..2 {
        let port = free_port().expect("port");
        let mut dev = Running::start(dev_command(&data_dir, port));
        dev.wait_for_line("Rowguard dev is ready", Duration::from_secs(120));
        let idp_line = dev.wait_for_line("Identity provider (dev only):", Duration::from_secs(5));
        let idp = idp_line.rsplit(' ').next().expect("idp url").to_owned();
        let gateway = format!("http://127.0.0.1:{port}");

        let alice = patient_mrns(&http, &gateway, &idp, "alice").await;
        let bob = patient_mrns(&http, &gateway, &idp, "bob").await;
        assert_eq!(alice, demo_range(1, 25), "run {run}");
        assert_eq!(bob, demo_range(20, 40), "run {run}");
        assert_ne!(alice, bob);

        // The same patient ids on the second run prove the data was reused, not re-seeded.
        let token: Value = http
            .post(format!("{idp}/token/carol"))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let ids: Value = http
            .post(format!("{gateway}/graphql"))
            .bearer_auth(token["id_token"].as_str().expect("token"))
            .json(&json!({ "query": "{ patients(first: 100) { edges { node { id } } } }" }))
            .send()
            .await
            .expect("graphql")
            .json()
            .await
            .expect("json");
        match &first_ids {
            None => first_ids = Some(ids),
            Some(first) => assert_eq!(
                first, &ids,
                "the second start reuses the first start's data"
            ),
        }

        dev.signal(Signal::SIGINT);
        let status = dev.wait(Duration::from_secs(60));
        assert!(status.success(), "Ctrl-C should exit cleanly, got {status}");
        let cluster = LocalCluster::new(data_dir.join("pgdata")).expect("server binaries");
        assert!(
            !cluster.is_running(),
            "the embedded PostgreSQL is still running after Ctrl-C"
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_never_touches_the_database_that_production_variables_name() {
    // A shell with production settings: dev must ignore all of them.
    let t = TestDb::new().await;
    let data_dir =
        std::env::temp_dir().join(format!("rowguard-dev-isolation-{}", std::process::id()));
    let port = free_port().expect("port");
    let production_port = free_port().expect("port");
    let mut command = dev_command(&data_dir, port);
    command
        .env("DATABASE_URL", t.gateway_url())
        .env("ROWGUARD_MIGRATION_DATABASE_URL", t.admin_url())
        .env("ROWGUARD_LISTEN", format!("127.0.0.1:{production_port}"));
    let mut dev = Running::start(command);
    dev.wait_for_line("Rowguard dev is ready", Duration::from_secs(120));
    let idp_line = dev.wait_for_line("Identity provider (dev only):", Duration::from_secs(5));
    let idp = idp_line.rsplit(' ').next().expect("idp url").to_owned();
    let http = reqwest::Client::new();
    let gateway = format!("http://127.0.0.1:{port}");
    assert_eq!(
        patient_mrns(&http, &gateway, &idp, "alice").await,
        demo_range(1, 25),
        "dev serves its own demo data"
    );
    let enrolled = crate::support::query_count(
        &t.admin().await,
        "select count(*) as value from rowguard.clinicians",
    )
    .await
    .expect("count");
    assert_eq!(
        enrolled, 0,
        "dev enrolled demo identities in the database DATABASE_URL names"
    );
    assert!(
        http.get(format!("http://127.0.0.1:{production_port}/healthz"))
            .send()
            .await
            .is_err(),
        "dev listened on ROWGUARD_LISTEN"
    );
    // A review: a second dev on the same directory stopped the first one's cluster, restarted
    // it as its own, and stopped it again when it ended.
    let second = dev_refusal(&data_dir);
    assert!(
        second.contains("another `rowguard dev` is running"),
        "{second}"
    );
    assert_eq!(
        patient_mrns(&http, &gateway, &idp, "alice").await,
        demo_range(1, 25),
        "the first dev still serves"
    );
    dev.signal(Signal::SIGINT);
    assert!(dev.wait(Duration::from_secs(60)).success());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn dev_refuses_to_listen_beyond_loopback() {
    let data_dir = std::env::temp_dir().join(format!("rowguard-dev-listen-{}", std::process::id()));
    let output = Command::new(CLI)
        .arg("dev")
        .env("ROWGUARD_DEV_DATA_DIR", &data_dir)
        .env("ROWGUARD_DEV_LISTEN", "0.0.0.0:0")
        .output()
        .expect("rowguard dev");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ROWGUARD_DEV_LISTEN"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Runs `rowguard dev` expecting it to refuse to start; returns its stderr. A dev that starts
/// anyway is stopped (Running's drop) and the spec fails.
fn dev_refusal(data_dir: &std::path::Path) -> String {
    let mut dev = Running::start(dev_command(&data_dir.to_path_buf(), 0));
    let status = dev.wait(Duration::from_secs(90));
    assert!(!status.success(), "dev started: {}", dev.stderr_text());
    dev.stderr_text()
}

#[test]
fn dev_refuses_a_data_directory_whose_path_a_shell_would_run() {
    // The review's finding: the path went unquoted into `pg_ctl -o`, which runs it through
    // /bin/sh as the server's user.
    let scratch = std::env::temp_dir().join(format!("rowguard-dev-path-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let ran = scratch.join("ran");
    let data_dir = scratch.join(format!("data$(touch {})", ran.display()));
    let stderr = dev_refusal(&data_dir);
    assert!(!ran.exists(), "the path ran as a command");
    assert!(stderr.contains("would hand to a shell"), "{stderr}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn dev_refuses_a_cluster_directory_that_is_a_link_to_another_cluster() {
    // The review's finding: with `pgdata` linked to another cluster (and any file named like
    // dev's key beside it), dev stopped that cluster, restarted it as its own, migrated and
    // seeded demo users into it.
    let scratch = std::env::temp_dir().join(format!("rowguard-dev-link-{}", std::process::id()));
    let foreign = scratch.join("foreign");
    let data_dir = scratch.join("data");
    std::fs::create_dir_all(&foreign).expect("foreign");
    std::fs::create_dir_all(&data_dir).expect("data");
    // Enough for dev to take it for an initialised cluster.
    std::fs::write(foreign.join("PG_VERSION"), "15\n").expect("PG_VERSION");
    std::os::unix::fs::symlink(&foreign, data_dir.join("pgdata")).expect("link");
    std::fs::write(data_dir.join("dev-idp-key.pem"), "").expect("key");
    let stderr = dev_refusal(&data_dir);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(
        !data_dir.join("dev-cluster-marker").exists(),
        "dev claimed the linked cluster as its own"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn dev_refuses_a_cluster_it_did_not_mark_even_with_its_key_file_beside_it() {
    // A review: a cluster with a file named like dev's key beside it was taken for one from
    // before markers existed: dev marked it, stopped and restarted it, and migrated into it.
    let scratch =
        std::env::temp_dir().join(format!("rowguard-dev-unmarked-{}", std::process::id()));
    let data_dir = scratch.join("data");
    std::fs::create_dir_all(data_dir.join("pgdata")).expect("pgdata");
    // Enough for dev to take it for an initialised cluster.
    std::fs::write(data_dir.join("pgdata").join("PG_VERSION"), "15\n").expect("PG_VERSION");
    std::fs::write(data_dir.join("dev-idp-key.pem"), "").expect("key");
    let stderr = dev_refusal(&data_dir);
    assert!(
        stderr.contains("that rowguard dev did not create"),
        "{stderr}"
    );
    assert!(
        !data_dir.join("dev-cluster-marker").exists(),
        "dev claimed the cluster as its own"
    );
    // The re-review: a marker file copied beside a cluster dev did not create was taken as
    // dev's; the marker now names the cluster it was written for.
    std::fs::create_dir_all(data_dir.join("pgdata").join("global")).expect("global");
    std::fs::write(
        data_dir.join("pgdata").join("global").join("pg_control"),
        [7u8; 64],
    )
    .expect("pg_control");
    let copied = "00000000-0000-0000-0000-000000000000\n";
    std::fs::write(data_dir.join("dev-cluster-marker"), copied).expect("marker");
    let stderr = dev_refusal(&data_dir);
    assert!(stderr.contains("written for another cluster"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(data_dir.join("dev-cluster-marker")).expect("marker"),
        copied
    );
    // A marker or lock that is a link is not written through.
    let fresh = scratch.join("fresh");
    std::fs::create_dir_all(&fresh).expect("fresh");
    let victim = scratch.join("victim.txt");
    std::fs::write(&victim, "IMPORTANT").expect("victim");
    std::os::unix::fs::symlink(&victim, fresh.join("dev-cluster-marker")).expect("link");
    let stderr = dev_refusal(&fresh);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "IMPORTANT"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

pub(crate) fn serve_command(issuer: &TestIssuer, database_url: &str, port: u16) -> Command {
    let mut command = Command::new(CLI);
    command
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("ROWGUARD_ROLE_PREFIX", "rgtest")
        .env("ROWGUARD_OIDC_ISSUER", issuer.url())
        .env("ROWGUARD_OIDC_AUDIENCES", SPA_CLIENT_ID)
        .env("ROWGUARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("ROWGUARD_METRICS_LISTEN", "127.0.0.1:0")
        .env("ROWGUARD_LOG_FORMAT", "json");
    command
}

/// Polls `/readyz` until the server is ready.
pub(crate) async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    assert!(
        process::ready_within(http, base, Duration::from_secs(30)).await,
        "serve never became ready"
    );
}

fn refusal(mut command: Command) -> String {
    let output = command.output().expect("running rowguard serve");
    assert!(
        !output.status.success(),
        "serve should have refused to start"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serve_refuses_a_superuser_database_login() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let stderr = tokio::task::spawn_blocking({
        let command = serve_command(&issuer, &t.admin_url(), free_port().expect("port"));
        move || refusal(command)
    })
    .await
    .expect("task");
    assert!(
        stderr.contains("superuser") && stderr.contains("DATABASE_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_a_missing_issuer() {
    let issuer = TestIssuer::start().await;
    let mut command = serve_command(
        &issuer,
        "postgres://rgtest_gateway@127.0.0.1:1/x",
        free_port().expect("port"),
    );
    command.env_remove("ROWGUARD_OIDC_ISSUER");
    let stderr = refusal(command);
    assert!(stderr.contains("ROWGUARD_OIDC_ISSUER"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_an_unverified_connection_to_a_remote_database() {
    let issuer = TestIssuer::start().await;
    let command = serve_command(
        &issuer,
        "postgres://rgtest_gateway@db.example.invalid:5432/rowguard?sslmode=require",
        free_port().expect("port"),
    );
    let stderr = refusal(command);
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("verify-full"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ROWGUARD_DB_ALLOW_UNVERIFIED_TLS"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_an_invalid_limit() {
    let issuer = TestIssuer::start().await;
    let mut command = serve_command(
        &issuer,
        "postgres://rgtest_gateway@127.0.0.1:1/x",
        free_port().expect("port"),
    );
    command.env("ROWGUARD_MAX_PAGE_SIZE", "lots");
    let stderr = refusal(command);
    assert!(stderr.contains("ROWGUARD_MAX_PAGE_SIZE"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_a_quota_burst_below_the_complexity_limit() {
    // A request is charged at most one burst: with the README's old advice for replicas
    // without Redis (divide the burst too), the largest queries were charged a quarter of
    // their cost.
    let issuer = TestIssuer::start().await;
    let mut command = serve_command(
        &issuer,
        "postgres://rgtest_gateway@127.0.0.1:1/x",
        free_port().expect("port"),
    );
    command.env("ROWGUARD_QUOTA_BURST", "500");
    let stderr = refusal(command);
    assert!(
        stderr.contains("ROWGUARD_QUOTA_BURST") && stderr.contains("ROWGUARD_MAX_COMPLEXITY"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_a_cors_origin_a_browser_never_sends_or_any_site_could() {
    let issuer = TestIssuer::start().await;
    // `*` made the CORS layer panic once serving; `null` (any sandboxed frame) was allowed with
    // credentials; a trailing slash never matches a browser's Origin and was silently dropped.
    for origins in [
        "*",
        "null",
        "https://app.example.org/",
        "https://app.example.org,*",
    ] {
        let mut command = serve_command(
            &issuer,
            "postgres://rgtest_gateway@127.0.0.1:1/x",
            free_port().expect("port"),
        );
        command.env("ROWGUARD_CORS_ORIGINS", origins);
        let stderr = refusal(command);
        assert!(
            stderr.contains("ROWGUARD_CORS_ORIGINS") && !stderr.contains("panicked"),
            "{origins}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_zero() {
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    assign(&owner, &alice, admit(&owner, "A-1").await).await;
    let port = free_port().expect("port");
    let mut server = Running::start(serve_command(&issuer, &t.gateway_url(), port));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&http, &base).await;

    // Hold a lock on patients so the request below is slow.
    let admin = t.admin().await;
    let lock = lock_patients(&admin).await;
    let token = issuer.token("alice").mint();
    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/graphql");
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({ "query": "{ patients { edges { node { mrn } } } }" }))
                .send()
                .await
        }
    });
    // Once the request waits in the database for the lock, stop the server.
    let watcher = t.admin().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::support::query_count(
        &watcher,
        "select count(*) as value from pg_stat_activity \
         where datname = current_database() and usename = 'rgtest_gateway' and wait_event_type = 'Lock'",
    )
    .await
    .expect("activity")
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal(Signal::SIGTERM);
    // New connections are refused as soon as the server has taken the signal in.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "new connections must be refused once shutting down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    lock.commit().await.expect("release the lock");
    let reply = slow
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.expect("json");
    assert_eq!(body["data"]["patients"]["edges"][0]["node"]["mrn"], "A-1");
    let status = server.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "serve should exit 0 after SIGTERM, got {status}"
    );
}

#[tokio::test]
async fn serve_reads_settings_from_a_config_file_and_names_them_in_errors() {
    let issuer = TestIssuer::start().await;
    let file =
        std::env::temp_dir().join(format!("rowguard-config-spec-{}.env", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "# comment\nROWGUARD_OIDC_ISSUER={}\nROWGUARD_MAX_DEPTH=1\n",
            issuer.url()
        ),
    )
    .expect("write");
    let mut command = serve_command(
        &issuer,
        "postgres://rgtest_gateway@127.0.0.1:1/x",
        free_port().expect("port"),
    );
    command
        .env_remove("ROWGUARD_OIDC_ISSUER")
        .env("ROWGUARD_CONFIG", &file);
    let stderr = refusal(command);
    let _ = std::fs::remove_file(&file);
    assert!(
        stderr.contains("ROWGUARD_MAX_DEPTH"),
        "the file's invalid value is reported by name: {stderr}"
    );
    assert!(
        !stderr.contains("ROWGUARD_OIDC_ISSUER"),
        "the issuer came from the file: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_verbose_logs_carry_no_phi() {
    const MARKER: &str = "CANARY7Q";
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    let alice = enroll_at(&owner, issuer.url(), "alice").await;
    enroll_at(&owner, issuer.url(), "carol").await;
    let patient = admit(&owner, "A-1").await;
    assign(&owner, &alice, patient).await;
    let port = free_port().expect("port");
    let mut command = serve_command(&issuer, &t.gateway_url(), port);
    command.env("ROWGUARD_LOG", "trace");
    let mut server = Running::start(command);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&http, &base).await;
    let alice_token = issuer.token("alice").mint();
    let carol_token = issuer.token("carol").roles(&["coordinator"]).mint();
    let requests = [
        (
            &alice_token,
            json!({ "query": "mutation($i: UpdatePatientInput!) { updatePatient(input: $i) { version givenName clinicalNotes } }",
            "variables": { "i": { "id": patient, "expectedVersion": 1, "givenName": format!("Name{MARKER}"), "clinicalNotes": format!("Notes {MARKER}") } } }),
        ),
        (
            &alice_token,
            json!({ "query": format!("{{ patients(search: \"{MARKER}\") {{ edges {{ node {{ givenName clinicalNotes }} }} }} }}") }),
        ),
        (
            &alice_token,
            json!({ "query": "query Find($s: String) { patients(search: $s) { edges { node { givenName } } } }", "variables": { "s": MARKER } }),
        ),
        (
            &alice_token,
            json!({ "query": "{ patients { edges { node { givenName familyName clinicalNotes } } } }" }),
        ),
        (&alice_token, json!({ "query": format!("{{ {MARKER} }}") })),
        (
            &alice_token,
            json!({ "query": "query($id: ID!) { patient(id: $id) { mrn } }", "variables": { "id": MARKER } }),
        ),
        (
            &carol_token,
            json!({ "query": "mutation($i: EnrollClinicianInput!) { enrollClinician(input: $i) { id } }",
            "variables": { "i": { "issuer": issuer.url(), "subject": "new", "displayName": format!("Dr. {MARKER}") } } }),
        ),
    ];
    let mut disclosed = 0;
    for (token, body) in requests {
        let reply = http
            .post(format!("{base}/graphql"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("reply");
        if reply.text().await.expect("body").contains(MARKER) {
            disclosed += 1;
        }
    }
    assert!(
        disclosed >= 3,
        "the markers must really have flowed through the API (seen in {disclosed} responses)"
    );
    // Over GET too, where a malformed parameter is quoted back by the parser: a double-encoded
    // `variables` (a JSON string holding JSON) carried a name and birth date into the log.
    let double_encoded = format!("\"{{\\\"s\\\":\\\"Smith {MARKER} 1961-04-02\\\"}}\"");
    for query in [
        vec![
            (
                "query",
                "query Find($s: String) { patients(search: $s) { edges { node { givenName } } } }"
                    .to_owned(),
            ),
            ("variables", double_encoded.clone()),
        ],
        vec![
            ("query", "{ me { id } }".to_owned()),
            ("variables", format!("[\"{MARKER}\"]")),
        ],
        vec![
            (
                "query",
                format!("{{ patients(search: \"{MARKER}\") {{ edges {{ node {{ mrn }} }} }} }}"),
            ),
            ("extensions", format!("{{{MARKER}")),
        ],
        vec![("query", format!("{MARKER} {{"))],
    ] {
        let reply = http
            .get(format!("{base}/graphql"))
            .bearer_auth(&alice_token)
            .query(&query)
            .send()
            .await
            .expect("reply");
        assert!(reply.status().is_client_error() || reply.status().is_success());
    }
    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success());
    let logs = server.stderr_text();
    assert!(
        logs.lines().count() > 20,
        "trace logging should be talkative: {logs}"
    );
    assert!(
        logs.contains("graphql operation"),
        "the requests were logged"
    );
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(MARKER)).collect();
    assert!(
        leaked.is_empty(),
        "PHI marker in the logs:\n{}",
        leaked.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_and_invented_methods_leave_their_text_out_of_the_logs() {
    // A review: a token's `typ`, a claim value the parser quoted and the issuer a token named
    // were logged before any signature was checked (an unsigned token could write anything, of
    // any length, into the logs), and so was an invented HTTP method, into every line and span
    // of its request.
    const MARKER: &str = "CANARY9R";
    let t = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let owner = t.owner().await;
    enroll_at(&owner, issuer.url(), "alice").await;
    let port = free_port().expect("port");
    let mut command = serve_command(&issuer, &t.gateway_url(), port);
    command.env("ROWGUARD_LOG", "info");
    let mut server = Running::start(command);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&http, &base).await;
    let tokens = [
        issuer
            .token("alice")
            .typ(Some(&format!("{MARKER}-typ")))
            .mint(),
        issuer
            .token("alice")
            .claim("email_verified", json!(format!("{MARKER}-claim")))
            .mint(),
        issuer
            .token("alice")
            .claim("iss", json!(format!("https://{MARKER}.example/")))
            .mint(),
    ];
    for token in &tokens {
        let reply = http
            .post(format!("{base}/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": "{ me { id } }" }))
            .send()
            .await
            .expect("reply");
        assert_eq!(reply.status(), 401);
    }
    let invented =
        reqwest::Method::from_bytes(format!("{MARKER}-METHOD").as_bytes()).expect("method");
    let reply = http
        .request(invented, format!("{base}/graphql"))
        .send()
        .await
        .expect("reply");
    assert_eq!(reply.status(), 405);
    server.signal(Signal::SIGTERM);
    assert!(server.wait(Duration::from_secs(30)).success());
    let logs = server.stderr_text();
    assert_eq!(
        logs.matches("token rejected").count(),
        tokens.len(),
        "each refusal was logged: {logs}"
    );
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(MARKER)).collect();
    assert!(
        leaked.is_empty(),
        "the sender's text in the logs:\n{}",
        leaked.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_database_has_no_tcp_port_for_other_local_accounts() {
    // Trust authentication on a loopback port would give any account on the machine the
    // embedded cluster's superuser (and, through it, the server account's files).
    let data_dir =
        std::env::temp_dir().join(format!("rowguard-dev-socket-{}", uuid::Uuid::new_v4()));
    let port = free_port().expect("port");
    let pg_port = free_port().expect("port");
    let mut command = dev_command(&data_dir, port);
    command.env("ROWGUARD_DEV_PG_PORT", pg_port.to_string());
    let mut dev = Running::start(command);
    dev.wait_for_line("Rowguard dev is ready", Duration::from_secs(120));
    let idp_line = dev.wait_for_line("Identity provider (dev only):", Duration::from_secs(5));
    let idp = idp_line.rsplit(' ').next().expect("idp url").to_owned();
    assert_eq!(
        patient_mrns(
            &reqwest::Client::new(),
            &format!("http://127.0.0.1:{port}"),
            &idp,
            "alice"
        )
        .await,
        demo_range(1, 25),
        "dev's own gateway reaches its database"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(),
        "the embedded PostgreSQL accepts TCP connections on 127.0.0.1:{pg_port}"
    );
    dev.signal(Signal::SIGINT);
    assert!(dev.wait(Duration::from_secs(60)).success());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn dev_as_root_refuses_a_fallback_directory_another_account_created() {
    use sha2::Digest;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The fallback for a checkout the `postgres` user cannot reach is a predictable name in
    // world-writable /var/tmp. Another account creates it first, with `pgdata` a symbolic link
    // to a directory of root's: dev must not hand that directory to `postgres`.
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this spec runs as root, as CI does (the fallback exists only for root)"
    );
    let id = uuid::Uuid::new_v4();
    let checkout = std::env::temp_dir().join(format!("rowguard-private-checkout-{id}"));
    std::fs::create_dir(&checkout).expect("checkout");
    std::fs::set_permissions(&checkout, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let victim = std::env::temp_dir().join(format!("rowguard-victim-{id}"));
    std::fs::create_dir(&victim).expect("victim");
    let tag: String = sha2::Sha256::digest(checkout.as_os_str().as_encoded_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let planted = PathBuf::from(format!("/var/tmp/rowguard-dev-{tag}"));
    std::fs::create_dir(&planted).expect("planted directory");
    std::os::unix::fs::symlink(&victim, planted.join("pgdata")).expect("symlink");
    let nobody = nix::unistd::Uid::from_raw(65534);
    std::os::unix::fs::chown(&planted, Some(nobody.as_raw()), None).expect("chown to nobody");

    let port = free_port().expect("port");
    let mut command = Command::new(CLI);
    command
        .arg("dev")
        .current_dir(&checkout)
        .env_remove("ROWGUARD_DEV_DATA_DIR")
        .env("ROWGUARD_DEV_LISTEN", format!("127.0.0.1:{port}"))
        .env("ROWGUARD_LOG", "warn");
    let mut dev = Running::start(command);
    let status = dev.wait(Duration::from_secs(60));
    let victim_owner = std::fs::metadata(&victim).expect("victim").uid();
    let stderr = dev.stderr_text();
    let _ = std::fs::remove_dir_all(&planted);
    let _ = std::fs::remove_dir_all(&victim);
    let _ = std::fs::remove_dir_all(&checkout);
    assert_eq!(
        victim_owner, 0,
        "dev handed root's directory to another user"
    );
    assert!(
        !status.success(),
        "dev ran in a directory another account created"
    );
    assert!(stderr.contains("refusing to use it"), "{stderr}");
}

#[test]
fn dev_as_root_refuses_a_data_directory_another_account_created_in_a_shared_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Run from a world-writable directory, dev's default `.rowguard` may already exist there,
    // made by another account with links planted inside: root must not write through them.
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this spec runs as root, as CI does"
    );
    let id = uuid::Uuid::new_v4();
    let shared = std::env::temp_dir().join(format!("rowguard-shared-{id}"));
    std::fs::create_dir(&shared).expect("shared directory");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let planted = shared.join(".rowguard");
    std::fs::create_dir(&planted).expect("planted .rowguard");
    let victim = std::env::temp_dir().join(format!("rowguard-victim-file-{id}"));
    std::fs::write(&victim, "untouched").expect("victim");
    std::os::unix::fs::symlink(&victim, planted.join("dev-cluster-marker")).expect("symlink");
    std::os::unix::fs::chown(&planted, Some(65534), None).expect("chown to nobody");

    let port = free_port().expect("port");
    let mut command = Command::new(CLI);
    command
        .arg("dev")
        .current_dir(&shared)
        .env_remove("ROWGUARD_DEV_DATA_DIR")
        .env("ROWGUARD_DEV_LISTEN", format!("127.0.0.1:{port}"))
        .env("ROWGUARD_LOG", "warn");
    let mut dev = Running::start(command);
    let status = dev.wait(Duration::from_secs(60));
    let victim_text = std::fs::read_to_string(&victim).expect("victim");
    let owner = std::fs::metadata(&victim).expect("victim").uid();
    let stderr = dev.stderr_text();
    let _ = std::fs::remove_dir_all(&shared);
    let _ = std::fs::remove_file(&victim);
    assert_eq!(
        (victim_text.as_str(), owner),
        ("untouched", 0),
        "dev wrote through a link another account planted"
    );
    assert!(
        !status.success(),
        "dev used a directory another account created"
    );
    assert!(stderr.contains("refusing to use it"), "{stderr}");
}

#[test]
fn audit_keygen_writes_a_private_key_that_openssl_reads_and_its_public_key_beside_it() {
    // A review: the private key was PKCS#8 version 2, which OpenSSL 3 and Python's
    // `cryptography` refuse, so an operator could not check or convert it with either.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("rowguard-keygen-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("audit-key.pem");
    let status = Command::new(CLI)
        .args(["audit", "keygen"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .expect("keygen");
    assert!(status.success());
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
    let derived = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(
        derived.status.success(),
        "openssl could not read the key: {}",
        String::from_utf8_lossy(&derived.stderr)
    );
    let public = std::fs::read_to_string(dir.join("audit-key.pem.pub")).expect("public key");
    assert_eq!(String::from_utf8_lossy(&derived.stdout), public);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_signing_key_given_as_the_settings_value_is_never_printed() {
    // Before: "ROWGUARD_AUDIT_SIGNING_KEY -----BEGIN PRIVATE KEY-----\n…: No such file or
    // directory", the whole private key in the log.
    let issuer = TestIssuer::start().await;
    let dir = std::env::temp_dir().join(format!("rowguard-keyvalue-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("audit-key.pem");
    let made = Command::new(CLI)
        .args(["audit", "keygen"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .expect("keygen");
    assert!(made.success());
    let pem = std::fs::read_to_string(&key).expect("key");
    let secret_line = pem.lines().nth(1).expect("a base64 line").to_owned();
    let t = TestDb::new().await;
    // As PEM, and as the one base64 line a secret store may hold.
    for value in [pem.clone(), secret_line.clone()] {
        let mut command = serve_command(&issuer, &t.gateway_url(), free_port().expect("port"));
        command.env("ROWGUARD_AUDIT_SIGNING_KEY", &value);
        let stderr = tokio::task::spawn_blocking(move || refusal(command))
            .await
            .expect("task");
        assert!(!stderr.contains(&secret_line), "{stderr}");
        assert!(
            stderr.contains("ROWGUARD_AUDIT_SIGNING_KEY") && stderr.contains("key material"),
            "{stderr}"
        );
    }
    // Nor does `--help`, which shows the environment's values of other settings.
    let help = Command::new(CLI)
        .args(["serve", "--help"])
        .env("ROWGUARD_AUDIT_SIGNING_KEY", &pem)
        .env(
            "ROWGUARD_QUOTA_REDIS_URL",
            "redis://:RedisSecret@127.0.0.1:1/0",
        )
        .env(
            "ROWGUARD_OTEL_ENDPOINT",
            "http://otel:OtelSecret@127.0.0.1:1",
        )
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    for secret in [secret_line.as_str(), "RedisSecret", "OtelSecret"] {
        assert!(!help.contains(secret), "--help shows {secret}");
    }
}

#[tokio::test]
async fn a_connection_parameter_the_driver_does_not_know_is_not_logged_with_its_value() {
    // Before: "ignoring unrecognized connect parameter key=sslpassword value=SslSecret", at the
    // default level, from every command.
    let t = TestDb::new().await;
    let url = format!("{}?sslpassword=SslSecret", t.gateway_url());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(CLI)
            .arg("check")
            .env("DATABASE_URL", url)
            .env("ROWGUARD_ROLE_PREFIX", "rgtest")
            .output()
            .expect("check")
    })
    .await
    .expect("task");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains("SslSecret"), "{printed}");
}

#[tokio::test]
async fn a_config_file_line_that_cannot_be_read_is_named_by_number_not_printed() {
    // Before: a stray quote on the first line printed every later line, passwords included.
    let issuer = TestIssuer::start().await;
    let file = std::env::temp_dir().join(format!("rowguard-config-{}.env", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        "ROWGUARD_LISTEN=\"127.0.0.1:1\nDATABASE_URL=postgres://rgtest_gateway:Line2Secret@127.0.0.1/x\n",
    )
    .expect("write");
    let mut command = serve_command(
        &issuer,
        "postgres://rgtest_gateway@127.0.0.1:1/x",
        free_port().expect("port"),
    );
    command.env("ROWGUARD_CONFIG", &file);
    let stderr = tokio::task::spawn_blocking(move || refusal(command))
        .await
        .expect("task");
    let _ = std::fs::remove_file(&file);
    assert!(!stderr.contains("Line2Secret"), "{stderr}");
    assert!(stderr.contains("entry 1"), "{stderr}");
}

#[tokio::test]
async fn migrate_and_the_audit_commands_never_print_the_administrators_password() {
    // Before: "The connection string 'postgres://postgres:MigSecret@…' cannot be parsed." (the
    // audit commands, reading the same setting, kept printing it after migrate stopped).
    // The audit commands reach a migrated database before the driver refuses the scheme;
    // migrate is never pointed at one.
    let t = TestDb::new().await;
    let reachable = t
        .admin_url()
        .replacen("postgres://", "postgress://", 1)
        .replacen('@', ":MigSecret@", 1);
    assert!(reachable.contains("MigSecret"), "{reachable}");
    let unparsable = "postgres://postgres:MigSecret@127.0.0.1:notaport/x";
    let no_driver = "postgress://postgres:MigSecret@127.0.0.1:5432/x";
    let cases: [(&[&str], &str); 7] = [
        (&["migrate", "up"], unparsable),
        (&["migrate", "up"], no_driver),
        (&["migrate", "status"], no_driver),
        (&["migrate", "down"], unparsable),
        (&["audit", "verify"], &reachable),
        (&["audit", "export"], &reachable),
        (&["audit", "verify"], unparsable),
    ];
    for (action, url) in cases {
        {
            let output = Command::new(CLI)
                .args(action)
                .env("ROWGUARD_MIGRATION_DATABASE_URL", url)
                .env("ROWGUARD_ROLE_PREFIX", "rgtest")
                .output()
                .expect("migrate");
            assert!(!output.status.success(), "{url} {action:?}");
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!printed.contains("MigSecret"), "{action:?}: {printed}");
        }
    }
}

#[test]
fn audit_verify_refuses_a_key_path_that_is_not_a_regular_file() {
    // Before: a FIFO given as --public-key blocked verify for ever.
    let dir = std::env::temp_dir().join(format!("rowguard-fifo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let fifo = dir.join("key.pub");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let mut child = Command::new(CLI)
        .args(["audit", "verify", "--public-key"])
        .arg(&fifo)
        .env("DATABASE_URL", "postgres://rgtest_gateway@127.0.0.1:1/x")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("verify");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("audit verify still waiting on a FIFO after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(2));
}

#[test]
fn values_clap_refuses_and_config_lines_that_swallow_others_are_not_printed() {
    // A review: clap quoted a key given as a flag's value (`--public-key "$(cat key.pem)"`
    // read as an unknown flag), a URL given where an action belongs, a config file's value
    // pushed after the caller's `--`, and a value whose unclosed quote swallowed later lines.
    let dir = std::env::temp_dir().join(format!("rowguard-clap-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("key.pem");
    let made = Command::new(CLI)
        .args(["audit", "keygen"])
        .arg(&key)
        .stdout(Stdio::null())
        .status()
        .expect("keygen");
    assert!(made.success());
    let pem = std::fs::read_to_string(&key).expect("key");
    let secret_line = pem.lines().nth(1).expect("a base64 line").to_owned();
    let with_secret_config = |text: &str| {
        let file = dir.join(format!("{}.env", uuid::Uuid::new_v4()));
        std::fs::write(&file, text).expect("config");
        file
    };
    let swallowing = with_secret_config(
        "ROWGUARD_ROLE_PREFIX=\"rgtest\nDATABASE_URL=postgres://rgtest_gateway:ab\"CfgSecret@127.0.0.1:1/x\n",
    );
    let after_dashes = with_secret_config(
        "ROWGUARD_MIGRATION_DATABASE_URL=postgres://postgres:CfgSecret@127.0.0.1:notaport/x\n",
    );
    let runs: Vec<(Vec<&str>, Option<&std::path::Path>)> = vec![
        (vec!["audit", "verify", "--public-key", &pem], None),
        (
            vec![
                "audit",
                "archive",
                "--month",
                "2026-01",
                "--out",
                "/dev/null",
                "--signing-key",
                &pem,
            ],
            None,
        ),
        (
            vec!["migrate", "postgres://u:CfgSecret@127.0.0.1:1/x"],
            None,
        ),
        (vec!["check"], Some(&swallowing)),
        (vec!["migrate", "--", "status"], Some(&after_dashes)),
    ];
    for (args, config) in runs {
        let mut command = Command::new(CLI);
        command
            .args(&args)
            .env_remove("DATABASE_URL")
            .env_remove("ROWGUARD_MIGRATION_DATABASE_URL")
            .env(
                "ROWGUARD_MIGRATION_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/x",
            );
        if let Some(config) = config {
            command
                .env_remove("ROWGUARD_MIGRATION_DATABASE_URL")
                .env("ROWGUARD_CONFIG", config);
        }
        let output = command.output().expect("rowguard");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{args:?}");
        assert!(
            !printed.contains(&secret_line) && !printed.contains("CfgSecret"),
            "{args:?}: {printed}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
