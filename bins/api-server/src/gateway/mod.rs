//! The preview gateway: a reverse proxy on its own listener (`PREVIEW_ADDR`) that serves every READY
//! job's preview at `{label}.{PREVIEW_DOMAIN}`, wakes a paused sandbox when a person opens it, and tells
//! the reconciler when a preview is in use so that an idle one can sleep.
//!
//! One request, in order:
//! 1. `Host` → job ([`links`]); in `signed` mode the owner's token or cookie ([`access`]); else 404.
//! 2. The job's record (the coherent status cache, Postgres behind it) and what the request is
//!    ([`domain::gateway::wake`]) decide: proxy, wake then proxy, wait for a wake in flight, or answer
//!    ([`pages`]).
//! 3. Proxy ([`proxy`]), noting activity ([`activity`]) when the request counts as such.
//!
//! Wakes go through the API's own resume (one single flight per job, the sandbox-state compare-and-set
//! across processes), so the record never says paused while the gateway serves.

pub mod access;
pub mod activity;
pub mod config;
pub mod frames;
pub mod links;
pub mod metrics;
pub mod pages;
pub mod proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use axum::Router;
use chrono::Utc;
use tracing::Instrument;

use domain::gateway::{decide, Decision, RequestKind};
use domain::ports::LiveJobStore;
use domain::usecases::resume::{ResumeError, Waking};
use domain::{Job, JobId, SandboxState};

use crate::serve::PeerAddr;
use crate::AppState;

pub use activity::ActivityBook;
pub use config::{Access, ConfigError, GatewayConfig};
pub use links::PreviewLinks;

use access::Admission;
use proxy::{Target, Upstream};

/// How often a request waiting for a wake someone else started reads the record.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// The gateway's shared state.
pub struct Gateway {
    state: AppState,
    config: GatewayConfig,
    upstream: Upstream,
    activity: ActivityBook,
}

impl Gateway {
    pub fn new(state: AppState, config: GatewayConfig) -> Result<Arc<Self>, reqwest::Error> {
        Ok(Arc::new(Self {
            state,
            config,
            upstream: Upstream::new()?,
            activity: ActivityBook::default(),
        }))
    }

    pub fn activity(&self) -> &ActivityBook {
        &self.activity
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }
}

/// Every request to a preview host.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Some(job_id) = gw.config.links.job_of_host(&host) else {
        metrics::request("not_found");
        return pages::not_found();
    };
    if gw.config.links.access() == Access::Signed {
        match access::admit(&gw.config.links, job_id, &req, Utc::now()) {
            Admission::Granted => {}
            Admission::Exchange(redirect) => return redirect,
            Admission::Denied => {
                metrics::request("not_found");
                return pages::not_found();
            }
        }
    }
    let span = tracing::info_span!("preview", job_id = %job_id);
    gw.serve(job_id, host, req).instrument(span).await
}

