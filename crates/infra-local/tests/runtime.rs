//! The local runtime against real processes: each test has its own root directory, removed (with every
//! process it started) at the end.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::ports::{
    CodeGenerator, CommandSpec, OutputSink, OutputStream, PauseOutcome, ProviderState,
    SandboxError, SandboxRuntime, SandboxSpec,
};
use domain::{JobGoal, JobId, ProjectId, SandboxId, UserId};
use infra_local::{LocalRuntime, TemplateGenerator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// A root directory of its own; on drop, kills every process group recorded under it and removes it,
/// so a failing test leaves nothing behind either.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("slipway-runtime-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
                    continue;
                };
                let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                for pgid in state["groups"].as_array().into_iter().flatten() {
                    if let Some(pgid) = pgid.as_i64() {
                        let pgid = nix::unistd::Pid::from_raw(pgid as i32);
                        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(timeout: Duration, auto_pause: bool) -> SandboxSpec {
    SandboxSpec {
        job_id: JobId::new(),
        user_id: UserId::try_from("user_test").unwrap(),
        project_id: ProjectId::new(),
        timeout,
        auto_pause,
    }
}

/// Polls `cond` until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET url` over a raw connection: the status and body, or `None` when nothing answers within `wait`.
async fn http_get(url: &str, wait: Duration) -> Option<(u16, String)> {
    let addr = url
        .strip_prefix("http://")?
        .trim_end_matches('/')
        .to_owned();
    let exchange = async {
        let mut stream = TcpStream::connect(&addr).await.ok()?;
        let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    };
    tokio::time::timeout(wait, exchange).await.ok().flatten()
}

/// The process group of `pgid` has a live (non-zombie) member.
fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" && fields[0] != "X"
    })
}

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn sandbox_dir(root: &Path, id: &SandboxId) -> PathBuf {
    root.join(id.as_str())
}

#[tokio::test]
async fn commands_run_with_exit_codes_streamed_output_and_files() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt
        .create(&spec(Duration::from_secs(300), true))
        .await
        .unwrap();
    assert!(domain::SandboxId::try_from(id.as_str()).is_ok());
    assert_eq!(rt.workspace_path(), "/home/user/project");

    rt.write_files(&id, vec![("a/b.txt".into(), b"hello file".to_vec())])
        .await
        .unwrap();
    assert_eq!(rt.read_file(&id, "a/b.txt").await.unwrap(), b"hello file");
    assert_eq!(
        rt.read_file(&id, "/home/user/project/a/b.txt")
            .await
            .unwrap(),
        b"hello file"
    );
    assert!(matches!(
        rt.read_file(&id, "missing.txt").await,
        Err(SandboxError::NotFound(_))
    ));

    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    let sink = OutputSink(Arc::new(move |stream: OutputStream, line: &str| {
        seen.lock().unwrap().push((stream, line.to_owned()));
    }));
    let mut cmd = CommandSpec::new("echo hi; echo oops >&2; cat a/b.txt", CMD_TIMEOUT);
    cmd.output = Some(sink);
    let out = rt.run(&id, cmd).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout, "hi\nhello file");
    assert_eq!(out.stderr, "oops\n");
    let lines = lines.lock().unwrap().clone();
    assert!(lines.contains(&(OutputStream::Stdout, "hi\n".to_owned())));
    assert!(lines.contains(&(OutputStream::Stderr, "oops\n".to_owned())));

    let out = rt
        .run(&id, CommandSpec::new("exit 3", CMD_TIMEOUT))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert!(!out.success());

    // The working directory is the workspace, or a directory in it; the logical path maps to it.
    let out = rt
        .run(&id, CommandSpec::new("pwd", CMD_TIMEOUT).cwd("a"))
        .await
        .unwrap();
    let workspace = sandbox_dir(&root.0.canonicalize().unwrap(), &id).join("workspace");
    assert_eq!(out.stdout.trim(), workspace.join("a").to_str().unwrap());
    let out = rt
        .run(
            &id,
            CommandSpec::new("cat /home/user/project/a/b.txt", CMD_TIMEOUT),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "hello file");

    rt.kill(&id).await.unwrap();
}

