//! `HttpPreviewProbe` against a tiny in-test server: redirects followed, headers reported, loops refused.

use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use domain::ports::{PreviewProbe, ProbeError};
use infra_e2b::HttpPreviewProbe;

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
