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

/// A command run from the workspace root with the launching cargo, without the variables `cargo run` set
/// for xtask itself (`OUT_DIR` of xtask's build script, `CARGO_PKG_NAME=xtask`, …): build scripts such as
/// ring's declare them with `rerun-if-env-changed`, so inheriting them rebuilt ring and everything above it (rustls,
/// sqlx, reqwest) on every alternation between `cargo xtask` and a build it runs.
pub fn cargo_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(cargo());
    command.current_dir(root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SET_BY_CARGO_RUN.contains(&name) || name.starts_with("CARGO_PKG_") {
            command.env_remove(name);
        }
    }
    command
}

/// What `cargo run` sets for the program it runs, besides `CARGO_PKG_*`.
const SET_BY_CARGO_RUN: [&str; 7] = [
    "OUT_DIR",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

/// An environment variable, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => default.to_owned(),
    }
}
