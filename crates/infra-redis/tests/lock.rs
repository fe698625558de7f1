//! The reconciler's step lock against a real Redis.

mod common;

use std::time::Duration;

use common::{eventually, TestRedis};
use domain::ports::StepLock;
use infra_redis::RedisStepLock;

#[tokio::test]
async fn only_one_holder_at_a_time_and_release_frees_it() {
    let redis = TestRedis::new().await;
    let a = RedisStepLock::new(redis.client.clone(), &redis.prefix);
    let b = RedisStepLock::new(redis.client.clone(), &redis.prefix);

    let held = a.try_lock("drift", Duration::from_secs(30)).await.unwrap();
    let held = held.expect("the first caller takes the lock");
    assert!(b
        .try_lock("drift", Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    assert!(
        b.try_lock("leaks", Duration::from_secs(30))
            .await
            .unwrap()
            .is_some(),
        "locks are per name"
    );

    a.unlock(held).await.unwrap();
    assert!(b
        .try_lock("drift", Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn an_expired_lock_is_retaken_and_the_old_holder_cannot_release_it() {
    let redis = TestRedis::new().await;
    let a = RedisStepLock::new(redis.client.clone(), &redis.prefix);
    let b = RedisStepLock::new(redis.client.clone(), &redis.prefix);

    let stale = a
        .try_lock("leases", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    let fresh = eventually(Duration::from_secs(5), "the lock to expire", || async {
        b.try_lock("leases", Duration::from_secs(30)).await.unwrap()
    })
    .await;

    a.unlock(stale).await.unwrap();
    assert!(
        a.try_lock("leases", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "the stale holder's unlock must not free the new holder's lock"
    );
    b.unlock(fresh).await.unwrap();
}
