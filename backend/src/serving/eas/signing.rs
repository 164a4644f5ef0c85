//! The EAS SDK's signed `Authorization` (what `PredictClient` sends whenever
//! it has a token):
//!
//! ```text
//! Authorization: EAS base64(HMAC-SHA1(token, string_to_sign))
//! string_to_sign = "POST\n{Content-MD5}\n{Content-Type}\n{Date}\n/api/predict/{name}"
//! ```
//!
//! with `Content-MD5` the *hex* MD5 of the body and `Date` an RFC 7231 date,
//! both sent as headers (`predict_client.py`, `generate_singaure`). The
//! server recomputes the MD5 from the bytes it received, so the signature
//! binds the body; the `Date` bounds how long a captured request can be
//! replayed.

use std::time::{Duration, SystemTime};

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, DATE};
use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

use crate::control::tokens::tokens_equal;
use crate::serving::ServingError;

const SCHEME: &str = "EAS ";

/// How far a signed request's `Date` may be from the server's clock, either
/// way. The SDK formats the client's *local* time and labels it GMT
/// (`datetime.now().strftime('… GMT')`), so a correct client is off by its
/// zone's UTC offset, which runs from −12 h to +14 h. 14 h covers every zone
/// and the 15 min on top are ordinary clock drift; a wider window would only
/// lengthen the replay window of a captured request.
pub const MAX_SKEW: Duration = Duration::from_secs(14 * 3600 + 15 * 60);

/// Whether the request uses the signed form.
pub fn is_signed(headers: &HeaderMap) -> bool {
    header(headers, AUTHORIZATION.as_str()).is_some_and(|v| v.starts_with(SCHEME))
}

/// The exact string the SDK signs (it strips surrounding whitespace, as
/// Python's `str.strip()` does, before signing).
pub fn string_to_sign(content_md5: &str, content_type: &str, date: &str, name: &str) -> String {
    format!("POST\n{content_md5}\n{content_type}\n{date}\n/api/predict/{name}")
        .trim()
        .to_string()
}

/// Hex MD5 of the body, as the SDK puts it in `Content-MD5`.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

