//! Fencing by attempt, paging, and statements whose connection Postgres terminates under them.

use std::time::Duration;

use domain::ports::{JobRepository, PageAfter, TransitionOutcome, TransitionUpdate};
use domain::{JobId, JobStatus};
use sqlx::{Connection, PgConnection, PgPool};

use crate::helpers::{applied, job_at, new_job, project, repo, user};

/// A stalled worker's build (attempt 1) wakes up after its job was requeued and started again (attempt
/// 2), both at the same stage: its write is refused, the new attempt's goes through.
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_stale_attempts_write_is_refused(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let first = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;
    assert_eq!(first.attempts, 1);
    repo.requeue_job(first.id, JobStatus::Scaffold, 1)
        .await
        .unwrap();
    for (from, to) in [
        (JobStatus::Queued, JobStatus::Starting),
        (JobStatus::Starting, JobStatus::Scaffold),
    ] {
        repo.transition(first.id, from, to, TransitionUpdate::default())
            .await
            .unwrap();
    }
    let fenced = |attempt| TransitionUpdate {
        attempt: Some(attempt),
        message: Some(format!("attempt {attempt}")),
        ..TransitionUpdate::default()
    };

    let stale = repo
        .transition(first.id, JobStatus::Scaffold, JobStatus::Code, fenced(1))
        .await
        .unwrap();
    assert_eq!(
        stale,
        TransitionOutcome::Conflict {
            current: Some(JobStatus::Scaffold)
        }
    );
    // Nor may it requeue the new attempt, fail it, or record its sandbox on it.
    assert!(matches!(
        repo.requeue_job(first.id, JobStatus::Scaffold, 1)
            .await
            .unwrap(),
        TransitionOutcome::Conflict { .. }
    ));
    assert!(matches!(
        repo.transition(first.id, JobStatus::Scaffold, JobStatus::Failed, fenced(1))
            .await
            .unwrap(),
        TransitionOutcome::Conflict { .. }
    ));
    let row = repo.get_job(first.id).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (JobStatus::Scaffold, 2));

    let current = applied(
        repo.transition(first.id, JobStatus::Scaffold, JobStatus::Code, fenced(2))
            .await
            .unwrap(),
    );
    assert_eq!(current.status_message.as_deref(), Some("attempt 2"));
}

/// Listing by status pages through every row, in (created_at, id) order, however many there are.
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn listing_by_status_pages_through_every_job(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let mut inserted = Vec::new();
    for _ in 0..7 {
        let job = repo
            .insert_job(&new_job(p.id, &alice, JobStatus::Queued))
            .await
            .unwrap();
        inserted.push(job.id);
    }
    let mut seen: Vec<JobId> = Vec::new();
    let mut after = None;
    loop {
        let page = repo
            .list_jobs_by_status(JobStatus::Queued, after, 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(PageAfter::job(last));
        seen.extend(page.iter().map(|j| j.id));
    }
    assert_eq!(seen, inserted);
}

/// The statement's connection is terminated while it runs (it waits on a row lock, as a write does under
/// load): the repository retries it on a fresh connection and the stage write applies once.
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_connection_terminated_under_a_stage_write_is_retried(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Code).await;
    let options = pool.connect_options().as_ref().clone();

    // Another session holds the row, so the write waits where it can be found and terminated.
    let mut holder = PgConnection::connect_with(&options).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(job.id.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();

    let write = {
        let repo = repo.clone();
        tokio::spawn(async move {
            repo.transition(
                job.id,
                JobStatus::Code,
                JobStatus::Deps,
                TransitionUpdate {
                    attempt: Some(1),
                    ..TransitionUpdate::default()
                },
            )
            .await
        })
    };
    let mut admin = PgConnection::connect_with(&options).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let terminated = loop {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND query LIKE 'UPDATE jobs SET%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if killed.contains(&true) {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(terminated, "the stage write never waited on the row");
    tx.commit().await.unwrap();

    let moved = applied(write.await.unwrap().expect("retried after the termination"));
    assert_eq!(moved.status, JobStatus::Deps);
    assert_eq!(
        repo.get_job(job.id).await.unwrap().unwrap().status,
        JobStatus::Deps
    );
}

/// Every connection the repository keeps is terminated while idle (a Postgres restart, an operator):
/// the next statements find fresh connections instead of failing on the dead ones.
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn connections_terminated_while_idle_are_not_handed_out(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    // Several connections kept between statements.
    let new: Vec<_> = (0..4)
        .map(|_| new_job(p.id, &alice, JobStatus::Queued))
        .collect();
    let jobs = futures::future::join_all(new.iter().map(|j| repo.insert_job(j))).await;
    let mut admin = PgConnection::connect_with(pool.connect_options().as_ref())
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed > 0);
    for job in jobs {
        let job = job.unwrap();
        assert!(repo.get_job(job.id).await.unwrap().is_some());
        applied(
            repo.transition(
                job.id,
                JobStatus::Queued,
                JobStatus::Starting,
                TransitionUpdate::default(),
            )
            .await
            .unwrap(),
        );
    }
}
