//! The platform API (`openapi.yml`): sandboxes create, get, list (v2), connect, pause, timeout, kill, all
//! authenticated with `X-API-Key` and retried as the SDKs do ([`crate::retry`]), create included: a create
//! answered 502/503/504 may have made a sandbox anyway, and the twin a retry then makes carries the job's
//! metadata, so the reconciler finds it and kills it as a sandbox its job does not own.

use std::collections::BTreeMap;
use std::time::Duration;

use domain::ports::{SandboxError, SandboxSpec};
use reqwest::{Client, RequestBuilder, Response};
use serde::{Deserialize, Serialize};

use crate::access::{EnvdToken, SandboxAccess};
use crate::config::E2bConfig;
use crate::error::{from_reqwest, from_response};
use crate::retry::RetryPolicy;

/// The metadata key and value every Slipway sandbox carries, so that `list` finds ours only.
pub(crate) const SLIPWAY_KEY: &str = "slipway";
pub(crate) const SLIPWAY_VALUE: &str = "1";

/// The most pages `list` follows, a guard against a server that never stops paginating.
const MAX_PAGES: usize = 1000;
/// The largest page `GET /v2/sandboxes` gives (the spec's maximum).
const PAGE_LIMIT: &str = "100";

/// `NewSandbox` in the spec.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox<'a> {
    #[serde(rename = "templateID")]
    template_id: &'a str,
    timeout: u32,
    /// Past its timeout the provider pauses the sandbox instead of killing it.
    auto_pause: bool,
    /// Always true: only a secure sandbox gets an envd access token, and without one anyone who knows its
    /// id could run commands in it.
    secure: bool,
    metadata: BTreeMap<&'static str, String>,
    /// With private previews, `allowPublicTraffic: false`: the sandbox's ports answer only requests that
    /// carry its traffic access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<NetworkBody>,
}

/// `SandboxNetworkConfig` in the spec: the field we set.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkBody {
    allow_public_traffic: bool,
}

/// `ConnectSandbox` and `SandboxTimeoutRequest` in the spec.
#[derive(Debug, Serialize)]
struct TimeoutBody {
    timeout: u32,
}

/// `Sandbox` in the spec (create and connect answers): the fields we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SandboxInfo {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(default)]
    pub envd_access_token: Option<EnvdToken>,
    /// Nullable: only a sandbox on another cluster has a domain of its own.
    #[serde(default)]
    pub domain: Option<String>,
    /// Nullable: set for a sandbox whose previews are private.
    #[serde(default)]
    pub traffic_access_token: Option<EnvdToken>,
}

impl SandboxInfo {
    pub fn access(&self) -> SandboxAccess {
        SandboxAccess {
            token: self.envd_access_token.clone(),
            domain: self.domain.clone(),
            traffic: self.traffic_access_token.clone(),
        }
    }
}

/// `SandboxDetail` in the spec: the fields we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SandboxDetail {
    pub state: WireState,
    #[serde(default)]
    pub envd_access_token: Option<EnvdToken>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub lifecycle: Option<Lifecycle>,
}

impl SandboxDetail {
    pub fn access(&self) -> SandboxAccess {
        SandboxAccess {
            token: self.envd_access_token.clone(),
            domain: self.domain.clone(),
            traffic: None,
        }
    }
}

/// `SandboxLifecycle` in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Lifecycle {
    #[serde(default)]
    pub auto_resume: bool,
    pub on_timeout: OnTimeout,
}

/// `SandboxOnTimeout` in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnTimeout {
    Kill,
    Pause,
    #[serde(other)]
    Unknown,
}

/// `ListedSandbox` in the spec: the fields we use.
#[derive(Debug, Deserialize)]
pub(crate) struct ListedSandbox {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    pub state: WireState,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `SandboxState` in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireState {
    Running,
    Paused,
}

/// What the pause endpoint answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseAnswer {
    Paused,
    /// 409: the sandbox is already paused (the SDKs read it so).
    AlreadyPaused,
}

/// A timeout in whole seconds, rounded up so that a sub-second timeout does not mean "now".
pub(crate) fn timeout_secs(timeout: Duration) -> u32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).min(i32::MAX as u32)
}

