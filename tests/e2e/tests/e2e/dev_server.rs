//! READY means the dev server itself answered: a dev server that exits fails the build at once with its
//! exit code and its own last lines, and one that never listens fails it at the readiness deadline, in
//! both cases never READY and with the sandbox killed. In e2b mode the provider's proxy answers for the
//! port meanwhile (502 "port is not open"), which must not count as the app.

use std::time::Duration;

use crate::happy_path::is_final;
use crate::harness::{spawn_app, wait_until, Generator, Mode, Options, BUILD_DEADLINE};

const USER: &str = "user_e2e_dev_server";

/// An app whose server prints its error and exits 1 (`npm start` runs it).
const EXITS: &str = r#"cat >/dev/null
cat <<'JSON'
{"files":{"package.json":"{\"name\":\"crash\",\"version\":\"1.0.0\",\"scripts\":{\"start\":\"node server.js\"}}","server.js":"console.log('booting'); console.error('Error: DATABASE_URL is not set'); process.exit(1);"}}
JSON
"#;

/// An app whose server runs but never listens.
const NEVER_LISTENS: &str = r#"cat >/dev/null
cat <<'JSON'
{"files":{"package.json":"{\"name\":\"mute\",\"version\":\"1.0.0\",\"scripts\":{\"start\":\"node server.js\"}}","server.js":"console.log('compiling, almost there'); setInterval(() => {}, 1000);"}}
JSON
"#;

/// The build fails with the failure's message; its sandbox is killed; it was never READY.
async fn fails_with(mode: Mode, script: &'static str, readiness_secs: u64) -> String {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(script),
            readiness_timeout_secs: readiness_secs,
            ..Options::default()
        },
    )
    .await;
    let job = app
        .start_build(USER, "An app whose dev server misbehaves")
        .await;
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "failed", is_final)
        .await;
    assert_eq!(status["status"], "failed", "[{mode:?}] {status:#}");
    assert!(status["preview_url"].is_null(), "{status:#}");
    let killed = wait_until(BUILD_DEADLINE, || async {
        app.row(job).await.sandbox_state == "killed"
    })
    .await;
    assert!(killed, "[{mode:?}] row: {:?}", app.row(job).await);
    let error = status["error_message"]
        .as_str()
        .expect("error_message")
        .to_owned();
    app.shut_down().await;
    error
}

/// Exits at once: the error names the exit code and quotes the app, long before the readiness deadline.
pub async fn a_dev_server_that_exits_fails_the_build_with_its_error(mode: Mode) {
    let started = tokio::time::Instant::now();
    let error = fails_with(mode, EXITS, 120).await;
    assert!(error.contains("exited with code 1"), "[{mode:?}] {error}");
    assert!(
        error.contains("Error: DATABASE_URL is not set"),
        "[{mode:?}] the dev server's own error: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "[{mode:?}] failed at once, not at the 120 s deadline"
    );
}

/// Never listens: at the deadline, the error says what answered instead and, when the runtime streams
/// it (E2B), what the dev server last printed.
pub async fn a_port_nothing_listens_on_fails_the_build(mode: Mode) {
    let error = fails_with(mode, NEVER_LISTENS, 5).await;
    assert!(
        error.contains("did not become ready within 5s"),
        "[{mode:?}] {error}"
    );
    if mode == Mode::E2b {
        assert!(error.contains("port is not open"), "{error}");
        assert!(error.contains("compiling, almost there"), "{error}");
    }
}
