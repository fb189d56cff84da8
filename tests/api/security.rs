//! Hardening as an attacker would probe it: foreign origins, tokens for other audiences or issuers, rotated keys,
//! an open hub on a public address; and resume points named as the older systems name them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hub::Application;
use hub::settings::Settings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestHub, event, ids, spawn_hub};
use crate::tokens::{SECRET, fixture, hs256, standard};

async fn upgrade_status(hub: &TestHub, origin: Option<&str>) -> u16 {
    let mut request = hub.http.get(hub.url("/ws?topics=a"));
    for (name, value) in [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ] {
        request = request.header(name, value);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap().status().as_u16()
}

#[actix_web::test]
async fn a_foreign_origin_is_refused_before_the_upgrade_and_allowed_ones_are_not() {
    let hub = spawn_hub(|s| s.cors_origins = vec!["https://staff.example".into()]).await;
    let own = format!("http://127.0.0.1:{}", hub.port);

    assert_eq!(upgrade_status(&hub, Some("https://evil.example")).await, 403);
    assert_eq!(upgrade_status(&hub, Some("https://staff.example")).await, 101, "the CORS list is allowed");
    assert_eq!(upgrade_status(&hub, Some(&own)).await, 101, "same origin is allowed");
    assert_eq!(upgrade_status(&hub, None).await, 101, "non-browser clients send no Origin");

    let explicit = spawn_hub(|s| s.allowed_origins = vec!["https://dash.example".into()]).await;
    assert_eq!(upgrade_status(&explicit, Some("https://dash.example")).await, 101);
    assert_eq!(upgrade_status(&explicit, Some("https://staff.example")).await, 403);
}

/// The four ways in, each with `token`: the status of a WebSocket upgrade, an SSE stream, a long-poll, a publish.
async fn statuses(hub: &TestHub, token: &str) -> [u16; 4] {
    let ws = match hub.ws_with_token("/ws?topics=run.*&project_id=p1", Some(token)).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    };
    let sse = hub.http.get(hub.url("/sse?topics=run.*&project_id=p1")).bearer_auth(token).send().await.unwrap();
    let (poll, _) = hub.get_as("/api/events?topics=run.*&project_id=p1&after=0&wait=0", Some(token)).await;
    let (publish, _) = hub.publish_as(&event("run.logs", json!({"project_id":"p1"}), 1), Some(token)).await;
    [ws, sse.status().as_u16(), poll, publish]
}

#[actix_web::test]
async fn a_token_for_another_audience_or_issuer_is_refused_on_every_transport() {
    let hub = spawn_hub(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.jwt_audience = Some("realtime-hub".into());
        s.jwt_issuer = Some("https://id.example".into());
    })
    .await;
    let with = |aud: Option<&str>, iss: Option<&str>| {
        let mut claims = standard();
        if let Some(aud) = aud {
            claims["aud"] = json!(aud);
        }
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        hs256(&claims)
    };

    assert_eq!(statuses(&hub, &with(Some("realtime-hub"), Some("https://id.example"))).await, [101, 200, 200, 200]);
    assert_eq!(statuses(&hub, &with(Some("billing"), Some("https://id.example"))).await, [401; 4]);
    assert_eq!(statuses(&hub, &with(Some("realtime-hub"), Some("https://other.example"))).await, [401; 4]);
    assert_eq!(statuses(&hub, &with(None, Some("https://id.example"))).await, [401; 4], "aud is required");
    assert_eq!(statuses(&hub, &with(Some("realtime-hub"), None)).await, [401; 4], "iss is required");
}

/// A local identity provider whose key set can be swapped.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<u32>>,
}

