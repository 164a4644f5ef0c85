//! A sampled log of predictions per service — the request, the answer and
//! how it went — for the console's request viewer. Kept in memory on the
//! node that answered: the last [`KEEP`] per service, each body cut to
//! [`PREVIEW`] bytes, so a busy service costs a bounded amount. A request
//! is kept when the sample rate draws it (`--request-log-rate`) and always
//! when it failed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use shared::api::RequestSample;

/// Requests kept per service.
pub const KEEP: usize = 100;
/// Bytes of each body kept.
pub const PREVIEW: usize = 4096;

static RATE: AtomicU64 = AtomicU64::new(0);
static LOG: LazyLock<Mutex<HashMap<String, VecDeque<RequestSample>>>> =
    LazyLock::new(Default::default);

/// Sets the share of requests kept (0 to 1).
pub fn set_rate(rate: f64) {
    RATE.store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

/// Whether to keep the next request (errors are kept regardless).
pub fn draw() -> bool {
    let rate = f64::from_bits(RATE.load(Ordering::Relaxed));
    rate > 0.0 && (rate >= 1.0 || rand::random::<f64>() < rate)
}

/// What a body looks like in the log: its text, cut to [`PREVIEW`] bytes
/// (at a character boundary), or its size when it is not text.
pub fn preview(body: &[u8]) -> String {
    let cut = &body[..body.len().min(PREVIEW)];
    let text = match std::str::from_utf8(cut) {
        Ok(t) => t,
        // Cut inside a character: keep what is whole.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            std::str::from_utf8(&cut[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return format!("({} bytes, not text)", body.len()),
    };
    if text.len() < body.len() {
        format!("{text}… ({} bytes in all)", body.len())
    } else {
        text.to_string()
    }
}

/// Keeps one request of `service`.
pub fn record(service: &str, sample: RequestSample) {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    let kept = log.entry(service.to_string()).or_default();
    if kept.len() == KEEP {
        kept.pop_front();
    }
    kept.push_back(sample);
}

/// The kept requests of `service`, newest first.
pub fn of(service: &str) -> Vec<RequestSample> {
    let log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    log.get(service)
        .map(|k| k.iter().rev().cloned().collect())
        .unwrap_or_default()
}

/// Forgets a deleted service.
pub fn forget(service: &str) {
    LOG.lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(service);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16) -> RequestSample {
        RequestSample {
            at: String::new(),
            protocol: "eas".into(),
            version: Some(1),
            status,
            latency_ms: 1.0,
            trace_id: None,
            request: String::new(),
            response: String::new(),
        }
    }

    #[test]
    fn a_service_keeps_its_last_requests_newest_first() {
        for i in 0..(KEEP + 5) {
            record("svc_keep", sample(200 + (i % 2) as u16));
        }
        let kept = of("svc_keep");
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].status, 200 + ((KEEP + 4) % 2) as u16);
        forget("svc_keep");
        assert!(of("svc_keep").is_empty());
    }

    #[test]
    fn bodies_are_cut_and_binary_is_named_by_size() {
        assert_eq!(preview(b"{\"a\":1}"), "{\"a\":1}");
        let long = "é".repeat(PREVIEW);
        let p = preview(long.as_bytes());
        assert!(
            p.ends_with(&format!("… ({} bytes in all)", long.len())),
            "{}",
            &p[p.len() - 40..]
        );
        assert!(p.len() <= PREVIEW + 40);
        assert_eq!(preview(&[0xff, 0x00, 0x01]), "(3 bytes, not text)");
    }
}
