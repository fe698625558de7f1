//! What the platform API knows about a sandbox and the local runtime does not: its template, metadata,
//! times, lifecycle and envd access token. Kept in memory; a sandbox the runtime has but this server did
//! not create (after a crash of the server) is adopted as a secure sandbox with a fresh token, which the
//! detail endpoint hands out like any other.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The template reported for sandboxes this server did not create.
const ADOPTED_TEMPLATE: &str = "local";

/// A sandbox's envd access token. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn fresh() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token (compared in constant time).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// One sandbox as the platform API sees it.
#[derive(Debug, Clone)]
pub struct SandboxMeta {
    pub template_id: String,
    pub metadata: BTreeMap<String, String>,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub auto_pause: bool,
    /// Set for a secure sandbox: envd refuses calls without it.
    pub token: Option<AccessToken>,
    /// Set for a sandbox created with `allowPublicTraffic: false`: its other ports refuse requests without
    /// it in `e2b-traffic-access-token`.
    pub traffic: Option<AccessToken>,
}

impl SandboxMeta {
    /// A record for a sandbox the runtime has but this server did not create.
    fn adopted(job_id: Option<String>) -> Self {
        let mut metadata = BTreeMap::from([("slipway".to_owned(), "1".to_owned())]);
        if let Some(job_id) = job_id {
            metadata.insert("job_id".to_owned(), job_id);
        }
        let now = Utc::now();
        Self {
            template_id: ADOPTED_TEMPLATE.to_owned(),
            metadata,
            started_at: now,
            end_at: now,
            auto_pause: true,
            token: Some(AccessToken::fresh()),
            // A sandbox this server forgot (it restarted) cannot be made private again.
            traffic: None,
        }
    }
}

/// Every sandbox's record, by id.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<String, SandboxMeta>>>);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SandboxMeta>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: &str, meta: SandboxMeta) {
        self.lock().insert(id.to_owned(), meta);
    }

    /// The record of a sandbox the runtime has, adopting it when this server has none.
    pub fn get_or_adopt(&self, id: &str, job_id: Option<String>) -> SandboxMeta {
        self.lock()
            .entry(id.to_owned())
            .or_insert_with(|| SandboxMeta::adopted(job_id))
            .clone()
    }

    /// Changes the record (adopting it first when needed) and answers the result.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut SandboxMeta)) -> SandboxMeta {
        let mut map = self.lock();
        let meta = map
            .entry(id.to_owned())
            .or_insert_with(|| SandboxMeta::adopted(None));
        f(meta);
        meta.clone()
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print_and_compare_whole() {
        let token = AccessToken::fresh();
        assert!(!format!("{token:?}").contains(token.expose()));
        assert!(token.matches(token.expose()));
        assert!(!token.matches(""));
        assert!(!token.matches(&token.expose()[1..]));
    }

    #[test]
    fn unknown_sandboxes_are_adopted_secure() {
        let registry = Registry::default();
        let meta = registry.get_or_adopt("l1", Some("job".into()));
        assert!(meta.token.is_some());
        assert_eq!(meta.metadata.get("job_id").map(String::as_str), Some("job"));
        // The same token afterwards.
        assert_eq!(registry.get_or_adopt("l1", None).token, meta.token);
    }
}
