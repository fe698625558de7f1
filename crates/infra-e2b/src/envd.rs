//! The envd client: opening `process.Process/Start` streams (Connect, JSON codec; see [`crate::process`]),
//! `SendSignal`, and `/files` (`envd.yaml`). Requests name their sandbox with routing headers and carry
//! its access token as `X-Access-Token`: our sandboxes are secure, and envd refuses calls without it.

use std::time::Duration;

use base64::Engine;
use domain::ports::{CommandSpec, SandboxError};
use reqwest::{Client, Method, RequestBuilder};

use crate::access::SandboxAccess;
use crate::config::{E2bConfig, WORKSPACE_PATH};
use crate::connect;
use crate::error::{from_reqwest, from_response, Failure};
use crate::process::{ProcessConfig, ProcessStream, StartRequest};
use crate::retry::RetryPolicy;

/// The sandbox user commands and files belong to.
const USER: &str = "user";
/// How long a file transfer may take.
const FILES_TIMEOUT: Duration = Duration::from_secs(120);
/// How long stopping a process may take.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a process stream may take, retries included.
const START_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// envd sends keepalive events at this interval (seconds) so idle streams are not cut by proxies.
const KEEPALIVE_SECS: &str = "50";

/// The envd client, shared by every sandbox (the sandbox is named per request).
#[derive(Debug, Clone)]
pub(crate) struct Envd {
    client: Client,
    config: E2bConfig,
    retry: RetryPolicy,
}

/// An absolute path inside the sandbox for a workspace-relative one; `..` and absolute paths are refused.
pub(crate) fn workspace_file(rel: &str) -> Result<String, SandboxError> {
    let clean = rel.trim_start_matches("./");
    if clean.is_empty()
        || clean.starts_with('/')
        || clean.split('/').any(|part| part == ".." || part.is_empty())
    {
        return Err(SandboxError::Invalid(format!(
            "not a workspace-relative file path: {rel:?}"
        )));
    }
    Ok(format!("{WORKSPACE_PATH}/{clean}"))
}

impl Envd {
    pub fn new(client: Client, config: E2bConfig, retry: RetryPolicy) -> Self {
        Self {
            client,
            config,
            retry,
        }
    }

    fn request(
        &self,
        method: Method,
        id: &str,
        access: &SandboxAccess,
        path: &str,
    ) -> RequestBuilder {
        let domain = self.config.domain_of(access.domain.as_deref());
        let url = format!("{}{path}", self.config.envd_base(id, domain));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:"));
        let mut req = self
            .client
            .request(method, url)
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", self.config.envd_port.to_string())
            // envd runs the process as the user named in Basic auth, as the SDKs do.
            .header("Authorization", format!("Basic {basic}"));
        if let Some(token) = &access.token {
            req = req.header("X-Access-Token", token.expose());
        }
        req
    }

    /// Starts `/bin/bash -l -c <cmd>`. With a `deadline`, envd is told to end the stream (and we stop
    /// waiting) by then; without one, the stream stays open as long as the process runs.
    pub async fn start(
        &self,
        id: &str,
        access: &SandboxAccess,
        cmd: &CommandSpec,
        deadline: Option<Duration>,
    ) -> Result<ProcessStream, SandboxError> {
        let cwd = cmd.cwd.clone().unwrap_or_else(|| WORKSPACE_PATH.to_owned());
        let body = serde_json::to_vec(&StartRequest {
            process: ProcessConfig {
                cmd: "/bin/bash",
                args: ["-l", "-c", &cmd.cmd],
                envs: &cmd.envs,
                cwd,
            },
        })
        .map_err(|e| SandboxError::Invalid(format!("cannot encode start request: {e}")))?;
        let envelope = connect::encode(0, &body);
        // Only the opening is retried: once envd answered, the process may be running.
        let resp = self
            .retry
            .with_deadline(START_OPEN_TIMEOUT)
            .run("process_start", |_| {
                let mut req = self
                    .request(Method::POST, id, access, "/process.Process/Start")
                    .header(reqwest::header::CONTENT_TYPE, connect::CONTENT_TYPE)
                    .header(connect::PROTOCOL_VERSION_HEADER, "1")
                    .header("Keepalive-Ping-Interval", KEEPALIVE_SECS)
                    .body(envelope.clone());
                if let Some(deadline) = deadline {
                    req = req.header(connect::TIMEOUT_HEADER, deadline.as_millis().to_string());
                }
                async move {
                    let resp = req.send().await.map_err(|e| from_reqwest(&e))?;
                    if resp.status().is_success() {
                        Ok(resp)
                    } else {
                        Err(from_response(resp).await)
                    }
                }
            })
            .await?;
        Ok(ProcessStream::new(resp))
    }

