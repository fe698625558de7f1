use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &str = "test-secret";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn verifier(issuer: Option<&str>, audience: &[&str], azp: &[&str]) -> JwtVerifier {
    JwtVerifier::new(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        issuer: issuer.map(Into::into),
        audience: audience.iter().map(|s| s.to_string()).collect(),
        azp: azp.iter().map(|s| s.to_string()).collect(),
        ..AuthConfig::default()
    })
    .unwrap()
}

fn token(claims: Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims() -> Value {
    json!({"sub": "user_a", "exp": now() + 600, "nbf": now() - 10})
}

#[tokio::test]
async fn a_good_token_names_the_user_with_the_default_tier() {
    let got = verifier(None, &[], &[])
        .verify(&token(claims(), SECRET))
        .await
        .unwrap();
    assert_eq!(got.user_id.as_str(), "user_a");
    assert_eq!(got.tier, Tier::Bootstrapper);
}

#[tokio::test]
async fn the_tier_comes_from_the_claim_or_public_metadata() {
    let v = verifier(None, &[], &[]);
    let mut c = claims();
    c["tier"] = json!("partner");
    assert_eq!(
        v.verify(&token(c, SECRET)).await.unwrap().tier,
        Tier::Partner
    );
    let mut c = claims();
    c["public_metadata"] = json!({"tier": "cto_scale"});
    assert_eq!(
        v.verify(&token(c, SECRET)).await.unwrap().tier,
        Tier::CtoScale
    );
}

#[tokio::test]
async fn each_refusal_says_why() {
    let v = verifier(Some("https://issuer"), &[], &[]);
    let good = |mut c: Value| {
        c["iss"] = json!("https://issuer");
        c
    };
    assert_eq!(v.verify_header(None).await, Err(AuthError::Missing));
    assert_eq!(
        v.verify_header(Some("Basic abc")).await,
        Err(AuthError::MalformedHeader)
    );
    assert_eq!(
        v.verify("not.a.token").await,
        Err(AuthError::MalformedToken)
    );
    let mut expired = good(claims());
    expired["exp"] = json!(now() - 3600);
    assert_eq!(
        v.verify(&token(expired, SECRET)).await,
        Err(AuthError::Expired)
    );
    let mut immature = good(claims());
    immature["nbf"] = json!(now() + 3600);
    assert_eq!(
        v.verify(&token(immature, SECRET)).await,
        Err(AuthError::Immature)
    );
    assert_eq!(
        v.verify(&token(good(claims()), "other-secret")).await,
        Err(AuthError::BadSignature)
    );
    let mut wrong_iss = claims();
    wrong_iss["iss"] = json!("https://evil");
    assert_eq!(
        v.verify(&token(wrong_iss, SECRET)).await,
        Err(AuthError::BadIssuer)
    );
    assert_eq!(
        v.verify(&token(claims(), SECRET)).await,
        Err(AuthError::MissingClaim("iss".into()))
    );
}

#[tokio::test]
async fn audience_and_azp_are_checked_when_configured() {
    let v = verifier(None, &["slipway"], &["https://app.example"]);
    let mut c = claims();
    c["aud"] = json!("slipway");
    c["azp"] = json!("https://app.example");
    assert!(v.verify(&token(c.clone(), SECRET)).await.is_ok());
    let mut bad_aud = c.clone();
    bad_aud["aud"] = json!("other");
    assert_eq!(
        v.verify(&token(bad_aud, SECRET)).await,
        Err(AuthError::BadAudience)
    );
    let mut bad_azp = c;
    bad_azp["azp"] = json!("https://evil.example");
    assert_eq!(
        v.verify(&token(bad_azp, SECRET)).await,
        Err(AuthError::BadAzp)
    );
}

#[test]
fn a_verifier_needs_a_key() {
    assert!(matches!(
        JwtVerifier::new(AuthConfig::default()),
        Err(AuthSetupError::NoKey)
    ));
}

const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("testdata/rsa_public.pem");
const RSA_N: &str = include_str!("testdata/rsa_n.txt");

fn rs256(kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(Into::into);
    encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn rs256_with_a_pem_key() {
    let v = JwtVerifier::new(AuthConfig {
        rsa_pem: Some(RSA_PUBLIC.into()),
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(
        v.verify(&rs256(None)).await.unwrap().user_id.as_str(),
        "user_a"
    );
    // An HS256 token is refused when only RS256 is configured.
    assert_eq!(
        v.verify(&token(claims(), SECRET)).await,
        Err(AuthError::BadAlgorithm)
    );
}

#[tokio::test]
async fn rs256_with_jwks_is_cached_and_refetched_on_an_unknown_key_id() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let fetches = Arc::new(AtomicUsize::new(0));
    let kid = Arc::new(std::sync::Mutex::new("k1".to_owned()));
    let (f, k) = (fetches.clone(), kid.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            f.fetch_add(1, Ordering::SeqCst);
            let kid = k.lock().unwrap().clone();
            async move {
                axum::Json(json!({"keys": [{
                    "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": RSA_N.trim(), "e": "AQAB"
                }]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut v = JwtVerifier::new(AuthConfig {
        jwks_url: Some(url),
        ..AuthConfig::default()
    })
    .unwrap();
    v.jwks.as_mut().unwrap().min_refresh = Duration::ZERO;
    assert!(v.verify(&rs256(Some("k1"))).await.is_ok());
    assert!(v.verify(&rs256(Some("k1"))).await.is_ok());
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "cached");

    // The provider rotates its key: an unknown kid triggers a refetch.
    *kid.lock().unwrap() = "k2".into();
    assert!(v.verify(&rs256(Some("k2"))).await.is_ok());
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(
        v.verify(&rs256(Some("k9"))).await,
        Err(AuthError::UnknownKey)
    );
}
