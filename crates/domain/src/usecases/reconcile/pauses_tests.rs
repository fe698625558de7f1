use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration as ChronoDuration;

use super::super::fixtures::{live_accepting, ready_job, reconciler, stateful_repo, Row};
use super::super::ReconcileConfig;
use super::*;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::{PauseOutcome, SandboxError};

/// A repository whose jobs needing attention are the one row while it is not paused.
fn attention_repo(j: &Job) -> (MockJobRepository, Row) {
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, j);
    let r = row.clone();
    repo.expect_jobs_needing_attention().returning(move |_, _| {
        let cur = r.current();
        Ok(if cur.sandbox_paused() {
            vec![]
        } else {
            vec![cur]
        })
    });
    (repo, row)
}

/// A runtime whose pause fails `failures` times, then succeeds; counts the calls.
fn flaky_runtime(failures: usize) -> (MockSandboxRuntime, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mut runtime = MockSandboxRuntime::new();
    runtime.expect_pause().returning(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) < failures {
            Err(SandboxError::Unavailable("try later".into()))
        } else {
            Ok(PauseOutcome::Paused)
        }
    });
    (runtime, calls)
}

/// `d` as a chrono duration, to move the `now` handed to the steps.
fn ch(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap()
}

#[tokio::test]
async fn a_failed_pause_is_retried_with_backoff_until_it_succeeds() {
    let j = ready_job(SandboxState::Running);
    let (repo, row) = attention_repo(&j);
    let (runtime, calls) = flaky_runtime(2);
    let config = ReconcileConfig::default();
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);
    let base = ch(config.pause_backoff_base);
    let mut now = Utc::now();

    let r1 = rec.retry_failed_pauses(now).await.unwrap();
    assert_eq!((r1.failed, r1.paused), (1, 0));
    assert_eq!(row.current().sandbox_state, SandboxState::Running);

    // Inside the backoff nothing is tried.
    let r2 = rec.retry_failed_pauses(now).await.unwrap();
    assert_eq!(r2.backing_off, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    now += base;
    let r3 = rec.retry_failed_pauses(now).await.unwrap();
    assert_eq!(r3.failed, 1);

    // The second wait is twice the first.
    now += base;
    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().backing_off, 1);
    now += base;
    let r4 = rec.retry_failed_pauses(now).await.unwrap();
    assert_eq!(r4.paused, 1);
    assert!(row.current().sandbox_paused());
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Idempotent: nothing left to do.
    assert_eq!(
        rec.retry_failed_pauses(now).await.unwrap(),
        PauseReport::default()
    );
}

/// The backoff follows the `now` handed in, not the process clock: with the process clock frozen, moving
/// `now` past the backoff retries, and not moving it does not.
#[tokio::test(start_paused = true)]
async fn the_backoff_runs_on_the_clock_passed_in() {
    let j = ready_job(SandboxState::Running);
    let (repo, _row) = attention_repo(&j);
    let (runtime, calls) = flaky_runtime(usize::MAX);
    let config = ReconcileConfig::default();
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);
    let now = Utc::now();
    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().failed, 1);

    // The process clock moving on is not the reconciler's clock.
    tokio::time::advance(config.pause_backoff_max * 2).await;
    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().backing_off, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let later = now + ch(config.pause_backoff_base);
    assert_eq!(rec.retry_failed_pauses(later).await.unwrap().failed, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn repeated_failures_mark_the_sandbox_pause_failed_and_retries_go_on() {
    let j = ready_job(SandboxState::Running);
    let (repo, row) = attention_repo(&j);
    let (runtime, _) = flaky_runtime(usize::MAX);
    let config = ReconcileConfig {
        max_pause_attempts: 2,
        ..ReconcileConfig::default()
    };
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);
    let mut now = Utc::now();
    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().gave_up, 0);
    now += ch(config.pause_backoff_max);
    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().gave_up, 1);
    assert_eq!(row.current().sandbox_state, SandboxState::PauseFailed);
    now += ch(config.pause_backoff_max);
    let again = rec.retry_failed_pauses(now).await.unwrap();
    assert_eq!((again.failed, again.gave_up), (1, 0));
    assert_eq!(row.current().sandbox_state, SandboxState::PauseFailed);
}

