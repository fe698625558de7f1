//! 401s, each saying what is wrong with the token.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{error_detail, spawn_app, token_with, ISSUER};

async fn status_with(app: &crate::helpers::TestApp, auth: Option<String>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/api/projects"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn each_bad_token_is_401_saying_why() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let wrong_key = encode(
        &Header::default(),
        &json!({"sub": "u", "iss": ISSUER, "exp": now + 600}),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let cases = [
        (None, "Missing authorization header"),
        (
            Some("Token abc".to_owned()),
            "Malformed authorization header",
        ),
        (Some("Bearer not-a-jwt".to_owned()), "Malformed token"),
        (
            Some(format!(
                "Bearer {}",
                token_with(json!({"sub": "u", "exp": now - 3600}))
            )),
            "Token expired",
        ),
        (
            Some(format!(
                "Bearer {}",
                token_with(json!({"sub": "u", "nbf": now + 3600}))
            )),
            "Token not yet valid",
        ),
        (
            Some(format!("Bearer {wrong_key}")),
            "Invalid token signature",
        ),
        (
            Some(format!(
                "Bearer {}",
                token_with(json!({"sub": "u", "iss": "https://evil"}))
            )),
            "Invalid issuer",
        ),
    ];
    for (header, expected) in cases {
        let detail = error_detail(status_with(&app, header.clone()).await, 401).await;
        assert!(
            detail.as_str().unwrap().starts_with(expected),
            "{header:?}: {detail}"
        );
    }
}

#[tokio::test]
async fn a_good_token_is_accepted() {
    let app = spawn_app().await;
    let resp = status_with(
        &app,
        Some(format!("Bearer {}", crate::helpers::token("user_ok"))),
    )
    .await;
    assert_eq!(resp.status(), 200);
}
