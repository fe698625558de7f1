//! Checking the generator's files before anything is written: paths are normalised and kept inside the
//! workspace, and an app must have a root package.json (the pipeline installs and starts it with npm).

use std::collections::BTreeMap;

use super::package::{PackageJsonError, PackageJsonParser};
use crate::ports::GeneratedFiles;
use crate::usecases::framework::PackageFacts;

/// The manifest every generated app needs at the workspace root.
pub const PACKAGE_JSON: &str = "package.json";

/// Extensions of JavaScript and TypeScript sources, which cannot run without a package.json.
pub const JS_TS_EXTENSIONS: [&str; 6] = ["js", "jsx", "ts", "tsx", "mjs", "cjs"];

/// Why the generated files cannot be built. Each variant is one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the generator produced no files")]
    NoFiles,
    #[error("a generated file has an empty path")]
    EmptyPath,
    #[error("generated file path {0:?} contains a NUL character")]
    NulInPath(String),
    #[error("generated file path {0:?} is absolute; paths must be relative to the workspace")]
    AbsolutePath(String),
    #[error("generated file path {0:?} points outside the workspace")]
    EscapesWorkspace(String),
    /// `js_file` names one JavaScript/TypeScript file when there are any.
    #[error("{}", missing_package_json(.js_file.as_deref()))]
    MissingPackageJson { js_file: Option<String> },
    #[error("the generated package.json is invalid: {0}")]
    InvalidPackageJson(#[source] PackageJsonError),
}

fn missing_package_json(js_file: Option<&str>) -> String {
    match js_file {
        Some(file) => format!(
            "JavaScript/TypeScript files (such as {file}) need a {PACKAGE_JSON} at the workspace root, \
             and the generated app has none"
        ),
        None => format!("the generated app has no {PACKAGE_JSON} at the workspace root"),
    }
}

/// Files ready to write, and what their package.json says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedFiles {
    /// Normalised relative paths, sorted, each once (a later duplicate replaces an earlier one).
    pub files: Vec<(String, Vec<u8>)>,
    pub package: PackageFacts,
}

/// Normalises a generated path to a relative `a/b/c` form: backslashes become slashes, `.` segments and
/// repeated slashes go, and `..` is resolved, but never above the workspace.
pub fn normalise_path(raw: &str) -> Result<String, FileError> {
    let path = raw.trim().replace('\\', "/");
    if path.is_empty() {
        return Err(FileError::EmptyPath);
    }
    if path.contains('\0') {
        return Err(FileError::NulInPath(raw.to_owned()));
    }
    if path.starts_with('/') || has_drive_prefix(&path) {
        return Err(FileError::AbsolutePath(raw.to_owned()));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(FileError::EscapesWorkspace(raw.to_owned()));
                }
            }
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        return Err(FileError::EmptyPath);
    }
    Ok(segments.join("/"))
}

/// `C:/…`: absolute on Windows, and never what a generator means by a workspace path.
fn has_drive_prefix(path: &str) -> bool {
    let mut chars = path.chars();
    matches!(
        (chars.next(), chars.next()),
        (Some(c), Some(':')) if c.is_ascii_alphabetic()
    )
}

