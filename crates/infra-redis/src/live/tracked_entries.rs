//! The bookkeeping of the status cache: which job hashes are held, which are being read, and whether Redis is
//! tracking them at all. No I/O here, so every race the cache must survive is a plain unit test.
//!
//! An invalidation can overtake the read it concerns: Redis serves our HGETALL, another client writes the key
//! and Redis sends the invalidation, and that message may be handled before the reply of the read. So a read
//! leaves a `Loading` marker with a fresh token before it goes out, an invalidation removes whatever marker or
//! value the key has, and the reply is kept only if its own marker is still there. Flushes (a reconnect, lost
//! invalidations, tracking turned off) advance an epoch, which refuses every read begun before them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use domain::Job;

enum Slot {
    Loading(u64),
    Ready { job: Box<Job>, stored: Instant },
}

struct Inner {
    slots: HashMap<String, Slot>,
    epoch: u64,
    next_token: u64,
    /// `true` only while Redis is known to track this connection's reads.
    tracking: bool,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A held value, not older than the maximum age.
    Hit(Box<Job>),
    /// Not held: read Redis, then hand the answer to [`TrackedEntries::fill`] with this ticket.
    Miss(Ticket),
    /// Redis is not tracking reads now: read it and keep nothing.
    Untracked,
}

/// Proof of a read begun at a known point; [`TrackedEntries::fill`] keeps the answer only if nothing
/// invalidated the key since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    token: u64,
    epoch: u64,
}

/// Hits and misses since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Reads made while Redis was not tracking (starting up, reconnecting): neither hits nor kept.
    pub untracked: u64,
}

pub(crate) struct TrackedEntries {
    inner: Mutex<Inner>,
    max_age: Duration,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    untracked: AtomicU64,
}

