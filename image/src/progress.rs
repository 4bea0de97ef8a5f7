//! One spinner line per slow step, with its duration when done.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Numbered steps (`[2/5] building rootfs.sqsh`) and their timings.
pub struct Progress {
    total: usize,
    current: usize,
    timings: Vec<(String, Duration)>,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            current: 0,
            timings: Vec::new(),
        }
    }

    /// Runs `f` under a spinner labelled `label`, recording its duration.
    pub fn step<T, E>(&mut self, label: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.current += 1;
        let line = format!("[{}/{}] {label}", self.current, self.total);
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(line.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        // Without a terminal indicatif draws nothing: say what runs anyway,
        // so CI logs show where a long build spends its time.
        let plain = bar.is_hidden();
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        let status = if result.is_ok() { "done" } else { "FAILED" };
        let summary = format!("{line} … {status} in {:.1}s", took.as_secs_f64());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("static template"));
        bar.finish_with_message(summary.clone());
        if plain {
            eprintln!("{summary}");
        }
        self.timings.push((label.to_owned(), took));
        result
    }

    pub fn into_timings(self) -> Vec<(String, Duration)> {
        self.timings
    }
}