#[tokio::test]
async fn a_command_past_its_deadline_is_killed_with_everything_it_started() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt
        .create(&spec(Duration::from_secs(300), true))
        .await
        .unwrap();

    let started = Instant::now();
    let res = rt
        .run(
            &id,
            CommandSpec::new(
                "sleep 30 & echo $! > child.pid; wait",
                Duration::from_secs(1),
            ),
        )
        .await;
    assert!(matches!(res, Err(SandboxError::TimedOut(_))), "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = String::from_utf8(rt.read_file(&id, "child.pid").await.unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || async { !pid_alive(pid) }).await);

    rt.kill(&id).await.unwrap();
}

#[tokio::test]
async fn commands_get_a_clean_environment() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt
        .create(&spec(Duration::from_secs(300), true))
        .await
        .unwrap();
    let name = format!("SLIPWAY_TEST_SECRET_{}", std::process::id());
    std::env::set_var(&name, "leaked");

    let out = rt
        .run(
            &id,
            CommandSpec::new("env", CMD_TIMEOUT).env("GIVEN", "yes"),
        )
        .await
        .unwrap();
    assert!(!out.stdout.contains(&name), "{}", out.stdout);
    assert!(out.stdout.contains("GIVEN=yes"));
    let home = sandbox_dir(&root.0.canonicalize().unwrap(), &id);
    assert!(out.stdout.contains(&format!("HOME={}\n", home.display())));
    assert!(out.stdout.contains("PATH="));

    rt.kill(&id).await.unwrap();
}

