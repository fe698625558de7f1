//! The load generator: keep-alive HTTP/1.1 connections on one thread, each sending prebuilt requests and
//! reading just enough of each response (status line, `Content-Length`, body) to check it. It drives the
//! status reads for a fixed time, and the job submissions once each.
//!
//! Built like `redis-benchmark`, its baseline: one event loop and requests formatted once, so that the
//! generator takes as little as possible of the CPUs it shares with the api-server under test (a full HTTP
//! client spent about a third of a core at the same rate).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use super::stats::micros;

/// How long one request may take before it counts as an error and its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Headers a response may carry (the api-server sends about eight).
const MAX_HEADERS: usize = 32;

/// What one connection saw.
#[derive(Debug, Default)]
pub struct ConnectionResult {
    /// Microseconds per request, errors included.
    pub latencies: Vec<u64>,
    pub errors: u64,
}

/// The `host:port` to connect to for the api-server at `base` (a URL).
pub fn address(base: &str) -> anyhow::Result<String> {
    let base = Url::parse(base).with_context(|| format!("bad api-server address {base}"))?;
    Ok(format!(
        "{}:{}",
        base.host_str().unwrap_or("127.0.0.1"),
        base.port_or_known_default().unwrap_or(80)
    ))
}

/// `GET {path}` requests with `authorization`, ready to write as they are.
pub fn get_requests(host: &str, paths: &[String], authorization: &str) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|path| {
            format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: {authorization}\r\n\r\n")
                .into_bytes()
        })
        .collect()
}

/// `POST {path}` requests with `authorization`, one per JSON body, ready to write as they are.
pub fn post_json_requests(
    host: &str,
    path: &str,
    authorization: &str,
    bodies: &[String],
) -> Vec<Vec<u8>> {
    bodies
        .iter()
        .map(|body| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: {authorization}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect()
}

/// Runs `connections` connections to `addr` on a thread of their own until `duration` is up; connection
/// `n` starts at request `n × len / connections` so that the reads spread over all of them.
pub async fn run(
    addr: String,
    requests: Vec<Vec<u8>>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Vec<ConnectionResult>> {
    anyhow::ensure!(!requests.is_empty(), "no requests to send");
    on_own_thread(async move { drive(&addr, requests, connections, duration).await }).await
}

/// Sends each request once over up to `connections` keep-alive connections, on a thread of their own, and
/// returns the responses that were not `expect`, in words. A failed request is not sent again (a POST may
/// have taken effect); its connection is replaced.
pub async fn send_each(
    addr: String,
    requests: Vec<Vec<u8>>,
    connections: usize,
    expect: u16,
) -> anyhow::Result<Vec<String>> {
    let connections = connections.clamp(1, requests.len().max(1));
    on_own_thread(async move {
        let requests = Arc::new(requests);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let (requests, next, addr) = (requests.clone(), next.clone(), addr.clone());
            tasks.spawn(async move {
                let mut failures = Vec::new();
                let mut stream: Option<TcpStream> = None;
                let mut buf = Vec::with_capacity(8 * 1024);
                while let Some(request) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        exchange(&addr, &mut stream, request, &mut buf, expect),
                    )
                    .await
                    .unwrap_or(Err(ExchangeError::TimedOut));
                    if let Err(error) = outcome {
                        failures.push(error.to_string());
                        stream = None;
                    }
                }
                failures
            });
        }
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            failures.extend(done.context("a load connection panicked")?);
        }
        Ok(failures)
    })
    .await
}

/// Runs `work` on a current-thread runtime of its own thread, as redis-benchmark runs one event loop.
async fn on_own_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the load generator's runtime")
                .and_then(|runtime| runtime.block_on(work));
            let _ = done.send(outcome);
        })
        .context("cannot start the load generator's thread")?;
    result
        .await
        .context("the load generator's thread ended without a result")?
}

