//! `GET /dashboard`: the staff dashboard, from assets compiled into the binary (no CDN, nothing fetched at run
//! time), and the hub's JavaScript client it is built on (`clients/js`), served as plain ES modules.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

/// Path under `/dashboard/`, content type, body.
const ASSETS: [(&str, &str, &str); 7] = [
    ("", "text/html; charset=utf-8", include_str!("../../assets/dashboard/index.html")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_str!("../../assets/dashboard/dashboard.js")),
    ("dashboard.css", "text/css; charset=utf-8", include_str!("../../assets/dashboard/dashboard.css")),
    ("client/index.js", "text/javascript; charset=utf-8", include_str!("../../../../clients/js/src/index.js")),
    ("client/client.js", "text/javascript; charset=utf-8", include_str!("../../../../clients/js/src/client.js")),
    ("client/cursor.js", "text/javascript; charset=utf-8", include_str!("../../../../clients/js/src/cursor.js")),
    ("client/backoff.js", "text/javascript; charset=utf-8", include_str!("../../../../clients/js/src/backoff.js")),
];

pub async fn asset(path: Option<web::Path<String>>) -> HttpResponse {
    let path = path.map(web::Path::into_inner).unwrap_or_default();
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, *content_type))
            // The assets change with the binary: let browsers revalidate rather than keep a stale page.
            .insert_header((CACHE_CONTROL, "no-cache"))
            .body(*body),
        None => HttpResponse::NotFound().finish(),
    }
}
