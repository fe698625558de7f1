//! Why a build failed, as a typed error, and the message the founder is shown for it. The message is chosen
//! from the error's variant, never from its text.

use std::fmt;
use std::time::Duration;

use super::files::FileError;
use crate::ports::{GeneratorError, SandboxError};
use crate::usecases::preview::NotUp;
use crate::{DebugId, JobGoalError};

/// How much of npm's stderr the founder sees.
pub const STDERR_TAIL_CHARS: usize = 500;
/// How much of a failed dev server's last lines the founder sees (npm's own failure lines follow the
/// app's, so there is more to keep).
pub const DEV_SERVER_TAIL_CHARS: usize = 1500;

/// The step of the build a sandbox error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateSandbox,
    WriteFiles,
    Install,
    StartDevServer,
    PreviewUrl,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::CreateSandbox => "creating the sandbox",
            Step::WriteFiles => "writing the files",
            Step::Install => "installing dependencies",
            Step::StartDevServer => "starting the dev server",
            Step::PreviewUrl => "getting the preview URL",
        })
    }
}

/// Every way a build fails. Recorded on the job as a friendly message plus a debug id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("the job's goal is invalid")]
    InvalidGoal(#[source] JobGoalError),
    #[error("sandbox error while {step}")]
    Sandbox {
        step: Step,
        #[source]
        source: SandboxError,
    },
    #[error("code generation failed")]
    Generator(#[source] GeneratorError),
    #[error("the generated files were refused")]
    Files(#[source] FileError),
    #[error("npm install exited with code {exit_code}")]
    InstallFailed { exit_code: i32, stderr_tail: String },
    #[error("the dev server exited with code {exit_code} before it answered")]
    DevServerExited { exit_code: i32, output_tail: String },
    #[error("the dev server did not answer at {url} within {waited:?}")]
    NotReady {
        url: String,
        waited: Duration,
        /// What the last probe saw instead of the app.
        last_seen: Option<NotUp>,
        /// The dev server's last lines, when the runtime streamed them.
        output_tail: String,
    },
}

impl PipelineError {
    pub(crate) fn sandbox(step: Step) -> impl FnOnce(SandboxError) -> Self {
        move |source| PipelineError::Sandbox { step, source }
    }

    /// What the founder is told: actionable where we know the cause, generic (and logged) where we do not.
    pub fn friendly_message(&self) -> String {
        match self {
            PipelineError::InvalidGoal(e) => format!("The goal cannot be built: {e}."),
            PipelineError::Sandbox { step, source } => sandbox_message(*step, source),
            PipelineError::Generator(e) => generator_message(e),
            PipelineError::Files(e) => format!("{}.", capitalised(&e.to_string())),
            PipelineError::InstallFailed {
                exit_code,
                stderr_tail,
            } => format!("npm install failed (exit code {exit_code}): {stderr_tail}"),
            PipelineError::DevServerExited {
                exit_code,
                output_tail,
            } => with_output(
                format!("The dev server exited with code {exit_code} before it answered."),
                output_tail,
            ),
            PipelineError::NotReady {
                url,
                waited,
                last_seen,
                output_tail,
            } => {
                let seen = last_seen
                    .as_ref()
                    .map(|seen| format!(" (last: {seen})"))
                    .unwrap_or_default();
                with_output(
                    format!(
                        "The dev server did not become ready within {}s at {url}{seen}.",
                        waited.as_secs()
                    ),
                    output_tail,
                )
            }
        }
    }
}

/// `message`, then the command's own last lines when there are any: where it says what went wrong.
fn with_output(message: String, output: &str) -> String {
    if output.trim().is_empty() {
        message
    } else {
        format!(
            "{message} Its output ended with: {}",
            tail(output, DEV_SERVER_TAIL_CHARS)
        )
    }
}

fn sandbox_message(step: Step, error: &SandboxError) -> String {
    match error {
        SandboxError::TimedOut(_) => {
            format!("The build timed out while {step}. Try a smaller scope or contact support.")
        }
        SandboxError::NotFound(_) => {
            "The build sandbox stopped unexpectedly. Please try again.".to_owned()
        }
        SandboxError::Unavailable(_) => {
            "The build sandbox provider is unavailable right now. Please try again in a few minutes."
                .to_owned()
        }
        _ if step == Step::CreateSandbox => {
            "The build sandbox could not be started. Our team has been notified.".to_owned()
        }
        _ => format!("The build sandbox failed while {step}. Our team has been notified."),
    }
}

fn generator_message(error: &GeneratorError) -> String {
    match error {
        GeneratorError::RateLimited => {
            "LLM rate limit reached. Please try again in a few minutes.".to_owned()
        }
        GeneratorError::TimedOut => {
            "Code generation timed out. Try a smaller scope or contact support.".to_owned()
        }
        GeneratorError::InvalidOutput(detail) => {
            format!("The generated code could not be used: {detail}")
        }
        GeneratorError::Failed(_) => {
            "Code generation failed. Our team has been notified.".to_owned()
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Displays an error with its sources, `outer: inner: root`, for the one log line that reports it.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The status message of a failed build (the spelling the front end knows).
pub fn failed_status_message(debug_id: DebugId, friendly: &str) -> String {
    format!("Build failed — debug_id: {debug_id}. {friendly}")
}

/// The last `max_chars` characters of `s`, trimmed: where npm says what went wrong.
pub fn tail(s: &str, max_chars: usize) -> String {
    let s = s.trim();
    let skip = s.chars().count().saturating_sub(max_chars);
    s.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_variant() {
        let timed_out = PipelineError::Sandbox {
            step: Step::Install,
            source: SandboxError::TimedOut("npm install".into()),
        };
        assert!(timed_out
            .friendly_message()
            .starts_with("The build timed out while installing dependencies"));
        let create = PipelineError::Sandbox {
            step: Step::CreateSandbox,
            source: SandboxError::Provider("boom".into()),
        };
        assert!(create.friendly_message().contains("could not be started"));
        // A rate limit is recognised by its variant, whatever the text of other errors says.
        let failed = PipelineError::Generator(GeneratorError::Failed("429 rate limit".into()));
        assert!(!failed.friendly_message().contains("rate limit"));
        let limited = PipelineError::Generator(GeneratorError::RateLimited);
        assert!(limited.friendly_message().contains("rate limit"));
    }

    #[test]
    fn dev_server_failures_quote_its_output() {
        let exited = PipelineError::DevServerExited {
            exit_code: 1,
            output_tail: "Error: Cannot find module 'express'".into(),
        };
        assert_eq!(
            exited.friendly_message(),
            "The dev server exited with code 1 before it answered. Its output ended with: \
             Error: Cannot find module 'express'"
        );
        let not_ready = PipelineError::NotReady {
            url: "https://3000-sbx.e2b.app".into(),
            waited: Duration::from_secs(60),
            last_seen: Some(NotUp::Proxy(crate::ports::ProxyAnswer::PortNotOpen)),
            output_tail: String::new(),
        };
        let msg = not_ready.friendly_message();
        assert!(
            msg.contains("within 60s at https://3000-sbx.e2b.app"),
            "{msg}"
        );
        assert!(msg.contains("port is not open"), "{msg}");
        assert!(!msg.contains("output"), "{msg}");
    }

    #[test]
    fn file_errors_name_the_rule() {
        let e = PipelineError::Files(FileError::MissingPackageJson {
            js_file: Some("index.js".into()),
        });
        let msg = e.friendly_message();
        assert!(msg.starts_with("JavaScript/TypeScript"), "{msg}");
        assert!(msg.contains("package.json"));
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("  abcdef \n", 3), "def");
        assert_eq!(tail("ab", 10), "ab");
        assert_eq!(tail("ééé", 2), "éé");
    }

    #[test]
    fn failed_message_spelling() {
        let id = DebugId::new();
        assert_eq!(
            failed_status_message(id, "Oops."),
            format!("Build failed — debug_id: {id}. Oops.")
        );
    }
}