#[tokio::test]
async fn paths_outside_the_workspace_are_refused() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt
        .create(&spec(Duration::from_secs(300), true))
        .await
        .unwrap();

    for bad in ["../escape.txt", "/etc/escape.txt", "a/../../escape.txt", ""] {
        let res = rt.write_files(&id, vec![(bad.into(), b"x".to_vec())]).await;
        assert!(
            matches!(res, Err(SandboxError::Invalid(_))),
            "{bad}: {res:?}"
        );
    }
    // One bad path and nothing is written.
    let res = rt
        .write_files(
            &id,
            vec![
                ("ok.txt".into(), b"x".to_vec()),
                ("../no".into(), b"x".to_vec()),
            ],
        )
        .await;
    assert!(matches!(res, Err(SandboxError::Invalid(_))));
    assert!(matches!(
        rt.read_file(&id, "ok.txt").await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(!root.0.join(id.as_str()).join("escape.txt").exists());
    assert!(matches!(
        rt.read_file(&id, "../state.json").await,
        Err(SandboxError::Invalid(_))
    ));
    assert!(matches!(
        rt.run(&id, CommandSpec::new("true", CMD_TIMEOUT).cwd("/tmp"))
            .await,
        Err(SandboxError::Invalid(_))
    ));

    rt.kill(&id).await.unwrap();
}

#[tokio::test]
async fn unknown_sandboxes_are_not_found() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    for raw in ["lzzzzzzzzzzzz", "..", "state.json"] {
        let id = SandboxId::try_from(raw).unwrap();
        assert!(
            matches!(rt.state(&id).await, Err(SandboxError::NotFound(_))),
            "{raw}"
        );
        assert!(matches!(rt.kill(&id).await, Err(SandboxError::NotFound(_))));
        assert!(matches!(
            rt.pause(&id).await,
            Err(SandboxError::NotFound(_))
        ));
        assert!(matches!(
            rt.connect(&id, Duration::from_secs(1)).await,
            Err(SandboxError::NotFound(_))
        ));
        assert!(matches!(
            rt.run(&id, CommandSpec::new("true", CMD_TIMEOUT)).await,
            Err(SandboxError::NotFound(_))
        ));
        assert!(matches!(
            rt.read_file(&id, "x").await,
            Err(SandboxError::NotFound(_))
        ));
        assert!(matches!(
            rt.preview_url(&id, 3000).await,
            Err(SandboxError::NotFound(_))
        ));
    }
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_app_is_previewed_paused_resumed_listed_and_killed() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let spec = spec(Duration::from_secs(300), true);
    let id = rt.create(&spec).await.unwrap();

    let goal = JobGoal::try_from("A <b>todo</b> app for cats".to_owned()).unwrap();
    let files = TemplateGenerator.generate(&goal).await.unwrap();
    rt.write_files(
        &id,
        files
            .0
            .into_iter()
            .map(|f| (f.path, f.content.into_bytes()))
            .collect(),
    )
    .await
    .unwrap();
    let pid = rt
        .run_background(
            &id,
            CommandSpec::new("npm start", CMD_TIMEOUT).env("PORT", "3000"),
        )
        .await
        .unwrap()
        .pid;
    let pgid = pid as i32;

    let url = rt.preview_url(&id, 3000).await.unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_ne!(url, "http://127.0.0.1:3000/");
    assert_eq!(rt.preview_url(&id, 3000).await.unwrap(), url);
    let answered = eventually(Duration::from_secs(20), || async {
        matches!(http_get(&url, Duration::from_secs(2)).await, Some((200, _)))
    })
    .await;
    let log = std::fs::read_to_string(
        root.0
            .join(id.as_str())
            .join("logs")
            .join(format!("{pid}.log")),
    );
    assert!(answered, "preview never answered; log: {log:?}");
    let (_, body) = http_get(&url, Duration::from_secs(2)).await.unwrap();
    assert!(
        body.contains("A &lt;b&gt;todo&lt;/b&gt; app for cats"),
        "{body}"
    );

    // Paused: the server is stopped, so nothing answers.
    assert_eq!(rt.pause(&id).await.unwrap(), PauseOutcome::Paused);
    assert_eq!(rt.state(&id).await.unwrap(), ProviderState::Paused);
    assert_eq!(http_get(&url, Duration::from_millis(500)).await, None);
    assert_eq!(rt.pause(&id).await.unwrap(), PauseOutcome::AlreadyPaused);
    assert!(matches!(
        rt.run(&id, CommandSpec::new("true", CMD_TIMEOUT)).await,
        Err(SandboxError::Conflict(_))
    ));

    // A fresh runtime over the same root (a restarted worker) sees it, with its job.
    let restarted = LocalRuntime::new(root.0.clone()).unwrap();
    let listed = restarted.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sandbox_id, id);
    assert_eq!(listed[0].job_id, Some(spec.job_id));
    assert_eq!(listed[0].state, ProviderState::Paused);

    // Resumed by the restarted runtime: the same server answers again, nothing reinstalled.
    restarted
        .connect(&id, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(restarted.state(&id).await.unwrap(), ProviderState::Running);
    let answered = eventually(Duration::from_secs(10), || async {
        matches!(http_get(&url, Duration::from_secs(2)).await, Some((200, _)))
    })
    .await;
    assert!(answered, "preview did not answer after resume");
    assert!(group_alive(pgid));

    restarted.kill(&id).await.unwrap();
    assert!(!root.0.join(id.as_str()).exists());
    assert!(eventually(Duration::from_secs(5), || async { !group_alive(pgid) }).await);
    assert!(matches!(
        rt.state(&id).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(rt.kill(&id).await, Err(SandboxError::NotFound(_))));
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_provider_timeout_pauses_or_kills() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let pausing = rt
        .create(&spec(Duration::from_secs(1), true))
        .await
        .unwrap();
    let killing = rt
        .create(&spec(Duration::from_secs(1), false))
        .await
        .unwrap();
    let pid = rt
        .run_background(&killing, CommandSpec::new("sleep 60", CMD_TIMEOUT))
        .await
        .unwrap()
        .pid as i32;

    // Only the reaper acts here: the state is read from disk, not through the runtime.
    let state_file = root.0.join(pausing.as_str()).join("state.json");
    let paused = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&state_file).is_ok_and(|s| s.contains("\"paused\""))
    })
    .await;
    assert!(paused, "the auto-pause sandbox was not paused");
    assert_eq!(rt.state(&pausing).await.unwrap(), ProviderState::Paused);
    let killed = eventually(Duration::from_secs(10), || async {
        !root.0.join(killing.as_str()).exists()
    })
    .await;
    assert!(killed, "the sandbox without auto-pause was not killed");
    assert!(eventually(Duration::from_secs(5), || async { !group_alive(pid) }).await);
    assert!(matches!(
        rt.state(&killing).await,
        Err(SandboxError::NotFound(_))
    ));

    // connect resumes it with a new timeout.
    rt.connect(&pausing, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(rt.state(&pausing).await.unwrap(), ProviderState::Running);
    rt.set_timeout(&pausing, Duration::from_secs(600))
        .await
        .unwrap();
    rt.shutdown_all().await;
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_restarted_runtime_adopts_live_processes_and_drops_dead_ones() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt
        .create(&spec(Duration::from_secs(300), true))
        .await
        .unwrap();
    let live = rt
        .run_background(&id, CommandSpec::new("sleep 60", CMD_TIMEOUT))
        .await
        .unwrap()
        .pid as i32;
    let dead = rt
        .run_background(&id, CommandSpec::new("true", CMD_TIMEOUT))
        .await
        .unwrap()
        .pid as i32;
    assert!(eventually(Duration::from_secs(5), || async { !group_alive(dead) }).await);
    drop(rt);

    let restarted = LocalRuntime::new(root.0.clone()).unwrap();
    assert_eq!(restarted.list().await.unwrap().len(), 1);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.0.join(id.as_str()).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["groups"], serde_json::json!([live]));

    // shutdown_all (dev Ctrl-C) ends the adopted process too.
    restarted.shutdown_all().await;
    assert!(eventually(Duration::from_secs(5), || async { !group_alive(live) }).await);
    assert!(!root.0.join(id.as_str()).exists());
}

