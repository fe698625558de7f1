//! A Redis Cluster for a test: the one `REDIS_CLUSTER_URL` names (CI's, or the private one `cargo xtask
//! test` starts), or else a three-node cluster of the test's own. Keys live under a random prefix, deleted
//! from every node at the end.

use futures::TryStreamExt;
use infra_redis::{connect, Client, LocalCluster};

use fred::prelude::{ClientLike, KeysInterface};

pub struct TestCluster {
    pub client: Client,
    pub prefix: String,
    pub url: String,
    /// The test's own cluster when `REDIS_CLUSTER_URL` is unset (dropped last: it stops the nodes).
    pub local: Option<LocalCluster>,
}

impl TestCluster {
    /// On `REDIS_CLUSTER_URL` when it is set, otherwise on a cluster of the test's own.
    pub async fn new() -> Self {
        match std::env::var("REDIS_CLUSTER_URL") {
            Ok(url) if !url.is_empty() => Self::on(url, None).await,
            _ => Self::own().await,
        }
    }

    /// Always on a cluster of the test's own (for a test that restarts its nodes).
    pub async fn own() -> Self {
        let dir = std::env::temp_dir().join(format!("slipway-cluster-{}", uuid::Uuid::new_v4()));
        let local = LocalCluster::start(dir)
            .await
            .expect("a local redis cluster");
        Self::on(local.url(), Some(local)).await
    }

    async fn on(url: String, local: Option<LocalCluster>) -> Self {
        let client = connect(&url).await.expect("the redis cluster is reachable");
        assert!(client.is_clustered(), "{url} is not a cluster URL");
        Self {
            client,
            prefix: format!("test-{}", uuid::Uuid::new_v4()),
            url,
            local,
        }
    }

    /// The test's own cluster, for restarting nodes.
    pub fn local(&mut self) -> &mut LocalCluster {
        self.local.as_mut().expect("a cluster of the test's own")
    }
}

/// Deletes every key under `prefix` on every node (SCAN sees one node; DEL takes one slot at a time).
pub async fn delete_prefix_everywhere(client: &Client, prefix: &str) {
    let keys: Vec<_> = client
        .scan_cluster_buffered(format!("{prefix}:*"), Some(500), None)
        .try_collect()
        .await
        .expect("scan");
    for key in keys {
        let _: () = client.del(key).await.expect("del");
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.local.is_some() {
            // The nodes stop with the cluster, and their keys with them.
            return;
        }
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = connect(&url).await.expect("the redis cluster is reachable");
                delete_prefix_everywhere(&client, &prefix).await;
                let _ = client.quit().await;
            });
        })
        .join();
        if cleaned.is_err() && !std::thread::panicking() {
            panic!("test keys under {} were not deleted", self.prefix);
        }
    }
}

/// The port of the primary owning each slot range, from `CLUSTER SLOTS`.
pub async fn slot_owners(client: &Client) -> Vec<(std::ops::RangeInclusive<u16>, u16)> {
    use fred::types::{ClusterHash, CustomCommand, Value};
    let slots: Value = client
        .custom(
            CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
            vec!["SLOTS"],
        )
        .await
        .expect("CLUSTER SLOTS");
    let number = |v: &Value| v.as_u64().and_then(|n| u16::try_from(n).ok());
    slots
        .into_array()
        .iter()
        .map(|range| match range {
            Value::Array(parts) => {
                let primary = match parts.get(2) {
                    Some(Value::Array(node)) => node.get(1).and_then(number),
                    _ => None,
                };
                let (first, last, port) = (
                    parts.first().and_then(number),
                    parts.get(1).and_then(number),
                    primary,
                );
                let (Some(first), Some(last), Some(port)) = (first, last, port) else {
                    panic!("unexpected CLUSTER SLOTS entry {range:?}");
                };
                (first..=last, port)
            }
            other => panic!("unexpected CLUSTER SLOTS entry {other:?}"),
        })
        .collect()
}

/// The port of the primary that owns `key`.
pub fn owner_of(owners: &[(std::ops::RangeInclusive<u16>, u16)], key: &str) -> u16 {
    let slot = fred::util::redis_keyslot(key.as_bytes());
    owners
        .iter()
        .find(|(range, _)| range.contains(&slot))
        .map(|(_, port)| *port)
        .unwrap_or_else(|| panic!("no node owns slot {slot}"))
}
