//! Measurements: the hub process's CPU and memory, latency summaries, and the report every scenario prints.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// CPU time and resident memory of a process, read from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// Samples processes `pids`, summed; `None` when one cannot be read (none given, or another machine).
pub fn sample(pids: &[u32]) -> Option<ProcessSample> {
    let samples: Option<Vec<ProcessSample>> = pids.iter().map(|pid| sample_one(*pid)).collect();
    let samples = samples.filter(|s| !s.is_empty())?;
    Some(ProcessSample {
        cpu_s: samples.iter().map(|s| s.cpu_s).sum(),
        rss_kib: samples.iter().map(|s| s.rss_kib).sum(),
    })
}

fn sample_one(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ProcessSample { cpu_s: ticks / 100.0, rss_kib })
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
    /// Expected deliveries that never arrived.
    pub loss: u64,
    pub duplicates: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s_per_100k_deliveries: Option<f64>,
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
                self.server_cpu_s_per_100k_deliveries = Some(cpu * 100_000.0 / deliveries as f64);
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
        parts.push(format!("loss {} dup {}", self.loss, self.duplicates));
        if let Some(c) = self.server_cpu_s_per_100k_deliveries {
            parts.push(format!("server CPU {:.3} s/100k deliveries", c));
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
