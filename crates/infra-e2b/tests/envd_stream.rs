//! The envd side against a fake envd speaking Connect: headers, streamed output, end-of-stream errors, a
//! background stream that stays open, and stopping a command past its deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use domain::ports::{CommandSpec, SandboxError, SandboxRuntime, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use futures::StreamExt;
use infra_e2b::connect::{encode, FLAG_END_STREAM};
use infra_e2b::{ApiKey, E2bConfig, E2bRuntime};
use serde_json::json;

#[derive(Default)]
struct Seen {
    start_headers: Vec<HeaderMap>,
    signals: Vec<serde_json::Value>,
}

type Shared = Arc<Mutex<Seen>>;

fn frame(v: serde_json::Value) -> Bytes {
    encode(0, v.to_string().as_bytes())
}

fn end(v: serde_json::Value) -> Bytes {
    encode(FLAG_END_STREAM, v.to_string().as_bytes())
}

async fn create() -> Response {
    (
        StatusCode::CREATED,
        Json(
            json!({"templateID":"base","sandboxID":"sbx1","clientID":"c","envdVersion":"0.2.0",
                    "envdAccessToken":"envd-token"}),
        ),
    )
        .into_response()
}

async fn start(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    seen.lock().unwrap().start_headers.push(headers.clone());
    let request: serde_json::Value = serde_json::from_slice(&body[5..]).unwrap();
    assert_eq!(body[0], 0);
    assert_eq!(request["process"]["cmd"], "/bin/bash");
    let cmd = request["process"]["args"][2].as_str().unwrap().to_owned();
    let deadline = headers
        .get("connect-timeout-ms")
        .map(|v| Duration::from_millis(v.to_str().unwrap().parse().unwrap()));
    let frames: futures::stream::BoxStream<'static, Bytes> = match cmd.as_str() {
        "echo" => futures::stream::iter(vec![
            frame(json!({"event":{"start":{"pid":11}}})),
            frame(json!({"event":{"data":{"stdout":"b3V0"}}})),
            frame(json!({"event":{"keepalive":{}}})),
            frame(json!({"event":{"data":{"stderr":"ZXJy"}}})),
            frame(json!({"event":{"end":{"exited":true,"status":"exit status 0"}}})),
            end(json!({})),
        ])
        .boxed(),
        "missing" => futures::stream::iter(vec![end(
            json!({"error":{"code":"not_found","message":"sandbox gone"}}),
        )])
        .boxed(),
        // Honours the deadline as envd does: the stream ends with deadline_exceeded.
        "hang" => {
            let deadline = deadline.expect("a foreground command carries its deadline");
            futures::stream::iter(vec![frame(json!({"event":{"start":{"pid":22}}}))])
                .chain(futures::stream::once(async move {
                    tokio::time::sleep(deadline).await;
                    end(json!({"error":{"code":"deadline_exceeded","message":"deadline"}}))
                }))
                .boxed()
        }
        // A dev server: the stream stays open as long as the process runs.
        "serve" => {
            assert!(
                deadline.is_none(),
                "a background command has no stream deadline"
            );
            futures::stream::iter(vec![
                frame(json!({"event":{"start":{"pid":33}}})),
                frame(json!({"event":{"data":{"stdout":"bGlzdGVuaW5n"}}})),
            ])
            .chain(futures::stream::pending())
            .boxed()
        }
        // A dev server that dies: its error, then its end event.
        "crash" => futures::stream::iter(vec![
            frame(json!({"event":{"start":{"pid":44}}})),
            frame(json!({"event":{"data":{"stdout":"c3RhcnRpbmcK"}}})),
            frame(json!({"event":{"data":{"stderr":"RXJyb3I6IENhbm5vdCBmaW5kIG1vZHVsZQo="}}})),
            frame(
                json!({"event":{"end":{"exitCode":1,"exited":true,"status":"exit status 1","error":"exit status 1"}}}),
            ),
            end(json!({})),
        ])
        .boxed(),
        other => panic!("unexpected command {other}"),
    };
    (
        [("content-type", "application/connect+json")],
        Body::from_stream(frames.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response()
}

async fn signal(
    State(seen): State<Shared>,
    Json(body): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    seen.lock().unwrap().signals.push(body);
    Json(json!({}))
}

async fn setup() -> (E2bRuntime, SandboxId, Shared) {
    let seen = Shared::default();
    let router = Router::new()
        .route("/sandboxes", post(create))
        .route("/process.Process/Start", post(start))
        .route("/process.Process/SendSignal", post(signal))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let rt = E2bRuntime::new(E2bConfig {
        api_url: url.clone(),
        sandbox_url: Some(url),
        ..E2bConfig::new(ApiKey::new("k"), "base")
    })
    .unwrap();
    let id = rt
        .create(&SandboxSpec {
            job_id: JobId::new(),
            user_id: UserId::try_from("u1").unwrap(),
            project_id: ProjectId::new(),
            timeout: Duration::from_secs(60),
            auto_pause: false,
        })
        .await
        .unwrap();
    (rt, id, seen)
}

#[tokio::test]
async fn a_foreground_command_streams_output_with_routing_headers() {
    let (rt, id, seen) = setup().await;
    let out = rt
        .run(&id, CommandSpec::new("echo", Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "out", "err")
    );
    let headers = seen.lock().unwrap().start_headers[0].clone();
    assert_eq!(headers["e2b-sandbox-id"], "sbx1");
    assert_eq!(headers["e2b-sandbox-port"], "49983");
    assert_eq!(headers["x-access-token"], "envd-token");
    assert_eq!(headers["connect-protocol-version"], "1");
    assert_eq!(headers["content-type"], "application/connect+json");
    assert_eq!(headers["connect-timeout-ms"], "30000");
}

#[tokio::test]
async fn end_of_stream_errors_map_to_variants() {
    let (rt, id, _) = setup().await;
    let result = rt
        .run(&id, CommandSpec::new("missing", Duration::from_secs(30)))
        .await;
    assert_eq!(result, Err(SandboxError::NotFound("sandbox gone".into())));
}

#[tokio::test]
async fn a_command_past_its_deadline_times_out_and_is_killed() {
    let (rt, id, seen) = setup().await;
    let result = rt
        .run(&id, CommandSpec::new("hang", Duration::from_millis(300)))
        .await;
    assert!(
        matches!(result, Err(SandboxError::TimedOut(_))),
        "{result:?}"
    );
    let signals = seen.lock().unwrap().signals.clone();
    assert_eq!(
        signals,
        vec![json!({"process":{"pid":22},"signal":"SIGNAL_SIGKILL"})]
    );
}

#[tokio::test]
async fn a_background_command_returns_its_pid_while_the_stream_stays_open() {
    let (rt, id, _) = setup().await;
    let pid = tokio::time::timeout(
        Duration::from_secs(10),
        rt.run_background(&id, CommandSpec::new("serve", Duration::from_secs(1))),
    )
    .await
    .expect("run_background must not wait for the stream to end")
    .unwrap();
    assert_eq!(pid.pid, 33);
}

#[tokio::test]
async fn a_background_command_that_exits_reports_its_code_and_last_lines() {
    let (rt, id, _) = setup().await;
    let mut server = rt
        .run_background(&id, CommandSpec::new("crash", Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(server.pid, 44);
    let exit = tokio::time::timeout(Duration::from_secs(10), server.exited())
        .await
        .expect("the exit is reported");
    assert_eq!(exit.exit_code, 1);
    assert_eq!(exit.output_tail, "starting\nError: Cannot find module");
}
