//! One subscription per worker to every job's `failed` event, routed to the builds this worker runs.
//!
//! A cancel from the API moves the job to failed and publishes it; the build holding that job stops at
//! once. Following the failures channel costs the process one subscription, instead of a SUBSCRIBE, a read
//! and an UNSUBSCRIBE per build and a copy of every stage event the build itself publishes. The heartbeat's
//! look at the job's row stays the fallback for whatever this misses (Redis down, a reconnect, a lag).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use domain::ports::{EventStream, LiveJobStore};
use domain::JobId;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The first pause before subscribing again after the feed failed or ended; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The builds running in this process, by job.
#[derive(Default)]
pub(crate) struct CancelWatch {
    builds: Mutex<HashMap<JobId, CancellationToken>>,
}

/// Keeps a build registered; dropping it takes the build out.
pub(crate) struct Registration<'a> {
    watch: &'a CancelWatch,
    id: JobId,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.watch.lock().remove(&self.id);
    }
}

impl CancelWatch {
    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        // Every critical section is one insert, remove or lookup: a poisoned map is still consistent.
        self.builds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `build` is cancelled when a `failed` event for `id` arrives, until the registration is dropped.
    pub(crate) fn register(&self, id: JobId, build: CancellationToken) -> Registration<'_> {
        self.lock().insert(id, build);
        Registration { watch: self, id }
    }

    /// Stops the build of `id`, if this process runs it; `true` when it did.
    pub(crate) fn job_failed(&self, id: JobId) -> bool {
        match self.lock().get(&id) {
            Some(build) => {
                build.cancel();
                true
            }
            None => false,
        }
    }

    /// Routes the failures feed to the registered builds until `stop` fires, subscribing again (with
    /// backoff) whenever the feed fails or ends. `first` is the feed the worker opened before leasing, so
    /// that no build starts before the watch is live when Redis is up.
    pub(crate) async fn follow(
        self: Arc<Self>,
        live: Arc<dyn LiveJobStore>,
        first: Option<EventStream>,
        stop: CancellationToken,
    ) {
        let mut feed = first;
        let mut retry = RETRY_MIN;
        loop {
            if let Some(mut failures) = feed.take() {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        event = failures.next() => match event {
                            Some(event) => {
                                if self.job_failed(event.job_id) {
                                    tracing::info!(job_id = %event.job_id, "job failed or cancelled elsewhere; stopping the build");
                                }
                            }
                            None => break,
                        },
                    }
                }
                tracing::debug!("failures feed ended; subscribing again");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
            feed = subscribe(live.as_ref()).await;
            retry = if feed.is_some() {
                RETRY_MIN
            } else {
                (retry * 2).min(RETRY_MAX)
            };
        }
    }
}

/// The failures feed, or `None` (logged) when Redis cannot be reached: cancels are then seen at the heartbeat.
pub(crate) async fn subscribe(live: &dyn LiveJobStore) -> Option<EventStream> {
    match live.subscribe_failures().await {
        Ok(feed) => Some(feed),
        Err(error) => {
            tracing::warn!(error = %error, "could not follow job failures; cancels are seen at the heartbeat");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_stops_the_registered_build_only_while_it_is_registered() {
        let watch = CancelWatch::default();
        let (mine, other) = (JobId::new(), JobId::new());
        let build = CancellationToken::new();
        let registration = watch.register(mine, build.clone());

        assert!(!watch.job_failed(other), "another process's job");
        assert!(!build.is_cancelled());
        assert!(watch.job_failed(mine));
        assert!(build.is_cancelled());

        drop(registration);
        assert!(
            !watch.job_failed(mine),
            "a finished build is no longer routed"
        );
    }
}
