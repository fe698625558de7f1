//! Redis: PING the configured server; otherwise run `redis-server` (nothing kept on disk) on a free port
//! as a child, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use url::Url;

use super::Service;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const START_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The configured Redis when it answers PING, otherwise a private one started here.
pub async fn ensure_redis(configured: &Url) -> anyhow::Result<Service> {
    let reason = match probe(configured).await {
        Ok(()) => return Ok(Service::external("Redis", configured.clone())),
        Err(reason) => reason,
    };
    eprintln!(
        "xtask: Redis at {} is not usable ({reason}); starting a private one",
        super::redact(configured)
    );
    start_private(configured.path()).await
}

/// A private Redis in any case, for a caller that will flush it (`cargo xtask chaos`): nobody else's keys
/// are in it.
pub async fn private_redis() -> anyhow::Result<Service> {
    start_private("").await
}

async fn start_private(path: &str) -> anyhow::Result<Service> {
    let mut private = PrivateRedis::start()?;
    let mut url = Url::parse(&format!("redis://127.0.0.1:{}", private.port))?;
    url.set_path(path);
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match probe(&url).await {
            Ok(()) => break,
            Err(reason) => {
                if let Ok(Some(status)) = private.child.try_wait() {
                    anyhow::bail!(
                        "the private Redis exited ({status}); see {}",
                        private.log.display()
                    );
                }
                if Instant::now() > deadline {
                    anyhow::bail!("the private Redis does not answer PING ({reason})");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(Service {
        name: "Redis",
        url,
        private: Some(Box::new(private)),
    })
}

/// Sends AUTH (when the URL has a password) and PING, and expects `+PONG`.
async fn probe(url: &Url) -> Result<(), String> {
    if url.scheme() != "redis" {
        // TLS (rediss://) is not spoken here; trust the configuration.
        return Ok(());
    }
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(6379);
    let exchange = async {
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                _ => err.to_string(),
            })?;
        let mut stream = BufReader::new(stream);
        if let Some(password) = url.password() {
            let user = match url.username() {
                "" => "default",
                user => user,
            };
            let reply = command(&mut stream, &["AUTH", user, password]).await?;
            if !reply.starts_with('+') {
                return Err(reply);
            }
        }
        let reply = command(&mut stream, &["PING"]).await?;
        if reply == "+PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {reply:?}"))
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// Sends one RESP command and returns the first line of the reply.
async fn command(stream: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String, String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(|err| err.to_string())?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(|err| err.to_string())?;
    if line.is_empty() {
        return Err("connection closed".to_owned());
    }
    Ok(line.trim_end().to_owned())
}

/// A `redis-server` child that xtask started and stops on drop.
pub struct PrivateRedis {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl PrivateRedis {
    fn start() -> anyhow::Result<Self> {
        let extra = [PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")];
        let dir = super::find_programs(&["redis-server"], &extra)
            .context("no redis-server on PATH; install it with `apt-get install redis-server`")?;
        let services = super::services_dir()?;
        let port = super::free_port()?;
        let log = services.join(format!("redis-{port}.log"));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let port_arg = port.to_string();
        let mut command = std::process::Command::new(dir.join("redis-server"));
        command
            .args(["--bind", "127.0.0.1", "--port", &port_arg])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&services)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // Its own process group: Ctrl-C goes to the test run, and we stop Redis after it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().context("cannot start redis-server")?;
        Ok(Self { child, port, log })
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