async fn jwks_server(keys: Value) -> Jwks {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(Mutex::new(0));
    let (served, counted) = (keys.clone(), fetches.clone());
    let server = HttpServer::new(move || {
        let (served, counted) = (served.clone(), counted.clone());
        App::new().route(
            "/jwks.json",
            web::get().to(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    *counted.lock().unwrap() += 1;
                    HttpResponse::Ok().json(served.lock().unwrap().clone())
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    Jwks { url: format!("http://127.0.0.1:{port}/jwks.json"), keys, fetches }
}

/// A test key's public half as a JWK (fixture `<name>_public.jwk.json`), named `kid`.
fn rsa_jwk(kid: &str, name: &str) -> Value {
    let mut jwk: Value = serde_json::from_str(&fixture(&format!("{name}_public.jwk.json"))).unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

fn rs256_with_kid(kid: &str, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &standard(), &key).unwrap()
}

#[actix_web::test]
async fn a_rotated_jwks_key_is_accepted_without_a_restart_and_the_removed_one_is_refused() {
    let old_private = fixture("rsa_private.pem");
    let new_private = fixture("rsa2_private.pem");
    let provider = jwks_server(json!({"keys": [rsa_jwk("k1", "rsa")]})).await;
    let hub = spawn_hub(|s| {
        s.jwt_jwks_url = Some(provider.url.clone());
        s.jwt_jwks_min_interval = Duration::from_millis(200);
    })
    .await;
    let old = rs256_with_kid("k1", &old_private);
    let new = rs256_with_kid("k2", &new_private);
    assert_eq!(hub.get_as("/api/events?topics=run.*&project_id=p1&after=0&wait=0", Some(&old)).await.0, 200);
    assert_eq!(hub.get_as("/api/events?topics=run.*&project_id=p1&after=0&wait=0", Some(&new)).await.0, 401);

    *provider.keys.lock().unwrap() = json!({"keys": [rsa_jwk("k2", "rsa2")]});
    tokio::time::sleep(Duration::from_millis(250)).await;

    assert_eq!(statuses(&hub, &new).await, [101, 200, 200, 200], "the new key, fetched on its unknown kid");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(statuses(&hub, &old).await, [401; 4], "the removed key is gone with the refreshed set");
    let fetches = *provider.fetches.lock().unwrap();
    for _ in 0..20 {
        let forged = rs256_with_kid(&format!("made-up-{}", uuid::Uuid::new_v4()), &new_private);
        hub.get_as("/api/events?after=0&wait=0", Some(&forged)).await;
    }
    let during_storm = *provider.fetches.lock().unwrap() - fetches;
    assert!(during_storm <= 1, "unknown kids refresh at a bounded rate: {during_storm} fetches for 20 tokens");
}

/// A private identity provider: the key set `keys` served over HTTPS with a certificate for 127.0.0.1 issued by a
/// CA of the test's own. Returns the URL and the CA's certificate (PEM).
async fn https_jwks_server(keys: Value) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "hub test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = keys.to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                // A refused handshake (the hub without the CA) ends here.
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}/jwks.json"), ca_pem)
}

#[actix_web::test]
async fn a_private_providers_jwks_over_https_is_trusted_with_its_ca_and_refused_with_the_reason_without() {
    let (url, ca_pem) = https_jwks_server(json!({"keys": [rsa_jwk("k1", "rsa")]})).await;
    let ca_file = std::env::temp_dir().join(format!("hub-test-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let token = rs256_with_kid("k1", &fixture("rsa_private.pem"));
    let settings = |ca: Option<String>| Settings {
        bind: "127.0.0.1:0".into(),
        jwt_jwks_url: Some(url.clone()),
        jwt_jwks_ca: ca,
        ..Settings::default()
    };

    let without = Application::build(settings(None)).await.err().expect("an unknown issuer is refused");
    let trusting = |ca: String| {
        let url = url.clone();
        move |s: &mut Settings| {
            s.jwt_jwks_url = Some(url);
            s.jwt_jwks_ca = Some(ca);
        }
    };
    let with_file = spawn_hub(trusting(ca_file.display().to_string())).await;
    let with_text = spawn_hub(trusting(ca_pem.clone())).await;
    let not_pem = Application::build(settings(Some("-----BEGIN nonsense".into()))).await.err().expect("refused");
    std::fs::remove_file(&ca_file).unwrap();

    let reason = format!("{without:#}");
    assert!(reason.contains("HUB_JWT_JWKS_URL") && reason.contains("certificate"), "{reason}");
    let query = "/api/events?topics=run.*&project_id=p1&after=0&wait=0";
    assert_eq!(with_file.get_as(query, Some(&token)).await.0, 200, "the key fetched over HTTPS verifies the token");
    assert_eq!(with_text.get_as(query, Some(&token)).await.0, 200, "the CA given as PEM text");
    assert!(format!("{not_pem:#}").contains("HUB_JWT_JWKS_CA"), "{not_pem:#}");
}

#[actix_web::test]
async fn a_hub_without_a_key_refuses_to_start_on_a_public_address_unless_told_it_is_insecure() {
    let public = Settings { bind: "0.0.0.0:0".into(), ..Settings::default() };
    let error = Application::build(public.clone()).await.err().expect("refused");
    let text = format!("{error:#}");
    assert!(text.contains("HUB_INSECURE=1") && text.contains("0.0.0.0"), "{text}");

    let insecure = Settings { insecure: true, ..public };
    let app = Application::build(insecure).await.expect("an open hub on purpose");
    let shutdown = app.shutdown();
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped(false));
    let health: Value =
        reqwest::get(format!("http://127.0.0.1:{port}/api/health/pubsub")).await.unwrap().json().await.unwrap();
    assert_eq!(health["development_mode"], true);
    shutdown.abort().await;
}

#[actix_web::test]
async fn last_event_id_resumes_exactly_like_since_on_websocket_sse_and_long_poll() {
    let hub = spawn_hub(|_| {}).await;
    let published =
        hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2), event("a", json!({}), 3)])).await;
    let after = published[0];

    let mut by_alias = hub.ws(&format!("/ws?topics=a&last_event_id={after}")).await;
    by_alias.expect("subscribed").await;
    let mut by_since = hub.ws(&format!("/ws?topics=a&since={after}")).await;
    by_since.expect("subscribed").await;
    assert_eq!(ids(&by_alias.events(2).await), ids(&by_since.events(2).await));
    by_alias.expect("live").await;

    let mut sse = hub.sse(&format!("/sse?topics=a&last_event_id={after}"), &[]).await;
    assert_eq!(sse.next_event().await.id, Some(published[1].to_string()));
    let (_, poll) = hub.get_json(&format!("/api/events?topics=a&last_event_id={after}&wait=0")).await;
    let header = hub.http.get(hub.url("/api/events?topics=a&wait=0")).header("last-event-id", after.to_string());
    let poll_header: Value = header.send().await.unwrap().json().await.unwrap();
    assert_eq!(poll["events"].as_array().unwrap().len(), 2);
    assert_eq!(poll["events"], poll_header["events"]);
}

