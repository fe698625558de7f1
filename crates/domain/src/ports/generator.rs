//! The code generator: turns a goal into the files of an app.

use async_trait::async_trait;

use crate::JobGoal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeneratorError {
    /// The generator ran but its output is unusable (bad JSON, escaping paths, no package.json, …).
    #[error("generated files are invalid: {0}")]
    InvalidOutput(String),
    /// The generator could not run or failed.
    #[error("code generator failed: {0}")]
    Failed(String),
    #[error("code generator timed out")]
    TimedOut,
    /// The generator's upstream (an LLM API) is rate limiting us.
    #[error("code generator is rate limited")]
    RateLimited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative to the workspace, as the generator spelled it (normalised by the pipeline).
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GeneratedFiles(pub Vec<GeneratedFile>);

/// Errors as documented on [`GeneratorError`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CodeGenerator: Send + Sync {
    async fn generate(&self, goal: &JobGoal) -> Result<GeneratedFiles, GeneratorError>;
}
