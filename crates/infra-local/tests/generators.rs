//! The built-in generators: the template's files, and a command generator's success and failure modes.

use std::time::{Duration, Instant};

use domain::ports::{CodeGenerator, GeneratorError};
use domain::JobGoal;
use infra_local::{CommandGenerator, TemplateGenerator};

fn goal(s: &str) -> JobGoal {
    JobGoal::try_from(s.to_owned()).unwrap()
}

fn sh(script: &str, timeout: Duration) -> CommandGenerator {
    CommandGenerator::new("sh", vec!["-c".into(), script.into()], timeout)
}

#[tokio::test]
async fn the_template_is_a_dependency_free_node_app_showing_the_goal() {
    let files = TemplateGenerator
        .generate(&goal("A \"quoted\" <script>alert(1)</script> app"))
        .await
        .unwrap();
    let paths: Vec<&str> = files.0.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["package.json", "server.js"]);

    let pkg: serde_json::Value = serde_json::from_str(&files.0[0].content).unwrap();
    assert_eq!(pkg["scripts"]["start"], "node server.js");
    assert_eq!(pkg["scripts"]["dev"], "node server.js");
    assert!(pkg.get("dependencies").is_none());
    assert!(pkg.get("devDependencies").is_none());

    let server = &files.0[1].content;
    assert!(server.contains("require(\"http\")"));
    assert!(server.contains("process.env.PORT"));
    assert!(server.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!server.contains("<script>"));
}

#[tokio::test]
async fn the_template_server_is_valid_javascript_for_any_goal() {
    // `node --check` parses without running: backticks, quotes, backslashes and newlines stay inert.
    let files = TemplateGenerator
        .generate(&goal(
            "`${process.exit(1)}` \\ \" ' \n </script> \u{2028} done",
        ))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("slipway-gen-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = dir.join("server.js");
    std::fs::write(&server, &files.0[1].content).unwrap();
    let status = tokio::process::Command::new("node")
        .arg("--check")
        .arg(&server)
        .status()
        .await;
    std::fs::remove_dir_all(&dir).unwrap();
    let status = status.expect(
        "node is not installed: this test runs `node --check`; install Node.js 18 or later \
         (`apt-get install nodejs npm`)",
    );
    assert!(status.success());
}

#[tokio::test]
async fn a_command_generator_reads_files_as_json_with_the_goal_on_stdin() {
    let script =
        r#"goal=$(cat); printf '{"files": {"package.json": "{}", "goal.txt": "%s"}}' "$goal""#;
    let files = sh(script, Duration::from_secs(30))
        .generate(&goal("build me a blog"))
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = files
        .0
        .iter()
        .map(|f| (f.path.as_str(), f.content.as_str()))
        .collect();
    assert_eq!(
        got,
        [("goal.txt", "build me a blog"), ("package.json", "{}")]
    );
}

#[tokio::test]
async fn bad_json_is_invalid_output() {
    let res = sh("cat >/dev/null; echo 'not json'", Duration::from_secs(30))
        .generate(&goal("x"))
        .await;
    assert!(
        matches!(res, Err(GeneratorError::InvalidOutput(_))),
        "{res:?}"
    );
    let res = sh(
        r#"cat >/dev/null; echo '{"files": {}}'"#,
        Duration::from_secs(30),
    )
    .generate(&goal("x"))
    .await;
    assert!(
        matches!(res, Err(GeneratorError::InvalidOutput(_))),
        "{res:?}"
    );
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_tail_of_stderr() {
    let res = sh(
        "cat >/dev/null; echo 'model exploded' >&2; exit 2",
        Duration::from_secs(30),
    )
    .generate(&goal("x"))
    .await;
    match res {
        Err(GeneratorError::Failed(msg)) => assert!(msg.contains("model exploded"), "{msg}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    let res = sh("exit 75", Duration::from_secs(30))
        .generate(&goal("x"))
        .await;
    assert_eq!(res, Err(GeneratorError::RateLimited));
    let res = CommandGenerator::new("/nonexistent/agent", vec![], Duration::from_secs(30))
        .generate(&goal("x"))
        .await;
    assert!(matches!(res, Err(GeneratorError::Failed(_))), "{res:?}");
}

#[tokio::test]
async fn a_generator_past_its_timeout_is_killed() {
    let dir = std::env::temp_dir().join(format!("slipway-gen-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let started = Instant::now();
    let res = sh(&script, Duration::from_millis(500))
        .generate(&goal("x"))
        .await;
    assert_eq!(res, Err(GeneratorError::TimedOut));
    assert!(started.elapsed() < Duration::from_secs(10));

    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s[s.rfind(')').unwrap() + 1..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_owned();
                state != "Z" && state != "X"
            })
            .unwrap_or(false);
        if !alive {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(gone, "the generator's child survived its timeout");
}
