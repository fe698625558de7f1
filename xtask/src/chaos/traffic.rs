//! The builds the campaign asks for, through the API as the front end would: a project per user, then
//! each build submitted at its time, retried while the api-server is down (it is killed on purpose).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use uuid::Uuid;

/// How long one submission is retried before the campaign gives up on it (and counts it lost).
const SUBMIT_PATIENCE: Duration = Duration::from_secs(90);

/// A founder: a token and a project.
#[derive(Debug, Clone)]
pub struct Founder {
    pub token: String,
    pub project: String,
}

/// An HTTP client of the api-server at `base`.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self { base, client })
    }

    /// POSTs `body`, retrying connection errors and 5xx answers for up to [`SUBMIT_PATIENCE`]; the body
    /// of the first 2xx answer.
    async fn post(&self, token: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + SUBMIT_PATIENCE;
        let mut last = String::new();
        while Instant::now() < deadline {
            let sent = self
                .client
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    return response.json().await.context("answer is not JSON")
                }
                Ok(response) if response.status().is_client_error() => {
                    anyhow::bail!("POST {path} answered {}", response.status())
                }
                Ok(response) => last = response.status().to_string(),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::bail!("POST {path} did not succeed within {SUBMIT_PATIENCE:?}: {last}")
    }

    pub async fn create_project(&self, token: &str) -> anyhow::Result<String> {
        let project = self
            .post(token, "/api/projects", &json!({"name": "chaos"}))
            .await?;
        project["id"]
            .as_str()
            .map(str::to_owned)
            .context("the project answer has no id")
    }

    /// Submits one build; the job id the API accepted.
    pub async fn submit(&self, founder: &Founder, n: usize) -> anyhow::Result<Uuid> {
        let body = json!({
            "project_id": founder.project,
            "goal": format!("Chaos build number {n}: a page that says hello"),
        });
        let answer = self
            .post(&founder.token, "/api/generation/start", &body)
            .await?;
        answer["job_id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .context("the start answer has no job_id")
    }
}
