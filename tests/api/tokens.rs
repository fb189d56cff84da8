//! Tokens for tests, signed with the keys in `tests/fixtures` (test-only keys).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims for subject `user-1` valid for `valid_s` seconds (negative: already expired).
pub fn claims(topics: &[&str], scope: Value, publish: &[&str], valid_s: i64) -> Value {
    json!({"sub": "user-1", "exp": now() + valid_s, "topics": topics, "scope": scope, "publish": publish})
}

/// Claims allowing `run.*` for projects p1/p2 and publishing to `run.*`, for an hour.
pub fn standard() -> Value {
    claims(&["run.*", "system.errors"], json!({"project_id": ["p1", "p2"]}), &["run.*"], 3600)
}

pub fn hs256(claims: &Value) -> String {
    hs256_with(claims, SECRET)
}

pub fn hs256_with(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

pub fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

pub fn es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
}

/// An unsigned token (`"alg":"none"`), which must never be accepted.
pub fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}
