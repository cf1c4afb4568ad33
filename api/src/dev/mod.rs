//! `rowguard dev`: an embedded database, demo data and a development identity provider, so a
//! newcomer goes from `git clone` to the playground as a real clinician in one command.
//!
//! Everything here is for local evaluation only: the identity provider mints tokens without a
//! login and listens on loopback, and `serve` has no way to enable it.

pub mod identity_provider;
pub mod postgres;
pub mod seed;
pub mod web_app;

use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use migration::RoleNames;
use sha2::Digest;

use crate::migrate::{self, MigrateAction};
use crate::server::Application;
use crate::settings::TrustMode;
use crate::settings::{
    AuditSettings, DatabaseSettings, DevSettings, MigrationSettings, ServeSettings,
};
use identity_provider::DEV_CLIENT_ID;
use identity_provider::authorization::WEB_CLIENT_ID;
use postgres::{LocalCluster, free_port};
use seed::demo_users;

/// Written into the data directory when dev creates its cluster, and into that cluster's
/// database comment: dev seeds only a database that carries the same marker.
const MARKER_FILE: &str = "dev-cluster-marker";

/// Where dev keeps its cluster and keys: `ROWGUARD_DEV_DATA_DIR`, else `.rowguard` in the
/// current directory — unless dev runs as root and the `postgres` user (which runs the embedded
/// server) cannot reach it, as in a clone under /root, or its path holds characters `pg_ctl`
/// cannot take; then a directory of its own under /var/tmp, named after the checkout so each
/// keeps its data.
fn data_dir(settings: &DevSettings) -> Result<PathBuf, String> {
    if let Some(dir) = &settings.data_dir {
        return Ok(dir.clone());
    }
    let local = std::path::absolute(".rowguard").map_err(|e| e.to_string())?;
    // A checkout whose path `pg_ctl` could not take as it is (a space, say) keeps its dev data
    // under /var/tmp instead, as an unreachable one does.
    let plain = postgres::check_plain_path(&local).is_ok();
    if plain && !postgres::is_root() {
        return Ok(local);
    }
    if plain {
        let (uid, gid) = postgres::postgres_ids().map_err(|e| e.to_string())?;
        if postgres::reachable_by(&local, uid, gid) {
            return Ok(local);
        }
    }
    let checkout = std::env::current_dir().map_err(|e| e.to_string())?;
    let tag: String = sha2::Sha256::digest(checkout.as_os_str().as_encoded_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fallback = PathBuf::from(format!("/var/tmp/rowguard-dev-{tag}"));
    let why = if plain {
        "the postgres user cannot reach it (a private parent directory)"
    } else {
        "its path holds characters pg_ctl would hand to a shell (a space, say)"
    };
    tracing::info!(
        unusable = %local.display(),
        data_dir = %fallback.display(),
        "the checkout's .rowguard cannot hold dev data: {why}; keeping it elsewhere (set ROWGUARD_DEV_DATA_DIR to choose)"
    );
    Ok(fallback)
}

/// Creates `dir` for root, or accepts it only if root created it and no one else may write it.
/// Root writes into it (keys, the marker) and hands `pgdata` to the `postgres` user, so a
/// directory another account made first, with symbolic links planted inside, would have root
/// write or chown wherever they point: the /var/tmp fallback has a predictable name in a
/// world-writable directory, and `.rowguard` or `ROWGUARD_DEV_DATA_DIR` may sit in one too.
fn claim_as_root(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    // Created private (a permissive umask must not leave it open to others even for a moment),
    // then opened for reading only.
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // Readable by the `postgres` user, which runs the server in `pgdata` below it;
            // writable by root alone, whatever the umask.
            return std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", dir.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let why = if !meta.file_type().is_dir() {
        Some("is not a directory (a symbolic link, or a file)".to_owned())
    } else if meta.uid() != 0 {
        Some(format!("belongs to uid {}, not root", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "can be written by other accounts (mode {:o}; `chmod go-w` it if you made it)",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(format!(
            "{} {why}; refusing to use it: running as root, dev writes keys there and hands its \
             database to the postgres user, so another account must not be able to plant links \
             in it. Set ROWGUARD_DEV_DATA_DIR to a directory that does not exist yet (dev creates it)",
            dir.display()
        ));
    }
    Ok(())
}

/// Runs the dev environment until `shutdown` resolves, then stops the embedded cluster.
pub async fn run(
    settings: &DevSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let started = Instant::now();
    if !settings.listen.ip().is_loopback() {
        return Err(format!(
            "ROWGUARD_DEV_LISTEN {}: rowguard dev hands out tokens without a login, so it listens on \
             loopback only (e.g. 127.0.0.1:8080)",
            settings.listen
        ));
    }
    let data_dir = data_dir(settings)?;
    if postgres::is_root() {
        claim_as_root(&data_dir)?;
    } else {
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            format!(
                "cannot create ROWGUARD_DEV_DATA_DIR {}: {e}",
                data_dir.display()
            )
        })?;
    }
    let roles = RoleNames::default();
    // Held until dev stops: a second dev on the same directory would take the running cluster
    // over (stopping it under the first) and stop it again when it ends.
    let _in_use = lock_data_dir(&data_dir)?;
    let (cluster, port, marker, fresh) = start_embedded(settings, &data_dir)?;
    let embedded = Embedded {
        gateway_url: cluster.socket_url(&roles.gateway(), port, "rowguard"),
        admin_url: cluster.socket_url("postgres", port, "rowguard"),
        maintenance_url: cluster.socket_url("postgres", port, "postgres"),
        data_dir,
        marker,
        fresh,
        roles,
    };
    let result = serve_dev(settings, &embedded, started, shutdown).await;
    tracing::info!("stopping the embedded PostgreSQL");
    if let Err(e) = cluster.stop() {
        tracing::warn!(error = %e, "the embedded PostgreSQL did not stop cleanly");
    }
    result
}

