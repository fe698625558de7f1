use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::super::fixtures::{job, live_accepting, ready_job, reconciler, sandbox_id};
use super::super::ReconcileConfig;
use super::*;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::ports::ProviderState;
use crate::SandboxId;

#[tokio::test]
async fn sandboxes_without_a_live_owner_are_killed_and_the_others_kept() {
    let missing_job = crate::JobId::new();
    let mut failed = job(JobStatus::Failed);
    failed.sandbox_id = Some(sandbox_id("sbx-failed"));
    failed.sandbox_state = SandboxState::Running;
    let mut requeued = job(JobStatus::Queued); // its old sandbox was cleared when it was requeued
    requeued.sandbox_id = None;
    let ready = ready_job(SandboxState::Paused);
    let mut recording = job(JobStatus::Scaffold); // created its sandbox, not recorded yet
    recording.sandbox_id = None;

    let listed = vec![
        ("sbx-orphan", Some(missing_job)),
        ("sbx-failed", Some(failed.id)),
        ("sbx-old", Some(requeued.id)),
        (ready.sandbox_id.as_ref().unwrap().as_str(), Some(ready.id)),
        ("sbx-new", Some(recording.id)),
        ("sbx-nometa", None),
    ]
    .into_iter()
    .map(|(id, job_id)| ProviderSandbox {
        sandbox_id: sandbox_id(id),
        state: ProviderState::Running,
        job_id,
    })
    .collect::<Vec<_>>();

    let jobs: HashMap<_, _> = [&failed, &requeued, &ready, &recording]
        .into_iter()
        .map(|j| (j.id, j.clone()))
        .collect();
    let mut repo = MockJobRepository::new();
    repo.expect_get_job()
        .returning(move |id| Ok(jobs.get(&id).cloned()));
    repo.expect_find_job_by_sandbox().returning(|_| Ok(None));
    let failed_id = failed.id;
    let mut killed_row = failed.clone();
    killed_row.sandbox_state = SandboxState::Killed;
    repo.expect_set_sandbox_state()
        .withf(move |id, u| *id == failed_id && u.state == SandboxState::Killed)
        .times(1)
        .returning(move |_, _| Ok(Some(killed_row.clone())));
    // By the time the attention list is read, the failed job's record says killed.
    repo.expect_jobs_needing_attention()
        .returning(|_, _| Ok(vec![]));

    let mut runtime = MockSandboxRuntime::new();
    runtime.expect_list().returning(move || Ok(listed.clone()));
    let killed: Arc<Mutex<Vec<SandboxId>>> = Arc::default();
    let k = killed.clone();
    runtime.expect_kill().returning(move |id| {
        k.lock().unwrap().push(id.clone());
        Ok(())
    });
    let rec = reconciler(
        repo,
        live_accepting(),
        MockJobQueue::new(),
        runtime,
        ReconcileConfig::default(),
    );
    let report = rec.kill_leaks().await.unwrap();
    assert_eq!((report.listed, report.killed, report.errors), (6, 4, 0));
    let killed: Vec<String> = killed
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        killed,
        vec!["sbx-orphan", "sbx-failed", "sbx-old", "sbx-nometa"]
    );
}

#[tokio::test]
async fn a_failed_job_still_recording_a_live_sandbox_gets_it_killed_or_marked_gone() {
    let mut failed = job(JobStatus::Failed);
    failed.sandbox_id = Some(sandbox_id("sbx-unlisted"));
    failed.sandbox_state = SandboxState::Paused;
    let mut repo = MockJobRepository::new();
    let row = super::super::fixtures::stateful_repo(&mut repo, &failed);
    let listed = row.clone();
    repo.expect_jobs_needing_attention()
        .returning(move |_, _| Ok(vec![listed.current()]));
    let mut runtime = MockSandboxRuntime::new();
    runtime.expect_list().returning(|| Ok(vec![]));
    runtime
        .expect_kill()
        .times(1)
        .returning(|_| Err(SandboxError::NotFound("gone".into())));
    let rec = reconciler(
        repo,
        live_accepting(),
        MockJobQueue::new(),
        runtime,
        ReconcileConfig::default(),
    );
    let report = rec.kill_leaks().await.unwrap();
    assert_eq!(report.already_gone, 1);
    assert_eq!(row.written(), vec![SandboxState::Expired]);
}
