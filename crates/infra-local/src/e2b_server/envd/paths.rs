//! The sandbox's file system as envd shows it: the user's home `/home/user` is `<sandbox>/home` on this
//! machine, and `/home/user/project` in it a link to the runtime's workspace, so that files the platform
//! writes there and commands run there meet. Paths are absolute or relative to the home, as envd's; any
//! path outside the home is refused (a local sandbox has no root file system of its own).

use std::path::{Component, Path, PathBuf};

use domain::SandboxId;

use super::connect::{Code, ConnectError};
use crate::LocalRuntime;

/// The sandbox user's home, which relative paths resolve against.
pub const HOME: &str = "/home/user";

/// One sandbox's file system.
#[derive(Debug, Clone)]
pub struct SandboxFs {
    /// `<sandbox>/home`.
    home: PathBuf,
}

/// A path both as the sandbox sees it and where it is on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub logical: String,
    pub real: PathBuf,
}

impl SandboxFs {
    /// The sandbox's home, created (with its `project` link) on first use. A sandbox killed meanwhile is
    /// `NotFound`: its directory is never recreated.
    pub async fn open(runtime: &LocalRuntime, id: &SandboxId) -> Result<Self, ConnectError> {
        let workspace = runtime.workspace_dir(id);
        let sandbox_dir = workspace
            .parent()
            .ok_or_else(|| ConnectError::new(Code::Internal, "sandbox directory not found"))?;
        let home = sandbox_dir.join("home");
        match tokio::fs::create_dir(&home).await {
            Ok(()) => {
                // Relative, so the link survives the root directory moving.
                tokio::fs::symlink("../workspace", home.join("project"))
                    .await
                    .map_err(|e| io_error("link the project into the home", &e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConnectError::new(
                    Code::NotFound,
                    format!("sandbox {id} not found"),
                ))
            }
            Err(e) => return Err(io_error("create the home directory", &e)),
        }
        Ok(Self { home })
    }

    /// The real home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Resolves an envd path: relative to the home, `..` folded, and inside the home.
    pub fn resolve(&self, path: &str) -> Result<Resolved, ConnectError> {
        let absolute = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{HOME}/{path}")
        };
        let mut parts: Vec<&str> = Vec::new();
        for component in Path::new(&absolute).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
                Component::ParentDir => {
                    parts.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        let logical = format!("/{}", parts.join("/"));
        let rest = logical
            .strip_prefix(HOME)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .ok_or_else(|| {
                ConnectError::new(
                    Code::InvalidArgument,
                    format!(
                        "path '{logical}' is outside {HOME}, the only directory e2b-local serves"
                    ),
                )
            })?;
        Ok(Resolved {
            real: self.home.join(rest.trim_start_matches('/')),
            logical,
        })
    }

    /// `command` with every `/home/user` path pointed at the real home, as a bind mount would.
    pub fn map_command(&self, command: &str) -> String {
        let real = self.home.to_string_lossy();
        let mut out = String::with_capacity(command.len());
        let mut rest = command;
        while let Some(at) = rest.find(HOME) {
            let after = &rest[at + HOME.len()..];
            let whole = after
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'));
            out.push_str(&rest[..at]);
            out.push_str(if whole { &real } else { HOME });
            rest = after;
        }
        out.push_str(rest);
        out
    }
}

pub fn io_error(context: &str, e: &std::io::Error) -> ConnectError {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => Code::NotFound,
        std::io::ErrorKind::AlreadyExists => Code::AlreadyExists,
        std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
        _ => Code::Internal,
    };
    ConnectError::new(code, format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> SandboxFs {
        SandboxFs {
            home: PathBuf::from("/srv/l1/home"),
        }
    }

    #[test]
    fn paths_resolve_inside_the_home() {
        let fs = fs();
        let r = fs.resolve("notes.txt").unwrap();
        assert_eq!(r.logical, "/home/user/notes.txt");
        assert_eq!(r.real, PathBuf::from("/srv/l1/home/notes.txt"));
        let r = fs.resolve("/home/user/project/src/../a.js").unwrap();
        assert_eq!(r.logical, "/home/user/project/a.js");
        assert_eq!(r.real, PathBuf::from("/srv/l1/home/project/a.js"));
        assert_eq!(
            fs.resolve("/home/user").unwrap().real,
            PathBuf::from("/srv/l1/home/")
        );
        for outside in [
            "/etc/passwd",
            "../x",
            "/home/username/x",
            "/home/user/../../etc",
        ] {
            assert_eq!(
                fs.resolve(outside).map_err(|e| e.code),
                Err(Code::InvalidArgument),
                "{outside}"
            );
        }
    }

    #[test]
    fn commands_see_the_home() {
        let fs = fs();
        assert_eq!(
            fs.map_command("cat /home/user/a && ls /home/user"),
            "cat /srv/l1/home/a && ls /srv/l1/home"
        );
        assert_eq!(fs.map_command("ls /home/username"), "ls /home/username");
        assert_eq!(
            fs.map_command("cd /home/user/project"),
            "cd /srv/l1/home/project"
        );
    }
}
