//! The stages from `queued` to `ready`, in order. Each one starts with its compare-and-set, so a job moved
//! by someone else (a cancel) stops the build at its next step.

use std::time::Duration;

use chrono::Utc;

use super::context::{Build, Stop};
use super::failure::{tail, PipelineError, Step, STDERR_TAIL_CHARS};
use super::files::{self, ValidatedFiles};
use crate::ports::{CommandSpec, GeneratorError, SandboxError, SandboxSpec, TransitionUpdate};
use crate::usecases::framework::{self, PackageFacts};
use crate::usecases::output_tail::{tee, OutputTail};
use crate::usecases::preview::{self, Readiness};
use crate::usecases::snapshot::expires_after;
use crate::{JobGoal, JobStatus, SandboxId, SandboxState};

/// Past a command's own deadline, how long we wait for the runtime to report it before giving up on it.
const DEADLINE_SLACK: Duration = Duration::from_secs(30);
/// How long READY waits for a runtime that relays the dev server's output late to catch up with it.
const OUTPUT_CATCH_UP_BOUND: Duration = Duration::from_secs(2);

impl Build<'_> {
    /// Runs every stage after starting (which [`super::run_build`] wrote) up to and including the READY
    /// compare-and-set.
    pub(super) async fn run_to_ready(&mut self) -> Result<(), Stop> {
        let goal = JobGoal::try_from(self.job.goal.clone()).map_err(PipelineError::InvalidGoal)?;
        let sandbox = self.scaffold().await?;
        let files = self.code(&goal).await?;
        let package = self.install(files, &sandbox).await?;
        let preview_url = self.checks(&package, &sandbox).await?;
        self.ready(preview_url, &sandbox).await
    }

    /// scaffold: create the sandbox, then record it with the move to code, before anything runs in it.
    async fn scaffold(&mut self) -> Result<SandboxId, Stop> {
        self.advance(JobStatus::Scaffold, Self::message("Creating the sandbox"))
            .await?;
        let spec = SandboxSpec {
            job_id: self.job.id,
            user_id: self.job.user_id.clone(),
            project_id: self.job.project_id,
            timeout: self.config.sandbox_timeout,
            auto_pause: self.config.auto_pause,
        };
        // The provider counts its timeout from the create: from just before it, the figure never overstates.
        let expires_at = expires_after(Utc::now(), spec.timeout);
        // Not raced against the token: a create dropped in flight could leave a sandbox nobody knows about.
        let sandbox = self
            .deps
            .runtime
            .create(&spec)
            .await
            .map_err(PipelineError::sandbox(Step::CreateSandbox))?;
        tracing::Span::current().record("sandbox_id", tracing::field::display(&sandbox));
        self.sandbox = Some(sandbox.clone());
        let update = TransitionUpdate {
            sandbox_id: Some(sandbox.clone()),
            sandbox_state: Some(SandboxState::Running),
            sandbox_expires_at: Some(expires_at),
            workspace_path: Some(self.deps.runtime.workspace_path()),
            ..Self::message("Writing code")
        };
        // One write records the sandbox and starts the code stage. When the build cannot move on (a cancel
        // landed while the sandbox was being created), the sandbox is recorded alone, so that it is killed
        // and known rather than leaked.
        if let Err(stop) = self.advance(JobStatus::Code, update).await {
            self.record_sandbox(&sandbox).await?;
            return Err(stop);
        }
        tracing::info!("sandbox created and recorded");
        Ok(sandbox)
    }

    /// Records the sandbox whatever the job's status (unless the job has moved on to another attempt), in
    /// both stores.
    async fn record_sandbox(&mut self, sandbox: &SandboxId) -> Result<(), Stop> {
        let recorded = self
            .deps
            .repo
            .record_sandbox(self.job.id, sandbox, self.attempt())
            .await
            .map_err(Stop::Repo)?;
        match recorded {
            Some(job) => {
                self.job = job;
                self.save_live().await;
                tracing::info!("sandbox recorded; the build stops");
            }
            // Another attempt owns the job now: the sandbox is ours alone, and the caller kills it.
            None => tracing::info!("job gone or at another attempt; sandbox not recorded"),
        }
        Ok(())
    }

    /// code (entered with the sandbox's record): the generator writes the app; its files are checked before
    /// anything reaches the sandbox.
    async fn code(&mut self, goal: &JobGoal) -> Result<ValidatedFiles, Stop> {
        let generate = tokio::time::timeout(
            self.config.generate_timeout,
            self.deps.generator.generate(goal),
        );
        let generated = self
            .race(generate)
            .await?
            .unwrap_or(Err(GeneratorError::TimedOut))
            .map_err(PipelineError::Generator)?;
        let files = files::validate(generated, self.deps.package_parser.as_ref())
            .map_err(PipelineError::Files)?;
        tracing::info!(files = files.files.len(), "code generated");
        Ok(files)
    }

    /// deps: write the files, then `npm install` when package.json lists any dependency.
    async fn install(
        &mut self,
        files: ValidatedFiles,
        sandbox: &SandboxId,
    ) -> Result<PackageFacts, Stop> {
        let needs_install = files.package.needs_install();
        let message = if needs_install {
            "Writing files and installing dependencies"
        } else {
            "Writing files (no dependencies to install)"
        };
        self.advance(JobStatus::Deps, Self::message(message))
            .await?;
        self.race(self.deps.runtime.write_files(sandbox, files.files))
            .await?
            .map_err(PipelineError::sandbox(Step::WriteFiles))?;
        if needs_install {
            let timeout = self.config.install_timeout;
            let cmd = CommandSpec {
                output: Some(self.log.sink(JobStatus::Deps.as_str())),
                ..CommandSpec::new("npm install", timeout)
            };
            let run = tokio::time::timeout(
                timeout + DEADLINE_SLACK,
                self.deps.runtime.run(sandbox, cmd),
            );
            let output = self
                .race(run)
                .await?
                .unwrap_or_else(|_| Err(SandboxError::TimedOut("npm install".into())))
                .map_err(PipelineError::sandbox(Step::Install))?;
            if !output.success() {
                let said = if output.stderr.trim().is_empty() {
                    &output.stdout
                } else {
                    &output.stderr
                };
                return Err(PipelineError::InstallFailed {
                    exit_code: output.exit_code,
                    stderr_tail: tail(said, STDERR_TAIL_CHARS),
                }
                .into());
            }
            tracing::info!("dependencies installed");
        }
        Ok(files.package)
    }

    /// checks: start the detected dev server in the background and wait until its preview answers.
    async fn checks(
        &mut self,
        package: &PackageFacts,
        sandbox: &SandboxId,
    ) -> Result<String, Stop> {
        let server = framework::detect(package);
        let message = format!(
            "Starting the dev server ({} on port {})",
            server.command, server.port
        );
        self.advance(JobStatus::Checks, Self::message(message))
            .await?;
        // A background command has no deadline of its own; readiness below is what is bounded. Its last
        // lines are kept for the message of a build it fails.
        let output = OutputTail::new();
        let cmd = CommandSpec {
            output: Some(tee(
                self.log.sink(JobStatus::Checks.as_str()),
                output.sink(),
            )),
            ..CommandSpec::new(server.command, self.config.readiness_deadline)
                .env("PORT", server.port.to_string())
        };
        let mut process = self
            .race(self.deps.runtime.run_background(sandbox, cmd))
            .await?
            .map_err(PipelineError::sandbox(Step::StartDevServer))?;
        let url = self
            .race(self.deps.runtime.preview_url(sandbox, server.port))
            .await?
            .map_err(PipelineError::sandbox(Step::PreviewUrl))?;
        tracing::info!(pid = process.pid, preview_url = %url, framework = ?server.framework, "dev server started");
        let deadline = self.config.readiness_deadline;
        let readiness = self
            .race(preview::wait_for_dev_server(
                self.deps.probe.as_ref(),
                &url,
                &mut process,
                deadline,
                self.config.readiness_interval,
            ))
            .await?;
        match readiness {
            Readiness::Up(_) => {
                // What the server printed before answering belongs in the log before READY ends it.
                process.output_caught_up(OUTPUT_CATCH_UP_BOUND).await;
                Ok(url)
            }
            Readiness::Exited(exit) => {
                // The runtime's own record of the output wins; the streamed lines are the fallback.
                let output_tail = if exit.output_tail.trim().is_empty() {
                    output.lines()
                } else {
                    exit.output_tail
                };
                Err(PipelineError::DevServerExited {
                    exit_code: exit.exit_code,
                    output_tail,
                }
                .into())
            }
            Readiness::NotUp(last_seen) => Err(PipelineError::NotReady {
                url,
                waited: deadline,
                last_seen,
                output_tail: output.lines(),
            }
            .into()),
        }
    }

    /// ready: one compare-and-set writes READY with everything the preview needs and the build version.
    async fn ready(&mut self, preview_url: String, sandbox: &SandboxId) -> Result<(), Stop> {
        let update = TransitionUpdate {
            preview_url: Some(preview_url),
            sandbox_id: Some(sandbox.clone()),
            workspace_path: Some(self.deps.runtime.workspace_path()),
            assign_build_version: true,
            sandbox_state: Some(self.config.pause_policy.sandbox_state_at_ready()),
            ..Self::message("Build complete")
        };
        self.advance(JobStatus::Ready, update).await
    }
}
