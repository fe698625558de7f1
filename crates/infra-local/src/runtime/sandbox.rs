//! The [`SandboxRuntime`] port over local sandboxes.

use std::time::Duration;

use async_trait::async_trait;
use domain::ports::{
    BackgroundCommand, CommandOutput, CommandSpec, PauseOutcome, ProviderSandbox, ProviderState,
    SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobId, SandboxId};
use nix::sys::signal::Signal;

use super::record::{self, Metadata, RunState, SandboxRecord};
use super::{flock, id, io_error, paths, LocalRuntime};

#[async_trait]
impl SandboxRuntime for LocalRuntime {
    #[tracing::instrument(skip_all, fields(job_id = %spec.job_id, user_id = %spec.user_id, sandbox_id = tracing::field::Empty), err)]
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxId, SandboxError> {
        let (id, dir) = loop {
            let id = id::new_sandbox_id();
            let dir = self.inner.dir(&id);
            match tokio::fs::create_dir(&dir).await {
                Ok(()) => break (id, dir),
                // A clash of 62 random bits: draw again.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error("create sandbox directory", e)),
            }
        };
        tracing::Span::current().record("sandbox_id", id.as_str());
        let now = record::now_ms();
        let rec = SandboxRecord {
            created_at_ms: now,
            deadline_ms: record::deadline_after(spec.timeout),
            auto_pause: spec.auto_pause,
            metadata: Metadata {
                job_id: spec.job_id.to_string(),
                user_id: spec.user_id.to_string(),
                project_id: spec.project_id.to_string(),
            },
            state: RunState::Running,
            groups: Vec::new(),
            background: Vec::new(),
            ports: Default::default(),
        };
        let made = async {
            flock::create(&dir).await?;
            for sub in ["workspace", "logs"] {
                tokio::fs::create_dir(dir.join(sub))
                    .await
                    .map_err(|e| io_error("create sandbox directory", e))?;
            }
            // Written last: a directory without state is not a sandbox yet.
            record::save(&dir, &rec).await
        }
        .await;
        if let Err(e) = made {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e);
        }
        SandboxId::try_from(id).map_err(|e| SandboxError::Provider(e.to_string()))
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn connect(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        let mut open = self.inner.open(id.as_str()).await?;
        open.signal_all(Signal::SIGCONT)?;
        open.record.state = RunState::Running;
        open.record.deadline_ms = record::deadline_after(timeout);
        open.save().await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn run(&self, id: &SandboxId, cmd: CommandSpec) -> Result<CommandOutput, SandboxError> {
        self.inner.run(id.as_str(), cmd).await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn run_background(
        &self,
        id: &SandboxId,
        cmd: CommandSpec,
    ) -> Result<BackgroundCommand, SandboxError> {
        self.inner.run_background(id.as_str(), cmd).await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, files = files.len()), err)]
    async fn write_files(
        &self,
        id: &SandboxId,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), SandboxError> {
        let open = self.inner.open(id.as_str()).await?;
        let workspace = open.workspace();
        // Every path is checked before anything is written.
        let files = files
            .into_iter()
            .map(|(path, content)| Ok((workspace.join(paths::workspace_file(&path)?), content)))
            .collect::<Result<Vec<_>, SandboxError>>()?;
        for (path, content) in files {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io_error("create directory", e))?;
            }
            tokio::fs::write(&path, content)
                .await
                .map_err(|e| io_error("write file", e))?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, path), err)]
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Vec<u8>, SandboxError> {
        let open = self.inner.open(id.as_str()).await?;
        let full = open.workspace().join(paths::workspace_file(path)?);
        match tokio::fs::read(&full).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SandboxError::NotFound(format!("{path} in sandbox {id}")))
            }
            Err(e) if full.is_dir() => {
                Err(SandboxError::Invalid(format!("{path} is a directory: {e}")))
            }
            Err(e) => Err(io_error("read file", e)),
        }
    }

    /// The logical workspace, [`paths::LOGICAL_WORKSPACE`]; each sandbox maps it to its own directory.
    fn workspace_path(&self) -> String {
        paths::LOGICAL_WORKSPACE.to_owned()
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id, port), err)]
    async fn preview_url(&self, id: &SandboxId, port: u16) -> Result<String, SandboxError> {
        let mut open = self.inner.open(id.as_str()).await?;
        let known = open.record.ports.contains_key(&port);
        let host = open.host_port(port)?;
        if !known {
            open.save().await?;
        }
        Ok(format!("http://127.0.0.1:{host}/"))
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn pause(&self, id: &SandboxId) -> Result<PauseOutcome, SandboxError> {
        let mut open = self.inner.open(id.as_str()).await?;
        if open.record.state == RunState::Paused {
            return Ok(PauseOutcome::AlreadyPaused);
        }
        open.signal_all(Signal::SIGSTOP)?;
        open.record.state = RunState::Paused;
        open.save().await?;
        Ok(PauseOutcome::Paused)
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn set_timeout(&self, id: &SandboxId, timeout: Duration) -> Result<(), SandboxError> {
        let mut open = self.inner.open(id.as_str()).await?;
        open.record.deadline_ms = record::deadline_after(timeout);
        open.save().await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err(level = "debug"))] // NotFound is expected; callers log the rest
    async fn kill(&self, id: &SandboxId) -> Result<(), SandboxError> {
        self.inner.kill(id.as_str()).await
    }

    #[tracing::instrument(skip_all, fields(sandbox_id = %id), err)]
    async fn state(&self, id: &SandboxId) -> Result<ProviderState, SandboxError> {
        let open = self.inner.open(id.as_str()).await?;
        Ok(open.record.state.into())
    }

    #[tracing::instrument(skip_all, err)]
    async fn list(&self) -> Result<Vec<ProviderSandbox>, SandboxError> {
        let mut out = Vec::new();
        for id in self.inner.sandbox_ids().await {
            let open = match self.inner.open(&id).await {
                Ok(open) => open,
                Err(SandboxError::NotFound(_)) => continue,
                Err(e) => {
                    // One unreadable sandbox must not hide the others.
                    tracing::warn!(sandbox_id = %id, error = %e, "skipping unreadable sandbox");
                    continue;
                }
            };
            let Ok(sandbox_id) = SandboxId::try_from(id.as_str()) else {
                continue;
            };
            out.push(ProviderSandbox {
                sandbox_id,
                state: open.record.state.into(),
                job_id: JobId::parse(&open.record.metadata.job_id).ok(),
            });
        }
        Ok(out)
    }
}
