//! [`CachedLiveStore`]: the live store behind an in-process cache of job hashes, kept coherent by Redis
//! client-side tracking, for the status route.
//!
//! The front end polls the status of every open build every few seconds and a READY job's hash does not
//! change between polls, so most reads can be answered from memory. Redis tracks the keys one dedicated RESP3
//! connection reads and pushes an invalidation when any client changes one; the tracker task applies them.
//! Nothing is cached while tracking is not confirmed (at start, after any connection error or reconnect),
//! and [`TrackedEntries`] refuses a read's answer when an invalidation overtook it.
//!
//! Only the status route should read through this. An event stream reads the state once after subscribing
//! and must see every transition published before that moment; a cached value whose invalidation is still
//! in flight could be older, so streams and use cases use [`CachedLiveStore::direct_reads`]: reads straight
//! from Redis, writes that still drop this process's cached copy at once (a cancel answered, then a status
//! read, must show the cancel).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::ports::{EventStream, LiveJobStore, StoreError};
use domain::{Job, JobEvent, JobId};
use fred::interfaces::{ClientInterface, TrackingInterface};
use fred::prelude::{Client, ClientLike, EventInterface};
use fred::types::RespVersion;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::store::{read_job, RedisLiveStore};
use super::tracked_entries::{CacheStats, Lookup, TrackedEntries};
use crate::config::builder_like;
use crate::error::store_err;

/// Jobs held at most: about a kilobyte each.
const CAPACITY: usize = 20_000;
/// The longest a value is served without reading Redis again. Tracking makes a change visible at once; this
/// bounds staleness where it cannot (a connection that died without an error, a flush of the whole database,
/// whose invalidation carries no keys and is dropped by the client).
const MAX_AGE: Duration = Duration::from_secs(10);
/// Pause between attempts to turn tracking on while Redis refuses or is away.
const RETRY: Duration = Duration::from_millis(200);

/// See the module documentation. Cheap to clone; clones share the cache and its connection.
#[derive(Clone)]
pub struct CachedLiveStore {
    store: RedisLiveStore,
    /// `false` in the [`Self::direct_reads`] view.
    cached_reads: bool,
    reader: Client,
    entries: Arc<TrackedEntries>,
    _tracker: Arc<Tracker>,
}

impl std::fmt::Debug for CachedLiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedLiveStore")
            .field("store", &self.store)
            .field("cached_reads", &self.cached_reads)
            .field("tracking", &self.entries.is_tracking())
            .finish()
    }
}

/// Stops the tracker task and closes its connection when the last clone goes.
struct Tracker {
    task: JoinHandle<()>,
    reader: Client,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let reader = self.reader.clone();
            rt.spawn(async move {
                let _ = reader.quit().await;
            });
        }
    }
}

impl CachedLiveStore {
    /// Wraps `store`, opening one more connection with the settings of `client` (in the background: until
    /// it is up and tracking, reads go straight to Redis). Must be called inside a tokio runtime.
    pub fn new(store: RedisLiveStore, client: &Client) -> Result<Self, StoreError> {
        let reader = builder_like(client)
            .with_config(|config| config.version = RespVersion::RESP3)
            .build()
            .map_err(store_err)?;
        let entries = Arc::new(TrackedEntries::new(CAPACITY, MAX_AGE));
        let task = tokio::spawn(track(reader.clone(), entries.clone()));
        Ok(Self {
            store,
            cached_reads: true,
            reader: reader.clone(),
            entries,
            _tracker: Arc::new(Tracker { task, reader }),
        })
    }

    /// This store with reads going straight to Redis; its writes still drop the cached copy at once.
    pub fn direct_reads(&self) -> Self {
        Self {
            cached_reads: false,
            ..self.clone()
        }
    }

    /// The Redis client id of the cache's connection (as `CLIENT LIST` shows it), once connected.
    pub fn connection_id(&self) -> Option<i64> {
        self.reader.connection_ids().into_values().next()
    }

