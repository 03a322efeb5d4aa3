//! Cardinus PACE: `pageNumber`/`pageSize`, 1-based, with a PascalCase envelope. Page URLs are
//! built from the configured base, never from the envelope's links (their host is not ours).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::Params;
use super::kind::SourceKind;
use super::{
    ListApi, Lookup, Page, Paging, Position, Scope, WireId, key_from, keyed_records, param,
};
use crate::privacy::redact;

pub struct PaceList;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<'a> {
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
    total_pages: Option<u32>,
    total_records: Option<u64>,
    succeeded: Option<bool>,
    errors: Option<serde_json::Value>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Key {
    #[serde(rename = "UserGuid")]
    guid: Option<WireId>,
}

impl ListApi for PaceList {
    fn kind(&self) -> SourceKind {
        SourceKind::PaceUsers
    }

    fn paging(&self) -> Paging {
        Paging::Numbered { first: 1 }
    }

    fn list_query(&self, position: &Position, page_size: u32, _scope: &Scope) -> Params {
        let page = match position {
            Position::Page(n) => *n,
            Position::Cursor(_) => 1,
        };
        vec![param("pageNumber", page), param("pageSize", page_size)]
    }

    fn key_of(&self, item: &str) -> Result<String, String> {
        key_from::<Key>(item, |k| k.guid)
    }

    /// `GET api/users/{guid}`, one by one (the filter endpoint has no id filter).
    fn lookups(&self, ids: &[String]) -> Vec<Lookup> {
        ids.iter()
            .map(|guid| Lookup {
                spec: super::http::RequestSpec {
                    method: reqwest::Method::GET,
                    suffix: format!("/{guid}"),
                    query: Vec::new(),
                    body: super::http::Body::None,
                },
                single: true,
            })
            .collect()
    }

    fn parse_page(&self, body: &[u8]) -> Result<Page, String> {
        let env: Envelope<'_> =
            serde_json::from_slice(body).map_err(|e| format!("not a PACE users page: {e}"))?;
        if env.succeeded == Some(false) {
            let detail = env
                .message
                .or_else(|| env.errors.map(|e| e.to_string()))
                .unwrap_or_default();
            return Err(format!(
                "PACE answered Succeeded=false: {}",
                redact(&detail)
            ));
        }
        let items = env.items.unwrap_or_default();
        let (records, problems) =
            keyed_records(SourceKind::PaceUsers, &items, |item| self.key_of(item));
        Ok(Page {
            records,
            problems,
            total_pages: env.total_pages,
            total_records: env.total_records,
            ..Page::default()
        })
    }
}
