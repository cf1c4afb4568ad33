use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// initdb + pg_ctl start on a free port, as the `postgres` user when running as root (initdb
/// refuses to run as root). A watcher process stops the server and deletes its files when this
/// test process exits, however it exits.
fn start_private_cluster() -> Cluster {
    let bindir = server_bindir();
    let port = free_port();
    let data = std::env::temp_dir().join(format!("rowguard-test-{}-{port}", std::process::id()));
    let as_root = is_root();

    let mut initdb = server_command(&bindir, "initdb", as_root);
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    run(initdb, "initdb");

    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        dir = data.display()
    );
    let mut start = server_command(&bindir, "pg_ctl", as_root);
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(data.join("server.log"))
        .args(["-o", &options, "-w", "-t", "60", "start"]);
    run(start, "pg_ctl start");

    let stop = format!(
        "{run_as}{pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {data}",
        run_as = if as_root {
            "runuser -u postgres -- "
        } else {
            ""
        },
        pg_ctl = bindir.join("pg_ctl").display(),
        data = data.display()
    );
    let watcher = Command::new("sh")
        .args(["-c", &format!("cat >/dev/null; {stop}")])
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

/// Where `initdb`, `pg_ctl` and `postgres` live: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn server_bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").exists());
    if let Some(dir) = from_pg_config {
        return dir;
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries found (looked at `pg_config --bindir` and \
             /usr/lib/postgresql/*/bin). Install them (Debian: apt-get install postgresql) \
             or set TEST_DATABASE_URL to a server where this role may create databases and roles."
        )
    })
}

fn server_command(bindir: &Path, program: &str, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(program));
        c
    } else {
        Command::new(bindir.join(program))
    }
}

fn run(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free loopback port")
}
