//! [`HttpPreviewProbe`]: a GET on a preview URL as a browser would do it, telling the dev server's own
//! answers from the ones E2B's proxy gives in its place ([`crate::proxy`]).
//!
//! With a sandbox URL (`E2B_SANDBOX_URL`), a preview on a `{port}-{sandboxID}.{domain}` host is fetched
//! from that one base URL with the `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers instead, as the SDKs
//! reach envd there; redirects are followed by hand, so that each hop is routed the same way.

use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{PreviewProbe, ProbeError, ProbeResponse};
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, CONTENT_TYPE, LOCATION};
use url::Url;

use crate::proxy;
use crate::resolve::LocalhostResolver;

/// How long one probe request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many redirects a probe follows.
const MAX_REDIRECTS: usize = 5;
/// How much of an error answer is read to recognise the proxy's own (its bodies are a few hundred bytes).
const ERROR_BODY_BYTES: usize = 4096;

/// Probes previews over HTTP(S), following up to five redirects, five seconds per request.
#[derive(Debug, Clone)]
pub struct HttpPreviewProbe {
    client: reqwest::Client,
    /// Where previews of sandbox hosts are fetched with routing headers, when set.
    sandbox_url: Option<Url>,
    /// Private sandboxes' traffic tokens, sent with each probe of their previews.
    traffic: Option<crate::access::TrafficTokens>,
}

impl HttpPreviewProbe {
    /// Fails only when the HTTP client cannot be initialised (TLS setup).
    pub fn new() -> Result<Self, ProbeError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROBE_TIMEOUT)
            .dns_resolver(std::sync::Arc::new(LocalhostResolver))
            .build()
            .map_err(|e| ProbeError::Unreachable(format!("cannot build the http client: {e}")))?;
        Ok(Self {
            client,
            sandbox_url: None,
            traffic: None,
        })
    }

    /// Probes of a private sandbox's preview carry its traffic token (`E2B_PRIVATE_PREVIEWS`).
    pub fn with_traffic_tokens(self, tokens: crate::access::TrafficTokens) -> Self {
        Self {
            traffic: Some(tokens),
            ..self
        }
    }

    /// Previews of sandbox hosts go to `sandbox_url` with routing headers (`E2B_SANDBOX_URL`).
    pub fn with_sandbox_url(self, sandbox_url: &str) -> Result<Self, ProbeError> {
        let url = Url::parse(sandbox_url).map_err(|e| {
            ProbeError::Unreachable(format!("bad sandbox url {sandbox_url:?}: {e}"))
        })?;
        Ok(Self {
            sandbox_url: Some(url),
            ..self
        })
    }

    fn request(&self, url: &Url) -> reqwest::RequestBuilder {
        let target = sandbox_target(url);
        let token = match (&self.traffic, &target) {
            (Some(tokens), Some((_, id))) => tokens.of(id),
            _ => None,
        };
        let request = self.routed(url, target);
        match token {
            Some(token) => request.header(crate::runtime::TRAFFIC_TOKEN_HEADER, token.expose()),
            None => request,
        }
    }

    fn routed(&self, url: &Url, target: Option<(u16, String)>) -> reqwest::RequestBuilder {
        match (&self.sandbox_url, target) {
            (Some(base), Some((port, sandbox_id))) => {
                let mut routed = base.clone();
                routed.set_path(url.path());
                routed.set_query(url.query());
                self.client
                    .get(routed)
                    .header("E2b-Sandbox-Id", sandbox_id)
                    .header("E2b-Sandbox-Port", port.to_string())
            }
            _ => self.client.get(url.clone()),
        }
    }
}

/// The sandbox port and id of a `{port}-{sandboxID}.{domain}` host.
fn sandbox_target(url: &Url) -> Option<(u16, String)> {
    let label = url.host_str()?.split('.').next()?;
    let (port, id) = label.split_once('-')?;
    let port = port.parse().ok()?;
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    valid.then(|| (port, id.to_owned()))
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The first bytes of a body, enough to recognise the proxy's answers.
async fn body_head(resp: reqwest::Response) -> Vec<u8> {
    let mut head = Vec::new();
    let mut body = resp.bytes_stream();
    while head.len() < ERROR_BODY_BYTES {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(ERROR_BODY_BYTES);
    head
}

#[async_trait]
impl PreviewProbe for HttpPreviewProbe {
    // Unreachable is the expected answer while a dev server starts (the pipeline polls until it answers),
    // so errors are debug here; the caller decides when it is a failure and logs it then.
    #[tracing::instrument(skip_all, fields(url = %url), err(level = "debug"))]
    async fn get(&self, url: &str) -> Result<ProbeResponse, ProbeError> {
        let mut current = Url::parse(url)
            .map_err(|e| ProbeError::Unreachable(format!("not a url {url:?}: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.request(&current).send().await.map_err(|e| {
                if e.is_timeout() {
                    ProbeError::TimedOut
                } else {
                    ProbeError::Unreachable(e.to_string())
                }
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if status.is_redirection() {
                if let Some(next) = header(&headers, LOCATION).and_then(|l| current.join(&l).ok()) {
                    current = next;
                    continue;
                }
            }
            let proxy = if status.is_client_error() || status.is_server_error() {
                let content_type = header(&headers, CONTENT_TYPE);
                let head = body_head(resp).await;
                proxy::classify(status.as_u16(), content_type.as_deref(), &head)
            } else {
                None
            };
            return Ok(ProbeResponse {
                status: status.as_u16(),
                final_url: current.to_string(),
                x_frame_options: header(&headers, reqwest::header::X_FRAME_OPTIONS),
                content_security_policy: header(&headers, reqwest::header::CONTENT_SECURITY_POLICY),
                proxy,
            });
        }
        Err(ProbeError::Unreachable(format!(
            "more than {MAX_REDIRECTS} redirects from {url}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_hosts_are_recognised() {
        let target = |u: &str| sandbox_target(&Url::parse(u).unwrap());
        assert_eq!(
            target("https://3000-i8d9x2k4.e2b.app/x"),
            Some((3000, "i8d9x2k4".into()))
        );
        assert_eq!(
            target("http://5173-l1a2.localhost:41000/"),
            Some((5173, "l1a2".into()))
        );
        assert_eq!(target("http://127.0.0.1:8080/"), None);
        assert_eq!(target("https://www.example.com/"), None);
        assert_eq!(target("https://abc-def.example.com/"), None);
        assert_eq!(target("https://3000-Bad_Id.example.com/"), None);
    }
}
