//! Headers every answer carries, so that the console (which keeps API
//! tokens in the browser's storage) cannot be made to run a script that is
//! not its own, be framed, or leak a share link's path in a `Referer`.

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Scripts from this origin only (no inline script, no `eval`; WebAssembly
/// compilation is allowed, which the console needs), connections to this
/// origin only (the API and its WebSockets), no plugins, no framing. Inline
/// styles stay allowed: the page's stylesheet is inline, and a style cannot
/// run code nor, with `default-src 'self'`, load anything from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
     script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; \
     connect-src 'self'; \
     object-src 'none'; \
     base-uri 'none'; \
     form-action 'self'; \
     frame-ancestors 'none'";

const HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // A share link's token is in its path: never sent on to another site.
    (header::REFERRER_POLICY, "no-referrer"),
    // `frame-ancestors` for browsers that predate it.
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// The middleware: adds each header the answer does not set itself.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in HEADERS {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    resp
}