/// Takes `data_dir` for this run, or says which directory another run is using.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, String> {
    let path = data_dir.join("dev.lock");
    refuse_link(&path)?;
    let file = own_file(&path, false).map_err(|e| format!("{}: {e}", path.display()))?;
    file.try_lock().map_err(|_| {
        format!(
            "another `rowguard dev` is running on {}; stop it first, or give this one another \
             ROWGUARD_DEV_DATA_DIR",
            data_dir.display()
        )
    })?;
    Ok(file)
}

/// Starts dev's own cluster, creating it on first use. Returns it, its port and its marker.
fn start_embedded(
    settings: &DevSettings,
    data_dir: &Path,
) -> Result<(LocalCluster, u16, String, bool), String> {
    let cluster = LocalCluster::new(data_dir.join("pgdata")).map_err(|e| e.to_string())?;
    // Whatever a link points at is not dev's: a link to a real cluster would have dev stop it,
    // restart it as its own and migrate and seed into it.
    if std::fs::symlink_metadata(cluster.data_dir()).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{} is a symbolic link; dev only ever uses the cluster it creates there itself. Point \
             ROWGUARD_DEV_DATA_DIR at an empty directory.",
            cluster.data_dir().display()
        ));
    }
    let marker_path = data_dir.join(MARKER_FILE);
    refuse_link(&marker_path)?;
    let fresh = !cluster.is_initialised();
    let marker = if fresh {
        tracing::info!(dir = %cluster.data_dir().display(), "creating the embedded PostgreSQL cluster");
        cluster.init().map_err(|e| e.to_string())?;
        let marker = uuid::Uuid::new_v4().to_string();
        // The marker names the cluster it was written for (its system identifier, fixed when
        // the cluster was made): a marker file copied beside another cluster does not fit it.
        let identifier = system_identifier(cluster.data_dir())?;
        {
            use std::io::Write;
            own_file(&marker_path, true)
                .and_then(|mut file| file.write_all(format!("{marker}\n{identifier}\n").as_bytes()))
                .map_err(|e| format!("{}: {e}", marker_path.display()))?;
        }
        marker
    } else {
        // Only the marker dev wrote when it created the cluster makes it dev's: a file anyone
        // can put beside a cluster (dev's key file was once taken as proof) is not.
        let not_ours = |why: &str| {
            format!(
                "{} holds a PostgreSQL cluster that rowguard dev did not create ({why}); dev only ever \
                 uses its own. Point ROWGUARD_DEV_DATA_DIR at an empty directory, or delete this one \
                 to start afresh.",
                cluster.data_dir().display()
            )
        };
        match std::fs::read_to_string(&marker_path) {
            Ok(text) => {
                let mut lines = text.lines();
                let marker = lines.next().unwrap_or_default().trim().to_owned();
                let written_for = lines.next().unwrap_or_default().trim().to_owned();
                if written_for != system_identifier(cluster.data_dir())? {
                    return Err(not_ours(
                        "its marker was written for another cluster, or by an older dev",
                    ));
                }
                marker
            }
            Err(_) => {
                return Err(format!(
                    "{} holds a PostgreSQL cluster that rowguard dev did not create (or created \
                     before it marked its clusters); dev only ever uses its own. Point \
                     ROWGUARD_DEV_DATA_DIR at an empty directory, or delete this one to start afresh.",
                    cluster.data_dir().display()
                ));
            }
        }
    };
    if cluster.is_running() {
        // Left running by a run that was killed: stop it and start afresh on our port.
        cluster.stop().map_err(|e| e.to_string())?;
    }
    let port = match settings.pg_port {
        Some(port) => port,
        None => free_port().map_err(|e| e.to_string())?,
    };
    cluster.start_private(port).map_err(|e| e.to_string())?;
    tracing::info!(
        port,
        socket_dir = %cluster.data_dir().display(),
        "embedded PostgreSQL is running, reachable only through its socket (psql -h <socket_dir> -p <port> -U postgres rowguard)"
    );
    Ok((cluster, port, marker, fresh))
}

