//! The daily quota, counted in the same transaction as the insert.

use chrono::{Days, NaiveDate, Utc};
use domain::ports::{Admitted, JobRepository, RepoError, TransitionUpdate};
use domain::quota::{DailyQuota, SCHEDULED_MESSAGE};
use domain::{Job, JobStatus, ProjectId};
use infra_pg::PgJobRepository;
use sqlx::PgPool;

use crate::helpers::{applied, new_job, project, repo, user};

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn quota(daily_jobs: u32, scheduled_cap: u32) -> DailyQuota {
    DailyQuota {
        day: today(),
        daily_jobs,
        scheduled_cap,
    }
}

fn inserted(admitted: Admitted) -> (Job, u32) {
    match admitted {
        Admitted::Inserted { job, counted_today } => (*job, counted_today),
        other => panic!("expected Inserted, got {other:?}"),
    }
}

async fn job_count(repo: &PgJobRepository) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(repo.pool())
        .await
        .unwrap()
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn under_the_limit_queued_then_scheduled_up_to_the_cap_then_refused(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let new = new_job(p.id, &alice, JobStatus::Queued);
        let (job, counted) = inserted(repo.insert_admitted_job(&new, quota(2, 2)).await.unwrap());
        seen.push((job.status, job.status_message, counted));
    }
    assert_eq!(
        seen,
        vec![
            (JobStatus::Queued, None, 1),
            (JobStatus::Queued, None, 2),
            (JobStatus::Scheduled, Some(SCHEDULED_MESSAGE.to_owned()), 2),
            (JobStatus::Scheduled, Some(SCHEDULED_MESSAGE.to_owned()), 2),
        ]
    );
    let refused = repo
        .insert_admitted_job(&new_job(p.id, &alice, JobStatus::Queued), quota(2, 2))
        .await
        .unwrap();
    assert_eq!(refused, Admitted::TooManyScheduled { scheduled: 2 });
    assert_eq!(job_count(&repo).await, 4);
    assert_eq!(repo.jobs_counted_on(&alice, today()).await.unwrap(), 2);
    // Another founder's quota is their own.
    assert_eq!(
        repo.jobs_counted_on(&user("bob"), today()).await.unwrap(),
        0
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn concurrent_submits_of_one_founder_are_admitted_one_at_a_time(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let submits = (0..12).map(|_| {
        let repo = repo.clone();
        let new = new_job(p.id, &alice, JobStatus::Queued);
        async move { repo.insert_admitted_job(&new, quota(3, 4)).await.unwrap() }
    });
    let results = futures::future::join_all(submits).await;
    let queued = results
        .iter()
        .filter(|a| matches!(a, Admitted::Inserted { job, .. } if job.status == JobStatus::Queued))
        .count();
    let scheduled = results
        .iter()
        .filter(
            |a| matches!(a, Admitted::Inserted { job, .. } if job.status == JobStatus::Scheduled),
        )
        .count();
    assert_eq!((queued, scheduled), (3, 4));
    assert_eq!(repo.jobs_counted_on(&alice, today()).await.unwrap(), 3);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_refused_insert_counts_nothing(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    // Someone else's project, and a project that does not exist: nothing inserted, nothing counted.
    let bob = user("bob");
    for project_id in [p.id, ProjectId::new()] {
        let got = repo
            .insert_admitted_job(&new_job(project_id, &bob, JobStatus::Queued), quota(5, 5))
            .await;
        assert_eq!(got, Err(RepoError::NotFound));
    }
    // A duplicate id: refused by the insert, after the count was read.
    let first = new_job(p.id, &alice, JobStatus::Queued);
    inserted(repo.insert_admitted_job(&first, quota(5, 5)).await.unwrap());
    let again = repo.insert_admitted_job(&first, quota(5, 5)).await;
    assert_eq!(again, Err(RepoError::AlreadyExists));
    assert_eq!(repo.jobs_counted_on(&alice, today()).await.unwrap(), 1);
    assert_eq!(repo.jobs_counted_on(&bob, today()).await.unwrap(), 0);
    assert_eq!(job_count(&repo).await, 1);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_promoted_job_counts_against_the_day_it_is_promoted(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let new = new_job(p.id, &alice, JobStatus::Queued);
    let (job, _) = inserted(repo.insert_admitted_job(&new, quota(0, 5)).await.unwrap());
    assert_eq!(job.status, JobStatus::Scheduled);
    assert_eq!(repo.jobs_counted_on(&alice, today()).await.unwrap(), 0);

    let tomorrow = today().checked_add_days(Days::new(1)).unwrap();
    let promoted = applied(
        repo.transition(
            job.id,
            JobStatus::Scheduled,
            JobStatus::Queued,
            TransitionUpdate {
                counted_on: Some(tomorrow),
                ..TransitionUpdate::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(promoted.status, JobStatus::Queued);
    assert_eq!(repo.jobs_counted_on(&alice, today()).await.unwrap(), 0);
    assert_eq!(repo.jobs_counted_on(&alice, tomorrow).await.unwrap(), 1);
    // And tomorrow's quota sees it: one of a limit of one is used.
    let next = DailyQuota {
        day: tomorrow,
        daily_jobs: 1,
        scheduled_cap: 5,
    };
    let (later, counted) = inserted(
        repo.insert_admitted_job(&new_job(p.id, &alice, JobStatus::Queued), next)
            .await
            .unwrap(),
    );
    assert_eq!((later.status, counted), (JobStatus::Scheduled, 1));
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_job_failed_with_its_quota_refunded_no_longer_counts(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let new = new_job(p.id, &alice, JobStatus::Queued);
    let (job, counted) = inserted(repo.insert_admitted_job(&new, quota(5, 5)).await.unwrap());
    assert_eq!(counted, 1);
    let failed = applied(
        repo.transition(
            job.id,
            JobStatus::Queued,
            JobStatus::Failed,
            TransitionUpdate {
                refund_quota: true,
                ..TransitionUpdate::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(repo.jobs_counted_on(&alice, today()).await.unwrap(), 0);
}
