//! Where the E2B platform, envd and previews are, and how we identify ourselves to them.
//!
//! Sandbox hosts are `{port}-{sandboxID}.{domain}`, where `domain` is the one the create or connect
//! answer carries (a bring-your-own-cloud team's), else `E2B_DOMAIN`, as the SDKs do. A server on plain
//! HTTP (self-hosted E2B, `e2b-local`) is reached through configuration alone, either
//!
//! - by host name: `E2B_SANDBOX_SCHEME=http` and a domain (which may carry a port) whose hosts resolve to
//!   the server, or
//! - by routing headers on one base URL: `E2B_SANDBOX_URL`, to which envd requests (and Slipway's own
//!   preview probes) go with `E2b-Sandbox-Id` and `E2b-Sandbox-Port`, as the SDKs do with that variable.
//!
//! Preview URLs handed to browsers always keep the host-name form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The platform API of E2B's cloud.
pub const DEFAULT_API_URL: &str = "https://api.e2b.app";
/// The domain sandbox hosts live under.
pub const DEFAULT_DOMAIN: &str = "e2b.app";
/// The port envd listens on inside every sandbox.
pub const ENVD_PORT: u16 = 49983;
/// The workspace directory inside an E2B sandbox (the default user's home is `/home/user`).
pub const WORKSPACE_PATH: &str = "/home/user/project";
/// How long one control-plane call may take, its retries included (the SDKs' request timeout).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// E2B's own domains, whose envd is reached through the shared `sandbox.{domain}` host with routing
/// headers (the SDK's `SUPPORTED_SANDBOX_DOMAINS`); any other domain uses `{port}-{sandboxID}.{domain}`.
const SHARED_HOST_DOMAINS: &[&str] = &[
    "e2b.app",
    "e2b.dev",
    "e2b.pro",
    "e2b-staging.dev",
    "e2b-tango.dev",
    "e2b-juliett.dev",
    "foxtrot-2.e2b.dev",
];

/// The E2B API key. Its `Debug` and `Display` never print it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the `X-API-Key` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The scheme of sandbox hosts, `E2B_SANDBOX_SCHEME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Https,
    /// A self-hosted or local server without TLS.
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

impl FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "https" => Ok(Scheme::Https),
            "http" => Ok(Scheme::Http),
            other => Err(format!("expected `https` or `http`, got {other:?}")),
        }
    }
}

/// How to reach E2B.
#[derive(Debug, Clone)]
pub struct E2bConfig {
    pub api_key: ApiKey,
    /// The platform API base, `E2B_API_URL` (default [`DEFAULT_API_URL`]).
    pub api_url: String,
    /// The sandbox domain, `E2B_DOMAIN` (default [`DEFAULT_DOMAIN`]), unless a sandbox's create or
    /// connect answer names its own.
    pub domain: String,
    /// The scheme of sandbox hosts, envd's and previews' alike.
    pub scheme: Scheme,
    /// `E2B_SANDBOX_URL`: every envd request goes to this base and names its sandbox with routing headers
    /// only, as the SDKs allow (self-hosted E2B's client proxy, `e2b-local`).
    pub sandbox_url: Option<String>,
    /// The template sandboxes are created from, `E2B_TEMPLATE`.
    pub template: String,
    /// envd's port inside the sandbox ([`ENVD_PORT`]).
    pub envd_port: u16,
    /// The deadline of one control-plane call, every retry included ([`CALL_TIMEOUT`]).
    pub call_timeout: Duration,
    /// `E2B_PRIVATE_PREVIEWS`: create sandboxes with `allowPublicTraffic: false`, so that only the holder
    /// of a sandbox's traffic access token (the preview gateway) reaches its ports.
    pub private_previews: bool,
}

impl E2bConfig {
    /// A configuration for E2B's cloud with the default URLs.
    pub fn new(api_key: ApiKey, template: impl Into<String>) -> Self {
        Self {
            api_key,
            api_url: DEFAULT_API_URL.to_owned(),
            domain: DEFAULT_DOMAIN.to_owned(),
            scheme: Scheme::Https,
            sandbox_url: None,
            template: template.into(),
            envd_port: ENVD_PORT,
            call_timeout: CALL_TIMEOUT,
            private_previews: false,
        }
    }

