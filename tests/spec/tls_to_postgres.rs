//! TLS to PostgreSQL: the gateway verifies the server's certificate chain and host name
//! (`sslmode=verify-full`) and refuses a server it cannot verify.

use rowguard::db::{AccessMode, Database};
use rowguard::principal::AppRole;
use rowguard::settings::DatabaseSettings;
use rowguard_tests::fixtures::stranger;
use rowguard_tests::tls::{TestCa, TlsCluster};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

async fn gateway(cluster: &TlsCluster, host: &str, root: &TestCa) -> Database {
    let mut settings = DatabaseSettings::new(
        cluster.gateway_url(host, "verify-full", Some(root)),
        cluster.roles.clone(),
    );
    settings.acquire_timeout_secs = 5;
    settings
        .check_transport_security()
        .expect("verify-full is accepted for any host");
    Database::connect(&settings).await.expect("lazy pool")
}

/// The startup self-check is the gateway's first connection: its error is what an operator sees.
async fn refusal(db: &Database) -> String {
    let error = db
        .self_check()
        .await
        .expect_err("the gateway must refuse this server");
    let text = error.to_string();
    eprintln!("refused: {text}");
    text
}

// One cluster for the three cases: starting it (initdb, certificates, migrations) costs seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_connects_only_to_a_server_whose_certificate_it_can_verify() {
    let cluster = TlsCluster::start().await;

    // The right CA and the certificate's host name: connected, and the session is encrypted.
    let db = gateway(&cluster, "localhost", &cluster.ca).await;
    db.self_check().await.expect("self-check over verified TLS");
    let scope = db
        .scope(
            &stranger(AppRole::Clinician),
            AccessMode::ReadOnly,
            Uuid::new_v4(),
        )
        .await
        .expect("request scope over TLS");
    scope.rollback().await.expect("rollback");
    // The server's own view of the gateway's (now idle, pooled) connection.
    let admin = rowguard_tests::connect(&cluster.admin_url(), 1, None).await;
    let row = admin
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "select bool_and(s.ssl) as ssl, min(s.version) as version \
                 from pg_catalog.pg_stat_ssl s join pg_catalog.pg_stat_activity a using (pid) \
                 where a.usename = '{}'",
                cluster.roles.gateway()
            ),
        ))
        .await
        .expect("pg_stat_ssl")
        .expect("a row");
    assert_eq!(
        row.try_get::<Option<bool>>("", "ssl").expect("ssl"),
        Some(true)
    );
    let version: String = row.try_get("", "version").expect("version");
    assert!(version.starts_with("TLSv1."), "{version}");

    // The same server reached by an address its certificate does not name.
    let wrong_host = gateway(&cluster, "127.0.0.1", &cluster.ca).await;
    let text = refusal(&wrong_host).await;
    assert!(text.contains("invalid peer certificate"), "{text}");

    // A server certificate from a CA the gateway does not trust.
    let wrong_ca = gateway(&cluster, "localhost", &cluster.other_ca).await;
    let text = refusal(&wrong_ca).await;
    assert!(text.contains("invalid peer certificate"), "{text}");
}
