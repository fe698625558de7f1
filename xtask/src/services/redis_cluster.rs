//! Redis Cluster for `test`: the cluster `REDIS_CLUSTER_URL` names when it answers (CI starts one on ports
//! 45001–45003), otherwise a private three-node cluster (infra-redis's `LocalCluster`: the installed
//! `redis-server` in cluster mode, nothing persisted) under `target/services/`, stopped on drop.

use std::time::Duration;

use anyhow::Context;
use fred::prelude::ClientLike;
use infra_redis::LocalCluster;
use url::Url;

use super::Service;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured cluster when it answers, otherwise a private one started here.
pub async fn ensure_redis_cluster(configured: Option<&Url>) -> anyhow::Result<Service> {
    if let Some(url) = configured {
        match probe(url).await {
            Ok(()) => return Ok(Service::external("Redis Cluster", url.clone())),
            Err(reason) => eprintln!(
                "xtask: Redis Cluster at {} is not usable ({reason}); starting a private one",
                super::redact(url)
            ),
        }
    }
    let dir = super::services_dir()?.join(format!("redis-cluster-{}", std::process::id()));
    let cluster = LocalCluster::start(dir)
        .await
        .context("cannot start a private Redis Cluster")?;
    let url = Url::parse(&cluster.url()).context("the private cluster's URL")?;
    Ok(Service {
        name: "Redis Cluster",
        url,
        private: Some(Box::new(cluster)),
    })
}

/// Connects as Slipway does and PINGs: the URL must name a cluster (`redis-cluster://`) that answers.
async fn probe(url: &Url) -> Result<(), String> {
    let exchange = async {
        let client =
            infra_redis::connect(url.as_str()).await.map_err(
                |err| match std::error::Error::source(&err) {
                    Some(cause) => format!("{err}: {cause}"),
                    None => err.to_string(),
                },
            )?;
        let clustered = client.is_clustered();
        let pong: Result<String, _> = client.ping(None).await;
        let _ = client.quit().await;
        match (clustered, pong) {
            (false, _) => Err("not a redis-cluster:// URL".to_owned()),
            (true, Ok(_)) => Ok(()),
            (true, Err(err)) => Err(err.to_string()),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}
