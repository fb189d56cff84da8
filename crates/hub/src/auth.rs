//! Tokens and what they allow (section 7 of the contract).
//!
//! A hub with no key configured runs in development mode: every request gets an unrestricted grant. Any key
//! turns that off. Token failures are never explained to the client: missing, malformed, badly signed, expired
//! or wrongly-algorithmed tokens all get the same 401, and the reason goes to the log only.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use protocol::{Filter, Profile, Topic, TopicPattern};
use serde::Deserialize;

use crate::settings::Settings;

/// Verifies tokens and turns them into grants.
pub struct Authenticator {
    /// Keys from the configuration (`HUB_JWT_SECRET`, `HUB_JWT_PUBLIC_KEY`).
    keys: Vec<VerifyingKey>,
    /// Keys from the identity provider (`HUB_JWT_JWKS_URL`), by `kid`.
    jwks: Option<Jwks>,
    leeway_s: u64,
    /// When set, tokens must name this audience (`aud`) / issuer (`iss`).
    audience: Option<String>,
    issuer: Option<String>,
    /// Subjects and token ids refused until their revocation lapses; kept by the cluster (`crate::cluster`).
    revocations: Arc<Revocations>,
}

#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Why a request was refused authentication. Deliberately carries nothing for the client.
#[derive(Debug, thiserror::Error)]
#[error("a valid token is required")]
pub struct Unauthorized;

/// The claims the hub reads; everything else in a token is ignored.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    /// When the token was issued (Unix seconds): a revocation of its subject covers tokens issued at or before it.
    #[serde(default)]
    iat: Option<u64>,
    /// The token's own id, for revoking one token.
    #[serde(default)]
    jti: Option<String>,
    /// May call `/api/admin/*`.
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    scope: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    publish: Vec<String>,
    /// The output profile of subscriptions that name none (for consumers of older systems that cannot add
    /// `profile=` to their URLs).
    #[serde(default)]
    profile: Option<String>,
    /// What presence shows of the subject (a JSON object of at most [`MAX_INFO_BYTES`]).
    #[serde(default)]
    info: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The largest `info` claim a token may carry, serialized.
pub const MAX_INFO_BYTES: usize = 1024;

/// What a connection or request may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None` in development mode: everything is allowed.
    restrictions: Option<Restrictions>,
}

