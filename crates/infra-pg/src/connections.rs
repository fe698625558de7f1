//! Connections handed from statement to statement, past sqlx's ping on release.
//!
//! sqlx 0.8 pings every connection as it goes back to its pool (`PoolConnection::return_to_pool`, not
//! configurable): a round trip more per statement, for both processes. The repository instead takes
//! connections out of the pool and passes them from one statement to the next itself. A connection goes back
//! through sqlx's pool (its ping, lifetime and idle rules) whenever something may be wrong with it: when its
//! statement failed or was cancelled (the lease is dropped), and once it has been out for [`RECHECK_AFTER`]:
//! a sweep returns kept connections that old even when no statement comes, so an idle process leaves its
//! connections to sqlx's idle timeout as a plain pool would.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a connection may go without sqlx's pool seeing it.
const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// The connections the repository holds. Leases are limited to all the pool's connections but one, so
/// callers of the pool itself (the readiness ping, the metrics counts, the migrations) always find one.
#[derive(Debug)]
pub(crate) struct Connections {
    pool: PgPool,
    recheck_after: Duration,
    leases: Semaphore,
    /// How many connections are kept between leases (0 with a one-connection pool: that one stays in sqlx's
    /// pool, where every caller can reach it).
    keep: usize,
    /// Kept connections, the most recently used last.
    idle: Mutex<Vec<Kept>>,
}

#[derive(Debug)]
struct Kept {
    conn: PoolConnection<Postgres>,
    /// When it was taken from sqlx's pool.
    taken_at: Instant,
}

impl Kept {
    /// Out of sqlx's pool long enough that sqlx should check it again.
    fn is_due(&self, recheck_after: Duration) -> bool {
        self.taken_at.elapsed() >= recheck_after
    }
}

impl Connections {
    /// Connections over `pool`, with the sweep started when a tokio runtime is running.
    pub(crate) fn start(pool: PgPool) -> Arc<Self> {
        Self::start_with(pool, RECHECK_AFTER)
    }

    fn start_with(pool: PgPool, recheck_after: Duration) -> Arc<Self> {
        let max = usize::try_from(pool.options().get_max_connections()).unwrap_or(usize::MAX);
        let keep = max.saturating_sub(1);
        let connections = Arc::new(Self {
            recheck_after,
            leases: Semaphore::new(keep.max(1)),
            keep,
            idle: Mutex::new(Vec::with_capacity(keep)),
            pool,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&connections)));
        }
        connections
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for one statement: a kept one if there is one, otherwise one from the pool. Waits at most
    /// the pool's acquire timeout for a lease (`PoolTimedOut`), as the pool itself would.
    pub(crate) async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        let timeout = self.pool.options().get_acquire_timeout();
        let permit = tokio::time::timeout(timeout, self.leases.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let kept = match self.take_kept() {
            Some(kept) => kept,
            None => Kept {
                conn: self.pool.acquire().await?,
                taken_at: Instant::now(),
            },
        };
        Ok(Lease {
            kept,
            home: self,
            _permit: permit,
        })
    }

    /// The most recently used kept connection. Older ones due a recheck are dropped on the way, which returns
    /// them to the pool.
    fn take_kept(&self) -> Option<Kept> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(kept) = idle.pop() {
            if !kept.is_due(self.recheck_after) {
                return Some(kept);
            }
        }
        None
    }

    /// Drops every kept connection back into sqlx's pool, which checks each: after a statement failed on a
    /// connection that broke, the others kept since the same blip are likely broken too, and none may be
    /// handed to the next statement unchecked.
    pub(crate) fn discard_kept(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.clear();
    }

    fn keep(&self, kept: Kept) {
        if kept.is_due(self.recheck_after) || self.pool.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep {
            idle.push(kept);
        }
    }
}

/// Every `recheck_after`, returns the kept connections due a recheck to the pool; ends with the repository.
async fn sweep(connections: Weak<Connections>) {
    let Some(period) = connections.upgrade().map(|c| c.recheck_after) else {
        return;
    };
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let Some(connections) = connections.upgrade() else {
            return;
        };
        let mut idle = connections
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.retain(|kept| !kept.is_due(connections.recheck_after));
    }
}

