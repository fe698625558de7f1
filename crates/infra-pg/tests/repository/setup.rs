//! Connecting and migrating.

use domain::{JobStatus, SandboxState, Tier};
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

/// The labels a domain type's CHECK allows, read back from the catalog.
async fn domain_labels(pool: &PgPool, domain: &str) -> std::collections::BTreeSet<String> {
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contypid = $1::regtype",
    )
    .bind(domain)
    .fetch_one(pool)
    .await
    .unwrap();
    // "CHECK ((VALUE = ANY (ARRAY['queued'::text, 'starting'::text, ...])))": the quoted parts.
    definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn the_schema_allows_exactly_the_labels_the_domain_defines(pool: PgPool) {
    let set = |labels: Vec<&str>| labels.into_iter().map(str::to_owned).collect();
    assert_eq!(
        domain_labels(&pool, "job_status").await,
        set(JobStatus::ALL.iter().map(|s| s.as_str()).collect())
    );
    assert_eq!(
        domain_labels(&pool, "job_tier").await,
        set(Tier::ALL.iter().map(|t| t.as_str()).collect())
    );
    assert_eq!(
        domain_labels(&pool, "job_sandbox_state").await,
        set(SandboxState::ALL.iter().map(|s| s.as_str()).collect())
    );
    let refused = sqlx::query("SELECT $1::job_status")
        .bind("building")
        .execute(&pool)
        .await;
    assert!(refused.is_err(), "an unknown status was accepted");
}

#[sqlx::test(migrations = false)]
async fn the_build_counter_starts_from_the_projects_highest_ready_version(pool: PgPool) {
    infra_pg::migrate(&pool).await.unwrap();
    // Back to the schema before the counter, with builds already made.
    MIGRATOR.undo(&pool, 3).await.unwrap();
    let project = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO projects (id, user_id, name) VALUES ($1, 'alice', 'p')")
        .bind(project)
        .execute(&pool)
        .await
        .unwrap();
    for (status, version) in [
        ("ready", Some("build_v0_9")),
        ("ready", Some("build_v0_10")),
        ("failed", None),
        ("queued", None),
    ] {
        sqlx::query(
            "INSERT INTO jobs (id, project_id, user_id, tier, goal, status, build_version) \
             VALUES ($1, $2, 'alice', 'partner', 'g', $3, $4)",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(project)
        .bind(status)
        .bind(version)
        .execute(&pool)
        .await
        .unwrap();
    }
    infra_pg::migrate(&pool).await.unwrap();
    let repo = PgJobRepository::new(pool);
    let stored = domain::ports::JobRepository::get_project_for_user(
        &repo,
        domain::ProjectId::from_uuid(project),
        &domain::UserId::try_from("alice").unwrap(),
    )
    .await
    .unwrap()
    .expect("the project");
    assert_eq!(stored.last_build_version, 10);
    assert_eq!(stored.next_build_version().label(), "build_v0_11");
}
