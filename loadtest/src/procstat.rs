//! Resource use of the proxy's processes, read from Linux's `/proc`: resident memory
//! (`VmRSS`), its peak (`VmHWM`) and CPU time (`utime + stime` of `/proc/<pid>/stat`).
//! Several pids are summed, for proxies that run a process per worker (squid).

/// Memory and CPU of a set of processes at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub cpu_seconds: f64,
}

/// Why `/proc` could not be read for a pid.
#[derive(Debug, thiserror::Error)]
#[error("/proc/{pid}: {reason}")]
pub struct ProcError {
    pid: u32,
    reason: String,
}

/// Reads and sums the usage of `pids`.
pub fn usage(pids: &[u32]) -> Result<Usage, ProcError> {
    let mut total = Usage::default();
    for &pid in pids {
        let err = |reason: String| ProcError { pid, reason };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| err(e.to_string()))?;
        total.rss_kib += status_kib(&status, "VmRSS:").ok_or_else(|| err("no VmRSS".into()))?;
        total.peak_rss_kib +=
            status_kib(&status, "VmHWM:").ok_or_else(|| err("no VmHWM".into()))?;
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| err(e.to_string()))?;
        total.cpu_seconds += cpu_ticks(&stat).ok_or_else(|| err("unreadable stat".into()))? as f64
            / clock_ticks_per_second();
    }
    Ok(total)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// utime + stime (fields 14 and 15), counted after the command name, which may itself
/// contain spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn our_own_process_has_memory_and_cpu() {
        let mut spin = 0u64;
        for i in 0..2_000_000u64 {
            spin = spin.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(spin);
        let u = usage(&[std::process::id()]).unwrap();
        assert!(u.rss_kib > 0 && u.peak_rss_kib >= u.rss_kib, "{u:?}");
        assert!(usage(&[u32::MAX]).is_err());
    }
}
