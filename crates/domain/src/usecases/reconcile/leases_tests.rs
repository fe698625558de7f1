use std::sync::{Arc, Mutex};

use chrono::Duration as ChronoDuration;

use super::super::fixtures::{job, live_accepting, reconciler, sandbox_id};
use super::super::ReconcileConfig;
use super::*;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;

/// A building job with a live sandbox and `attempts` leases behind it, just updated.
fn building(attempts: i32) -> Job {
    let mut j = job(JobStatus::Deps);
    j.attempts = attempts;
    j.sandbox_id = Some(sandbox_id("sbx-build"));
    j.sandbox_state = SandboxState::Running;
    j.updated_at = Utc::now();
    j
}

fn killing_runtime() -> MockSandboxRuntime {
    let mut runtime = MockSandboxRuntime::new();
    runtime
        .expect_kill()
        .withf(|id| id.as_str() == "sbx-build")
        .times(1)
        .returning(|_| Ok(()));
    runtime
}

/// A queue that reclaims `reclaimed` once, holds nothing else, and records what is enqueued.
fn queue(reclaimed: Vec<JobId>) -> (MockJobQueue, Arc<Mutex<Vec<JobId>>>) {
    let mut q = MockJobQueue::new();
    let jobs: Vec<QueuedJob> = reclaimed
        .into_iter()
        .map(|id| {
            let mut j = job(JobStatus::Deps);
            j.id = id;
            queued_job(&j)
        })
        .collect();
    q.expect_expired_leases()
        .returning(move |_| Ok(jobs.clone()));
    q.expect_drop_expired().returning(|_| Ok(true));
    q.expect_contains().returning(|_| Ok(false));
    let enqueued: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let e = enqueued.clone();
    q.expect_enqueue().returning(move |j| {
        e.lock().unwrap().push(j.job_id);
        Ok(())
    });
    (q, enqueued)
}

fn repo_with(j: &Job, building_list: Vec<Job>) -> MockJobRepository {
    let mut repo = MockJobRepository::new();
    let row = j.clone();
    repo.expect_get_job()
        .returning(move |_| Ok(Some(row.clone())));
    repo.expect_list_jobs_by_status().returning(move |s, _, _| {
        Ok(building_list
            .iter()
            .filter(|j| j.status == s)
            .cloned()
            .collect())
    });
    repo
}

#[tokio::test]
async fn an_expired_lease_kills_the_sandbox_and_requeues_the_build() {
    let j = building(1);
    let mut repo = repo_with(&j, vec![]);
    let mut requeued = j.clone();
    requeued.status = JobStatus::Queued;
    requeued.sandbox_id = None;
    requeued.sandbox_state = SandboxState::None;
    repo.expect_requeue_job()
        .withf(|_, from, _| *from == JobStatus::Deps)
        .times(1)
        .returning(move |_, _, _| Ok(TransitionOutcome::Applied(Box::new(requeued.clone()))));
    let (q, enqueued) = queue(vec![j.id]);
    let rec = reconciler(
        repo,
        live_accepting(),
        q,
        killing_runtime(),
        ReconcileConfig::default(),
    );
    let report = rec.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!(
        (report.reclaimed, report.requeued, report.sandboxes_killed),
        (1, 1, 1)
    );
    assert_eq!(*enqueued.lock().unwrap(), vec![j.id]);
}

