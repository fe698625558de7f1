//! Development tokens: HS256 JWTs the api-server accepts when it runs with JWT_HS256_SECRET.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// The user every dev token speaks for.
pub const DEV_USER: &str = "dev-user";
/// How long a dev token stays valid.
pub const DEV_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// An HS256 token for `subject`, valid for `lifetime` from now, with `iss` when an issuer is configured.
pub fn hs256(
    secret: &str,
    subject: &str,
    issuer: Option<&str>,
    lifetime: Duration,
) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let claims = Claims {
        sub: subject,
        iat: now,
        nbf: now,
        exp: now + lifetime.as_secs(),
        iss: issuer,
    };
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign the dev token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Decoded {
        sub: String,
        exp: u64,
        iss: Option<String>,
    }

    #[test]
    fn dev_token_verifies_with_the_same_secret_and_names_the_dev_user() {
        let token = hs256("s3cret", DEV_USER, None, DEV_TOKEN_LIFETIME).unwrap();
        let decoded = jsonwebtoken::decode::<Decoded>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::default(),
        )
        .unwrap()
        .claims;
        assert_eq!(decoded.sub, DEV_USER);
        assert_eq!(decoded.iss, None);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(decoded.exp >= now + DEV_TOKEN_LIFETIME.as_secs() - 60);
    }

    #[test]
    fn dev_token_fails_with_another_secret() {
        let token = hs256("s3cret", DEV_USER, Some("slipway"), DEV_TOKEN_LIFETIME).unwrap();
        let result = jsonwebtoken::decode::<Decoded>(
            &token,
            &DecodingKey::from_secret(b"other"),
            &Validation::default(),
        );
        assert!(result.is_err());
    }
}
