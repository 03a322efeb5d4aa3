//! Sources: one [`ListApi`] per API (its wire envelope, keys and query), sharing the HTTP
//! core in [`http`] and the pagination driver in `sync::paginate`.

pub mod carehq;
pub mod carevalidate;
pub mod http;
pub mod kind;
pub mod marketplace;
pub mod pace;
pub mod ratelimit;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{Config, SourceConfig};
use crate::store::{AlreadyMapped, CanonicalForm, StoredRecord};
use crate::sync::mapping::{KindMapping, Mappings, map_payload};
use http::{HttpClient, Params, RequestSpec};
use kind::SourceKind;
use ratelimit::{Budgets, RateLimiter};

/// How an API pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// Numbered pages starting at `first` (0 or 1).
    Numbered { first: u32 },
    /// An opaque cursor from the previous page.
    Cursor,
}

/// Where to read next; saved as JSON in `sync_state.position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Page(u32),
    Cursor(Option<String>),
}

impl Position {
    pub fn first(paging: Paging) -> Position {
        match paging {
            Paging::Numbered { first } => Position::Page(first),
            Paging::Cursor => Position::Cursor(None),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Position> {
        serde_json::from_str(text).ok()
    }

    /// For messages and `sync_error.page`: a page number, or that a cursor was in use.
    pub fn describe(&self) -> String {
        match self {
            Position::Page(n) => format!("page {n}"),
            Position::Cursor(None) => "first cursor page".to_string(),
            Position::Cursor(Some(c)) => {
                format!("cursor {}", c.chars().take(16).collect::<String>())
            }
        }
    }
}

/// What a scan asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only records modified after this API-formatted time (CareHQ incremental reads).
    pub modified_after: Option<String>,
    /// Only the ids, in the largest pages (CareHQ's deletion sweep).
    pub ids_only: bool,
}

/// A record the page held that could not be keyed or read; it is kept and reported.
#[derive(Debug, Clone)]
pub struct RecordProblem {
    pub external_id: Option<String>,
    pub kind: &'static str,
    pub message: String,
}

/// One page as parsed from the wire.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<StoredRecord>,
    pub problems: Vec<RecordProblem>,
    pub total_pages: Option<u32>,
    pub total_records: Option<u64>,
    pub has_more: Option<bool>,
    pub next_cursor: Option<String>,
    /// Newest `modified` among the records, as the API formats it (CareHQ).
    pub newest_modified: Option<String>,
}

/// One API's list endpoint: its query, its envelope, its record key.
pub trait ListApi: Send + Sync + 'static {
    fn kind(&self) -> SourceKind;
    fn paging(&self) -> Paging;
    fn list_query(&self, position: &Position, page_size: u32, scope: &Scope) -> Params;
    fn parse_page(&self, body: &[u8]) -> Result<Page, String>;
    /// The key of one item (its JSON text), before normalisation.
    fn key_of(&self, item: &str) -> Result<String, String>;
    /// Requests that fetch these records by key, to tell a deleted record from one a page
    /// shift hid from the scan.
    fn lookups(&self, ids: &[String]) -> Vec<Lookup>;

    fn list_request(&self, position: &Position, page_size: u32, scope: &Scope) -> RequestSpec {
        RequestSpec::get(self.list_query(position, page_size, scope))
    }

    /// Parses a lookup's answer: a list page, or one record.
    fn parse_lookup(&self, lookup: &Lookup, body: &[u8]) -> Result<Page, String> {
        if !lookup.single {
            return self.parse_page(body);
        }
        let item: &RawValue =
            serde_json::from_slice(body).map_err(|e| format!("not a record: {e}"))?;
        let (records, problems) = keyed_records(self.kind(), &[item], |i| self.key_of(i));
        Ok(Page {
            records,
            problems,
            ..Page::default()
        })
    }
}

/// A request that looks records up by key; `single` when it answers one record (404: gone).
#[derive(Debug, Clone)]
pub struct Lookup {
    pub spec: RequestSpec,
    pub single: bool,
}

/// Lookups in batches of `per_request` ids through one repeated list filter.
pub fn batched_lookups(
    ids: &[String],
    per_request: usize,
    query: impl Fn(&[String]) -> Params,
) -> Vec<Lookup> {
    ids.chunks(per_request.max(1))
        .map(|chunk| Lookup {
            spec: RequestSpec::get(query(chunk)),
            single: false,
        })
        .collect()
}

/// A configured source, ready to read.
pub struct Source {
    pub config: SourceConfig,
    pub api: Arc<dyn ListApi>,
    pub http: HttpClient,
    pub mapping: Option<KindMapping>,
    /// Set for extraction: records the store already holds mapped by this mapping version
    /// are not mapped again ([`CanonicalForm::Unchanged`]). Unset, every record is mapped
    /// (write-back reads a record's canonical values from what it re-reads).
    pub already_mapped: Option<Arc<AlreadyMapped>>,
}

