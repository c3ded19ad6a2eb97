//! The web dashboard: one page with three views (the swarm's coverage and
//! servers, the chain's epochs and nodes, a streaming chat playground),
//! served at `/` of every API server.
//!
//! The assets are plain HTML, CSS and JavaScript written for this project
//! (no library, no bundler, charts drawn as inline SVG), embedded in the
//! binary with `include_str!`: nothing is fetched from the internet at
//! run time. The page reads the API's own JSON (`/v1/status`,
//! `/v1/swarm`, `/v1/chain`) every two seconds and streams chats from
//! `/v1/chat/completions`.

use axum::Router;
use axum::http::header;
use axum::routing::get;

/// One embedded file: its path, content type and text.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the page.
const ASSETS: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../assets/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
];

/// The dashboard's routes (`GET /`, `/app.js`, `/style.css`), to merge
/// into an API server's router. Browsers revalidate on every load
/// (`no-cache`), so a new binary's page is never mixed with an old one's.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (content_type, body) = (asset.content_type, asset.body);
        router.route(
            asset.path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
            }),
        )
    })
}
