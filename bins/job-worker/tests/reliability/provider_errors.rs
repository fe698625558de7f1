//! A provider that fails its control-plane calls: with 503 on half of them every build of a batch still
//! reaches READY and paused, as the SDKs' retries get through, and nothing is left running or leaked; a
//! create answered with an error after it made its sandbox leaves a twin, which the reconciler kills.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use domain::ports::{ProviderState, SandboxRuntime};
use domain::usecases::reconcile::ReconcileConfig;
use domain::{JobStatus, PausePolicy, SandboxState};
use infra_local::e2b_server::FaultConfig;
use tokio_util::sync::CancellationToken;

use crate::harness::{stop_workers, Harness, Provider};
use crate::support::{eventually, require_node};

/// Twenty real builds, each retried through a flaky provider: minutes, not seconds, on a busy machine.
const BATCH_DEADLINE: Duration = Duration::from_secs(240);
const BATCH: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_503_on_half_the_calls_a_batch_reaches_ready_and_paused_and_leaks_nothing() {
    require_node();
    let h = Harness::new(Provider::E2b).await;
    // Half of all control-plane calls answer 503: half of those before doing anything, half after (a
    // create that made its sandbox, a pause that paused).
    h.server()
        .set_faults(&FaultConfig {
            control_fail_ratio: 0.25,
            ambiguous_fail_ratio: 0.25,
            ..FaultConfig::default()
        })
        .await;
    let mut jobs = Vec::new();
    for i in 0..BATCH {
        jobs.push(h.submit(&format!("user_flaky_{i}")).await);
    }
    let shutdown = CancellationToken::new();
    let workers = vec![
        h.start_worker("flaky-1", Duration::from_secs(30), &shutdown),
        h.start_worker("flaky-2", Duration::from_secs(30), &shutdown),
    ];
    // The reconciler runs alongside, as in production: it retries pauses that still failed and kills the
    // twins of ambiguous creates.
    let reconciler = h.reconciler(ReconcileConfig {
        pause_grace: Duration::from_secs(1),
        pause_backoff_base: Duration::from_secs(1),
        pause_backoff_max: Duration::from_secs(2),
        ..ReconcileConfig::default()
    });
    eventually(BATCH_DEADLINE, "every build READY and paused", || async {
        let _ = reconciler.retry_failed_pauses(Utc::now()).await;
        let mut done = 0;
        for id in &jobs {
            let job = h.job(*id).await;
            assert_ne!(
                job.status,
                JobStatus::Failed,
                "a build failed: {:?}",
                job.error_message
            );
            if job.status == JobStatus::Ready && job.sandbox_paused() {
                done += 1;
            }
        }
        (done == BATCH).then_some(())
    })
    .await;
    stop_workers(shutdown, workers).await;

    // Still through the flaky provider: the leak step finds and kills every twin.
    let recorded: HashSet<_> = {
        let mut ids = HashSet::new();
        for id in &jobs {
            let job = h.job(*id).await;
            assert_eq!(job.sandbox_state, SandboxState::Paused);
            ids.insert(job.sandbox_id.expect("recorded"));
        }
        ids
    };
    assert_eq!(recorded.len(), BATCH, "one sandbox per build");
    eventually(BATCH_DEADLINE, "no sandbox but the builds' own", || async {
        let _ = reconciler.kill_leaks().await;
        let listed = h.runtime.list().await.ok()?;
        let ids: HashSet<_> = listed.iter().map(|s| s.sandbox_id.clone()).collect();
        (ids == recorded).then_some(listed)
    })
    .await;

    // And the provider agrees, without faults in the way: every one paused, none running.
    h.server().set_faults(&FaultConfig::default()).await;
    let listed = h.runtime.list().await.expect("list");
    assert_eq!(listed.len(), BATCH);
    for sandbox in listed {
        assert!(recorded.contains(&sandbox.sandbox_id));
        assert_eq!(sandbox.state, ProviderState::Paused, "{sandbox:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twin_of_an_ambiguous_create_is_found_and_killed() {
    require_node();
    let h = Harness::new(Provider::E2b).await;
    // The first create makes its sandbox but answers 503; the client's retry makes a second one.
    h.server()
        .set_faults(&FaultConfig {
            ambiguous_next_creates: 1,
            ..FaultConfig::default()
        })
        .await;
    let (job, _) = h.build_ready("user_twin", PausePolicy::Immediate).await;
    let ours = job.sandbox_id.clone().expect("recorded");
    let listed = h.runtime.list().await.expect("list");
    let twins: Vec<_> = listed
        .iter()
        .filter(|s| s.job_id == Some(job.id) && s.sandbox_id != ours)
        .collect();
    assert_eq!(twins.len(), 1, "the retried create left a twin: {listed:?}");
    let twin = twins[0].sandbox_id.clone();
    assert_eq!(
        twins[0].state,
        ProviderState::Running,
        "billing until found"
    );

    let report = h
        .reconciler(ReconcileConfig::default())
        .kill_leaks()
        .await
        .expect("leak step");
    assert_eq!(report.killed, 1, "{report:?}");
    assert!(matches!(
        h.runtime.state(&twin).await,
        Err(domain::ports::SandboxError::NotFound(_))
    ));
    // The build's own sandbox is untouched.
    assert_eq!(h.runtime.state(&ours).await, Ok(ProviderState::Paused));
    let after = h.job(job.id).await;
    assert_eq!(after.sandbox_state, SandboxState::Paused);
}
