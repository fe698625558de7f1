//! Where things are: the workspace root, the target directory, the cargo that launched us, and the
//! defaults every command shares.

use std::path::{Path, PathBuf};

/// The database the binaries use unless DATABASE_URL says otherwise (DESIGN.md, Configuration).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/slipway";
/// The Redis the binaries use unless REDIS_URL says otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The workspace root (xtask lives one level below it).
pub fn root() -> &'static Path {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir)
}

/// Cargo's target directory, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The cargo that ran `cargo xtask`, so subcommands use the same toolchain.
pub fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A command run from the workspace root with the launching cargo.
pub fn cargo_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(cargo());
    command.current_dir(root());
    command
}

/// An environment variable, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => default.to_owned(),
    }
}