impl TrackedEntries {
    /// Holds at most `capacity` jobs, each for at most `max_age`: the age bounds how stale a value can be in
    /// the cases tracking cannot see (a half-open connection, a `FLUSHALL` whose invalidation the client drops).
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                epoch: 0,
                next_token: 0,
                tracking: false,
            }),
            max_age,
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lookup(&self, key: &str, now: Instant) -> Lookup {
        let mut inner = self.lock();
        if !inner.tracking {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return Lookup::Untracked;
        }
        if let Some(Slot::Ready { job, stored }) = inner.slots.get(key) {
            if now.saturating_duration_since(*stored) < self.max_age {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Hit(job.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        inner.next_token += 1;
        let ticket = Ticket {
            token: inner.next_token,
            epoch: inner.epoch,
        };
        inner
            .slots
            .insert(key.to_owned(), Slot::Loading(ticket.token));
        Lookup::Miss(ticket)
    }

    /// Keeps `job` as the key's value if the read of `ticket` is still the latest word on the key; a missing
    /// hash (`None`) is never kept. Returns whether the value was kept.
    pub(crate) fn fill(&self, key: &str, ticket: Ticket, job: Option<Job>, now: Instant) -> bool {
        let mut inner = self.lock();
        let current = inner.tracking
            && inner.epoch == ticket.epoch
            && matches!(inner.slots.get(key), Some(Slot::Loading(t)) if *t == ticket.token);
        if !current {
            return false;
        }
        let Some(job) = job else {
            inner.slots.remove(key);
            return false;
        };
        if inner.slots.len() > self.capacity {
            let max_age = self.max_age;
            inner.slots.retain(|_, slot| match slot {
                Slot::Loading(_) => true,
                Slot::Ready { stored, .. } => now.saturating_duration_since(*stored) < max_age,
            });
            if inner.slots.len() > self.capacity {
                // Still full of fresh values: start over rather than pay for an order of use on every hit.
                inner.slots.clear();
                inner.epoch += 1;
                return false;
            }
        }
        inner.slots.insert(
            key.to_owned(),
            Slot::Ready {
                job: Box::new(job),
                stored: now,
            },
        );
        true
    }

    /// Forgets the key, and refuses the answer of any read of it in flight.
    pub(crate) fn invalidate(&self, key: &str) {
        self.lock().slots.remove(key);
    }

    /// Forgets everything, and refuses the answer of every read in flight.
    pub(crate) fn flush(&self) {
        let mut inner = self.lock();
        inner.slots.clear();
        inner.epoch += 1;
    }

    /// Turns caching on (Redis confirmed tracking) or off (the connection was lost); both flush.
    pub(crate) fn set_tracking(&self, on: bool) {
        let mut inner = self.lock();
        inner.slots.clear();
        inner.epoch += 1;
        inner.tracking = on;
    }

    pub(crate) fn is_tracking(&self) -> bool {
        self.lock().tracking
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            untracked: self.untracked.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain::{JobId, JobStatus, ProjectId, SandboxState, Tier, UserId};

    use super::*;

    const AGE: Duration = Duration::from_secs(10);

    fn job(status: JobStatus) -> Job {
        let now = Utc::now();
        Job {
            id: JobId::new(),
            project_id: ProjectId::new(),
            user_id: UserId::try_from("user_1").unwrap(),
            tier: Tier::Bootstrapper,
            goal: "a todo app".into(),
            status,
            status_message: None,
            error_message: None,
            debug_id: None,
            attempts: 0,
            sandbox_id: None,
            preview_url: None,
            workspace_path: None,
            build_version: None,
            sandbox_state: SandboxState::None,
            sandbox_state_version: 0,
            paused_at: None,
            resumed_at: None,
            sandbox_expires_at: None,
            last_activity_at: None,
            enqueued_at: None,
            started_at: None,
            completed_at: None,
            created_at: now,
            updated_at: now,
            duration_seconds: None,
        }
    }

    fn tracking() -> TrackedEntries {
        let entries = TrackedEntries::new(100, AGE);
        entries.set_tracking(true);
        entries
    }

    fn miss(entries: &TrackedEntries, key: &str, now: Instant) -> Ticket {
        match entries.lookup(key, now) {
            Lookup::Miss(ticket) => ticket,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    #[test]
    fn nothing_is_cached_until_redis_tracks_the_reads() {
        let entries = TrackedEntries::new(100, AGE);
        assert!(matches!(
            entries.lookup("k", Instant::now()),
            Lookup::Untracked
        ));
        entries.set_tracking(true);
        assert!(matches!(
            entries.lookup("k", Instant::now()),
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn a_filled_value_is_a_hit_until_it_is_invalidated() {
        let entries = tracking();
        let now = Instant::now();
        let ticket = miss(&entries, "k", now);
        assert!(entries.fill("k", ticket, Some(job(JobStatus::Ready)), now));
        assert!(matches!(entries.lookup("k", now), Lookup::Hit(j) if j.status == JobStatus::Ready));
        entries.invalidate("k");
        assert!(matches!(entries.lookup("k", now), Lookup::Miss(_)));
        assert_eq!(
            entries.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                untracked: 0
            }
        );
    }

    #[test]
    fn an_invalidation_that_overtakes_the_read_refuses_its_answer() {
        let entries = tracking();
        let now = Instant::now();
        let ticket = miss(&entries, "k", now);
        entries.invalidate("k");
        assert!(!entries.fill("k", ticket, Some(job(JobStatus::Code)), now));
        assert!(matches!(entries.lookup("k", now), Lookup::Miss(_)));
    }

    #[test]
    fn a_flush_or_a_lost_connection_refuses_every_read_in_flight() {
        let entries = tracking();
        let now = Instant::now();
        let before_flush = miss(&entries, "a", now);
        entries.flush();
        assert!(!entries.fill("a", before_flush, Some(job(JobStatus::Ready)), now));

        let before_reconnect = miss(&entries, "b", now);
        entries.set_tracking(false);
        entries.set_tracking(true);
        assert!(!entries.fill("b", before_reconnect, Some(job(JobStatus::Ready)), now));
    }

    #[test]
    fn of_two_reads_in_flight_only_the_later_is_kept() {
        let entries = tracking();
        let now = Instant::now();
        let first = miss(&entries, "k", now);
        let second = miss(&entries, "k", now);
        assert!(!entries.fill("k", first, Some(job(JobStatus::Code)), now));
        assert!(entries.fill("k", second, Some(job(JobStatus::Ready)), now));
    }

    #[test]
    fn a_missing_hash_is_not_remembered() {
        let entries = tracking();
        let now = Instant::now();
        let ticket = miss(&entries, "k", now);
        assert!(!entries.fill("k", ticket, None, now));
        assert!(matches!(entries.lookup("k", now), Lookup::Miss(_)));
    }

    #[test]
    fn a_value_older_than_the_maximum_age_is_read_again() {
        let entries = tracking();
        let then = Instant::now();
        let ticket = miss(&entries, "k", then);
        assert!(entries.fill("k", ticket, Some(job(JobStatus::Ready)), then));
        assert!(matches!(entries.lookup("k", then + AGE), Lookup::Miss(_)));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let entries = TrackedEntries::new(3, AGE);
        entries.set_tracking(true);
        let now = Instant::now();
        for i in 0..50 {
            let key = format!("k{i}");
            let ticket = miss(&entries, &key, now);
            entries.fill(&key, ticket, Some(job(JobStatus::Ready)), now);
            assert!(entries.lock().slots.len() <= 4, "at {i}");
        }
    }
}
