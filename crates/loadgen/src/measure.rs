//! Measurements: the hub process's CPU and memory, latency summaries, and the report every scenario prints.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// CPU time and resident memory of a process, read from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessSample {
    pub cpu_s: f64,
    /// The part of `cpu_s` spent in the kernel (system calls, and the softirq work charged to them: on loopback a
    /// `send` also runs the receiver's TCP processing).
    pub sys_s: f64,
    pub rss_kib: u64,
}

/// Samples processes `pids`, summed; `None` when one cannot be read (none given, or another machine).
pub fn sample(pids: &[u32]) -> Option<ProcessSample> {
    let samples: Option<Vec<ProcessSample>> = pids.iter().map(|pid| sample_one(*pid)).collect();
    let samples = samples.filter(|s| !s.is_empty())?;
    Some(ProcessSample {
        cpu_s: samples.iter().map(|s| s.cpu_s).sum(),
        sys_s: samples.iter().map(|s| s.sys_s).sum(),
        rss_kib: samples.iter().map(|s| s.rss_kib).sum(),
    })
}

fn sample_one(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let sys: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ProcessSample { cpu_s: (user + sys) / 100.0, sys_s: sys / 100.0, rss_kib })
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    busy: u64,
    steal: u64,
    total: u64,
}

impl MachineTicks {
    /// Reads `/proc/stat`; `None` where there is none.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let fields: Vec<u64> =
            stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is already counted in user).
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else { return None };
        let busy = user + nice + system + irq + softirq;
        Some(Self { busy, steal, total: busy + idle + iowait + steal })
    }

    /// The shares of the machine's CPU time since `earlier` that were busy and that the hypervisor took (steal).
    pub fn since(&self, earlier: &Self) -> MachineShare {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        MachineShare {
            busy: self.busy.saturating_sub(earlier.busy) as f64 / total,
            steal: self.steal.saturating_sub(earlier.steal) as f64 / total,
        }
    }
}

/// How the machine's CPUs spent an interval: busy (any process or the kernel) and stolen by the hypervisor.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MachineShare {
    pub busy: f64,
    pub steal: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A histogram of latencies in microseconds, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// The first bucket of [`buckets`]: latencies below 100 µs.
const FIRST_BUCKET_US: u64 = 100;
/// Each bucket of [`buckets`] ends 2 % above the one before it.
const BUCKET_GROWTH: f64 = 1.02;

/// A histogram of latencies in µs as `[highest value, count]` pairs of buckets that grow by 2 %, empty ones left
/// out: small enough for a line a minute, and the histograms of several lines add up, so a percentile over many
/// minutes is read from all their deliveries (within 2 %), not from each minute's own percentile.
pub fn buckets(histogram: &Histogram<u64>) -> Vec<[u64; 2]> {
    histogram
        .iter_log(FIRST_BUCKET_US, BUCKET_GROWTH)
        .filter(|step| step.count_since_last_iteration() > 0)
        .map(|step| [step.value_iterated_to(), step.count_since_last_iteration()])
        .collect()
}

pub fn latency(histogram: &Histogram<u64>) -> Latency {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Latency { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), p999: ms(0.999), max: histogram.max() as f64 / 1000.0 }
}

