//! The package.json parser the pipeline and resume are given (domain has no serde).

use domain::usecases::framework::PackageFacts;
use domain::usecases::pipeline::{PackageJsonError, PackageJsonParser};
use serde_json::{Map, Value};

/// Reads dependency and script names with serde_json.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonPackageParser;

impl PackageJsonParser for JsonPackageParser {
    fn parse(&self, text: &str) -> Result<PackageFacts, PackageJsonError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| PackageJsonError(e.to_string()))?;
        let Value::Object(manifest) = value else {
            return Err(PackageJsonError("it is not a JSON object".into()));
        };
        let mut dependencies = names(&manifest, "dependencies")?;
        dependencies.extend(names(&manifest, "devDependencies")?);
        Ok(PackageFacts {
            dependencies,
            scripts: names(&manifest, "scripts")?,
        })
    }
}

/// The keys of an optional object field.
fn names(manifest: &Map<String, Value>, field: &str) -> Result<Vec<String>, PackageJsonError> {
    match manifest.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(entries)) => Ok(entries.keys().cloned().collect()),
        Some(_) => Err(PackageJsonError(format!("`{field}` is not an object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_dev_dependencies_and_scripts_are_read() {
        let facts = JsonPackageParser
            .parse(r#"{"dependencies":{"next":"14"},"devDependencies":{"typescript":"5"},"scripts":{"dev":"next dev"}}"#)
            .unwrap();
        assert_eq!(facts.dependencies, ["next", "typescript"]);
        assert_eq!(facts.scripts, ["dev"]);
        assert!(facts.needs_install());
    }

    #[test]
    fn a_manifest_without_dependencies_needs_no_install() {
        let facts = JsonPackageParser
            .parse(r#"{"name":"x","scripts":{"start":"node server.js"}}"#)
            .unwrap();
        assert!(!facts.needs_install());
    }

    #[test]
    fn bad_manifests_are_refused() {
        assert!(JsonPackageParser.parse("{").is_err());
        assert!(JsonPackageParser.parse("[]").is_err());
        assert!(JsonPackageParser
            .parse(r#"{"scripts":"npm start"}"#)
            .is_err());
    }
}