impl Gateway {
    async fn serve(&self, job_id: JobId, host: String, req: Request) -> Response {
        let headers = req.headers();
        let fetch_mode = headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok());
        let browser = fetch_mode.is_some();
        let kind = RequestKind::classify(
            fetch_mode,
            headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()),
            proxy::is_websocket(headers),
        );
        let job = match self.job(job_id).await {
            Some(job) => job,
            None => {
                metrics::request("not_found");
                return pages::not_found();
            }
        };
        match decide(kind, job.status, job.sandbox_state) {
            Decision::Proxy => self.proxy(&job, kind, &host, req, "proxied").await,
            Decision::Wake => self.wake_then_proxy(job, kind, browser, &host, req).await,
            Decision::WaitForWake => self.wait_then_proxy(job_id, kind, &host, req).await,
            Decision::Asleep => {
                metrics::request("asleep");
                pages::asleep()
            }
            Decision::Gone => {
                metrics::request("gone");
                pages::expired(kind == RequestKind::Navigation)
            }
            Decision::NotFound => {
                metrics::request("not_found");
                pages::not_found()
            }
        }
    }

    /// The job's record: the coherent status cache first (no database read per proxied request), then
    /// Postgres.
    async fn job(&self, id: JobId) -> Option<Job> {
        match self.state.status_reads.get(id).await {
            Ok(Some(job)) => return Some(job),
            Ok(None) => {}
            Err(error) => tracing::debug!(job_id = %id, error = %error, "status cache unavailable"),
        }
        match self.state.repo.get_job(id).await {
            Ok(job) => job,
            Err(error) => {
                tracing::warn!(job_id = %id, error = %error, "job not read");
                None
            }
        }
    }

    async fn proxy(
        &self,
        job: &Job,
        kind: RequestKind,
        host: &str,
        req: Request,
        outcome: &'static str,
    ) -> Response {
        let (Some(base), Some(sandbox)) = (job.preview_url.as_deref(), job.sandbox_id.as_ref())
        else {
            metrics::request("not_found");
            return pages::not_found();
        };
        let credential = match self.state.sandbox.preview_credential(sandbox).await {
            Ok(credential) => credential,
            Err(error) => {
                tracing::warn!(job_id = %job.id, error = %error, "preview credential unavailable");
                metrics::request("upstream_error");
                return pages::bad_gateway();
            }
        };
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        let target = Target {
            base: base.trim_end_matches('/'),
            credential: credential.as_ref(),
            public_host: host,
            public_scheme: self.config.links.scheme(),
            peer,
            strip_cookie: self.config.links.access() == Access::Signed,
        };
        if kind.is_activity() {
            self.activity.note(job.id);
        }
        match self
            .upstream
            .forward(job.id, req, &target, &self.activity)
            .await
        {
            Ok(response) => {
                metrics::request(outcome);
                response
            }
            Err(error) => {
                tracing::info!(job_id = %job.id, error = %error, "the preview did not answer");
                self.after_upstream_error(job.id, kind).await
            }
        }
    }

    /// The sandbox did not answer: it may have been paused or dropped under the request. The record,
    /// read fresh, says what to answer (the request's body is spent, so it is not retried).
    async fn after_upstream_error(&self, id: JobId, kind: RequestKind) -> Response {
        let now = self.state.repo.get_job(id).await.ok().flatten();
        match now.map(|job| decide(kind, job.status, job.sandbox_state)) {
            Some(Decision::Gone) => {
                metrics::request("gone");
                pages::expired(kind == RequestKind::Navigation)
            }
            Some(Decision::Wake | Decision::WaitForWake | Decision::Asleep) => {
                metrics::request("asleep");
                pages::still_waking()
            }
            _ => {
                metrics::request("upstream_error");
                pages::bad_gateway()
            }
        }
    }

    /// Starts (or joins) the wake and proxies once the sandbox runs. A browser navigation waits
    /// `wake_page_after`, then gets the page that retries by itself; anything else waits `wake_wait`.
    async fn wake_then_proxy(
        &self,
        job: Job,
        kind: RequestKind,
        browser: bool,
        host: &str,
        req: Request,
    ) -> Response {
        let within = if browser {
            self.config.wake_page_after
        } else {
            self.config.wake_wait
        };
        let started = Instant::now();
        let result = match self.state.resume.wake(job.id).await {
            Ok(Waking::Running(resumed)) => Ok(resumed),
            Ok(Waking::Flight {
                flight,
                started: ours,
            }) => {
                if ours {
                    // Counted once per wake, from its first request to its end, whoever waits.
                    let watched = flight.clone();
                    tokio::spawn(async move {
                        let outcome = match watched.await {
                            Ok(_) => "woken",
                            Err(ResumeError::Expired { .. }) => "expired",
                            Err(ResumeError::Unreachable { .. }) => "unreachable",
                            Err(_) => "error",
                        };
                        metrics::wake(outcome, started.elapsed());
                    });
                }
                match tokio::time::timeout(within, flight).await {
                    Ok(result) => result,
                    Err(_) => {
                        metrics::request(if browser { "waking_page" } else { "asleep" });
                        return if browser {
                            pages::waking()
                        } else {
                            pages::still_waking()
                        };
                    }
                }
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => match self.job(job.id).await {
                Some(now) if now.sandbox_state == SandboxState::Running => {
                    self.proxy(&now, kind, host, req, "woken").await
                }
                _ => self.proxy_fresh(job.id, kind, host, req).await,
            },
            Err(ResumeError::Expired { .. }) => {
                metrics::request("gone");
                pages::expired(kind == RequestKind::Navigation)
            }
            Err(ResumeError::NotFound | ResumeError::NoSandbox | ResumeError::NotReady(_)) => {
                metrics::request("not_found");
                pages::not_found()
            }
            Err(error) => {
                tracing::warn!(job_id = %job.id, error = %error, "wake failed");
                metrics::request("asleep");
                if browser {
                    pages::waking()
                } else {
                    pages::still_waking()
                }
            }
        }
    }

    /// Proxies with the record read from Postgres (the cache may not have seen the wake yet).
    async fn proxy_fresh(
        &self,
        id: JobId,
        kind: RequestKind,
        host: &str,
        req: Request,
    ) -> Response {
        match self.state.repo.get_job(id).await {
            Ok(Some(job)) if job.sandbox_state == SandboxState::Running => {
                self.proxy(&job, kind, host, req, "woken").await
            }
            _ => {
                metrics::request("asleep");
                pages::still_waking()
            }
        }
    }

    /// A wake is in flight (perhaps in another process): wait for the record to say running, within
    /// `wake_wait`. Waiting never starts a wake.
    async fn wait_then_proxy(
        &self,
        id: JobId,
        kind: RequestKind,
        host: &str,
        req: Request,
    ) -> Response {
        let until = Instant::now() + self.config.wake_wait;
        loop {
            match self.state.repo.get_job(id).await {
                Ok(Some(job)) if job.sandbox_state == SandboxState::Running => {
                    return self.proxy(&job, kind, host, req, "woken").await
                }
                Ok(Some(job)) if job.sandbox_state == SandboxState::Resuming => {}
                Ok(Some(job))
                    if matches!(
                        job.sandbox_state,
                        SandboxState::Expired | SandboxState::Killed
                    ) =>
                {
                    metrics::request("gone");
                    return pages::expired(kind == RequestKind::Navigation);
                }
                Ok(Some(_)) | Err(_) => {
                    metrics::request("asleep");
                    return pages::still_waking();
                }
                Ok(None) => {
                    metrics::request("not_found");
                    return pages::not_found();
                }
            }
            if Instant::now() + WAIT_POLL > until {
                metrics::request("asleep");
                return pages::still_waking();
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}
