//! Postgres faults: a connection terminated under a stage write, and a stuck `pausing` record behind more
//! READY jobs than one page of the reconciler.

use std::sync::Arc;

use chrono::Utc;
use domain::ports::{JobRepository, ProviderState, SandboxRuntime, SandboxStateUpdate};
use domain::usecases::pipeline::{run_build, BuildOutcome};
use domain::usecases::reconcile::ReconcileConfig;
use domain::{JobStatus, PausePolicy, SandboxState};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::fakes::GatedGenerator;
use crate::harness::{Harness, Provider, WAIT};
use crate::support::{eventually, require_node};

/// The build's next stage write waits on its row (another session holds it, as under load) and its
/// backend is terminated there: the write is retried and the build still reaches READY, paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_terminated_under_a_stage_write_still_reaches_ready() {
    require_node();
    let h = Harness::new(Provider::Local).await;
    let job = h.insert_queued("user_pg_blip").await;
    let generator = Arc::new(GatedGenerator::closed());
    let build = {
        let deps = h.pipeline(generator.clone());
        tokio::spawn(async move {
            run_build(
                &deps,
                &Harness::pipeline_config(PausePolicy::Immediate),
                job.id,
                CancellationToken::new(),
            )
            .await
        })
    };
    let g = generator.clone();
    eventually(WAIT, "the build to reach code", || {
        let g = g.clone();
        async move { (g.calls.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(()) }
    })
    .await;

    let options = h.repo.pool().connect_options().as_ref().clone();
    let mut holder = PgConnection::connect_with(&options).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(job.id.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    generator.open();
    let admin = h.repo.pool().clone();
    eventually(WAIT, "the stage write to wait on the row", || {
        let admin = admin.clone();
        async move {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE 'UPDATE jobs SET%'",
            )
            .fetch_all(&admin)
            .await
            .unwrap();
            killed.contains(&true).then_some(())
        }
    })
    .await;
    tx.commit().await.unwrap();

    let outcome = tokio::time::timeout(WAIT, build).await.unwrap().unwrap();
    assert_eq!(
        outcome,
        BuildOutcome::Ready {
            paused: true,
            pause_failed: false
        }
    );
    let row = h.job(job.id).await;
    assert_eq!(row.status, JobStatus::Ready, "{:?}", row.error_message);
    assert!(row.sandbox_paused());
    assert_eq!(row.attempts, 1, "built once");
}

/// A worker killed mid-pause left a `pausing` record on a job behind 600 older READY jobs (more than one
/// page): the reconciler still finds it, asks the provider and finishes the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_pausing_behind_600_ready_jobs_is_settled() {
    require_node();
    let h = Harness::new(Provider::Local).await;
    let (built, _) = h.build_ready("user_many", PausePolicy::Never).await;
    let sandbox = built.sandbox_id.clone().unwrap();
    // 600 READY jobs older than it, paused or long gone.
    sqlx::query(
        "INSERT INTO jobs (id, project_id, user_id, tier, goal, status, sandbox_state, created_at, \
                           updated_at, completed_at) \
         SELECT gen_random_uuid(), $1, 'user_many', 'partner', 'filler', 'ready', \
                CASE WHEN n % 2 = 0 THEN 'expired' ELSE 'none' END, \
                now() - interval '2 hours' + n * interval '1 second', now(), now() \
         FROM generate_series(1, 600) n",
    )
    .bind(built.project_id.as_uuid())
    .execute(h.repo.pool())
    .await
    .unwrap();
    // The worker recorded `pausing`, paused at the provider, and died before recording it.
    let pausing = h
        .repo
        .set_sandbox_state(
            built.id,
            SandboxStateUpdate {
                expected_version: built.sandbox_state_version,
                state: SandboxState::Pausing,
                preview_url: None,
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    h.runtime.pause(&sandbox).await.unwrap();

    let config = ReconcileConfig::default();
    let later = Utc::now() + chrono::Duration::from_std(config.pausing_stale_after).unwrap();
    let reconciler = h.reconciler(config);
    let drift = reconciler.correct_drift(later).await.unwrap();
    assert_eq!(drift.checked, 1, "{drift:?}");
    let report = reconciler.retry_failed_pauses(later).await.unwrap();
    assert_eq!(report.paused, 1, "{report:?}");

    let row = h.job(pausing.id).await;
    assert_eq!(row.sandbox_state, SandboxState::Paused);
    assert!(row.sandbox_paused());
    assert_eq!(h.provider_state(&sandbox).await, Ok(ProviderState::Paused));
    assert_eq!(
        h.redis_field(built.id, "sandbox_paused").await.as_deref(),
        Some("true")
    );
}
