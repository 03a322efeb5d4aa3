//! HTTP tests of the simulators: real servers on 127.0.0.1, real requests with reqwest.

use std::collections::{HashMap, HashSet};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::source::carehq::signing;

fn opts(people: usize) -> SimOptions {
    SimOptions {
        people,
        seed: 7,
        ..SimOptions::default()
    }
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

async fn json_of(resp: Response) -> Value {
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text:.200}"))
}

// ----- CareHQ -------------------------------------------------------------------------------

struct Signed {
    ts: i64,
    nonce: String,
}

impl Default for Signed {
    fn default() -> Self {
        Signed {
            ts: chrono::Utc::now().timestamp(),
            nonce: signing::new_nonce(),
        }
    }
}

fn carehq(
    c: &Client,
    sims: &Simulators,
    method: Method,
    path: &str,
    params: &[(&str, &str)],
    s: Signed,
) -> RequestBuilder {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sig = signing::signature(
        creds::CAREHQ_API_SECRET,
        s.ts,
        &s.nonce,
        method.as_str(),
        path,
        &params,
    );
    let url = format!("{}{path}", sims.base_url(SourceKind::CarehqServiceUsers));
    let rb = c
        .request(method.clone(), url)
        .header("Accept", "application/json")
        .header(signing::headers::ACCOUNT_ID, creds::CAREHQ_ACCOUNT_ID)
        .header(signing::headers::API_KEY, creds::CAREHQ_API_KEY)
        .header(signing::headers::NONCE, &s.nonce)
        .header(signing::headers::TIMESTAMP, s.ts.to_string())
        .header(signing::headers::SIGNATURE_VERSION, "2.0")
        .header(signing::headers::SIGNATURE, sig);
    if method == Method::GET {
        rb.query(&params)
    } else {
        rb.form(&params)
    }
}

async fn carehq_get(
    c: &Client,
    sims: &Simulators,
    path: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let resp = carehq(c, sims, Method::GET, path, params, Signed::default())
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, json_of(resp).await)
}

