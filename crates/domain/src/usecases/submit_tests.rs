use chrono::Utc;
use mockall::predicate::eq;

use super::*;
use crate::ports::live_store::MockLiveJobStore;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::StoreError;
use crate::quota::QuotaCounts;
use crate::{Project, ProjectStatus, SandboxState};

pub(crate) fn job_from(new: &NewJob) -> Job {
    let now = Utc::now();
    Job {
        id: new.id,
        project_id: new.project_id,
        user_id: new.user_id.clone(),
        tier: new.tier,
        goal: new.goal.as_str().to_owned(),
        status: new.status,
        status_message: new.status_message.clone(),
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

fn user() -> UserId {
    UserId::try_from("user_1").unwrap()
}

fn goal() -> JobGoal {
    JobGoal::try_from("a todo app".to_owned()).unwrap()
}

/// What the repository answers for a founder with these `counts`: the quota's own decision.
fn admitted(new: &NewJob, quota: DailyQuota, counts: QuotaCounts) -> Admitted {
    match quota.admit(counts).status() {
        Some((status, message)) => {
            let mut job = job_from(new);
            job.status = status;
            job.status_message = message.map(str::to_owned);
            Admitted::Inserted {
                job: Box::new(job),
                counted_today: counts.counted_today + u32::from(status == JobStatus::Queued),
            }
        }
        None => Admitted::TooManyScheduled {
            scheduled: counts.scheduled,
        },
    }
}

fn counts(counted_today: u32, scheduled: u32) -> QuotaCounts {
    QuotaCounts {
        counted_today,
        scheduled,
    }
}

struct Mocks {
    repo: MockJobRepository,
    live: MockLiveJobStore,
    queue: MockJobQueue,
    tiers: TierTable,
}

impl Mocks {
    fn new() -> Self {
        Self {
            repo: MockJobRepository::new(),
            live: MockLiveJobStore::new(),
            queue: MockJobQueue::new(),
            tiers: TierTable::default(),
        }
    }

    fn deps(&self) -> SubmitDeps<'_> {
        SubmitDeps {
            repo: &self.repo,
            live: &self.live,
            queue: &self.queue,
            tiers: &self.tiers,
        }
    }

    fn owns_project(&mut self, project: ProjectId) {
        self.repo
            .expect_get_project_for_user()
            .with(eq(project), eq(user()))
            .returning(move |id, u| {
                Ok(Some(Project {
                    id,
                    user_id: u.clone(),
                    name: "p".into(),
                    description: String::new(),
                    github_repo: None,
                    status: ProjectStatus::Active,
                    created_at: Utc::now(),
                    last_build_version: 0,
                }))
            });
    }

    /// The founder has `counts` when the job is inserted.
    fn inserts(&mut self, counts: QuotaCounts) {
        self.repo
            .expect_insert_admitted_job()
            .times(1)
            .returning(move |new, quota| Ok(admitted(new, quota, counts)));
    }
}

#[tokio::test]
async fn a_job_within_limits_is_inserted_saved_and_enqueued_in_that_order() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    let mut seq = mockall::Sequence::new();
    m.queue.expect_pending_len().returning(|| Ok(0));
    m.repo
        .expect_insert_admitted_job()
        .times(1)
        .in_sequence(&mut seq)
        .withf(|new, quota| {
            new.user_id == user()
                && quota.daily_jobs == 50
                && quota.scheduled_cap == 20
                && quota.day == Utc::now().date_naive()
        })
        .returning(|new, quota| Ok(admitted(new, quota, counts(0, 0))));
    m.live
        .expect_save()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    m.queue
        .expect_enqueue()
        .times(1)
        .in_sequence(&mut seq)
        .withf(move |q| q.project_id == project && q.tier == Tier::Partner)
        .returning(|_| Ok(()));

    let got = submit_job(m.deps(), &user(), Tier::Partner, project, goal())
        .await
        .unwrap();
    assert_eq!(got.job.status, JobStatus::Queued);
    assert_eq!(got.build_version, "build_v0_1");
    assert_eq!((got.usage.used, got.usage.limit), (1, 50));
}

#[tokio::test]
async fn another_users_project_is_not_found_and_nothing_is_written() {
    let mut m = Mocks::new();
    m.repo
        .expect_get_project_for_user()
        .returning(|_, _| Ok(None));
    m.repo.expect_insert_admitted_job().never();
    m.queue.expect_enqueue().never();
    let got = submit_job(
        m.deps(),
        &user(),
        Tier::Bootstrapper,
        ProjectId::new(),
        goal(),
    )
    .await;
    assert_eq!(got, Err(SubmitError::ProjectNotFound));
}

