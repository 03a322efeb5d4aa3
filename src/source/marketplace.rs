//! Marketplace (MMOB): 0-based `page`/`size`; `total` and `page` may be null, so a scan
//! stops on an empty or short page. Newest first.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::Params;
use super::kind::SourceKind;
use super::{
    ListApi, Lookup, Page, Paging, Position, Scope, WireId, key_from, keyed_records, param,
};

pub struct MarketplaceList;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
    total: Option<u64>,
    size: Option<u32>,
}

#[derive(Deserialize)]
struct Key {
    id: Option<WireId>,
}

impl ListApi for MarketplaceList {
    fn kind(&self) -> SourceKind {
        SourceKind::MarketplaceUsers
    }

    fn paging(&self) -> Paging {
        Paging::Numbered { first: 0 }
    }

    fn list_query(&self, position: &Position, page_size: u32, _scope: &Scope) -> Params {
        let page = match position {
            Position::Page(n) => *n,
            Position::Cursor(_) => 0,
        };
        vec![param("page", page), param("size", page_size)]
    }

    fn key_of(&self, item: &str) -> Result<String, String> {
        key_from::<Key>(item, |k| k.id)
    }

    /// The list filter is literally `ids[]`, repeated.
    fn lookups(&self, ids: &[String]) -> Vec<Lookup> {
        super::batched_lookups(ids, 100, |chunk| {
            let mut q: Params = chunk.iter().map(|id| param("ids[]", id)).collect();
            q.push(param("page", 0));
            q.push(param("size", 100));
            q
        })
    }

    fn parse_page(&self, body: &[u8]) -> Result<Page, String> {
        let env: Envelope<'_> = serde_json::from_slice(body)
            .map_err(|e| format!("not a marketplace users page: {e}"))?;
        let (records, problems) = keyed_records(SourceKind::MarketplaceUsers, &env.items, |item| {
            self.key_of(item)
        });
        let total_pages = match (env.total, env.size) {
            (Some(total), Some(size)) if size > 0 => Some(total.div_ceil(size as u64) as u32),
            _ => None,
        };
        Ok(Page {
            records,
            problems,
            total_pages,
            total_records: env.total,
            ..Page::default()
        })
    }
}
