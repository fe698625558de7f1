//! `/api/jobs/{id}/logs` and `/logs/stream`, read exactly as the front end's `useBuildLogs` reads them.

use std::time::Duration;

use chrono::Utc;
use fred::prelude::KeysInterface;
use futures::StreamExt;
use serde_json::Value;

use domain::log::{LogSource, NewLogLine};
use domain::ports::TransitionUpdate;
use domain::usecases::logs::finish_log;
use domain::{JobId, JobStatus};

use crate::helpers::{error_detail, token, TestApp};
use crate::support::advance;

const ALICE: &str = "user_alice";
const WAIT: Duration = Duration::from_secs(10);

/// The front end's SSE parser (`hooks/useBuildLogs.ts`): the body split into blocks on a blank line, the
/// last partial block kept; in a block, the last `event:` and the last `data:` line win (`message` when
/// there is no `event:`), each trimmed.
struct FrontEnd {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    blocks: std::collections::VecDeque<(String, String)>,
}

impl FrontEnd {
    fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        Self {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
            blocks: Default::default(),
        }
    }

    /// The next `(event, data)`, or `None` once the server closed the stream.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(block) = self.blocks.pop_front() {
                return Some(block);
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an SSE chunk in time")?
                .expect("chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            let mut parts: Vec<String> = self.buffer.split("\n\n").map(str::to_owned).collect();
            self.buffer = parts.pop().unwrap_or_default();
            for block in parts {
                if block.trim().is_empty() {
                    continue;
                }
                let mut event = "message".to_owned();
                let mut data = String::new();
                for line in block.split('\n') {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = v.trim().to_owned();
                    }
                }
                self.blocks.push_back((event, data));
            }
        }
    }

    /// The `log` lines' texts up to `done` (heartbeats ignored), and done's status.
    async fn until_done(&mut self) -> (Vec<Value>, String) {
        let mut lines = Vec::new();
        while let Some((event, data)) = self.next().await {
            match event.as_str() {
                "heartbeat" => {}
                "log" => lines.push(serde_json::from_str::<Value>(&data).expect("log JSON")),
                "done" => {
                    let done: Value = serde_json::from_str(&data).expect("done JSON");
                    assert!(self.next().await.is_none(), "nothing after done");
                    return (lines, done["status"].as_str().expect("status").to_owned());
                }
                other => panic!("unexpected event {other}"),
            }
        }
        panic!("the stream ended without done");
    }
}

fn texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["text"].as_str().expect("text").to_owned())
        .collect()
}

async fn append(app: &TestApp, id: JobId, range: std::ops::Range<usize>) {
    let lines = range
        .map(|n| NewLogLine {
            ts: Utc::now(),
            source: LogSource::Stdout,
            text: format!("line {n}"),
            phase: "deps".into(),
        })
        .collect();
    app.state.logs.append(id, lines).await.expect("append");
}

async fn page(app: &TestApp, id: JobId, query: &str) -> Value {
    let resp = app.get(&format!("/api/jobs/{id}/logs{query}"), ALICE).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn stream(app: &TestApp, id: JobId, query: &str, last_event_id: Option<&str>) -> FrontEnd {
    let mut req = app
        .client
        .get(app.url(&format!("/api/jobs/{id}/logs/stream{query}")))
        .bearer_auth(token(ALICE));
    if let Some(last) = last_event_id {
        req = req.header("Last-Event-ID", last);
    }
    FrontEnd::new(req.send().await.unwrap())
}

async fn fail(app: &TestApp, id: JobId) {
    advance(app, id, JobStatus::Failed, TransitionUpdate::default()).await;
    finish_log(
        app.state.logs.as_ref(),
        app.state.log_archive.as_ref(),
        id,
        "failed",
    )
    .await
    .expect("archived");
}

#[tokio::test]
async fn history_pages_oldest_first_by_line_id_for_the_owner_only() {
    let app = crate::helpers::spawn_app().await;
    let id = app.start_job(ALICE).await;
    append(&app, id, 0..250).await;

    let first = page(&app, id, "?limit=100").await;
    assert_eq!(first["has_more"], Value::Bool(true));
    let lines = first["lines"].as_array().unwrap();
    assert_eq!(texts(lines).first().unwrap(), "line 150");
    assert_eq!(texts(lines).last().unwrap(), "line 249");
    assert_eq!(first["oldest_id"], lines[0]["id"]);
    for line in lines {
        assert_eq!(line["source"], "stdout");
        assert_eq!(line["phase"], "deps");
        assert!(line["ts"].is_string());
    }
    let before = first["oldest_id"].as_str().unwrap();
    let second = page(&app, id, &format!("?limit=100&before_id={before}")).await;
    assert_eq!(texts(second["lines"].as_array().unwrap())[0], "line 50");
    let before = second["oldest_id"].as_str().unwrap();
    let third = page(&app, id, &format!("?before_id={before}")).await;
    assert_eq!(third["lines"].as_array().unwrap().len(), 50);
    assert_eq!(third["has_more"], Value::Bool(false));

    let empty = app.start_job(ALICE).await;
    let none = page(&app, empty, "").await;
    assert_eq!(
        none,
        serde_json::json!({"lines": [], "has_more": false, "oldest_id": null})
    );

    let resp = app.get(&format!("/api/jobs/{id}/logs"), "user_bob").await;
    assert_eq!(error_detail(resp, 404).await, Value::from("Job not found"));
    let resp = app
        .get(&format!("/api/jobs/{id}/logs/stream"), "user_bob")
        .await;
    assert_eq!(error_detail(resp, 404).await, Value::from("Job not found"));
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?before_id=nope"] {
        let resp = app.get(&format!("/api/jobs/{id}/logs{bad}"), ALICE).await;
        let detail = error_detail(resp, 422).await;
        assert!(detail.is_string(), "{bad}: {detail}");
    }
}