impl Source {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Parses a body with `parse` and maps its records, for running off the async workers.
    /// With [`Source::already_mapped`], one look-up per page first finds the records the
    /// store already holds mapped; those are marked [`CanonicalForm::Unchanged`], not mapped.
    pub fn parser(
        &self,
        parse: impl Fn(&dyn ListApi, &[u8]) -> Result<Page, String> + Send + Sync + Clone + 'static,
    ) -> impl Fn(bytes::Bytes) -> Result<Page, String> + Send + Sync + Clone + 'static {
        let api = self.api.clone();
        let mapping = self.mapping.clone();
        let already_mapped = self.already_mapped.clone();
        let name: Arc<str> = Arc::from(self.name());
        move |body| {
            let mut page = parse(api.as_ref(), &body)?;
            let Some(m) = &mapping else {
                return Ok(page);
            };
            let unchanged = match &already_mapped {
                Some(lookup) => lookup
                    .unchanged(&name, &m.hash, &page.records)
                    .unwrap_or_else(|e| {
                        // Only work is lost: every record of the page is mapped.
                        tracing::warn!(source = %name, records = page.records.len(), error = %e, "cannot look up stored records; mapping the whole page");
                        Vec::new()
                    }),
                None => Vec::new(),
            };
            for (i, record) in page.records.iter_mut().enumerate() {
                record.canonical = if unchanged.get(i).copied().unwrap_or(false) {
                    CanonicalForm::Unchanged
                } else {
                    CanonicalForm::Mapped(map_payload(&m.mapping, &record.payload))
                };
            }
            Ok(page)
        }
    }
}

pub fn api_for(kind: SourceKind) -> Arc<dyn ListApi> {
    match kind {
        SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
            Arc::new(carehq::CareHqList::new(kind))
        }
        SourceKind::MarketplaceUsers => Arc::new(marketplace::MarketplaceList),
        SourceKind::CarevalidateUsers => Arc::new(carevalidate::CareValidateList),
        SourceKind::PaceUsers => Arc::new(pace::PaceList),
    }
}

/// Builds every configured source (or the named ones), sharing rate budgets by API key.
pub fn build_sources(
    config: &Config,
    only: &[String],
    budgets: &Budgets,
    mappings: Option<&Mappings>,
) -> anyhow::Result<Vec<Source>> {
    for name in only {
        if config.source(name).is_none() {
            let known: Vec<_> = config.sources.iter().map(|s| s.name.as_str()).collect();
            anyhow::bail!(
                "no source named `{name}` in {} (known: {})",
                config.file.display(),
                known.join(", ")
            );
        }
    }
    let client = HttpClient::build_client(&config.http)?;
    Ok(config
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .map(|s| {
            let api_family = if s.kind.is_carehq() {
                "carehq"
            } else {
                s.kind.as_str()
            };
            let limiter = budgets.limiter(api_family, s.credentials.budget_key(), || {
                let learn = s.kind.is_carehq() && s.rate_limit.is_none();
                let initial = s
                    .effective_rate_limit()
                    .or_else(|| learn.then(carehq::assumed_rate_limit));
                RateLimiter::new(initial, learn)
            });
            Source {
                config: s.clone(),
                api: api_for(s.kind),
                mapping: mappings.and_then(|m| m.for_kind(s.kind)).cloned(),
                already_mapped: None,
                http: HttpClient::new(
                    client.clone(),
                    s.collection_url(),
                    s.credentials.clone(),
                    config.http.clone(),
                    limiter,
                ),
            }
        })
        .collect())
}

/// How the external id of a record without a usable key begins (the rest is its content hash).
pub const MISSING_KEY_PREFIX: &str = "missing-key:";

/// `source_record.content_hash`: xxh3-128 of the payload bytes, hex.
pub fn content_hash(payload: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(payload.as_bytes()))
}

/// Turns the raw items of a page into stored records, keyed by `key_of` (which gets the
/// item's JSON text). An item without a usable key is still kept, under a key derived
/// from its content, and reported.
pub fn keyed_records(
    kind: SourceKind,
    items: &[&RawValue],
    key_of: impl Fn(&str) -> Result<String, String>,
) -> (Vec<StoredRecord>, Vec<RecordProblem>) {
    let mut records = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for item in items {
        let payload = item.get().to_string();
        let content_hash = content_hash(&payload);
        let external_id = match key_of(&payload) {
            Ok(raw) if !raw.trim().is_empty() => kind.normalise_external_id(&raw),
            Ok(_) | Err(_) => {
                let id = format!("{MISSING_KEY_PREFIX}{content_hash}");
                problems.push(RecordProblem {
                    external_id: Some(id.clone()),
                    kind: "missing_key",
                    message: format!("record has no usable key field for {kind}; kept under a content-derived key"),
                });
                id
            }
        };
        records.push(StoredRecord {
            external_id,
            payload,
            content_hash,
            canonical: CanonicalForm::NoMapping,
        });
    }
    (records, problems)
}

/// An id that may come as a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum WireId {
    Text(String),
    Number(serde_json::Number),
}

impl WireId {
    pub fn into_string(self) -> String {
        match self {
            WireId::Text(s) => s,
            WireId::Number(n) => n.to_string(),
        }
    }
}

/// Parses an item just far enough to read its key (other fields are skipped, not built).
pub fn key_from<K: serde::de::DeserializeOwned>(
    item: &str,
    pick: impl FnOnce(K) -> Option<WireId>,
) -> Result<String, String> {
    let key: K = serde_json::from_str(item).map_err(|e| format!("item is not a record: {e}"))?;
    key_text(pick(key))
}

/// A record's key as text, or why it has none.
pub fn key_text(id: Option<WireId>) -> Result<String, String> {
    id.map(WireId::into_string)
        .ok_or_else(|| "no key field".to_string())
}

pub fn param(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}
