//! [`HttpPreviewProbe`]: a GET on a preview URL as a browser would do it.

use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{PreviewProbe, ProbeError, ProbeResponse};

/// How long one probe request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many redirects a probe follows.
const MAX_REDIRECTS: usize = 5;

/// Probes previews over HTTP(S), following up to five redirects, five seconds per request.
#[derive(Debug, Clone)]
pub struct HttpPreviewProbe {
    client: reqwest::Client,
}

impl HttpPreviewProbe {
    /// Fails only when the HTTP client cannot be initialised (TLS setup).
    pub fn new() -> Result<Self, ProbeError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .timeout(PROBE_TIMEOUT)
            .build()
            .map_err(|e| ProbeError::Unreachable(format!("cannot build the http client: {e}")))?;
        Ok(Self { client })
    }
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[async_trait]
impl PreviewProbe for HttpPreviewProbe {
    // Unreachable is the expected answer while a dev server starts (the pipeline polls until it answers),
    // so errors are debug here; the caller decides when it is a failure and logs it then.
    #[tracing::instrument(skip_all, fields(url = %url), err(level = "debug"))]
    async fn get(&self, url: &str) -> Result<ProbeResponse, ProbeError> {
        let resp = self.client.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                ProbeError::TimedOut
            } else {
                ProbeError::Unreachable(e.to_string())
            }
        })?;
        Ok(ProbeResponse {
            status: resp.status().as_u16(),
            final_url: resp.url().to_string(),
            x_frame_options: header(&resp, reqwest::header::X_FRAME_OPTIONS),
            content_security_policy: header(&resp, reqwest::header::CONTENT_SECURITY_POLICY),
        })
    }
}