fn is_js_or_ts(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| JS_TS_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// Applies every rule to the generator's output, in one pass, before anything reaches the sandbox.
pub fn validate(
    generated: GeneratedFiles,
    parser: &dyn PackageJsonParser,
) -> Result<ValidatedFiles, FileError> {
    if generated.0.is_empty() {
        return Err(FileError::NoFiles);
    }
    let mut files = BTreeMap::new();
    for file in generated.0 {
        files.insert(normalise_path(&file.path)?, file.content);
    }
    let Some(manifest) = files.get(PACKAGE_JSON) else {
        let js_file = files.keys().find(|p| is_js_or_ts(p)).cloned();
        return Err(FileError::MissingPackageJson { js_file });
    };
    let package = parser
        .parse(manifest)
        .map_err(FileError::InvalidPackageJson)?;
    Ok(ValidatedFiles {
        files: files
            .into_iter()
            .map(|(path, content)| (path, content.into_bytes()))
            .collect(),
        package,
    })
}

#[cfg(test)]
mod tests {
    use super::super::package::MockPackageJsonParser;
    use super::*;
    use crate::ports::GeneratedFile;

    fn generated(paths: &[&str]) -> GeneratedFiles {
        GeneratedFiles(
            paths
                .iter()
                .map(|p| GeneratedFile {
                    path: (*p).to_owned(),
                    content: format!("content of {p}"),
                })
                .collect(),
        )
    }

    fn parser_ok() -> MockPackageJsonParser {
        let mut parser = MockPackageJsonParser::new();
        parser
            .expect_parse()
            .times(1)
            .returning(|_| Ok(PackageFacts::default()));
        parser
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise_path("./src/index.js"), Ok("src/index.js".into()));
        assert_eq!(normalise_path("src//a/./b.ts"), Ok("src/a/b.ts".into()));
        assert_eq!(normalise_path("src\\app.tsx"), Ok("src/app.tsx".into()));
        assert_eq!(normalise_path("src/../index.js"), Ok("index.js".into()));
        assert_eq!(normalise_path(" package.json "), Ok("package.json".into()));
    }

    #[test]
    fn empty_paths_are_refused() {
        assert_eq!(normalise_path(""), Err(FileError::EmptyPath));
        assert_eq!(normalise_path("./"), Err(FileError::EmptyPath));
        assert_eq!(normalise_path("a/.."), Err(FileError::EmptyPath));
    }

    #[test]
    fn absolute_paths_are_refused() {
        assert!(matches!(
            normalise_path("/etc/passwd"),
            Err(FileError::AbsolutePath(_))
        ));
        assert!(matches!(
            normalise_path("C:/x.js"),
            Err(FileError::AbsolutePath(_))
        ));
    }

    #[test]
    fn escaping_paths_are_refused() {
        assert!(matches!(
            normalise_path("../outside.js"),
            Err(FileError::EscapesWorkspace(_))
        ));
        assert!(matches!(
            normalise_path("src/../../x"),
            Err(FileError::EscapesWorkspace(_))
        ));
    }

    #[test]
    fn nul_is_refused() {
        assert!(matches!(
            normalise_path("a\0b"),
            Err(FileError::NulInPath(_))
        ));
    }

    #[test]
    fn js_without_package_json_names_package_json() {
        let parser = MockPackageJsonParser::new();
        let err = validate(generated(&["README.md", "src/index.ts"]), &parser).unwrap_err();
        assert_eq!(
            err,
            FileError::MissingPackageJson {
                js_file: Some("src/index.ts".into())
            }
        );
        assert!(err.to_string().contains("package.json"));
        assert!(err.to_string().contains("src/index.ts"));
    }

    #[test]
    fn a_nested_package_json_is_not_the_root_one() {
        let parser = MockPackageJsonParser::new();
        let err = validate(generated(&["web/package.json", "web/main.mjs"]), &parser).unwrap_err();
        assert!(matches!(err, FileError::MissingPackageJson { .. }));
    }

    #[test]
    fn no_files_is_refused() {
        let parser = MockPackageJsonParser::new();
        assert_eq!(
            validate(GeneratedFiles::default(), &parser),
            Err(FileError::NoFiles)
        );
    }

    #[test]
    fn a_valid_app_is_normalised_and_sorted() {
        let got = validate(generated(&["./server.js", "package.json"]), &parser_ok()).unwrap();
        let paths: Vec<_> = got.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["package.json", "server.js"]);
        assert_eq!(got.files[1].1, b"content of ./server.js".to_vec());
    }

    #[test]
    fn an_unparseable_package_json_is_refused() {
        let mut parser = MockPackageJsonParser::new();
        parser
            .expect_parse()
            .returning(|_| Err(PackageJsonError("expected value at line 1".into())));
        let err = validate(generated(&["package.json"]), &parser).unwrap_err();
        assert!(matches!(err, FileError::InvalidPackageJson(_)));
    }
}
