//! Hostile clients at the connection level: slowloris sockets, a flood of idle sockets, requests hyper
//! refuses before routing, a body that never arrives, and untrusted request ids.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use uuid::Uuid;

use api_server::ServeLimits;

use crate::helpers::{eventually, spawn_app_with, token, AppOptions, TestApp};
use crate::sse_reader::{SseItem, SseReader};
use crate::support::make_ready;

const DEADLINE: Duration = Duration::from_secs(10);

async fn app_with(serve: ServeLimits) -> TestApp {
    spawn_app_with(AppOptions {
        serve,
        ..AppOptions::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status and JSON body of a raw HTTP/1.1 answer, asserting the API's `{detail, debug_id}` shape.
fn json_error(answer: &str) -> (u16, Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a full answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {answer}"));
    assert!(body["detail"].is_string(), "{answer}");
    Uuid::parse_str(body["debug_id"].as_str().expect("debug_id")).expect("debug_id is a uuid");
    (status, body)
}

#[tokio::test]
async fn slowloris_sockets_are_closed_after_the_header_timeout() {
    let header_timeout = Duration::from_millis(300);
    let app = app_with(ServeLimits {
        header_timeout,
        ..ServeLimits::default()
    })
    .await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: slipway\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Each socket keeps sending one more header line, as slowloris does, until the server hangs up.
    let dribbles = slow.into_iter().map(|mut stream| async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                read = stream.read(&mut byte) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return Instant::now();
                    }
                }
                _ = tick.tick() => {
                    if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return Instant::now();
                    }
                }
            }
        }
    });
    let closed = tokio::time::timeout(DEADLINE, futures::future::join_all(dribbles))
        .await
        .expect("every slowloris socket is closed");
    for at in closed {
        assert!(at - started >= header_timeout, "closed before the timeout");
    }
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn healthz_answers_while_idle_sockets_fill_the_cap() {
    let cap = 16;
    let app = app_with(ServeLimits {
        max_connections: cap,
        // Long enough that no idle socket times out during the test: only the cap closes them.
        header_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..(cap * 4) {
        idle.push(connect(&app).await);
    }
    for _ in 0..5 {
        // A fresh client each time: a new connection, accepted behind every idle one.
        let resp = tokio::time::timeout(
            DEADLINE,
            reqwest::Client::new().get(app.url("/healthz")).send(),
        )
        .await
        .expect("healthz answers in time")
        .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The idle sockets beyond the cap were closed, oldest first.
    let must_close = idle.len() - cap;
    eventually(DEADLINE, "idle sockets closed at the cap", || {
        let closed = idle
            .iter()
            .filter(|s| {
                let mut byte = [0u8; 1];
                match s.try_read(&mut byte) {
                    Ok(0) => true,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    Ok(_) => false,
                }
            })
            .count();
        async move { (closed >= must_close).then_some(()) }
    })
    .await;
    let text = app.metrics_text().await;
    assert!(
        text.contains(r#"slipway_http_connections_closed_total{reason="evicted"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn an_open_event_stream_is_never_evicted_as_idle() {
    let cap = 4;
    let app = app_with(ServeLimits {
        max_connections: cap,
        ..ServeLimits::default()
    })
    .await;
    let id = app.start_job("user_watch").await;
    let resp = app
        .client
        .get(app.url(&format!("/api/generation/{id}/events")))
        .bearer_auth(token("user_watch"))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    assert!(matches!(sse.next(DEADLINE).await, SseItem::Data(_)));
    // Idle sockets well past the cap, and fresh requests behind them: the stream is busy, never evicted.
    let mut idle = Vec::new();
    for _ in 0..(cap * 3) {
        idle.push(connect(&app).await);
    }
    for _ in 0..3 {
        let resp = reqwest::Client::new()
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    make_ready(&app, id, "https://3000-sbx.example").await;
    let mut last = None;
    loop {
        match sse.next(DEADLINE).await {
            SseItem::Data(v) => last = v["status"].as_str().map(str::to_owned),
            SseItem::Comment(_) => {}
            SseItem::End => break,
        }
    }
    assert_eq!(last.as_deref(), Some("ready"));
}

#[tokio::test]
async fn requests_refused_before_routing_answer_json() {
    let app = app_with(ServeLimits::default()).await;
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        (
            format!("GET /healthz HTTP/1.1\r\nHost: s\r\n{many_headers}\r\n"),
            431,
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: s\r\n\r\n", "a".repeat(70_000)),
            414,
        ),
        ("NOT A REQUEST\r\n\r\n".to_owned(), 400),
        (
            "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_owned(),
            400,
        ),
    ];
    for (request, status) in cases {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        let (got, _) = json_error(&answer);
        assert_eq!(got, status, "{answer}");
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_408() {
    let app = app_with(ServeLimits {
        body_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    })
    .await;
    let mut stream = connect(&app).await;
    let request = format!(
        "POST /api/projects HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{{\"name\":",
        token("user_slow")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    let (status, body) = json_error(&answer);
    assert_eq!(status, 408, "{answer}");
    assert!(body["detail"].as_str().unwrap().contains("body"), "{body}");
    let projects: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(projects, 0);
}

#[tokio::test]
async fn only_a_short_safe_request_id_is_kept() {
    let app = app_with(ServeLimits::default()).await;
    let id_for = |given: &'static str| {
        let request = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", given);
        async move {
            let resp = request.send().await.unwrap();
            resp.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(id_for("trace-42_a.b").await, "trace-42_a.b");
    for bad in [
        "has spaces",
        "quote\"and{braces}",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    ] {
        let got = id_for(bad).await;
        assert_ne!(got, bad);
        Uuid::parse_str(&got).expect("a generated id");
    }
}
