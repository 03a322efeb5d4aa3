//! The five APIs caresync reads, as named in `sync.toml` (`kind = "..."`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    CarehqServiceUsers,
    CarehqUsers,
    MarketplaceUsers,
    CarevalidateUsers,
    PaceUsers,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::CarehqServiceUsers,
        SourceKind::CarehqUsers,
        SourceKind::MarketplaceUsers,
        SourceKind::CarevalidateUsers,
        SourceKind::PaceUsers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::CarehqServiceUsers => "carehq_service_users",
            SourceKind::CarehqUsers => "carehq_users",
            SourceKind::MarketplaceUsers => "marketplace_users",
            SourceKind::CarevalidateUsers => "carevalidate_users",
            SourceKind::PaceUsers => "pace_users",
        }
    }

    /// The documented collection path, appended to the configured `base_url`.
    pub fn collection_path(self) -> &'static str {
        match self {
            SourceKind::CarehqServiceUsers => "/v1/service-users",
            SourceKind::CarehqUsers => "/v1/users",
            SourceKind::MarketplaceUsers => "/users",
            SourceKind::CarevalidateUsers => "/api/v1/users",
            SourceKind::PaceUsers => "/api/users",
        }
    }

    /// The largest page the API serves (documented, or assumed in `api-notes.md`).
    pub fn max_page_size(self) -> u32 {
        100
    }

    pub fn is_carehq(self) -> bool {
        matches!(
            self,
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers
        )
    }

    /// The stable key of a record in `source_record.external_id`, from the key as the API gives it.
    pub fn normalise_external_id(self, raw: &str) -> String {
        match self {
            SourceKind::CarevalidateUsers | SourceKind::PaceUsers => raw.trim().to_lowercase(),
            _ => raw.to_string(),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SourceKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind `{s}` (expected one of: {})", names.join(", "))
            })
    }
}
