//! Scenario 6: the preview gateway (`bins/api-server/src/gateway/`, `docs/gateway.md`) on the api-server
//! the other scenarios use (`PREVIEW_ADDR` on a free port of its own, public access), each figure beside
//! its baseline taken in the same run:
//!
//! 1. **Requests/s.** A Node.js dev server ([`DEV_SERVER`]: a small index page, and WebSocket upgrades)
//!    runs as a child of the bench on a free port; a READY job with a running sandbox has it as its
//!    `preview_url`. The load generator ([`http_load`]) sends the same requests over the same number of
//!    keep-alive connections to the dev server direct and through the gateway (only `Host` differs),
//!    alternately, for the same time.
//! 2. **Added latency.** The same at [`LATENCY_CONNECTIONS`] connection, where nothing queues: p99 through
//!    the gateway minus p99 direct is what the hop adds (at saturation both p99s are the connections
//!    divided by the throughput, which item 1 already compares).
//! 3. **Wake.** A real paused local sandbox: this process opens the api-server's own sandbox root with a
//!    `LocalRuntime` of its own (every operation takes the sandbox's `flock`, so two processes take turns),
//!    starts the dev server in it on sandbox port 3000, pauses it and records the pause as the reconciler
//!    does (`running → pausing`, the provider's pause, `pausing → paused`, each a compare-and-set on the
//!    version, each mirrored to the Redis hash). Each round then times, in alternating order, a request
//!    through the gateway (which wakes the sandbox through the API's resume) to the first byte of its 200,
//!    and the runtime's own resume (`connect`, then the first answer of the preview URL direct) followed by
//!    its pause. After a wake the sandbox is put back to sleep and its record set paused the same way, and
//!    the round waits until the status route (the gateway's cache) says so.
//! 4. **Memory.** api-server's resident set (VmRSS) with [`Sizes::gateway_sockets`] WebSockets open
//!    through the gateway to the dev server, each greeted by it, then closed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::gateway::{label_for, PreviewSecret};
use domain::ports::{CommandSpec, SandboxRuntime, SandboxSpec};
use domain::{Job, JobId, ProjectId, SandboxId, SandboxState, UserId};
use futures::{stream, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::http_load::{self, ConnectionResult};
use super::report::Table;
use super::seed::{self, Stores};
use super::stack::{self, ApiServer, PREVIEW_SECRET};
use super::stats::{machine_busy_seconds, micros, Percentiles};
use super::status_reads::LoadResult;
use super::Sizes;

/// The report's scenario name.
const SCENARIO: &str = "preview gateway";
/// Connections of the latency comparison: one visitor, nothing queued behind another request.
pub const LATENCY_CONNECTIONS: usize = 1;
/// Each comparison is split into this many direct/gateway pairs, alternated, so that a change in what
/// else the machine does falls on both sides.
const ALTERNATIONS: u32 = 2;
/// Load before each measured run, not counted (connections opened, the gateway's pool to the dev server
/// filled).
const WARM_UP: Duration = Duration::from_millis(500);
/// The sandbox port the dev server listens on (the local runtime maps it to a free host port).
const SANDBOX_PORT: u16 = 3000;
/// The provider timeout of the wake sandbox, and of each resume of it.
const SANDBOX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Anything one request, wake, resume or socket may take before it counts as failed.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// WebSockets opened at once.
const SOCKETS_CONNECTING: usize = 50;
/// The targets.
const RATIO_TARGET: f64 = 0.7;
const ADDED_P99_TARGET_MS: f64 = 1.0;
const WAKE_MARGIN_MS: f64 = 50.0;
const RSS_TARGET_MB: f64 = 100.0;

/// A dev server as far as the gateway can tell: an index page like Vite's for every request (with its
/// length, so keep-alive works), and WebSocket upgrades greeted with `connected`, text messages echoed.
/// Listens on `PORT` (the local runtime gives a sandbox's process its mapped host port there).
const DEV_SERVER: &str = r#"const http = require('http'), crypto = require('crypto');
const port = Number(process.env.PORT) || 3000;
const PAGE = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <link rel="icon" type="image/svg+xml" href="/vite.svg" />
    <meta name="viewport" content="width=device-width, initial-scale=1.0" />
    <title>Slipway bench app</title>
    <script type="module" src="/@vite/client"></script>
  </head>
  <body>
    <div id="root"></div>
    <script type="module" src="/src/main.tsx"></script>
  </body>
</html>
`;
const LENGTH = Buffer.byteLength(PAGE);
function frame(s) {
  const b = Buffer.from(s);
  if (b.length < 126) return Buffer.concat([Buffer.from([0x81, b.length]), b]);
  const h = Buffer.alloc(4); h[0] = 0x81; h[1] = 126; h.writeUInt16BE(b.length, 2);
  return Buffer.concat([h, b]);
}
const server = http.createServer((q, r) => {
  r.writeHead(200, {'content-type': 'text/html', 'content-length': LENGTH});
  r.end(PAGE);
});
server.on('upgrade', (req, sock) => {
  const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  const proto = req.headers['sec-websocket-protocol'];
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n' + (proto ? 'Sec-WebSocket-Protocol: ' + proto.split(',')[0].trim() + '\r\n' : '') + '\r\n');
  sock.write(frame('connected'));
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2) {
      const op = buf[0] & 15; let len = buf[1] & 127, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; } else if (len === 127) { sock.destroy(); return; }
      const mlen = (buf[1] & 128) ? 4 : 0;
      if (buf.length < off + mlen + len) return;
      const mask = buf.slice(off, off + mlen), data = Buffer.from(buf.slice(off + mlen, off + mlen + len));
      if (mlen) for (let i = 0; i < data.length; i++) data[i] ^= mask[i % 4];
      buf = buf.slice(off + mlen + len);
      if (op === 8) { sock.end(); return; }
      if (op === 1) sock.write(frame('echo:' + data.toString()));
    }
  });
  sock.on('error', () => {});
});
server.listen(port, '127.0.0.1', () => console.log('listening on ' + port));
"#;

/// Everything the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayResult {
    pub page_bytes: usize,
    /// Item 1: the same connections, direct and through the gateway, and the CPU each side cost.
    pub direct: LoadResult,
    pub through: LoadResult,
    pub direct_cpu: SideCpu,
    pub through_cpu: SideCpu,
    /// Item 2: at [`LATENCY_CONNECTIONS`].
    pub direct_unloaded: LoadResult,
    pub through_unloaded: LoadResult,
    /// Item 3.
    pub wake: WakeResult,
    /// Item 4.
    pub sockets: SocketsResult,
}

/// What one side of a comparison cost: CPU time over its runs (threads' schedstat for the processes,
/// `/proc/stat` for the machine).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SideCpu {
    /// The machine's busy time over the runs' wall time, in cores.
    pub machine_cores: Option<f64>,
    pub dev_server_us_per_request: Option<f64>,
    pub api_server_us_per_request: Option<f64>,
}

/// CPU counters read around each run.
#[derive(Debug, Clone, Copy, Default)]
struct CpuCount {
    machine_s: Option<f64>,
    dev_s: Option<f64>,
    api_s: Option<f64>,
}

impl CpuCount {
    fn now(dev: Option<u32>, api: Option<u32>) -> Self {
        Self {
            machine_s: machine_busy_seconds(),
            dev_s: dev.and_then(stack::process_cpu_seconds),
            api_s: api.and_then(stack::process_cpu_seconds),
        }
    }

    /// `self + (after − before)`, each figure kept only while all its readings are there.
    fn add_run(self, before: Self, after: Self) -> Self {
        let add = |sum: Option<f64>, b: Option<f64>, a: Option<f64>| Some(sum? + a? - b?);
        Self {
            machine_s: add(self.machine_s, before.machine_s, after.machine_s),
            dev_s: add(self.dev_s, before.dev_s, after.dev_s),
            api_s: add(self.api_s, before.api_s, after.api_s),
        }
    }

    fn per(self, load: &LoadResult) -> SideCpu {
        let per_request = |s: Option<f64>| s.map(|s| s * 1e6 / load.requests.max(1) as f64);
        SideCpu {
            machine_cores: self
                .machine_s
                .map(|s| s / load.duration_s.max(f64::MIN_POSITIVE)),
            dev_server_us_per_request: per_request(self.dev_s),
            api_server_us_per_request: per_request(self.api_s),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WakeResult {
    pub rounds: usize,
    /// First request through the gateway to the first byte of its 200.
    pub wake: Percentiles,
    /// Wakes that answered anything but a 200.
    pub failed: usize,
    /// The runtime alone: `connect` to the first byte of the preview's own answer.
    pub runtime_resume: Percentiles,
    /// The provider pause of each round, for reference (not in either figure).
    pub runtime_pause: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct SocketsResult {
    pub wanted: usize,
    /// Handshakes through the gateway that completed and got the dev server's greeting.
    pub opened: usize,
    pub failed: usize,
    /// `slipway_gateway_open_websockets` with them open, and after they were closed.
    pub gauge_open: Option<f64>,
    pub gauge_after: Option<f64>,
    pub rss_before_mib: Option<f64>,
    pub rss_open_mib: Option<f64>,
    pub rss_after_mib: Option<f64>,
    pub open_s: f64,
}

/// What the scenario runs against.
pub struct Setup<'a> {
    pub sizes: &'a Sizes,
    pub api: &'a ApiServer,
    pub stores: &'a Stores,
    pub user: &'a UserId,
    pub project: ProjectId,
    pub token: &'a str,
    pub out_dir: &'a Path,
}

pub async fn run(setup: &Setup<'_>) -> anyhow::Result<GatewayResult> {
    // Each proxied socket is a descriptor here, and two in api-server (which raises its own limit);
    // node, started below, inherits ours.
    raise_open_file_limit(setup.sizes.gateway_sockets as u64 + 1024)?;
    let dev = DevServer::start(setup.out_dir).await?;
    let outcome = measure(setup, &dev).await;
    dev.stop().await;
    outcome
}

async fn measure(setup: &Setup<'_>, dev: &DevServer) -> anyhow::Result<GatewayResult> {
    let Setup {
        sizes, api, stores, ..
    } = setup;
    let gateway_addr = format!("127.0.0.1:{}", api.preview_port);
    let direct_addr = format!("127.0.0.1:{}", dev.port);

    // The READY job whose preview is the dev server. Its sandbox id names no sandbox: a proxied request
    // never asks the runtime about it (local previews need no credential).
    let queued = seed::queued_job(stores, setup.user, setup.project).await?;
    let sandbox = SandboxId::try_from(format!("bench-dev-{}", uuid::Uuid::new_v4().simple()))
        .context("the bench sandbox id is invalid")?;
    let preview_url = format!("http://{direct_addr}/");
    let job = seed::build_to_ready(stores, queued, Some((&sandbox, &preview_url))).await?;
    let host = preview_host(api, job.id);
    // The page through the gateway is the page direct.
    let (_, status, direct_page) = fetch(&direct_addr, &direct_addr).await?;
    let (_, through_status, through_page) = fetch(&gateway_addr, &host).await?;
    anyhow::ensure!(
        status == 200 && through_status == 200 && direct_page == through_page,
        "the gateway does not serve the dev server's page (direct {status}, gateway {through_status})"
    );

    eprintln!(
        "bench: gateway: {} connections for {:?} each side, then {LATENCY_CONNECTIONS}",
        sizes.connections, sizes.gateway_duration
    );
    let pids = (dev.child.id(), api.pid());
    let [(direct, direct_cpu), (through, through_cpu)] = compare(
        &direct_addr,
        &gateway_addr,
        &host,
        sizes.connections,
        sizes.gateway_duration,
        pids,
    )
    .await?;
    let [(direct_unloaded, _), (through_unloaded, _)] = compare(
        &direct_addr,
        &gateway_addr,
        &host,
        LATENCY_CONNECTIONS,
        sizes.gateway_duration / 2,
        pids,
    )
    .await?;

    eprintln!(
        "bench: gateway: {} wakes of a paused local sandbox",
        sizes.gateway_wake_rounds
    );
    let wake = wakes(setup).await?;

    eprintln!(
        "bench: gateway: {} WebSockets through the gateway",
        sizes.gateway_sockets
    );
    let sockets = sockets(api, &gateway_addr, &host, sizes.gateway_sockets).await?;

    Ok(GatewayResult {
        page_bytes: direct_page.len(),
        direct,
        through,
        direct_cpu,
        through_cpu,
        direct_unloaded,
        through_unloaded,
        wake,
        sockets,
    })
}

/// `{label}.{PREVIEW_DOMAIN}` of `job`.
fn preview_host(api: &ApiServer, job: JobId) -> String {
    let label = label_for(&PreviewSecret::new(PREVIEW_SECRET), job);
    format!("{label}.{}", api.preview_domain)
}

/// The same load on the dev server direct and through the gateway, alternated [`ALTERNATIONS`] times,
/// each side `duration` in all, with what each side cost the dev server, api-server (`pids`) and the
/// machine: `[direct, through the gateway]`.
async fn compare(
    direct_addr: &str,
    gateway_addr: &str,
    host: &str,
    connections: usize,
    duration: Duration,
    (dev_pid, api_pid): (Option<u32>, Option<u32>),
) -> anyhow::Result<[(LoadResult, SideCpu); 2]> {
    let sides = [(direct_addr, direct_addr), (gateway_addr, host)];
    for (addr, host) in sides {
        load(addr, host, connections, WARM_UP).await?;
    }
    let zero = CpuCount {
        machine_s: Some(0.0),
        dev_s: Some(0.0),
        api_s: Some(0.0),
    };
    let mut measured: [(Vec<ConnectionResult>, f64, CpuCount); 2] =
        [(Vec::new(), 0.0, zero), (Vec::new(), 0.0, zero)];
    for _ in 0..ALTERNATIONS {
        for (side, (addr, host)) in sides.iter().enumerate() {
            let before = CpuCount::now(dev_pid, api_pid);
            let started = Instant::now();
            let results = load(addr, host, connections, duration / ALTERNATIONS).await?;
            let elapsed = started.elapsed().as_secs_f64();
            let after = CpuCount::now(dev_pid, api_pid);
            let (runs, seconds, cpu) = &mut measured[side];
            runs.extend(results);
            *seconds += elapsed;
            *cpu = cpu.add_run(before, after);
        }
    }
    Ok(measured.map(|(runs, seconds, cpu)| {
        let load = LoadResult::new(connections, seconds, runs);
        let cpu = cpu.per(&load);
        (load, cpu)
    }))
}

/// `connections` keep-alive connections to `addr` sending `GET /` with `host` until `duration` is up.
async fn load(
    addr: &str,
    host: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Vec<ConnectionResult>> {
    let request = format!(
        "GET / HTTP/1.1\r\nhost: {host}\r\nuser-agent: slipway-bench\r\naccept: text/html\r\n\r\n"
    );
    http_load::run(
        addr.to_owned(),
        vec![request.into_bytes()],
        connections,
        duration,
    )
    .await
}

/// Item 3: wakes through the gateway against the runtime's own resume, round by round.
async fn wakes(setup: &Setup<'_>) -> anyhow::Result<WakeResult> {
    let Setup {
        sizes,
        api,
        stores,
        token,
        ..
    } = setup;
    let runtime = infra_local::LocalRuntime::new(stack::sandbox_root(setup.out_dir))
        .context("cannot open the api-server's sandbox root")?;
    let queued = seed::queued_job(stores, setup.user, setup.project).await?;
    let sandbox = runtime
        .create(&SandboxSpec {
            job_id: queued.id,
            user_id: setup.user.clone(),
            project_id: setup.project,
            timeout: SANDBOX_TIMEOUT,
            auto_pause: true,
        })
        .await
        .context("cannot create the wake sandbox")?;
    let outcome = async {
        runtime
            .write_files(
                &sandbox,
                vec![("server.js".to_owned(), DEV_SERVER.as_bytes().to_vec())],
            )
            .await?;
        // The handle only reports the server's end; dropping it leaves the server running.
        let _server = runtime
            .run_background(
                &sandbox,
                CommandSpec::new("node server.js", STEP_DEADLINE)
                    .env("PORT", SANDBOX_PORT.to_string()),
            )
            .await?;
        let url = runtime.preview_url(&sandbox, SANDBOX_PORT).await?;
        let preview_addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        first_answer(&preview_addr, Instant::now() + STEP_DEADLINE)
            .await
            .context("the dev server in the wake sandbox did not answer")?;
        let job = seed::build_to_ready(stores, queued, Some((&sandbox, &url))).await?;
        let mut job = put_to_sleep(stores, &runtime, &sandbox, job).await?;
        wait_for_state(api, token, job.id, "paused").await?;
        let host = preview_host(api, job.id);
        let gateway_addr = format!("127.0.0.1:{}", api.preview_port);

        let (mut woken, mut resumed, mut paused) = (Vec::new(), Vec::new(), Vec::new());
        let mut failed = 0;
        for round in 0..sizes.gateway_wake_rounds {
            for gateway_first in [round % 2 == 0, round % 2 == 1] {
                if gateway_first {
                    let (ttfb, status, _) = fetch(&gateway_addr, &host)
                        .await
                        .context("a wake through the gateway failed")?;
                    if status == 200 {
                        woken.push(micros(ttfb));
                    } else {
                        failed += 1;
                        eprintln!("bench: gateway: a wake answered {status}");
                    }
                    job = settled(stores, job.id).await?;
                    if job.sandbox_state == SandboxState::Running {
                        job = put_to_sleep(stores, &runtime, &sandbox, job).await?;
                    }
                    anyhow::ensure!(
                        job.sandbox_state == SandboxState::Paused,
                        "the wake sandbox's record is {} after a wake",
                        job.sandbox_state
                    );
                    wait_for_state(api, token, job.id, "paused").await?;
                } else {
                    let started = Instant::now();
                    runtime.connect(&sandbox, SANDBOX_TIMEOUT).await?;
                    let answered = first_answer(&preview_addr, started + STEP_DEADLINE).await?;
                    resumed.push(micros(answered - started));
                    let pausing = Instant::now();
                    runtime.pause(&sandbox).await?;
                    paused.push(micros(pausing.elapsed()));
                }
            }
        }
        // Out of use: killed, and recorded so.
        runtime.kill(&sandbox).await?;
        seed::set_sandbox_state(stores, &job, SandboxState::Killed).await?;
        Ok::<_, anyhow::Error>(WakeResult {
            rounds: sizes.gateway_wake_rounds,
            wake: Percentiles::from_micros(woken),
            failed,
            runtime_resume: Percentiles::from_micros(resumed),
            runtime_pause: Percentiles::from_micros(paused),
        })
    }
    .await;
    if outcome.is_err() {
        let _ = runtime.kill(&sandbox).await;
    }
    outcome
}

/// Pauses a running sandbox as the reconciler does: `running → pausing` recorded, the provider's pause,
/// `pausing → paused` recorded (each a compare-and-set on the version, mirrored to Redis).
async fn put_to_sleep(
    stores: &Stores,
    runtime: &infra_local::LocalRuntime,
    sandbox: &SandboxId,
    job: Job,
) -> anyhow::Result<Job> {
    let job = seed::set_sandbox_state(stores, &job, SandboxState::Pausing).await?;
    runtime
        .pause(sandbox)
        .await
        .context("cannot pause the wake sandbox")?;
    seed::set_sandbox_state(stores, &job, SandboxState::Paused).await
}

/// The job's row once no resume or pause is in flight.
async fn settled(stores: &Stores, id: JobId) -> anyhow::Result<Job> {
    let until = Instant::now() + STEP_DEADLINE;
    loop {
        let job = stores
            .repo
            .get_job(id)
            .await
            .context("cannot read the wake job")?
            .context("the wake job is gone")?;
        let moving = matches!(
            job.sandbox_state,
            SandboxState::Resuming | SandboxState::Pausing
        );
        if !moving || Instant::now() > until {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the status route, which reads the same cache as the gateway, says `state`.
async fn wait_for_state(
    api: &ApiServer,
    token: &str,
    id: JobId,
    state: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{}/api/generation/{id}/status", api.base);
    let until = Instant::now() + STEP_DEADLINE;
    loop {
        let status: serde_json::Value = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .context("cannot read a job's status")?
            .json()
            .await
            .context("cannot read a job's status")?;
        if status["sandbox_state"] == state {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the status of job {id} did not say {state} within {STEP_DEADLINE:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asks `addr` for its page until it answers 200; answers when its first byte arrived.
async fn first_answer(addr: &str, until: Instant) -> anyhow::Result<Instant> {
    loop {
        let asked = Instant::now();
        match fetch(addr, addr).await {
            Ok((ttfb, 200, _)) => return Ok(asked + ttfb),
            Ok(_) | Err(_) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok((_, status, _)) => anyhow::bail!("{addr} answered {status}"),
            Err(err) => return Err(err),
        }
    }
}

/// `GET /` with `host` on a new connection to `addr`: the time from connecting to the answer's first
/// byte, its status and its body.
async fn fetch(addr: &str, host: &str) -> anyhow::Result<(Duration, u16, Vec<u8>)> {
    tokio::time::timeout(STEP_DEADLINE, async {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET / HTTP/1.1\r\nhost: {host}\r\nuser-agent: slipway-bench\r\naccept: text/html\r\n\
             connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut first_byte = None;
        loop {
            let n = stream.read_buf(&mut buf).await?;
            first_byte.get_or_insert_with(|| started.elapsed());
            if let Some((status, head, length)) = parse_head(&buf)? {
                if length.is_some_and(|length| buf.len() >= head + length) || n == 0 {
                    let end = length.map_or(buf.len(), |length| head + length);
                    let ttfb = first_byte.unwrap_or_default();
                    return Ok((ttfb, status, buf[head..end].to_vec()));
                }
            }
            anyhow::ensure!(n > 0, "{addr} closed the connection mid-answer");
        }
    })
    .await
    .with_context(|| format!("{addr} did not answer within {STEP_DEADLINE:?}"))?
}

/// The status, the head's length and the body's (`Content-Length`, when given) of a complete head.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(u16, usize, Option<usize>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf).context("malformed answer")? {
        httparse::Status::Complete(head) => {
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse().ok());
            Ok(Some((response.code.unwrap_or(0), head, length)))
        }
        httparse::Status::Partial => Ok(None),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Item 4: `count` WebSockets through the gateway, each greeted by the dev server, api-server's RSS with
/// them open, then closed.
async fn sockets(
    api: &ApiServer,
    gateway_addr: &str,
    host: &str,
    count: usize,
) -> anyhow::Result<SocketsResult> {
    let rss_before_mib = api.rss_mib();
    let started = Instant::now();
    let opened: Vec<anyhow::Result<Socket>> = stream::iter(0..count)
        .map(|_| open_socket(gateway_addr, host))
        .buffer_unordered(SOCKETS_CONNECTING)
        .collect()
        .await;
    let open_s = started.elapsed().as_secs_f64();
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    for socket in opened {
        match socket {
            Ok(socket) => open.push(socket),
            Err(err) => {
                if failed == 0 {
                    eprintln!("bench: gateway: a WebSocket failed: {err:#}");
                }
                failed += 1;
            }
        }
    }
    // Every handshake and greeting is through; let the gateway's side settle before reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gauge_open = open_websockets(api).await;
    let rss_open_mib = api.rss_mib();
    let opened = open.len();
    stream::iter(open)
        .for_each_concurrent(SOCKETS_CONNECTING, |mut socket| async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), socket.close(None)).await;
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(SocketsResult {
        wanted: count,
        opened,
        failed,
        gauge_open,
        gauge_after: open_websockets(api).await,
        rss_before_mib,
        rss_open_mib,
        rss_after_mib: api.rss_mib(),
        open_s,
    })
}

/// One WebSocket to the dev server's `/hmr` through the gateway (subprotocol `vite-hmr`, as Vite's
/// client), open once the dev server's greeting has come back through it.
async fn open_socket(gateway_addr: &str, host: &str) -> anyhow::Result<Socket> {
    tokio::time::timeout(STEP_DEADLINE, async {
        let tcp = TcpStream::connect(gateway_addr)
            .await
            .context("cannot connect to the gateway")?;
        tcp.set_nodelay(true)?;
        let mut request = format!("ws://{host}/hmr")
            .into_client_request()
            .context("bad WebSocket request")?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "vite-hmr".parse()?);
        let (mut socket, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .context("the WebSocket handshake through the gateway failed")?;
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.as_str() == "connected" => Ok(socket),
            other => anyhow::bail!("no greeting from the dev server: {other:?}"),
        }
    })
    .await
    .context("a WebSocket did not open in time")?
}

/// `slipway_gateway_open_websockets` from api-server's `/metrics`.
async fn open_websockets(api: &ApiServer) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    parse_gauge(&text, "slipway_gateway_open_websockets")
}

fn parse_gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Raises the soft open-file limit to the hard one; fails when even that is below `needed`.
fn raise_open_file_limit(needed: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("cannot read the open-file limit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .context("cannot raise the open-file limit")?;
    }
    anyhow::ensure!(
        hard >= needed,
        "the open-file limit is {hard}, the gateway scenario needs {needed} (raise it with ulimit -Hn)"
    );
    Ok(())
}

/// The Node.js dev server of items 1, 2 and 4, a child of the bench on a free port.
struct DevServer {
    child: Child,
    port: u16,
}

impl DevServer {
    async fn start(log_dir: &Path) -> anyhow::Result<Self> {
        let port = stack::free_port()?;
        let log_path = log_dir.join("dev-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new("node")
            .args(["-e", DEV_SERVER])
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start node for the gateway scenario's dev server (install Node.js)")?;
        let server = Self { child, port };
        first_answer(&format!("127.0.0.1:{port}"), Instant::now() + STEP_DEADLINE)
            .await
            .with_context(|| {
                format!("the dev server did not answer; see {}", log_path.display())
            })?;
        Ok(server)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The scenario's rows in the report, its note, and its raw figures.
pub fn report(
    result: &GatewayResult,
    table: &mut Table,
    notes: &mut Vec<String>,
) -> serde_json::Value {
    let s = SCENARIO;
    let GatewayResult {
        direct,
        through,
        direct_unloaded,
        through_unloaded,
        wake,
        sockets,
        ..
    } = result;
    let ratio = through.rps / direct.rps.max(f64::MIN_POSITIVE);
    table.info(
        s,
        &format!(
            "requests (errors), {} connections: direct / gateway",
            direct.connections
        ),
        format!(
            "{} ({}) / {} ({})",
            direct.requests, direct.errors, through.requests, through.errors
        ),
    );
    table.info(
        s,
        "dev server direct requests/s",
        format!("{:.0}", direct.rps),
    );
    table.info(
        s,
        "requests/s through the gateway",
        format!("{:.0}", through.rps),
    );
    table.check(
        s,
        "ratio gateway / direct",
        format!("{ratio:.2}"),
        &format!("≥ {RATIO_TARGET}"),
        ratio >= RATIO_TARGET,
    );
    let us = |v: Option<f64>| v.map_or("not measured".into(), |us| format!("{us:.1} µs"));
    table.info(
        s,
        "dev server CPU per request: direct / through the gateway",
        format!(
            "{} / {}",
            us(result.direct_cpu.dev_server_us_per_request),
            us(result.through_cpu.dev_server_us_per_request)
        ),
    );
    table.info(
        s,
        "api-server CPU per request through the gateway",
        us(result.through_cpu.api_server_us_per_request),
    );
    let cores = |v: Option<f64>| v.map_or("not measured".into(), |c| format!("{c:.2}"));
    table.info(
        s,
        "machine CPU busy, in cores: direct / through the gateway",
        format!(
            "{} / {} of {}",
            cores(result.direct_cpu.machine_cores),
            cores(result.through_cpu.machine_cores),
            std::thread::available_parallelism().map_or(0, usize::from)
        ),
    );
    table.info(
        s,
        &format!("p99 direct / gateway, {} connections", direct.connections),
        format!(
            "{} / {}",
            ms(direct.latency.p99_ms),
            ms(through.latency.p99_ms)
        ),
    );
    let conns = |n: usize| {
        if n == 1 {
            "1 connection".to_owned()
        } else {
            format!("{n} connections")
        }
    };
    table.info(
        s,
        &format!("p99 direct, {}", conns(direct_unloaded.connections)),
        ms(direct_unloaded.latency.p99_ms),
    );
    table.info(
        s,
        &format!(
            "p99 through the gateway, {}",
            conns(through_unloaded.connections)
        ),
        ms(through_unloaded.latency.p99_ms),
    );
    let added = through_unloaded.latency.p99_ms - direct_unloaded.latency.p99_ms;
    table.check(
        s,
        "added p99 (gateway − direct)",
        ms(added),
        &format!("≤ {ADDED_P99_TARGET_MS} ms"),
        added <= ADDED_P99_TARGET_MS,
    );
    table.info(
        s,
        "wakes through the gateway (not 200)",
        format!("{} ({})", wake.wake.samples, wake.failed),
    );
    table.info(
        s,
        "runtime resume p50 / p95 (connect to first byte)",
        format!(
            "{} / {}",
            ms(wake.runtime_resume.p50_ms),
            ms(wake.runtime_resume.p95_ms)
        ),
    );
    table.info(
        s,
        "wake p50 (first request to first byte)",
        ms(wake.wake.p50_ms),
    );
    let wake_bound = wake.runtime_resume.p95_ms + WAKE_MARGIN_MS;
    table.check(
        s,
        "wake p95",
        ms(wake.wake.p95_ms),
        &format!(
            "≤ runtime p95 + {WAKE_MARGIN_MS:.0} ms ({})",
            ms(wake_bound)
        ),
        wake.failed == 0 && wake.wake.samples > 0 && wake.wake.p95_ms <= wake_bound,
    );
    table.info(
        s,
        "WebSockets open through the gateway (gauge)",
        format!(
            "{} of {} ({})",
            sockets.opened,
            sockets.wanted,
            sockets
                .gauge_open
                .map_or("unknown".into(), |g| format!("{g:.0}"))
        ),
    );
    table.info(
        s,
        "api-server RSS before the WebSockets",
        mib(sockets.rss_before_mib),
    );
    table.check(
        s,
        &format!("api-server RSS with {} WebSockets open", sockets.wanted),
        mib(sockets.rss_open_mib),
        &format!("≤ {RSS_TARGET_MB:.0} MB"),
        sockets.opened == sockets.wanted
            && sockets
                .rss_open_mib
                .is_some_and(|mib| mib * 1.048_576 <= RSS_TARGET_MB),
    );
    let errors = direct.errors
        + through.errors
        + direct_unloaded.errors
        + through_unloaded.errors
        + wake.failed as u64
        + sockets.failed as u64;
    table.check(s, "errors", errors.to_string(), "0", errors == 0);

    notes.push(format!(
        "Preview gateway: a Node.js http server (a {}-byte index page, WebSocket upgrades) started by the \
         bench on 127.0.0.1, the preview of a READY job whose sandbox is running; the same `GET /` \
         requests (only Host differs: {{label}}.PREVIEW_DOMAIN through the gateway) from the load generator \
         above, direct and through the gateway, alternated {ALTERNATIONS} times after a {} ms warm-up, \
         {:.1} s and {:.1} s in all, {} keep-alive connections; the added p99 is taken the same way at \
         {LATENCY_CONNECTIONS} connection, where no request waits behind another (at saturation each \
         p99 is the connections over the throughput, which the ratio compares). Wake: a local sandbox \
         created by the bench over the api-server's own sandbox root (the local runtime's per-sandbox \
         flock lets both processes operate on it) runs the same server on sandbox port {SANDBOX_PORT}; it \
         is paused and recorded paused as the reconciler does (running → pausing → paused, compare-and-set \
         on the version, mirrored to the Redis hash); {} rounds, alternating which goes first, each time a \
         request with no fetch metadata through the gateway (the API's resume wakes it) from connecting \
         to the first byte of its 200, and LocalRuntime::connect plus the first byte of the preview's own \
         answer (the runtime's resume; its pause after it is not counted); after each wake the sandbox is \
         paused and its record set back to paused, and the next round waits until the status route says \
         paused. WebSockets: {} opened {SOCKETS_CONNECTING} at a time through the gateway to the dev \
         server's /hmr (vite-hmr), each counted open once the server's greeting came back through it; \
         RSS is api-server's VmRSS with them open (after {:.1} s of opening), then they are closed \
         (gauge after: {}, RSS after: {}).",
        result.page_bytes,
        WARM_UP.as_millis(),
        direct.duration_s,
        through.duration_s,
        direct.connections,
        wake.rounds,
        sockets.wanted,
        sockets.open_s,
        sockets
            .gauge_after
            .map_or("unknown".into(), |g| format!("{g:.0}")),
        mib(sockets.rss_after_mib),
    ));
    serde_json::to_value(result).unwrap_or_default()
}

fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |mib| format!("{mib:.1} MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_sockets_gauge_is_read_from_the_metrics_text() {
        let text = "# TYPE slipway_gateway_open_websockets gauge\n\
                    slipway_gateway_open_websockets_total 3\n\
                    slipway_gateway_open_websockets 1000\n";
        assert_eq!(
            parse_gauge(text, "slipway_gateway_open_websockets"),
            Some(1000.0)
        );
        assert_eq!(parse_gauge("", "slipway_gateway_open_websockets"), None);
    }

    #[test]
    fn a_head_gives_status_and_length_when_complete() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (status, head, length) = parse_head(raw).unwrap().unwrap();
        assert_eq!((status, length), (200, Some(2)));
        assert_eq!(&raw[head..], b"ok");
        assert!(parse_head(b"HTTP/1.1 503 Service").unwrap().is_none());
    }
}