/// What a scenario measured. Fields that do not apply stay `None` and are left out of the JSON line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub params: serde_json::Value,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connects_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// The latency of each event's first delivery, the median over events: what a latency is made of before the
    /// fan-out's spread over the subscribers (`latency_ms.p50` less this is the median subscriber's wait after the
    /// first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_arrival_ms: Option<f64>,
    /// Expected deliveries that never arrived.
    pub loss: u64,
    pub duplicates: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s_per_100k_deliveries: Option<f64>,
    /// The kernel's part of `server_cpu_s_per_100k_deliveries`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_sys_s_per_100k_deliveries: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_per_connection_kib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Report {
    pub fn new(scenario: &str, params: serde_json::Value, elapsed: Duration) -> Self {
        Self { scenario: scenario.to_owned(), params, elapsed_s: elapsed.as_secs_f64(), ..Self::default() }
    }

    /// Records the hub's CPU spent between two samples, and its memory at the end.
    pub fn server(&mut self, before: Option<ProcessSample>, after: Option<ProcessSample>) {
        if let (Some(before), Some(after)) = (before, after) {
            let cpu = after.cpu_s - before.cpu_s;
            self.server_cpu_s = Some(cpu);
            self.server_rss_kib = Some(after.rss_kib);
            if let Some(deliveries) = self.deliveries.filter(|d| *d > 0) {
                let per_100k = 100_000.0 / deliveries as f64;
                self.server_cpu_s_per_100k_deliveries = Some(cpu * per_100k);
                self.server_sys_s_per_100k_deliveries = Some((after.sys_s - before.sys_s) * per_100k);
            }
        }
    }

    /// One line a person reads.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("{} in {:.2} s", self.scenario, self.elapsed_s)];
        if let Some(d) = self.deliveries_per_s {
            parts.push(format!("{:.0} deliveries/s", d));
        }
        if let Some(e) = self.events_per_s {
            parts.push(format!("{:.0} events/s", e));
        }
        if let Some(c) = self.connects_per_s {
            parts.push(format!("{:.0} connects/s", c));
        }
        if let Some(l) = self.latency_ms {
            parts.push(format!(
                "latency p50 {:.2} / p90 {:.2} / p99 {:.2} / p999 {:.2} / max {:.2} ms",
                l.p50, l.p90, l.p99, l.p999, l.max
            ));
        }
        if let Some(first) = self.first_arrival_ms {
            parts.push(format!("first arrival {first:.2} ms"));
        }
        parts.push(format!("loss {} dup {}", self.loss, self.duplicates));
        if let Some(c) = self.server_cpu_s_per_100k_deliveries {
            let sys = self.server_sys_s_per_100k_deliveries.unwrap_or_default();
            parts.push(format!("server CPU {c:.3} s/100k deliveries ({sys:.3} in the kernel)"));
        } else if let Some(c) = self.server_cpu_s {
            parts.push(format!("server CPU {:.2} s", c));
        }
        if let Some(r) = self.server_rss_per_connection_kib {
            parts.push(format!("{:.2} KiB/connection", r));
        } else if let Some(r) = self.server_rss_kib {
            parts.push(format!("server RSS {} MiB", r / 1024));
        }
        if let Some(note) = &self.note {
            parts.push(note.clone());
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_every_recorded_value_once_each_at_most_2_percent_above_it() {
        let mut histogram = histogram();
        for us in [5, 100, 101, 5_000, 5_050, 120_000] {
            histogram.record(us).unwrap();
        }
        let buckets = buckets(&histogram);
        assert_eq!(buckets.iter().map(|[_, count]| count).sum::<u64>(), 6, "{buckets:?}");
        assert_eq!(buckets[0], [99, 1], "the first bucket holds what is below 100 µs");
        for us in [101, 5_000, 5_050, 120_000] {
            let [high, _] = buckets.iter().find(|[high, _]| *high >= us).unwrap();
            assert!(*high as f64 <= us as f64 * 1.021, "{us} µs fell in the bucket up to {high}: {buckets:?}");
        }
    }

    #[test]
    fn the_machine_share_counts_busy_and_stolen_time_against_all_of_it() {
        let before = MachineTicks::parse("cpu  100 0 50 800 10 0 5 20 0 0\ncpu0 50 0 25 400 5 0 2 10 0 0\n").unwrap();
        // 60 user, 20 system, 10 softirq, 80 idle, 30 stolen: 200 ticks in all.
        let after = MachineTicks::parse("cpu  160 0 70 880 10 0 15 50 0 0\n").unwrap();
        let share = after.since(&before);
        assert!((share.busy - 0.45).abs() < 1e-9, "{share:?}");
        assert!((share.steal - 0.15).abs() < 1e-9, "{share:?}");
    }

    #[test]
    fn a_stat_line_that_is_not_the_machine_total_is_refused() {
        assert!(MachineTicks::parse("cpu0 1 2 3 4 5 6 7 8\n").is_none());
        assert!(MachineTicks::parse("cpu  1 2 3\n").is_none());
        assert!(MachineTicks::parse("").is_none());
    }
}
