//! Scenario 4: open one Server-Sent Events stream per job, then move every job queued → starting the way
//! the pipeline does (Postgres compare-and-set, then the Redis hash plus the event, stamped just before it
//! is published) and measure, per stream, the delay from the event's `timestamp` to its arrival.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::JobId;
use futures::{stream, StreamExt};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::seed::{self, Stores};
use super::stats::{micros, Percentiles};

/// Streams opened at once while connecting (a burst of 1,000 connects would only measure the backlog).
const CONNECTING: usize = 50;
/// How many transitions are published at once.
const PUBLISHING: usize = 4;
/// Every stream must have connected, and every event arrived, within this.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct EventsResult {
    pub streams: usize,
    pub delivered: usize,
    pub missing: usize,
    pub latency: Percentiles,
}

/// Opens a stream on each job, waits until all have their first (snapshot) event, publishes one
/// transition per job and collects the delays.
pub async fn run(
    base: &str,
    token: &str,
    stores: &Stores,
    jobs: &[JobId],
) -> anyhow::Result<EventsResult> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()
        .context("cannot build an HTTP client")?;
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(jobs.len().max(1));
    let mut readers = tokio::task::JoinSet::new();
    for &id in jobs {
        let client = client.clone();
        let url = format!("{base}/api/generation/{id}/events");
        let auth = format!("Bearer {token}");
        let connecting = Arc::clone(&connecting);
        let opened = opened_tx.clone();
        readers.spawn(async move {
            tokio::time::timeout(DEADLINE, read_one(client, url, auth, connecting, opened))
                .await
                .ok()
                .flatten()
        });
    }
    drop(opened_tx);
    // Every stream has its snapshot: subscriptions are live, so the publishes below reach all of them.
    let all_open = async {
        for _ in 0..jobs.len() {
            if opened_rx.recv().await.is_none() {
                return false;
            }
        }
        true
    };
    let all_open = tokio::time::timeout(DEADLINE, all_open)
        .await
        .unwrap_or(false);
    anyhow::ensure!(
        all_open,
        "not every event stream opened within {DEADLINE:?}"
    );

    stream::iter(jobs.iter().copied())
        .map(|id| seed::publish_starting(stores, id))
        .buffer_unordered(PUBLISHING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;

    let mut delays = Vec::with_capacity(jobs.len());
    while let Some(done) = readers.join_next().await {
        if let Some(delay) = done.context("an event reader panicked")? {
            delays.push(delay);
        }
    }
    let delivered = delays.len();
    Ok(EventsResult {
        streams: jobs.len(),
        delivered,
        missing: jobs.len() - delivered,
        latency: Percentiles::from_micros(delays),
    })
}

/// Reads one stream: signals `opened` at the first event, returns the delay of the second in µs.
async fn read_one(
    client: reqwest::Client,
    url: String,
    auth: String,
    connecting: Arc<Semaphore>,
    opened: tokio::sync::mpsc::Sender<()>,
) -> Option<u64> {
    let mut permit = Some(connecting.acquire_owned().await.ok()?);
    let response = client
        .get(&url)
        .header("authorization", auth)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut seen = 0;
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        // An event ends with a blank line.
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|line| line.strip_prefix("data:")) else {
                continue;
            };
            seen += 1;
            if seen == 1 {
                // Connected: let the next stream connect.
                drop(permit.take());
                opened.send(()).await.ok()?;
                continue;
            }
            let arrived = Utc::now();
            let sent = event_time(data.trim())?;
            let delay = (arrived - sent).to_std().unwrap_or(Duration::ZERO);
            return Some(micros(delay));
        }
    }
    None
}

fn event_time(data: &str) -> Option<DateTime<Utc>> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let stamp = value.get("timestamp")?.as_str()?;
    DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
