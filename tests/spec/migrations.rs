//! Migrations apply, revert and re-apply cleanly on a fresh database.

use migration::{Migrator, MigratorTrait, RoleNames};
use rowguard::db::Database;
use rowguard_tests::{cluster, connect, migration_connection};
use sea_orm::DatabaseConnection;

use crate::support::{execute, query_count};

async fn rowguard_tables(admin: &DatabaseConnection) -> i64 {
    query_count(
        admin,
        "select count(*) as value from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname in ('rowguard', 'rowguard_audit') and c.relkind in ('r', 'p') \
           and not c.relispartition",
    )
    .await
    .expect("query")
}

async fn roles_with_prefix(admin: &DatabaseConnection, roles: &RoleNames) -> i64 {
    query_count(
        admin,
        &format!(
            "select count(*) as value from pg_roles where rolname like '{}\\_%'",
            roles.prefix()
        ),
    )
    .await
    .expect("query")
}

#[tokio::test]
async fn migrations_run_up_down_and_up_again_on_a_fresh_database() {
    // Its own database and its own role prefix: reverting drops roles, which must not touch the
    // roles the other tests' databases use.
    let name = format!("rgt_{}_migrations", std::process::id());
    let roles = RoleNames::new(&format!("rgmig{}", std::process::id())).expect("valid prefix");
    cluster().create_database(&name, None).await;
    let url = cluster().url_for(&name);
    let admin = connect(&url, 1, None).await;
    let owner = migration_connection(&url, &roles).await;

    Migrator::up(&owner, None).await.expect("up");
    assert_eq!(rowguard_tables(&admin).await, 10);
    assert_eq!(roles_with_prefix(&admin, &roles).await, 8);
    assert!(
        Migrator::get_pending_migrations(&owner)
            .await
            .expect("status")
            .is_empty()
    );

    Migrator::down(&owner, None).await.expect("down");
    assert_eq!(rowguard_tables(&admin).await, 0);
    assert_eq!(roles_with_prefix(&admin, &roles).await, 0);

    Migrator::up(&owner, None).await.expect("up again");
    assert_eq!(rowguard_tables(&admin).await, 10);
    execute(
        &admin,
        &format!("alter role {} password 'x'", roles.gateway()),
        [],
    )
    .await
    .expect("gateway password");
    let gateway_url = cluster().url_as(&name, &roles.gateway(), "x");
    let db = Database::from_pool(connect(&gateway_url, 1, None).await, roles.clone());
    db.self_check()
        .await
        .expect("the re-applied schema passes the self-check");
    db.close().await.expect("close");

    // Leave the shared cluster as we found it.
    Migrator::down(&owner, None).await.expect("clean up");
    assert_eq!(roles_with_prefix(&admin, &roles).await, 0);
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let name = format!("rgt_{}_twice", std::process::id());
    let roles = RoleNames::new(&format!("rgtwice{}", std::process::id())).expect("valid prefix");
    cluster().create_database(&name, None).await;
    let url = cluster().url_for(&name);
    let owner = migration_connection(&url, &roles).await;

    Migrator::up(&owner, None).await.expect("first up");
    Migrator::up(&owner, None)
        .await
        .expect("second up changes nothing");
    assert_eq!(rowguard_tables(&connect(&url, 1, None).await).await, 10);
    Migrator::down(&owner, None).await.expect("clean up");
}
