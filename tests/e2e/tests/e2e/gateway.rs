//! The preview gateway (issue 16), run as a founder's browser would use it: a paused preview opened
//! through the gateway wakes once for twenty first requests, a WebSocket (the app's HMR socket) carries
//! messages both ways, an idle preview sleeps and closes its sockets, background requests neither wake it
//! nor keep it awake, `signed` mode opens nothing without the owner's token, and (E2B) the sandbox itself
//! refuses anyone without its traffic token.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use domain::gateway::{issue, label_for, PreviewSecret, Purpose};
use domain::{JobId, SandboxId};

use crate::happy_path::is_final;
use crate::harness::{
    spawn_app, wait_until, Generator, Mode, Options, TestApp, BUILD_DEADLINE, PREVIEW_SECRET,
};

const USER: &str = "user_e2e_gateway";
/// How long the reconciler (every second, idle after 3 s) and the gateway's activity writes (every 3 s)
/// may take to put an idle preview to sleep.
const SLEEP_DEADLINE: Duration = Duration::from_secs(40);
/// The app's page text.
pub const APP_TEXT: &str = "Hello from the gateway app";

/// An app like a Vite dev server in the ways that matter here: a page whose script opens a WebSocket
/// back to its host (`/hmr`, subprotocol `vite-hmr`), and a server that greets each socket and echoes
/// what the browser sends.
pub fn socket_app() -> &'static str {
    let server = r#"const http = require('http'), crypto = require('crypto');
