//! KServe's binary tensor extension: a JSON header of the length the
//! `Inference-Header-Content-Length` header says, then raw tensor bytes.
//! The first two input bytes pick that length (and whether the body is
//! said to be gzip), the rest is the body.
#![no_main]
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[len_lo, flags], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    let json_len = if body.is_empty() {
        0
    } else {
        (usize::from(len_lo) | usize::from(flags & 0x0f) << 8) % (body.len() + 1)
    };
    headers.insert(
        "inference-header-content-length",
        HeaderValue::from(json_len as u64),
    );
    if flags & 0x10 != 0 {
        headers.insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    let sig = whetstone_fuzz::signature();
    let _ = backend::serving::kserve::binary::parse(&headers, body, &sig);
});
