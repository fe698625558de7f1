//! Following a job's Server-Sent Events.

use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;

/// The build stages in order, as `status` spells them.
pub const STAGES: [&str; 7] = [
    "queued", "starting", "scaffold", "code", "deps", "checks", "ready",
];

/// Reads the event stream in the background until the server closes it (after a ready or failed event);
/// yields each event's `status`.
pub fn collect_statuses(resp: reqwest::Response) -> JoinHandle<Vec<String>> {
    assert_eq!(resp.status(), 200, "events stream");
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buffer = String::new();
        let mut statuses = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = buffer.find("\n\n") {
                let block: String = buffer.drain(..pos + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        let event: Value =
                            serde_json::from_str(data.trim_start()).expect("event JSON");
                        assert_eq!(event["type"], "build.stage.started", "{event}");
                        statuses.push(event["status"].as_str().expect("status").to_owned());
                    }
                }
            }
        }
        statuses
    })
}

/// Asserts that `seen` (repeats collapsed: the first event is the state, which the next may repeat) is the
/// tail of [`STAGES`] from wherever the stream joined, with no stage skipped, ending with ready.
pub fn assert_stages_in_order(seen: &[String]) {
    let mut distinct: Vec<&str> = seen.iter().map(String::as_str).collect();
    distinct.dedup();
    let first = distinct.first().expect("at least one event");
    let start = STAGES
        .iter()
        .position(|s| s == first)
        .unwrap_or_else(|| panic!("unexpected first event {first:?} in {seen:?}"));
    assert_eq!(distinct, STAGES[start..], "stages out of order: {seen:?}");
}