const port = Number(process.env.PORT) || 3000;
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>app</title></head><body><main id="app">loading</main><script>
document.getElementById('app').textContent = 'Hello from the gateway app';
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/hmr', 'vite-hmr');
ws.onmessage = (e) => { document.title = e.data; };
</script></body></html>`;
function frame(s) {
  const b = Buffer.from(s);
  if (b.length < 126) return Buffer.concat([Buffer.from([0x81, b.length]), b]);
  const h = Buffer.alloc(4); h[0] = 0x81; h[1] = 126; h.writeUInt16BE(b.length, 2);
  return Buffer.concat([h, b]);
}
const server = http.createServer((q, r) => { r.writeHead(200, {'content-type': 'text/html; charset=utf-8'}); r.end(PAGE); });
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
server.listen(port, () => console.log('listening on ' + port));
"#;
    let files = json!({"files": {
        "package.json": json!({"name": "socket-app", "version": "0.1.0", "scripts": {"dev": "node server.js"}}).to_string(),
        "server.js": server,
    }});
    Box::leak(format!("cat >/dev/null\ncat <<'JSON'\n{files}\nJSON\n").into_boxed_str())
}

/// A client for preview hosts (`*.localhost` resolves here), redirects not followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(90))
        .dns_resolver(std::sync::Arc::new(infra_e2b::LocalhostResolver))
        .build()
        .expect("client")
}

/// Builds the socket app to READY and waits for the provider-confirmed pause; answers the job, its
/// sandbox and the preview URL the status gives its owner.
async fn paused_build(app: &TestApp) -> (JobId, SandboxId, String) {
    let job = app.start_build(USER, "A gateway app").await;
    let status = app
        .wait_status(job, USER, BUILD_DEADLINE, "ready", is_final)
        .await;
    assert_eq!(status["status"], "ready", "{status:#}");
    let paused = wait_until(Duration::from_secs(30), || async {
        app.row(job).await.sandbox_state == "paused"
    })
    .await;
    assert!(
        paused,
        "[{:?}] not paused: {:?}",
        app.mode,
        app.row(job).await
    );
    let status = app.status(job, USER).await;
    let url = status["preview_url"]
        .as_str()
        .expect("preview_url")
        .to_owned();
    let sandbox = SandboxId::try_from(app.row(job).await.sandbox_id.expect("sandbox")).expect("id");
    (job, sandbox, url)
}

async fn state_version(app: &TestApp, job: JobId) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT sandbox_state_version::bigint FROM jobs WHERE id = $1")
        .bind(job.as_uuid())
        .fetch_one(&app.pool)
        .await
        .expect("version")
}

/// Opens the app's HMR socket through the gateway.
async fn open_socket(url: &str) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let parsed = url::Url::parse(url).expect("url");
    let port = parsed.port().expect("port");
    let ws_url = format!("ws://{}:{port}/hmr", parsed.host_str().expect("host"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "vite-hmr".parse().expect("value"));
    let (socket, answer) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("websocket through the gateway");
    assert_eq!(answer.headers()["sec-websocket-protocol"], "vite-hmr");
    socket
}

/// Wake on navigation, one resume for twenty, background requests, a socket both ways, idle sleep.
pub async fn a_paused_preview_wakes_serves_and_sleeps(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(socket_app()),
            gateway: Some("public"),
            idle_pause_secs: 3,
            fast_reconcile: true,
            ..Options::default()
        },
    )
    .await;
    let (job, _sandbox, url) = paused_build(&app).await;
    let domain = app.preview_domain.clone().expect("gateway on");
    assert!(
        url.starts_with("http://") && url.ends_with(&format!(".{domain}/")),
        "the owner is given the gateway's URL: {url}"
    );
    let client = browser();

    // A tab left open polls: it neither wakes the sandbox nor waits.
    let background = client
        .get(&url)
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .expect("answer");
    assert_eq!(background.status(), 503);
    assert!(background.headers().contains_key("retry-after"));
    assert_eq!(app.row(job).await.sandbox_state, "paused");

    // Twenty first visits at once: one resume, and every one of them gets the app's page.
    let before = state_version(&app, job).await;
    let visits = (0..20).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let resp = client.get(&url).send().await.expect("answer");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    });
    for (status, body) in futures::future::join_all(visits).await {
        assert_eq!(status, 200, "[{mode:?}] {body}");
        assert!(body.contains(APP_TEXT), "{body}");
    }
    assert_eq!(app.row(job).await.sandbox_state, "running");
    assert_eq!(
        state_version(&app, job).await - before,
        2,
        "[{mode:?}] one resume: paused → resuming → running, once"
    );

    // The HMR socket carries messages both ways.
    let mut socket = open_socket(&url).await;
    let greeting = socket.next().await.expect("a message").expect("ok");
    assert_eq!(greeting, Message::text("connected"));
    socket.send(Message::text("hello")).await.expect("send");
    let echo = socket.next().await.expect("a message").expect("ok");
    assert_eq!(echo, Message::text("echo:hello"));

    // Nobody looks: the sandbox sleeps (the socket held open does not keep it awake) and the socket
    // is closed.
    let slept = wait_until(SLEEP_DEADLINE, || async {
        let row = app.row(job).await;
        row.sandbox_state == "paused" && row.sandbox_paused
    })
    .await;
    assert!(
        slept,
        "[{mode:?}] not paused when idle: {:?}",
        app.row(job).await
    );
    let closed = tokio::time::timeout(SLEEP_DEADLINE, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "[{mode:?}] the socket of a sleeping sandbox stays open"
    );

    // The next visit wakes it again.
    let resp = client.get(&url).send().await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap_or_default().contains(APP_TEXT));
    app.shut_down().await;
}

/// `signed`: nothing without the owner's token; the token becomes a cookie; another job's token opens
/// nothing; (E2B) the sandbox refuses direct access; an expired sandbox says so.
pub async fn signed_previews_open_only_for_their_owner(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(socket_app()),
            gateway: Some("signed"),
            ..Options::default()
        },
    )
    .await;
    let (job, sandbox, url) = paused_build(&app).await;
    let (clean, query) = url.split_once('?').expect("a signed URL carries its token");
    assert!(query.starts_with("slipway_preview_token="), "{url}");
    let client = browser();

    assert_eq!(
        client.get(clean).send().await.expect("answer").status(),
        404
    );
    let secret = PreviewSecret::new(PREVIEW_SECRET);
    let expires = chrono::Utc::now() + chrono::Duration::minutes(5);
    let others = issue(&secret, Purpose::Token, JobId::new(), expires);
    let resp = client
        .get(format!("{clean}?slipway_preview_token={others}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 404, "another job's token opens nothing");
    let forged_cookie = issue(&secret, Purpose::Cookie, JobId::new(), expires);
    let resp = client
        .get(clean)
        .header("cookie", format!("slipway_preview={forged_cookie}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 404, "another job's cookie opens nothing");
    assert_eq!(
        app.row(job).await.sandbox_state,
        "paused",
        "nothing woke it"
    );

    // The owner's URL: a cookie on the preview host and the clean URL; then the app.
    let exchange = client.get(&url).send().await.expect("answer");
    assert_eq!(exchange.status(), 303);
    assert_eq!(exchange.headers()["location"], "/");
    let cookie = exchange.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let page = client
        .get(clean)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("answer");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap_or_default().contains(APP_TEXT));

    if mode == Mode::E2b {
        // Private previews: the sandbox's own host refuses whoever lacks its traffic token.
        let direct = app.row(job).await.preview_url.expect("direct preview url");
        let resp = client.get(&direct).send().await.expect("answer");
        assert_eq!(resp.status(), 403, "direct access to a private sandbox");
        let body: Value = resp.json().await.unwrap_or_default();
        assert_eq!(body["message"], "missing traffic access token");
    }

    // Gone for good: paused (the snapshot route), then dropped by the provider. The next visit's wake
    // finds it gone and the page says so.
    let snapshot = app
        .post(&format!("/api/generation/{job}/snapshot"), USER, None)
        .await;
    assert_eq!(snapshot.status(), 200, "snapshot");
    app.runtime.kill(&sandbox).await.expect("kill");
    let gone = client
        .get(clean)
        .header("cookie", &cookie)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .expect("answer");
    assert_eq!(
        gone.status(),
        410,
        "[{mode:?}] an expired sandbox's preview"
    );
    assert!(gone.text().await.unwrap_or_default().contains("expired"));
    // Labels are the secret's: the test can name the host it was given.
    assert!(clean.contains(&label_for(&secret, job)));
    app.shut_down().await;
}

/// A real browser: headless Chromium opens a paused preview through the gateway (the "waking up" page
/// first when the wake takes a while, which reloads itself), sees the app's text render and its HMR
/// socket connect through the gateway.
pub async fn a_browser_opens_a_paused_preview(mode: Mode) {
    let app = spawn_app(
        mode,
        Options {
            generator: Generator::Script(socket_app()),
            gateway: Some("public"),
            ..Options::default()
        },
    )
    .await;
    let (job, _sandbox, url) = paused_build(&app).await;
    let observed = crate::harness::browser::open_and_watch(&url, APP_TEXT, Duration::from_secs(60))
        .await
        .expect("chromium opens the preview");
    assert!(
        observed.text_seen,
        "[{mode:?}] the app's text did not render: {observed:?}"
    );
    assert!(
        observed.websocket_opened,
        "[{mode:?}] the HMR socket did not connect: {observed:?}"
    );
    let socket = observed.websocket_url.clone().unwrap_or_default();
    assert!(
        socket.ends_with("/hmr") && socket.contains(app.preview_domain.as_deref().unwrap_or("?")),
        "the socket went through the gateway: {socket}"
    );
    assert_eq!(observed.status, Some(200), "{observed:?}");
    assert_eq!(
        app.row(job).await.sandbox_state,
        "running",
        "the visit woke it"
    );
    app.shut_down().await;
}
