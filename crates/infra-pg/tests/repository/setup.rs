//! Connecting and migrating.

use infra_pg::{connect, connect_with, PgError, PgJobRepository, PoolConfig, MIGRATOR};
use sqlx::PgPool;

#[tokio::test]
async fn connect_reaches_the_database_and_rejects_a_bad_url() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for these tests");
    let pool = connect(&url).await.unwrap();
    PgJobRepository::new(pool.clone()).ping().await.unwrap();
    pool.close().await;

    assert!(matches!(
        connect("definitely not a url").await,
        Err(PgError::InvalidUrl(_))
    ));

    let config = PoolConfig {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..PoolConfig::default()
    };
    // Port 1 on loopback: nothing listens there.
    assert!(matches!(
        connect_with("postgres://postgres@127.0.0.1:1/postgres", &config).await,
        Err(PgError::Connect(_))
    ));
}

#[sqlx::test(migrations = false)]
async fn migrations_apply_revert_and_apply_again(pool: PgPool) {
    infra_pg::migrate(&pool).await.unwrap();
    // Every migration has a down script, and reverting them all leaves no table behind.
    MIGRATOR.undo(&pool, 0).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name IN ('jobs', 'projects')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    infra_pg::migrate(&pool).await.unwrap();
    // Running again is a no-op.
    infra_pg::migrate(&pool).await.unwrap();
}
