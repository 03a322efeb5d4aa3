//! The pagination driver shared by every source: numbered pages (fetched concurrently, in
//! order, once the page count is known) and cursors (inherently sequential), with guards
//! against endless pagination.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::source::http::FetchError;
use crate::source::{ListApi, Page, Paging, Position, Scope, Source};

/// Why a scan stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{position}: {error}")]
    Fetch { position: String, error: FetchError },
    #[error("endless pagination: {0}")]
    Loop(String),
    #[error("{0:#}")]
    Sink(anyhow::Error),
}

impl ScanError {
    pub fn code(&self) -> &'static str {
        match self {
            ScanError::Fetch { error, .. } => error.code(),
            ScanError::Loop(_) => "pagination_loop",
            ScanError::Sink(_) => "store",
        }
    }
}

/// Receives pages in order. `next` is where a resumed scan would continue.
pub trait PageSink {
    fn accept(
        &mut self,
        fetched: Position,
        page: Page,
        next: Position,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

/// The same set of ids seen this many times means the API is serving one page over and over.
const REPEATS_MEANING_A_LOOP: u32 = 3;

pub async fn scan<S: PageSink + Send>(
    source: &Source,
    start: Position,
    scope: &Scope,
    concurrency: usize,
    sink: &mut S,
) -> Result<(), ScanError> {
    let mut guard = LoopGuard::default();
    match (source.api.paging(), start) {
        (Paging::Cursor, start) => scan_cursor(source, start, scope, sink, &mut guard).await,
        (Paging::Numbered { first }, Position::Page(p)) => {
            scan_numbered(source, first, p, scope, concurrency, sink, &mut guard).await
        }
        (Paging::Numbered { first }, Position::Cursor(_)) => {
            scan_numbered(source, first, first, scope, concurrency, sink, &mut guard).await
        }
    }
}

async fn fetch(source: &Source, position: &Position, scope: &Scope) -> Result<Page, ScanError> {
    let spec = source
        .api
        .list_request(position, page_size(source, scope), scope);
    let fetched = if scope.ids_only {
        // Sightings only: nothing to map.
        let api: Arc<dyn ListApi> = source.api.clone();
        source
            .http
            .execute(&spec, move |body| api.parse_page(&body))
            .await
    } else {
        let parse = source.parser(|api, body| api.parse_page(body));
        source.http.execute(&spec, parse).await
    };
    fetched.map_err(|error| ScanError::Fetch {
        position: position.describe(),
        error,
    })
}

async fn scan_cursor<S: PageSink + Send>(
    source: &Source,
    start: Position,
    scope: &Scope,
    sink: &mut S,
    guard: &mut LoopGuard,
) -> Result<(), ScanError> {
    let mut position = start;
    let mut used: HashSet<String> = HashSet::new();
    if let Position::Cursor(Some(c)) = &position {
        used.insert(c.clone());
    }
    loop {
        let page = fetch(source, &position, scope).await?;
        guard.check(&page)?;
        let next = match (page.has_more, &page.next_cursor) {
            (Some(true), Some(cursor)) => {
                if !used.insert(cursor.clone()) {
                    return Err(ScanError::Loop(format!(
                        "{} returned a cursor it had already returned",
                        position.describe()
                    )));
                }
                if page.records.is_empty() {
                    return Err(ScanError::Loop(format!(
                        "{} is empty but claims more pages",
                        position.describe()
                    )));
                }
                Some(Position::Cursor(Some(cursor.clone())))
            }
            (Some(true), None) => {
                return Err(ScanError::Loop(format!(
                    "{} claims more pages but gives no cursor",
                    position.describe()
                )));
            }
            _ => None,
        };
        let resume_at = next.clone().unwrap_or_else(|| position.clone());
        sink.accept(position.clone(), page, resume_at)
            .await
            .map_err(ScanError::Sink)?;
        match next {
            Some(n) => position = n,
            None => return Ok(()),
        }
    }
}

async fn scan_numbered<S: PageSink + Send>(
    source: &Source,
    first: u32,
    start: u32,
    scope: &Scope,
    concurrency: usize,
    sink: &mut S,
    guard: &mut LoopGuard,
) -> Result<(), ScanError> {
    let page_size = page_size(source, scope) as usize;
    let page = fetch(source, &Position::Page(start), scope).await?;
    guard.check(&page)?;
    let promised_last = page.total_pages.map(|n| (first + n).saturating_sub(1));
    let short = page.records.len() < page_size;
    sink.accept(Position::Page(start), page, Position::Page(start + 1))
        .await
        .map_err(ScanError::Sink)?;

    let Some(mut last) = promised_last else {
        // No page count (marketplace with `total: null`): read on until an empty or short page.
        if short {
            return Ok(());
        }
        let mut p = start + 1;
        loop {
            let page = fetch(source, &Position::Page(p), scope).await?;
            guard.check(&page)?;
            let done = page.records.len() < page_size;
            sink.accept(Position::Page(p), page, Position::Page(p + 1))
                .await
                .map_err(ScanError::Sink)?;
            if done {
                return Ok(());
            }
            p += 1;
        }
    };

    // The count is known: fetch the rest concurrently, deliver in order, and follow the
    // count up if records were added meanwhile (within reason).
    let initial_pages = (last + 1).saturating_sub(first);
    let growth_cap = first + (initial_pages * 2).max(initial_pages + 100);
    let mut next = start + 1;
    while next <= last {
        let batch_end = last;
        let mut pages = futures::stream::iter(next..=batch_end)
            .map(|p| async move { (p, fetch(source, &Position::Page(p), scope).await) })
            .buffered(concurrency.max(1));
        while let Some((p, result)) = pages.next().await {
            let page = result?;
            guard.check(&page)?;
            if let Some(n) = page.total_pages {
                last = last.max((first + n).saturating_sub(1));
            }
            sink.accept(Position::Page(p), page, Position::Page(p + 1))
                .await
                .map_err(ScanError::Sink)?;
        }
        if last > growth_cap {
            return Err(ScanError::Loop(format!(
                "the page count keeps growing ({initial_pages} pages promised, now {})",
                last + 1 - first
            )));
        }
        next = batch_end + 1;
    }
    Ok(())
}

/// An id-only sweep always asks for the largest pages.
fn page_size(source: &Source, scope: &Scope) -> u32 {
    if scope.ids_only {
        source.config.kind.max_page_size()
    } else {
        source.config.page_size
    }
}

/// Detects an API serving the same page again and again.
#[derive(Default)]
struct LoopGuard {
    seen: HashMap<u64, u32>,
}

impl LoopGuard {
    fn check(&mut self, page: &Page) -> Result<(), ScanError> {
        if page.records.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<&str> = page
            .records
            .iter()
            .map(|r| r.external_id.as_str())
            .collect();
        ids.sort_unstable();
        let fingerprint = xxhash_rust::xxh3::xxh3_64(ids.join("\n").as_bytes());
        let count = self.seen.entry(fingerprint).or_insert(0);
        *count += 1;
        if *count >= REPEATS_MEANING_A_LOOP {
            return Err(ScanError::Loop(format!(
                "the same page of {} records was served {count} times",
                page.records.len()
            )));
        }
        Ok(())
    }
}
