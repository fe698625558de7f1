//! Compare-and-set transitions, build versions and the recovery requeue.

use domain::ports::{
    JobRepository, RepoError, SandboxStateUpdate, TransitionOutcome, TransitionUpdate,
};
use domain::{DebugId, JobId, JobStatus, SandboxId, SandboxState};
use sqlx::PgPool;

use crate::helpers::{applied, job_at, predicted, project, ready_job, repo, user};

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn applied_transition_writes_given_fields_and_keeps_the_rest(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Queued).await;

    let started = applied(
        repo.transition(
            job.id,
            JobStatus::Queued,
            JobStatus::Starting,
            TransitionUpdate {
                message: Some("Starting...".into()),
                workspace_path: Some("/home/user/project".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(started.status, JobStatus::Starting);
    assert_eq!(started.status_message.as_deref(), Some("Starting..."));
    assert_eq!(
        started.workspace_path.as_deref(),
        Some("/home/user/project")
    );
    let started_at = started
        .started_at
        .expect("started_at set when leaving the queue");
    assert!(started.completed_at.is_none());

    // None leaves a column alone.
    let scaffold = applied(
        repo.transition(
            job.id,
            JobStatus::Starting,
            JobStatus::Scaffold,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(scaffold.status_message.as_deref(), Some("Starting..."));
    assert_eq!(
        scaffold.workspace_path.as_deref(),
        Some("/home/user/project")
    );
    assert_eq!(scaffold.started_at, Some(started_at));
    assert_eq!(repo.get_job(job.id).await.unwrap(), Some(scaffold));
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn leaving_the_queue_counts_an_attempt_and_nothing_else_does(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Queued).await;
    assert_eq!(job.attempts, 0);
    let start = |from| {
        repo.transition(
            job.id,
            from,
            JobStatus::Starting,
            TransitionUpdate::default(),
        )
    };

    let started = applied(start(JobStatus::Queued).await.unwrap());
    assert_eq!(started.attempts, 1);
    let scaffold = applied(
        repo.transition(
            job.id,
            JobStatus::Starting,
            JobStatus::Scaffold,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(scaffold.attempts, 1);
    // A lost race counts nothing.
    assert!(matches!(
        start(JobStatus::Queued).await.unwrap(),
        TransitionOutcome::Conflict { .. }
    ));
    // The worker vanished: back to the queue, then a second worker starts it.
    repo.requeue_job(job.id, JobStatus::Scaffold, 1)
        .await
        .unwrap();
    let restarted = applied(start(JobStatus::Queued).await.unwrap());
    assert_eq!(restarted.attempts, 2);

    // Cancelled straight from the queue: never attempted.
    let cancelled = job_at(&repo, p.id, &alice, JobStatus::Queued).await;
    let failed = applied(
        repo.transition(
            cancelled.id,
            JobStatus::Queued,
            JobStatus::Failed,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(failed.attempts, 0);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn failing_sets_completion_error_and_duration(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Code).await;
    let debug_id = DebugId::new();

    let failed = applied(
        repo.transition(
            job.id,
            JobStatus::Code,
            JobStatus::Failed,
            TransitionUpdate {
                error_message: Some("npm exploded".into()),
                debug_id: Some(debug_id),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error_message.as_deref(), Some("npm exploded"));
    assert_eq!(failed.debug_id, Some(debug_id));
    assert!(failed.completed_at.is_some());
    assert!(failed.duration_seconds.is_some_and(|d| d >= 0));
    assert_eq!(failed.build_version, None);

    // A job cancelled straight from the queue has no started_at; its duration counts from enqueued_at.
    let queued = job_at(&repo, p.id, &alice, JobStatus::Queued).await;
    let cancelled = applied(
        repo.transition(
            queued.id,
            JobStatus::Queued,
            JobStatus::Failed,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );
    assert!(cancelled.started_at.is_none());
    assert!(cancelled.duration_seconds.is_some());
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn illegal_transition_is_refused_before_any_write(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Queued).await;

    let refused = repo
        .transition(
            job.id,
            JobStatus::Queued,
            JobStatus::Ready,
            TransitionUpdate {
                message: Some("should not be written".into()),
                assign_build_version: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        refused,
        Err(RepoError::IllegalTransition {
            from: JobStatus::Queued,
            to: JobStatus::Ready
        })
    );
    assert_eq!(repo.get_job(job.id).await.unwrap(), Some(job));
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn stale_from_is_a_conflict_reporting_the_current_status(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;

    let lost = repo
        .transition(
            job.id,
            JobStatus::Queued,
            JobStatus::Starting,
            TransitionUpdate::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        lost,
        TransitionOutcome::Conflict {
            current: Some(JobStatus::Scaffold)
        }
    );
    assert_eq!(repo.get_job(job.id).await.unwrap(), Some(job));

    let gone = repo
        .transition(
            JobId::new(),
            JobStatus::Queued,
            JobStatus::Starting,
            TransitionUpdate::default(),
        )
        .await
        .unwrap();
    assert_eq!(gone, TransitionOutcome::Conflict { current: None });

    let gone_ready = repo
        .transition(
            JobId::new(),
            JobStatus::Checks,
            JobStatus::Ready,
            TransitionUpdate {
                assign_build_version: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(gone_ready, TransitionOutcome::Conflict { current: None });
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn concurrent_transitions_from_one_status_have_exactly_one_winner(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;

    for _ in 0..5 {
        let job = job_at(&repo, p.id, &alice, JobStatus::Queued).await;
        // A worker starting the job races a cancel; the pool hands each its own connection.
        let (start, cancel) = tokio::join!(
            repo.transition(
                job.id,
                JobStatus::Queued,
                JobStatus::Starting,
                TransitionUpdate::default()
            ),
            repo.transition(
                job.id,
                JobStatus::Queued,
                JobStatus::Failed,
                TransitionUpdate::default()
            ),
        );
        let (start, cancel) = (start.unwrap(), cancel.unwrap());
        let stored = repo.get_job(job.id).await.unwrap().unwrap();
        match (&start, &cancel) {
            (TransitionOutcome::Applied(won), TransitionOutcome::Conflict { current }) => {
                assert_eq!(won.status, JobStatus::Starting);
                assert_eq!(*current, Some(JobStatus::Starting));
                assert_eq!(stored.status, JobStatus::Starting);
            }
            (TransitionOutcome::Conflict { current }, TransitionOutcome::Applied(won)) => {
                assert_eq!(won.status, JobStatus::Failed);
                assert_eq!(*current, Some(JobStatus::Failed));
                assert_eq!(stored.status, JobStatus::Failed);
            }
            other => panic!("expected exactly one winner, got {other:?}"),
        }
    }
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn ready_assigns_build_versions_in_order(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let other = project(&repo, &alice).await;

    assert_eq!(predicted(&repo, &p).await, "build_v0_1");
    let first = ready_job(&repo, p.id, &alice).await;
    assert_eq!(first.build_version.as_deref(), Some("build_v0_1"));
    assert_eq!(first.status, JobStatus::Ready);
    assert!(first.completed_at.is_some() && first.duration_seconds.is_some());
    assert_eq!(predicted(&repo, &p).await, "build_v0_2");

    // A failed build consumes no version.
    let failing = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    applied(
        repo.transition(
            failing.id,
            JobStatus::Checks,
            JobStatus::Failed,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );

    let second = ready_job(&repo, p.id, &alice).await;
    assert_eq!(second.build_version.as_deref(), Some("build_v0_2"));
    // Versions count per project.
    let elsewhere = ready_job(&repo, other.id, &alice).await;
    assert_eq!(elsewhere.build_version.as_deref(), Some("build_v0_1"));
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn build_versions_count_on_past_nine(pool: PgPool) {
    let repo = repo(pool.clone());
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    // As if nine builds had come before ("build_v0_9" sorts after "build_v0_10" as text).
    sqlx::query("UPDATE projects SET last_build_version = 9 WHERE id = $1")
        .bind(p.id.as_uuid())
        .execute(&pool)
        .await
        .unwrap();

    let tenth = ready_job(&repo, p.id, &alice).await;
    assert_eq!(tenth.build_version.as_deref(), Some("build_v0_10"));
    let eleventh = ready_job(&repo, p.id, &alice).await;
    assert_eq!(eleventh.build_version.as_deref(), Some("build_v0_11"));
    assert_eq!(predicted(&repo, &p).await, "build_v0_12");
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn concurrent_readies_of_one_project_get_distinct_versions(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let a = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    let b = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    let c = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    let ready = |id| {
        repo.transition(
            id,
            JobStatus::Checks,
            JobStatus::Ready,
            TransitionUpdate {
                assign_build_version: true,
                ..Default::default()
            },
        )
    };

    let (ra, rb, rc) = tokio::join!(ready(a.id), ready(b.id), ready(c.id));
    let mut versions: Vec<String> = [ra, rb, rc]
        .into_iter()
        .map(|r| applied(r.unwrap()).build_version.unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["build_v0_1", "build_v0_2", "build_v0_3"]);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn a_ready_that_lost_the_race_spends_no_version(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    // A cancel got there first.
    applied(
        repo.transition(
            job.id,
            JobStatus::Checks,
            JobStatus::Failed,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );
    let late = repo
        .transition(
            job.id,
            JobStatus::Checks,
            JobStatus::Ready,
            TransitionUpdate {
                assign_build_version: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        late,
        TransitionOutcome::Conflict {
            current: Some(JobStatus::Failed)
        }
    );
    assert_eq!(predicted(&repo, &p).await, "build_v0_1");
    let next = ready_job(&repo, p.id, &alice).await;
    assert_eq!(next.build_version.as_deref(), Some("build_v0_1"));
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn the_move_to_code_records_a_new_sandbox_running(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;
    let sandbox = SandboxId::try_from("sbx-new").unwrap();

    let code = applied(
        repo.transition(
            job.id,
            JobStatus::Scaffold,
            JobStatus::Code,
            TransitionUpdate {
                message: Some("Writing code".into()),
                sandbox_id: Some(sandbox.clone()),
                sandbox_state: Some(SandboxState::Running),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );

    // As record_sandbox would have written it, in the same statement as the move.
    assert_eq!(code.status, JobStatus::Code);
    assert_eq!(code.sandbox_id, Some(sandbox.clone()));
    assert_eq!(code.sandbox_state, SandboxState::Running);
    assert_eq!(code.sandbox_state_version, job.sandbox_state_version + 1);
    assert!(!code.sandbox_paused());
    let found = repo.find_job_by_sandbox(&sandbox).await.unwrap().unwrap();
    assert_eq!(found.id, job.id);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn ready_with_a_running_sandbox_sets_the_sandbox_state(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Checks).await;
    let sandbox = SandboxId::try_from("sbx-1").unwrap();

    let ready = applied(
        repo.transition(
            job.id,
            JobStatus::Checks,
            JobStatus::Ready,
            TransitionUpdate {
                sandbox_id: Some(sandbox.clone()),
                preview_url: Some("https://3000-sbx-1.e2b.app".into()),
                sandbox_state: Some(SandboxState::Running),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(ready.sandbox_id, Some(sandbox));
    assert_eq!(
        ready.preview_url.as_deref(),
        Some("https://3000-sbx-1.e2b.app")
    );
    assert_eq!(ready.sandbox_state, SandboxState::Running);
    assert_eq!(ready.sandbox_state_version, job.sandbox_state_version + 1);
    assert!(!ready.sandbox_paused());
    // Not asked for: no version.
    assert_eq!(ready.build_version, None);
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn ready_with_a_pause_at_once_records_the_sandbox_pausing(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Checks).await;

    let ready = applied(
        repo.transition(
            job.id,
            JobStatus::Checks,
            JobStatus::Ready,
            TransitionUpdate {
                sandbox_id: Some(SandboxId::try_from("sbx-1").unwrap()),
                sandbox_state: Some(SandboxState::Pausing),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    assert_eq!(ready.sandbox_state, SandboxState::Pausing);
    assert_eq!(ready.sandbox_state_version, job.sandbox_state_version + 1);
    assert!(!ready.sandbox_paused());
    // The pause is then recorded against the version READY wrote.
    let paused = repo
        .set_sandbox_state(
            job.id,
            SandboxStateUpdate {
                expected_version: ready.sandbox_state_version,
                state: SandboxState::Paused,
                preview_url: None,
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .expect("the version READY wrote");
    assert!(paused.sandbox_paused() && paused.paused_at.is_some());
}

#[sqlx::test(migrator = "infra_pg::MIGRATOR")]
async fn requeue_puts_a_building_job_back_and_clears_its_sandbox(pool: PgPool) {
    let repo = repo(pool);
    let alice = user("alice");
    let p = project(&repo, &alice).await;
    let job = job_at(&repo, p.id, &alice, JobStatus::Scaffold).await;
    let recorded = repo
        .record_sandbox(job.id, &SandboxId::try_from("sbx-lost").unwrap(), 1)
        .await
        .unwrap()
        .unwrap();

    let requeued = applied(
        repo.requeue_job(job.id, JobStatus::Scaffold, 1)
            .await
            .unwrap(),
    );
    assert_eq!(requeued.status, JobStatus::Queued);
    assert_eq!(requeued.sandbox_id, None);
    assert_eq!(requeued.preview_url, None);
    assert_eq!(requeued.sandbox_state, SandboxState::None);
    assert_eq!(
        requeued.sandbox_state_version,
        recorded.sandbox_state_version + 1
    );
    // The next worker can start it again, through the ordinary table.
    let again = applied(
        repo.transition(
            job.id,
            JobStatus::Queued,
            JobStatus::Starting,
            TransitionUpdate::default(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(again.status, JobStatus::Starting);

    // Compare-and-set on `from`.
    assert_eq!(
        repo.requeue_job(job.id, JobStatus::Deps, 1).await.unwrap(),
        TransitionOutcome::Conflict {
            current: Some(JobStatus::Starting)
        }
    );
    assert_eq!(
        repo.requeue_job(JobId::new(), JobStatus::Deps, 1)
            .await
            .unwrap(),
        TransitionOutcome::Conflict { current: None }
    );
    // Only building statuses may be requeued.
    for from in [
        JobStatus::Queued,
        JobStatus::Scheduled,
        JobStatus::Ready,
        JobStatus::Failed,
    ] {
        assert_eq!(
            repo.requeue_job(job.id, from, 1).await,
            Err(RepoError::IllegalTransition {
                from,
                to: JobStatus::Queued
            })
        );
    }
}
