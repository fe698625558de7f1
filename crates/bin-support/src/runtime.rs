//! The sandbox runtime as settings, and the runtime they name. Both binaries must use the same one: the
//! worker builds in it, the api-server cancels, resumes and snapshots in it.

use std::path::PathBuf;
use std::sync::Arc;

use domain::ports::{ProbeError, SandboxError, SandboxRuntime};
use infra_e2b::{ApiKey, E2bConfig, E2bRuntime, HttpPreviewProbe, Scheme};
use infra_local::LocalRuntime;

use crate::metered::MeteredRuntime;
use crate::Secret;

/// Where builds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Process sandboxes on this machine (the embedded default).
    Local,
    /// E2B microVMs.
    E2b,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeSetupError {
    #[error("LOCAL_SANDBOX_ROOT {path} is not usable: {source}")]
    LocalRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("E2B_API_KEY is required with SANDBOX_RUNTIME=e2b")]
    MissingE2bKey,
    #[error("invalid E2B settings (E2B_*): {0}")]
    E2b(SandboxError),
    #[error("cannot build the preview probe: {0}")]
    Probe(ProbeError),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Sandbox runtime: `local` (process sandboxes on this machine) or `e2b`.
    #[arg(long, env = "SANDBOX_RUNTIME", value_enum, default_value = "local")]
    pub sandbox_runtime: RuntimeKind,

    /// Directory the local runtime keeps its sandboxes in.
    #[arg(
        long,
        env = "LOCAL_SANDBOX_ROOT",
        default_value = "/tmp/slipway-sandboxes"
    )]
    pub local_sandbox_root: PathBuf,

    /// E2B API key (required with `SANDBOX_RUNTIME=e2b`).
    #[arg(long, env = "E2B_API_KEY", required_if_eq("sandbox_runtime", "e2b"))]
    pub e2b_api_key: Option<Secret>,

    /// E2B platform API URL.
    #[arg(long, env = "E2B_API_URL", default_value = infra_e2b::DEFAULT_API_URL)]
    pub e2b_api_url: String,

    /// E2B sandbox domain (a sandbox's own, from its create or connect answer, wins).
    #[arg(long, env = "E2B_DOMAIN", default_value = infra_e2b::DEFAULT_DOMAIN)]
    pub e2b_domain: String,

    /// Scheme of sandbox hosts, envd's and previews': `https`, or `http` for a server without TLS.
    #[arg(long, env = "E2B_SANDBOX_SCHEME", default_value = "https")]
    pub e2b_sandbox_scheme: Scheme,

    /// E2B template sandboxes are created from.
    #[arg(long, env = "E2B_TEMPLATE", default_value = "base")]
    pub e2b_template: String,

    /// One base URL for envd and preview probes, the sandbox named by the `E2b-Sandbox-Id` and
    /// `E2b-Sandbox-Port` headers (a self-hosted client proxy, `e2b-local`).
    #[arg(long, env = "E2B_SANDBOX_URL")]
    pub e2b_sandbox_url: Option<String>,

    /// Create sandboxes with private previews (`allowPublicTraffic: false`): only the preview gateway,
    /// which holds each sandbox's traffic access token, reaches them. Needs `PREVIEW_ADDR`.
    #[arg(long, env = "E2B_PRIVATE_PREVIEWS", default_value_t = false)]
    pub e2b_private_previews: bool,
}

impl RuntimeArgs {
    /// Opens the runtime these settings name.
    pub fn build(&self) -> Result<Arc<dyn SandboxRuntime>, RuntimeSetupError> {
        self.build_unmetered()
            .map(|runtime| Arc::new(MeteredRuntime::new(runtime)) as Arc<dyn SandboxRuntime>)
    }

    /// The preview probe for this runtime: sandbox previews go to `E2B_SANDBOX_URL` with routing headers
    /// when it is set.
    pub fn preview_probe(&self) -> Result<HttpPreviewProbe, ProbeError> {
        let probe = HttpPreviewProbe::new()?;
        match (&self.sandbox_runtime, &self.e2b_sandbox_url) {
            (RuntimeKind::E2b, Some(url)) => probe.with_sandbox_url(url),
            _ => Ok(probe),
        }
    }

    /// The runtime and its preview probe, which shares what the runtime learns of private sandboxes
    /// (their traffic tokens).
    pub fn build_with_probe(
        &self,
    ) -> Result<(Arc<dyn SandboxRuntime>, HttpPreviewProbe), RuntimeSetupError> {
        let probe = self.preview_probe().map_err(RuntimeSetupError::Probe)?;
        if self.sandbox_runtime == RuntimeKind::E2b && self.e2b_private_previews {
            let runtime = self.e2b()?;
            let probe = probe.with_traffic_tokens(runtime.traffic_tokens());
            let runtime =
                Arc::new(MeteredRuntime::new(Arc::new(runtime))) as Arc<dyn SandboxRuntime>;
            return Ok((runtime, probe));
        }
        Ok((self.build()?, probe))
    }

    /// The runtime without the latency metrics of [`MeteredRuntime`].
    fn build_unmetered(&self) -> Result<Arc<dyn SandboxRuntime>, RuntimeSetupError> {
        match self.sandbox_runtime {
            RuntimeKind::Local => LocalRuntime::new(self.local_sandbox_root.clone())
                .map(|r| Arc::new(r) as Arc<dyn SandboxRuntime>)
                .map_err(|source| RuntimeSetupError::LocalRoot {
                    path: self.local_sandbox_root.clone(),
                    source,
                }),
            RuntimeKind::E2b => self.e2b().map(|r| Arc::new(r) as Arc<dyn SandboxRuntime>),
        }
    }

    fn e2b(&self) -> Result<E2bRuntime, RuntimeSetupError> {
        // clap requires the key with this runtime; this is the error if that ever changes.
        let key = self
            .e2b_api_key
            .as_ref()
            .ok_or(RuntimeSetupError::MissingE2bKey)?;
        let config = E2bConfig {
            api_url: self.e2b_api_url.clone(),
            domain: self.e2b_domain.clone(),
            scheme: self.e2b_sandbox_scheme,
            sandbox_url: self.e2b_sandbox_url.clone(),
            private_previews: self.e2b_private_previews,
            ..E2bConfig::new(ApiKey::new(key.expose()), self.e2b_template.clone())
        };
        E2bRuntime::new(config).map_err(RuntimeSetupError::E2b)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    #[test]
    fn e2b_needs_its_key() {
        let err = Cli::try_parse_from(["x", "--sandbox-runtime", "e2b"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--e2b-api-key"), "{err}");
    }

    #[test]
    fn the_key_never_prints() {
        let cli = Cli::parse_from(["x", "--sandbox-runtime", "e2b", "--e2b-api-key", "e2b_123"]);
        assert!(!format!("{:?}", cli.runtime).contains("e2b_123"));
    }
}
