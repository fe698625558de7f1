//! Two runtimes over one root, as the api-server and the job-worker of `cargo xtask dev` share one: two
//! `LocalRuntime` instances in this process (their file locks are separate open files, so they exclude
//! each other as two processes would), and once for real, with a child process running this test binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use domain::ports::{CommandSpec, ProviderState, SandboxError, SandboxRuntime, SandboxSpec};
use domain::{JobId, ProjectId, SandboxId, UserId};
use infra_local::LocalRuntime;

const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Tells a run of this binary that it is the child of `a_child_process_and_this_one_take_turns`.
const CHILD_ROOT_ENV: &str = "SLIPWAY_TWO_PROCESSES_CHILD_ROOT";
const CHILD_ID_ENV: &str = "SLIPWAY_TWO_PROCESSES_CHILD_ID";
const CHILD_PORTS: std::ops::Range<u16> = 5000..5020;

/// A root of its own; on drop, kills every process group recorded under it and removes it.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("slipway-two-proc-test-{}", uuid::Uuid::new_v4()));
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sandbox's `state.json`, which must always parse.
fn state_json(root: &Path, id: &SandboxId) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join(id.as_str()).join("state.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("corrupt state.json: {e}: {text}"))
}

/// The state letter of a process (`T` when stopped), `None` when it is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The sandbox's recorded state agrees with its process: stopped exactly when paused.
async fn process_matches_state(rt: &LocalRuntime, id: &SandboxId, pid: i32) {
    let state = rt.state(id).await.unwrap();
    let stopped = state == ProviderState::Paused;
    let agrees = eventually(Duration::from_secs(5), || async {
        proc_state(pid).is_some_and(|s| (s == 'T') == stopped)
    })
    .await;
    assert!(
        agrees,
        "state {state:?} but process is {:?}",
        proc_state(pid)
    );
}

/// Pause, resume, read the state, run a command, and map a port of its own (`ports`), over and over.
async fn hammer(rt: LocalRuntime, id: SandboxId, ports: std::ops::Range<u16>) {
    for port in ports {
        rt.pause(&id).await.unwrap();
        rt.state(&id).await.unwrap();
        match rt.run(&id, CommandSpec::new("true", CMD_TIMEOUT)).await {
            Ok(out) => assert_eq!(out.exit_code, 0),
            // Paused by the other side meanwhile.
            Err(SandboxError::Conflict(_)) => {}
            Err(e) => panic!("run: {e}"),
        }
        rt.connect(&id, Duration::from_secs(300)).await.unwrap();
        rt.preview_url(&id, port).await.unwrap();
        rt.state(&id).await.unwrap();
    }
}