async fn drive(
    addr: &str,
    requests: Vec<Vec<u8>>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Vec<ConnectionResult>> {
    let requests = Arc::new(requests);
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..connections {
        let requests = requests.clone();
        let addr = addr.to_owned();
        let first = n * requests.len() / connections.max(1);
        tasks.spawn(async move { connection(&addr, &requests, first, deadline).await });
    }
    let mut results = Vec::with_capacity(connections);
    while let Some(done) = tasks.join_next().await {
        results.push(done.context("a load connection panicked")?);
    }
    Ok(results)
}

/// One connection's loop: a request, its whole response, the next. A failed request drops the
/// connection; the next one opens a new connection.
async fn connection(
    addr: &str,
    requests: &[Vec<u8>],
    first: usize,
    deadline: Instant,
) -> ConnectionResult {
    let mut result = ConnectionResult {
        latencies: Vec::with_capacity(1 << 15),
        errors: 0,
    };
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut next = first;
    while Instant::now() < deadline {
        let request = &requests[next % requests.len()];
        next += 1;
        let sent = Instant::now();
        let ok = tokio::time::timeout(
            REQUEST_TIMEOUT,
            exchange(addr, &mut stream, request, &mut buf, 200),
        )
        .await
        .is_ok_and(|outcome| outcome.is_ok());
        result.latencies.push(micros(sent.elapsed()));
        if !ok {
            result.errors += 1;
            stream = None;
        }
    }
    result
}

/// Why a response did not count.
#[derive(Debug)]
enum ExchangeError {
    Io,
    Closed,
    Malformed,
    TimedOut,
    /// Another status than the one expected, or an empty body.
    Status(u16),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Io => f.write_str("connection error"),
            ExchangeError::Closed => f.write_str("connection closed mid-response"),
            ExchangeError::Malformed => f.write_str("malformed response"),
            ExchangeError::TimedOut => write!(f, "no response within {REQUEST_TIMEOUT:?}"),
            ExchangeError::Status(status) => write!(f, "status {status} or an empty body"),
        }
    }
}

/// Sends `request` and reads its response into `buf`; Ok only for a complete `expect` with a body.
async fn exchange(
    addr: &str,
    stream: &mut Option<TcpStream>,
    request: &[u8],
    buf: &mut Vec<u8>,
    expect: u16,
) -> Result<(), ExchangeError> {
    if stream.is_none() {
        let connected = TcpStream::connect(addr)
            .await
            .map_err(|_| ExchangeError::Io)?;
        connected.set_nodelay(true).map_err(|_| ExchangeError::Io)?;
        *stream = Some(connected);
    }
    let Some(conn) = stream.as_mut() else {
        return Err(ExchangeError::Io);
    };
    conn.write_all(request)
        .await
        .map_err(|_| ExchangeError::Io)?;
    buf.clear();
    let (status, header_len, body_len) = loop {
        read_more(conn, buf).await?;
        if let Some(head) = parse_head(buf)? {
            break head;
        }
    };
    while buf.len() < header_len + body_len {
        read_more(conn, buf).await?;
    }
    if status == expect && body_len > 0 {
        Ok(())
    } else {
        Err(ExchangeError::Status(status))
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ExchangeError> {
    buf.reserve(4096);
    match conn.read_buf(buf).await {
        Ok(0) => Err(ExchangeError::Closed),
        Ok(_) => Ok(()),
        Err(_) => Err(ExchangeError::Io),
    }
}

/// The status, the head's length and the body's (`Content-Length`) once the head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(header_len)) => {
            let status = response.code.ok_or(ExchangeError::Malformed)?;
            let body_len = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok())
                .ok_or(ExchangeError::Malformed)?;
            Ok(Some((status, header_len, body_len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(ExchangeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_head_gives_status_and_lengths() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":1}";
        let (status, head, body) = parse_head(raw).unwrap().unwrap();
        assert_eq!((status, body), (200, 12));
        assert_eq!(&raw[head..], b"{\"a\":1}");
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_head_without_length_is_malformed() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn posts_carry_their_body_and_its_length() {
        let built = post_json_requests("h:1", "/p", "Bearer t", &["{\"a\":1}".to_owned()]);
        assert_eq!(
            String::from_utf8(built[0].clone()).unwrap(),
            "POST /p HTTP/1.1\r\nhost: h:1\r\nauthorization: Bearer t\r\n\
             content-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn requests_are_prebuilt_with_the_token() {
        let built = get_requests("127.0.0.1:1", &["/a".to_owned()], "Bearer t");
        assert_eq!(
            built[0],
            b"GET /a HTTP/1.1\r\nhost: 127.0.0.1:1\r\nauthorization: Bearer t\r\n\r\n".to_vec()
        );
    }
}
