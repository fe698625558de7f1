//! `GET /api/generation/{job_id}/events`: the job's transitions as Server-Sent Events.
//!
//! The subscription is made before the current state is read, so a transition published in between is
//! delivered (possibly after a snapshot that already shows it) rather than lost; stages published before
//! the snapshot's, still in the subscription's buffer, are dropped so the stream never goes back. The first
//! event is the current state; the stream closes after a ready or failed event, when the client goes away
//! (the stream is dropped with the connection) and when the server shuts down.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONNECTION};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{future, stream, StreamExt};

use domain::{Job, JobEvent};

use crate::auth::AuthUser;
use crate::error::{ApiError, JobIdPath};
use crate::routes::load_owned_job;
use crate::AppState;

/// The job's current state as an event (the stream's first).
pub fn snapshot_event(job: &Job) -> JobEvent {
    JobEvent {
        job_id: job.id,
        status: job.status,
        message: job.status_message.clone().unwrap_or_default(),
        preview_url: job.preview_url.clone(),
        timestamp: job.updated_at,
    }
}

/// Streams the job's events.
#[utoipa::path(get, path = "/api/generation/{job_id}/events", tag = "generation",
    params(("job_id" = String, Path, description = "The job's UUID")),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "`data: {type, job_id, status, stage, stage_label, message, timestamp}` per transition"),
        (status = 404, description = "Job not found"),
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    // Subscribe first, then read: see the module doc.
    let live = state.live.subscribe(id).await?;
    let job = load_owned_job(&state, &user.user_id, id).await?;
    let first = snapshot_event(&job);
    let finished = first.is_final();

    // Events already behind the snapshot come first in the buffer, if at all: drop that leading run only.
    let shown = first.status;
    let live = live.skip_while(move |e| future::ready(e.status.precedes_in_build(shown)));
    // Ends right after a final event, without waiting for another one to arrive.
    let rest = stream::unfold((live, finished), |(mut live, done)| async move {
        if done {
            return None;
        }
        let event = live.next().await?;
        let done = event.is_final();
        Some((event, (live, done)))
    })
    .boxed();
    let events = stream::once(future::ready(first))
        .chain(if finished {
            stream::empty().boxed()
        } else {
            rest
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    // Counted open until the response body, and with it this stream, is dropped.
    let open = crate::metrics::OpenStream::new(crate::metrics::EVENTS_STREAM);
    let shown_to_owner = state.clone();
    let events = events.map(move |mut e| {
        let _open = &open;
        e.preview_url = shown_to_owner.public_preview(e.job_id, e.preview_url.as_deref());
        Ok::<_, Infallible>(Event::default().data(infra_redis::event_to_json(&e)))
    });

    let sse = Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(state.sse_heartbeat)
            .text("heartbeat"),
    );
    let mut response = sse.into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}
