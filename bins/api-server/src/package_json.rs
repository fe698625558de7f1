//! The package.json parser resume needs when it restarts a dev server (domain has no serde).

use serde_json::{Map, Value};

use domain::usecases::framework::PackageFacts;
use domain::usecases::pipeline::{PackageJsonError, PackageJsonParser};

/// Reads dependency and script names with serde_json.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonPackageParser;

fn keys(obj: &Map<String, Value>, field: &str) -> Result<Vec<String>, PackageJsonError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Object(m)) => Ok(m.keys().cloned().collect()),
        Some(_) => Err(PackageJsonError(format!("{field} is not an object"))),
    }
}

impl PackageJsonParser for JsonPackageParser {
    fn parse(&self, text: &str) -> Result<PackageFacts, PackageJsonError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PackageJsonError(format!("package.json is not JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(PackageJsonError("package.json is not an object".into()));
        };
        let mut dependencies = keys(&obj, "dependencies")?;
        dependencies.extend(keys(&obj, "devDependencies")?);
        Ok(PackageFacts {
            dependencies,
            scripts: keys(&obj, "scripts")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dependencies_and_scripts() {
        let facts = JsonPackageParser
            .parse(r#"{"dependencies":{"next":"14"},"devDependencies":{"vite":"5"},"scripts":{"dev":"x"}}"#)
            .unwrap();
        assert_eq!(facts.dependencies, vec!["next", "vite"]);
        assert_eq!(facts.scripts, vec!["dev"]);
        assert!(JsonPackageParser.parse("[]").is_err());
        assert!(JsonPackageParser.parse(r#"{"scripts":3}"#).is_err());
    }
}
