//! Headless Chromium driven over the DevTools protocol (`chromiumoxide`), for the preview gateway's browser
//! test: open a URL, then watch until the page shows a text and a WebSocket completed its handshake, across
//! the reloads of an interim page. The browser is Debian's `chromium` (or `$CHROMIUM`); nothing is
//! downloaded. Its process and temporary profile are gone when [`HeadlessChromium`] is closed or dropped.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::network::{
    EnableParams as NetworkEnableParams, EventResponseReceived, EventWebSocketCreated,
    EventWebSocketHandshakeResponseReceived, ResourceType,
};
use chromiumoxide::cdp::browser_protocol::page::FrameId;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::error::CdpError;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

/// Names looked up on `PATH`, in order, when `$CHROMIUM` is not set.
pub const CHROMIUM_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// How often the page text is polled while waiting.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Upper bound for a single `Runtime.evaluate` round trip.
const EVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period for a polite `Browser.close` before the process is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Chromium's helper processes (zygote, storage service, renderers) outlive a
/// killed browser process by a few milliseconds and may still write into the
/// profile: removal is retried for up to this long.
const REMOVE_RETRY_FOR: Duration = Duration::from_secs(5);

/// What was observed on the page before the deadline (or before everything
/// expected had been seen, whichever came first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `document.body.innerText` of the current document contained the expected text.
    pub text_seen: bool,
    /// A WebSocket was created and its handshake answered with `101`.
    pub websocket_opened: bool,
    /// URL of the opened WebSocket, else of the last one created (if any).
    pub websocket_url: Option<String>,
    /// HTTP status of the latest main-frame document response.
    pub status: Option<u16>,
    /// HTTP statuses of every main-frame document response, in order
    /// (e.g. `[503, 200]` for an interim page that reloaded itself).
    pub document_statuses: Vec<u16>,
}

impl Observed {
    /// Text seen and a WebSocket opened.
    pub fn is_complete(&self) -> bool {
        self.text_seen && self.websocket_opened
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("no Chromium found: install Debian's `chromium` (apt-get install chromium), or set CHROMIUM ({0})")]
    NotFound(String),
    #[error("temporary profile directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("invalid browser configuration: {0}")]
    Config(String),
    #[error("launching Chromium failed: {0}")]
    Launch(#[source] Box<CdpError>),
    #[error("DevTools protocol error: {0}")]
    Cdp(#[source] Box<CdpError>),
    #[error("navigation to {url} failed: {reason}")]
    Navigation { url: String, reason: String },
}

impl From<CdpError> for BrowserError {
    fn from(e: CdpError) -> Self {
        BrowserError::Cdp(Box::new(e))
    }
}

/// Locate the Chromium executable: `$CHROMIUM` (a path, or a name looked up
/// on `PATH`) if set and non-empty, else the first of [`CHROMIUM_NAMES`] on `PATH`.
pub fn find_chromium() -> Result<PathBuf, BrowserError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    if let Some(configured) = std::env::var_os("CHROMIUM").filter(|v| !v.is_empty()) {
        let as_path = PathBuf::from(&configured);
        if as_path.components().count() > 1 {
            return if is_executable(&as_path) {
                Ok(as_path)
            } else {
                Err(BrowserError::NotFound(format!(
                    "CHROMIUM={} is not an executable file",
                    as_path.display()
                )))
            };
        }
        return search_path(&configured, &path_var).ok_or_else(|| {
            BrowserError::NotFound(format!("CHROMIUM={} not found on PATH", as_path.display()))
        });
    }
    CHROMIUM_NAMES
        .iter()
        .find_map(|name| search_path(&OsString::from(name), &path_var))
        .ok_or_else(|| BrowserError::NotFound("none on PATH".to_owned()))
}

fn search_path(name: &OsString, path_var: &OsString) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A running headless Chromium with its own temporary profile.
///
/// Prefer [`HeadlessChromium::close`]; if the value is dropped instead (error
/// path, panic, cancelled future) the process is killed with SIGKILL, reaped
/// (bounded wait) and the profile directory removed.
pub struct HeadlessChromium {
    // Field order matters for Drop: the browser goes before the profile dir.
    browser: Option<Browser>,
    handler: JoinHandle<()>,
    profile: ProfileDir,
}

impl HeadlessChromium {
    /// Launch Chromium found by [`find_chromium`].
    pub async fn launch() -> Result<Self, BrowserError> {
        Self::launch_with(&find_chromium()?).await
    }

