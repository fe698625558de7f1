//! `/api/jobs/{job_id}/logs` and `/logs/stream`: a build's log, as the front end's log panel reads it.
//!
//! Lines come from the live log (Redis) while it holds them, and from the archive (Postgres) once the job
//! is finished and Redis has let them go. Every line carries its id, the same in both, so history pages
//! (`before_id`) and the stream resumes (`after_id`, or `Last-Event-ID` as a browser's EventSource sends
//! it) with no gap and no duplicate.
//!
//! The stream: `event: log` per line (`id:` its id, `data: {id, ts, source, text, phase}`),
//! `event: heartbeat` every 20 s, and `event: done` with `{status}` after the last line once the job is
//! finished. Without a cursor it starts at the log's end (live lines only, as the Python API did).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONNECTION};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use domain::log::{LogEntry, LogLine, LogLineId};
use domain::ports::{LogError, LogWakeups};
use domain::JobId;

use crate::auth::AuthUser;
use crate::error::{ApiError, JobIdPath};
use crate::routes::load_owned_job;
use crate::AppState;

/// The stream's heartbeat (under the 60 s idle timeout of common load balancers).
pub const HEARTBEAT: Duration = Duration::from_secs(20);
/// How often a stream looks at the job's status (a job finished without its log's end: a worker lost).
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How long a finished job's live log may go without its end before the stream ends anyway.
const END_GRACE: Duration = Duration::from_secs(5);
/// Entries read per round trip.
const READ_PAGE: usize = 500;
/// Default and largest page of history.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

/// One line as the front end's `LogLine` reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLineResponse {
    /// The line's id (`<ms>-<seq>`): the cursor of `before_id` and `after_id`.
    pub id: String,
    /// When it was printed (RFC 3339).
    pub ts: String,
    /// `stdout`, `stderr` or `system`.
    pub source: String,
    pub text: String,
    /// The build stage it was printed in.
    pub phase: String,
}

impl From<&LogLine> for LogLineResponse {
    fn from(l: &LogLine) -> Self {
        Self {
            id: l.id.to_string(),
            ts: crate::routes::wire::iso(l.ts),
            source: l.source.as_str().to_owned(),
            text: l.text.clone(),
            phase: l.phase.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogPageResponse {
    /// Oldest first.
    pub lines: Vec<LogLineResponse>,
    /// Whether older lines exist.
    pub has_more: bool,
    /// The first line's id (the next page's `before_id`); null when the page is empty.
    pub oldest_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// 1 to 500; 100 when absent.
    pub limit: Option<String>,
    /// Only lines older than this id.
    pub before_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Start after this line (the `Last-Event-ID` header says the same and wins).
    pub after_id: Option<String>,
}

fn parse_id(name: &str, raw: &str) -> Result<LogLineId, ApiError> {
    LogLineId::parse(raw.trim())
        .ok_or_else(|| ApiError::Validation(format!("{name} is not a log line id")))
}

fn log_err(e: LogError) -> ApiError {
    ApiError::Unavailable(e.into())
}

/// A page of the job's log, oldest first.
#[utoipa::path(get, path = "/api/jobs/{job_id}/logs", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's UUID"), HistoryQuery),
    responses(
        (status = 200, body = LogPageResponse),
        (status = 404, description = "Job not found"),
        (status = 422, description = "limit or before_id is invalid"),
    ),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<LogPageResponse>, ApiError> {
    let limit = match query.limit.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::Validation(format!("limit must be 1 to {MAX_LIMIT}")))?,
    };
    let before = query
        .before_id
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| parse_id("before_id", raw))
        .transpose()?;
    let job = load_owned_job(&state, &user.user_id, id).await?;

    let archived = if job.status.is_terminal() && !state.logs.exists(id).await.map_err(log_err)? {
        state.log_archive.read(id).await.map_err(log_err)?
    } else {
        None
    };
    let (lines, has_more) = match archived {
        Some(archived) => {
            let older: Vec<&LogLine> = archived
                .lines
                .iter()
                .filter(|l| before.is_none_or(|b| l.id < b))
                .collect();
            let start = older.len().saturating_sub(limit);
            let page = older[start..].iter().map(|l| (*l).into()).collect();
            (page, start > 0)
        }
        None => {
            let mut newest_first = state
                .logs
                .read_before(id, before, limit + 1)
                .await
                .map_err(log_err)?;
            let has_more = newest_first.len() > limit;
            newest_first.truncate(limit);
            let page = newest_first
                .iter()
                .rev()
                .map(LogLineResponse::from)
                .collect();
            (page, has_more)
        }
    };
    let lines: Vec<LogLineResponse> = lines;
    Ok(Json(LogPageResponse {
        oldest_id: lines.first().map(|l| l.id.clone()),
        has_more,
        lines,
    }))
}

