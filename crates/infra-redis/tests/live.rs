//! The live job store and the usage counters against a real Redis.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{advanced, eventually, job, TestRedis};
use domain::ports::{LiveJobStore, StoreError};
use domain::{DebugId, Job, JobEvent, JobId, JobStatus, SandboxId, SandboxState};
use fred::prelude::{HashesInterface, KeysInterface, PubsubInterface};
use futures::StreamExt;
use infra_redis::{event_to_json, Keys, RedisLiveStore};

const WAIT: Duration = Duration::from_secs(5);

fn event(j: &Job) -> JobEvent {
    JobEvent {
        job_id: j.id,
        status: j.status,
        message: j.status.label().into(),
        preview_url: j.preview_url.clone(),
        timestamp: j.updated_at,
    }
}

#[tokio::test]
async fn save_then_get_round_trips_the_whole_job() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let mut j = job();
    j.status = JobStatus::Ready;
    j.sandbox_id = Some(SandboxId::try_from("sbx_1").unwrap());
    j.preview_url = Some("https://3000-sbx_1.e2b.app".into());
    j.debug_id = Some(DebugId::new());
    j.sandbox_state = SandboxState::Paused;
    j.sandbox_state_version = 2;
    j.paused_at = Some(Utc::now());
    j.duration_seconds = Some(61);
    store.save(&j).await.unwrap();
    assert_eq!(store.get(j.id).await.unwrap(), Some(j.clone()));

    // The hash carries the front end's fields under their names, None values absent.
    let keys = Keys::new(&r.prefix);
    let h: std::collections::HashMap<String, String> =
        r.client.hgetall(keys.job(j.id)).await.unwrap();
    assert_eq!(h["status"], "ready");
    assert_eq!(h["stage_label"], "Build complete!");
    assert_eq!(h["sandbox_paused"], "true");
    assert_eq!(h["sandbox_state"], "paused");
    assert_eq!(h["tier"], "cto_scale");
    assert!(!h.contains_key("error_message"));

    // A later save that clears a value removes its field.
    let mut cleared = advanced(&j, JobStatus::Ready);
    cleared.preview_url = None;
    store.save(&cleared).await.unwrap();
    assert_eq!(store.get(j.id).await.unwrap(), Some(cleared));

    store.delete(j.id).await.unwrap();
    assert_eq!(store.get(j.id).await.unwrap(), None);
}

#[tokio::test]
async fn an_older_save_never_overwrites_a_newer_one() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let old = job();
    let new = advanced(&old, JobStatus::Starting);
    store.save(&new).await.unwrap();
    store.save(&old).await.unwrap();
    assert_eq!(store.get(old.id).await.unwrap(), Some(new.clone()));

    // A higher sandbox_state_version wins even with an earlier updated_at, and loses to nothing older.
    let mut paused = new.clone();
    paused.sandbox_state_version = 1;
    paused.sandbox_state = SandboxState::Running;
    paused.updated_at = old.updated_at;
    store.save(&paused).await.unwrap();
    store.save(&new).await.unwrap();
    assert_eq!(store.get(old.id).await.unwrap(), Some(paused));
}

#[tokio::test]
async fn a_stale_save_and_publish_publishes_nothing() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let old = job();
    let new = advanced(&old, JobStatus::Starting);
    let mut events = store.subscribe(old.id).await.unwrap();
    store.save_and_publish(&new, &event(&new)).await.unwrap();
    store.save_and_publish(&old, &event(&old)).await.unwrap();
    let newer = advanced(&new, JobStatus::Scaffold);
    store
        .save_and_publish(&newer, &event(&newer))
        .await
        .unwrap();
    let got: Vec<_> = events.by_ref().take(2).collect().await;
    assert_eq!(got, vec![event(&new), event(&newer)]);
}

#[tokio::test]
async fn a_missing_hash_reads_as_none() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    assert_eq!(store.get(JobId::new()).await.unwrap(), None);
}