/// The cluster's system identifier: the first eight bytes of `global/pg_control`, chosen at
/// random by `initdb` (read from the file, before anything is started or stopped).
fn system_identifier(pgdata: &Path) -> Result<String, String> {
    use std::io::Read;
    let path = pgdata.join("global").join("pg_control");
    let mut bytes = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(u64::from_le_bytes(bytes).to_string())
}

/// Opens (creating) one of dev's own files for writing, never through a symbolic link: one
/// planted in a directory another account can write to (even while `initdb` runs) would have
/// dev write wherever it points. `truncate` empties an existing file.
fn own_file(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(truncate)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Refuses `path` if it is a symbolic link: dev writes its marker and lock files there, and
/// would write through a link planted in a directory another account prepared.
fn refuse_link(path: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{} is a symbolic link; dev writes only files of its own there. Point ROWGUARD_DEV_DATA_DIR \
             at an empty directory.",
            path.display()
        ));
    }
    Ok(())
}

/// Refuses a `rowguard` database whose comment is another dev's marker (or anything else).
async fn refuse_another_devs_database(
    maintenance_url: &str,
    marker: &str,
    fresh: bool,
) -> Result<(), String> {
    let conn = sea_orm::Database::connect(maintenance_url)
        .await
        .map_err(|e| format!("connecting to the embedded PostgreSQL: {e}"))?;
    let comment = rowguard_database_comment(&conn).await;
    let _ = conn.close().await;
    match comment? {
        Some(Some(found)) if found == format!("rowguard dev {marker}") => Ok(()),
        // Only a cluster this run created may have a `rowguard` database dev has not marked yet.
        None => Ok(()),
        Some(None) if fresh => Ok(()),
        _ => Err(
            "the embedded cluster's rowguard database is not marked as this dev's; refusing to migrate or seed it"
                .to_owned(),
        ),
    }
}

/// The `rowguard` database's comment: `None` when there is no such database.
async fn rowguard_database_comment(
    conn: &sea_orm::DatabaseConnection,
) -> Result<Option<Option<String>>, String> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    Ok(conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select shobj_description(oid, 'pg_database') as comment from pg_database where datname = 'rowguard'",
        ))
        .await
        .map_err(|e| e.to_string())?
        .map(|row| row.try_get("", "comment").ok().flatten()))
}