#[derive(Debug, Clone)]
struct Restrictions {
    subject: Option<String>,
    /// Unix seconds after which the grant is void (the token's `exp` plus the leeway).
    expires_at: u64,
    /// The token's own `exp`, as clients see it (in `welcome` and `refreshed`).
    token_expires_at: u64,
    issued_at: Option<u64>,
    token_id: Option<String>,
    admin: bool,
    topics: Vec<TopicPattern>,
    scope: BTreeMap<String, BTreeSet<String>>,
    publish: Vec<TopicPattern>,
    profile: Option<Profile>,
    info: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl Authenticator {
    /// The configured keys; with a JWKS URL, its keys are fetched once here (a start-up error if that fails).
    pub async fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(secret) = &settings.jwt_secret {
            anyhow::ensure!(!secret.is_empty(), "HUB_JWT_SECRET is empty");
            keys.push(VerifyingKey { key: DecodingKey::from_secret(secret.as_bytes()), algorithm: Algorithm::HS256 });
        }
        if let Some(public_key) = &settings.jwt_public_key {
            let pem = if public_key.trim_start().starts_with("-----BEGIN") {
                public_key.clone()
            } else {
                std::fs::read_to_string(public_key).with_context(|| {
                    format!("HUB_JWT_PUBLIC_KEY is neither a PEM key nor a readable file: {public_key}")
                })?
            };
            let key = if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                VerifyingKey { key, algorithm: Algorithm::RS256 }
            } else {
                let key = DecodingKey::from_ec_pem(pem.as_bytes())
                    .context("HUB_JWT_PUBLIC_KEY is neither an RSA nor a P-256 EC public key in PEM")?;
                VerifyingKey { key, algorithm: Algorithm::ES256 }
            };
            keys.push(key);
        }
        let jwks = match &settings.jwt_jwks_url {
            Some(url) => {
                let ca = settings.jwt_jwks_ca.as_deref().map(read_pem_bundle).transpose()?;
                let jwks = Jwks::new(url.clone(), settings.jwt_jwks_min_interval, ca.as_deref())?;
                jwks.refresh().await.with_context(|| format!("HUB_JWT_JWKS_URL: cannot fetch the keys at {url}"))?;
                Some(jwks)
            }
            None => None,
        };
        Ok(Self {
            keys,
            jwks,
            leeway_s: settings.jwt_leeway.as_secs(),
            audience: settings.jwt_audience.clone(),
            issuer: settings.jwt_issuer.clone(),
            revocations: Arc::default(),
        })
    }

    /// The revocations this authenticator refuses, which the cluster keeps up to date.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Development mode: no key configured, every request accepted.
    pub fn is_development(&self) -> bool {
        self.keys.is_empty() && self.jwks.is_none()
    }

    /// The identity provider's key set, for the periodic refresh.
    pub fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_ref()
    }

    /// Verifies `token` (required unless in development mode) and returns its grant.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Grant, Unauthorized> {
        if self.is_development() {
            return Ok(Grant { restrictions: None });
        }
        let token = token.ok_or(Unauthorized)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| refuse("unreadable header", &e))?;
        let from_jwks = match (&self.jwks, &header.kid) {
            (Some(jwks), Some(kid)) => jwks.key(kid, header.alg).await,
            _ => None,
        };
        let key = match &from_jwks {
            Some(key) => key,
            None => self.keys.iter().find(|k| k.algorithm == header.alg).ok_or_else(|| {
                tracing::info!(algorithm = ?header.alg, kid = ?header.kid, "token refused: no key for it");
                Unauthorized
            })?,
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let mut required = vec!["exp"];
        required.extend(self.audience.as_ref().map(|_| "aud"));
        required.extend(self.issuer.as_ref().map(|_| "iss"));
        validation.set_required_spec_claims(&required);
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| refuse("invalid", &e))?.claims;
        let patterns = |list: Vec<String>| -> Result<Vec<TopicPattern>, Unauthorized> {
            list.into_iter().map(TopicPattern::parse).collect::<Result<_, _>>().map_err(|e| refuse("bad pattern", &e))
        };
        let profile =
            claims.profile.as_deref().map(Profile::parse).transpose().map_err(|e| refuse("bad profile", &e))?;
        if let Some(info) = &claims.info {
            let size = serde_json::to_string(info).map_or(usize::MAX, |s| s.len());
            if size > MAX_INFO_BYTES {
                return Err(refuse("bad info", &format!("the info claim is {size} bytes, at most {MAX_INFO_BYTES}")));
            }
        }
        if let Some(revocation) = self.revocations.covering(claims.sub.as_deref(), claims.iat, claims.jti.as_deref()) {
            metrics::counter!("hub_tokens_refused_total", "reason" => "revoked").increment(1);
            tracing::info!(subject = ?claims.sub, jti = ?claims.jti, revocation = %revocation, "token refused: revoked");
            return Err(Unauthorized);
        }
        Ok(Grant {
            restrictions: Some(Restrictions {
                subject: claims.sub,
                expires_at: claims.exp.saturating_add(self.leeway_s),
                token_expires_at: claims.exp,
                issued_at: claims.iat,
                token_id: claims.jti,
                admin: claims.admin,
                topics: patterns(claims.topics)?,
                scope: claims.scope.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect(),
                publish: patterns(claims.publish)?,
                profile,
                info: claims.info.map(Arc::new),
            }),
        })
    }

    /// Authenticates a request by its `Authorization: Bearer` header (where the `token_in_query` middleware
    /// also puts an `access_token` query parameter).
    pub async fn authenticate_request(&self, req: &HttpRequest) -> Result<Grant, Unauthorized> {
        self.authenticate(token_of(req).as_deref()).await
    }
}

/// `HUB_JWT_JWKS_CA`: the PEM text itself, or the path of a file holding it (a mounted Secret).
fn read_pem_bundle(value: &str) -> anyhow::Result<Vec<u8>> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).with_context(|| format!("HUB_JWT_JWKS_CA: cannot read {value}"))
}

/// The identity provider's signing keys (a JSON Web Key Set), by `kid`, so keys rotate without a restart.
///
/// Fetched at start, again on a `kid` the set does not hold (at most once per `min_interval`, so tokens with
/// made-up `kid`s cannot make the hub hammer the provider), and every [`JWKS_REFRESH`] so that a key the provider
/// removed stops being accepted. A failed fetch keeps the keys it had.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: std::sync::RwLock<std::collections::HashMap<String, VerifyingKey>>,
    last_fetch: std::sync::Mutex<Option<std::time::Instant>>,
    min_interval: Duration,
}