/// The front end polls status every few seconds, and each poll of a running sandbox counts as activity:
/// a never-resumed sandbox whose pause failed is still retried on its backoff while it is polled.
#[tokio::test]
async fn a_failed_pause_is_retried_while_status_polls_keep_counting_as_activity() {
    let mut j = ready_job(SandboxState::Running);
    let mut now = Utc::now();
    j.last_activity_at = Some(now);
    let (repo, row) = attention_repo(&j);
    let (runtime, calls) = flaky_runtime(1);
    let config = ReconcileConfig::default();
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);

    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().failed, 1);
    now += ch(config.pause_backoff_base);
    // A poll just now.
    row.job.lock().unwrap().last_activity_at = Some(now);
    let report = rec.retry_failed_pauses(now).await.unwrap();
    assert_eq!(report.paused, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(row.current().sandbox_paused());
}

#[tokio::test]
async fn a_just_ready_or_resumed_in_use_sandbox_is_not_a_failed_pause() {
    let mut fresh = ready_job(SandboxState::Running);
    let now = Utc::now();
    fresh.completed_at = Some(now);
    let mut resumed = ready_job(SandboxState::Running);
    resumed.resumed_at = Some(now);
    let mut resumed_in_use = ready_job(SandboxState::Running);
    resumed_in_use.resumed_at = Some(now - ChronoDuration::minutes(30));
    resumed_in_use.last_activity_at = Some(now - ChronoDuration::minutes(1));
    let mut repo = MockJobRepository::new();
    let jobs = vec![fresh, resumed, resumed_in_use];
    repo.expect_jobs_needing_attention()
        .returning(move |_, _| Ok(jobs.clone()));
    // No pause expectation: any pause would panic.
    let rec = reconciler(
        repo,
        live_accepting(),
        MockJobQueue::new(),
        MockSandboxRuntime::new(),
        ReconcileConfig::default(),
    );
    assert_eq!(rec.retry_failed_pauses(now).await.unwrap().due, 0);
}

#[tokio::test]
async fn a_resumed_sandbox_idle_past_the_limit_is_paused_and_an_active_one_is_not() {
    let now = Utc::now();
    let mut idle = ready_job(SandboxState::Running);
    idle.resumed_at = Some(now - ChronoDuration::minutes(30));
    idle.last_activity_at = Some(now - ChronoDuration::minutes(11));
    let mut active = ready_job(SandboxState::Running);
    active.resumed_at = Some(now - ChronoDuration::minutes(30));
    active.last_activity_at = Some(now - ChronoDuration::minutes(2));

    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &idle);
    let jobs = vec![idle.clone(), active];
    repo.expect_jobs_needing_attention()
        .returning(move |_, _| Ok(jobs.clone()));
    let mut runtime = MockSandboxRuntime::new();
    let idle_sandbox = idle.sandbox_id.clone().unwrap();
    runtime
        .expect_pause()
        .withf(move |id| *id == idle_sandbox)
        .times(1)
        .returning(|_| Ok(PauseOutcome::Paused));
    let rec = reconciler(
        repo,
        live_accepting(),
        MockJobQueue::new(),
        runtime,
        ReconcileConfig::default(),
    );
    let report = rec.repause_idle(now).await.unwrap();
    assert_eq!((report.due, report.paused), (1, 1));
    assert_eq!(
        row.written(),
        vec![SandboxState::Pausing, SandboxState::Paused]
    );
}

#[tokio::test]
async fn the_idle_policy_pauses_a_never_resumed_build_after_its_limit() {
    let now = Utc::now();
    let j = ready_job(SandboxState::Running); // completed an hour ago
    let config = ReconcileConfig {
        pause_policy: PausePolicy::Idle(Duration::from_secs(1800)),
        ..ReconcileConfig::default()
    };
    let rec = reconciler(
        MockJobRepository::new(),
        live_accepting(),
        MockJobQueue::new(),
        MockSandboxRuntime::new(),
        config,
    );
    assert!(rec.is_idle(&j, now));
    assert!(!rec.is_failed_pause(&j, now));
    let never = reconciler(
        MockJobRepository::new(),
        live_accepting(),
        MockJobQueue::new(),
        MockSandboxRuntime::new(),
        ReconcileConfig {
            pause_policy: PausePolicy::Never,
            ..ReconcileConfig::default()
        },
    );
    assert!(!never.is_idle(&j, now) && !never.is_failed_pause(&j, now));
}

