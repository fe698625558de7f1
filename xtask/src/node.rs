//! Node.js, a prerequisite of local sandboxes: every build runs `npm` and `node` on this machine. `dev`
//! checks for it before building anything, so a missing install is one line, not a failed build later.

use std::process::Stdio;

use tokio::process::Command;

/// The oldest Node.js major release the sandboxes are run with (Debian 12's); the README says the same.
pub const MIN_NODE_MAJOR: u32 = 18;

const INSTALL: &str = "install Node.js 18 or later with npm (`apt-get install nodejs npm`)";

/// `Ok` when `node` (at least [`MIN_NODE_MAJOR`]) and `npm` answer `--version`; otherwise the one line to
/// print.
pub async fn require_node_and_npm() -> anyhow::Result<()> {
    let node = version_of("node").await.ok_or_else(|| {
        anyhow::anyhow!("node is not on the PATH: local sandboxes run it; {INSTALL}")
    })?;
    match major(&node) {
        Some(major) if major >= MIN_NODE_MAJOR => {}
        _ => anyhow::bail!("node {node} is too old for local sandboxes; {INSTALL}"),
    }
    if version_of("npm").await.is_none() {
        anyhow::bail!("npm is not on the PATH: local sandboxes install with it; {INSTALL}");
    }
    Ok(())
}

/// What `<program> --version` prints, when it runs and succeeds.
async fn version_of(program: &str) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The major release of a `node --version` answer (`v20.11.1` → 20).
fn major(version: &str) -> Option<u32> {
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_major_release_is_read_from_node_s_answer() {
        assert_eq!(major("v20.11.1"), Some(20));
        assert_eq!(major("v18.20.4\n"), Some(18));
        assert_eq!(major("garbage"), None);
    }

    #[test]
    fn the_install_line_names_the_minimum_release() {
        assert!(INSTALL.contains(&format!("Node.js {MIN_NODE_MAJOR} ")));
    }
}