/// How often the key set is fetched without being asked.
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);

impl Jwks {
    /// A key set fetched from `url`, trusting the certificates of the PEM bundle `ca` beside the system's.
    fn new(url: String, min_interval: Duration, ca: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            let certificates =
                reqwest::Certificate::from_pem_bundle(ca).context("HUB_JWT_JWKS_CA: not a PEM bundle")?;
            anyhow::ensure!(!certificates.is_empty(), "HUB_JWT_JWKS_CA holds no certificate");
            client = client.tls_certs_merge(certificates);
        }
        let client = client.build().context("HUB_JWT_JWKS_CA: the HTTPS client cannot use these certificates")?;
        Ok(Self { url, client, keys: Default::default(), last_fetch: Default::default(), min_interval })
    }

    /// The key `kid` for a token signed with `algorithm`, refreshing the set once if it does not hold `kid`.
    async fn key(&self, kid: &str, algorithm: Algorithm) -> Option<VerifyingKey> {
        let held = |keys: &std::collections::HashMap<String, VerifyingKey>| {
            keys.get(kid).filter(|k| k.algorithm == algorithm).cloned()
        };
        if let Some(key) = self.keys.read().ok().and_then(|keys| held(&keys)) {
            return Some(key);
        }
        if !self.may_fetch() {
            return None;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %format!("{e:#}"), "fetching the JWKS failed; keeping the keys held");
        }
        self.keys.read().ok().and_then(|keys| held(&keys))
    }

    fn may_fetch(&self) -> bool {
        let Ok(mut last) = self.last_fetch.lock() else { return false };
        if last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// Fetches the set and replaces the keys held: a key the provider removed is no longer accepted.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let set: jsonwebtoken::jwk::JwkSet =
            self.client.get(&self.url).send().await?.error_for_status()?.json().await?;
        let mut keys = std::collections::HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(alg), _) => Algorithm::from_str(&alg.to_string()).ok(),
                (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => Some(Algorithm::ES256),
                (None, _) => None,
            };
            let (Some(algorithm), Ok(key)) = (algorithm, DecodingKey::from_jwk(jwk)) else {
                tracing::warn!(kid, "a JWKS key of an unsupported kind is ignored");
                continue;
            };
            keys.insert(kid, VerifyingKey { key, algorithm });
        }
        tracing::info!(keys = keys.len(), "JWKS fetched");
        if let Ok(mut held) = self.keys.write() {
            *held = keys;
        }
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

fn refuse(why: &str, error: &dyn std::fmt::Display) -> Unauthorized {
    tracing::info!(why, error = %error, "token refused");
    Unauthorized
}

