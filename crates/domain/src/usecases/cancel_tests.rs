use chrono::Utc;
use mockall::predicate::eq;

use super::*;
use crate::ports::live_store::MockLiveJobStore;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::QueueError;
use crate::{ProjectId, SandboxId, Tier};

fn user() -> UserId {
    UserId::try_from("user_1").unwrap()
}

fn job(id: JobId, status: JobStatus) -> Job {
    let now = Utc::now();
    Job {
        id,
        project_id: ProjectId::new(),
        user_id: user(),
        tier: Tier::Bootstrapper,
        goal: "g".into(),
        status,
        status_message: None,
        error_message: None,
        debug_id: None,
        attempts: 0,
        sandbox_id: None,
        preview_url: None,
        workspace_path: None,
        build_version: None,
        sandbox_state: SandboxState::None,
        sandbox_state_version: 0,
        paused_at: None,
        resumed_at: None,
        sandbox_expires_at: None,
        last_activity_at: None,
        enqueued_at: Some(now),
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
        duration_seconds: None,
    }
}

struct Mocks {
    repo: MockJobRepository,
    live: MockLiveJobStore,
    queue: MockJobQueue,
    sandbox: MockSandboxRuntime,
}

impl Mocks {
    fn new() -> Self {
        Self {
            repo: MockJobRepository::new(),
            live: MockLiveJobStore::new(),
            queue: MockJobQueue::new(),
            sandbox: MockSandboxRuntime::new(),
        }
    }

    fn deps(&self) -> CancelDeps<'_> {
        CancelDeps {
            repo: &self.repo,
            live: &self.live,
            queue: &self.queue,
            sandbox: &self.sandbox,
        }
    }

    fn finds(&mut self, found: Job) {
        self.repo
            .expect_get_job_for_user()
            .times(1)
            .with(eq(found.id), eq(user()))
            .returning(move |_, _| Ok(Some(found.clone())));
    }

    fn applies_from(&mut self, from: JobStatus, base: Job) {
        self.repo
            .expect_transition()
            .times(1)
            .withf(move |_, f, to, upd| {
                *f == from
                    && *to == JobStatus::Failed
                    && upd.message.as_deref() == Some(CANCELLED_MESSAGE)
            })
            .returning(move |_, _, to, upd| {
                let mut j = base.clone();
                j.status = to;
                j.status_message = upd.message;
                Ok(TransitionOutcome::Applied(Box::new(j)))
            });
    }

    fn publishes_failed(&mut self) {
        self.live
            .expect_save_and_publish()
            .times(1)
            .withf(|j, ev| j.status == JobStatus::Failed && ev.message == CANCELLED_MESSAGE)
            .returning(|_, _| Ok(()));
    }
}

#[tokio::test]
async fn a_missing_or_foreign_job_is_not_found() {
    let mut m = Mocks::new();
    m.repo.expect_get_job_for_user().returning(|_, _| Ok(None));
    m.repo.expect_transition().never();
    let got = cancel_job(m.deps(), &user(), JobId::new()).await;
    assert_eq!(got, Err(CancelError::NotFound));
}

#[tokio::test]
async fn ready_and_failed_jobs_are_terminal() {
    for status in [JobStatus::Ready, JobStatus::Failed] {
        let mut m = Mocks::new();
        let id = JobId::new();
        m.finds(job(id, status));
        m.repo.expect_transition().never();
        let got = cancel_job(m.deps(), &user(), id).await;
        assert_eq!(got, Err(CancelError::Terminal(status)));
    }
}

#[tokio::test]
async fn a_queued_job_leaves_the_queue_then_fails() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let j = job(id, JobStatus::Queued);
    m.finds(j.clone());
    let mut seq = mockall::Sequence::new();
    m.queue
        .expect_remove()
        .with(eq(id))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(true));
    m.repo
        .expect_transition()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|_, f, to, _| *f == JobStatus::Queued && *to == JobStatus::Failed)
        .returning(move |_, _, to, _| {
            let mut j = j.clone();
            j.status = to;
            Ok(TransitionOutcome::Applied(Box::new(j)))
        });
    m.publishes_failed();
    m.sandbox.expect_kill().never();
    let got = cancel_job(m.deps(), &user(), id).await.unwrap();
    assert_eq!(got.from, JobStatus::Queued);
    assert_eq!(got.job.status, JobStatus::Failed);
}

