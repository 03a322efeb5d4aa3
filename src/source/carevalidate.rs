//! CareValidate Care360: cursor pagination (`after` = the previous `meta.cursor`, stop when
//! `meta.hasMore` is false). Items carry no id: the trimmed, lower-cased email is the key.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::http::Params;
use super::kind::SourceKind;
use super::{
    ListApi, Lookup, Page, Paging, Position, Scope, WireId, key_from, keyed_records, param,
};

pub struct CareValidateList;

#[derive(Deserialize)]
struct Envelope<'a> {
    meta: Meta,
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    has_more: bool,
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct Key {
    email: Option<WireId>,
}

impl ListApi for CareValidateList {
    fn kind(&self) -> SourceKind {
        SourceKind::CarevalidateUsers
    }

    fn paging(&self) -> Paging {
        Paging::Cursor
    }

    fn list_query(&self, position: &Position, page_size: u32, _scope: &Scope) -> Params {
        // `sortOrder`, not the doc's typo `sorOrder`.
        let mut q = vec![
            param("limit", page_size),
            param("sortBy", "createdAt"),
            param("sortOrder", "asc"),
        ];
        if let Position::Cursor(Some(after)) = position {
            q.push(param("after", after));
        }
        q
    }

    fn key_of(&self, item: &str) -> Result<String, String> {
        key_from::<Key>(item, |k| k.email)
    }

    /// By the `email` prefix filter; the caller keeps only exact key matches.
    fn lookups(&self, ids: &[String]) -> Vec<Lookup> {
        ids.iter()
            .map(|email| Lookup {
                spec: super::http::RequestSpec::get(vec![
                    param("email", email),
                    param("limit", 100),
                ]),
                single: false,
            })
            .collect()
    }

    fn parse_page(&self, body: &[u8]) -> Result<Page, String> {
        let env: Envelope<'_> = serde_json::from_slice(body)
            .map_err(|e| format!("not a CareValidate users page: {e}"))?;
        let (records, problems) = keyed_records(SourceKind::CarevalidateUsers, &env.data, |item| {
            self.key_of(item)
        });
        Ok(Page {
            records,
            problems,
            has_more: Some(env.meta.has_more),
            next_cursor: env.meta.cursor.filter(|c| !c.is_empty()),
            ..Page::default()
        })
    }
}