/// The bearer token of a request.
fn token_of(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(|t| t.trim().to_owned())
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Grant {
    /// A grant that allows everything (development mode).
    pub fn unrestricted() -> Self {
        Self { restrictions: None }
    }

    /// Whether a subscription to `topics` with `filter` is allowed: each pattern lies within a granted one, and
    /// every scope key the token restricts is pinned by the filter to an allowed value.
    pub fn allows_subscription(&self, topics: &[TopicPattern], filter: &Filter) -> Result<(), String> {
        let Some(r) = &self.restrictions else { return Ok(()) };
        if let Some(outside) = topics.iter().find(|p| !r.topics.iter().any(|g| p.lies_within(g))) {
            return Err(format!("the token does not grant topic {outside}"));
        }
        for (key, allowed) in &r.scope {
            match filter.get(key) {
                Some(value) if allowed.contains(value) => {}
                Some(value) => return Err(format!("the token does not grant {key}={value}")),
                None => return Err(format!("the token restricts {key}: the filter must pin it")),
            }
        }
        Ok(())
    }

    /// The topics of a query subscription that names none: every topic the token grants (`*` when it grants
    /// everything, or in development mode), so a restricted token gets what it may read rather than a refusal.
    pub fn default_topics(&self) -> Vec<TopicPattern> {
        match &self.restrictions {
            Some(r) if !r.topics.is_empty() => TopicPattern::minimize(&r.topics),
            _ => vec![TopicPattern::Prefix(String::new())],
        }
    }

    /// The output profile of subscriptions that name none (the token's `profile` claim).
    pub fn default_profile(&self) -> Profile {
        self.restrictions.as_ref().and_then(|r| r.profile).unwrap_or_default()
    }

    /// Whether publishing to `topic` is allowed.
    pub fn allows_publish(&self, topic: &Topic) -> bool {
        self.restrictions.as_ref().is_none_or(|r| r.publish.iter().any(|p| p.matches(topic.as_str())))
    }

    /// Who the token names (`sub`).
    pub fn subject(&self) -> Option<&str> {
        self.restrictions.as_ref().and_then(|r| r.subject.as_deref())
    }

    /// The token's `info` claim, as presence shows it (before redaction).
    pub fn info(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.restrictions.as_ref().and_then(|r| r.info.as_deref())
    }

    /// Time left before the grant is void; `None` when it never expires (development mode).
    pub fn expires_in(&self) -> Option<Duration> {
        self.restrictions.as_ref().map(|r| Duration::from_secs(r.expires_at.saturating_sub(now_s())))
    }

    /// The token's `exp` (Unix seconds), as clients are told it; `None` in development mode.
    pub fn token_expires_at(&self) -> Option<u64> {
        self.restrictions.as_ref().map(|r| r.token_expires_at)
    }

    /// Whether the grant may call `/api/admin/*`: a token with `"admin": true`, or development mode.
    pub fn is_admin(&self) -> bool {
        self.restrictions.as_ref().is_none_or(|r| r.admin)
    }

    /// Whether `revocation` covers the token behind this grant (never in development mode, which has none).
    pub fn is_revoked_by(&self, revocation: &Revocation) -> bool {
        self.restrictions
            .as_ref()
            .is_some_and(|r| revocation.covers(r.subject.as_deref(), r.issued_at, r.token_id.as_deref()))
    }
}

/// What a revocation names: every token of a subject issued at or before a moment, or one token by its id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// Tokens of `subject` whose `iat` is at or before `issued_before` (Unix seconds); a token without `iat`
    /// counts as issued before.
    Subject { subject: String, issued_before: u64 },
    /// The token whose `jti` this is.
    Token { jti: String },
}

/// A revocation and when it lapses (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    #[serde(flatten)]
    pub revoked: Revoked,
    pub until: u64,
}

impl Revocation {
    /// The key it is kept under: one revocation per subject, one per token id.
    pub fn key(&self) -> String {
        match &self.revoked {
            Revoked::Subject { subject, .. } => format!("sub:{subject}"),
            Revoked::Token { jti } => format!("jti:{jti}"),
        }
    }

    fn covers(&self, subject: Option<&str>, issued_at: Option<u64>, token_id: Option<&str>) -> bool {
        if self.until <= now_s() {
            return false;
        }
        match &self.revoked {
            Revoked::Subject { subject: revoked, issued_before } => {
                subject == Some(revoked.as_str()) && issued_at.is_none_or(|iat| iat <= *issued_before)
            }
            Revoked::Token { jti } => token_id == Some(jti.as_str()),
        }
    }
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// The revocations in force, by key. Read on every authentication (a read lock and a scan of what is usually a
/// handful of entries), written when an operator revokes or lifts one, on any hub.
#[derive(Debug, Default)]
pub struct Revocations {
    by_key: RwLock<BTreeMap<String, Revocation>>,
}

impl Revocations {
    pub fn insert(&self, revocation: Revocation) {
        self.by_key.write().unwrap_or_else(|e| e.into_inner()).insert(revocation.key(), revocation);
    }

    pub fn remove(&self, key: &str) -> bool {
        self.by_key.write().unwrap_or_else(|e| e.into_inner()).remove(key).is_some()
    }

    /// Replaces every revocation held with `all` (what the backend keeps).
    pub fn replace(&self, all: impl IntoIterator<Item = Revocation>) {
        *self.by_key.write().unwrap_or_else(|e| e.into_inner()) = all.into_iter().map(|r| (r.key(), r)).collect();
    }

    /// The revocations in force, lapsed ones left out.
    pub fn list(&self) -> Vec<Revocation> {
        let now = now_s();
        self.by_key.read().unwrap_or_else(|e| e.into_inner()).values().filter(|r| r.until > now).cloned().collect()
    }

