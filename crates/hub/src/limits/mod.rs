//! Hub-wide limits: connections (in all and per token subject), long-poll waiters, and publish rates; [`rate`]: the
//! token bucket they and the connections' own rates use.

pub mod rate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rate::TokenBucket;

/// Counts connections in all and per subject; a [`ConnectionPermit`] is held for a connection's lifetime.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_subject: usize,
    counts: Mutex<(usize, HashMap<String, usize>)>,
}

/// Releases its connection slot when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    /// `None` for a connection without a token subject, which counts toward the hub-wide bound only.
    subject: Option<String>,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_subject: usize) -> Self {
        Self { max_total, max_per_subject, counts: Mutex::new((0, HashMap::new())) }
    }

    /// Connections open now (each holds a permit for its whole life).
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// A slot for one more connection (of `subject`, when the token names one), or `None` past a limit.
    pub fn acquire(self: &Arc<Self>, subject: Option<&str>) -> Option<ConnectionPermit> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_subject) = &mut *counts;
        let mine = subject.map_or(0, |s| per_subject.get(s).copied().unwrap_or(0));
        if *total >= self.max_total || mine >= self.max_per_subject {
            return None;
        }
        *total += 1;
        if let Some(subject) = subject {
            per_subject.insert(subject.to_owned(), mine + 1);
        }
        Some(ConnectionPermit { limiter: self.clone(), subject: subject.map(str::to_owned) })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_subject) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(subject) = &self.subject
            && let Some(n) = per_subject.get_mut(subject)
        {
            *n -= 1;
            if *n == 0 {
                per_subject.remove(subject);
            }
        }
    }
}

/// A plain counted limit (long-poll waiters).
#[derive(Debug)]
pub struct CountLimiter {
    max: usize,
    current: AtomicUsize,
}

/// Releases its slot when dropped.
#[derive(Debug)]
pub struct CountPermit(Arc<CountLimiter>);

impl CountLimiter {
    pub fn new(max: usize) -> Self {
        Self { max, current: AtomicUsize::new(0) }
    }

    pub fn acquire(self: &Arc<Self>) -> Option<CountPermit> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| CountPermit(self.clone()))
    }
}

impl Drop for CountPermit {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Token buckets per key (token subject, or peer address without a token).
#[derive(Debug)]
pub struct KeyedRate {
    rate: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Keys kept before idle buckets are forgotten.
const MAX_KEYS: usize = 10_000;

impl KeyedRate {
    pub fn new(per_second: u32) -> Self {
        Self { rate: f64::from(per_second), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; `false` when its rate is exceeded.
    pub fn take(&self, key: &str) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| !b.is_full());
        }
        buckets.entry(key.to_owned()).or_insert_with(|| TokenBucket::new(self.rate, self.rate * 2.0)).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_permits_enforce_both_limits_and_release_on_drop() {
        let limiter = Arc::new(ConnectionLimiter::new(3, 2));
        let a1 = limiter.acquire(Some("a")).unwrap();
        let _a2 = limiter.acquire(Some("a")).unwrap();
        assert!(limiter.acquire(Some("a")).is_none(), "per subject");
        let _b1 = limiter.acquire(Some("b")).unwrap();
        assert!(limiter.acquire(Some("c")).is_none(), "in all");
        assert!(limiter.acquire(None).is_none(), "tokenless connections count toward the hub-wide bound");
        drop(a1);
        assert!(limiter.acquire(Some("a")).is_some());
    }

    #[test]
    fn connections_without_a_subject_are_bounded_only_hub_wide() {
        let limiter = Arc::new(ConnectionLimiter::new(3, 1));
        let held: Vec<_> = (0..3).map(|_| limiter.acquire(None).unwrap()).collect();
        assert!(limiter.acquire(None).is_none());
        drop(held);
        assert!(limiter.counts.lock().unwrap().1.is_empty(), "no per-subject entry for tokenless connections");
    }

    #[test]
    fn count_permits_are_released_on_drop() {
        let limiter = Arc::new(CountLimiter::new(1));
        let p = limiter.acquire().unwrap();
        assert!(limiter.acquire().is_none());
        drop(p);
        assert!(limiter.acquire().is_some());
    }
}
