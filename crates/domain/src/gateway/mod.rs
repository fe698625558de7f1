//! The preview gateway's rules: which host a READY job's preview gets ([`label`]), how the owner proves
//! access in `signed` mode ([`signed`]), and which requests may wake a paused sandbox or keep a running one
//! awake ([`wake`]). The api-server's gateway module applies them to HTTP.

pub mod label;
pub mod signed;
pub mod wake;

pub use label::{job_of_label, label_for, PreviewSecret};
pub use signed::{issue, verify, Purpose};
pub use wake::{decide, Decision, RequestKind};
