//! e2b-local against the official E2B SDK: installs PyPI's `e2b` (2.x) into a virtual environment under
//! `target/` (once; later runs find it installed), starts e2b-local on an ephemeral port over a fresh
//! sandbox root, and runs `tests/sdk/conformance.py`, which drives the SDK's whole lifecycle and asserts
//! each step. The test fails with the script's output when a step fails.
//!
//! Needs `python3` with the `venv` module (Debian: `python3-venv`) and PyPI; `.ci/run` installs the
//! former. Set `E2B_SDK_VENV` to use another virtual environment.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use infra_local::e2b_server::{local_domain, router, E2bServerConfig, FaultConfig};
use infra_local::LocalRuntime;
use tokio::process::Command;

/// The SDK release line the conformance is held to.
const SDK_REQUIREMENT: &str = "e2b>=2,<3";
/// The major version that satisfies it.
const SDK_MAJOR: &str = "2.";
const API_KEY: &str = "sdk-conformance-key";
/// Installing the SDK from PyPI the first time.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);
/// The whole script.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/e2b-sdk-venv`, or `E2B_SDK_VENV`.
fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("E2B_SDK_VENV") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("e2b-sdk-venv")
}

fn printable(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to its end within `deadline`, its output captured.
async fn run(mut cmd: Command, what: &str, deadline: Duration) -> Output {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(deadline, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {deadline:?}"))
        .unwrap_or_else(|e| panic!("{what} could not be started: {e}"));
    out
}

/// The venv's python with the SDK installed, installing it when missing or not a 2.x release. Runs under
/// an exclusive lock, so that two test runs never build the same venv at once.
async fn sdk_python() -> PathBuf {
    let venv = venv_dir();
    let parent = venv.parent().expect("the venv has a parent directory");
    std::fs::create_dir_all(parent).expect("create the venv's parent directory");
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("create the venv lock");
    let _locked =
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).expect("lock the venv");

    let python = venv.join("bin/python");
    if !python.exists() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(&venv);
        let out = run(cmd, "python3 -m venv", INSTALL_DEADLINE).await;
        assert!(
            out.status.success(),
            "could not create a virtual environment with `python3 -m venv` (Debian: apt-get install \
             python3-venv):\n{}",
            printable(&out)
        );
    }
    let mut version = Command::new(&python);
    version.args([
        "-c",
        "import importlib.metadata as m; print(m.version('e2b'))",
    ]);
    let installed = run(version, "reading the SDK's version", INSTALL_DEADLINE).await;
    let installed = String::from_utf8_lossy(&installed.stdout).trim().to_owned();
    if !installed.starts_with(SDK_MAJOR) {
        let mut pip = Command::new(&python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(SDK_REQUIREMENT);
        let out = run(pip, "pip install e2b", INSTALL_DEADLINE).await;
        assert!(
            out.status.success(),
            "could not install {SDK_REQUIREMENT} from PyPI:\n{}",
            printable(&out)
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_drives_e2b_local_through_its_lifecycle() {
    let python = sdk_python().await;

    let root = std::env::temp_dir().join(format!(
        "slipway-sdk-conformance-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let local = LocalRuntime::new(root.clone()).expect("sandbox root");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(
        local.clone(),
        E2bServerConfig {
            api_key: API_KEY.into(),
            domain: local_domain(addr),
            faults: FaultConfig::default(),
        },
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("http://{addr}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/conformance.py");
    let mut cmd = Command::new(&python);
    // -B: no __pycache__ written into the source tree.
    cmd.arg("-B")
        .arg(&script)
        .env("E2B_API_KEY", API_KEY)
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_ACCESS_TOKEN");
    let out = run(cmd, "the conformance script", SCRIPT_DEADLINE).await;

    // Shown with --nocapture, or by the runner on failure.
    println!("{}", printable(&out));
    server.abort();
    local.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        out.status.success(),
        "the SDK conformance script failed:\n{}",
        printable(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("all steps passed"),
        "{}",
        printable(&out)
    );
}
