//! The real-PostgreSQL test harness.
//!
//! With `TEST_DATABASE_URL` (a role that may create databases and roles) the tests use that
//! server; otherwise the first test starts a private throwaway cluster from the installed server
//! binaries on a free loopback port. Either way the schema is migrated once into a template
//! database, and every test gets its own `CREATE DATABASE ... TEMPLATE` clone.

pub mod app;
pub mod browser;
mod cluster;
pub mod fixtures;
pub mod issuer;
pub mod otlp;
pub mod pooler;
pub mod process;
pub mod redis;
pub mod tls;
pub mod workload;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use migration::{Migrator, MigratorTrait, RoleNames};
use rowguard::db::Database;
use rowguard::settings::DatabaseSettings;
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection};

pub use cluster::Cluster;

/// The role prefix of every test database migrated from the template.
pub const TEST_ROLE_PREFIX: &str = "rgtest";
/// The password the harness gives the test gateway role, so servers with password auth work too.
const GATEWAY_PASSWORD: &str = "rgtest-gateway";

struct Harness {
    cluster: Cluster,
    template: String,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        // Each #[tokio::test] has its own runtime; set-up runs on a runtime of its own so that no
        // connection outlives the runtime that made it.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for test set-up");
            runtime.block_on(Harness::start())
        })
        .join()
        .expect("test harness set-up panicked")
    })
}

impl Harness {
    async fn start() -> Harness {
        let cluster = Cluster::from_env_or_start();
        let run = std::process::id();
        cluster.drop_databases_of_finished_runs().await;
        let template = format!("rgt_{run}_template");
        cluster.create_database(&template, None).await;

        let roles = test_roles();
        let owner = migration_connection(&cluster.url_for(&template), &roles).await;
        Migrator::up(&owner, None)
            .await
            .expect("migrating the template database");
        owner
            .execute_unprepared(&format!(
                "ALTER ROLE {} PASSWORD '{GATEWAY_PASSWORD}'",
                roles.gateway()
            ))
            .await
            .expect("setting the test gateway password");
        // A template may have no open connections while it is being copied.
        owner
            .close()
            .await
            .expect("closing the migration connection");
        Harness { cluster, template }
    }
}

/// The role names every cloned test database uses.
pub fn test_roles() -> RoleNames {
    RoleNames::new(TEST_ROLE_PREFIX).expect("valid test role prefix")
}

/// A one-connection pool as the administrator, telling migrations which role prefix to use.
pub async fn migration_connection(url: &str, roles: &RoleNames) -> DatabaseConnection {
    rowguard::migrate::connect_as_owner(url, roles)
        .await
        .expect("connecting for migrations")
}

/// The harness's server, for tests that need a database of their own (e.g. migration tests).
pub fn cluster() -> &'static Cluster {
    &harness().cluster
}

/// A fresh database for one test, cloned from the migrated template.
#[derive(Debug)]
pub struct TestDb {
    name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let harness = harness();
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let name = format!("rgt_{}_{n}", std::process::id());
        harness
            .cluster
            .create_database(&name, Some(&harness.template))
            .await;
        TestDb { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// URL of this database as the harness's administrator (superuser or CREATEROLE).
    pub fn admin_url(&self) -> String {
        cluster().url_for(&self.name)
    }

    /// URL of this database as the gateway's login role.
    pub fn gateway_url(&self) -> String {
        cluster().url_as(&self.name, &test_roles().gateway(), GATEWAY_PASSWORD)
    }

    /// The gateway as the application runs it: a pool of `max_connections` as the login role.
    pub async fn gateway(&self, max_connections: u32) -> Database {
        self.gateway_with(max_connections, |_| {}).await
    }

    /// A one-connection pool as the audit sealer has it (`application_name` rowguard-sealer).
    pub async fn sealer(&self) -> Database {
        let settings = DatabaseSettings::new(self.gateway_url(), test_roles());
        Database::connect_as(
            &DatabaseSettings {
                max_connections: 1,
                ..settings
            },
            "rowguard-sealer",
        )
        .await
        .expect("connecting as the sealer")
    }

    /// The gateway with adjusted settings (timeouts, limits).
    pub async fn gateway_with(
        &self,
        max_connections: u32,
        adjust: impl FnOnce(&mut DatabaseSettings),
    ) -> Database {
        let mut settings = DatabaseSettings::new(self.gateway_url(), test_roles());
        settings.max_connections = max_connections;
        adjust(&mut settings);
        Database::connect(&settings)
            .await
            .expect("connecting as the gateway")
    }

    /// A raw pool as the gateway's login role, for tests that look *under* the RLS scope
    /// (e.g. what a reused connection carries). Application code never has one of these.
    pub async fn gateway_pool(&self, max_connections: u32) -> DatabaseConnection {
        connect(&self.gateway_url(), max_connections, None).await
    }

    /// The administrator (superuser): catalog checks and deliberate misconfiguration.
    pub async fn admin(&self) -> DatabaseConnection {
        connect(&self.admin_url(), 1, None).await
    }

    /// The schema owner role, as fixtures and `rowguard dev` seed data.
    pub async fn owner(&self) -> DatabaseConnection {
        connect(&self.admin_url(), 1, Some(test_roles().owner())).await
    }
}

/// A pool to `url`; with `role`, every connection starts switched to that role.
pub async fn connect(url: &str, max_connections: u32, role: Option<String>) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(max_connections).sqlx_logging(false);
    if let Some(role) = role {
        options.map_sqlx_postgres_opts(move |o: PgConnectOptions| {
            o.options([("role", role.as_str())])
        });
    }
    sea_orm::Database::connect(options)
        .await
        .expect("connecting to the test database")
}