    /// The revocation that refuses a token with these claims, if any.
    fn covering(&self, subject: Option<&str>, issued_at: Option<u64>, token_id: Option<&str>) -> Option<Revocation> {
        let held = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        if held.is_empty() {
            return None;
        }
        held.values().find(|r| r.covers(subject, issued_at, token_id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(topics: &[&str], scope: &[(&str, &[&str])]) -> Grant {
        Grant {
            restrictions: Some(Restrictions {
                subject: Some("u".into()),
                expires_at: u64::MAX,
                token_expires_at: u64::MAX,
                issued_at: Some(1_000),
                token_id: Some("t1".into()),
                admin: false,
                topics: topics.iter().map(|t| TopicPattern::parse(*t).unwrap()).collect(),
                scope: scope.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
                publish: vec![TopicPattern::parse("run.*").unwrap()],
                profile: None,
                info: None,
            }),
        }
    }

    #[test]
    fn a_subject_revocation_covers_tokens_issued_at_or_before_it_and_a_token_revocation_its_id() {
        let later = now_s() + 3600;
        let subject = |issued_before| Revocation {
            revoked: Revoked::Subject { subject: "u".into(), issued_before },
            until: later,
        };
        let g = grant(&["*"], &[]);
        assert!(g.is_revoked_by(&subject(1_000)), "issued at the revocation");
        assert!(!g.is_revoked_by(&subject(999)), "issued after it");
        let other =
            Revocation { revoked: Revoked::Subject { subject: "v".into(), issued_before: 5_000 }, until: later };
        assert!(!g.is_revoked_by(&other));
        let token = Revocation { revoked: Revoked::Token { jti: "t1".into() }, until: later };
        assert!(g.is_revoked_by(&token));
        let lapsed = Revocation { until: now_s() - 1, ..token.clone() };
        assert!(!g.is_revoked_by(&lapsed), "a lapsed revocation covers nothing");
        assert!(!Grant::unrestricted().is_revoked_by(&token), "development mode has no tokens to revoke");

        let held = Revocations::default();
        held.insert(subject(1_000));
        assert!(held.covering(Some("u"), None, None).is_some(), "a token without iat counts as issued before");
        assert!(held.covering(Some("u"), Some(2_000), None).is_none());
        assert!(held.remove("sub:u"));
        assert!(held.covering(Some("u"), None, None).is_none());
    }

    fn pats(list: &[&str]) -> Vec<TopicPattern> {
        list.iter().map(|t| TopicPattern::parse(*t).unwrap()).collect()
    }

    #[test]
    fn subscriptions_must_lie_within_the_granted_topics() {
        let g = grant(&["run.*", "system.errors"], &[]);
        assert!(g.allows_subscription(&pats(&["run.logs", "run.x*"]), &Filter::default()).is_ok());
        assert!(g.allows_subscription(&pats(&["system.errors"]), &Filter::default()).is_ok());
        assert!(g.allows_subscription(&pats(&["*"]), &Filter::default()).is_err());
        assert!(g.allows_subscription(&pats(&["deploy.logs"]), &Filter::default()).is_err());
        assert!(grant(&[], &[]).allows_subscription(&pats(&["a"]), &Filter::default()).is_err(), "absent = none");
    }

    #[test]
    fn restricted_scope_keys_must_be_pinned_to_an_allowed_value() {
        let g = grant(&["*"], &[("project_id", &["p1", "p2"]), ("env", &["prod"])]);
        let ok = Filter::try_from([("project_id", "p2"), ("env", "prod")]).unwrap();
        assert!(g.allows_subscription(&pats(&["*"]), &ok).is_ok());
        let other_project = Filter::try_from([("project_id", "p3"), ("env", "prod")]).unwrap();
        assert!(g.allows_subscription(&pats(&["*"]), &other_project).is_err());
        let unpinned = Filter::try_from([("env", "prod")]).unwrap();
        assert!(g.allows_subscription(&pats(&["*"]), &unpinned).is_err());
    }

    #[test]
    fn query_subscriptions_default_to_the_granted_topics() {
        assert_eq!(grant(&["flags.*", "run.logs"], &[]).default_topics(), pats(&["flags.*", "run.logs"]));
        assert_eq!(grant(&["*", "run.logs"], &[]).default_topics(), pats(&["*"]));
        assert_eq!(Grant::unrestricted().default_topics(), pats(&["*"]));
        assert_eq!(Grant::unrestricted().default_profile(), Profile::Hub);
    }

    #[test]
    fn publishing_needs_a_matching_publish_pattern() {
        let g = grant(&["*"], &[]);
        assert!(g.allows_publish(&Topic::parse("run.logs").unwrap()));
        assert!(!g.allows_publish(&Topic::parse("deploy.logs").unwrap()));
        assert!(Grant::unrestricted().allows_publish(&Topic::parse("anything").unwrap()));
    }
}