#[actix_web::test]
async fn an_unknown_query_key_is_a_400_instead_of_a_filter_that_matches_nothing() {
    let hub = spawn_hub(|s| s.scope_keys = vec!["tenant".into()]).await;

    let (status, body) = hub.get_json("/api/events?after=0&projectId=p1").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("projectId"), "{body}");
    assert!(hub.ws_raw("/ws?lastEventId=4").await.is_err());
    assert_eq!(hub.http.get(hub.url("/sse?colour=red")).send().await.unwrap().status(), 400);
    assert_eq!(hub.get_json("/api/events?after=0&tenant=t1&wait=0").await.0, 200, "configured keys are filters");
}

/// A route refuses what another route reads (`after`, `limit`, `wait` are the long-poll's), and every route
/// refuses a name none reads (`sub`, which older versions accepted and ignored), instead of ignoring it.
#[actix_web::test]
async fn a_query_parameter_the_route_does_not_read_is_a_400_naming_it() {
    use hub::routes::query::POLL_PARAMETERS;
    let hub = spawn_hub(|_| {}).await;

    for parameter in POLL_PARAMETERS.iter().chain(&["sub"]) {
        let query = format!("topics=a&{parameter}=1");
        let sse = hub.http.get(hub.url(&format!("/sse?{query}"))).send().await.unwrap();
        assert_eq!(sse.status(), 400, "/sse took {parameter}");
        let body: Value = sse.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(parameter), "{body}");
        assert!(hub.ws_raw(&format!("/ws?{query}")).await.is_err(), "/ws took {parameter}");
    }
    let (status, body) = hub.get_json("/api/events?topics=a&after=0&sub=s1").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = hub.get_json("/api/events?topics=a&after=0&limit=5&wait=0&profile=hub").await;
    assert_eq!(status, 200, "the long-poll reads its own parameters: {body}");
}

#[test]
fn the_test_jwk_fixtures_match_their_private_keys() {
    // The JWK files are the public halves of the PEM keys; a mismatch would make the rotation test meaningless.
    for (jwk, private) in [("rsa_public.jwk.json", "rsa_private.pem"), ("rsa2_public.jwk.json", "rsa2_private.pem")] {
        let jwk: Value = serde_json::from_str(&fixture(jwk)).unwrap();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "a 2048-bit modulus");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture(private).as_bytes()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!({"exp": 4_000_000_000u64}), &key).unwrap();
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
                .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&token, &decoding, &validation).is_ok(), "{jwk}");
    }
}
