//! What it takes to reach one sandbox: its envd access token and its domain, as its create, connect or
//! info answer gave them.
//!
//! Every sandbox is created secure, so envd refuses any call without the token. The token is a
//! credential: [`EnvdToken`] never prints, and it is never logged nor put in an API answer. It is not
//! written anywhere by Slipway either: the provider keeps it, and `GET /sandboxes/{id}` gives it back,
//! which is how a restarted worker or another process (the api-server's resume) reaches a sandbox it did
//! not create.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

/// A sandbox credential: its envd access token (sent as `X-Access-Token`) or its traffic access token (sent
/// as `e2b-traffic-access-token` by the preview gateway). Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct EnvdToken(String);

impl EnvdToken {
    /// The token itself, for the `X-Access-Token` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnvdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvdToken(<redacted>)")
    }
}

/// How to reach one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SandboxAccess {
    /// `None` for a sandbox created without `secure` (none of ours).
    pub token: Option<EnvdToken>,
    /// The domain its answers carried; `None`: the configured one.
    pub domain: Option<String>,
    /// The traffic access token of a sandbox created with private previews (create and connect answers
    /// carry it; `GET /sandboxes/{id}` does not).
    pub traffic: Option<EnvdToken>,
}

/// What this process has learned, by sandbox id.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessCache(Arc<RwLock<HashMap<String, SandboxAccess>>>);

impl AccessCache {
    pub fn get(&self, id: &str) -> Option<SandboxAccess> {
        self.0.read().ok().and_then(|map| map.get(id).cloned())
    }

    pub fn remember(&self, id: &str, access: SandboxAccess) {
        if let Ok(mut map) = self.0.write() {
            map.insert(id.to_owned(), access);
        }
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut map) = self.0.write() {
            map.remove(id);
        }
    }
}

/// The traffic access tokens a runtime learned, shared with the preview probe so that a private sandbox's
/// readiness can be checked (the probe sends the token as the gateway does).
#[derive(Debug, Clone)]
pub struct TrafficTokens(AccessCache);

impl TrafficTokens {
    pub(crate) fn new(cache: AccessCache) -> Self {
        Self(cache)
    }

    /// The token of `sandbox_id`, when it has one and this process learned it.
    pub(crate) fn of(&self, sandbox_id: &str) -> Option<EnvdToken> {
        self.0.get(sandbox_id).and_then(|a| a.traffic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print() {
        let token: EnvdToken = serde_json::from_str(r#""envd-secret""#).unwrap();
        let access = SandboxAccess {
            token: Some(token.clone()),
            domain: None,
            traffic: Some(token.clone()),
        };
        let cache = AccessCache::default();
        cache.remember("sbx", access.clone());
        for printed in [
            format!("{token:?}"),
            format!("{access:?}"),
            format!("{cache:?}"),
        ] {
            assert!(!printed.contains("envd-secret"), "{printed}");
        }
        assert_eq!(token.expose(), "envd-secret");
    }
}
