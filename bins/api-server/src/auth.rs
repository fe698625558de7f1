//! Bearer JWT authentication: HS256 with a shared secret (development, tests), RS256 with a PEM key or a
//! JWKS URL (production, Clerk-style). `sub` is the user; the tier comes from a `tier` claim or
//! `public_metadata.tier`, bootstrapper when absent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use domain::{Tier, UserId};

use crate::error::ApiError;
use crate::AppState;

/// How long fetched JWKS keys are trusted before a refetch.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// An unknown key id triggers a refetch at most this often, so bad tokens cannot hammer the JWKS host.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
const CLOCK_LEEWAY_SECS: u64 = 30;

/// The caller, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: UserId,
    pub tier: Tier,
}

/// Why a token was refused; each becomes a 401 whose message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing authorization header")]
    Missing,
    #[error("Malformed authorization header: expected 'Bearer <token>'")]
    MalformedHeader,
    #[error("Malformed token")]
    MalformedToken,
    #[error("Token expired")]
    Expired,
    #[error("Token not yet valid (immature)")]
    Immature,
    #[error("Invalid token signature")]
    BadSignature,
    #[error("Invalid token algorithm")]
    BadAlgorithm,
    #[error("Unknown signing key")]
    UnknownKey,
    #[error("Invalid issuer (iss mismatch)")]
    BadIssuer,
    #[error("Invalid audience (aud mismatch)")]
    BadAudience,
    #[error("Invalid authorized party (azp mismatch)")]
    BadAzp,
    #[error("Missing required claim: {0}")]
    MissingClaim(String),
    #[error("Invalid subject (sub)")]
    BadSubject,
    #[error("Signing keys unavailable")]
    KeysUnavailable,
}

/// Where verification keys come from (more than one may be configured).
#[derive(Default)]
pub struct AuthConfig {
    pub hs256_secret: Option<String>,
    pub rsa_pem: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub azp: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("no JWT key configured: set JWT_HS256_SECRET, JWT_PUBLIC_KEY_PEM or JWT_JWKS_URL")]
    NoKey,
    #[error("JWT_PUBLIC_KEY_PEM is not an RSA public key in PEM form")]
    BadPem(#[source] jsonwebtoken::errors::Error),
}

struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetched_at: Mutex<Option<Instant>>,
    min_refresh: Duration,
}

/// Verifies bearer tokens. Shared by every request.
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    rsa_pem: Option<DecodingKey>,
    jwks: Option<Jwks>,
    azp: Vec<String>,
    /// Built once: the checks never change, and building one per request showed in the status route's profile.
    hs256_validation: Validation,
    rs256_validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    public_metadata: Option<PublicMetadata>,
}

#[derive(Deserialize)]
struct PublicMetadata {
    #[serde(default)]
    tier: Option<String>,
}

impl JwtVerifier {
    pub fn new(config: AuthConfig) -> Result<Self, AuthSetupError> {
        if config.hs256_secret.is_none() && config.rsa_pem.is_none() && config.jwks_url.is_none() {
            return Err(AuthSetupError::NoKey);
        }
        let rsa_pem = config
            .rsa_pem
            .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
            .transpose()
            .map_err(AuthSetupError::BadPem)?;
        let hs256_validation =
            validation(Algorithm::HS256, config.issuer.as_deref(), &config.audience);
        let rs256_validation =
            validation(Algorithm::RS256, config.issuer.as_deref(), &config.audience);
        Ok(Self {
            hs256: config
                .hs256_secret
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            rsa_pem,
            jwks: config.jwks_url.map(|url| Jwks {
                url,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_default(),
                keys: RwLock::new(HashMap::new()),
                fetched_at: Mutex::new(None),
                min_refresh: JWKS_MIN_REFRESH,
            }),
            azp: config.azp,
            hs256_validation,
            rs256_validation,
        })
    }

    /// Verifies an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<AuthUser, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MalformedHeader)?;
        self.verify(token).await
    }

    /// Verifies a token: signature, exp, nbf, iss, and aud/azp when configured.
    pub async fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => (
                Cow::Borrowed(self.hs256.as_ref().ok_or(AuthError::BadAlgorithm)?),
                &self.hs256_validation,
            ),
            Algorithm::RS256 => (
                Cow::Owned(self.rsa_key(header.kid.as_deref()).await?),
                &self.rs256_validation,
            ),
            _ => return Err(AuthError::BadAlgorithm),
        };
        let data =
            decode::<Claims>(token, &key, validation).map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        if !self.azp.is_empty() {
            match &claims.azp {
                Some(azp) if self.azp.iter().any(|a| a == azp) => {}
                _ => return Err(AuthError::BadAzp),
            }
        }
        let user_id = UserId::try_from(claims.sub).map_err(|_| AuthError::BadSubject)?;
        let tier_name = claims
            .tier
            .or_else(|| claims.public_metadata.and_then(|m| m.tier));
        let tier = match tier_name.as_deref().map(Tier::try_from) {
            None => Tier::Bootstrapper,
            Some(Ok(t)) => t,
            Some(Err(unknown)) => {
                tracing::warn!(user_id = %user_id, error = %unknown, "unknown tier claim; using bootstrapper");
                Tier::Bootstrapper
            }
        };
        Ok(AuthUser { user_id, tier })
    }

    async fn rsa_key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        match (&self.jwks, kid) {
            (Some(jwks), Some(kid)) => jwks.key(kid).await,
            _ => self.rsa_pem.clone().ok_or(AuthError::BadAlgorithm),
        }
    }
}

impl Jwks {
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let fresh = self
            .fetched_at
            .lock()
            .await
            .is_some_and(|at| at.elapsed() < JWKS_TTL);
        if fresh {
            if let Some(k) = self.keys.read().await.get(kid) {
                return Ok(k.clone());
            }
        }
        self.refresh().await?;
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or(AuthError::UnknownKey)
    }

    /// Refetches the key set, unless another request did so a moment ago.
    async fn refresh(&self) -> Result<(), AuthError> {
        let mut fetched_at = self.fetched_at.lock().await;
        if fetched_at.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Ok(());
        }
        let set: JwkSet = async {
            self.http
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        }
        .await
        .map_err(|e: reqwest::Error| {
            tracing::error!(error = %e, url = %self.url, "fetching the JWKS failed");
            AuthError::KeysUnavailable
        })?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|k| (kid, k))
            })
            .collect();
        *self.keys.write().await = keys;
        *fetched_at = Some(Instant::now());
        Ok(())
    }
}

/// The checks for one algorithm: exp and nbf with leeway, iss and aud when configured (azp is checked apart).
fn validation(alg: Algorithm, issuer: Option<&str>, audience: &[String]) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = CLOCK_LEEWAY_SECS;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::Immature,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::BadAlgorithm,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::InvalidSubject => AuthError::BadSubject,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        _ => AuthError::MalformedToken,
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::Unauthorized(AuthError::MalformedHeader.to_string()))?,
            ),
        };
        match state.auth.verify_header(header).await {
            Ok(user) => {
                tracing::Span::current().record("user_id", tracing::field::display(&user.user_id));
                Ok(user)
            }
            Err(AuthError::KeysUnavailable) => Err(ApiError::unavailable(anyhow::anyhow!(
                "jwks keys unavailable"
            ))),
            Err(e) => Err(ApiError::Unauthorized(e.to_string())),
        }
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
