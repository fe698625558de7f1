//! `cargo xtask demo`: one build through the API that `cargo xtask dev` runs, as the README's quick start
//! shows it: a project, a build, its stages as they stream, then the status once the build is READY and its
//! sandbox paused. It signs its own dev token with the secret `dev` gives the api-server.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::dev::{DEFAULT_API_ADDR, DEV_SECRET};
use crate::token;
use crate::workspace::env_or;

/// How long the build may take to be READY and paused (npm and node start slowly on a busy machine).
const BUILD_DEADLINE: Duration = Duration::from_secs(120);

pub async fn run() -> anyhow::Result<ExitCode> {
    let api = format!("http://{}", env_or("API_ADDR", DEFAULT_API_ADDR));
    let issuer = std::env::var("JWT_ISSUER").ok().filter(|s| !s.is_empty());
    let jwt = token::hs256(
        &env_or("JWT_HS256_SECRET", DEV_SECRET),
        token::DEV_USER,
        issuer.as_deref(),
        Duration::from_secs(3600),
    )?;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{api}{path}"))
            .bearer_auth(&jwt)
    };

    let project = answer(
        call(reqwest::Method::POST, "/api/projects").json(&json!({"name": "demo"})),
        &api,
    )
    .await?;
    let project_id = field(&project, "id")?;
    let goal = "a todo list app";
    let started = answer(
        call(reqwest::Method::POST, "/api/generation/start")
            .json(&json!({"project_id": project_id, "goal": goal})),
        &api,
    )
    .await?;
    let job = field(&started, "job_id")?;
    println!("POST /api/generation/start  →  {started}");

    println!("GET /api/generation/{job}/events:");
    let deadline = Instant::now() + BUILD_DEADLINE;
    let mut events = call(
        reqwest::Method::GET,
        &format!("/api/generation/{job}/events"),
    )
    .send()
    .await
    .context("cannot open the event stream")?;
    let mut buffer = String::new();
    let mut last = String::new();
    while last != "ready" && last != "failed" {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(remaining, events.chunk())
            .await
            .context("the build did not finish in time")?
            .context("the event stream broke")?
            .context("the event stream ended before the build finished")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            last = field(&event, "status")?;
            println!(
                "  {:<10} {}",
                last,
                event["stage_label"].as_str().unwrap_or("")
            );
        }
    }
    if last == "failed" {
        anyhow::bail!("the build failed; see the job-worker's log for job {job}");
    }

    // READY is written first, then the sandbox is paused: wait for the pause to be recorded.
    let path = format!("/api/generation/{job}/status");
    loop {
        let status = answer(call(reqwest::Method::GET, &path), &api).await?;
        if status["sandbox_paused"] == true {
            println!(
                "GET {path}  →  status {}, sandbox_paused true, preview_url {}",
                status["status"], status["preview_url"]
            );
            println!("READY and paused. Resume it with: curl -s -X POST {api}/api/generation/{job}/resume -H \"Authorization: Bearer $TOKEN\"");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            anyhow::bail!("the build is READY but its sandbox was not paused in time: {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `request` and returns its JSON body, or says why not in one line.
async fn answer(request: reqwest::RequestBuilder, api: &str) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| {
        format!("no API at {api}: start it first with `cargo xtask dev` (in another terminal)")
    })?;
    let status = response.status();
    let body = response.text().await.context("cannot read the answer")?;
    if !status.is_success() {
        anyhow::bail!("the API answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("the API answered {body:?}"))
}

fn field(value: &Value, name: &str) -> anyhow::Result<String> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name} in {value}"))
}
