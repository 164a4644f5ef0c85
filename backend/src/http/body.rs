//! Request bodies left unread. A request refused before its body is read —
//! a missing token, a body over a limit, a bad parameter — still has the
//! body on the wire. Were the connection closed on it, the client's kernel
//! would answer the rest of its upload with a reset, and a client that
//! sends a whole body before it reads (Python's `requests` and `urllib`,
//! without `Expect: 100-continue`) would see "connection reset" instead of
//! the answer. So every request body is wrapped here, and one dropped
//! before its end is read and thrown away after the answer is sent, up to
//! [`DISCARD_BYTES`] within [`DISCARD_TIME`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// How much of an unread body is thrown away before the connection closes.
pub const DISCARD_BYTES: u64 = 1 << 30;
/// How long an unread body is read for at most.
pub const DISCARD_TIME: Duration = Duration::from_secs(30);

/// The middleware: wraps the request's body.
pub async fn drain_unread(req: Request, next: Next) -> Response {
    next.run(req.map(|b| Body::new(DrainOnDrop(Some(b))))).await
}

/// A body that, dropped before its end, has the rest read and discarded.
struct DrainOnDrop(Option<Body>);

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.0.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0.as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.0.take().filter(|b| !b.is_end_stream()) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            use http_body_util::BodyExt;
            let mut body = body;
            let mut seen = 0u64;
            let _ = tokio::time::timeout(DISCARD_TIME, async {
                while let Some(Ok(frame)) = body.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > DISCARD_BYTES {
                        break;
                    }
                }
            })
            .await;
        });
    }
}
