//! The workspace as the pipeline sees it and where it really is.
//!
//! [`SandboxRuntime::workspace_path`](domain::ports::SandboxRuntime::workspace_path) takes no sandbox id, so
//! the local runtime reports the same logical path as an E2B sandbox ([`LOGICAL_WORKSPACE`]) and maps it,
//! per sandbox, to `<root>/<id>/workspace`, as a bind mount would: file paths and working directories are
//! relative to the workspace or under the logical path, and the logical path is rewritten in command text.

use std::path::{Component, Path, PathBuf};

use domain::ports::SandboxError;

/// The workspace path the pipeline sees, the same as in an E2B sandbox.
pub const LOGICAL_WORKSPACE: &str = "/home/user/project";

/// Turns a path given relative to the workspace (or under [`LOGICAL_WORKSPACE`]) into a relative path that
/// cannot leave the workspace: other absolute paths and `..` are refused with `Invalid`. The empty path
/// (or the logical workspace itself) is the workspace.
pub(crate) fn workspace_relative(path: &str) -> Result<PathBuf, SandboxError> {
    let invalid = || SandboxError::Invalid(format!("path {path:?} is outside the workspace"));
    let rel = match path.strip_prefix(LOGICAL_WORKSPACE) {
        Some("") => "",
        Some(rest) => rest.strip_prefix('/').ok_or_else(invalid)?,
        None => path,
    };
    let mut out = PathBuf::new();
    for comp in Path::new(rel).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(invalid())
            }
        }
    }
    Ok(out)
}

/// Like [`workspace_relative`], for a file: the workspace itself is not a file.
pub(crate) fn workspace_file(path: &str) -> Result<PathBuf, SandboxError> {
    let rel = workspace_relative(path)?;
    if rel.as_os_str().is_empty() {
        return Err(SandboxError::Invalid(format!(
            "{path:?} is not a file path"
        )));
    }
    Ok(rel)
}

/// The command text with the logical workspace path replaced by the real one.
pub(crate) fn map_command(cmd: &str, workspace: &Path) -> String {
    cmd.replace(LOGICAL_WORKSPACE, &workspace.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_logical_paths_map_into_the_workspace() {
        assert_eq!(workspace_relative("a/b.txt"), Ok(PathBuf::from("a/b.txt")));
        assert_eq!(workspace_relative("./a"), Ok(PathBuf::from("a")));
        assert_eq!(
            workspace_relative("/home/user/project/src/x.js"),
            Ok(PathBuf::from("src/x.js"))
        );
        assert_eq!(workspace_relative("/home/user/project"), Ok(PathBuf::new()));
        assert_eq!(workspace_relative(""), Ok(PathBuf::new()));
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "/home/user/projectx/a",
            "/home/user/project/../x",
        ] {
            assert!(
                matches!(workspace_relative(bad), Err(SandboxError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(workspace_file(""), Err(SandboxError::Invalid(_))));
    }

    #[test]
    fn command_text_is_mapped() {
        assert_eq!(
            map_command(
                "cd /home/user/project && ls",
                Path::new("/tmp/r/l1/workspace")
            ),
            "cd /tmp/r/l1/workspace && ls"
        );
    }
}
