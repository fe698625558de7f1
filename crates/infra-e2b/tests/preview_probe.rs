//! `HttpPreviewProbe` against a tiny in-test server: redirects followed, headers reported, loops refused.

use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use domain::ports::{PreviewProbe, ProbeError};
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
