use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rowguard::dev::postgres::{LocalCluster, free_port};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// A PostgreSQL server the tests may create databases and roles on.
#[derive(Debug)]
pub struct Cluster {
    admin: PgConnectOptions,
    // The stop-on-exit watcher; its stdin stays open for as long as this process lives.
    _watcher: Option<Mutex<Child>>,
}

impl Cluster {
    /// `TEST_DATABASE_URL` if set, otherwise a private cluster started for this test process.
    pub fn from_env_or_start() -> Cluster {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Cluster {
                admin: url
                    .parse()
                    .expect("TEST_DATABASE_URL is not a valid PostgreSQL URL"),
                _watcher: None,
            },
            _ => start_private_cluster(),
        }
    }

    /// The server's port (for a pooler placed in front of it on loopback).
    pub fn port(&self) -> u16 {
        self.admin.get_port()
    }

    /// URL of `database` as the administrator.
    pub fn url_for(&self, database: &str) -> String {
        let o = &self.admin;
        let auth = match std::env::var("TEST_DATABASE_URL") {
            // Keep whatever credentials the operator gave.
            Ok(url) if !url.is_empty() => credentials_of(&url),
            _ => o.get_username().to_owned(),
        };
        format!(
            "postgres://{auth}@{}:{}/{database}",
            o.get_host(),
            o.get_port()
        )
    }

    /// URL of `database` as `user` with `password`.
    pub fn url_as(&self, database: &str, user: &str, password: &str) -> String {
        let o = &self.admin;
        format!(
            "postgres://{user}:{password}@{}:{}/{database}",
            o.get_host(),
            o.get_port()
        )
    }

    /// Creates `name`, optionally as a copy of `template`.
    pub async fn create_database(&self, name: &str, template: Option<&str>) {
        let admin = crate::connect(&self.url_for("postgres"), 1, None).await;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        // Copies of one template can collide while another copy is starting; retry briefly.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match admin.execute_unprepared(&sql).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("being accessed") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("creating test database {name}: {e}"),
            }
        }
        admin.close().await.expect("closing the admin connection");
    }

    /// On a shared server, removes the databases of earlier test runs whose process has ended.
    pub async fn drop_databases_of_finished_runs(&self) {
        let admin = crate::connect(&self.url_for("postgres"), 1, None).await;
        let rows = admin
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "select datname::text as name from pg_database where datname like 'rgt\\_%'",
            ))
            .await
            .expect("listing test databases");
        for row in rows {
            let name: String = row.try_get("", "name").expect("database name");
            let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
            let finished = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if finished {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
        admin.close().await.expect("closing the admin connection");
    }
}

fn credentials_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split_once('@')
        .map_or("postgres", |(c, _)| c)
        .to_owned()
}

/// A private throwaway cluster from the installed server binaries on a free port. A watcher
/// process stops the server and deletes its files when this test process exits, however it
/// exits.
fn start_private_cluster() -> Cluster {
    let port = free_port().expect("a free loopback port");
    let data = std::env::temp_dir().join(format!("rowguard-test-{}-{port}", std::process::id()));
    let cluster = LocalCluster::new(&data).unwrap_or_else(|e| {
        panic!("{e}; or set TEST_DATABASE_URL to a server where this role may create databases and roles")
    });
    cluster.init().unwrap_or_else(|e| panic!("{e}"));
    cluster
        .start(
            port,
            &[
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
                "max_connections=300",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let watcher = Command::new("sh")
        .args([
            "-c",
            &format!("cat >/dev/null; {}", cluster.destroy_command()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the cluster watcher");

    Cluster {
        admin: PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .database("postgres"),
        _watcher: Some(Mutex::new(watcher)),
    }
}