/// Every port mapped by either side was kept: no read-modify-write of the state lost another's.
fn assert_ports_kept(root: &Path, id: &SandboxId, ranges: &[std::ops::Range<u16>]) {
    let state = state_json(root, id);
    let ports: BTreeMap<String, u16> = serde_json::from_value(state["ports"].clone()).unwrap();
    for port in ranges.iter().cloned().flatten() {
        assert!(
            ports.contains_key(&port.to_string()),
            "port {port} lost: {ports:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runtimes_on_one_sandbox_never_corrupt_or_lose_its_state() {
    let root = TempRoot::new();
    let a = LocalRuntime::new(root.0.clone()).unwrap();
    let b = LocalRuntime::new(root.0.clone()).unwrap();
    let id = a.create(&spec()).await.unwrap();
    let pid = b
        .run_background(&id, CommandSpec::new("sleep 120", CMD_TIMEOUT))
        .await
        .unwrap()
        .pid as i32;

    let ranges = [3000..3020, 3100..3120, 4000..4020, 4100..4120];
    let tasks = [
        tokio::spawn(hammer(a.clone(), id.clone(), ranges[0].clone())),
        tokio::spawn(hammer(a.clone(), id.clone(), ranges[1].clone())),
        tokio::spawn(hammer(b.clone(), id.clone(), ranges[2].clone())),
        tokio::spawn(hammer(b.clone(), id.clone(), ranges[3].clone())),
    ];
    // Meanwhile the file always parses.
    while !tasks.iter().all(|t| t.is_finished()) {
        state_json(&root.0, &id);
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }

    assert_ports_kept(&root.0, &id, &ranges);
    assert_eq!(a.state(&id).await.unwrap(), b.state(&id).await.unwrap());
    process_matches_state(&a, &id, pid).await;
    assert!(state_json(&root.0, &id)["groups"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(pid)));

    // One more round from each side: the signals follow the recorded state.
    a.pause(&id).await.unwrap();
    assert_eq!(b.state(&id).await.unwrap(), ProviderState::Paused);
    process_matches_state(&b, &id, pid).await;
    b.connect(&id, Duration::from_secs(300)).await.unwrap();
    assert_eq!(a.state(&id).await.unwrap(), ProviderState::Running);
    process_matches_state(&a, &id, pid).await;

    a.kill(&id).await.unwrap();
    assert!(!root.0.join(id.as_str()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_by_one_runtime_is_not_found_by_the_other_and_nothing_is_recreated() {
    let root = TempRoot::new();
    let a = LocalRuntime::new(root.0.clone()).unwrap();
    let b = LocalRuntime::new(root.0.clone()).unwrap();
    let id = a.create(&spec()).await.unwrap();
    let pid = a
        .run_background(&id, CommandSpec::new("sleep 120", CMD_TIMEOUT))
        .await
        .unwrap()
        .pid as i32;
    let dir = root.0.join(id.as_str());

    // b keeps operating until it sees the sandbox gone; every failure before that is NotFound too.
    let worker = {
        let (b, id) = (b.clone(), id.clone());
        tokio::spawn(async move {
            let mut ops = 0u32;
            loop {
                let res = match ops % 5 {
                    0 => b.pause(&id).await.map(drop),
                    1 => b.connect(&id, Duration::from_secs(300)).await,
                    2 => {
                        b.write_files(&id, vec![(format!("f{ops}.txt"), b"x".to_vec())])
                            .await
                    }
                    3 => b
                        .run(&id, CommandSpec::new("true", CMD_TIMEOUT))
                        .await
                        .map(drop)
                        .or_else(|e| match e {
                            SandboxError::Conflict(_) => Ok(()),
                            e => Err(e),
                        }),
                    _ => b.state(&id).await.map(drop),
                };
                match res {
                    Ok(()) => ops += 1,
                    Err(SandboxError::NotFound(_)) => return ops,
                    Err(e) => panic!("operation {ops} failed with {e}"),
                }
            }
        })
    };
    // Let b get going before the kill.
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_dir(dir.join("workspace")).is_ok_and(|d| d.count() >= 3)
        })
        .await
    );
    a.kill(&id).await.unwrap();
    let ops = worker.await.unwrap();
    assert!(ops >= 3, "{ops}");

    assert!(!dir.exists(), "the sandbox directory came back");
    assert!(matches!(b.state(&id).await, Err(SandboxError::NotFound(_))));
    assert!(matches!(
        b.write_files(&id, vec![("x.txt".into(), b"x".to_vec())])
            .await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(
        b.connect(&id, Duration::from_secs(1)).await,
        Err(SandboxError::NotFound(_))
    ));
    assert!(matches!(b.kill(&id).await, Err(SandboxError::NotFound(_))));
    assert!(!dir.exists(), "the sandbox directory came back");
    assert!(b.list().await.unwrap().is_empty());
    assert!(
        eventually(Duration::from_secs(5), || async {
            !matches!(proc_state(pid), Some(s) if s != 'Z')
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_runtimes_shutting_down_one_root_kill_everything_once() {
    let root = TempRoot::new();
    let a = LocalRuntime::new(root.0.clone()).unwrap();
    let b = LocalRuntime::new(root.0.clone()).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let rt = if i % 2 == 0 { &a } else { &b };
        ids.push(rt.create(&spec()).await.unwrap());
    }
    assert_eq!(a.list().await.unwrap().len(), 6);
    assert_eq!(b.list().await.unwrap().len(), 6);

    tokio::join!(a.shutdown_all(), b.shutdown_all());
    for id in &ids {
        assert!(!root.0.join(id.as_str()).exists());
    }
    assert!(a.list().await.unwrap().is_empty());
    assert!(b.list().await.unwrap().is_empty());
}

/// The child's half of `a_child_process_and_this_one_take_turns`; does nothing in a normal run.
#[tokio::test]
async fn child_process_hammer() {
    let (Ok(root), Ok(id)) = (std::env::var(CHILD_ROOT_ENV), std::env::var(CHILD_ID_ENV)) else {
        return;
    };
    let rt = LocalRuntime::new(PathBuf::from(root)).unwrap();
    let id = SandboxId::try_from(id.as_str()).unwrap();
    hammer(rt, id, CHILD_PORTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_process_and_this_one_take_turns() {
    let root = TempRoot::new();
    let rt = LocalRuntime::new(root.0.clone()).unwrap();
    let id = rt.create(&spec()).await.unwrap();
    let pid = rt
        .run_background(&id, CommandSpec::new("sleep 120", CMD_TIMEOUT))
        .await
        .unwrap()
        .pid as i32;

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_hammer", "--test-threads=1"])
        .env(CHILD_ROOT_ENV, &root.0)
        .env(CHILD_ID_ENV, id.as_str())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mine = [6000..6020, 6100..6120];
    let (x, y, status) = tokio::join!(
        tokio::spawn(hammer(rt.clone(), id.clone(), mine[0].clone())),
        tokio::spawn(hammer(rt.clone(), id.clone(), mine[1].clone())),
        child.wait(),
    );
    x.unwrap();
    y.unwrap();
    assert!(status.unwrap().success(), "the child process failed");

    assert_ports_kept(
        &root.0,
        &id,
        &[mine[0].clone(), mine[1].clone(), CHILD_PORTS],
    );
    process_matches_state(&rt, &id, pid).await;
    rt.kill(&id).await.unwrap();
    assert!(!root.0.join(id.as_str()).exists());
}
