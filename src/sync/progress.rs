//! Live progress: a bar per source on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::RunCounts;

/// Log a plain progress line every this many pages when there is no terminal.
const PAGES_PER_LOG_LINE: u64 = 50;

#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub fn auto() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::bars()
        } else {
            Progress::quiet()
        }
    }

    pub fn bars() -> Progress {
        Progress {
            bars: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn quiet() -> Progress {
        Progress { bars: None }
    }

    pub fn source(&self, name: &str) -> SourceProgress {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>24} {bar:30} {pos:>8}/{len:8} records {per_sec:>12} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar
        });
        SourceProgress {
            name: Arc::from(name),
            bar,
            pages: Arc::default(),
        }
    }
}

#[derive(Clone)]
pub struct SourceProgress {
    name: Arc<str>,
    bar: Option<ProgressBar>,
    pages: Arc<AtomicU64>,
}

impl SourceProgress {
    pub fn page(&self, records: u64, total_records: Option<u64>) {
        let pages = self.pages.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => {
                if let Some(total) = total_records {
                    bar.set_length(total.max(bar.position() + records));
                }
                bar.inc(records);
            }
            None if pages.is_multiple_of(PAGES_PER_LOG_LINE) => {
                tracing::info!(source = %self.name, pages, "reading");
            }
            None => {}
        }
    }

    pub fn finish_ok(&self, counts: &RunCounts) {
        if let Some(bar) = &self.bar {
            bar.set_length(bar.position());
            bar.finish_with_message(format!(
                "done, {} new, {} changed",
                counts.records.inserted, counts.records.updated
            ));
        }
    }

    pub fn finish_failed(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message("failed");
        }
    }
}