#[tokio::test]
async fn a_late_joiner_pages_history_then_streams_with_no_gap_and_no_duplicate() {
    let app = crate::helpers::spawn_app().await;
    let id = app.start_job(ALICE).await;
    append(&app, id, 0..50).await;

    // The newest page, then the stream from just after its newest line.
    let history = page(&app, id, "?limit=100").await;
    let seen = history["lines"].as_array().unwrap().clone();
    let newest = seen.last().unwrap()["id"].as_str().unwrap().to_owned();
    let mut live = stream(&app, id, &format!("?after_id={newest}"), None).await;

    // Lines keep coming while the client connects and reads, then the build ends.
    let writer = {
        let state = app.state.clone();
        tokio::spawn(async move {
            for n in 50..80 {
                let line = NewLogLine {
                    ts: Utc::now(),
                    source: LogSource::Stderr,
                    text: format!("line {n}"),
                    phase: "checks".into(),
                };
                state.logs.append(id, vec![line]).await.expect("append");
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    advance(&app, id, JobStatus::Failed, TransitionUpdate::default()).await;
    finish_log(
        app.state.logs.as_ref(),
        app.state.log_archive.as_ref(),
        id,
        "failed",
    )
    .await
    .unwrap();

    let (streamed, status) = live.until_done().await;
    assert_eq!(status, "failed");
    let mut all = texts(&seen);
    all.extend(texts(&streamed));
    let expected: Vec<String> = (0..80).map(|n| format!("line {n}")).collect();
    assert_eq!(all, expected, "no gap, no duplicate");
    assert!(streamed.iter().all(|l| l["source"] == "stderr"));

    // The stream and the archive hold the same lines.
    let archived = app.state.log_archive.read(id).await.unwrap().unwrap();
    assert_eq!(
        archived
            .lines
            .iter()
            .map(|l| l.text.clone())
            .collect::<Vec<_>>(),
        expected
    );
}

#[tokio::test]
async fn a_stream_without_a_cursor_shows_only_new_lines_and_ends_with_the_job() {
    let app = crate::helpers::spawn_app().await;
    let id = app.start_job(ALICE).await;
    append(&app, id, 0..5).await;
    let mut live = stream(&app, id, "", None).await;
    // The stream is following once its response is here: what is appended now is new.
    append(&app, id, 5..7).await;
    fail(&app, id).await;
    let (lines, status) = live.until_done().await;
    assert_eq!(texts(&lines), ["line 5", "line 6"]);
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn after_the_live_log_is_gone_history_and_stream_read_the_archive() {
    let app = crate::helpers::spawn_app().await;
    let id = app.start_job(ALICE).await;
    append(&app, id, 0..120).await;
    fail(&app, id).await;
    let before = page(&app, id, "?limit=100").await;

    // Redis loses the log (TTL, cap, a flush): Postgres still has it.
    let key = infra_redis::Keys::new(app.prefix.clone()).job_logs(id);
    let _: () = app.redis.del(key).await.unwrap();
    assert!(!app.state.logs.exists(id).await.unwrap());

    let after = page(&app, id, "?limit=100").await;
    assert_eq!(after, before, "the same page, ids included");
    let older = page(
        &app,
        id,
        &format!("?before_id={}", after["oldest_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(texts(older["lines"].as_array().unwrap()).len(), 20);
    assert_eq!(older["has_more"], Value::Bool(false));

    // A reconnecting EventSource resumes after its last line, from the archive.
    let resume_after = after["lines"][89]["id"].as_str().unwrap().to_owned();
    let (lines, status) = stream(&app, id, "", Some(&resume_after))
        .await
        .until_done()
        .await;
    assert_eq!(
        texts(&lines),
        (110..120).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );
    assert_eq!(status, "failed");
    // Without a cursor, a finished job's stream is only its end.
    let (lines, status) = stream(&app, id, "", None).await.until_done().await;
    assert!(lines.is_empty());
    assert_eq!(status, "failed");
}
