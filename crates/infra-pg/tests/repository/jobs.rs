//! Inserting, reading, counting and listing jobs.

use chrono::{DateTime, Duration, Utc};
use domain::ports::{JobRepository, RepoError};
use domain::{JobId, JobStatus, ProjectId, SandboxState, Tier};
use sqlx::PgPool;

use crate::helpers::{job_at, new_job, project, repo, user};

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn insert_then_get_round_trips(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let new = new_job(p.id, &alice, JobStatus::Queued);

    let inserted = repo.insert_job(&new).await.unwrap();
    assert_eq!(inserted.id, new.id);
    assert_eq!(inserted.project_id, p.id);
    assert_eq!(inserted.user_id, alice);
    assert_eq!(inserted.tier, Tier::Partner);
    assert_eq!(inserted.goal, "a todo app");
    assert_eq!(inserted.status, JobStatus::Queued);
    assert_eq!(inserted.status_message.as_deref(), Some("Queued..."));
    assert_eq!(inserted.attempts, 0);
    assert_eq!(inserted.sandbox_state, SandboxState::None);
    assert_eq!(inserted.sandbox_state_version, 0);
    assert!(!inserted.sandbox_paused());
    assert!(inserted.enqueued_at.is_some());
    assert!(inserted.started_at.is_none() && inserted.completed_at.is_none());

    assert_eq!(repo.get_job(new.id).await.unwrap(), Some(inserted));
    assert_eq!(repo.get_job(JobId::new()).await.unwrap(), None);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn scheduled_jobs_are_inserted_as_scheduled(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = repo
        .insert_job(&new_job(p.id, &alice, JobStatus::Scheduled))
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Scheduled);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn get_job_for_user_hides_other_users_jobs(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = repo
        .insert_job(&new_job(p.id, &alice, JobStatus::Queued))
        .await
        .unwrap();

    assert_eq!(
        repo.get_job_for_user(job.id, &alice).await.unwrap(),
        Some(job.clone())
    );
    assert_eq!(
        repo.get_job_for_user(job.id, &user("mallory"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repo.get_job_for_user(JobId::new(), &alice).await.unwrap(),
        None
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn duplicate_insert_is_already_exists(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let new = new_job(p.id, &alice, JobStatus::Queued);
    repo.insert_job(&new).await.unwrap();
    assert_eq!(repo.insert_job(&new).await, Err(RepoError::AlreadyExists));
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn insert_for_a_missing_or_foreign_project_is_not_found(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let missing = new_job(ProjectId::new(), &alice, JobStatus::Queued);
    assert_eq!(repo.insert_job(&missing).await, Err(RepoError::NotFound));

    let bobs = project(&repo, &user("bob")).await;
    let foreign = new_job(bobs.id, &alice, JobStatus::Queued);
    assert_eq!(repo.insert_job(&foreign).await, Err(RepoError::NotFound));

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn touch_activity_only_moves_forward(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Queued).await;
    // Postgres keeps microseconds; whole seconds compare exactly after the round trip.
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let later = now + Duration::seconds(30);

    repo.touch_activity(job.id, later).await.unwrap();
    repo.touch_activity(job.id, now).await.unwrap();
    let stored = repo.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(stored.last_activity_at, Some(later));

    assert_eq!(
        repo.touch_activity(JobId::new(), now).await,
        Err(RepoError::NotFound)
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn listings_filter_and_order(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let bob = user("bob");
    let p1 = project(&repo, &alice).await;
    let p2 = project(&repo, &alice).await;
    let bobs = project(&repo, &bob).await;

    // Inserted one after another, so created_at increases (each insert is its own transaction).
    let a1 = job_at(&repo, p1.id, &alice, JobStatus::Queued).await;
    let a2 = job_at(&repo, p2.id, &alice, JobStatus::Starting).await;
    let a3 = job_at(&repo, p1.id, &alice, JobStatus::Queued).await;
    let b1 = job_at(&repo, bobs.id, &bob, JobStatus::Queued).await;

    let ids = |jobs: Vec<domain::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();

    assert_eq!(
        ids(repo.list_jobs_for_user(&alice, 10).await.unwrap()),
        vec![a3.id, a2.id, a1.id]
    );
    assert_eq!(
        ids(repo.list_jobs_for_user(&alice, 2).await.unwrap()),
        vec![a3.id, a2.id]
    );
    assert!(repo
        .list_jobs_for_user(&alice, -1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(repo.list_jobs_for_project(p1.id).await.unwrap()),
        vec![a3.id, a1.id]
    );
    // Oldest first, across users.
    assert_eq!(
        ids(repo
            .list_jobs_by_status(JobStatus::Queued, None, 10)
            .await
            .unwrap()),
        vec![a1.id, a3.id, b1.id]
    );
    assert_eq!(
        ids(repo
            .list_jobs_by_status(JobStatus::Starting, None, 10)
            .await
            .unwrap()),
        vec![a2.id]
    );
    assert!(repo
        .list_jobs_by_status(JobStatus::Ready, None, 10)
        .await
        .unwrap()
        .is_empty());
}

/// `updated_at` set `seconds` in the past, as if the job had been written then.
async fn written_ago(pool: &PgPool, id: JobId, seconds: i64) {
    sqlx::query(
        "UPDATE jobs SET updated_at = now() - make_interval(secs => $2), \
         completed_at = CASE WHEN completed_at IS NULL THEN NULL ELSE now() - make_interval(secs => $2) END \
         WHERE id = $1",
    )
        .bind(id.as_uuid())
        .bind(seconds as f64)
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn scrape_counts_give_the_queues_oldest_wait_and_the_idlest_unpaused_ready_sandbox(
    pool: PgPool,
) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let empty = infra_pg::count_jobs(&pool).await.unwrap();
    assert_eq!(
        (
            empty.oldest_queued_seconds,
            empty.ready_unpaused_idle_seconds
        ),
        (0.0, 0.0)
    );

    let old = repo
        .insert_job(&new_job(p.id, &alice, JobStatus::Queued))
        .await
        .unwrap();
    repo.insert_job(&new_job(p.id, &alice, JobStatus::Queued))
        .await
        .unwrap();
    written_ago(&pool, old.id, 300).await;
    // READY with a running sandbox, idle since its READY 120 s ago; a second one, paused, does not count.
    let idle = crate::helpers::ready_job(&repo, p.id, &alice).await;
    written_ago(&pool, idle.id, 120).await;
    let paused = crate::helpers::ready_job(&repo, p.id, &alice).await;
    sqlx::query(
        "UPDATE jobs SET sandbox_state = 'paused', sandbox_paused = true, \
         completed_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(paused.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap();

    let counts = infra_pg::count_jobs(&pool).await.unwrap();
    assert!(
        (300.0..330.0).contains(&counts.oldest_queued_seconds),
        "{counts:?}"
    );
    assert!(
        (120.0..150.0).contains(&counts.ready_unpaused_idle_seconds),
        "{counts:?}"
    );
    assert_eq!(counts.ready_unpaused, 1);
    let queued = counts.by_status.iter().find(|(s, _)| s == "queued");
    assert_eq!(queued, Some(&("queued".to_owned(), 2)));
}
