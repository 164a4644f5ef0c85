//! Requests answered per service on this node since it started, for the
//! autoscaler's `qps`: a counter per service, read as a rate over the
//! autoscaler's period. Counted where the engine call is made, so a
//! request forwarded to another node counts once, there.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

static ANSWERED: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

/// One request of `service` answered by an instance on this node.
pub fn answered(service: &str) {
    let mut m = ANSWERED.lock().unwrap_or_else(|p| p.into_inner());
    match m.get_mut(service) {
        Some(n) => *n += 1,
        None => {
            m.insert(service.to_string(), 1);
        }
    }
}

/// Every service's count so far.
pub fn counts() -> HashMap<String, u64> {
    ANSWERED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// CPU time (user + system) a process has used, in seconds, from
/// `/proc/PID/stat`; `None` when it is gone or unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_service() {
        let before = counts().get("load_test_svc").copied().unwrap_or(0);
        for _ in 0..3 {
            answered("load_test_svc");
        }
        assert_eq!(counts()["load_test_svc"], before + 3);
    }

    #[test]
    fn this_process_has_used_cpu_and_a_missing_one_none() {
        let me = std::process::id();
        let t0 = cpu_seconds(me).expect("own stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(me).expect("own stat") > t0);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
