//! The benchmark's data: `clinicians` people and `patients` patients, each patient on two care
//! teams (so ~2 × patients / clinicians per clinician), generated in SQL. Patient ids are
//! `md5('patient' || n)::uuid`, so load scripts can name any patient without a lookup.

use migration::RoleNames;
use sea_orm::ConnectionTrait;
use std::time::Instant;

/// Where the dataset lives.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub port: u16,
    pub patients: u64,
    pub clinicians: u64,
    pub gateway_url: String,
    /// What clients pass as the server's host: `127.0.0.1`, or the directory of its Unix socket.
    pub host: String,
}

impl Dataset {
    /// The cluster's superuser, for the peer's schema.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/rowguard", self.port)
    }
}

pub async fn build(
    port: u16,
    socket: Option<std::path::PathBuf>,
    patients: u64,
    clinicians: u64,
    issuer: &str,
) -> Dataset {
    let admin_url = format!("postgres://postgres@127.0.0.1:{port}/rowguard");
    rowguard::migrate::run(
        &rowguard::settings::MigrationSettings {
            url: admin_url.clone(),
            role_prefix: RoleNames::default(),
        },
        rowguard::migrate::MigrateAction::Up,
    )
    .await
    .expect("migrate");
    let started = Instant::now();
    let admin = rowguard_tests::connect(&admin_url, 1, None).await;
    let half = clinicians / 2;
    // The cluster runs with `synchronous_commit=off`. A VACUUM straight after an asynchronous
    // commit may not set hint bits on rows whose commit record is not yet flushed, so it leaves
    // every page not all-visible. So the load commits synchronously.
    let sql = format!(
        "set synchronous_commit = on;
         insert into rowguard.clinicians (oidc_issuer, oidc_subject, display_name)
           select '{issuer}', 'clinician-' || c, 'Dr. Bench ' || c from generate_series(1, {clinicians}) c;
         insert into rowguard.patients (id, mrn, given_name, family_name, birth_date, clinical_notes)
           select md5('patient' || n)::uuid, 'P' || n, 'Given' || (n % 997), 'Family' || (n % 991),
                  date '1940-01-01' + (n % 25000), 'synthetic benchmark notes ' || n
           from generate_series(0, {last}) n;
         insert into rowguard.clinicians_patients (clinician_id, patient_id, care_role)
           select (n % {clinicians}) + 1, md5('patient' || n)::uuid, 'attending' from generate_series(0, {last}) n
           union all
           select ((n + {half}) % {clinicians}) + 1, md5('patient' || n)::uuid, 'consulting' from generate_series(0, {last}) n;",
        last = patients - 1
    );
    admin
        .execute_unprepared(&sql)
        .await
        .expect("generating the dataset");
    // Settle the database before measuring: without this, autovacuum works through the freshly
    // inserted tables (and index-only scans visit the heap) during the first scenarios.
    admin
        .execute_unprepared("vacuum (analyze)")
        .await
        .expect("vacuum");
    check_visibility(&admin).await;
    admin
        .execute_unprepared("checkpoint")
        .await
        .expect("checkpoint");
    eprintln!(
        "dataset: {patients} patients, {clinicians} clinicians in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Dataset {
        port,
        patients,
        clinicians,
        // A `host` that is a directory means the server's Unix socket there, to sqlx and to
        // node-postgres alike.
        gateway_url: match &socket {
            Some(dir) => {
                // Goes into a URL's query string unencoded: refuse what would need encoding.
                let plain = dir
                    .to_string_lossy()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
                assert!(
                    plain,
                    "--unix-socket needs a temporary directory path of letters, digits and / . _ - (set TMPDIR)"
                );
                format!(
                    "postgres://rowguard_gateway@localhost:{port}/rowguard?host={}",
                    dir.display()
                )
            }
            None => format!("postgres://rowguard_gateway@127.0.0.1:{port}/rowguard"),
        },
        host: socket.map_or_else(|| "127.0.0.1".to_owned(), |dir| dir.display().to_string()),
    }
}

impl Dataset {
    /// A patient on clinician `c`'s (1-based) care team: n ≡ c - 1 (mod clinicians).
    pub fn patient_of(&self, c: u64, k: u64) -> u64 {
        let per = self.patients / self.clinicians;
        (c - 1) + self.clinicians * (k % per.max(1))
    }
}

/// Until VACUUM has marked every page of the hot tables all-visible, index-only scans of
/// `clinicians_patients` fetch each row from the heap as well: an extra cost on every request that
/// a production table, vacuumed by autovacuum, does not carry. The load commits synchronously so
/// that the first VACUUM can mark them; if some session's snapshot still held the horizon back,
/// say so (and who holds it) rather than measure a different database silently.
async fn check_visibility(admin: &sea_orm::DatabaseConnection) {
    let query = |sql: &str| {
        admin.query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
    };
    let rows = query(
        "select coalesce(sum(c.relpages - c.relallvisible), 0)::bigint as pages
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'rowguard' and c.relname in ('patients', 'clinicians_patients')",
    )
    .await
    .expect("visibility");
    let pages: i64 = rows[0].try_get("", "pages").expect("pages");
    if pages == 0 {
        return;
    }
    eprintln!(
        "dataset: {pages} pages not all-visible after vacuum: index-only scans will fetch heap rows"
    );
    let holders = query(
        "select coalesce(backend_type, '') || ' ' || coalesce(usename::text, '') || ' '
                || coalesce(state, '') || ' xmin age ' || coalesce(age(backend_xmin)::text, '-')
                || ' xid age ' || coalesce(age(backend_xid)::text, '-') as holder
         from pg_stat_activity
         where (backend_xmin is not null or backend_xid is not null)
           and pid <> pg_backend_pid()",
    )
    .await
    .expect("holders");
    for holder in holders {
        let holder: String = holder.try_get("", "holder").expect("holder");
        eprintln!("  horizon held by: {holder}");
    }
}
