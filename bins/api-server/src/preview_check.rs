//! Whether a preview can be embedded in the front end's iframe: a pure rule over the probe's answer.

use domain::ports::{ProbeError, ProbeResponse};

/// The answer of the preview check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub embeddable: bool,
    pub reason: Option<String>,
}

impl Verdict {
    pub fn not(reason: impl Into<String>) -> Self {
        Self {
            embeddable: false,
            reason: Some(reason.into()),
        }
    }

    fn yes() -> Self {
        Self {
            embeddable: true,
            reason: None,
        }
    }
}

/// Judges a probe of the preview: unreachable or 5xx is not embeddable (a paused or expired sandbox answers
/// 502 through the edge), nor is a page that forbids framing by X-Frame-Options or CSP frame-ancestors.
pub fn judge(probe: Result<ProbeResponse, ProbeError>) -> Verdict {
    let resp = match probe {
        Ok(resp) => resp,
        Err(ProbeError::Unreachable(_)) | Err(ProbeError::TimedOut) => {
            return Verdict::not("Sandbox unreachable (may have expired)")
        }
    };
    if resp.status >= 500 {
        return Verdict::not(format!(
            "Preview answered HTTP {} (sandbox unreachable or not ready)",
            resp.status
        ));
    }
    if let Some(xfo) = &resp.x_frame_options {
        let v = xfo.trim().to_ascii_uppercase();
        if v == "DENY" || v == "SAMEORIGIN" {
            return Verdict::not(format!("X-Frame-Options: {v}"));
        }
    }
    if let Some(csp) = &resp.content_security_policy {
        if let Some(directive) = refusing_frame_ancestors(csp) {
            return Verdict::not(format!("Content-Security-Policy: {directive}"));
        }
    }
    Verdict::yes()
}

/// The `frame-ancestors` directive when it lets no other site frame the page (`'none'` or `'self'` only).
fn refusing_frame_ancestors(csp: &str) -> Option<String> {
    csp.split(';').map(str::trim).find_map(|directive| {
        let mut parts = directive.split_whitespace();
        if !parts.next()?.eq_ignore_ascii_case("frame-ancestors") {
            return None;
        }
        let sources: Vec<&str> = parts.collect();
        let refusing = sources.is_empty()
            || sources.iter().all(|s| {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "'none'" | "'self'" | "none" | "self"
                )
            });
        refusing.then(|| directive.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, xfo: Option<&str>, csp: Option<&str>) -> ProbeResponse {
        ProbeResponse {
            status,
            final_url: "https://3000-x.e2b.app".into(),
            x_frame_options: xfo.map(Into::into),
            content_security_policy: csp.map(Into::into),
            proxy: None,
        }
    }

    #[test]
    fn a_plain_page_is_embeddable() {
        assert_eq!(judge(Ok(resp(200, None, None))), Verdict::yes());
    }

    #[test]
    fn framing_headers_refuse() {
        let v = judge(Ok(resp(200, Some("sameorigin"), None)));
        assert_eq!(v, Verdict::not("X-Frame-Options: SAMEORIGIN"));
        let v = judge(Ok(resp(
            200,
            None,
            Some("default-src *; frame-ancestors 'none'"),
        )));
        assert_eq!(
            v,
            Verdict::not("Content-Security-Policy: frame-ancestors 'none'")
        );
        let open = judge(Ok(resp(
            200,
            None,
            Some("frame-ancestors 'self' https://app.example"),
        )));
        assert!(open.embeddable);
    }

    #[test]
    fn unreachable_and_server_errors_refuse() {
        let v = judge(Err(ProbeError::Unreachable("refused".into())));
        assert!(!v.embeddable && v.reason.unwrap().contains("unreachable"));
        let v = judge(Ok(resp(502, None, None)));
        assert!(!v.embeddable && v.reason.unwrap().contains("502"));
    }
}
