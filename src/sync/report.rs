//! The summary table printed after a run.

use std::fmt::Write;

use super::{RunReport, RunStatus};

pub fn summary_table(report: &RunReport) -> String {
    let outcomes = &report.sources;
    let headers = [
        "source",
        "kind",
        "status",
        "pages",
        "requests",
        "records",
        "new",
        "changed",
        "unchanged",
        "deleted",
        "errors",
        "time",
    ];
    let rows: Vec<[String; 12]> = outcomes
        .iter()
        .map(|o| {
            let c = &o.counts;
            [
                o.source.clone(),
                o.kind.to_string(),
                o.status.as_str().to_string(),
                c.pages.to_string(),
                c.requests.to_string(),
                c.records_seen.to_string(),
                c.records.inserted.to_string(),
                c.records.updated.to_string(),
                c.records.unchanged.to_string(),
                c.deleted.to_string(),
                c.errors.to_string(),
                format!("{:.2}s", o.elapsed.as_secs_f64()),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            if i < 3 {
                let _ = write!(out, "{sep}{cell:<w$}");
            } else {
                let _ = write!(out, "{sep}{cell:>w$}");
            }
        }
        out.push('\n');
    };
    line(&mut out, &headers.map(String::from));
    for row in &rows {
        line(&mut out, row);
    }
    for o in outcomes.iter().filter(|o| o.status != RunStatus::Succeeded) {
        let _ = writeln!(
            out,
            "{} {}: {}",
            o.source,
            o.status.as_str(),
            o.error.as_deref().unwrap_or("unknown error")
        );
    }
    match &report.link {
        Ok(l) if l.queued > 0 => {
            let _ = writeln!(
                out,
                "linking ({}): {} changed records; {} records linked, {} links written, {} removed; {} persons written, {} removed ({:.2}s)",
                if l.full {
                    "all records"
                } else {
                    "their neighbourhood"
                },
                l.queued,
                l.records_linked,
                l.links_written,
                l.links_removed,
                l.persons_written,
                l.persons_removed,
                l.millis as f64 / 1000.0
            );
        }
        Ok(_) => out.push_str("linking: nothing changed\n"),
        Err(e) => {
            let _ = writeln!(out, "linking FAILED: {e}");
        }
    }
    out
}
