//! Forwarding one request to a sandbox's port: HTTP/1.1 with bodies streamed both ways (never buffered),
//! hop-by-hop headers dropped, `X-Forwarded-*` set, connections to the sandbox kept alive and reused
//! (reqwest's pool over hyper); and the WebSocket handshake passed through, after which bytes are copied
//! both ways with the browser's side read for activity ([`super::frames`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use domain::ports::PreviewCredential;
use domain::JobId;

use super::activity::ActivityBook;
use super::frames::FrameScanner;
use super::links::COOKIE_NAME;
use super::metrics;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus `Host` (the sandbox's own) and
/// the provider's traffic credential (never taken from a client).
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "e2b-traffic-access-token",
];

/// How long the app has to start answering (its headers). Generous: a dev server may compile a page on its
/// first request. A sandbox that stopped under a request must not hold it for ever.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Why a request got no answer from the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the sandbox did not answer: {0}")]
    Upstream(#[from] reqwest::Error),
    #[error("the sandbox did not start answering within {ANSWER_WITHIN:?}")]
    TimedOut,
}

/// A WebSocket direction's copy buffer: small, as a thousand idle sockets must stay cheap.
const SOCKET_BUFFER: usize = 8 * 1024;

/// Where a request goes and what it says about where it came from.
pub struct Target<'a> {
    /// The sandbox port's base URL, without a trailing slash.
    pub base: &'a str,
    pub credential: Option<&'a PreviewCredential>,
    /// The preview host the browser used, and its scheme.
    pub public_host: &'a str,
    pub public_scheme: &'static str,
    pub peer: Option<IpAddr>,
    /// Whether this preview's cookie is ours to strip (signed mode).
    pub strip_cookie: bool,
}

/// The client every proxied request goes through.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
}

