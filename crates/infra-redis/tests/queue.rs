//! The job queue against a real Redis.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, TestRedis};
use domain::ports::{JobQueue, Lease, QueueError, QueuedJob};
use domain::{JobId, ProjectId, Tier, TierTable, UserId};
use infra_redis::RedisQueue;

const TTL: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn queued(user: &str, tier: Tier) -> QueuedJob {
    QueuedJob {
        job_id: JobId::new(),
        user_id: UserId::try_from(user).unwrap(),
        project_id: ProjectId::new(),
        tier,
    }
}

fn queue(r: &TestRedis, tiers: TierTable) -> RedisQueue {
    RedisQueue::new(r.client.clone(), &r.prefix, tiers)
}

async fn lease_id(q: &RedisQueue, worker: &str) -> Option<JobId> {
    q.lease(worker, TTL).await.unwrap().map(|l| l.job.job_id)
}

#[tokio::test]
async fn higher_tiers_go_first_and_each_tier_is_fifo() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    let b1 = queued("u_b1", Tier::Bootstrapper);
    let p1 = queued("u_p1", Tier::Partner);
    let c1 = queued("u_c1", Tier::CtoScale);
    let b2 = queued("u_b2", Tier::Bootstrapper);
    let p2 = queued("u_p2", Tier::Partner);
    let c2 = queued("u_c2", Tier::CtoScale);
    for j in [&b1, &p1, &c1, &b2, &p2, &c2] {
        q.enqueue(j).await.unwrap();
    }
    assert_eq!(q.pending_len().await.unwrap(), 6);
    let mut order = Vec::new();
    while let Some(lease) = q.lease("w", TTL).await.unwrap() {
        assert_eq!(lease.worker_id, "w");
        order.push(lease.job);
    }
    assert_eq!(order, vec![c1, c2, p1, p2, b1, b2]);
    assert_eq!(q.pending_len().await.unwrap(), 0);
}

#[tokio::test]
async fn position_is_the_place_in_lease_order_and_none_once_leased() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    let b1 = queued("u_b1", Tier::Bootstrapper);
    let b2 = queued("u_b2", Tier::Bootstrapper);
    let c1 = queued("u_c1", Tier::CtoScale);
    for j in [&b1, &b2, &c1] {
        q.enqueue(j).await.unwrap();
    }
    // The cto_scale job jumps ahead of the earlier bootstrapper ones.
    assert_eq!(q.position(c1.job_id).await.unwrap(), Some(1));
    assert_eq!(q.position(b1.job_id).await.unwrap(), Some(2));
    assert_eq!(q.position(b2.job_id).await.unwrap(), Some(3));
    assert_eq!(lease_id(&q, "w").await, Some(c1.job_id));
    assert_eq!(q.position(c1.job_id).await.unwrap(), None);
    assert_eq!(q.position(b1.job_id).await.unwrap(), Some(1));
    assert_eq!(q.position(b2.job_id).await.unwrap(), Some(2));
    assert_eq!(q.position(JobId::new()).await.unwrap(), None);
}

#[tokio::test]
async fn the_cap_refuses_with_a_retry_hint_and_duplicates_are_no_ops() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    let jobs: Vec<_> = (0..100)
        .map(|i| queued(&format!("u{i}"), Tier::Bootstrapper))
        .collect();
    for j in &jobs {
        q.enqueue(j).await.unwrap();
    }
    assert_eq!(
        q.enqueue(&queued("late", Tier::CtoScale)).await,
        Err(QueueError::Full {
            retry_after_minutes: 1
        })
    );
    // Already queued: a no-op, not a refusal.
    q.enqueue(&jobs[0]).await.unwrap();
    assert_eq!(q.pending_len().await.unwrap(), 100);

    // Leased: still a no-op.
    let lease = q.lease("w", TTL).await.unwrap().unwrap();
    assert_eq!(lease.job, jobs[0]);
    q.enqueue(&jobs[0]).await.unwrap();
    assert_eq!(q.pending_len().await.unwrap(), 99);
    assert!(q.contains(jobs[0].job_id).await.unwrap());
}

