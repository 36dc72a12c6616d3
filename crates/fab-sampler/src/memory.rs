//! A lower bound on a run's memory, checked before anything is allocated or written, so that a
//! size that cannot fit (a batch of 10⁹, a buffer of 10¹⁰) is refused in one line naming the key
//! instead of aborting with "memory allocation failed" after the run directory was created.
//!
//! Each family lists the arrays its configuration makes unavoidable (samples, hidden activations
//! kept for the backward pass, buffers, evaluation sets). The sum of those is a lower bound: a run
//! refused by it could not have run here, and a run accepted may still need more (allocator
//! overhead, temporaries). `FAB_MEMORY_CHECK=off` skips the check.

use crate::{Error, Result};

/// Environment variable that turns the check off when set to `off` (or `0`).
pub const MEMORY_CHECK_ENV: &str = "FAB_MEMORY_CHECK";

/// Bytes of memory a run needs at least, by named part.
///
/// Sizes are `f64` so that absurd configurations (10⁹ × 10⁹ elements) cannot overflow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryEstimate {
    parts: Vec<(String, f64)>,
}

impl MemoryEstimate {
    /// An empty estimate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` for `what` (a description naming the config key that sets the size).
    pub fn add(&mut self, what: impl Into<String>, bytes: f64) -> &mut Self {
        self.parts.push((what.into(), bytes.max(0.0)));
        self
    }

    /// Adds the largest of alternatives that never coexist (e.g. a training step and the
    /// evaluations that run between steps); the first wins ties. Nothing for no alternatives.
    pub fn add_largest(&mut self, alternatives: impl IntoIterator<Item = (String, f64)>) -> &mut Self {
        let best = alternatives.into_iter().reduce(|a, b| if b.1 > a.1 { b } else { a });
        match best {
            Some((what, bytes)) => self.add(what, bytes),
            None => self,
        }
    }

    /// The parts, in the order added.
    pub fn parts(&self) -> &[(String, f64)] {
        &self.parts
    }

    /// Total bytes.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|p| p.1).sum()
    }

    /// The largest part.
    pub fn largest(&self) -> Option<&(String, f64)> {
        self.parts.iter().max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Refuses the run when the estimate exceeds `available` bytes (no check when `None`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the total, the largest part and what is available.
    pub fn check(&self, available: Option<f64>) -> Result<()> {
        let Some(avail) = available else { return Ok(()) };
        let total = self.total();
        if total <= avail {
            return Ok(());
        }
        let (what, bytes) = self.largest().cloned().unwrap_or_default();
        Err(Error::Config(format!(
            "this run needs at least {} of memory but {} is available; the largest part is {what} ({}): make it smaller \
             (or set {MEMORY_CHECK_ENV}=off to try anyway)",
            human_bytes(total),
            human_bytes(avail),
            human_bytes(bytes)
        )))
    }

    /// [`check`](Self::check) against [`available_memory`], unless `FAB_MEMORY_CHECK=off`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn check_here(&self) -> Result<()> {
        if std::env::var(MEMORY_CHECK_ENV).is_ok_and(|v| v == "off" || v == "0") {
            return Ok(());
        }
        self.check(available_memory())
    }
}

/// Memory this process may still allocate: `MemAvailable` of `/proc/meminfo`, lowered to the
/// room left under a cgroup-v2 limit when there is one. `None` where neither can be read (the
/// check is then skipped).
pub fn available_memory() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| {
            let kb: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024.0)
        })
    });
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<f64>().ok());
    let cgroup = match (read("/sys/fs/cgroup/memory.max"), read("/sys/fs/cgroup/memory.current")) {
        (Some(max), Some(cur)) => Some((max - cur).max(0.0)),
        _ => None,
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `1.5 GiB`, `300.0 MiB`, `12 B`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024.0 {
        return format!("{b:.0} B");
    }
    let mut v = b / 1024.0;
    for (i, u) in UNITS.iter().enumerate() {
        if v < 1024.0 || i + 1 == UNITS.len() {
            return format!("{v:.1} {u}");
        }
        v /= 1024.0;
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_available_and_names_the_largest_part() {
        let mut e = MemoryEstimate::new();
        e.add("train.batch_size = 1000000000 (samples)", 16e9).add("buffer.max_len = 10 (points)", 1e3);
        assert!(e.check(Some(32e9)).is_ok());
        assert!(e.check(None).is_ok());
        let msg = e.check(Some(8e9)).unwrap_err().to_string();
        assert!(msg.contains("train.batch_size = 1000000000"), "{msg}");
        assert!(msg.contains("14.9 GiB") && msg.contains("7.5 GiB"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn larger_alternative_and_huge_sizes() {
        let mut e = MemoryEstimate::new();
        e.add_largest([("a".into(), 1.0), ("b".into(), 3.0), ("c".into(), 2.0)]);
        assert_eq!(e.parts(), &[("b".to_string(), 3.0)]);
        e.add_largest(std::iter::empty());
        assert_eq!(e.parts().len(), 1);
        e.add("huge", 1e18 * 1e18);
        assert!(e.total().is_finite() && e.check(Some(1e12)).is_err());
        assert_eq!(human_bytes(12.0), "12 B");
        assert_eq!(human_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
    }

    #[test]
    fn this_machine_reports_some_memory() {
        if cfg!(target_os = "linux") {
            let a = available_memory().expect("MemAvailable");
            assert!(a > 1e6, "{a}");
        }
    }
}