/// The platform API client.
#[derive(Debug, Clone)]
pub(crate) struct ControlPlane {
    client: Client,
    config: E2bConfig,
    retry: RetryPolicy,
}

impl ControlPlane {
    pub fn new(client: Client, config: E2bConfig, retry: RetryPolicy) -> Self {
        Self {
            client,
            config,
            retry,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base())
    }

    /// Sends with retries; answers outside 2xx and `accept` become errors.
    async fn call(
        &self,
        op: &'static str,
        accept: &[u16],
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, SandboxError> {
        self.retry
            .run(op, |left| {
                let request = build(&self.client)
                    .header("X-API-Key", self.config.api_key.expose())
                    .timeout(left);
                async move {
                    let resp = request.send().await.map_err(|e| from_reqwest(&e))?;
                    let status = resp.status().as_u16();
                    if resp.status().is_success() || accept.contains(&status) {
                        return Ok(resp);
                    }
                    Err(from_response(resp).await)
                }
            })
            .await
    }

    async fn json<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T, SandboxError> {
        resp.json::<T>().await.map_err(|e| from_reqwest(&e).error)
    }

    /// `POST /sandboxes`: secure, auto-pausing, with our metadata.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        let metadata = BTreeMap::from([
            ("job_id", spec.job_id.to_string()),
            ("user_id", spec.user_id.to_string()),
            ("project_id", spec.project_id.to_string()),
            (SLIPWAY_KEY, SLIPWAY_VALUE.to_owned()),
        ]);
        let body = NewSandbox {
            template_id: &self.config.template,
            timeout: timeout_secs(spec.timeout),
            auto_pause: spec.auto_pause,
            secure: true,
            metadata,
            network: self.config.private_previews.then_some(NetworkBody {
                allow_public_traffic: false,
            }),
        };
        let resp = self
            .call("create", &[], |c| {
                c.post(self.url("/sandboxes")).json(&body)
            })
            .await?;
        Self::json(resp).await
    }

    /// `GET /sandboxes/{id}`.
    pub async fn get(&self, id: &str) -> Result<SandboxDetail, SandboxError> {
        let resp = self
            .call("get", &[], |c| c.get(self.url(&format!("/sandboxes/{id}"))))
            .await?;
        Self::json(resp).await
    }

    /// `POST /sandboxes/{id}/connect`: resumes a paused sandbox (201) or answers a running one (200); its
    /// timeout becomes at least `timeout` from now, never shorter.
    pub async fn connect(&self, id: &str, timeout: Duration) -> Result<SandboxInfo, SandboxError> {
        let body = TimeoutBody {
            timeout: timeout_secs(timeout),
        };
        let resp = self
            .call("connect", &[], |c| {
                c.post(self.url(&format!("/sandboxes/{id}/connect")))
                    .json(&body)
            })
            .await?;
        Self::json(resp).await
    }

    /// `POST /sandboxes/{id}/pause`: 204 paused, 409 already paused.
    pub async fn pause(&self, id: &str) -> Result<PauseAnswer, SandboxError> {
        let resp = self
            .call("pause", &[409], |c| {
                c.post(self.url(&format!("/sandboxes/{id}/pause")))
                    .json(&serde_json::json!({}))
            })
            .await?;
        if resp.status().as_u16() == 409 {
            Ok(PauseAnswer::AlreadyPaused)
        } else {
            Ok(PauseAnswer::Paused)
        }
    }

    /// `POST /sandboxes/{id}/timeout`.
    pub async fn set_timeout(&self, id: &str, timeout: Duration) -> Result<(), SandboxError> {
        let body = TimeoutBody {
            timeout: timeout_secs(timeout),
        };
        self.call("set_timeout", &[], |c| {
            c.post(self.url(&format!("/sandboxes/{id}/timeout")))
                .json(&body)
        })
        .await?;
        Ok(())
    }

    /// `DELETE /sandboxes/{id}`.
    pub async fn kill(&self, id: &str) -> Result<(), SandboxError> {
        self.call("kill", &[], |c| {
            c.delete(self.url(&format!("/sandboxes/{id}")))
        })
        .await?;
        Ok(())
    }

    /// `GET /v2/sandboxes` with our metadata and both states, following `X-Next-Token` to the last page.
    pub async fn list_ours(&self) -> Result<Vec<ListedSandbox>, SandboxError> {
        let metadata = format!("{SLIPWAY_KEY}={SLIPWAY_VALUE}");
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let token = next.clone();
            let resp = self
                .call("list", &[], |c| {
                    let mut query = vec![
                        ("metadata", metadata.clone()),
                        ("state", "running,paused".to_owned()),
                        ("limit", PAGE_LIMIT.to_owned()),
                    ];
                    if let Some(token) = &token {
                        query.push(("nextToken", token.clone()));
                    }
                    c.get(self.url("/v2/sandboxes")).query(&query)
                })
                .await?;
            let following = resp
                .headers()
                .get("x-next-token")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let page: Vec<ListedSandbox> = Self::json(resp).await?;
            all.extend(page);
            match following {
                Some(token) if Some(&token) != next.as_ref() => next = Some(token),
                _ => return Ok(all),
            }
        }
        Err(SandboxError::Provider(format!(
            "sandbox list did not end after {MAX_PAGES} pages"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(timeout_secs(Duration::from_millis(1500)), 2);
        assert_eq!(timeout_secs(Duration::from_secs(300)), 300);
        assert_eq!(timeout_secs(Duration::from_secs(u64::MAX)), i32::MAX as u32);
    }

    #[test]
    fn sandboxes_are_created_secure_and_auto_pausing() {
        let body = NewSandbox {
            template_id: "base",
            timeout: 1800,
            auto_pause: true,
            secure: true,
            metadata: BTreeMap::from([(SLIPWAY_KEY, SLIPWAY_VALUE.to_owned())]),
            network: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "templateID": "base",
                "timeout": 1800,
                "autoPause": true,
                "secure": true,
                "metadata": {"slipway": "1"}
            })
        );
    }

    #[test]
    fn private_previews_refuse_public_traffic_and_keep_the_token() {
        let body = NewSandbox {
            template_id: "base",
            timeout: 60,
            auto_pause: true,
            secure: true,
            metadata: BTreeMap::new(),
            network: Some(NetworkBody {
                allow_public_traffic: false,
            }),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap()["network"],
            serde_json::json!({"allowPublicTraffic": false})
        );
        let info: SandboxInfo = serde_json::from_str(
            r#"{"templateID":"base","sandboxID":"i8d9","clientID":"c","envdVersion":"0.2.4",
                "envdAccessToken":"tok","trafficAccessToken":"traffic","domain":null}"#,
        )
        .unwrap();
        assert_eq!(
            info.access().traffic.map(|t| t.expose().to_owned()),
            Some("traffic".into())
        );
    }

    #[test]
    fn answers_parse_as_the_spec_writes_them() {
        let info: SandboxInfo = serde_json::from_str(
            r#"{"templateID":"base","sandboxID":"i8d9","clientID":"c","envdVersion":"0.2.4",
                "envdAccessToken":"tok","trafficAccessToken":null,"domain":null}"#,
        )
        .unwrap();
        assert_eq!(info.sandbox_id, "i8d9");
        assert_eq!(
            info.access().token.map(|t| t.expose().to_owned()),
            Some("tok".into())
        );
        assert_eq!(info.access().domain, None);
        let detail: SandboxDetail = serde_json::from_str(
            r#"{"templateID":"base","sandboxID":"i8d9","clientID":"c","startedAt":"2025-01-01T00:00:00Z",
                "endAt":"2025-01-01T00:30:00Z","cpuCount":2,"memoryMB":512,"diskSizeMB":1024,
                "state":"paused","envdVersion":"0.2.4","domain":"byoc.example.dev",
                "lifecycle":{"autoResume":false,"onTimeout":"pause"}}"#,
        )
        .unwrap();
        assert_eq!(detail.state, WireState::Paused);
        assert_eq!(detail.access().domain.as_deref(), Some("byoc.example.dev"));
        assert_eq!(
            detail.lifecycle,
            Some(Lifecycle {
                auto_resume: false,
                on_timeout: OnTimeout::Pause
            })
        );
    }
}
