//! Tidy checks that keep ARCHITECTURE.md true: the domain crate stays free of I/O crates, every crate
//! and binary opens with a `//!` doc comment, and the paths the architecture document names exist. And
//! the README stays a five-minute read: under its size bound, every relative link leading to a file.
//!
//! The workspace is read through `cargo metadata`, so inherited (`workspace = true`) dependencies and
//! their features are seen as Cargo sees them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Crates that do I/O: the domain reaches them only through its ports.
const FORBIDDEN_IN_DOMAIN: &[&str] = &[
    "sqlx",
    "fred",
    "reqwest",
    "axum",
    "hyper",
    "tower-http",
    "infra-pg",
    "infra-redis",
    "infra-e2b",
    "infra-local",
];
/// Paths that open sockets or start processes.
const IO_PATHS: &[&str] = &[
    "tokio::net",
    "tokio::process",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "std::process::Command",
];
/// tokio features that bring sockets or processes (`full` includes both).
const FORBIDDEN_TOKIO_FEATURES: &[&str] = &["net", "process", "full"];

fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn workspace_packages(metadata: &Value) -> Vec<&Value> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|package| members.contains(&package["id"].as_str().unwrap_or_default()))
        .collect()
}

/// The I/O crates among one package's normal (not dev or build) dependencies.
fn io_dependencies(package: &Value) -> Vec<String> {
    package["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        // dev- and build-dependencies may do I/O: tests need real drivers.
        .filter(|dependency| dependency["kind"].is_null())
        .filter_map(|dependency| dependency["name"].as_str())
        .filter(|name| FORBIDDEN_IN_DOMAIN.contains(name))
        .map(str::to_owned)
        .collect()
}

/// The networking or process features that a manifest's own `tokio` line asks for in its normal
/// dependencies. (Features inherited from `[workspace.dependencies]` are not the crate's choice and are
/// checked in the source instead, by `domain_source_uses_no_tokio_networking`.)
fn tokio_io_features(manifest: &str) -> Vec<String> {
    let mut in_normal_dependencies = false;
    let mut offences = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_normal_dependencies = line.ends_with("dependencies]")
                && !line.contains("dev-dependencies")
                && !line.contains("build-dependencies");
            continue;
        }
        if !in_normal_dependencies || !(line.starts_with("tokio ") || line.starts_with("tokio=")) {
            continue;
        }
        let Some(features) = line.split("features").nth(1) else {
            continue;
        };
        for feature in features.split(['[', ']', ',', '"', '=', ' ', '}']) {
            if FORBIDDEN_TOKIO_FEATURES.contains(&feature) {
                offences.push(format!("tokio/{feature}"));
            }
        }
    }
    offences
}

#[test]
fn domain_depends_on_no_io_crate() {
    let metadata = metadata();
    let domain = workspace_packages(&metadata)
        .into_iter()
        .find(|package| package["name"] == "domain")
        .expect("the workspace has a domain crate");
    let manifest = std::fs::read_to_string(workspace_root().join("crates/domain/Cargo.toml"))
        .expect("crates/domain/Cargo.toml is readable");
    let mut offences = io_dependencies(domain);
    offences.extend(tokio_io_features(&manifest));
    assert!(
        offences.is_empty(),
        "crates/domain/Cargo.toml depends on {offences:?}; the domain does no I/O: put it behind a port \
         in crates/domain/src/ports and implement it in an infra-* crate (see ARCHITECTURE.md, Invariants)"
    );
}

#[test]
fn domain_source_uses_no_tokio_networking() {
    let mut offences = Vec::new();
    let mut dirs = vec![workspace_root().join("crates/domain/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("domain sources are readable")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for needle in IO_PATHS {
                if text.contains(needle) {
                    offences.push(format!("{} uses {needle}", path.display()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "the domain does no I/O: {offences:?}");
}

#[test]
fn every_crate_root_opens_with_a_doc_comment() {
    let metadata = metadata();
    let root = workspace_root();
    let mut missing = Vec::new();
    for package in workspace_packages(&metadata) {
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let is_root = kinds
                .iter()
                .any(|kind| matches!(*kind, "lib" | "rlib" | "bin" | "proc-macro"));
            if !is_root {
                continue;
            }
            let path = PathBuf::from(target["src_path"].as_str().unwrap_or_default());
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let first = text
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("");
            if !first.trim_start().starts_with("//!") {
                missing.push(
                    path.strip_prefix(&root)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these crate roots do not begin with a `//!` doc comment saying what the crate is for: {missing:?}"
    );
}

#[test]
fn the_architecture_document_names_every_member_and_only_existing_paths() {
    let root = workspace_root();
    let text =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md exists");
    let metadata = metadata();
    let mut problems = Vec::new();
    for package in workspace_packages(&metadata) {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().unwrap_or(&root);
        let relative = dir.strip_prefix(&root).unwrap_or(dir).display().to_string();
        if !text.contains(&format!("`{relative}`")) {
            problems.push(format!("member `{relative}` is not in the code map"));
        }
    }
    // Every `path/like/this.rs` (in backticks) must exist, so the document cannot point at moved code.
    for quoted in text.split('`').skip(1).step_by(2) {
        let looks_like_path = quoted.contains('/')
            && !quoted.contains(' ')
            && !quoted.contains(':')
            && !quoted.contains('{')
            && !quoted.contains('*')
            && (quoted.ends_with(".rs") || quoted.ends_with(".toml") || quoted.ends_with('/'));
        if looks_like_path && !root.join(quoted).exists() {
            problems.push(format!("`{quoted}` does not exist"));
        }
    }
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md is out of date: {problems:?}"
    );
}

#[test]
fn a_domain_with_sqlx_or_networked_tokio_is_caught() {
    let package = serde_json::json!({
        "dependencies": [
            {"name": "sqlx", "kind": null},
            {"name": "fred", "kind": "dev"},
            {"name": "uuid", "kind": null}
        ]
    });
    assert_eq!(io_dependencies(&package), ["sqlx"]);
    let manifest = r#"
[dependencies]
tokio = { workspace = true, features = ["time", "net"] }

[dev-dependencies]
tokio = { workspace = true, features = ["full"] }
"#;
    assert_eq!(tokio_io_features(manifest), ["tokio/net"]);
}

/// The README is the first page a newcomer reads: history and detail belong in `docs/`.
const README_MAX_BYTES: usize = 15_000;

/// The relative link targets (`](path)` or `](path#anchor)`) in a Markdown text.
fn relative_links(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or_default().to_string())
        .filter(|path| !path.is_empty() && !path.contains("://"))
        .collect()
}

#[test]
fn the_readme_is_short_and_its_links_lead_somewhere() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md is readable");
    assert!(
        readme.len() < README_MAX_BYTES,
        "README.md is {} bytes, over {README_MAX_BYTES}: move detail to docs/",
        readme.len()
    );
    let links = relative_links(&readme);
    assert!(
        links.iter().any(|link| link == "docs/operations.md"),
        "{links:?}"
    );
    for link in links {
        assert!(
            root.join(&link).exists(),
            "README.md links to {link}, which does not exist"
        );
    }
}

#[test]
fn relative_links_are_read_from_markdown() {
    let text = "see [a](docs/a.md#x), [b](https://e.example/), [c](#anchor) and [d](ARCH.md)";
    assert_eq!(relative_links(text), ["docs/a.md", "ARCH.md"]);
}
