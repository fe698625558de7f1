//! Sandboxes outlive the process that started them: a child process (this test binary, as a worker would)
//! creates sandboxes, starts a server in each, pauses them and is killed with SIGKILL. A runtime of another
//! process over the same root then resumes them: the same server processes answer. And a paused sandbox
//! whose processes were killed anyway is reported gone, not paused.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use domain::ports::{CommandSpec, ProviderState, SandboxError, SandboxRuntime, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use infra_local::LocalRuntime;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Tells a run of this binary that it is the worker of `paused_sandboxes_survive_their_worker`.
const WORKER_ROOT_ENV: &str = "SLIPWAY_WORKER_EXIT_ROOT";
const SANDBOXES: usize = 2;
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers every request with its own pid.
const SERVER: &str =
    "require('http').createServer((q, r) => r.end(String(process.pid))).listen(process.env.PORT);";

/// A root of its own; removed on drop with every sandbox in it.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("slipway-worker-exit-{}", uuid::Uuid::new_v4()));
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
                        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGCONT);
                        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        job_id: JobId::new(),
        user_id: UserId::try_from("user_test").unwrap(),
        project_id: ProjectId::new(),
        timeout: Duration::from_secs(300),
        auto_pause: true,
    }
}

/// The body of `url`, or `None` when nothing answers within a second.
async fn fetch(url: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    client.get(url).send().await.ok()?.text().await.ok()
}

async fn eventually(within: Duration, url: &str) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(body) = fetch(url).await {
            return Some(body);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sandbox running the pid server, answering; returns its id, preview URL and the server's pid.
async fn serving(rt: &LocalRuntime) -> (SandboxId, String, String) {
    let id = rt.create(&spec()).await.unwrap();
    rt.write_files(&id, vec![("server.js".into(), SERVER.as_bytes().to_vec())])
        .await
        .unwrap();
    rt.run_background(
        &id,
        CommandSpec::new("node server.js", CMD_TIMEOUT).env("PORT", "3000"),
    )
    .await
    .unwrap();
    let url = rt.preview_url(&id, 3000).await.unwrap();
    let pid = eventually(Duration::from_secs(20), &url)
        .await
        .expect("the server answers");
    (id, url, pid)
}

/// The worker's half: sandboxes serving, then paused; one line per sandbox on stdout, then it waits to be
/// killed. Does nothing in a normal run.
#[tokio::test]
async fn worker_process() {
    let Ok(root) = std::env::var(WORKER_ROOT_ENV) else {
        return;
    };
    let rt = LocalRuntime::new(PathBuf::from(root)).unwrap();
    for _ in 0..SANDBOXES {
        let (id, url, pid) = serving(&rt).await;
        rt.pause(&id).await.unwrap();
        println!("SANDBOX {id} {url} {pid}");
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_sandboxes_survive_their_worker_killed_and_answer_after_resume_with_the_same_process(
) {
    if which_node().is_none() {
        eprintln!("node is not installed; skipped");
        return;
    }
    let root = TempRoot::new();
    let mut worker = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "worker_process",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(WORKER_ROOT_ENV, &root.0)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stdout.take().unwrap()).lines();
    let mut sandboxes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest may print `test worker_process ... ` on the same line first.
            let from = line
                .find("SANDBOX")
                .or_else(|| line.find("READY"))
                .unwrap_or(0);
            let words: Vec<&str> = line[from..].split_whitespace().collect();
            match words.as_slice() {
                ["SANDBOX", id, url, pid] => sandboxes.push((
                    SandboxId::try_from(*id).unwrap(),
                    url.to_string(),
                    pid.to_string(),
                )),
                ["READY"] => return,
                _ => {}
            }
        }
        panic!("the worker ended before its sandboxes were paused");
    })
    .await;
    assert!(read.is_ok(), "the worker never paused its sandboxes");
    assert_eq!(sandboxes.len(), SANDBOXES);

    // kill -9 of the worker, and it is gone.
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();

    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    for (id, url, pid) in &sandboxes {
        assert_eq!(rt.state(id).await.unwrap(), ProviderState::Paused);
        assert_eq!(fetch(url).await, None, "a paused sandbox does not answer");
        rt.connect(id, Duration::from_secs(300)).await.unwrap();
        let answered = eventually(Duration::from_secs(10), url).await;
        assert_eq!(
            answered.as_deref(),
            Some(pid.as_str()),
            "the same server, resumed"
        );
    }
}

/// A paused sandbox whose processes are killed from outside has lost what it held: the runtime says it is
/// gone (so the reconciler's drift records it expired), never paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_whose_processes_died_is_reported_gone() {
    if which_node().is_none() {
        eprintln!("node is not installed; skipped");
        return;
    }
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let (id, _url, pid) = serving(&rt).await;
    rt.pause(&id).await.unwrap();
    assert_eq!(rt.state(&id).await.unwrap(), ProviderState::Paused);

    let pid: i32 = pid.parse().unwrap();
    let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let gone = loop {
        match rt.state(&id).await {
            Err(SandboxError::NotFound(_)) => break true,
            Ok(ProviderState::Paused) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => break false,
        }
    };
    assert!(gone, "still reported: {:?}", rt.state(&id).await);
    assert!(rt.list().await.unwrap().iter().all(|s| s.sandbox_id != id));
    assert!(!root.0.join(id.as_str()).exists());
}

fn which_node() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("node"))
            .find(|candidate| candidate.is_file())
    })
}