#[tokio::test]
async fn a_corrupt_hash_reads_as_corrupt() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let j = job();
    store.save(&j).await.unwrap();
    let key = Keys::new(&r.prefix).job(j.id);
    let _: () = r.client.hset(&key, ("status", "exploded")).await.unwrap();
    assert!(matches!(store.get(j.id).await, Err(StoreError::Corrupt(_))));

    let other = JobId::new();
    let key = Keys::new(&r.prefix).job(other);
    let _: () = r.client.hset(&key, ("status", "queued")).await.unwrap();
    assert!(matches!(
        store.get(other).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn save_and_publish_reaches_a_subscriber_in_order() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let mut j = job();
    // Both streams are live when subscribe returns: nothing published afterwards is missed.
    let first = store.subscribe(j.id).await.unwrap();
    let second = store.subscribe(j.id).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..50 {
        j = advanced(&j, JobStatus::ALL[i % 6]);
        if i == 49 {
            j.preview_url = Some("https://preview.example".into());
        }
        let e = JobEvent {
            message: format!("step {i}"),
            ..event(&j)
        };
        store.save_and_publish(&j, &e).await.unwrap();
        sent.push(e);
    }
    let got_first: Vec<_> = first.take(50).collect().await;
    let got_second: Vec<_> = second.take(50).collect().await;
    assert_eq!(got_first, sent);
    assert_eq!(got_second, sent);
    assert_eq!(store.get(j.id).await.unwrap(), Some(j));
}

#[tokio::test]
async fn the_wire_payload_is_the_event_json() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let j = job();
    let e = event(&j);
    let mut events = store.subscribe(j.id).await.unwrap();
    let channel = Keys::new(&r.prefix).job_events(j.id);
    // Anyone publishing the shared JSON (or reading it) speaks the same format as the store.
    let _: () = r.client.publish(&channel, event_to_json(&e)).await.unwrap();
    assert_eq!(events.next().await, Some(e));
}

#[tokio::test]
async fn dropping_the_last_stream_unsubscribes() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let j = job();
    let channel = Keys::new(&r.prefix).job_events(j.id);
    let subscribers = |c: fred::prelude::Client, ch: String| async move {
        let counts: Vec<(String, i64)> = c.pubsub_numsub(ch).await.unwrap();
        counts[0].1
    };
    let a = within("subscribe a", store.subscribe(j.id)).await.unwrap();
    let b = within("subscribe b", store.subscribe(j.id)).await.unwrap();
    // One shared connection carries both streams.
    assert_eq!(subscribers(r.client.clone(), channel.clone()).await, 1);
    drop(a);
    // Still subscribed for `b`: publish reaches it.
    store.save_and_publish(&j, &event(&j)).await.unwrap();
    let mut b = b;
    assert_eq!(within("b's event", b.next()).await, Some(event(&j)));
    drop(b);
    eventually(WAIT, "the unsubscribe", || {
        let (c, ch) = (r.client.clone(), channel.clone());
        async move { (subscribers(c, ch).await == 0).then_some(()) }
    })
    .await;
    // And a new stream after that subscribes again.
    let mut c = within("subscribe c", store.subscribe(j.id)).await.unwrap();
    let later = advanced(&j, JobStatus::Starting);
    store
        .save_and_publish(&later, &event(&later))
        .await
        .unwrap();
    assert_eq!(within("c's event", c.next()).await, Some(event(&later)));
}

/// `future`'s output, or a failure naming what did not happen within [`WAIT`].
async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

#[tokio::test]
async fn a_thousand_subscriptions_share_one_connection() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let jobs: Vec<Job> = (0..500).map(|_| job()).collect();
    let subscribed = futures::future::try_join_all(
        jobs.iter()
            .flat_map(|j| [j.id, j.id])
            .map(|id| store.subscribe(id)),
    )
    .await
    .unwrap();
    for j in &jobs {
        store.save_and_publish(j, &event(j)).await.unwrap();
    }
    let firsts = futures::future::join_all(
        subscribed
            .into_iter()
            .map(|mut s| async move { tokio::time::timeout(WAIT, s.next()).await }),
    )
    .await;
    for (i, got) in firsts.into_iter().enumerate() {
        assert_eq!(got.unwrap(), Some(event(&jobs[i / 2])));
    }
}

