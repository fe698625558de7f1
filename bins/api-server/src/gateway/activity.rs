//! What the gateway sees of a preview's visitors, coalesced in memory and written every few seconds (one
//! write per busy preview per interval, never one per request): the `last_activity_at` the reconciler's
//! idle pause reads, and the build's seconds with a visitor (a busy interval counts whole). It also holds each preview's proxied WebSockets, so that a sandbox put to sleep has
//! its sockets closed (the browser then sees the socket drop, as it would if the app stopped).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use domain::ports::JobRepository;
use domain::{JobId, SandboxState};

/// Activity noted since the last write, and the open sockets by job.
#[derive(Debug, Default, Clone)]
pub struct ActivityBook(Arc<Mutex<Book>>);

#[derive(Debug, Default)]
struct Book {
    touched: HashSet<JobId>,
    sockets: HashMap<JobId, Sockets>,
}

#[derive(Debug)]
struct Sockets {
    close: CancellationToken,
    open: usize,
}

/// Held by one proxied WebSocket: `closed()` resolves when its sandbox goes to sleep.
pub struct SocketGuard {
    book: ActivityBook,
    job: JobId,
    close: CancellationToken,
}

impl SocketGuard {
    pub async fn closed(&self) {
        self.close.cancelled().await;
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let mut book = self.book.lock();
        if let Some(group) = book.sockets.get_mut(&self.job) {
            group.open = group.open.saturating_sub(1);
            if group.open == 0 {
                book.sockets.remove(&self.job);
            }
        }
        super::metrics::socket_closed();
    }
}

impl ActivityBook {
    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic elsewhere leaves the sets consistent; keep going.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes activity on `job`'s preview now.
    pub fn note(&self, job: JobId) {
        let mut book = self.lock();
        if !book.touched.contains(&job) {
            book.touched.insert(job);
        }
    }

    /// Registers a proxied WebSocket of `job`.
    pub fn open_socket(&self, job: JobId) -> SocketGuard {
        let mut book = self.lock();
        let group = book.sockets.entry(job).or_insert_with(|| Sockets {
            close: CancellationToken::new(),
            open: 0,
        });
        group.open += 1;
        super::metrics::socket_opened();
        SocketGuard {
            book: self.clone(),
            job,
            close: group.close.clone(),
        }
    }

    /// Writes the activity noted since the last call, then closes the sockets of previews whose sandbox
    /// is no longer running. `every` is the interval, counted as visited time for each busy preview.
    pub async fn flush(&self, repo: &dyn JobRepository, every: Duration) {
        let (touched, with_sockets): (Vec<JobId>, Vec<JobId>) = {
            let mut book = self.lock();
            let touched = std::mem::take(&mut book.touched).into_iter().collect();
            (touched, book.sockets.keys().copied().collect())
        };
        let now = Utc::now();
        for job in &touched {
            if let Err(error) = repo.record_visit(*job, now, every.as_secs_f64()).await {
                tracing::warn!(job_id = %job, error = %error, "preview activity not written");
            }
        }
        for job in with_sockets {
            match repo.get_job(job).await {
                Ok(Some(row)) if row.sandbox_state == SandboxState::Running => {}
                Ok(_) => self.close_sockets(job),
                Err(error) => {
                    tracing::warn!(job_id = %job, error = %error, "sandbox state not read; sockets kept");
                }
            }
        }
    }

    /// Closes every proxied socket of `job`.
    pub fn close_sockets(&self, job: JobId) {
        if let Some(group) = self.lock().sockets.remove(&job) {
            tracing::info!(job_id = %job, sockets = group.open, "sandbox asleep; closing its sockets");
            group.close.cancel();
        }
    }

    /// Writes activity every `every` until `stop`.
    pub async fn run(self, repo: Arc<dyn JobRepository>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.flush(repo.as_ref(), every).await,
            }
        }
        // What was seen since the last tick still counts.
        self.flush(repo.as_ref(), every).await;
    }
}

#[cfg(test)]
mod tests {
    use domain::ports::repository::MockJobRepository;
    use mockall::predicate::eq;

    use super::*;

    #[tokio::test]
    async fn many_requests_are_one_write_per_interval() {
        let book = ActivityBook::default();
        let job = JobId::new();
        for _ in 0..1000 {
            book.note(job);
        }
        let mut repo = MockJobRepository::new();
        repo.expect_record_visit()
            .with(eq(job), mockall::predicate::always(), eq(3.0))
            .times(1)
            .returning(|_, _, _| Ok(()));
        book.flush(&repo, Duration::from_secs(3)).await;
        // Nothing new: nothing written.
        book.flush(&repo, Duration::from_secs(3)).await;
    }

    #[tokio::test]
    async fn the_sockets_of_a_sleeping_sandbox_are_closed() {
        let book = ActivityBook::default();
        let job = JobId::new();
        let socket = book.open_socket(job);
        let mut repo = MockJobRepository::new();
        repo.expect_get_job().returning(|id| {
            let mut job = domain::usecases::reconcile::fixtures::ready_job(SandboxState::Paused);
            job.id = id;
            Ok(Some(job))
        });
        book.flush(&repo, Duration::from_secs(3)).await;
        tokio::time::timeout(Duration::from_secs(1), socket.closed())
            .await
            .expect("closed");
    }
}
