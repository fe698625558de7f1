use chrono::{Duration as ChronoDuration, TimeZone};

use super::super::fixtures::{job, live_accepting, reconciler};
use super::super::ReconcileConfig;
use super::*;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::Job;

fn midnight() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap()
}

/// A job scheduled at `created`, with a job id whose jitter is 150 s in the default 300 s window.
fn scheduled(created: DateTime<Utc>) -> Job {
    let mut j = job(JobStatus::Scheduled);
    j.id = JobId::from_uuid(uuid::Uuid::from_u128(150));
    j.created_at = created;
    j
}

fn run_with(j: Job, promote: bool) -> Reconciler {
    let mut repo = MockJobRepository::new();
    let row = j.clone();
    repo.expect_list_jobs_by_status()
        .withf(|s, _, _| *s == JobStatus::Scheduled)
        .returning(move |_, _, _| Ok(vec![row.clone()]));
    let mut queued = j.clone();
    queued.status = JobStatus::Queued;
    repo.expect_transition()
        // Counted against the day it is promoted on (every promotion here runs on midnight()'s day).
        .withf(|_, from, to, update| {
            *from == JobStatus::Scheduled
                && *to == JobStatus::Queued
                && update.counted_on == Some(midnight().date_naive())
        })
        .times(usize::from(promote))
        .returning(move |_, _, _, _| Ok(TransitionOutcome::Applied(Box::new(queued.clone()))));
    let mut queue = MockJobQueue::new();
    let id = j.id;
    queue
        .expect_enqueue()
        .withf(move |q| q.job_id == id)
        .times(usize::from(promote))
        .returning(|_| Ok(()));
    reconciler(
        repo,
        live_accepting(),
        queue,
        MockSandboxRuntime::new(),
        ReconcileConfig::default(),
    )
}

#[test]
fn jitter_is_fixed_per_job_and_inside_the_window() {
    let window = Duration::from_secs(300);
    assert_eq!(
        jitter(JobId::from_uuid(uuid::Uuid::from_u128(150)), window),
        Duration::from_secs(150)
    );
    let id = JobId::new();
    assert_eq!(jitter(id, window), jitter(id, window));
    assert!(jitter(id, window) <= window);
    assert_eq!(jitter(id, Duration::ZERO), Duration::ZERO);
}

#[tokio::test]
async fn a_job_scheduled_yesterday_is_queued_after_the_reset_and_its_jitter() {
    let j = scheduled(midnight() - ChronoDuration::hours(3));
    let now = midnight() + ChronoDuration::minutes(10);
    let report = run_with(j, true).promote_scheduled(now).await.unwrap();
    assert_eq!(report.promoted, 1);
}

#[tokio::test]
async fn inside_its_jitter_the_job_waits() {
    let j = scheduled(midnight() - ChronoDuration::hours(3));
    let now = midnight() + ChronoDuration::seconds(60);
    let report = run_with(j, false).promote_scheduled(now).await.unwrap();
    assert_eq!((report.promoted, report.waiting_for_jitter), (0, 1));
}

#[tokio::test]
async fn a_job_scheduled_today_waits_for_tomorrow() {
    let j = scheduled(midnight() + ChronoDuration::hours(1));
    let now = midnight() + ChronoDuration::hours(5);
    let report = run_with(j, false).promote_scheduled(now).await.unwrap();
    assert_eq!(report, PromoteReport::default());
}