#[tokio::test]
async fn carehq_auth_is_enforced() {
    let sims = start(opts(30)).await.expect("start");
    let c = client();
    let base = sims.base_url(SourceKind::CarehqServiceUsers);
    let r = c
        .get(format!("{base}/v1/service-users"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(r).await;
    assert!(
        body["hint"].is_string() && body["arg_errors"].is_object(),
        "{body}"
    );

    // A reused nonce is rejected.
    let s = Signed::default();
    let nonce = s.nonce.clone();
    let r = carehq(&c, &sims, Method::GET, "/v1/service-users", &[], s)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let again = Signed {
        ts: chrono::Utc::now().timestamp(),
        nonce,
    };
    let r = carehq(&c, &sims, Method::GET, "/v1/service-users", &[], again)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A stale timestamp is rejected; one inside the tolerance is not.
    let stale = Signed {
        ts: chrono::Utc::now().timestamp() - 301,
        ..Signed::default()
    };
    let r = carehq(&c, &sims, Method::GET, "/v1/service-users", &[], stale)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ok = Signed {
        ts: chrono::Utc::now().timestamp() - 200,
        ..Signed::default()
    };
    let r = carehq(&c, &sims, Method::GET, "/v1/service-users", &[], ok)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);

    // A signature over other parameters is rejected.
    let s = Signed::default();
    let sig = signing::signature(
        creds::CAREHQ_API_SECRET,
        s.ts,
        &s.nonce,
        "GET",
        "service-users",
        &[],
    );
    let r = c
        .get(format!("{base}/v1/service-users?page=2"))
        .header(signing::headers::ACCOUNT_ID, creds::CAREHQ_ACCOUNT_ID)
        .header(signing::headers::API_KEY, creds::CAREHQ_API_KEY)
        .header(signing::headers::NONCE, &s.nonce)
        .header(signing::headers::TIMESTAMP, s.ts.to_string())
        .header(signing::headers::SIGNATURE_VERSION, "2.0")
        .header(signing::headers::SIGNATURE, sig)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    sims.shutdown().await;
}

#[tokio::test]
async fn carehq_lists_follow_the_docs() {
    let sims = start(opts(300)).await.expect("start");
    let st = sims.state();
    let c = client();
    let r = carehq(
        &c,
        &sims,
        Method::GET,
        "/v1/service-users",
        &[],
        Signed::default(),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    for h in [
        signing::headers::RATE_LIMIT,
        signing::headers::RATE_REMAINING,
        signing::headers::RATE_RESET,
    ] {
        assert!(r.headers().contains_key(h), "missing {h}");
    }
    let reset = r.headers()[signing::headers::RATE_RESET]
        .to_str()
        .unwrap_or("");
    assert!(
        reset.contains('.') && reset.parse::<f64>().is_ok(),
        "{reset}"
    );
    let body = json_of(r).await;
    let total = st.count(SourceKind::CarehqServiceUsers);
    assert_eq!(body["item_count"], json!(total));
    assert_eq!(body["per_page"], json!(10));
    assert_eq!(body["page"], json!(1));
    assert_eq!(body["page_count"], json!(total.div_ceil(10)));
    let items = body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 10);
    for it in &items {
        assert_eq!(
            it.as_object().map(|o| o.len()),
            Some(1),
            "only _id by default: {it}"
        );
    }
    let keys = st.keys(SourceKind::CarehqServiceUsers);
    assert_eq!(items[0]["_id"], json!(keys[0]));

    // Projection.
    let (s, body) = carehq_get(
        &c,
        &sims,
        "/v1/service-users",
        &[
            ("attributes", "first_name"),
            ("attributes", "street_address"),
            ("per_page", "100"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let first = &body["items"][0];
    assert!(
        first["first_name"].is_string() && first["street_address"].is_object(),
        "{first}"
    );
    assert!(first.get("last_name").is_none());

    // Too large a page.
    let (s, body) = carehq_get(&c, &sims, "/v1/service-users", &[("per_page", "101")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["arg_errors"]["per_page"].is_array(), "{body}");

    // Full paging returns every record exactly once.
    let mut seen = HashSet::new();
    for page in 1..=total.div_ceil(100) {
        let p = page.to_string();
        let (_, body) = carehq_get(
            &c,
            &sims,
            "/v1/service-users",
            &[("per_page", "100"), ("page", &p)],
        )
        .await;
        for it in body["items"].as_array().cloned().unwrap_or_default() {
            assert!(seen.insert(it["_id"].as_str().unwrap_or("").to_string()));
        }
    }
    assert_eq!(seen.len(), total);

    // Users: suspended hidden by default, shown with `unset`.
    let all_users = st.records(SourceKind::CarehqUsers);
    let suspended = all_users
        .iter()
        .filter(|u| !u["suspended"].is_null())
        .count();
    assert!(suspended > 0, "the dataset should hold suspended users");
    let (_, body) = carehq_get(&c, &sims, "/v1/users", &[]).await;
    assert_eq!(body["item_count"], json!(all_users.len() - suspended));
    let (_, body) = carehq_get(&c, &sims, "/v1/users", &[("filters-suspended", "unset")]).await;
    assert_eq!(body["item_count"], json!(all_users.len()));

    // Incremental read: strictly after, sorted by modified.
    let key = keys[3].clone();
    assert!(st.update_field(
        SourceKind::CarehqServiceUsers,
        &key,
        "notes",
        json!("changed")
    ));
    let rec = st
        .records(SourceKind::CarehqServiceUsers)
        .into_iter()
        .find(|r| r["_id"] == json!(key))
        .unwrap_or_default();
    let modified = rec["modified"].as_str().unwrap_or("").to_string();
    let before =
        http_util::carehq_time(http_util::parse_carehq_time(&modified).unwrap_or(0) - 1000);
    let (_, body) = carehq_get(
        &c,
        &sims,
        "/v1/service-users",
        &[
            ("filters-modified_after", &before),
            ("sort_by", "modified"),
            ("attributes", "modified"),
        ],
    )
    .await;
    assert_eq!(body["item_count"], json!(1), "{body}");
    assert_eq!(body["items"][0]["_id"], json!(key));
    // `modified` shows seconds but is compared with millisecond precision, as MongoDB stores it:
    // the shown value as a watermark re-reads that second rather than missing later changes.
    let stored_ms = st
        .read(SourceKind::CarehqServiceUsers)
        .get(&key)
        .map(|r| r.meta.modified_ms)
        .unwrap_or(0);
    let expected = if stored_ms % 1000 == 0 { 0 } else { 1 };
    let (_, body) = carehq_get(
        &c,
        &sims,
        "/v1/service-users",
        &[("filters-modified_after", &modified)],
    )
    .await;
    assert_eq!(body["item_count"], json!(expected));
    let next_second = http_util::carehq_time(stored_ms - stored_ms % 1000 + 1000);
    let (_, body) = carehq_get(
        &c,
        &sims,
        "/v1/service-users",
        &[("filters-modified_after", &next_second)],
    )
    .await;
    assert_eq!(body["item_count"], json!(0));

    // Retrieve one; unknown id.
    let (s, body) = carehq_get(&c, &sims, &format!("/v1/service-users/{key}"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["notes"], json!("changed"));
    assert!(body.get("location_role_label").is_none() && body["street_address"].is_object());
    let (s, body) = carehq_get(&c, &sims, "/v1/service-users/000000000000000000000000", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error_type"], json!("not_found"));
    sims.shutdown().await;
}

#[tokio::test]
async fn carehq_writes_follow_the_docs() {
    let sims = start(opts(20)).await.expect("start");
    let st = sims.state();
    let c = client();
    let location = st.locations()[0].clone();
    let r = carehq(
        &c,
        &sims,
        Method::PUT,
        "/v1/service-users",
        &[("first_name", "Margaret")],
        Signed::default(),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json_of(r).await;
    for f in [
        "last_name",
        "location",
        "funding_type",
        "service",
        "day_care_use",
        "dob",
    ] {
        assert!(body["arg_errors"][f].is_array(), "{f}: {body}");
    }
    let form = [
        ("first_name", "Margaret"),
        ("last_name", "Thompson"),
        ("location", location.as_str()),
        ("funding_type", "private"),
        ("service", "nursing_home"),
        ("day_care_use", "not_used"),
        ("dob", "1932-05-03"),
        ("dementia", "yes"),
        ("visually_impaired", "no"),
        ("genders", "female"),
        ("religions", "christian"),
        ("religions", "no_religion"),
        ("street_address-postcode", "NE2 1PA"),
        ("nhs_number", "485 777 3456"),
    ];
    let r = carehq(
        &c,
        &sims,
        Method::PUT,
        "/v1/service-users",
        &form,
        Signed::default(),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let created = json_of(r).await;
    assert_eq!(created["dob_str"], json!("1932-05-03"));
    assert_eq!(created["end_of_life_care"], json!(""));
    assert_eq!(created["status"], json!("pending"));
    assert_eq!(created["dementia"], json!(true));
    assert_eq!(created["visually_impaired"], json!(false));
    assert!(created.get("dob").is_none() && created.get("fnc_application_date_str").is_some());
    let id = created["_id"].as_str().unwrap_or("").to_string();
    assert_eq!(id.len(), 24);
    let stored = st
        .records(SourceKind::CarehqServiceUsers)
        .into_iter()
        .find(|r| r["_id"] == json!(id))
        .unwrap_or_default();
    assert_eq!(stored["street_address"]["postcode"], json!("NE2 1PA"));
    assert_eq!(stored["religions"], json!(["christian", "no_religion"]));
    assert!(stored["postal_address"].is_null());

    // Update: partial, signed over the form body, bumps modified.
    let modified_ms = |st: &SimState| {
        st.read(SourceKind::CarehqServiceUsers)
            .get(&id)
            .map(|r| r.meta.modified_ms)
            .unwrap_or(0)
    };
    let before_ms = modified_ms(&st);
    let path = format!("/v1/service-users/{id}");
    let r = carehq(
        &c,
        &sims,
        Method::PATCH,
        &path,
        &[("first_name", "Maggie"), ("dementia", "maybe")],
        Signed::default(),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = carehq(
        &c,
        &sims,
        Method::PATCH,
        &path,
        &[("first_name", "Anna"), ("street_address-town", "Newcastle")],
        Signed::default(),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let updated = json_of(r).await;
    assert_eq!(updated["first_name"], json!("Anna"));
    assert_eq!(updated["last_name"], json!("Thompson"));
    assert_eq!(updated["street_address"]["postcode"], json!("NE2 1PA"));
    assert_eq!(updated["street_address"]["town"], json!("Newcastle"));
    assert!(updated["modified"].as_str() >= stored["modified"].as_str());
    assert!(modified_ms(&st) > before_ms, "the update bumps modified");
    assert_eq!(st.stats(SourceKind::CarehqServiceUsers).writes, 2);

    // Users are read-only.
    let r = carehq(
        &c,
        &sims,
        Method::PUT,
        "/v1/users",
        &[("first_name", "x")],
        Signed::default(),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(json_of(r).await["hint"].is_string());
    sims.shutdown().await;
}

#[tokio::test]
async fn carehq_rate_limit_is_enforced() {
    let sims = start(SimOptions {
        enforce_rate_limits: true,
        ..opts(10)
    })
    .await
    .expect("start");
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let r = carehq(&c, &sims, Method::GET, "/v1/users", &[], Signed::default())
            .send()
            .await
            .expect("send");
        let limited = r.status() == StatusCode::TOO_MANY_REQUESTS;
        if limited {
            assert!(!r.headers().contains_key(signing::headers::RATE_LIMIT));
            assert!(!r.headers().contains_key("retry-after"));
            assert_eq!(
                json_of(r).await["error_type"],
                json!("request_limit_exceeded")
            );
        } else {
            assert_eq!(r.headers()[signing::headers::RATE_LIMIT], "10");
        }
        statuses.push(limited);
    }
    assert!(
        statuses.iter().any(|l| *l),
        "25 quick requests should hit 10/s"
    );
    let log = sims.state().request_log(SourceKind::CarehqUsers);
    // No one-second window holds more than 10 accepted requests.
    let ok: Vec<_> = log
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(t, _)| *t)
        .collect();
    assert!(ok.len() <= 30);
    assert_eq!(
        sims.state().stats(SourceKind::CarehqUsers).rate_limited as usize,
        statuses.iter().filter(|l| **l).count()
    );
    sims.shutdown().await;
}

// ----- Marketplace --------------------------------------------------------------------------

fn mp(c: &Client, sims: &Simulators, method: Method, path: &str) -> RequestBuilder {
    c.request(
        method,
        format!("{}{path}", sims.base_url(SourceKind::MarketplaceUsers)),
    )
    .bearer_auth(creds::MARKETPLACE_TOKEN)
}

#[tokio::test]
async fn marketplace_follows_the_docs() {
    let sims = start(opts(400)).await.expect("start");
    let st = sims.state();
    let c = client();
    let base = sims.base_url(SourceKind::MarketplaceUsers);
    let r = c.get(format!("{base}/users")).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(r).await, json!({"detail": "Not authenticated"}));
    let r = c
        .get(format!("{base}/users"))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .get(format!("{base}/users"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{base}/users/?size=5"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()["location"], "/users?size=5");

    let r = mp(&c, &sims, Method::GET, "/users?size=101")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(r).await;
    assert_eq!(body["detail"][0]["loc"], json!(["query", "size"]));

    let total = st.count(SourceKind::MarketplaceUsers);
    let body = json_of(
        mp(&c, &sims, Method::GET, "/users")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert!(
        body["total"].is_null() && body["page"].is_null(),
        "{body:.300}"
    );
    assert_eq!(body["size"], json!(50));
    let mut seen = Vec::new();
    let mut page = 0;
    loop {
        let body = json_of(
            mp(
                &c,
                &sims,
                Method::GET,
                &format!("/users?page={page}&size=100"),
            )
            .send()
            .await
            .expect("send"),
        )
        .await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        seen.extend(items.iter().map(|i| {
            (
                i["created"].as_str().unwrap_or("").to_string(),
                i["id"].as_str().unwrap_or("").to_string(),
            )
        }));
        if items.len() < 100 {
            break;
        }
        page += 1;
    }
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    let first = st.records(SourceKind::MarketplaceUsers)[0].clone();
    assert!(first["dob"].is_null() || first["dob"].as_str().is_some_and(|d| d.contains('T')));
    assert!(matches!(first["smoker"].as_str(), Some("yes" | "no")));

    // Filters.
    let id = seen[5].1.clone();
    let body = json_of(
        mp(
            &c,
            &sims,
            Method::GET,
            &format!("/users?ids[]={id}&ids[]=nope"),
        )
        .send()
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    let email = body["items"][0]["email"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_uppercase();
    let body = json_of(
        mp(&c, &sims, Method::GET, "/users")
            .query(&[("email", &email)])
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["items"][0]["id"], json!(id));

    // Create: required fields, then a new user on page 0.
    let r = mp(&c, &sims, Method::POST, "/users")
        .json(&json!({"first_name": "Ann"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(r).await;
    let locs: Vec<Value> = body["detail"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| d["loc"].clone())
        .collect();
    assert!(locs.contains(&json!(["body", "surname"])) && locs.contains(&json!(["body", "email"])));
    let r = mp(&c, &sims, Method::POST, "/users")
        .json(&json!({"first_name": "Ann", "surname": "O'Brien", "email": "ann@example.com", "dob": "1940-01-02", "number_of_children": 2}))
        .send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let created = json_of(r).await;
    assert_eq!(created["dob"], json!("1940-01-02T00:00:00Z"));
    assert_eq!(created["number_of_children"], json!("2"));
    let new_id = created["id"].as_str().unwrap_or("").to_string();
    let body = json_of(
        mp(&c, &sims, Method::GET, "/users?size=1")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["items"][0]["id"], json!(new_id));

    // Update via POST /users/{id}.
    let r = mp(&c, &sims, Method::POST, &format!("/users/{new_id}"))
        .json(&json!({"preferred_name": "Annie"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let got = json_of(
        mp(&c, &sims, Method::GET, &format!("/users/{new_id}"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(got["preferred_name"], json!("Annie"));
    assert_eq!(got["surname"], json!("O'Brien"));
    let r = mp(&c, &sims, Method::GET, "/users/does-not-exist")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(r).await, json!({"detail": "Not Found"}));
    sims.shutdown().await;
}

// ----- CareValidate -------------------------------------------------------------------------

fn cv(c: &Client, sims: &Simulators, method: Method) -> RequestBuilder {
    c.request(
        method,
        format!(
            "{}/api/v1/users",
            sims.base_url(SourceKind::CarevalidateUsers)
        ),
    )
    .header("cv-api-key", creds::CAREVALIDATE_API_KEY)
}

#[tokio::test]
async fn carevalidate_follows_the_docs() {
    let sims = start(opts(300)).await.expect("start");
    let st = sims.state();
    let c = client();
    let url = format!(
        "{}/api/v1/users",
        sims.base_url(SourceKind::CarevalidateUsers)
    );
    let r = c.get(&url).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(r).await,
        json!({"status": 400, "success": false, "error": "Missing cv-api-key header", "code": "CASE_ERROR"})
    );
    let r = c
        .get(&url)
        .header("cv-api-key", "nope")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await["success"], json!(false));

    let body = json_of(cv(&c, &sims, Method::GET).send().await.expect("send")).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(10));
    let body = json_of(
        cv(&c, &sims, Method::GET)
            .query(&[("limit", "1000")])
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        body["data"].as_array().map(Vec::len),
        Some(100.min(st.count(SourceKind::CarevalidateUsers)))
    );
    let item = &body["data"][0];
    assert!(
        item.get("id").is_none() && item.get("createdAt").is_none() && item["email"].is_string()
    );
    assert!(matches!(
        item["gender"].as_str(),
        Some("MALE" | "FEMALE" | "OTHER")
    ));

    // Cursor paging, both directions.
    for order in ["asc", "desc"] {
        let mut emails = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![("limit", "7".to_string()), ("sortOrder", order.to_string())];
            if let Some(a) = &after {
                q.push(("after", a.clone()));
            }
            let body = json_of(
                cv(&c, &sims, Method::GET)
                    .query(&q)
                    .send()
                    .await
                    .expect("send"),
            )
            .await;
            emails.extend(
                body["data"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|d| d["email"].as_str().unwrap_or("").to_string()),
            );
            if body["meta"]["hasMore"] != json!(true) {
                break;
            }
            after = body["meta"]["cursor"].as_str().map(str::to_string);
        }
        let mut expected = st.keys(SourceKind::CarevalidateUsers);
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!(emails, expected, "{order}");
    }
    let r = cv(&c, &sims, Method::GET)
        .query(&[("after", "@@@")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Email prefix filter.
    let key = st.keys(SourceKind::CarevalidateUsers)[2].clone();
    let prefix: String = key.chars().take(key.find('@').unwrap_or(3)).collect();
    let body = json_of(
        cv(&c, &sims, Method::GET)
            .query(&[("email", &prefix)])
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert!(
        body["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|u| u["email"] == json!(key)))
    );

    // Create, then update; name locked where a case is assigned.
    let r = cv(&c, &sims, Method::POST).json(&json!({"action": "CREATE_USER", "data": {"email": "zoe@example.com", "firstName": "Zoë", "lastName": "Ng", "gender": "female"}})).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = cv(&c, &sims, Method::POST).json(&json!({"action": "CREATE_USER", "data": {"email": "zoe@example.com", "firstName": "Zoë", "lastName": "Ng", "gender": "FEMALE", "phoneNumber": "+447700900123", "country": "GB", "dob": "1950-02-03"}})).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = cv(&c, &sims, Method::POST).json(&json!({"action": "UPDATE_PROFILE", "data": {"email": "zoe@example.com", "city": "Leeds", "firstName": "Zoe"}})).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let rec = st
        .records(SourceKind::CarevalidateUsers)
        .into_iter()
        .find(|r| r["email"] == json!("zoe@example.com"))
        .unwrap_or_default();
    assert_eq!(rec["city"], json!("Leeds"));
    assert_eq!(rec["firstName"], json!("Zoe"));
    assert_eq!(
        st.keys(SourceKind::CarevalidateUsers)
            .last()
            .map(String::as_str),
        Some("zoe@example.com")
    );
    let locked = {
        let store = st.read(SourceKind::CarevalidateUsers);
        store
            .live()
            .find(|(_, r)| r.meta.case_assigned)
            .map(|(_, r)| r.key.to_string())
    };
    let locked = locked.expect("some records have a case assigned");
    let r = cv(&c, &sims, Method::POST)
        .json(
            &json!({"action": "UPDATE_PROFILE", "data": {"email": locked, "lastName": "Changed"}}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["code"], json!("CASE_ERROR"));
    let r = cv(&c, &sims, Method::POST)
        .json(&json!({"action": "UPDATE_PROFILE", "data": {"email": locked, "city": "York"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = cv(&c, &sims, Method::POST).json(&json!({"action": "UPDATE_PROFILE", "data": {"email": "nobody@example.com", "city": "York"}})).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    sims.shutdown().await;
}

// ----- PACE ---------------------------------------------------------------------------------

fn pace(c: &Client, sims: &Simulators, method: Method, path: &str) -> RequestBuilder {
    c.request(
        method,
        format!("{}{path}", sims.base_url(SourceKind::PaceUsers)),
    )
    .header("x-api-key", creds::PACE_API_KEY)
    .header("x-customer-id", creds::PACE_CUSTOMER_ID)
}

#[tokio::test]
async fn pace_follows_the_docs() {
    let sims = start(opts(500)).await.expect("start");
    let st = sims.state();
    let c = client();
    let r = c
        .get(format!(
            "{}/api/users",
            sims.base_url(SourceKind::PaceUsers)
        ))
        .header("x-api-key", creds::PACE_API_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/problem+json")
    );
    let p = json_of(r).await;
    assert_eq!(p["status"], json!(401));
    assert!(p["traceId"].is_string() && p["title"].is_string());

    let total = st.count(SourceKind::PaceUsers);
    let body = json_of(
        pace(&c, &sims, Method::GET, "/api/users")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["PageSize"], json!(100));
    assert_eq!(body["TotalRecords"], json!(total));
    assert_eq!(
        body["FirstPage"],
        json!("https://online.cardinus.com/api/Users?pageNumber=1&pageSize=100")
    );
    assert!(
        body["PreviousPage"].is_null()
            && body["Succeeded"] == json!(true)
            && body["Errors"].is_null()
    );
    let mut seen = HashSet::new();
    let mut page = 1;
    loop {
        let body = json_of(
            pace(
                &c,
                &sims,
                Method::GET,
                &format!("/API/Users?PageNumber={page}&pageSize=40"),
            )
            .send()
            .await
            .expect("send"),
        )
        .await;
        for it in body["Items"].as_array().cloned().unwrap_or_default() {
            assert!(seen.insert(it["UserGuid"].as_str().unwrap_or("").to_lowercase()));
        }
        if body["NextPage"].is_null() {
            assert_eq!(body["TotalPages"], json!(page));
            break;
        }
        assert_eq!(
            body["NextPage"],
            json!(format!(
                "https://online.cardinus.com/api/Users?pageNumber={}&pageSize=40",
                page + 1
            ))
        );
        page += 1;
    }
    assert_eq!(seen.len(), total);
    let body = json_of(
        pace(&c, &sims, Method::GET, "/api/users?pageSize=500")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["PageSize"], json!(100));

    // Quirks present in the data.
    let recs = st.records(SourceKind::PaceUsers);
    assert!(recs.iter().any(|r| r.get("Preferred Name").is_some()));
    assert!(recs.iter().any(|r| r.get("Organisation").is_none()));
    assert!(recs.iter().any(|r| {
        r["UserGuid"]
            .as_str()
            .is_some_and(|g| g.chars().any(|c| c.is_ascii_uppercase()))
    }));

    // Retrieve one, guid in the other case.
    let guid = recs[0]["UserGuid"].as_str().unwrap_or("").to_string();
    let flipped = if guid.chars().any(|c| c.is_ascii_uppercase()) {
        guid.to_lowercase()
    } else {
        guid.to_uppercase()
    };
    let got = json_of(
        pace(&c, &sims, Method::GET, &format!("/api/users/{flipped}"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(got["UserGuid"], json!(guid));

    // Filter and overview.
    let body = json_of(
        pace(&c, &sims, Method::POST, "/api/users/filter")
            .json(&json!({"IsLocked": true}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let locked = recs.iter().filter(|r| r["IsLocked"] == json!(true)).count();
    assert_eq!(body["TotalRecords"], json!(locked));
    assert!(
        body["FirstPage"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://online.cardinus.com/api/Users?"))
    );
    let ov = json_of(
        pace(&c, &sims, Method::GET, "/api/users/overview")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(ov["Count"], json!(total));
    assert_eq!(ov["Locked"], json!(locked));

    // Create (required fields), update with LongTermAbsent, empty 200 body.
    let r = pace(&c, &sims, Method::POST, "/api/users")
        .json(&json!({"FirstName": "Łukasz"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let p = json_of(r).await;
    assert!(
        p["errors"]["UserId"].is_array() && p["errors"]["EmailAddress"].is_array(),
        "{p}"
    );
    assert!(p["errors"].get("PreferredName").is_none());
    let r = pace(&c, &sims, Method::POST, "/api/users")
        .json(&json!({"UserId": "lnowak", "FirstName": "Łukasz", "LastName": "Nowak", "EmailAddress": "l.nowak@example.com", "UserStatus": "Active"}))
        .send().await.expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let new_guid = json_of(r).await["UserGuid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let r = pace(&c, &sims, Method::PATCH, &format!("/api/users/{new_guid}"))
        .json(&json!({"UserStatus": "Long term absent"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = pace(&c, &sims, Method::PATCH, &format!("/api/users/{new_guid}"))
        .json(&json!({"UserStatus": "LongTermAbsent", "TelephoneNumber": "07700 900123"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.map(|b| b.is_empty()).unwrap_or(false));
    let got = json_of(
        pace(&c, &sims, Method::GET, &format!("/api/users/{new_guid}"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(got["UserStatus"], json!("Long term absent"));
    assert_eq!(got["TelephoneNumber"], json!("07700 900123"));
    assert_eq!(got["FirstName"], json!("Łukasz"));
    sims.shutdown().await;
}

#[tokio::test]
async fn pace_rate_limit_and_quota() {
    let sims = start(SimOptions {
        enforce_rate_limits: true,
        ..opts(10)
    })
    .await
    .expect("start");
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = pace(&c, &sims, Method::GET, "/api/users")
            .send()
            .await
            .expect("send");
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let p = json_of(r).await;
            assert_eq!(p["title"], json!("Request rate exceeded"));
            let d = p["detail"].as_str().unwrap_or("");
            assert!(
                d.starts_with("Please try again in ") && d.ends_with(" second(s)."),
                "{d}"
            );
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5);
    sims.state().set_faults(FaultConfig {
        pace_daily_quota: Some(0),
        ..FaultConfig::default()
    });
    let r = pace(&c, &sims, Method::GET, "/api/users")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        json_of(r).await["title"],
        json!("Maximum quota of requests exceeded")
    );
    sims.shutdown().await;
}

// ----- Faults -------------------------------------------------------------------------------

#[tokio::test]
async fn injected_faults_behave_as_configured() {
    let sims = start(opts(200)).await.expect("start");
    let st = sims.state();
    let c = client();

    st.set_faults(FaultConfig {
        error_rate: 1.0,
        ..FaultConfig::default()
    });
    let r = cv(&c, &sims, Method::GET).send().await.expect("send");
    assert!(
        matches!(r.status().as_u16(), 500 | 502 | 503),
        "{}",
        r.status()
    );

    st.set_faults(FaultConfig {
        rate_429: 1.0,
        ..FaultConfig::default()
    });
    let r = pace(&c, &sims, Method::GET, "/api/users")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    st.set_faults(FaultConfig {
        malformed_rate: 1.0,
        ..FaultConfig::default()
    });
    for _ in 0..4 {
        let r = mp(&c, &sims, Method::GET, "/users")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap_or_default();
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }

    st.set_faults(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    });
    let r = mp(&c, &sims, Method::GET, "/users").send().await;
    let body = match r {
        Ok(r) => r.bytes().await.map(|b| b.len()),
        Err(e) => Err(e),
    };
    assert!(body.is_err(), "the body should fail mid-way: {body:?}");

    st.set_faults(FaultConfig {
        repeat_cursor: true,
        ..FaultConfig::default()
    });
    let b1 = json_of(cv(&c, &sims, Method::GET).send().await.expect("send")).await;
    let cursor = b1["meta"]["cursor"].as_str().unwrap_or("").to_string();
    let b2 = json_of(
        cv(&c, &sims, Method::GET)
            .query(&[("after", &cursor)])
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(b2["meta"]["cursor"], json!(cursor));
    assert_eq!(b2["meta"]["hasMore"], json!(true));

    st.set_faults(FaultConfig {
        repeat_page: true,
        ..FaultConfig::default()
    });
    let p1 = json_of(
        pace(&c, &sims, Method::GET, "/api/users?pageNumber=1&pageSize=2")
            .send()
            .await
            .expect("send"),
    )
    .await;
    let p9 = json_of(
        pace(&c, &sims, Method::GET, "/api/users?pageNumber=9&pageSize=2")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(p1["Items"], p9["Items"]);
    assert!(p9["NextPage"].is_string());

    st.set_faults(FaultConfig {
        inserts_per_list_request: 2,
        deletes_per_list_request: 1,
        ..FaultConfig::default()
    });
    let before = st.count(SourceKind::MarketplaceUsers);
    let _ = mp(&c, &sims, Method::GET, "/users")
        .send()
        .await
        .expect("send");
    assert_eq!(st.count(SourceKind::MarketplaceUsers), before + 1);

    st.set_faults(FaultConfig {
        slow_rate: 1.0,
        slow_ms: 150,
        ..FaultConfig::default()
    });
    let t = std::time::Instant::now();
    let _ = cv(&c, &sims, Method::GET).send().await.expect("send");
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    let stats = st.stats(SourceKind::MarketplaceUsers);
    assert!(stats.requests >= 6 && stats.list_requests >= 1);
    assert!(stats.by_status.contains_key(&200));
    sims.shutdown().await;
}

// ----- Data ---------------------------------------------------------------------------------

#[test]
fn datasets_are_reproducible_and_truthful() {
    let a = SimState::generate(opts(300));
    let b = SimState::generate(opts(300));
    for kind in SourceKind::ALL {
        assert!(a.count(kind) > 0, "{kind}");
        assert_eq!(a.records(kind), b.records(kind), "{kind}");
    }
    let truth = a.truth();
    let people = a.people();
    assert_eq!(people.len(), 300);
    // Some humans appear in several sources, some twice in one.
    let mut per_person: HashMap<u64, usize> = HashMap::new();
    for (_, _, p) in &truth {
        *per_person.entry(*p).or_default() += 1;
    }
    assert!(per_person.values().any(|n| *n >= 2));
    for kind in SourceKind::ALL {
        let keys: HashSet<String> = a.keys(kind).into_iter().collect();
        assert_eq!(keys.len(), a.count(kind));
        assert!(
            truth
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .all(|(_, key, _)| keys.contains(key))
        );
    }
}

#[test]
fn small_populations_and_limits() {
    let s = SimState::generate(SimOptions {
        per_source_limit: Some(1),
        ..opts(20)
    });
    for kind in SourceKind::ALL {
        assert_eq!(s.count(kind), 1, "{kind}");
    }
    let s = SimState::generate(SimOptions {
        per_source_limit: Some(0),
        ..opts(20)
    });
    assert!(SourceKind::ALL.iter().all(|k| s.count(*k) == 0));
    let s = SimState::generate(opts(2));
    assert!(SourceKind::ALL.iter().all(|k| s.count(*k) >= 1));
}

#[test]
fn records_carry_the_documented_quirks() {
    let s = SimState::generate(opts(3000));
    let su = s.records(SourceKind::CarehqServiceUsers);
    assert!(
        su.iter()
            .all(|r| r.as_object().is_some_and(|o| o.len() == 72)),
        "every attribute"
    );
    assert!(
        su.iter()
            .any(|r| r["dob"].is_null() && r["given_age"].is_i64())
    );
    assert!(su.iter().any(|r| r["funding_type"] == json!("not_sure")));
    assert!(
        su.iter()
            .any(|r| r["street_address"]["postcode"] == json!("") && r["postal_address"].is_null())
    );
    assert!(
        su.iter()
            .any(|r| r["nhs_number"].as_str().is_some_and(|n| n.contains(' ')))
    );
    assert!(
        su.iter()
            .any(|r| r["nhs_number"].as_str().is_some_and(|n| n.len() == 10))
    );
    let users = s.records(SourceKind::CarehqUsers);
    assert!(users.iter().all(|u| u.get("location_role_label").is_some()));
    let mp = s.records(SourceKind::MarketplaceUsers);
    assert!(mp.iter().any(|u| u["number_of_children"].is_string()));
    assert!(mp.iter().any(|u| u["number_of_children"].is_i64()));
    assert!(mp.iter().any(|u| {
        u["email"]
            .as_str()
            .is_some_and(|e| e.starts_with(' ') || e.ends_with(' '))
    }));
    let cv = s.records(SourceKind::CarevalidateUsers);
    assert!(cv.iter().all(|u| {
        u["phoneNumber"].is_null()
            || u["phoneNumber"]
                .as_str()
                .is_some_and(|p| p.starts_with("+44"))
    }));
    assert!(cv.iter().all(|u| u["country"] == json!("GB")));
    let people = s.people();
    assert!(people.iter().any(|p| p.twin_of.is_some()));
    assert!(
        people
            .iter()
            .any(|p| !p.first_name.is_ascii() || !p.last_name.is_ascii())
    );
    let pace = s.records(SourceKind::PaceUsers);
    assert!(pace.iter().any(|u| u.get("Telephone Number").is_some()));
    assert!(pace.iter().any(|u| {
        u["AdditionalDetails"]["Start Date"]
            .as_str()
            .is_some_and(|d| d.len() == 19 && !d.ends_with('Z'))
    }));
    // Same-source duplicates of one human exist at this size.
    let truth = s.truth();
    let mut per: HashMap<(SourceKind, u64), usize> = HashMap::new();
    for (k, _, p) in truth {
        *per.entry((k, p)).or_default() += 1;
    }
    assert!(per.values().any(|n| *n == 2));
}

#[derive(serde::Deserialize)]
struct BenchMeta {
    cursor: Option<String>,
}

/// Counts items without building them (the benchmark measures the server, not the parse).
#[derive(serde::Deserialize)]
struct BenchPage {
    items: Option<Vec<serde::de::IgnoredAny>>,
    data: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(rename = "Items")]
    items_pascal: Option<Vec<serde::de::IgnoredAny>>,
    meta: Option<BenchMeta>,
}

/// `cargo test --release -- --ignored --nocapture sim::tests::bench`: generation and paging speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_generation_and_paging() {
    let people: usize = std::env::var("SIM_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let t = std::time::Instant::now();
    let sims = start(SimOptions {
        people,
        ..SimOptions::default()
    })
    .await
    .expect("start");
    let st = sims.state();
    let total: usize = SourceKind::ALL.iter().map(|k| st.count(*k)).sum();
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_string();
    println!(
        "generated {people} people, {total} records in {:?} ({rss})",
        t.elapsed()
    );
    let c = client();
    for kind in [
        SourceKind::CarehqServiceUsers,
        SourceKind::MarketplaceUsers,
        SourceKind::CarevalidateUsers,
        SourceKind::PaceUsers,
    ] {
        let t = std::time::Instant::now();
        let mut n = 0usize;
        let mut bytes = 0usize;
        let mut after: Option<String> = None;
        for page in 0.. {
            let resp = match kind {
                SourceKind::CarehqServiceUsers => {
                    let p = (page + 1).to_string();
                    carehq(
                        &c,
                        &sims,
                        Method::GET,
                        "/v1/service-users",
                        &[
                            ("per_page", "100"),
                            ("page", &p),
                            ("attributes", "first_name"),
                            ("attributes", "last_name"),
                            ("attributes", "dob"),
                            ("attributes", "nhs_number"),
                            ("attributes", "modified"),
                        ],
                        Signed::default(),
                    )
                    .send()
                    .await
                }
                SourceKind::MarketplaceUsers => {
                    mp(
                        &c,
                        &sims,
                        Method::GET,
                        &format!("/users?page={page}&size=100"),
                    )
                    .send()
                    .await
                }
                SourceKind::CarevalidateUsers => {
                    let mut q = vec![("limit", "100".to_string())];
                    if let Some(a) = &after {
                        q.push(("after", a.clone()));
                    }
                    cv(&c, &sims, Method::GET).query(&q).send().await
                }
                _ => {
                    pace(
                        &c,
                        &sims,
                        Method::GET,
                        &format!("/api/users?pageNumber={}&pageSize=100", page + 1),
                    )
                    .send()
                    .await
                }
            };
            let body = resp.expect("send").bytes().await.expect("body");
            bytes += body.len();
            let v: BenchPage = serde_json::from_slice(&body).expect("json");
            let items = v
                .items
                .or(v.data)
                .or(v.items_pascal)
                .map(|i| i.len())
                .unwrap_or(0);
            n += items;
            after = v.meta.and_then(|m| m.cursor);
            if items < 100 {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{kind}: {n} records, {:.1} MB in {secs:.2}s = {:.0} records/s",
            bytes as f64 / 1e6,
            n as f64 / secs
        );
        assert_eq!(n, st.count(kind));
    }
    sims.shutdown().await;
}

#[test]
#[ignore]
fn bench_generation_phases() {
    let people: u64 = std::env::var("SIM_BENCH_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let t = std::time::Instant::now();
    let plan = generator::plan(42, people);
    println!("plan: {:?}", t.elapsed());
    let locations = generator::location_ids(42);
    for (kind, entries) in plan {
        let t = std::time::Instant::now();
        let recs = generator::render_all(42, kind, &entries, 0, &locations);
        let render = t.elapsed();
        let t = std::time::Instant::now();
        let mut store = store::Store::new(kind);
        for r in recs {
            store.push(r);
        }
        println!(
            "{kind}: {} render {render:?} push {:?}",
            store.len(),
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn options_totals_repeat_pages_and_describe() {
    let sims = start(SimOptions {
        marketplace_totals: true,
        ..opts(120)
    })
    .await
    .expect("start");
    let st = sims.state();
    let c = client();
    let text = sims.describe();
    for kind in SourceKind::ALL {
        assert!(
            text.contains(&format!(
                "{}{}",
                sims.base_url(kind),
                kind.collection_path()
            )),
            "{text}"
        );
    }
    let body = json_of(
        mp(&c, &sims, Method::GET, "/users?page=1&size=5")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["total"], json!(st.count(SourceKind::MarketplaceUsers)));
    assert_eq!(body["page"], json!(1));

    st.set_faults(FaultConfig {
        repeat_page: true,
        ..FaultConfig::default()
    });
    let (_, p1) = carehq_get(&c, &sims, "/v1/service-users", &[("page", "1")]).await;
    let (_, p50) = carehq_get(&c, &sims, "/v1/service-users", &[("page", "50")]).await;
    assert_eq!(p1["items"], p50["items"]);
    assert_eq!(p50["page"], json!(50));
    assert!(p50["page_count"].as_u64().is_some_and(|n| n > 50));
    let log = st.request_log(SourceKind::CarehqServiceUsers);
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|(_, s)| *s == 200));
    assert_eq!(st.stats(SourceKind::CarehqServiceUsers).list_requests, 2);
    sims.shutdown().await;
}

#[tokio::test]
async fn fixed_ports_bind_five_consecutive_ports() {
    // Find a free block by binding an ephemeral port and using the range after it.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = probe
        .local_addr()
        .expect("addr")
        .port()
        .saturating_sub(200)
        .max(20_000);
    drop(probe);
    let sims = match start(SimOptions {
        port: Some(base),
        ..opts(5)
    })
    .await
    {
        Ok(s) => s,
        Err(_) => return, // the range is busy on this machine; nothing to check
    };
    for (i, kind) in SourceKind::ALL.into_iter().enumerate() {
        assert_eq!(
            sims.base_url(kind),
            format!("http://127.0.0.1:{}", base + i as u16)
        );
    }
    sims.shutdown().await;
}

#[test]
#[ignore]
fn show_samples() {
    let s = SimState::generate(opts(40));
    for kind in SourceKind::ALL {
        for r in s.records(kind).iter().take(2) {
            println!("{kind}: {r}");
        }
    }
}
