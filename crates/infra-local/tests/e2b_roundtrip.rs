//! The production E2B client (`infra_e2b::E2bRuntime`) against the E2B-compatible local server over the real
//! `LocalRuntime`: every call the pipeline makes, through HTTP and the Connect stream, previews on their
//! host-form URLs, a sandbox Slipway created refusing envd calls without its token, plus injected faults.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::ports::{
    CommandSpec, OutputSink, PauseOutcome, PreviewProbe, ProbeResponse, ProviderState, ProxyAnswer,
    SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobId, ProjectId, SandboxId, UserId};
use infra_e2b::{ApiKey, E2bConfig, E2bRuntime, HttpPreviewProbe, Scheme};
use infra_local::e2b_server::{local_domain, router, E2bServerConfig, FaultConfig};
use infra_local::LocalRuntime;

const API_KEY: &str = "local-test-key";

/// A server on an ephemeral port over a fresh sandbox root, removed (sandboxes included) on drop.
struct TestServer {
    url: String,
    domain: String,
    local: LocalRuntime,
    root: PathBuf,
}

impl TestServer {
    async fn start() -> Self {
        let root =
            std::env::temp_dir().join(format!("slipway-e2b-{}", uuid::Uuid::new_v4().simple()));
        let local = LocalRuntime::new(root.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let domain = local_domain(addr);
        let app = router(
            local.clone(),
            E2bServerConfig {
                api_key: API_KEY.into(),
                domain: domain.clone(),
                faults: FaultConfig::default(),
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}"),
            domain,
            local,
            root,
        }
    }

    /// Slipway's client, envd addressed by headers on the server's URL (`E2B_SANDBOX_URL`).
    fn client(&self, key: &str) -> E2bRuntime {
        E2bRuntime::new(E2bConfig {
            api_url: self.url.clone(),
            sandbox_url: Some(self.url.clone()),
            scheme: Scheme::Http,
            call_timeout: Duration::from_secs(5),
            ..E2bConfig::new(ApiKey::new(key), "base")
        })
        .unwrap()
    }

    /// Slipway's client, envd addressed by host name (`49983-{id}.localhost:{port}`).
    fn client_by_host(&self) -> E2bRuntime {
        E2bRuntime::new(E2bConfig {
            api_url: self.url.clone(),
            domain: "unused.invalid".into(),
            scheme: Scheme::Http,
            ..E2bConfig::new(ApiKey::new(API_KEY), "base")
        })
        .unwrap()
    }

    async fn set_faults(&self, faults: serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/_faults", self.url))
            .header("X-API-Key", API_KEY)
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    async fn cleanup(self) {
        self.local.shutdown_all().await;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn spec(job_id: JobId) -> SandboxSpec {
    SandboxSpec {
        job_id,
        user_id: UserId::try_from("user_e2b_test").unwrap(),
        project_id: ProjectId::new(),
        timeout: Duration::from_secs(300),
        auto_pause: true,
    }
}

/// Polls the preview until `done` accepts the answer, or fails at the deadline.
async fn wait_for_preview(
    url: &str,
    done: impl Fn(Option<&ProbeResponse>) -> bool,
) -> Option<ProbeResponse> {
    let probe = HttpPreviewProbe::new().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = probe.get(url).await.ok();
        if done(answer.as_ref()) {
            return answer;
        }
        let status = answer.map(|a| a.status);
        assert!(
            tokio::time::Instant::now() < deadline,
            "preview {url} stayed at {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_e2b_client_drives_local_sandboxes_end_to_end() {
    let server = TestServer::start().await;
    let e2b = server.client(API_KEY);
    let job_id = JobId::new();
    let id = e2b.create(&spec(job_id)).await.unwrap();

    // Files round-trip through multipart /files.
    e2b.write_files(
        &id,
        vec![
            ("hello.txt".into(), b"hello from files".to_vec()),
            ("src/app.js".into(), b"console.log(1)".to_vec()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        e2b.read_file(&id, "src/app.js").await.unwrap(),
        b"console.log(1)"
    );
    assert!(matches!(
        e2b.read_file(&id, "missing.txt").await,
        Err(SandboxError::NotFound(_))
    ));

    // A foreground command streams its output and reports its exit code.
    let seen = Arc::new(Mutex::new(String::new()));
    let sink_seen = seen.clone();
    let mut cmd = CommandSpec::new(
        "cat hello.txt; echo; echo \"$GREETING\" >&2; exit 3",
        Duration::from_secs(30),
    )
    .env("GREETING", "hi there");
    cmd.output = Some(OutputSink(Arc::new(move |_, text: &str| {
        sink_seen.lock().unwrap().push_str(text)
    })));
    let out = e2b.run(&id, cmd).await.unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, "hello from files\n");
    assert_eq!(out.stderr, "hi there\n");
    assert!(seen.lock().unwrap().contains("hello from files"));
    let cwd = e2b
        .run(
            &id,
            CommandSpec::new("pwd", Duration::from_secs(30)).cwd("/home/user/project/src"),
        )
        .await
        .unwrap();
    assert!(cwd.stdout.trim_end().ends_with("/src"), "{cwd:?}");

    // The per-command deadline holds.
    let slow = e2b
        .run(&id, CommandSpec::new("sleep 30", Duration::from_secs(1)))
        .await;
    assert!(matches!(slow, Err(SandboxError::TimedOut(_))), "{slow:?}");

    // A background server outlives its request and is reachable through the sandbox proxy, on the
    // host-form URL with the domain the create answer carried.
    let server_js =
        "require('http').createServer((q, s) => s.end('preview ok')).listen(process.env.PORT)";
    let pid = e2b
        .run_background(
            &id,
            CommandSpec::new(format!("node -e \"{server_js}\""), Duration::from_secs(5))
                .env("PORT", "3000"),
        )
        .await
        .unwrap();
    assert!(pid.pid > 0);
    let preview = e2b.preview_url(&id, 3000).await.unwrap();
    assert_eq!(preview, format!("http://3000-{id}.{}", server.domain));
    wait_for_preview(&preview, |a| a.is_some_and(|a| a.status == 200)).await;
    let browser = reqwest::Client::builder()
        .dns_resolver(Arc::new(infra_e2b::LocalhostResolver))
        .build()
        .unwrap();
    let body = browser
        .get(&preview)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "preview ok");
    // A port nothing listens on is the proxy's answer, never the app's.
    let closed = e2b.preview_url(&id, 4000).await.unwrap();
    let answer = wait_for_preview(&closed, |a| a.is_some()).await.unwrap();
    assert_eq!(answer.proxy, Some(ProxyAnswer::PortNotOpen));

    // Pause, then pause again: the 409 reads as AlreadyPaused. The preview stops answering.
    assert_eq!(e2b.pause(&id).await, Ok(PauseOutcome::Paused));
    assert_eq!(e2b.pause(&id).await, Ok(PauseOutcome::AlreadyPaused));
    assert_eq!(e2b.state(&id).await, Ok(ProviderState::Paused));
    let paused = wait_for_preview(&preview, |a| a.is_some_and(|a| a.status == 502)).await;
    assert_eq!(paused.unwrap().proxy, Some(ProxyAnswer::SandboxNotFound));

    // The list, filtered by our metadata, finds it with its job.
    let listed = e2b.list().await.unwrap();
    let ours = listed.iter().find(|s| s.sandbox_id == id).expect("listed");
    assert_eq!(ours.state, ProviderState::Paused);
    assert_eq!(ours.job_id, Some(job_id));

    // Connect resumes it, with the dev server still there.
    e2b.connect(&id, Duration::from_secs(120)).await.unwrap();
    assert_eq!(e2b.state(&id).await, Ok(ProviderState::Running));
    wait_for_preview(&preview, |a| a.is_some_and(|a| a.status == 200)).await;
    e2b.set_timeout(&id, Duration::from_secs(60)).await.unwrap();

    // Kill, and it is gone everywhere.
    e2b.kill(&id).await.unwrap();
    assert!(matches!(
        e2b.kill(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(
        e2b.state(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(
        e2b.pause(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(!e2b.list().await.unwrap().iter().any(|s| s.sandbox_id == id));

    server.cleanup().await;
}

#[tokio::test]
async fn injected_faults_reach_the_client_as_typed_errors() {
    let server = TestServer::start().await;
    let e2b = server.client(API_KEY);
    let id = e2b.create(&spec(JobId::new())).await.unwrap();

    server
        .set_faults(serde_json::json!({"pause_fail_ratio": 1.0}))
        .await;
    let failed = e2b.pause(&id).await;
    assert!(
        matches!(failed, Err(SandboxError::Provider(_))),
        "{failed:?}"
    );
    assert_eq!(e2b.state(&id).await, Ok(ProviderState::Running));

    server
        .set_faults(serde_json::json!({"not_found_sandboxes": [id.as_str()], "latency_ms": 20}))
        .await;
    assert!(matches!(
        e2b.state(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(
        e2b.pause(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    let run = e2b
        .run(&id, CommandSpec::new("true", Duration::from_secs(10)))
        .await;
    assert!(matches!(run, Err(SandboxError::NotFound(_))), "{run:?}");
    assert!(!e2b.list().await.unwrap().iter().any(|s| s.sandbox_id == id));

    server.set_faults(serde_json::json!({})).await;
    assert_eq!(e2b.pause(&id).await, Ok(PauseOutcome::Paused));
    e2b.kill(&id).await.unwrap();
    server.cleanup().await;
}

#[tokio::test]
async fn a_wrong_api_key_is_unauthorized() {
    let server = TestServer::start().await;
    let e2b = server.client("not-the-key");
    assert!(matches!(
        e2b.create(&spec(JobId::new())).await,
        Err(SandboxError::Unauthorized(_))
    ));
    let unknown = SandboxId::try_from("nope").unwrap();
    assert!(matches!(
        server.client(API_KEY).state(&unknown).await,
        Err(SandboxError::NotFound(_))
    ));
    server.cleanup().await;
}

/// Every sandbox Slipway creates is secure: its envd refuses a call without the access token.
#[tokio::test]
async fn a_sandbox_slipway_created_refuses_envd_calls_without_its_token() {
    let server = TestServer::start().await;
    let e2b = server.client(API_KEY);
    let id = e2b.create(&spec(JobId::new())).await.unwrap();
    // Slipway's own calls carry the token.
    let out = e2b
        .run(
            &id,
            CommandSpec::new("echo inside", Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "inside\n");

    let http = reqwest::Client::new();
    let envd = |path: &str| {
        http.post(format!("{}{path}", server.url))
            .header("E2b-Sandbox-Id", id.as_str())
            .header("E2b-Sandbox-Port", "49983")
    };
    let message = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","id"]}}"#;
    let mut envelope = vec![0u8];
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(message);
    let start = envd("/process.Process/Start")
        .header("Content-Type", "application/connect+json")
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 401, "no token, no command");
    let upload = envd("/files?path=/home/user/evil.sh")
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"rm -rf ~".to_vec()).file_name("evil.sh"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 401, "no token, no file");
    let download = http
        .get(format!("{}/files?path=/home/user/project/x", server.url))
        .header("E2b-Sandbox-Id", id.as_str())
        .header("E2b-Sandbox-Port", "49983")
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 401);
    server.cleanup().await;
}

/// envd and previews addressed by host name alone, and a fresh client (another process) that learns the
/// token and the domain from the sandbox's info.
#[tokio::test]
async fn envd_is_reachable_by_host_name_and_from_another_process() {
    let server = TestServer::start().await;
    let id = server
        .client(API_KEY)
        .create(&spec(JobId::new()))
        .await
        .unwrap();
    let other = server.client_by_host();
    other
        .write_files(&id, vec![("a.txt".into(), b"by host".to_vec())])
        .await
        .unwrap();
    let out = other
        .run(&id, CommandSpec::new("cat a.txt", Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(out.stdout, "by host");
    assert_eq!(
        other.preview_url(&id, 3000).await.unwrap(),
        format!("http://3000-{id}.{}", server.domain),
        "the answered domain wins over the configured one"
    );
    server.cleanup().await;
}

/// A dev server that dies is reported with its exit code and its last lines.
#[tokio::test]
async fn a_background_command_that_exits_is_reported() {
    let server = TestServer::start().await;
    let e2b = server.client(API_KEY);
    let id = e2b.create(&spec(JobId::new())).await.unwrap();
    let mut dev = e2b
        .run_background(
            &id,
            CommandSpec::new(
                "echo starting; echo 'Error: listen EADDRINUSE' >&2; exit 7",
                Duration::from_secs(5),
            ),
        )
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), dev.exited())
        .await
        .expect("the exit is reported");
    assert_eq!(exit.exit_code, 7);
    assert_eq!(exit.output_tail, "starting\nError: listen EADDRINUSE");
    server.cleanup().await;
}