/// Seeds only the database dev created: its comment carries dev's marker (written on first use).
async fn check_marker(owner: &sea_orm::DatabaseConnection, marker: &str) -> Result<(), String> {
    use sea_orm::ConnectionTrait;
    let expected = format!("rowguard dev {marker}");
    match rowguard_database_comment(owner).await?.flatten() {
        Some(found) if found == expected => Ok(()),
        None => owner
            .execute_unprepared(&format!("COMMENT ON DATABASE rowguard IS '{expected}'"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Some(_) => Err(
            "the embedded database carries another dev marker; refusing to seed demo users into it"
                .to_owned(),
        ),
    }
}

/// Dev's own database, once it runs.
struct Embedded {
    gateway_url: String,
    admin_url: String,
    /// The cluster's `postgres` database, there before dev creates `rowguard`.
    maintenance_url: String,
    data_dir: PathBuf,
    marker: String,
    /// The cluster was created by this run.
    fresh: bool,
    roles: RoleNames,
}

async fn serve_dev(
    settings: &DevSettings,
    embedded: &Embedded,
    started: Instant,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let Embedded {
        gateway_url,
        admin_url,
        maintenance_url,
        data_dir,
        marker,
        fresh,
        roles,
    } = embedded;
    let migration = MigrationSettings {
        url: admin_url.to_owned(),
        role_prefix: roles.clone(),
    };
    // Before anything is created or migrated: a `rowguard` database marked by another dev is
    // not this one's.
    refuse_another_devs_database(maintenance_url, marker, *fresh).await?;
    migrate::run(&migration, MigrateAction::Up)
        .await
        .map_err(|e| format!("migrating the dev database: {e}"))?;

    let gateway_origin = format!("http://{}", settings.listen);

    let key_pem = identity_provider::signing_key_pem(&data_dir.join("dev-idp-key.pem"))?;
    let idp = identity_provider::start(settings.idp_port, &key_pem, demo_users(), &gateway_origin)
        .await?;

    let owner = crate::db::connect_as_role(admin_url, &roles.owner())
        .await
        .map_err(|e| format!("connecting as {} to seed demo data: {e}", roles.owner()))?;
    let admin = crate::migrate::connect_as_owner(admin_url, roles)
        .await
        .map_err(|e| format!("connecting to the embedded database: {e}"))?;
    check_marker(&admin, marker).await?;
    let _ = admin.close().await;
    seed::seed(&owner, &idp.issuer)
        .await
        .map_err(|e| format!("seeding demo data: {e}"))?;
    let _ = owner.close().await;

    // `serve`'s own settings, at their defaults, pointed at dev's database and provider.
    // Tokens from the playground's picker (issued to `rowguard-dev`) and from the reference web
    // app's login (issued to `clinician-web`); any other client's token is refused, as in production.
    let client_ids = format!("{DEV_CLIENT_ID},{WEB_CLIENT_ID}");
    let mut serve: ServeSettings = crate::settings::from_args(&[
        "--oidc-issuer",
        &idp.issuer,
        "--oidc-audiences",
        DEV_CLIENT_ID,
        "--oidc-client-ids",
        &client_ids,
    ])
    .map_err(|e| e.to_string())?;
    serve.database = DatabaseSettings::new(gateway_url, roles.clone());
    serve.oidc.jwks_refresh_secs = 300;
    serve.listen = settings.listen;
    serve.metrics_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    serve.shutdown_timeout_secs = 10;
    serve.api.introspection = true;
    serve.api.playground = true;
    serve.audit = dev_audit_settings(data_dir)?;
    let app_dir = settings.app_dir.clone();
    if let Some(manifest) = web_app::manifest(&app_dir) {
        serve.api.trusted_documents = Some(manifest);
        serve.api.trusted_documents_mode = TrustMode::Log;
    }
    let mut playground = serve.api.playground().ok_or("playground disabled")?;
    playground.extra_controls = Some(user_picker(&idp.issuer));
    playground.extra_connect_src = Some(idp.issuer.clone());
    let mut application = Application::build_with_playground(&serve, Some(playground))
        .await
        .map_err(|e| e.to_string())?;
    let web = match web_app::built(&app_dir) {
        Some(dist) => {
            application = application.with_routes(web_app::routes(&dist, &idp.issuer));
            WebApp::Served(format!("{gateway_origin}/app/"))
        }
        None => WebApp::NotBuilt(web_app::build_command(&app_dir)),
    };
    let auth = application.state().auth.clone();
    let banner = banner(&gateway_origin, &idp.issuer, data_dir, &web).await;
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !auth.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::io::stdout().write_all(banner.as_bytes());
        let _ = std::io::stdout().flush();
        tracing::info!(
            startup_ms = started.elapsed().as_millis() as u64,
            "rowguard dev is ready"
        );
    });
    application.run(shutdown).await.map_err(|e| e.to_string())
}