fn mac(token: &str) -> Hmac<Sha1> {
    // HMAC takes a key of any length, so this cannot fail.
    <Hmac<Sha1> as KeyInit>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// The `Authorization` value the SDK would send: `EAS <base64 signature>`.
pub fn authorization(token: &str, string_to_sign: &str) -> String {
    let mut m = mac(token);
    m.update(string_to_sign.as_bytes());
    format!(
        "{SCHEME}{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Checks a signed request for service `name` against its `token` at time
/// `now`, once: a signature already accepted more than [`REPEAT_GRACE`]
/// before is refused (`replays` remembers them). Every refusal is a 401 that
/// says which part did not hold.
pub fn verify(
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
    token: &str,
    now: SystemTime,
    replays: &Replays,
) -> Result<(), ServingError> {
    check(headers, name, Some(body), token, now, Some(replays))
}

/// Checks the signature before the body is read, from its `Content-MD5`
/// header (a request without one cannot be told apart this way and is
/// refused): whether the caller holds the token of a service that is not
/// serving. Nothing is remembered.
pub fn verify_headers(
    headers: &HeaderMap,
    name: &str,
    token: &str,
    now: SystemTime,
) -> Result<(), ServingError> {
    check(headers, name, None, token, now, None)
}

fn check(
    headers: &HeaderMap,
    name: &str,
    body: Option<&[u8]>,
    token: &str,
    now: SystemTime,
    replays: Option<&Replays>,
) -> Result<(), ServingError> {
    let unauthorized = |why: String| ServingError::Unauthorized(format!("service '{name}': {why}"));
    let auth = header(headers, AUTHORIZATION.as_str()).unwrap_or_default();
    // A service token chosen in the config may itself start with "EAS ".
    if tokens_equal(auth, token) {
        return Ok(());
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(auth.strip_prefix(SCHEME).unwrap_or(auth).trim())
        .map_err(|_| {
            unauthorized("the signature in `Authorization: EAS …` is not base64".into())
        })?;

    let date = header(headers, DATE.as_str()).ok_or_else(|| {
        unauthorized("a signed request (`Authorization: EAS …`) needs a Date header".into())
    })?;
    let sent = httpdate::parse_http_date(date).map_err(|_| {
        unauthorized(format!(
            "the Date header '{date}' is not an HTTP date (like 'Tue, 15 Nov 1994 08:12:31 GMT')"
        ))
    })?;
    let skew = match sent.duration_since(now) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    if skew > MAX_SKEW {
        return Err(unauthorized(format!(
            "the Date header '{date}' is {} from the server's clock ({}); signed requests are accepted within ±14 h 15 min",
            humantime::format_duration(Duration::from_secs(skew.as_secs())),
            httpdate::fmt_http_date(now)
        )));
    }

    let md5 = body.map(body_md5);
    let content_md5 = match (header(headers, "content-md5"), md5.as_deref()) {
        (Some(sent), Some(md5)) if !sent.eq_ignore_ascii_case(md5) => {
            return Err(unauthorized(format!(
                "the Content-MD5 header '{sent}' does not match the body (its MD5 is {md5}): the body changed after it was signed"
            )))
        }
        (Some(sent), _) => sent,
        (None, Some(md5)) => md5,
        (None, None) => {
            return Err(unauthorized(
                "a signed request needs a Content-MD5 header here".into(),
            ))
        }
    };
    let content_type = header(headers, CONTENT_TYPE.as_str()).unwrap_or_default();

    let mut m = mac(token);
    m.update(string_to_sign(content_md5, content_type, date, name).as_bytes());
    m.verify_slice(&signature).map_err(|_| {
        unauthorized(
            "wrong signature in `Authorization: EAS …`: it was not made with this service's token over this request's Content-MD5, Content-Type, Date and path".into(),
        )
    })?;
    match replays {
        Some(r) => r
            .admit(&signature, sent + MAX_SKEW, now)
            .map_err(unauthorized),
        None => Ok(()),
    }
}

/// How long after its first use the same signed request is still taken: the
/// SDK's `Date` has one-second resolution, so a client that sends one body
/// twice within a second signs both alike.
pub const REPEAT_GRACE: Duration = Duration::from_secs(2);

/// How many signatures are remembered. Past this the oldest are forgotten
/// first (a server taking more signed requests than this within their
/// Date window remembers the most recent ones).
pub const REPLAY_MEMORY: usize = 1 << 18;

/// The signatures accepted while their `Date` is still within the window,
/// with when each was first used: a captured signed request cannot be sent
/// again later. Bounded by [`REPLAY_MEMORY`] entries (about 100 bytes each
/// with the map and the queue: under 30 MB).
#[derive(Default)]
pub struct Replays {
    seen: std::sync::Mutex<ReplayMemory>,
}

#[derive(Default)]
struct ReplayMemory {
    first_use: std::collections::HashMap<[u8; 20], SystemTime>,
    /// In the order they were first used, with when each stops mattering
    /// (its Date + MAX_SKEW: after that the Date check refuses it anyway).
    order: std::collections::VecDeque<([u8; 20], SystemTime)>,
}

impl Replays {
    /// Takes `signature` (of a request whose Date is acceptable until
    /// `until`) at `now`, or says when it was first used.
    fn admit(&self, signature: &[u8], until: SystemTime, now: SystemTime) -> Result<(), String> {
        // An HMAC-SHA1 is 20 bytes; anything else never verified.
        let Ok(key) = <[u8; 20]>::try_from(signature) else {
            return Ok(());
        };
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((k, expires)) = m.order.front().copied() {
            if expires >= now && m.order.len() < REPLAY_MEMORY {
                break;
            }
            m.order.pop_front();
            m.first_use.remove(&k);
        }
        if let Some(first) = m.first_use.get(&key).copied() {
            let since = now.duration_since(first).unwrap_or_default();
            if since > REPEAT_GRACE {
                return Err(format!(
                    "this signed request was already used {} ago; a signature is taken once (the SDK signs each call with a fresh Date)",
                    humantime::format_duration(Duration::from_secs(since.as_secs()))
                ));
            }
            return Ok(());
        }
        m.first_use.insert(key, now);
        m.order.push_back((key, until));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "NjQ4ZWY0NjE3YzQ3YzFhZGU0NzQ4ZjFjMmE3ZjU0ZDQ1MGYzYzE5Nw==";
    const DATE_STR: &str = "Wed, 25 Nov 2026 12:00:00 GMT";

    fn now() -> SystemTime {
        httpdate::parse_http_date(DATE_STR).unwrap()
    }

    /// The headers `PredictClient.generate_singaure` builds.
    fn signed(token: &str, name: &str, body: &[u8], date: &str) -> HeaderMap {
        let md5 = body_md5(body);
        let ct = "application/octet-stream";
        let mut h = HeaderMap::new();
        h.insert("content-md5", HeaderValue::from_str(&md5).unwrap());
        h.insert(DATE, HeaderValue::from_str(date).unwrap());
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        let auth = authorization(token, &string_to_sign(&md5, ct, date, name));
        h.insert(AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
        h
    }

    #[test]
    fn signature_matches_an_independent_hmac_sha1() {
        // The widely published HMAC-SHA1 example value.
        let a = authorization("key", "The quick brown fox jumps over the lazy dog");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.strip_prefix("EAS ").unwrap())
            .unwrap();
        assert_eq!(hex::encode(raw), "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        // The SDK's own computation (Python hmac/hashlib/base64, as in
        // `generate_singaure`) for this token, body, date and service.
        let body = br#"{"inputs":[]}"#;
        assert_eq!(body_md5(body), "82fbc877609b7e50d17ff4d495ae6fb5");
        let s = string_to_sign(&body_md5(body), "application/octet-stream", DATE_STR, "svc");
        assert_eq!(authorization(TOKEN, &s), "EAS MnoTA9lLgl1NRuDARtQrwgAgm8Y=");
        assert_eq!(
            string_to_sign("m", "application/octet-stream", DATE_STR, "svc"),
            "POST\nm\napplication/octet-stream\nWed, 25 Nov 2026 12:00:00 GMT\n/api/predict/svc"
        );
    }

    #[test]
    fn a_correctly_signed_request_passes() {
        let body = br#"{"inputs":[]}"#;
        let h = signed(TOKEN, "svc", body, DATE_STR);
        assert!(is_signed(&h));
        verify(&h, "svc", body, TOKEN, now(), &Replays::default()).unwrap();
        // Content-MD5 is optional: the server hashes the body itself.
        let mut h2 = h.clone();
        h2.remove("content-md5");
        verify(&h2, "svc", body, TOKEN, now(), &Replays::default()).unwrap();
    }

    #[test]
    fn wrong_token_or_service_is_refused() {
        let body = b"abc";
        let h = signed("another-token", "svc", body, DATE_STR);
        let e = verify(&h, "svc", body, TOKEN, now(), &Replays::default()).unwrap_err();
        assert!(matches!(e, ServingError::Unauthorized(_)));
        assert!(e.to_string().contains("wrong signature"), "{e}");
        let h = signed(TOKEN, "other", body, DATE_STR);
        assert!(verify(&h, "svc", body, TOKEN, now(), &Replays::default()).is_err());
    }

    #[test]
    fn tampered_body_or_md5_or_content_type_is_refused() {
        let body = b"the signed body";
        let h = signed(TOKEN, "svc", body, DATE_STR);
        // The body changed in transit, Content-MD5 kept.
        let e = verify(
            &h,
            "svc",
            b"another body",
            TOKEN,
            now(),
            &Replays::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ServingError::Unauthorized(_)));
        assert!(e.to_string().contains("Content-MD5"), "{e}");
        // Body and Content-MD5 both replaced: the signature no longer fits.
        let mut h2 = h.clone();
        let other = b"another body";
        h2.insert(
            "content-md5",
            HeaderValue::from_str(&body_md5(other)).unwrap(),
        );
        let e = verify(&h2, "svc", other, TOKEN, now(), &Replays::default()).unwrap_err();
        assert!(e.to_string().contains("wrong signature"), "{e}");
        // Without Content-MD5 a changed body still breaks the signature.
        let mut h3 = h.clone();
        h3.remove("content-md5");
        assert!(verify(&h3, "svc", other, TOKEN, now(), &Replays::default()).is_err());
        // The content type is signed too.
        let mut h4 = h.clone();
        h4.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(verify(&h4, "svc", body, TOKEN, now(), &Replays::default()).is_err());
        // Garbage instead of base64.
        let mut h5 = h.clone();
        h5.insert(AUTHORIZATION, HeaderValue::from_static("EAS !!!"));
        assert!(verify(&h5, "svc", body, TOKEN, now(), &Replays::default())
            .unwrap_err()
            .to_string()
            .contains("not base64"));
    }

    #[test]
    fn date_skew_is_tolerated_up_to_the_bound_and_refused_beyond() {
        let body = b"x";
        let at = |offset_s: i64| {
            let t = if offset_s >= 0 {
                now() + Duration::from_secs(offset_s as u64)
            } else {
                now() - Duration::from_secs((-offset_s) as u64)
            };
            httpdate::fmt_http_date(t)
        };
        let bound = MAX_SKEW.as_secs() as i64;
        // A client at UTC+14 or UTC-12 labelling local time as GMT.
        for off in [14 * 3600, -12 * 3600, bound, -bound, 0] {
            let d = at(off);
            verify(
                &signed(TOKEN, "svc", body, &d),
                "svc",
                body,
                TOKEN,
                now(),
                &Replays::default(),
            )
            .unwrap_or_else(|e| panic!("offset {off}: {e}"));
        }
        for off in [bound + 1, -bound - 1, 15 * 3600, -15 * 3600, 2 * 86400] {
            let d = at(off);
            let e = verify(
                &signed(TOKEN, "svc", body, &d),
                "svc",
                body,
                TOKEN,
                now(),
                &Replays::default(),
            )
            .unwrap_err();
            assert!(matches!(e, ServingError::Unauthorized(_)));
            let e = e.to_string();
            assert!(e.contains("Date header") && e.contains(&d), "{e}");
        }
        let mut h = signed(TOKEN, "svc", body, DATE_STR);
        h.remove(DATE);
        assert!(verify(&h, "svc", body, TOKEN, now(), &Replays::default())
            .unwrap_err()
            .to_string()
            .contains("needs a Date header"));
        h.insert(DATE, HeaderValue::from_static("yesterday"));
        assert!(verify(&h, "svc", body, TOKEN, now(), &Replays::default())
            .unwrap_err()
            .to_string()
            .contains("not an HTTP date"));
    }

    #[test]
    fn a_signed_request_is_taken_once_bar_a_repeat_within_its_second() {
        let body = b"x";
        let h = signed(TOKEN, "svc", body, DATE_STR);
        let replays = Replays::default();
        let at = |s: u64| now() + Duration::from_secs(s);
        verify(&h, "svc", body, TOKEN, now(), &replays).unwrap();
        // The same body sent again within the second it was signed.
        verify(&h, "svc", body, TOKEN, at(1), &replays).unwrap();
        let e = verify(&h, "svc", body, TOKEN, at(60), &replays).unwrap_err();
        assert!(e.to_string().contains("already used 1m ago"), "{e}");
        // A fresh Date signs anew.
        let later = httpdate::fmt_http_date(at(60));
        verify(
            &signed(TOKEN, "svc", body, &later),
            "svc",
            body,
            TOKEN,
            at(60),
            &replays,
        )
        .unwrap();
        // A refused signature is not remembered.
        let wrong = signed("another-token", "svc", body, DATE_STR);
        let fresh = Replays::default();
        assert!(verify(&wrong, "svc", body, TOKEN, now(), &fresh).is_err());
        assert!(fresh.seen.lock().unwrap().first_use.is_empty());
        // Expired entries are forgotten as new ones come.
        let end = now() + MAX_SKEW + Duration::from_secs(1);
        let d = httpdate::fmt_http_date(end);
        verify(
            &signed(TOKEN, "svc", body, &d),
            "svc",
            body,
            TOKEN,
            end,
            &replays,
        )
        .unwrap();
        assert_eq!(replays.seen.lock().unwrap().first_use.len(), 2);
    }

    #[test]
    fn headers_alone_check_the_signature_when_content_md5_is_sent() {
        let body = b"abc";
        let h = signed(TOKEN, "svc", body, DATE_STR);
        verify_headers(&h, "svc", TOKEN, now()).unwrap();
        assert!(verify_headers(&h, "svc", "another-token", now()).is_err());
        let mut h2 = h.clone();
        h2.remove("content-md5");
        assert!(verify_headers(&h2, "svc", TOKEN, now())
            .unwrap_err()
            .to_string()
            .contains("Content-MD5"));
    }

    #[test]
    fn a_raw_token_that_starts_with_the_scheme_still_works() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("EAS my-own-token"));
        assert!(is_signed(&h));
        verify(
            &h,
            "svc",
            b"",
            "EAS my-own-token",
            now(),
            &Replays::default(),
        )
        .unwrap();
    }
}
