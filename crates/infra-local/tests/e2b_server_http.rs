//! The E2B-compatible server's wire behaviour, checked with plain HTTP against the spec's status codes and
//! payloads and E2B's own sources: create v1 (secure on request) and v2 (always secure), info with
//! lifecycle and domain, pagination and filters, pause/connect/kill statuses, connect only extending,
//! the sandbox proxy's answers, envd refusing calls without the token, faults.

use std::path::PathBuf;

use infra_local::e2b_server::{local_domain, router, E2bServerConfig, FaultConfig};
use infra_local::LocalRuntime;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY: &str = "http-test-key";

struct Server {
    url: String,
    domain: String,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let domain = local_domain(addr);
        let app = router(
            local.clone(),
            E2bServerConfig {
                api_key: KEY.into(),
                domain: domain.clone(),
                faults: FaultConfig::default(),
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}"),
            domain,
            http: reqwest::Client::new(),
            local,
            root,
        }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-Key", KEY)
    }

    /// An envd (or other sandbox port) request routed by headers.
    fn sandbox(&self, method: Method, id: &str, port: u16, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", port.to_string())
    }

    async fn create_with(&self, path: &str, body: Value) -> Value {
        let resp = self
            .req(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.unwrap()
    }

    async fn create(&self, job_id: &str) -> Value {
        self.create_with(
            "/sandboxes",
            json!({"templateID": "base", "timeout": 300, "autoPause": true, "secure": true,
                   "metadata": {"slipway": "1", "job_id": job_id, "user_id": "u1",
                                "project_id": uuid::Uuid::new_v4().to_string()}}),
        )
        .await
    }

    async fn detail(&self, id: &str) -> Value {
        self.req(Method::GET, &format!("/sandboxes/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn set_faults(&self, faults: Value) {
        let resp = self
            .req(Method::POST, "/_faults")
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    async fn cleanup(self) {
        self.local.shutdown_all().await;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A `process.Process/Start` request for `cmd`.
fn start_body(cmd: &str) -> Vec<u8> {
    let message = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}}).to_string();
    let mut envelope = vec![0u8];
    envelope.extend_from_slice(&(message.len() as u32).to_be_bytes());
    envelope.extend_from_slice(message.as_bytes());
    envelope
}

/// The JSON messages of a Connect stream.
fn frames(mut bytes: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        out.push((
            bytes[0],
            serde_json::from_slice(&bytes[5..5 + len]).unwrap(),
        ));
        bytes = &bytes[5 + len..];
    }
    out
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
    assert_eq!(created["domain"], s.domain.as_str());

    let detail = s.detail(&id).await;
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["metadata"]["job_id"], job.as_str());
    assert_eq!(detail["envdAccessToken"], created["envdAccessToken"]);
    assert_eq!(detail["domain"], s.domain.as_str());
    assert_eq!(
        detail["lifecycle"],
        json!({"autoResume": false, "onTimeout": "pause"})
    );

    let pause = |s: &Server| {
        s.req(Method::POST, &format!("/sandboxes/{id}/pause"))
            .send()
    };
    assert_eq!(pause(&s).await.unwrap().status(), StatusCode::NO_CONTENT);
    let again = pause(&s).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["code"], 409);
    assert!(body["message"].is_string());

    let connect = |s: &Server, path: String| {
        s.req(Method::POST, &path)
            .json(&json!({"timeout": 60}))
            .send()
    };
    let resumed = connect(&s, format!("/sandboxes/{id}/connect"))
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::CREATED, "resumed");
    let resumed: Value = resumed.json().await.unwrap();
    assert_eq!(resumed["envdAccessToken"], created["envdAccessToken"]);
    assert_eq!(
        connect(&s, format!("/v2/sandboxes/{id}/connect"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "already running"
    );

    // Connect only ever extends: after a 10 minute timeout, a 60 s connect leaves the end where it was.
    let timeout = s
        .req(Method::POST, &format!("/sandboxes/{id}/timeout"))
        .json(&json!({"timeout": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(timeout.status(), StatusCode::NO_CONTENT);
    let end_before = s.detail(&id).await["endAt"].clone();
    assert_eq!(
        connect(&s, format!("/sandboxes/{id}/connect"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(s.detail(&id).await["endAt"], end_before, "not shortened");

    let kill = |s: &Server| s.req(Method::DELETE, &format!("/sandboxes/{id}")).send();
    assert_eq!(kill(&s).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(kill(&s).await.unwrap().status(), StatusCode::NOT_FOUND);
    let gone = s
        .req(Method::GET, &format!("/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(
        body["message"],
        format!("Sandbox {id:?} doesn't exist or you don't have access to it")
    );
    s.cleanup().await;
}

#[tokio::test]
async fn creates_are_secure_when_asked_or_in_v2_and_need_no_metadata() {
    let s = Server::start().await;
    let plain = s
        .create_with("/sandboxes", json!({"templateID": "base"}))
        .await;
    assert!(plain.get("envdAccessToken").is_none(), "{plain}");
    let v2 = s
        .create_with(
            "/v2/sandboxes",
            json!({"templateID": "base", "metadata": {"k": "v"}}),
        )
        .await;
    assert!(v2["envdAccessToken"].is_string(), "{v2}");
    let detail = s.detail(v2["sandboxID"].as_str().unwrap()).await;
    assert_eq!(detail["metadata"], json!({"k": "v"}));
    assert_eq!(detail["lifecycle"]["onTimeout"], "kill");
    let bad = s
        .req(Method::POST, "/sandboxes")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    s.cleanup().await;
}

#[tokio::test]
async fn list_filters_orders_and_paginates() {
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
    s.req(Method::POST, &format!("/sandboxes/{}/pause", ids[0]))
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
            .req(Method::GET, "/v2/sandboxes")
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
    let mut sorted = seen.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected);

    let list = |query: Vec<(&'static str, String)>| {
        let req = s.req(Method::GET, "/v2/sandboxes").query(&query);
        async move {
            req.send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };
    // The metadata filter (itself URL-encoded) and the state filter narrow it down.
    let by_job = list(vec![("metadata", format!("job_id={}", jobs[1]))]).await;
    assert_eq!(by_job.len(), 1);
    assert_eq!(by_job[0]["sandboxID"], ids[1].as_str());
    let paused = list(vec![("state", "paused".into())]).await;
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["state"], "paused");
    assert!(paused[0].get("envdAccessToken").is_none(), "never listed");
    let both = list(vec![("state", "running,paused".into())]).await;
    assert_eq!(both.len(), 3);
    assert!(list(vec![("metadata", "slipway=2".into())])
        .await
        .is_empty());
    // Oldest first on request, newest first by default.
    let asc: Vec<String> = list(vec![("order", "asc".into())])
        .await
        .iter()
        .map(|v| v["startedAt"].as_str().unwrap().to_owned())
        .collect();
    let mut by_start = asc.clone();
    by_start.sort();
    assert_eq!(asc, by_start);
    s.cleanup().await;
}

#[tokio::test]
async fn the_sandbox_proxy_answers_as_e2bs() {
    let s = Server::start().await;
    let id = s.create(&uuid::Uuid::new_v4().to_string()).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_owned();

    // A port nothing listens on.
    let closed = s.sandbox(Method::GET, &id, 3000, "/").send().await.unwrap();
    assert_eq!(closed.status(), StatusCode::BAD_GATEWAY);
    let body: Value = closed.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sandboxId": id, "message": "The sandbox is running but port is not open", "port": 3000, "code": 502})
    );

    // A sandbox nobody has, and a paused one: not found, for envd and previews alike.
    let missing = s
        .sandbox(Method::GET, "nosuchsandbox", 49983, "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_GATEWAY);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sandboxId": "nosuchsandbox", "message": "The sandbox was not found", "code": 502})
    );
    s.req(Method::POST, &format!("/sandboxes/{id}/pause"))
        .send()
        .await
        .unwrap();
    let paused = s
        .sandbox(Method::GET, &id, 49983, "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::BAD_GATEWAY);
    let body: Value = paused.json().await.unwrap();
    assert_eq!(body["message"], "The sandbox was not found");

    // Requests it cannot route.
    let refused =
        |host: &'static str, headers: Vec<(&'static str, &'static str)>, text: &'static str| {
            let mut req = s.http.get(format!("{}/health", s.url)).header("host", host);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            async move {
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{host}");
                assert_eq!(resp.text().await.unwrap(), format!("{text}\n"));
            }
        };
    refused(
        "127.0.0.1",
        vec![("E2b-Sandbox-Id", "abc")],
        "missing header",
    )
    .await;
    refused(
        "127.0.0.1",
        vec![("E2b-Sandbox-Id", "abc"), ("E2b-Sandbox-Port", "web")],
        "Invalid sandbox port",
    )
    .await;
    refused(
        "127.0.0.1",
        vec![("E2b-Sandbox-Id", "Bad_Id"), ("E2b-Sandbox-Port", "1")],
        "Invalid sandbox ID",
    )
    .await;
    let host = format!("nodash.{}", s.domain);
    let resp = s
        .http
        .get(format!("{}/", s.url))
        .header("host", host)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.text().await.unwrap(), "Invalid host\n");
    s.cleanup().await;
}

/// A secure sandbox's envd refuses every call without its token, by headers or by host alike.
#[tokio::test]
async fn envd_refuses_calls_without_the_access_token() {
    let s = Server::start().await;
    let created = s.create(&uuid::Uuid::new_v4().to_string()).await;
    let id = created["sandboxID"].as_str().unwrap().to_owned();
    let token = created["envdAccessToken"].as_str().unwrap().to_owned();

    let start = |token: Option<&str>| {
        let mut req = s
            .sandbox(Method::POST, &id, 49983, "/process.Process/Start")
            .header("content-type", "application/connect+json")
            .body(start_body("echo hi"));
        if let Some(token) = token {
            req = req.header("X-Access-Token", token);
        }
        req.send()
    };
    for refused in [
        start(None).await.unwrap(),
        start(Some("wrong")).await.unwrap(),
    ] {
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], 401);
    }
    let files = s
        .sandbox(Method::GET, &id, 49983, "/files?path=/home/user/x")
        .send()
        .await
        .unwrap();
    assert_eq!(files.status(), StatusCode::UNAUTHORIZED);
    let by_host = s
        .http
        .post(format!("{}/process.Process/Start", s.url))
        .header("host", format!("49983-{id}.{}", s.domain))
        .header("content-type", "application/connect+json")
        .body(start_body("echo hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.status(), StatusCode::UNAUTHORIZED);
    // Health is open, as envd's.
    let health = s
        .sandbox(Method::GET, &id, 49983, "/health")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::NO_CONTENT);

    // With the token the command runs, and its end event carries the exit code and `error`.
    let ok = s
        .sandbox(Method::POST, &id, 49983, "/process.Process/Start")
        .header("X-Access-Token", &token)
        .header("content-type", "application/connect+json")
        .body(start_body("echo hi; exit 4"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let frames = frames(&ok.bytes().await.unwrap());
    assert!(frames[0].1["event"]["start"]["pid"].as_u64().unwrap() > 0);
    let end = frames
        .iter()
        .find_map(|(_, f)| f["event"].get("end").cloned())
        .expect("an end event");
    assert_eq!(end["exitCode"], 4);
    assert_eq!(end["error"], "exit status 4");
    assert_eq!(frames.last().unwrap().0, 0x02, "the end-of-stream envelope");

    // A sandbox created without `secure` has no token to check.
    let open = s
        .create_with("/sandboxes", json!({"templateID": "base"}))
        .await;
    let open_id = open["sandboxID"].as_str().unwrap();
    let ran = s
        .sandbox(Method::POST, open_id, 49983, "/process.Process/Start")
        .header("content-type", "application/connect+json")
        .body(start_body("true"))
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), StatusCode::OK);
    s.cleanup().await;
}

#[tokio::test]
async fn auth_and_faults() {
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
        .req(Method::POST, "/_faults")
        .json(&json!({"pause_fail_ratio": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Refused before processing, with the Retry-After asked for.
    s.set_faults(json!({"control_fail_ratio": 1.0, "retry_after_secs": 2}))
        .await;
    let refused = s
        .req(Method::POST, "/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "2");
    s.set_faults(json!({})).await;
    assert!(s.local.list_ids().await.is_empty(), "nothing was created");

    // Processed, then answered with an error: the sandbox exists although the client saw a 503.
    s.set_faults(json!({"ambiguous_next_creates": 1})).await;
    let ambiguous = s
        .req(Method::POST, "/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ambiguous.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        s.local.list_ids().await.len(),
        1,
        "a sandbox was made anyway"
    );
    s.create_with("/sandboxes", json!({"templateID": "base"}))
        .await;
    assert_eq!(s.local.list_ids().await.len(), 2, "the countdown ended");
    s.cleanup().await;
}

/// The sandbox list as the runtime has it, for tests.
trait ListIds {
    async fn list_ids(&self) -> Vec<String>;
}

impl ListIds for LocalRuntime {
    async fn list_ids(&self) -> Vec<String> {
        use domain::ports::SandboxRuntime;
        self.list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.sandbox_id.as_str().to_owned())
            .collect()
    }
}
