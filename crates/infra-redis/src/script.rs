//! Lua scripts run by SHA, loaded on first use and again whenever a server answers NOSCRIPT (a restart, a
//! `SCRIPT FLUSH`, or a cluster node that has not seen the script yet).

use std::sync::OnceLock;

use fred::prelude::{Client, Error, FromValue, LuaInterface, Value};

pub(crate) struct LuaScript {
    source: &'static str,
    sha: OnceLock<String>,
}

impl LuaScript {
    pub(crate) const fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: OnceLock::new(),
        }
    }

    /// Runs the script with these keys (all in one hash slot) and arguments.
    pub(crate) async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, Error> {
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = client.script_load(self.source).await?;
                self.sha.get_or_init(|| sha).clone()
            }
        };
        match client.evalsha(sha, keys.clone(), args.clone()).await {
            // EVAL both runs the script and caches it on the node that owns the keys.
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                client.eval(self.source, keys, args).await
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that does not know the SHA (restart, flush, another cluster node) gets the source instead.
    #[tokio::test]
    async fn noscript_falls_back_to_eval() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = crate::connect(&url).await.unwrap();
        let script = LuaScript::new("return ARGV[1] .. '-ok'");
        script.sha.set("0".repeat(40)).unwrap();
        let out: String = script.run(&client, vec![], vec!["x".into()]).await.unwrap();
        assert_eq!(out, "x-ok");
    }
}