#[tokio::test]
async fn twenty_workers_take_two_hundred_jobs_exactly_once() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::unlimited());
    let mut expected = HashSet::new();
    for i in 0..200 {
        let j = queued(&format!("u{}", i % 7), Tier::ALL[i % 3]);
        expected.insert(j.job_id);
        q.enqueue(&j).await.unwrap();
    }
    let workers = (0..20).map(|w| {
        let q = q.clone();
        tokio::spawn(async move {
            let mut taken = Vec::new();
            while let Some(id) = lease_id(&q, &format!("w{w}")).await {
                taken.push(id);
            }
            taken
        })
    });
    let mut all = Vec::new();
    for taken in futures::future::join_all(workers).await {
        all.extend(taken.unwrap());
    }
    assert_eq!(all.len(), 200, "every job taken once");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(q.pending_len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_full_user_is_passed_over_and_keeps_its_place() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    // A bootstrapper may run 2 at once; 4 jobs of theirs are queued before another user's.
    let a: Vec<_> = (0..4)
        .map(|_| queued("user_a", Tier::Bootstrapper))
        .collect();
    let b = queued("user_b", Tier::Bootstrapper);
    for j in a.iter().chain([&b]) {
        q.enqueue(j).await.unwrap();
    }
    let first = q.lease("w1", TTL).await.unwrap().unwrap();
    let second = q.lease("w2", TTL).await.unwrap().unwrap();
    assert_eq!((&first.job, &second.job), (&a[0], &a[1]));
    // user_a is full: their third job is passed over for user_b's.
    assert_eq!(lease_id(&q, "w3").await, Some(b.job_id));
    assert_eq!(lease_id(&q, "w3").await, None);
    assert_eq!(q.pending_len().await.unwrap(), 2);

    // A slot frees: user_a's third job is next, ahead of a job queued later.
    let c = queued("user_c", Tier::Bootstrapper);
    q.enqueue(&c).await.unwrap();
    q.ack(&first).await.unwrap();
    assert_eq!(lease_id(&q, "w1").await, Some(a[2].job_id));
    assert_eq!(lease_id(&q, "w1").await, Some(c.job_id));
    assert_eq!(lease_id(&q, "w1").await, None);
}

#[tokio::test]
async fn a_project_slot_limit_holds_too() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    // Different users, one project: a partner project runs at most 3 at once.
    let project = ProjectId::new();
    let jobs: Vec<_> = (0..4)
        .map(|i| QueuedJob {
            project_id: project,
            ..queued(&format!("p_user{i}"), Tier::Partner)
        })
        .collect();
    for j in &jobs {
        q.enqueue(j).await.unwrap();
    }
    for j in &jobs[..3] {
        assert_eq!(lease_id(&q, "w").await, Some(j.job_id));
    }
    assert_eq!(lease_id(&q, "w").await, None);
}

