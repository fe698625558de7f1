//! The E2B-compatible server's wire behaviour, checked with plain HTTP against the spec's status codes and
//! payloads: pagination, filters, pause/connect/kill statuses, auth and fault validation.

use std::path::PathBuf;
use std::sync::Arc;

use infra_local::e2b_server::{router, FaultConfig};
use infra_local::LocalRuntime;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "http-test-key";

struct Server {
    url: String,
    http: reqwest::Client,
    local: LocalRuntime,
    root: PathBuf,
}

impl Server {
    async fn start() -> Self {
        let root = std::env::temp_dir().join(format!(
            "slipway-e2b-http-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let local = LocalRuntime::new(root.clone()).unwrap();
        let app = router(Arc::new(local.clone()), KEY, FaultConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            http: reqwest::Client::new(),
            local,
            root,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-Key", KEY)
    }

    async fn create(&self, job_id: &str) -> Value {
        let resp = self
            .req(reqwest::Method::POST, "/sandboxes")
            .json(
                &json!({"templateID": "base", "timeout": 300, "autoPause": true,
                          "metadata": {"slipway": "1", "job_id": job_id, "user_id": "u1",
                                       "project_id": uuid::Uuid::new_v4().to_string()}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.unwrap()
    }

    async fn cleanup(self) {
        self.local.shutdown_all().await;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[tokio::test]
async fn lifecycle_statuses_follow_the_spec() {
    let s = Server::start().await;
    let job = uuid::Uuid::new_v4().to_string();
    let created = s.create(&job).await;
    let id = created["sandboxID"].as_str().unwrap().to_owned();
    assert_eq!(created["templateID"], "base");
    assert!(created["envdAccessToken"].is_string());
    assert!(created["envdVersion"].is_string());

    let detail: Value = s
        .req(reqwest::Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["metadata"]["job_id"], job.as_str());

    let pause = |s: &Server| {
        s.req(reqwest::Method::POST, &format!("/sandboxes/{id}/pause"))
            .send()
    };
    assert_eq!(pause(&s).await.unwrap().status(), StatusCode::NO_CONTENT);
    let again = pause(&s).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], 409);
    assert!(body["message"].is_string());

    let connect = |s: &Server| {
        s.req(reqwest::Method::POST, &format!("/sandboxes/{id}/connect"))
            .json(&json!({"timeout": 60}))
            .send()
    };
    assert_eq!(
        connect(&s).await.unwrap().status(),
        StatusCode::CREATED,
        "resumed"
    );
    assert_eq!(
        connect(&s).await.unwrap().status(),
        StatusCode::OK,
        "already running"
    );

    let timeout = s
        .req(reqwest::Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(timeout.status(), StatusCode::NO_CONTENT);

    let kill = |s: &Server| {
        s.req(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
            .send()
    };
    assert_eq!(kill(&s).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(kill(&s).await.unwrap().status(), StatusCode::NOT_FOUND);
    let gone = s
        .req(reqwest::Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    s.cleanup().await;
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let s = Server::start().await;
    let jobs: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut ids = Vec::new();
    for job in &jobs {
        ids.push(
            s.create(job).await["sandboxID"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    s.req(
        reqwest::Method::POST,
        &format!("/sandboxes/{}/pause", ids[0]),
    )
    .send()
    .await
    .unwrap();

    // Two pages of two and one, with the token in X-Next-Token.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![
            ("metadata", "slipway=1".to_owned()),
            ("limit", "2".to_owned()),
        ];
        if let Some(t) = &token {
            query.push(("nextToken", t.clone()));
        }
        let resp = s
            .req(reqwest::Method::GET, "/v2/sandboxes")
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        token = resp
            .headers()
            .get("x-next-token")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = resp.json().await.unwrap();
        pages += 1;
        seen.extend(
            page.into_iter()
                .map(|v| v["sandboxID"].as_str().unwrap().to_owned()),
        );
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 2);
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    // The metadata filter (itself URL-encoded) and the state filter narrow it down.
    let by_job: Vec<Value> = s
        .req(reqwest::Method::GET, "/v2/sandboxes")
        .query(&[("metadata", format!("job_id={}", jobs[1]))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_job.len(), 1);
    assert_eq!(by_job[0]["sandboxID"], ids[1].as_str());
    let paused: Vec<Value> = s
        .req(reqwest::Method::GET, "/v2/sandboxes")
        .query(&[("state", "paused")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["state"], "paused");
    let none: Vec<Value> = s
        .req(reqwest::Method::GET, "/v2/sandboxes")
        .query(&[("metadata", "slipway=2")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none.is_empty());
    s.cleanup().await;
}

#[tokio::test]
async fn auth_and_fault_validation() {
    let s = Server::start().await;
    let anonymous = s
        .http
        .get(format!("{}/v2/sandboxes", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], 401);

    let bad = s
        .req(reqwest::Method::POST, "/_faults")
        .json(&json!({"pause_fail_ratio": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // A create without the job metadata the local server needs is a 400.
    let no_meta = s
        .req(reqwest::Method::POST, "/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_meta.status(), StatusCode::BAD_REQUEST);

    // envd with a wrong access token is refused in the end-of-stream message.
    let id = s.create(&uuid::Uuid::new_v4().to_string()).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","true"]}}"#;
    let mut envelope = vec![0u8];
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(message);
    let resp = s
        .http
        .post(format!("{}/process.Process/Start", s.url))
        .header("E2b-Sandbox-Id", &id)
        .header("X-Access-Token", "wrong")
        .header("Content-Type", "application/connect+json")
        .header("Connect-Timeout-Ms", "5000")
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(bytes[0], 0x02, "a single end-of-stream envelope");
    let end: Value = serde_json::from_slice(&bytes[5..]).unwrap();
    assert_eq!(end["error"]["code"], "unauthenticated");
    s.cleanup().await;
}