    pub(crate) fn api_base(&self) -> &str {
        self.api_url.trim_end_matches('/')
    }

    /// The domain of a sandbox: the one its answers carried, else ours.
    pub(crate) fn domain_of<'a>(&'a self, answered: Option<&'a str>) -> &'a str {
        answered.filter(|d| !d.is_empty()).unwrap_or(&self.domain)
    }

    /// The base URL envd requests for `sandbox_id` go to (routing headers are sent in every case).
    pub(crate) fn envd_base(&self, sandbox_id: &str, domain: &str) -> String {
        match &self.sandbox_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if SHARED_HOST_DOMAINS.contains(&domain) => {
                format!("{}://sandbox.{domain}", self.scheme.as_str())
            }
            None => format!(
                "{}://{}-{sandbox_id}.{domain}",
                self.scheme.as_str(),
                self.envd_port
            ),
        }
    }

    /// The URL a browser opens for `port` of `sandbox_id`: always the host-name form.
    pub(crate) fn preview_url(&self, sandbox_id: &str, domain: &str, port: u16) -> String {
        format!("{}://{port}-{sandbox_id}.{domain}", self.scheme.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_never_prints() {
        let config = E2bConfig::new(ApiKey::new("e2b_secret"), "base");
        assert!(!format!("{config:?}").contains("e2b_secret"));
    }

    #[test]
    fn cloud_urls_follow_the_sdk_scheme() {
        let config = E2bConfig::new(ApiKey::new("k"), "base");
        assert_eq!(
            config.envd_base("sbx1", "e2b.app"),
            "https://sandbox.e2b.app"
        );
        assert_eq!(
            config.preview_url("sbx1", "e2b.app", 3000),
            "https://3000-sbx1.e2b.app"
        );
        // A domain the answer carried (a BYOC cluster) is not one of E2B's shared hosts.
        assert_eq!(
            config.envd_base("sbx1", "byoc.example.dev"),
            "https://49983-sbx1.byoc.example.dev"
        );
        assert_eq!(
            config.preview_url("sbx1", "byoc.example.dev", 5173),
            "https://5173-sbx1.byoc.example.dev"
        );
    }

    #[test]
    fn the_answers_domain_wins_over_ours() {
        let config = E2bConfig::new(ApiKey::new("k"), "base");
        assert_eq!(
            config.domain_of(Some("byoc.example.dev")),
            "byoc.example.dev"
        );
        assert_eq!(config.domain_of(Some("")), "e2b.app");
        assert_eq!(config.domain_of(None), "e2b.app");
    }

    #[test]
    fn plain_http_by_host_name_or_by_headers() {
        let by_host = E2bConfig {
            scheme: Scheme::Http,
            domain: "localhost:41000".into(),
            ..E2bConfig::new(ApiKey::new("k"), "base")
        };
        assert_eq!(
            by_host.envd_base("sbx1", "localhost:41000"),
            "http://49983-sbx1.localhost:41000"
        );
        assert_eq!(
            by_host.preview_url("sbx1", "localhost:41000", 3000),
            "http://3000-sbx1.localhost:41000"
        );
        let by_headers = E2bConfig {
            sandbox_url: Some("http://127.0.0.1:41000/".into()),
            ..by_host
        };
        assert_eq!(
            by_headers.envd_base("sbx1", "localhost:41000"),
            "http://127.0.0.1:41000"
        );
        // Browsers still get the host-name form.
        assert_eq!(
            by_headers.preview_url("sbx1", "localhost:41000", 3000),
            "http://3000-sbx1.localhost:41000"
        );
    }

    #[test]
    fn schemes_parse() {
        assert_eq!("http".parse::<Scheme>(), Ok(Scheme::Http));
        assert_eq!("https".parse::<Scheme>(), Ok(Scheme::Https));
        assert!("ftp".parse::<Scheme>().is_err());
    }
}
