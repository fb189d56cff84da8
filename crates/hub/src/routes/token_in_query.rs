//! Moves an `access_token` query parameter into the `Authorization` header before anything logs the request.
//!
//! Browsers cannot set headers on a WebSocket or an EventSource, so they send their token in the query. Request
//! spans record the URL; without this, every log line and exported span of such a request would carry the token.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Uri;
use actix_web::http::header::{AUTHORIZATION, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};

const PARAMETER: &str = "access_token";

/// The middleware; mount it outside the request logger.
pub async fn move_token_to_header(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if let Some((uri, token)) = strip_token(req.uri()) {
        req.head_mut().uri = uri;
        // An Authorization header wins over the query parameter.
        if !req.headers().contains_key(AUTHORIZATION)
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            req.headers_mut().insert(AUTHORIZATION, value);
        }
    }
    next.call(req).await
}

/// The URI without `access_token`, and the token, when the query has one.
fn strip_token(uri: &Uri) -> Option<(Uri, String)> {
    let query = uri.query()?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query).ok()?.into_inner();
    let token = pairs.into_iter().find(|(k, _)| k == PARAMETER).map(|(_, v)| v)?;
    let kept: Vec<&str> =
        query.split('&').filter(|part| part.split('=').next() != Some(PARAMETER) && !part.is_empty()).collect();
    let path_and_query =
        if kept.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), kept.join("&")) };
    let uri = Uri::builder().path_and_query(path_and_query).build().ok()?;
    Some((uri, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_out_of_the_query_and_the_rest_kept() {
        let uri: Uri = "/ws?topics=a&access_token=eyJ.x.y&since=3".parse().unwrap();
        let (stripped, token) = strip_token(&uri).unwrap();
        assert_eq!(stripped.to_string(), "/ws?topics=a&since=3");
        assert_eq!(token, "eyJ.x.y");
        let (stripped, _) = strip_token(&"/sse?access_token=t".parse().unwrap()).unwrap();
        assert_eq!(stripped.to_string(), "/sse");
        assert!(strip_token(&"/ws?topics=a".parse().unwrap()).is_none());
    }
}
