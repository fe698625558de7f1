//! Reading a generated package.json. Parsing JSON is the binary's job (domain has no serde), so the parser is
//! a port the pipeline is given.

use crate::usecases::framework::PackageFacts;

/// The generated package.json is not JSON, or not an object of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PackageJsonError(pub String);

/// Extracts the facts the pipeline needs (dependency and script names) from package.json text.
///
/// Errors: [`PackageJsonError`] when the text is not a JSON object, or `dependencies`, `devDependencies` or
/// `scripts` is present but not an object.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait PackageJsonParser: Send + Sync {
    fn parse(&self, text: &str) -> Result<PackageFacts, PackageJsonError>;
}