    /// Launch the given Chromium executable.
    pub async fn launch_with(executable: &Path) -> Result<Self, BrowserError> {
        let profile = ProfileDir::create().map_err(BrowserError::TempDir)?;
        // chromiumoxide 0.9 adds the leading `--` itself: pass bare keys, and
        // (key, value) pairs for `--key=value`.
        let config = BrowserConfig::builder()
            .chrome_executable(executable)
            .new_headless_mode() // --headless=new
            .no_sandbox() // --no-sandbox --disable-setuid-sandbox (root in a container)
            .user_data_dir(&profile.0)
            .launch_timeout(LAUNCH_TIMEOUT)
            .disable_https_first()
            .arg("disable-gpu")
            .arg("disable-dev-shm-usage")
            .arg("disable-quic")
            .arg("disable-component-update")
            .arg("disable-background-networking")
            .arg("no-first-run")
            .arg(("host-resolver-rules", "MAP *.localhost 127.0.0.1"))
            .build()
            .map_err(BrowserError::Config)?;

        // On failure `Browser::launch` kills and reaps the child itself; the
        // profile dir is removed when `profile` is dropped.
        let (browser, mut handler) = Browser::launch(config)
            .await
            .map_err(|e| BrowserError::Launch(Box::new(e)))?;

        // The handler drives the whole CDP connection: it must be polled for
        // as long as the browser is used. Errors on single messages (e.g. an
        // event this crate version cannot decode) are not fatal: keep going.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });

        Ok(Self {
            browser: Some(browser),
            handler,
            profile,
        })
    }

    fn browser(&self) -> Result<&Browser, BrowserError> {
        self.browser
            .as_ref()
            .ok_or_else(|| BrowserError::Cdp(Box::new(CdpError::msg("browser already closed"))))
    }

    /// Open `url` in a new tab and watch it until `expect_text` is in
    /// `document.body.innerText` and a WebSocket handshake completed with 101,
    /// or until `deadline` has passed. Returns what was seen either way; see
    /// [`Observed::is_complete`].
    pub async fn open_and_watch(
        &self,
        url: &str,
        expect_text: &str,
        deadline: Duration,
    ) -> Result<Observed, BrowserError> {
        let until = Instant::now() + deadline;
        let page = self.browser()?.new_page("about:blank").await?;
        let result = watch(&page, url, expect_text, until).await;
        // Best effort: the tab dies with the browser anyway.
        let _ = timeout(CLOSE_GRACE, page.close()).await;
        result
    }