impl Upstream {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(infra_e2b::LocalhostResolver))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .http1_only()
            .build()?;
        Ok(Self { client })
    }

    /// Forwards `req`; `Err` when the sandbox did not answer (nothing listening, or it stopped).
    pub async fn forward(
        &self,
        job: JobId,
        req: Request,
        target: &Target<'_>,
        activity: &ActivityBook,
    ) -> Result<Response, ForwardError> {
        let websocket = is_websocket(req.headers());
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let (mut parts, body) = req.into_parts();
        let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING);
        let headers = outgoing_headers(&parts.headers, target, websocket);
        let mut outgoing = self
            .client
            .request(parts.method, format!("{}{path_and_query}", target.base))
            .headers(headers);
        if has_body {
            let counted = body.into_data_stream().map(|chunk| {
                if let Ok(bytes) = &chunk {
                    metrics::bytes("up", bytes.len());
                }
                chunk
            });
            outgoing = outgoing.body(reqwest::Body::wrap_stream(counted));
        }
        let in_flight = metrics::InFlight::start();
        let answer = tokio::time::timeout(ANSWER_WITHIN, outgoing.send())
            .await
            .map_err(|_| ForwardError::TimedOut)??;
        if websocket && answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            drop(in_flight);
            return Ok(switch_protocols(job, answer, client_upgrade, activity));
        }
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if is_hop_by_hop(name) {
                continue;
            }
            if name == header::LOCATION {
                if let Some(rewritten) = rewrite_location(value, target) {
                    response = response.header(name, rewritten);
                    continue;
                }
            }
            response = response.header(name, value);
        }
        let body = answer.bytes_stream().map(move |chunk| {
            // Held by the body: the request is in flight until its answer is streamed (or dropped).
            let _in_flight = &in_flight;
            if let Ok(bytes) = &chunk {
                metrics::bytes("down", bytes.len());
            }
            chunk
        });
        Ok(response
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| super::pages::bad_gateway()))
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The request's headers as the sandbox gets them.
fn outgoing_headers(incoming: &HeaderMap, target: &Target<'_>, websocket: bool) -> HeaderMap {
    // Headers the client named in `Connection` are hop-by-hop too.
    let named: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming {
        if is_hop_by_hop(name) || named.iter().any(|n| n == name.as_str()) {
            continue;
        }
        if name == header::COOKIE && target.strip_cookie {
            if let Some(kept) = without_our_cookie(value) {
                headers.append(name, kept);
            }
            continue;
        }
        headers.append(name, value.clone());
    }
    if websocket {
        // The one hop-by-hop exchange a proxy passes on: the WebSocket handshake (RFC 6455 §4.1).
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if let Some(peer) = target.peer {
        let forwarded_for = match incoming
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(earlier) => format!("{earlier}, {peer}"),
            None => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
    }
    if let Ok(host) = HeaderValue::from_str(target.public_host) {
        headers.insert("x-forwarded-host", host);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(target.public_scheme),
    );
    if let Some(credential) = target.credential {
        if let Ok(value) = HeaderValue::from_str(&credential.value) {
            headers.insert(credential.header, value);
        }
    }
    headers
}

/// The `Cookie` header without the gateway's own cookie (the app never sees it); `None` when nothing is
/// left.
fn without_our_cookie(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let kept: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty()
                && pair
                    .split_once('=')
                    .is_none_or(|(name, _)| name.trim() != COOKIE_NAME)
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// A redirect to the sandbox's own address stays on the preview host.
fn rewrite_location(value: &HeaderValue, target: &Target<'_>) -> Option<String> {
    let path = value.to_str().ok()?.strip_prefix(target.base)?;
    Some(format!(
        "{}://{}{path}",
        target.public_scheme, target.public_host
    ))
}

/// Answers the browser's handshake with the app's 101, then joins the two upgraded connections.
fn switch_protocols(
    job: JobId,
    answer: reqwest::Response,
    client: Option<hyper::upgrade::OnUpgrade>,
    activity: &ActivityBook,
) -> Response {
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let guard = activity.open_socket(job);
    let activity = activity.clone();
    tokio::spawn(async move {
        let (Some(client), Ok(upstream)) = (client, answer.upgrade().await) else {
            tracing::debug!(job_id = %job, "websocket upgrade did not complete");
            return;
        };
        let Ok(client) = client.await else {
            tracing::debug!(job_id = %job, "the browser's websocket upgrade did not complete");
            return;
        };
        let client = hyper_util::rt::TokioIo::new(client);
        tokio::select! {
            () = pump(job, client, upstream, &activity) => {}
            () = guard.closed() => {}
        }
        drop(guard);
    });
    response
        .body(Body::empty())
        .unwrap_or_else(|_| super::pages::bad_gateway())
}

/// Copies both ways until either side closes; each message the browser sends is activity.
async fn pump<C, U>(job: JobId, client: C, upstream: U, activity: &ActivityBook)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let mut scanner = FrameScanner::default();
        let mut buf = vec![0u8; SOCKET_BUFFER];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if scanner.scan(&buf[..n]) > 0 {
                activity.note(job);
            }
            metrics::bytes("up", n);
            if upstream_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; SOCKET_BUFFER];
        loop {
            let n = match upstream_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            metrics::bytes("down", n);
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    // Either side closing ends the socket.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(strip_cookie: bool) -> Target<'static> {
        Target {
            base: "http://127.0.0.1:5173",
            credential: None,
            public_host: "abc.preview.localhost:8001",
            public_scheme: "http",
            peer: Some("10.0.0.7".parse().unwrap()),
            strip_cookie,
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarding_headers_come() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        incoming.insert("x-secret-hop", HeaderValue::from_static("1"));
        incoming.insert(
            header::HOST,
            HeaderValue::from_static("abc.preview.localhost:8001"),
        );
        incoming.insert(
            "e2b-traffic-access-token",
            HeaderValue::from_static("forged"),
        );
        incoming.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let out = outgoing_headers(&incoming, &target(false), false);
        for gone in [
            "connection",
            "x-secret-hop",
            "host",
            "e2b-traffic-access-token",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        assert_eq!(out[header::ACCEPT], "text/html");
        assert_eq!(out["x-forwarded-for"], "10.0.0.7");
        assert_eq!(out["x-forwarded-host"], "abc.preview.localhost:8001");
        assert_eq!(out["x-forwarded-proto"], "http");
    }

    #[test]
    fn the_credential_is_ours_and_the_cookie_stays_with_us() {
        let credential = PreviewCredential {
            header: "e2b-traffic-access-token",
            value: "real".into(),
        };
        let mut t = target(true);
        t.credential = Some(&credential);
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; slipway_preview=secret; b=2"),
        );
        let out = outgoing_headers(&incoming, &t, false);
        assert_eq!(out["e2b-traffic-access-token"], "real");
        assert_eq!(out[header::COOKIE], "a=1; b=2");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("slipway_preview=x"),
        );
        assert!(!outgoing_headers(&only_ours, &t, false).contains_key(header::COOKIE));
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade() {
        let mut incoming = HeaderMap::new();
        incoming.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        incoming.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        incoming.insert("sec-websocket-key", HeaderValue::from_static("k"));
        let out = outgoing_headers(&incoming, &target(false), true);
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::CONNECTION], "upgrade");
        assert_eq!(out["sec-websocket-key"], "k");
    }

    #[test]
    fn redirects_to_the_sandbox_stay_on_the_preview_host() {
        let t = target(false);
        assert_eq!(
            rewrite_location(&HeaderValue::from_static("http://127.0.0.1:5173/login"), &t),
            Some("http://abc.preview.localhost:8001/login".into())
        );
        assert_eq!(
            rewrite_location(&HeaderValue::from_static("/login"), &t),
            None
        );
    }
}