#[tokio::test]
async fn after_max_attempts_the_build_fails_with_its_sandbox_killed() {
    let j = building(3);
    let mut repo = repo_with(&j, vec![]);
    let mut failed = j.clone();
    failed.status = JobStatus::Failed;
    failed.error_message = Some("Build worker lost after 3 attempts".into());
    let f = failed.clone();
    repo.expect_transition()
        .withf(|_, from, to, u| {
            *from == JobStatus::Deps
                && *to == JobStatus::Failed
                && u.error_message.as_deref() == Some("Build worker lost after 3 attempts")
        })
        .times(1)
        .returning(move |_, _, _, _| Ok(TransitionOutcome::Applied(Box::new(f.clone()))));
    let mut killed = failed.clone();
    killed.sandbox_state = SandboxState::Killed;
    repo.expect_set_sandbox_state()
        .withf(|_, u| u.state == SandboxState::Killed)
        .times(1)
        .returning(move |_, _| Ok(Some(killed.clone())));
    let mut live = crate::ports::live_store::MockLiveJobStore::new();
    live.expect_save_and_publish()
        .withf(|j, e| e.status == JobStatus::Failed && j.sandbox_state == SandboxState::Killed)
        .times(1)
        .returning(|_, _| Ok(()));
    let (q, enqueued) = queue(vec![j.id]);
    let rec = reconciler(repo, live, q, killing_runtime(), ReconcileConfig::default());
    let report = rec.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!(
        (report.failed, report.requeued, report.sandboxes_killed),
        (1, 0, 1)
    );
    assert!(enqueued.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_building_job_that_lost_its_lease_with_redis_is_recovered_after_the_grace() {
    let mut j = building(1);
    j.updated_at = Utc::now() - ChronoDuration::minutes(20);
    let mut fresh = building(1);
    fresh.status = JobStatus::Code;
    let mut repo = repo_with(&j, vec![j.clone(), fresh]);
    let mut requeued = j.clone();
    requeued.status = JobStatus::Queued;
    repo.expect_requeue_job()
        .times(1)
        .returning(move |_, _, _| Ok(TransitionOutcome::Applied(Box::new(requeued.clone()))));
    let (q, enqueued) = queue(vec![]);
    let rec = reconciler(
        repo,
        live_accepting(),
        q,
        killing_runtime(),
        ReconcileConfig::default(),
    );
    let report = rec.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!((report.orphaned, report.requeued), (1, 1));
    assert_eq!(*enqueued.lock().unwrap(), vec![j.id]);
}

#[tokio::test]
async fn a_finished_job_whose_lease_expired_is_left_alone() {
    let j = job(JobStatus::Ready);
    let repo = repo_with(&j, vec![]);
    let (q, enqueued) = queue(vec![j.id]);
    let rec = reconciler(
        repo,
        live_accepting(),
        q,
        MockSandboxRuntime::new(),
        ReconcileConfig::default(),
    );
    let report = rec.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!(report.untouched, 1);
    assert!(enqueued.lock().unwrap().is_empty());
}

#[test]
fn the_worker_lost_message_counts_attempts_in_english() {
    assert_eq!(worker_lost_message(1), "Build worker lost after 1 attempt");
    assert_eq!(worker_lost_message(3), "Build worker lost after 3 attempts");
}

/// A recovery cut short (here the provider refuses the kill; a Postgres blip is the same) keeps the
/// expired lease, so the next pass finds the job again instead of leaving it to the orphan sweep.
#[tokio::test]
async fn a_failed_recovery_keeps_the_expired_lease_for_the_next_pass() {
    let j = building(1);
    let mut repo = repo_with(&j, vec![]);
    repo.expect_requeue_job().never();
    let mut q = MockJobQueue::new();
    let mut lost = job(JobStatus::Deps);
    lost.id = j.id;
    let expired = vec![queued_job(&lost)];
    q.expect_expired_leases()
        .returning(move |_| Ok(expired.clone()));
    q.expect_drop_expired().never();
    q.expect_enqueue().never();
    q.expect_contains().returning(|_| Ok(true));
    let mut runtime = MockSandboxRuntime::new();
    runtime
        .expect_kill()
        .returning(|_| Err(SandboxError::Unavailable("provider down".into())));
    let rec = reconciler(
        repo,
        live_accepting(),
        q,
        runtime,
        ReconcileConfig::default(),
    );
    let report = rec.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!(
        (report.reclaimed, report.errors, report.requeued),
        (1, 1, 0)
    );
}

/// The lease goes only after the job is requeued in Postgres, and before the enqueue (a job still leased
/// cannot be queued).
#[tokio::test]
async fn the_expired_lease_is_dropped_after_the_requeue_and_before_the_enqueue() {
    let j = building(1);
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let mut repo = repo_with(&j, vec![]);
    let mut requeued = j.clone();
    requeued.status = JobStatus::Queued;
    let o = order.clone();
    repo.expect_requeue_job()
        .withf(|_, from, attempt| *from == JobStatus::Deps && *attempt == 1)
        .returning(move |_, _, _| {
            o.lock().unwrap().push("requeue");
            Ok(TransitionOutcome::Applied(Box::new(requeued.clone())))
        });
    let mut q = MockJobQueue::new();
    let expired = vec![queued_job(&j)];
    q.expect_expired_leases()
        .returning(move |_| Ok(expired.clone()));
    let o = order.clone();
    q.expect_drop_expired().times(1).returning(move |_| {
        o.lock().unwrap().push("drop lease");
        Ok(true)
    });
    let o = order.clone();
    q.expect_enqueue().times(1).returning(move |_| {
        o.lock().unwrap().push("enqueue");
        Ok(())
    });
    let rec = reconciler(
        repo,
        live_accepting(),
        q,
        killing_runtime(),
        ReconcileConfig::default(),
    );
    rec.recover_expired_leases(Utc::now()).await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["requeue", "drop lease", "enqueue"]);
}