    /// Hits and misses since start.
    pub fn stats(&self) -> CacheStats {
        self.entries.stats()
    }

    /// Whether reads are being cached now (Redis confirmed tracking and no connection error came since).
    pub fn is_tracking(&self) -> bool {
        self.entries.is_tracking()
    }
}

/// Turns tracking on, applies invalidations, and turns caching off (flushing it) whenever the connection
/// errs or reconnects, until tracking is confirmed again on the new connection.
async fn track(reader: Client, entries: Arc<TrackedEntries>) {
    // Receivers first, so that no event of the first connection can slip by.
    let mut invalidations = reader.invalidation_rx();
    let mut reconnects = reader.reconnect_rx();
    let mut errors = reader.error_rx();
    if let Err(error) = reader.init().await {
        // The store still answers, from Redis, uncached.
        tracing::warn!(%error, "status cache connection failed; status reads are not cached");
        return;
    }
    'tracking: loop {
        entries.set_tracking(false);
        while let Err(error) = reader
            .start_tracking(None, false, false, false, false)
            .await
        {
            tracing::warn!(%error, "redis client tracking not on; status reads are not cached");
            tokio::time::sleep(RETRY).await;
        }
        entries.set_tracking(true);
        tracing::debug!("redis client tracking on; caching status reads");
        loop {
            tokio::select! {
                message = invalidations.recv() => match message {
                    Ok(invalidation) if invalidation.keys.is_empty() => entries.flush(),
                    Ok(invalidation) => {
                        for key in &invalidation.keys {
                            match key.as_str() {
                                Some(key) => entries.invalidate(key),
                                None => entries.flush(),
                            }
                        }
                    }
                    // Invalidations were dropped: anything held may be stale.
                    Err(RecvError::Lagged(_)) => entries.flush(),
                    Err(RecvError::Closed) => break 'tracking,
                },
                // A new connection tracks nothing, and invalidations sent to the old one are lost.
                event = reconnects.recv() => if closed(event) { break 'tracking } else { break },
                event = errors.recv() => if closed(event) { break 'tracking } else { break },
            }
        }
    }
    // The client is gone: keep answering, uncached.
    entries.set_tracking(false);
}

fn closed<T>(event: Result<T, RecvError>) -> bool {
    matches!(event, Err(RecvError::Closed))
}

#[async_trait]
impl LiveJobStore for CachedLiveStore {
    async fn save(&self, job: &Job) -> Result<(), StoreError> {
        let result = self.store.save(job).await;
        // Our own write is visible to our next read at once, whenever Redis's invalidation arrives.
        self.entries.invalidate(&self.store.keys().job(job.id));
        result
    }

    async fn save_and_publish(&self, job: &Job, event: &JobEvent) -> Result<(), StoreError> {
        let result = self.store.save_and_publish(job, event).await;
        self.entries.invalidate(&self.store.keys().job(job.id));
        result
    }

    #[tracing::instrument(skip_all, fields(job_id = %id), err)]
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        if !self.cached_reads {
            return self.store.get(id).await;
        }
        let key = self.store.keys().job(id);
        match self.entries.lookup(&key, Instant::now()) {
            Lookup::Hit(job) => Ok(Some(*job)),
            Lookup::Untracked => self.store.get(id).await,
            Lookup::Miss(ticket) => {
                let read = read_job(&self.reader, &key, id).await;
                let kept = read.as_ref().ok().cloned().flatten();
                self.entries.fill(&key, ticket, kept, Instant::now());
                read
            }
        }
    }

    async fn subscribe(&self, id: JobId) -> Result<EventStream, StoreError> {
        self.store.subscribe(id).await
    }

    async fn subscribe_failures(&self) -> Result<EventStream, StoreError> {
        self.store.subscribe_failures().await
    }

    async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        let result = self.store.delete(id).await;
        self.entries.invalidate(&self.store.keys().job(id));
        result
    }
}
