//! Redis Cluster: the queue's Lua scripts on the one slot its keys share, job events and the failures channel
//! whichever node owns a job, the status cache's client-side tracking on every node, and all of it again
//! after a node restarts with none of its keys. On `REDIS_CLUSTER_URL` (CI's cluster, or the private one
//! `cargo xtask test` starts) or else a cluster of the test's own; the restart test always starts its own.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{owner_of, slot_owners, TestCluster};
use common::{advanced, eventually, job};
use domain::ports::{EventStream, JobQueue, LiveJobStore, QueuedJob, StepLock};
use domain::{Job, JobEvent, JobStatus, ProjectId, Tier, TierTable, UserId};
use fred::prelude::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures::StreamExt;
use infra_redis::{
    connect, CachedLiveStore, Client, Keys, RedisLiveStore, RedisQueue, RedisStepLock,
};

const WAIT: Duration = Duration::from_secs(15);
const TTL: Duration = Duration::from_secs(30);

fn event(j: &Job) -> JobEvent {
    JobEvent {
        job_id: j.id,
        status: j.status,
        message: j.status.label().into(),
        preview_url: j.preview_url.clone(),
        timestamp: j.updated_at,
    }
}

/// One job per primary, keyed by its port: ids are drawn until every node owns one job's hash.
async fn one_job_per_node(client: &Client, prefix: &str) -> BTreeMap<u16, Job> {
    let owners = slot_owners(client).await;
    let nodes: BTreeSet<u16> = owners.iter().map(|(_, port)| *port).collect();
    assert_eq!(nodes.len(), 3, "a three-node cluster: {owners:?}");
    let keys = Keys::new(prefix);
    let mut jobs = BTreeMap::new();
    while jobs.len() < nodes.len() {
        let j = job();
        jobs.entry(owner_of(&owners, &keys.job(j.id))).or_insert(j);
    }
    jobs
}

async fn next_event(stream: &mut EventStream) -> JobEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the deadline")
        .expect("the stream is open")
}

fn queued(user: &str, tier: Tier) -> QueuedJob {
    QueuedJob {
        job_id: domain::JobId::new(),
        user_id: UserId::try_from(user).unwrap(),
        project_id: ProjectId::new(),
        tier,
    }
}

#[tokio::test]
async fn the_queue_keys_share_one_slot_and_its_scripts_run_there() {
    let c = TestCluster::new().await;
    let keys = Keys::new(&c.prefix);
    let owners = slot_owners(&c.client).await;
    let node = owner_of(&owners, &keys.queue_pending());
    for key in [
        keys.queue_leases(),
        keys.queue_owners(),
        keys.queue_meta(),
        keys.queue_counter(),
        keys.queue_reclaimed(),
        format!("{}user:user_1", keys.queue_slots_prefix()),
    ] {
        assert_eq!(
            owner_of(&owners, &key),
            node,
            "{key} is off the queue's node"
        );
    }

    let q = RedisQueue::new(c.client.clone(), &c.prefix, TierTable::default());
    let low = queued("user_low", Tier::Bootstrapper);
    let high = queued("user_high", Tier::CtoScale);
    q.enqueue(&low).await.unwrap();
    q.enqueue(&high).await.unwrap();
    assert_eq!(q.position(high.job_id).await.unwrap(), Some(1));
    let lease = q.lease("w1", TTL).await.unwrap().expect("a lease");
    assert_eq!(lease.job, high);
    assert!(q.heartbeat(&lease, TTL).await.unwrap());
    q.ack(&lease).await.unwrap();
    let short = q
        .lease("w2", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("a lease");
    assert_eq!(short.job, low);
    let expired = eventually(WAIT, "the lease expired", || async {
        let back = q.expired_leases(10).await.unwrap();
        (!back.is_empty()).then_some(back)
    })
    .await;
    assert_eq!(expired, vec![low.clone()]);
    assert!(q.drop_expired(low.job_id).await.unwrap());
    assert!(!q.contains(low.job_id).await.unwrap());
    q.enqueue(&low).await.unwrap();
    let again = q.lease("w3", TTL).await.unwrap().expect("a lease");
    assert_eq!(again.job, low);
}

#[tokio::test]
async fn the_step_lock_works_on_a_cluster() {
    let c = TestCluster::new().await;
    let a = RedisStepLock::new(c.client.clone(), &c.prefix);
    let b = RedisStepLock::new(c.client.clone(), &c.prefix);
    let held = a.try_lock("drift", TTL).await.unwrap().expect("the lock");
    assert!(b.try_lock("drift", TTL).await.unwrap().is_none());
    a.unlock(held).await.unwrap();
    assert!(b.try_lock("drift", TTL).await.unwrap().is_some());
}

#[tokio::test]
async fn job_events_and_failures_reach_subscribers_whichever_node_owns_the_job() {
    let c = TestCluster::new().await;
    let reader = RedisLiveStore::new(c.client.clone(), &c.prefix);
    let other = connect(&c.url).await.expect("a second client");
    let writer = RedisLiveStore::new(other, &c.prefix);
    let mut failures = reader.subscribe_failures().await.unwrap();
    for (node, queued) in one_job_per_node(&c.client, &c.prefix).await {
        let mut events = reader.subscribe(queued.id).await.unwrap();
        let started = advanced(&queued, JobStatus::Starting);
        writer
            .save_and_publish(&started, &event(&started))
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut events).await,
            event(&started),
            "node {node}"
        );
        let mut failed = advanced(&started, JobStatus::Failed);
        failed.error_message = Some("Build cancelled".into());
        writer
            .save_and_publish(&failed, &event(&failed))
            .await
            .unwrap();
        assert_eq!(next_event(&mut events).await, event(&failed), "node {node}");
        assert_eq!(
            next_event(&mut failures).await,
            event(&failed),
            "node {node}"
        );
        assert_eq!(reader.get(queued.id).await.unwrap(), Some(failed));
    }
}

