//! Preview URLs: `{scheme}://{label}.{PREVIEW_DOMAIN}/`, with the owner's signed token in `signed` mode,
//! and the way back from a request's `Host` to its job.

use chrono::{DateTime, Utc};
use domain::gateway::{self, PreviewSecret, Purpose};
use domain::JobId;

use super::config::{Access, TOKEN_TTL};

/// The query parameter an owner's signed preview URL carries.
pub const TOKEN_PARAM: &str = "slipway_preview_token";
/// The cookie a token is exchanged for, on the preview host only.
pub const COOKIE_NAME: &str = "slipway_preview";

/// Makes and reads preview hosts.
#[derive(Debug, Clone)]
pub struct PreviewLinks {
    secret: PreviewSecret,
    /// The suffix's host name, lowercase, without its port.
    suffix_host: String,
    /// The suffix as configured (host and optional port), lowercase.
    domain: String,
    scheme: &'static str,
    access: Access,
}

impl PreviewLinks {
    /// `None` when `domain` is not `host[:port]`.
    pub fn new(domain: &str, secret: PreviewSecret, access: Access) -> Option<Self> {
        let domain = domain.trim().trim_end_matches('/').to_ascii_lowercase();
        let (host, port) = match domain.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain.as_str(), None),
        };
        let host_ok = !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !host_ok || !port_ok {
            return None;
        }
        let scheme = if host == "localhost" || host.ends_with(".localhost") {
            "http"
        } else {
            "https"
        };
        Some(Self {
            secret,
            suffix_host: host.to_owned(),
            domain: domain.clone(),
            scheme,
            access,
        })
    }

    /// The suffix as configured (host and optional port).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn access(&self) -> Access {
        self.access
    }

    pub fn secret(&self) -> &PreviewSecret {
        &self.secret
    }

    /// `http` for `localhost` suffixes, else `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Whether previews are served over https (cookies are then `Secure`).
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The preview URL handed to `job`'s owner at `now`.
    pub fn url_for(&self, job: JobId, now: DateTime<Utc>) -> String {
        let label = gateway::label_for(&self.secret, job);
        let base = format!("{}://{label}.{}/", self.scheme, self.domain);
        match self.access {
            Access::Public => base,
            Access::Signed => {
                let expires = now + chrono::Duration::from_std(TOKEN_TTL).unwrap_or_default();
                let token = gateway::issue(&self.secret, Purpose::Token, job, expires);
                format!("{base}?{TOKEN_PARAM}={token}")
            }
        }
    }

    /// The job a request's `Host` names, when it is one of our preview hosts with a valid label.
    pub fn job_of_host(&self, host: &str) -> Option<JobId> {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let host = host.trim_end_matches('.');
        let label = host
            .len()
            .checked_sub(self.suffix_host.len() + 1)
            .and_then(|n| {
                let (label, rest) = host.split_at_checked(n)?;
                let suffix = rest.strip_prefix('.')?;
                suffix
                    .eq_ignore_ascii_case(&self.suffix_host)
                    .then_some(label)
            })?;
        gateway::job_of_label(&self.secret, &label.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(domain: &str, access: Access) -> PreviewLinks {
        PreviewLinks::new(domain, PreviewSecret::new("0123456789abcdef"), access).unwrap()
    }

    #[test]
    fn localhost_suffixes_are_http_and_the_rest_https() {
        let job = JobId::new();
        let local = links("preview.localhost:8001", Access::Public);
        let url = local.url_for(job, Utc::now());
        assert!(
            url.starts_with("http://") && url.ends_with(".preview.localhost:8001/"),
            "{url}"
        );
        let public = links("Preview.Example.com", Access::Public);
        let url = public.url_for(job, Utc::now());
        assert!(
            url.starts_with("https://") && url.ends_with(".preview.example.com/"),
            "{url}"
        );
    }

    #[test]
    fn a_host_leads_back_to_its_job_only_under_our_suffix() {
        let job = JobId::new();
        let l = links("preview.localhost:8001", Access::Public);
        let label = gateway::label_for(l.secret(), job);
        assert_eq!(
            l.job_of_host(&format!("{label}.preview.localhost:8001")),
            Some(job)
        );
        assert_eq!(
            l.job_of_host(&format!("{label}.preview.localhost")),
            Some(job)
        );
        assert_eq!(
            l.job_of_host(&format!("{}.PREVIEW.localhost", label.to_uppercase())),
            Some(job)
        );
        assert_eq!(l.job_of_host(&format!("{label}.evil.localhost")), None);
        assert_eq!(l.job_of_host(&format!("x.{label}.preview.localhost")), None);
        assert_eq!(l.job_of_host("preview.localhost"), None);
        assert_eq!(l.job_of_host(""), None);
    }

    #[test]
    fn signed_urls_carry_a_token_for_their_job() {
        let job = JobId::new();
        let l = links("preview.example.com", Access::Signed);
        let url = l.url_for(job, Utc::now());
        let token = url.split_once(&format!("?{TOKEN_PARAM}=")).unwrap().1;
        assert!(gateway::verify(
            l.secret(),
            Purpose::Token,
            job,
            token,
            Utc::now()
        ));
    }

    #[test]
    fn bad_domains_are_refused() {
        for bad in ["", "a..b", "host:port", "host:0", "sp ace.com", "x/y"] {
            assert!(
                PreviewLinks::new(bad, PreviewSecret::new("k"), Access::Public).is_none(),
                "{bad}"
            );
        }
    }
}