/// Issue 14: every second a READY sandbox runs is billed, so a failed pause is first retried a few seconds
/// after READY (not a minute), then after 2 s, 4 s, 8 s… On a paused clock: only `now` moves.
#[tokio::test(start_paused = true)]
async fn a_failed_pause_is_retried_within_seconds_with_exponential_backoff() {
    let mut j = ready_job(SandboxState::Running);
    let ready_at = Utc::now();
    j.completed_at = Some(ready_at);
    j.updated_at = ready_at;
    let (repo, _row) = attention_repo(&j);
    let (runtime, calls) = flaky_runtime(usize::MAX);
    let config = ReconcileConfig::default();
    assert!(config.pause_grace <= Duration::from_secs(5), "{config:?}");
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);
    let at = |secs: i64| ready_at + ChronoDuration::seconds(secs);

    // Left to the build's own pause just after READY.
    assert_eq!(rec.retry_failed_pauses(at(1)).await.unwrap().due, 0);
    // Each retry comes when the doubling backoff says, and never before.
    let mut tried_at = Vec::new();
    for second in 1..=40 {
        let before = calls.load(Ordering::SeqCst);
        rec.retry_failed_pauses(at(second)).await.unwrap();
        if calls.load(Ordering::SeqCst) > before {
            tried_at.push(second);
        }
    }
    assert_eq!(tried_at, [5, 7, 11, 19, 35]);
}

/// A `pausing` record whose pauser is gone: the provider is asked. Already paused there: recorded paused
/// without another pause. Still running: paused now.
#[tokio::test]
async fn a_stale_pausing_record_is_settled_by_asking_the_provider() {
    for (there, pauses) in [(ProviderState::Paused, 0), (ProviderState::Running, 1)] {
        let j = ready_job(SandboxState::Pausing);
        let (repo, row) = attention_repo(&j);
        let mut runtime = MockSandboxRuntime::new();
        runtime
            .expect_state()
            .times(1)
            .returning(move |_| Ok(there));
        runtime
            .expect_pause()
            .times(pauses)
            .returning(|_| Ok(PauseOutcome::Paused));
        let config = ReconcileConfig::default();
        let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);

        // Fresh: a pause may be in flight.
        let fresh = j.updated_at - ChronoDuration::seconds(1);
        assert_eq!(rec.retry_failed_pauses(fresh).await.unwrap().due, 0);
        let stale = j.updated_at + ch(config.pausing_stale_after);
        let report = rec.retry_failed_pauses(stale).await.unwrap();
        assert_eq!(report.paused, 1, "{there:?}");
        assert!(row.current().sandbox_paused(), "{there:?}");
    }
}

/// A `pausing` record whose sandbox the provider no longer has is recorded expired.
#[tokio::test]
async fn a_stale_pausing_record_of_a_gone_sandbox_is_recorded_expired() {
    let j = ready_job(SandboxState::Pausing);
    let (repo, row) = attention_repo(&j);
    let mut runtime = MockSandboxRuntime::new();
    runtime
        .expect_state()
        .returning(|id| Err(SandboxError::NotFound(id.to_string())));
    runtime.expect_pause().never();
    let config = ReconcileConfig::default();
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);
    let stale = j.updated_at + ch(config.pausing_stale_after);
    assert_eq!(rec.retry_failed_pauses(stale).await.unwrap().expired, 1);
    assert_eq!(row.current().sandbox_state, SandboxState::Expired);
}

/// The step pages through every job needing attention: a failed pause behind a full page is retried.
#[tokio::test]
async fn a_failed_pause_past_the_first_page_is_retried() {
    let config = ReconcileConfig {
        scan_limit: 3,
        ..ReconcileConfig::default()
    };
    // Seven resumed sandboxes in use (not due), then the failed pause, on the third page.
    let mut jobs: Vec<Job> = (0..7)
        .map(|_| {
            let mut j = ready_job(SandboxState::Running);
            j.resumed_at = Some(Utc::now());
            j.last_activity_at = Some(Utc::now());
            j
        })
        .collect();
    let failed = ready_job(SandboxState::Running);
    jobs.push(failed.clone());
    let mut repo = MockJobRepository::new();
    let row = stateful_repo(&mut repo, &failed);
    let listed = jobs.clone();
    repo.expect_jobs_needing_attention()
        .returning(move |after, limit| {
            let start = after.map_or(0, |a| listed.iter().position(|j| j.id == a.id).unwrap() + 1);
            Ok(listed
                .iter()
                .skip(start)
                .take(limit as usize)
                .cloned()
                .collect())
        });
    let mut runtime = MockSandboxRuntime::new();
    runtime
        .expect_pause()
        .times(1)
        .returning(|_| Ok(PauseOutcome::Paused));
    let rec = reconciler(repo, live_accepting(), MockJobQueue::new(), runtime, config);
    let report = rec.retry_failed_pauses(Utc::now()).await.unwrap();
    assert_eq!((report.due, report.paused), (1, 1));
    assert!(row.current().sandbox_paused());
}
