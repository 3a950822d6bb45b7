//! CPU time of this process and of a watched one (the apiserver), from /proc, so a run can
//! show that the generator is not the bottleneck.

use std::time::Duration;

use serde::Serialize;

/// Linux reports /proc times in USER_HZ, which is 100 on every architecture it exports to
/// user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of `pid` (`self` for this process), all threads.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<Duration> {
    // The command name is parenthesised and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; fields[0] here is field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / TICKS_PER_SECOND,
    ))
}

/// CPU spent by the generator, and by the watched process, while the arrivals ran.
#[derive(Clone, Debug, Serialize)]
pub struct CpuReport {
    pub generator_s: f64,
    /// Generator CPU per thousand requests sent, in milliseconds.
    pub generator_ms_per_1000_requests: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched_s: Option<f64>,
    /// Generator CPU over watched-process CPU: below 0.25 means the generator is cheap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_to_watched: Option<f64>,
}

/// CPU readings at the start of the load.
pub struct CpuMeter {
    watched_pid: Option<u32>,
    own_start: Option<Duration>,
    watched_start: Option<Duration>,
}

impl CpuMeter {
    pub fn start(watched_pid: Option<u32>) -> Self {
        CpuMeter {
            watched_pid,
            own_start: cpu_time("self"),
            watched_start: watched_pid.and_then(|p| cpu_time(&p.to_string())),
        }
    }

    pub fn finish(&self, requests_sent: u64) -> Option<CpuReport> {
        let own = cpu_time("self")?
            .checked_sub(self.own_start?)?
            .as_secs_f64();
        let watched = self
            .watched_pid
            .zip(self.watched_start)
            .and_then(|(p, start)| cpu_time(&p.to_string())?.checked_sub(start))
            .map(|d| d.as_secs_f64());
        Some(CpuReport {
            generator_s: own,
            generator_ms_per_1000_requests: if requests_sent > 0 {
                own * 1e6 / requests_sent as f64
            } else {
                0.0
            },
            watched_pid: self.watched_pid,
            watched_s: watched,
            generator_to_watched: watched.filter(|w| *w > 0.0).map(|w| own / w),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "2088 (kube apiserver) S 1 2 3 4 5 6 7 8 9 10 1234 567 0 0 20 0 12 0 79768";
        assert_eq!(parse_stat(stat), Some(Duration::from_secs_f64(18.01)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        let meter = CpuMeter::start(Some(std::process::id()));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let r = meter.finish(1000).unwrap();
        assert!(r.generator_s >= 0.0);
        assert_eq!(r.watched_pid, Some(std::process::id()));
        assert!(r.watched_s.is_some());
    }
}