/// `subscribe` fences its SUBSCRIBE with a PING, whose answer means the subscription is in effect: only
/// when both go to the same node. For each of several subscriber connections (each client sends its
/// SUBSCRIBEs to a node of its own), the node holding a new subscription must be the one that answered a
/// PING meanwhile (a cluster of the test's own: nobody else PINGs it).
#[tokio::test]
async fn the_subscription_fence_is_answered_by_the_node_that_holds_the_subscription() {
    let c = TestCluster::own().await;
    let keys = Keys::new(&c.prefix);
    let ports = c.local.as_ref().expect("own cluster").ports();
    let admins = futures::future::join_all(
        ports
            .iter()
            .map(|port| async move { connect(&format!("redis://127.0.0.1:{port}")).await }),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .expect("a client per node");
    for _ in 0..5 {
        let client = connect(&c.url).await.expect("a client");
        let store = RedisLiveStore::new(client, &c.prefix);
        // The hub's connection is opened by the first subscribe; the fence after that is the one measured.
        let _first = store.subscribe(job().id).await.unwrap();
        let before = pings(&admins).await;
        let j = job();
        let _events = store.subscribe(j.id).await.unwrap();
        let after = pings(&admins).await;
        let channel = keys.job_events(j.id);
        let mut holders = Vec::new();
        for (i, admin) in admins.iter().enumerate() {
            if subscribers(admin, &channel).await > 0 {
                holders.push(i);
            }
        }
        assert_eq!(holders.len(), 1, "one node holds {channel}");
        let pinged: Vec<usize> = (0..admins.len())
            .filter(|&i| after[i] > before[i])
            .collect();
        assert_eq!(pinged, holders, "the PING fence went elsewhere");
    }
}

/// `PING` calls a node has answered (`INFO commandstats`).
async fn pings(admins: &[Client]) -> Vec<u64> {
    let mut out = Vec::new();
    for admin in admins {
        let stats: String = admin
            .custom(
                CustomCommand::new_static("INFO", ClusterHash::Random, false),
                vec!["commandstats"],
            )
            .await
            .expect("INFO commandstats");
        let calls = stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        out.push(calls);
    }
    out
}

/// Subscribers of `channel` on this node (`PUBSUB NUMSUB` counts only the node's own).
async fn subscribers(admin: &Client, channel: &str) -> i64 {
    let answer: Value = admin
        .custom(
            CustomCommand::new_static("PUBSUB", ClusterHash::Random, false),
            vec!["NUMSUB", channel],
        )
        .await
        .expect("PUBSUB NUMSUB");
    answer
        .into_array()
        .get(1)
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn the_status_cache_is_invalidated_by_writes_on_every_node() {
    let c = TestCluster::new().await;
    let other = connect(&c.url).await.expect("a second client");
    let writer = RedisLiveStore::new(other, &c.prefix);
    let cache = tracking_cache(&c).await;
    for (node, queued) in one_job_per_node(&c.client, &c.prefix).await {
        writer.save(&queued).await.unwrap();
        cached(&cache, &queued).await;
        let ready = advanced(&queued, JobStatus::Ready);
        writer.save(&ready).await.unwrap();
        // Well inside the cache's maximum age: only the invalidation can make this pass.
        eventually(
            Duration::from_secs(5),
            "the new status through the cache",
            || async {
                let read = cache.get(ready.id).await.expect("read").expect("present");
                (read.status == JobStatus::Ready).then_some(())
            },
        )
        .await;
        assert_eq!(
            cache.get(queued.id).await.unwrap().map(|j| j.status),
            Some(JobStatus::Ready),
            "node {node}"
        );
    }
}

async fn tracking_cache(c: &TestCluster) -> CachedLiveStore {
    let cache = CachedLiveStore::new(RedisLiveStore::new(c.client.clone(), &c.prefix), &c.client)
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

/// Each node in turn is killed and started again with none of its keys: the clients reconnect, the queue's
/// scripts are loaded again where they were lost, streams opened before the restart get what is published
/// after it, and the status cache tracks again and serves no value from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_node_restarts_scripts_events_and_the_cache_work_again() {
    let mut c = TestCluster::own().await;
    let ports = c.local().ports();
    let other = connect(&c.url).await.expect("a second client");
    let writer = RedisLiveStore::new(other, &c.prefix);
    let reader = RedisLiveStore::new(c.client.clone(), &c.prefix);
    let cache = tracking_cache(&c).await;
    let q = RedisQueue::new(c.client.clone(), &c.prefix, TierTable::default());
    let jobs = one_job_per_node(&c.client, &c.prefix).await;
    let mut failures = reader.subscribe_failures().await.unwrap();
    let mut streams = BTreeMap::new();
    for (node, j) in &jobs {
        streams.insert(*node, reader.subscribe(j.id).await.unwrap());
        writer.save(j).await.unwrap();
        cached(&cache, j).await;
    }
    q.enqueue(&queued("user_before", Tier::Partner))
        .await
        .unwrap();

    for (index, port) in ports.iter().enumerate() {
        c.local()
            .restart_node(index)
            .await
            .expect("the node restarts");
        // The restarted node's keys are gone, as in production without persistence.
        let lost = &jobs[port];
        eventually(WAIT, "the restarted node answers", || async {
            reader
                .get(lost.id)
                .await
                .ok()
                .map(|read| assert_eq!(read, None))
        })
        .await;

        // The scripts run again, on whichever node holds the queue (reloaded where a restart lost them).
        let after = queued(&format!("user_after_{port}"), Tier::CtoScale);
        eventually(WAIT, "an enqueue after the restart", || async {
            q.enqueue(&after).await.ok()
        })
        .await;
        let lease = q.lease("w", TTL).await.unwrap().expect("a lease");
        assert_eq!(lease.job, after);
        q.ack(&lease).await.unwrap();

        for (node, j) in &jobs {
            // Events published after the restart reach the streams opened before it (republished until
            // one arrives: a subscription moves to its new connection a moment after the reconnect).
            let stream = streams.get_mut(node).expect("a stream");
            let mut base = j.clone();
            base.updated_at += chrono::Duration::seconds(index as i64 + 1);
            let moved = publish_until_received(&writer, &base, JobStatus::Starting, stream).await;

            // The cache serves what was written after the restart, then follows the next write.
            eventually(WAIT, "the cache tracking again", || {
                let on = cache.is_tracking();
                async move { on.then_some(()) }
            })
            .await;
            cached(&cache, &moved).await;
            let mut failed = advanced(&moved, JobStatus::Failed);
            failed.error_message = Some("Build cancelled".into());
            writer
                .save_and_publish(&failed, &event(&failed))
                .await
                .unwrap();
            eventually(
                Duration::from_secs(5),
                "the write seen through the cache",
                || async {
                    let read = cache.get(j.id).await.ok().flatten()?;
                    (read.status == JobStatus::Failed).then_some(())
                },
            )
            .await;
            let seen = tokio::time::timeout(WAIT, async {
                while let Some(e) = failures.next().await {
                    if e.job_id == j.id && e.status == JobStatus::Failed {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(seen, Ok(true), "the failure on the failures channel");
        }
    }
}

/// Moves `job` on to `status` and publishes it, again (a millisecond later each time: a save no newer than
/// the hash publishes nothing) until `stream` delivers an event: after a reconnect a subscription is back on
/// its new connection a moment later, and what was published in between is lost, as in production. Returns
/// the job as last written.
async fn publish_until_received(
    writer: &RedisLiveStore,
    job: &Job,
    status: JobStatus,
    stream: &mut EventStream,
) -> Job {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut moved = advanced(job, status);
    loop {
        moved = advanced(&moved, status);
        if writer
            .save_and_publish(&moved, &event(&moved))
            .await
            .is_ok()
        {
            // Events from before `job` (another round's) are skipped.
            let fresh = tokio::time::timeout(Duration::from_millis(200), async {
                while let Some(got) = stream.next().await {
                    if got.status == status && got.timestamp > job.updated_at {
                        return Some(got);
                    }
                }
                None
            });
            if let Ok(Some(got)) = fresh.await {
                assert_eq!(got.job_id, job.id);
                return moved;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event for {} after the restart",
            job.id
        );
    }
}
