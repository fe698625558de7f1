use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::super::fixtures::{job, reconciler};
use super::super::ReconcileConfig;
use super::*;
use crate::ports::live_store::MockLiveJobStore;
use crate::ports::queue::MockJobQueue;
use crate::ports::repository::MockJobRepository;
use crate::ports::sandbox::MockSandboxRuntime;
use crate::JobId;

#[tokio::test]
async fn queued_jobs_missing_from_the_queue_are_enqueued_and_missing_hashes_rebuilt() {
    let in_queue = job(JobStatus::Queued);
    let lost = job(JobStatus::Queued);
    let ready = job(JobStatus::Ready);
    let all = [in_queue.clone(), lost.clone(), ready.clone()];
    let mut repo = MockJobRepository::new();
    repo.expect_list_jobs_by_status()
        .returning(move |s, _, _| Ok(all.iter().filter(|j| j.status == s).cloned().collect()));

    let mut queue = MockJobQueue::new();
    let queued_id = in_queue.id;
    queue
        .expect_contains()
        .returning(move |id| Ok(id == queued_id));
    let lost_id = lost.id;
    queue
        .expect_enqueue()
        .withf(move |q| q.job_id == lost_id)
        .times(1)
        .returning(|_| Ok(()));

    // Only the lost job's and the ready job's hashes are gone (a partial flush).
    let present: HashSet<JobId> = [in_queue.id].into();
    let mut live = MockLiveJobStore::new();
    let p = present.clone();
    let kept = in_queue.clone();
    live.expect_get()
        .returning(move |id| Ok(p.contains(&id).then(|| kept.clone())));
    let saved: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let s = saved.clone();
    live.expect_save().returning(move |j| {
        s.lock().unwrap().push(j.id);
        Ok(())
    });

    let rec = reconciler(
        repo,
        live,
        queue,
        MockSandboxRuntime::new(),
        ReconcileConfig::default(),
    );
    let report = rec.rebuild_redis().await.unwrap();
    assert_eq!((report.requeued, report.hashes_rebuilt), (1, 2));
    let saved: HashSet<JobId> = saved.lock().unwrap().iter().copied().collect();
    assert_eq!(saved, [lost.id, ready.id].into());
}
