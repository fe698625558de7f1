//! Where the E2B platform and envd are, and how we identify ourselves to them.

use std::fmt;

/// The platform API of E2B's cloud.
pub const DEFAULT_API_URL: &str = "https://api.e2b.app";
/// The domain sandbox hosts live under.
pub const DEFAULT_DOMAIN: &str = "e2b.app";
/// The port envd listens on inside every sandbox.
pub const ENVD_PORT: u16 = 49983;
/// The workspace directory inside an E2B sandbox (the default user's home is `/home/user`).
pub const WORKSPACE_PATH: &str = "/home/user/project";

/// Domains whose envd is reached through the shared `sandbox.{domain}` host with routing headers, as the
/// official SDKs do; any other domain uses the `{port}-{sandboxID}.{domain}` host form.
const SHARED_HOST_DOMAINS: &[&str] = &["e2b.app", "e2b.dev"];

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

/// How to reach E2B.
#[derive(Debug, Clone)]
pub struct E2bConfig {
    pub api_key: ApiKey,
    /// The platform API base, `E2B_API_URL` (default [`DEFAULT_API_URL`]).
    pub api_url: String,
    /// The sandbox domain, `E2B_DOMAIN` (default [`DEFAULT_DOMAIN`]).
    pub domain: String,
    /// Overrides the envd base for every sandbox (`E2B_SANDBOX_URL`), as the SDKs allow; the sandbox is then
    /// named by the `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers only. Set for the local E2B-compatible
    /// server, whose previews are then `{sandbox_url}/preview/{sandboxID}/{port}/` (a local-only extension).
    pub sandbox_url: Option<String>,
    /// The template sandboxes are created from, `E2B_TEMPLATE`.
    pub template: String,
    /// envd's port inside the sandbox ([`ENVD_PORT`]).
    pub envd_port: u16,
}

impl E2bConfig {
    /// A configuration for E2B's cloud with the default URLs.
    pub fn new(api_key: ApiKey, template: impl Into<String>) -> Self {
        Self {
            api_key,
            api_url: DEFAULT_API_URL.to_owned(),
            domain: DEFAULT_DOMAIN.to_owned(),
            sandbox_url: None,
            template: template.into(),
            envd_port: ENVD_PORT,
        }
    }

    pub(crate) fn api_base(&self) -> &str {
        self.api_url.trim_end_matches('/')
    }

    /// The base URL envd requests for `sandbox_id` go to (routing headers are sent in every case).
    pub(crate) fn envd_base(&self, sandbox_id: &str) -> String {
        match &self.sandbox_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if SHARED_HOST_DOMAINS.contains(&self.domain.as_str()) => {
                format!("https://sandbox.{}", self.domain)
            }
            None => format!("https://{}-{}.{}", self.envd_port, sandbox_id, self.domain),
        }
    }

    /// The URL a browser opens for `port` of `sandbox_id`.
    pub(crate) fn preview_url(&self, sandbox_id: &str, port: u16) -> String {
        match &self.sandbox_url {
            Some(url) => format!("{}/preview/{sandbox_id}/{port}/", url.trim_end_matches('/')),
            None => format!("https://{port}-{sandbox_id}.{}", self.domain),
        }
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
        assert_eq!(config.envd_base("sbx1"), "https://sandbox.e2b.app");
        assert_eq!(
            config.preview_url("sbx1", 3000),
            "https://3000-sbx1.e2b.app"
        );
        let custom = E2bConfig {
            domain: "example.dev".into(),
            ..config
        };
        assert_eq!(custom.envd_base("sbx1"), "https://49983-sbx1.example.dev");
    }

    #[test]
    fn sandbox_url_override_serves_envd_and_previews() {
        let config = E2bConfig {
            sandbox_url: Some("http://127.0.0.1:9/".into()),
            ..E2bConfig::new(ApiKey::new("k"), "base")
        };
        assert_eq!(config.envd_base("sbx1"), "http://127.0.0.1:9");
        assert_eq!(
            config.preview_url("sbx1", 3000),
            "http://127.0.0.1:9/preview/sbx1/3000/"
        );
    }
}