#[tokio::test]
async fn slot_limits_hold_under_contention() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    // Two bootstrappers (limit 2 each) and a partner (limit 3), 8 jobs each, 10 workers racing.
    let users = [
        ("user_x", Tier::Bootstrapper, 2),
        ("user_y", Tier::Bootstrapper, 2),
        ("user_z", Tier::Partner, 3),
    ];
    let mut total = 0;
    for _ in 0..8 {
        for (user, tier, _) in users {
            q.enqueue(&queued(user, tier)).await.unwrap();
            total += 1;
        }
    }
    let limits: HashMap<String, usize> =
        users.iter().map(|(u, _, l)| (u.to_string(), *l)).collect();
    let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let peak: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let workers = (0..10).map(|w| {
        let (q, running, peak, done) = (q.clone(), running.clone(), peak.clone(), done.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while done.load(Ordering::SeqCst) < total {
                assert!(tokio::time::Instant::now() < deadline, "workers stalled");
                let Some(lease) = q.lease(&format!("w{w}"), TTL).await.unwrap() else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let user = lease.job.user_id.to_string();
                {
                    let mut running = running.lock().unwrap();
                    let n = running.entry(user.clone()).or_default();
                    *n += 1;
                    let mut peak = peak.lock().unwrap();
                    let p = peak.entry(user.clone()).or_default();
                    *p = (*p).max(*n);
                }
                tokio::task::yield_now().await;
                // Counted down before the ack frees the slot, so the count never lags behind Redis.
                *running.lock().unwrap().get_mut(&user).unwrap() -= 1;
                q.ack(&lease).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        w.unwrap();
    }
    let peak = peak.lock().unwrap().clone();
    for (user, limit) in &limits {
        assert!(peak[user] <= *limit, "{user} ran {} at once", peak[user]);
    }
    assert_eq!(q.pending_len().await.unwrap(), 0);
}

#[tokio::test]
async fn heartbeat_ack_and_release() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    let c1 = queued("h_c1", Tier::CtoScale);
    let c2 = queued("h_c2", Tier::CtoScale);
    q.enqueue(&c1).await.unwrap();
    q.enqueue(&c2).await.unwrap();

    let lease = q.lease("w1", TTL).await.unwrap().unwrap();
    assert_eq!(lease.job, c1);
    assert!(lease.deadline > chrono::Utc::now());
    assert!(q.heartbeat(&lease, TTL).await.unwrap());
    let stranger = Lease {
        worker_id: "w2".into(),
        ..lease.clone()
    };
    assert!(!q.heartbeat(&stranger, TTL).await.unwrap());
    // A stranger can neither release nor ack it.
    q.release(&stranger).await.unwrap();
    q.ack(&stranger).await.unwrap();
    assert!(q.heartbeat(&lease, TTL).await.unwrap());

    // Released: back in front of c2, which was queued after it.
    q.release(&lease).await.unwrap();
    assert!(!q.heartbeat(&lease, TTL).await.unwrap());
    assert_eq!(q.pending_len().await.unwrap(), 2);
    let again = q.lease("w3", TTL).await.unwrap().unwrap();
    assert_eq!(again.job, c1);

    q.ack(&again).await.unwrap();
    q.ack(&again).await.unwrap();
    assert!(!q.heartbeat(&again, TTL).await.unwrap());
    assert!(!q.contains(c1.job_id).await.unwrap());
    assert_eq!(lease_id(&q, "w3").await, Some(c2.job_id));
}

#[tokio::test]
async fn expired_leases_stay_until_dropped_then_free_their_slots() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    let project = ProjectId::new();
    let same_user = |_| QueuedJob {
        project_id: project,
        ..queued("e_user", Tier::Bootstrapper)
    };
    let jobs: Vec<QueuedJob> = (0..3).map(same_user).collect();
    for j in &jobs {
        q.enqueue(j).await.unwrap();
    }
    let short = Duration::from_millis(50);
    let first = q.lease("w1", short).await.unwrap().unwrap();
    let _second = q.lease("w2", TTL).await.unwrap().unwrap();
    // The user's two slots are taken.
    assert_eq!(lease_id(&q, "w3").await, None);

    let expired = eventually(WAIT, "the short lease to expire", || {
        let q = q.clone();
        async move {
            let jobs = q.expired_leases(10).await.unwrap();
            (!jobs.is_empty()).then_some(jobs)
        }
    })
    .await;
    assert_eq!(expired, vec![jobs[0].clone()]);
    // Listing takes nothing: a recovery cut short finds the lease again, and its worker cannot renew it.
    assert_eq!(q.expired_leases(10).await.unwrap(), vec![jobs[0].clone()]);
    assert!(q.contains(jobs[0].job_id).await.unwrap());
    assert!(
        !q.heartbeat(&first, TTL).await.unwrap(),
        "an expired lease is lost"
    );
    q.enqueue(&jobs[0]).await.unwrap();
    assert_eq!(lease_id(&q, "w3").await, None, "still leased, not queued");

    // Recovered: dropped, its slot freed; a live lease is never dropped.
    assert!(!q.drop_expired(jobs[1].job_id).await.unwrap());
    assert!(q.drop_expired(jobs[0].job_id).await.unwrap());
    assert!(!q.drop_expired(jobs[0].job_id).await.unwrap());
    assert_eq!(q.expired_leases(10).await.unwrap(), vec![]);
    assert!(!q.contains(jobs[0].job_id).await.unwrap(), "not requeued");
    q.ack(&first).await.unwrap();

    // The caller requeues the job and it takes its old place, ahead of jobs[2].
    q.enqueue(&jobs[0]).await.unwrap();
    assert_eq!(lease_id(&q, "w3").await, Some(jobs[0].job_id));
}

#[tokio::test]
async fn remove_takes_only_pending_jobs() {
    let r = TestRedis::new().await;
    let q = queue(&r, TierTable::default());
    let a = queued("r_a", Tier::Partner);
    let b = queued("r_b", Tier::Partner);
    q.enqueue(&a).await.unwrap();
    q.enqueue(&b).await.unwrap();
    assert!(q.contains(a.job_id).await.unwrap());
    assert!(q.remove(a.job_id).await.unwrap());
    assert!(!q.remove(a.job_id).await.unwrap());
    assert!(!q.contains(a.job_id).await.unwrap());
    assert_eq!(q.pending_len().await.unwrap(), 1);

    let lease = q.lease("w", TTL).await.unwrap().unwrap();
    assert_eq!(lease.job, b);
    assert!(
        !q.remove(b.job_id).await.unwrap(),
        "a leased job is not removed"
    );
    assert!(q.contains(b.job_id).await.unwrap());
    assert!(q.heartbeat(&lease, TTL).await.unwrap());
}
