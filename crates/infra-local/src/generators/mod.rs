//! The built-in [`CodeGenerator`](domain::ports::CodeGenerator)s: a dependency-free Node app from a
//! template (the default), and an external command (an LLM agent) that prints the files as JSON.

mod command;
mod template;

pub use command::CommandGenerator;
pub use template::TemplateGenerator;