/// Dev signs its audit checkpoints with a key of its own, kept in the data directory next to the
/// checkpoint files, so `rowguard audit verify` can be tried on the demo trail.
fn dev_audit_settings(data_dir: &Path) -> Result<AuditSettings, String> {
    let key = data_dir.join("audit-signing-key.pem");
    if !key.exists() {
        crate::audit::keys::write_new_key(&key)?;
    }
    Ok(AuditSettings {
        signing_key: Some(key),
        checkpoint_dir: Some(data_dir.join("audit-checkpoints")),
        ..Default::default()
    })
}

fn user_picker(issuer: &str) -> String {
    let mut html = String::from(
        r#"<label>Demo user <select id="demo-user"><option value="">choose…</option>"#,
    );
    for user in demo_users() {
        let _ = write!(
            html,
            r#"<option value="{issuer}/token/{subject}">{name} — {role}</option>"#,
            subject = user.subject,
            name = user.display_name,
            role = user.role
        );
    }
    html.push_str("</select></label>");
    html
}

/// Whether dev serves the reference web app, and where (or how to build it).
enum WebApp {
    Served(String),
    NotBuilt(String),
}

/// What `rowguard dev` prints once ready: where to click, who to be, how to get a token.
async fn banner(gateway: &str, issuer: &str, data_dir: &Path, web: &WebApp) -> String {
    let web = match web {
        WebApp::Served(url) => format!("{url}   (log in as a demo user through the dev provider)"),
        WebApp::NotBuilt(command) => format!(
            "not built yet; build it once with\n                 {command}\n               and start rowguard dev again"
        ),
    };
    let mut text = format!(
        "\n  Rowguard dev is ready.\n\n  Playground:  {gateway}/graphql   (pick a demo user at the top, then run a query)\n  Web app:     {web}\n  GraphQL API: POST {gateway}/graphql\n  Identity provider (dev only): {issuer}\n  Data (embedded PostgreSQL, keys, audit checkpoints): {}\n\n  Demo users (synthetic data only):\n",
        data_dir.display()
    );
    let http = reqwest_client();
    for user in demo_users() {
        let _ = writeln!(
            text,
            "    {:<6} {:<28} {}",
            user.subject, user.display_name, user.role
        );
    }
    text.push_str("\n  Get a token:  curl -s -X POST ");
    let _ = writeln!(text, "{issuer}/token/alice");
    if let Some(token) = fetch_token(&http, issuer, "alice").await {
        let _ = writeln!(
            text,
            "\n  Ready to paste (alice, valid 15 minutes):\n    Authorization: Bearer {token}"
        );
    }
    text.push_str("\n  Example: curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n");
    let _ = writeln!(
        text,
        "    -d '{{\"query\":\"{{ patients(first: 5) {{ edges {{ node {{ mrn givenName familyName }} }} }} }}\"}}' {gateway}/graphql\n"
    );
    text.push_str(
        "  Stop with Ctrl-C (the embedded database stops too; data is kept for next time).\n\n",
    );
    text
}

fn reqwest_client() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::new()
}

async fn fetch_token(
    http: &openidconnect::reqwest::Client,
    issuer: &str,
    subject: &str,
) -> Option<String> {
    let reply = http
        .post(format!("{issuer}/token/{subject}"))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&reply.bytes().await.ok()?).ok()?;
    body["id_token"].as_str().map(str::to_owned)
}