    /// `process.Process/SendSignal` (a unary Connect call) with SIGKILL: stops a command that ran past its
    /// deadline, since envd keeps a process running when its stream ends.
    pub async fn kill_process(
        &self,
        id: &str,
        access: &SandboxAccess,
        pid: u32,
    ) -> Result<(), SandboxError> {
        let body = serde_json::json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"});
        let resp = self
            .request(Method::POST, id, access, "/process.Process/SendSignal")
            .header(connect::PROTOCOL_VERSION_HEADER, "1")
            .json(&body)
            .timeout(SIGNAL_TIMEOUT)
            .send()
            .await
            .map_err(|e| from_reqwest(&e).error)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(from_response(resp).await.error)
        }
    }

    /// `POST /files` (multipart, one `file` part per file named by its absolute path).
    pub async fn write_files(
        &self,
        id: &str,
        access: &SandboxAccess,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), SandboxError> {
        let named = files
            .iter()
            .map(|(rel, data)| Ok((workspace_file(rel)?, data)))
            .collect::<Result<Vec<_>, SandboxError>>()?;
        if named.is_empty() {
            return Ok(());
        }
        let named = &named;
        self.retry
            .with_deadline(FILES_TIMEOUT)
            .run("write_files", |left| async move {
                let mut form = reqwest::multipart::Form::new();
                for (path, data) in named {
                    let part =
                        reqwest::multipart::Part::bytes(data.to_vec()).file_name(path.clone());
                    form = form.part("file", part);
                }
                let mut query = vec![("username", USER.to_owned())];
                if let [(path, _)] = named.as_slice() {
                    query.push(("path", path.clone()));
                }
                let resp = self
                    .request(Method::POST, id, access, "/files")
                    .query(&query)
                    .multipart(form)
                    .timeout(left)
                    .send()
                    .await
                    .map_err(|e| from_reqwest(&e))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(from_response(resp).await)
                }
            })
            .await
    }

    /// `GET /files?path=…`: the file's bytes; 404 is `NotFound`.
    pub async fn read_file(
        &self,
        id: &str,
        access: &SandboxAccess,
        rel: &str,
    ) -> Result<Vec<u8>, SandboxError> {
        let path = workspace_file(rel)?;
        self.retry
            .with_deadline(FILES_TIMEOUT)
            .run("read_file", |left| {
                let path = path.clone();
                async move {
                    let resp = self
                        .request(Method::GET, id, access, "/files")
                        .query(&[("path", path.as_str()), ("username", USER)])
                        .timeout(left)
                        .send()
                        .await
                        .map_err(|e| from_reqwest(&e))?;
                    if !resp.status().is_success() {
                        return Err(from_response(resp).await);
                    }
                    resp.bytes()
                        .await
                        .map(|b| b.to_vec())
                        .map_err(|e| Failure::fatal(from_reqwest(&e).error))
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_files_stay_in_the_workspace() {
        assert_eq!(
            workspace_file("src/index.js").unwrap(),
            "/home/user/project/src/index.js"
        );
        assert_eq!(
            workspace_file("./package.json").unwrap(),
            "/home/user/project/package.json"
        );
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b"] {
            assert!(workspace_file(bad).is_err(), "{bad}");
        }
    }
}
