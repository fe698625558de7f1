//! `HttpPreviewProbe` against a tiny in-test server: redirects followed, headers reported, loops refused,
//! the provider proxy's answers recognised, sandbox hosts routed by headers or resolved as localhost.

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use domain::ports::{PreviewProbe, ProbeError, ProxyAnswer};
use domain::usecases::preview::is_up;
use infra_e2b::HttpPreviewProbe;
use std::sync::Arc;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn follows_redirects_and_reports_framing_headers() {
    let url = serve(
        Router::new()
            .route("/", get(|| async { Redirect::temporary("/app") }))
            .route(
                "/app",
                get(|| async {
                    (
                        [
                            ("x-frame-options", "DENY"),
                            ("content-security-policy", "frame-ancestors 'none'"),
                        ],
                        "hi",
                    )
                        .into_response()
                }),
            )
            .route("/loop", get(|| async { Redirect::temporary("/loop") })),
    )
    .await;
    let probe = HttpPreviewProbe::new().unwrap();

    let answer = probe.get(&format!("{url}/")).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.final_url, format!("{url}/app"));
    assert_eq!(answer.x_frame_options.as_deref(), Some("DENY"));
    assert_eq!(
        answer.content_security_policy.as_deref(),
        Some("frame-ancestors 'none'")
    );

    let looped = probe.get(&format!("{url}/loop")).await;
    assert!(
        matches!(looped, Err(ProbeError::Unreachable(_))),
        "{looped:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let answer = HttpPreviewProbe::new().unwrap().get(&url).await;
    assert!(
        matches!(answer, Err(ProbeError::Unreachable(_))),
        "{answer:?}"
    );
}

/// Counts WARN and ERROR events, so a test can show an expected condition is not logged as a problem.
#[derive(Clone, Default)]
struct Loud(Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Loud {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Loud {
    /// Installs the counter for this thread (the tests run on a current-thread runtime).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Before the dev server is up every readiness poll is refused: that is expected, not an error to log.
#[tokio::test]
async fn an_unreachable_preview_is_not_logged_as_a_problem() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let loud = Loud::default();
    let _guard = loud.install();
    let probe = HttpPreviewProbe::new().unwrap();
    let answer = probe.get(&format!("http://{addr}/")).await;
    assert!(
        matches!(answer, Err(ProbeError::Unreachable(_))),
        "{answer:?}"
    );
    assert_eq!(loud.count(), 0, "no WARN or ERROR for an expected refusal");
}

/// E2B's proxy answering for a sandbox whose port nothing listens on, and one it does not know.
#[tokio::test]
async fn the_proxys_answers_are_never_up() {
    let url = serve(
        Router::new()
            .route(
                "/closed",
                get(|| async {
                    (
                        StatusCode::BAD_GATEWAY,
                        [("content-type", "application/json; charset=utf-8")],
                        r#"{"sandboxId":"abc","message":"The sandbox is running but port is not open","port":3000,"code":502}"#,
                    )
                }),
            )
            .route(
                "/host",
                get(|| async {
                    (
                        StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain; charset=utf-8")],
                        "Invalid host\n",
                    )
                }),
            )
            .route(
                "/app404",
                get(|| async { (StatusCode::NOT_FOUND, "Cannot GET /app404") }),
            ),
    )
    .await;
    let probe = HttpPreviewProbe::new().unwrap();
    let closed = probe.get(&format!("{url}/closed")).await.unwrap();
    assert_eq!(closed.proxy, Some(ProxyAnswer::PortNotOpen));
    assert!(!is_up(&closed));
    let host = probe.get(&format!("{url}/host")).await.unwrap();
    assert_eq!(
        host.proxy,
        Some(ProxyAnswer::BadRoute("Invalid host".into()))
    );
    assert!(!is_up(&host));
    let app = probe.get(&format!("{url}/app404")).await.unwrap();
    assert_eq!(app.proxy, None);
    assert!(is_up(&app), "the app itself answered");
}

/// With a sandbox URL, `{port}-{id}.{domain}` previews go to it with routing headers, hop by hop.
#[tokio::test]
async fn sandbox_hosts_are_routed_by_headers_on_the_sandbox_url() {
    let proxy = serve(
        Router::new().fallback(|headers: HeaderMap, uri: Uri| async move {
            let id = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok());
            let port = headers
                .get("e2b-sandbox-port")
                .and_then(|v| v.to_str().ok());
            match (id, port, uri.path()) {
                (Some("abc"), Some("3000"), "/") => Redirect::temporary("/app?x=1").into_response(),
                (Some("abc"), Some("3000"), "/app") if uri.query() == Some("x=1") => {
                    "the app".into_response()
                }
                _ => (StatusCode::IM_A_TEAPOT, format!("{id:?} {port:?} {uri}")).into_response(),
            }
        }),
    )
    .await;
    let probe = HttpPreviewProbe::new()
        .unwrap()
        .with_sandbox_url(&proxy)
        .unwrap();
    // The host never resolves: only the headers name the sandbox.
    let answer = probe
        .get("https://3000-abc.sandboxes.invalid/")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.final_url,
        "https://3000-abc.sandboxes.invalid/app?x=1"
    );
}

/// A local server's sandbox hosts (`*.localhost`) resolve to loopback, as in a browser.
#[tokio::test]
async fn localhost_sandbox_hosts_resolve_to_loopback() {
    let url = serve(Router::new().route("/", get(|| async { "hi" }))).await;
    let port = url.rsplit(':').next().unwrap();
    let answer = HttpPreviewProbe::new()
        .unwrap()
        .get(&format!("http://3000-abc.localhost:{port}/"))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}
