//! Recording sandboxes, their versioned state, the reconciler's work list and lookups by sandbox.

use domain::ports::{JobRepository, SandboxStateUpdate, TransitionUpdate};
use domain::{Job, JobId, JobStatus, SandboxId, SandboxState};
use infra_pg::PgJobRepository;
use sqlx::PgPool;

use crate::helpers::{applied, job_at, project, ready_job, repo, user};

fn sandbox(name: &str) -> SandboxId {
    SandboxId::try_from(name).unwrap()
}

fn to(state: SandboxState, job: &Job) -> SandboxStateUpdate {
    SandboxStateUpdate {
        expected_version: job.sandbox_state_version,
        state,
        preview_url: None,
        expires_at: None,
    }
}

async fn set(repo: &PgJobRepository, job: &Job, state: SandboxState) -> Job {
    repo.set_sandbox_state(job.id, to(state, job))
        .await
        .unwrap()
        .expect("current version applies")
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn record_sandbox_marks_it_running(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;

    let recorded = repo
        .record_sandbox(job.id, &sandbox("sbx-1"), job.attempts)
        .await
        .unwrap()
        .expect("the job is at this attempt");
    assert_eq!(recorded.sandbox_id, Some(sandbox("sbx-1")));
    assert_eq!(recorded.sandbox_state, SandboxState::Running);
    assert_eq!(
        recorded.sandbox_state_version,
        job.sandbox_state_version + 1
    );
    assert_eq!(recorded.status, JobStatus::Scaffold);
    assert_eq!(repo.get_job(job.id).await.unwrap(), Some(recorded));

    assert_eq!(
        repo.record_sandbox(JobId::new(), &sandbox("sbx-2"), 1)
            .await,
        Ok(None)
    );
    // Fenced: a build of an earlier attempt records nothing on the job.
    assert_eq!(
        repo.record_sandbox(job.id, &sandbox("sbx-3"), job.attempts - 1)
            .await,
        Ok(None)
    );
    assert_eq!(
        repo.get_job(job.id).await.unwrap().unwrap().sandbox_id,
        Some(sandbox("sbx-1"))
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn stale_version_loses_and_writes_nothing(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    let job = repo
        .record_sandbox(job.id, &sandbox("sbx-1"), job.attempts)
        .await
        .unwrap()
        .unwrap();

    let pausing = set(&repo, &job, SandboxState::Pausing).await;
    assert_eq!(pausing.sandbox_state_version, job.sandbox_state_version + 1);

    // `job` still holds the version read before the pausing write.
    let stale = repo
        .set_sandbox_state(
            job.id,
            SandboxStateUpdate {
                expected_version: job.sandbox_state_version,
                state: SandboxState::Paused,
                preview_url: Some("https://stale".into()),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(stale, None);
    assert_eq!(repo.get_job(job.id).await.unwrap(), Some(pausing));

    assert_eq!(
        repo.set_sandbox_state(JobId::new(), to(SandboxState::Paused, &job))
            .await
            .unwrap(),
        None
    );
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn pause_and_resume_stamp_their_times(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = ready_job(&repo, p.id, &alice).await;
    assert_eq!(job.sandbox_state, SandboxState::Running);

    let paused = set(&repo, &job, SandboxState::Paused).await;
    assert!(paused.sandbox_paused());
    assert!(paused.paused_at.is_some());
    assert!(paused.resumed_at.is_none());

    let resuming = set(&repo, &paused, SandboxState::Resuming).await;
    assert!(!resuming.sandbox_paused());
    assert!(resuming.resumed_at.is_none());

    let running = repo
        .set_sandbox_state(
            job.id,
            SandboxStateUpdate {
                expected_version: resuming.sandbox_state_version,
                state: SandboxState::Running,
                preview_url: Some("https://3000-fresh.e2b.app".into()),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(running.resumed_at.is_some());
    assert_eq!(
        running.preview_url.as_deref(),
        Some("https://3000-fresh.e2b.app")
    );
    assert_eq!(running.paused_at, paused.paused_at);
    assert_eq!(running.status, JobStatus::Ready);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn sandbox_paused_is_true_exactly_when_paused(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let mut job = ready_job(&repo, p.id, &alice).await;

    for state in SandboxState::ALL {
        job = set(&repo, &job, state).await;
        assert_eq!(job.sandbox_state, state);
        assert_eq!(job.sandbox_paused(), state == SandboxState::Paused);
        // The stored column too, not only the derived value.
        let column: bool = sqlx::query_scalar("SELECT sandbox_paused FROM jobs WHERE id = $1")
            .bind(job.id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(column, state == SandboxState::Paused, "{state}");
    }
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn jobs_needing_attention_lists_live_unpaused_ready_and_live_failed(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;

    let ready_with = |name: &'static str, state: SandboxState| {
        let repo = repo.clone();
        let alice = alice.clone();
        async move {
            let job = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
            let job = repo
                .record_sandbox(job.id, &sandbox(name), 1)
                .await
                .unwrap()
                .unwrap();
            let job = applied(
                repo.transition(
                    job.id,
                    JobStatus::Checks,
                    JobStatus::Ready,
                    TransitionUpdate::default(),
                )
                .await
                .unwrap(),
            );
            if state == SandboxState::Running {
                job
            } else {
                set(&repo, &job, state).await
            }
        }
    };
    let failed_with = |name: &'static str, state: SandboxState| {
        let repo = repo.clone();
        let alice = alice.clone();
        async move {
            let job = job_at(&repo, p.id, &alice, JobStatus::Deps).await;
            let job = repo
                .record_sandbox(job.id, &sandbox(name), 1)
                .await
                .unwrap()
                .unwrap();
            let job = applied(
                repo.transition(
                    job.id,
                    JobStatus::Deps,
                    JobStatus::Failed,
                    TransitionUpdate::default(),
                )
                .await
                .unwrap(),
            );
            if state == SandboxState::Running {
                job
            } else {
                set(&repo, &job, state).await
            }
        }
    };

    let running = ready_with("r-running", SandboxState::Running).await;
    let pausing = ready_with("r-pausing", SandboxState::Pausing).await;
    let pause_failed = ready_with("r-pause-failed", SandboxState::PauseFailed).await;
    let resuming = ready_with("r-resuming", SandboxState::Resuming).await;
    ready_with("r-paused", SandboxState::Paused).await;
    ready_with("r-expired", SandboxState::Expired).await;
    let failed_running = failed_with("f-running", SandboxState::Running).await;
    let failed_paused = failed_with("f-paused", SandboxState::Paused).await;
    failed_with("f-killed", SandboxState::Killed).await;
    // Still building: the lease, not the reconciler's sandbox pass, looks after it.
    let building = job_at(&repo, p.id, &alice, JobStatus::Code).await;
    repo.record_sandbox(building.id, &sandbox("b-running"), 1)
        .await
        .unwrap();
    // READY without a sandbox id.
    ready_job(&repo, p.id, &alice).await;

    let mut listed: Vec<JobId> = repo
        .jobs_needing_attention(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    listed.sort();
    let mut expected = vec![
        running.id,
        pausing.id,
        pause_failed.id,
        resuming.id,
        failed_running.id,
        failed_paused.id,
    ];
    expected.sort();
    assert_eq!(listed, expected);

    // Oldest change first, and the limit holds.
    let first_two: Vec<JobId> = repo
        .jobs_needing_attention(None, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(first_two, vec![running.id, pausing.id]);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn find_job_by_sandbox_finds_its_owner(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;
    let job = repo
        .record_sandbox(job.id, &sandbox("sbx-owned"), 1)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        repo.find_job_by_sandbox(&sandbox("sbx-owned"))
            .await
            .unwrap(),
        Some(job)
    );
    assert_eq!(
        repo.find_job_by_sandbox(&sandbox("sbx-orphan"))
            .await
            .unwrap(),
        None
    );
}

/// Billing is counted by the database for every writer of `sandbox_state`: running (from
/// `record_sandbox`) and resuming count, paused does not; visits add to the visited seconds.
#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn billed_and_visited_seconds_follow_the_sandbox_state(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;
    assert_eq!(
        repo.sandbox_seconds(job.id).await.unwrap(),
        Some(Default::default())
    );
    let running = repo
        .record_sandbox(job.id, &sandbox("sbx-bill"), job.attempts)
        .await
        .unwrap()
        .expect("recorded");
    // Make the spell so far one minute long, as if the sandbox had been created a minute ago.
    sqlx::query(
        "UPDATE jobs SET sandbox_billing_since = now() - interval '60 seconds' WHERE id = $1",
    )
    .bind(job.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap();
    let in_progress = repo.sandbox_seconds(job.id).await.unwrap().unwrap();
    assert!(
        (60.0..70.0).contains(&in_progress.billed),
        "{in_progress:?}"
    );

    let pausing = set(&repo, &running, SandboxState::Pausing).await;
    let paused = set(&repo, &pausing, SandboxState::Paused).await;
    let after_pause = repo.sandbox_seconds(job.id).await.unwrap().unwrap();
    assert!(
        (60.0..70.0).contains(&after_pause.billed),
        "{after_pause:?}"
    );
    // Paused: the bill stands still.
    sqlx::query("UPDATE jobs SET updated_at = now() WHERE id = $1")
        .bind(job.id.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        repo.sandbox_seconds(job.id).await.unwrap().unwrap().billed,
        after_pause.billed
    );

    let resuming = set(&repo, &paused, SandboxState::Resuming).await;
    let _running = set(&repo, &resuming, SandboxState::Running).await;
    repo.record_visit(job.id, chrono::Utc::now(), 3.0)
        .await
        .unwrap();
    repo.record_visit(job.id, chrono::Utc::now(), 3.0)
        .await
        .unwrap();
    let now = repo.sandbox_seconds(job.id).await.unwrap().unwrap();
    assert!(now.billed >= after_pause.billed, "{now:?}");
    assert_eq!(now.visited, 6.0);
    assert!(repo
        .get_job(job.id)
        .await
        .unwrap()
        .unwrap()
        .last_activity_at
        .is_some());
    assert_eq!(repo.sandbox_seconds(JobId::new()).await.unwrap(), None);
}
