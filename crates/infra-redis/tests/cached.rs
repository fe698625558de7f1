//! The status cache against a real Redis: what another client writes reaches it, its own writes are read back
//! at once, and a lost connection cannot leave it serving what Redis no longer tracks.

mod common;

use std::time::Duration;

use common::{advanced, eventually, job, TestRedis};
use domain::ports::LiveJobStore;
use domain::{Job, JobStatus};
use fred::prelude::ClientLike;
use fred::types::CustomCommand;
use infra_redis::{CachedLiveStore, RedisLiveStore};

const WAIT: Duration = Duration::from_secs(5);

async fn tracking_cache(r: &TestRedis) -> CachedLiveStore {
    let cache = CachedLiveStore::new(RedisLiveStore::new(r.client.clone(), &r.prefix), &r.client)
        .expect("cache built");
    eventually(WAIT, "client tracking on", || {
        let on = cache.is_tracking();
        async move { on.then_some(()) }
    })
    .await;
    cache
}

/// Reads `job` through the cache until a read is answered from memory.
async fn cached(cache: &CachedLiveStore, job: &Job) {
    let before = cache.stats().hits;
    eventually(WAIT, "a read answered from memory", || async {
        let read = cache.get(job.id).await.expect("read").expect("present");
        assert_eq!(read.status, job.status);
        (cache.stats().hits > before).then_some(())
    })
    .await;
}

async fn status_eventually(cache: &CachedLiveStore, job: &Job, want: JobStatus) {
    eventually(WAIT, "the new status through the cache", || async {
        let read = cache.get(job.id).await.expect("read").expect("present");
        (read.status == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_write_by_another_client_reaches_the_cached_reader() {
    let r = TestRedis::new().await;
    let other = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let cache = tracking_cache(&r).await;
    let queued = job();
    other.save(&queued).await.expect("save");
    cached(&cache, &queued).await;

    let ready = advanced(&queued, JobStatus::Ready);
    other.save(&ready).await.expect("save");
    // Well inside the cache's maximum age: only the invalidation can make this pass.
    status_eventually(&cache, &ready, JobStatus::Ready).await;
}

#[tokio::test]
async fn the_caches_own_write_is_read_back_at_once() {
    let r = TestRedis::new().await;
    let cache = tracking_cache(&r).await;
    let queued = job();
    cache.save(&queued).await.expect("save");
    cached(&cache, &queued).await;

    let ready = advanced(&queued, JobStatus::Ready);
    cache.save(&ready).await.expect("save");
    let read = cache.get(ready.id).await.expect("read").expect("present");
    assert_eq!(read.status, JobStatus::Ready);
}

#[tokio::test]
async fn a_deleted_hash_is_not_served_from_memory() {
    let r = TestRedis::new().await;
    let other = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let cache = tracking_cache(&r).await;
    let queued = job();
    other.save(&queued).await.expect("save");
    cached(&cache, &queued).await;

    other.delete(queued.id).await.expect("delete");
    eventually(WAIT, "the deletion through the cache", || async {
        cache
            .get(queued.id)
            .await
            .expect("read")
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_write_made_while_the_connection_was_lost_is_not_hidden_by_the_cache() {
    let r = TestRedis::new().await;
    let other = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let cache = tracking_cache(&r).await;
    let queued = job();
    other.save(&queued).await.expect("save");
    cached(&cache, &queued).await;

    // Redis forgets what a killed connection tracked, so this write sends no invalidation anywhere.
    let id = cache.connection_id().expect("connected");
    let _: i64 = r
        .client
        .custom(
            CustomCommand::new_static("CLIENT", None, false),
            vec!["KILL".to_owned(), "ID".to_owned(), id.to_string()],
        )
        .await
        .expect("client kill");
    let ready = advanced(&queued, JobStatus::Ready);
    other.save(&ready).await.expect("save");
    status_eventually(&cache, &ready, JobStatus::Ready).await;
    // And it caches again once tracking is back on the new connection.
    eventually(WAIT, "tracking back on", || {
        let on = cache.is_tracking();
        async move { on.then_some(()) }
    })
    .await;
    cached(&cache, &ready).await;
}

#[tokio::test]
async fn a_write_through_the_direct_view_is_read_back_through_the_cache_at_once() {
    let r = TestRedis::new().await;
    let cache = tracking_cache(&r).await;
    let direct = cache.direct_reads();
    let queued = job();
    direct.save(&queued).await.expect("save");
    cached(&cache, &queued).await;

    let ready = advanced(&queued, JobStatus::Ready);
    direct.save(&ready).await.expect("save");
    let read = cache.get(ready.id).await.expect("read").expect("present");
    assert_eq!(read.status, JobStatus::Ready);
    let hits = cache.stats().hits;
    direct.get(ready.id).await.expect("read");
    assert_eq!(cache.stats().hits, hits, "the direct view reads Redis");
}