/// Counts WARN and ERROR events, so a test can show an expected condition is not logged as a problem.
#[derive(Clone, Default)]
struct Loud(Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Loud {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Loud {
    /// Installs the counter for this thread (the tests run on a current-thread runtime).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Killing a sandbox that is already gone answers NotFound, which every caller expects: no WARN or ERROR.
#[tokio::test]
async fn killing_a_sandbox_already_gone_is_not_logged_as_a_problem() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let loud = Loud::default();
    let _guard = loud.install();
    let id = SandboxId::try_from("lzzzzzzzzzzzz").unwrap();
    assert!(matches!(rt.kill(&id).await, Err(SandboxError::NotFound(_))));
    assert_eq!(loud.count(), 0, "no WARN or ERROR for an expected NotFound");
}

#[tokio::test]
async fn a_background_command_reports_its_exit_code_and_last_lines() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt.create(&spec(CMD_TIMEOUT, false)).await.unwrap();
    let mut server = rt
        .run_background(
            &id,
            CommandSpec::new(
                "echo booting; echo 'Error: Cannot find module express' >&2; exit 3",
                CMD_TIMEOUT,
            ),
        )
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), server.exited())
        .await
        .expect("the exit is reported");
    assert_eq!(exit.exit_code, 3);
    assert_eq!(
        exit.output_tail,
        "booting\nError: Cannot find module express"
    );
    rt.kill(&id).await.unwrap();
}

/// The sink follows a background command's log file with a wait that grows to a second while it is
/// quiet, so a line printed just before the dev server answers could reach the build's log after READY
/// ended it (seen in the e2e log test). Catching up hands the sink everything written so far at once.
#[tokio::test]
async fn a_background_commands_output_is_caught_up_on_request() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt.create(&spec(CMD_TIMEOUT, false)).await.unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let sink = OutputSink(Arc::new(move |_: OutputStream, line: &str| {
        seen.lock().unwrap().push(line.trim_end().to_owned());
    }));
    let marker = root.0.join("printed");
    // Quiet for two seconds first, so the follower is in its longest wait when the line comes.
    let script = format!(
        "sleep 2; echo 'listening on 3000'; touch '{}'; sleep 30",
        marker.display()
    );
    let server = rt
        .run_background(
            &id,
            CommandSpec {
                output: Some(sink),
                ..CommandSpec::new(script, CMD_TIMEOUT)
            },
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !marker.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the line was never printed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.output_caught_up(Duration::from_secs(5)).await;
    assert_eq!(
        lines.lock().unwrap().last().map(String::as_str),
        Some("listening on 3000"),
        "everything printed is in the sink once caught up"
    );
    rt.kill(&id).await.unwrap();
}
