//! Tokens and grants on every transport (section 7).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestHub, event, spawn_hub};
use crate::tokens::{self, SECRET, claims, es256, fixture, hs256, hs256_with, rs256, standard, unsigned};

async fn secured_hub() -> TestHub {
    spawn_hub(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.jwt_leeway = Duration::ZERO;
    })
    .await
}

/// Tokens that must never authenticate, with what is wrong with each.
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("missing", None),
        ("malformed", Some("not.a.jwt".into())),
        ("expired", Some(hs256(&claims(&["run.*"], json!({}), &["run.*"], -60)))),
        ("wrong key", Some(hs256_with(&standard(), "some-other-secret-of-decent-length"))),
        ("wrong algorithm", Some(rs256(&standard()))),
        ("none algorithm", Some(unsigned(&standard()))),
        ("no exp", Some(hs256(&json!({"sub":"user-1","topics":["*"]})))),
        (
            "not yet valid",
            Some(hs256(&json!({"sub":"u","exp":tokens::now()+600,"nbf":tokens::now()+300,"topics":["*"]}))),
        ),
    ]
}

#[actix_web::test]
async fn every_bad_token_gets_the_same_401_on_every_transport() {
    let hub = secured_hub().await;
    let mut bodies = Vec::new();

    for (what, token) in bad_tokens() {
        let token = token.as_deref();
        let ws = hub.ws_with_token("/ws", token).await.err().expect(what);
        let tokio_tungstenite::tungstenite::Error::Http(response) = ws else { panic!("{what}: not an HTTP refusal") };
        assert_eq!(response.status(), 401, "ws, {what}");
        let (sse, sse_body) = hub.get_as("/sse?topics=run.*&project_id=p1", token).await;
        let (poll, poll_body) = hub.get_as("/api/events?topics=run.*&project_id=p1&after=0&wait=0", token).await;
        let (publish, publish_body) = hub.publish_as(&event("run.logs", json!({}), 1), token).await;
        assert_eq!((sse, poll, publish), (401, 401, 401), "{what}");
        bodies.extend([sse_body, poll_body, publish_body]);
    }

    let first = &bodies[0];
    assert_eq!(first["error"]["code"], "unauthorized");
    assert!(bodies.iter().all(|b| b == first), "401 answers differ: {bodies:?}");
}

#[actix_web::test]
async fn subscriptions_outside_the_grant_are_forbidden_on_every_transport() {
    let hub = secured_hub().await;
    let token = hs256(&standard());
    let forbidden = [
        ("other project", "topics=run.*&project_id=p3"),
        ("missing filter", "topics=run.*"),
        ("topic outside grant", "topics=deploy.*&project_id=p1"),
        ("wider pattern", "topics=*&project_id=p1"),
    ];

    for (what, query) in forbidden {
        let (sse, body) = hub.get_as(&format!("/sse?{query}"), Some(&token)).await;
        assert_eq!((sse, body["error"]["code"].as_str()), (403, Some("forbidden")), "sse, {what}");
        let (poll, _) = hub.get_as(&format!("/api/events?{query}&after=0&wait=0"), Some(&token)).await;
        assert_eq!(poll, 403, "long-poll, {what}");
        let ws = hub.ws_with_token(&format!("/ws?{query}"), Some(&token)).await.err().expect(what);
        let tokio_tungstenite::tungstenite::Error::Http(response) = ws else { panic!("{what}") };
        assert_eq!(response.status(), 403, "ws auto-subscription, {what}");
    }

    let mut client = hub.ws_with_token("/ws", Some(&token)).await.unwrap();
    client.expect("welcome").await;
    for frame in [
        json!({"op":"subscribe","sub":"s","topics":["run.*"],"filter":{"project_id":"p3"}}),
        json!({"op":"subscribe","sub":"s","topics":["run.*"]}),
        json!({"op":"subscribe","sub":"s","topics":["deploy.logs"],"filter":{"project_id":"p1"}}),
    ] {
        client.send_json(frame.clone()).await;
        let error = client.expect("error").await;
        assert_eq!(error["code"], "forbidden", "{frame}");
        assert_eq!(error["sub"], "s");
    }
    client.assert_usable().await;
}

#[actix_web::test]
async fn allowed_subscriptions_receive_only_their_scope_even_during_replay() {
    let hub = secured_hub().await;
    let token = hs256(&standard());
    hub.publish_as(
        &json!([event("run.logs", json!({"project_id":"p2"}), 0), event("run.logs", json!({"project_id":"p1"}), 1)]),
        Some(&token),
    )
    .await;

    let mut client = hub.ws_with_token("/ws?topics=run.*&project_id=p1&since=0", Some(&token)).await.unwrap();
    client.expect("welcome").await;
    client.expect("subscribed").await;
    let replayed = client.events(1).await;
    client.expect("live").await;
    let (status, page) = hub.get_as("/api/events?topics=run.logs&project_id=p1&after=0", Some(&token)).await;
    let mut sse = hub.sse(&format!("/sse?topics=run.*&project_id=p1&since=0&access_token={token}"), &[]).await;

    assert_eq!(replayed[0]["scope"]["project_id"], "p1");
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(sse.next_event().await.json()["scope"]["project_id"], "p1");
    client.expect_silence(Duration::from_millis(200)).await;
}