    /// Close the browser politely, kill it if it does not exit in time, reap
    /// it and remove the temporary profile.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        if let Some(mut browser) = self.browser.take() {
            // `Browser.close` usually gets no answer: the connection drops first.
            let _ = timeout(CLOSE_GRACE, browser.close()).await;
            if !matches!(timeout(CLOSE_GRACE, browser.wait()).await, Ok(Ok(_))) {
                let _ = browser.kill().await; // SIGKILL + wait
            }
        }
        self.handler.abort();
        let stop = Instant::now() + REMOVE_RETRY_FOR;
        loop {
            match self.profile.try_remove() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= stop => return Err(BrowserError::TempDir(e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for HeadlessChromium {
    fn drop(&mut self) {
        if let Some(browser) = self.browser.as_mut() {
            if let Some(child) = browser.get_mut_child() {
                let child = child.as_mut_inner();
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.start_kill();
                    // Reap before the profile dir is removed (bounded; no async in Drop).
                    let stop = std::time::Instant::now() + Duration::from_secs(5);
                    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < stop {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        self.browser = None;
        self.handler.abort();
        // `profile` is dropped after this and removes the directory.
    }
}

/// A fresh, private `--user-data-dir` under the system temp dir, removed on drop.
struct ProfileDir(PathBuf);

impl ProfileDir {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("cdp-profile-{}-{nanos:x}-{n}", std::process::id());
            let path = std::env::temp_dir().join(name);
            // `create` (not `create_all`) fails if the name is taken: no reuse.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Remove the directory; gone already counts as success.
    fn try_remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for ProfileDir {
    fn drop(&mut self) {
        let stop = std::time::Instant::now() + REMOVE_RETRY_FOR;
        while self.try_remove().is_err() && std::time::Instant::now() < stop {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Launch a browser, [`HeadlessChromium::open_and_watch`] `url`, and shut
/// the browser down again (also when watching fails). `deadline` covers the
/// tab and the watching, not the launch (bounded by its own 30 s timeout).
pub async fn open_and_watch(
    url: &str,
    expect_text: &str,
    deadline: Duration,
) -> Result<Observed, BrowserError> {
    let browser = HeadlessChromium::launch().await?;
    let observed = browser.open_and_watch(url, expect_text, deadline).await;
    let closed = browser.close().await;
    let observed = observed?;
    closed?;
    Ok(observed)
}

async fn watch(
    page: &Page,
    url: &str,
    expect_text: &str,
    until: Instant,
) -> Result<Observed, BrowserError> {
    // Subscribe and enable the Network domain BEFORE navigating so that no
    // event of the first document is missed.
    let mut ws_created = page.event_listener::<EventWebSocketCreated>().await?;
    let mut ws_handshake = page
        .event_listener::<EventWebSocketHandshakeResponseReceived>()
        .await?;
    let mut responses = page.event_listener::<EventResponseReceived>().await?;
    page.execute(NetworkEnableParams::default()).await?;
    let main_frame: Option<FrameId> = page.mainframe().await?;

    let mut observed = Observed::default();
    // Both keyed by request id. The two event streams are separate channels,
    // so a handshake may be *processed* before its `webSocketCreated`.
    let mut created: HashMap<String, String> = HashMap::new(); // -> ws url
    let mut upgraded: HashSet<String> = HashSet::new(); // got 101

    // `goto` resolves when the first document has loaded; the document may
    // replace itself later (meta refresh, location.reload()), so it runs
    // alongside the polling instead of gating it.
    let navigation = page.goto(url);
    tokio::pin!(navigation);
    let mut navigated = false;

    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expired = tokio::time::sleep_until(until);
    tokio::pin!(expired);

    while !observed.is_complete() {
        tokio::select! {
            // Events first, in protocol order, so that e.g. the document's
            // `responseReceived` is recorded before the text it produced.
            biased;
            Some(ev) = responses.next() => on_response(&mut observed, main_frame.as_ref(), &ev),
            Some(ev) = ws_created.next() => on_ws_created(&mut observed, &mut created, &upgraded, &ev),
            Some(ev) = ws_handshake.next() => on_ws_handshake(&mut observed, &created, &mut upgraded, &ev),
            res = &mut navigation, if !navigated => {
                navigated = true;
                if let Err(e) = res {
                    return Err(BrowserError::Navigation { url: url.to_owned(), reason: e.to_string() });
                }
            }
            _ = tick.tick(), if !observed.text_seen => {
                let call_until = until.min(Instant::now() + EVAL_TIMEOUT);
                // Errors here are expected while a document is being replaced
                // (context destroyed, no body yet): just poll again.
                if let Ok(Ok(text)) = timeout_at(call_until, body_text(page)).await {
                    observed.text_seen = text.contains(expect_text);
                }
            }
            _ = &mut expired => break,
        }
    }
    // Record events that had already arrived when the loop ended.
    while let Some(Some(ev)) = responses.next().now_or_never() {
        on_response(&mut observed, main_frame.as_ref(), &ev);
    }
    Ok(observed)
}

fn on_response(observed: &mut Observed, main_frame: Option<&FrameId>, ev: &EventResponseReceived) {
    let in_main_frame = match (main_frame, &ev.frame_id) {
        (Some(main), Some(frame)) => main == frame,
        _ => true,
    };
    if ev.r#type == ResourceType::Document && in_main_frame {
        if let Ok(status) = u16::try_from(ev.response.status) {
            observed.status = Some(status);
            observed.document_statuses.push(status);
        }
    }
}

fn on_ws_created(
    observed: &mut Observed,
    created: &mut HashMap<String, String>,
    upgraded: &HashSet<String>,
    ev: &EventWebSocketCreated,
) {
    let id = ev.request_id.inner();
    if !observed.websocket_opened {
        observed.websocket_url = Some(ev.url.clone());
        observed.websocket_opened = upgraded.contains(id);
    }
    created.insert(id.clone(), ev.url.clone());
}

fn on_ws_handshake(
    observed: &mut Observed,
    created: &HashMap<String, String>,
    upgraded: &mut HashSet<String>,
    ev: &EventWebSocketHandshakeResponseReceived,
) {
    if ev.response.status != 101 {
        return;
    }
    let id = ev.request_id.inner();
    upgraded.insert(id.clone());
    if let Some(ws_url) = created.get(id).filter(|_| !observed.websocket_opened) {
        observed.websocket_opened = true;
        observed.websocket_url = Some(ws_url.clone());
    }
}

/// `document.body.innerText` of the page's current main-frame document.
async fn body_text(page: &Page) -> Result<String, CdpError> {
    let mut params = EvaluateParams::new("document.body ? document.body.innerText : ''");
    params.return_by_value = Some(true);
    // No context id: Chromium evaluates in the *current* document's main world,
    // which stays correct across reloads.
    let reply = page.execute(params).await?;
    Ok(reply
        .result
        .result
        .value
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned())
}