#[tokio::test]
async fn past_the_daily_limit_the_job_is_scheduled_and_not_enqueued() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    m.queue.expect_pending_len().returning(|| Ok(0));
    m.inserts(counts(5, 0));
    m.live
        .expect_save()
        .times(1)
        .withf(|job| job.status_message.as_deref() == Some(SCHEDULED_MESSAGE))
        .returning(|_| Ok(()));
    m.queue.expect_enqueue().never();
    let got = submit_job(m.deps(), &user(), Tier::Bootstrapper, project, goal())
        .await
        .unwrap();
    assert_eq!(got.job.status, JobStatus::Scheduled);
    assert_eq!(got.usage.remaining(), 0);
}

#[tokio::test]
async fn a_full_queue_before_insert_is_busy_and_writes_nothing() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    m.tiers.queue_cap = 1;
    m.queue.expect_pending_len().returning(|| Ok(1));
    m.repo.expect_insert_admitted_job().never();
    let got = submit_job(m.deps(), &user(), Tier::Bootstrapper, project, goal()).await;
    assert_eq!(
        got,
        Err(SubmitError::Busy {
            retry_after_minutes: 1
        })
    );
}

#[tokio::test]
async fn a_refused_enqueue_fails_the_job_by_compare_and_set() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    m.queue.expect_pending_len().returning(|| Ok(0));
    m.inserts(counts(0, 0));
    m.live.expect_save().returning(|_| Ok(()));
    m.queue.expect_enqueue().times(1).returning(|_| {
        Err(QueueError::Full {
            retry_after_minutes: 3,
        })
    });
    m.repo
        .expect_transition()
        .times(1)
        .withf(|_, from, to, upd| {
            *from == JobStatus::Queued
                && *to == JobStatus::Failed
                && upd.message.as_deref() == Some("System busy. Try again in 3 minutes.")
                && upd.refund_quota
        })
        .returning(|id, _, to, upd| {
            let mut job = job_from(&NewJob {
                id,
                project_id: ProjectId::new(),
                user_id: user(),
                tier: Tier::Bootstrapper,
                goal: goal(),
                status: to,
                status_message: upd.message.clone(),
            });
            job.error_message = upd.error_message;
            Ok(TransitionOutcome::Applied(Box::new(job)))
        });
    m.live
        .expect_save_and_publish()
        .times(1)
        .withf(|job, ev| job.status == JobStatus::Failed && ev.status == JobStatus::Failed)
        .returning(|_, _| Ok(()));
    let got = submit_job(m.deps(), &user(), Tier::Bootstrapper, project, goal()).await;
    assert_eq!(
        got,
        Err(SubmitError::Busy {
            retry_after_minutes: 3
        })
    );
}

#[tokio::test]
async fn a_live_store_outage_does_not_lose_the_submission() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    m.queue.expect_pending_len().returning(|| Ok(0));
    m.inserts(counts(0, 0));
    m.live
        .expect_save()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    m.queue.expect_enqueue().times(1).returning(|_| Ok(()));
    let got = submit_job(m.deps(), &user(), Tier::Bootstrapper, project, goal()).await;
    assert!(got.is_ok());
}

#[tokio::test]
async fn past_the_limit_with_the_scheduled_cap_reached_nothing_is_created() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    m.tiers.scheduled_cap = 3;
    m.queue.expect_pending_len().returning(|| Ok(0));
    m.inserts(counts(5, 3));
    m.live.expect_save().never();
    m.queue.expect_enqueue().never();
    let got = submit_job(m.deps(), &user(), Tier::Bootstrapper, project, goal()).await;
    assert_eq!(got, Err(SubmitError::TooManyScheduled { scheduled: 3 }));
}

#[tokio::test]
async fn a_failed_insert_fails_the_submit_with_nothing_else_written() {
    let mut m = Mocks::new();
    let project = ProjectId::new();
    m.owns_project(project);
    m.queue.expect_pending_len().returning(|| Ok(0));
    m.repo
        .expect_insert_admitted_job()
        .returning(|_, _| Err(RepoError::Unavailable("down".into())));
    m.live.expect_save().never();
    m.queue.expect_enqueue().never();
    let got = submit_job(m.deps(), &user(), Tier::Bootstrapper, project, goal()).await;
    assert!(matches!(got, Err(SubmitError::Repo(_))), "{got:?}");
}

#[test]
fn retry_after_is_at_least_a_minute() {
    assert_eq!(retry_after_minutes(100, 100), 1);
    assert_eq!(retry_after_minutes(109, 100), 4);
    assert_eq!(busy_message(2), "System busy. Try again in 2 minutes.");
}
