//! `--timings`: where the time of one run went, by phase (names only), on stderr.

#![allow(
    clippy::print_stderr,
    reason = "--timings output goes to stderr by design"
)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Timings {
    started: Instant,
    phases: Mutex<Vec<(String, Duration)>>,
}

impl Timings {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            phases: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, phase: String, took: Duration) {
        self.phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((phase, took));
    }

    /// Prints the phases and the total so far.
    pub fn print(&self, json: bool) {
        let phases = self
            .phases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = self.started.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if json {
            let list: Vec<_> = phases
                .iter()
                .map(|(p, d)| serde_json::json!({"phase": p, "ms": ms(*d)}))
                .collect();
            eprintln!(
                "{}",
                serde_json::json!({"timings": list, "total_ms": ms(total)})
            );
        } else {
            for (phase, took) in phases.iter() {
                eprintln!("kvrun: timing: {:>8.1} ms  {phase}", ms(*took));
            }
            eprintln!("kvrun: timing: {:>8.1} ms  total until exec", ms(total));
        }
    }
}