#[tokio::test]
async fn a_queue_outage_does_not_stop_the_cancel() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let j = job(id, JobStatus::Queued);
    m.finds(j.clone());
    m.queue
        .expect_remove()
        .returning(|_| Err(QueueError::Unavailable("down".into())));
    m.applies_from(JobStatus::Queued, j);
    m.publishes_failed();
    assert!(cancel_job(m.deps(), &user(), id).await.is_ok());
}

#[tokio::test]
async fn a_scheduled_job_is_failed_without_touching_the_queue() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let j = job(id, JobStatus::Scheduled);
    m.finds(j.clone());
    m.queue.expect_remove().never();
    m.applies_from(JobStatus::Scheduled, j);
    m.publishes_failed();
    let got = cancel_job(m.deps(), &user(), id).await.unwrap();
    assert_eq!(got.from, JobStatus::Scheduled);
}

#[tokio::test]
async fn a_lost_race_re_reads_and_cancels_from_the_new_status() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let code = job(id, JobStatus::Code);
    let deps_stage = job(id, JobStatus::Deps);
    let mut seq = mockall::Sequence::new();
    let first = code.clone();
    m.repo
        .expect_get_job_for_user()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(first.clone())));
    m.repo
        .expect_transition()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|_, f, _, _| *f == JobStatus::Code)
        .returning(|_, _, _, _| {
            Ok(TransitionOutcome::Conflict {
                current: Some(JobStatus::Deps),
            })
        });
    let second = deps_stage.clone();
    m.repo
        .expect_get_job_for_user()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(second.clone())));
    m.applies_from(JobStatus::Deps, deps_stage);
    m.publishes_failed();
    let got = cancel_job(m.deps(), &user(), id).await.unwrap();
    assert_eq!(got.from, JobStatus::Deps);
}

#[tokio::test]
async fn a_race_lost_to_ready_reports_the_terminal_state() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let mut seq = mockall::Sequence::new();
    m.repo
        .expect_get_job_for_user()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(job(id, JobStatus::Checks))));
    m.repo
        .expect_transition()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| {
            Ok(TransitionOutcome::Conflict {
                current: Some(JobStatus::Ready),
            })
        });
    m.repo
        .expect_get_job_for_user()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(Some(job(id, JobStatus::Ready))));
    let got = cancel_job(m.deps(), &user(), id).await;
    assert_eq!(got, Err(CancelError::Terminal(JobStatus::Ready)));
}

#[tokio::test]
async fn a_building_job_with_a_sandbox_has_it_killed_and_recorded() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let mut j = job(id, JobStatus::Deps);
    j.sandbox_id = Some(SandboxId::try_from("sbx1").unwrap());
    j.sandbox_state = SandboxState::Running;
    j.sandbox_state_version = 4;
    m.finds(j.clone());
    m.applies_from(JobStatus::Deps, j.clone());
    let mut seq = mockall::Sequence::new();
    m.live
        .expect_save_and_publish()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    m.sandbox
        .expect_kill()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|s| s.as_str() == "sbx1")
        .returning(|_| Err(SandboxError::NotFound("gone".into())));
    let killed = {
        let mut k = j.clone();
        k.status = JobStatus::Failed;
        k.sandbox_state = SandboxState::Killed;
        k.sandbox_state_version = 5;
        k
    };
    m.repo
        .expect_set_sandbox_state()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|_, u| u.expected_version == 4 && u.state == SandboxState::Killed)
        .returning(move |_, _| Ok(Some(killed.clone())));
    m.live
        .expect_save()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|j| j.sandbox_state == SandboxState::Killed)
        .returning(|_| Ok(()));
    let got = cancel_job(m.deps(), &user(), id).await.unwrap();
    assert_eq!(got.job.sandbox_state, SandboxState::Killed);
}

#[tokio::test]
async fn a_failed_kill_leaves_the_sandbox_to_the_reconciler() {
    let mut m = Mocks::new();
    let id = JobId::new();
    let mut j = job(id, JobStatus::Checks);
    j.sandbox_id = Some(SandboxId::try_from("sbx2").unwrap());
    j.sandbox_state = SandboxState::Running;
    m.finds(j.clone());
    m.applies_from(JobStatus::Checks, j);
    m.publishes_failed();
    m.sandbox
        .expect_kill()
        .times(1)
        .returning(|_| Err(SandboxError::Unavailable("503".into())));
    m.repo.expect_set_sandbox_state().never();
    let got = cancel_job(m.deps(), &user(), id).await.unwrap();
    assert_eq!(got.job.status, JobStatus::Failed);
    assert_eq!(got.job.sandbox_state, SandboxState::Running);
}
