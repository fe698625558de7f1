//! A three-node Redis Cluster on loopback, for tests and `cargo xtask` (feature `local-cluster`): the
//! installed `redis-server` in cluster mode, nothing kept on disk but each node's cluster configuration,
//! on free ports. Each node owns a third of the slots and has no replica, so a node that restarts comes
//! back owning the same slots with none of its keys, as a production node restarted without persistence.
//!
//! Dropping the cluster kills its nodes and removes its directory.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, ClientLike, Config};
use fred::types::{ClusterHash, CustomCommand};

/// Redis Cluster's slot count.
const SLOTS: u16 = 16_384;
const NODES: usize = 3;
/// How long the nodes have to start and agree that the cluster is up.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Between two looks at a node that is not ready yet.
const POLL: Duration = Duration::from_millis(50);

/// Why the cluster could not be started or restarted.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    #[error("no redis-server on the PATH or in /usr/bin; install it with `apt-get install redis-server`")]
    NoServer,
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster was not ready within {READY_DEADLINE:?}: {0}")]
    NotReady(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalClusterError {
    let what = what.into();
    move |source| LocalClusterError::Io { what, source }
}

struct Node {
    port: u16,
    bus_port: u16,
    child: Child,
}

/// See the module documentation.
pub struct LocalCluster {
    program: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl LocalCluster {
    /// Starts three nodes with their files under `dir` (created; removed on drop), assigns the slots, joins
    /// them, and returns once every node says `cluster_state:ok`.
    pub async fn start(dir: PathBuf) -> Result<Self, LocalClusterError> {
        let program = find_redis_server().ok_or(LocalClusterError::NoServer)?;
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let ports = free_ports(NODES * 2)?;
        let mut cluster = Self {
            program,
            dir,
            nodes: Vec::new(),
        };
        for pair in ports.chunks(2) {
            let (port, bus_port) = (pair[0], pair[1]);
            let child = spawn(&cluster.program, &cluster.dir, port, bus_port)?;
            cluster.nodes.push(Node {
                port,
                bus_port,
                child,
            });
        }
        cluster.form().await?;
        Ok(cluster)
    }

    /// `redis-cluster://127.0.0.1:<first>?node=127.0.0.1:<second>&node=127.0.0.1:<third>`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    /// The client ports of the nodes, in order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Kills node `index` (as a crash would: no shutdown, no save) and starts it again on the same ports
    /// with its cluster configuration; returns once the whole cluster says `cluster_state:ok` again.
    pub async fn restart_node(&mut self, index: usize) -> Result<(), LocalClusterError> {
        let node = &mut self.nodes[index];
        let _ = node.child.kill();
        node.child
            .wait()
            .map_err(io("cannot wait for the killed node"))?;
        node.child = spawn(&self.program, &self.dir, node.port, node.bus_port)?;
        self.wait_until_ok().await
    }

    /// Assigns a third of the slots to each node, introduces the others to the first, and waits.
    async fn form(&self) -> Result<(), LocalClusterError> {
        let deadline = Instant::now() + READY_DEADLINE;
        for node in &self.nodes {
            while let Err(error) = node_command(node.port, &["MYID"]).await {
                if Instant::now() > deadline {
                    return Err(error);
                }
                tokio::time::sleep(POLL).await;
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let range = slot_range(i);
            let (first, last) = (range.start().to_string(), range.end().to_string());
            node_command(node.port, &["ADDSLOTSRANGE", &first, &last]).await?;
        }
        let first = self.nodes[0].port;
        for node in &self.nodes[1..] {
            let (port, bus) = (node.port.to_string(), node.bus_port.to_string());
            node_command(first, &["MEET", "127.0.0.1", &port, &bus]).await?;
        }
        self.wait_until_ok().await
    }

    /// Waits until every node knows all three and says `cluster_state:ok`.
    async fn wait_until_ok(&self) -> Result<(), LocalClusterError> {
        let deadline = Instant::now() + READY_DEADLINE;
        for node in &self.nodes {
            loop {
                let info = node_command(node.port, &["INFO"]).await; // CLUSTER INFO
                let why = match &info {
                    Ok(info)
                        if info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{NODES}")) =>
                    {
                        break
                    }
                    Ok(info) => format!("node {} says {}", node.port, info.replace("\r\n", " ")),
                    Err(error) => format!("node {}: {error}", node.port),
                };
                if Instant::now() > deadline {
                    return Err(LocalClusterError::NotReady(why));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Node `index`'s third of the slots.
fn slot_range(index: usize) -> std::ops::RangeInclusive<u16> {
    let per = SLOTS / NODES as u16;
    let first = per * index as u16;
    let last = if index + 1 == NODES {
        SLOTS - 1
    } else {
        first + per - 1
    };
    first..=last
}

fn spawn(program: &Path, dir: &Path, port: u16, bus_port: u16) -> Result<Child, LocalClusterError> {
    let log = dir.join(format!("node-{port}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(io(format!("cannot create {}", log.display())))?;
    let stderr = log_file
        .try_clone()
        .map_err(io("cannot share the log file"))?;
    let mut command = Command::new(program);
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus_port.to_string(),
        ])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", "5000"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr);
    // Its own process group: a Ctrl-C meant for the test run does not stop the cluster under it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .spawn()
        .map_err(io(format!("cannot start {}", program.display())))
}

/// Runs `CLUSTER <args>` on one node over a short-lived connection and returns the answer as text.
async fn node_command(port: u16, args: &[&str]) -> Result<String, LocalClusterError> {
    let not_ready =
        |error: fred::error::Error| LocalClusterError::NotReady(format!("node {port}: {error}"));
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}")).map_err(not_ready)?;
    let client = Builder::from_config(config)
        .with_connection_config(|conn| conn.connection_timeout = Duration::from_secs(2))
        .build()
        .map_err(not_ready)?;
    client.init().await.map_err(not_ready)?;
    let answer: Result<String, _> = client
        .custom(
            CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
            args.to_vec(),
        )
        .await;
    let _ = client.quit().await;
    answer.map_err(not_ready)
}

/// `count` distinct ports that nothing listens on right now.
fn free_ports(count: usize) -> Result<Vec<u16>, LocalClusterError> {
    // Held together, so the ports differ; released just before the nodes bind them.
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("cannot find free ports on 127.0.0.1"))?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<Result<_, _>>()
        .map_err(io("cannot read a bound port"))
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|program| program.is_file())
}