/// One connection, lent for one statement. Dropped, it goes back to sqlx's pool, which checks it: that is
/// what happens to a lease whose statement failed or whose future was cancelled mid-statement.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    // Declared before the permit, so the connection is back in the pool before a waiter is let in.
    kept: Kept,
    home: &'a Connections,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Ends the lease with its statement's result: after a success the connection is kept for the next
    /// statement, unchecked; after an error it goes back to the pool to be checked.
    pub(crate) fn finish<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        if result.is_ok() {
            let Lease {
                kept,
                home,
                _permit,
            } = self;
            home.keep(kept);
        }
        result
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.kept.conn
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.kept.conn
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;
    use sqlx::PgPool;

    use super::Connections;

    async fn backend_pid(conn: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
    }

    /// The test database's pool, resized: `#[sqlx::test]` hands out a pool of its own settings.
    async fn pool_of(pool: &PgPool, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_millis(300))
            .test_before_acquire(false)
            .connect_with(pool.connect_options().as_ref().clone())
            .await
            .unwrap()
    }

    fn kept(connections: &Connections) -> usize {
        connections.idle.lock().unwrap().len()
    }

    /// Waits until `condition` holds, failing after a deadline.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[sqlx::test(migrations = false)]
    async fn a_completed_statement_keeps_its_connection_for_the_next(pool: PgPool) {
        let connections = Connections::start(pool_of(&pool, 4).await);
        let mut lease = connections.acquire().await.unwrap();
        let first = backend_pid(&mut lease).await;
        lease.finish(first.as_ref().map(drop)).unwrap();

        // Kept by the repository, not returned to sqlx's pool (which would ping it).
        assert_eq!(kept(&connections), 1);
        assert_eq!(connections.pool().num_idle(), 0);
        let mut lease = connections.acquire().await.unwrap();
        assert_eq!(backend_pid(&mut lease).await.unwrap(), first.unwrap());
        assert_eq!(kept(&connections), 0);
    }

    #[sqlx::test(migrations = false)]
    async fn a_failed_statement_sends_its_connection_back_to_the_pool(pool: PgPool) {
        let connections = Connections::start(pool_of(&pool, 4).await);
        let mut lease = connections.acquire().await.unwrap();
        let failed = sqlx::query("SELECT no_such_column FROM no_such_table")
            .execute(&mut *lease)
            .await;
        assert!(lease.finish(failed).is_err());

        assert_eq!(kept(&connections), 0);
        eventually("the connection is back in sqlx's pool", || {
            connections.pool().num_idle() == 1
        })
        .await;
    }

    #[sqlx::test(migrations = false)]
    async fn a_cancelled_statement_does_not_leave_its_connection_to_the_next(pool: PgPool) {
        let connections = Connections::start(pool_of(&pool, 4).await);
        let cancelled = tokio::time::timeout(Duration::from_millis(50), async {
            let mut lease = connections.acquire().await?;
            let slept = sqlx::query("SELECT pg_sleep(1)").execute(&mut *lease).await;
            lease.finish(slept)
        })
        .await;
        assert!(cancelled.is_err(), "pg_sleep(1) finished within 50 ms");

        assert_eq!(kept(&connections), 0);
        let mut lease = connections.acquire().await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *lease)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }

    #[sqlx::test(migrations = false)]
    async fn a_kept_connection_goes_back_to_the_pool_when_due_even_with_no_statement(pool: PgPool) {
        let connections =
            Connections::start_with(pool_of(&pool, 4).await, Duration::from_millis(200));
        let lease = connections.acquire().await.unwrap();
        lease.finish(Ok::<_, sqlx::Error>(())).unwrap();
        assert_eq!(kept(&connections), 1);

        eventually("the sweep returns the kept connection to the pool", || {
            kept(&connections) == 0 && connections.pool().num_idle() == 1
        })
        .await;
    }

    #[sqlx::test(migrations = false)]
    async fn leases_leave_one_connection_to_callers_of_the_pool(pool: PgPool) {
        let connections = Connections::start(pool_of(&pool, 3).await);
        let first = connections.acquire().await.unwrap();
        let second = connections.acquire().await.unwrap();
        assert!(matches!(
            connections.acquire().await,
            Err(sqlx::Error::PoolTimedOut)
        ));
        drop(connections.pool().acquire().await.unwrap());

        // Kept between leases, the two still leave that one free.
        first.finish(Ok::<_, sqlx::Error>(())).unwrap();
        second.finish(Ok::<_, sqlx::Error>(())).unwrap();
        assert_eq!(kept(&connections), 2);
        drop(connections.pool().acquire().await.unwrap());
    }
}
