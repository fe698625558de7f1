//! A build's log, followed as the front end follows it: an `npm install` that prints 5,000 lines streams
//! them while it runs, and the stream and the archive hold the same lines in the same order.

use futures::StreamExt;
use serde_json::{json, Value};

use crate::happy_path::is_final;
use crate::harness::{spawn_app, token, Generator, Mode, Options, BUILD_DEADLINE};

const USER: &str = "user_e2e_logs";
const INSTALL_LINES: usize = 5000;

/// An app whose `npm install` (a local dependency, so no registry) runs a postinstall printing 5,000 lines.
fn noisy_app() -> &'static str {
    let files = json!({"files": {
        "package.json": json!({
            "name": "noisy", "version": "1.0.0",
            "scripts": {"postinstall": "node print.js", "start": "node server.js"},
            "dependencies": {"dep": "file:./dep"},
        }).to_string(),
        "dep/package.json": json!({"name": "dep", "version": "1.0.0"}).to_string(),
        ".npmrc": "audit=false\nfund=false\nupdate-notifier=false\n",
        "print.js": format!("for (let i = 0; i < {INSTALL_LINES}; i++) console.log('installing step ' + i);"),
        "server.js": "const p = process.env.PORT || 3000; require('http').createServer((q, r) => r.end('<h1>noisy</h1>')).listen(p, () => console.log('listening on ' + p));",
    }});
    Box::leak(format!("cat >/dev/null\ncat <<'JSON'\n{files}\nJSON\n").into_boxed_str())
}

/// The front end's parser: blocks split on a blank line, the last `event:` and `data:` of a block win.
fn blocks(buffer: &mut String) -> Vec<(String, String)> {
    let mut parts: Vec<String> = buffer.split("\n\n").map(str::to_owned).collect();
    *buffer = parts.pop().unwrap_or_default();
    parts
        .into_iter()
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = "message".to_owned();
            let mut data = String::new();
            for line in block.split('\n') {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim().to_owned();
                }
            }
            (event, data)
        })
        .collect()
}

pub async fn a_noisy_install_streams_live_and_the_archive_holds_the_same_lines(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(noisy_app()),
            ..Options::default()
        },
    )
    .await;
    let job = app.start_build(USER, "An app with a noisy install").await;
    // From the log's first line (without a cursor a stream shows only what comes next, and the worker
    // may have started already).
    let resp = app
        .client
        .get(app.url(&format!("/api/jobs/{job}/logs/stream?after_id=0-0")))
        .bearer_auth(token(USER))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buffer = String::new();
    let mut lines: Vec<Value> = Vec::new();
    let mut status_at_first_install_line = None;
    let done = tokio::time::timeout(BUILD_DEADLINE, async {
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            for (event, data) in blocks(&mut buffer) {
                match event.as_str() {
                    "log" => {
                        let line: Value = serde_json::from_str(&data).expect("log JSON");
                        if status_at_first_install_line.is_none()
                            && line["text"] == "installing step 0"
                        {
                            status_at_first_install_line = Some(app.row(job).await.status);
                        }
                        lines.push(line);
                    }
                    "done" => return serde_json::from_str::<Value>(&data).expect("done JSON"),
                    _ => {}
                }
            }
        }
        panic!("the stream ended without done");
    })
    .await
    .expect("done within the build deadline");
    assert_eq!(done["status"], "ready", "[{mode:?}] {done}");
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready", is_final)
        .await;
    assert_eq!(status["status"], "ready");

    // Streamed while the build ran: the first install line came before the job was finished.
    assert_eq!(
        status_at_first_install_line.as_deref(),
        Some("deps"),
        "[{mode:?}] the install's lines arrive while it runs"
    );
    let text = |l: &Value| l["text"].as_str().unwrap_or_default().to_owned();
    let install: Vec<String> = lines
        .iter()
        .filter(|l| l["source"] == "stdout" && l["phase"] == "deps")
        .map(text)
        .filter(|t| t.starts_with("installing step "))
        .collect();
    let expected: Vec<String> = (0..INSTALL_LINES)
        .map(|i| format!("installing step {i}"))
        .collect();
    assert_eq!(install, expected, "[{mode:?}] every install line, in order");
    assert_eq!(
        lines.first().map(text).as_deref(),
        Some("--- Starting generation pipeline ---")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["phase"] == "checks" && text(l).starts_with("listening on")),
        "[{mode:?}] the dev server's start-up output"
    );

    // History, paged back from the newest as "Load earlier" does, is the stream.
    let mut history: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let query = match &before {
            Some(id) => format!("?limit=500&before_id={id}"),
            None => "?limit=500".to_owned(),
        };
        let page: Value = app
            .get(&format!("/api/jobs/{job}/logs{query}"), USER)
            .await
            .json()
            .await
            .expect("page");
        let mut older = page["lines"].as_array().cloned().unwrap_or_default();
        older.extend(history);
        history = older;
        if page["has_more"] != Value::Bool(true) {
            break;
        }
        before = page["oldest_id"].as_str().map(str::to_owned);
    }
    assert_eq!(
        history, lines,
        "[{mode:?}] the stream and the history hold the same lines"
    );
    app.shut_down().await;
}