#[actix_web::test]
async fn the_token_may_come_as_an_access_token_query_parameter() {
    let hub = secured_hub().await;
    let token = hs256(&standard());

    let mut client = hub.ws_raw(&format!("/ws?access_token={token}&topics=run.*&project_id=p1")).await.unwrap();

    client.expect("welcome").await;
    client.expect("subscribed").await;
}

#[actix_web::test]
async fn publishing_needs_a_publish_grant_for_every_event_of_the_batch() {
    let hub = secured_hub().await;
    let token = hs256(&standard());
    let reader = hs256(&claims(&["*"], json!({}), &[], 3600));

    let (ok, ids) = hub.publish_as(&event("run.logs", json!({}), 0), Some(&token)).await;
    let (outside, body) = hub
        .publish_as(&json!([event("run.logs", json!({}), 1), event("deploy.logs", json!({}), 2)]), Some(&token))
        .await;
    let (no_claim, _) = hub.publish_as(&event("run.logs", json!({}), 3), Some(&reader)).await;

    assert_eq!((ok, ids["ids"].clone()), (200, json!([1])));
    assert_eq!(outside, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["index"], 1);
    assert_eq!(no_claim, 403);
    let (_, health) = hub.get_as("/api/health/pubsub", None).await;
    assert_eq!(health["log"]["head"], 1, "nothing of a refused batch is stored");
    assert_eq!(health["auth"], "jwt");
}

#[actix_web::test]
async fn rs256_and_es256_tokens_verify_against_the_configured_public_key() {
    for (public, sign) in [("rsa_public.pem", rs256 as fn(&Value) -> String), ("ec_public.pem", es256)] {
        let pem = fixture(public);
        let hub = spawn_hub(move |s| s.jwt_public_key = Some(pem)).await;
        let token = sign(&standard());

        let (status, _) = hub.get_as("/api/events?topics=run.*&project_id=p1&after=0&wait=0", Some(&token)).await;
        let (forged, _) =
            hub.get_as("/api/events?topics=run.*&project_id=p1&after=0&wait=0", Some(&hs256(&standard()))).await;

        assert_eq!(status, 200, "{public}");
        assert_eq!(forged, 401, "{public}: an HS256 token must not pass a public-key hub");
    }
}

#[actix_web::test]
async fn an_expiring_token_closes_the_connection_with_4001_unless_refreshed() {
    let hub = secured_hub().await;
    let short_claims = claims(&["run.*"], json!({}), &[], 2);
    let short = hs256(&short_claims);
    let mut expiring = hub.ws_with_token("/ws", Some(&short)).await.unwrap();
    assert_eq!(expiring.expect("welcome").await["expires_at"], short_claims["exp"], "welcome says when");
    let mut refreshed = hub.ws_with_token("/ws", Some(&short)).await.unwrap();
    refreshed.expect("welcome").await;
    refreshed.subscribe(json!({"op":"subscribe","sub":"s","topics":["run.logs"]})).await;

    let renewal = claims(&["run.*"], json!({}), &[], 3600);
    refreshed.send_json(json!({"op":"refresh","token": hs256(&renewal)})).await;

    assert_eq!(refreshed.expect("refreshed").await["expires_at"], renewal["exp"], "the refresh is answered");
    assert_eq!(expiring.expect_close(Duration::from_secs(6)).await, Some(4001));
    refreshed.expect_silence(Duration::from_millis(500)).await;
    hub.publish_as(&event("run.logs", json!({}), 1), Some(&hs256(&standard()))).await;
    assert_eq!(refreshed.events(1).await[0]["topic"], "run.logs", "still open and subscribed after the old exp");
}

#[actix_web::test]
async fn a_refresh_that_narrows_the_grant_removes_subscriptions_it_no_longer_allows() {
    let hub = secured_hub().await;
    let wide = hs256(&claims(&["*"], json!({}), &[], 3600));
    let narrow = hs256(&claims(&["run.*"], json!({}), &[], 3600));
    let mut client = hub.ws_with_token("/ws", Some(&wide)).await.unwrap();
    client.expect("welcome").await;
    client.subscribe(json!({"op":"subscribe","sub":"all","topics":["*"]})).await;
    client.subscribe(json!({"op":"subscribe","sub":"runs","topics":["run.*"]})).await;

    client.send_json(json!({"op":"refresh","token": narrow})).await;
    let revoked = client.expect("error").await;
    client.expect("refreshed").await;
    client.send_json(json!({"op":"refresh","token":"garbage"})).await;
    let refused = client.expect("error").await;

    assert_eq!((revoked["code"].as_str(), revoked["sub"].as_str()), (Some("forbidden"), Some("all")));
    assert_eq!(refused["code"], "forbidden");
    let (_, health) = hub.get_as("/api/health/pubsub", None).await;
    assert_eq!(health["stats"]["subscriptions"], 1);
}
