//! `PREVIEW_ACCESS=signed` at the gateway: the owner's token (in the query) is exchanged for a cookie on
//! the preview host and the browser sent on to the clean URL; after that the cookie opens the preview.
//! Without either, the preview does not exist (404): nothing tells a stranger it is there.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};

use domain::gateway::{self, Purpose};
use domain::JobId;

use super::config::COOKIE_TTL;
use super::links::{PreviewLinks, COOKIE_NAME, TOKEN_PARAM};

/// What a request may do in signed mode.
pub enum Admission {
    Granted,
    /// A valid token: set the cookie and send the browser to the URL without it.
    Exchange(Response),
    Denied,
}

pub fn admit(links: &PreviewLinks, job: JobId, req: &Request, now: DateTime<Utc>) -> Admission {
    let secret = links.secret();
    if let Some((token, clean)) = take_token(req) {
        if gateway::verify(secret, Purpose::Token, job, &token, now) {
            return Admission::Exchange(exchange(links, job, &clean, now));
        }
    }
    let has_cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| {
            name == COOKIE_NAME && gateway::verify(secret, Purpose::Cookie, job, value, now)
        });
    if has_cookie {
        Admission::Granted
    } else {
        Admission::Denied
    }
}

/// The token in the query, and the path and query without it.
fn take_token(req: &Request) -> Option<(String, String)> {
    let query = req.uri().query()?;
    let mut token = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((TOKEN_PARAM, value)) => {
                token = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let path = req.uri().path();
    let clean = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    token.map(|t| (t, clean))
}

fn exchange(links: &PreviewLinks, job: JobId, clean: &str, now: DateTime<Utc>) -> Response {
    let ttl = chrono::Duration::from_std(COOKIE_TTL).unwrap_or_default();
    let value = gateway::issue(links.secret(), Purpose::Cookie, job, now + ttl);
    // An https preview may sit in the front end's iframe (another site): `SameSite=None` needs `Secure`.
    let site = if links.is_https() {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/; Max-Age={}; HttpOnly; {site}",
        COOKIE_TTL.as_secs()
    );
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    if let Ok(location) = HeaderValue::from_str(clean) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use domain::gateway::PreviewSecret;

    use super::*;
    use crate::gateway::Access;

    fn links() -> PreviewLinks {
        PreviewLinks::new(
            "preview.localhost:8001",
            PreviewSecret::new("0123456789abcdef"),
            Access::Signed,
        )
        .unwrap()
    }

    fn request(uri: &str, cookie: Option<&str>) -> Request {
        let mut req = Request::builder().uri(uri);
        if let Some(cookie) = cookie {
            req = req.header(header::COOKIE, cookie);
        }
        req.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_token_becomes_a_cookie_and_the_clean_url() {
        let links = links();
        let job = JobId::new();
        let now = Utc::now();
        let url = links.url_for(job, now);
        let query = url.split_once('?').unwrap().1;
        let Admission::Exchange(resp) = admit(
            &links,
            job,
            &request(&format!("/app?x=1&{query}"), None),
            now,
        ) else {
            panic!("not exchanged");
        };
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[header::LOCATION], "/app?x=1");
        let cookie = resp.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("Path=/"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap();
        assert!(matches!(
            admit(&links, job, &request("/", Some(pair)), now),
            Admission::Granted
        ));
        // The cookie of one preview opens no other.
        assert!(matches!(
            admit(&links, JobId::new(), &request("/", Some(pair)), now),
            Admission::Denied
        ));
    }

    #[test]
    fn without_a_valid_token_or_cookie_nothing_opens() {
        let links = links();
        let job = JobId::new();
        let now = Utc::now();
        let other = links.url_for(JobId::new(), now);
        let query = other.split_once('?').unwrap().1;
        for req in [
            request("/", None),
            request(&format!("/?{query}"), None),
            request("/?slipway_preview_token=1.00", None),
            request("/", Some("slipway_preview=forged")),
        ] {
            assert!(matches!(admit(&links, job, &req, now), Admission::Denied));
        }
    }
}
