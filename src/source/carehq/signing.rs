//! CareHQ request signing, version 2.0 (see `shared/api-notes.md`).
//!
//! Shared by the client (`source::carehq`) and the simulator (`sim::carehq`), so both sides
//! agree by construction and the published test vectors pin the algorithm.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const SIGNATURE_VERSION: &str = "2.0";

/// Query (GET) or form-body (other methods) parameters: repeated keys for lists, nulls dropped.
pub type Params = Vec<(String, String)>;

/// The canonical parameter block: keys sorted, each key's values sorted, one `key=value` per line.
pub fn canonical_params(params: &[(String, String)]) -> String {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in params {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    let mut lines = Vec::with_capacity(params.len());
    for (k, mut values) in by_key {
        values.sort_unstable();
        for v in values {
            lines.push(format!("{k}={v}"));
        }
    }
    lines.join("\n")
}

/// `/v1/` + the resource path without leading or trailing slashes (no query string).
pub fn canonical_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    let trimmed = trimmed.strip_prefix("v1/").unwrap_or(trimmed);
    format!("/v1/{trimmed}")
}

/// Lower-case hex HMAC-SHA256 of `timestamp \n nonce \n METHOD \n /v1/path \n params`.
pub fn signature(
    secret: &str,
    timestamp: i64,
    nonce: &str,
    method: &str,
    path: &str,
    params: &[(String, String)],
) -> String {
    let message = format!(
        "{timestamp}\n{nonce}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_path(path),
        canonical_params(params)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// 16 random bytes, base64url without padding: 22 characters.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The header names the API expects, in one place.
pub mod headers {
    pub const ACCOUNT_ID: &str = "X-CareHQ-AccountId";
    pub const API_KEY: &str = "X-CareHQ-APIKey";
    pub const NONCE: &str = "X-CareHQ-Nonce";
    pub const TIMESTAMP: &str = "X-CareHQ-Timestamp";
    pub const SIGNATURE_VERSION: &str = "X-CareHQ-Signature-Version";
    pub const SIGNATURE: &str = "X-CareHQ-Signature";
    pub const RATE_LIMIT: &str = "X-CareHQ-RateLimit-Limit";
    pub const RATE_REMAINING: &str = "X-CareHQ-RateLimit-Remaining";
    pub const RATE_RESET: &str = "X-CareHQ-RateLimit-Reset";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NONCE: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn published_vector_get_with_query() {
        let params = p(&[
            ("attributes", "ref"),
            ("attributes", "first_name"),
            ("attributes", "last_name"),
            ("filters-status", "pending"),
            ("filters-status", "active"),
            ("sort_by", "full_name"),
            ("page", "2"),
            ("per_page", "50"),
        ]);
        assert_eq!(
            signature(
                "test-secret",
                1_700_000_000,
                NONCE,
                "get",
                "service-users",
                &params
            ),
            "33c8adb8269ab29a94290366531f783e0cf0be249e8f191644ebf0a4234b9f6b"
        );
    }

    #[test]
    fn published_vector_patch_with_form_body() {
        let params = p(&[
            ("first_name", "Anna"),
            ("street_address-postcode", "NE2 1PA"),
            ("dementia", "yes"),
            ("genders", "female"),
        ]);
        assert_eq!(
            signature(
                "test-secret",
                1_700_000_000,
                NONCE,
                "PATCH",
                "/service-users/69a9e47783e6ab081d8eda64/",
                &params
            ),
            "065cc3d6aafd24b59381130840a6ef46005fbc47b42b51ed1eaf5a7457793e5b"
        );
    }

    #[test]
    fn published_vector_delete_without_body() {
        assert_eq!(
            signature(
                "test-secret",
                1_700_000_000,
                NONCE,
                "DELETE",
                "service-users/69a9e47783e6ab081d8eda64",
                &[]
            ),
            "977e3147a107f53973d2b9e5ad30b23e89b6def58785a672478bebe6b5d71584"
        );
    }

    #[test]
    fn signature_changes_with_any_part() {
        let base = signature("s", 1, NONCE, "GET", "users", &p(&[("page", "1")]));
        assert_ne!(
            base,
            signature("s", 2, NONCE, "GET", "users", &p(&[("page", "1")]))
        );
        assert_ne!(
            base,
            signature("s", 1, NONCE, "GET", "users", &p(&[("page", "2")]))
        );
        assert_ne!(
            base,
            signature("t", 1, NONCE, "GET", "users", &p(&[("page", "1")]))
        );
    }

    #[test]
    fn nonce_is_22_chars_base64url() {
        let n = new_nonce();
        assert_eq!(n.len(), 22);
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