#[tokio::test]
async fn only_failed_events_reach_the_failures_feed_of_every_job() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let mut failures = store.subscribe_failures().await.unwrap();
    let (a, b) = (job(), job());
    let mut a_events = store.subscribe(a.id).await.unwrap();

    let building = advanced(&a, JobStatus::Code);
    store
        .save_and_publish(&building, &event(&building))
        .await
        .unwrap();
    let a_failed = advanced(&building, JobStatus::Failed);
    store
        .save_and_publish(&a_failed, &event(&a_failed))
        .await
        .unwrap();
    // A save without an event announces nothing, failed or not.
    store.save(&advanced(&b, JobStatus::Failed)).await.unwrap();
    let b_failed = advanced(&b, JobStatus::Failed);
    store
        .save_and_publish(&b_failed, &event(&b_failed))
        .await
        .unwrap();

    // The job's own channel still has every event; the feed has the two failures, in order.
    let own: Vec<_> = a_events.by_ref().take(2).collect().await;
    assert_eq!(own, vec![event(&building), event(&a_failed)]);
    let got: Vec<_> = tokio::time::timeout(WAIT, failures.by_ref().take(2).collect::<Vec<_>>())
        .await
        .expect("two failures announced");
    assert_eq!(got, vec![event(&a_failed), event(&b_failed)]);
}

/// A field a whole write would delete (it replaces the hash), and a write of the change alone leaves.
async fn plant_marker(r: &TestRedis, id: JobId) {
    let _: () = r
        .client
        .hset(Keys::new(&r.prefix).job(id), ("marker", "kept"))
        .await
        .unwrap();
}

async fn marker(r: &TestRedis, id: JobId) -> Option<String> {
    r.client
        .hget(Keys::new(&r.prefix).job(id), "marker")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_remembering_store_sends_only_the_change_and_the_hash_reads_back_whole() {
    let r = TestRedis::new().await;
    let store = RedisLiveStore::new(r.client.clone(), &r.prefix).remembering_writes(16);
    let mut j = job();
    j.preview_url = Some("https://preview.example".into());
    store.save(&j).await.unwrap();
    plant_marker(&r, j.id).await;

    let mut events = store.subscribe(j.id).await.unwrap();
    let mut next = advanced(&j, JobStatus::Code);
    next.preview_url = None;
    next.sandbox_id = Some(SandboxId::try_from("sbx_2").unwrap());
    store.save_and_publish(&next, &event(&next)).await.unwrap();

    assert_eq!(events.next().await, Some(event(&next)));
    assert_eq!(store.get(j.id).await.unwrap(), Some(next));
    assert_eq!(
        marker(&r, j.id).await.as_deref(),
        Some("kept"),
        "written whole"
    );
}

#[tokio::test]
async fn a_hash_not_as_last_written_here_is_written_whole_and_a_newer_one_is_kept() {
    let r = TestRedis::new().await;
    let remembering = RedisLiveStore::new(r.client.clone(), &r.prefix).remembering_writes(16);
    let other = RedisLiveStore::new(r.client.clone(), &r.prefix);
    let j = job();
    remembering.save(&j).await.unwrap();

    // Another writer moved the hash on: the change from what was written here would not apply.
    let theirs = advanced(&j, JobStatus::Starting);
    other.save(&theirs).await.unwrap();
    plant_marker(&r, j.id).await;
    let mine = advanced(&theirs, JobStatus::Scaffold);
    remembering.save(&mine).await.unwrap();
    assert_eq!(remembering.get(j.id).await.unwrap(), Some(mine.clone()));
    assert_eq!(marker(&r, j.id).await, None, "written whole");

    // The hash was lost (a flush): written whole again.
    let _: () = r.client.del(Keys::new(&r.prefix).job(j.id)).await.unwrap();
    let later = advanced(&mine, JobStatus::Code);
    remembering.save(&later).await.unwrap();
    assert_eq!(remembering.get(j.id).await.unwrap(), Some(later.clone()));

    // A newer record stays, and nothing is published for the older one.
    let newer = advanced(&later, JobStatus::Deps);
    other.save(&newer).await.unwrap();
    let mut events = remembering.subscribe(j.id).await.unwrap();
    let stale = Job {
        status: JobStatus::Failed,
        ..later.clone()
    };
    remembering
        .save_and_publish(&stale, &event(&stale))
        .await
        .unwrap();
    assert_eq!(remembering.get(j.id).await.unwrap(), Some(newer.clone()));
    let last = advanced(&newer, JobStatus::Checks);
    remembering
        .save_and_publish(&last, &event(&last))
        .await
        .unwrap();
    assert_eq!(
        events.next().await,
        Some(event(&last)),
        "the stale event was not published"
    );
    assert_eq!(remembering.get(j.id).await.unwrap(), Some(last));
}