/// The job's log as Server-Sent Events.
#[utoipa::path(get, path = "/api/jobs/{job_id}/logs/stream", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's UUID"), StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this line")),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "`event: log` `{id, ts, source, text, phase}` per line, `event: heartbeat` every 20 s, `event: done` `{status}` at the end"),
        (status = 404, description = "Job not found"),
        (status = 422, description = "after_id is invalid"),
    ),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    user: AuthUser,
    JobIdPath(id): JobIdPath,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .map(|raw| parse_id("Last-Event-ID", raw))
        .transpose()?;
    let from_query = query
        .after_id
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|raw| parse_id("after_id", raw))
        .transpose()?;
    load_owned_job(&state, &user.user_id, id).await?;
    // Follow first, then read: an append made in between wakes us, so nothing is missed.
    let wake = match state.logs.follow(id).await {
        Ok(wake) => Some(wake),
        Err(error) => {
            tracing::warn!(job_id = %id, error = %error, "log wake-ups unavailable; polling");
            None
        }
    };
    // Resolved before the answer, so that whatever is appended once the client has it is new to it.
    let start = match from_header.or(from_query) {
        Some(cursor) => Start::After(cursor),
        None => match state.logs.read_before(id, None, 1).await {
            Ok(newest) => Start::End(newest.first().map(|l| l.id)),
            Err(error) => {
                tracing::warn!(job_id = %id, error = %error, "log unreadable");
                Start::End(None)
            }
        },
    };

    let (tx, rx) = mpsc::channel::<Event>(64);
    let open = crate::metrics::OpenStream::new(crate::metrics::LOGS_STREAM);
    let pump_state = state.clone();
    tokio::spawn(async move {
        let _open = open;
        let shutdown = pump_state.shutdown.clone();
        tokio::select! {
            () = pump(&pump_state, id, start, wake, &tx) => {}
            () = shutdown.cancelled() => {}
            () = tx.closed() => {}
        }
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    let mut response = Sse::new(events).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

enum Start {
    /// Only what is appended from now on: after the live log's newest line, if any.
    End(Option<LogLineId>),
    After(LogLineId),
}

fn log_event(line: &LogLine) -> Event {
    let json = serde_json::to_string(&LogLineResponse::from(line)).unwrap_or_default();
    Event::default()
        .event("log")
        .id(line.id.to_string())
        .data(json)
}

fn done_event(status: &str) -> Event {
    Event::default()
        .event("done")
        .data(serde_json::json!({ "status": status }).to_string())
}

/// Sends the log's events until its end (or the client goes, or the store fails for good).
async fn pump(
    state: &AppState,
    id: JobId,
    start: Start,
    mut wake: Option<LogWakeups>,
    tx: &mpsc::Sender<Event>,
) {
    // From the end: of the live log, or of the archive when the live log is gone.
    let (from_end, mut cursor) = match start {
        Start::After(cursor) => (false, Some(cursor)),
        Start::End(newest) => (true, newest),
    };
    let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut status_check = tokio::time::interval(STATUS_EVERY);
    let mut finished_since: Option<Instant> = None;
    loop {
        // Everything new in the live log.
        loop {
            let entries = match state.logs.read_after(id, cursor, READ_PAGE).await {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(job_id = %id, error = %error, "log unreadable");
                    break;
                }
            };
            let full = entries.len() == READ_PAGE;
            for entry in entries {
                match entry {
                    LogEntry::Line(line) => {
                        cursor = Some(line.id);
                        if tx.send(log_event(&line)).await.is_err() {
                            return;
                        }
                    }
                    LogEntry::End { end, .. } => {
                        let _ = tx.send(done_event(&end.status)).await;
                        return;
                    }
                }
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            woke = next_wake(&mut wake) => {
                if !woke {
                    wake = None;
                }
            }
            _ = heartbeat.tick() => {
                if tx.send(Event::default().event("heartbeat").data("{}")).await.is_err() {
                    return;
                }
            }
            _ = status_check.tick() => {
                if let Some(status) = finished(state, id).await {
                    let since = *finished_since.get_or_insert_with(Instant::now);
                    let live = state.logs.exists(id).await.unwrap_or(true);
                    if !live {
                        let skip_all = from_end && cursor.is_none();
                        from_archive(state, id, cursor, skip_all, &status, tx).await;
                        return;
                    }
                    if since.elapsed() >= END_GRACE {
                        // Finished, but its log was never ended (its worker was lost): what is there is all.
                        let _ = tx.send(done_event(&status)).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Waits for the next wake-up: `false` when the wake-ups ended. Without wake-ups, a short poll.
async fn next_wake(wake: &mut Option<LogWakeups>) -> bool {
    match wake {
        Some(w) => w.next().await.is_some(),
        None => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            false
        }
    }
}

/// The job's status when it is finished.
async fn finished(state: &AppState, id: JobId) -> Option<String> {
    let job = match state.live.get(id).await {
        Ok(Some(job)) => job,
        _ => state.repo.get_job(id).await.ok().flatten()?,
    };
    job.status
        .is_terminal()
        .then(|| job.status.as_str().to_owned())
}

/// The rest of a finished job's log from the archive, then its end.
async fn from_archive(
    state: &AppState,
    id: JobId,
    cursor: Option<LogLineId>,
    skip_all: bool,
    status: &str,
    tx: &mpsc::Sender<Event>,
) {
    let archived = match state.log_archive.read(id).await {
        Ok(archived) => archived,
        Err(error) => {
            tracing::warn!(job_id = %id, error = %error, "log archive unreadable");
            None
        }
    };
    let end = match archived {
        Some(archived) => {
            for line in archived
                .lines
                .iter()
                .filter(|_| !skip_all)
                .filter(|l| cursor.is_none_or(|c| l.id > c))
            {
                if tx.send(log_event(line)).await.is_err() {
                    return;
                }
            }
            archived.end.status
        }
        None => status.to_owned(),
    };
    let _ = tx.send(done_event(&end)).await;
}
