//! One resume attempt: connect (which resumes), check the recorded preview, and only when it does not
//! answer restart the dev server, reinstalling dependencies only when node_modules is missing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Inner;
use crate::ports::{CommandSpec, SandboxError};
use crate::usecases::framework;
use crate::usecases::output_tail::OutputTail;
use crate::usecases::preview::{wait_for_dev_server, wait_until_up, Readiness};
use crate::usecases::snapshot::expires_after;
use crate::{Job, SandboxId};

/// A resume that worked: the preview that answers, and when the provider will stop the sandbox.
pub(super) struct Attempted {
    pub(super) preview_url: String,
    pub(super) expires_at: DateTime<Utc>,
}

/// How one attempt failed: only the provider's not-found on connect means the sandbox is gone.
pub(super) enum AttemptError {
    Expired(String),
    Failed(String),
}

impl Inner {
    /// The first attempt and, unless the sandbox is gone, one retry after the backoff.
    pub(super) async fn attempts(&self, job: &Job) -> Result<Attempted, AttemptError> {
        match self.attempt(job).await {
            Err(AttemptError::Failed(reason)) => {
                tracing::warn!(attempt = 1, %reason, "resume attempt failed; retrying");
                tokio::time::sleep(self.config.retry_backoff).await;
                self.attempt(job).await
            }
            other => other,
        }
    }

    async fn attempt(&self, job: &Job) -> Result<Attempted, AttemptError> {
        let runtime = self.deps.runtime.as_ref();
        let Some(sandbox_id) = job.sandbox_id.as_ref() else {
            return Err(AttemptError::Expired("the job has no sandbox".into()));
        };
        let timeout = self.config.provider_timeout;
        // Connect sets the timeout (or keeps a longer one): counted from just before it, never overstated.
        let connected_at = Utc::now();
        runtime
            .connect(sandbox_id, timeout)
            .await
            .map_err(|e| match e {
                SandboxError::NotFound(reason) => AttemptError::Expired(reason),
                other => AttemptError::Failed(format!("connect failed: {other}")),
            })?;

        let preview_url = match self.answering_preview(job).await {
            Some(url) => url,
            None => self.restart_dev_server(sandbox_id, job).await?,
        };

        // The backstop counts from now, when the preview is known to answer.
        let set_at = Utc::now();
        let expires_at = match runtime.set_timeout(sandbox_id, timeout).await {
            Ok(()) => expires_after(set_at, timeout),
            Err(error) => {
                tracing::warn!(error = %error, "could not set the provider timeout backstop");
                expires_after(connected_at, timeout)
            }
        };
        Ok(Attempted {
            preview_url,
            expires_at,
        })
    }

    /// The recorded preview, when it answers within the short check deadline.
    async fn answering_preview(&self, job: &Job) -> Option<String> {
        let url = job.preview_url.as_deref()?;
        let up = wait_until_up(
            self.deps.probe.as_ref(),
            url,
            self.config.preview_check_deadline,
            self.config.probe_interval,
        )
        .await;
        up.map(|_| url.to_owned())
    }

    /// Restarts the dev server of the detected framework, reinstalling only when node_modules is gone.
    async fn restart_dev_server(
        &self,
        sandbox_id: &SandboxId,
        job: &Job,
    ) -> Result<String, AttemptError> {
        let runtime = self.deps.runtime.as_ref();
        let failed = |what: &str, e: SandboxError| AttemptError::Failed(format!("{what}: {e}"));
        let workspace = job
            .workspace_path
            .clone()
            .unwrap_or_else(|| runtime.workspace_path());

        let text = runtime
            .read_file(sandbox_id, "package.json")
            .await
            .map_err(|e| failed("could not read package.json", e))?;
        let facts = self
            .deps
            .package_json
            .parse(&String::from_utf8_lossy(&text))
            .map_err(|e| AttemptError::Failed(e.to_string()))?;
        let dev = framework::detect(&facts);

        if facts.needs_install() && !self.node_modules_present(sandbox_id, &workspace).await? {
            tracing::info!("node_modules is missing; reinstalling dependencies");
            let out = runtime
                .run(
                    sandbox_id,
                    CommandSpec::new(
                        "npm install --no-audit --no-fund",
                        self.config.install_timeout,
                    )
                    .cwd(workspace.clone()),
                )
                .await
                .map_err(|e| failed("npm install failed", e))?;
            if !out.success() {
                let tail: String = out.stderr.chars().take(500).collect();
                return Err(AttemptError::Failed(format!(
                    "npm install exited with {}: {tail}",
                    out.exit_code
                )));
            }
        }

        tracing::info!(framework = ?dev.framework, port = dev.port, "restarting the dev server");
        let output = OutputTail::new();
        let mut server = runtime
            .run_background(
                sandbox_id,
                CommandSpec {
                    output: Some(output.sink()),
                    ..CommandSpec::new(dev.command, self.config.readiness_deadline)
                        .cwd(workspace)
                        .env("PORT", dev.port.to_string())
                },
            )
            .await
            .map_err(|e| failed("could not start the dev server", e))?;
        let url = runtime
            .preview_url(sandbox_id, dev.port)
            .await
            .map_err(|e| failed("no preview url", e))?;
        let readiness = wait_for_dev_server(
            self.deps.probe.as_ref(),
            &url,
            &mut server,
            self.config.readiness_deadline,
            self.config.probe_interval,
        )
        .await;
        match readiness {
            Readiness::Up(_) => Ok(url),
            Readiness::Exited(exit) => {
                let said = if exit.output_tail.trim().is_empty() {
                    output.lines()
                } else {
                    exit.output_tail
                };
                Err(AttemptError::Failed(format!(
                    "the dev server exited with code {}: {said}",
                    exit.exit_code
                )))
            }
            Readiness::NotUp(seen) => Err(AttemptError::Failed(format!(
                "the dev server did not answer within {:?} (last: {}): {}",
                self.config.readiness_deadline,
                seen.map(|s| s.to_string()).unwrap_or_default(),
                output.lines()
            ))),
        }
    }

    async fn node_modules_present(
        &self,
        sandbox_id: &SandboxId,
        workspace: &str,
    ) -> Result<bool, AttemptError> {
        let out = self
            .deps
            .runtime
            .run(
                sandbox_id,
                CommandSpec::new("test -d node_modules", Duration::from_secs(10)).cwd(workspace),
            )
            .await
            .map_err(|e| AttemptError::Failed(format!("could not look for node_modules: {e}")))?;
        Ok(out.success())
    }
}
