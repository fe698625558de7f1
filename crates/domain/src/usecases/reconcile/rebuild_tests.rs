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

/// A hash Redis kept but that missed the last write (Redis was unreachable then) carries an older revision
/// than the row: it is rewritten. A hash newer than the row read (written since) is left alone.
#[tokio::test]
async fn a_stale_hash_is_rewritten_and_a_newer_one_left() {
    let mut row = job(JobStatus::Ready);
    row.sandbox_state_version = 5;
    let mut stale = row.clone();
    stale.sandbox_state_version = 4;
    let other = job(JobStatus::Ready);
    let mut newer = other.clone();
    newer.sandbox_state_version += 1;
    let all = [row.clone(), other.clone()];
    let mut repo = MockJobRepository::new();
    repo.expect_list_jobs_by_status()
        .returning(move |s, _, _| Ok(all.iter().filter(|j| j.status == s).cloned().collect()));
    let mut live = MockLiveJobStore::new();
    let (stale_id, newer_hash) = (stale.id, newer.clone());
    live.expect_get().returning(move |id| {
        Ok(Some(if id == stale_id {
            stale.clone()
        } else {
            newer_hash.clone()
        }))
    });
    let row_id = row.id;
    live.expect_save()
        .withf(move |j| j.id == row_id && j.sandbox_state_version == 5)
        .times(1)
        .returning(|_| Ok(()));
    let rec = reconciler(
        repo,
        live,
        MockJobQueue::new(),
        MockSandboxRuntime::new(),
        ReconcileConfig::default(),
    );
    let report = rec.rebuild_redis().await.unwrap();
    assert_eq!(report.hashes_rebuilt, 1);
}

/// Finished jobs are checked a page per pass, continuing where the last pass stopped and starting over
/// after the last page: every hash is looked at, however many jobs there are.
#[tokio::test]
async fn finished_jobs_are_checked_a_page_per_pass_round_the_whole_list() {
    let ready: Vec<Job> = (0..5).map(|_| job(JobStatus::Ready)).collect();
    let listed = ready.clone();
    let mut repo = MockJobRepository::new();
    repo.expect_list_jobs_by_status()
        .returning(move |s, after, limit| {
            if s != JobStatus::Ready {
                return Ok(vec![]);
            }
            let start = after.map_or(0, |a| listed.iter().position(|j| j.id == a.id).unwrap() + 1);
            Ok(listed
                .iter()
                .skip(start)
                .take(limit as usize)
                .cloned()
                .collect())
        });
    let read: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let r = read.clone();
    let mut live = MockLiveJobStore::new();
    live.expect_get().returning(move |id| {
        r.lock().unwrap().push(id);
        Ok(None)
    });
    live.expect_save().returning(|_| Ok(()));
    let config = ReconcileConfig {
        scan_limit: 2,
        ..ReconcileConfig::default()
    };
    let rec = reconciler(
        repo,
        live,
        MockJobQueue::new(),
        MockSandboxRuntime::new(),
        config,
    );
    for _ in 0..4 {
        rec.rebuild_redis().await.unwrap();
    }
    let ids: Vec<JobId> = ready.iter().map(|j| j.id).collect();
    let expected: Vec<JobId> = [&ids[0..2], &ids[2..4], &ids[4..5], &ids[0..2]].concat();
    assert_eq!(*read.lock().unwrap(), expected);
}
