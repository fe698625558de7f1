//! Scenario 4b: open one build-log stream per job (200), then write one line per job the way the pipeline
//! does (its log writer, which appends to the job's Redis stream and wakes the followers) and measure, per
//! stream, the delay from the moment the line was handed to the writer (its text) to its SSE delivery.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::ports::LiveLog;
use domain::usecases::logs::LogWriter;
use domain::JobId;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::stats::{micros, Percentiles};

/// How many log streams are followed at once.
pub const STREAMS: usize = 200;
/// Streams opened at once while connecting.
const CONNECTING: usize = 50;
/// Every stream must have connected, and every line arrived, within this.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
pub struct LogStreamResult {
    pub streams: usize,
    pub delivered: usize,
    pub missing: usize,
    pub latency: Percentiles,
}

pub async fn run(
    base: &str,
    token: &str,
    logs: Arc<dyn LiveLog>,
    jobs: &[JobId],
) -> anyhow::Result<LogStreamResult> {
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
        let url = format!("{base}/api/jobs/{id}/logs/stream");
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
    // A stream's answer arrives once it follows the log: every line written below reaches it.
    let all_open = async {
        for _ in 0..jobs.len() {
            if opened_rx.recv().await.is_none() {
                return false;
            }
        }
        true
    };
    anyhow::ensure!(
        tokio::time::timeout(DEADLINE, all_open)
            .await
            .unwrap_or(false),
        "not every log stream opened within {DEADLINE:?}"
    );
    let writers: Vec<LogWriter> = jobs
        .iter()
        .map(|&id| LogWriter::start(logs.clone(), id, Vec::new()))
        .collect();
    for writer in &writers {
        let stamp = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        writer.system("deps", &stamp);
    }
    for writer in &writers {
        writer.close().await;
    }

    let mut delays = Vec::with_capacity(jobs.len());
    while let Some(done) = readers.join_next().await {
        if let Some(delay) = done.context("a log reader panicked")? {
            delays.push(delay);
        }
    }
    let delivered = delays.len();
    Ok(LogStreamResult {
        streams: jobs.len(),
        delivered,
        missing: jobs.len() - delivered,
        latency: Percentiles::from_micros(delays),
    })
}

/// Reads one stream: signals `opened` once the answer is here, returns the first line's delay in µs.
async fn read_one(
    client: reqwest::Client,
    url: String,
    auth: String,
    connecting: Arc<Semaphore>,
    opened: tokio::sync::mpsc::Sender<()>,
) -> Option<u64> {
    let permit = connecting.acquire_owned().await.ok()?;
    let response = client
        .get(&url)
        .header("authorization", auth)
        .send()
        .await
        .ok()?;
    drop(permit);
    if !response.status().is_success() {
        return None;
    }
    opened.send(()).await.ok()?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if !frame
                .lines()
                .any(|l| l.trim() == "event: log" || l.trim() == "event:log")
            {
                continue;
            }
            let data = frame.lines().find_map(|line| line.strip_prefix("data:"))?;
            let arrived = Utc::now();
            let line: serde_json::Value = serde_json::from_str(data.trim()).ok()?;
            let sent: DateTime<Utc> = DateTime::parse_from_rfc3339(line.get("text")?.as_str()?)
                .ok()?
                .with_timezone(&Utc);
            return Some(micros((arrived - sent).to_std().unwrap_or(Duration::ZERO)));
        }
    }
    None
}
